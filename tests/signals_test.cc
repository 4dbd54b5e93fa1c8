// Unix signals delivered to the loop (core/signals/signals.h) and run()'s
// SIGINT handling (issue 12, "Signals"). CPython pins these in
// test_unix_events.py (SelectorEventLoopSignalTests) and test_runners.py.
#include "core/signals/signals.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE signals
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace pl::testing;
using namespace std::chrono_literals;

namespace {

// Runs `loop` until `done()` or 2 s.
template <class F>
void run_until(pl::EventLoop& loop, F done) {
  auto wait = [&]() -> pl::Task<> {
    for (int i = 0; i < 2000 && !done(); ++i) co_await pl::sleep(1ms);
  };
  loop.run_until_complete(wait());
}

std::atomic<int> own_handler_calls{0};
void own_handler(int) { ++own_handler_calls; }

void (*current_handler(int sig))(int) {
  struct sigaction sa {};
  ::sigaction(sig, nullptr, &sa);
  return sa.sa_handler;
}

}  // namespace

// CPython test_unix_events.py: SelectorEventLoopSignalTests.test_add_signal_handler
// (the callback is scheduled on the loop, not run in the handler).
BOOST_FIXTURE_TEST_CASE(a_signal_runs_its_callback_on_the_loop_thread, loop_fixture) {
  int calls = 0;
  std::thread::id ran_on;
  pl::add_signal_handler(*loop, SIGUSR1, [&] {
    ++calls;
    ran_on = std::this_thread::get_id();
  });
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return calls > 0; });
  BOOST_TEST(calls == 1);
  BOOST_TEST((ran_on == std::this_thread::get_id()));
  BOOST_TEST(pl::remove_signal_handler(*loop, SIGUSR1));
}

BOOST_FIXTURE_TEST_CASE(a_signal_delivered_to_another_thread_still_reaches_the_loop,
                        loop_fixture) {
  std::atomic<int> calls{0};
  pl::add_signal_handler(*loop, SIGUSR2, [&] { ++calls; });
  std::thread other([] {
    ::pthread_kill(::pthread_self(), SIGUSR2);  // handled on this thread
  });
  other.join();
  run_until(*loop, [&] { return calls.load() > 0; });
  BOOST_TEST(calls.load() == 1);
  pl::remove_signal_handler(*loop, SIGUSR2);
}

// CPython: test_add_signal_handler replaces the callback of a signal already handled.
BOOST_FIXTURE_TEST_CASE(adding_a_handler_again_replaces_the_callback, loop_fixture) {
  int first = 0, second = 0;
  pl::add_signal_handler(*loop, SIGUSR1, [&] { ++first; });
  pl::add_signal_handler(*loop, SIGUSR1, [&] { ++second; });
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return second > 0; });
  BOOST_TEST(first == 0);
  BOOST_TEST(second == 1);
  pl::remove_signal_handler(*loop, SIGUSR1);
}

// CPython: test_remove_signal_handler / test_remove_signal_handler_2
BOOST_FIXTURE_TEST_CASE(remove_restores_the_previous_disposition, loop_fixture) {
  struct sigaction mine {};
  mine.sa_handler = &own_handler;
  struct sigaction before {};
  ::sigaction(SIGUSR1, &mine, &before);
  pl::add_signal_handler(*loop, SIGUSR1, [] {});
  BOOST_TEST((current_handler(SIGUSR1) != &own_handler));
  BOOST_TEST(pl::remove_signal_handler(*loop, SIGUSR1));
  BOOST_TEST(!pl::remove_signal_handler(*loop, SIGUSR1));  // not handled any more
  BOOST_TEST((current_handler(SIGUSR1) == &own_handler));
  own_handler_calls = 0;
  ::kill(::getpid(), SIGUSR1);
  BOOST_TEST(own_handler_calls.load() == 1);  // the program's own handler is back
  ::sigaction(SIGUSR1, &before, nullptr);
}

// CPython: test_close (the loop's close removes its signal handlers).
BOOST_FIXTURE_TEST_CASE(close_restores_every_disposition, loop_fixture) {
  auto before_usr1 = current_handler(SIGUSR1);
  auto before_usr2 = current_handler(SIGUSR2);
  pl::add_signal_handler(*loop, SIGUSR1, [] {});
  pl::add_signal_handler(*loop, SIGUSR2, [] {});
  loop->close();
  BOOST_TEST((current_handler(SIGUSR1) == before_usr1));
  BOOST_TEST((current_handler(SIGUSR2) == before_usr2));
}

// CPython: test_add_signal_handler_setup_error / ValueError for SIGKILL
BOOST_FIXTURE_TEST_CASE(signals_that_cannot_be_caught_are_a_clear_error, loop_fixture) {
  auto noop = [] {};
  BOOST_CHECK_EXCEPTION(pl::add_signal_handler(*loop, SIGKILL, noop), std::invalid_argument,
                        message_has("cannot be caught"));
  BOOST_CHECK_EXCEPTION(pl::add_signal_handler(*loop, SIGSTOP, noop), std::invalid_argument,
                        message_has("cannot be caught"));
  BOOST_CHECK_EXCEPTION(pl::add_signal_handler(*loop, 0, noop), std::invalid_argument,
                        message_has("not a signal number"));
  BOOST_CHECK_EXCEPTION(pl::add_signal_handler(*loop, 65, noop), std::invalid_argument,
                        message_has("not a signal number"));
  BOOST_CHECK_EXCEPTION(pl::add_signal_handler(*loop, SIGUSR1, nullptr), std::invalid_argument,
                        message_has("empty"));
}

BOOST_FIXTURE_TEST_CASE(adding_a_handler_to_a_closed_loop_is_a_clear_error, loop_fixture) {
  loop->close();
  BOOST_CHECK_EXCEPTION(pl::add_signal_handler(*loop, SIGUSR1, [] {}), pl::EventLoopError,
                        message_has("closed"));
}

BOOST_FIXTURE_TEST_CASE(every_loop_handling_a_signal_is_told, loop_fixture) {
  auto other = make_loop();
  int here = 0, there = 0;
  pl::add_signal_handler(*loop, SIGUSR1, [&] { ++here; });
  pl::add_signal_handler(*other, SIGUSR1, [&] { ++there; });
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return here > 0; });
  run_until(*other, [&] { return there > 0; });
  BOOST_TEST(here == 1);
  BOOST_TEST(there == 1);
  other->close();  // the signal stays handled for `loop`
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return here > 1; });
  BOOST_TEST(here == 2);
  pl::remove_signal_handler(*loop, SIGUSR1);
}

BOOST_FIXTURE_TEST_CASE(a_callback_that_throws_is_reported_and_the_loop_goes_on, loop_fixture) {
  handler_log log;
  log.install(*loop);
  int later = 0;
  pl::add_signal_handler(*loop, SIGUSR1, [&] {
    ++later;
    throw my_error("from a signal callback");
  });
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return !log.exceptions.empty(); });
  BOOST_REQUIRE(log.exceptions.size() == 1u);
  BOOST_CHECK_THROW(std::rethrow_exception(log.exceptions[0]), my_error);
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return later > 1; });
  BOOST_TEST(later == 2);
  pl::remove_signal_handler(*loop, SIGUSR1);
}

// The read of the signal pipe is not a task: cancel_all_tasks() (run()'s
// shutdown) neither ends it nor counts it, and close() does not report it.
BOOST_FIXTURE_TEST_CASE(signal_handling_survives_cancel_all_tasks, loop_fixture) {
  handler_log log;
  log.install(*loop);
  int calls = 0;
  pl::add_signal_handler(*loop, SIGUSR1, [&] { ++calls; });
  run_one_iteration(*loop);
  BOOST_TEST(loop->cancel_all_tasks() == 0u);
  ::kill(::getpid(), SIGUSR1);
  run_until(*loop, [&] { return calls > 0; });
  BOOST_TEST(calls == 1);
  loop->close();
  BOOST_TEST(log.messages.empty());  // no "Task was destroyed but it is pending!"
}

// --- run() and SIGINT -----------------------------------------------------------------

// CPython test_runners.py: RunnerTests.test_signal_install_not_supported_ok-like and
// test_interrupt_call_soon: the first SIGINT cancels the main task, run()
// raises KeyboardInterrupt, and SIGINT's default disposition is back.
BOOST_AUTO_TEST_CASE(run_turns_the_first_sigint_into_a_cancel_of_main) {
  BOOST_REQUIRE((current_handler(SIGINT) == SIG_DFL));
  bool main_saw_cancel = false;
  auto main = [&]() -> pl::Task<int> {
    try {
      co_await pl::sleep(10s);
    } catch (const pl::CancelledError&) {
      main_saw_cancel = true;
      throw;
    }
    co_return 1;
  };
  std::thread interrupter([] {
    std::this_thread::sleep_for(50ms);
    ::kill(::getpid(), SIGINT);
  });
  auto start = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(pl::run(main(), backend_under_test()), pl::KeyboardInterrupt);
  interrupter.join();
  BOOST_TEST(main_saw_cancel);
  BOOST_TEST(ms(std::chrono::steady_clock::now() - start) < 5000);  // not the 10 s sleep
  BOOST_TEST((current_handler(SIGINT) == SIG_DFL));
}

// asyncio installs its SIGINT handler only over the default one.
BOOST_AUTO_TEST_CASE(run_leaves_a_programs_own_sigint_handler_alone) {
  struct sigaction mine {};
  mine.sa_handler = &own_handler;
  struct sigaction before {};
  ::sigaction(SIGINT, &mine, &before);
  own_handler_calls = 0;
  auto main = []() -> pl::Task<int> {
    ::kill(::getpid(), SIGINT);
    co_await pl::sleep(20ms);
    co_return 7;
  };
  BOOST_TEST(pl::run(main(), backend_under_test()) == 7);
  BOOST_TEST(own_handler_calls.load() == 1);
  BOOST_TEST((current_handler(SIGINT) == &own_handler));
  ::sigaction(SIGINT, &before, nullptr);
}
