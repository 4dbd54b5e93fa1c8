// gather, wait_all, wait and wait_for: asyncio's semantics for waiting on
// several tasks and futures at once.
#include "core/combinators/gather.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE gather
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;
using log_t = std::vector<std::string>;

namespace {

struct other_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

pl::Task<std::string> string_after(std::string v, pl::Clock::duration d) {
  co_await pl::sleep(d);
  co_return v;
}

template <class E>
pl::Task<int> throw_after(pl::Clock::duration d, std::string what, bool* ended = nullptr) {
  co_await pl::sleep(d);
  if (ended != nullptr) *ended = true;
  throw E(what);
}

struct child_probe {
  bool started = false;
  bool saw_cancel = false;
  bool ended = false;
  pl::Clock::time_point ended_at{};
};

// Sleeps `d`; on a cancel, records it, cleans up for `cleanup` (a real
// await, after the catch), records its end, and ends cancelled.
pl::Task<int> cancellable(child_probe* p, pl::Clock::duration d, pl::Clock::duration cleanup,
                          int value = 1) {
  p->started = true;
  bool cancelled = false;
  try {
    co_await pl::sleep(d);
  } catch (const pl::CancelledError&) {
    p->saw_cancel = true;
    cancelled = true;
  }
  if (cancelled) {
    co_await pl::sleep(cleanup);
    p->ended = true;
    p->ended_at = pl::get_running_loop().time();
    throw pl::CancelledError();
  }
  p->ended = true;
  p->ended_at = pl::get_running_loop().time();
  co_return value;
}

// Swallows a cancel and returns -1.
pl::Task<int> swallows_cancel(child_probe* p) {
  p->started = true;
  try {
    co_await pl::sleep(1h);
  } catch (const pl::CancelledError&) {
    p->saw_cancel = true;
  }
  p->ended = true;
  co_return -1;
}

pl::Task<std::tuple<int, int, int>> gather_three(child_probe* a, child_probe* b, child_probe* c,
                                                 bool* after) {
  auto r = co_await pl::gather(cancellable(a, 1h, 5ms), cancellable(b, 1h, 10ms),
                               cancellable(c, 1h, 1ms));
  *after = true;
  co_return r;
}

pl::Task<int> mixed_task_and_future() {
  pl::EventLoop& loop = pl::get_running_loop();
  pl::Future<int> f = loop.ensure_future(value_after(2, 5ms));
  pl::Future<std::string> g = loop.ensure_future(string_after("s", 1ms));
  std::tuple<int, int, std::string, int> r =
      co_await pl::gather(value_after(1, 10ms), f, g, value_after(4, 0ms));
  if (std::get<0>(r) != 1 || std::get<1>(r) != 2 || std::get<2>(r) != "s" || std::get<3>(r) != 4) {
    throw std::logic_error("gather returned the wrong values");
  }
  // The future still has its result: gather copied it, did not move it out.
  co_return f.result() * 100 + std::get<0>(r) * 10 + std::get<3>(r);
}

pl::Task<pl::WaitResult<int>> wait_then_record(std::vector<pl::Future<int>> fs, pl::return_when w,
                                               pl::Clock::time_point* returned_at) {
  pl::WaitResult<int> r = co_await pl::wait(std::move(fs), w);
  *returned_at = pl::get_running_loop().time();
  co_return r;
}

pl::Task<pl::WaitResult<int>> wait_with_timeout(std::vector<pl::Future<int>> fs,
                                                pl::Clock::duration timeout,
                                                pl::Clock::time_point* returned_at) {
  pl::WaitResult<int> r = co_await pl::wait(std::move(fs), timeout);
  *returned_at = pl::get_running_loop().time();
  co_return r;
}

pl::Task<int> wait_inside(std::vector<pl::Future<int>> fs, bool* saw_cancel) {
  try {
    pl::WaitResult<int> r = co_await pl::wait(std::move(fs));
    co_return static_cast<int>(r.done.size());
  } catch (const pl::CancelledError&) {
    *saw_cancel = true;
    throw;
  }
}

pl::Task<int> wait_for_inside(child_probe* inner, bool* saw_cancel, bool* saw_timeout) {
  try {
    int v = co_await pl::wait_for(cancellable(inner, 1h, 5ms), 1h);
    co_return v;
  } catch (const pl::CancelledError&) {
    *saw_cancel = true;
    throw;
  } catch (const pl::TimeoutError&) {
    *saw_timeout = true;
    throw;
  }
}

struct timeout_report {
  bool timed_out = false;
  bool inner_ended_before = false;
  bool inner_saw_cancel = false;
  pl::Clock::time_point at{};
};
pl::Task<int> wait_for_and_report(child_probe* inner, pl::Clock::duration timeout,
                                  timeout_report* rep) {
  try {
    int v = co_await pl::wait_for(cancellable(inner, 1h, 5ms), timeout);
    co_return v;
  } catch (const pl::TimeoutError&) {
    rep->timed_out = true;
    rep->inner_ended_before = inner->ended;
    rep->inner_saw_cancel = inner->saw_cancel;
    rep->at = pl::get_running_loop().time();
  }
  co_return -1;
}

}  // namespace

// --- gather: results -------------------------------------------------------

BOOST_AUTO_TEST_CASE(gather_returns_results_in_argument_order_when_children_finish_in_reverse) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  log_t finished;
  auto t0 = loop->time();
  std::tuple<int, int, int> r = loop->run_until_complete(
      pl::gather(value_after(1, 30ms, &finished), value_after(2, 20ms, &finished),
                 value_after(3, 10ms, &finished)));
  BOOST_TEST(finished == (log_t{"3", "2", "1"}), boost::test_tools::per_element());
  BOOST_TEST(std::get<0>(r) == 1);
  BOOST_TEST(std::get<1>(r) == 2);
  BOOST_TEST(std::get<2>(r) == 3);
  BOOST_TEST(ns(loop->time() - t0) == ns(30ms));  // concurrently: the longest, not the sum
}

BOOST_AUTO_TEST_CASE(gather_gives_monostate_for_void_children) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  bool flag = false;
  using result_t = decltype(pl::gather(value_after(1, 1ms), void_after(&flag, 1ms)));
  static_assert(std::is_same_v<result_t, pl::Task<std::tuple<int, std::monostate>>>);
  std::tuple<int, std::monostate> r =
      loop->run_until_complete(pl::gather(value_after(5, 2ms), void_after(&flag, 1ms)));
  BOOST_TEST(std::get<0>(r) == 5);
  BOOST_TEST(flag);
}

BOOST_AUTO_TEST_CASE(gather_of_only_void_children_gives_void) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  bool a = false, b = false;
  static_assert(std::is_same_v<decltype(pl::gather(void_after(&a, 1ms), void_after(&b, 1ms))),
                               pl::Task<void>>);
  loop->run_until_complete(pl::gather(void_after(&a, 2ms), void_after(&b, 1ms)));
  BOOST_TEST(a);
  BOOST_TEST(b);
}

BOOST_AUTO_TEST_CASE(gather_mixes_tasks_and_futures_from_ensure_future) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  BOOST_TEST(loop->run_until_complete(mixed_task_and_future()) == 2 * 100 + 1 * 10 + 4);

  // From outside any task too: the futures are made before the gather runs.
  pl::Future<int> f = loop->ensure_future(value_after(7, 5ms));
  std::tuple<int, int> r = loop->run_until_complete(pl::gather(f, value_after(8, 1ms)));
  BOOST_TEST(std::get<0>(r) == 7);
  BOOST_TEST(std::get<1>(r) == 8);
  BOOST_TEST(f.result() == 7);
}

BOOST_AUTO_TEST_CASE(gather_over_a_vector_of_tasks_returns_results_in_list_order) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Task<int>> tasks;
  for (int i = 0; i < 5; ++i) tasks.push_back(value_after(i, (5 - i) * 1ms));
  std::vector<int> r = loop->run_until_complete(pl::gather(std::move(tasks)));
  BOOST_TEST(r == (std::vector<int>{0, 1, 2, 3, 4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(gather_over_a_vector_of_futures_returns_results_in_list_order) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs;
  for (int i = 0; i < 5; ++i) fs.push_back(loop->ensure_future(value_after(i * 10, (5 - i) * 1ms)));
  pl::Future<int> plain = loop->create_future<int>();
  loop->call_later(7ms, [plain]() mutable { plain.set_result(99); });
  fs.push_back(plain);
  std::vector<int> r = loop->run_until_complete(pl::gather(fs));
  BOOST_TEST(r == (std::vector<int>{0, 10, 20, 30, 40, 99}), boost::test_tools::per_element());
  // Futures keep their results (gather copies from futures it did not make).
  BOOST_TEST(fs[2].result() == 20);
}

BOOST_AUTO_TEST_CASE(gather_over_an_empty_vector_gives_an_empty_result) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<int> r1 = loop->run_until_complete(pl::gather(std::vector<pl::Task<int>>{}));
  BOOST_TEST(r1.empty());
  std::vector<int> r2 = loop->run_until_complete(pl::gather(std::vector<pl::Future<int>>{}));
  BOOST_TEST(r2.empty());
}

BOOST_AUTO_TEST_CASE(gather_over_a_vector_of_void_tasks_runs_them_all) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  bool flags[3] = {false, false, false};
  std::vector<pl::Task<>> tasks;
  for (int i = 0; i < 3; ++i) tasks.push_back(void_after(&flags[i], (3 - i) * 1ms));
  static_assert(std::is_same_v<decltype(pl::gather(std::move(tasks))), pl::Task<void>>);
  loop->run_until_complete(pl::gather(std::move(tasks)));
  BOOST_TEST(flags[0]);
  BOOST_TEST(flags[1]);
  BOOST_TEST(flags[2]);
}

// --- gather: errors ----------------------------------------------------------

BOOST_AUTO_TEST_CASE(gather_propagates_the_first_exception_in_time_and_the_others_keep_running) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  handler_log handler;
  handler.install(*loop);
  bool slow_failure_ended = false, fast_failure_ended = false, value_flag = false;
  auto t0 = loop->time();
  // The first argument fails last; the second fails first.
  BOOST_CHECK_EXCEPTION(
      loop->run_until_complete(pl::gather(
          throw_after<my_error>(30ms, "slow", &slow_failure_ended),
          throw_after<other_error>(10ms, "fast", &fast_failure_ended), void_after(&value_flag, 20ms))),
      other_error, [](const other_error& e) { return std::string(e.what()) == "fast"; });
  BOOST_TEST(ns(loop->time() - t0) == ns(10ms));  // at once, not after the others
  BOOST_TEST(fast_failure_ended);
  BOOST_TEST(!value_flag);
  BOOST_TEST(!slow_failure_ended);
  // The other children were not cancelled: they finish later.
  loop->run_until_complete(pause(50ms));
  BOOST_TEST(value_flag);
  BOOST_TEST(slow_failure_ended);
  loop->close();
  // gather saw the later failure: it is not reported as never retrieved.
  BOOST_TEST(handler.messages.empty());
  for (const std::string& m : handler.messages) BOOST_TEST_MESSAGE("handler: " << m);
}

BOOST_AUTO_TEST_CASE(gather_over_a_vector_propagates_the_first_exception_in_time) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  handler_log handler;
  handler.install(*loop);
  bool late_ended = false;
  std::vector<pl::Task<int>> tasks;
  tasks.push_back(throw_after<my_error>(20ms, "late", &late_ended));
  tasks.push_back(value_after(1, 5ms));
  tasks.push_back(throw_after<other_error>(10ms, "early"));
  BOOST_CHECK_THROW(loop->run_until_complete(pl::gather(std::move(tasks))), other_error);
  BOOST_TEST(!late_ended);
  loop->run_until_complete(pause(50ms));
  BOOST_TEST(late_ended);
  loop->close();
  BOOST_TEST(handler.messages.empty());
}

BOOST_AUTO_TEST_CASE(gather_raises_cancelled_error_when_a_child_is_cancelled_on_its_own) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe victim, other;
  pl::Future<int> f = loop->ensure_future(cancellable(&victim, 1h, 0ms));
  loop->call_later(5ms, [f]() mutable { f.cancel(); });
  auto t0 = loop->time();
  BOOST_CHECK_THROW(loop->run_until_complete(pl::gather(f, cancellable(&other, 20ms, 0ms, 2))),
                    pl::CancelledError);
  BOOST_TEST(ns(loop->time() - t0) == ns(5ms));
  BOOST_TEST(victim.saw_cancel);
  BOOST_TEST(f.cancelled());
  // The other child was not cancelled by the gather: it finishes later.
  BOOST_TEST(!other.ended);
  loop->run_until_complete(pause(50ms));
  BOOST_TEST(other.ended);
  BOOST_TEST(!other.saw_cancel);
}

// --- wait_all ----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(wait_all_returns_settled_futures_with_each_childs_outcome) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  handler_log handler;
  handler.install(*loop);
  pl::Future<int> plain = loop->create_future<int>();
  loop->call_later(3ms, [plain]() mutable { plain.cancel(); });
  auto [ok, failed, cancelled] = loop->run_until_complete(
      pl::wait_all(value_after(1, 10ms), throw_after<my_error>(5ms, "bad"), plain));
  BOOST_TEST(ok.done());
  BOOST_TEST(ok.result() == 1);
  BOOST_TEST(failed.done());
  BOOST_TEST(!failed.cancelled());
  BOOST_CHECK_THROW(failed.result(), my_error);
  BOOST_TEST(static_cast<bool>(failed.exception()));
  BOOST_TEST(cancelled.cancelled());
  BOOST_CHECK_THROW(cancelled.result(), pl::CancelledError);
  loop->close();
  BOOST_TEST(handler.messages.empty());
}

BOOST_AUTO_TEST_CASE(wait_all_over_a_vector_waits_for_every_child_even_after_a_failure) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Task<int>> tasks;
  tasks.push_back(throw_after<my_error>(1ms, "first"));
  tasks.push_back(value_after(2, 20ms));
  auto t0 = loop->time();
  std::vector<pl::Future<int>> fs = loop->run_until_complete(pl::wait_all(std::move(tasks)));
  BOOST_TEST(ns(loop->time() - t0) == ns(20ms));
  BOOST_TEST_REQUIRE(fs.size() == 2u);
  BOOST_TEST(fs[0].done());
  BOOST_CHECK_THROW(fs[0].result(), my_error);
  BOOST_TEST(fs[1].result() == 2);
}

// --- gather: cancellation ---------------------------------------------------

BOOST_AUTO_TEST_CASE(cancelling_a_scheduled_gather_cancels_every_child_and_ends_after_them) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a, b, c;
  pl::Future<std::tuple<int, int, int>> g = loop->create_task(
      pl::gather(cancellable(&a, 1h, 5ms), cancellable(&b, 1h, 10ms), cancellable(&c, 1h, 1ms)));
  pl::Clock::time_point gather_done_at{};
  bool children_ended_when_gather_done = false;
  g.add_done_callback([&](auto&) {
    gather_done_at = loop->time();
    children_ended_when_gather_done = a.ended && b.ended && c.ended;
  });
  run_one_iteration(*loop);  // the gather starts and schedules its children
  run_one_iteration(*loop);  // the children start
  BOOST_TEST_REQUIRE((a.started && b.started && c.started));
  auto t0 = loop->time();
  BOOST_TEST(g.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(g), pl::CancelledError);
  BOOST_TEST(a.saw_cancel);
  BOOST_TEST(b.saw_cancel);
  BOOST_TEST(c.saw_cancel);
  BOOST_TEST(g.cancelled());
  BOOST_TEST(children_ended_when_gather_done);
  BOOST_TEST(ns(b.ended_at - t0) == ns(10ms));  // the slowest cleanup
  BOOST_TEST(ns(gather_done_at - t0) >= ns(10ms));
  BOOST_TEST(ns(loop->time() - t0) < ns(1h));
}

BOOST_AUTO_TEST_CASE(a_cancelled_gather_ends_cancelled_even_if_a_child_swallows_the_cancel) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a, b;
  pl::Future<std::tuple<int, int>> g =
      loop->create_task(pl::gather(swallows_cancel(&a), cancellable(&b, 1h, 1ms)));
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE((a.started && b.started));
  BOOST_TEST(g.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(g), pl::CancelledError);
  BOOST_TEST(a.saw_cancel);
  BOOST_TEST(a.ended);
  BOOST_TEST(b.saw_cancel);
  BOOST_TEST(b.ended);
  BOOST_TEST(g.cancelled());
}

BOOST_AUTO_TEST_CASE(cancelling_a_task_awaiting_gather_inline_cancels_every_child) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a, b, c;
  bool after = false;
  pl::Future<std::tuple<int, int, int>> outer =
      loop->create_task(gather_three(&a, &b, &c, &after));
  bool children_ended_when_outer_done = false;
  outer.add_done_callback(
      [&](auto&) { children_ended_when_outer_done = a.ended && b.ended && c.ended; });
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE((a.started && b.started && c.started));
  auto t0 = loop->time();
  BOOST_TEST(outer.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(outer), pl::CancelledError);
  BOOST_TEST(a.saw_cancel);
  BOOST_TEST(b.saw_cancel);
  BOOST_TEST(c.saw_cancel);
  BOOST_TEST(!after);
  BOOST_TEST(outer.cancelled());
  BOOST_TEST(children_ended_when_outer_done);
  BOOST_TEST(ns(loop->time() - t0) >= ns(10ms));
}

BOOST_AUTO_TEST_CASE(cancelling_a_scheduled_wait_all_cancels_every_child_and_ends_after_them) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a, b;
  auto w = loop->create_task(pl::wait_all(cancellable(&a, 1h, 3ms), cancellable(&b, 1h, 7ms)));
  bool children_ended_when_done = false;
  w.add_done_callback([&](auto&) { children_ended_when_done = a.ended && b.ended; });
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE((a.started && b.started));
  BOOST_TEST(w.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(w), pl::CancelledError);
  BOOST_TEST(a.saw_cancel);
  BOOST_TEST(b.saw_cancel);
  BOOST_TEST(w.cancelled());
  BOOST_TEST(children_ended_when_done);
}

// gather and wait_all over a vector of Tasks schedule the Tasks in place and
// watch them through one shared link: the same cancellation semantics.
BOOST_AUTO_TEST_CASE(cancelling_a_scheduled_gather_over_a_vector_cancels_every_child) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a, b, c;
  std::vector<pl::Task<int>> tasks;
  tasks.push_back(cancellable(&a, 1h, 5ms));
  tasks.push_back(swallows_cancel(&b));
  tasks.push_back(cancellable(&c, 1h, 10ms));
  pl::Future<std::vector<int>> g = loop->create_task(pl::gather(std::move(tasks)));
  bool children_ended_when_gather_done = false;
  g.add_done_callback(
      [&](auto&) { children_ended_when_gather_done = a.ended && b.ended && c.ended; });
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE((a.started && b.started && c.started));
  auto t0 = loop->time();
  BOOST_TEST(g.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(g), pl::CancelledError);
  BOOST_TEST(a.saw_cancel);
  BOOST_TEST(b.saw_cancel);
  BOOST_TEST(c.saw_cancel);
  BOOST_TEST(g.cancelled());
  BOOST_TEST(children_ended_when_gather_done);
  BOOST_TEST(ns(c.ended_at - t0) == ns(10ms));
  // A second cancel of a gather that has ended changes nothing.
  BOOST_TEST(!g.cancel());
}

BOOST_AUTO_TEST_CASE(cancelling_a_scheduled_wait_all_over_a_vector_cancels_every_child) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a, b;
  std::vector<pl::Task<int>> tasks;
  tasks.push_back(cancellable(&a, 1h, 3ms));
  tasks.push_back(cancellable(&b, 1h, 7ms));
  auto w = loop->create_task(pl::wait_all(std::move(tasks)));
  bool children_ended_when_done = false;
  w.add_done_callback([&](auto&) { children_ended_when_done = a.ended && b.ended; });
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE((a.started && b.started));
  BOOST_TEST(w.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(w), pl::CancelledError);
  BOOST_TEST(a.saw_cancel);
  BOOST_TEST(b.saw_cancel);
  BOOST_TEST(children_ended_when_done);
}

BOOST_AUTO_TEST_CASE(gather_over_a_vector_with_an_empty_task_schedules_none_of_them) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe a;
  std::vector<pl::Task<int>> tasks;
  tasks.push_back(cancellable(&a, 1ms, 0ms));
  tasks.emplace_back();  // empty
  BOOST_CHECK_THROW(loop->run_until_complete(pl::gather(std::move(tasks))), pl::InvalidStateError);
  loop->run_until_complete(pause(10ms));
  BOOST_TEST(!a.started);
}

BOOST_AUTO_TEST_CASE(gather_over_a_vector_gives_each_result_once_children_finish_in_any_order) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Task<std::string>> tasks;
  for (int i = 0; i < 50; ++i) {
    tasks.push_back(string_after(std::string(40, static_cast<char>('a' + i % 26)),
                                 ((i * 7) % 50) * 1ms));
  }
  std::vector<std::string> r = loop->run_until_complete(pl::gather(std::move(tasks)));
  BOOST_TEST_REQUIRE(r.size() == 50u);
  for (int i = 0; i < 50; ++i) BOOST_TEST(r[i] == std::string(40, static_cast<char>('a' + i % 26)));
}

BOOST_AUTO_TEST_CASE(closing_the_loop_under_a_pending_gather_over_a_vector_ends_every_child) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  handler_log handler;
  handler.install(*loop);
  child_probe a, b;
  std::vector<pl::Task<int>> tasks;
  tasks.push_back(cancellable(&a, 1h, 0ms));
  tasks.push_back(cancellable(&b, 1h, 0ms));
  pl::Future<std::vector<int>> g = loop->create_task(pl::gather(std::move(tasks)));
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE((a.started && b.started));
  loop->close();
  // The gather and both children: "Task was destroyed but it is pending!".
  BOOST_TEST(handler.messages.size() == 3u);
  BOOST_TEST(g.cancelled());
}

// --- wait ----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(wait_first_completed_returns_as_soon_as_one_is_done) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(value_after(1, 30ms)),
                                  loop->ensure_future(value_after(2, 10ms)),
                                  loop->ensure_future(value_after(3, 20ms))};
  auto t0 = loop->time();
  pl::Clock::time_point at{};
  pl::WaitResult<int> r =
      loop->run_until_complete(wait_then_record(fs, pl::FIRST_COMPLETED, &at));
  BOOST_TEST(ns(at - t0) == ns(10ms));
  BOOST_TEST_REQUIRE(r.done.size() == 1u);
  BOOST_TEST(r.done[0].result() == 2);
  BOOST_TEST_REQUIRE(r.pending.size() == 2u);
  BOOST_TEST(!r.pending[0].done());
  BOOST_TEST(!r.pending[1].done());
  // wait never cancels: the pending ones finish later, in list order.
  BOOST_TEST(loop->run_until_complete(r.pending[0]) == 1);
  BOOST_TEST(r.pending[1].result() == 3);
}

BOOST_AUTO_TEST_CASE(wait_first_exception_returns_at_the_first_failure) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(value_after(1, 10ms)),
                                  loop->ensure_future(throw_after<my_error>(20ms, "x")),
                                  loop->ensure_future(value_after(3, 30ms))};
  auto t0 = loop->time();
  pl::Clock::time_point at{};
  pl::WaitResult<int> r =
      loop->run_until_complete(wait_then_record(fs, pl::FIRST_EXCEPTION, &at));
  BOOST_TEST(ns(at - t0) == ns(20ms));
  BOOST_TEST_REQUIRE(r.done.size() == 2u);
  BOOST_TEST(r.done[0].result() == 1);
  BOOST_CHECK_THROW(r.done[1].result(), my_error);
  BOOST_TEST_REQUIRE(r.pending.size() == 1u);
  BOOST_TEST(loop->run_until_complete(r.pending[0]) == 3);
}

BOOST_AUTO_TEST_CASE(wait_first_exception_without_a_failure_waits_for_all) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(value_after(1, 10ms)),
                                  loop->ensure_future(value_after(2, 20ms))};
  auto t0 = loop->time();
  pl::Clock::time_point at{};
  pl::WaitResult<int> r =
      loop->run_until_complete(wait_then_record(fs, pl::FIRST_EXCEPTION, &at));
  BOOST_TEST(ns(at - t0) == ns(20ms));
  BOOST_TEST(r.done.size() == 2u);
  BOOST_TEST(r.pending.empty());
}

BOOST_AUTO_TEST_CASE(wait_all_completed_waits_for_every_future_including_failures) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(throw_after<my_error>(5ms, "x")),
                                  loop->ensure_future(value_after(2, 30ms)),
                                  loop->ensure_future(value_after(3, 10ms))};
  auto t0 = loop->time();
  pl::Clock::time_point at{};
  pl::WaitResult<int> r = loop->run_until_complete(wait_then_record(fs, pl::ALL_COMPLETED, &at));
  BOOST_TEST(ns(at - t0) == ns(30ms));
  BOOST_TEST_REQUIRE(r.done.size() == 3u);
  BOOST_TEST(r.pending.empty());
  BOOST_CHECK_THROW(r.done[0].result(), my_error);  // in the order given
  BOOST_TEST(r.done[1].result() == 2);
  BOOST_TEST(r.done[2].result() == 3);
}

BOOST_AUTO_TEST_CASE(wait_with_a_timeout_returns_at_the_timeout_without_cancelling) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(value_after(1, 10ms)),
                                  loop->ensure_future(value_after(2, 20ms)),
                                  loop->ensure_future(value_after(3, 30ms))};
  auto t0 = loop->time();
  pl::Clock::time_point at{};
  pl::WaitResult<int> r = loop->run_until_complete(wait_with_timeout(fs, 15ms, &at));
  BOOST_TEST(ns(at - t0) == ns(15ms));
  BOOST_TEST_REQUIRE(r.done.size() == 1u);
  BOOST_TEST(r.done[0].result() == 1);
  BOOST_TEST_REQUIRE(r.pending.size() == 2u);
  BOOST_TEST(!r.pending[0].cancelled());
  BOOST_TEST(!r.pending[1].cancelled());
  BOOST_TEST(loop->run_until_complete(r.pending[1]) == 3);
  BOOST_TEST(r.pending[0].result() == 2);
  BOOST_TEST(ns(loop->time() - t0) == ns(30ms));
}

BOOST_AUTO_TEST_CASE(wait_with_a_timeout_returns_early_when_all_are_done) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(value_after(1, 5ms))};
  auto t0 = loop->time();
  pl::Clock::time_point at{};
  pl::WaitResult<int> r = loop->run_until_complete(wait_with_timeout(fs, 1h, &at));
  BOOST_TEST(ns(at - t0) == ns(5ms));
  BOOST_TEST(r.done.size() == 1u);
  BOOST_TEST(r.pending.empty());
}

BOOST_AUTO_TEST_CASE(wait_on_an_empty_list_throws_invalid_argument) {
  auto loop = make_loop();
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait(std::vector<pl::Future<int>>{})),
                    std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(cancelling_a_task_in_wait_does_not_cancel_the_waited_futures) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  std::vector<pl::Future<int>> fs{loop->ensure_future(value_after(1, 10ms)),
                                  loop->ensure_future(value_after(2, 20ms))};
  bool saw_cancel = false;
  pl::Future<int> outer = loop->create_task(wait_inside(fs, &saw_cancel));
  run_one_iteration(*loop);
  auto t0 = loop->time();
  BOOST_TEST(outer.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(outer), pl::CancelledError);
  BOOST_TEST(saw_cancel);
  BOOST_TEST(ns(loop->time() - t0) == 0);  // wait ends at once, it does not wait for them
  BOOST_TEST(!fs[0].done());
  BOOST_TEST(!fs[1].done());
  BOOST_TEST(loop->run_until_complete(fs[1]) == 2);
  BOOST_TEST(fs[0].result() == 1);
  BOOST_TEST(!fs[0].cancelled());
}

// --- wait_for ------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(wait_for_returns_the_value_when_in_time) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  auto t0 = loop->time();
  BOOST_TEST(loop->run_until_complete(pl::wait_for(value_after(5, 10ms), 50ms)) == 5);
  BOOST_TEST(ns(loop->time() - t0) == ns(10ms));  // not the whole timeout
}

BOOST_AUTO_TEST_CASE(wait_for_propagates_the_inner_exception_when_in_time) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(throw_after<my_error>(1ms, "x"), 50ms)),
                    my_error);
}

BOOST_AUTO_TEST_CASE(wait_for_times_out_after_cancelling_the_inner_task_and_waiting_for_it) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe inner;
  timeout_report rep;
  auto t0 = loop->time();
  BOOST_TEST(loop->run_until_complete(wait_for_and_report(&inner, 20ms, &rep)) == -1);
  BOOST_TEST(rep.timed_out);
  BOOST_TEST(rep.inner_saw_cancel);
  BOOST_TEST(rep.inner_ended_before);  // ended before TimeoutError was thrown
  BOOST_TEST(ns(rep.at - t0) == ns(20ms + 5ms));  // the timeout plus the inner cleanup
}

BOOST_AUTO_TEST_CASE(wait_for_timeout_throws_timeout_error_out_of_run_until_complete) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe inner;
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(cancellable(&inner, 1h, 0ms), 10ms)),
                    pl::TimeoutError);
  BOOST_TEST(inner.saw_cancel);
  BOOST_TEST(inner.ended);
}

BOOST_AUTO_TEST_CASE(cancelling_the_task_in_wait_for_cancels_the_inner_task) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  child_probe inner;
  bool saw_cancel = false, saw_timeout = false;
  pl::Future<int> outer = loop->create_task(wait_for_inside(&inner, &saw_cancel, &saw_timeout));
  bool inner_ended_when_outer_done = false;
  outer.add_done_callback([&](auto&) { inner_ended_when_outer_done = inner.ended; });
  run_one_iteration(*loop);
  run_one_iteration(*loop);
  BOOST_TEST_REQUIRE(inner.started);
  BOOST_TEST(outer.cancel());
  BOOST_CHECK_THROW(loop->run_until_complete(outer), pl::CancelledError);
  BOOST_TEST(inner.saw_cancel);
  BOOST_TEST(saw_cancel);
  BOOST_TEST(!saw_timeout);
  BOOST_TEST(outer.cancelled());
  BOOST_TEST(inner_ended_when_outer_done);
}

BOOST_AUTO_TEST_CASE(wait_for_accepts_a_future) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  pl::Future<int> quick = loop->ensure_future(value_after(4, 5ms));
  BOOST_TEST(loop->run_until_complete(pl::wait_for(quick, 10ms)) == 4);
  BOOST_TEST(quick.result() == 4);

  child_probe p;
  pl::Future<int> slow = loop->ensure_future(cancellable(&p, 1h, 0ms));
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(slow, 10ms)), pl::TimeoutError);
  BOOST_TEST(slow.done());
  BOOST_TEST(slow.cancelled());
  BOOST_TEST(p.saw_cancel);

  pl::Future<int> never = loop->create_future<int>();
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(never, 10ms)), pl::TimeoutError);
  BOOST_TEST(never.cancelled());
}

BOOST_AUTO_TEST_CASE(gather_of_100ms_and_300ms_sleeps_takes_300ms_not_400) {
  // On the virtual clock the answer is exact: concurrently the gather ends
  // at +300 ms, one after the other at +400 ms.
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  bool a = false, b = false;
  auto start = loop->time();
  loop->run_until_complete(pl::gather(void_after(&a, 100ms), void_after(&b, 300ms)));
  BOOST_TEST(a);
  BOOST_TEST(b);
  BOOST_TEST(ns(loop->time() - start) == ns(300ms));
}

// --- real time -------------------------------------------------------------

BOOST_AUTO_TEST_CASE(gather_of_100ms_and_300ms_sleeps_takes_about_300ms_in_real_time) {
  if (polyloop::testing::skip_when_simulated("measures real time")) return;
  auto loop = make_loop();
  bool a = false, b = false;
  auto start = std::chrono::steady_clock::now();
  loop->run_until_complete(pl::gather(void_after(&a, 100ms), void_after(&b, 300ms)));
  double elapsed = ms(std::chrono::steady_clock::now() - start);
  BOOST_TEST(a);
  BOOST_TEST(b);
  BOOST_TEST(elapsed >= 300.0);
  BOOST_TEST(elapsed < 380.0);  // serial would be >= 400
}

BOOST_AUTO_TEST_CASE(wait_for_times_out_on_the_real_clock_promptly) {
  if (polyloop::testing::skip_when_simulated("measures real time")) return;
  auto loop = make_loop();
  child_probe p;
  auto start = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(cancellable(&p, 10s, 0ms), 30ms)),
                    pl::TimeoutError);
  double elapsed = ms(std::chrono::steady_clock::now() - start);
  BOOST_TEST(p.saw_cancel);
  BOOST_TEST(elapsed >= 30.0);
  BOOST_TEST(elapsed < 600.0);
}
