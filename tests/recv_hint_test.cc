// op_hint::expect_wait on a receive (core/backend/backend.h), on the backend
// under test and each of its set-ups: the hint changes how a backend goes
// about a receive (io_uring: IORING_RECVSEND_POLL_FIRST, the kernel's poll
// armed before the first try), never what it gets. Bytes already there,
// bytes that come later, end of stream and a cancel each end a hinted
// receive as they end a plain one; and net::Stream, which hints every
// receive after one that drained the socket, still reads every message.
#include "core/backend/backend.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE recv_hint
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "core/loop/loop_stats.h"
#include "net/stream.h"
#include "polyloop/polyloop.h"
#include "tests/support/fd_guard.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using pl::testing::close_all;
using pl::testing::fd_set_guard;
using pl::testing::loop_fixture;

namespace {

struct socket_pair {
  int a = -1;
  int b = -1;
};

socket_pair make_socketpair(fd_set_guard& g) {
  int s[2];
  BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s) == 0,
                     "socketpair: " << std::strerror(errno));
  return {g.add(s[0]), g.add(s[1])};
}

// One receive hinted "will most likely wait".
pl::Task<std::string> hinted_recv(int fd, std::size_t max = 256) {
  std::string buf(max, '\0');
  pl::detail::io_awaiter op = pl::async_recv(fd, buf.data(), buf.size());
  op.hints = pl::op_hint::expect_wait;
  std::int64_t n = co_await op;
  buf.resize(static_cast<std::size_t>(n));
  co_return buf;
}

// One receive without a hint.
pl::Task<std::string> plain_recv(int fd, std::size_t max = 256) {
  std::string buf(max, '\0');
  std::int64_t n = co_await pl::async_recv(fd, buf.data(), buf.size());
  buf.resize(static_cast<std::size_t>(n));
  co_return buf;
}

pl::Task<> send_after(int fd, std::string s, std::chrono::milliseconds delay) {
  co_await pl::sleep(delay);
  BOOST_TEST(::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()));
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_hinted_receive_gets_the_bytes_already_there, loop_fixture) {
  fd_set_guard g;
  auto s = make_socketpair(g);
  BOOST_TEST_REQUIRE(::send(s.b, "there", 5, 0) == 5);
  BOOST_TEST(loop->run_until_complete(pl::wait_for(hinted_recv(s.a), 5s)) == "there");
  loop->run_until_complete(close_all(g, {s.a, s.b}));
}

BOOST_FIXTURE_TEST_CASE(a_hinted_receive_on_an_empty_socket_gets_what_comes_later, loop_fixture) {
  fd_set_guard g;
  auto s = make_socketpair(g);
  auto later = loop->create_task(send_after(s.b, "later", 20ms));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(hinted_recv(s.a), 5s)) == "later");
  loop->run_until_complete(later);
  // Again on the same fd: each hinted receive waits for its own bytes.
  auto again = loop->create_task(send_after(s.b, "again", 5ms));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(hinted_recv(s.a), 5s)) == "again");
  loop->run_until_complete(again);
  loop->run_until_complete(close_all(g, {s.a, s.b}));
}

BOOST_FIXTURE_TEST_CASE(a_hinted_receive_sees_end_of_stream, loop_fixture) {
  fd_set_guard g;
  auto s = make_socketpair(g);
  auto receiver = loop->create_task(hinted_recv(s.a));
  auto shut = loop->create_task([](int fd) -> pl::Task<> {
    co_await pl::sleep(10ms);
    BOOST_TEST(::shutdown(fd, SHUT_WR) == 0);
  }(s.b));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(receiver, 5s)) == "");
  loop->run_until_complete(shut);
  loop->run_until_complete(close_all(g, {s.a, s.b}));
}

// The bytes and the end of stream come together while a plain receive waits
// (one readiness event for both): the receive gets the bytes, fewer than it
// asked for, and the hinted receive after it must still see the end of
// stream, for which no event comes again. A backend that took the short
// receive for "drained until the next event" and queued the hinted one
// without a try hangs here (the asio backend's first version did).
BOOST_FIXTURE_TEST_CASE(a_hinted_receive_sees_an_end_of_stream_that_came_with_the_bytes,
                        loop_fixture) {
  fd_set_guard g;
  auto s = make_socketpair(g);
  auto plain_recv = [](int fd) -> pl::Task<std::string> {
    std::string buf(256, '\0');
    std::int64_t n = co_await pl::async_recv(fd, buf.data(), buf.size());
    buf.resize(static_cast<std::size_t>(n));
    co_return buf;
  };
  auto send_and_end = [](int fd) -> pl::Task<> {
    co_await pl::sleep(20ms);  // the plain receive waits by then
    BOOST_TEST(::send(fd, "last", 4, MSG_NOSIGNAL) == 4);
    BOOST_TEST(::shutdown(fd, SHUT_WR) == 0);
  };
  auto sender = loop->create_task(send_and_end(s.b));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(plain_recv(s.a), 5s)) == "last");
  loop->run_until_complete(sender);
  BOOST_TEST(loop->run_until_complete(pl::wait_for(hinted_recv(s.a), 5s)) == "");
  loop->run_until_complete(close_all(g, {s.a, s.b}));
}

BOOST_FIXTURE_TEST_CASE(a_cancelled_hinted_receive_ends_cancelled_and_takes_nothing,
                        loop_fixture) {
  fd_set_guard g;
  auto s = make_socketpair(g);
  auto receiver = loop->create_task(hinted_recv(s.a));
  loop->run_until_complete(pl::testing::pause(10ms));  // the receive waits in the backend
  receiver.cancel();
  BOOST_CHECK_THROW(loop->run_until_complete(receiver), pl::CancelledError);
  // What comes after the cancel is there for the next receive, whole.
  BOOST_TEST_REQUIRE(::send(s.b, "kept", 4, 0) == 4);
  BOOST_TEST(loop->run_until_complete(pl::wait_for(hinted_recv(s.a), 5s)) == "kept");
  loop->run_until_complete(close_all(g, {s.a, s.b}));
}

// net::Stream hints a receive when the one before it came back short (the
// socket was drained). A full read (as much as asked) is not hinted, and a
// short one is: both must go on getting every byte, in order.
BOOST_FIXTURE_TEST_CASE(stream_reads_after_short_and_full_reads_get_every_message, loop_fixture) {
  int sv[2];
  BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) ==
                     0);
  int peer = sv[1];
  auto body = [](int fd, int peer) -> pl::Task<> {
    pl::net::Stream stream(fd);
    std::array<char, 64> buf{};
    auto read_into = [&]() -> pl::Task<std::string> {
      std::size_t n = co_await stream.read_into(std::span<char>(buf));
      co_return std::string(buf.data(), n);
    };
    // Short read: the next receive is hinted, and its bytes come later.
    BOOST_TEST_REQUIRE(::send(peer, "a", 1, 0) == 1);
    BOOST_TEST(co_await read_into() == "a");
    auto later = pl::create_task(send_after(peer, "bc", 10ms));
    BOOST_TEST(co_await read_into() == "bc");
    co_await later;
    // 100 bytes at once: a full read of 64 (not hinted next), then the 36 left.
    std::string hundred(100, 'x');
    for (std::size_t i = 0; i < hundred.size(); ++i) hundred[i] = static_cast<char>('0' + i % 10);
    BOOST_TEST_REQUIRE(::send(peer, hundred.data(), hundred.size(), 0) == 100);
    std::string got = co_await read_into();
    BOOST_TEST(got.size() == 64u);
    got += co_await read_into();
    BOOST_TEST(got == hundred);
    // The buffered readers after a short fill: read_until across two sends.
    auto line = pl::create_task(send_after(peer, "end\n", 10ms));
    BOOST_TEST_REQUIRE(::send(peer, "the ", 4, 0) == 4);
    BOOST_TEST(co_await stream.read_until("\n") == "the end\n");
    co_await line;
    auto tail = pl::create_task(send_after(peer, "tail", 10ms));
    BOOST_TEST(co_await stream.read(64) == "tail");
    co_await tail;
    BOOST_TEST(::shutdown(peer, SHUT_WR) == 0);
    BOOST_TEST(co_await stream.read(64) == "");
    stream.close();
    co_await stream.wait_closed();
  };
  loop->run_until_complete(pl::wait_for(body(sv[0], peer), 10s));
  ::close(peer);  // never seen by the backend
}

// The hint given where a short receive does not empty the fd: a
// SOCK_SEQPACKET receive ends at its record, so "two" is still there after
// "one" came back short. The hinted receive still gets it (epoll waits for an
// edge that does not come, and finds it at its quiet-fd audit, 100-200 ms).
BOOST_FIXTURE_TEST_CASE(a_hinted_receive_gets_bytes_a_short_receive_left_behind, loop_fixture) {
  fd_set_guard g;
  int s[2];
  BOOST_TEST_REQUIRE(
      ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s) == 0,
      "socketpair: " << std::strerror(errno));
  int a = g.add(s[0]);
  int b = g.add(s[1]);
  // A first receive that waits for its record: the fd is registered, and
  // the edges its registration reported are behind us.
  auto first = loop->create_task(send_after(b, "zero", 10ms));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(plain_recv(a), 5s)) == "zero");
  loop->run_until_complete(first);
  BOOST_TEST_REQUIRE(::send(b, "one", 3, 0) == 3);
  BOOST_TEST_REQUIRE(::send(b, "two", 3, 0) == 3);
  loop->run_until_complete(pl::testing::pause(10ms));  // their edge comes, nobody reads
  BOOST_TEST(loop->run_until_complete(pl::wait_for(plain_recv(a), 5s)) == "one");
  BOOST_TEST(loop->run_until_complete(pl::wait_for(hinted_recv(a), 5s)) == "two");
  loop->run_until_complete(close_all(g, {a, b}));
}

// What the hint saves on epoll: after a short receive drained the socket, a
// hinted receive waits for the edge and makes one attempt, the one that
// succeeds (without the hint: a failed try in start(), then that one).
BOOST_FIXTURE_TEST_CASE(on_epoll_a_hinted_receive_after_a_drain_makes_no_failed_try, loop_fixture) {
  if (pl::detail::loop_access::backend(*loop).name() != "epoll") return;
  fd_set_guard g;
  auto s = make_socketpair(g);
  // A first receive that waits for its bytes: the fd is registered, and the
  // edges its registration reported are behind us.
  auto first = loop->create_task(send_after(s.b, "a", 10ms));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(plain_recv(s.a), 5s)) == "a");
  loop->run_until_complete(first);
  auto attempts = [&] { return loop->stats().backend.io_attempts; };
  for (bool hinted : {true, false}) {
    std::uint64_t before = attempts();
    auto later = loop->create_task(send_after(s.b, "b", 10ms));
    auto got = hinted ? hinted_recv(s.a) : plain_recv(s.a);
    BOOST_TEST(loop->run_until_complete(pl::wait_for(std::move(got), 5s)) == "b");
    BOOST_TEST(attempts() - before == (hinted ? 1u : 2u), "hinted " << hinted);
    loop->run_until_complete(later);
  }
  loop->run_until_complete(close_all(g, {s.a, s.b}));
}
