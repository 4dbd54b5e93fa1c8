// Datagram endpoints and fd passing (net/datagram.h) on the backend under
// test: 10,000 datagrams none lost, truncation, connected mode, ECONNREFUSED,
// cancel and close of a pending receive, Unix datagram sockets, an fd passed
// and used, and translations of CPython's datagram tests.
#include "net/datagram.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE datagram
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;
using pl::testing::loop_fixture;

namespace {

net::Address ip(std::string host, std::uint16_t port = 0) {
  net::Address a;
  a.host = std::move(host);
  a.port = port;
  return a;
}

net::Address unix_path(std::string path) {
  net::Address a;
  a.path = std::move(path);
  return a;
}

// A fresh directory for Unix socket paths (short: sun_path holds 107 bytes).
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/polyloop_dgram_XXXXXX";
    BOOST_TEST_REQUIRE(::mkdtemp(tmpl) != nullptr, "mkdtemp: " << std::strerror(errno));
    path = tmpl;
  }
  ~temp_dir() { std::system(("rm -rf " + path).c_str()); }
};

bool has_ipv6_loopback() {
  int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

pl::Task<net::DatagramEndpoint> endpoint(std::optional<net::Address> local,
                                         std::optional<net::Address> remote = std::nullopt,
                                         net::DatagramOptions options = {}) {
  co_return co_await net::create_datagram_endpoint(std::move(local), std::move(remote), options);
}

pl::Task<> close_and_wait(net::DatagramEndpoint e) {
  e.close();
  co_await e.wait_closed();
}

std::string payload(int i) { return "datagram " + std::to_string(i) + std::string(i % 97, '.'); }

}  // namespace

// --- many datagrams ------------------------------------------------------------

namespace {
constexpr int total = 10000;
constexpr int window = 64;  // datagrams in flight at most: far below the receive buffer

// Sends `total` datagrams to `to`, waiting for the receiver's ack after each
// `window` of them, so that loss on loopback would mean a bug, not an
// overflowing buffer.
pl::Task<> send_paced(net::DatagramEndpoint sender, net::Address to) {
  for (int i = 0; i < total; ++i) {
    co_await sender.sendto(payload(i), to);
    if ((i + 1) % window == 0 || i + 1 == total) {
      net::Datagram ack = co_await sender.recvfrom();
      BOOST_TEST_REQUIRE(ack.data == "ack " + std::to_string(i + 1));
    }
  }
}

pl::Task<int> receive_in_order(net::DatagramEndpoint receiver) {
  int in_order = 0;
  for (int i = 0; i < total; ++i) {
    net::Datagram d = co_await receiver.recv();
    if (d.data != payload(i)) {
      BOOST_ERROR("datagram " << i << " was '" << d.data.substr(0, 20) << "'");
      co_return in_order;
    }
    BOOST_TEST_REQUIRE(!d.truncated);
    ++in_order;
    if ((i + 1) % window == 0 || i + 1 == total) co_await receiver.send("ack " + std::to_string(i + 1));
  }
  co_return in_order;
}

pl::Task<int> ten_thousand() {
  net::DatagramEndpoint sender = co_await endpoint(ip("127.0.0.1"));
  net::DatagramEndpoint receiver = co_await endpoint(ip("127.0.0.1"), sender.local_address());
  auto got = pl::get_running_loop().create_task(receive_in_order(receiver));
  // A lost datagram would stall both: fail within a bound instead of hanging.
  co_await pl::wait_for(send_paced(sender, receiver.local_address()), 60s);
  int n = co_await got;
  co_await close_and_wait(sender);
  co_await close_and_wait(receiver);
  co_return n;
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(ten_thousand_datagrams_arrive_intact_and_in_order, loop_fixture) {
  BOOST_TEST(loop->run_until_complete(ten_thousand()) == total);
}

// --- truncation ------------------------------------------------------------------

namespace {
pl::Task<> truncation() {
  net::DatagramEndpoint a = co_await endpoint(ip("127.0.0.1"));
  net::DatagramEndpoint b = co_await endpoint(ip("127.0.0.1"));
  std::string big(3000, 'b');
  big[0] = 'B';
  co_await a.sendto(big, b.local_address());
  net::Datagram d = co_await b.recvfrom(1000);
  BOOST_TEST(d.truncated);
  BOOST_TEST(d.data.size() == 1000u);
  BOOST_TEST(d.data == big.substr(0, 1000));
  BOOST_TEST(d.sender.port == a.local_address().port);
  // The rest of it is gone: the next datagram is the next one sent.
  co_await a.sendto("small", b.local_address());
  net::Datagram next = co_await b.recvfrom(1000);
  BOOST_TEST(next.data == "small");
  BOOST_TEST(!next.truncated);
  co_await close_and_wait(a);
  co_await close_and_wait(b);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_datagram_larger_than_the_buffer_is_reported_truncated, loop_fixture) {
  loop->run_until_complete(truncation());
}

// --- connected mode ----------------------------------------------------------------

namespace {
// CPython test_events.py: EventLoopTestsMixin._test_create_datagram_endpoint
// (test_create_datagram_endpoint, test_create_datagram_endpoint_ipv6): a
// server that answers "resp:" + data, and a client connected to it.
pl::Task<> echo_once(net::DatagramEndpoint server) {
  net::Datagram d = co_await server.recvfrom();
  co_await server.sendto("resp:" + d.data, d.sender);
}

pl::Task<> echo_exchange(std::string host) {
  net::DatagramEndpoint server = co_await endpoint(ip(host));
  net::Address at = server.local_address();
  BOOST_TEST(at.host == host);
  BOOST_TEST(at.port != 0);
  auto echo = pl::get_running_loop().create_task(echo_once(server));
  net::DatagramEndpoint client = co_await endpoint(std::nullopt, at);
  BOOST_TEST_REQUIRE(client.remote_address().has_value());
  BOOST_TEST(client.remote_address()->port == at.port);
  BOOST_TEST(client.local_address().port != 0);  // sockname is available
  // sendto(data) without an address. (Named, not a temporary: g++ 12
  // mishandles a braced temporary inside a co_await expression.)
  net::Address none;
  co_await client.sendto("xxx", none);
  net::Datagram reply = co_await client.recv();
  BOOST_TEST(reply.data == "resp:xxx");
  BOOST_TEST(reply.data.size() == 8u);
  co_await echo;
  co_await client.send("again");  // send() is the connected mode's sendto
  BOOST_TEST((co_await server.recvfrom()).data == "again");
  co_await close_and_wait(client);
  BOOST_TEST(client.is_closing());
  co_await close_and_wait(server);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(create_datagram_endpoint_echo_over_a_connected_client, loop_fixture) {
  loop->run_until_complete(echo_exchange("127.0.0.1"));
}

BOOST_FIXTURE_TEST_CASE(create_datagram_endpoint_echo_over_ipv6, loop_fixture) {
  if (!has_ipv6_loopback()) {
    BOOST_TEST_MESSAGE("no IPv6 loopback here: skipped");
    return;
  }
  loop->run_until_complete(echo_exchange("::1"));
}

namespace {
// A connected endpoint whose peer port has no socket: the kernel's ICMP
// "port unreachable" comes back as ECONNREFUSED, which asyncio hands to
// error_received; here the next receive throws it, naming the peer, and the
// endpoint stays usable.
pl::Task<> refused() {
  // A port that was free a moment ago: bound, noted, closed.
  net::DatagramEndpoint gone = co_await endpoint(ip("127.0.0.1"));
  net::Address nobody = gone.local_address();
  co_await close_and_wait(gone);

  net::DatagramEndpoint client = co_await endpoint(std::nullopt, nobody);
  co_await client.send("anyone there?");
  try {
    co_await pl::wait_for(client.recv(), 5s);
    BOOST_ERROR("recv() did not report the refusal");
  } catch (const std::system_error& e) {
    BOOST_TEST(e.code().value() == ECONNREFUSED, e.what());
    BOOST_TEST(std::string(e.what()).find(nobody.to_string()) != std::string::npos, e.what());
  }
  BOOST_TEST(!client.is_closing());
  // Still usable: a peer that appears at that port now gets what is sent.
  net::DatagramEndpoint late = co_await endpoint(nobody);
  co_await client.send("now?");
  BOOST_TEST((co_await late.recvfrom()).data == "now?");
  co_await close_and_wait(client);
  co_await close_and_wait(late);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_connected_endpoint_reports_econnrefused_and_stays_usable,
                        loop_fixture) {
  loop->run_until_complete(refused());
}

namespace {
pl::Task<> misuse() {
  net::DatagramEndpoint server = co_await endpoint(ip("127.0.0.1"));
  net::DatagramEndpoint client = co_await endpoint(std::nullopt, server.local_address());
  // CPython test_selector_events.py: test_sendto_connected_addr (ValueError).
  BOOST_CHECK_EXCEPTION((void)client.sendto("x", ip("127.0.0.1", 9)), std::invalid_argument,
                        pl::testing::message_has("Invalid address"));
  BOOST_CHECK_EXCEPTION((void)server.send("x"), std::logic_error,
                        pl::testing::message_has("connected endpoint"));
  BOOST_CHECK_EXCEPTION((void)server.sendto("x", ip("localhost", 9)), std::invalid_argument,
                        pl::testing::message_has("numeric address"));
  BOOST_CHECK_EXCEPTION((void)server.sendto("x", net::Address{}), std::invalid_argument,
                        pl::testing::message_has("not connected"));
  co_await close_and_wait(client);
  // After close: a clear error, not a send on a closed (maybe reused) fd.
  bool threw = false;
  try {
    co_await client.send("late");
  } catch (const std::logic_error& e) {
    threw = std::string(e.what()).find("closed") != std::string::npos;
  }
  BOOST_TEST(threw);
  co_await close_and_wait(server);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(misuse_of_an_endpoint_is_a_clear_error, loop_fixture) {
  loop->run_until_complete(misuse());
}

// --- cancel and close of a pending receive ----------------------------------------

namespace {
pl::Task<> cancel_pending() {
  net::DatagramEndpoint a = co_await endpoint(ip("127.0.0.1"));
  net::DatagramEndpoint b = co_await endpoint(ip("127.0.0.1"));
  auto pending = pl::get_running_loop().create_task(b.recvfrom());
  co_await pl::sleep(20ms);
  BOOST_TEST(!pending.done());
  BOOST_TEST(pending.cancel());
  bool cancelled = false;
  try {
    co_await pending;
  } catch (const pl::CancelledError&) {
    cancelled = true;
  }
  BOOST_TEST(cancelled);
  // The endpoint goes on: the next datagram is received whole.
  co_await a.sendto("after cancel", b.local_address());
  BOOST_TEST((co_await b.recvfrom()).data == "after cancel");
  co_await close_and_wait(a);
  co_await close_and_wait(b);
}

pl::Task<> close_pending() {
  net::DatagramEndpoint b = co_await endpoint(ip("127.0.0.1"));
  auto pending = pl::get_running_loop().create_task(b.recvfrom());
  co_await pl::sleep(20ms);
  b.close();
  bool closed_error = false;
  try {
    co_await pending;
  } catch (const net::EndpointClosedError& e) {
    closed_error = std::string(e.what()).find("recvfrom") != std::string::npos;
  }
  BOOST_TEST(closed_error);
  co_await b.wait_closed();
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_cancelled_recvfrom_throws_cancelled_error_and_the_endpoint_goes_on,
                        loop_fixture) {
  loop->run_until_complete(cancel_pending());
}

BOOST_FIXTURE_TEST_CASE(close_ends_a_pending_recvfrom_with_endpoint_closed_error, loop_fixture) {
  loop->run_until_complete(close_pending());
}

namespace {
// Two receives pending at once on one endpoint each get one whole datagram
// (the first lands in the endpoint's reused buffer, the second in its own).
pl::Task<> two_pending_receives() {
  net::DatagramEndpoint a = co_await endpoint(ip("127.0.0.1"));
  net::DatagramEndpoint b = co_await endpoint(ip("127.0.0.1"));
  auto& loop = pl::get_running_loop();
  auto first = loop.create_task(b.recvfrom());
  auto second = loop.create_task(b.recvfrom());
  co_await pl::sleep(10ms);
  std::string one(3000, '1');
  std::string two(2000, '2');
  co_await a.sendto(one, b.local_address());
  co_await a.sendto(two, b.local_address());
  std::string x = (co_await first).data;
  std::string y = (co_await second).data;
  BOOST_TEST(((x == one && y == two) || (x == two && y == one)),
             "got " << x.size() << " and " << y.size() << " bytes");
  // And again, sequentially, through the reused buffer.
  co_await a.sendto("short", b.local_address());
  BOOST_TEST((co_await b.recvfrom()).data == "short");
  co_await close_and_wait(a);
  co_await close_and_wait(b);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(two_pending_recvfroms_on_one_endpoint_each_get_a_whole_datagram,
                        loop_fixture) {
  loop->run_until_complete(two_pending_receives());
}

// --- CPython test_sock_lowlevel.py --------------------------------------------------

namespace {
// test_recvfrom and test_recvfrom_into against a UDP echo server.
pl::Task<> echo_forever(net::DatagramEndpoint server) {
  while (true) {
    net::Datagram d = co_await server.recvfrom();
    co_await server.sendto(d.data, d.sender);
  }
}

pl::Task<> recvfrom_cases() {
  net::DatagramEndpoint server = co_await endpoint(ip("127.0.0.1"));
  auto echo = pl::get_running_loop().create_task(echo_forever(server));
  net::Address server_address = server.local_address();
  net::DatagramEndpoint sock = co_await endpoint(ip("127.0.0.1"));
  std::string data(4096, '\x01');

  // test_recvfrom
  co_await sock.sendto(data, server_address);
  net::Datagram d = co_await sock.recvfrom(4096);
  BOOST_TEST(d.data == data);
  BOOST_TEST(d.sender.host == server_address.host);
  BOOST_TEST(d.sender.port == server_address.port);

  // test_recvfrom_into: a buffer of the size, then a larger one
  std::vector<char> buf(4096);
  co_await sock.sendto(data, server_address);
  net::DatagramInfo info = co_await sock.recvfrom_into(buf);
  BOOST_TEST(info.size == 4096u);
  BOOST_TEST(std::string(buf.begin(), buf.end()) == data);
  BOOST_TEST(info.sender.port == server_address.port);
  BOOST_TEST(!info.truncated);
  std::vector<char> big(8192);
  co_await sock.sendto(data, server_address);
  info = co_await sock.recvfrom_into(std::span<char>(big).first(4096));
  BOOST_TEST(info.size == 4096u);
  BOOST_TEST(std::string(big.data(), 4096) == data);

  echo.cancel();
  try {
    co_await echo;
  } catch (const pl::CancelledError&) {
  }
  co_await close_and_wait(sock);
  co_await close_and_wait(server);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(sock_lowlevel_recvfrom_and_recvfrom_into_against_an_echo_server,
                        loop_fixture) {
  loop->run_until_complete(recvfrom_cases());
}

// --- CPython test_base_events.py: create_datagram_endpoint's arguments ---------------

namespace {
pl::Task<> argument_errors() {
  // test_create_datagram_endpoint_noaddr_nofamily (ValueError)
  bool threw = false;
  try {
    co_await endpoint(std::nullopt, std::nullopt);
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("address family") != std::string::npos;
  }
  BOOST_TEST(threw);

  // test_create_datagram_endpoint_no_matching_family (ValueError)
  if (has_ipv6_loopback()) {
    threw = false;
    try {
      co_await endpoint(ip("::1"), ip("127.0.0.1", 9));
    } catch (const std::invalid_argument& e) {
      threw = std::string(e.what()).find("no matching address family") != std::string::npos;
    }
    BOOST_TEST(threw);
  }

  // test_create_datagram_endpoint_cant_bind (OSError): a port in use
  net::DatagramEndpoint taken = co_await endpoint(ip("127.0.0.1"));
  int err = 0;
  try {
    co_await endpoint(taken.local_address());
  } catch (const std::system_error& e) {
    err = e.code().value();
    BOOST_TEST(std::string(e.what()).find("bind") != std::string::npos, e.what());
  }
  BOOST_TEST(err == EADDRINUSE);
  co_await close_and_wait(taken);

  // A family alone: an unbound socket of it (asyncio's family= without addresses).
  net::DatagramOptions inet;
  inet.family = AF_INET;
  net::DatagramEndpoint unbound = co_await endpoint(std::nullopt, std::nullopt, inet);
  BOOST_TEST(unbound.fd() >= 0);
  co_await close_and_wait(unbound);
}

int sockopt(int fd, int option) {
  int v = 0;
  socklen_t len = sizeof v;
  BOOST_TEST_REQUIRE(::getsockopt(fd, SOL_SOCKET, option, &v, &len) == 0);
  return v;
}

pl::Task<> socket_options() {
  // test_create_datagram_endpoint_reuse_port: two endpoints on one port.
  net::DatagramOptions reuse;
  reuse.reuse_port = true;
  net::DatagramEndpoint first = co_await endpoint(ip("127.0.0.1"), std::nullopt, reuse);
  net::DatagramEndpoint second = co_await endpoint(first.local_address(), std::nullopt, reuse);
  BOOST_TEST(sockopt(first.fd(), SO_REUSEPORT) != 0);
  BOOST_TEST(second.local_address().port == first.local_address().port);
  // test_create_datagram_endpoint_allow_broadcast
  net::DatagramOptions broadcast;
  broadcast.allow_broadcast = true;
  net::DatagramEndpoint b = co_await endpoint(ip("127.0.0.1"), std::nullopt, broadcast);
  BOOST_TEST(sockopt(b.fd(), SO_BROADCAST) != 0);
  BOOST_TEST(sockopt(first.fd(), SO_BROADCAST) == 0);
  co_await close_and_wait(first);
  co_await close_and_wait(second);
  co_await close_and_wait(b);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(create_datagram_endpoint_argument_errors, loop_fixture) {
  loop->run_until_complete(argument_errors());
}

BOOST_FIXTURE_TEST_CASE(create_datagram_endpoint_reuse_port_and_allow_broadcast, loop_fixture) {
  if (pl::testing::skip_when_simulated("getsockopt on the endpoint's fd, and SO_REUSEPORT's shared port: kernel socket options sim does not keep")) return;
  loop->run_until_complete(socket_options());
}

namespace {
// CPython test_events.py: EventLoopTestsMixin.test_create_datagram_endpoint_sock
// (an existing bound socket adopted), and a stream socket refused.
pl::Task<> adopted(int fd) {
  net::DatagramEndpoint e(fd);
  BOOST_TEST(!e.remote_address().has_value());
  net::DatagramEndpoint peer = co_await endpoint(ip("127.0.0.1"));
  co_await peer.sendto("to the adopted socket", e.local_address());
  net::Datagram d = co_await e.recvfrom();
  BOOST_TEST(d.data == "to the adopted socket");
  BOOST_TEST(d.sender.port == peer.local_address().port);
  co_await close_and_wait(e);
  co_await close_and_wait(peer);
}

pl::Task<> adopt_stream(int fd) {
  BOOST_CHECK_EXCEPTION(net::DatagramEndpoint{fd}, std::invalid_argument,
                        pl::testing::message_has("not a datagram socket"));
  co_return;
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(an_existing_datagram_socket_is_adopted, loop_fixture) {
  if (pl::testing::skip_when_simulated("adopts a real socket made with ::socket")) return;
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);  // blocking: adoption fixes that
  BOOST_TEST_REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  loop->run_until_complete(adopted(fd));
  BOOST_TEST((::fcntl(fd, F_GETFD) == -1 && errno == EBADF), "the endpoint did not close it");

  int stream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(stream >= 0);
  loop->run_until_complete(adopt_stream(stream));
  ::close(stream);
}

// --- Unix datagram sockets ---------------------------------------------------------

namespace {
pl::Task<> unix_exchange(std::string dir) {
  net::DatagramEndpoint server = co_await endpoint(unix_path(dir + "/server"));
  net::DatagramEndpoint client =
      co_await endpoint(unix_path(dir + "/client"), unix_path(dir + "/server"));
  BOOST_TEST(server.local_address().path == dir + "/server");
  co_await client.send("over a unix datagram socket");
  net::Datagram d = co_await server.recvfrom();
  BOOST_TEST(d.data == "over a unix datagram socket");
  BOOST_TEST(d.sender.path == dir + "/client");
  co_await server.sendto("reply", d.sender);
  BOOST_TEST((co_await client.recv()).data == "reply");
  co_await close_and_wait(client);
  co_await close_and_wait(server);
  // A stale socket file at the path is replaced, as asyncio does.
  net::DatagramEndpoint again = co_await endpoint(unix_path(dir + "/server"));
  co_await close_and_wait(again);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(unix_datagram_endpoints_exchange_with_named_senders, loop_fixture) {
  temp_dir dir;
  loop->run_until_complete(unix_exchange(dir.path));
}

// --- fd passing ------------------------------------------------------------------

namespace {
struct pipe_ends {
  int r = -1;
  int w = -1;
  pipe_ends() {
    int p[2];
    BOOST_TEST_REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    r = p[0];
    w = p[1];
  }
  ~pipe_ends() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
};

pl::Task<> pass_and_use(int a, int b) {
  pipe_ends p;
  int fds[] = {p.w};
  BOOST_TEST(co_await net::send_fds(a, "here", fds) == 4u);
  net::ReceivedFds got = co_await net::recv_fds(b, 64, 4);
  BOOST_TEST(got.data == "here");
  BOOST_TEST_REQUIRE(got.fds.size() == 1u);
  BOOST_TEST(!got.fds_truncated);
  int fd = got.fds[0].get();
  BOOST_TEST((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "a received fd is not close-on-exec");
  // Write through the received fd, read back from the pipe it came from.
  BOOST_TEST(::write(fd, "through the passed fd", 21) == 21);
  char buf[64];
  BOOST_TEST(::read(p.r, buf, sizeof buf) == 21);
  BOOST_TEST(std::string(buf, 21) == "through the passed fd");
}

pl::Task<> too_many_fds(int a, int b) {
  pipe_ends p1, p2, p3;
  int fds[] = {p1.w, p2.w, p3.w};
  co_await net::send_fds(a, "three", fds);
  net::ReceivedFds got = co_await net::recv_fds(b, 64, 1);
  BOOST_TEST(got.data == "three");
  BOOST_TEST(got.fds.size() == 1u);
  BOOST_TEST(got.fds_truncated);
  got.fds.clear();  // closes the one kept
  // With the originals closed, no copy of any write end is left open: each
  // reader sees end of file (a leaked copy would give EAGAIN).
  for (pipe_ends* p : {&p1, &p2, &p3}) {
    ::close(std::exchange(p->w, -1));
    char c;
    BOOST_TEST(::read(p->r, &c, 1) == 0, "a passed fd was left open: " << std::strerror(errno));
  }
}

pl::Task<> bad_fd_arguments(int a, int b) {
  int fd = 0;
  BOOST_CHECK_EXCEPTION((void)net::send_fds(a, "", std::span<const int>(&fd, 1)), std::invalid_argument,
                        pl::testing::message_has("at least one byte"));
  std::vector<int> many(net::max_fds_per_message + 1, 0);
  BOOST_CHECK_EXCEPTION((void)net::send_fds(a, "x", many), std::invalid_argument,
                        pl::testing::message_has("at most 253"));
  // Plain data, no fds: received as such.
  co_await net::send_fds(a, "no fds", {});
  net::ReceivedFds got = co_await net::recv_fds(b, 64, 2);
  BOOST_TEST(got.data == "no fds");
  BOOST_TEST(got.fds.empty());
  BOOST_TEST(!got.fds_truncated);
  co_return;
}

struct unix_pair {
  int a = -1;
  int b = -1;
  explicit unix_pair(int type) {
    int s[2];
    BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s) == 0);
    a = s[0];
    b = s[1];
  }
};

pl::Task<> close_pair(unix_pair p) {
  co_await pl::async_close(p.a);
  co_await pl::async_close(p.b);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(an_fd_passed_over_a_unix_stream_socket_is_received_and_usable,
                        loop_fixture) {
  if (pl::testing::skip_when_simulated("SCM_RIGHTS over a real socketpair")) return;
  unix_pair s(SOCK_STREAM);
  loop->run_until_complete(pass_and_use(s.a, s.b));
  loop->run_until_complete(close_pair(s));
}

BOOST_FIXTURE_TEST_CASE(an_fd_passed_over_a_unix_datagram_socket_is_received_and_usable,
                        loop_fixture) {
  if (pl::testing::skip_when_simulated("SCM_RIGHTS over a real socketpair")) return;
  unix_pair s(SOCK_DGRAM);
  loop->run_until_complete(pass_and_use(s.a, s.b));
  loop->run_until_complete(close_pair(s));
}

BOOST_FIXTURE_TEST_CASE(fds_beyond_max_fds_are_reported_and_never_left_open, loop_fixture) {
  if (pl::testing::skip_when_simulated("SCM_RIGHTS over a real socketpair")) return;
  unix_pair s(SOCK_STREAM);
  loop->run_until_complete(too_many_fds(s.a, s.b));
  loop->run_until_complete(close_pair(s));
}

BOOST_FIXTURE_TEST_CASE(send_fds_argument_errors_and_plain_data, loop_fixture) {
  if (pl::testing::skip_when_simulated("SCM_RIGHTS over a real socketpair")) return;
  unix_pair s(SOCK_STREAM);
  loop->run_until_complete(bad_fd_arguments(s.a, s.b));
  loop->run_until_complete(close_pair(s));
}

// --- An endpoint whose last handle goes without close() --------------------------

// Dropped just before the loop closes: its socket is still closed, and nothing
// leaks (LeakSanitizer: ~datagram_state started a close operation with a bare
// `new` that the loop's shutdown never handed back).
BOOST_AUTO_TEST_CASE(an_endpoint_dropped_as_the_loop_closes_is_closed_and_leaks_nothing) {
  auto loop = pl::testing::make_loop();
  int fd = -1;
  {
    net::DatagramEndpoint e = loop->run_until_complete(endpoint(ip("127.0.0.1")));
    fd = e.fd();
  }  // the last handle: its close starts
  loop->close();
  if (!pl::testing::skip_when_simulated("the fd number is a placeholder the sim owns")) {
    BOOST_TEST(::fcntl(fd, F_GETFD) == -1, "fd " << fd << " is still open");
  }
}

// An endpoint outliving its loop is closed through the loop's socket calls,
// never with a bare ::close: on sim the number is a placeholder the backend
// owns, and a bare close freed it while the backend still held it, so the
// backend's destructor closed whatever took the number next (here: `reused`).
BOOST_AUTO_TEST_CASE(an_endpoint_outliving_its_loop_closes_only_its_own_fd) {
  auto loop = pl::testing::make_loop();
  int fd = -1;
  {
    net::DatagramEndpoint e = loop->run_until_complete(endpoint(ip("127.0.0.1")));
    fd = e.fd();
    loop->close();
  }  // the last handle goes after the loop closed
  int reused = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, fd);  // the lowest free number >= fd
  BOOST_TEST_REQUIRE(reused >= 0, std::strerror(errno));
  BOOST_TEST(reused == fd, "fd " << fd << " was not freed (F_DUPFD gave " << reused << ")");
  loop.reset();  // the backend goes
  BOOST_TEST(::fcntl(reused, F_GETFD) != -1,
             "fd " << reused << ", taken after the endpoint closed, was closed by someone else");
  ::close(reused);
}
