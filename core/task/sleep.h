// sleep(duration): suspend the awaiting task for at least `duration`.
//
// sleep(0) yields exactly one loop iteration: the task goes to the back of
// the ready queue. A longer sleep is a loop timer, and timers never fire
// early. Cancelling the task ends the sleep at once with CancelledError.
// Must be awaited from a task running on a loop.
#pragma once

#include <chrono>
#include <coroutine>
#include <iosfwd>

#include "core/future/suspended_task.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"

namespace polyloop {

namespace detail {

class sleep_awaiter : public ready_node {
 public:
  // Copyable until awaited (ensure_future(sleep(d)) moves it into a task);
  // once suspended it must stay where it is, as every awaiter does.
  explicit sleep_awaiter(Clock::duration delay) noexcept : delay_(delay) { fn = &resume; }

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    waiter_ = h;
    root_ = root_of(h);
    EventLoop& loop = root_ != nullptr ? get_running_loop_of_task() : get_running_loop();
    if (delay_ <= Clock::duration::zero()) {
      loop_access::schedule(loop, this);
      timer_loop_ = nullptr;
    } else {
      timer_ = loop.call_later(delay_, [this] { waiter_.resume(); });
      timer_loop_ = &loop;  // from here on in place of delay_
    }
    if (root_ != nullptr) root_->suspend_on({&waits_on, this});
  }
  void await_resume() const {
    if (root_ != nullptr) root_->resume_point();
  }

 private:
  // A running polyloop task runs on the running loop.
  static EventLoop& get_running_loop_of_task() { return *running_loop(); }
  static void resume(ready_node* n, ready_node::action what) {
    if (what == ready_node::action::run) static_cast<sleep_awaiter*>(n)->waiter_.resume();
  }
  static bool on_cancel(void* p) {
    auto* self = static_cast<sleep_awaiter*>(p);
    // sleep(0) is already queued and will resume the task; a timer is
    // replaced by an immediate resume.
    if (self->timer_loop_ != nullptr) {
      self->timer_.cancel();
      loop_access::schedule(*self->timer_loop_, self);
    }
    return false;
  }
  // "sleep until 12.500000 s (in 250.000 ms)" (introspection.cc).
  static void describe(const void* self, std::ostream& out);
  static constexpr wait_kind waits_on{&on_cancel, &describe};

  // What suspended_task keeps, less the loop: only a timer needs it, and
  // it takes the place of the delay once the timer is set.
  std::coroutine_handle<> waiter_;
  task_root* root_ = nullptr;
  union {
    Clock::duration delay_;    // until suspended
    EventLoop* timer_loop_;    // once suspended: the timer's loop, or null for sleep(0)
  };
  TimerHandle timer_;  // its when() is what dump_tasks() shows
};

}  // namespace detail

template <class Rep, class Period>
detail::sleep_awaiter sleep(std::chrono::duration<Rep, Period> delay) {
  // Rounded up, so that a sleep is never shorter than asked.
  return detail::sleep_awaiter(std::chrono::ceil<Clock::duration>(delay));
}

}  // namespace polyloop
