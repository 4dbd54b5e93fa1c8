// Low-level I/O on the loop's backend: each call is one Backend operation,
// awaited by a task. The operation lives in the awaiting frame; nothing is
// allocated.
//
//   std::size_t n = co_await polyloop::async_read(fd, buf, sizeof buf);
//
// Each returns the syscall's result (bytes, a new fd, poll revents, 0) and
// throws std::system_error naming the call for an error. Cancelling the task
// cancels the operation: it then throws CancelledError — unless the
// operation had already finished, in which case its result is returned (so
// no data read or written is lost) and the cancel reaches the task at its
// next suspension. Close an fd used here with async_close(), so the backend
// forgets it before its number is reused.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <iosfwd>
#include <system_error>
#include <utility>

#include "core/backend/backend.h"
#include "core/errors/invariant.h"
#include "core/future/suspended_task.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"

namespace polyloop {

namespace detail {

class io_awaiter : public operation {
 public:
  io_awaiter(op_kind k, int file, void* buffer, std::size_t length, int op_flags,
             sockaddr* address = nullptr, socklen_t address_len = 0,
             socklen_t* address_len_out = nullptr) noexcept
      : addrlen_out_(address_len_out) {
    fn = &resume_awaiter<io_awaiter>;
    kind = k;
    fd = file;
    buf = buffer;
    len = length;
    flags = op_flags;
    addr = address;
    addrlen = address_len;
  }
  // Movable until awaited, so that it can be handed to wait_for() or
  // timeout() by value; once started, the backend holds its address.
  io_awaiter(io_awaiter&& o) noexcept : operation(o), addrlen_out_(o.addrlen_out_) {
    POLYLOOP_INVARIANT(o.task.waiter == nullptr, "an io_awaiter moved after it was awaited");
  }
  io_awaiter(const io_awaiter&) = delete;
  io_awaiter& operator=(const io_awaiter&) = delete;

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    task.bind(h);
    Backend& backend = loop_access::backend(*task.loop);
    ++loop_access::counts(*task.loop).ops_started[static_cast<std::size_t>(kind)];
    backend.start(*this);
    task.cancellable_by({&waits_on, this});
  }
  std::int64_t await_resume();

  suspended_task task;

 private:
  static bool on_cancel(void* self) {
    auto* me = static_cast<io_awaiter*>(self);
    loop_access::backend(*me->task.loop).cancel(*me);
    return false;
  }

 protected:
  // "recv on fd 7" (io.cc).
  static void describe(const void* self, std::ostream& out);

 private:
  static constexpr wait_kind waits_on{&on_cancel, &describe};

  // await_resume's failures (result < 0): CancelledError for a cancel that
  // took effect, else std::system_error naming the call.
  [[noreturn, gnu::noinline, gnu::cold]] void throw_failure() const;

  socklen_t* addrlen_out_;  // accept: where to report the peer's length
};

// recvfrom(2) / sendto(2) as one recvmsg / sendmsg operation (io_uring has
// no recvfrom): the msghdr and its iovec live here, in the awaiting frame,
// and are pointed at each other only once the awaiter is in place.
class msg_awaiter {
 public:
  msg_awaiter(op_kind k, int file, void* buffer, std::size_t length, int op_flags,
              sockaddr* address, socklen_t address_len, socklen_t* address_len_out) noexcept
      : op_(k, file, nullptr, 0, op_flags), addrlen_out_(address_len_out) {
    iov_ = {buffer, length};
    msg_.msg_name = address;
    msg_.msg_namelen = address != nullptr ? address_len : 0;
  }
  msg_awaiter(msg_awaiter&& o) noexcept
      : op_(std::move(o.op_)), msg_(o.msg_), iov_(o.iov_), addrlen_out_(o.addrlen_out_) {}
  msg_awaiter(const msg_awaiter&) = delete;
  msg_awaiter& operator=(const msg_awaiter&) = delete;

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    msg_.msg_iov = &iov_;
    msg_.msg_iovlen = 1;
    op_.buf = &msg_;
    op_.await_suspend(h);
  }
  std::int64_t await_resume() {
    std::int64_t n = op_.await_resume();
    if (addrlen_out_ != nullptr) *addrlen_out_ = msg_.msg_namelen;
    return n;
  }

 private:
  io_awaiter op_;
  msghdr msg_{};
  iovec iov_{};
  socklen_t* addrlen_out_;  // recvfrom: where to report the sender's length
};

}  // namespace detail

// read(2) / write(2): bytes transferred (0 from read: end of file).
inline detail::io_awaiter async_read(int fd, void* buf, std::size_t len) noexcept {
  return {op_kind::read, fd, buf, len, 0};
}
inline detail::io_awaiter async_write(int fd, const void* buf, std::size_t len) noexcept {
  return {op_kind::write, fd, const_cast<void*>(buf), len, 0};
}
// recv(2) / send(2) on a socket (send never raises SIGPIPE).
inline detail::io_awaiter async_recv(int fd, void* buf, std::size_t len, int flags = 0) noexcept {
  return {op_kind::recv, fd, buf, len, flags};
}
inline detail::io_awaiter async_send(int fd, const void* buf, std::size_t len,
                                     int flags = 0) noexcept {
  return {op_kind::send, fd, const_cast<void*>(buf), len, flags};
}
// accept4(2): the connected socket, non-blocking and close-on-exec. `addr`
// and `addrlen` may be null; if given, *addrlen is the capacity in and the
// peer address length out.
inline detail::io_awaiter async_accept(int fd, sockaddr* addr = nullptr,
                                       socklen_t* addrlen = nullptr) noexcept {
  return {op_kind::accept, fd, nullptr, 0, 0, addr, addrlen != nullptr ? *addrlen : 0, addrlen};
}
// connect(2) on a socket; `addr` must stay valid until it completes.
inline detail::io_awaiter async_connect(int fd, const sockaddr* addr, socklen_t addrlen) noexcept {
  return {op_kind::connect, fd, nullptr, 0, 0, const_cast<sockaddr*>(addr), addrlen};
}
// recvmsg(2) / sendmsg(2) on a socket: bytes received or sent. `msg` and
// every buffer it names (iovecs, name, control) must stay valid until the
// operation completes. recvmsg fills in msg's msg_namelen, msg_controllen and
// msg_flags (MSG_TRUNC: the datagram was longer than the buffers, and the
// rest is lost; MSG_CTRUNC: control data, such as passed fds, did not fit).
// Pass MSG_CMSG_CLOEXEC to receive fds close-on-exec. sendmsg never raises
// SIGPIPE.
inline detail::io_awaiter async_recvmsg(int fd, msghdr* msg, int flags = 0) noexcept {
  return {op_kind::recvmsg, fd, msg, 0, flags};
}
inline detail::io_awaiter async_sendmsg(int fd, const msghdr* msg, int flags = 0) noexcept {
  return {op_kind::sendmsg, fd, const_cast<msghdr*>(msg), 0, flags};
}
// recvfrom(2): bytes received (with MSG_TRUNC in `flags`, a datagram's real
// length even when longer than `len`). `addr` and `addrlen` may be null; if
// given, *addrlen is the capacity in and the sender's address length out.
// One recvmsg operation, so it is "recvmsg" in errors.
inline detail::msg_awaiter async_recvfrom(int fd, void* buf, std::size_t len, int flags = 0,
                                          sockaddr* addr = nullptr,
                                          socklen_t* addrlen = nullptr) noexcept {
  return {op_kind::recvmsg, fd, buf, len, flags, addr, addrlen != nullptr ? *addrlen : 0,
          addrlen};
}
// sendto(2): bytes sent; `addr` null on a connected socket. Never raises
// SIGPIPE. One sendmsg operation, so it is "sendmsg" in errors.
inline detail::msg_awaiter async_sendto(int fd, const void* buf, std::size_t len, int flags,
                                        const sockaddr* addr, socklen_t addrlen) noexcept {
  return {op_kind::sendmsg, fd, const_cast<void*>(buf), len, flags, const_cast<sockaddr*>(addr),
          addrlen, nullptr};
}
// Waits until `fd` is ready for any of `events` (POLLIN and/or POLLOUT): revents.
inline detail::io_awaiter async_poll(int fd, short events) noexcept {
  return {op_kind::poll, fd, nullptr, 0, events};
}
// close(2), after the backend forgets the fd (its pending operations end
// with CancelledError).
inline detail::io_awaiter async_close(int fd) noexcept {
  return {op_kind::close, fd, nullptr, 0, 0};
}

}  // namespace polyloop
