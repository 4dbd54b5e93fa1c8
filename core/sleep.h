// sleep(duration): suspend the awaiting task for at least `duration`.
//
// sleep(0) yields exactly one loop iteration: the task goes to the back of
// the ready queue. A longer sleep is a loop timer, and timers never fire
// early. Cancelling the task ends the sleep at once with CancelledError.
// Must be awaited from a task running on a loop.
#pragma once

#include <chrono>
#include <coroutine>

#include "core/detail/suspended_task.h"
#include "core/event_loop.h"

namespace polyloop {

namespace detail {

class sleep_awaiter : public ready_node {
 public:
  // Copyable until awaited (ensure_future(sleep(d)) moves it into a task);
  // once suspended it must stay where it is, as every awaiter does.
  explicit sleep_awaiter(Clock::duration delay) noexcept : delay_(delay) {
    fn = &resume_awaiter<sleep_awaiter>;
  }

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    task.bind(h);
    if (delay_ <= Clock::duration::zero()) {
      task.loop->schedule(this);
    } else {
      timer_ = task.loop->call_later(delay_, [this] { task.waiter.resume(); });
    }
    task.cancellable_by({&on_cancel, this});
  }
  void await_resume() const { task.resume_point(); }

  suspended_task task;

 private:
  static bool on_cancel(void* p) {
    auto* self = static_cast<sleep_awaiter*>(p);
    // sleep(0) is already queued and will resume the task; a timer is
    // replaced by an immediate resume.
    if (self->delay_ > Clock::duration::zero()) {
      self->timer_.cancel();
      self->task.loop->schedule(self);
    }
    return false;
  }

  Clock::duration delay_;
  TimerHandle timer_;
};

}  // namespace detail

template <class Rep, class Period>
detail::sleep_awaiter sleep(std::chrono::duration<Rep, Period> delay) {
  // Rounded up, so that a sleep is never shorter than asked.
  return detail::sleep_awaiter(std::chrono::ceil<Clock::duration>(delay));
}

}  // namespace polyloop
