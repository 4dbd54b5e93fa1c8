// Semaphore and BoundedSemaphore: asyncio's counters of permits.
//
//   pl::Semaphore slots(10);
//   auto permit = co_await slots.scoped();  // released when permit goes
//
// acquire() takes a permit or waits, first come first served; release()
// returns one and hands it to the first waiter (the permit is reserved for
// that waiter, as asyncio does, and returned if it is cancelled before it
// resumes). BoundedSemaphore::release() beyond the initial value throws
// OverReleaseError. Threads and lifetime as Lock (lock.h).
#pragma once

#include <coroutine>
#include <cstddef>

#include "core/sync/guard.h"
#include "core/sync/sync_errors.h"
#include "core/sync/waiters.h"

namespace polyloop {

class Semaphore : private detail::loop_bound {
  class acquire_awaiter;

 public:
  // Throws std::invalid_argument for a negative value.
  explicit Semaphore(long value = 1);

  // True if acquire() would wait: no permit, or tasks already waiting.
  bool locked() const noexcept { return value_ == 0 || !waiters_.empty(); }
  // Permits left (asyncio's _value; reserved ones for woken waiters excluded).
  long value() const noexcept { return value_; }
  acquire_awaiter acquire() noexcept { return acquire_awaiter(*this); }
  auto scoped() noexcept;
  // Returns a permit and wakes the first waiter.
  void release();

 private:
  class acquire_awaiter : public detail::sync_waiter {
   public:
    explicit acquire_awaiter(Semaphore& s) noexcept : sem_(&s) {}
    bool await_ready() {
      sem_->check_loop("Semaphore.acquire()");
      if (sem_->locked()) return false;
      --sem_->value_;
      return true;
    }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      EventLoop& loop = sem_->bind_loop("Semaphore.acquire()");
      suspended_ = true;
      suspend_in(h, loop, sem_->waiters_);
    }
    void await_resume() {
      if (suspended_) sem_->acquired_after_wait(*this);
    }

   protected:
    Semaphore* sem_;
    bool suspended_ = false;
  };

  void acquired_after_wait(acquire_awaiter& w);
  bool wake_up_next();

  detail::waiter_list waiters_{"Semaphore.acquire"};  // waiting, and woken ones until they run
  long value_;
};

inline auto Semaphore::scoped() noexcept {
  struct scoped_awaiter : acquire_awaiter {
    using acquire_awaiter::acquire_awaiter;
    Guard<Semaphore> await_resume() {
      acquire_awaiter::await_resume();
      return Guard<Semaphore>(*sem_);
    }
  };
  return scoped_awaiter(*this);
}

class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(long value = 1) : Semaphore(value), bound_(value) {}
  // Throws OverReleaseError if that would make more permits than the
  // initial value.
  void release();

 private:
  long bound_;
};

}  // namespace polyloop
