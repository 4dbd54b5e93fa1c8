// Connection churn against an echo server on the same loop: connections
// opened, used and closed in the four ways a server meets (clean close,
// half-close, reset, abandoned while the server writes), round after round.
// After a warm-up round the process's open descriptors must be exactly the
// same and its resident memory within 2 MiB at the end: a descriptor or a
// stream state leaked per connection fails it.
//
// The normal suite runs SOAK_CONNECTIONS (3,000) per backend in a few
// seconds; //tests:soak_long_test (tagged manual) runs 100,000:
//   bazel test -c opt //tests:soak_long_test --test_output=all
// (figures in docs/benchmarks.md). Under ASan the memory bound is not
// checked (its quarantine holds freed memory by design); LSan checks memory
// there, and the descriptors are still checked exactly.
#include "net/stream.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE soak
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "core/task/introspection.h"
#include "net/stream.h"
#include "tests/support/fd_listing.h"
#include "tests/support/test_support.h"

#ifndef SOAK_CONNECTIONS
#define SOAK_CONNECTIONS 3000
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SOAK_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_UNDER_ASAN 1
#endif
#endif

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t connections = SOAK_CONNECTIONS;
constexpr std::size_t concurrency = 32;            // connections in flight at once
constexpr std::size_t round_size = 500;            // connections per round
constexpr std::size_t big_write = 256 * 1024;      // more than the socket buffers hold
// After warm-up. The heap's bytes in use catch a leak of 27 bytes per
// connection over the normal suite's 2,500 (quiet runs grow 1-9 KiB); the
// RSS bound is looser, for memory the allocator keeps and the heap count
// does not see (it failed at 2 MiB on an allocator artefact: the dynamic
// mmap threshold moving 256 KiB buffers into the heap; under a full suite's
// load the coroutine frame pool, which keeps its peak, once grew 3,968 KiB
// because more server handlers were alive at once than in the warm-up).
constexpr long max_heap_growth = 64L * 1024;       // bytes
constexpr long max_rss_growth = 8L * 1024 * 1024;  // bytes

// Bytes the program holds from malloc (glibc's count: in chunks of the
// heap, plus chunks it mapped on their own). A leak raises it; unlike the
// RSS, the allocator's own choices (its dynamic mmap threshold, a heap top
// not trimmed) do not.
long live_heap_bytes() {
  struct mallinfo2 m = ::mallinfo2();
  return static_cast<long>(m.uordblks + m.hblkhd);
}

long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0;
  long resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// Echoes until end of stream, then closes. A reset or a write to a client
// that went away ends it (the abandoned connections).
pl::Task<> echo(net::Stream s) {
  try {
    while (true) {
      std::string data = co_await s.read();
      if (data.empty()) break;
      s.write(data);
      co_await s.drain();
    }
  } catch (const std::system_error&) {
  }
  s.close();
  try {
    co_await s.wait_closed();
  } catch (const std::system_error&) {
  }
}

struct tally {
  std::size_t clean = 0, half_closed = 0, reset = 0, abandoned = 0;
};

// One connection, used and closed the way `kind` says; checks the echo.
pl::Task<> client(std::uint16_t port, std::size_t kind, tally& t) {
  net::Stream s = co_await net::open_connection("127.0.0.1", port);
  switch (kind % 4) {
    case 0: {  // clean close after one exchange
      s.write("ping\n");
      std::string line = co_await s.read_until("\n");
      BOOST_TEST_REQUIRE(line == "ping\n");
      ++t.clean;
      break;
    }
    case 1: {  // half-close: the echo of everything, then end of stream
      s.write("half");
      s.write_eof();
      std::string all;
      while (true) {
        std::string part = co_await s.read();
        if (part.empty()) break;
        all += part;
      }
      BOOST_TEST_REQUIRE(all == "half");
      ++t.half_closed;
      break;
    }
    case 2: {  // reset: SO_LINGER 0, so close() sends RST instead of FIN
      s.write("reset\n");
      BOOST_TEST_REQUIRE(co_await s.read_until("\n") == "reset\n");
      ::linger lin{1, 0};
      BOOST_TEST_REQUIRE(::setsockopt(s.fd(), SOL_SOCKET, SO_LINGER, &lin, sizeof lin) == 0);
      ++t.reset;
      break;
    }
    case 3: {  // abandoned: the server is still writing the echo back
      s.write(std::string(big_write, 'x'));
      std::string first = co_await s.read(1024);
      BOOST_TEST_REQUIRE(!first.empty());
      ++t.abandoned;
      break;  // closed with unread data: the kernel resets, the server's write fails
    }
  }
  s.close();
  try {
    co_await s.wait_closed();
  } catch (const std::system_error&) {
    // The abandoned kind may not get its own write out: the server reset.
  }
}

pl::Task<> worker(std::uint16_t port, std::size_t first, std::size_t count, std::size_t step,
                  tally& t) {
  for (std::size_t i = first; i < count; i += step) co_await client(port, i, t);
}

// `count` connections, `concurrency` at a time; then waits until the server
// has closed its side of every one.
pl::Task<> churn(net::Server& server, std::size_t count, tally& t) {
  std::vector<pl::Task<>> workers;
  for (std::size_t w = 0; w < concurrency; ++w) {
    workers.push_back(worker(server.port(), w, count, concurrency, t));
  }
  co_await pl::gather(std::move(workers));
  while (server.active_connections() != 0) co_await pl::sleep(1ms);
}

pl::Task<> soak() {
  pl::testing::handler_log log;
  log.install(pl::get_running_loop());
  net::Server server = co_await net::start_server(echo, "127.0.0.1", 0);
  tally t;

  co_await churn(server, round_size, t);  // warm-up: pools, buffers, lazily made fds
  const std::map<int, std::string> fds_after_warm_up = pl::testing::open_fds();
  const long rss_after_warm_up = resident_bytes();
  const long heap_after_warm_up = live_heap_bytes();
  const std::size_t tasks_after_warm_up = pl::all_tasks(pl::get_running_loop()).size();

  std::size_t done = round_size;
  while (done < connections) {
    std::size_t n = std::min(round_size, connections - done);
    co_await churn(server, n, t);
    done += n;
  }
  const long rss_growth = resident_bytes() - rss_after_warm_up;
  const long heap_growth = live_heap_bytes() - heap_after_warm_up;
  // Coroutine frames come from their own pool (core/task/frame_pool.cc), not
  // malloc, and it keeps the peak it reached: a task left alive is counted
  // here instead.
  const std::size_t tasks_left = pl::all_tasks(pl::get_running_loop()).size();
  const std::string fd_diff =
      pl::testing::fd_differences(fds_after_warm_up, pl::testing::open_fds());

  std::printf(
      "%s: %zu connections (%zu clean, %zu half-closed, %zu reset, %zu abandoned); "
      "RSS after warm-up %ld KiB, growth %ld KiB; heap in use growth %ld B; %zu fds open\n",
      pl::testing::backend_under_test().c_str(), done, t.clean, t.half_closed, t.reset, t.abandoned,
      rss_after_warm_up / 1024, rss_growth / 1024, heap_growth, fds_after_warm_up.size());
  BOOST_TEST(t.clean + t.half_closed + t.reset + t.abandoned == done);
  BOOST_TEST(tasks_left == tasks_after_warm_up, "tasks alive: " << tasks_after_warm_up
                                                 << " after the warm-up, " << tasks_left
                                                 << " after the churn");
  BOOST_TEST(fd_diff.empty(), "descriptors differ from after the warm-up:\n" << fd_diff);
#ifdef SOAK_UNDER_ASAN
  std::printf("ASan: the RSS bound is not checked (the quarantine keeps freed memory)\n");
#else
  BOOST_TEST(heap_growth <= max_heap_growth,
             "the heap in use grew by " << heap_growth << " B over " << done - round_size
                                        << " connections after warm-up (bound: "
                                        << max_heap_growth << " B): a leak");
  BOOST_TEST(rss_growth <= max_rss_growth,
             "RSS grew by " << rss_growth / 1024 << " KiB over " << done - round_size
                            << " connections after warm-up (bound: " << max_rss_growth / 1024
                            << " KiB)");
#endif
  // Nothing reported to the loop's exception handler: every failure the
  // churn causes (resets, writes to gone clients) is handled where it occurs.
  BOOST_TEST(log.messages.empty(),
             "exception handler: " << (log.messages.empty() ? "" : log.messages.front()));
  server.close();
  co_await server.wait_closed();
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(connection_churn_leaves_fds_and_memory_flat, pl::testing::loop_fixture) {
  // Fails (TimeoutError) rather than hangs if a connection never ends.
  loop->run_until_complete(pl::wait_for(soak(), connections * 20ms));
}
