// Stream::read_some (net/stream.h), the read that lends a view of the
// received bytes instead of copying them out, on the backend under test:
// an echo over it with every byte checked, what is already buffered lent
// first, the view left intact until the next read, end of stream, a reset,
// and the errors of a closed stream and of two readers.
//
// asyncio has no lending read; where read_some mirrors StreamReader.read(n)
// (b"" at end of stream, the exception of a failed connection), the CPython
// test is named on the case.
#include "net/stream.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE read_some
#include <sys/socket.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include "tests/support/test_support.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;

namespace {

using fixture = pl::testing::loop_fixture;

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

// Echoes with read_some until end of stream, then closes.
pl::Task<> lending_echo(net::Stream s) {
  while (true) {
    std::span<const char> got = co_await s.read_some();
    if (got.empty()) break;
    s.write(as_view(got));
    co_await s.drain();
  }
  s.close();
  co_await s.wait_closed();
}

pl::Task<> echo_in_odd_pieces(std::size_t total) {
  net::Server server = co_await net::start_server(lending_echo, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  const std::string data = pattern(total);
  // Odd sizes, from one byte to more than the stream's 64 KiB receive.
  constexpr std::size_t sizes[] = {1, 7, 1000, 4093, 65537, 3, 131071, 511};
  std::string back;
  back.reserve(total);
  std::size_t sent = 0;
  for (std::size_t i = 0; sent < total; ++i) {
    std::size_t n = std::min(sizes[i % std::size(sizes)], total - sent);
    c.write(std::string_view(data).substr(sent, n));
    sent += n;
    co_await c.drain();
    // Take what has come back so far, so that neither side's buffers fill.
    while (back.size() + 256 * 1024 < sent) back += co_await c.read(256 * 1024);
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

BOOST_FIXTURE_TEST_CASE(an_echo_over_lent_views_returns_every_byte_of_16_mib_in_odd_pieces,
                        fixture) {
  run(echo_in_odd_pieces(16u << 20), 60s);
}

namespace {
// A server, a client connected to it, and the server's end of that
// connection (its handler hands the stream over and ends).
struct connected {
  net::Server server;
  net::Stream client;
  net::Stream accepted;
};
pl::Task<connected> connected_streams(pl::EventLoop& loop) {
  pl::Future<net::Stream> accepted = loop.create_future<net::Stream>();
  // Named, not a temporary inside the co_await: g++ 12 would destroy the
  // lambda temporary twice and release its Future twice (docs/api.md, "A
  // g++ 12 pitfall").
  net::ConnectionHandler hand_over = [accepted](net::Stream s) mutable -> pl::Task<> {
    accepted.set_result(s);
    co_return;
  };
  net::Server server = co_await net::start_server(hand_over, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  net::Stream s = co_await accepted;
  co_return connected{std::move(server), std::move(c), std::move(s)};
}
}  // namespace

namespace {
pl::Task<> buffered_first_and_view_kept(pl::EventLoop& loop) {
  auto [server, c, s] = co_await connected_streams(loop);
  c.write("line\nrest");
  co_await c.drain();
  BOOST_TEST(co_await s.read_until("\n") == "line\n");
  // What read_until left buffered comes first (it may be all of "rest", or
  // part if the bytes came in two receives), without waiting for more.
  std::string rest;
  while (rest.size() < 4) rest += as_view(co_await s.read_some());
  BOOST_TEST(rest == "rest");

  c.write("more bytes");
  co_await c.drain();
  std::span<const char> view = co_await s.read_some();
  std::string copy(as_view(view));
  BOOST_TEST(!copy.empty());
  BOOST_TEST(std::string_view("more bytes").starts_with(copy));
  // The view stays as it was while the loop runs on and the peer sends:
  // only the next read reuses the buffer.
  c.write("later");
  co_await c.drain();
  co_await pl::sleep(20ms);
  BOOST_TEST(as_view(view) == copy);
  std::string after;
  while (copy.size() + after.size() < std::string_view("more byteslater").size()) {
    after += as_view(co_await s.read_some());
  }
  BOOST_TEST(copy + after == "more byteslater");
  c.close();
  s.close();
  co_await c.wait_closed();
  co_await s.wait_closed();
  server.close();
  co_await server.wait_closed();
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(buffered_bytes_are_lent_first_and_a_view_stays_until_the_next_read,
                        fixture) {
  run(buffered_first_and_view_kept(*loop));
}

namespace {
pl::Task<> eof_and_errors(pl::EventLoop& loop) {
  auto [server, c, s] = co_await connected_streams(loop);

  // Two readers: the second is told, the first goes on.
  pl::Future<> first = loop.create_task([](net::Stream st) -> pl::Task<> {
    co_await st.read_some();
  }(s));
  co_await pl::sleep(1ms);
  bool refused = false;
  try {
    co_await s.read_some();
  } catch (const std::logic_error& e) {
    refused = pl::testing::message_has("another task is already reading")(e);
  }
  BOOST_TEST(refused);
  c.write("x");
  co_await first;

  // CPython test_streams.py: StreamTests.test_read_eof (b"" once fed EOF).
  c.write_eof();
  BOOST_TEST(as_view(co_await s.read_some()).empty());
  BOOST_TEST(s.at_eof());
  BOOST_TEST(as_view(co_await s.read_some()).empty());

  s.close();
  co_await s.wait_closed();
  // A stream closed before its end of stream came: nothing to lend.
  c.close();
  co_await c.wait_closed();
  bool closed_error = false;
  try {
    co_await c.read_some();
  } catch (const std::logic_error& e) {
    closed_error = pl::testing::message_has("the stream is closed")(e);
  }
  BOOST_TEST(closed_error);
  server.close();
  co_await server.wait_closed();
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(end_of_stream_is_an_empty_view_and_misuse_is_a_clear_error, fixture) {
  run(eof_and_errors(*loop));
}

namespace {
// CPython test_streams.py: StreamTests.test_exception (the reader raises
// the connection's failure): a reset ends read_some with ECONNRESET.
pl::Task<> reset_by_peer(pl::EventLoop& loop) {
  auto [server, c, s] = co_await connected_streams(loop);
  linger hard{1, 0};  // close() then sends a reset
  BOOST_TEST_REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard) == 0);
  c.close();
  co_await c.wait_closed();
  int err = 0;
  try {
    co_await s.read_some();
  } catch (const std::system_error& e) {
    err = e.code().value();
  }
  BOOST_TEST(err == ECONNRESET);
  s.close();
  co_await s.wait_closed();
  server.close();
  co_await server.wait_closed();
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_reset_ends_read_some_with_econnreset, fixture) {
  if (pl::testing::skip_when_simulated("sets SO_LINGER on a real socket")) return;
  run(reset_by_peer(*loop));
}
