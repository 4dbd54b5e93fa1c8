// Lock, Event, Condition, Semaphore, BoundedSemaphore and Barrier: asyncio's
// semantics as CPython's Lib/test/test_asyncio/test_locks.py pins them, plus
// the loop binding (one loop, one thread).
#include "core/sync/lock.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE locks
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;

namespace {

// A loop, and the two ways the CPython tests drive it: run a task to its end
// (run_until_complete) or run one iteration (test_utils.run_briefly, or an
// `await asyncio.sleep(0)` in the test's own task).
struct fx : loop_fixture {
  template <class T>
  T run(pl::Task<T> t) {
    return loop->run_until_complete(std::move(t));
  }
  template <class T>
  T run(pl::Future<T> f) {
    return loop->run_until_complete(std::move(f));
  }
  void briefly(int n = 1) {
    for (int i = 0; i < n; ++i) run_one_iteration(*loop);
  }
  template <class T>
  pl::Future<T> spawn(pl::Task<T> t) {
    return loop->create_task(std::move(t));
  }
};

pl::Task<> acquire(pl::Lock* lock) { co_await lock->acquire(); }
pl::Task<> acquire(pl::Semaphore* sem) { co_await sem->acquire(); }
pl::Task<> wait(pl::Event* ev) { co_await ev->wait(); }
pl::Task<> acquire_cond(pl::Condition* c) { co_await c->acquire(); }

}  // namespace

// ---------------------------------------------------------------- Lock

BOOST_FIXTURE_TEST_SUITE(lock_tests, fx)

// CPython test_locks.py: LockTests.test_lock
BOOST_AUTO_TEST_CASE(acquire_holds_the_lock_and_release_frees_it) {
  pl::Lock lock;
  BOOST_TEST(!lock.locked());
  run(acquire(&lock));
  BOOST_TEST(lock.locked());
  lock.release();
  BOOST_TEST(!lock.locked());
}

// CPython test_locks.py: LockTests.test_acquire
BOOST_AUTO_TEST_CASE(waiters_get_the_lock_in_the_order_they_asked) {
  pl::Lock lock;
  std::vector<int> result;
  run(acquire(&lock));
  auto c = [&](int tag) -> pl::Task<int> {
    co_await lock.acquire();
    result.push_back(tag);
    co_return tag;
  };
  auto t1 = spawn(c(1));
  auto t2 = spawn(c(2));
  briefly();
  BOOST_TEST(result.empty());
  lock.release();
  briefly();
  BOOST_TEST(result == std::vector<int>({1}));
  briefly();
  BOOST_TEST(result == std::vector<int>({1}));
  auto t3 = spawn(c(3));
  lock.release();
  briefly();
  BOOST_TEST(result == std::vector<int>({1, 2}));
  lock.release();
  briefly();
  BOOST_TEST(result == std::vector<int>({1, 2, 3}));
  BOOST_TEST((t1.done() && t2.done() && t3.done()));
  BOOST_TEST(t3.result() == 3);
}

// CPython test_locks.py: LockTests.test_acquire_cancel
BOOST_AUTO_TEST_CASE(a_cancelled_acquire_leaves_nothing_held) {
  pl::Lock lock;
  run(acquire(&lock));
  auto t = spawn(acquire(&lock));
  loop->call_soon([&] { t.cancel(); });
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  BOOST_TEST(lock.locked());  // still the first holder's
  lock.release();
  BOOST_TEST(!lock.locked());
  run(acquire(&lock));  // free for the next one, at once
  BOOST_TEST(lock.locked());
}

// CPython test_locks.py: LockTests.test_cancel_race
BOOST_AUTO_TEST_CASE(a_waiter_cancelled_as_the_lock_is_released_is_skipped) {
  pl::Lock lock;
  auto fa = loop->create_future<void>();
  auto lockit = [&](pl::Future<void>* blocker) -> pl::Task<> {
    auto held = co_await lock.scoped();
    if (blocker != nullptr) co_await *blocker;
  };
  auto ta = spawn(lockit(&fa));
  briefly();
  BOOST_TEST(lock.locked());
  auto tb = spawn(lockit(nullptr));
  briefly();
  auto tc = spawn(lockit(nullptr));
  briefly();
  fa.set_result();
  tb.cancel();
  briefly();
  BOOST_TEST(!lock.locked());  // released by A, C woken but not yet run
  BOOST_TEST(ta.done());
  BOOST_TEST(tb.cancelled());
  run(tc);
  BOOST_TEST(!lock.locked());
}

// CPython test_locks.py: LockTests.test_cancel_release_race
BOOST_AUTO_TEST_CASE(cancel_then_release_hands_the_lock_to_one_task_only) {
  pl::Lock lock;
  int lock_count = 0;
  int call_count = 0;
  auto lockit = [&]() -> pl::Task<> {
    ++call_count;
    co_await lock.acquire();
    ++lock_count;
  };
  run(acquire(&lock));
  auto t1 = spawn(lockit());
  auto t2 = spawn(lockit());
  auto t3 = spawn(lockit());
  briefly();
  loop->call_soon([&] {
    t1.cancel();
    lock.release();
  });
  BOOST_CHECK_THROW(run(t1), pl::CancelledError);
  briefly();
  BOOST_TEST(lock_count == 1);
  BOOST_TEST(call_count == 3);
  BOOST_TEST((t1.cancelled() && t2.done()));
  BOOST_TEST(!t3.done());
  t3.cancel();
  briefly();
  BOOST_TEST(t3.cancelled());
}

// CPython test_locks.py: LockTests.test_finished_waiter_cancelled
BOOST_AUTO_TEST_CASE(a_waiter_cancelled_before_release_does_not_block_the_next) {
  pl::Lock lock;
  run(acquire(&lock));
  auto tb = spawn(acquire(&lock));
  briefly();
  auto tc = spawn(acquire(&lock));
  tb.cancel();
  lock.release();
  briefly();
  BOOST_TEST(lock.locked());
  BOOST_TEST(tb.cancelled());
  run(tc);
  BOOST_TEST(lock.locked());
}

// The hard case: a waiter cancelled exactly when it is handed the
// lock (release() woke it, the cancel comes before it runs). CPython
// test_locks.py: LockTests.test_finished_waiter_cancelled, the order swapped.
BOOST_AUTO_TEST_CASE(a_waiter_cancelled_after_release_woke_it_passes_the_lock_on) {
  pl::Lock lock;
  run(acquire(&lock));
  auto tb = spawn(acquire(&lock));
  auto tc = spawn(acquire(&lock));
  briefly();
  lock.release();  // wakes tb
  tb.cancel();     // before tb runs
  briefly();
  BOOST_TEST(tb.cancelled());
  run(tc);  // tc got the lock tb never took
  BOOST_TEST(lock.locked());
  lock.release();
  BOOST_TEST(!lock.locked());
}

// Same, with nobody behind: the lock ends free, not held by a dead waiter.
BOOST_AUTO_TEST_CASE(a_lone_waiter_cancelled_after_release_leaves_the_lock_free) {
  pl::Lock lock;
  run(acquire(&lock));
  auto tb = spawn(acquire(&lock));
  briefly();
  lock.release();
  tb.cancel();
  briefly();
  BOOST_TEST(tb.cancelled());
  BOOST_TEST(!lock.locked());
  run(acquire(&lock));
  BOOST_TEST(lock.locked());
}

// CPython test_locks.py: LockTests.test_release_not_acquired
BOOST_AUTO_TEST_CASE(release_of_a_free_lock_throws_a_clear_error) {
  pl::Lock lock;
  BOOST_CHECK_EXCEPTION(lock.release(), pl::InvalidStateError, message_has("not acquired"));
}

// CPython test_locks.py: LockTests.test_release_no_waiters
BOOST_AUTO_TEST_CASE(release_with_no_waiters_frees_the_lock) {
  pl::Lock lock;
  run(acquire(&lock));
  lock.release();
  BOOST_TEST(!lock.locked());
}

// CPython test_locks.py: LockTests.test_context_manager
BOOST_AUTO_TEST_CASE(a_scoped_guard_releases_at_the_end_of_its_scope) {
  pl::Lock lock;
  bool held_inside = false;
  auto body = [&]() -> pl::Task<> {
    auto guard = co_await lock.scoped();
    held_inside = lock.locked() && guard.owns();
  };
  run(body());
  BOOST_TEST(held_inside);
  BOOST_TEST(!lock.locked());
}

// CPython test_locks.py: LockTests.test_context_manager (the exception path of `async with`)
BOOST_AUTO_TEST_CASE(a_scoped_guard_releases_when_an_exception_leaves_the_scope) {
  pl::Lock lock;
  auto body = [&]() -> pl::Task<> {
    auto guard = co_await lock.scoped();
    co_await pl::sleep(0ms);
    throw my_error("inside the lock");
  };
  BOOST_CHECK_EXCEPTION(run(body()), my_error, message_has("inside the lock"));
  BOOST_TEST(!lock.locked());
}

// A guard cancelled while holding the lock releases it too.
BOOST_AUTO_TEST_CASE(a_scoped_guard_releases_when_the_task_is_cancelled_holding_it) {
  pl::Lock lock;
  auto body = [&]() -> pl::Task<> {
    auto guard = co_await lock.scoped();
    co_await pl::sleep(1h);
  };
  auto t = spawn(body());
  briefly();
  BOOST_TEST(lock.locked());
  t.cancel();
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  BOOST_TEST(!lock.locked());
}

BOOST_AUTO_TEST_CASE(a_guard_released_early_or_moved_releases_once) {
  pl::Lock lock;
  auto body = [&]() -> pl::Task<int> {
    auto guard = co_await lock.scoped();
    pl::Guard<pl::Lock> moved = std::move(guard);
    int owners = int(guard.owns()) + int(moved.owns());
    moved.release();
    co_return owners * 10 + int(lock.locked());
  };
  BOOST_TEST(run(body()) == 10);  // one owner; free after release()
  BOOST_TEST(!lock.locked());     // and the destructors released nothing more
}

// FIFO fairness: a task asking while a woken waiter has not run yet queues
// behind it, even though the lock is free at that moment (asyncio's
// Lock.acquire checks for waiters first).
BOOST_AUTO_TEST_CASE(a_new_acquire_does_not_overtake_a_woken_waiter) {
  pl::Lock lock;
  std::vector<int> order;
  auto c = [&](int tag) -> pl::Task<> {
    co_await lock.acquire();
    order.push_back(tag);
    lock.release();
  };
  run(acquire(&lock));
  auto t1 = spawn(c(1));
  briefly();
  lock.release();  // t1 woken, not run
  BOOST_TEST(!lock.locked());
  auto t2 = spawn(c(2));
  run(t2);
  BOOST_TEST(order == std::vector<int>({1, 2}));
  BOOST_TEST(t1.done());
}

// A task destroyed while waiting (its loop closed) leaves the lock usable:
// its frame goes at close(), and the waiter with it (ASan checks the unlink).
BOOST_AUTO_TEST_CASE(closing_the_loop_under_a_waiter_unlinks_it) {
  handler_log log;
  log.install(*loop);
  pl::Lock lock;
  run(acquire(&lock));
  spawn(acquire(&lock));  // nobody keeps its Future: the frame goes with close()
  briefly();
  loop->close();
  BOOST_TEST(log.messages.size() == 1u);  // "Task was destroyed but it is pending!"
  lock.release();                         // no waiter left to wake
  BOOST_TEST(!lock.locked());
}

// A waiter whose frame outlives close() (a Future still refers to it) is
// never scheduled on the closed loop: release() does not throw.
BOOST_AUTO_TEST_CASE(release_after_close_does_not_wake_a_dead_waiter) {
  handler_log log;
  log.install(*loop);
  pl::Lock lock;
  run(acquire(&lock));
  auto t = spawn(acquire(&lock));
  briefly();
  loop->close();
  BOOST_TEST(t.cancelled());
  BOOST_CHECK_NO_THROW(lock.release());
  BOOST_TEST(!lock.locked());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- Event

BOOST_FIXTURE_TEST_SUITE(event_tests, fx)

// CPython test_locks.py: EventTests.test_wait
BOOST_AUTO_TEST_CASE(set_wakes_every_waiter) {
  pl::Event ev;
  std::vector<int> result;
  auto c = [&](int tag) -> pl::Task<> {
    co_await ev.wait();
    result.push_back(tag);
  };
  auto t1 = spawn(c(1));
  auto t2 = spawn(c(2));
  briefly();
  BOOST_TEST(result.empty());
  auto t3 = spawn(c(3));
  ev.set();
  briefly();
  BOOST_TEST(result == std::vector<int>({3, 1, 2}));
  BOOST_TEST((t1.done() && t2.done() && t3.done()));
}

// CPython test_locks.py: EventTests.test_wait_on_set
BOOST_AUTO_TEST_CASE(wait_on_a_set_event_returns_at_once) {
  pl::Event ev;
  ev.set();
  run(wait(&ev));
  BOOST_TEST(ev.is_set());
}

// CPython test_locks.py: EventTests.test_wait_cancel
BOOST_AUTO_TEST_CASE(a_cancelled_wait_throws_and_leaves_no_waiter) {
  pl::Event ev;
  auto t = spawn(wait(&ev));
  loop->call_soon([&] { t.cancel(); });
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  ev.set();  // wakes nobody: the cancelled waiter is gone
  auto t2 = spawn(wait(&ev));
  run(t2);
}

// CPython test_locks.py: EventTests.test_clear
BOOST_AUTO_TEST_CASE(clear_resets_the_flag) {
  pl::Event ev;
  BOOST_TEST(!ev.is_set());
  ev.set();
  BOOST_TEST(ev.is_set());
  ev.clear();
  BOOST_TEST(!ev.is_set());
}

// CPython test_locks.py: EventTests.test_clear_with_waiters
BOOST_AUTO_TEST_CASE(a_waiter_woken_by_set_returns_even_if_cleared_before_it_runs) {
  pl::Event ev;
  int woken = 0;
  auto c = [&]() -> pl::Task<> {
    co_await ev.wait();
    ++woken;
  };
  auto t = spawn(c());
  briefly();
  ev.set();
  ev.clear();
  BOOST_TEST(!ev.is_set());
  ev.set();
  ev.set();
  briefly();
  BOOST_TEST(woken == 1);
  BOOST_TEST(t.done());
}

// A waiter cancelled after set() woke it: asyncio's Task.cancel() on a task
// whose future is done still delivers CancelledError.
BOOST_AUTO_TEST_CASE(a_waiter_cancelled_after_set_woke_it_sees_the_cancel) {
  pl::Event ev;
  auto t = spawn(wait(&ev));
  briefly();
  ev.set();
  t.cancel();
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  BOOST_TEST(ev.is_set());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- Condition

BOOST_FIXTURE_TEST_SUITE(condition_tests, fx)

// CPython test_locks.py: ConditionTests.test_wait
BOOST_AUTO_TEST_CASE(wait_releases_the_lock_and_takes_it_back_when_notified) {
  pl::Condition cond;
  std::vector<int> result;
  auto c = [&](int tag) -> pl::Task<> {
    co_await cond.acquire();
    co_await cond.wait();
    result.push_back(tag);
  };
  auto t1 = spawn(c(1));
  auto t2 = spawn(c(2));
  auto t3 = spawn(c(3));
  briefly();
  BOOST_TEST(result.empty());
  BOOST_TEST(!cond.locked());
  run(acquire_cond(&cond));
  cond.notify();
  briefly();
  BOOST_TEST(result.empty());
  BOOST_TEST(cond.locked());
  cond.release();
  briefly();
  BOOST_TEST(result == std::vector<int>({1}));
  BOOST_TEST(cond.locked());
  cond.notify(2);
  briefly();
  BOOST_TEST(result == std::vector<int>({1}));
  cond.release();
  briefly();
  BOOST_TEST(result == std::vector<int>({1, 2}));
  cond.release();
  briefly();
  BOOST_TEST(result == std::vector<int>({1, 2, 3}));
  BOOST_TEST(cond.locked());
  BOOST_TEST((t1.done() && t2.done() && t3.done()));
}

// CPython test_locks.py: ConditionTests.test_wait_cancel
BOOST_AUTO_TEST_CASE(a_cancelled_wait_takes_the_lock_back_before_throwing) {
  pl::Condition cond;
  run(acquire_cond(&cond));
  auto t = spawn(cond.wait());
  loop->call_soon([&] { t.cancel(); });
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  BOOST_TEST(cond.locked());
}

// CPython test_locks.py: ConditionTests.test_wait_cancel_contested
BOOST_AUTO_TEST_CASE(a_wait_cancelled_while_the_lock_is_contested_ends_holding_it) {
  pl::Condition cond;
  run(acquire_cond(&cond));
  auto t = spawn(cond.wait());
  briefly();
  BOOST_TEST(!cond.locked());
  run(acquire_cond(&cond));
  cond.notify();
  loop->call_soon([&] { t.cancel(); });
  loop->call_soon([&] { cond.release(); });
  try {
    run(t);
  } catch (const pl::CancelledError&) {
  }
  BOOST_TEST(cond.locked());  // t holds it, cancelled or not
}

// CPython test_locks.py: ConditionTests.test_wait_cancel_after_notify
BOOST_AUTO_TEST_CASE(a_wait_cancelled_after_notify_ends_cancelled) {
  pl::Condition cond;
  bool waited = false;
  auto waiter = [&]() -> pl::Task<> {
    auto held = co_await cond.scoped();
    waited = true;
    co_await cond.wait();
  };
  auto t = spawn(waiter());
  briefly();
  run(acquire_cond(&cond));
  cond.notify();
  briefly();  // t wakes and waits for the lock
  t.cancel();
  briefly();
  cond.release();
  briefly(2);
  BOOST_TEST(t.cancelled());
  BOOST_TEST(waited);
  BOOST_TEST(!cond.locked());  // t's guard released what it took back
}

// CPython test_locks.py: ConditionTests.test_wait_unacquired
BOOST_AUTO_TEST_CASE(wait_without_the_lock_throws_a_clear_error) {
  pl::Condition cond;
  BOOST_CHECK_EXCEPTION(run(cond.wait()), pl::InvalidStateError, message_has("not acquired"));
}

// CPython test_locks.py: ConditionTests.test_wait_for
BOOST_AUTO_TEST_CASE(wait_for_returns_only_once_the_predicate_holds) {
  pl::Condition cond;
  bool presult = false;
  std::vector<int> result;
  auto c = [&]() -> pl::Task<> {
    co_await cond.acquire();
    co_await cond.wait_for([&] { return presult; });
    result.push_back(1);
    cond.release();
  };
  auto t = spawn(c());
  briefly();
  run(acquire_cond(&cond));
  cond.notify();
  cond.release();
  briefly(2);
  BOOST_TEST(result.empty());
  presult = true;
  run(acquire_cond(&cond));
  cond.notify();
  cond.release();
  briefly(2);
  BOOST_TEST(result == std::vector<int>({1}));
  BOOST_TEST(t.done());
}

// CPython test_locks.py: ConditionTests.test_wait_for_unacquired
BOOST_AUTO_TEST_CASE(wait_for_a_true_predicate_needs_no_lock_but_waiting_does) {
  pl::Condition cond;
  run(cond.wait_for([] { return true; }));
  BOOST_CHECK_THROW(run(cond.wait_for([] { return false; })), pl::InvalidStateError);
}

// CPython test_locks.py: ConditionTests.test_notify
BOOST_AUTO_TEST_CASE(notify_n_wakes_n_waiters_in_order) {
  pl::Condition cond;
  std::vector<int> result;
  auto c = [&](int tag) -> pl::Task<> {
    co_await cond.acquire();
    co_await cond.wait();
    result.push_back(tag);
    cond.release();
  };
  auto t1 = spawn(c(1));
  auto t2 = spawn(c(2));
  auto t3 = spawn(c(3));
  briefly();
  run(acquire_cond(&cond));
  cond.notify(1);
  cond.release();
  briefly(2);
  BOOST_TEST(result == std::vector<int>({1}));
  run(acquire_cond(&cond));
  cond.notify(1);
  cond.notify(2048);
  cond.release();
  briefly(3);
  BOOST_TEST(result == std::vector<int>({1, 2, 3}));
  BOOST_TEST((t1.done() && t2.done() && t3.done()));
}

// CPython test_locks.py: ConditionTests.test_notify_all
BOOST_AUTO_TEST_CASE(notify_all_wakes_every_waiter) {
  pl::Condition cond;
  std::vector<int> result;
  auto c = [&](int tag) -> pl::Task<> {
    co_await cond.acquire();
    co_await cond.wait();
    result.push_back(tag);
    cond.release();
  };
  auto t1 = spawn(c(1));
  auto t2 = spawn(c(2));
  briefly();
  run(acquire_cond(&cond));
  cond.notify_all();
  cond.release();
  briefly(3);
  BOOST_TEST(result == std::vector<int>({1, 2}));
  BOOST_TEST((t1.done() && t2.done()));
}

// CPython test_locks.py: ConditionTests.test_notify_unacquired
BOOST_AUTO_TEST_CASE(notify_without_the_lock_throws_a_clear_error) {
  pl::Condition cond;
  BOOST_CHECK_EXCEPTION(cond.notify(), pl::InvalidStateError, message_has("not acquired"));
}

// CPython test_locks.py: ConditionTests.test_notify_all_unacquired
BOOST_AUTO_TEST_CASE(notify_all_without_the_lock_throws_a_clear_error) {
  pl::Condition cond;
  BOOST_CHECK_EXCEPTION(cond.notify_all(), pl::InvalidStateError, message_has("not acquired"));
}

// CPython test_locks.py: ConditionTests.test_explicit_lock
BOOST_AUTO_TEST_CASE(a_condition_over_a_given_lock_shares_it) {
  pl::Lock lock;
  pl::Condition cond(lock);
  run(acquire(&lock));
  BOOST_TEST(cond.locked());
  cond.release();
  BOOST_TEST(!lock.locked());
  run(acquire_cond(&cond));
  BOOST_TEST(lock.locked());
}

// CPython test_locks.py: ConditionTests.test_context_manager
BOOST_AUTO_TEST_CASE(a_scoped_condition_guard_holds_its_lock) {
  pl::Condition cond;
  bool inside = false;
  auto body = [&]() -> pl::Task<> {
    auto held = co_await cond.scoped();
    inside = cond.locked();
  };
  run(body());
  BOOST_TEST(inside);
  BOOST_TEST(!cond.locked());
}

// CPython test_locks.py: ConditionTests.test_cancelled_wakeup (Python 3.13:
// a task cancelled as notify() wakes it passes the notification on).
BOOST_AUTO_TEST_CASE(a_notify_is_not_lost_when_its_waiter_is_cancelled) {
  pl::Condition cond;
  int state = 0;
  auto consumer = [&]() -> pl::Task<> {
    auto held = co_await cond.scoped();
    for (;;) {
      co_await cond.wait_for([&] { return state != 0; });
      if (state < 0) co_return;
      --state;
    }
  };
  auto c0 = spawn(consumer());
  auto c1 = spawn(consumer());
  briefly();
  run(acquire_cond(&cond));
  state += 1;
  cond.notify(1);  // wakes c0
  c0.cancel();     // before it runs
  cond.release();
  briefly(4);
  BOOST_TEST(c0.cancelled());
  BOOST_TEST(state == 0);  // c1 consumed the item: the notification reached it
  run(acquire_cond(&cond));
  state = -1;
  cond.notify_all();
  cond.release();
  run(c1);
}

// CPython test_locks.py: ConditionTests.test_cancelled_error_re_aquire
BOOST_AUTO_TEST_CASE(a_cancel_while_taking_the_lock_back_is_delivered_once_it_is_held) {
  pl::Condition cond;
  bool held_when_cancelled = false;
  auto waiter = [&]() -> pl::Task<> {
    auto held = co_await cond.scoped();
    try {
      co_await cond.wait();
    } catch (const pl::CancelledError&) {
      held_when_cancelled = cond.locked();
      throw;
    }
  };
  auto t = spawn(waiter());
  briefly();
  run(acquire_cond(&cond));
  cond.notify();
  briefly();  // t is woken and waits for the lock
  t.cancel();
  briefly();
  BOOST_TEST(!t.done());  // it must take the lock back first
  cond.release();
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  BOOST_TEST(held_when_cancelled);
  BOOST_TEST(!cond.locked());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- Semaphore

BOOST_FIXTURE_TEST_SUITE(semaphore_tests, fx)

// CPython test_locks.py: SemaphoreTests.test_initial_value_zero
BOOST_AUTO_TEST_CASE(a_semaphore_of_zero_is_locked) {
  pl::Semaphore sem(0);
  BOOST_TEST(sem.locked());
}

// CPython test_locks.py: SemaphoreTests.test_semaphore_value
BOOST_AUTO_TEST_CASE(a_negative_initial_value_is_rejected) {
  BOOST_CHECK_EXCEPTION(pl::Semaphore(-1), std::invalid_argument, message_has(">= 0"));
}

// CPython test_locks.py: SemaphoreTests.test_semaphore
BOOST_AUTO_TEST_CASE(acquire_takes_a_permit_and_release_returns_it) {
  pl::Semaphore sem;
  BOOST_TEST(sem.value() == 1);
  run(acquire(&sem));
  BOOST_TEST(sem.locked());
  BOOST_TEST(sem.value() == 0);
  sem.release();
  BOOST_TEST(!sem.locked());
  BOOST_TEST(sem.value() == 1);
}

// CPython test_locks.py: SemaphoreTests.test_acquire
BOOST_AUTO_TEST_CASE(waiters_get_permits_first_come_first_served) {
  pl::Semaphore sem(3);
  std::vector<int> result;
  run(acquire(&sem));
  run(acquire(&sem));
  BOOST_TEST(!sem.locked());
  auto c = [&](int tag) -> pl::Task<> {
    co_await sem.acquire();
    result.push_back(tag);
  };
  auto t1 = spawn(c(1));
  auto t2 = spawn(c(2));
  auto t3 = spawn(c(3));
  briefly();
  BOOST_TEST(result == std::vector<int>({1}));
  BOOST_TEST(sem.locked());
  auto t4 = spawn(c(4));
  sem.release();
  sem.release();
  briefly(2);
  BOOST_TEST(result == std::vector<int>({1, 2, 3}));
  BOOST_TEST(!t4.done());
  sem.release();
  run(t4);
  BOOST_TEST(result == std::vector<int>({1, 2, 3, 4}));
}

// CPython test_locks.py: SemaphoreTests.test_acquire_cancel
BOOST_AUTO_TEST_CASE(a_cancelled_acquire_takes_no_permit) {
  pl::Semaphore sem;
  run(acquire(&sem));
  auto t = spawn(acquire(&sem));
  loop->call_soon([&] { t.cancel(); });
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
  sem.release();
  BOOST_TEST(sem.value() == 1);
  BOOST_TEST(!sem.locked());
}

// CPython test_locks.py: SemaphoreTests.test_acquire_cancel_before_awoken
BOOST_AUTO_TEST_CASE(waiters_cancelled_before_a_release_are_skipped) {
  pl::Semaphore sem(0);
  auto t1 = spawn(acquire(&sem));
  auto t2 = spawn(acquire(&sem));
  auto t3 = spawn(acquire(&sem));
  auto t4 = spawn(acquire(&sem));
  briefly();
  t1.cancel();
  t2.cancel();
  sem.release();
  briefly(2);
  BOOST_TEST(t3.done());
  BOOST_TEST(!t4.done());
  t4.cancel();
  briefly();
  BOOST_TEST(t4.cancelled());
}

// CPython test_locks.py: SemaphoreTests.test_acquire_hang
BOOST_AUTO_TEST_CASE(a_release_after_a_cancel_reaches_the_next_waiter) {
  pl::Semaphore sem(0);
  auto t1 = spawn(acquire(&sem));
  auto t2 = spawn(acquire(&sem));
  briefly();
  t1.cancel();
  sem.release();
  briefly(2);
  BOOST_TEST(sem.locked());
  BOOST_TEST(t2.done());
}

// CPython test_locks.py: SemaphoreTests.test_acquire_no_hang
BOOST_AUTO_TEST_CASE(a_waiter_cancelled_after_it_was_given_a_permit_returns_it) {
  pl::Semaphore sem(1);
  pl::Future<void> t2;
  auto c1 = [&]() -> pl::Task<> {
    {
      auto permit = co_await sem.scoped();
      co_await pl::sleep(0ms);
    }  // the release wakes c2, reserving the permit for it
    t2.cancel();
  };
  auto c2 = [&]() -> pl::Task<> {
    auto permit = co_await sem.scoped();
    BOOST_FAIL("c2 must not get the permit");
  };
  auto t1 = spawn(c1());
  t2 = spawn(c2());
  run(t1);
  BOOST_CHECK_THROW(run(t2), pl::CancelledError);
  BOOST_TEST(sem.value() == 1);  // the reserved permit came back
  run(acquire(&sem));            // and can be taken
}

// CPython test_locks.py: SemaphoreTests.test_release_not_acquired
BOOST_AUTO_TEST_CASE(a_bounded_semaphore_rejects_an_over_release) {
  pl::BoundedSemaphore sem(1);
  BOOST_CHECK_EXCEPTION(sem.release(), pl::OverReleaseError, message_has("too many times"));
  run(acquire(&sem));
  sem.release();
  BOOST_CHECK_THROW(sem.release(), pl::OverReleaseError);
  BOOST_TEST(sem.value() == 1);
}

// CPython test_locks.py: SemaphoreTests.test_release_no_waiters
BOOST_AUTO_TEST_CASE(release_with_no_waiters_adds_a_permit) {
  pl::Semaphore sem;
  run(acquire(&sem));
  BOOST_TEST(sem.locked());
  sem.release();
  BOOST_TEST(!sem.locked());
}

// CPython test_locks.py: SemaphoreTests.test_context_manager
BOOST_AUTO_TEST_CASE(a_scoped_permit_is_returned_at_the_end_of_its_scope) {
  pl::Semaphore sem(2);
  auto body = [&]() -> pl::Task<long> {
    auto a = co_await sem.scoped();
    auto b = co_await sem.scoped();
    co_return sem.value();
  };
  BOOST_TEST(run(body()) == 0);
  BOOST_TEST(sem.value() == 2);
}

// CPython test_locks.py: SemaphoreTests.test_acquire_fifo_order
BOOST_AUTO_TEST_CASE(tasks_that_acquire_twice_take_turns_in_fifo_order) {
  pl::Semaphore sem(1);
  std::vector<std::string> result;
  auto coro = [&](std::string tag) -> pl::Task<> {
    co_await sem.acquire();
    result.push_back(tag + "_1");
    co_await pl::sleep(0ms);
    sem.release();
    co_await sem.acquire();
    result.push_back(tag + "_2");
    co_await pl::sleep(0ms);
    sem.release();
  };
  auto a = spawn(coro("c1"));
  auto b = spawn(coro("c2"));
  auto c = spawn(coro("c3"));
  run(c);
  run(a);
  run(b);
  BOOST_TEST(result == std::vector<std::string>({"c1_1", "c2_1", "c3_1", "c1_2", "c2_2", "c3_2"}));
}

// CPython test_locks.py: SemaphoreTests.test_acquire_fifo_order_2
BOOST_AUTO_TEST_CASE(a_release_serves_the_oldest_waiter_before_a_new_acquire) {
  pl::Semaphore sem(1);
  std::vector<int> result;
  auto c1 = [&]() -> pl::Task<> {
    co_await sem.acquire();
    result.push_back(1);
    co_await pl::sleep(0ms);
    sem.release();
  };
  auto c2 = [&]() -> pl::Task<> {
    co_await sem.acquire();
    result.push_back(2);
    sem.release();
  };
  auto c3 = [&]() -> pl::Task<> {
    co_await pl::sleep(0ms);
    co_await sem.acquire();
    result.push_back(3);
    sem.release();
  };
  auto a = spawn(c1());
  auto b = spawn(c2());
  auto c = spawn(c3());
  run(c);
  run(a);
  run(b);
  BOOST_TEST(result == std::vector<int>({1, 2, 3}));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- Barrier

BOOST_FIXTURE_TEST_SUITE(barrier_tests, fx)

// CPython test_locks.py: BarrierTests.test_barrier_parties
BOOST_AUTO_TEST_CASE(a_barrier_needs_at_least_one_party) {
  BOOST_CHECK_EXCEPTION(pl::Barrier(0), std::invalid_argument, message_has("at least 1"));
  pl::Barrier b(3);
  BOOST_TEST(b.parties() == 3u);
  BOOST_TEST(b.n_waiting() == 0u);
  BOOST_TEST(!b.broken());
}

// CPython test_locks.py: BarrierTests.test_filling_one_task
BOOST_AUTO_TEST_CASE(a_barrier_of_one_lets_its_task_through) {
  pl::Barrier b(1);
  BOOST_TEST(run(b.wait()) == 0u);
  BOOST_TEST(run(b.wait()) == 0u);  // test_filling_one_task_twice
  BOOST_TEST(b.n_waiting() == 0u);
}

// CPython test_locks.py: BarrierTests.test_filling_task_by_task
BOOST_AUTO_TEST_CASE(tasks_wait_until_the_barrier_is_full) {
  pl::Barrier b(3);
  auto t1 = spawn(b.wait());
  briefly();
  BOOST_TEST(b.n_waiting() == 1u);
  auto t2 = spawn(b.wait());
  briefly();
  BOOST_TEST(b.n_waiting() == 2u);
  BOOST_TEST(!t1.done());
  auto t3 = spawn(b.wait());
  run(t3);
  run(t1);
  run(t2);
  // CPython test_locks.py: BarrierTests.test_filling_tasks_check_return_value
  std::vector<std::size_t> idx{t1.result(), t2.result(), t3.result()};
  BOOST_TEST(idx == std::vector<std::size_t>({0, 1, 2}));
  BOOST_TEST(b.n_waiting() == 0u);
  BOOST_TEST(!b.broken());
}

// CPython test_locks.py: BarrierTests.test_filling_tasks_wait_twice
BOOST_AUTO_TEST_CASE(a_barrier_can_be_passed_round_after_round) {
  pl::Barrier b(3);
  int passed = 0;
  auto twice = [&]() -> pl::Task<> {
    co_await b.wait();
    ++passed;
    co_await b.wait();
    ++passed;
  };
  auto a = spawn(twice());
  auto c = spawn(twice());
  auto d = spawn(twice());
  run(a);
  run(c);
  run(d);
  BOOST_TEST(passed == 6);
  BOOST_TEST(b.n_waiting() == 0u);
}

// CPython test_locks.py: BarrierTests.test_blocking_tasks_while_draining
BOOST_AUTO_TEST_CASE(a_task_arriving_while_a_round_drains_waits_for_the_next) {
  pl::Barrier b(2);
  auto t1 = spawn(b.wait());
  auto t2 = spawn(b.wait());
  briefly();  // t2 fills the round: draining
  auto t3 = spawn(b.wait());
  run(t1);
  run(t2);
  BOOST_TEST(!t3.done());  // in the next round, alone
  briefly(3);
  BOOST_TEST(b.n_waiting() == 1u);
  auto t4 = spawn(b.wait());
  run(t4);
  run(t3);
  BOOST_TEST(t3.result() + t4.result() == 1u);
}

// CPython test_locks.py: BarrierTests.test_filling_tasks_cancel_one
BOOST_AUTO_TEST_CASE(a_cancelled_waiter_leaves_the_round) {
  pl::Barrier b(3);
  auto t1 = spawn(b.wait());
  auto t2 = spawn(b.wait());
  briefly();
  BOOST_TEST(b.n_waiting() == 2u);
  t1.cancel();
  BOOST_CHECK_THROW(run(t1), pl::CancelledError);
  briefly();
  BOOST_TEST(b.n_waiting() == 1u);
  auto t3 = spawn(b.wait());
  briefly();
  BOOST_TEST(!t2.done());
  auto t4 = spawn(b.wait());
  run(t4);
  run(t2);
  run(t3);
  BOOST_TEST(!b.broken());
}

// CPython test_locks.py: BarrierTests.test_abort_barrier
BOOST_AUTO_TEST_CASE(abort_breaks_the_barrier_for_waiters_and_later_tasks) {
  pl::Barrier b(3);
  auto t1 = spawn(b.wait());
  briefly();
  run(b.abort());
  BOOST_TEST(b.broken());
  BOOST_CHECK_EXCEPTION(run(t1), pl::BrokenBarrierError, message_has("abort"));
  BOOST_CHECK_THROW(run(b.wait()), pl::BrokenBarrierError);
  BOOST_TEST(b.n_waiting() == 0u);
}

// CPython test_locks.py: BarrierTests.test_reset_barrier
BOOST_AUTO_TEST_CASE(reset_of_an_empty_barrier_changes_nothing) {
  pl::Barrier b(1);
  run(b.reset());
  BOOST_TEST(b.n_waiting() == 0u);
  BOOST_TEST(!b.broken());
  BOOST_TEST(run(b.wait()) == 0u);
}

// CPython test_locks.py: BarrierTests.test_reset_barrier_while_tasks_waiting
BOOST_AUTO_TEST_CASE(reset_breaks_the_current_round_and_opens_a_new_one) {
  pl::Barrier b(3);
  auto t1 = spawn(b.wait());
  auto t2 = spawn(b.wait());
  briefly();
  run(b.reset());
  BOOST_CHECK_THROW(run(t1), pl::BrokenBarrierError);
  BOOST_CHECK_THROW(run(t2), pl::BrokenBarrierError);
  BOOST_TEST(!b.broken());
  BOOST_TEST(b.n_waiting() == 0u);
  auto a = spawn(b.wait());
  auto c = spawn(b.wait());
  auto d = spawn(b.wait());
  run(a);
  run(c);
  run(d);
}

// CPython test_locks.py: BarrierTests.test_abort_and_reset_barrier
BOOST_AUTO_TEST_CASE(reset_repairs_an_aborted_barrier) {
  pl::Barrier b(2);
  run(b.abort());
  BOOST_TEST(b.broken());
  run(b.reset());
  BOOST_TEST(!b.broken());
  auto t1 = spawn(b.wait());
  auto t2 = spawn(b.wait());
  run(t1);
  run(t2);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- loop binding

BOOST_FIXTURE_TEST_SUITE(loop_binding, fx)

// CPython test_locks.py: LockTests.test_lock_by_with_statement's sibling in
// test_mixins / ConditionTests.test_ambiguous_loops: a primitive used on a
// second loop raises RuntimeError("... is bound to a different event loop").
BOOST_AUTO_TEST_CASE(a_lock_used_from_a_second_loop_throws_a_clear_error) {
  pl::Lock lock;
  run(acquire(&lock));
  lock.release();
  auto other = make_loop();
  BOOST_CHECK_EXCEPTION(other->run_until_complete(acquire(&lock)), pl::EventLoopError,
                        message_has("different event loop"));
  other->close();
}

BOOST_AUTO_TEST_CASE(an_event_waited_on_from_a_second_loop_throws_a_clear_error) {
  pl::Event ev;
  auto t = spawn(wait(&ev));
  briefly();
  auto other = make_loop();
  BOOST_CHECK_EXCEPTION(other->run_until_complete(wait(&ev)), pl::EventLoopError,
                        message_has("different event loop"));
  other->close();
  ev.set();
  run(t);
}

BOOST_AUTO_TEST_CASE(a_semaphore_released_from_another_thread_throws_a_clear_error) {
  pl::Semaphore sem(1);
  run(acquire(&sem));
  std::string error;
  std::thread other([&] {
    try {
      sem.release();
    } catch (const pl::EventLoopError& e) {
      error = e.what();
    }
  });
  other.join();
  BOOST_TEST(error.find("another thread") != std::string::npos);
  BOOST_TEST(sem.value() == 0);  // nothing changed
}

BOOST_AUTO_TEST_CASE(a_condition_waited_on_from_a_second_loop_throws_a_clear_error) {
  pl::Condition cond;
  run(cond.wait_for([] { return true; }));  // binds nothing: it did not wait
  run(acquire_cond(&cond));
  auto t = spawn(cond.wait());
  briefly();
  auto other = make_loop();
  auto from_other = [&]() -> pl::Task<> { co_await cond.wait(); };
  BOOST_CHECK_EXCEPTION(other->run_until_complete(from_other()), pl::EventLoopError,
                        message_has("different event loop"));
  other->close();
  t.cancel();
  BOOST_CHECK_THROW(run(t), pl::CancelledError);
}

BOOST_AUTO_TEST_SUITE_END()
