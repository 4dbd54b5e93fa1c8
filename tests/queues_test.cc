// Queue, LifoQueue and PriorityQueue: asyncio's semantics as CPython's
// Lib/test/test_asyncio/test_queues.py pins them (shutdown as in 3.13), move-only
// items, and the loop binding.
#include "core/sync/queue.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE queues
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/allocation_counter.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using namespace pl::testing;

namespace {

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

template <class Q>
pl::Task<int> get(Q* q) {
  co_return co_await q->get();
}
template <class Q>
pl::Task<> put(Q* q, int v) {
  co_await q->put(v);
}
template <class Q>
pl::Task<> join(Q* q) {
  co_await q->join();
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(basics, fx)

// CPython test_queues.py: QueueBasicTests.test_empty
BOOST_AUTO_TEST_CASE(empty_says_whether_items_are_queued) {
  pl::Queue<int> q;
  BOOST_TEST(q.empty());
  q.put_nowait(1);
  BOOST_TEST(!q.empty());
  BOOST_TEST(q.get_nowait() == 1);
  BOOST_TEST(q.empty());
}

// CPython test_queues.py: QueueBasicTests.test_full
BOOST_AUTO_TEST_CASE(full_says_whether_maxsize_is_reached) {
  pl::Queue<int> unbounded;
  BOOST_TEST(!unbounded.full());
  pl::Queue<int> q(1);
  q.put_nowait(1);
  BOOST_TEST(q.full());
}

// CPython test_queues.py: QueueBasicTests.test_order
BOOST_AUTO_TEST_CASE(a_queue_is_first_in_first_out) {
  pl::Queue<int> q;
  for (int i : {1, 3, 2}) q.put_nowait(i);
  std::vector<int> items;
  while (!q.empty()) items.push_back(q.get_nowait());
  BOOST_TEST(items == std::vector<int>({1, 3, 2}));
}

// CPython test_queues.py: LifoQueueTests.test_order
BOOST_AUTO_TEST_CASE(a_lifo_queue_is_last_in_first_out) {
  pl::LifoQueue<int> q;
  for (int i : {1, 3, 2}) q.put_nowait(i);
  std::vector<int> items;
  while (!q.empty()) items.push_back(q.get_nowait());
  BOOST_TEST(items == std::vector<int>({2, 3, 1}));
}

// CPython test_queues.py: PriorityQueueTests.test_order
BOOST_AUTO_TEST_CASE(a_priority_queue_gives_the_smallest_first) {
  pl::PriorityQueue<int> q;
  for (int i : {1, 3, 2}) q.put_nowait(i);
  std::vector<int> items;
  while (!q.empty()) items.push_back(q.get_nowait());
  BOOST_TEST(items == std::vector<int>({1, 2, 3}));
}

BOOST_AUTO_TEST_CASE(a_priority_queue_takes_an_ordering) {
  pl::PriorityQueue<int, std::greater<int>> q;
  for (int i : {1, 3, 2}) q.put_nowait(i);
  BOOST_TEST(q.get_nowait() == 3);
}

// CPython test_queues.py: QueueBasicTests.test_maxsize
BOOST_AUTO_TEST_CASE(put_waits_while_the_queue_is_full) {
  pl::Queue<int> q(2);
  BOOST_TEST(q.maxsize() == 2u);
  std::vector<int> have_been_put;
  auto putter = [&]() -> pl::Task<> {
    for (int i = 0; i < 3; ++i) {
      co_await q.put(i);
      have_been_put.push_back(i);
    }
  };
  auto t = spawn(putter());
  briefly(2);
  BOOST_TEST(have_been_put == std::vector<int>({0, 1}));  // the third waits
  BOOST_TEST(q.get_nowait() == 0);
  run(t);
  BOOST_TEST(have_been_put == std::vector<int>({0, 1, 2}));
  BOOST_TEST(q.qsize() == 2u);
}

BOOST_AUTO_TEST_CASE(move_only_items_go_through_put_and_get) {
  pl::Queue<std::unique_ptr<int>> q(1);
  auto producer = [&]() -> pl::Task<> {
    for (int i = 0; i < 3; ++i) co_await q.put(std::make_unique<int>(i));
  };
  auto consumer = [&]() -> pl::Task<int> {
    int sum = 0;
    for (int i = 0; i < 3; ++i) sum += *co_await q.get();
    co_return sum;
  };
  auto p = spawn(producer());
  BOOST_TEST(run(consumer()) == 3);
  run(p);
}

struct by_pointee {
  bool operator()(const std::unique_ptr<int>& a, const std::unique_ptr<int>& b) const {
    return *a < *b;
  }
};

BOOST_AUTO_TEST_CASE(a_priority_queue_hands_out_move_only_items) {
  pl::PriorityQueue<std::unique_ptr<int>, by_pointee> q;
  for (int i : {5, 1, 3}) q.put_nowait(std::make_unique<int>(i));
  BOOST_TEST(*q.get_nowait() == 1);
  auto take = [&]() -> pl::Task<int> { co_return *co_await q.get(); };
  BOOST_TEST(run(take()) == 3);
  BOOST_TEST(run(take()) == 5);
}

BOOST_AUTO_TEST_CASE(a_queue_moves_its_items_and_destroys_what_it_still_holds) {
  counted::reset();
  {
    pl::Queue<counted> q;
    q.put_nowait(counted(1));
    q.put_nowait(counted(2));
    BOOST_TEST(q.get_nowait().value == 1);
    BOOST_TEST(counted::alive == 1);
  }
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(counted::copies == 0);
}

BOOST_AUTO_TEST_CASE(the_ring_grows_and_keeps_fifo_order_across_the_wrap) {
  pl::Queue<int> q;
  int next_in = 0, next_out = 0;
  bool in_order = true;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < round; ++i) q.put_nowait(next_in++);
    for (int i = 0; i < round / 2; ++i) in_order = in_order && q.get_nowait() == next_out++;
  }
  while (!q.empty()) in_order = in_order && q.get_nowait() == next_out++;
  BOOST_TEST(in_order);
  BOOST_TEST(next_out == next_in);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(get_tests, fx)

// CPython test_queues.py: QueueGetTests.test_blocking_get
BOOST_AUTO_TEST_CASE(get_returns_a_queued_item) {
  pl::Queue<int> q;
  q.put_nowait(1);
  BOOST_TEST(run(get(&q)) == 1);
}

// CPython test_queues.py: QueueGetTests.test_get_with_putters
BOOST_AUTO_TEST_CASE(get_from_a_full_queue_lets_a_waiting_putter_in) {
  pl::Queue<int> q(1);
  q.put_nowait(1);
  auto p = spawn(put(&q, 2));
  briefly();
  BOOST_TEST(!p.done());
  BOOST_TEST(q.get_nowait() == 1);
  run(p);
  BOOST_TEST(q.get_nowait() == 2);
}

// CPython test_queues.py: QueueGetTests.test_blocking_get_wait
BOOST_AUTO_TEST_CASE(get_waits_for_a_put) {
  pl::Queue<int> q;
  auto g = spawn(get(&q));
  briefly();
  BOOST_TEST(!g.done());
  loop->call_later(1ms, [&] { q.put_nowait(7); });
  BOOST_TEST(run(g) == 7);
}

// CPython test_queues.py: QueueGetTests.test_nonblocking_get
BOOST_AUTO_TEST_CASE(get_nowait_returns_a_queued_item) {
  pl::Queue<int> q;
  q.put_nowait(1);
  BOOST_TEST(q.get_nowait() == 1);
}

// CPython test_queues.py: QueueGetTests.test_nonblocking_get_exception
BOOST_AUTO_TEST_CASE(get_nowait_on_an_empty_queue_throws_queue_empty) {
  pl::Queue<int> q;
  BOOST_CHECK_EXCEPTION(q.get_nowait(), pl::QueueEmpty, message_has("empty"));
}

// CPython test_queues.py: QueueGetTests.test_get_cancelled_race
BOOST_AUTO_TEST_CASE(a_getter_cancelled_before_a_put_does_not_take_the_item) {
  pl::Queue<int> q;
  auto t1 = spawn(get(&q));
  auto t2 = spawn(get(&q));
  briefly();
  t1.cancel();
  briefly();
  BOOST_TEST(t1.cancelled());
  q.put_nowait(1);
  BOOST_TEST(run(t2) == 1);
}

// The hard case; CPython test_queues.py:
// QueueGetTests.test_cancelled_getters_not_being_held_in_self_getters and
// QueuePutTests.test_get_cancel_drop_one_pending_reader: a get cancelled
// after put_nowait() woke it leaves the item for the next getter.
BOOST_AUTO_TEST_CASE(a_getter_cancelled_after_an_item_was_put_for_it_loses_nothing) {
  pl::Queue<int> q;
  auto t1 = spawn(get(&q));
  auto t2 = spawn(get(&q));
  briefly();
  q.put_nowait(42);  // wakes t1
  t1.cancel();       // before t1 runs
  BOOST_CHECK_THROW(run(t1), pl::CancelledError);
  BOOST_TEST(run(t2) == 42);  // the wake-up was passed on
  BOOST_TEST(q.empty());
}

// Same with nobody else waiting: the item stays in the queue.
BOOST_AUTO_TEST_CASE(a_lone_getter_cancelled_after_a_put_leaves_the_item_queued) {
  pl::Queue<int> q;
  auto t1 = spawn(get(&q));
  briefly();
  q.put_nowait(42);
  t1.cancel();
  BOOST_CHECK_THROW(run(t1), pl::CancelledError);
  BOOST_TEST(q.qsize() == 1u);
  BOOST_TEST(q.get_nowait() == 42);
}

// CPython test_queues.py: QueuePutTests.test_get_cancel_drop_many_pending_readers
BOOST_AUTO_TEST_CASE(many_getters_one_cancelled_after_wake_every_item_reaches_someone) {
  pl::Queue<int> q;
  std::vector<pl::Future<int>> getters;
  for (int i = 0; i < 3; ++i) getters.push_back(spawn(get(&q)));
  briefly();
  q.put_nowait(1);
  q.put_nowait(2);
  getters[0].cancel();  // woken by the first put
  int sum = 0;
  BOOST_CHECK_THROW(run(getters[0]), pl::CancelledError);
  sum += run(getters[1]);
  sum += run(getters[2]);
  BOOST_TEST(sum == 3);
  BOOST_TEST(q.empty());
}

// CPython test_queues.py: QueueGetTests.test_get_with_waiting_putters
BOOST_AUTO_TEST_CASE(get_lets_in_the_putters_waiting_on_a_full_queue) {
  pl::Queue<int> q(1);
  auto p1 = spawn(put(&q, 1));
  auto p2 = spawn(put(&q, 2));
  briefly();
  BOOST_TEST(run(get(&q)) == 1);
  BOOST_TEST(run(get(&q)) == 2);
  BOOST_TEST((p1.done() && p2.done()));
}

// CPython test_queues.py: QueueGetTests.test_why_are_getters_waiting
BOOST_AUTO_TEST_CASE(getters_and_putters_in_step_all_finish) {
  pl::Queue<int> q(2);
  auto consumer = [&](int n) -> pl::Task<int> {
    int sum = 0;
    for (int i = 0; i < n; ++i) sum += co_await q.get();
    co_return sum;
  };
  auto producer = [&](int n) -> pl::Task<> {
    for (int i = 0; i < n; ++i) co_await q.put(i);
  };
  auto c1 = spawn(consumer(30));
  auto c2 = spawn(consumer(20));
  auto p1 = spawn(producer(25));
  auto p2 = spawn(producer(25));
  int total = run(c1) + run(c2);
  run(p1);
  run(p2);
  BOOST_TEST(total == 2 * (24 * 25 / 2));
}

// A barging get_nowait() takes the item a woken getter was woken for: the
// getter waits again (asyncio's loop in get()) instead of failing.
BOOST_AUTO_TEST_CASE(a_woken_getter_whose_item_was_taken_waits_again) {
  pl::Queue<int> q;
  auto g = spawn(get(&q));
  briefly();
  q.put_nowait(1);
  BOOST_TEST(q.get_nowait() == 1);  // before g runs
  briefly(2);
  BOOST_TEST(!g.done());
  q.put_nowait(2);
  BOOST_TEST(run(g) == 2);
}

// FIFO among getters: the first to wait gets the first item.
BOOST_AUTO_TEST_CASE(waiting_getters_are_served_in_order) {
  pl::Queue<int> q;
  auto g1 = spawn(get(&q));
  auto g2 = spawn(get(&q));
  auto g3 = spawn(get(&q));
  briefly();
  for (int i : {10, 20, 30}) q.put_nowait(i);
  BOOST_TEST(run(g3) == 30);
  BOOST_TEST(g1.result() == 10);
  BOOST_TEST(g2.result() == 20);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(put_tests, fx)

// CPython test_queues.py: QueuePutTests.test_blocking_put
BOOST_AUTO_TEST_CASE(put_into_a_queue_with_room_does_not_wait) {
  pl::Queue<int> q;
  run(put(&q, 1));
  BOOST_TEST(q.qsize() == 1u);
}

// CPython test_queues.py: QueuePutTests.test_blocking_put_wait
BOOST_AUTO_TEST_CASE(put_waits_for_a_get) {
  pl::Queue<int> q(1);
  q.put_nowait(1);
  auto p = spawn(put(&q, 2));
  loop->call_later(1ms, [&] { q.get_nowait(); });
  run(p);
  BOOST_TEST(q.get_nowait() == 2);
}

// CPython test_queues.py: QueuePutTests.test_nonblocking_put
BOOST_AUTO_TEST_CASE(put_nowait_queues_an_item) {
  pl::Queue<int> q;
  q.put_nowait(1);
  BOOST_TEST(q.get_nowait() == 1);
}

// CPython test_queues.py: QueuePutTests.test_nonblocking_put_exception
BOOST_AUTO_TEST_CASE(put_nowait_on_a_full_queue_throws_queue_full) {
  pl::Queue<int> q(1);
  q.put_nowait(1);
  BOOST_CHECK_EXCEPTION(q.put_nowait(2), pl::QueueFull, message_has("full"));
  BOOST_TEST(q.qsize() == 1u);
}

// CPython test_queues.py: QueuePutTests.test_put_cancelled
BOOST_AUTO_TEST_CASE(a_cancelled_put_queues_nothing) {
  pl::Queue<int> q(1);
  q.put_nowait(1);
  auto p = spawn(put(&q, 2));
  briefly();
  p.cancel();
  BOOST_CHECK_THROW(run(p), pl::CancelledError);
  BOOST_TEST(q.get_nowait() == 1);
  BOOST_TEST(q.empty());
}

// CPython test_queues.py: QueuePutTests.test_put_cancelled_race
BOOST_AUTO_TEST_CASE(a_putter_cancelled_before_room_appears_is_skipped) {
  pl::Queue<int> q(1);
  q.put_nowait(0);
  auto p1 = spawn(put(&q, 1));
  auto p2 = spawn(put(&q, 2));
  auto p3 = spawn(put(&q, 3));
  briefly();
  p1.cancel();
  briefly();
  BOOST_TEST(q.get_nowait() == 0);
  run(p2);
  BOOST_TEST(q.get_nowait() == 2);
  run(p3);
  BOOST_TEST(q.get_nowait() == 3);
  BOOST_TEST(p1.cancelled());
}

// CPython test_queues.py: QueuePutTests.test_put_cancel_drop
BOOST_AUTO_TEST_CASE(a_putter_cancelled_after_room_appeared_passes_the_room_on) {
  pl::Queue<int> q(1);
  q.put_nowait(0);
  auto p1 = spawn(put(&q, 1));
  auto p2 = spawn(put(&q, 2));
  briefly();
  BOOST_TEST(q.get_nowait() == 0);  // wakes p1
  p1.cancel();                      // before p1 runs
  BOOST_CHECK_THROW(run(p1), pl::CancelledError);
  run(p2);  // p2 got the room
  BOOST_TEST(q.get_nowait() == 2);
  BOOST_TEST(q.empty());
}

// CPython test_queues.py: QueuePutTests.test_put_with_waiting_getters
BOOST_AUTO_TEST_CASE(put_hands_the_item_to_a_waiting_getter) {
  pl::Queue<int> q;
  auto g = spawn(get(&q));
  briefly();
  run(put(&q, 'a'));
  BOOST_TEST(run(g) == 'a');
}

// CPython test_queues.py: QueuePutTests.test_why_are_putters_waiting
BOOST_AUTO_TEST_CASE(putters_waiting_on_a_full_queue_all_get_in_eventually) {
  pl::Queue<int> q(2);
  auto putter = [&](int i) -> pl::Task<> { co_await q.put(i); };
  std::vector<pl::Future<void>> ps;
  for (int i = 0; i < 5; ++i) ps.push_back(spawn(putter(i)));
  briefly();
  std::vector<int> got;
  auto getter = [&]() -> pl::Task<> {
    for (int i = 0; i < 5; ++i) got.push_back(co_await q.get());
  };
  run(getter());
  BOOST_TEST(got == std::vector<int>({0, 1, 2, 3, 4}));
  for (auto& p : ps) BOOST_TEST(p.done());
}

// CPython test_queues.py: QueuePutTests.test_cancelled_puts_not_being_held_in_self_putters
BOOST_AUTO_TEST_CASE(a_cancelled_putter_does_not_stay_in_the_queue) {
  pl::Queue<int> q(1);
  q.put_nowait(1);
  auto p = spawn(put(&q, 2));
  briefly();
  p.cancel();
  BOOST_CHECK_THROW(run(p), pl::CancelledError);
  BOOST_TEST(q.get_nowait() == 1);
  q.put_nowait(3);  // room, and no stale putter took it
  BOOST_TEST(q.get_nowait() == 3);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(join_tests, fx)

// CPython test_queues.py: _QueueJoinTestMixin.test_task_done_underflow
BOOST_AUTO_TEST_CASE(task_done_more_often_than_puts_throws_a_clear_error) {
  pl::Queue<int> q;
  BOOST_CHECK_EXCEPTION(q.task_done(), pl::OverReleaseError, message_has("more times"));
}

// CPython test_queues.py: _QueueJoinTestMixin.test_task_done
BOOST_AUTO_TEST_CASE(join_returns_once_every_item_is_done) {
  pl::Queue<int> q;
  for (int i = 0; i < 100; ++i) q.put_nowait(i);
  long accumulator = 0;
  bool running = true;
  auto worker = [&]() -> pl::Task<> {
    while (running) {
      int item = co_await q.get();
      accumulator += item;
      q.task_done();
    }
  };
  auto w1 = spawn(worker());
  auto w2 = spawn(worker());
  run(join(&q));
  BOOST_TEST(accumulator == 4950);
  running = false;
  w1.cancel();
  w2.cancel();
  BOOST_CHECK_THROW(run(w1), pl::CancelledError);
  BOOST_CHECK_THROW(run(w2), pl::CancelledError);
}

// CPython test_queues.py: _QueueJoinTestMixin.test_join_empty_queue
BOOST_AUTO_TEST_CASE(join_on_a_queue_with_nothing_unfinished_returns_at_once) {
  pl::Queue<int> q;
  run(join(&q));
  q.put_nowait(1);
  q.get_nowait();
  q.task_done();
  run(join(&q));
}

BOOST_AUTO_TEST_CASE(a_cancelled_join_throws_and_leaves_no_joiner) {
  pl::Queue<int> q;
  q.put_nowait(1);
  auto j = spawn(join(&q));
  briefly();
  j.cancel();
  BOOST_CHECK_THROW(run(j), pl::CancelledError);
  q.get_nowait();
  q.task_done();
  run(join(&q));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(shutdown_tests, fx)

// CPython test_queues.py: _QueueShutdownTestMixin.test_format / is_shutdown
BOOST_AUTO_TEST_CASE(is_shut_down_says_whether_shutdown_was_called) {
  pl::Queue<int> q;
  BOOST_TEST(!q.is_shut_down());
  q.shutdown();
  BOOST_TEST(q.is_shut_down());
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_empty
BOOST_AUTO_TEST_CASE(a_shut_down_empty_queue_refuses_put_and_get) {
  pl::Queue<int> q;
  q.shutdown();
  BOOST_CHECK_THROW(q.put_nowait(1), pl::QueueShutDown);
  BOOST_CHECK_THROW(run(put(&q, 1)), pl::QueueShutDown);
  BOOST_CHECK_THROW(q.get_nowait(), pl::QueueShutDown);
  BOOST_CHECK_EXCEPTION(run(get(&q)), pl::QueueShutDown, message_has("shut down"));
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_nonempty
BOOST_AUTO_TEST_CASE(a_shut_down_queue_still_gives_what_it_holds) {
  pl::Queue<int> q;
  q.put_nowait(1);
  q.shutdown();
  BOOST_CHECK_THROW(q.put_nowait(2), pl::QueueShutDown);
  BOOST_TEST(run(get(&q)) == 1);
  BOOST_CHECK_THROW(q.get_nowait(), pl::QueueShutDown);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_immediate
BOOST_AUTO_TEST_CASE(an_immediate_shutdown_drops_the_items) {
  pl::Queue<int> q;
  q.put_nowait(1);
  q.shutdown(true);
  BOOST_TEST(q.empty());
  BOOST_CHECK_THROW(run(get(&q)), pl::QueueShutDown);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_immediate_with_unfinished
BOOST_AUTO_TEST_CASE(an_immediate_shutdown_counts_dropped_items_as_done) {
  pl::Queue<int> q;
  q.put_nowait(1);
  q.put_nowait(2);
  q.get_nowait();  // got, not yet done
  auto j = spawn(join(&q));
  briefly();
  q.shutdown(true);  // drops item 2: one unfinished left
  briefly();
  BOOST_TEST(!j.done());
  q.task_done();
  run(j);
  BOOST_CHECK_THROW(q.task_done(), pl::OverReleaseError);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_putter
BOOST_AUTO_TEST_CASE(shutdown_wakes_a_waiting_putter_with_queue_shut_down) {
  pl::Queue<int> q(1);
  q.put_nowait(1);
  auto p = spawn(put(&q, 2));
  briefly();
  q.shutdown();
  BOOST_CHECK_THROW(run(p), pl::QueueShutDown);
  BOOST_TEST(q.qsize() == 1u);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_many_putters
BOOST_AUTO_TEST_CASE(shutdown_wakes_every_waiting_putter) {
  pl::Queue<int> q(1);
  q.put_nowait(0);
  std::vector<pl::Future<void>> ps;
  for (int i = 1; i <= 3; ++i) ps.push_back(spawn(put(&q, i)));
  briefly();
  q.shutdown();
  for (auto& p : ps) BOOST_CHECK_THROW(run(p), pl::QueueShutDown);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_getter
BOOST_AUTO_TEST_CASE(shutdown_wakes_every_waiting_getter) {
  pl::Queue<int> q;
  auto g1 = spawn(get(&q));
  auto g2 = spawn(get(&q));
  briefly();
  q.shutdown();
  BOOST_CHECK_THROW(run(g1), pl::QueueShutDown);
  BOOST_CHECK_THROW(run(g2), pl::QueueShutDown);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_join
BOOST_AUTO_TEST_CASE(join_after_an_immediate_shutdown_returns) {
  pl::Queue<int> q;
  q.put_nowait(1);
  auto j = spawn(join(&q));
  briefly();
  q.shutdown(true);
  run(j);
}

// CPython test_queues.py: _QueueShutdownTestMixin.test_shutdown_nonempty (join half)
BOOST_AUTO_TEST_CASE(a_plain_shutdown_leaves_join_waiting_for_the_items) {
  pl::Queue<int> q;
  q.put_nowait(1);
  auto j = spawn(join(&q));
  briefly();
  q.shutdown();
  briefly();
  BOOST_TEST(!j.done());
  q.get_nowait();
  q.task_done();
  run(j);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(loop_binding, fx)

// asyncio's _LoopBoundMixin, as CPython test_locks.py: ConditionTests.test_ambiguous_loops
// pins it for the locks: a second loop gets RuntimeError.
BOOST_AUTO_TEST_CASE(a_queue_awaited_from_a_second_loop_throws_a_clear_error) {
  pl::Queue<int> q;
  auto g = spawn(get(&q));
  briefly();
  auto other = make_loop();
  BOOST_CHECK_EXCEPTION(other->run_until_complete(get(&q)), pl::EventLoopError,
                        message_has("different event loop"));
  other->close();
  q.put_nowait(5);
  BOOST_TEST(run(g) == 5);
}

BOOST_AUTO_TEST_CASE(put_nowait_from_another_thread_throws_a_clear_error) {
  pl::Queue<int> q;
  auto g = spawn(get(&q));
  briefly();
  std::string error;
  std::thread other([&] {
    try {
      q.put_nowait(1);
    } catch (const pl::EventLoopError& e) {
      error = e.what();
    }
  });
  other.join();
  BOOST_TEST(error.find("another thread") != std::string::npos);
  BOOST_TEST(q.empty());
  q.put_nowait(2);
  BOOST_TEST(run(g) == 2);
}

BOOST_AUTO_TEST_CASE(a_queue_used_before_any_loop_runs_binds_to_the_first_loop) {
  pl::Queue<int> q;
  q.put_nowait(1);  // no loop yet: allowed, binds nothing
  BOOST_TEST(run(get(&q)) == 1);
  auto other = make_loop();
  BOOST_CHECK_THROW(other->run_until_complete(get(&q)), pl::EventLoopError);
  other->close();
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(allocation, fx)

BOOST_AUTO_TEST_CASE(the_allocation_counter_counts) {
  std::uint64_t before = allocation_count();
  auto p = std::make_unique<int>(1);
  BOOST_TEST(allocation_count() == before + 1);
}

// The speed rule, as a test: once the ring has grown and the tasks
// exist, passing items through a bounded queue (both sides waiting in turn)
// allocates nothing.
BOOST_AUTO_TEST_CASE(put_and_get_allocate_nothing_in_steady_state) {
  pl::Queue<long> q(8);
  const long n = 10'000;
  std::uint64_t during = 0;
  auto producer = [&]() -> pl::Task<> {
    for (long i = 0; i < n; ++i) co_await q.put(i);
  };
  auto consumer = [&]() -> pl::Task<long> {
    long sum = 0;
    std::uint64_t start = 0;
    for (long i = 0; i < n; ++i) {
      if (i == 100) start = allocation_count();  // warmed up
      sum += co_await q.get();
    }
    during = allocation_count() - start;
    co_return sum;
  };
  auto p = spawn(producer());
  BOOST_TEST(run(consumer()) == n * (n - 1) / 2);
  run(p);
  BOOST_TEST(during == 0u);
}

// The same for a contended Lock: acquire (waiting), release (waking).
BOOST_AUTO_TEST_CASE(contended_lock_acquire_and_release_allocate_nothing) {
  pl::Lock lock;
  std::uint64_t start = 0, end = 0;
  long rounds_done = 0;
  auto user = [&]() -> pl::Task<> {
    for (int i = 0; i < 1000; ++i) {
      auto held = co_await lock.scoped();
      if (++rounds_done == 100) start = allocation_count();  // warmed up
      if (rounds_done == 2900) end = allocation_count();     // before the tasks end
      co_await pl::sleep(0ms);
    }
  };
  auto a = spawn(user());
  auto b = spawn(user());
  auto c = spawn(user());
  run(a);
  run(b);
  run(c);
  BOOST_TEST(rounds_done == 3000);
  BOOST_TEST(end - start == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
