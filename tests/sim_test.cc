// The simulation backend's own behaviour (backends/sim, polyloop/sim.h):
// virtual time, determinism by seed, a planted race found by a seed sweep,
// and its faults. The shared behaviour suite also runs on sim
// (tests/defs.bzl); these are what only a simulation can promise.
#include "polyloop/sim.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE sim
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "examples/echo_handler.h"
#include "examples/http_hello_handler.h"
#include "net/datagram.h"
#include "net/stream.h"
#include "polyloop/polyloop.h"
#include "tests/support/stream_echo.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;
using pl::testing::echo_until_eof;
using wall = std::chrono::steady_clock;

namespace {

double ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

pl::sim_config with_seed(std::uint64_t seed) {
  pl::sim_config c;
  c.seed = seed;
  return c;
}

}  // namespace

// --- virtual time -------------------------------------------------------------

pl::Task<> wait_forever() { co_await pl::sleep(24h); }

BOOST_AUTO_TEST_CASE(a_30_s_timeout_fires_at_exactly_30_s_of_loop_time_in_under_100_ms) {
  auto loop = pl::new_sim_loop(with_seed(1));
  auto t0 = loop->time();
  auto w0 = wall::now();
  bool timed_out = false;
  try {
    loop->run_until_complete(pl::wait_for(wait_forever(), 30s));
  } catch (const pl::TimeoutError&) {
    timed_out = true;
  }
  double wall_ms = ms(wall::now() - w0);
  BOOST_TEST(timed_out);
  BOOST_TEST((loop->time() - t0 == 30s), "loop time advanced " << ms(loop->time() - t0) << " ms");
  BOOST_TEST(wall_ms < 100.0);
}

// --- the network ------------------------------------------------------------------

namespace {
pl::Task<std::string> echo_once(std::string text) {
  net::Server server = co_await net::start_server(echo_until_eof, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("localhost", server.port());
  c.write(text + "\n");
  std::string back = co_await c.read_until("\n");
  c.close();
  co_await c.wait_closed();
  server.close();
  co_await server.wait_closed();
  co_return back;
}
}  // namespace

BOOST_AUTO_TEST_CASE(localhost_resolves_in_memory_and_a_round_trip_takes_no_real_network) {
  auto loop = pl::new_sim_loop(with_seed(3));
  BOOST_TEST(loop->run_until_complete(echo_once("ping")) == "ping\n");
}

namespace {
// The virtual times, after the start, at which each step of an echo over a
// link of `latency` happens.
struct echo_times {
  double connected = -1, echoed = -1, eof_at_server = -1, client_closed = -1, server_closed = -1;
};

pl::Task<echo_times> timed_echo() {
  pl::EventLoop& loop = pl::get_running_loop();
  auto t0 = loop.time();
  auto since = [&] { return ms(loop.time() - t0); };
  echo_times t;
  pl::Event eof_seen;
  net::Server server = co_await net::start_server(
      [&](net::Stream s) -> pl::Task<> {
        for (;;) {
          std::string data = co_await s.read();
          if (data.empty()) break;
          s.write(data);
        }
        t.eof_at_server = since();
        eof_seen.set();
        s.close();
        co_await s.wait_closed();
      },
      "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  t.connected = since();
  c.write("x\n");
  co_await c.read_until("\n");
  t.echoed = since();
  c.close();
  co_await c.wait_closed();
  t.client_closed = since();
  co_await eof_seen.wait();
  server.close();
  co_await server.wait_closed();
  t.server_closed = since();
  co_return t;
}
}  // namespace

BOOST_AUTO_TEST_CASE(latency_delays_each_delivery_by_exactly_the_configured_virtual_time) {
  pl::sim_config c = with_seed(1);
  c.latency = 7ms;
  auto loop = pl::new_sim_loop(c);
  echo_times t = loop->run_until_complete(timed_echo());
  BOOST_TEST_MESSAGE("connected " << t.connected << " echoed " << t.echoed << " eof "
                                  << t.eof_at_server << " client closed " << t.client_closed
                                  << " server closed " << t.server_closed);
  BOOST_TEST(t.connected == 14.0);  // one round trip: SYN, SYN-ACK
  BOOST_TEST(t.echoed == 28.0);     // there and back
  BOOST_TEST(t.client_closed == 28.0);  // a local close waits for nobody
  BOOST_TEST(t.eof_at_server == 35.0);  // the FIN takes one latency
  BOOST_TEST(t.server_closed == 35.0);
}

namespace {
// A connect to a port nobody listens on: refused after one round trip.
pl::Task<double> refused_after() {
  pl::EventLoop& loop = pl::get_running_loop();
  auto t0 = loop.time();
  try {
    co_await net::open_connection("127.0.0.1", 9);
    BOOST_ERROR("a connect to a port nobody listens on succeeded");
  } catch (const std::system_error& e) {
    BOOST_TEST((e.code() == std::errc::connection_refused), e.what());
  }
  co_return ms(loop.time() - t0);
}

// The client's 4th byte resets the connection (reset_after_bytes): the
// server reads the 4 bytes, then ECONNRESET, both one latency after the
// send; returns {send time, data time, reset time} after the start.
pl::Task<std::vector<double>> reset_times() {
  pl::EventLoop& loop = pl::get_running_loop();
  auto t0 = loop.time();
  auto since = [&] { return ms(loop.time() - t0); };
  std::vector<double> times;
  pl::Event done;
  net::Server server = co_await net::start_server(
      [&](net::Stream s) -> pl::Task<> {
        try {
          for (;;) {
            std::string data = co_await s.read();
            BOOST_TEST(data == "abcd");
            times.push_back(since());
            if (data.empty()) break;
          }
        } catch (const std::system_error& e) {
          BOOST_TEST((e.code() == std::errc::connection_reset), e.what());
          times.push_back(since());
        }
        done.set();
        s.close();
        co_await s.wait_closed();
      },
      "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  times.push_back(since());
  c.write("abcd");
  co_await done.wait();
  c.close();
  co_await c.wait_closed();
  server.close();
  co_await server.wait_closed();
  co_return times;
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_refused_connect_and_a_reset_take_the_link_latency) {
  pl::sim_config c = with_seed(1);
  c.latency = 5ms;
  c.reset_after_bytes = 4;
  auto loop = pl::new_sim_loop(c);
  BOOST_TEST(loop->run_until_complete(refused_after()) == 10.0);  // SYN out, RST back
  std::vector<double> t = loop->run_until_complete(reset_times());
  BOOST_TEST_REQUIRE(t.size() == 3u);
  BOOST_TEST(t[0] == 10.0);  // connected: one round trip
  BOOST_TEST(t[1] == 15.0);  // the bytes, one latency after the send
  BOOST_TEST(t[2] == 15.0);  // the reset right behind them
}

namespace {
pl::Task<std::string> echo_big(std::size_t n) {
  net::Server server = co_await net::start_server(echo_until_eof, "::1", 0);
  net::Stream c = co_await net::open_connection("::1", server.port());
  std::string line(n, 'a');
  for (std::size_t i = 0; i < n; ++i) line[i] = static_cast<char>('a' + i % 26);
  line += "\n";
  c.write(line);
  std::string back = co_await c.read_until("\n", n + 1);
  c.close();
  co_await c.wait_closed();
  server.close();
  co_await server.wait_closed();
  co_return back == line ? "same" : "differs";
}
}  // namespace

BOOST_AUTO_TEST_CASE(short_reads_and_writes_and_a_small_buffer_still_deliver_every_byte_in_order) {
  pl::sim_config c = with_seed(11);
  c.short_io = 0.5;
  c.buffer_size = 1000;  // back-pressure on almost every write
  auto loop = pl::new_sim_loop(c);
  BOOST_TEST(loop->run_until_complete(echo_big(50000)) == "same");
}

namespace {
pl::Task<std::string> read_until_reset() {
  net::Server server = co_await net::start_server(echo_until_eof, "127.0.0.1", 0);
  net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
  std::string outcome;
  try {
    for (int i = 0; i < 100; ++i) {
      c.write("0123456789\n");
      co_await c.read_until("\n");
    }
    outcome = "no reset";
  } catch (const std::system_error& e) {
    outcome = e.code() == std::errc::connection_reset ? "ECONNRESET" : e.what();
  } catch (const std::exception& e) {
    outcome = e.what();
  }
  c.close();
  server.close();
  co_await server.wait_closed();
  co_return outcome;
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_reset_after_n_bytes_fails_the_reader_with_econnreset) {
  pl::sim_config c = with_seed(1);
  c.reset_after_bytes = 55;  // during the sixth line
  auto loop = pl::new_sim_loop(c);
  std::vector<std::string> reports;
  loop->set_exception_handler(
      [&](pl::EventLoop&, const pl::ExceptionContext& ctx) { reports.push_back(ctx.message); });
  BOOST_TEST(loop->run_until_complete(read_until_reset()) == "ECONNRESET");
}

namespace {
pl::Task<int> serve_through_emfile(int clients) {
  int served = 0;
  net::Server server = co_await net::start_server(
      [&served](net::Stream s) -> pl::Task<> {
        ++served;
        co_await echo_until_eof(std::move(s));
      },
      "127.0.0.1", 0);
  for (int i = 0; i < clients; ++i) {
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
    c.write("hi\n");
    co_await c.read_until("\n");
    c.close();
    co_await c.wait_closed();
  }
  server.close();
  co_await server.wait_closed();
  co_return served;
}
}  // namespace

BOOST_AUTO_TEST_CASE(accept_failures_with_emfile_are_reported_once_and_the_server_keeps_serving) {
  pl::sim_config c = with_seed(5);
  c.accept_emfile = 0.5;
  auto loop = pl::new_sim_loop(c);
  std::vector<std::string> reports;
  loop->set_exception_handler(
      [&](pl::EventLoop&, const pl::ExceptionContext& ctx) { reports.push_back(ctx.message); });
  BOOST_TEST(loop->run_until_complete(serve_through_emfile(10)) == 10);
  BOOST_TEST_REQUIRE(reports.size() >= 1u);
  BOOST_TEST(reports[0].find("out of file descriptors") != std::string::npos, reports[0]);
}

BOOST_AUTO_TEST_CASE(an_operation_on_a_real_descriptor_fails_with_ebadf_naming_it) {
  auto loop = pl::new_sim_loop(with_seed(1));
  std::vector<std::string> whats;
  loop->set_exception_handler([&](pl::EventLoop&, const pl::ExceptionContext& ctx) {
    try {
      std::rethrow_exception(ctx.exception);
    } catch (const std::exception& e) {
      whats.push_back(e.what());
    }
  });
  int p[2];
  BOOST_TEST_REQUIRE(::pipe(p) == 0);
  char buf[4];
  int err = 0;
  try {
    loop->run_until_complete([](int fd, char* b) -> pl::Task<std::size_t> {
      co_return co_await pl::async_read(fd, b, sizeof buf);
    }(p[0], buf));
  } catch (const std::system_error& e) {
    err = e.code().value();
  }
  ::close(p[0]);
  ::close(p[1]);
  BOOST_TEST(err == EBADF);
  BOOST_TEST_REQUIRE(whats.size() == 1u);
  BOOST_TEST(whats[0].find("read on fd " + std::to_string(p[0])) != std::string::npos, whats[0]);
}

// --- determinism ---------------------------------------------------------------------

namespace {
// Five clients, each sending three lines to an echo server at once; the
// trace is every line received, with its virtual time, in the order seen.
pl::Task<> chatter(std::vector<std::string>& trace) {
  auto& loop = pl::get_running_loop();
  auto t0 = loop.time();
  net::Server server = co_await net::start_server(echo_until_eof, "127.0.0.1", 0);
  std::vector<pl::Task<>> clients;
  for (int id = 0; id < 5; ++id) {
    clients.push_back([](int id, std::uint16_t port, std::vector<std::string>& trace,
                         pl::EventLoop::time_point t0) -> pl::Task<> {
      auto& loop = pl::get_running_loop();
      net::Stream c = co_await net::open_connection("127.0.0.1", port);
      for (int i = 0; i < 3; ++i) {
        c.write("client " + std::to_string(id) + " line " + std::to_string(i) + "\n");
        std::string back = co_await c.read_until("\n");
        back.pop_back();
        trace.push_back(std::to_string(ms(loop.time() - t0)) + " " + back);
      }
      c.close();
      co_await c.wait_closed();
    }(id, server.port(), trace, t0));
  }
  co_await pl::gather(std::move(clients));
  server.close();
  co_await server.wait_closed();
}

std::vector<std::string> trace_of(std::uint64_t seed) {
  pl::sim_config c = with_seed(seed);
  c.latency = 1ms;
  c.jitter = 2ms;
  auto loop = pl::new_sim_loop(c);
  std::vector<std::string> trace;
  loop->run_until_complete(chatter(trace));
  return trace;
}
}  // namespace

BOOST_AUTO_TEST_CASE(one_seed_gives_one_trace_and_other_seeds_give_others) {
  std::vector<std::string> first = trace_of(7);
  BOOST_TEST(first.size() == 15u);
  BOOST_TEST((trace_of(7) == first), "two runs with seed 7 differ");
  int differing = 0;
  for (std::uint64_t seed : {8, 9, 10, 11}) differing += trace_of(seed) != first ? 1 : 0;
  BOOST_TEST(differing == 4, differing << " of 4 other seeds gave another trace");
}

// --- a planted race ----------------------------------------------------------------

namespace {
// A lost update: `audit` reads the balance, waits a turn, and writes back
// what it read; `deposit` adds 10. Each starts when its byte arrives, and
// both bytes arrive at the same instant: if audit reads before the deposit
// and writes after it, the deposit is lost. In the order the bytes were
// sent (deposit's first) the program is right; another order, which
// asyncio equally allows, loses the deposit.
pl::Task<int> bank() {
  int balance = 100;
  std::vector<net::Stream> accepted;
  net::Server server = co_await net::start_server(
      [&accepted](net::Stream s) -> pl::Task<> {
        accepted.push_back(std::move(s));
        co_return;
      },
      "127.0.0.1", 0);
  net::Stream deposit_conn = co_await net::open_connection("127.0.0.1", server.port());
  net::Stream audit_conn = co_await net::open_connection("127.0.0.1", server.port());
  while (accepted.size() < 2) co_await pl::sleep(1ms);
  for (net::Stream& s : accepted) s.write("go");  // one step: both sent at one instant
  auto deposit = [](net::Stream& s, int& balance) -> pl::Task<> {
    co_await s.read_exactly(2);
    balance += 10;
  };
  auto audit = [](net::Stream& s, int& balance) -> pl::Task<> {
    co_await s.read_exactly(2);
    int seen = balance;
    co_await pl::sleep(0s);  // the await that opens the race
    balance = seen;
  };
  co_await pl::gather(deposit(deposit_conn, balance), audit(audit_conn, balance));
  for (net::Stream* s : {&deposit_conn, &audit_conn, &accepted[0], &accepted[1]}) {
    s->close();
    co_await s->wait_closed();
  }
  server.close();
  co_await server.wait_closed();
  co_return balance;
}

int bank_balance(const pl::sim_config& c) {
  auto loop = pl::new_sim_loop(c);
  return loop->run_until_complete(bank());
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_seed_sweep_finds_a_lost_update_and_its_seed_replays_it) {
  pl::sim_config in_order = with_seed(1);
  in_order.perturb_order = false;
  BOOST_TEST(bank_balance(in_order) == 110, "without perturbation the race stays hidden");
  std::optional<std::uint64_t> failing;
  for (std::uint64_t seed = 1; seed <= 1000 && !failing; ++seed) {
    if (bank_balance(with_seed(seed)) != 110) failing = seed;
  }
  BOOST_TEST_REQUIRE(failing.has_value(), "no seed of 1..1000 lost the deposit");
  BOOST_TEST_MESSAGE("the deposit is lost with POLYLOOP_SIM_SEED=" << *failing);
  for (int replay = 0; replay < 3; ++replay) BOOST_TEST(bank_balance(with_seed(*failing)) == 100);
}

// --- the example servers under simulated clients ----------------------------------

namespace {
// A byte pattern that differs per client and per position, so a byte echoed
// to the wrong client or out of place is caught.
std::string client_bytes(int client, std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>((client * 131 + i * 7 + i / 251) & 0xff);
  return out;
}

// One client of the echo example: sends its bytes in chunks of 1..4096 and
// reads everything back, then closes; returns what came back.
pl::Task<std::string> echo_client(int port, int client, std::size_t total) {
  net::Stream c = co_await net::open_connection("127.0.0.1", port);
  std::string out = client_bytes(client, total);
  std::string back;
  std::size_t sent = 0;
  while (sent < total) {
    std::size_t chunk = std::min<std::size_t>(total - sent, 1 + (sent * 31 + client) % 4096);
    c.write(std::string_view(out).substr(sent, chunk));
    co_await c.drain();
    sent += chunk;
    while (back.size() < sent / 2) back += co_await c.read(65536);  // keep both directions moving
  }
  c.write_eof();
  while (true) {
    std::string more = co_await c.read(65536);
    if (more.empty()) break;
    back += more;
  }
  c.close();
  co_await c.wait_closed();
  co_return back;
}

pl::Task<std::vector<std::string>> echo_example_with_clients(int clients, std::size_t total) {
  net::Server server = co_await net::start_server(echo_server::serve, "127.0.0.1", 0);
  std::vector<pl::Task<std::string>> all;
  for (int i = 0; i < clients; ++i) all.push_back(echo_client(server.port(), i, total));
  std::vector<std::string> back = co_await pl::gather(std::move(all));
  server.close();
  co_await server.wait_closed();
  co_return back;
}
}  // namespace

// examples/echo_server's handler, 20 simulated clients, 64 KiB each, over
// links with latency, jitter, a bandwidth limit and short reads and writes.
BOOST_AUTO_TEST_CASE(the_echo_example_serves_simulated_clients_over_a_faulty_network) {
  pl::sim_config c = with_seed(5);
  c.latency = 200us;
  c.jitter = 100us;
  c.bandwidth = 50'000'000;
  c.short_io = 0.3;
  auto loop = pl::new_sim_loop(c);
  auto w0 = wall::now();
  std::vector<std::string> back = loop->run_until_complete(echo_example_with_clients(20, 64 * 1024));
  BOOST_REQUIRE_EQUAL(back.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    BOOST_TEST((back[i] == client_bytes(i, 64 * 1024)), "client " << i << " got " << back[i].size()
                                                                   << " bytes, or other bytes");
  }
  BOOST_TEST(ms(wall::now() - w0) < 2000.0);
}

namespace {
// One client of the http example: 5 pipelined GET / and one GET /nope in one
// write, then the six answers read in order.
pl::Task<bool> http_client(int port) {
  net::Stream c = co_await net::open_connection("127.0.0.1", port);
  std::string requests;
  for (int i = 0; i < 5; ++i) requests += "GET / HTTP/1.1\r\nHost: sim\r\n\r\n";
  requests += "GET /nope HTTP/1.1\r\nHost: sim\r\n\r\n";
  c.write(requests);
  std::string want;
  for (int i = 0; i < 5; ++i) want += http_hello::ok_response;
  want += http_hello::not_found_response;
  std::string got = co_await c.read_exactly(want.size());
  c.close();
  co_await c.wait_closed();
  co_return got == want;
}

pl::Task<std::vector<bool>> http_example_with_clients(int clients) {
  net::Server server = co_await net::start_server(http_hello::serve, "127.0.0.1", 0);
  std::vector<pl::Task<bool>> all;
  for (int i = 0; i < clients; ++i) all.push_back(http_client(server.port()));
  std::vector<bool> ok = co_await pl::gather(std::move(all));
  server.close();
  co_await server.wait_closed();
  co_return ok;
}
}  // namespace

// examples/http_hello's handler, 50 simulated clients pipelining requests
// over links with latency and short reads and writes.
BOOST_AUTO_TEST_CASE(the_http_example_answers_pipelined_simulated_clients_in_order) {
  pl::sim_config c = with_seed(9);
  c.latency = 1ms;
  c.short_io = 0.5;
  auto loop = pl::new_sim_loop(c);
  std::vector<bool> ok = loop->run_until_complete(http_example_with_clients(50));
  BOOST_REQUIRE_EQUAL(ok.size(), 50u);
  for (std::size_t i = 0; i < ok.size(); ++i) BOOST_TEST(ok[i], "client " << i << "'s answers");
}

// --- datagrams --------------------------------------------------------------------

namespace {
net::Address loopback(std::uint16_t port = 0) {
  net::Address a;
  a.host = "127.0.0.1";
  a.port = port;
  return a;
}

// Sends `count` numbered UDP datagrams at once, then takes what arrives
// until a second of virtual time passes with nothing (a lost datagram never
// comes): the numbers that never arrived, in order.
pl::Task<std::vector<int>> lost_of(int count) {
  net::DatagramEndpoint rx = co_await net::create_datagram_endpoint(loopback(), std::nullopt);
  net::DatagramEndpoint tx = co_await net::create_datagram_endpoint(loopback(), std::nullopt);
  net::Address to = rx.local_address();
  for (int i = 0; i < count; ++i) co_await tx.sendto(std::to_string(i), to);
  std::vector<bool> seen(static_cast<std::size_t>(count), false);
  for (;;) {
    try {
      net::Datagram d = co_await pl::wait_for(rx.recvfrom(), 1s);
      BOOST_TEST_REQUIRE(!d.truncated);
      BOOST_TEST_REQUIRE(d.sender.port == tx.local_address().port);
      int i = std::stoi(d.data);
      BOOST_TEST_REQUIRE((i >= 0 && i < count && !seen[static_cast<std::size_t>(i)]),
                         "datagram '" << d.data << "' unexpected or twice");
      seen[static_cast<std::size_t>(i)] = true;
    } catch (const pl::TimeoutError&) {
      break;
    }
  }
  rx.close();
  tx.close();
  co_await rx.wait_closed();
  co_await tx.wait_closed();
  std::vector<int> lost;
  for (int i = 0; i < count; ++i) {
    if (!seen[static_cast<std::size_t>(i)]) lost.push_back(i);
  }
  co_return lost;
}

std::vector<int> lost_with(std::uint64_t seed, double loss) {
  pl::sim_config c = with_seed(seed);
  c.datagram_loss = loss;
  auto loop = pl::new_sim_loop(c);
  return loop->run_until_complete(lost_of(10000));
}
}  // namespace

BOOST_AUTO_TEST_CASE(ten_thousand_datagrams_without_loss_all_arrive) {
  std::vector<int> lost = lost_with(5, 0.0);
  BOOST_TEST(lost.empty(),
             lost.size() << " of 10000 lost, the first " << (lost.empty() ? -1 : lost.front()));
}

BOOST_AUTO_TEST_CASE(ten_percent_loss_drops_about_a_tenth_and_the_seed_decides_which) {
  std::vector<int> first = lost_with(5, 0.1);
  BOOST_TEST_MESSAGE("10% loss, seed 5: " << first.size() << " of 10000 lost; seed 6: "
                                           << lost_with(6, 0.1).size());
  // Binomial(10000, 0.1): mean 1000, standard deviation 30; 900..1100 is
  // over three of them either side.
  BOOST_TEST(first.size() >= 900u);
  BOOST_TEST(first.size() <= 1100u);
  BOOST_TEST((lost_with(5, 0.1) == first), "two runs with seed 5 lost different datagrams");
  BOOST_TEST((lost_with(6, 0.1) != first), "seeds 5 and 6 lost the same datagrams");
}

namespace {
// Three datagrams 1 ms apart over a link of 5 ms latency: each arrives at
// exactly its send time plus 5 ms; a datagram too long for the receive is
// cut and flagged; and one beyond the receive buffer is dropped.
pl::Task<> timed_datagrams() {
  pl::EventLoop& loop = pl::get_running_loop();
  net::DatagramEndpoint rx = co_await net::create_datagram_endpoint(loopback(), std::nullopt);
  net::DatagramEndpoint tx =
      co_await net::create_datagram_endpoint(std::nullopt, rx.local_address());
  auto t0 = loop.time();
  for (int i = 0; i < 3; ++i) {
    co_await tx.send(std::string(100, static_cast<char>('a' + i)));
    co_await pl::sleep(1ms);
  }
  for (int i = 0; i < 3; ++i) {
    net::Datagram d = co_await rx.recvfrom(60);
    BOOST_TEST(ms(loop.time() - t0) == 5.0 + i, "datagram " << i << " at " << ms(loop.time() - t0));
    BOOST_TEST(d.truncated);
    BOOST_TEST(d.data == std::string(60, static_cast<char>('a' + i)));
  }
  // The buffer (350 bytes) holds three of 100 bytes; the fourth is dropped.
  for (int i = 0; i < 4; ++i) co_await tx.send(std::to_string(i) + std::string(99, '.'));
  co_await pl::sleep(10ms);
  for (char i : {'0', '1', '2'}) BOOST_TEST((co_await rx.recvfrom()).data[0] == i);
  bool timed_out = false;
  try {
    co_await pl::wait_for(rx.recvfrom(), 1s);
  } catch (const pl::TimeoutError&) {
    timed_out = true;
  }
  BOOST_TEST(timed_out, "a datagram beyond the receive buffer arrived");
  tx.close();
  rx.close();
  co_await tx.wait_closed();
  co_await rx.wait_closed();
}
}  // namespace

BOOST_AUTO_TEST_CASE(datagrams_arrive_after_the_latency_cut_to_the_receive_and_the_buffer) {
  pl::sim_config c = with_seed(2);
  c.latency = 5ms;
  c.buffer_size = 350;
  auto loop = pl::new_sim_loop(c);
  loop->run_until_complete(timed_datagrams());
}

BOOST_AUTO_TEST_CASE(a_loss_outside_zero_to_one_is_refused_naming_it) {
  pl::sim_config c = with_seed(1);
  c.datagram_loss = 1.5;
  BOOST_CHECK_EXCEPTION(pl::new_sim_loop(c), std::invalid_argument, [](const std::exception& e) {
    return std::string(e.what()).find("datagram_loss") != std::string::npos;
  });
}

namespace {
// docs/testing.md's "Datagram loss" example: a client that resends after
// 50 ms of silence gets all its requests answered over a lossy link.
pl::Task<> answer_forever(net::DatagramEndpoint server) {
  for (;;) {
    net::Datagram d = co_await server.recvfrom();
    co_await server.sendto("ok " + d.data, d.sender);
  }
}

pl::Task<int> answered_with_resends(int* sends) {
  net::DatagramEndpoint server = co_await net::create_datagram_endpoint(loopback(), std::nullopt);
  net::DatagramEndpoint client =
      co_await net::create_datagram_endpoint(std::nullopt, server.local_address());
  auto serving = pl::get_running_loop().create_task(answer_forever(server));
  int answered = 0;
  for (int i = 0; i < 100; ++i) {
    std::string request = std::to_string(i);
    for (;;) {
      co_await client.send(request);
      ++*sends;
      try {
        net::Datagram reply = co_await pl::wait_for(client.recv(), 50ms);
        if (reply.data == "ok " + request) {
          ++answered;
          break;
        }
      } catch (const pl::TimeoutError&) {
      }
    }
  }
  serving.cancel();
  client.close();
  server.close();
  co_await client.wait_closed();
  co_await server.wait_closed();
  co_return answered;
}
}  // namespace

BOOST_AUTO_TEST_CASE(resends_over_a_lossy_link_get_every_request_answered) {
  pl::sim_config c = with_seed(42);
  c.datagram_loss = 0.2;
  c.latency = 2ms;
  auto loop = pl::new_sim_loop(c);
  int sends = 0;
  BOOST_TEST(loop->run_until_complete(answered_with_resends(&sends)) == 100);
  // Each exchange survives with probability 0.8 x 0.8: resends were needed.
  BOOST_TEST(sends > 120, sends << " sends for 100 requests");
  BOOST_TEST_MESSAGE(sends << " sends for 100 answers at 20% loss each way");
}

namespace {
// Two links of their own (sim_config::links_by_port) beside the default
// one: port 5000 loses every datagram, port 6000 has 3 ms of latency where
// the default has 1 ms, for datagrams and for a connection alike.
pl::Task<> two_links() {
  pl::EventLoop& loop = pl::get_running_loop();
  net::DatagramEndpoint lossy = co_await net::create_datagram_endpoint(loopback(5000), std::nullopt);
  net::DatagramEndpoint slow = co_await net::create_datagram_endpoint(loopback(6000), std::nullopt);
  net::DatagramEndpoint plain = co_await net::create_datagram_endpoint(loopback(), std::nullopt);
  net::DatagramEndpoint tx = co_await net::create_datagram_endpoint(loopback(), std::nullopt);
  auto t0 = loop.time();
  for (int i = 0; i < 10; ++i) {
    co_await tx.sendto("to lossy", lossy.local_address());
    co_await tx.sendto("to slow", slow.local_address());
    co_await tx.sendto("to plain", plain.local_address());
  }
  for (int i = 0; i < 10; ++i) {
    BOOST_TEST((co_await plain.recvfrom()).data == "to plain");
    BOOST_TEST(ms(loop.time() - t0) == 1.0);
  }
  for (int i = 0; i < 10; ++i) {
    BOOST_TEST((co_await slow.recvfrom()).data == "to slow");
    BOOST_TEST(ms(loop.time() - t0) == 3.0);
  }
  bool nothing = false;
  try {
    co_await pl::wait_for(lossy.recvfrom(), 1s);
  } catch (const pl::TimeoutError&) {
    nothing = true;
  }
  BOOST_TEST(nothing, "a datagram crossed the link that loses them all");
  for (net::DatagramEndpoint* e : {&lossy, &slow, &plain, &tx}) {
    e->close();
    co_await e->wait_closed();
  }
  // A connection to port 6000: its handshake takes that link's round trip.
  net::Server server = co_await net::start_server(echo_until_eof, "127.0.0.1", 6000);
  auto t1 = loop.time();
  net::Stream c = co_await net::open_connection("127.0.0.1", 6000);
  BOOST_TEST(ms(loop.time() - t1) == 6.0);
  c.write("x\n");
  co_await c.read_until("\n");
  BOOST_TEST(ms(loop.time() - t1) == 12.0);
  c.close();
  co_await c.wait_closed();
  server.close();
  co_await server.wait_closed();
}
}  // namespace

BOOST_AUTO_TEST_CASE(links_by_port_set_loss_and_latency_per_link) {
  pl::sim_config c = with_seed(3);
  c.latency = 1ms;
  c.links_by_port[5000] = {.latency = 1ms, .jitter = 0ms, .datagram_loss = 1.0};
  c.links_by_port[6000] = {.latency = 3ms, .jitter = 0ms, .datagram_loss = 0.0};
  auto loop = pl::new_sim_loop(c);
  loop->run_until_complete(two_links());
  c.links_by_port[7000].datagram_loss = -0.5;
  BOOST_CHECK_EXCEPTION(pl::new_sim_loop(c), std::invalid_argument, [](const std::exception& e) {
    return std::string(e.what()).find("links_by_port[7000]") != std::string::npos;
  });
}
