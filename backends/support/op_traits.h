// What kind of wait each operation kind needs, for the backends'
// bookkeeping: which readiness it waits for, and whether a non-blocking fd
// can answer it with EAGAIN. One place, so that the backends cannot disagree.
#pragma once

#include <poll.h>

#include "core/backend/backend.h"

namespace polyloop::detail {

// read, recv, recvmsg and accept consume input; write, send, sendmsg and
// connect wait for output. (A poll waits for what its flags ask; close waits
// for nothing.)
constexpr bool waits_for_input(op_kind k) noexcept {
  return k == op_kind::read || k == op_kind::recv || k == op_kind::accept ||
         k == op_kind::recvmsg;
}

// The kinds that are one syscall a non-blocking fd answers with EAGAIN when
// it is not ready: they are retried once the fd is ready. (connect reports
// EINPROGRESS and is finished differently; poll and close never wait.)
constexpr bool retries_on_eagain(op_kind k) noexcept {
  return waits_for_input(k) || k == op_kind::write || k == op_kind::send ||
         k == op_kind::sendmsg || k == op_kind::pread || k == op_kind::pwrite;
}

// The kinds whose write(2) to a pipe or socket with no reader raises SIGPIPE
// (a pwrite at the file position, offset -1, can reach a pipe).
constexpr bool may_raise_sigpipe(op_kind k) noexcept {
  return k == op_kind::write || k == op_kind::pwrite;
}

// The readiness `op` waits for, as poll(2) events: its flags for a poll,
// else POLLIN or POLLOUT by its direction. Not for op_kind::close.
constexpr unsigned readiness_events(const operation& op) noexcept {
  if (op.kind == op_kind::poll) return static_cast<unsigned>(op.flags);
  return waits_for_input(op.kind) || op.kind == op_kind::pread ? POLLIN : POLLOUT;
}

}  // namespace polyloop::detail
