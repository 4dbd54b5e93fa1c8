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
