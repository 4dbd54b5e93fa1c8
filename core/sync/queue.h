// Queue, LifoQueue, PriorityQueue: asyncio's queues, for the tasks of one loop.
//
//   pl::Queue<std::string> q(128);      // maxsize 128; 0 means unbounded
//   co_await q.put("job");              // waits while the queue is full
//   std::string job = co_await q.get(); // waits while it is empty
//   q.task_done();                      // and co_await q.join() elsewhere
//
// put()/get() wait (first come first served), put_nowait()/get_nowait()
// throw QueueFull/QueueEmpty instead. shutdown() (Python 3.13) makes put()
// throw QueueShutDown at once and get() once the queue is empty;
// shutdown(true) also drops the items; every waiting task wakes up to see it.
// A getter woken by a put but cancelled before it resumed leaves the item in
// the queue and wakes the next getter: no item is lost. T may be move-only.
// Threads and lifetime as Lock (lock.h); waiting allocates nothing, and the
// storage stops allocating once it has grown to the queue's working size.
#pragma once

#include <coroutine>
#include <cstddef>
#include <functional>
#include <utility>

#include "core/sync/queue_storage.h"
#include "core/sync/sync_errors.h"
#include "core/sync/waiters.h"

namespace polyloop {

namespace detail {

template <class T, class Storage>
class basic_queue : private loop_bound {
  class get_awaiter;
  class put_awaiter;
  class join_awaiter;

 public:
  explicit basic_queue(std::size_t maxsize = 0) : maxsize_(maxsize) {}

  std::size_t maxsize() const noexcept { return maxsize_; }
  std::size_t qsize() const noexcept { return items_.size(); }
  bool empty() const noexcept { return items_.empty(); }
  bool full() const noexcept { return maxsize_ != 0 && items_.size() >= maxsize_; }
  bool is_shut_down() const noexcept { return shut_down_; }

  // `co_await q.put(item)`: waits while the queue is full; throws
  // QueueShutDown if it is (or gets) shut down.
  put_awaiter put(T item) { return put_awaiter(*this, std::move(item)); }
  // `co_await q.get()`: waits while the queue is empty; throws QueueShutDown
  // once it is shut down and empty.
  get_awaiter get() noexcept { return get_awaiter(*this); }
  // Throw QueueFull / QueueEmpty instead of waiting (and QueueShutDown).
  void put_nowait(T item) {
    check_loop("Queue.put_nowait()");
    if (shut_down_) throw QueueShutDown("Queue.put_nowait(): the queue is shut down");
    if (full()) throw QueueFull("Queue.put_nowait(): the queue is full; await put() to wait");
    push(std::move(item));
  }
  T get_nowait() {
    check_loop("Queue.get_nowait()");
    return take("Queue.get_nowait()");
  }

  // One item got earlier has been processed. Throws OverReleaseError if
  // called more often than items were put.
  void task_done() {
    check_loop("Queue.task_done()");
    if (unfinished_ == 0) {
      throw OverReleaseError(
          "Queue.task_done(): called more times than there were items put in the queue");
    }
    if (--unfinished_ == 0) wake_all(joiners_);
  }
  // `co_await q.join()`: waits until every item put has been task_done().
  join_awaiter join() noexcept { return join_awaiter(*this); }

  // Shuts the queue down (see above); with `immediate`, drops what it holds
  // (counting each as done, so join() returns).
  void shutdown(bool immediate = false) {
    check_loop("Queue.shutdown()");
    shut_down_ = true;
    if (immediate) {
      while (!items_.empty()) {
        items_.pop();
        if (unfinished_ > 0) --unfinished_;
      }
      if (unfinished_ == 0) wake_all(joiners_);
    }
    wake_all(getters_);
    wake_all(putters_);
  }

 private:
  void push(T&& item) {
    items_.push(std::move(item));
    ++unfinished_;
    wake_next(getters_);
  }
  T take(const char* what) {
    if (items_.empty()) {
      if (shut_down_) throw QueueShutDown(std::string(what) + ": the queue is shut down and empty");
      throw QueueEmpty(std::string(what) + ": the queue is empty; await get() to wait");
    }
    T item = items_.pop();
    wake_next(putters_);
    return item;
  }
  static void wake_next(waiter_list& list) {
    if (sync_waiter* w = list.pop_front()) w->wake();
  }
  static void wake_all(waiter_list& list) {
    while (sync_waiter* w = list.pop_front()) w->wake();
  }

  // What get and put share: suspend in a list; when woken, look again before
  // resuming the task, and wait again (at the back, as asyncio's loop does)
  // if another task took the item or the room first.
  template <class Derived>
  class waiter_base : public sync_waiter {
   public:
    explicit waiter_base(basic_queue& q) noexcept : q_(&q) { fn = &on_ready; }
    template <class Promise>
    void wait_in(std::coroutine_handle<Promise> h, waiter_list& list, const char* what) {
      EventLoop& loop = q_->bind_loop(what);
      suspended_ = true;
      this->suspend_in(h, loop, list);
    }
    // In await_resume: if cancelled, hands a wake-up it got on, and throws.
    void check_cancel(waiter_list& list, bool can_proceed) {
      if (!suspended_ || (st == state::woken && !cancel_pending())) return;
      if (st == state::woken && can_proceed) wake_next(list);
      throw_cancelled();
    }

   protected:
    basic_queue* q_;

   private:
    static void on_ready(ready_node* n, ready_node::action what) {
      if (what != ready_node::action::run) return;
      auto* self = static_cast<Derived*>(n);
      if (self->st == state::woken && !self->cancel_pending() && self->must_wait()) {
        self->st = state::waiting;
        self->wait_list().push_back(self);
        return;
      }
      self->task.waiter.resume();
    }
    bool suspended_ = false;
  };

  class get_awaiter : public waiter_base<get_awaiter> {
   public:
    using waiter_base<get_awaiter>::waiter_base;
    bool await_ready() {
      this->q_->check_loop("Queue.get()");
      return !must_wait();
    }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      this->wait_in(h, this->q_->getters_, "Queue.get()");
    }
    T await_resume() {
      this->check_cancel(this->q_->getters_, !this->q_->items_.empty());
      return this->q_->take("Queue.get()");
    }
    bool must_wait() const noexcept { return this->q_->items_.empty() && !this->q_->shut_down_; }
    waiter_list& wait_list() noexcept { return this->q_->getters_; }
  };

  class put_awaiter : public waiter_base<put_awaiter> {
   public:
    put_awaiter(basic_queue& q, T&& item) : waiter_base<put_awaiter>(q), item_(std::move(item)) {}
    bool await_ready() {
      this->q_->check_loop("Queue.put()");
      return !must_wait();
    }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      this->wait_in(h, this->q_->putters_, "Queue.put()");
    }
    void await_resume() {
      this->check_cancel(this->q_->putters_, !this->q_->full());
      if (this->q_->shut_down_) throw QueueShutDown("Queue.put(): the queue is shut down");
      this->q_->push(std::move(item_));
    }
    bool must_wait() const noexcept { return this->q_->full() && !this->q_->shut_down_; }
    waiter_list& wait_list() noexcept { return this->q_->putters_; }

   private:
    T item_;
  };

  class join_awaiter : public sync_waiter {
   public:
    explicit join_awaiter(basic_queue& q) noexcept : q_(&q) {}
    bool await_ready() {
      q_->check_loop("Queue.join()");
      return q_->unfinished_ == 0;
    }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      EventLoop& loop = q_->bind_loop("Queue.join()");
      suspended_ = true;
      suspend_in(h, loop, q_->joiners_);
    }
    void await_resume() {
      if (suspended_ && (st != state::woken || cancel_pending())) throw_cancelled();
    }

   private:
    basic_queue* q_;
    bool suspended_ = false;
  };

  Storage items_;
  std::size_t maxsize_;
  std::size_t unfinished_ = 0;  // put and not yet task_done()
  waiter_list getters_{"Queue.get"};
  waiter_list putters_{"Queue.put"};
  waiter_list joiners_{"Queue.join"};
  bool shut_down_ = false;
};

}  // namespace detail

// First in, first out.
template <class T>
class Queue : public detail::basic_queue<T, detail::fifo_storage<T>> {
 public:
  using detail::basic_queue<T, detail::fifo_storage<T>>::basic_queue;
};

// Last in, first out.
template <class T>
class LifoQueue : public detail::basic_queue<T, detail::lifo_storage<T>> {
 public:
  using detail::basic_queue<T, detail::lifo_storage<T>>::basic_queue;
};

// Smallest first, by Compare (items that compare equal come out in no set
// order; put (priority, sequence) pairs for FIFO among equals, as asyncio
// advises).
template <class T, class Compare = std::less<T>>
class PriorityQueue : public detail::basic_queue<T, detail::priority_storage<T, Compare>> {
 public:
  using detail::basic_queue<T, detail::priority_storage<T, Compare>>::basic_queue;
};

}  // namespace polyloop
