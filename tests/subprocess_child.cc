// The child program of subprocess_test (a data dependency of it).
//   subprocess_child bigio N   reads N pattern bytes (seed 1) from stdin while
//                              writing N (seed 2) to stdout and N (seed 3) to
//                              stderr, each on its own thread; exits 0 if stdin
//                              was exactly the pattern, 3 if a byte differed,
//                              4 if the length did.
//   subprocess_child fds       prints the fds it has open beyond 0, 1, 2
//                              (none, if the parent's are all close-on-exec).
#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/subprocess_pattern.h"

namespace {

void write_pattern(int fd, std::size_t n, unsigned seed) {
  std::vector<char> buf(64 * 1024);
  std::size_t done = 0;
  while (done < n) {
    std::size_t len = std::min(buf.size(), n - done);
    for (std::size_t i = 0; i < len; ++i) buf[i] = polyloop::testing::pattern_byte(done + i, seed);
    std::size_t off = 0;
    while (off < len) {
      ssize_t w = ::write(fd, buf.data() + off, len - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) std::exit(5);
      off += static_cast<std::size_t>(w);
    }
    done += len;
  }
}

int read_pattern(std::size_t n, unsigned seed) {
  std::vector<char> buf(64 * 1024);
  std::size_t got = 0;
  bool same = true;
  while (true) {
    ssize_t r = ::read(0, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; ++i) {
      same = same && buf[i] == polyloop::testing::pattern_byte(got + i, seed);
    }
    got += static_cast<std::size_t>(r);
  }
  if (got != n) return 4;
  return same ? 0 : 3;
}

int bigio(std::size_t n) {
  int in_status = 0;
  std::thread reader([&] { in_status = read_pattern(n, 1); });
  std::thread out([&] { write_pattern(1, n, 2); });
  write_pattern(2, n, 3);
  out.join();
  reader.join();
  return in_status;
}

int list_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return 6;
  std::string extra;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd > 2 && fd != ::dirfd(d)) extra += std::to_string(fd) + " ";
  }
  ::closedir(d);
  std::printf("%s\n", extra.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "bigio") == 0) return bigio(std::stoul(argv[2]));
  if (argc == 2 && std::strcmp(argv[1], "fds") == 0) return list_fds();
  std::fprintf(stderr, "usage: subprocess_child bigio N | fds\n");
  return 2;
}
