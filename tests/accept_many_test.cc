// A server's accept loop over many connections, on the backend under test:
// one multishot accept where the backend has it (backend_traits::
// multishot_accept: io_uring on 5.19+), one accept per connection
// elsewhere (epoll, asio, and the io_uring set-ups of older kernels), with
// the same outcomes: every client served, and no descriptor leaked when the
// server or the loop closes while connections are being accepted.
//
// Clients are plain blocking sockets: on loopback connect() completes in
// the kernel, before the server has accepted, so a burst of them reaches
// the accept at once (many completions of one multishot accept in one
// iteration).
#include "net/stream.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE accept_many
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/loop/loop_access.h"
#include "tests/support/fd_listing.h"
#include "tests/support/accept_clients.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;
using wall = std::chrono::steady_clock;
using polyloop::testing::bump_one;
using polyloop::testing::connect_raw;

namespace {

bool backend_has_multishot_accept(pl::EventLoop& loop) {
  return pl::detail::loop_access::backend(loop).traits().multishot_accept;
}

std::uint64_t accepts_started(pl::EventLoop& loop) {
  return loop.stats().op(pl::op_kind::accept).started;
}

// What a client sees without waiting: 0 (end of stream), -errno (reset),
// or -EAGAIN (the connection is still open and silent).
int peek(int fd) {
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
  return n >= 0 ? static_cast<int>(n) : -errno;
}

pl::Task<bool> wait_until(std::function<bool()> pred, std::chrono::milliseconds timeout = 3s) {
  auto deadline = wall::now() + timeout;
  while (!pred()) {
    if (wall::now() > deadline) co_return false;
    co_await pl::sleep(1ms);
  }
  co_return true;
}

constexpr int burst = 64;
constexpr int rounds = 4;

// Bursts of clients connecting at once, each answered correctly.
pl::Task<> accept_bursts(pl::EventLoop& loop, bool multishot) {
  int served = 0;
  net::Server server = co_await net::start_server(
      [&served](net::Stream s) { return bump_one(std::move(s), &served); }, "127.0.0.1", 0);
  for (int round = 0; round < rounds; ++round) {
    std::vector<int> clients;
    for (int i = 0; i < burst; ++i) clients.push_back(connect_raw(server.port()));
    for (int i = 0; i < burst; ++i) {
      char b = static_cast<char>(i);
      BOOST_TEST_REQUIRE(::send(clients[i], &b, 1, 0) == 1);
    }
    int want = (round + 1) * burst;
    BOOST_TEST_REQUIRE(co_await wait_until([&] { return served == want; }),
                       served << " of " << want << " clients served");
    // Served: the answer is written, maybe not yet sent (drain() does not
    // wait below the high-water mark).
    BOOST_TEST_REQUIRE(co_await wait_until([&] {
      for (int fd : clients) {
        if (peek(fd) != 1) return false;
      }
      return true;
    }));
    for (int i = 0; i < burst; ++i) {
      char b = 0;
      BOOST_TEST(::recv(clients[i], &b, 1, MSG_DONTWAIT) == 1);
      BOOST_TEST(b == static_cast<char>(i + 1));
      ::close(clients[i]);
    }
  }
  std::uint64_t started = accepts_started(loop);
  if (multishot) {
    // One accept armed for all of them (the kernel may end one and it is
    // started again, but not once per connection).
    BOOST_TEST(started <= 8u, started << " accepts started for " << rounds * burst << " clients");
  } else {
    BOOST_TEST(started >= static_cast<std::uint64_t>(rounds * burst),
               started << " accepts started for " << rounds * burst << " clients");
  }
  server.close();
  co_await server.wait_closed();
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(bursts_of_clients_are_all_accepted_and_served, pl::testing::loop_fixture) {
  loop->run_until_complete(
      pl::wait_for(accept_bursts(*loop, backend_has_multishot_accept(*loop)), 10s));
}

namespace {
// A server closed in the same iteration as clients connect: the accepts
// the backend has in flight then (a multishot accept's completions still
// to come) must not leak a descriptor, and every client sees its
// connection end (end of stream, or a reset from the closed backlog).
pl::Task<> close_while_accepting(std::vector<int>* clients, int* handled) {
  net::Server server = co_await net::start_server(
      [handled](net::Stream) -> pl::Task<> {
        ++*handled;
        co_return;
      },
      "127.0.0.1", 0);
  co_await pl::sleep(1ms);  // the accept loop has started (and armed its accept)
  for (int i = 0; i < 32; ++i) clients->push_back(connect_raw(server.port()));
  server.close();  // before the loop has seen any of them
  co_await server.wait_closed();
  bool all_ended = co_await wait_until([&] {
    for (int fd : *clients) {
      if (peek(fd) == -EAGAIN) return false;
    }
    return true;
  });
  BOOST_TEST(all_ended, "a client's connection was left open after the server closed");
}
}  // namespace

BOOST_AUTO_TEST_CASE(server_closed_with_accepts_in_flight_leaks_no_descriptor) {
  std::map<int, std::string> before = pl::testing::open_fds();
  std::vector<int> clients;
  int handled = 0;
  {
    auto loop = pl::testing::make_loop();
    loop->run_until_complete(pl::wait_for(close_while_accepting(&clients, &handled), 10s));
    loop->close();
  }
  for (int fd : clients) ::close(fd);
  BOOST_TEST(handled <= 32);
  BOOST_TEST(pl::testing::fd_differences(before, pl::testing::open_fds()) == "");
}

namespace {
// Clients connected, the loop stopped before it ran their handlers: the
// loop's close() must close what the backend accepted meanwhile.
pl::Task<> connect_and_leave(std::vector<int>* clients) {
  // Handlers that wait past the loop's close: the streams they hold are
  // closed with their frames then.
  net::Server server = co_await net::start_server(
      [](net::Stream) -> pl::Task<> { co_await pl::sleep(1h); }, "127.0.0.1", 0);
  co_await pl::sleep(1ms);
  for (int i = 0; i < 32; ++i) clients->push_back(connect_raw(server.port()));
  co_await pl::sleep(0ms);  // one iteration: the accepts complete, nothing more
}
}  // namespace

BOOST_AUTO_TEST_CASE(loop_closed_with_the_server_accepting_leaks_no_descriptor) {
  std::map<int, std::string> before = pl::testing::open_fds();
  std::vector<int> clients;
  {
    auto loop = pl::testing::make_loop();
    loop->run_until_complete(pl::wait_for(connect_and_leave(&clients), 10s));
    loop->close();  // the server still open, its accept still armed
  }
  for (int fd : clients) {
    BOOST_TEST(peek(fd) != -EAGAIN, "a client's connection outlived the loop");
    ::close(fd);
  }
  BOOST_TEST(pl::testing::fd_differences(before, pl::testing::open_fds()) == "");
}
