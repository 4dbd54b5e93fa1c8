// What every awaiter that suspends a task keeps: the coroutine to resume,
// the task's cancel point (null for a coroutine that is not a polyloop
// task), and the loop it runs on.
#pragma once

#include <coroutine>

#include "core/backend/ready_queue.h"
#include "core/future/task_root.h"
#include "core/loop/event_loop.h"

namespace polyloop::detail {

struct suspended_task {
  std::coroutine_handle<> waiter;
  task_root* root = nullptr;
  EventLoop* loop = nullptr;

  // In await_suspend: remember who is suspending, and on which loop.
  template <class Promise>
  void bind(std::coroutine_handle<Promise> h) {
    root = root_of(h);
    loop = &get_running_loop();  // a task suspends only while its loop runs it
    waiter = h;
  }
  // Registers where a cancel of the task reaches this wait.
  void cancellable_by(cancel_hook hook) {
    if (root != nullptr) root->suspend_on(hook);
  }
  // In await_resume: throws CancelledError if the task was cancelled.
  void resume_point() const {
    if (root != nullptr) root->resume_point();
  }
};

// A ready_node function that resumes Awaiter::task.waiter: an awaiter that
// is a ready_node puts itself on the ready queue to be resumed.
template <class Awaiter>
void resume_awaiter(ready_node* n, ready_node::action what) {
  if (what == ready_node::action::run) static_cast<Awaiter*>(n)->task.waiter.resume();
}

}  // namespace polyloop::detail
