// What the readiness-based backends (epoll, asio) share: the syscalls they
// make themselves, chiefly one non-blocking attempt at an operation. Each
// function counts what it does in the backend's `counts` (backend_counters:
// syscalls, and io_attempts for try_op and start_connect).
#pragma once

#include "core/backend/backend.h"

namespace polyloop::backends::reactive {

// What a backend remembers per fd for try_op's writes. Reset it (with the
// rest of the fd's state) when the backend forgets the fd.
struct write_hint {
  bool not_socket = false;  // send() answered ENOTSOCK: write() it is
};

// Tries `op` once, never blocking. Returns false if it would block (EAGAIN,
// a connect still in progress, a poll not yet ready); otherwise sets
// op.result (>= 0, or -errno) and returns true. EINTR is retried. A connect
// must already have been started with ::connect: this only checks whether
// it finished. Not for op_kind::close.
//
// A write to a pipe or socket whose reader is gone fails with EPIPE and
// raises no SIGPIPE (backends/support/sigpipe.h says how); `hint`, if
// given, spares the fallback for kernels without RWF_NOSIGNAL a send() per
// write to a non-socket.
bool try_op(operation& op, backend_counters& counts, write_hint* hint = nullptr) noexcept;

// Starts a connect on the non-blocking socket: true if it already finished
// (op.result set: 0 or -errno), false if it goes on in the background (then
// wait for writability and finish it with try_op).
bool start_connect(operation& op, backend_counters& counts) noexcept;

// Makes `fd` non-blocking (the backends issue the syscalls themselves).
void set_nonblocking(int fd, backend_counters& counts) noexcept;

// Closes op.fd and sets op.result (0 or -errno), for op_kind::close once the
// backend has forgotten the fd.
void close_now(operation& op, backend_counters& counts) noexcept;

}  // namespace polyloop::backends::reactive
