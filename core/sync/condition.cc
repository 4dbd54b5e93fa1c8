#include "core/sync/condition.h"

#include <exception>

namespace polyloop {

Task<> Condition::wait() {
  bind_loop("Condition.wait()");
  if (!lock_->locked()) {
    throw InvalidStateError(
        "Condition.wait(): the lock is not acquired; acquire it first (co_await cond.scoped())");
  }
  lock_->release();
  std::exception_ptr error;
  try {
    co_await notified_awaiter(*this);
  } catch (...) {
    error = std::current_exception();
  }
  // The lock is taken again even if the wait was cancelled; a cancel while
  // reacquiring is kept and rethrown once it is held (CPython's loop).
  for (;;) {
    try {
      co_await lock_->acquire();
      break;
    } catch (const CancelledError&) {
      error = std::current_exception();
    }
  }
  if (error) {
    // This task may have been notified before the error: wake another one
    // instead, so the notification is not lost (a spurious wake-up at worst).
    wake(1);
    std::rethrow_exception(error);
  }
}

void Condition::notify(std::size_t n) {
  check_loop("Condition.notify()");
  if (!lock_->locked()) {
    throw InvalidStateError(
        "Condition.notify(): the lock is not acquired; notify with the lock held");
  }
  wake(n);
}

void Condition::wake(std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    detail::sync_waiter* w = waiters_.pop_front();
    if (w == nullptr) break;
    w->wake();
  }
}

}  // namespace polyloop
