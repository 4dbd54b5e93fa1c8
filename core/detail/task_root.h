// How cancellation reaches a suspended task.
//
// A scheduled task and every coroutine it awaits inline share one task_root.
// Whatever the task suspends on (a timer, a future, an I/O operation)
// registers a cancel_hook there; Task cancel() calls it. The awaiter's
// await_resume() calls resume_point(), which throws CancelledError if a
// cancel arrived — the only places a task can see one, as in asyncio.
#pragma once

#include <coroutine>
#include <type_traits>

#include "core/errors.h"

namespace polyloop {
class EventLoop;
}

namespace polyloop::detail {

struct cancel_hook {
  // Ends the wait early: cancels what is awaited and makes sure the task
  // resumes soon. Must not resume it inline.
  void (*fn)(void* self) = nullptr;
  void* self = nullptr;
};

struct task_root {
  EventLoop* loop = nullptr;
  cancel_hook waiting;
  bool must_cancel = false;  // deliver CancelledError at the next resume_point

  // Called by an awaiter as the task suspends on it.
  void suspend_on(cancel_hook hook) {
    waiting = hook;
    if (must_cancel) {
      // cancel() came while the task was running: cancel this wait now.
      waiting = {};
      hook.fn(hook.self);
    }
  }
  // The task's cancel(): a CancelledError reaches it at its next
  // resume_point; if it is suspended, the wait ends early.
  void request_cancel() {
    must_cancel = true;
    if (waiting.fn != nullptr) {
      cancel_hook hook = waiting;
      waiting = {};
      hook.fn(hook.self);
    }
  }
  // Called by an awaiter as the task resumes from it.
  void resume_point() {
    waiting = {};
    if (must_cancel) {
      must_cancel = false;
      throw CancelledError();
    }
  }
};

// Every polyloop coroutine promise derives from this.
struct promise_base {
  task_root* root = nullptr;
};

template <class Promise>
task_root* root_of(std::coroutine_handle<Promise> h) noexcept {
  if constexpr (std::is_base_of_v<promise_base, Promise>) {
    return h.promise().root;
  } else {
    return nullptr;
  }
}

}  // namespace polyloop::detail
