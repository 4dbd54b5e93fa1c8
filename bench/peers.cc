#include "bench/peers.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "bench/process.h"

namespace loopbench {

namespace {

struct peer {
  std::string_view name;
  std::vector<std::string_view> workloads;
};

const std::vector<peer>& peers() {
  static const std::vector<peer> all = {
      {"libuv", {"callbacks", "timers", "echo", "echo_16k", "http", "idle_conns", "many_loops"}},
      {"boost_asio",
       {"callbacks", "tasks", "sleep_chain", "timers", "echo", "echo_16k", "http", "idle_conns"}},
      {"uvloop",
       {"callbacks", "tasks", "sleep_chain", "timers", "queue", "lock", "echo", "echo_16k",
        "http", "idle_conns"}},
      {"asyncio",
       {"callbacks", "tasks", "sleep_chain", "timers", "queue", "lock", "echo", "echo_16k",
        "http", "idle_conns"}},
      {"nginx", {"http", "https", "https_handshake"}},
  };
  return all;
}

constexpr const char* python = "/usr/bin/python3";

// nginx from PATH, or where Debian puts it (/usr/sbin is not on every PATH).
std::string nginx_program() {
  const char* path = std::getenv("PATH");
  std::string dirs = std::string(path ? path : "") + ":/usr/sbin:/sbin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string candidate = dirs.substr(start, end - start) + "/nginx";
    if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// Runs `args` to the end with its output discarded; true if it exited 0.
bool succeeds(const std::vector<std::string>& args) {
  child c = spawn(args);
  if (c.pid < 0) return false;
  bool timed_out = false;
  read_all(c.out, std::chrono::seconds(30), &timed_out);
  if (timed_out) kill(c.pid, SIGKILL);
  close(c.out);
  return wait_exit(c.pid) == 0 && !timed_out;
}

// Why `name` cannot run here, or nothing if it can.
std::optional<std::string> missing(std::string_view name, const std::string& dir) {
  auto built = [&](const std::string& program) -> std::optional<std::string> {
    if (access((dir + "/" + program).c_str(), X_OK) == 0) return std::nullopt;
    return dir + "/" + program +
           " is missing: run loopbench with `bazel run -c opt //bench:loopbench`, which builds it";
  };
  if (name == "libuv") return built("bench/peers/libuv_peer");
  if (name == "boost_asio") return built("bench/peers/asio_peer");
  if (name == "asyncio" || name == "uvloop") {
    if (auto m = built("bench/peers/asyncio_peer")) return m;
    if (access(python, X_OK) != 0) {
      return std::string(python) + " is missing: run tools/install_deps.sh --peers (or "
                                   "apt-get install python3" +
             (name == "uvloop" ? " python3-uvloop)" : ")");
    }
    if (name == "uvloop" && !succeeds({python, "-c", "import uvloop"})) {
      return std::string("python3-uvloop is not installed for ") + python +
             ": run tools/install_deps.sh --peers (or apt-get install python3-uvloop)";
    }
    return std::nullopt;
  }
  if (nginx_program().empty()) {
    return "nginx is not installed: run tools/install_deps.sh --peers (or apt-get install "
           "nginx-light)";
  }
  return std::nullopt;
}

std::vector<std::string> core_command(std::string_view name, std::string_view workload,
                                      const std::string& dir) {
  std::string run = "--run=" + std::string(workload);
  if (name == "libuv") return {dir + "/bench/peers/libuv_peer", run};
  if (name == "boost_asio") return {dir + "/bench/peers/asio_peer", run};
  return {python, dir + "/bench/peers/asyncio_peer", "--loop=" + std::string(name), run};
}

// A port that nothing listens on now (for nginx, which cannot report the
// port it picked).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// nginx as the http workload's server: one process (no master), one worker
// connection pool, no logging, keep-alive without a request limit, and
// "Hello, World!" as text/plain for GET /. Its prefix directory (config,
// pid file, temp paths) is `prefix`. It runs as the user who started it
// (`user` matters only to root, whose nginx would otherwise hand its temp
// paths to "nobody", a user that Bazel's sandbox does not map).
// With `cert_file` set it serves the same over TLS (https), with the
// certificate and key the polyloop server gets.
void write_nginx_config(const std::string& prefix, int port, const std::string& cert_file = "",
                        const std::string& key_file = "") {
  std::ofstream conf(prefix + "/nginx.conf");
  std::string user = geteuid() == 0 ? "user root root;\n" : "";
  conf << "daemon off;\nmaster_process off;\nworker_processes 1;\n" << user
       << "error_log stderr error;\npid "
       << prefix
       << "/nginx.pid;\n"
          "events { worker_connections 4096; }\n"
          "http {\n"
          "  access_log off;\n  server_tokens off;\n  tcp_nodelay on;\n"
          "  keepalive_requests 100000000;\n  keepalive_timeout 65s;\n"
          "  client_body_temp_path "
       << prefix << ";\n  proxy_temp_path " << prefix << ";\n  fastcgi_temp_path " << prefix
       << ";\n  uwsgi_temp_path " << prefix << ";\n  scgi_temp_path " << prefix
       << ";\n"
          "  server {\n    listen 127.0.0.1:"
       << port
       << " backlog=1024" << (cert_file.empty() ? "" : " ssl") << ";\n";
  if (!cert_file.empty()) {
    conf << "    ssl_certificate " << cert_file << ";\n    ssl_certificate_key " << key_file
         << ";\n";
  }
  conf << "    location = / { default_type text/plain; return 200 \"Hello, World!\"; }\n"
          "    location / { return 404; }\n"
          "  }\n}\n";
}

}  // namespace

const std::vector<std::string>& peer_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const peer& p : peers()) out.emplace_back(p.name);
    return out;
  }();
  return names;
}

std::vector<std::string> peers_to_run(std::string_view list, const std::string& programs_dir) {
  std::vector<std::string> wanted;
  if (list == "all") {
    wanted = peer_names();
  } else {
    std::size_t start = 0;
    while (start <= list.size()) {
      std::size_t end = std::min(list.find(',', start), list.size());
      std::string name(list.substr(start, end - start));
      start = end + 1;
      if (name.empty()) continue;
      if (name == "asio") name = "boost_asio";  // the Boost.Asio program, not the asio backend
      const std::vector<std::string>& names = peer_names();
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        throw std::invalid_argument("unknown peer '" + name +
                                    "' (peers: libuv, asio, uvloop, asyncio, nginx)");
      }
      wanted.push_back(name);
    }
  }
  std::vector<std::string> out;
  for (const std::string& name : peer_names()) {
    if (std::find(wanted.begin(), wanted.end(), name) == wanted.end()) continue;
    if (std::optional<std::string> why = missing(name, programs_dir)) {
      std::cerr << "loopbench: skipping peer " << name << ": " << *why << "\n";
    } else {
      out.push_back(name);
    }
  }
  return out;
}

bool peer_runs(std::string_view name, std::string_view workload) {
  for (const peer& p : peers()) {
    if (p.name == name) {
      return std::find(p.workloads.begin(), p.workloads.end(), workload) != p.workloads.end();
    }
  }
  return false;
}

run_record run_peer_core(std::string_view name, std::string_view workload,
                         const std::string& programs_dir) {
  child c = spawn(core_command(name, workload, programs_dir));
  bool timed_out = false;
  std::string out = c.pid > 0 ? read_all(c.out, std::chrono::seconds(120), &timed_out) : "";
  if (timed_out) kill(c.pid, SIGKILL);
  int status = c.pid > 0 ? wait_exit(c.pid) : -1;
  if (c.out >= 0) close(c.out);
  std::optional<run_record> r = parse_last_json(out);
  if (!r || r->workload != workload || r->backend != name) {
    r.emplace();
    r->error = "the " + std::string(name) + " peer printed no result for " +
               std::string(workload) + " (wait status " + std::to_string(status) + ")";
  }
  r->workload = std::string(workload);
  r->backend = std::string(name);
  if (timed_out) {
    r->ok = false;
    r->error = "the peer did not finish within 120 s and was killed";
  } else if (status != 0 && r->ok) {
    r->ok = false;
    r->error = "the peer exited with wait status " + std::to_string(status);
  }
  return *r;
}

run_record run_peer_net(std::string_view name, std::string_view workload,
                        const net_run_options& options) {
  net_run_options o = options;
  o.backend = std::string(name);
  std::string serve = workload == "http" ? "--serve=http" : "--serve=echo";
  const std::string& dir = options.programs_dir;
  std::string prefix;
  if (name == "libuv") {
    o.server_command = {dir + "/bench/peers/libuv_peer", serve};
  } else if (name == "boost_asio") {
    o.server_command = {dir + "/bench/peers/asio_peer", serve};
  } else if (name == "nginx") {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                       "/loopbench-nginx-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      run_record r;
      r.workload = std::string(workload);
      r.backend = "nginx";
      r.error = "cannot make a directory for nginx's configuration (" + tmpl +
                "): " + std::strerror(errno);
      return r;
    }
    prefix = tmpl;
    o.server_port = free_port();
    if (workload == "https" || workload == "https_handshake") {
      run_record r;
      r.workload = std::string(workload);
      r.backend = "nginx";
      if (!write_self_signed_files(prefix, o.tls_cert_file, o.tls_key_file, r.error)) {
        std::error_code ignored;
        std::filesystem::remove_all(prefix, ignored);
        return r;
      }
    }
    write_nginx_config(prefix, o.server_port, o.tls_cert_file, o.tls_key_file);
    o.server_command = {nginx_program(), "-p", prefix, "-c", prefix + "/nginx.conf", "-e",
                        "stderr"};
  } else {
    o.server_command = {python, dir + "/bench/peers/asyncio_peer",
                        "--loop=" + std::string(name), serve};
  }
  run_record r = run_net_workload(workload, o);
  if (!prefix.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(prefix, ignored);
  }
  return r;
}

}  // namespace loopbench
