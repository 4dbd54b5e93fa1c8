#include "tests/support/fd_listing.h"

#include <dirent.h>
#include <unistd.h>

#include <array>
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

}  // namespace polyloop::testing
