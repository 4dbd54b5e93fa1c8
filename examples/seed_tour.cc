// The seed tutorial in C++: its nine asyncio examples, in order, written
// with polyloop. Each section prints what the Python version prints, and the
// comments above each part quote the asyncio lines it mirrors.
//
//   bazel run //examples:seed_tour -- [--backend=NAME] [--scale=F]
//
//   --backend=NAME  the loop's backend: io_uring, epoll or auto (default: the
//                   POLYLOOP_BACKEND variable, else the build's default);
//                   --backend=list lists them
//   --scale=F       multiplies every delay (default 1: the tutorial's own
//                   seconds, about 33 s in all; 0.01 runs the tour in a blink).
//                   Elapsed times are printed in tutorial seconds (real / F).
//
// Exits 0 when every example behaved as the tutorial says; 1 (with a message
// on stderr) on anything unexpected; 2 for a bad command line.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "polyloop/polyloop.h"

namespace pl = polyloop;

namespace {

// --- Helpers: delays, elapsed time, headings --------------------------------

double g_scale = 1.0;          // --scale
int g_bodies_started = 0;      // how many do_some_work bodies have begun to run
bool g_loop_reported = false;  // the loop's exception handler was called

// `x` tutorial seconds, as the real delay to sleep.
std::chrono::duration<double> tutorial_seconds(double x) {
  return std::chrono::duration<double>(x * g_scale);
}

// Measures the loop's time since it was made, in tutorial seconds: the
// steady clock on a real backend, virtual time under --backend=sim (where
// the whole tour takes milliseconds and every figure is exact).
class Stopwatch {
 public:
  explicit Stopwatch(const pl::EventLoop& loop) : loop_(&loop), start_(loop.time()) {}
  void print() const {
    double real = std::chrono::duration<double>(loop_->time() - start_).count();
    std::cout << "elapsed " << std::fixed << std::setprecision(2) << real / g_scale << " s";
    if (g_scale != 1.0) {
      std::cout << " (real " << std::setprecision(3) << real
                << " s at --scale=" << std::defaultfloat << g_scale << ")";
    }
    std::cout << std::defaultfloat << "\n";
  }

 private:
  const pl::EventLoop* loop_;
  pl::Clock::time_point start_;
};

void heading(int n, std::string_view title) { std::cout << "\n== " << n << ". " << title << "\n"; }

// The tour checks what the tutorial claims; a claim that does not hold ends
// it with exit status 1.
void expect(bool ok, std::string_view what) {
  if (!ok) throw std::logic_error("the tour expected " + std::string(what));
}

// The loop's exception handler: the tour expects no report at all.
void report(pl::EventLoop&, const pl::ExceptionContext& context) {
  g_loop_reported = true;
  pl::EventLoop::print_exception(context);
}

// --- The coroutines of the tutorial ------------------------------------------

// async def do_some_work(x):
//     print("Waiting " + str(x))
//     await asyncio.sleep(x)
pl::Task<> do_some_work(int x) {
  ++g_bodies_started;
  std::cout << "Waiting " << x << "\n";
  co_await pl::sleep(tutorial_seconds(x));
}

// Sections 6 to 8 use a version that also says when it is done:
// async def do_some_work(loop, x):
//     print('Waiting ' + str(x))
//     await asyncio.sleep(x)
//     print('Done')
pl::Task<> do_some_work_say_done(int x) {
  std::cout << "Waiting " << x << "\n";
  co_await pl::sleep(tutorial_seconds(x));
  std::cout << "Done\n";
}

// ...and the pitfall of section 6 also stops the loop:
//     loop.stop()
pl::Task<> do_some_work_then_stop(pl::EventLoop& loop, int x) {
  std::cout << "Waiting " << x << "\n";
  co_await pl::sleep(tutorial_seconds(x));
  std::cout << "Done\n";
  loop.stop();
}

// def done_callback(futu):
//     print('Done')
void done_callback(pl::Future<>&) { std::cout << "Done\n"; }

// def done_callback(loop, futu):
//     loop.stop()
void stop_loop(pl::EventLoop& loop, pl::Future<>&) { loop.stop(); }

// --- 1 ------------------------------------------------------------------------

void tour_coroutine_object() {
  heading(1, "a coroutine function and its coroutine object");

  // print(asyncio.iscoroutinefunction(do_some_work))   # True
  constexpr bool is_coroutine_function = std::is_same_v<decltype(do_some_work(3)), pl::Task<>>;
  std::cout << "do_some_work is a coroutine function (returns polyloop::Task<>): " << std::boolalpha
            << is_coroutine_function << "\n";

  // coroutine = do_some_work(3)   # a coroutine object; calling runs nothing
  pl::Task<> coroutine = do_some_work(3);
  std::cout << "coroutine = do_some_work(3): a Task object exists (valid() = " << coroutine.valid()
            << "), and nothing was printed: its body has run " << g_bodies_started << " times\n";
  expect(coroutine.valid() && g_bodies_started == 0, "calling a coroutine function to run nothing");
  // It goes out of scope unrun and its frame is freed (Python would warn
  // "coroutine 'do_some_work' was never awaited").
}

// --- 2 ------------------------------------------------------------------------

std::unique_ptr<pl::EventLoop> tour_run_until_complete(const std::string& backend) {
  heading(2, "run_until_complete: run a coroutine to its end");

  // loop = asyncio.new_event_loop()
  std::unique_ptr<pl::EventLoop> loop = pl::new_event_loop(backend);
  loop->set_exception_handler(report);
  std::cout << "a new event loop on the " << loop->backend_name() << " backend\n";

  // loop.run_until_complete(do_some_work(3))
  Stopwatch watch(*loop);
  loop->run_until_complete(do_some_work(3));
  watch.print();
  return loop;
}

// --- 3 ------------------------------------------------------------------------

void tour_ensure_future(pl::EventLoop& loop) {
  heading(3, "ensure_future: a coroutine wrapped into a future");

  // coroutine = do_some_work(3)
  // future = asyncio.ensure_future(coroutine)
  pl::Task<> coroutine = do_some_work(3);
  pl::Future<> future = loop.ensure_future(std::move(coroutine));
  std::cout << "future scheduled; future.done() = " << future.done() << "\n";

  // loop.run_until_complete(future)
  Stopwatch watch(loop);
  loop.run_until_complete(future);
  std::cout << "future.done() = " << future.done() << "\n";
  watch.print();
}

// --- 4 ------------------------------------------------------------------------

void tour_add_done_callback(pl::EventLoop& loop) {
  heading(4, "add_done_callback: a callback when the future is done");

  // futu = asyncio.ensure_future(do_some_work(3))
  // futu.add_done_callback(done_callback)
  // loop.run_until_complete(futu)
  pl::Future<> futu = loop.ensure_future(do_some_work(3));
  futu.add_done_callback(done_callback);
  Stopwatch watch(loop);
  loop.run_until_complete(futu);
  watch.print();
}

// --- 5 ------------------------------------------------------------------------

void tour_gather(pl::EventLoop& loop) {
  heading(5, "gather: several coroutines at once");

  // loop.run_until_complete(asyncio.gather(do_some_work(1), do_some_work(3)))
  std::cout << "-- from arguments\n";
  Stopwatch args_watch(loop);
  loop.run_until_complete(pl::gather(do_some_work(1), do_some_work(3)));
  args_watch.print();

  // coros = [do_some_work(1), do_some_work(3)]
  // loop.run_until_complete(asyncio.gather(*coros))
  std::cout << "-- from a list (std::vector<Task<>>)\n";
  std::vector<pl::Task<>> coros;
  coros.push_back(do_some_work(1));
  coros.push_back(do_some_work(3));
  Stopwatch list_watch(loop);
  loop.run_until_complete(pl::gather(std::move(coros)));
  list_watch.print();

  // futus = [asyncio.ensure_future(do_some_work(1)),
  //          asyncio.ensure_future(do_some_work(3))]
  // loop.run_until_complete(asyncio.gather(*futus))
  std::cout << "-- from futures (std::vector<Future<>>)\n";
  Stopwatch futures_watch(loop);
  std::vector<pl::Future<>> futus{loop.ensure_future(do_some_work(1)),
                                  loop.ensure_future(do_some_work(3))};
  loop.run_until_complete(pl::gather(futus));
  futures_watch.print();
  // Each took about 3 s, not 1 + 3: the sleeps overlapped.
}

// --- 6 ------------------------------------------------------------------------

void tour_run_forever(pl::EventLoop& loop) {
  heading(6, "run_forever and stop");

  // The pitfall: the first coroutine to finish stops the loop.
  // asyncio.ensure_future(do_some_work(loop, 1))
  // asyncio.ensure_future(do_some_work(loop, 3))
  // loop.run_forever()
  std::cout << "-- the pitfall: each coroutine calls loop.stop() when done\n";
  pl::Future<> one = loop.ensure_future(do_some_work_then_stop(loop, 1));
  pl::Future<> three = loop.ensure_future(do_some_work_then_stop(loop, 3));
  Stopwatch pitfall_watch(loop);
  loop.run_forever();
  pitfall_watch.print();
  std::cout << "run_forever returned: the 1 s coroutine done = " << one.done()
            << ", the 3 s coroutine done = " << three.done() << " (still pending)\n";
  expect(one.done() && !three.done(), "the 3 s coroutine to be still pending");

  // Not in the tutorial: the pending coroutine would go on at the next run
  // of this loop and stop that run too. Cancel it (asyncio's runner does the
  // same before it closes a loop).
  std::size_t cancelled = loop.cancel_all_tasks();
  std::cout << "cancel_all_tasks() cancelled " << cancelled
            << " task; three.cancelled() = " << three.cancelled() << "\n";

  // The fix: gather both, and stop the loop when the gather is done.
  // futus = asyncio.gather(do_some_work(loop, 1), do_some_work(loop, 3))
  // futus.add_done_callback(functools.partial(done_callback, loop))
  // loop.run_forever()
  std::cout << "-- the fix: gather + a done callback that stops the loop\n";
  pl::Future<> futus =
      loop.ensure_future(pl::gather(do_some_work_say_done(1), do_some_work_say_done(3)));
  futus.add_done_callback(std::bind_front(stop_loop, std::ref(loop)));  // functools.partial
  Stopwatch fix_watch(loop);
  loop.run_forever();
  fix_watch.print();
  std::cout << "run_forever returned: gather done = " << futus.done() << "\n";
  expect(futus.done(), "the gather to be done when its callback stopped the loop");
}

// --- 7 ------------------------------------------------------------------------

void tour_close(pl::EventLoop& loop) {
  heading(7, "close: a closed loop cannot run again");

  // loop.run_until_complete(do_some_work(loop, 1))
  // loop.run_until_complete(do_some_work(loop, 3))
  loop.run_until_complete(do_some_work_say_done(1));
  loop.run_until_complete(do_some_work_say_done(3));
  std::cout << "a loop that is not closed runs again and again: is_closed() = " << loop.is_closed()
            << "\n";

  // loop.close()
  // loop.run_until_complete(do_some_work(loop, 3))   # RuntimeError: Event loop is closed
  loop.close();
  std::cout << "loop.close(): is_closed() = " << loop.is_closed() << "\n";
  try {
    loop.run_until_complete(do_some_work_say_done(3));
    expect(false, "running a closed loop to throw");
  } catch (const pl::EventLoopError& e) {
    std::cout << "running it again throws polyloop::EventLoopError: " << e.what() << "\n";
  }
}

// --- 8 ------------------------------------------------------------------------

std::unique_ptr<pl::EventLoop> tour_wait(const std::string& backend) {
  heading(8, "wait: the alternative to gather");

  // The loop of sections 2 to 7 is closed: sections 8 and 9 use a new one.
  // loop = asyncio.new_event_loop()
  std::unique_ptr<pl::EventLoop> loop = pl::new_event_loop(backend);
  loop->set_exception_handler(report);

  // tasks = [asyncio.ensure_future(do_some_work(loop, 1)),
  //          asyncio.ensure_future(do_some_work(loop, 3))]
  // done, pending = loop.run_until_complete(asyncio.wait(tasks))
  // (polyloop's wait takes futures, as asyncio.wait does since Python 3.11.)
  std::vector<pl::Future<>> tasks{loop->ensure_future(do_some_work_say_done(1)),
                                  loop->ensure_future(do_some_work_say_done(3))};
  Stopwatch watch(*loop);
  auto [done, pending] = loop->run_until_complete(pl::wait(tasks));
  watch.print();
  std::cout << "wait returned " << done.size() << " done, " << pending.size() << " pending\n";
  expect(done.size() == 2 && pending.empty(), "wait(ALL_COMPLETED) to return 2 done, 0 pending");

  // Unlike gather, wait can return early, and never cancels what it returns
  // as pending:
  // done, pending = loop.run_until_complete(
  //     asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED))
  std::cout << "-- return_when=FIRST_COMPLETED\n";
  std::vector<pl::Future<>> more{loop->ensure_future(do_some_work_say_done(1)),
                                 loop->ensure_future(do_some_work_say_done(3))};
  Stopwatch first_watch(*loop);
  auto [first_done, still_pending] = loop->run_until_complete(pl::wait(more, pl::FIRST_COMPLETED));
  first_watch.print();
  std::cout << "wait returned " << first_done.size() << " done, " << still_pending.size()
            << " pending\n";
  expect(first_done.size() == 1 && still_pending.size() == 1,
         "wait(FIRST_COMPLETED) to return 1 done, 1 pending");

  // for t in pending: t.cancel()
  // loop.run_until_complete(asyncio.wait(pending))
  for (pl::Future<>& task : still_pending) task.cancel();
  loop->run_until_complete(pl::wait(still_pending));
  std::cout << "the pending one, cancelled: cancelled() = " << still_pending[0].cancelled() << "\n";
  return loop;
}

// --- 9 ------------------------------------------------------------------------

// async def timer(x, cb):
//     futu = asyncio.ensure_future(asyncio.sleep(x))
//     futu.add_done_callback(cb)
//     await futu
pl::Task<> timer(double x, std::function<void(pl::Future<>&)> cb) {
  pl::Future<> futu = pl::ensure_future(pl::sleep(tutorial_seconds(x)));
  futu.add_done_callback(std::move(cb));
  co_await futu;
}

void tour_timer(pl::EventLoop& loop) {
  heading(9, "a timer: ensure_future(sleep(x)) plus a done callback");

  // t = timer(3, lambda futu: print('Done'))
  // loop.run_until_complete(t)
  pl::Task<> t = timer(3, [](pl::Future<>&) { std::cout << "Done\n"; });
  Stopwatch watch(loop);
  loop.run_until_complete(std::move(t));
  watch.print();
}

// --- main ---------------------------------------------------------------------

int usage(std::string_view problem) {
  std::cerr << "seed_tour: " << problem << "\n"
            << "usage: seed_tour [--backend=NAME] [--scale=F]   (F > 0, default 1)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // The command line: --backend=NAME (or --backend NAME) and --scale=F.
  std::string backend = pl::backend_from_args(argc, argv);
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--backend") {
      ++i;  // its value, read by backend_from_args
    } else if (arg.starts_with("--scale=")) {
      std::string value(arg.substr(8));
      char* end = nullptr;
      g_scale = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !std::isfinite(g_scale) || g_scale <= 0) {
        return usage("--scale wants a positive number, not '" + value + "'");
      }
    } else if (!arg.starts_with("--backend=")) {
      return usage("unknown argument '" + std::string(arg) + "'");
    }
  }

  try {
    std::cout << std::boolalpha << "The seed tutorial's asyncio examples, with polyloop";
    if (g_scale != 1.0) std::cout << " (every delay scaled by " << g_scale << ")";
    std::cout << "\n";

    tour_coroutine_object();                       // 1
    auto loop = tour_run_until_complete(backend);  // 2: one loop for 2 to 7
    tour_ensure_future(*loop);                     // 3
    tour_add_done_callback(*loop);                 // 4
    tour_gather(*loop);                            // 5
    tour_run_forever(*loop);                       // 6
    tour_close(*loop);                             // 7: closes it
    auto fresh_loop = tour_wait(backend);          // 8: a new loop for 8 and 9
    tour_timer(*fresh_loop);                       // 9
    fresh_loop->close();

    expect(!g_loop_reported, "no report from the loop's exception handler");
    std::cout << "\nThe tour is over: all nine examples behaved as the tutorial says.\n";
    return 0;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "seed_tour: error: " << e.what() << "\n";
    return 1;
  }
}
