// The task toolkit beside TaskGroup and timeout: shield, as_completed,
// current_task, all_tasks, task names, cancel(message), cancelling() and
// uncancel(), with asyncio's semantics, translated from CPython's
// Lib/test/test_asyncio/test_tasks.py (each case names the test it
// translates). Times run on a VirtualClock.
#include "core/combinators/shield.h"  // first: the headers under test compile on their own
#include "core/task/introspection.h"

#define BOOST_TEST_MODULE toolkit
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;

namespace {

pl::Task<int> after(pl::Clock::duration d, int v) {
  co_await pl::sleep(d);
  co_return v;
}

auto is_message(std::string m) {
  return [m](const pl::CancelledError& e) { return std::string(e.what()) == m; };
}

}  // namespace

// --- shield ------------------------------------------------------------------

// CPython test_tasks.py: test_shield_result
BOOST_AUTO_TEST_CASE(shield_passes_the_result_on) {
  vloop v;
  auto inner = v.loop->create_future<int>();
  auto task = v.loop->create_task([](pl::Future<int> in) -> pl::Task<int> {
    co_return co_await pl::shield(in);
  }(inner));
  run_one_iteration(*v.loop);
  inner.set_result(42);
  BOOST_TEST(v.loop->run_until_complete(task) == 42);
}

// CPython test_tasks.py: test_shield_exception
BOOST_AUTO_TEST_CASE(shield_passes_the_exception_on) {
  vloop v;
  auto inner = v.loop->create_future<int>();
  auto task = v.loop->create_task([](pl::Future<int> in) -> pl::Task<int> {
    co_return co_await pl::shield(in);
  }(inner));
  run_one_iteration(*v.loop);
  inner.set_exception(my_error("boom"));
  BOOST_CHECK_THROW(v.loop->run_until_complete(task), my_error);
}

// CPython test_tasks.py: test_shield_cancel_inner
BOOST_AUTO_TEST_CASE(cancelling_the_shielded_work_itself_cancels_the_awaiter) {
  vloop v;
  auto inner = v.loop->create_future<int>();
  auto task = v.loop->create_task([](pl::Future<int> in) -> pl::Task<int> {
    co_return co_await pl::shield(in);
  }(inner));
  run_one_iteration(*v.loop);
  inner.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(task), pl::CancelledError);
  BOOST_TEST(task.cancelled());
}

// CPython test_tasks.py: test_shield_cancel_outer
BOOST_AUTO_TEST_CASE(cancelling_the_awaiter_leaves_the_shielded_work_running) {
  vloop v;
  auto inner = v.loop->create_future<int>();
  auto task = v.loop->create_task([](pl::Future<int> in) -> pl::Task<int> {
    co_return co_await pl::shield(in);
  }(inner));
  run_one_iteration(*v.loop);
  task.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(task), pl::CancelledError);
  BOOST_TEST(!inner.done());
  inner.set_result(1);  // still settable: nobody cancelled it
  BOOST_TEST(inner.result() == 1);
}

// CPython test_tasks.py: test_shield_shortcut
BOOST_AUTO_TEST_CASE(shield_of_a_done_future_is_that_future) {
  vloop v;
  auto f = v.loop->create_future<int>();
  f.set_result(42);
  int got = v.loop->run_until_complete([](pl::Future<int> f) -> pl::Task<int> {
    pl::Future<int> s = pl::shield(f);
    BOOST_TEST(pl::TaskRef(co_await pl::current_task()).valid());
    co_return s.result();
  }(f));
  BOOST_TEST(got == 42);
}

// CPython test_tasks.py: test_shield_effect
BOOST_AUTO_TEST_CASE(a_shielded_task_finishes_its_work_after_the_awaiter_was_cancelled) {
  vloop v;
  std::vector<std::string> log;
  auto inner = [](std::vector<std::string>* log) -> pl::Task<> {
    co_await pl::sleep(10ms);
    log->push_back("inner done");
  };
  auto outer = v.loop->create_task([](pl::Task<> work, std::vector<std::string>* log) -> pl::Task<> {
    co_await pl::shield(std::move(work));
    log->push_back("outer done");
  }(inner(&log), &log));
  run_one_iteration(*v.loop);
  outer.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(outer), pl::CancelledError);
  BOOST_TEST(log.empty());
  v.loop->run_until_complete(pause(20ms));
  BOOST_TEST(log == std::vector<std::string>{"inner done"});
}

// CPython test_tasks.py: test_shield_gather
BOOST_AUTO_TEST_CASE(a_shielded_gather_keeps_running_when_its_awaiter_is_cancelled) {
  vloop v;
  auto a = v.loop->create_future<int>();
  auto b = v.loop->create_future<int>();
  auto shielded = v.loop->create_future<std::tuple<int, int>>();
  auto outer = v.loop->create_task([](pl::Future<int> a, pl::Future<int> b,
                                      pl::Future<std::tuple<int, int>>* out) -> pl::Task<> {
    pl::Future<std::tuple<int, int>> s = pl::shield(pl::gather(a, b));
    *out = s;
    co_await s;
  }(a, b, &shielded));
  run_one_iteration(*v.loop);
  outer.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(outer), pl::CancelledError);
  BOOST_TEST(!a.cancelled());
  BOOST_TEST(!b.cancelled());
  BOOST_TEST(shielded.cancelled());  // the outer future; the gather runs on
  a.set_result(1);
  b.set_result(2);
  v.loop->run_until_complete(pause(1ms));
}

// --- as_completed ------------------------------------------------------------

// CPython test_tasks.py: test_as_completed
BOOST_AUTO_TEST_CASE(as_completed_gives_results_in_completion_order) {
  vloop v;
  auto t0 = v.loop->time();
  std::vector<int> got = v.loop->run_until_complete([]() -> pl::Task<std::vector<int>> {
    std::vector<pl::Task<int>> list;
    list.push_back(after(100ms, 1));
    list.push_back(after(50ms, 2));
    list.push_back(after(150ms, 3));
    auto ac = pl::as_completed(std::move(list));
    std::vector<int> out;
    while (ac.size() != 0) out.push_back(co_await ac.next());
    co_return out;
  }());
  BOOST_TEST(got == (std::vector<int>{2, 1, 3}));
  BOOST_TEST(ns(v.loop->time() - t0) == ns(150ms));
}

// CPython test_tasks.py: test_as_completed_with_timeout
BOOST_AUTO_TEST_CASE(as_completed_turns_what_is_late_into_timeout_error) {
  vloop v;
  std::vector<std::string> got = v.loop->run_until_complete([]() -> pl::Task<std::vector<std::string>> {
    std::vector<pl::Task<int>> list;
    list.push_back(after(10s, 1));
    list.push_back(after(10ms, 2));
    auto ac = pl::as_completed(std::move(list), 100ms);
    std::vector<std::string> out;
    while (ac.size() != 0) {
      try {
        out.push_back(std::to_string(co_await ac.next()));
      } catch (const pl::TimeoutError&) {
        out.push_back("timeout");
      }
    }
    co_return out;
  }());
  BOOST_TEST(got == (std::vector<std::string>{"2", "timeout"}));
}

// CPython test_tasks.py: test_as_completed_with_unused_timeout
BOOST_AUTO_TEST_CASE(as_completed_with_a_timeout_not_reached_gives_every_result) {
  vloop v;
  int got = v.loop->run_until_complete([]() -> pl::Task<int> {
    std::vector<pl::Task<int>> list;
    list.push_back(after(10ms, 5));
    auto ac = pl::as_completed(std::move(list), 10s);
    co_return co_await ac.next();
  }());
  BOOST_TEST(got == 5);
}

// CPython test_tasks.py: test_as_completed_reverse_wait
BOOST_AUTO_TEST_CASE(as_completed_gives_results_already_done_before_waiting) {
  vloop v;
  auto a = v.loop->create_future<int>();
  auto b = v.loop->create_future<int>();
  std::vector<int> got = v.loop->run_until_complete([](pl::Future<int> a, pl::Future<int> b)
                                                        -> pl::Task<std::vector<int>> {
    auto ac = pl::as_completed(std::vector<pl::Future<int>>{a, b});
    b.set_result(2);
    a.set_result(1);
    co_await pl::sleep(10ms);  // both done before the first next()
    std::vector<int> out;
    out.push_back(co_await ac.next());
    out.push_back(co_await ac.next());
    co_return out;
  }(a, b));
  BOOST_TEST(got == (std::vector<int>{2, 1}));
}

// CPython test_tasks.py: test_as_completed_concurrent (a child's exception
// comes out of next() in its turn)
BOOST_AUTO_TEST_CASE(as_completed_rethrows_a_childs_exception_in_its_turn) {
  vloop v;
  std::vector<std::string> got = v.loop->run_until_complete([]() -> pl::Task<std::vector<std::string>> {
    std::vector<pl::Task<int>> list;
    list.push_back(after(20ms, 1));
    list.push_back([]() -> pl::Task<int> {
      co_await pl::sleep(10ms);
      throw my_error("second");
    }());
    auto ac = pl::as_completed(std::move(list));
    std::vector<std::string> out;
    while (ac.size() != 0) {
      try {
        out.push_back(std::to_string(co_await ac.next()));
      } catch (const my_error& e) {
        out.push_back(e.what());
      }
    }
    co_return out;
  }());
  BOOST_TEST(got == (std::vector<std::string>{"second", "1"}));
}

// as_completed's iterator is exhausted after the last result (asyncio:
// StopIteration): next() then is a clear error.
BOOST_AUTO_TEST_CASE(as_completed_next_past_the_end_is_a_clear_error) {
  vloop v;
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete([]() -> pl::Task<int> {
                          auto ac = pl::as_completed(std::vector<pl::Task<int>>{});
                          co_return co_await ac.next();
                        }()),
                        pl::InvalidStateError, message_has("every result has been taken"));
}

// --- current_task / all_tasks -------------------------------------------------

// CPython test_tasks.py: test_current_task
BOOST_AUTO_TEST_CASE(current_task_is_the_task_that_awaits_it) {
  vloop v;
  pl::TaskRef seen;
  auto task = v.loop->create_task([](pl::TaskRef* seen) -> pl::Task<> {
    *seen = co_await pl::current_task();
  }(&seen));
  v.loop->run_until_complete(task);
  BOOST_TEST((seen == pl::TaskRef(task)));
}

// CPython test_tasks.py: test_current_task_with_interleaving_tasks
BOOST_AUTO_TEST_CASE(current_task_follows_interleaving_tasks_and_inline_awaits) {
  vloop v;
  pl::TaskRef seen_a1, seen_a2, seen_b, seen_inline;
  auto fut1 = v.loop->create_future<>();
  auto fut2 = v.loop->create_future<>();
  auto inline_child = [](pl::TaskRef* seen) -> pl::Task<> { *seen = co_await pl::current_task(); };
  // Captureless coroutines: a capturing lambda would be gone before the
  // tasks run.
  auto a = v.loop->create_task([](pl::TaskRef* a1, pl::TaskRef* a2, pl::TaskRef* in, pl::Future<> f1,
                                  pl::Future<> f2, auto child) -> pl::Task<> {
    *a1 = co_await pl::current_task();
    co_await f1;
    *a2 = co_await pl::current_task();
    co_await child(in);
    f2.set_result();
  }(&seen_a1, &seen_a2, &seen_inline, fut1, fut2, inline_child));
  auto b = v.loop->create_task([](pl::TaskRef* sb, pl::Future<> f1, pl::Future<> f2) -> pl::Task<> {
    *sb = co_await pl::current_task();
    f1.set_result();
    co_await f2;
  }(&seen_b, fut1, fut2));
  v.loop->run_until_complete(pl::gather(a, b));
  BOOST_TEST((seen_a1 == pl::TaskRef(a)));
  BOOST_TEST((seen_a2 == pl::TaskRef(a)));
  BOOST_TEST((seen_inline == pl::TaskRef(a)));
  BOOST_TEST((seen_b == pl::TaskRef(b)));
}

// CPython test_tasks.py: BaseTaskIntrospectionTests.test__register_task_3
// and test__unregister_task (all_tasks lists the pending tasks only)
BOOST_AUTO_TEST_CASE(all_tasks_lists_the_pending_tasks_of_the_loop) {
  vloop v;
  auto quick = v.loop->create_task(after(1ms, 1));
  auto slow = v.loop->create_task(after(1s, 2));
  auto plain = v.loop->create_future<int>();
  auto listed = [&](const pl::Future<int>& f) {
    auto all = pl::all_tasks(*v.loop);
    return std::find(all.begin(), all.end(), pl::TaskRef(f)) != all.end();
  };
  BOOST_TEST(pl::all_tasks(*v.loop).size() == 2u);  // the plain future is no task
  BOOST_TEST(listed(quick));
  v.loop->run_until_complete(quick);
  BOOST_TEST(!listed(quick));
  BOOST_TEST(listed(slow));
  BOOST_TEST(pl::all_tasks(*v.loop).size() == 1u);
  slow.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(slow), pl::CancelledError);
  BOOST_TEST(pl::all_tasks(*v.loop).empty());
  BOOST_CHECK_THROW(pl::TaskRef{plain}, pl::InvalidStateError);
}

// --- names -------------------------------------------------------------------

// CPython test_tasks.py: test_task_repr_autogenerated
BOOST_AUTO_TEST_CASE(tasks_are_named_task_n_in_the_order_they_were_scheduled) {
  vloop v;
  auto t1 = v.loop->create_task(after(1ms, 1));
  auto t2 = v.loop->create_task(after(1ms, 2));
  BOOST_TEST(pl::TaskRef(t1).get_name() == "Task-1");
  BOOST_TEST(pl::TaskRef(t2).get_name() == "Task-2");
  v.loop->run_until_complete(pl::gather(t1, t2));  // the gather is Task-3
  BOOST_TEST(pl::TaskRef(v.loop->create_task(after(1ms, 3))).get_name() == "Task-4");
  v.loop->run_until_complete(pause(2ms));
}

// CPython test_tasks.py: test_task_set_name_pylong (set_name, get_name)
BOOST_AUTO_TEST_CASE(a_task_name_is_set_at_creation_or_later) {
  vloop v;
  auto t = v.loop->create_task(after(1ms, 1), "first");
  pl::TaskRef ref(t);
  BOOST_TEST(ref.get_name() == "first");
  ref.set_name("renamed");
  BOOST_TEST(ref.get_name() == "renamed");
  v.loop->run_until_complete(t);
  BOOST_TEST(ref.get_name() == "renamed");  // kept while the task lives
}

// The name is in every report about the task: never retrieved...
BOOST_AUTO_TEST_CASE(a_never_retrieved_exception_report_names_the_task) {
  vloop v;
  handler_log log;
  log.install(*v.loop);
  v.loop->create_task([]() -> pl::Task<> {
    throw my_error("lost");
    co_return;
  }(), "fetcher");
  v.loop->run_until_complete(pause(1ms));
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(log.messages[0] == "Task exception was never retrieved (task 'fetcher')");
}

// ...and destroyed while pending.
BOOST_AUTO_TEST_CASE(a_destroyed_while_pending_report_names_the_task) {
  vloop v;
  handler_log log;
  log.install(*v.loop);
  auto t = v.loop->create_task(after(1s, 1), "sleeper");
  run_one_iteration(*v.loop);
  v.loop->close();
  BOOST_TEST_REQUIRE(log.messages.size() == 1u);
  BOOST_TEST(log.messages[0].find("Task was destroyed but it is pending! (task 'sleeper';") == 0u);
}

// --- cancel(message) ---------------------------------------------------------

// CPython test_tasks.py: test_cancel_with_message_then_future_result
BOOST_AUTO_TEST_CASE(the_cancel_message_is_in_the_result_of_the_cancelled_task) {
  vloop v;
  auto t = v.loop->create_task(after(1s, 1));
  run_one_iteration(*v.loop);
  t.cancel("my message");
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete(t), pl::CancelledError, is_message("my message"));
  BOOST_CHECK_EXCEPTION(t.result(), pl::CancelledError, is_message("my message"));
}

// CPython test_tasks.py: test_cancel_with_message_then_future_exception
BOOST_AUTO_TEST_CASE(the_cancel_message_is_in_the_exception_call_of_the_cancelled_task) {
  vloop v;
  auto t = v.loop->create_task(after(1s, 1));
  run_one_iteration(*v.loop);
  t.cancel("my message");
  BOOST_CHECK_THROW(v.loop->run_until_complete(t), pl::CancelledError);
  BOOST_CHECK_EXCEPTION(t.exception(), pl::CancelledError, is_message("my message"));
}

// CPython test_tasks.py: test_cancel_with_message_before_starting_task
BOOST_AUTO_TEST_CASE(a_task_cancelled_with_a_message_before_it_started_says_it) {
  vloop v;
  bool ran = false;
  auto t = v.loop->create_task([](bool* ran) -> pl::Task<> {
    *ran = true;
    co_return;
  }(&ran));
  t.cancel("before start");
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete(t), pl::CancelledError, is_message("before start"));
  BOOST_TEST(!ran);
}

// CPython test_tasks.py: test_cancel_with_message_then_future_result, seen
// from inside: the CancelledError the coroutine catches carries the message,
// whether it awaits a timer or a future (which is cancelled with it).
BOOST_AUTO_TEST_CASE(the_task_itself_sees_the_cancel_message_whatever_it_awaits) {
  vloop v;
  std::string at_sleep, at_future;
  auto f = v.loop->create_future<>();
  auto t = v.loop->create_task([](std::string* a, std::string* b, pl::Future<> f) -> pl::Task<> {
    try {
      co_await pl::sleep(1s);
    } catch (const pl::CancelledError& e) {
      *a = e.what();
    }
    try {
      co_await f;
    } catch (const pl::CancelledError& e) {
      *b = e.what();
    }
  }(&at_sleep, &at_future, f));
  run_one_iteration(*v.loop);
  t.cancel("first");
  run_one_iteration(*v.loop);
  run_one_iteration(*v.loop);
  t.cancel("second");
  v.loop->run_until_complete(t);
  BOOST_TEST(at_sleep == "first");
  BOOST_TEST(at_future == "second");
  BOOST_TEST(f.cancelled());  // the cancel went on to the awaited future, message and all
}

namespace {
pl::Task<> record_cancel(std::string* seen) {
  try {
    co_await pl::sleep(10s);
  } catch (const pl::CancelledError& e) {
    *seen = e.what();
    throw;
  }
}
pl::Task<> gather_two(pl::Future<> a, pl::Future<> b) { co_await pl::gather(a, b); }
}  // namespace

// CPython test_tasks.py: test_cancel_gather_2 (the message of a cancel that
// reaches a gather goes on to its children, as _GatheringFuture.cancel(msg)
// passes msg to child.cancel), and the awaiting task sees it too.
BOOST_AUTO_TEST_CASE(cancelling_a_gather_with_a_message_cancels_its_children_with_it) {
  vloop v;
  std::string seen_a, seen_b;
  auto a = v.loop->create_task(record_cancel(&seen_a));
  auto b = v.loop->create_task(record_cancel(&seen_b));
  auto outer = v.loop->create_task(gather_two(a, b));
  run_one_iteration(*v.loop);
  run_one_iteration(*v.loop);
  outer.cancel("shutting down");
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete(outer), pl::CancelledError,
                        is_message("shutting down"));
  BOOST_TEST(a.cancelled());
  BOOST_TEST(b.cancelled());
  BOOST_TEST(seen_a == "shutting down");
  BOOST_TEST(seen_b == "shutting down");
  BOOST_CHECK_EXCEPTION(a.result(), pl::CancelledError, is_message("shutting down"));
}

// --- cancelling() / uncancel() -----------------------------------------------

// CPython test_tasks.py: test_cancelling
BOOST_AUTO_TEST_CASE(cancelling_counts_the_cancel_requests) {
  vloop v;
  auto t = v.loop->create_task(after(1s, 1));
  pl::TaskRef ref(t);
  run_one_iteration(*v.loop);
  BOOST_TEST(ref.cancelling() == 0u);
  t.cancel();
  BOOST_TEST(ref.cancelling() == 1u);
  t.cancel();
  BOOST_TEST(ref.cancelling() == 2u);
  BOOST_CHECK_THROW(v.loop->run_until_complete(t), pl::CancelledError);
  BOOST_TEST(!t.cancel());  // done: no longer counted
  BOOST_TEST(ref.cancelling() == 2u);
}

// CPython test_tasks.py: test_uncancel_basic
BOOST_AUTO_TEST_CASE(uncancel_takes_a_request_back) {
  vloop v;
  auto t = v.loop->create_task([]() -> pl::Task<int> {
    pl::TaskRef me = co_await pl::current_task();
    try {
      co_await pl::sleep(1s);
    } catch (const pl::CancelledError&) {
      BOOST_TEST(me.cancelling() == 1u);
      BOOST_TEST(me.uncancel() == 0u);
    }
    co_await pl::sleep(1ms);  // not cancelled again
    co_return 5;
  }());
  run_one_iteration(*v.loop);
  t.cancel();
  BOOST_TEST(v.loop->run_until_complete(t) == 5);
  BOOST_TEST(pl::TaskRef(t).cancelling() == 0u);
}

// CPython test_tasks.py: test_uncancel_basic (3.13: uncancel to zero drops a
// cancel not yet delivered)
BOOST_AUTO_TEST_CASE(uncancel_to_zero_drops_a_cancel_not_yet_delivered) {
  vloop v;
  bool reached = false;
  v.loop->run_until_complete([](bool* reached) -> pl::Task<> {
    pl::TaskRef me = co_await pl::current_task();
    me.cancel();                       // while running: pending until the next suspension
    BOOST_TEST(me.uncancel() == 0u);   // taken back before it was delivered
    co_await pl::sleep(1ms);
    *reached = true;
  }(&reached));
  BOOST_TEST(reached);
}

// CPython test_tasks.py: test_uncancel_structured_blocks
BOOST_AUTO_TEST_CASE(an_outer_cancel_survives_an_inner_structured_block) {
  vloop v;
  bool inner_timed_out = false;
  std::uint32_t cancelling_in_between = 99;
  auto t = v.loop->create_task([](bool* timed_out, std::uint32_t* in_between) -> pl::Task<> {
    try {
      co_await pl::timeout(10ms, pl::sleep(1s));
    } catch (const pl::TimeoutError&) {
      *timed_out = true;
    }
    *in_between = (co_await pl::current_task()).cancelling();
    co_await pl::sleep(1s);  // the outer cancel below lands here
  }(&inner_timed_out, &cancelling_in_between));
  v.loop->call_later(20ms, [&] { t.cancel(); });
  BOOST_CHECK_THROW(v.loop->run_until_complete(t), pl::CancelledError);
  BOOST_TEST(inner_timed_out);
  BOOST_TEST(cancelling_in_between == 0u);
  BOOST_TEST(pl::TaskRef(t).cancelling() == 1u);
}

// A TaskRef used empty, or made from a plain future, is a clear error.
BOOST_AUTO_TEST_CASE(an_empty_task_ref_is_a_clear_error) {
  pl::TaskRef none;
  BOOST_TEST(!none.valid());
  BOOST_CHECK_EXCEPTION(none.get_name(), pl::InvalidStateError, message_has("empty"));
  vloop v;
  auto f = v.loop->create_future<int>();
  BOOST_CHECK_EXCEPTION(pl::TaskRef{f}, pl::InvalidStateError, message_has("not a task"));
}
