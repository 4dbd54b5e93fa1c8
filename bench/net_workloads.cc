#include "bench/net_workloads.h"

#include "bench/loop_counters.h"
#include "bench/process.h"
#include "tools/certs/self_signed.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

namespace loopbench {

namespace {

// SIGTERM, then SIGKILL after 5 s. True if it exited with status 0, as the
// example servers do on SIGTERM.
bool stop_server(child& c, std::string& error) {
  kill(c.pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int status = 0;
  pid_t waited;
  while ((waited = waitpid(c.pid, &status, WNOHANG)) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(c.pid, SIGKILL);
      wait_exit(c.pid);
      error = "the server did not exit within 5 s of SIGTERM";
      close(c.out);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  close(c.out);
  if (waited < 0) {
    error = std::string("waiting for the server: ") + std::strerror(errno);
    return false;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  error = WIFSIGNALED(status) ? "the server died of signal " + std::to_string(WTERMSIG(status))
                              : "the server exited with status " +
                                    std::to_string(WEXITSTATUS(status));
  return false;
}

// User + system CPU seconds of the whole process (every thread, io_uring's
// workers included) from /proc/PID/stat.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A memory figure of /proc/PID/status ("VmHWM:", "VmRSS:"), in KiB.
double status_kib(pid_t pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stod(line.substr(field.size()));
  }
  return 0;
}

// The process's peak resident set, in KiB.
double peak_rss_kib(pid_t pid) { return status_kib(pid, "VmHWM:"); }

// A server of examples/ on the backend under test, pinned to the first CPU
// when there are two or more.
struct server {
  child proc;
  int port = 0;
  std::string error;
  // Where an example server writes its loops' counters at exit (--stats);
  // empty for a peer.
  std::string stats_file;
};

// A fresh name for a server's --stats file.
std::string new_stats_file() {
  static int made = 0;
  const char* tmp = std::getenv("TMPDIR");
  return std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/loopbench-stats-" +
         std::to_string(getpid()) + "-" + std::to_string(++made) + ".json";
}

// After the server exited: the counters it wrote, per operation (`ops`: its
// messages or requests), on `r`; then the file is removed. The counts run
// from the server's start to its exit, so they include the start-up probe
// and the reply check: a few operations among the run's many thousands.
void set_server_counters(run_record& r, const server& s, double ops) {
  if (s.stats_file.empty()) return;
  std::ifstream in(s.stats_file);
  std::string line;
  std::getline(in, line);
  std::remove(s.stats_file.c_str());
  std::optional<run_record> c = parse_json(line);
  if (!c) return;
  polyloop::LoopStats after;
  auto count = [&c](const char* key) {
    return static_cast<std::uint64_t>(c->get(key).value_or(0));
  };
  after.iterations = count("iterations");
  after.waits_blocking = count("waits_blocking");
  after.backend.syscalls = count("syscalls");
  after.backend.epoll_waits = count("epoll_waits");
  after.backend.epoll_ctls = count("epoll_ctls");
  after.backend.io_attempts = count("io_attempts");
  after.backend.enters = count("enters");
  after.backend.sqes_submitted = count("sqes_submitted");
  after.backend.cqes_reaped = count("cqes_reaped");
  after.backend.context_runs = count("context_runs");
  set_loop_counters(r, polyloop::LoopStats{}, after, ops);
}

// Whether a connection to 127.0.0.1:port is accepted within `timeout`, while
// the server `pid` runs.
bool wait_accepting(pid_t pid, int port, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (true) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool connected = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    if (connected) return true;
    if (std::chrono::steady_clock::now() > deadline || waitpid(pid, nullptr, WNOHANG) != 0) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

server start_server(const std::string& program, const net_run_options& o,
                    const std::vector<int>& cpus) {
  server s;
  std::vector<std::string> command = o.server_command;
  if (command.empty()) {
    s.stats_file = new_stats_file();
    command = {program, "--backend=" + o.backend, "--port=0", "--stats=" + s.stats_file};
    if (o.server_loops > 1) command.push_back("--loops=" + std::to_string(o.server_loops));
    if (!o.tls_cert_file.empty()) {
      command.push_back("--tls-cert=" + o.tls_cert_file);
      command.push_back("--tls-key=" + o.tls_key_file);
    }
  } else if (o.server_loops > 1) {
    command.push_back("--loops=" + std::to_string(o.server_loops));  // a peer's (libuv's)
  }
  s.proc = spawn(command, cpus.size() >= 2 && o.server_loops == 1 ? cpus[0] : -1);
  if (s.proc.pid < 0) {
    s.error = "cannot start " + command[0];
    return s;
  }
  std::string line;
  if (o.server_port > 0) {
    s.port = o.server_port;
  } else if (read_line(s.proc.out, line, std::chrono::seconds(10)) &&
             line.rfind("listening on ", 0) == 0) {
    s.port = std::atoi(line.substr(line.rfind(':') + 1).c_str());
  }
  if (s.port <= 0 || !wait_accepting(s.proc.pid, s.port, std::chrono::seconds(10))) {
    s.error = s.port <= 0 ? command[0] + " did not report a listening port (said: \"" + line + "\")"
                          : command[0] + " did not accept connections on port " +
                                std::to_string(s.port) + " (it exited, or 10 s passed)";
    std::string ignored;
    stop_server(s.proc, ignored);
    s.proc.pid = -1;
  }
  return s;
}

// What one load against a server gave: the load generator's output and exit
// status, and the server's CPU time and peak memory over the load.
struct load_result {
  std::string out;
  int status = -1;
  double server_cpu_s = 0;
  double server_rss_kib = 0;
  bool server_ok = false;  // it then exited cleanly on SIGTERM
  std::string server_error;
};

// Runs the load generator `args` pinned to the second CPU (the server has the
// first), then stops the server.
load_result run_load(server& s, const std::vector<std::string>& args,
                     const std::vector<int>& cpus, bool pin_load = true) {
  load_result r;
  double cpu0 = cpu_seconds(s.proc.pid);
  child load = spawn(args, cpus.size() >= 2 && pin_load ? cpus[1] : -1);
  if (load.pid > 0) {
    bool timed_out = false;
    r.out = read_all(load.out, std::chrono::seconds(60), &timed_out);
    if (timed_out) kill(load.pid, SIGKILL);  // then its status says so
    r.status = wait_exit(load.pid);
    close(load.out);
  }
  double cpu1 = cpu_seconds(s.proc.pid);
  r.server_cpu_s = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
  r.server_rss_kib = peak_rss_kib(s.proc.pid);
  r.server_ok = stop_server(s.proc, r.server_error);
  if (r.server_cpu_s < 0 && r.server_ok) {
    r.server_ok = false;
    r.server_error = "could not read the server's CPU time from /proc";
  }
  return r;
}

// --- echo --------------------------------------------------------------------

// "--seconds=S" for a load generator.
std::string seconds_arg(const net_run_options& o) {
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", o.seconds);
  return std::string("--seconds=") + seconds;
}

// What echo_client's result line `c` says, and the server's CPU over it, as
// the run's figures; returns the messages echoed.
double set_echo_figures(run_record& r, const run_record& c, double server_cpu_s) {
  double msgs = c.get("msgs").value_or(0);
  double secs = c.get("seconds").value_or(0);
  r.set("n", msgs);
  r.set("seconds", secs);
  r.set("ns_per_op", msgs > 0 ? secs * 1e9 / msgs : 0);
  r.set("msgs_per_s", c.get("msgs_per_s").value_or(0));
  r.set("rtt_p50_us", c.get("rtt_p50_us").value_or(0));
  r.set("rtt_p99_us", c.get("rtt_p99_us").value_or(0));
  r.set("server_cpu_us_per_msg", msgs > 0 ? server_cpu_s * 1e6 / msgs : 0);
  return msgs;
}

void run_echo(std::size_t size, const net_run_options& o, const std::vector<int>& cpus,
              run_record& r) {
  r.set("size", static_cast<double>(size));
  server s = start_server(o.programs_dir + "/examples/echo_server", o, cpus);
  if (s.proc.pid < 0) {
    r.error = s.error;
    return;
  }
  load_result l = run_load(s,
                           {o.programs_dir + "/bench/echo_client",
                            "--port=" + std::to_string(s.port), "--size=" + std::to_string(size),
                            seconds_arg(o)},
                           cpus, o.pin_load);
  std::optional<run_record> c = parse_last_json(l.out);
  if (!c) {
    r.error = "echo_client printed no result (wait status " + std::to_string(l.status) + ")";
    return;
  }
  double msgs = set_echo_figures(r, *c, l.server_cpu_s);
  r.set("peak_rss_kib", l.server_rss_kib);
  set_server_counters(r, s, msgs);
  r.ok = c->ok && l.status == 0 && msgs > 0 && l.server_ok;
  if (!c->ok || l.status != 0) {
    r.error = "echo_client reported a failure (see its message above)";
  } else if (!l.server_ok) {
    r.error = l.server_error;
  }
}

// --- idle_conns --------------------------------------------------------------

// The process's resident set now, in KiB.
double rss_kib(pid_t pid) { return status_kib(pid, "VmRSS:"); }

std::size_t open_fds(pid_t pid) {
  std::error_code ec;
  std::size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// The echo workload (64 B, 50 connections) while the server holds `idle`
// connections that never send: what each idle connection costs the server
// in memory, and whether holding them costs the active ones CPU.
void run_idle_conns(long idle, const net_run_options& o, const std::vector<int>& cpus,
                    run_record& r) {
  r.set("size", 64);
  r.set("idle", static_cast<double>(idle));
  server s = start_server(o.programs_dir + "/examples/echo_server", o, cpus);
  if (s.proc.pid < 0) {
    r.error = s.error;
    return;
  }
  // start_server's probe connection may still be open in the server: let it
  // see the probe's end first, so that the baseline does not count it.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  double rss_before = rss_kib(s.proc.pid);
  std::size_t fds_before = open_fds(s.proc.pid);
  child load = spawn({o.programs_dir + "/bench/echo_client", "--port=" + std::to_string(s.port),
                      "--size=64", "--idle=" + std::to_string(idle), seconds_arg(o)},
                     cpus.size() >= 2 ? cpus[1] : -1);
  std::string line, error;
  bool opened = load.pid > 0 && read_line(load.out, line, std::chrono::seconds(60)) &&
                line.rfind("idle:", 0) == 0;
  // Connected is not yet accepted: wait until the server has an fd for each
  // idle connection, and its memory has settled, before reading it.
  double rss_idle = 0;
  if (opened) {
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (open_fds(s.proc.pid) < fds_before + static_cast<std::size_t>(idle) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (open_fds(s.proc.pid) < fds_before + static_cast<std::size_t>(idle)) {
      error = "the server accepted only " + std::to_string(open_fds(s.proc.pid) - fds_before) +
              " of the " + std::to_string(idle) + " idle connections within 30 s";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    rss_idle = rss_kib(s.proc.pid);
  } else {
    error = "echo_client did not open its idle connections (said: \"" + line + "\")";
  }
  double cpu0 = cpu_seconds(s.proc.pid);
  if (load.pid > 0) kill(load.pid, SIGUSR1);
  // The server's CPU is read when the client prints its figures, before it
  // closes its connections: the server's work on 10,050 ends of stream
  // afterwards is not active messages' cost.
  std::string out;
  double cpu1 = 0;
  bool timed_out = false;
  if (load.pid > 0) {
    bool figures = read_line(load.out, out, std::chrono::seconds(90));
    cpu1 = cpu_seconds(s.proc.pid);
    out += "\n" + read_all(load.out, std::chrono::seconds(figures ? 30 : 1), &timed_out);
  }
  if (timed_out) kill(load.pid, SIGKILL);
  int status = load.pid > 0 ? wait_exit(load.pid) : -1;
  if (load.pid > 0) close(load.out);
  std::string server_error;
  bool server_ok = stop_server(s.proc, server_error);
  std::optional<run_record> c = parse_last_json(out);
  double msgs = c ? set_echo_figures(r, *c, cpu1 - cpu0) : 0;
  set_server_counters(r, s, msgs);
  r.set("server_bytes_per_idle_conn",
        idle > 0 ? std::max(0.0, rss_idle - rss_before) * 1024 / static_cast<double>(idle) : 0);
  r.ok = error.empty() && c && c->ok && status == 0 && msgs > 0 && server_ok;
  if (!r.ok) {
    r.error = !error.empty()        ? error
              : !c || status != 0   ? "echo_client reported a failure (see its message above)"
              : !server_ok          ? server_error
                                    : "no message completed a round trip";
  }
}

// --- http --------------------------------------------------------------------

const char http_request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

// Whether `reply` is the workload's 200 "Hello, World!"; if not, says what
// came instead.
bool is_expected_reply(const std::string& reply, std::string& error) {
  bool ok = reply.rfind("HTTP/1.1 200 OK\r\n", 0) == 0 &&
            reply.find("\r\nContent-Type: text/plain\r\n") != std::string::npos &&
            reply.find("\r\nContent-Length: 13\r\n") != std::string::npos &&
            reply.size() >= 13 && reply.compare(reply.size() - 13, 13, "Hello, World!") == 0;
  if (!ok) error = "GET / did not get the expected 200 \"Hello, World!\" reply: \"" + reply + "\"";
  return ok;
}

// A blocking connection to 127.0.0.1:port with a 5 s receive timeout, or -1.
int connect_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One GET / on a fresh connection; true if the reply is the workload's.
bool check_http_reply(int port, std::string& error) {
  int fd = connect_loopback(port);
  std::string reply;
  if (fd >= 0 && send(fd, http_request, sizeof http_request - 1, MSG_NOSIGNAL) ==
                     sizeof http_request - 1) {
    char buf[1024];
    ssize_t n;
    while (reply.find("Hello, World!") == std::string::npos &&
           (n = recv(fd, buf, sizeof buf, 0)) > 0) {
      reply.append(buf, static_cast<std::size_t>(n));
    }
  }
  if (fd >= 0) close(fd);
  return is_expected_reply(reply, error);
}

// The same over TLS, the server's certificate verified against `cert_file`
// for the address 127.0.0.1: the workload measures a correct TLS server,
// not one that answers anything.
bool check_https_reply(int port, const std::string& cert_file, std::string& error) {
  struct free_ctx {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
  };
  struct free_ssl {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  std::unique_ptr<SSL_CTX, free_ctx> ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr || SSL_CTX_load_verify_locations(ctx.get(), cert_file.c_str(), nullptr) != 1) {
    error = "cannot make a TLS client that trusts " + cert_file;
    return false;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  int fd = connect_loopback(port);
  if (fd < 0) {
    error = "cannot connect to 127.0.0.1:" + std::to_string(port);
    return false;
  }
  std::unique_ptr<SSL, free_ssl> ssl(SSL_new(ctx.get()));
  SSL_set_fd(ssl.get(), fd);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), "127.0.0.1");
  std::string reply;
  if (SSL_connect(ssl.get()) != 1) {
    long verify = SSL_get_verify_result(ssl.get());
    error = std::string("the TLS handshake with the server failed") +
            (verify != X509_V_OK ? std::string(": ") + X509_verify_cert_error_string(verify) : "");
    close(fd);
    return false;
  }
  if (SSL_write(ssl.get(), http_request, sizeof http_request - 1) == sizeof http_request - 1) {
    char buf[1024];
    int n;
    while (reply.find("Hello, World!") == std::string::npos &&
           (n = SSL_read(ssl.get(), buf, sizeof buf)) > 0) {
      reply.append(buf, static_cast<std::size_t>(n));
    }
  }
  ssl.reset();
  close(fd);
  return is_expected_reply(reply, error);
}

// A latency such as "1.23ms" from wrk, in microseconds.
double wrk_duration_us(const std::string& text) {
  double v = std::atof(text.c_str());
  if (text.find("us") != std::string::npos) return v;
  if (text.find("ms") != std::string::npos) return v * 1e3;
  if (text.find('m') != std::string::npos) return v * 60e6;
  return v * 1e6;  // "s"
}

// http, or https when o.tls_cert_file is set.
void run_http(const net_run_options& o, const std::vector<int>& cpus, run_record& r) {
  bool tls = !o.tls_cert_file.empty();
  server s = start_server(o.programs_dir + "/examples/http_hello", o, cpus);
  if (s.proc.pid < 0) {
    r.error = s.error;
    return;
  }
  std::string error;
  bool reply_ok = tls ? check_https_reply(s.port, o.tls_cert_file, error)
                      : check_http_reply(s.port, error);
  // wrk takes whole seconds.
  int seconds = std::max(1, static_cast<int>(std::lround(o.seconds)));
  load_result l = run_load(s,
                           {"wrk", "-t1", "-c64", "-d" + std::to_string(seconds) + "s",
                            "--latency",
                            std::string(tls ? "https" : "http") + "://127.0.0.1:" +
                                std::to_string(s.port) + "/"},
                           cpus, o.pin_load);

  double requests = 0, secs = 0, rps = 0, p99 = 0;
  bool errors = false;
  std::istringstream lines(l.out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string first, second, third, fourth;
    words >> first >> second >> third >> fourth;
    if (second == "requests" && third == "in") {
      requests = std::atof(first.c_str());
      secs = std::atof(fourth.c_str());
    } else if (first == "Requests/sec:") {
      rps = std::atof(second.c_str());
    } else if (first == "99%") {
      p99 = wrk_duration_us(second);
    } else if (first == "Non-2xx" || first == "Socket") {
      errors = true;  // wrk prints these lines only when something went wrong
      if (error.empty()) error = "wrk: " + line;
    }
  }
  r.set("n", requests);
  r.set("seconds", secs);
  r.set("ns_per_op", requests > 0 ? secs * 1e9 / requests : 0);
  r.set("requests_per_s", rps);
  r.set("latency_p99_us", p99);
  r.set("server_cpu_us_per_req", requests > 0 ? l.server_cpu_s * 1e6 / requests : 0);
  r.set("peak_rss_kib", l.server_rss_kib);
  set_server_counters(r, s, requests);
  r.ok = reply_ok && l.status == 0 && requests > 0 && !errors && l.server_ok;
  if (l.status != 0 && error.empty()) {
    error = "wrk failed (wait status " + std::to_string(l.status) +
            "): is it installed? tools/install_deps.sh installs it";
  }
  if (!l.server_ok && error.empty()) error = l.server_error;
  if (!r.ok) r.error = error.empty() ? "no requests were answered" : error;
}

// https_handshake: full handshakes against http_hello over TLS (or a peer),
// one connection after another, from bench/tls_handshake_client.
void run_https_handshake(const net_run_options& o, const std::vector<int>& cpus,
                         run_record& r) {
  server s = start_server(o.programs_dir + "/examples/http_hello", o, cpus);
  if (s.proc.pid < 0) {
    r.error = s.error;
    return;
  }
  load_result l = run_load(s,
                           {o.programs_dir + "/bench/tls_handshake_client",
                            "--port=" + std::to_string(s.port), "--cafile=" + o.tls_cert_file,
                            seconds_arg(o)},
                           cpus);
  std::optional<run_record> c = parse_last_json(l.out);
  if (!c) {
    r.error = "tls_handshake_client printed no result (wait status " + std::to_string(l.status) +
              "; its message is above)";
    return;
  }
  double handshakes = c->get("handshakes").value_or(0);
  double secs = c->get("seconds").value_or(0);
  r.set("n", handshakes);
  r.set("seconds", secs);
  r.set("ns_per_op", handshakes > 0 ? secs * 1e9 / handshakes : 0);
  r.set("handshakes_per_s", c->get("handshakes_per_s").value_or(0));
  r.set("handshake_p99_us", c->get("p99_us").value_or(0));
  r.set("server_cpu_us_per_handshake", handshakes > 0 ? l.server_cpu_s * 1e6 / handshakes : 0);
  set_server_counters(r, s, handshakes);
  r.set("peak_rss_kib", l.server_rss_kib);
  r.ok = c->ok && l.status == 0 && handshakes > 0 && l.server_ok;
  if (!r.ok) r.error = l.server_ok ? "tls_handshake_client failed" : l.server_error;
}

// --- many_loops ----------------------------------------------------------------

// echo 64 B and http against the example servers at 1 loop and at 2 loops
// (one per CPU, SO_REUSEPORT), one after the other, as one record: each
// figure named by its load and its loop count.
void run_many_loops(const net_run_options& options, const std::vector<int>& cpus,
                    run_record& r) {
  constexpr int loop_counts[] = {1, 2};
  r.ok = true;
  double total_ops = 0, total_seconds = 0;
  for (int loops : loop_counts) {
    net_run_options o = options;
    o.server_loops = loops;
    o.pin_load = false;  // the same at 1 loop as at 2, where no CPU is the client's
    std::string at = loops == 1 ? "_1loop" : "_" + std::to_string(loops) + "loops";
    run_record echo;
    run_echo(64, o, cpus, echo);
    r.set("echo" + at + "_msgs_per_s", echo.get("msgs_per_s").value_or(0));
    r.set("echo" + at + "_server_cpu_us_per_msg", echo.get("server_cpu_us_per_msg").value_or(0));
    if (auto syscalls = echo.get("syscalls_per_op")) {  // polyloop's servers only (--stats)
      r.set("echo" + at + "_syscalls_per_msg", *syscalls);
    }
    // A peer's command (bench/peers.cc) serves echo; its http half, http.
    net_run_options http_o = o;
    for (std::string& arg : http_o.server_command) {
      if (arg == "--serve=echo") arg = "--serve=http";
    }
    run_record http;
    run_http(http_o, cpus, http);
    r.set("http" + at + "_requests_per_s", http.get("requests_per_s").value_or(0));
    r.set("http" + at + "_server_cpu_us_per_req", http.get("server_cpu_us_per_req").value_or(0));
    for (run_record* part : {&echo, &http}) {
      total_ops += part->get("n").value_or(0);
      total_seconds += part->get("seconds").value_or(0);
      if (!part->ok && r.ok) {
        r.ok = false;
        r.error = (part == &echo ? "echo" : "http") + std::string(" at ") +
                  std::to_string(loops) + " loop(s): " + part->error;
      }
    }
  }
  r.set("n", total_ops);
  r.set("seconds", total_seconds);
  r.set("ns_per_op", total_ops > 0 ? total_seconds * 1e9 / total_ops : 0);
  double one = r.get("echo_1loop_msgs_per_s").value_or(0);
  r.set("echo_speedup_2loops", one > 0 ? r.get("echo_2loops_msgs_per_s").value_or(0) / one : 0);
  one = r.get("http_1loop_requests_per_s").value_or(0);
  r.set("http_speedup_2loops",
        one > 0 ? r.get("http_2loops_requests_per_s").value_or(0) / one : 0);
}

}  // namespace

bool write_self_signed_files(const std::string& dir, std::string& cert_file,
                             std::string& key_file, std::string& error) {
  polyloop::tools::self_signed_pem pem;
  try {
    pem = polyloop::tools::make_self_signed("localhost", "DNS:localhost,IP:127.0.0.1");
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
  cert_file = dir + "/cert.pem";
  key_file = dir + "/key.pem";
  std::ofstream(cert_file) << pem.cert_pem;
  std::ofstream(key_file) << pem.key_pem;
  std::error_code ec;
  if (std::filesystem::file_size(cert_file, ec) != pem.cert_pem.size() ||
      std::filesystem::file_size(key_file, ec) != pem.key_pem.size()) {
    error = "cannot write the certificate and key into " + dir;
    return false;
  }
  return true;
}

bool is_net_workload(std::string_view name) {
  return name == "echo" || name == "echo_16k" || name == "http" || name == "https" ||
         name == "https_handshake" || name == "idle_conns" || name == "many_loops";
}

run_record run_net_workload(std::string_view name, const net_run_options& options) {
  run_record r;
  bool tls = name == "https" || name == "https_handshake";
  r.workload = name == "http" || name == "idle_conns" || name == "many_loops" || tls
                   ? std::string(name)
                   : "echo";
  r.backend = options.backend;
  std::vector<int> cpus = allowed_cpus();
  auto run_tls = [&](const net_run_options& o) {
    if (name == "https") {
      run_http(o, cpus, r);
    } else {
      run_https_handshake(o, cpus, r);
    }
  };
  if (tls && options.tls_cert_file.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                      "/loopbench-https-XXXXXX";
    if (mkdtemp(dir.data()) == nullptr) {
      r.error = "cannot make a directory for the certificate (" + dir + "): " + std::strerror(errno);
      return r;
    }
    net_run_options o = options;
    if (write_self_signed_files(dir, o.tls_cert_file, o.tls_key_file, r.error)) run_tls(o);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  } else if (tls) {
    run_tls(options);
  } else if (name == "http") {
    run_http(options, cpus, r);
  } else if (name == "idle_conns") {
    run_idle_conns(10'000, options, cpus, r);
  } else if (name == "many_loops") {
    run_many_loops(options, cpus, r);
  } else {
    run_echo(name == "echo" ? 64 : 16384, options, cpus, r);
  }
  return r;
}

}  // namespace loopbench
