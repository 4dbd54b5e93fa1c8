// close_orphaned_fd: closing the fd of a stream or datagram endpoint whose
// last handle went without close(). Shared by net/stream.cc and
// net/datagram.cc, whose states' destructors need exactly this.
#pragma once

#include <cerrno>
#include <memory>
#include <utility>

#include "core/backend/backend.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"
#include "net/detail/sockets.h"

namespace polyloop::net::detail {

// The close a destructor starts. Its result stays -ECANCELED unless the
// backend performed it; if it never was (the loop closed first), the fd is
// closed through the loop's socket calls when the operation goes.
struct orphan_close final : operation {
  EventLoop* loop = nullptr;
  Future<> closed;
  static void done(polyloop::detail::ready_node* n, polyloop::detail::ready_node::action what) {
    auto* self = static_cast<orphan_close*>(n);
    // Discarded: the loop is closing, and drops `closed`'s callback.
    if (what == polyloop::detail::ready_node::action::run) self->closed.set_result();
  }
  ~orphan_close() {
    if (result == -ECANCELED) sockets_of(*loop).close(fd);
  }
};

// Closes `fd` through the backend if the loop still runs (so the backend
// forgets the fd first), else through the loop's socket calls (the sim
// backend's stand-in numbers are its own: a plain ::close would free a
// number the sim still holds). Nothing if `fd` is negative. Never throws.
//
// The operation is owned by the done callback of a future it completes: if
// the loop closes first, shutdown() never hands the operation back, but
// close() drops the future's callbacks, and the operation with them (a bare
// `new` leaked 80 bytes under LeakSanitizer). A future, not a task: a
// pending task at close() is reported, and this close is no user's.
inline void close_orphaned_fd(EventLoop& loop, int fd) noexcept {
  if (fd < 0) return;  // closed already
  if (!loop.is_closed()) {
    try {
      auto op = std::make_unique<orphan_close>();
      op->fn = &orphan_close::done;
      op->kind = op_kind::close;
      op->result = -ECANCELED;
      op->loop = &loop;
      op->closed = loop.create_future<>();
      orphan_close& started = *op;
      Future<> closed = op->closed;
      op->fd = std::exchange(fd, -1);  // from here, the operation closes it
      // The callback owns the operation; it goes once the callback has run,
      // or when the loop's close() drops it.
      closed.add_done_callback([owner = std::move(op)](const Future<>&) {});
      polyloop::detail::loop_access::backend(loop).start(started);
      return;
    } catch (...) {  // no memory: closed below, unless the operation took it
    }
  }
  if (fd >= 0) sockets_of(loop).close(fd);
}

}  // namespace polyloop::net::detail
