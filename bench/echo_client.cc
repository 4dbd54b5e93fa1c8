// The load generator of the "echo" workload (/work/shared/bench/WORKLOADS.md):
//
//   echo_client --port=P [--host=127.0.0.1] [--connections=50] [--size=64] [--seconds=5]
//               [--idle=N]
//
// With --idle=N (the idle_conns workload) it first opens N more connections
// that it never uses, prints "idle: N connections open" and waits (at most
// 60 s) for SIGUSR1 before the run, so that the harness can measure the
// server holding them; they stay open until the end.
//
// Opens C TCP connections; on each, sends a `size`-byte message, waits for
// the same `size` bytes back, checks them, and repeats until `seconds` have
// passed. Then it stops sending, waits (at most 2 s) for the replies still in
// flight, and prints one JSON line:
//
//   {"connections":50,"size":64,"msgs":N,"seconds":S,"msgs_per_s":X,
//    "rtt_p50_us":A,"rtt_p99_us":B,"ok":true}
//
// It is a plain program (one thread, non-blocking sockets, level-triggered
// epoll), not polyloop, so that the client is the same whichever server is
// measured. Any failure (bad arguments, refused connect, reset, closed
// connection, wrong bytes echoed, no message at all) is one line on stderr
// and a non-zero exit; "ok":false is printed too once the run has started.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = -1;
  long connections = 50;
  long size = 64;
  double seconds = 5;
  long idle = 0;
};

[[noreturn]] void bad_args(const std::string& why) {
  std::fprintf(stderr, "echo_client: %s\nusage: echo_client --port=P [--host=127.0.0.1] "
               "[--connections=50] [--size=64] [--seconds=5] [--idle=N]\n", why.c_str());
  std::exit(2);
}

// Accepts "--name=value" and "--name value".
Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], name = arg, value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      bad_args(arg + " needs a value");
    }
    char* end = nullptr;
    errno = 0;
    if (name == "--host") {
      o.host = value;
      continue;
    }
    double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || errno != 0) bad_args("bad number for " + name + ": " + value);
    if (name == "--port" && v >= 1 && v <= 65535 && v == static_cast<int>(v)) {
      o.port = static_cast<int>(v);
    } else if (name == "--connections" && v >= 1 && v <= 100000 && v == static_cast<long>(v)) {
      o.connections = static_cast<long>(v);
    } else if (name == "--size" && v >= 1 && v <= (64 << 20) && v == static_cast<long>(v)) {
      o.size = static_cast<long>(v);
    } else if (name == "--seconds" && v > 0 && v <= 86400) {
      o.seconds = v;
    } else if (name == "--idle" && v >= 0 && v <= 100000 && v == static_cast<long>(v)) {
      o.idle = static_cast<long>(v);
    } else {
      bad_args("unknown argument or value out of range: " + arg);
    }
  }
  if (o.port < 0) bad_args("--port is required");
  return o;
}

struct Conn {
  int fd = -1;
  std::uint64_t seq = 0;       // messages started on this connection
  std::vector<char> out, in;   // the message sent, and what came back
  std::size_t sent = 0, got = 0;
  bool busy = false;           // a message is in flight
  bool want_out = false;       // EPOLLOUT armed: the last send was partial
  Clock::time_point started;
};

// A pattern that differs per message and per connection, so that an echo of
// a stale, shifted or foreign message is caught: the counter, then bytes
// derived from it.
void make_message(Conn& c, std::size_t id) {
  std::uint64_t tag = (static_cast<std::uint64_t>(id) << 40) ^ c.seq;
  for (std::size_t i = 0; i < c.out.size(); ++i) {
    c.out[i] = i < 8 ? static_cast<char>(tag >> (8 * i)) : static_cast<char>(tag * 131 + i * 7);
  }
}

[[noreturn]] void fail_early(const std::string& why) {
  std::fprintf(stderr, "echo_client: %s\n", why.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) bad_args("--host must be an IPv4 address: " + o.host);

  // Idle connections first (the server holds them through the whole run);
  // then the go-ahead: SIGUSR1, blocked so that it waits for sigtimedwait.
  sigset_t go;
  sigemptyset(&go);
  sigaddset(&go, SIGUSR1);
  sigprocmask(SIG_BLOCK, &go, nullptr);
  std::vector<int> idle_fds;
  for (long i = 0; i < o.idle; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      fail_early("socket for idle connection " + std::to_string(i) + ": " + std::strerror(errno) +
                 " (is the fd limit high enough? loopbench raises it to the hard limit)");
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      fail_early("connect " + o.host + ":" + std::to_string(o.port) + " (idle connection " +
                 std::to_string(i) + "): " + std::strerror(errno));
    }
    // Reset, not closed, at exit: 10,000 connections per run would otherwise
    // leave as many ports in TIME_WAIT for a minute.
    linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    idle_fds.push_back(fd);
  }
  if (o.idle > 0) {
    std::printf("idle: %ld connections open\n", o.idle);
    std::fflush(stdout);
    timespec limit{60, 0};
    if (sigtimedwait(&go, nullptr, &limit) != SIGUSR1) {
      fail_early("no SIGUSR1 within 60 s of opening the idle connections");
    }
  }

  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(static_cast<std::size_t>(o.connections));
  // Connecting is not measured, so a plain blocking connect keeps it simple;
  // the sockets turn non-blocking before the run.
  for (std::size_t i = 0; i < conns.size(); ++i) {
    Conn& c = conns[i];
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0) fail_early(std::string("socket: ") + std::strerror(errno));
    if (::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      fail_early("connect " + o.host + ":" + std::to_string(o.port) + " (connection " +
                 std::to_string(i) + "): " + std::strerror(errno));
    }
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    c.out.resize(static_cast<std::size_t>(o.size));
    c.in.resize(static_cast<std::size_t>(o.size));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  }

  std::vector<std::int64_t> rtt_ns;  // every round trip, so the percentiles are exact
  rtt_ns.reserve(1 << 20);
  std::string error;
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(o.seconds));
  const Clock::time_point give_up = end + std::chrono::seconds(2);
  Clock::time_point last = start;
  std::size_t in_flight = 0;

  // Sends what is left of c's message; arms EPOLLOUT only while a send is partial.
  auto push = [&](Conn& c, std::size_t id) {
    while (c.sent < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n > 0) {
        c.sent += static_cast<std::size_t>(n);
      } else if (errno == EAGAIN || errno == EINTR) {
        break;
      } else {
        error = "send on connection " + std::to_string(id) + ": " + std::strerror(errno);
        return;
      }
    }
    bool want = c.sent < c.out.size();
    if (want != c.want_out) {
      c.want_out = want;
      epoll_event ev{};
      ev.events = want ? EPOLLIN | EPOLLOUT : EPOLLIN;
      ev.data.u64 = id;
      ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    }
  };
  auto begin_message = [&](Conn& c, std::size_t id) {
    ++c.seq;
    make_message(c, id);
    c.sent = c.got = 0;
    c.busy = true;
    ++in_flight;
    c.started = Clock::now();
    push(c, id);
  };

  for (std::size_t i = 0; i < conns.size() && error.empty(); ++i) begin_message(conns[i], i);
  std::vector<epoll_event> events(conns.size());
  while (error.empty()) {
    Clock::time_point now = Clock::now();
    bool sending = now < end;
    if (!sending && in_flight == 0) break;
    if (now >= give_up) {
      error = std::to_string(in_flight) + " replies still missing 2 s after the end";
      break;
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>((sending ? end : give_up) - now);
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()),
                         static_cast<int>(wait.count()) + 1);
    if (n < 0 && errno != EINTR) error = std::string("epoll_wait: ") + std::strerror(errno);
    for (int k = 0; k < n && error.empty(); ++k) {
      std::size_t id = events[k].data.u64;
      Conn& c = conns[id];
      if (events[k].events & EPOLLOUT) push(c, id);
      if (!(events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
      // Read at most what is still due; anything the server sends beyond a
      // reply (or unasked) shows up as a mismatch or as unexpected data.
      if (!c.busy) {
        error = "connection " + std::to_string(id) + ": data or close from the server with no message in flight";
        break;
      }
      ssize_t r = ::recv(c.fd, c.in.data() + c.got, c.in.size() - c.got, 0);
      if (r == 0) {
        error = "connection " + std::to_string(id) + ": the server closed the connection";
      } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
        error = "recv on connection " + std::to_string(id) + ": " + std::strerror(errno);
      } else if (r > 0) {
        c.got += static_cast<std::size_t>(r);
      }
      if (!error.empty() || c.got < c.in.size() || c.sent < c.out.size()) continue;
      if (std::memcmp(c.in.data(), c.out.data(), c.out.size()) != 0) {
        error = "connection " + std::to_string(id) + ": message " + std::to_string(c.seq) +
                " came back with different bytes";
        break;
      }
      last = Clock::now();
      auto rtt = std::chrono::duration_cast<std::chrono::nanoseconds>(last - c.started).count();
      rtt_ns.push_back(rtt);
      c.busy = false;
      --in_flight;
      if (last < end) begin_message(c, id);
    }
  }

  // The measured time runs to the last reply (including those after the end).
  double secs = std::chrono::duration<double>((rtt_ns.empty() ? Clock::now() : last) - start).count();
  std::size_t msgs = rtt_ns.size();
  if (error.empty() && msgs == 0) error = "no message completed a round trip";
  auto pct_us = [&](double p) {
    if (rtt_ns.empty()) return 0.0;
    std::size_t k = std::min(rtt_ns.size() - 1, static_cast<std::size_t>(p * rtt_ns.size()));
    std::nth_element(rtt_ns.begin(), rtt_ns.begin() + static_cast<std::ptrdiff_t>(k), rtt_ns.end());
    return static_cast<double>(rtt_ns[k]) / 1000.0;
  };
  double p50 = pct_us(0.50), p99 = pct_us(0.99);
  if (!error.empty()) std::fprintf(stderr, "echo_client: %s\n", error.c_str());
  std::printf("{\"connections\":%ld,\"size\":%ld,\"msgs\":%zu,\"seconds\":%.3f,\"msgs_per_s\":%.1f,"
              "\"rtt_p50_us\":%.1f,\"rtt_p99_us\":%.1f,\"ok\":%s}\n",
              o.connections, o.size, msgs, secs, secs > 0 ? msgs / secs : 0.0, p50, p99,
              error.empty() ? "true" : "false");
  std::fflush(stdout);
  for (Conn& c : conns) ::close(c.fd);
  return error.empty() ? 0 : 1;
}
