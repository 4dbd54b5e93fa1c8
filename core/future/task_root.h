// How cancellation reaches a suspended task.
//
// A scheduled task and every coroutine it awaits inline share one task_root.
// Whatever the task suspends on (a timer, a future, an I/O operation)
// registers a cancel_hook there; Task cancel() calls it. The awaiter's
// await_resume() calls resume_point(), which throws CancelledError if a
// cancel arrived — the only places a task can see one, as in asyncio.
#pragma once

#include <coroutine>
#include <cstdint>
#include <iosfwd>
#include <source_location>
#include <string>
#include <type_traits>

#include "core/errors/errors.h"
#include "core/loop/stepping_task.h"

namespace polyloop {
class EventLoop;
}

namespace polyloop::detail {

// What a task can be suspended on: one static instance per awaiter type,
// so that registering a wait stays two stores (the kind and the awaiter).
struct wait_kind {
  // Ends the wait early: cancels what is awaited and makes sure the task
  // resumes soon; never resumes it inline. Returns true if it handed the
  // cancel on to what the task awaits (a future or task that may still
  // decline it, as asyncio's Task.cancel() does with _fut_waiter); false if
  // the task itself must see CancelledError when it resumes.
  bool (*cancel)(void* self);
  // Writes what the task waits on, for EventLoop::dump_tasks(): "sleep
  // until ...", "read on fd 7", "gather of 3", ... (no newline).
  void (*describe)(const void* self, std::ostream& out);
};

struct cancel_hook {
  const wait_kind* kind = nullptr;  // null: the task is not suspended on anything
  void* self = nullptr;             // the awaiter
};

class future_state_base;

// (A suspended task's loop is the one that was running it: the awaiter
// keeps it, see suspended_task, so the root need not.)
//
// 32 bytes in every task frame. The counters and the number fill what
// was padding; only task_state is new (8 bytes: current_task() needs the
// way from the root back to the task).
struct task_root {
  cancel_hook waiting;
  // The scheduled task this is the root of; null in the promise of a
  // coroutine awaited inline (its root is its awaiter's).
  future_state_base* task_state = nullptr;
  bool must_cancel = false;  // deliver CancelledError at the next resume_point
  // The loop keeps a name or a cancel message for this task (task_notes).
  bool has_notes = false;
  // asyncio's Task.cancelling(): cancel() calls not yet taken back by
  // uncancel(). Saturates at 65535.
  std::uint16_t cancel_requests = 0;
  std::uint32_t number = 0;  // "Task-N": the order in which its loop scheduled it

  // Called by an awaiter as the task suspends on it.
  void suspend_on(cancel_hook hook) {
    waiting = hook;
    // cancel() came while the task was running: cancel this wait now.
    if (must_cancel) take(hook);
  }
  // The task's cancel(): ends the wait it is suspended on early, and unless
  // the hook handed the cancel on, a CancelledError reaches the task at its
  // next resume_point.
  void request_cancel() {
    must_cancel = true;
    if (waiting.kind != nullptr) take(waiting);
  }
  // Called by an awaiter as the task resumes from it. Notes which task's
  // step runs (the slow-callback report of debug mode names it); only the
  // kind is cleared, so the two stores stay two.
  void resume_point();
  // asyncio's Task.uncancel(): takes back one cancel() request; at zero, a
  // cancel not yet delivered is dropped too (Python 3.13). Returns what is left.
  std::uint32_t uncancel() noexcept {
    if (cancel_requests != 0 && --cancel_requests == 0) must_cancel = false;
    return cancel_requests;
  }
  // The message of the last cancel(message), or "" (future.cc).
  std::string cancel_message() const;
  // CancelledError with the cancel message (future.cc).
  [[noreturn]] void throw_cancelled();

 private:
  void take(cancel_hook hook) {
    if (hook.kind->cancel(hook.self)) {
      must_cancel = false;  // handed on; a second cancel() hands it on again
    } else {
      waiting.kind = nullptr;  // a hook that resumes the task must run only once
    }
  }
};

inline void task_root::resume_point() {
  waiting.kind = nullptr;
  stepping_task = this;
  if (must_cancel) [[unlikely]] throw_cancelled();
}

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
