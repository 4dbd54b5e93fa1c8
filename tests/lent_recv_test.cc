// A stream's reads over a multishot receive into lent buffers (io_uring's
// provided buffer ring, backend_traits::multishot_recv), on the backend
// under test: on io_uring:bufring (8 buffers of 4 KiB) the ring runs dry
// (-ENOBUFS, a plain receive, then the multishot armed again) and the
// kernel ends the multishot often; elsewhere the same cases run over plain
// receives, which must behave alike. Every byte is checked: an echo of
// 16 MiB in odd sizes through read_some, read_into and read; a reader that
// stops reading while its peer sends (memory bounded, nothing lost when it
// reads again); end of stream and a reset with buffers still held; a close
// of the stream, its last handle dropped, and the loop closed, each while
// a receive is armed (ASan and LeakSanitizer see the rest).
#include "net/stream.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE lent_recv
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "core/loop/loop_access.h"
#include "tests/support/socket_pair.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;

namespace {

struct fixture : pl::testing::loop_fixture {
  bool lends() const { return pl::detail::loop_access::backend(*loop).traits().multishot_recv; }
};

std::string_view as_view(std::span<const char> s) { return {s.data(), s.size()}; }

// A deterministic byte pattern (not periodic at any small length).
std::string pattern(std::size_t n) {
  std::string out(n, '\0');
  std::uint32_t x = 2654435761u;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

enum class reader { read_some, read_into, read };

// Echoes with one kind of read until end of stream, then closes.
pl::Task<> echo_with(net::Stream s, reader how) {
  char buf[5000];  // read_into: an odd size, smaller than a lent buffer of 16 KiB
  while (true) {
    std::string_view got;
    std::string owned;
    if (how == reader::read_some) {
      got = as_view(co_await s.read_some());
    } else if (how == reader::read_into) {
      got = {buf, co_await s.read_into(std::span<char>(buf, sizeof buf))};
    } else {
      owned = co_await s.read(3001);
      got = owned;
    }
    if (got.empty()) break;
    s.write(got);
    co_await s.drain();
  }
  s.close();
  co_await s.wait_closed();
}

pl::Task<> echo_in_odd_pieces(reader how, std::size_t total) {
  net::ConnectionHandler handler = [how](net::Stream s) { return echo_with(std::move(s), how); };
  net::Server server = co_await net::start_server(handler, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  const std::string data = pattern(total);
  constexpr std::size_t sizes[] = {1, 7, 1000, 4093, 65537, 3, 131071, 511, 16384, 4097};
  std::string back;
  back.reserve(total);
  std::size_t sent = 0;
  for (std::size_t i = 0; sent < total; ++i) {
    std::size_t n = std::min(sizes[i % std::size(sizes)], total - sent);
    c.write(std::string_view(data).substr(sent, n));
    sent += n;
    co_await c.drain();
    // Read back what came, by whichever read; neither side's buffers fill.
    while (back.size() + 256 * 1024 < sent) {
      back += co_await c.read_exactly(std::min<std::size_t>(100003, sent - back.size()));
    }
  }
  c.write_eof();
  while (true) {
    std::string more = co_await c.read(256 * 1024);
    if (more.empty()) break;
    back += more;
  }
  BOOST_TEST_REQUIRE(back.size() == total);
  BOOST_TEST((back == data), "the echoed bytes differ from those sent");
  c.close();
  co_await c.wait_closed();
  server.close();
  co_await server.wait_closed();
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(an_echo_through_read_some_returns_every_byte_of_16_mib, fixture) {
  run(echo_in_odd_pieces(reader::read_some, 16u << 20), 90s);
  pl::LoopStats st = loop->stats();
  BOOST_TEST_MESSAGE("lent buffers: " << lends() << "; recv started " << st.op(pl::op_kind::recv).started
                                      << ", cancelled " << st.op(pl::op_kind::recv).cancelled);
}

BOOST_FIXTURE_TEST_CASE(an_echo_through_read_into_returns_every_byte_of_16_mib, fixture) {
  run(echo_in_odd_pieces(reader::read_into, 16u << 20), 90s);
}

BOOST_FIXTURE_TEST_CASE(an_echo_through_read_returns_every_byte_of_16_mib, fixture) {
  run(echo_in_odd_pieces(reader::read, 16u << 20), 90s);
}

namespace {
// The peer sends without pause while the reader does not read: its sends
// must come to a stop (the stream does not take everything into memory),
// and once the reader reads again every byte comes, in order.
pl::Task<> stopped_reader(pl::EventLoop& loop, std::size_t* taken_while_stopped) {
  pl::testing::socket_pair sp(SOCK_NONBLOCK);
  net::Stream s(sp.give_a());
  const std::string data = pattern(64u << 20);
  // The reader reads a little, which arms the receive, then stops.
  std::size_t sent = 0;
  std::size_t got = 0;
  ssize_t n0 = ::send(sp.b, data.data(), 1000, 0);
  BOOST_TEST_REQUIRE(n0 == 1000);
  sent = 1000;
  std::string first = co_await s.read(10);
  BOOST_TEST_REQUIRE(first == data.substr(0, 10));
  got = 10;
  // Send until the socket refuses more for a while (blocked by the reader).
  auto quiet_since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - quiet_since < 200ms && sent < data.size()) {
    ssize_t n = ::send(sp.b, data.data() + sent, std::min<std::size_t>(65536, data.size() - sent),
                       MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      quiet_since = std::chrono::steady_clock::now();
    } else {
      BOOST_TEST_REQUIRE((errno == EAGAIN || errno == EWOULDBLOCK));
    }
    co_await pl::sleep(1ms);  // the loop runs: a receive armed takes what it can
  }
  *taken_while_stopped = sent;
  // The socket pair's buffers hold a few hundred KiB; 64 KiB of lent
  // buffers (or one plain buffer) more: far below 8 MiB. A stream that took
  // everything would let all 64 MiB through.
  BOOST_TEST(sent < (8u << 20));
  // Reads again: everything, in order, then end of stream.
  ::shutdown(sp.b, SHUT_WR);
  std::string back = data.substr(0, 10);
  while (true) {
    std::string more = co_await s.read(100000);
    if (more.empty()) break;
    back += more;
    got += more.size();
  }
  BOOST_TEST_REQUIRE(back.size() == sent);
  BOOST_TEST((back == data.substr(0, sent)), "bytes differ after the reader resumed");
  BOOST_TEST(got == sent);
  s.close();
  co_await s.wait_closed();
  (void)loop;
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_reader_that_stops_holds_bounded_memory_and_loses_nothing, fixture) {
  std::size_t taken = 0;
  run(stopped_reader(*loop, &taken), 60s);
  BOOST_TEST_MESSAGE("bytes the peer could send while the reader stopped: " << taken);
}

namespace {
pl::Task<> eof_with_buffers_held() {
  pl::testing::socket_pair sp(SOCK_NONBLOCK);
  net::Stream s(sp.give_a());
  const std::string data = pattern(100000);
  // One byte read: the receive is armed, and stays so while the bursts
  // below come into several buffers before the reader reads again.
  BOOST_TEST_REQUIRE(::send(sp.b, data.data(), 1, 0) == 1);
  std::string first = co_await s.read(1);
  std::string back = first;
  std::size_t sent = 1;
  while (sent < data.size()) {
    ssize_t n = ::send(sp.b, data.data() + sent, data.size() - sent, MSG_DONTWAIT);
    if (n > 0) sent += static_cast<std::size_t>(n);
    co_await pl::sleep(1ms);
  }
  BOOST_TEST(first == data.substr(0, 1));
  ::close(sp.b);  // end of stream behind the data
  sp.b = -1;
  co_await pl::sleep(20ms);
  while (true) {
    std::span<const char> v = co_await s.read_some();
    if (v.empty()) break;
    back += as_view(v);
  }
  BOOST_TEST(back.size() == data.size());
  BOOST_TEST((back == data), "bytes differ before end of stream");
  BOOST_TEST(s.at_eof());
  BOOST_TEST(as_view(co_await s.read_some()).empty());
  s.close();
  co_await s.wait_closed();
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(end_of_stream_comes_after_every_buffered_byte, fixture) {
  run(eof_with_buffers_held());
}

namespace {
// The peer resets the connection (SO_LINGER 0) after sending: what is read
// is a prefix of what was sent, then the reset is thrown, then the stream
// closes cleanly (buffers held are given back: LeakSanitizer, ASan).
pl::Task<> reset_with_buffers_held(pl::EventLoop& loop) {
  pl::Future<net::Stream> accepted = loop.create_future<net::Stream>();
  net::ConnectionHandler hand_over = [accepted](net::Stream s) mutable -> pl::Task<> {
    accepted.set_result(s);
    co_return;
  };
  net::Server server = co_await net::start_server(hand_over, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  net::Stream s = co_await accepted;
  const std::string data = pattern(200000);
  c.write(data);
  co_await c.drain();
  BOOST_TEST((co_await s.read(5)) == data.substr(0, 5));
  co_await pl::sleep(20ms);  // the rest arrives, into lent buffers where they are on
  linger lg{1, 0};
  BOOST_TEST_REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  c.close();
  co_await c.wait_closed();
  std::string back = data.substr(0, 5);
  int error = 0;
  try {
    while (true) {
      std::span<const char> v = co_await s.read_some();
      if (v.empty()) break;
      back += as_view(v);
    }
  } catch (const std::system_error& e) {
    error = e.code().value();
  }
  BOOST_TEST(data.starts_with(back));
  BOOST_TEST_MESSAGE("read before the reset: " << back.size() << ", error " << error);
  BOOST_TEST((error == ECONNRESET || (error == 0 && back.size() == data.size())));
  s.close();
  co_await s.wait_closed();
  server.close();
  co_await server.wait_closed();
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_reset_is_thrown_after_bytes_before_it_and_the_stream_closes, fixture) {
  run(reset_with_buffers_held(*loop));
}

namespace {
// close() while another task waits in a read (a receive armed): the reader
// sees end of stream, as asyncio's does.
pl::Task<> close_while_armed(pl::EventLoop& loop) {
  pl::testing::socket_pair sp(SOCK_NONBLOCK);
  net::Stream s(sp.give_a());
  pl::Future<std::string> reading = loop.create_task([](net::Stream st) -> pl::Task<std::string> {
    co_return co_await st.read(100);
  }(s));
  co_await pl::sleep(5ms);
  BOOST_TEST(!reading.done());
  s.close();
  co_await s.wait_closed();
  BOOST_TEST((co_await reading).empty());
  // The peer sees the close.
  char b;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  ssize_t n;
  while ((n = ::recv(sp.b, &b, 1, MSG_DONTWAIT)) < 0 && std::chrono::steady_clock::now() < deadline) {
    co_await pl::sleep(1ms);
  }
  BOOST_TEST(n == 0);
}

// The last handle goes while a receive is armed (its reader was cancelled):
// the socket is closed, and the receive ends without a leak.
pl::Task<> handle_dropped_while_armed(pl::EventLoop& loop) {
  pl::testing::socket_pair sp(SOCK_NONBLOCK);
  {
    net::Stream s(sp.give_a());
    pl::Future<std::string> reading = loop.create_task([](net::Stream st) -> pl::Task<std::string> {
      co_return co_await st.read(100);
    }(s));
    co_await pl::sleep(5ms);
    reading.cancel();
    try {
      co_await reading;
    } catch (const pl::CancelledError&) {
    }
  }  // the last handle
  char b;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  ssize_t n;
  while ((n = ::recv(sp.b, &b, 1, MSG_DONTWAIT)) < 0 && std::chrono::steady_clock::now() < deadline) {
    co_await pl::sleep(1ms);
  }
  BOOST_TEST(n == 0);  // closed
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(close_while_a_read_waits_is_end_of_stream_for_the_reader, fixture) {
  run(close_while_armed(*loop));
}

BOOST_FIXTURE_TEST_CASE(the_last_handle_dropped_while_a_receive_is_armed_closes_the_socket,
                        fixture) {
  run(handle_dropped_while_armed(*loop));
}

namespace {
pl::Task<> reads_then_waits(net::Stream s) {
  co_await s.read(1);
  co_await s.read_exactly(1u << 20);  // waits: bytes held meanwhile
}
// Starts a reader that will wait with bytes held, and returns it running.
pl::Task<pl::Future<>> reader_waiting_with_bytes_held(pl::EventLoop& loop, int fd, int peer) {
  net::Stream s(fd);
  pl::Future<> reading = loop.create_task(reads_then_waits(s));
  const std::string data = pattern(50000);
  BOOST_TEST_REQUIRE(::send(peer, data.data(), data.size(), 0) > 0);
  co_await pl::sleep(30ms);
  co_return reading;
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(the_loop_closed_while_a_receive_is_armed_with_bytes_held, fixture) {
  pl::testing::socket_pair sp(SOCK_NONBLOCK);
  pl::Future<> reading = run(reader_waiting_with_bytes_held(*loop, sp.give_a(), sp.b));
  BOOST_TEST(!reading.done());
  loop->close();  // the receive armed, buffers held, a task pending: all go
}
