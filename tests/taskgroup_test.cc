// TaskGroup: structured concurrency with asyncio's semantics, translated
// from CPython's Lib/test/test_asyncio/test_taskgroups.py (each case names
// the test it translates). Times run on a VirtualClock: exact and fast.
#include "core/combinators/task_group.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE taskgroup
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "core/sync/event.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;

namespace {

struct zero_division : std::runtime_error {
  zero_division() : std::runtime_error("division by zero") {}
};
struct value_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

pl::Task<int> after(pl::Clock::duration d, int v) {
  co_await pl::sleep(d);
  co_return v;
}
pl::Task<> crash_after(pl::Clock::duration d) {
  co_await pl::sleep(d);
  throw zero_division();
}
// Sleeps `d`; counts a cancel in *cancels (and rethrows it).
pl::Task<> sleeper(pl::Clock::duration d, int* cancels) {
  try {
    co_await pl::sleep(d);
  } catch (const pl::CancelledError&) {
    ++*cancels;
    throw;
  }
}

// The dynamic types of an ExceptionGroup's members, by name.
std::set<std::string> error_types(const pl::ExceptionGroup& eg) {
  std::set<std::string> types;
  for (const auto& e : eg.exceptions()) {
    try {
      std::rethrow_exception(e);
    } catch (const zero_division&) {
      types.insert("zero_division");
    } catch (const value_error&) {
      types.insert("value_error");
    } catch (const my_error&) {
      types.insert("my_error");
    } catch (const pl::ExceptionGroup&) {
      types.insert("ExceptionGroup");
    } catch (...) {
      types.insert("other");
    }
  }
  return types;
}

}  // namespace

// CPython test_taskgroups.py: test_taskgroup_01
BOOST_AUTO_TEST_CASE(the_scope_waits_for_every_child_and_their_results_are_kept) {
  vloop v;
  auto t0 = v.loop->time();
  pl::Future<int> t1, t2;
  v.loop->run_until_complete([&]() -> pl::Task<> {
    co_await pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      t1 = g.create_task(after(100ms, 42));
      t2 = g.create_task(after(200ms, 11));
      co_return;
    });
    BOOST_TEST(t1.done());
    BOOST_TEST(t2.done());
  }());
  BOOST_TEST(t1.result() == 42);
  BOOST_TEST(t2.result() == 11);
  BOOST_TEST(ns(v.elapsed(t0)) == ns(200ms));
}

// CPython test_taskgroups.py: test_taskgroup_02
BOOST_AUTO_TEST_CASE(a_child_can_be_added_after_the_body_awaited) {
  vloop v;
  auto t0 = v.loop->time();
  pl::Future<int> t1, t2;
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    t1 = g.create_task(after(100ms, 42));
    co_await pl::sleep(150ms);
    t2 = g.create_task(after(200ms, 11));
  }));
  BOOST_TEST(t1.result() == 42);
  BOOST_TEST(t2.result() == 11);
  BOOST_TEST(ns(v.elapsed(t0)) == ns(350ms));
}

// CPython test_taskgroups.py: test_taskgroup_03
BOOST_AUTO_TEST_CASE(a_child_cancelled_explicitly_is_not_a_failure) {
  vloop v;
  pl::Future<int> t1, t2;
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    t1 = g.create_task(after(1s, 42));
    co_await pl::sleep(150ms);
    t1.cancel();
    t2 = g.create_task(after(200ms, 11));
  }));
  BOOST_TEST(t1.cancelled());
  BOOST_TEST(t2.result() == 11);
}

// CPython test_taskgroups.py: test_taskgroup_04
BOOST_AUTO_TEST_CASE(a_failing_child_cancels_its_siblings_and_the_scope_throws_an_exception_group) {
  vloop v;
  int num = 0, t2_cancels = 0;
  pl::Future<> t2;
  auto runner = [&]() -> pl::Task<> {
    co_await pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(crash_after(100ms));
      t2 = g.create_task(sleeper(1s, &t2_cancels));
      co_return;
    });
    num += 10;
  };
  try {
    v.loop->run_until_complete(runner());
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
    BOOST_TEST(eg.exceptions().size() == 1u);
  }
  BOOST_TEST(num == 0);
  BOOST_TEST(t2_cancels == 1);
  BOOST_TEST(t2.cancelled());
}

// CPython test_taskgroups.py: test_cancel_children_on_child_error
BOOST_AUTO_TEST_CASE(a_child_failure_cancels_the_body_too) {
  vloop v;
  int t2_cancels = 0;
  bool runner_cancelled = false;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(crash_after(100ms));
      g.create_task(crash_after(100ms));
      g.create_task(crash_after(100ms));
      g.create_task(sleeper(5s, &t2_cancels));
      try {
        co_await pl::sleep(10s);
      } catch (const pl::CancelledError&) {
        runner_cancelled = true;
        throw;
      }
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    // All three crash in the same iteration, before the cancel reaches them.
    BOOST_TEST(eg.exceptions().size() == 3u);
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  BOOST_TEST(t2_cancels == 1);
  BOOST_TEST(runner_cancelled);
}

// CPython test_taskgroups.py: test_cancellation
BOOST_AUTO_TEST_CASE(cancelling_the_enclosing_task_cancels_the_children_and_keeps_the_message) {
  vloop v;
  int cancels = 0;
  auto r = v.loop->create_task(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    for (int i = 0; i < 5; ++i) g.create_task(sleeper(5s, &cancels));
    co_return;
  }));
  v.loop->run_until_complete(pause(100ms));
  BOOST_TEST(!r.done());
  r.cancel("test");
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete(r), pl::CancelledError,
                        [](const pl::CancelledError& e) { return std::string(e.what()) == "test"; });
  BOOST_TEST(cancels == 5);
}

// CPython test_taskgroups.py: test_taskgroup_07
BOOST_AUTO_TEST_CASE(cancelling_the_enclosing_task_reaches_the_body_and_every_child) {
  vloop v;
  int num = 0, cancels = 0;
  auto r = v.loop->create_task(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    for (int i = 0; i < 5; ++i) g.create_task(sleeper(5s, &cancels));
    try {
      co_await pl::sleep(10s);
    } catch (const pl::CancelledError&) {
      num += 10;
      throw;
    }
  }));
  v.loop->run_until_complete(pause(100ms));
  r.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(r), pl::CancelledError);
  BOOST_TEST(num + cancels == 15);
  BOOST_TEST(r.cancelled());
}

// CPython test_taskgroups.py: test_cancellation_in_body
BOOST_AUTO_TEST_CASE(an_outside_cancel_before_the_children_fail_propagates_with_its_message) {
  vloop v;
  auto r = v.loop->create_task(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    for (int i = 0; i < 5; ++i) g.create_task(crash_after(200ms));
    co_await pl::sleep(10s);
  }));
  // The cancel comes first: the children are cancelled before they crash.
  v.loop->call_later(100ms, [&] { r.cancel("test"); });
  BOOST_CHECK_EXCEPTION(v.loop->run_until_complete(r), pl::CancelledError,
                        [](const pl::CancelledError& e) { return std::string(e.what()) == "test"; });
}

// CPython test_taskgroups.py: test_taskgroup_09
BOOST_AUTO_TEST_CASE(a_body_failing_after_a_wait_cancels_the_children) {
  vloop v;
  pl::Future<int> t1, t2;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      t1 = g.create_task(after(1s, 42));
      t2 = g.create_task(after(2s, 11));
      co_await pl::sleep(100ms);
      throw zero_division();
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  BOOST_TEST(t1.cancelled());
  BOOST_TEST(t2.cancelled());
}

// CPython test_taskgroups.py: test_taskgroup_10
BOOST_AUTO_TEST_CASE(a_body_failing_at_once_cancels_children_that_never_ran) {
  vloop v;
  pl::Future<int> t1, t2;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      t1 = g.create_task(after(1s, 42));
      t2 = g.create_task(after(2s, 11));
      throw zero_division();
      co_return;
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  BOOST_TEST(t1.cancelled());
  BOOST_TEST(t2.cancelled());
}

// CPython test_taskgroups.py: test_taskgroup_11
BOOST_AUTO_TEST_CASE(nested_groups_cancelled_from_outside_end_cancelled) {
  vloop v;
  auto r = v.loop->create_task(pl::task_group([&](pl::TaskGroup) -> pl::Task<> {
    co_await pl::task_group([&](pl::TaskGroup g2) -> pl::Task<> {
      for (int i = 0; i < 5; ++i) g2.create_task(crash_after(200ms));
      co_await pl::sleep(10s);
    });
  }));
  v.loop->call_later(100ms, [&] { r.cancel(); });
  BOOST_CHECK_THROW(v.loop->run_until_complete(r), pl::CancelledError);
  BOOST_TEST(r.cancelled());
}

// CPython test_taskgroups.py: test_taskgroup_13
BOOST_AUTO_TEST_CASE(an_outer_child_failing_cancels_the_inner_group) {
  vloop v;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g1) -> pl::Task<> {
      g1.create_task(crash_after(100ms));
      co_await pl::task_group([&](pl::TaskGroup g2) -> pl::Task<> {
        g2.create_task(crash_after(10s));
        co_return;
      });
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
}

// CPython test_taskgroups.py: test_taskgroup_14
BOOST_AUTO_TEST_CASE(an_inner_group_failure_reaches_the_outer_group_as_a_nested_group) {
  vloop v;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g1) -> pl::Task<> {
      g1.create_task(crash_after(10s));
      co_await pl::task_group([&](pl::TaskGroup g2) -> pl::Task<> {
        g2.create_task(crash_after(100ms));
        co_return;
      });
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"ExceptionGroup"});
    try {
      std::rethrow_exception(eg.exceptions().at(0));
    } catch (const pl::ExceptionGroup& inner) {
      BOOST_TEST(error_types(inner) == std::set<std::string>{"zero_division"});
    }
  }
}

// A body that catches the outer cancel and keeps awaiting, then re-raises
// the cancel. C++ cannot co_await inside a handler, so the cancel is kept
// and rethrown after the wait, as the except-block does.
pl::Task<> body_that_waits_out_a_cancel(pl::TaskGroup g) {
  g.create_task(crash_after(300ms));
  std::exception_ptr cancel;
  try {
    co_await pl::sleep(10s);
  } catch (const pl::CancelledError&) {
    cancel = std::current_exception();
  }
  BOOST_REQUIRE(cancel);
  co_await pl::sleep(500ms);  // cancelled by the group when the child fails at 300 ms
  std::rethrow_exception(cancel);
}

// CPython test_taskgroups.py: test_taskgroup_15 (as of 3.12, gh-95704: a
// child's failure is not swallowed because the parent was cancelled from
// outside; before, this test expected CancelledError)
BOOST_AUTO_TEST_CASE(a_child_failing_while_the_body_handles_an_outer_cancel_is_reported) {
  vloop v;
  auto t0 = v.loop->time();
  auto r = v.loop->create_task(pl::task_group(body_that_waits_out_a_cancel));
  v.loop->run_until_complete(pause(100ms));
  BOOST_TEST(!r.done());
  r.cancel();
  try {
    v.loop->run_until_complete(r);
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  // The body's 500 ms wait was cut short by the child's failure at 300 ms.
  BOOST_TEST(ns(v.elapsed(t0)) == ns(300ms));
}

// CPython test_taskgroups.py: test_taskgroup_16 (the same, one task deeper)
BOOST_AUTO_TEST_CASE(a_task_awaiting_the_group_task_sees_the_child_failure_too) {
  vloop v;
  auto r = v.loop->create_task([]() -> pl::Task<> {
    auto t = pl::get_running_loop().create_task(pl::task_group(body_that_waits_out_a_cancel));
    co_await t;
  }());
  v.loop->run_until_complete(pause(100ms));
  BOOST_TEST(!r.done());
  r.cancel();
  try {
    v.loop->run_until_complete(r);
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
}

// CPython test_taskgroups.py: test_taskgroup_17
BOOST_AUTO_TEST_CASE(an_empty_group_cancelled_from_outside_propagates_the_cancel) {
  vloop v;
  int num = 0;
  auto r = v.loop->create_task(pl::task_group([&](pl::TaskGroup) -> pl::Task<> {
    try {
      co_await pl::sleep(10s);
    } catch (const pl::CancelledError&) {
      num += 10;
      throw;
    }
  }));
  v.loop->run_until_complete(pause(100ms));
  r.cancel();
  BOOST_CHECK_THROW(v.loop->run_until_complete(r), pl::CancelledError);
  BOOST_TEST(num == 10);
}

// CPython test_taskgroups.py: test_taskgroup_18
BOOST_AUTO_TEST_CASE(a_body_that_turns_a_cancel_into_an_error_raises_the_group) {
  vloop v;
  int num = 0;
  auto r = v.loop->create_task(pl::task_group([&](pl::TaskGroup) -> pl::Task<> {
    try {
      co_await pl::sleep(10s);
    } catch (const pl::CancelledError&) {
      num += 10;
    }
    throw my_error("not a good idea");
  }));
  v.loop->run_until_complete(pause(100ms));
  r.cancel();
  try {
    v.loop->run_until_complete(r);
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"my_error"});
  }
  BOOST_TEST(num == 10);
}

// CPython test_taskgroups.py: test_taskgroup_19
BOOST_AUTO_TEST_CASE(the_body_error_and_the_child_error_are_both_in_the_group) {
  vloop v;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(crash_after(100ms));
      try {
        co_await pl::sleep(10s);
      } catch (...) {
      }
      throw my_error("from the body");
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == (std::set<std::string>{"my_error", "zero_division"}));
    BOOST_TEST(std::string(eg.what()).find("2 sub-exceptions") != std::string::npos);
    BOOST_TEST(std::string(eg.what()).find("from the body") != std::string::npos);
    BOOST_TEST(std::string(eg.what()).find("division by zero") != std::string::npos);
  }
}

// CPython test_taskgroups.py: test_taskgroup_21 (the after-close half:
// test_taskgroup_23's create_task once the group is finished)
BOOST_AUTO_TEST_CASE(create_task_after_the_scope_ended_is_a_clear_error) {
  vloop v;
  std::optional<pl::TaskGroup> kept;
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    kept = g;
    co_return;
  }));
  auto coro = after(1ms, 1);
  BOOST_CHECK_EXCEPTION(kept->create_task(std::move(coro)), pl::InvalidStateError,
                        message_has("finished"));
}

// CPython test_taskgroups.py: test_create_task_after_abort (shutting down)
BOOST_AUTO_TEST_CASE(create_task_while_the_group_shuts_down_is_a_clear_error) {
  vloop v;
  std::string refused;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(crash_after(10ms));
      try {
        co_await pl::sleep(1s);
      } catch (const pl::CancelledError&) {
        try {
          g.create_task(after(1ms, 1));
        } catch (const pl::InvalidStateError& e) {
          refused = e.what();
        }
        throw;
      }
    }));
  } catch (const pl::ExceptionGroup&) {
  }
  BOOST_TEST(refused.find("shutting down") != std::string::npos);
}

// CPython test_taskgroups.py: test_taskgroup_22
BOOST_AUTO_TEST_CASE(an_empty_group_ends_at_once) {
  vloop v;
  auto t0 = v.loop->time();
  int got = v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup) -> pl::Task<int> {
    co_return 5;
  }));
  BOOST_TEST(got == 5);
  BOOST_TEST(ns(v.elapsed(t0)) == 0);
}

// CPython test_taskgroups.py: test_taskgroup_23
BOOST_AUTO_TEST_CASE(children_that_end_while_the_scope_waits_leave_it_once_all_have_ended) {
  vloop v;
  std::vector<int> order;
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    for (int i = 0; i < 10; ++i) {
      g.create_task([](int i, std::vector<int>* order) -> pl::Task<> {
        co_await pl::sleep(std::chrono::milliseconds(10 * (10 - i)));
        order->push_back(i);
      }(i, &order));
    }
    co_return;
  }));
  BOOST_TEST(order == (std::vector<int>{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}));
}

// CPython test_taskgroups.py: test_children_can_spawn_siblings (asyncio
// allows create_task while the scope waits, as long as a child runs)
BOOST_AUTO_TEST_CASE(a_child_can_start_a_sibling_while_the_scope_waits) {
  vloop v;
  pl::Future<int> sibling;
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    g.create_task([](pl::TaskGroup g, pl::Future<int>* out) -> pl::Task<> {
      co_await pl::sleep(10ms);
      *out = g.create_task(after(10ms, 7));
    }(g, &sibling));
    co_return;
  }));
  BOOST_TEST(sibling.result() == 7);
}

// CPython test_taskgroups.py: test_taskgroup_cancel_children_on_child_error
// with a timeout: a child fails while another child is inside a timeout.
BOOST_AUTO_TEST_CASE(a_child_failing_while_a_sibling_is_inside_a_timeout_cancels_it_not_times_it_out) {
  vloop v;
  bool saw_timeout = false, saw_cancel = false;
  pl::Future<> in_timeout;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      in_timeout = g.create_task([](bool* t, bool* c) -> pl::Task<> {
        try {
          co_await pl::timeout(1s, pl::sleep(10s));
        } catch (const pl::TimeoutError&) {
          *t = true;
        } catch (const pl::CancelledError&) {
          *c = true;
          throw;
        }
      }(&saw_timeout, &saw_cancel));
      g.create_task(crash_after(100ms));
      co_return;
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  BOOST_TEST(saw_cancel);
  BOOST_TEST(!saw_timeout);
  BOOST_TEST(in_timeout.cancelled());
}

// The same, with the timeout expiring in the very iteration the sibling
// fails: the timeout's timer (set first) fires first and cancels its task;
// the sibling fails in that iteration, the timed-out task ends with
// TimeoutError in the next. The group cancels nothing more and raises
// both, in the order they ended.
BOOST_AUTO_TEST_CASE(a_timeout_expiring_in_the_iteration_a_sibling_fails_is_reported_with_it) {
  vloop v;
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(pl::timeout(100ms, pl::sleep(10s)));
      g.create_task(crash_after(100ms));
      co_return;
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(eg.exceptions().size() == 2u);
    BOOST_TEST(error_types(eg) == (std::set<std::string>{"other", "zero_division"}));
    BOOST_CHECK_THROW(std::rethrow_exception(eg.exceptions().at(0)), zero_division);
    BOOST_CHECK_THROW(std::rethrow_exception(eg.exceptions().at(1)), pl::TimeoutError);
  }
}

// CPython test_taskgroups.py: test_taskgroup_cancel_after_exit (the parent's
// cancel count is left as it was: cancelling() is 0 after a group that
// cancelled its parent for a child failure)
BOOST_AUTO_TEST_CASE(the_parent_cancel_a_failure_caused_is_taken_back) {
  vloop v;
  std::uint32_t cancelling_after = 99;
  v.loop->run_until_complete([&]() -> pl::Task<> {
    try {
      co_await pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
        g.create_task(crash_after(10ms));
        co_await pl::sleep(1s);
      });
    } catch (const pl::ExceptionGroup&) {
    }
    cancelling_after = (co_await pl::current_task()).cancelling();
    co_await pl::sleep(10ms);  // and no cancel is left pending
  }());
  BOOST_TEST(cancelling_after == 0u);
}

// CPython test_taskgroups.py: test_taskgroup_task_name
BOOST_AUTO_TEST_CASE(a_child_can_be_named) {
  vloop v;
  std::string name;
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    auto f = g.create_task(after(1ms, 1), "fetcher");
    name = pl::TaskRef(f).get_name();
    co_return;
  }));
  BOOST_TEST(name == "fetcher");
}

// CPython test_taskgroups.py: test_taskgroup_24
BOOST_AUTO_TEST_CASE(a_child_adds_children_after_the_body_ended) {
  vloop v;
  auto t0 = v.loop->time();
  int ended = 0;
  auto coro1 = [&](pl::Clock::duration d) -> pl::Task<> {
    co_await pl::sleep(d);
    ++ended;
  };
  auto root = [&](pl::TaskGroup g) -> pl::Task<> {
    co_await pl::sleep(100ms);
    g.create_task(coro1(100ms));
    g.create_task(coro1(200ms));
  };
  v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
    g.create_task(root(g));
    co_return;
  }));
  BOOST_TEST(ended == 2);
  BOOST_TEST(ns(v.elapsed(t0)) == ns(300ms));
}

// CPython test_taskgroups.py: test_taskgroup_25 (hydra and hercules)
BOOST_AUTO_TEST_CASE(children_spawning_children_are_all_cancelled_by_a_failure) {
  vloop v;
  int hydras = 0;
  std::function<pl::Task<>(pl::TaskGroup)> hydra = [&](pl::TaskGroup g) -> pl::Task<> {
    ++hydras;
    co_await pl::sleep(10ms);
    g.create_task(hydra(g));
    g.create_task(hydra(g));
  };
  auto hercules = [&]() -> pl::Task<> {
    while (hydras < 10) co_await pl::sleep(15ms);
    throw zero_division();
  };
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(hydra(g));
      g.create_task(hercules());
      co_return;
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  BOOST_TEST(hydras >= 10);
}

// CPython test_taskgroups.py: test_taskgroup_no_create_task_after_failure
BOOST_AUTO_TEST_CASE(a_cancelled_child_cannot_add_to_a_failing_group) {
  vloop v;
  bool refused = false;
  auto coro2 = [&](pl::TaskGroup g) -> pl::Task<> {
    try {
      co_await pl::sleep(1s);
    } catch (const pl::CancelledError&) {
      try {
        g.create_task(crash_after(1ms));
      } catch (const pl::InvalidStateError& e) {
        refused = message_has("shutting down")(e);
      }
    }
  };
  try {
    v.loop->run_until_complete(pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
      g.create_task(crash_after(1ms));
      g.create_task(coro2(g));
      co_return;
    }));
    BOOST_FAIL("no ExceptionGroup");
  } catch (const pl::ExceptionGroup& eg) {
    BOOST_TEST(error_types(eg) == std::set<std::string>{"zero_division"});
  }
  BOOST_TEST(refused);
}

// CPython test_taskgroups.py: test_nested_groups_both_cancelled
BOOST_AUTO_TEST_CASE(nested_groups_that_both_fail_leave_the_cancel_count_as_it_was) {
  vloop v;
  auto raise_after = [](pl::Clock::duration d, int which) -> pl::Task<> {
    co_await pl::sleep(d);
    if (which == 0) throw my_error("inner");
    throw value_error("outer");
  };
  std::uint32_t between = 99, after_all = 99;
  bool inner_caught = false, outer_caught = false;
  v.loop->run_until_complete([&]() -> pl::Task<> {
    try {
      co_await pl::task_group([&](pl::TaskGroup outer) -> pl::Task<> {
        try {
          co_await pl::task_group([&](pl::TaskGroup inner) -> pl::Task<> {
            inner.create_task(raise_after(0s, 0));
            outer.create_task(raise_after(0s, 1));
            co_return;
          });
        } catch (const pl::ExceptionGroup& eg) {
          inner_caught = error_types(eg) == std::set<std::string>{"my_error"};
        }
        between = (co_await pl::current_task()).cancelling();
      });
    } catch (const pl::ExceptionGroup& eg) {
      outer_caught = error_types(eg) == std::set<std::string>{"value_error"};
    }
    after_all = (co_await pl::current_task()).cancelling();
  }());
  BOOST_TEST(inner_caught);
  BOOST_TEST(outer_caught);
  BOOST_TEST(between == 1u);  // the outer group's cancel is still pending there
  BOOST_TEST(after_all == 0u);
}

// CPython test_taskgroups.py: test_error_and_cancel
BOOST_AUTO_TEST_CASE(an_outer_cancel_survives_a_group_that_failed_inside_the_task) {
  vloop v;
  std::uint32_t in_handler = 99, after_group = 99;
  bool slept_after_group = false;
  v.loop->run_until_complete([&]() -> pl::Task<> {
    pl::Event started;
    auto raise_error = [&]() -> pl::Task<> {
      started.set();
      co_await pl::sleep(0s);
      throw my_error("child");
    };
    auto inner = [&]() -> pl::Task<> {
      pl::TaskRef me = co_await pl::current_task();
      try {
        co_await pl::task_group([&](pl::TaskGroup g) -> pl::Task<> {
          g.create_task(raise_error());
          co_await pl::sleep(1s);
          BOOST_FAIL("the sleep in the group should have been cancelled");
        });
      } catch (const pl::ExceptionGroup&) {
        in_handler = me.cancelling();
      }
      after_group = me.cancelling();
      co_await pl::sleep(1s);
      slept_after_group = true;
    };
    auto t = pl::get_running_loop().create_task(inner());
    co_await started.wait();
    BOOST_TEST(pl::TaskRef(t).cancelling() == 0u);
    t.cancel();
    BOOST_TEST(pl::TaskRef(t).cancelling() == 1u);
    BOOST_CHECK_THROW(co_await t, pl::CancelledError);
    BOOST_TEST(t.cancelled());
  }());
  BOOST_TEST(in_handler == 1u);
  BOOST_TEST(after_group == 1u);
  BOOST_TEST(!slept_after_group);
}
