// Debug mode (issue 13): the slow-callback report, the wrong-thread check,
// where never-retrieved futures and tasks were made, "coroutine ... was
// never awaited", dump_tasks() and the SIGQUIT dump. asyncio's behaviour,
// translated from CPython's Lib/test/test_asyncio (each case names the test
// it translates). Slow steps are timed on a VirtualClock that the step
// itself advances, so the durations are exact and the bounds cannot flake.
#include "core/loop/event_loop.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE debug
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

pl::Task<> busy_step(pl::VirtualClock* clock, pl::Clock::duration d) {
  co_await pl::sleep(0s);
  clock->advance(d);  // this step "takes" d on the loop's clock
}

pl::Task<int> failing() {
  co_await pl::sleep(0s);
  throw my_error("lost");
}

pl::Task<> forgotten() { co_return; }

pl::Task<> wait_on(pl::Future<> f) { co_await f; }

}  // namespace

// --- the switch ----------------------------------------------------------------

// CPython test_base_events.py: BaseEventLoopTests.test_set_debug
BOOST_AUTO_TEST_CASE(debug_mode_is_off_by_default_and_switches) {
  loop_fixture f;
  BOOST_TEST(!f.loop->get_debug());
  BOOST_TEST(f.loop->slow_callback_duration() == pl::Clock::duration(100ms));
  f.loop->set_debug(true);
  BOOST_TEST(f.loop->get_debug());
  f.loop->set_debug(false);
  BOOST_TEST(!f.loop->get_debug());
}

// asyncio reads PYTHONASYNCIODEBUG as a loop is made.
BOOST_AUTO_TEST_CASE(polyloop_debug_in_the_environment_turns_it_on) {
  ::setenv("POLYLOOP_DEBUG", "1", 1);
  auto on = make_loop();
  ::setenv("POLYLOOP_DEBUG", "0", 1);
  auto off = make_loop();
  ::unsetenv("POLYLOOP_DEBUG");
  BOOST_TEST(on->get_debug());
  BOOST_TEST(!off->get_debug());
  on->close();
  off->close();
}

BOOST_AUTO_TEST_CASE(a_negative_slow_callback_duration_is_refused) {
  loop_fixture f;
  BOOST_CHECK_EXCEPTION(f.loop->set_slow_callback_duration(-1ms), std::invalid_argument,
                        message_has("negative"));
}

// --- slow callbacks and steps -------------------------------------------------------

// CPython test_base_events.py: BaseEventLoopTests.test__run_once_logging
BOOST_AUTO_TEST_CASE(a_slow_callback_is_reported_with_its_duration) {
  vloop v;
  handler_log log;
  log.install(*v.loop);
  v.loop->set_debug(true);
  v.loop->call_soon([&] { v.clock.advance(150ms); });
  run_one_iteration(*v.loop);
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(log.messages[0] ==
             "Executing a callback took 150.000 ms (slow_callback_duration is 100.000 ms)");
}

// The same callback under the duration, and over it with debug mode off:
// nothing is said.
BOOST_AUTO_TEST_CASE(a_callback_under_the_duration_or_without_debug_mode_is_not_reported) {
  vloop v;
  handler_log log;
  log.install(*v.loop);
  v.loop->set_debug(true);
  v.loop->call_soon([&] { v.clock.advance(99ms); });
  run_one_iteration(*v.loop);
  v.loop->set_slow_callback_duration(200ms);
  v.loop->call_soon([&] { v.clock.advance(150ms); });
  run_one_iteration(*v.loop);
  v.loop->set_debug(false);
  v.loop->call_soon([&] { v.clock.advance(1s); });
  run_one_iteration(*v.loop);
  BOOST_TEST(log.messages.empty());
}

BOOST_AUTO_TEST_CASE(a_slow_task_step_names_the_task) {
  vloop v;
  handler_log log;
  log.install(*v.loop);
  v.loop->set_debug(true);
  v.loop->run_until_complete(v.loop->create_task(busy_step(&v.clock, 250ms), "slowpoke"));
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(contains(log.messages[0], "Executing a step of task 'slowpoke'"));
  BOOST_TEST(contains(log.messages[0], "took 250.000 ms"));
#if defined(__cpp_lib_source_location)
  BOOST_TEST(contains(log.messages[0], "busy_step"));  // its coroutine
#endif
}

// A first step resumes no awaiter: the report still finds its task.
BOOST_AUTO_TEST_CASE(a_slow_first_step_names_the_task) {
  vloop v;
  handler_log log;
  log.install(*v.loop);
  v.loop->set_debug(true);
  auto task = v.loop->create_task(
      [](pl::VirtualClock* c) -> pl::Task<> {
        c->advance(120ms);
        co_await pl::sleep(0s);
      }(&v.clock),
      "starter");
  v.loop->run_until_complete(task);
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(contains(log.messages[0], "Executing a step of task 'starter'"));
  BOOST_TEST(contains(log.messages[0], "took 120.000 ms"));
}

// On the real clock: a callback that really blocks for 30 ms is reported
// with a 10 ms limit, and not with a 1 s one.
BOOST_AUTO_TEST_CASE(a_really_blocking_callback_is_reported) {
  if (skip_when_simulated("a busy wait takes real time, and sim's loop time is virtual")) return;
  loop_fixture f;
  handler_log log;
  log.install(*f.loop);
  f.loop->set_debug(true);
  auto block = [] {
    auto until = std::chrono::steady_clock::now() + 30ms;
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  f.loop->set_slow_callback_duration(10ms);
  f.loop->call_soon(block);
  run_one_iteration(*f.loop);
  f.loop->set_slow_callback_duration(1s);
  f.loop->call_soon(block);
  run_one_iteration(*f.loop);
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  const std::string prefix = "Executing a callback took ";
  BOOST_TEST_REQUIRE(contains(log.messages[0], prefix));
  double took_ms = std::stod(log.messages[0].substr(prefix.size()));
  BOOST_TEST(took_ms >= 30.0);
}

// --- the wrong thread ---------------------------------------------------------

// CPython test_base_events.py: BaseEventLoopTests.test_check_thread
BOOST_AUTO_TEST_CASE(a_loop_method_from_another_thread_is_an_error_in_debug_mode) {
  loop_fixture f;
  f.loop->set_debug(true);
  auto release = f.loop->create_future<>();
  std::string call_soon_error, create_future_error;
  std::thread other;
  auto main = [&]() -> pl::Task<> {
    other = std::thread([&] {
      try {
        f.loop->call_soon([] {});
      } catch (const pl::EventLoopError& e) {
        call_soon_error = e.what();
      }
      try {
        (void)f.loop->create_future<int>();
      } catch (const pl::EventLoopError& e) {
        create_future_error = e.what();
      }
      f.loop->call_soon_threadsafe([&] { release.set_result(); });  // the way that is allowed
    });
    co_await release;
  };
  f.loop->run_until_complete(main());
  other.join();
  BOOST_TEST(contains(call_soon_error, "call_soon"));
  BOOST_TEST(contains(call_soon_error, "was called from thread"));
  BOOST_TEST(contains(call_soon_error, "this loop runs on thread"));
  BOOST_TEST(contains(create_future_error, "create_future was called from thread"));
}

// asyncio checks only while the loop runs: before that any thread may set
// it up (the thread is joined before the loop runs).
BOOST_AUTO_TEST_CASE(a_loop_that_is_not_running_may_be_set_up_from_another_thread) {
  loop_fixture f;
  f.loop->set_debug(true);
  bool ran = false;
  std::thread([&] { f.loop->call_soon([&] { ran = true; }); }).join();
  run_one_iteration(*f.loop);
  BOOST_TEST(ran);
}

// --- where things were made ----------------------------------------------------------

// CPython test_futures.py: BaseFutureTests.test_tb_logger_exception_unretrieved and
// test_future_source_traceback
BOOST_AUTO_TEST_CASE(a_never_retrieved_future_exception_names_where_it_was_made) {
  loop_fixture f;
  handler_log log;
  log.install(*f.loop);
  f.loop->set_debug(true);
  int line = 0;
  {
    auto future = f.loop->create_future<int>(); line = __LINE__;
    future.set_exception(my_error("lost"));
  }
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(contains(log.messages[0], "Future exception was never retrieved"));
#if defined(__cpp_lib_source_location)
  BOOST_TEST(contains(log.messages[0], "debug_test.cc:" + std::to_string(line)));
#endif
  (void)line;
}

// CPython test_tasks.py: BaseTaskTests.test_task_source_traceback and
// test_exception_traceback ("Task exception was never retrieved")
BOOST_AUTO_TEST_CASE(a_never_retrieved_task_exception_names_its_coroutine) {
  loop_fixture f;
  handler_log log;
  log.install(*f.loop);
  f.loop->set_debug(true);
  f.loop->create_task(failing(), "doomed");  // the Future is dropped at once
  run_one_iteration(*f.loop);
  run_one_iteration(*f.loop);
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(contains(log.messages[0], "Task exception was never retrieved (task 'doomed'"));
#if defined(__cpp_lib_source_location)
  BOOST_TEST(contains(log.messages[0], "failing() at "));
  BOOST_TEST(contains(log.messages[0], "debug_test.cc:"));
#endif
}

// asyncio's RuntimeWarning "coroutine '...' was never awaited": a Task made
// and dropped. Awaited and scheduled ones are not reported.
BOOST_AUTO_TEST_CASE(a_task_never_awaited_nor_scheduled_is_reported) {
  loop_fixture f;
  handler_log log;
  log.install(*f.loop);
  auto main = []() -> pl::Task<> {
    { auto dropped = forgotten(); }
    co_await forgotten();
    co_await pl::create_task(forgotten());
  };
  f.loop->run_until_complete(main());
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(contains(log.messages[0], "was never awaited"));
#if defined(__cpp_lib_source_location)
  BOOST_TEST(contains(log.messages[0], "forgotten()' was never awaited (at "));
  BOOST_TEST(contains(log.messages[0], "debug_test.cc:"));
#endif
}

// --- dump_tasks --------------------------------------------------------------------

// A loop with a task on each kind of wait; each line is checked.
BOOST_AUTO_TEST_CASE(dump_tasks_says_what_each_task_waits_on) {
  vloop f;  // the sleep's deadline is exact
  int fds[2];
  BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  auto plain = f.loop->create_future<>();
  std::vector<pl::Future<int>> three = {f.loop->create_future<int>(), f.loop->create_future<int>(),
                                        f.loop->create_future<int>()};
  pl::Lock lock;
  char buf[16];
  auto sleeper = f.loop->create_task(pause(10s), "sleeper");
  auto reader = f.loop->create_task(
      [](int fd, char* b) -> pl::Task<> { co_await pl::async_read(fd, b, 16); }(fds[0], buf),
      "reader");
  auto waiter = f.loop->create_task(wait_on(plain), "waiter");
  auto gatherer = f.loop->create_task(
      [](std::vector<pl::Future<int>> fs) -> pl::Task<> { co_await pl::gather(fs); }(three),
      "gatherer");
  auto holder = f.loop->create_task(
      [](pl::Lock* l, pl::Future<> until) -> pl::Task<> {
        auto guard = co_await l->scoped();
        co_await until;
      }(&lock, plain),
      "holder");
  auto locker = f.loop->create_task(
      [](pl::Lock* l) -> pl::Task<> { auto guard = co_await l->scoped(); }(&lock), "locker");
  auto follower = f.loop->create_task(
      [](pl::Future<> s) -> pl::Task<> { co_await s; }(sleeper), "follower");
  run_one_iteration(*f.loop);

  std::ostringstream out;
  f.loop->dump_tasks(out);
  auto lines = lines_of(out.str());
  BOOST_TEST_INFO(out.str());
  BOOST_TEST_REQUIRE(lines.size() == 8u);
  BOOST_TEST(contains(lines[0], "7 pending tasks on this "));
  auto check = [&](std::size_t i, const std::string& name, const std::string& waits_on) {
    BOOST_TEST_INFO(lines[i]);
    BOOST_TEST(contains(lines[i], "  task '" + name + "'"));
    BOOST_TEST(contains(lines[i], ": waits on " + waits_on));
  };
  check(1, "sleeper", "sleep until ");
  BOOST_TEST(contains(lines[1], "(in 10000.000 ms)"));
  check(2, "reader", "read on fd " + std::to_string(fds[0]));
  check(3, "waiter", "a future");
  check(4, "gatherer", "gather of 3 (3 pending)");
  check(5, "holder", "a future");
  check(6, "locker", "Lock.acquire");
  check(7, "follower", "task 'sleeper'");

  for (auto& t : {sleeper, reader, waiter, gatherer, holder, locker, follower}) {
    pl::Future<> copy = t;
    copy.cancel();
  }
  f.loop->cancel_all_tasks();
  ::close(fds[0]);
  ::close(fds[1]);
}

// In debug mode SIGQUIT writes dump_tasks() to stderr.
BOOST_AUTO_TEST_CASE(sigquit_dumps_the_tasks_in_debug_mode) {
  if (skip_when_simulated("signals reach a loop through a real fd, which sim does not read; "
                          "debug mode installs no SIGQUIT dump there")) {
    return;
  }
  loop_fixture f;
  f.loop->set_debug(true);
  auto sleepy = f.loop->create_task(pause(1h), "sleepy");
  std::ostringstream captured;
  std::streambuf* old = std::cerr.rdbuf(captured.rdbuf());
  auto main = [&]() -> pl::Task<> {
    co_await pl::sleep(0s);
    ::raise(SIGQUIT);
    for (int i = 0; i < 500 && !contains(captured.str(), "sleepy"); ++i) co_await pl::sleep(1ms);
  };
  f.loop->run_until_complete(main());
  std::cerr.rdbuf(old);
  BOOST_TEST_INFO(captured.str());
  BOOST_TEST(contains(captured.str(), "task 'sleepy'"));
  BOOST_TEST(contains(captured.str(), "waits on sleep until "));
  // Debug mode off: the handler is gone again.
  f.loop->set_debug(false);
  BOOST_TEST(!pl::remove_signal_handler(*f.loop, SIGQUIT));
  sleepy.cancel();
  f.loop->cancel_all_tasks();
}
