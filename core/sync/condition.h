// Condition: asyncio.Condition, a condition variable over a Lock.
//
//   auto held = co_await cond.scoped();
//   co_await cond.wait_for([&] { return !items.empty(); });
//
// wait() releases the lock, waits for notify(), and takes the lock again
// before it returns, even when cancelled (the CancelledError comes once the
// lock is held again). A task cancelled after it was notified passes the
// notification on (asyncio 3.13), so a notify is never lost; a spurious
// wake-up is possible, hence wait_for(predicate). notify() and wait() need
// the lock held, else InvalidStateError. Threads and lifetime as Lock.
#pragma once

#include <coroutine>
#include <cstddef>
#include <limits>

#include "core/sync/lock.h"
#include "core/sync/waiters.h"
#include "core/task/task.h"

namespace polyloop {

class Condition : private detail::loop_bound {
 public:
  // A condition with a lock of its own.
  Condition() : lock_(&own_lock_) {}
  // A condition over `lock`, which must outlive it (several conditions may
  // share one lock).
  explicit Condition(Lock& lock) : lock_(&lock) {}

  // The lock's members, for convenience (asyncio's Condition has them too).
  bool locked() const noexcept { return lock_->locked(); }
  auto acquire() noexcept { return lock_->acquire(); }
  auto scoped() noexcept { return lock_->scoped(); }
  void release() { lock_->release(); }

  // Releases the lock, waits until notified, takes the lock again.
  Task<> wait();
  // Waits until pred() is true (checked first, and after every wake-up),
  // with the lock held throughout except while waiting.
  template <class Predicate>
  Task<> wait_for(Predicate pred) {
    while (!pred()) co_await wait();
  }
  // Wakes up to n waiting tasks (asyncio: notify(n=1)).
  void notify(std::size_t n = 1);
  void notify_all() { notify(std::numeric_limits<std::size_t>::max()); }

 private:
  struct notified_awaiter : detail::sync_waiter {
    Condition* cond;
    explicit notified_awaiter(Condition& c) noexcept : cond(&c) {}
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      // Condition::wait() bound the condition to this loop before.
      suspend_in(h, get_running_loop(), cond->waiters_);
    }
    void await_resume() {
      if (st != state::woken || cancel_pending()) throw_cancelled();
    }
  };
  void wake(std::size_t n);

  Lock own_lock_;
  Lock* lock_;
  detail::waiter_list waiters_{"Condition.wait"};
};

}  // namespace polyloop
