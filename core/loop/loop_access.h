// detail::loop_access: the plumbing of EventLoop that polyloop's own layers
// (futures, tasks, io, net, the policies) need and users must not call.
// EventLoop keeps these members private; this passkey-like accessor is the
// one door to them, so the public class reads as asyncio's loop API.
#pragma once

#include "core/backend/backend.h"
#include "core/backend/ready_queue.h"
#include "core/loop/event_loop.h"

namespace polyloop::detail {

struct loop_access {
  // Throws EventLoopError if the loop is closed.
  static void check_open(const EventLoop& loop) { loop.check_open(); }
  // Throws EventLoopError if the loop is closed, running, or another loop
  // runs on this thread.
  static void check_can_run(const EventLoop& loop) { loop.check_can_run(); }
  // The loop's backend, to start and cancel operations (throws if closed).
  static Backend& backend(EventLoop& loop) { return loop.backend(); }
  // Puts `node` on the ready queue: it runs in the next iteration.
  static void schedule(EventLoop& loop, ready_node* node) { loop.schedule(node); }
  // Every live future state is linked into its loop (see EventLoop::close).
  static void link_state(EventLoop& loop, state_link* s) noexcept { loop.link_state(s); }
  static void unlink_state(EventLoop& loop, state_link* s) noexcept { loop.unlink_state(s); }
};

}  // namespace polyloop::detail
