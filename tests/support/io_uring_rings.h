// What io_uring tests look at from outside the backend: the process's ring
// fds and the kernel's view of a ring (/proc/self/fdinfo), and a pipe.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace polyloop::testing {

struct pipe_pair {
  int r = -1, w = -1;
  pipe_pair() {
    int fds[2];
    BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  pipe_pair(const pipe_pair&) = delete;
  pipe_pair& operator=(const pipe_pair&) = delete;
  ~pipe_pair() {
    ::close(r);
    ::close(w);
  }
};

// The io_uring fds this process has open, from /proc/self/fd.
inline std::vector<int> io_uring_fds() {
  std::vector<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.string() == "anon_inode:[io_uring]") {
      fds.push_back(std::stoi(entry.path().filename().string()));
    }
  }
  return fds;
}

// The kernel's own view of a ring (/proc/self/fdinfo/FD): its CQ size
// ("CqMask") and how many completions wait in the overflow list, i.e. found
// the CQ ring full (IORING_FEAT_NODROP keeps them there until flushed).
struct ring_fdinfo {
  unsigned cq_entries = 0;
  std::size_t overflowed = 0;
  std::string text;
};
inline ring_fdinfo read_fdinfo(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  ring_fdinfo info;
  std::string line;
  bool in_overflow_list = false;
  while (std::getline(in, line)) {
    info.text += line + "\n";
    if (line.rfind("CqMask:", 0) == 0) info.cq_entries = std::stoul(line.substr(7), nullptr, 0) + 1;
    if (line.rfind("CqOverflowList:", 0) == 0) {
      in_overflow_list = true;
    } else if (in_overflow_list && line.find("user_data") != std::string::npos) {
      ++info.overflowed;
    } else if (!line.empty() && line[0] != ' ' && line[0] != '\t') {
      in_overflow_list = false;
    }
  }
  return info;
}

}  // namespace polyloop::testing
