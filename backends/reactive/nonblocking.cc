#include "backends/reactive/nonblocking.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "backends/support/sigpipe.h"

namespace polyloop::backends::reactive {

namespace {

// write(2) that fails with EPIPE instead of raising SIGPIPE, in the cheapest
// way this kernel and fd allow (the order is explained in sigpipe.h).
ssize_t write_without_sigpipe(const operation& op, backend_counters& counts,
                              write_hint* hint) noexcept {
  if (detail::kernel_has_rwf_nosignal()) {
    iovec iov{op.buf, op.len};
    ++counts.syscalls;
    ssize_t r = ::pwritev2(op.fd, &iov, 1, -1, detail::rwf_nosignal);
    // A file without write_iter (some character devices) refuses every
    // flag with EOPNOTSUPP: write to it the other way.
    if (r >= 0 || errno != EOPNOTSUPP) return r;
  }
  if (hint == nullptr || !hint->not_socket) {
    ++counts.syscalls;
    ssize_t r = ::send(op.fd, op.buf, op.len, MSG_NOSIGNAL);
    if (r >= 0 || errno != ENOTSOCK) return r;
    if (hint != nullptr) hint->not_socket = true;
  }
  ssize_t r;
  int err = 0;
  {
    detail::sigpipe_guard guard;
    ++counts.syscalls;
    r = ::write(op.fd, op.buf, op.len);
    if (r < 0) {
      err = errno;
      if (err == EPIPE) guard.consume_raised();
    }
  }  // the mask is restored here, before errno is set for the caller
  if (r < 0) errno = err;
  return r;
}

// Level check for op_kind::poll, and for whether a connect has finished.
short poll_now(int fd, short events, backend_counters& counts) noexcept {
  pollfd p{fd, events, 0};
  int r;
  do {
    ++counts.syscalls;
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r > 0 ? p.revents : 0;
}

}  // namespace

bool try_op(operation& op, backend_counters& counts, write_hint* hint) noexcept {
  ++counts.io_attempts;
  if (op.kind == op_kind::poll) {
    short revents = poll_now(op.fd, static_cast<short>(op.flags), counts);
    if (revents == 0) return false;
    op.result = revents;
    return true;
  }
  if (op.kind == op_kind::connect) {
    // Stale edges can arrive while the handshake runs: ask the socket.
    if (poll_now(op.fd, POLLOUT, counts) == 0) return false;
    int err = 0;
    socklen_t len = sizeof err;
    ++counts.syscalls;
    if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    op.result = -err;
    return true;
  }
  while (true) {
    ssize_t r = -1;
    // One syscall per case, counted in it (one add on the path taken);
    // write counts its own, as it may make more than one.
    switch (op.kind) {
      case op_kind::read:
        ++counts.syscalls;
        r = ::read(op.fd, op.buf, op.len);
        break;
      case op_kind::write:
        r = write_without_sigpipe(op, counts, hint);
        break;
      case op_kind::recv:
        ++counts.syscalls;
        r = ::recv(op.fd, op.buf, op.len, op.flags);
        break;
      case op_kind::send:
        ++counts.syscalls;
        r = ::send(op.fd, op.buf, op.len, op.flags | MSG_NOSIGNAL);
        break;
      case op_kind::recvmsg:
        ++counts.syscalls;
        r = ::recvmsg(op.fd, static_cast<msghdr*>(op.buf), op.flags);
        break;
      case op_kind::sendmsg:
        ++counts.syscalls;
        r = ::sendmsg(op.fd, static_cast<const msghdr*>(op.buf), op.flags | MSG_NOSIGNAL);
        break;
      case op_kind::accept: {
        ++counts.syscalls;
        socklen_t len = op.addrlen;
        r = ::accept4(op.fd, op.addr, op.addr != nullptr ? &len : nullptr,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (r >= 0) op.addrlen = len;
        break;
      }
      default:  // none made
        errno = EINVAL;
        break;
    }
    if (r >= 0) {
      op.result = r;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    op.result = -errno;
    return true;
  }
}

bool start_connect(operation& op, backend_counters& counts) noexcept {
  ++counts.io_attempts;
  ++counts.syscalls;
  // EINTR from a non-blocking connect means it goes on in the background.
  int r = ::connect(op.fd, op.addr, op.addrlen);
  if (r == 0 || (errno != EINPROGRESS && errno != EINTR)) {
    op.result = r == 0 ? 0 : -errno;
    return true;
  }
  return false;
}

void set_nonblocking(int fd, backend_counters& counts) noexcept {
  ++counts.syscalls;
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK) == 0) {
    ++counts.syscalls;
    ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  }
}

void close_now(operation& op, backend_counters& counts) noexcept {
  ++counts.syscalls;
  // No retry on EINTR: Linux has released the descriptor anyway.
  op.result = ::close(op.fd) == 0 ? 0 : -errno;
}

}  // namespace polyloop::backends::reactive
