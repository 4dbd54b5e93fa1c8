// io_uring's multishot accept (backend_traits::multishot_accept) where only
// io_uring can show it: a completion ring too small for a burst of clients,
// so that the kernel ends the multishot accept and the server starts it
// again (multishot_results::end 0) with every client still served; and the
// option that turns it off (the one-shot path, as on kernels before 5.19).
#include "backends/io_uring/io_uring_backend.h"

#define BOOST_TEST_MODULE io_uring_multishot
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string_view>
#include <string>
#include <vector>

#include "core/loop/loop_access.h"
#include "net/stream.h"
#include "polyloop/polyloop.h"
#include "tests/support/accept_clients.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using polyloop::backends::IoUringBackend;
using namespace std::chrono_literals;
using wall = std::chrono::steady_clock;
using polyloop::testing::bump_one;
using polyloop::testing::connect_raw;

namespace {

// `clients` connect at once; each is answered; returns accepts started.
pl::Task<std::uint64_t> burst(pl::EventLoop& loop, int clients) {
  int served = 0;
  net::Server server = co_await net::start_server(
      [&served](net::Stream s) { return bump_one(std::move(s), &served); }, "127.0.0.1", 0);
  std::vector<int> fds;
  for (int i = 0; i < clients; ++i) fds.push_back(connect_raw(server.port()));
  for (int i = 0; i < clients; ++i) {
    char b = static_cast<char>(i);
    BOOST_TEST_REQUIRE(::send(fds[i], &b, 1, 0) == 1);
  }
  auto deadline = wall::now() + 5s;
  while (served < clients && wall::now() < deadline) co_await pl::sleep(1ms);
  BOOST_TEST(served == clients);
  // Served: the answer is written, maybe not yet sent; the loop sends it.
  for (int fd : fds) {
    char b;
    while (::recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK) != 1 && wall::now() < deadline) {
      co_await pl::sleep(1ms);
    }
  }
  for (int i = 0; i < clients; ++i) {
    char b = 0;
    BOOST_TEST(::recv(fds[i], &b, 1, MSG_DONTWAIT) == 1);
    BOOST_TEST(b == static_cast<char>(i + 1));
    ::close(fds[i]);
  }
  server.close();
  co_await server.wait_closed();
  co_return loop.stats().op(pl::op_kind::accept).started;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_multishot_accept_the_kernel_ends_is_started_again) {
  if (!IoUringBackend::kernel_has_multishot_accept()) {
    BOOST_TEST_MESSAGE("skipped: this kernel has no IORING_ACCEPT_MULTISHOT");
    return;
  }
  IoUringBackend::options o;
  o.entries = 4;  // a completion ring of 16: a burst of 128 overflows it
  pl::EventLoop loop(std::make_unique<IoUringBackend>(o));
  BOOST_TEST_REQUIRE(pl::detail::loop_access::backend(loop).traits().multishot_accept);
  std::uint64_t started = loop.run_until_complete(pl::wait_for(burst(loop, 128), 10s));
  BOOST_TEST_MESSAGE("accepts started for 128 clients: " << started);
  // The kernel ends a multishot request whose completion finds the ring
  // full (6.18): the server must have started it again to serve them all.
  BOOST_TEST(started >= 2u);
  BOOST_TEST(started < 128u);
}

BOOST_AUTO_TEST_CASE(multishot_accept_off_accepts_one_by_one) {
  IoUringBackend::options o;
  o.multishot_accept = false;
  pl::EventLoop loop(std::make_unique<IoUringBackend>(o));
  BOOST_TEST_REQUIRE(!pl::detail::loop_access::backend(loop).traits().multishot_accept);
  std::uint64_t started = loop.run_until_complete(pl::wait_for(burst(loop, 32), 10s));
  BOOST_TEST(started >= 32u);
}

namespace {
// `messages` round trips of 64 bytes over one connection to an echo server
// reading with read_some; returns the recv operations started meanwhile.
pl::Task<std::uint64_t> ping_pong(pl::EventLoop& loop, int messages) {
  net::ConnectionHandler echo = [](net::Stream s) -> pl::Task<> {
    while (true) {
      std::span<const char> got = co_await s.read_some();
      if (got.empty()) break;
      s.write(std::string_view(got.data(), got.size()));
      co_await s.drain();
    }
    s.close();
  };
  net::Server server = co_await net::start_server(echo, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  std::uint64_t before = loop.stats().op(pl::op_kind::recv).started;
  const std::string msg(64, 'm');
  for (int i = 0; i < messages; ++i) {
    c.write(msg);
    BOOST_TEST_REQUIRE((co_await c.read_exactly(msg.size())) == msg);
  }
  std::uint64_t started = loop.stats().op(pl::op_kind::recv).started - before;
  c.close();
  co_await c.wait_closed();
  server.close();
  co_await server.wait_closed();
  co_return started;
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_multishot_recv_takes_one_start_for_many_messages) {
  if (!IoUringBackend::kernel_has_multishot_recv()) {
    BOOST_TEST_MESSAGE("skipped: this kernel has no multishot recv into a buffer ring");
    return;
  }
  IoUringBackend::options o;
  o.multishot_recv = true;
  pl::EventLoop loop(std::make_unique<IoUringBackend>(o));
  pl::Backend& backend = pl::detail::loop_access::backend(loop);
  BOOST_TEST_REQUIRE(backend.traits().multishot_recv);
  BOOST_TEST_REQUIRE(backend.lent() != nullptr);
  BOOST_TEST(backend.lent()->count == o.recv_buffers);
  std::uint64_t started = loop.run_until_complete(pl::wait_for(ping_pong(loop, 1000), 20s));
  BOOST_TEST_MESSAGE("recv started for 1000 round trips: " << started);
  // Each side's stream arms once and stays armed: a plain receive per
  // message would be 2000.
  BOOST_TEST(started < 100u);
}

BOOST_AUTO_TEST_CASE(multishot_recv_off_receives_one_by_one) {
  IoUringBackend::options o;
  o.multishot_recv = false;  // what a kernel before 6.0 gets from the probe
  pl::EventLoop loop(std::make_unique<IoUringBackend>(o));
  pl::Backend& backend = pl::detail::loop_access::backend(loop);
  BOOST_TEST_REQUIRE(!backend.traits().multishot_recv);
  BOOST_TEST(backend.lent() == nullptr);
  std::uint64_t started = loop.run_until_complete(pl::wait_for(ping_pong(loop, 1000), 20s));
  BOOST_TEST(started >= 2000u);
}

BOOST_AUTO_TEST_CASE(a_ring_size_that_is_not_a_power_of_two_is_refused_clearly) {
  if (!IoUringBackend::kernel_has_multishot_recv()) return;
  IoUringBackend::options o;
  o.multishot_recv = true;
  o.recv_buffers = 100;
  BOOST_CHECK_EXCEPTION(IoUringBackend{o}, std::invalid_argument, [](const std::invalid_argument& e) {
    return std::string(e.what()).find("power of two") != std::string::npos;
  });
}
