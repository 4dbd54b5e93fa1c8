// loopbench: the benchmark workloads (docs/benchmarks.md describes them) on
// every backend.
//
//   bazel run -c opt //bench:loopbench -- [--workload=NAME[,NAME]|all]
//       [--backend=NAME[,NAME]|all] [--repeat=N] [--seconds=S] [--full]
//       [--chart=PATH] [--peers[=NAME[,NAME]]]
//
// Workloads: callbacks, tasks, timers, sleep_chain, queue, lock, pingpong (in a worker process; the
// callbacks and sleep_chain workloads run twice, with dynamic and static
// dispatch), echo (64 B), echo_16k (16 KiB), http, https (http over TLS,
// with a self-signed certificate made for the run) and https_handshake (a
// full TLS handshake per connection), idle_conns (echo while the server holds
// 10,000 idle connections; loopbench raises its fd limit to the hard limit
// for it, and the servers and clients inherit it), many_loops (echo 64 B and
// http with the server at 1 and 2 loops, SO_REUSEPORT) (a server of examples/
// against bench/echo_client or wrk, pinned to different cores). Each run is a
// fresh process. Prints one JSON line per run, then a Markdown table of the
// medians, and writes an SVG chart of them (default: loopbench.svg in the
// directory bazel was run from). echo and http load the server for 1 s per
// run (--seconds=S; --full: the specification's 5 s). Exit status 1 if any
// run's check failed, 2 for a bad command line.
//
// --peers (all) or --peers=libuv,asio,uvloop,asyncio,nginx also runs the
// same workloads on other event loops (bench/peers.h; the Boost.Asio peer's
// runs are named boost_asio, apart from the asio backend), each repetition's runs
// interleaved with polyloop's, as more columns of the table and chart; a
// peer that is not installed is skipped with a message saying what to install.
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bench/core_workloads.h"
#include "bench/net_workloads.h"
#include "bench/peers.h"
#include "bench/process.h"
#include "bench/record.h"
#include "bench/report.h"
#include "polyloop/polyloop.h"

namespace pl = polyloop;
using namespace loopbench;

namespace {

constexpr std::string_view all_workloads[] = {"callbacks", "tasks", "timers",   "sleep_chain",
                                              "queue",     "lock",  "echo",     "echo_16k",
                                              "http",      "https",     "https_handshake", "idle_conns", "to_thread", "file_read",
                                              "pingpong", "many_loops"};

struct options {
  std::vector<std::string> workloads;
  std::vector<std::string> backends;
  int repeat = 3;
  double seconds = 1;
  std::string chart;
  std::string peers;  // --peers' list ("all" for every peer); empty: none
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "loopbench: " << problem
            << "\nusage: loopbench [--workload=NAME[,NAME]|all] [--backend=NAME[,NAME]|all]"
               " [--repeat=N] [--seconds=S] [--full] [--chart=PATH] [--peers[=NAME[,NAME]]]\n"
               "workloads: callbacks tasks timers sleep_chain queue lock echo echo_16k http https "
               "https_handshake idle_conns to_thread file_read pingpong many_loops\n"
               "peers: libuv asio uvloop asyncio nginx (the asio peer's column is boost_asio)\n";
  std::exit(2);
}

std::vector<std::string> split(std::string_view list, char separator = ',') {
  std::vector<std::string> out;
  std::stringstream in{std::string(list)};
  std::string item;
  while (std::getline(in, item, separator)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Where `bazel run` was started, so relative paths mean what the user meant.
std::string user_path(const std::string& path) {
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || dir == nullptr) return path;
  return std::string(dir) + "/" + path;
}

std::vector<std::string> backends_to_run(std::string_view value) {
  std::vector<pl::BackendInfo> known = pl::available_backends();
  std::vector<std::string> out;
  if (value == "all") {
    for (const pl::BackendInfo& b : known) {
      if (!b.available) {
        std::cerr << "loopbench: skipping " << b.name << ": " << b.reason << "\n";
      } else if (pl::make_backend(b.name)->own_clock() != nullptr) {
        // Virtual time and in-memory sockets (sim): nothing real to measure,
        // and the network workloads' peers are real processes.
        std::cerr << "loopbench: skipping " << b.name << ": simulated (name it to run it)\n";
      } else {
        out.push_back(b.name);
      }
    }
    return out;
  }
  for (const std::string& name : split(value)) {
    std::string resolved = pl::resolve_backend_name(name);  // throws for an unknown name
    for (const pl::BackendInfo& b : known) {
      if (b.name == resolved && !b.available) {
        throw pl::BackendError("backend " + b.name + " cannot run here: " + b.reason);
      }
    }
    // A set-up ("io_uring:recv_ring") keeps its name: the servers are
    // started with it, beside the backend's default, interleaved.
    out.push_back(name.find(':') != std::string::npos ? name : resolved);
  }
  return out;
}

options parse(int argc, char** argv) {
  options o;
  std::string workload = "all", backend = "all";
  bool full = false;
  std::optional<double> seconds;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view name) -> std::optional<std::string> {
      if (arg.size() > name.size() && arg.substr(0, name.size()) == name &&
          arg[name.size()] == '=') {
        return std::string(arg.substr(name.size() + 1));
      }
      return std::nullopt;
    };
    if (auto v = value("--workload")) {
      workload = *v;
    } else if (auto v = value("--backend")) {
      backend = *v;
    } else if (auto v = value("--repeat")) {
      o.repeat = std::atoi(v->c_str());
      if (o.repeat < 1) usage("--repeat needs a whole number of at least 1");
    } else if (auto v = value("--seconds")) {
      seconds = std::atof(v->c_str());
      if (*seconds <= 0) usage("--seconds needs a positive number");
    } else if (auto v = value("--chart")) {
      o.chart = *v;
    } else if (auto v = value("--peers")) {
      o.peers = *v;
    } else if (arg == "--peers") {
      o.peers = "all";
    } else if (arg == "--full") {
      full = true;
    } else {
      usage("unknown argument '" + std::string(arg) + "'");
    }
  }
  o.seconds = seconds.value_or(full ? 5 : 1);
  if (workload == "all") {
    o.workloads.assign(std::begin(all_workloads), std::end(all_workloads));
  } else {
    o.workloads = split(workload);
    for (const std::string& w : o.workloads) {
      if (!is_core_workload(w) && !is_net_workload(w)) usage("unknown workload '" + w + "'");
    }
  }
  if (backend == "list") {
    pl::print_backends(stdout);
    std::exit(0);
  }
  o.backends = backends_to_run(backend);
  if (o.backends.empty()) usage("no backend can run here");
  if (o.chart.empty()) o.chart = "loopbench.svg";
  o.chart = user_path(o.chart);
  return o;
}

// The bazel-bin folder this binary was built in: examples/ and bench/ hold
// the servers and the echo client next to it.
std::string programs_dir() {
  char path[PATH_MAX];
  if (realpath("/proc/self/exe", path) == nullptr) return ".";
  std::string self(path);
  std::string dir = self.substr(0, self.rfind('/'));  // .../bin/bench
  return dir.substr(0, dir.rfind('/'));               // .../bin
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  for (const std::string& dir : split(path ? path : "", ':')) {
    if (access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// What the network workloads need, checked before anything runs.
void check_programs(const options& o, const std::string& dir) {
  bool echo = false, http = false, handshake = false;
  for (const std::string& w : o.workloads) {
    echo = echo || w == "echo" || w == "echo_16k" || w == "idle_conns" || w == "many_loops";
    http = http || w == "http" || w == "https" || w == "many_loops";
    handshake = handshake || w == "https_handshake";
  }
  std::vector<std::string> needed;
  if (echo) needed = {"examples/echo_server", "bench/echo_client"};
  if (http || handshake) needed.push_back("examples/http_hello");
  if (handshake) needed.push_back("bench/tls_handshake_client");
  for (const std::string& p : needed) {
    if (access((dir + "/" + p).c_str(), X_OK) != 0) {
      std::cerr << "loopbench: " << dir << "/" << p
                << " is missing: run loopbench with `bazel run -c opt //bench:loopbench`, which "
                   "builds it\n";
      std::exit(2);
    }
  }
  if (http && !on_path("wrk")) {
    std::cerr << "loopbench: the http and https workloads need wrk on PATH: run tools/install_deps.sh (or "
                 "apt-get install wrk), or leave http out with --workload\n";
    std::exit(2);
  }
}

// Runs one core workload in a fresh worker process (this binary, --run).
run_record run_worker(const std::string& workload, const std::string& backend, bool is_static) {
  std::vector<std::string> args = {"/proc/self/exe", "--run=" + workload, "--backend=" + backend};
  if (is_static) args.push_back("--dispatch=static");
  child c = spawn(args);
  bool timed_out = false;
  std::string out = c.pid > 0 ? read_all(c.out, std::chrono::seconds(120), &timed_out) : "";
  if (timed_out) kill(c.pid, SIGKILL);
  int status = c.pid > 0 ? wait_exit(c.pid) : -1;
  if (c.out >= 0) close(c.out);
  std::optional<run_record> r = parse_last_json(out);
  if (!r) {
    r.emplace();
    r->workload = workload;
    r->backend = backend;
    r->dispatch = is_static ? "static" : "dynamic";
    r->error = "the worker printed no result (wait status " + std::to_string(status) + ")";
  }
  if (timed_out) {
    r->ok = false;
    r->error = "the worker did not finish within 120 s and was killed";
  } else if (status != 0 && r->ok) {
    r->ok = false;
    r->error = "the worker exited with wait status " + std::to_string(status);
  }
  return *r;
}

// The worker: one core workload, one JSON line, exit 1 if its check failed.
int worker_main(int argc, char** argv) {
  std::string workload, backend, dispatch;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.rfind("--run=", 0) == 0) workload = arg.substr(6);
    if (arg.rfind("--backend=", 0) == 0) backend = arg.substr(10);
    if (arg.rfind("--dispatch=", 0) == 0) dispatch = arg.substr(11);
  }
  if (!is_core_workload(workload)) usage("unknown workload '" + workload + "'");
  run_record r = run_core_workload(workload, backend, dispatch == "static");
  std::cout << to_json(r) << std::endl;
  return r.ok ? 0 : 1;
}

std::string machine_line(const options& o) {
  utsname u{};
  uname(&u);
  std::string cpu;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
#ifdef __OPTIMIZE__
  const char* build = "optimized";
#else
  const char* build = "NOT optimized: use bazel run -c opt";
#endif
  std::ostringstream out;
  out << date << ", kernel " << u.release << ", " << allowed_cpus().size() << " CPUs (" << cpu
      << "), gcc " << __VERSION__ << " " << build << "; medians of " << o.repeat
      << " runs, echo/http " << o.seconds << " s per run";
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]).rfind("--run=", 0) == 0) {
    try {
      return worker_main(argc, argv);
    } catch (const std::exception& e) {
      std::cerr << "loopbench worker: " << e.what() << "\n";
      return 1;
    }
  }
  // Children must be waitable (SIG_IGN for SIGCHLD would survive our exec),
  // and a closed stdout (`| head`) must not kill us before the servers stop.
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  options o;
  try {
    o = parse(argc, argv);
  } catch (const pl::BackendError& e) {
    usage(e.what());
  }
  std::string dir = programs_dir();
  check_programs(o, dir);
  if (std::find(o.workloads.begin(), o.workloads.end(), "idle_conns") != o.workloads.end()) {
    // 10,000 idle connections need more fds than the usual 1,024 on both
    // sides; the servers and clients loopbench starts inherit this limit.
    rlimit fds{};
    getrlimit(RLIMIT_NOFILE, &fds);
    if (fds.rlim_cur < fds.rlim_max) {
      fds.rlim_cur = fds.rlim_max;
      setrlimit(RLIMIT_NOFILE, &fds);
    }
    std::cerr << "loopbench: idle_conns: the fd limit is " << fds.rlim_cur
              << " for loopbench and the servers and clients it starts\n";
  }
  std::vector<std::string> peers;
  if (!o.peers.empty()) {
    try {
      peers = peers_to_run(o.peers, dir);
    } catch (const std::invalid_argument& e) {
      usage(e.what());
    }
  }
  std::cerr << "loopbench: " << machine_line(o) << "\n";

  std::vector<run_record> runs;
  for (int rep = 0; rep < o.repeat; ++rep) {
    for (const std::string& w : o.workloads) {
      for (const std::string& b : o.backends) {
        auto record = [&runs](run_record r) {
          std::cout << to_json(r) << std::endl;
          runs.push_back(std::move(r));
        };
        if (is_net_workload(w)) {
          net_run_options net;
          net.backend = b;
          net.seconds = o.seconds;
          net.programs_dir = dir;
          record(run_net_workload(w, net));
        } else {
          record(run_worker(w, b, false));
          if (has_static_dispatch(w)) record(run_worker(w, b, true));
        }
      }
      for (const std::string& p : peers) {
        if (!peer_runs(p, w)) continue;
        net_run_options net;
        net.seconds = o.seconds;
        net.programs_dir = dir;
        run_record r = is_net_workload(w) ? run_peer_net(p, w, net) : run_peer_core(p, w, dir);
        std::cout << to_json(r) << std::endl;
        runs.push_back(std::move(r));
      }
    }
  }

  std::vector<std::string> columns = o.backends;
  columns.insert(columns.end(), peers.begin(), peers.end());
  summary s = summarize(runs, columns);
  std::cout << "\n" << markdown_table(s);
  std::ofstream chart(o.chart);
  chart << svg_chart(s, "polyloop loopbench", machine_line(o));
  if (chart.flush()) {
    std::cerr << "loopbench: chart written to " << o.chart << "\n";
  } else {
    std::cerr << "loopbench: could not write the chart to " << o.chart << "\n";
  }
  int failed = 0;
  for (const run_record& r : runs) {
    if (!r.ok) {
      ++failed;
      std::cerr << "loopbench: FAILED " << r.workload << " on " << r.backend << ": "
                << (r.error.empty() ? "its check failed" : r.error) << "\n";
    }
  }
  return failed == 0 ? 0 : 1;
}
