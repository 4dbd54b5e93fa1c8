// Backend cost of one I/O round trip, and what each io_uring set-up option
// is worth. C socket pairs; on each, one task sends a byte and waits for the
// reply, the other echoes it; R round trips per pair. Prints, per
// configuration, the median over --repeat runs of ns per round trip (one
// round trip = 2 sends + 2 recvs). Configurations alternate within each
// repeat, so machine noise hits them alike.
//
// The configurations: every backend of the build that can run here (the
// registry's, policies/backends.h), each as make_backend(name) makes it, then
// its other set-ups (bench/backend_setups.h: io_uring's ring options).
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

#include "bench/backend_setups.h"
#include "bench/pingpong_tasks.h"
#include "polyloop/polyloop.h"

namespace pl = polyloop;

namespace {


double run_once(std::unique_ptr<pl::Backend> backend, int pairs, int rounds) {
  pl::EventLoop loop(std::move(backend));
  std::vector<int> fds;
  std::vector<pl::Task<>> tasks;
  for (int i = 0; i < pairs; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    fds.push_back(sv[0]);
    fds.push_back(sv[1]);
    tasks.push_back(loopbench::pinger(sv[0], rounds));
    tasks.push_back(loopbench::ponger(sv[1], rounds));
  }
  auto t0 = std::chrono::steady_clock::now();
  loop.run_until_complete(pl::gather(std::move(tasks)));
  auto t1 = std::chrono::steady_clock::now();
  loop.close();
  for (int fd : fds) ::close(fd);
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / (double(pairs) * rounds);
}

constexpr const char* usage =
    "usage: backend_pingpong [--pairs=N] [--rounds=N] [--repeat=N]\n"
    "  --pairs=N   socket pairs ping-ponging at once (default 50)\n"
    "  --rounds=N  round trips per pair and run (default 20000)\n"
    "  --repeat=N  runs per configuration; the median is printed (default 5)\n";

// The options; a bad one ends the program with what was wrong (exit 2).
struct options {
  int pairs = 50;
  int rounds = 20000;
  int repeat = 5;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    int* target = nullptr;
    std::size_t eq = a.find('=');
    std::string name = a.substr(0, eq);
    if (name == "--pairs") target = &o.pairs;
    if (name == "--rounds") target = &o.rounds;
    if (name == "--repeat") target = &o.repeat;
    if (target == nullptr || eq == std::string::npos) {
      std::fprintf(stderr, "backend_pingpong: unknown argument '%s'\n%s", argv[i], usage);
      std::exit(2);
    }
    std::string value = a.substr(eq + 1);
    char* end = nullptr;
    long v = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || v < 1 || v > 100000000) {
      std::fprintf(stderr, "backend_pingpong: %s wants a whole number from 1 to 100000000, not '%s'\n",
                   name.c_str(), value.c_str());
      std::exit(2);
    }
    *target = static_cast<int>(v);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  const int pairs = opt.pairs;
  const int rounds = opt.rounds;
  const int repeat = opt.repeat;
  std::vector<pl::bench::backend_setup> configs;
  for (const pl::BackendInfo& b : pl::available_backends()) {
    if (!b.available) {
      std::fprintf(stderr, "backend_pingpong: skipping %s: %s\n", b.name.c_str(), b.reason.c_str());
      continue;
    }
    if (pl::make_backend(b.name)->own_clock() != nullptr) {
      // sim: in-memory sockets only, so it refuses this benchmark's
      // socketpair(2) fds (and there is no real time to measure).
      std::fprintf(stderr, "backend_pingpong: skipping %s: simulated\n", b.name.c_str());
      continue;
    }
    std::string setup = pl::bench::default_setup(b.name);
    configs.push_back({setup.empty() ? b.name : b.name + " (" + setup + ")",
                       [name = b.name] { return pl::make_backend(name); }});
    for (auto& other : pl::bench::other_setups(b.name)) configs.push_back(std::move(other));
  }
  if (configs.empty()) {
    std::fprintf(stderr, "backend_pingpong: no backend can run here\n");
    return 1;
  }
  // The ratios are to epoll's time: the backend every Linux build has.
  std::size_t base_config = 0;
  for (std::size_t c = 0; c < configs.size(); ++c) {
    if (configs[c].name == "epoll") base_config = c;
  }
  std::vector<std::vector<double>> results(configs.size());
  for (int r = 0; r < repeat; ++r) {
    for (std::size_t c = 0; c < configs.size(); ++c) {
      results[c].push_back(run_once(configs[c].make(), pairs, rounds));
    }
  }
  std::printf("pairs=%d rounds=%d repeat=%d: ns per round trip (2 sends + 2 recvs), median [min..max]\n",
              pairs, rounds, repeat);
  auto median_of = [&](std::size_t c) {
    auto v = results[c];
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double base = median_of(base_config);
  for (std::size_t c = 0; c < configs.size(); ++c) {
    auto [lo, hi] = std::minmax_element(results[c].begin(), results[c].end());
    double median = median_of(c);
    std::printf("  %-46s %8.0f  [%.0f..%.0f]  x%.2f of %s\n", configs[c].name.c_str(), median, *lo,
                *hi, median / base, configs[base_config].name.c_str());
  }
}
