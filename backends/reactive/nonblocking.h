// What the readiness-based backends (epoll, asio) share: the syscalls they
// make themselves, chiefly one non-blocking attempt at an operation.
#pragma once

#include "core/backend/backend.h"

namespace polyloop::backends::reactive {

// Tries `op` once, never blocking. Returns false if it would block (EAGAIN,
// a connect still in progress, a poll not yet ready); otherwise sets
// op.result (>= 0, or -errno) and returns true. EINTR is retried. A connect
// must already have been started with ::connect: this only checks whether
// it finished. Not for op_kind::close.
bool try_op(operation& op) noexcept;

// Starts a connect on the non-blocking socket: true if it already finished
// (op.result set: 0 or -errno), false if it goes on in the background (then
// wait for writability and finish it with try_op).
bool start_connect(operation& op) noexcept;

// Makes `fd` non-blocking (the backends issue the syscalls themselves).
void set_nonblocking(int fd) noexcept;

// Closes op.fd and sets op.result (0 or -errno), for op_kind::close once the
// backend has forgotten the fd.
void close_now(operation& op) noexcept;

}  // namespace polyloop::backends::reactive
