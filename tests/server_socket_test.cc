// Servers that share a port (ServerOptions::reuse_port, SO_REUSEPORT) and
// servers made from a socket the caller made (start_server_from_socket,
// asyncio's start_server(sock=...)), on the backend under test: connections
// reach both sharers, a bind without reuse_port is refused with EADDRINUSE,
// an adopted listening or just-bound socket serves, and what is not a bound
// stream socket is refused with a message saying what it is.
#include "net/stream.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE server_socket
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;

namespace {

struct server_fixture : pl::testing::loop_fixture {
  pl::testing::handler_log log;
  server_fixture() { log.install(*loop); }
  template <class T>
  T run(pl::Task<T> t) {
    return loop->run_until_complete(pl::wait_for(std::move(t), 8s));
  }
};

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Answers one line with the server's name, then closes.
net::ConnectionHandler say_name(std::string name, int& count) {
  return [name, &count](net::Stream s) -> pl::Task<> {
    co_await s.read_until("\n");
    ++count;
    s.write(name + "\n");
    s.close();
    co_await s.wait_closed();
  };
}

// One connection to 127.0.0.1:port: the line the server answers.
pl::Task<std::string> ask(std::uint16_t port) {
  net::Stream c = co_await net::open_connection("127.0.0.1", port);
  c.write("who?\n");
  std::string answer = co_await c.read_until("\n");
  c.close();
  co_await c.wait_closed();
  co_return answer;
}

// A TCP socket of `type` bound to 127.0.0.1 on a free port (not listening).
int bound_socket(int type = SOCK_STREAM) {
  int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

std::uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  BOOST_TEST_REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return ntohs(a.sin_port);
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

}  // namespace

// --- reuse_port ---------------------------------------------------------------

// CPython test_events.py: EventLoopTestsMixin.test_create_server_reuse_port
// (there: the option reaches the socket; here: what it is for, two servers
// on one port both serving).
BOOST_FIXTURE_TEST_CASE(two_servers_with_reuse_port_share_a_port_and_both_get_connections,
                        server_fixture) {
  run([]() -> pl::Task<> {
    int to_a = 0, to_b = 0;
    net::ServerOptions shared;
    shared.reuse_port = true;
    net::Server a = co_await net::start_server(say_name("a", to_a), "127.0.0.1", 0, shared);
    net::Server b = co_await net::start_server(say_name("b", to_b), "127.0.0.1", a.port(), shared);
    BOOST_TEST(b.port() == a.port());
    // The kernel picks a listener by a hash of the client's address and
    // port: 64 clients from 64 ports all landing on one of two has odds of
    // 2^-63.
    constexpr int clients = 64;
    int answered_a = 0, answered_b = 0;
    for (int i = 0; i < clients; ++i) {
      std::string answer = co_await ask(a.port());
      if (answer == "a\n") ++answered_a;
      if (answer == "b\n") ++answered_b;
    }
    BOOST_TEST(answered_a + answered_b == clients);
    BOOST_TEST(answered_a > 0, "server a got none of " << clients << " connections");
    BOOST_TEST(answered_b > 0, "server b got none of " << clients << " connections");
    BOOST_TEST(to_a == answered_a);
    BOOST_TEST(to_b == answered_b);
    a.close();
    b.close();
    co_await a.wait_closed();
    co_await b.wait_closed();
  }());
  BOOST_TEST(log.messages.empty());
}

// CPython test_events.py: EventLoopTestsMixin.test_create_server_addr_in_use.
BOOST_FIXTURE_TEST_CASE(a_second_server_without_reuse_port_fails_with_eaddrinuse,
                        server_fixture) {
  run([]() -> pl::Task<> {
    int count = 0;
    net::ServerOptions shared;
    shared.reuse_port = true;
    net::Server first = co_await net::start_server(say_name("a", count), "127.0.0.1", 0, shared);
    std::uint16_t port = first.port();
    // Neither the plain overload nor the options without reuse_port may
    // take a port another socket shares: both sockets must ask for it.
    for (bool with_options : {false, true}) {
      try {
        if (with_options) {
          co_await net::start_server(say_name("b", count), "127.0.0.1", port, net::ServerOptions{});
        } else {
          co_await net::start_server(say_name("b", count), "127.0.0.1", port);
        }
        BOOST_ERROR("a second server on port " << port << " without reuse_port was started");
      } catch (const std::system_error& e) {
        BOOST_TEST(e.code().value() == EADDRINUSE, e.what());
        BOOST_TEST(contains(e.what(), "listen on 127.0.0.1:" + std::to_string(port)), e.what());
      }
    }
    // And the first still serves.
    BOOST_TEST(co_await ask(port) == "a\n");
    first.close();
    co_await first.wait_closed();
  }());
  BOOST_TEST(log.messages.empty());
}

// --- start_server_from_socket -------------------------------------------------

// CPython test_events.py: EventLoopTestsMixin.test_create_server_sock.
BOOST_FIXTURE_TEST_CASE(a_server_from_a_listening_socket_serves_on_its_port, server_fixture) {
  int fd = bound_socket();
  BOOST_TEST_REQUIRE(::listen(fd, 16) == 0);
  std::uint16_t port = port_of(fd);
  run([](int fd, std::uint16_t port) -> pl::Task<> {
    int count = 0;
    net::Server server = co_await net::start_server_from_socket(say_name("adopted", count), fd);
    BOOST_TEST(server.port() == port);
    BOOST_TEST(server.address().host == "127.0.0.1");
    BOOST_TEST(co_await ask(port) == "adopted\n");
    BOOST_TEST(co_await ask(port) == "adopted\n");
    BOOST_TEST(count == 2);
    server.close();
    co_await server.wait_closed();
  }(fd, port));
  BOOST_TEST(!is_open(fd), "the Server owns the socket: close() closes it");
  BOOST_TEST(log.messages.empty());
}

BOOST_FIXTURE_TEST_CASE(a_server_from_a_bound_socket_listens_on_it, server_fixture) {
  int fd = bound_socket();  // blocking, not listening
  std::uint16_t port = port_of(fd);
  run([](int fd, std::uint16_t port) -> pl::Task<> {
    int count = 0;
    net::Server server = co_await net::start_server_from_socket(say_name("bound", count), fd, 8);
    BOOST_TEST(server.port() == port);
    BOOST_TEST((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0, "the adopted socket is non-blocking");
    BOOST_TEST(co_await ask(port) == "bound\n");
    server.close();
    co_await server.wait_closed();
  }(fd, port));
  BOOST_TEST(!is_open(fd));
  BOOST_TEST(log.messages.empty());
}

namespace {
// start_server_from_socket(fd) must throw E with `part` in its message and
// leave fd open (the caller's).
template <class E>
void expect_refused(server_fixture& f, int fd, std::string part) {
  int count = 0;
  try {
    f.run(net::start_server_from_socket(say_name("x", count), fd));
    BOOST_ERROR("fd " << fd << " was adopted; expected a refusal naming \"" << part << "\"");
  } catch (const E& e) {
    BOOST_TEST(contains(e.what(), part), "message \"" << e.what() << "\" lacks \"" << part << "\"");
    BOOST_TEST(contains(e.what(), "start_server_from_socket(fd " + std::to_string(fd) + ")"),
               e.what());
  }
  BOOST_TEST(is_open(fd), "a refused fd stays the caller's, open");
}
}  // namespace

// CPython test_base_events.py: BaseEventLoopWithSelectorTests.test_create_server_stream_bittype
// (a datagram socket is refused), and asyncio's "A Stream Socket was expected".
BOOST_FIXTURE_TEST_CASE(what_is_not_a_bound_stream_socket_is_refused_saying_what_it_is,
                        server_fixture) {
  int pipe_fds[2];
  BOOST_TEST_REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  expect_refused<std::invalid_argument>(*this, pipe_fds[0], "not a socket");
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);

  int udp = bound_socket(SOCK_DGRAM);
  expect_refused<std::invalid_argument>(*this, udp, "a datagram socket (SOCK_DGRAM)");
  ::close(udp);

  int pair[2];
  BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  expect_refused<std::invalid_argument>(*this, pair[0], "connected to");
  ::close(pair[0]);
  ::close(pair[1]);

  int unbound = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(unbound >= 0);
  expect_refused<std::invalid_argument>(*this, unbound, "not bound");
  ::close(unbound);

  // A connected TCP socket: the client end of a connection to a listener.
  int listener = bound_socket();
  BOOST_TEST_REQUIRE(::listen(listener, 4) == 0);
  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(port_of(listener));
  BOOST_TEST_REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  expect_refused<std::invalid_argument>(*this, client,
                                        "connected to 127.0.0.1:" + std::to_string(port_of(listener)));
  ::close(client);
  ::close(listener);

  // A closed descriptor: the errno, EBADF.
  int closed = bound_socket();
  ::close(closed);
  try {
    int count = 0;
    run(net::start_server_from_socket(say_name("x", count), closed));
    BOOST_ERROR("a closed fd was adopted");
  } catch (const std::system_error& e) {
    BOOST_TEST(e.code().value() == EBADF, e.what());
  }
  BOOST_TEST(log.messages.empty());
}

// A Unix-domain socket the caller bound: served on its path.
BOOST_FIXTURE_TEST_CASE(a_server_from_a_bound_unix_socket_serves_on_its_path, server_fixture) {
  std::string dir = "/tmp/plsock.XXXXXX";
  BOOST_TEST_REQUIRE(::mkdtemp(dir.data()) != nullptr);
  std::string path = dir + "/s";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  BOOST_TEST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  run([](int fd, std::string path) -> pl::Task<> {
    int count = 0;
    net::Server server = co_await net::start_server_from_socket(say_name("unix", count), fd);
    BOOST_TEST(server.address().path == path);
    net::Stream c = co_await net::open_unix_connection(path);
    c.write("who?\n");
    BOOST_TEST(co_await c.read_until("\n") == "unix\n");
    c.close();
    co_await c.wait_closed();
    BOOST_TEST(count == 1);
    server.close();
    co_await server.wait_closed();
  }(fd, path));
  BOOST_TEST(!is_open(fd));
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
  BOOST_TEST(log.messages.empty());

  // An unbound Unix socket is refused as an unbound TCP one is.
  int unbound = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(unbound >= 0);
  expect_refused<std::invalid_argument>(*this, unbound, "not bound");
  ::close(unbound);
}
