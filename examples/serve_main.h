// The command line and main() shared by the example servers
// (examples/echo_server.cc, examples/http_hello.cc):
//
//   --backend=NAME  the loop's backend: io_uring, epoll, asio or auto (default:
//                   the POLYLOOP_BACKEND variable, else the build's default);
//                   --backend=list lists them
//   --port=N        the port to listen on; 0 (the default) picks a free one
//   --host=H        the address to listen on (default 127.0.0.1)
//   --tls-cert=PATH --tls-key=PATH
//                   serve TLS on that port with this certificate chain (PEM,
//                   leaf first) and its private key (PEM); both or neither
//   --loops=N       N loops (default 1), each on a thread of its own with
//                   its own server on the port (ServerOptions::reuse_port):
//                   one loop per core, sharing nothing. With N > 1 each
//                   thread is pinned to one CPU of those the process may
//                   use (loop i on the i-th, round robin), when it may use
//                   two or more; with N = 1 the loop runs on the main thread,
//                   unpinned (loopbench pins the whole process).
//   --stats=PATH    at exit, write the loops' counters (EventLoop::stats(),
//                   summed over the loops) to PATH as one JSON line:
//                   {"ok":true,"loops":N,"iterations":...,"syscalls":...}
//
// Prints "listening on HOST:PORT" (flushed) once every loop accepts
// connections, and serves until SIGINT or SIGTERM, which end it with status
// 0. Status 1: it could not listen (the message says why); 2: a bad command
// line.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "net/stream.h"
#include "polyloop/polyloop.h"

namespace examples {

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string tls_cert;  // with tls_key: serve TLS (net/tls.h)
  std::string tls_key;
  int loops = 1;           // --loops=N
  std::string stats_path;  // --stats=PATH; empty: none written
};

namespace detail {

[[noreturn]] inline void usage(std::string_view program, const std::string& problem) {
  std::cerr << program << ": " << problem << "\nusage: " << program
            << " [--backend=NAME] [--port=N] [--host=H] [--tls-cert=PATH --tls-key=PATH]"
               " [--loops=N] [--stats=PATH]\n";
  std::exit(2);
}

inline server_options parse_options(std::string_view program, int argc, char** argv) {
  server_options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    // "--name=value" or "--name value"; nullptr if `arg` is not --name.
    auto value_of = [&](std::string_view name) -> std::optional<std::string> {
      if (arg == name) {
        if (i + 1 >= argc) usage(program, std::string(name) + " needs a value");
        return std::string(argv[++i]);
      }
      if (arg.size() > name.size() && arg.substr(0, name.size()) == name &&
          arg[name.size()] == '=') {
        return std::string(arg.substr(name.size() + 1));
      }
      return std::nullopt;
    };
    if (value_of("--backend")) continue;  // read by polyloop::backend_from_args
    if (auto v = value_of("--port")) {
      char* end = nullptr;
      errno = 0;
      unsigned long p = std::strtoul(v->c_str(), &end, 10);
      if (v->empty() || *end != '\0' || errno != 0 || p > 65535)
        usage(program, "bad --port: " + *v);
      o.port = static_cast<std::uint16_t>(p);
    } else if (auto h = value_of("--host")) {
      if (h->empty()) usage(program, "--host is empty");
      o.host = *h;
    } else if (auto c = value_of("--tls-cert")) {
      o.tls_cert = *c;
    } else if (auto k = value_of("--tls-key")) {
      o.tls_key = *k;
    } else if (auto n = value_of("--loops")) {
      char* end = nullptr;
      errno = 0;
      long loops = std::strtol(n->c_str(), &end, 10);
      if (n->empty() || *end != '\0' || errno != 0 || loops < 1 || loops > 1024)
        usage(program, "bad --loops: " + *n + " (a number of loops, 1 to 1024)");
      o.loops = static_cast<int>(loops);
    } else if (auto p = value_of("--stats")) {
      if (p->empty()) usage(program, "--stats is empty: give the file to write the counters to");
      o.stats_path = *p;
    } else {
      usage(program, "unknown argument: " + std::string(arg));
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    usage(program, "--tls-cert and --tls-key go together: give both to serve TLS, or neither");
  }
  return o;
}

// One loop of the server, as the main thread sees it.
struct loop_slot {
  std::mutex mutex;
  polyloop::EventLoop* loop = nullptr;  // while it serves; under `mutex`
  polyloop::Future<>* stop = nullptr;   // resolved on the loop's thread only
  std::promise<polyloop::net::Address> listening;  // its server's address, or why it failed
  polyloop::LoopStats stats;  // at its end
  std::string failure;        // why it ended other than by stop_loop(); its thread's only
};

// Serves `handler` on the running loop until `slot.stop` resolves (SIGINT or
// SIGTERM: delivered here when it is the only loop, else through
// stop_loop() from the main thread), then keeps the loop's counters.
inline polyloop::Task<> serve_loop(polyloop::net::ConnectionHandler handler,
                                   const server_options& o, std::uint16_t port,
                                   loop_slot& slot) {
  polyloop::net::ServerOptions options;
  options.reuse_port = o.loops > 1;
  polyloop::net::Server server;
  if (o.tls_cert.empty()) {
    server = co_await polyloop::net::start_server(std::move(handler), o.host, port, options);
  } else {
    auto tls = polyloop::net::TlsContext::server();
    tls.load_cert_chain(o.tls_cert, o.tls_key);  // TlsError naming the file and why
    server = co_await polyloop::net::start_server(std::move(handler), o.host, port, {tls},
                                                  options);
  }
  polyloop::EventLoop& loop = polyloop::get_running_loop();
  polyloop::Future<> stop = loop.create_future<>();
  auto on_stop = [stop]() mutable {
    if (!stop.done()) stop.set_result();
  };
  if (o.loops == 1) {  // core/signals: delivered on the loop's thread
    polyloop::add_signal_handler(loop, SIGINT, on_stop);
    polyloop::add_signal_handler(loop, SIGTERM, on_stop);
  }
  {
    std::lock_guard lock(slot.mutex);
    slot.loop = &loop;
    slot.stop = &stop;
  }
  if (o.loops == 1) std::cout << "listening on " << server.address().to_string() << std::endl;
  slot.listening.set_value(server.address());
  co_await stop;
  {
    std::lock_guard lock(slot.mutex);
    slot.loop = nullptr;
    slot.stop = nullptr;
  }
  server.close();
  co_await server.wait_closed();
  slot.stats = loop.stats();  // polyloop::run then cancels the connections still open
}

// From another thread: ends `slot`'s serve_loop, if it still serves.
inline void stop_loop(loop_slot& slot) {
  std::lock_guard lock(slot.mutex);
  if (slot.loop == nullptr) return;
  slot.loop->call_soon_threadsafe([&slot] {
    if (slot.stop != nullptr && !slot.stop->done()) slot.stop->set_result();
  });
}

// The CPUs this process may run on.
inline std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

inline void pin_this_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// The counters of --stats, summed over the loops, as one JSON line.
inline void write_stats(const std::string& path, const std::vector<std::unique_ptr<loop_slot>>& slots) {
  polyloop::LoopStats t;
  for (const auto& s : slots) {
    const polyloop::LoopStats& x = s->stats;
    t.iterations += x.iterations;
    t.callbacks_run += x.callbacks_run;
    t.tasks_created += x.tasks_created;
    t.waits_blocking += x.waits_blocking;
    t.waits_nonblocking += x.waits_nonblocking;
    t.backend.syscalls += x.backend.syscalls;
    t.backend.epoll_waits += x.backend.epoll_waits;
    t.backend.epoll_ctls += x.backend.epoll_ctls;
    t.backend.io_attempts += x.backend.io_attempts;
    t.backend.enters += x.backend.enters;
    t.backend.sqes_submitted += x.backend.sqes_submitted;
    t.backend.cqes_reaped += x.backend.cqes_reaped;
    t.backend.context_runs += x.backend.context_runs;
  }
  std::ofstream out(path);
  out << "{\"ok\":true,\"loops\":" << slots.size() << ",\"iterations\":" << t.iterations
      << ",\"callbacks_run\":" << t.callbacks_run << ",\"tasks_created\":" << t.tasks_created
      << ",\"waits_blocking\":" << t.waits_blocking
      << ",\"waits_nonblocking\":" << t.waits_nonblocking << ",\"syscalls\":" << t.backend.syscalls
      << ",\"epoll_waits\":" << t.backend.epoll_waits << ",\"epoll_ctls\":" << t.backend.epoll_ctls
      << ",\"io_attempts\":" << t.backend.io_attempts << ",\"enters\":" << t.backend.enters
      << ",\"sqes_submitted\":" << t.backend.sqes_submitted
      << ",\"cqes_reaped\":" << t.backend.cqes_reaped
      << ",\"context_runs\":" << t.backend.context_runs << "}\n";
  if (!out.flush()) throw std::runtime_error("cannot write the counters to " + path);
}

// --loops=1: the loop on this thread.
inline int serve_one_loop(polyloop::net::ConnectionHandler handler, const server_options& o,
                          const std::string& backend) {
  std::vector<std::unique_ptr<loop_slot>> slots;
  slots.push_back(std::make_unique<loop_slot>());
  polyloop::run(serve_loop(std::move(handler), o, o.port, *slots[0]), backend);
  if (!o.stats_path.empty()) write_stats(o.stats_path, slots);
  return 0;
}

// --loops=N > 1: a thread per loop, each pinned to a CPU, each with its own
// server on the port (the first picks it when --port=0); this thread waits
// for SIGINT or SIGTERM, then stops them all.
inline int serve_many_loops(polyloop::net::ConnectionHandler handler, const server_options& o,
                            const std::string& backend) {
  // Blocked here before the threads start, so that they inherit it: the
  // signals come to sigwait below, and no loop needs a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::vector<int> cpus = allowed_cpus();
  std::vector<std::unique_ptr<loop_slot>> slots;
  std::vector<std::thread> threads;
  std::uint16_t port = o.port;
  std::string address;
  std::string error;
  for (int i = 0; i < o.loops && error.empty(); ++i) {
    slots.push_back(std::make_unique<loop_slot>());
    loop_slot& slot = *slots.back();
    std::future<polyloop::net::Address> listening = slot.listening.get_future();
    int cpu = cpus.size() >= 2 ? cpus[static_cast<std::size_t>(i) % cpus.size()] : -1;
    threads.emplace_back([&handler, &o, &backend, &slot, port, cpu] {
      if (cpu >= 0) pin_this_thread(cpu);
      try {
        polyloop::run(serve_loop(handler, o, port, slot), backend);
      } catch (const std::exception& e) {
        slot.failure = e.what();
        try {
          slot.listening.set_exception(std::current_exception());
        } catch (const std::future_error&) {  // it listened, then failed: said below
        }
      }
    });
    try {
      polyloop::net::Address a = listening.get();
      if (i == 0) {
        port = a.port;
        address = a.to_string();
      }
    } catch (const std::exception& e) {
      error = "loop " + std::to_string(i + 1) + " of " + std::to_string(o.loops) + ": " + e.what();
    }
  }
  if (error.empty()) {
    std::cout << "listening on " << address << std::endl;
    int signal = 0;
    sigwait(&stop_signals, &signal);
  }
  for (auto& s : slots) stop_loop(*s);
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < slots.size() && error.empty(); ++i) {
    if (!slots[i]->failure.empty()) {
      error = "loop " + std::to_string(i + 1) + " of " + std::to_string(o.loops) + ": " +
              slots[i]->failure;
    }
  }
  if (!error.empty()) throw std::runtime_error(error);
  if (!o.stats_path.empty()) write_stats(o.stats_path, slots);
  return 0;
}

}  // namespace detail

// Parses the command line, then serves `handler` until SIGINT or SIGTERM.
inline int serve_main(std::string_view program, int argc, char** argv,
                      polyloop::net::ConnectionHandler handler) {
  try {
    std::string backend = polyloop::backend_from_args(argc, argv);
    server_options o = detail::parse_options(program, argc, argv);
    ::signal(SIGPIPE, SIG_IGN);  // sends use MSG_NOSIGNAL; this is for anything else
    return o.loops == 1 ? detail::serve_one_loop(std::move(handler), o, backend)
                        : detail::serve_many_loops(std::move(handler), o, backend);
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace examples
