// File descriptors a test opened: the test closes them through the backend
// (close_all, which forget()s them first, so the backend drops its state
// before the number can be reused); whatever is left after a failed
// assertion is closed with ::close() when the guard goes.
#pragma once

#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstring>
#include <vector>

#include "polyloop/polyloop.h"

namespace polyloop::testing {

struct fd_set_guard {
  std::vector<int> fds;
  int add(int fd) {
    BOOST_TEST_REQUIRE(fd >= 0, "could not open an fd: " << std::strerror(errno));
    fds.push_back(fd);
    return fd;
  }
  void forget(int fd) {
    for (int& f : fds) {
      if (f == fd) f = -1;
    }
  }
  ~fd_set_guard() {
    for (int f : fds) {
      if (f >= 0) ::close(f);
    }
  }
};

// Closes every fd in `fds` through the backend; each close must succeed.
inline Task<> close_all(fd_set_guard& g, std::vector<int> fds) {
  for (int fd : fds) {
    g.forget(fd);
    std::int64_t rc = co_await async_close(fd);
    BOOST_TEST(rc == 0);
  }
}

}  // namespace polyloop::testing
