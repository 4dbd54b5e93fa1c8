// Future<T> behaviour, as asyncio's Future defines it: outcomes, done
// callbacks, awaiting from tasks, cancellation, "never retrieved" reports,
// and who owns the stored result.
#include "core/future/future.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE future
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace pl::testing;
using namespace std::chrono_literals;

namespace {

pl::Task<int> returns(int value) { co_return value; }

pl::Task<int> throws_now(std::string message) {
  throw std::runtime_error(message);
  co_return 0;
}

pl::Task<int> awaits(pl::Future<int> f) {
  int& v = co_await f;
  co_return v;
}

}  // namespace

// --- Outcomes ------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(set_result_makes_the_future_done_with_that_result, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  BOOST_TEST(f.valid());
  BOOST_TEST(!f.done());
  BOOST_TEST(!f.cancelled());
  f.set_result(7);
  BOOST_TEST(f.done());
  BOOST_TEST(!f.cancelled());
  BOOST_TEST(f.result() == 7);
  BOOST_TEST(!f.exception());  // a result, no exception
  BOOST_TEST(&f.get_loop() == loop.get());
  // Copies refer to the same future.
  pl::Future<int> g = f;
  BOOST_TEST(g.result() == 7);
  BOOST_TEST(&g.result() == &f.result());
}

BOOST_FIXTURE_TEST_CASE(a_void_future_completes_without_a_value, loop_fixture) {
  pl::Future<> f = loop->create_future();
  BOOST_TEST(!f.done());
  BOOST_CHECK_THROW(f.result(), pl::InvalidStateError);
  f.set_result();
  BOOST_TEST(f.done());
  BOOST_CHECK_NO_THROW(f.result());
  BOOST_CHECK_THROW(f.set_result(), pl::InvalidStateError);
}

BOOST_FIXTURE_TEST_CASE(set_exception_makes_result_rethrow_that_same_exception, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  std::exception_ptr original = std::make_exception_ptr(std::runtime_error("disk on fire"));
  f.set_exception(original);
  BOOST_TEST(f.done());
  BOOST_TEST(!f.cancelled());
  BOOST_CHECK_EXCEPTION(f.result(), std::runtime_error, message_has("disk on fire"));
  BOOST_TEST((f.exception() == original));
  // result() throws the stored object itself, not a copy.
  const std::exception* thrown = nullptr;
  const std::exception* stored = nullptr;
  try {
    f.result();
  } catch (const std::exception& e) {
    thrown = &e;
  }
  try {
    std::rethrow_exception(f.exception());
  } catch (const std::exception& e) {
    stored = &e;
  }
  BOOST_TEST(thrown != nullptr);
  BOOST_TEST(thrown == stored);
}

BOOST_FIXTURE_TEST_CASE(set_exception_takes_an_exception_object, loop_fixture) {
  pl::Future<> f = loop->create_future();
  f.set_exception(std::out_of_range("index 9"));
  BOOST_CHECK_EXCEPTION(f.result(), std::out_of_range, message_has("index 9"));
}

BOOST_FIXTURE_TEST_CASE(cancel_makes_the_future_cancelled_once, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  BOOST_TEST(f.cancel());
  BOOST_TEST(f.cancelled());
  BOOST_TEST(f.done());
  BOOST_CHECK_THROW(f.result(), pl::CancelledError);
  BOOST_CHECK_THROW(f.exception(), pl::CancelledError);
  BOOST_TEST(!f.cancel());
  BOOST_TEST(f.cancelled());
  BOOST_CHECK_THROW(f.set_result(1), pl::InvalidStateError);
}

BOOST_FIXTURE_TEST_CASE(cancel_of_a_done_future_returns_false_and_keeps_the_result,
                        loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  f.set_result(3);
  BOOST_TEST(!f.cancel());
  BOOST_TEST(!f.cancelled());
  BOOST_TEST(f.result() == 3);
}

BOOST_FIXTURE_TEST_CASE(result_of_a_pending_future_throws_invalid_state, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  BOOST_CHECK_EXCEPTION(f.result(), pl::InvalidStateError, message_has("pending"));
  BOOST_CHECK_EXCEPTION(f.exception(), pl::InvalidStateError, message_has("pending"));
  BOOST_TEST(!f.done());
}

BOOST_FIXTURE_TEST_CASE(completing_a_done_future_again_throws_invalid_state, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  f.set_result(1);
  BOOST_CHECK_EXCEPTION(f.set_result(2), pl::InvalidStateError, message_has("already done"));
  BOOST_CHECK_THROW(f.set_exception(std::runtime_error("late")), pl::InvalidStateError);
  BOOST_TEST(f.result() == 1);

  pl::Future<int> g = loop->create_future<int>();
  g.set_exception(std::runtime_error("first"));
  BOOST_CHECK_THROW(g.set_result(2), pl::InvalidStateError);
  BOOST_CHECK_EXCEPTION(g.result(), std::runtime_error, message_has("first"));
}

BOOST_FIXTURE_TEST_CASE(a_task_future_cannot_be_completed_from_outside, loop_fixture) {
  pl::Future<int> task = loop->create_task(returns(11));
  BOOST_CHECK_THROW(task.set_result(5), pl::InvalidStateError);
  BOOST_CHECK_THROW(task.set_exception(std::runtime_error("no")), pl::InvalidStateError);
  BOOST_TEST(!task.done());
  BOOST_TEST(loop->run_until_complete(task) == 11);
  BOOST_CHECK_THROW(task.set_result(5), pl::InvalidStateError);
  BOOST_TEST(task.result() == 11);
}

BOOST_FIXTURE_TEST_CASE(create_future_on_a_closed_loop_throws, loop_fixture) {
  loop->close();
  BOOST_CHECK_EXCEPTION(loop->create_future<int>(), pl::EventLoopError,
                        message_has("event loop is closed"));
}

// --- Done callbacks -------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(done_callbacks_never_run_inline, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  bool ran = false;
  f.add_done_callback([&](pl::Future<int>&) { ran = true; });
  f.set_result(1);
  BOOST_TEST(!ran);
  run_one_iteration(*loop);
  BOOST_TEST(ran);
}

BOOST_FIXTURE_TEST_CASE(done_callbacks_run_in_the_order_added_and_receive_the_future,
                        loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  std::vector<int> order;
  std::vector<int> values;
  std::vector<bool> same_future;
  for (int i = 0; i < 5; ++i) {
    f.add_done_callback([&, i](pl::Future<int>& got) {
      order.push_back(i);
      values.push_back(got.result());
      same_future.push_back(pl::detail::future_access::state(got) == pl::detail::future_access::state(f));
    });
  }
  f.set_result(42);
  run_one_iteration(*loop);
  BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3, 4}), boost::test_tools::per_element());
  BOOST_TEST(values == (std::vector<int>{42, 42, 42, 42, 42}), boost::test_tools::per_element());
  BOOST_TEST(same_future == std::vector<bool>(5, true), boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(done_callbacks_run_after_callbacks_scheduled_before_completion,
                        loop_fixture) {
  // Done callbacks go through call_soon: FIFO with everything else.
  pl::Future<int> f = loop->create_future<int>();
  std::vector<std::string> order;
  f.add_done_callback([&](pl::Future<int>&) { order.push_back("done"); });
  loop->call_soon([&] { order.push_back("before"); });
  f.set_result(1);
  loop->call_soon([&] { order.push_back("after"); });
  run_one_iteration(*loop);
  BOOST_TEST(order == (std::vector<std::string>{"before", "done", "after"}),
             boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(a_done_callback_added_to_a_done_future_is_scheduled_not_run_inline,
                        loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  f.set_result(9);
  int seen = 0;
  f.add_done_callback([&](pl::Future<int>& got) { seen = got.result(); });
  BOOST_TEST(seen == 0);
  run_one_iteration(*loop);
  BOOST_TEST(seen == 9);
}

BOOST_FIXTURE_TEST_CASE(done_callbacks_run_when_the_future_is_cancelled, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  bool saw_cancelled = false;
  f.add_done_callback([&](pl::Future<int>& got) { saw_cancelled = got.cancelled(); });
  f.cancel();
  run_one_iteration(*loop);
  BOOST_TEST(saw_cancelled);
}

BOOST_FIXTURE_TEST_CASE(remove_done_callback_removes_it_once, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  bool removed_ran = false, kept_ran = false;
  auto id = f.add_done_callback([&](pl::Future<int>&) { removed_ran = true; });
  f.add_done_callback([&](pl::Future<int>&) { kept_ran = true; });
  BOOST_TEST(f.remove_done_callback(id) == 1u);
  BOOST_TEST(f.remove_done_callback(id) == 0u);
  f.set_result(1);
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST(!removed_ran);
  BOOST_TEST(kept_ran);
}

BOOST_FIXTURE_TEST_CASE(remove_done_callback_releases_what_it_captured, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  auto resource = std::make_shared<int>(0);
  auto id = f.add_done_callback([resource](pl::Future<int>&) {});
  BOOST_TEST(resource.use_count() == 2);
  BOOST_TEST(f.remove_done_callback(id) == 1u);
  BOOST_TEST(resource.use_count() == 1);
}

BOOST_AUTO_TEST_CASE(a_done_callback_that_throws_goes_to_the_exception_handler) {
  handler_log log;
  auto loop = make_loop();
  log.install(*loop);
  {
    pl::Future<int> f = loop->create_future<int>();
    bool next_ran = false;
    f.add_done_callback([](pl::Future<int>&) { throw std::runtime_error("callback broke"); });
    f.add_done_callback([&](pl::Future<int>&) { next_ran = true; });
    f.set_result(1);
    BOOST_CHECK_NO_THROW(run_one_iteration(*loop));
    BOOST_TEST(next_ran);
    BOOST_TEST_REQUIRE(log.messages.size() == 1u);
    BOOST_TEST(log.messages[0].find("done callback") != std::string::npos,
               "handler message: " << log.messages[0]);
    BOOST_CHECK_EXCEPTION(std::rethrow_exception(log.exceptions[0]), std::runtime_error,
                          message_has("callback broke"));
  }
  loop->close();
}

BOOST_FIXTURE_TEST_CASE(a_done_callback_on_a_task_runs_before_run_until_complete_returns,
                        loop_fixture) {
  // The seed tutorial's example 4.
  pl::Future<int> task = loop->ensure_future(returns(4));
  int seen = 0;
  task.add_done_callback([&](pl::Future<int>& got) { seen = got.result(); });
  BOOST_TEST(loop->run_until_complete(task) == 4);
  BOOST_TEST(seen == 4);
}

// --- Awaiting futures from tasks ---------------------------------------------------

BOOST_FIXTURE_TEST_CASE(a_task_awaiting_a_future_resumes_with_its_value, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  auto start = loop->time();  // before the timer's deadline is computed
  loop->call_later(5ms, [f]() mutable { f.set_result(42); });
  BOOST_TEST(loop->run_until_complete(awaits(f)) == 42);
  auto waited = std::chrono::duration<double, std::milli>(loop->time() - start).count();
  BOOST_TEST(waited >= 5.0);
}

BOOST_FIXTURE_TEST_CASE(a_task_awaiting_a_done_future_gets_its_value_at_once, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  f.set_result(8);
  BOOST_TEST(loop->run_until_complete(awaits(f)) == 8);
}

BOOST_FIXTURE_TEST_CASE(a_task_awaiting_a_future_gets_its_exception, loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  loop->call_later(1ms, [f]() mutable { f.set_exception(std::invalid_argument("bad input")); });
  BOOST_CHECK_EXCEPTION(loop->run_until_complete(awaits(f)), std::invalid_argument,
                        message_has("bad input"));
}

namespace {
pl::Task<std::string> awaits_and_reports(pl::Future<int> f) {
  try {
    co_await f;
  } catch (const pl::CancelledError&) {
    co_return "CancelledError";
  } catch (const pl::EventLoopError& e) {
    co_return std::string("EventLoopError: ") + e.what();
  } catch (...) {
    co_return "another exception";
  }
  co_return "no exception";
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(awaiting_a_cancelled_future_throws_cancelled_error_in_the_task,
                        loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  loop->call_later(1ms, [f]() mutable { f.cancel(); });
  BOOST_TEST(loop->run_until_complete(awaits_and_reports(f)) == "CancelledError");

  // A task that lets it escape ends as cancelled.
  pl::Future<int> g = loop->create_future<int>();
  loop->call_later(1ms, [g]() mutable { g.cancel(); });
  pl::Future<int> task = loop->create_task(awaits(g));
  BOOST_CHECK_THROW(loop->run_until_complete(task), pl::CancelledError);
  BOOST_TEST(task.cancelled());
}

BOOST_FIXTURE_TEST_CASE(awaiting_a_future_of_another_loop_throws_event_loop_error,
                        loop_fixture) {
  auto other = make_loop();
  {
    pl::Future<int> foreign = other->create_future<int>();
    std::string outcome = loop->run_until_complete(awaits_and_reports(foreign));
    BOOST_TEST(outcome.rfind("EventLoopError: ", 0) == 0u, "outcome: " << outcome);
    BOOST_TEST(outcome.find("another event loop") != std::string::npos, "outcome: " << outcome);
    BOOST_TEST(!foreign.done());
  }
  other->close();
}

BOOST_FIXTURE_TEST_CASE(cancelling_a_task_that_awaits_a_future_cancels_that_future,
                        loop_fixture) {
  pl::Future<int> f = loop->create_future<int>();
  pl::Future<int> task = loop->create_task(awaits(f));
  run_one_iteration(*loop);  // the task starts and suspends on f
  BOOST_TEST(!task.done());
  BOOST_TEST(task.cancel());
  BOOST_TEST(f.cancelled());
  BOOST_CHECK_THROW(loop->run_until_complete(task), pl::CancelledError);
  BOOST_TEST(task.cancelled());
}

// --- "exception was never retrieved" -------------------------------------------------

BOOST_AUTO_TEST_CASE(an_unretrieved_future_exception_is_reported_when_the_future_goes) {
  handler_log log;
  auto loop = make_loop();
  log.install(*loop);
  {
    pl::Future<int> f = loop->create_future<int>();
    f.set_exception(std::runtime_error("nobody looked"));
    pl::Future<int> copy = f;
    f = pl::Future<int>();
    BOOST_TEST(log.messages.empty());  // a reference is still alive
  }
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(log.messages[0] == "Future exception was never retrieved");
  BOOST_CHECK_EXCEPTION(std::rethrow_exception(log.exceptions[0]), std::runtime_error,
                        message_has("nobody looked"));
  loop->close();
}

BOOST_AUTO_TEST_CASE(an_unretrieved_task_exception_is_reported_when_the_task_goes) {
  handler_log log;
  auto loop = make_loop();
  log.install(*loop);
  // Fire and forget: nobody keeps the task's future.
  loop->create_task(throws_now("task lost it"));
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  // The report names the task (its default name: the loop's first task).
  BOOST_TEST(log.messages[0] == "Task exception was never retrieved (task 'Task-1')");
  BOOST_CHECK_EXCEPTION(std::rethrow_exception(log.exceptions[0]), std::runtime_error,
                        message_has("task lost it"));

  // Kept, then dropped unread.
  {
    pl::Future<int> kept = loop->create_task(throws_now("kept but unread"));
    run_one_iteration(*loop);
    BOOST_TEST(kept.done());
    BOOST_TEST(log.messages.size() == 1u);
  }
  BOOST_TEST_REQUIRE(log.messages.size() == 2u);
  BOOST_TEST(log.messages[1] == "Task exception was never retrieved (task 'Task-2')");
  loop->close();
}

BOOST_AUTO_TEST_CASE(retrieving_the_exception_prevents_the_report) {
  handler_log log;
  auto loop = make_loop();
  log.install(*loop);
  {
    pl::Future<int> by_result = loop->create_future<int>();
    by_result.set_exception(std::runtime_error("seen by result"));
    BOOST_CHECK_THROW(by_result.result(), std::runtime_error);

    pl::Future<int> by_exception = loop->create_future<int>();
    by_exception.set_exception(std::runtime_error("seen by exception"));
    BOOST_TEST(static_cast<bool>(by_exception.exception()));

    pl::Future<int> task_by_exception = loop->create_task(throws_now("task, seen"));
    pl::Future<int> task_by_result = loop->create_task(throws_now("task, seen too"));
    run_one_iteration(*loop);
    BOOST_TEST(static_cast<bool>(task_by_exception.exception()));
    BOOST_CHECK_THROW(task_by_result.result(), std::runtime_error);

    // Retrieved by awaiting it.
    pl::Future<int> awaited = loop->create_future<int>();
    awaited.set_exception(std::runtime_error("seen by a task"));
    BOOST_CHECK_THROW(loop->run_until_complete(awaits(awaited)), std::runtime_error);
  }
  BOOST_TEST(log.messages.empty(), "unexpected report: "
                                       << (log.messages.empty() ? "" : log.messages[0]));
  loop->close();
}

BOOST_AUTO_TEST_CASE(a_cancelled_or_successful_future_is_never_reported) {
  handler_log log;
  auto loop = make_loop();
  log.install(*loop);
  {
    pl::Future<int> a = loop->create_future<int>();
    a.cancel();
    pl::Future<int> b = loop->create_future<int>();
    b.set_result(1);
    pl::Future<int> c = loop->create_future<int>();  // pending forever
  }
  BOOST_TEST(log.messages.empty());
  loop->close();
}

// --- Ownership of results ---------------------------------------------------------

namespace {
pl::Task<counted> make_counted(int v) {
  co_await pl::sleep(0ms);
  co_return counted(v);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(a_future_result_is_destroyed_with_the_last_reference, loop_fixture) {
  counted::reset();
  {
    pl::Future<counted> f = loop->create_future<counted>();
    f.set_result(counted(5));
    BOOST_TEST(counted::alive == 1);
    {
      pl::Future<counted> g = f;
      BOOST_TEST(g.result().value == 5);
    }
    BOOST_TEST(counted::alive == 1);
  }
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(counted::copies == 0);
}

BOOST_FIXTURE_TEST_CASE(a_task_result_is_destroyed_with_the_last_reference, loop_fixture) {
  counted::reset();
  {
    pl::Future<counted> task = loop->create_task(make_counted(6));
    loop->run_until_complete(task);
    BOOST_TEST(task.result().value == 6);
    BOOST_TEST(counted::alive == 1);
  }
  BOOST_TEST(counted::alive == 0);

  // A task nobody holds: its result goes when its coroutine ends.
  loop->create_task(make_counted(7));
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST(counted::alive == 0);
}

BOOST_FIXTURE_TEST_CASE(run_until_complete_of_a_task_moves_the_result_out, loop_fixture) {
  counted::reset();
  {
    counted c = loop->run_until_complete(make_counted(8));
    BOOST_TEST(c.value == 8);
    BOOST_TEST(counted::copies == 0);
    BOOST_TEST(counted::alive == 1);
  }
  BOOST_TEST(counted::alive == 0);
}

BOOST_AUTO_TEST_CASE(a_pending_future_result_slot_leaks_nothing_when_the_loop_closes) {
  counted::reset();
  handler_log log;
  {
    auto loop = make_loop();
    log.install(*loop);
    pl::Future<counted> never = loop->create_future<counted>();
    pl::Future<counted> stuck = loop->create_task([](pl::Future<counted> f) -> pl::Task<counted> {
      co_return co_await f;
    }(never));
    run_one_iteration(*loop);
    loop->close();
  }
  BOOST_TEST(counted::alive == 0);
}

namespace {
pl::Task<std::unique_ptr<int>> make_unique_int(int v) {
  co_await pl::sleep(0ms);
  co_return std::make_unique<int>(v);
}

pl::Task<std::unique_ptr<int>> passes_unique_int_on(pl::Future<std::unique_ptr<int>> f) {
  std::unique_ptr<int> inner = co_await make_unique_int(1);  // inline child task
  std::unique_ptr<int>& from_future = co_await f;
  co_return std::make_unique<int>(*inner + *from_future);
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(move_only_results_pass_through_tasks_and_futures, loop_fixture) {
  std::unique_ptr<int> p = loop->run_until_complete(make_unique_int(9));
  BOOST_TEST_REQUIRE(p != nullptr);
  BOOST_TEST(*p == 9);

  pl::Future<std::unique_ptr<int>> f = loop->create_future<std::unique_ptr<int>>();
  f.set_result(std::make_unique<int>(10));
  std::unique_ptr<int> sum = loop->run_until_complete(passes_unique_int_on(f));
  BOOST_TEST_REQUIRE(sum != nullptr);
  BOOST_TEST(*sum == 11);

  // A future's value can be moved out of result().
  std::unique_ptr<int> taken = std::move(f.result());
  BOOST_TEST_REQUIRE(taken != nullptr);
  BOOST_TEST(*taken == 10);
}
