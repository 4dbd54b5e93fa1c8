// The stream write path (net/stream.h: write, drain, close, wait_closed) on
// the backend (and set-up) under test (issue 17): coalesced small writes,
// a large write then close(), a peer that went away, the loop closed with
// sends in flight, a write that takes its string, and the last handle
// dropped just before the loop closes. Then the states of a send that
// write() starts itself where the backend does not send at once (io_uring,
// branch sendnow); on epoll and asio the same tests run the writer task's
// path: the loop closed or cancel_all_tasks() with it in flight, write_eof
// and close right behind it, writes made while it is in flight, a reset.
#define BOOST_TEST_MODULE stream_write
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "net/stream.h"
#include "core/loop/loop_access.h"
#include "tests/support/allocation_counter.h"
#include "tests/support/socket_pair.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using pl::net::Stream;
using pl::testing::handler_log;
using pl::testing::loop_fixture;
using pl::testing::message_has;
using pl::testing::run_one_iteration;
using pl::testing::socket_pair;

namespace {


// n bytes of a pattern that shows a byte lost, repeated or reordered.
std::string pattern(std::size_t n, std::size_t seed = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed + i / 251) & 0xff);
  return s;
}

// Everything until end of stream.
pl::Task<std::string> read_all(Stream s) {
  std::string all;
  while (true) {
    std::string part = co_await s.read(256 * 1024);
    if (part.empty()) break;
    all += part;
  }
  s.close();
  co_await s.wait_closed();
  co_return all;
}

}  // namespace

// A thousand writes in one step (half of them strings handed over): the
// writes of one loop iteration to one socket may be sent together, but
// arrive in order and whole (asyncio's transport.write() appends to one
// buffer the transport sends in order).
BOOST_FIXTURE_TEST_CASE(many_small_writes_in_one_iteration_arrive_in_order_and_whole,
                        loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  std::string expected;
  auto run = [&]() -> pl::Task<std::string> {
    Stream w(p.give_a());
    Stream r(p.give_b());
    pl::Future<std::string> all = pl::get_running_loop().create_task(read_all(r));
    for (int i = 0; i < 1000; ++i) {
      std::string line = "line " + std::to_string(i) + "\n";
      expected += line;
      if (i % 2 == 0) {
        w.write(line);
      } else {
        w.write(std::move(line));
      }
    }
    w.close();
    co_await w.wait_closed();
    co_return co_await all;
  };
  std::string got = loop->run_until_complete(run());
  BOOST_TEST(got.size() == expected.size());
  BOOST_TEST((got == expected), "the bytes differ from what was written");
}

// 16 MiB written in one call, then close(): close() sends what is buffered
// first (asyncio's transport.close(): "buffered data will be flushed
// asynchronously"; CPython test_selector_events.py:
// SelectorSocketTransportTests.test_write_eof_buffer is the same promise for
// write_eof), so every byte arrives, in order, before end of stream.
BOOST_FIXTURE_TEST_CASE(a_16_mib_write_then_close_delivers_every_byte, loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  const std::string data = pattern(16 * 1024 * 1024);
  auto run = [&]() -> pl::Task<std::string> {
    Stream w(p.give_a());
    Stream r(p.give_b());
    pl::Future<std::string> all = pl::get_running_loop().create_task(read_all(r));
    w.write(data);
    w.close();
    co_await w.wait_closed();
    co_return co_await all;
  };
  std::string got = loop->run_until_complete(run());
  BOOST_TEST(got.size() == data.size());
  BOOST_TEST((got == data), "the 16 MiB arrived changed");
}

// The same with the string handed over: moved, sent from where it is.
BOOST_FIXTURE_TEST_CASE(a_16_mib_moved_write_then_close_delivers_every_byte, loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  const std::string data = pattern(16 * 1024 * 1024, 7);
  auto run = [&]() -> pl::Task<std::string> {
    Stream w(p.give_a());
    Stream r(p.give_b());
    pl::Future<std::string> all = pl::get_running_loop().create_task(read_all(r));
    w.write(std::string(data));
    w.write(std::string("and the end"));
    w.close();
    co_await w.wait_closed();
    co_return co_await all;
  };
  std::string got = loop->run_until_complete(run());
  BOOST_TEST(got.size() == data.size() + 11);
  BOOST_TEST((got == data + "and the end"), "the bytes arrived changed");
}

// A peer that went away with bytes unread: the failure is reported by
// drain() and wait_closed(), and the next write() throws (asyncio's drain()
// re-raises the exception the transport's connection_lost() was given).
BOOST_FIXTURE_TEST_CASE(a_write_to_a_peer_that_went_away_is_reported_by_drain, loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  auto run = [&]() -> pl::Task<> {
    Stream w(p.give_a());
    // More than the socket holds, so that sends are still queued when the
    // peer goes, and more than the high-water mark, so that drain() waits.
    w.write(pattern(8 * 1024 * 1024));
    co_await pl::testing::pause(10ms);
    ::close(p.give_b());
    BOOST_CHECK_THROW(co_await w.drain(), std::system_error);
    BOOST_CHECK_THROW(w.write("more"), std::system_error);
    w.close();
    BOOST_CHECK_THROW(co_await w.wait_closed(), std::system_error);
  };
  handler_log log;
  log.install(*loop);
  loop->run_until_complete(run());
  // The failure was the stream's user's to see (drain raised), not a report.
  BOOST_TEST(log.messages.empty());
}

// The loop closed while a send waits on a peer that does not read: no
// operation outlives its memory (ASan sees a use after free otherwise), and
// the bytes never sent are reported through the loop's exception handler,
// with their number (net/stream.h: "never dropped silently").
BOOST_FIXTURE_TEST_CASE(the_loop_closed_with_sends_in_flight_reports_the_bytes_lost, loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  handler_log log;
  log.install(*loop);
  std::unique_ptr<Stream> keep;
  auto run = [&]() -> pl::Task<> {
    keep = std::make_unique<Stream>(p.give_a());
    keep->write(pattern(4 * 1024 * 1024));
    keep->write(std::string(pattern(1024 * 1024)));
    co_await pl::testing::pause(20ms);  // the socket fills; sends wait
  };
  loop->run_until_complete(run());
  loop->close();
  keep.reset();
  // (The writer task's frame destroyed pending is the other report.)
  std::string lost_report;
  for (const std::string& m : log.messages) {
    if (m.find("bytes written were never sent") != std::string::npos) lost_report = m;
  }
  BOOST_TEST_REQUIRE(!lost_report.empty(), "no lost-bytes report among " << log.messages.size());
  std::size_t colon = lost_report.find(": ");
  std::size_t lost = std::stoul(lost_report.substr(colon + 2));
  BOOST_TEST(lost > 0u);
  BOOST_TEST(lost <= 5u * 1024 * 1024, lost_report);
}

// write(std::string&&) with nothing queued takes the string's bytes as they
// are: against the same write of a string_view, one allocation fewer (the
// copy into the send queue), the rest (the writer's frame) the same. The
// peer does not read and the socket is full, so neither write can go
// straight to the kernel on any backend.
BOOST_FIXTURE_TEST_CASE(a_moved_string_is_queued_without_a_copy, loop_fixture) {
  auto fill = [](int fd) {
    std::string chunk(64 * 1024, 'x');
    while (::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
    }
  };
  socket_pair pv(SOCK_NONBLOCK);
  socket_pair pm(SOCK_NONBLOCK);
  fill(pv.a);
  fill(pm.a);
  std::uint64_t view_allocations = 0;
  std::uint64_t moved_allocations = 0;
  auto run = [&]() -> pl::Task<> {
    Stream wv(pv.give_a());
    Stream wm(pm.give_a());
    std::string for_view = pattern(256 * 1024);
    std::string for_move = pattern(256 * 1024);
    std::uint64_t before = pl::testing::allocation_count();
    wv.write(std::string_view(for_view));
    view_allocations = pl::testing::allocation_count() - before;
    before = pl::testing::allocation_count();
    wm.write(std::move(for_move));
    moved_allocations = pl::testing::allocation_count() - before;
    BOOST_TEST(wm.write_buffer_size() == 256u * 1024);
    BOOST_TEST(wv.write_buffer_size() == 256u * 1024);
    co_await pl::testing::pause(1ms);
    wv.close();
    wm.close();
  };
  loop->run_until_complete(run());
  BOOST_TEST(moved_allocations + 1 == view_allocations,
             "moved: " << moved_allocations << " allocations, viewed: " << view_allocations);
}

// The last handle dropped without close() just before the loop closes: its
// socket is still closed (the peer sees end of stream) and nothing leaks
// (LeakSanitizer saw the close operation leak before: ~stream_state started
// one on the heap that the loop's shutdown never handed back).
BOOST_AUTO_TEST_CASE(the_last_handle_dropped_as_the_loop_closes_leaks_nothing) {
  auto loop = pl::testing::make_loop();
  socket_pair p(SOCK_NONBLOCK);
  auto open = [&]() -> pl::Task<Stream> { co_return Stream(p.give_a()); };
  { Stream s = loop->run_until_complete(open()); }  // the last handle: its close starts
  loop->close();
  char c;
  ssize_t n = ::recv(p.b, &c, 1, MSG_DONTWAIT);
  BOOST_TEST(n == 0, "the peer should see end of stream; recv returned "
                         << n << " (" << std::strerror(errno) << ")");
}

// The same with one more iteration, so that the close is under way (on
// io_uring: submitted) when the loop closes.
BOOST_AUTO_TEST_CASE(the_last_handle_dropped_one_iteration_before_the_loop_closes_leaks_nothing) {
  auto loop = pl::testing::make_loop();
  socket_pair p(SOCK_NONBLOCK);
  auto open = [&]() -> pl::Task<Stream> { co_return Stream(p.give_a()); };
  { Stream s = loop->run_until_complete(open()); }
  run_one_iteration(*loop);
  loop->close();
  char c;
  ssize_t n = ::recv(p.b, &c, 1, MSG_DONTWAIT);
  BOOST_TEST(n == 0, "the peer should see end of stream; recv returned " << n);
}

namespace {

// Reads from blocking `fd` until `want` bytes or end of stream (or the
// 10 s receive timeout): what a peer on another thread got.
std::string read_blocking(int fd, std::size_t want) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  std::string buf(256 * 1024, '\0');
  while (got.size() < want) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    got.append(buf.data(), static_cast<std::size_t>(n));
  }
  return got;
}

// The number a "N bytes written were never sent" report gives; 0 if none.
std::size_t lost_reported(const handler_log& log) {
  for (const std::string& m : log.messages) {
    std::size_t at = m.find(" bytes written were never sent");
    if (at == std::string::npos) continue;
    std::size_t from = m.rfind(": ", at);
    return std::stoul(m.substr(from + 2, at - from - 2));
  }
  return 0;
}

}  // namespace

// The loop closed while a send waits on a peer that does not read, with no
// handle left (only the send keeps the stream alive): the bytes are
// reported lost and the stream goes (LeakSanitizer: nothing leaks), its
// socket closed (the peer sees end of stream after what it was sent).
BOOST_AUTO_TEST_CASE(the_loop_closed_with_a_send_in_flight_and_no_handle_reports_and_frees) {
  auto loop = pl::testing::make_loop();
  socket_pair p(SOCK_NONBLOCK);
  handler_log log;
  log.install(*loop);
  const std::size_t size = 4 * 1024 * 1024;
  auto run = [&]() -> pl::Task<> {
    Stream w(p.give_a());
    w.write(pattern(size));
    co_await pl::testing::pause(20ms);  // the socket fills; the send waits
  };
  loop->run_until_complete(run());
  loop->close();
  std::size_t lost = lost_reported(log);
  BOOST_TEST(lost > 0u);
  BOOST_TEST(lost < size);  // the socket took some
  std::size_t got = 0;
  char buf[64 * 1024];
  ssize_t n;
  while ((n = ::recv(p.b, buf, sizeof buf, MSG_DONTWAIT)) > 0) got += static_cast<std::size_t>(n);
  BOOST_TEST(n == 0, "the peer should see end of stream; recv returned " << n);
  BOOST_TEST(got + lost == size, "received " << got << " + lost " << lost);
}

// cancel_all_tasks() (run()'s shutdown) with a send in flight to a peer
// that starts reading only later: the loop keeps running until every byte
// is delivered (Stream::shutdown_flush_timeout), and nothing is reported.
BOOST_FIXTURE_TEST_CASE(cancel_all_tasks_flushes_a_send_in_flight_to_a_peer_reading_late,
                        loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  int peer = p.give_b();
  int flags = 0;  // the peer thread reads blocking
  ::ioctl(peer, FIONBIO, &flags);
  handler_log log;
  log.install(*loop);
  const std::string data = pattern(4 * 1024 * 1024, 3);
  std::size_t buffered = 0;
  auto run = [&]() -> pl::Task<> {
    Stream w(p.give_a());
    w.write(data);
    buffered = w.write_buffer_size();
    co_return;  // the handle goes: only the send keeps the stream
  };
  loop->run_until_complete(run());
  BOOST_TEST_REQUIRE(buffered > 0u);
  std::string got;
  std::thread reader([&] {
    std::this_thread::sleep_for(100ms);
    got = read_blocking(peer, data.size());
  });
  loop->cancel_all_tasks();
  reader.join();
  ::close(peer);
  BOOST_TEST(got.size() == data.size());
  BOOST_TEST((got == data), "the bytes arrived changed");
  BOOST_TEST(log.messages.empty(), "reports: " << log.messages.size());
}

// The same to a peer that never reads: cancel_all_tasks() returns after
// Stream::shutdown_flush_timeout, and what was not sent is reported lost
// with its number (never dropped silently).
BOOST_FIXTURE_TEST_CASE(cancel_all_tasks_reports_a_send_a_peer_never_took_after_the_timeout,
                        loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  handler_log log;
  log.install(*loop);
  const std::size_t size = 4 * 1024 * 1024;
  auto run = [&]() -> pl::Task<> {
    Stream w(p.give_a());
    w.write(pattern(size));
    co_return;
  };
  loop->run_until_complete(run());
  auto start = std::chrono::steady_clock::now();
  loop->cancel_all_tasks();
  auto took = std::chrono::steady_clock::now() - start;
  BOOST_TEST((took >= Stream::shutdown_flush_timeout - 100ms),
             "returned after " << std::chrono::duration<double>(took).count() << " s");
  std::size_t lost = lost_reported(log);
  BOOST_TEST(lost > 0u);
  BOOST_TEST(lost < size);
}

// write_eof() and close() right behind a write still being sent: the FIN
// goes after the last byte (asyncio: write_eof "after flushing buffered
// data"), on a socket whose buffer makes the send wait for the peer.
BOOST_FIXTURE_TEST_CASE(write_eof_and_close_right_after_a_write_send_the_fin_after_the_bytes,
                        loop_fixture) {
  for (bool with_close : {false, true}) {
    socket_pair p(SOCK_NONBLOCK);
    int peer = p.give_b();
    int flags = 0;
    ::ioctl(peer, FIONBIO, &flags);
    const std::string data = pattern(1024 * 1024, with_close ? 5 : 6);
    std::string got;
    std::thread reader([&] { got = read_blocking(peer, data.size() + 1); });
    auto run = [&]() -> pl::Task<> {
      Stream w(p.give_a());
      w.write(std::string_view(data).substr(0, 1000));
      w.write(std::string(data.substr(1000)));
      if (with_close) {
        w.close();
        co_await w.wait_closed();
      } else {
        w.write_eof();
        BOOST_CHECK_THROW(w.write("late"), std::logic_error);
        co_await w.drain();
        while (w.write_buffer_size() > 0) co_await pl::testing::pause(1ms);
      }
    };
    loop->run_until_complete(run());
    reader.join();  // read_blocking ends at end of stream: the FIN came
    ::close(peer);
    BOOST_TEST(got.size() == data.size(), (with_close ? "close" : "write_eof"));
    BOOST_TEST((got == data), "the bytes before the FIN differ");
  }
}

// Writes made while a send is in flight, over several iterations, mixed
// string_view and moved strings: they arrive in order and whole. Where
// write() does not send at once (io_uring), the writes of one iteration go
// out together: twenty iterations of a hundred writes cost at most two
// sends each (a send per write would be 2,000).
BOOST_FIXTURE_TEST_CASE(writes_made_while_a_send_is_in_flight_arrive_in_order_and_coalesce,
                        loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  std::string expected;
  std::uint64_t sends_made = 0;
  auto run = [&]() -> pl::Task<std::string> {
    Stream w(p.give_a());
    Stream r(p.give_b());
    pl::Future<std::string> all = pl::get_running_loop().create_task(read_all(r));
    auto sends = [] {
      return pl::get_running_loop().stats().op(pl::op_kind::send).started;
    };
    std::uint64_t before = sends();
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < 100; ++i) {
        std::string piece = std::to_string(round) + "." + std::to_string(i) + ";";
        expected += piece;
        if (i % 3 == 0) {
          w.write(std::move(piece));
        } else {
          w.write(piece);
        }
      }
      co_await pl::sleep(0ms);
    }
    sends_made = sends() - before;
    w.close();
    co_await w.wait_closed();
    co_return co_await all;
  };
  std::string got = loop->run_until_complete(run());
  BOOST_TEST(got.size() == expected.size());
  BOOST_TEST((got == expected), "the bytes differ from what was written");
  if (!pl::detail::loop_access::backend(*loop).traits().tries_in_start) {
    BOOST_TEST(sends_made <= 40u, sends_made << " sends for 20 x 100 writes");
  }
}

// A TCP peer that resets the connection (SO_LINGER 0) while a send waits
// on it: drain() raises the failure, the next write() raises it, and
// wait_closed() after close() does too; nothing goes to the exception
// handler (the user saw it).
BOOST_FIXTURE_TEST_CASE(a_reset_during_a_send_in_flight_is_reported_by_drain, loop_fixture) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  BOOST_TEST_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  BOOST_TEST_REQUIRE(::listen(listener, 1) == 0);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &alen);
  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  ::close(listener);
  BOOST_TEST_REQUIRE(server >= 0);
  handler_log log;
  log.install(*loop);
  auto run = [&]() -> pl::Task<> {
    Stream w(server);
    w.write(pattern(8 * 1024 * 1024));  // more than loopback TCP holds: the send waits
    co_await pl::testing::pause(10ms);
    linger reset{1, 0};
    ::setsockopt(client, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::close(client);
    BOOST_CHECK_THROW(co_await w.drain(), std::system_error);
    BOOST_CHECK_THROW(w.write("more"), std::system_error);
    w.close();
    BOOST_CHECK_THROW(co_await w.wait_closed(), std::system_error);
  };
  loop->run_until_complete(run());
  BOOST_TEST(log.messages.empty(), "reports: " << log.messages.size());
}

// all_tasks() and dump_tasks() while a stream's send is in flight: the
// loop's list of live states then holds the stream too (io_uring: the send
// is no task), and they list tasks only, each pending.
BOOST_FIXTURE_TEST_CASE(all_tasks_with_a_send_in_flight_lists_only_tasks, loop_fixture) {
  socket_pair p(SOCK_NONBLOCK);
  std::size_t listed = 0;
  std::ostringstream dump;
  auto run = [&]() -> pl::Task<> {
    Stream w(p.give_a());
    w.write(pattern(4 * 1024 * 1024));  // the peer does not read: the send waits
    co_await pl::testing::pause(5ms);
    std::vector<pl::TaskRef> tasks = pl::all_tasks(pl::get_running_loop());
    listed = tasks.size();
    for (const pl::TaskRef& t : tasks) {
      BOOST_TEST(t.valid());
      BOOST_TEST(!t.done());
      BOOST_TEST(!t.get_name().empty());
    }
    pl::get_running_loop().dump_tasks(dump);
    w.close();
  };
  loop->run_until_complete(run());
  BOOST_TEST(listed > 0u);  // this one at least
  BOOST_TEST(dump.str().find(std::to_string(listed) + " pending task") == 0u, dump.str());
}
