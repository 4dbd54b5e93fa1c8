#include "tests/support/fd_check.h"

#include <dirent.h>
#include <unistd.h>

#include <array>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <system_error>

namespace polyloop::testing {

std::map<int, std::string> open_fds() {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc/self/fd"), &::closedir);
  if (!dir) throw std::system_error(errno, std::generic_category(), "opendir /proc/self/fd");
  const int own = ::dirfd(dir.get());  // the listing's own descriptor is not counted
  std::map<int, std::string> fds;
  while (const dirent* entry = ::readdir(dir.get())) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) continue;  // ".", ".."
    std::string link = "/proc/self/fd/" + std::string(entry->d_name);
    std::array<char, 256> target{};
    ssize_t n = ::readlink(link.c_str(), target.data(), target.size() - 1);
    fds.emplace(static_cast<int>(fd), n < 0 ? std::string("?") : std::string(target.data(), n));
  }
  return fds;
}

std::string fd_differences(const std::map<int, std::string>& before,
                           const std::map<int, std::string>& after) {
  std::string out;
  for (const auto& [fd, what] : after) {
    auto it = before.find(fd);
    if (it == before.end() || it->second != what) {
      out += "fd " + std::to_string(fd) + " (" + what + ") left open\n";
    }
  }
  for (const auto& [fd, what] : before) {
    auto it = after.find(fd);
    if (it == after.end() || it->second != what) {
      out += "fd " + std::to_string(fd) + " (" + what + ") closed\n";
    }
  }
  return out;
}

namespace {

// Fails the test binary if it ends with other descriptors open than it
// started with: a socket, eventfd, epoll or io_uring fd that some code path
// forgot to close (or one closed that the binary did not own).
struct fd_leak_check {
  std::map<int, std::string> at_start;
  void setup() { at_start = open_fds(); }
  void teardown() {
    std::string diff = fd_differences(at_start, open_fds());
    BOOST_TEST(diff.empty(), "file descriptors differ at the end of the test binary from its "
                             "start (close what the tests open):\n"
                                 << diff);
  }
};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(fd_leak_check);

}  // namespace polyloop::testing
