// Lock: asyncio.Lock, a mutual-exclusion lock for the tasks of one loop.
//
//   auto guard = co_await lock.scoped();  // released when guard goes, exception or not
//   // or: co_await lock.acquire(); ... lock.release();
//
// Fair: waiters get the lock in the order they asked; a task asking while
// others wait queues behind them even if the lock is free at that moment.
// Cancellation-safe as asyncio's: a cancelled acquire leaves nothing held,
// and a waiter cancelled after release() woke it passes the wake-up on.
// Threads: bound to the loop that first uses it (see core/sync/waiters.h);
// other loops and threads get EventLoopError. Waiting allocates nothing.
// Must outlive the tasks waiting on it.
#pragma once

#include <coroutine>

#include "core/sync/guard.h"
#include "core/sync/waiters.h"

namespace polyloop {

class Lock : private detail::loop_bound {
  class acquire_awaiter;

 public:
  Lock() = default;

  bool locked() const noexcept { return locked_; }
  // `co_await lock.acquire()`: returns once this task holds the lock.
  acquire_awaiter acquire() noexcept { return acquire_awaiter(*this); }
  // `co_await lock.scoped()`: acquire(), and a Guard that releases.
  auto scoped() noexcept;
  // Releases the lock and wakes the first waiter. Throws InvalidStateError
  // if the lock is not held.
  void release();

 private:
  class acquire_awaiter : public detail::sync_waiter {
   public:
    explicit acquire_awaiter(Lock& lock) noexcept : lock_(&lock) {}
    bool await_ready() {
      lock_->check_loop("Lock.acquire()");
      if (lock_->locked_ || !lock_->waiters_.empty()) return false;
      lock_->locked_ = true;
      return true;
    }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      EventLoop& loop = lock_->bind_loop("Lock.acquire()");
      suspended_ = true;
      suspend_in(h, loop, lock_->waiters_);
    }
    void await_resume() {
      if (suspended_) lock_->acquired_after_wait(*this);
    }

   protected:
    Lock* lock_;
    bool suspended_ = false;
  };

  void acquired_after_wait(acquire_awaiter& w);
  void wake_first();

  detail::waiter_list waiters_{"Lock.acquire"};  // waiting, and a woken one until it runs
  bool locked_ = false;
};

inline auto Lock::scoped() noexcept {
  struct scoped_awaiter : acquire_awaiter {
    using acquire_awaiter::acquire_awaiter;
    Guard<Lock> await_resume() {
      acquire_awaiter::await_resume();
      return Guard<Lock>(*lock_);
    }
  };
  return scoped_awaiter(*this);
}

}  // namespace polyloop
