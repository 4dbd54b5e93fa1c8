#include "core/sync/waiters.h"

#include <ostream>
#include <string>

namespace polyloop::detail {

bool sync_waiter::on_cancel(void* self) {
  auto* w = static_cast<sync_waiter*>(self);
  if (w->st == state::waiting) {
    if (w->list != nullptr) w->list->remove(w);
    w->st = state::cancelled;
    w->schedule();
  }
  return false;
}

void sync_waiter::describe(const void* self, std::ostream& out) {
  auto* w = static_cast<const sync_waiter*>(self);
  if (w->list != nullptr) {
    out << w->list->what() << " (" << static_cast<const void*>(w->list) << ")";
  } else {
    out << (w->st == state::woken ? "a synchronization primitive that woke it (resumes next)"
                                  : "a synchronization primitive (cancelled; resumes next)");
  }
}

void sync_waiter::throw_cancelled() {
  task.resume_point();
  throw CancelledError();
}

waiter_list::~waiter_list() {
  while (pop_front() != nullptr) {
  }
}

void loop_bound::check_slow(EventLoop* running, const char* what) {
  if (loop_ == nullptr) {
    if (running != nullptr) {
      loop_ = running;
      thread_ = std::this_thread::get_id();
    }
    return;  // unbound and no loop: nothing can be waiting, nothing to race
  }
  if (running == nullptr && std::this_thread::get_id() == thread_) return;
  bind_slow(running, what);
}

void loop_bound::bind_slow(EventLoop* running, const char* what) {
  if (running == nullptr) {
    if (loop_ != nullptr && std::this_thread::get_id() != thread_) {
      throw EventLoopError(std::string(what) +
                           ": used from another thread than the one running the event loop it is "
                           "bound to; use it only from that loop's tasks and callbacks (hand work "
                           "over with call_soon_threadsafe)");
    }
    throw EventLoopError(std::string(what) +
                         ": no event loop is running; await it from a task running on a loop");
  }
  if (loop_ == nullptr) {
    loop_ = running;
    thread_ = std::this_thread::get_id();
    return;
  }
  if (running != loop_) {
    throw EventLoopError(std::string(what) +
                         ": this object is bound to a different event loop (the first one that "
                         "used it); make one per loop");
  }
}

}  // namespace polyloop::detail
