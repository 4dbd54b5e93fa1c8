// Tasks as asyncio lets a program see them: a TaskRef to any scheduled
// task whatever its result type, current_task(), all_tasks(loop), task
// names, and the cancelling()/uncancel() counters of Python 3.11.
//
// A TaskRef is a counted reference to a scheduled task (as a Future is);
// copies refer to the same task. Use from the loop's thread only.
//
// current_task() is awaited: `TaskRef me = co_await pl::current_task();`.
// A task learns which it is from the coroutine that suspends, so knowing it
// costs nothing on the paths that resume tasks; a plain function could only
// know it if every resume recorded it (asyncio's _enter_task), which is a
// store on every step of every task.
#pragma once

#include <coroutine>
#include <cstdint>
#include <string>
#include <vector>

#include "core/future/future.h"
#include "core/future/task_root.h"
#include "core/loop/event_loop.h"

namespace polyloop {

class TaskRef;
namespace detail {
// A TaskRef to the task `root` belongs to (a reference taken).
TaskRef task_ref(task_root& root) noexcept;
}  // namespace detail

class TaskRef {
 public:
  TaskRef() = default;
  // The task behind a Future that create_task() returned. Throws
  // InvalidStateError for a plain future or an empty one.
  template <class T>
  explicit TaskRef(const Future<T>& task) : TaskRef(detail::future_access::state(task)) {}
  TaskRef(const TaskRef& o) noexcept : state_(o.state_) {
    if (state_ != nullptr) state_->add_ref();
  }
  TaskRef(TaskRef&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  TaskRef& operator=(TaskRef o) noexcept {
    std::swap(state_, o.state_);
    return *this;
  }
  ~TaskRef() {
    if (state_ != nullptr) state_->release();
  }

  // False for a default-constructed or moved-from TaskRef. Every member
  // below throws InvalidStateError on an empty one.
  bool valid() const noexcept { return state_ != nullptr; }
  bool done() const { return st()->done(); }
  bool cancelled() const { return st()->cancelled(); }

  // The name given at create_task() or by set_name(), else "Task-N", N the
  // order in which its loop scheduled it.
  std::string get_name() const { return detail::task_name(root()); }
  void set_name(std::string name);

  // asyncio's Task.cancel(msg): see Future::cancel. Adds one to cancelling().
  bool cancel(std::string message = {}) { return st()->cancel_with(std::move(message)); }
  // How many cancel() requests are pending: cancel() adds one, uncancel()
  // takes one back (asyncio 3.11). timeout() and TaskGroup use them to tell
  // their own cancel from one that came from outside.
  std::uint32_t cancelling() const { return root().cancel_requests; }
  // Takes back one cancel() request and returns how many are left; at zero
  // a cancel not yet delivered to the task is dropped (asyncio 3.13).
  std::uint32_t uncancel() { return root().uncancel(); }

  EventLoop& get_loop() const { return st()->checked_loop(); }

  friend bool operator==(const TaskRef& a, const TaskRef& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  struct adopt_tag {};
  TaskRef(detail::future_state_base* s, adopt_tag) noexcept : state_(s) {}
  // Takes a reference.
  explicit TaskRef(detail::future_state_base* s);
  detail::future_state_base* st() const;
  detail::task_root& root() const { return *st()->as_task(); }
  friend TaskRef detail::task_ref(detail::task_root& root) noexcept;

  detail::future_state_base* state_ = nullptr;
};

namespace detail {
struct current_task_awaiter {
  TaskRef task;
  bool await_ready() const noexcept { return false; }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (task_root* root = root_of(h)) task = task_ref(*root);
    return false;  // never suspends
  }
  TaskRef await_resume() noexcept { return std::move(task); }
};
}  // namespace detail

// The task whose coroutine awaits this (asyncio.current_task()); an empty
// TaskRef in a coroutine no scheduled task runs.
inline detail::current_task_awaiter current_task() noexcept { return {}; }

// The tasks of `loop` that have not ended (asyncio.all_tasks), most
// recently scheduled first.
std::vector<TaskRef> all_tasks(EventLoop& loop);

}  // namespace polyloop
