#include "core/sync/event.h"

namespace polyloop {

void Event::set() {
  check_loop("Event.set()");
  if (set_) return;
  set_ = true;
  while (detail::sync_waiter* w = waiters_.pop_front()) w->wake();
}

void Event::clear() {
  check_loop("Event.clear()");
  set_ = false;
}

}  // namespace polyloop
