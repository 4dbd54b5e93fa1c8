// An Asio timer and a polyloop task cooperating on one thread, one loop.
//
// The Asio side is ordinary handler-based code: a steady_timer that ticks
// every 100 ms and re-arms itself. The polyloop side is a task that awaits
// Asio operations with polyloop::use_task, next to polyloop's own sleep().
// Both print as they go; their lines interleave because they share the
// loop. Every Asio object is made on polyloop::asio_context(loop).
//
//   bazel run //examples:asio_interop
#include "polyloop/asio.h"

#include <chrono>
#include <cstdio>
#include <functional>

namespace pl = polyloop;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Plain Asio: a timer handler that re-arms itself until told to stop.
struct ticker {
  asio::steady_timer timer;
  std::chrono::steady_clock::time_point start;
  int ticks = 0;
  bool stopped = false;

  void arm() {
    timer.expires_after(100ms);
    timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopped) return;
      std::printf("%6.0f ms  asio:     tick %d\n", elapsed_ms(start), ++ticks);
      arm();
    });
  }
};

// A polyloop task that mixes polyloop's sleep with Asio's timer.
pl::Task<int> worker(asio::io_context& ctx, std::chrono::steady_clock::time_point start) {
  for (int step = 1; step <= 3; ++step) {
    co_await pl::sleep(150ms);
    std::printf("%6.0f ms  polyloop: step %d after pl::sleep(150ms)\n", elapsed_ms(start), step);
    asio::steady_timer t(ctx, 60ms);
    co_await t.async_wait(pl::use_task);  // an Asio operation, awaited
    std::printf("%6.0f ms  polyloop: step %d after an asio timer of 60 ms\n", elapsed_ms(start), step);
  }
  co_return 3;
}

}  // namespace

int main() try {
  auto loop = pl::new_event_loop("asio");
  asio::io_context& ctx = pl::asio_context(*loop);
  auto start = std::chrono::steady_clock::now();

  ticker tick{asio::steady_timer(ctx), start};
  tick.arm();
  // From an Asio handler into polyloop: schedule a polyloop callback.
  asio::post(ctx, [&] { loop->call_soon([] { std::printf("     0 ms  asio posted a polyloop callback\n"); }); });

  int steps = loop->run_until_complete(worker(ctx, start));
  tick.stopped = true;
  tick.timer.cancel();
  std::printf("worker finished %d steps; the asio ticker ticked %d times meanwhile\n", steps,
              tick.ticks);
  loop->close();
  return tick.ticks >= 4 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "asio_interop: %s\n", e.what());
  return 1;
}
