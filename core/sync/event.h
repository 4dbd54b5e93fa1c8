// Event: asyncio.Event, a flag tasks can wait for.
//
// set() wakes every task waiting now; each of them returns from wait() even
// if clear() runs before it resumes. Threads and lifetime as Lock (lock.h).
#pragma once

#include <coroutine>

#include "core/sync/waiters.h"

namespace polyloop {

class Event : private detail::loop_bound {
  class wait_awaiter;

 public:
  Event() = default;

  bool is_set() const noexcept { return set_; }
  // Sets the flag and wakes every waiting task.
  void set();
  // Resets the flag: later wait()s block until the next set().
  void clear();
  // `co_await event.wait()`: returns at once if set, else when set() is called.
  wait_awaiter wait() noexcept { return wait_awaiter(*this); }

 private:
  class wait_awaiter : public detail::sync_waiter {
   public:
    explicit wait_awaiter(Event& e) noexcept : event_(&e) {}
    bool await_ready() {
      event_->check_loop("Event.wait()");
      return event_->set_;
    }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      EventLoop& loop = event_->bind_loop("Event.wait()");
      suspended_ = true;
      suspend_in(h, loop, event_->waiters_);
    }
    void await_resume() {
      if (suspended_ && (st != state::woken || cancel_pending())) throw_cancelled();
    }

   private:
    Event* event_;
    bool suspended_ = false;
  };

  detail::waiter_list waiters_{"Event.wait"};
  bool set_ = false;
};

}  // namespace polyloop
