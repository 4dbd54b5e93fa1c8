// detail plumbing of core/sync: the intrusive FIFO of suspended tasks every
// primitive keeps, and the binding of a primitive to one loop.
//
// A waiter lives in the awaiter, that is in the suspended task's frame:
// waiting allocates nothing. Single-threaded: the loop's thread only (the
// binding below makes any other use an error).
#pragma once

#include <coroutine>
#include <cstdint>
#include <iosfwd>
#include <thread>

#include "core/errors/invariant.h"
#include "core/future/suspended_task.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"

namespace polyloop::detail {

class waiter_list;

struct sync_waiter : ready_node {
  enum class state : std::uint8_t {
    waiting,    // linked, not yet woken
    woken,      // the primitive woke it (it may still be linked: Lock, Semaphore)
    cancelled,  // a cancel ended the wait before any wake-up
  };
  sync_waiter* prev = nullptr;
  sync_waiter* next = nullptr;
  waiter_list* list = nullptr;  // the list it is linked into, if any
  suspended_task task;
  state st = state::waiting;

  sync_waiter() noexcept { fn = &resume_awaiter<sync_waiter>; }
  sync_waiter(const sync_waiter&) = delete;
  sync_waiter& operator=(const sync_waiter&) = delete;
  // A frame destroyed while suspended (the loop closed) leaves no dangling link.
  ~sync_waiter();

  // In await_suspend: remember the task (on `loop`, the running one), queue
  // up in `list`, and take the task's cancels.
  template <class Promise>
  void suspend_in(std::coroutine_handle<Promise> h, EventLoop& loop, waiter_list& list) noexcept;
  // True when the task was cancelled: its next resume_point() throws.
  bool cancel_pending() const noexcept { return task.root != nullptr && task.root->must_cancel; }
  // Puts the waiter on its loop's ready queue (fn runs next iteration).
  void schedule() { loop_access::schedule(*task.loop, this); }
  // Marks it woken and schedules it; a task whose loop closed can never run
  // again, so it is only marked.
  void wake() {
    st = state::woken;
    if (!task.loop->is_closed()) [[likely]]
      schedule();
  }
  // The cancel hook of every wait: a waiter not yet woken leaves its list and
  // resumes (to throw CancelledError); a woken one is already queued, and its
  // await_resume decides what to hand on.
  static bool on_cancel(void* self);
  // "Lock 0x...": the primitive's list it waits in (waiters.cc).
  static void describe(const void* self, std::ostream& out);
  static constexpr wait_kind waits_on{&on_cancel, &describe};
  // Throws CancelledError: the task's (resume_point), or one of its own if
  // the cancel was withdrawn after it ended this wait.
  [[noreturn]] void throw_cancelled();
};

// Doubly linked, so that a cancelled waiter leaves from anywhere in O(1).
class waiter_list {
 public:
  // `what` names the wait in dump_tasks(): "Lock.acquire", "Queue.get", ...
  explicit waiter_list(const char* what = "a synchronization primitive") noexcept
      : what_(what) {}
  const char* what() const noexcept { return what_; }
  waiter_list(const waiter_list&) = delete;
  waiter_list& operator=(const waiter_list&) = delete;
  // Unlinks whatever is left (a primitive destroyed with tasks still waiting,
  // which can only happen once their loop closed).
  ~waiter_list();

  bool empty() const noexcept { return head_ == nullptr; }
  sync_waiter* front() const noexcept { return head_; }
  void push_back(sync_waiter* w) noexcept {
    POLYLOOP_INVARIANT(w->list == nullptr, "a waiter linked twice");
    w->list = this;
    w->prev = tail_;
    w->next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
  }
  void remove(sync_waiter* w) noexcept {
    POLYLOOP_INVARIANT(w->list == this, "a waiter unlinked from a list it is not in");
    (w->prev != nullptr ? w->prev->next : head_) = w->next;
    (w->next != nullptr ? w->next->prev : tail_) = w->prev;
    w->prev = w->next = nullptr;
    w->list = nullptr;
  }
  sync_waiter* pop_front() noexcept {
    sync_waiter* w = head_;
    if (w != nullptr) remove(w);
    return w;
  }

 private:
  sync_waiter* head_ = nullptr;
  sync_waiter* tail_ = nullptr;
  const char* what_;
};

template <class Promise>
void sync_waiter::suspend_in(std::coroutine_handle<Promise> h, EventLoop& loop,
                             waiter_list& list) noexcept {
  task.waiter = h;
  task.root = root_of(h);
  task.loop = &loop;
  list.push_back(this);
  task.cancellable_by({&waits_on, this});
}

inline sync_waiter::~sync_waiter() {
  if (list != nullptr) list->remove(this);
}

// asyncio's _LoopBoundMixin: a primitive binds to the loop that first runs
// code using it, and from then on any use from another loop, or from another
// thread, throws EventLoopError instead of racing. Use on the binding
// thread while its loop is not running (between run_until_complete calls)
// is allowed, as asyncio allows it.
class loop_bound {
 public:
  loop_bound() = default;
  loop_bound(const loop_bound&) = delete;
  loop_bound& operator=(const loop_bound&) = delete;

 protected:
  // For an operation that may wake waiters (or does not need a loop).
  void check_loop(const char* what) {
    EventLoop* running = running_loop();
    if (running != loop_) [[unlikely]]
      check_slow(running, what);
  }
  // For an operation that suspends: must run on a loop; binds to it.
  EventLoop& bind_loop(const char* what) {
    EventLoop* running = running_loop();
    if (running == nullptr || running != loop_) [[unlikely]]
      bind_slow(running, what);
    return *running;
  }

 private:
  [[gnu::noinline]] void check_slow(EventLoop* running, const char* what);
  [[gnu::noinline]] void bind_slow(EventLoop* running, const char* what);

  EventLoop* loop_ = nullptr;
  std::thread::id thread_;
};

}  // namespace polyloop::detail
