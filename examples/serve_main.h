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
//
// Prints "listening on HOST:PORT" (flushed) once it accepts connections, and
// serves until SIGINT or SIGTERM, which end it with status 0. Status 1: it
// could not listen (the message says why); 2: a bad command line.
#pragma once

#include <signal.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "net/stream.h"
#include "polyloop/polyloop.h"

namespace examples {

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string tls_cert;  // with tls_key: serve TLS (net/tls.h)
  std::string tls_key;
};

namespace detail {

[[noreturn]] inline void usage(std::string_view program, const std::string& problem) {
  std::cerr << program << ": " << problem << "\nusage: " << program
            << " [--backend=NAME] [--port=N] [--host=H] [--tls-cert=PATH --tls-key=PATH]\n";
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
    } else {
      usage(program, "unknown argument: " + std::string(arg));
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    usage(program, "--tls-cert and --tls-key go together: give both to serve TLS, or neither");
  }
  return o;
}

inline polyloop::Task<int> serve(polyloop::net::ConnectionHandler handler, server_options o) {
  polyloop::net::Server server;
  if (o.tls_cert.empty()) {
    server = co_await polyloop::net::start_server(std::move(handler), o.host, o.port);
  } else {
    auto tls = polyloop::net::TlsContext::server();
    tls.load_cert_chain(o.tls_cert, o.tls_key);  // TlsError naming the file and why
    server = co_await polyloop::net::start_server(std::move(handler), o.host, o.port, {tls});
  }
  std::cout << "listening on " << server.address().to_string() << std::endl;
  // Until SIGINT or SIGTERM (core/signals: delivered on the loop's thread).
  polyloop::EventLoop& loop = polyloop::get_running_loop();
  polyloop::Future<> stop = loop.create_future<>();
  auto on_stop = [stop]() mutable {
    if (!stop.done()) stop.set_result();
  };
  polyloop::add_signal_handler(loop, SIGINT, on_stop);
  polyloop::add_signal_handler(loop, SIGTERM, on_stop);
  co_await stop;
  server.close();
  co_await server.wait_closed();
  co_return 0;  // polyloop::run cancels the connections still open
}

}  // namespace detail

// Parses the command line, then serves `handler` until SIGINT or SIGTERM.
inline int serve_main(std::string_view program, int argc, char** argv,
                      polyloop::net::ConnectionHandler handler) {
  try {
    std::string backend = polyloop::backend_from_args(argc, argv);
    server_options o = detail::parse_options(program, argc, argv);
    ::signal(SIGPIPE, SIG_IGN);  // sends use MSG_NOSIGNAL; this is for anything else
    return polyloop::run(detail::serve(std::move(handler), std::move(o)), backend);
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace examples
