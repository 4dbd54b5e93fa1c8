#include "core/sync/lock.h"

namespace polyloop {

void Lock::release() {
  check_loop("Lock.release()");
  if (!locked_) {
    throw InvalidStateError(
        "Lock.release(): the lock is not acquired; release only a lock this task acquired");
  }
  locked_ = false;
  wake_first();
}

void Lock::wake_first() {
  detail::sync_waiter* first = waiters_.front();
  if (first != nullptr && first->st == detail::sync_waiter::state::waiting) first->wake();
}

void Lock::acquired_after_wait(acquire_awaiter& w) {
  if (w.list != nullptr) waiters_.remove(&w);
  if (w.st != detail::sync_waiter::state::woken || w.cancel_pending()) {
    // Cancelled, possibly after release() woke this waiter: the lock is not
    // ours, so the next waiter must get its turn (CPython test_locks.py:
    // LockTests.test_finished_waiter_cancelled).
    if (!locked_) wake_first();
    w.throw_cancelled();
  }
  locked_ = true;
}

}  // namespace polyloop
