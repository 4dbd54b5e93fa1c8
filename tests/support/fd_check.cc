// The fd leak check of every behaviour test binary: a Boost.Test global
// fixture comparing the open descriptors at the end with those at the start.
#include <boost/test/unit_test.hpp>
#include <map>
#include <string>

#include "tests/support/fd_listing.h"

namespace polyloop::testing {
namespace {

// Fails the test binary if it ends with other descriptors open than it
// started with: a socket, eventfd, epoll or io_uring fd that some code path
// forgot to close (or one closed that the binary did not own).
struct fd_leak_check {
  std::map<int, std::string> at_start;
  void setup() { at_start = open_fds(); }
  void teardown() {
    std::string diff = fd_differences(at_start, open_fds());
    BOOST_TEST(diff.empty(),
               "file descriptors differ at the end of the test binary from its "
               "start (close what the tests open):\n"
                   << diff);
  }
};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(fd_leak_check);

}  // namespace polyloop::testing
