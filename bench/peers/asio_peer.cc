// The Boost.Asio peer of loopbench (/work/shared/bench/WORKLOADS.md): the
// workloads written on Boost.Asio 1.74 with C++20 coroutines, one
// single-threaded io_context, the way an Asio program would.
//
//   asio_peer --run=callbacks|tasks|sleep_chain|timers   one run, one JSON line,
//                                                        exit 1 if its check failed
//   asio_peer --serve=echo|http [--port=N]               the echo or http server: prints
//                                                        "listening on 127.0.0.1:PORT",
//                                                        serves until SIGTERM or SIGINT,
//                                                        then exits 0
//
// call_soon is asio::post; sleep(0) is `co_await asio::post(use_awaitable)`
// (a coroutine goes to the back of the queue and resumes); a task is a
// co_spawn'ed awaitable, gathered by completion handlers that store each
// result in its slot (Asio 1.74 has no gather); timers are steady_timers.
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// Boost 1.74 enables co_await support only for g++ (it looks for
// <experimental/coroutine> under clang, which libstdc++ lacks); clang 14
// with libstdc++'s <coroutine> works the same way.
#if defined(__clang__) && !defined(BOOST_ASIO_HAS_CO_AWAIT)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#endif
#include "third_party/asio/asio.h"

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double peak_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss);
}

double current_rss_kib() {
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1024.0;
}

// One JSON line: the common fields, then `extra` (",\"key\":value..."), then ok.
int report(const char* workload, double n, double seconds, const std::string& extra, bool ok,
           const std::string& error = "") {
  std::printf("{\"workload\":\"%s\",\"backend\":\"boost_asio\",\"n\":%.0f,\"seconds\":%.6f,"
              "\"ns_per_op\":%.3f%s,\"peak_rss_kib\":%.0f,\"ok\":%s",
              workload, n, seconds, seconds * 1e9 / n, extra.c_str(), peak_rss_kib(),
              ok ? "true" : "false");
  if (!ok && !error.empty()) std::printf(",\"error\":\"%s\"", error.c_str());
  std::printf("}\n");
  return ok ? 0 : 1;
}

std::string field(const char* key, double value) {
  char buf[96];
  std::snprintf(buf, sizeof buf, ",\"%s\":%.3f", key, value);
  return buf;
}

// --- callbacks ----------------------------------------------------------------

struct chain {
  asio::io_context* io;
  long* counter;
  long n;
  void operator()() const {
    if (*counter >= n) return;  // another chain reached N first
    if (++*counter < n) {
      asio::post(*io, *this);
    } else {
      io->stop();
    }
  }
};

int callbacks() {
  asio::io_context io(1);
  const long n = 2'000'000;
  long counter = 0;
  double t0 = now_s();
  for (int i = 0; i < 100; ++i) asio::post(io, chain{&io, &counter, n});
  io.run();
  double seconds = now_s() - t0;
  return report("callbacks", n, seconds, "", counter == n, "wrong count");
}

// --- tasks --------------------------------------------------------------------

awaitable<int> one_task(int i) {
  co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
  co_return i;
}

int tasks() {
  asio::io_context io(1);
  const int t = 100'000;
  std::vector<int> results(t, -1);
  int done = 0;
  double rss_before = current_rss_kib();
  double t0 = now_s();
  for (int i = 0; i < t; ++i) {
    asio::co_spawn(io, one_task(i), [&results, &done, i](std::exception_ptr e, int v) {
      if (!e) results[i] = v;
      ++done;
    });
  }
  io.run();
  double seconds = now_s() - t0;
  double rss_after = peak_rss_kib();
  long long sum = 0;
  bool in_order = done == t;
  for (int i = 0; i < t; ++i) {
    in_order = in_order && results[i] == i;
    sum += results[i];
  }
  return report("tasks", t, seconds,
                field("bytes_per_task", (rss_after - rss_before) * 1024.0 / t),
                in_order && sum == static_cast<long long>(t) * (t - 1) / 2,
                "results out of creation order or wrong sum");
}

// --- sleep_chain --------------------------------------------------------------

awaitable<long> sleeper(long n) {
  auto executor = co_await asio::this_coro::executor;
  long yields = 0;
  for (long i = 0; i < n; ++i) {
    co_await asio::post(executor, use_awaitable);
    ++yields;
  }
  co_return yields;
}

int sleep_chain() {
  asio::io_context io(1);
  const long n = 1'000'000;
  long yields = 0;
  double t0 = now_s();
  asio::co_spawn(io, sleeper(n), [&yields](std::exception_ptr e, long v) {
    if (!e) yields = v;
  });
  io.run();
  double seconds = now_s() - t0;
  return report("sleep_chain", n, seconds, "", yields == n, "wrong count");
}

// --- timers -------------------------------------------------------------------

int timers() {
  asio::io_context io(1);
  const int k = 200'000;
  int fired = 0, early = 0;
  std::vector<double> late_us;
  late_us.reserve(k);
  std::vector<std::unique_ptr<asio::steady_timer>> list;
  list.reserve(k);
  double t0 = now_s();
  for (int i = 0; i < k; ++i) {
    auto due = std::chrono::steady_clock::now() + std::chrono::microseconds((i * 7919L) % 200'000);
    auto& timer = list.emplace_back(std::make_unique<asio::steady_timer>(io, due));
    timer->async_wait([&, due](const boost::system::error_code& e) {
      if (e) return;
      auto lateness = std::chrono::steady_clock::now() - due;
      if (lateness.count() < 0) ++early;
      late_us.push_back(std::chrono::duration<double, std::micro>(lateness).count());
      ++fired;
    });
  }
  double scheduled = now_s();
  io.run();
  double seconds = now_s() - t0;
  std::sort(late_us.begin(), late_us.end());
  bool ok = fired == k && early == 0;
  return report("timers", k, seconds,
                field("overhead_ms", seconds * 1e3 - 200.0) +
                    field("late_p50_us", late_us.empty() ? 0 : late_us[late_us.size() / 2]) +
                    field("late_p99_us",
                          late_us.empty() ? 0 : late_us[late_us.size() * 99 / 100]) +
                    field("schedule_ms", (scheduled - t0) * 1e3),
                ok, std::to_string(fired) + " fired, " + std::to_string(early) + " early");
}

// --- servers ------------------------------------------------------------------

constexpr std::string_view ok_response =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
constexpr std::string_view not_found_response =
    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nNot Found\n";
constexpr std::string_view not_allowed_response =
    "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Type: text/plain\r\n"
    "Content-Length: 19\r\n\r\nMethod Not Allowed\n";
constexpr std::string_view bad_request_response =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    "Connection: close\r\n\r\nBad Request\n";
constexpr std::size_t read_size = 64 * 1024;  // as examples/echo_server's buffer
constexpr std::size_t max_head = 8 * 1024;

awaitable<void> echo(tcp::socket s) {
  s.set_option(tcp::no_delay(true));
  std::vector<char> buf(read_size);
  try {
    while (true) {
      std::size_t n = co_await s.async_read_some(asio::buffer(buf), use_awaitable);
      co_await asio::async_write(s, asio::buffer(buf.data(), n), use_awaitable);
    }
  } catch (const boost::system::system_error&) {
    // End of stream or a reset: the client is done.
  }
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether the headers (one "Name: value" per line) hold a Connection header
// listing "close".
bool asks_to_close(std::string_view headers) {
  while (!headers.empty()) {
    std::string_view line = headers.substr(0, headers.find("\r\n"));
    headers.remove_prefix(std::min(headers.size(), line.size() + 2));
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || !iequals(line.substr(0, colon), "connection")) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty()) {
      std::size_t comma = value.find(',');
      if (iequals(trim(value.substr(0, comma)), "close")) return true;
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
  }
  return false;
}

// The answer to one request head: 200 for GET /, 404 for another target,
// 405 for another method; empty for something that is not an HTTP/1.x
// request line (400, then close). *close_after: HTTP/1.0 or "Connection:
// close" (answer, then close).
std::string_view answer_for(std::string_view head, bool* close_after) {
  std::string_view line = head.substr(0, head.find("\r\n"));
  std::size_t sp1 = line.find(' ');
  std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || sp2 == sp1 + 1) return {};
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return {};
  *close_after = version == "HTTP/1.0" || asks_to_close(head.substr(line.size() + 2));
  std::string_view answer = method != "GET" && method != "HEAD" ? not_allowed_response
                            : target == "/"                    ? ok_response
                                                               : not_found_response;
  if (method == "HEAD") answer = answer.substr(0, answer.find("\r\n\r\n") + 4);
  return answer;
}

awaitable<void> http(tcp::socket s) {
  s.set_option(tcp::no_delay(true));
  std::vector<char> buf(read_size);
  std::size_t pending = 0;  // an incomplete request head at the start of buf
  std::string out;
  try {
    while (true) {
      std::size_t n = co_await s.async_read_some(
          asio::buffer(buf.data() + pending, buf.size() - pending), use_awaitable);
      std::string_view data(buf.data(), pending + n);
      out.clear();
      bool bad = false, finish = false;
      std::size_t end;
      while (!finish && (end = data.find("\r\n\r\n")) != std::string_view::npos) {
        std::string_view answer = answer_for(data.substr(0, end + 4), &finish);
        if (answer.empty()) {
          bad = true;
          break;
        }
        out += answer;
        data.remove_prefix(end + 4);
      }
      bad = bad || (!finish && data.size() > max_head);
      if (bad) out += bad_request_response;
      if (!out.empty()) co_await asio::async_write(s, asio::buffer(out), use_awaitable);
      if (bad || finish) break;
      pending = data.size();
      std::memmove(buf.data(), data.data(), pending);
    }
  } catch (const boost::system::system_error&) {
    // End of stream or a reset: the client is done.
  }
}

awaitable<void> accept_loop(tcp::acceptor& acceptor, bool serve_http) {
  while (true) {
    tcp::socket s = co_await acceptor.async_accept(use_awaitable);
    asio::co_spawn(acceptor.get_executor(), serve_http ? http(std::move(s)) : echo(std::move(s)),
                   asio::detached);
  }
}

int serve(bool serve_http, unsigned short port) {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&io](const boost::system::error_code&, int) { io.stop(); });
  asio::co_spawn(io, accept_loop(acceptor, serve_http), asio::detached);
  std::printf("listening on 127.0.0.1:%d\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view run, serve_what;
  unsigned short port = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with("--run=")) {
      run = arg.substr(6);
    } else if (arg.starts_with("--serve=")) {
      serve_what = arg.substr(8);
    } else if (arg.starts_with("--port=")) {
      port = static_cast<unsigned short>(std::atoi(argv[i] + 7));
    } else {
      std::fprintf(stderr, "asio_peer: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  try {
    if (run == "callbacks") return callbacks();
    if (run == "tasks") return tasks();
    if (run == "sleep_chain") return sleep_chain();
    if (run == "timers") return timers();
    if (serve_what == "echo" || serve_what == "http") return serve(serve_what == "http", port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_peer: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: asio_peer --run=callbacks|tasks|sleep_chain|timers | "
               "--serve=echo|http [--port=N]\n");
  return 2;
}
