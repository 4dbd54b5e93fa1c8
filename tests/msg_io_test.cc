// The message operations of core/io/io.h on the backend under test (the
// op kinds recvmsg and sendmsg, and recvfrom/sendto made of them): names,
// truncation, passed fds, readiness waits, cancel, close while pending,
// EPIPE without SIGPIPE, and fds received but never handed back.
#include "core/io/io.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE msg_io
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "tests/support/fd_guard.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using pl::testing::close_all;
using pl::testing::fd_set_guard;
using pl::testing::loop_fixture;

namespace {

struct udp_socket {
  int fd;
  sockaddr_in addr;  // as bound: 127.0.0.1 and the port the kernel chose
};

udp_socket bound_udp(fd_set_guard& g) {
  int fd = g.add(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  BOOST_TEST_REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return {fd, a};
}

std::pair<int, int> socketpair_of(fd_set_guard& g, int type) {
  int s[2];
  BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s) == 0);
  return {g.add(s[0]), g.add(s[1])};
}

// sendto one way, recvfrom back: the sender's address is reported.
pl::Task<> udp_round(udp_socket a, udp_socket b) {
  std::string out = "over udp";
  std::int64_t sent = co_await pl::async_sendto(a.fd, out.data(), out.size(), 0,
                                                reinterpret_cast<sockaddr*>(&b.addr),
                                                sizeof b.addr);
  BOOST_TEST(sent == 8);
  char buf[64];
  sockaddr_in from{};
  socklen_t from_len = sizeof from;
  std::int64_t n = co_await pl::async_recvfrom(b.fd, buf, sizeof buf, 0,
                                               reinterpret_cast<sockaddr*>(&from), &from_len);
  BOOST_TEST(std::string(buf, static_cast<std::size_t>(n)) == "over udp");
  BOOST_TEST(from_len == sizeof(sockaddr_in));
  BOOST_TEST(from.sin_port == a.addr.sin_port);
  BOOST_TEST(from.sin_addr.s_addr == a.addr.sin_addr.s_addr);
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(sendto_and_recvfrom_carry_the_datagram_and_the_senders_address,
                        loop_fixture) {
  fd_set_guard g;
  udp_socket a = bound_udp(g);
  udp_socket b = bound_udp(g);
  loop->run_until_complete(udp_round(a, b));
  loop->run_until_complete(close_all(g, {a.fd, b.fd}));
}

namespace {
// A receive started before anything is sent waits for readiness (or for the
// kernel), then gets the datagram: two iovecs are filled in order.
pl::Task<std::string> recvmsg_two_iovecs(int fd, int& flags) {
  char head[4];
  char tail[16];
  iovec iov[2] = {{head, sizeof head}, {tail, sizeof tail}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  std::int64_t n = co_await pl::async_recvmsg(fd, &msg);
  flags = msg.msg_flags;
  std::string got(head, std::min<std::size_t>(4, static_cast<std::size_t>(n)));
  if (n > 4) got.append(tail, static_cast<std::size_t>(n - 4));
  co_return got;
}

pl::Task<std::int64_t> sendmsg_later(int fd, std::string a, std::string b) {
  co_await pl::sleep(20ms);
  iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  co_return co_await pl::async_sendmsg(fd, &msg);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_pending_recvmsg_gets_a_datagram_sent_later_by_sendmsg, loop_fixture) {
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_DGRAM);
  int flags = -1;
  auto reader = loop->create_task(recvmsg_two_iovecs(b, flags));
  auto writer = loop->create_task(sendmsg_later(a, "gath", "ered write"));
  BOOST_TEST(loop->run_until_complete(reader) == "gathered write");
  BOOST_TEST(loop->run_until_complete(writer) == 14);
  BOOST_TEST((flags & MSG_TRUNC) == 0);
  loop->run_until_complete(close_all(g, {a, b}));
}

namespace {
pl::Task<> truncated_receive(int a, int b) {
  std::string big(1000, 'x');
  BOOST_TEST(co_await pl::async_send(a, big.data(), big.size()) == 1000);
  char buf[100];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  BOOST_TEST(co_await pl::async_recvmsg(b, &msg) == 100);
  BOOST_TEST((msg.msg_flags & MSG_TRUNC) != 0, "MSG_TRUNC not reported");
  // With MSG_TRUNC asked for, recvfrom gives the datagram's real length.
  BOOST_TEST(co_await pl::async_send(a, big.data(), big.size()) == 1000);
  BOOST_TEST(co_await pl::async_recvfrom(b, buf, sizeof buf, MSG_TRUNC) == 1000);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_datagram_longer_than_the_buffer_reports_msg_trunc, loop_fixture) {
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_DGRAM);
  loop->run_until_complete(truncated_receive(a, b));
  loop->run_until_complete(close_all(g, {a, b}));
}

namespace {
pl::Task<int> recvmsg_one_fd(int fd, std::string& data) {
  char buf[16];
  iovec iov{buf, sizeof buf};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  std::int64_t n = co_await pl::async_recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  data.assign(buf, static_cast<std::size_t>(n));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  BOOST_TEST_REQUIRE(c != nullptr);
  BOOST_TEST(c->cmsg_type == SCM_RIGHTS);
  int got;
  std::memcpy(&got, CMSG_DATA(c), sizeof got);
  co_return got;
}

pl::Task<std::int64_t> sendmsg_one_fd(int sock, int fd) {
  char byte = 'F';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  co_return co_await pl::async_sendmsg(sock, &msg);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(sendmsg_passes_an_fd_that_recvmsg_receives_close_on_exec, loop_fixture) {
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_STREAM);
  int p[2];
  BOOST_TEST_REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  g.add(p[0]);
  g.add(p[1]);
  std::string data;
  auto reader = loop->create_task(recvmsg_one_fd(b, data));
  BOOST_TEST(loop->run_until_complete(sendmsg_one_fd(a, p[1])) == 1);
  int got = g.add(loop->run_until_complete(reader));
  BOOST_TEST(data == "F");
  BOOST_TEST(got != p[1]);
  BOOST_TEST((::fcntl(got, F_GETFD) & FD_CLOEXEC) != 0, "a received fd is not close-on-exec");
  // It is the pipe's write end: what goes in through it comes out of p[0].
  BOOST_TEST(::write(got, "via passed fd", 13) == 13);
  char buf[32];
  BOOST_TEST(::read(p[0], buf, sizeof buf) == 13);
  BOOST_TEST(std::string(buf, 13) == "via passed fd");
  loop->run_until_complete(close_all(g, {a, b, p[0], p[1], got}));
}

namespace {
pl::Task<std::int64_t> recvmsg_noting_cancel(int fd, bool& saw_cancelled) {
  char buf[16];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  try {
    co_return co_await pl::async_recvmsg(fd, &msg);
  } catch (const pl::CancelledError&) {
    saw_cancelled = true;
    throw;
  }
}

// Fills `fd`'s send buffer (a Unix datagram socket whose peer reads
// nothing): the next send would block.
void fill(int fd) {
  std::string chunk(1024, 'f');
  while (::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
  }
  BOOST_TEST_REQUIRE((errno == EAGAIN || errno == EWOULDBLOCK));
}

pl::Task<std::int64_t> sendmsg_noting_cancel(int fd, bool& saw_cancelled) {
  std::string chunk(1024, 's');
  iovec iov{chunk.data(), chunk.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  try {
    co_return co_await pl::async_sendmsg(fd, &msg);
  } catch (const pl::CancelledError&) {
    saw_cancelled = true;
    throw;
  }
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_cancelled_recvmsg_throws_cancelled_error_and_the_socket_still_works,
                        loop_fixture) {
  fd_set_guard g;
  udp_socket a = bound_udp(g);
  udp_socket b = bound_udp(g);
  bool saw_cancelled = false;
  auto reader = loop->create_task(recvmsg_noting_cancel(b.fd, saw_cancelled));
  loop->call_later(20ms, [&] { BOOST_TEST(reader.cancel()); });
  BOOST_CHECK_THROW(loop->run_until_complete(reader), pl::CancelledError);
  BOOST_TEST(saw_cancelled);
  loop->run_until_complete(udp_round(a, b));
  loop->run_until_complete(close_all(g, {a.fd, b.fd}));
}

BOOST_FIXTURE_TEST_CASE(a_cancelled_sendmsg_on_a_full_socket_throws_cancelled_error,
                        loop_fixture) {
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_DGRAM);
  fill(a);
  bool saw_cancelled = false;
  auto writer = loop->create_task(sendmsg_noting_cancel(a, saw_cancelled));
  loop->call_later(20ms, [&] { BOOST_TEST(writer.cancel()); });
  BOOST_CHECK_THROW(loop->run_until_complete(writer), pl::CancelledError);
  BOOST_TEST(saw_cancelled);
  loop->run_until_complete(close_all(g, {a, b}));
}

namespace {
pl::Task<> close_after(fd_set_guard& g, int fd, std::chrono::milliseconds delay) {
  co_await pl::sleep(delay);
  g.forget(fd);
  BOOST_TEST(co_await pl::async_close(fd) == 0);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(async_close_ends_a_pending_recvmsg_and_a_pending_sendmsg, loop_fixture) {
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_DGRAM);
  udp_socket u = bound_udp(g);
  fill(a);
  bool reader_cancelled = false;
  bool writer_cancelled = false;
  auto reader = loop->create_task(recvmsg_noting_cancel(u.fd, reader_cancelled));
  auto writer = loop->create_task(sendmsg_noting_cancel(a, writer_cancelled));
  auto closer1 = loop->create_task(close_after(g, u.fd, 20ms));
  auto closer2 = loop->create_task(close_after(g, a, 20ms));
  BOOST_CHECK_THROW(loop->run_until_complete(reader), pl::CancelledError);
  BOOST_CHECK_THROW(loop->run_until_complete(writer), pl::CancelledError);
  loop->run_until_complete(closer1);
  loop->run_until_complete(closer2);
  BOOST_TEST(reader_cancelled);
  BOOST_TEST(writer_cancelled);
  loop->run_until_complete(close_all(g, {b}));
}

namespace {
pl::Task<int> sendmsg_errno(int fd) {
  char c = 'x';
  iovec iov{&c, 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  try {
    co_await pl::async_sendmsg(fd, &msg);
  } catch (const std::system_error& e) {
    BOOST_TEST(std::string(e.what()).find("sendmsg") != std::string::npos, e.what());
    co_return e.code().value();
  }
  co_return 0;
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(sendmsg_to_a_socket_whose_peer_is_gone_throws_epipe_without_sigpipe,
                        loop_fixture) {
  // SIGPIPE's default action would end this process (status 141).
  BOOST_TEST_REQUIRE(::signal(SIGPIPE, SIG_DFL) != SIG_ERR);
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_STREAM);
  loop->run_until_complete(close_all(g, {b}));
  BOOST_TEST(loop->run_until_complete(sendmsg_errno(a)) == EPIPE);
  loop->run_until_complete(close_all(g, {a}));
}

namespace {
pl::Task<> recvmsg_into_nothing(int fd) {
  char buf[4];
  iovec iov{buf, sizeof buf};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  co_await pl::async_recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  BOOST_ERROR("the task was not expected to resume: its loop closed");
}
}  // namespace

// An fd received by a recvmsg that finished, but whose task never resumed
// because the loop closed first, is closed by the backend's shutdown (it
// completes in start() on epoll and asio, in the kernel on io_uring):
// the passed pipe's write end then has no copy left, so its reader sees EOF.
BOOST_AUTO_TEST_CASE(an_fd_received_by_a_recvmsg_never_handed_back_is_closed_at_loop_close) {
  fd_set_guard g;
  auto [a, b] = socketpair_of(g, SOCK_STREAM);
  int p[2];
  BOOST_TEST_REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  g.add(p[0]);
  g.add(p[1]);
  {
    auto loop = pl::testing::make_loop();
    BOOST_TEST(loop->run_until_complete(sendmsg_one_fd(a, p[1])) == 1);
    ::close(p[1]);
    g.forget(p[1]);
    loop->create_task(recvmsg_into_nothing(b));
    pl::testing::run_one_iteration(*loop);  // the task starts its recvmsg, and no more
    loop->close();
  }
  ::close(a);
  ::close(b);
  g.forget(a);
  g.forget(b);
  char c;
  ssize_t r = ::read(p[0], &c, 1);
  BOOST_TEST(r == 0, "the passed write end is still open somewhere (read gave "
                         << r << ", " << std::strerror(errno) << ")");
}

namespace {
pl::Task<> accept_into_nothing(int listener) {
  co_await pl::async_accept(listener);
  BOOST_ERROR("the task was not expected to resume: its loop closed");
}
}  // namespace

// The same for an accept (the shutdown path the recvmsg one shares): the
// connection it took is closed, so the client sees end of stream rather
// than a connection nobody will ever serve.
BOOST_AUTO_TEST_CASE(a_connection_accepted_but_never_handed_back_is_closed_at_loop_close) {
  fd_set_guard g;
  int listener = g.add(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  BOOST_TEST_REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  BOOST_TEST_REQUIRE(::listen(listener, 4) == 0);
  int client = g.add(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  BOOST_TEST_REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  {
    auto loop = pl::testing::make_loop();
    loop->create_task(accept_into_nothing(listener));
    pl::testing::run_one_iteration(*loop);  // the task starts its accept, and no more
    loop->close();
  }
  ::close(listener);
  g.forget(listener);
  // Closed by the backend (accepted, then discarded) or with the listener
  // (never accepted): either way the client's connection ends.
  timeval limit{5, 0};
  BOOST_TEST_REQUIRE(::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) == 0);
  char c;
  ssize_t r = ::recv(client, &c, 1, 0);
  BOOST_TEST((r == 0 || (r < 0 && errno == ECONNRESET)),
             "the accepted connection is still open (recv gave " << r << ", "
                                                                 << std::strerror(errno) << ")");
}
