#include "core/sync/semaphore.h"

#include <stdexcept>
#include <string>

namespace polyloop {

Semaphore::Semaphore(long value) : value_(value) {
  if (value < 0) {
    throw std::invalid_argument("Semaphore: the initial value must be >= 0, not " +
                                std::to_string(value));
  }
}

void Semaphore::release() {
  check_loop("Semaphore.release()");
  ++value_;
  wake_up_next();
}

// Wakes the first waiter not woken yet, reserving a permit for it.
bool Semaphore::wake_up_next() {
  for (detail::sync_waiter* w = waiters_.front(); w != nullptr; w = w->next) {
    if (w->st == detail::sync_waiter::state::waiting) {
      --value_;
      w->wake();
      return true;
    }
  }
  return false;
}

void Semaphore::acquired_after_wait(acquire_awaiter& w) {
  if (w.list != nullptr) waiters_.remove(&w);
  bool cancelled = w.st != detail::sync_waiter::state::woken || w.cancel_pending();
  // Woken, then cancelled: the permit reserved for it goes back.
  if (cancelled && w.st == detail::sync_waiter::state::woken) ++value_;
  // Tasks that queued behind this one (FIFO) get the permits left.
  while (value_ > 0 && wake_up_next()) {
  }
  if (cancelled) w.throw_cancelled();
}

void BoundedSemaphore::release() {
  if (value() >= bound_) {
    throw OverReleaseError(
        "BoundedSemaphore.release(): released too many times (more releases "
        "than acquires; the bound is " +
        std::to_string(bound_) + ")");
  }
  Semaphore::release();
}

}  // namespace polyloop
