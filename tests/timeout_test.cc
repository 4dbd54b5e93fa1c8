// timeout() / timeout_at() and wait_for with asyncio's semantics,
// translated from CPython's Lib/test/test_asyncio/test_timeouts.py (each
// case names the test it translates). Times run on a VirtualClock, so the
// deadlines are exact; "busy" time is clock.advance().
#include "core/combinators/timeout.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE timeout
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;

namespace {

// Runs `t` to completion on `v`; true if it ended with TimeoutError.
bool times_out(vloop& v, pl::Task<> t) {
  try {
    v.loop->run_until_complete(std::move(t));
  } catch (const pl::TimeoutError&) {
    return true;
  }
  return false;
}

}  // namespace

// CPython test_timeouts.py: TimeoutTests.test_timeout_basic
BOOST_AUTO_TEST_CASE(a_block_that_outlives_its_deadline_raises_timeout_error) {
  vloop v;
  std::optional<pl::Timeout> cm;
  auto t0 = v.loop->time();
  BOOST_TEST(times_out(v, pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<> {
               cm = t;
               co_await pl::sleep(10s);
             })));
  BOOST_TEST(cm->expired());
  BOOST_TEST(ns(v.loop->time() - t0) == ns(10ms));
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_at_basic
BOOST_AUTO_TEST_CASE(timeout_at_expires_at_the_given_time) {
  vloop v;
  std::optional<pl::Timeout> cm;
  auto deadline = v.loop->time() + 10ms;
  BOOST_TEST(times_out(v, pl::timeout_at(deadline, [&](pl::Timeout t) -> pl::Task<> {
               cm = t;
               co_await pl::sleep(10s);
             })));
  BOOST_TEST(cm->expired());
  BOOST_TEST((cm->when() == deadline));
  BOOST_TEST((v.loop->time() == deadline));
}

// CPython test_timeouts.py: TimeoutTests.test_nested_timeouts
BOOST_AUTO_TEST_CASE(of_nested_timeouts_with_one_deadline_only_the_outer_raises_timeout_error) {
  vloop v;
  bool inner_saw_cancel = false;
  std::optional<pl::Timeout> cm1, cm2;
  auto deadline = v.loop->time() + 10ms;
  BOOST_TEST(times_out(v, pl::timeout_at(deadline, [&](pl::Timeout t1) -> pl::Task<> {
               cm1 = t1;
               try {
                 co_await pl::timeout_at(deadline, [&](pl::Timeout t2) -> pl::Task<> {
                   cm2 = t2;
                   co_await pl::sleep(10s);
                 });
               } catch (const pl::CancelledError&) {
                 inner_saw_cancel = true;
                 throw;
               }
             })));
  BOOST_TEST(inner_saw_cancel);
  BOOST_TEST(cm1->expired());
  BOOST_TEST(cm2->expired());
}

// CPython test_timeouts.py: TimeoutTests.test_waiter_cancelled
BOOST_AUTO_TEST_CASE(the_block_sees_cancelled_error_and_the_scope_turns_it_into_timeout_error) {
  vloop v;
  bool cancelled = false;
  BOOST_TEST(times_out(v, pl::timeout(10ms, [&]() -> pl::Task<> {
               try {
                 co_await pl::sleep(10s);
               } catch (const pl::CancelledError&) {
                 cancelled = true;
                 throw;
               }
             })));
  BOOST_TEST(cancelled);
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_not_called
BOOST_AUTO_TEST_CASE(a_block_done_in_time_is_not_touched) {
  vloop v;
  std::optional<pl::Timeout> cm;
  int got = v.loop->run_until_complete(pl::timeout(10s, [&](pl::Timeout t) -> pl::Task<int> {
    cm = t;
    co_await pl::sleep(10ms);
    co_return 7;
  }));
  BOOST_TEST(got == 7);
  BOOST_TEST(!cm->expired());
  BOOST_TEST((*cm->when() > v.loop->time()));
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_disabled
BOOST_AUTO_TEST_CASE(timeout_of_nullopt_has_no_deadline) {
  vloop v;
  std::optional<pl::Timeout> cm;
  v.loop->run_until_complete(pl::timeout(std::nullopt, [&](pl::Timeout t) -> pl::Task<> {
    cm = t;
    co_await pl::sleep(10ms);
  }));
  BOOST_TEST(!cm->expired());
  BOOST_TEST(!cm->when().has_value());
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_at_disabled
BOOST_AUTO_TEST_CASE(timeout_at_nullopt_has_no_deadline) {
  vloop v;
  std::optional<pl::Timeout> cm;
  v.loop->run_until_complete(pl::timeout_at(std::nullopt, [&](pl::Timeout t) -> pl::Task<> {
    cm = t;
    co_await pl::sleep(10ms);
  }));
  BOOST_TEST(!cm->expired());
  BOOST_TEST(!cm->when().has_value());
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_zero
BOOST_AUTO_TEST_CASE(a_zero_timeout_expires_at_the_first_suspension) {
  vloop v;
  std::optional<pl::Timeout> cm;
  auto t0 = v.loop->time();
  BOOST_TEST(times_out(v, pl::timeout(0ms, [&](pl::Timeout t) -> pl::Task<> {
               cm = t;
               co_await pl::sleep(10s);
             })));
  BOOST_TEST(cm->expired());
  BOOST_TEST((*cm->when() == t0));
  BOOST_TEST(ns(v.loop->time() - t0) == 0);
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_zero_sleep_zero
BOOST_AUTO_TEST_CASE(a_zero_timeout_expires_even_around_sleep_zero) {
  vloop v;
  std::optional<pl::Timeout> cm;
  BOOST_TEST(times_out(v, pl::timeout(0ms, [&](pl::Timeout t) -> pl::Task<> {
               cm = t;
               co_await pl::sleep(0ms);
             })));
  BOOST_TEST(cm->expired());
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_in_the_past_sleep_zero
BOOST_AUTO_TEST_CASE(a_deadline_in_the_past_expires_at_the_first_suspension) {
  vloop v;
  std::optional<pl::Timeout> cm;
  auto t0 = v.loop->time();
  BOOST_TEST(times_out(v, pl::timeout(-11s, [&](pl::Timeout t) -> pl::Task<> {
               cm = t;
               co_await pl::sleep(0ms);
             })));
  BOOST_TEST(cm->expired());
  BOOST_TEST((*cm->when() < t0));
}

// CPython test_timeouts.py: TimeoutTests.test_foreign_exception_passed
BOOST_AUTO_TEST_CASE(an_exception_of_the_block_passes_through) {
  vloop v;
  std::optional<pl::Timeout> cm;
  BOOST_CHECK_THROW(v.loop->run_until_complete(pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<> {
                      cm = t;
                      throw my_error("key error");
                      co_return;
                    })),
                    my_error);
  BOOST_TEST(!cm->expired());
}

// CPython test_timeouts.py: TimeoutTests.test_foreign_exception_on_timeout
BOOST_AUTO_TEST_CASE(an_exception_thrown_while_cancelled_for_the_deadline_wins) {
  vloop v;
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete(pl::timeout(10ms, []() -> pl::Task<> {
                          try {
                            co_await pl::sleep(1s);
                          } catch (...) {
                          }
                          throw my_error("division by zero");
                        })),
                        my_error, message_has("division by zero"));
}

// CPython test_timeouts.py: TimeoutTests.test_foreign_cancel_doesnt_timeout_if_not_expired
BOOST_AUTO_TEST_CASE(a_cancel_from_elsewhere_stays_cancelled_error) {
  vloop v;
  std::optional<pl::Timeout> cm;
  BOOST_CHECK_THROW(v.loop->run_until_complete(pl::timeout(10s, [&](pl::Timeout t) -> pl::Task<> {
                      cm = t;
                      (co_await pl::current_task()).cancel();
                      co_await pl::sleep(10s);
                    })),
                    pl::CancelledError);
  BOOST_TEST(!cm->expired());
}

// CPython test_timeouts.py: TimeoutTests.test_outer_task_is_not_cancelled
BOOST_AUTO_TEST_CASE(a_task_that_catches_the_timeout_error_ends_normally) {
  vloop v;
  auto task = v.loop->create_task([]() -> pl::Task<> {
    BOOST_CHECK_THROW(co_await pl::timeout(1ms, pl::sleep(10s)), pl::TimeoutError);
  }());
  v.loop->run_until_complete(task);
  BOOST_TEST(!task.cancelled());
  BOOST_TEST(task.done());
  BOOST_TEST(pl::TaskRef(task).cancelling() == 0u);
}

// CPython test_timeouts.py: TimeoutTests.test_nested_timeouts_concurrent:
// the outer timeout fires first; the inner block sees CancelledError (not
// TimeoutError: not its deadline), the outer scope raises TimeoutError.
BOOST_AUTO_TEST_CASE(nested_timeouts_where_the_outer_fires_first) {
  vloop v;
  bool inner_timed_out = false, inner_cancelled = false;
  std::optional<pl::Timeout> inner;
  BOOST_TEST(times_out(v, pl::timeout(2ms, [&]() -> pl::Task<> {
               try {
                 co_await pl::timeout(100ms, [&](pl::Timeout t) -> pl::Task<> {
                   inner = t;
                   v.clock.advance(10ms);  // "crunch some numbers": past the outer deadline
                   co_await pl::sleep(1s);
                 });
               } catch (const pl::TimeoutError&) {
                 inner_timed_out = true;
               } catch (const pl::CancelledError&) {
                 inner_cancelled = true;
                 throw;
               }
             })));
  BOOST_TEST(inner_cancelled);
  BOOST_TEST(!inner_timed_out);
  BOOST_TEST(!inner->expired());
}

// CPython test_timeouts.py: TimeoutTests.test_nested_timeouts_loop_busy:
// both deadlines pass while the loop is busy; both fire in one iteration,
// and only the outer scope raises TimeoutError.
BOOST_AUTO_TEST_CASE(nested_timeouts_both_past_after_a_busy_loop_raise_once_from_the_outer) {
  vloop v;
  auto t0 = v.loop->time();
  bool after_inner = false;
  std::optional<pl::Timeout> inner;
  BOOST_TEST(times_out(v, pl::timeout(100ms, [&]() -> pl::Task<> {
               try {
                 co_await pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<> {
                   inner = t;
                   v.clock.advance(100ms);  // the loop is busy for a while
                   co_await pl::sleep(1s);
                 });
               } catch (const pl::TimeoutError&) {
                 after_inner = true;
               }
               if (after_inner) co_await pl::sleep(10s);
             })));
  BOOST_TEST(!after_inner);
  BOOST_TEST(inner->expired());
  BOOST_TEST(ns(v.loop->time() - t0) < ns(1s));
}

// CPython test_timeouts.py: TimeoutTests.test_reschedule
BOOST_AUTO_TEST_CASE(another_task_can_move_the_deadline_or_remove_it) {
  vloop v;
  auto deadline1 = v.loop->time() + 10s;
  auto deadline2 = deadline1 + 20s;
  auto cm_fut = v.loop->create_future<pl::Timeout>();
  auto task = v.loop->create_task(pl::timeout_at(deadline1, [&](pl::Timeout t) -> pl::Task<> {
    cm_fut.set_result(t);
    co_await pl::sleep(50s);
  }));
  pl::Timeout cm = v.loop->run_until_complete(cm_fut);
  BOOST_TEST((cm.when() == deadline1));
  cm.reschedule(deadline2);
  BOOST_TEST((cm.when() == deadline2));
  cm.reschedule(std::nullopt);
  BOOST_TEST(!cm.when().has_value());
  task.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(task), pl::CancelledError);
  BOOST_TEST(!cm.expired());
}

// CPython test_timeouts.py: TimeoutTests.test_reschedule (a later deadline
// is the one that counts)
BOOST_AUTO_TEST_CASE(a_rescheduled_deadline_is_the_one_that_fires) {
  vloop v;
  auto t0 = v.loop->time();
  BOOST_TEST(times_out(v, pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<> {
               t.reschedule(*t.when() + 15ms);
               co_await pl::sleep(1s);
             })));
  BOOST_TEST(ns(v.loop->time() - t0) == ns(25ms));
}

// CPython test_timeouts.py: TimeoutTests.test_nested_timeout_in_finally
BOOST_AUTO_TEST_CASE(a_timeout_inside_the_cleanup_of_a_timed_out_block_works) {
  vloop v;
  bool inner_timed_out = false;
  BOOST_TEST(times_out(v, pl::timeout(10ms, [&]() -> pl::Task<> {
               std::exception_ptr failed;
               try {
                 co_await pl::sleep(1s);
               } catch (...) {
                 failed = std::current_exception();
               }
               try {
                 co_await pl::timeout(10ms, pl::sleep(10s));
               } catch (const pl::TimeoutError&) {
                 inner_timed_out = true;
               }
               if (failed) std::rethrow_exception(failed);
             })));
  BOOST_TEST(inner_timed_out);
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_after_cancellation
BOOST_AUTO_TEST_CASE(a_timeout_in_cleanup_after_a_caught_cancel_still_times_out) {
  vloop v;
  bool timed_out = false;
  v.loop->run_until_complete([&]() -> pl::Task<> {
    try {
      (co_await pl::current_task()).cancel();
      co_await pl::sleep(1s);
    } catch (const pl::CancelledError&) {
    }
    try {
      co_await pl::timeout(0ms, pl::sleep(1s));
    } catch (const pl::TimeoutError&) {
      timed_out = true;
    }
  }());
  BOOST_TEST(timed_out);
}

// CPython test_timeouts.py: TimeoutTests.test_cancel_in_timeout_after_cancellation
BOOST_AUTO_TEST_CASE(a_new_cancel_inside_a_timeout_after_a_caught_cancel_stays_cancelled_error) {
  vloop v;
  bool cancelled = false;
  v.loop->run_until_complete([&]() -> pl::Task<> {
    try {
      (co_await pl::current_task()).cancel();
      co_await pl::sleep(1s);
    } catch (const pl::CancelledError&) {
    }
    try {
      co_await pl::timeout(1s, []() -> pl::Task<> {
        (co_await pl::current_task()).cancel();
        co_await pl::sleep(2s);
      });
    } catch (const pl::CancelledError&) {
      cancelled = true;
    }
  }());
  BOOST_TEST(cancelled);
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_exception_cause
BOOST_AUTO_TEST_CASE(the_timeout_error_carries_the_cancelled_error_nested) {
  vloop v;
  bool nested_cancel = false;
  try {
    v.loop->run_until_complete(pl::timeout(0ms, pl::sleep(1s)));
  } catch (const pl::TimeoutError& e) {
    try {
      std::rethrow_if_nested(e);
    } catch (const pl::CancelledError&) {
      nested_cancel = true;
    }
  }
  BOOST_TEST(nested_cancel);
}

// CPython test_timeouts.py: TimeoutTests.test_timeout_finished
BOOST_AUTO_TEST_CASE(reschedule_after_the_block_ended_is_a_clear_error) {
  vloop v;
  std::optional<pl::Timeout> cm;
  v.loop->run_until_complete(pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<> {
    cm = t;
    co_return;
  }));
  BOOST_CHECK_EXCEPTION(cm->reschedule(v.loop->time() + 20ms), pl::InvalidStateError,
                        message_has("finished"));
}

// The deadline and the end of the block in one iteration, the block first:
// the block's timer was set before the deadline's (moved there later by
// another callback), so the block resumes, ends and cancels the timeout's
// timer before it runs: the block's result, not TimeoutError.
BOOST_AUTO_TEST_CASE(a_block_ending_in_the_iteration_of_its_deadline_but_first_returns_its_result) {
  vloop v;
  std::optional<pl::Timeout> cm;
  auto t0 = v.loop->time();
  auto task = v.loop->create_task(pl::timeout(std::nullopt, [&](pl::Timeout t) -> pl::Task<int> {
    cm = t;
    co_await pl::sleep(10ms);
    co_return 1;
  }));
  v.loop->call_later(5ms, [&] { cm->reschedule(t0 + 10ms); });
  BOOST_TEST(v.loop->run_until_complete(task) == 1);
  BOOST_TEST(!cm->expired());
  BOOST_TEST(ns(v.loop->time() - t0) == ns(10ms));
  BOOST_TEST(pl::TaskRef(task).cancelling() == 0u);
}

// The deadline and the end of the block in one iteration, the deadline
// first: the block is cancelled before it could end, TimeoutError.
BOOST_AUTO_TEST_CASE(a_deadline_firing_in_the_iteration_the_block_would_end_wins_when_first) {
  vloop v;
  std::optional<pl::Timeout> cm;
  BOOST_TEST(times_out(v, pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<> {
               cm = t;
               co_await pl::sleep(10ms);  // due with the deadline, scheduled after it
             })));
  BOOST_TEST(cm->expired());
}

// asyncio (timeouts.py __aexit__): a deadline that passed while the block
// was already on its way out (it caught the CancelledError and returned) is
// no error: the block's result, expired() true, no cancel left pending.
BOOST_AUTO_TEST_CASE(a_block_that_swallows_the_deadline_cancel_returns_its_result) {
  vloop v;
  std::optional<pl::Timeout> cm;
  std::uint32_t cancelling = 99;
  int got = v.loop->run_until_complete([&]() -> pl::Task<int> {
    int r = co_await pl::timeout(10ms, [&](pl::Timeout t) -> pl::Task<int> {
      cm = t;
      try {
        co_await pl::sleep(1s);
      } catch (const pl::CancelledError&) {
      }
      co_return 3;
    });
    cancelling = (co_await pl::current_task()).cancelling();
    co_await pl::sleep(1ms);  // no cancel left to deliver
    co_return r;
  }());
  BOOST_TEST(got == 3);
  BOOST_TEST(cm->expired());
  BOOST_TEST(cancelling == 0u);
}

// --- wait_for ----------------------------------------------------------------

// CPython test_waitfor.py: test_wait_for_timeout_less_then_0_or_0_coroutine_do_not_started
BOOST_AUTO_TEST_CASE(wait_for_with_a_zero_timeout_never_starts_a_task) {
  vloop v;
  bool started = false;
  auto body = [](bool* s) -> pl::Task<int> {
    *s = true;
    co_return 1;
  };
  BOOST_CHECK_THROW(v.loop->run_until_complete(pl::wait_for(body(&started), 0ms)), pl::TimeoutError);
  BOOST_TEST(!started);
}

// CPython test_waitfor.py: test_wait_for_timeout_less_then_0_or_0_future_done
BOOST_AUTO_TEST_CASE(wait_for_with_a_zero_timeout_gives_a_done_futures_result) {
  vloop v;
  auto f = v.loop->create_future<int>();
  f.set_result(5);
  BOOST_TEST(v.loop->run_until_complete(pl::wait_for(f, 0ms)) == 5);
}

// The case: a read with a deadline, no wrapper task.
BOOST_AUTO_TEST_CASE(wait_for_takes_an_io_operation_and_times_it_out) {
  auto loop = make_loop();
  int p[2];
  BOOST_TEST_REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  char buf[8];
  auto t0 = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(pl::async_read(p[0], buf, sizeof buf), 20ms)),
                    pl::TimeoutError);
  BOOST_TEST(ms(std::chrono::steady_clock::now() - t0) >= 20.0);
  // Data that is there is read within the deadline.
  BOOST_TEST_REQUIRE(::write(p[1], "hi", 2) == 2);
  std::int64_t n = loop->run_until_complete(pl::wait_for(pl::async_read(p[0], buf, sizeof buf), 5s));
  BOOST_TEST(n == 2);
  BOOST_TEST(std::string(buf, 2) == "hi");
  loop->close();
  ::close(p[0]);
  ::close(p[1]);
}

// CPython test_waitfor.py: test_wait_for_cancellation_race_condition
// (wait_for on a task that ignores the cancel returns its result)
BOOST_AUTO_TEST_CASE(wait_for_gives_the_result_of_work_that_declines_the_timeout_cancel) {
  vloop v;
  int got = v.loop->run_until_complete(pl::wait_for([]() -> pl::Task<int> {
    try {
      co_await pl::sleep(1s);
    } catch (const pl::CancelledError&) {
    }
    co_return 9;
  }(), 10ms));
  BOOST_TEST(got == 9);
}
