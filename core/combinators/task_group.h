// TaskGroup: structured concurrency (asyncio.TaskGroup).
//
//   co_await pl::task_group([&](pl::TaskGroup tg) -> pl::Task<> {
//     tg.create_task(fetch("a"));
//     tg.create_task(fetch("b"));
//     co_return;
//   });  // both have ended here
//
// task_group(body) runs `body` inline in the awaiting task, then waits
// until every task started in the group has ended, and only then returns.
// The first failure of a child (an exception; a cancelled child is not a
// failure) cancels the other children and the body; once all have ended,
// the scope throws one ExceptionGroup holding every failure (the body's
// own exception included). A cancel of the enclosing task cancels the
// children, and leaves the scope as CancelledError once they have ended.
//
// Why a block and not an object: C++ has no async destructor, so a group
// object could not wait for its children when its scope ends. task_group()
// is that scope: nothing can leave it while a child runs. The TaskGroup
// handle the body gets is a counted reference, so a copy that escapes
// (into a child, or further) cannot dangle: create_task() on it after the
// scope ended throws InvalidStateError ("finished"), as does one while the
// group is cancelling its children ("shutting down").
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/task/introspection.h"
#include "core/task/task.h"

namespace polyloop {

namespace detail {

struct task_group_access;

class task_group_state {
 public:
  explicit task_group_state(TaskRef parent);
  task_group_state(const task_group_state&) = delete;
  task_group_state& operator=(const task_group_state&) = delete;

  EventLoop& loop() const { return parent_.get_loop(); }
  // Throws InvalidStateError if no child may be added now.
  void check_can_add() const;
  // Watches a child just scheduled.
  void add(future_state_base& child, const std::shared_ptr<task_group_state>& self);
  // asyncio's __aexit__: `body_error` is what the body threw (or null).
  Task<> exit(std::exception_ptr body_error, bool body_cancelled);

 private:
  struct child;
  void on_child_done(child& c);
  void abort();

  TaskRef parent_;
  child* children_ = nullptr;  // pending children (an intrusive list)
  std::vector<std::exception_ptr> errors_;
  Future<> all_done_;  // while exit() waits
  bool exiting_ = false;
  bool aborting_ = false;
  bool parent_cancel_requested_ = false;
  bool finished_ = false;
};

}  // namespace detail

// Where a task_group's body starts children. A counted handle: copies
// refer to the same group.
class TaskGroup {
 public:
  // Schedules `task` in the group (with `name`, if given) and returns its
  // Future. Throws InvalidStateError once the group's scope has ended or
  // while it is cancelling its children.
  template <class T>
  Future<T> create_task(Task<T> task, std::string name = {}) {
    state_->check_can_add();
    Future<T> f = state_->loop().create_task(std::move(task), std::move(name));
    state_->add(*detail::future_access::state(f), state_);
    return f;
  }

 private:
  friend struct detail::task_group_access;
  explicit TaskGroup(std::shared_ptr<detail::task_group_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::task_group_state> state_;
};

namespace detail {
struct task_group_access {
  static TaskGroup make(std::shared_ptr<detail::task_group_state> s) {
    return TaskGroup(std::move(s));
  }
};

template <class B>
using group_body_result_t =
    typename std::invoke_result_t<B&, TaskGroup>::value_type;  // body returns a Task<R>

template <class B, class R = group_body_result_t<B>>
Task<R> run_task_group(B body) {
  TaskRef parent = co_await current_task();
  if (!parent.valid()) {
    throw EventLoopError(
        "task_group: must be awaited by a task (create_task or run_until_complete): its "
        "children's failures cancel that task");
  }
  auto state = std::make_shared<task_group_state>(std::move(parent));
  std::exception_ptr body_error;
  bool body_cancelled = false;
  std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> result;
  try {
    if constexpr (std::is_void_v<R>) {
      co_await body(task_group_access::make(state));
    } else {
      result.emplace(co_await body(task_group_access::make(state)));
    }
  } catch (const CancelledError&) {
    body_error = std::current_exception();
    body_cancelled = true;
  } catch (...) {
    body_error = std::current_exception();
  }
  co_await state->exit(body_error, body_cancelled);
  if constexpr (!std::is_void_v<R>) co_return std::move(*result);
}
}  // namespace detail

// Runs body(TaskGroup) (a callable returning a Task<R>) and waits for
// every task it started in the group; returns the body's result. See the
// top of this file for failures and cancellation. Must be awaited by a task.
template <class B>
auto task_group(B body) {
  return detail::run_task_group(std::move(body));
}

}  // namespace polyloop
