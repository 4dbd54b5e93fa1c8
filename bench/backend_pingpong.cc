// Backend cost of one I/O round trip, and what each io_uring set-up option
// is worth. C socket pairs; on each, one task sends a byte and waits for the
// reply, the other echoes it; R round trips per pair. Prints, per
// configuration, the median over --repeat runs of ns per round trip (one
// round trip = 2 sends + 2 recvs). Configurations alternate within each
// repeat, so machine noise hits them alike.
//
//   bazel run -c opt //bench:backend_pingpong -- --pairs=50 --rounds=20000 --repeat=5
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backends/asio/asio_backend.h"
#include "backends/epoll/epoll_backend.h"
#include "backends/io_uring/io_uring_backend.h"
#include "polyloop/polyloop.h"

namespace pl = polyloop;

namespace {

pl::Task<> pinger(int fd, int rounds) {
  char b = 'p';
  for (int i = 0; i < rounds; ++i) {
    co_await pl::async_send(fd, &b, 1);
    if (co_await pl::async_recv(fd, &b, 1) != 1) throw std::runtime_error("short recv");
  }
}

pl::Task<> ponger(int fd, int rounds) {
  char b;
  for (int i = 0; i < rounds; ++i) {
    if (co_await pl::async_recv(fd, &b, 1) != 1) throw std::runtime_error("short recv");
    co_await pl::async_send(fd, &b, 1);
  }
}

double run_once(std::unique_ptr<pl::Backend> backend, int pairs, int rounds) {
  pl::EventLoop loop(std::move(backend));
  std::vector<int> fds;
  std::vector<pl::Task<>> tasks;
  for (int i = 0; i < pairs; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    fds.push_back(sv[0]);
    fds.push_back(sv[1]);
    tasks.push_back(pinger(sv[0], rounds));
    tasks.push_back(ponger(sv[1], rounds));
  }
  auto t0 = std::chrono::steady_clock::now();
  loop.run_until_complete(pl::gather(std::move(tasks)));
  auto t1 = std::chrono::steady_clock::now();
  loop.close();
  for (int fd : fds) ::close(fd);
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / (double(pairs) * rounds);
}

int arg(int argc, char** argv, const char* name, int def) {
  std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return std::atoi(argv[i] + prefix.size());
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  int pairs = arg(argc, argv, "pairs", 50);
  int rounds = arg(argc, argv, "rounds", 20000);
  int repeat = arg(argc, argv, "repeat", 5);
  using opts = pl::backends::IoUringBackend::options;
  struct config {
    const char* name;
    std::function<std::unique_ptr<pl::Backend>()> make;
  };
  auto uring = [](opts o) {
    return [o] { return std::unique_ptr<pl::Backend>(new pl::backends::IoUringBackend(o)); };
  };
  std::vector<config> configs = {
      {"epoll", [] { return std::unique_ptr<pl::Backend>(new pl::backends::EpollBackend()); }},
      {"io_uring (defer_taskrun + registered fd)", uring(opts{})},
      {"io_uring (defer_taskrun, fd not registered)", uring(opts{256, true, true, false})},
      {"io_uring (coop_taskrun + registered fd)", uring(opts{256, false, true, true})},
      {"io_uring (no taskrun flags, registered fd)", uring(opts{256, false, false, true})},
      {"asio", [] { return std::unique_ptr<pl::Backend>(new pl::backends::AsioBackend()); }},
  };
  std::vector<std::vector<double>> results(configs.size());
  for (int r = 0; r < repeat; ++r) {
    for (std::size_t c = 0; c < configs.size(); ++c) {
      results[c].push_back(run_once(configs[c].make(), pairs, rounds));
    }
  }
  std::printf("pairs=%d rounds=%d repeat=%d: ns per round trip (2 sends + 2 recvs), median [min..max]\n",
              pairs, rounds, repeat);
  double base = 0;
  for (std::size_t c = 0; c < configs.size(); ++c) {
    auto v = results[c];
    std::sort(v.begin(), v.end());
    double median = v[v.size() / 2];
    if (c == 0) base = median;
    std::printf("  %-46s %8.0f  [%.0f..%.0f]  x%.2f of epoll\n", configs[c].name, median, v.front(),
                v.back(), median / base);
  }
}
