// File operations as awaitables: pread, pwrite, fsync, fdatasync, openat,
// statx and close, none of which blocks the loop's thread.
//
//   std::size_t n = co_await polyloop::async_pread(fd, buf, sizeof buf, offset);
//
// A backend with backend_traits::native_file_ops (io_uring) performs them
// itself; on the others (epoll, asio: a regular file cannot be waited on by
// readiness) the syscall runs on the loop's default executor. Each returns
// the syscall's result (bytes, a new fd, 0) and throws std::system_error
// naming the call for an error.
//
// Cancelling the awaiting task cancels the operation. It then throws
// CancelledError, unless the operation had already run, in which case its
// result is returned (no byte read or written is lost) and the cancel reaches
// the task at its next suspension, as core/io.h's operations do.
//
// On the executor path the thread's syscall works on memory the call owns,
// never the caller's: a read lands in the call's buffer and is copied into
// the caller's when the task resumes; a write's bytes, a path and a statx
// result are copied the same way. So a cancel ends the wait at once, even
// while a thread is blocked in the syscall (a read of a pipe or FIFO nobody
// writes, an openat of a FIFO nobody opens for writing): the thread runs
// on, and what it returns is dropped (an fd openat returned is closed; bytes
// a read took from a pipe are lost, as with a cancelled to_thread). One call
// moves at most max_executor_transfer bytes, so a larger pread or pwrite is
// short (File's read_all and write_at loop). The loop's close() does not wait
// for such a thread either: it is left to end by itself (core/executor).
// Each executor call allocates its state (and a read's or write's buffer);
// the native path allocates nothing.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/backend/backend.h"
#include "core/executor/executor.h"
#include "core/future/future.h"
#include "core/io/io.h"

namespace polyloop {

namespace detail {

// Performs a file operation's syscall on the calling thread (blocking):
// the result, or -errno.
std::int64_t perform_file_op(const operation& request) noexcept;

struct file_call;  // the executor path's call (file_ops.cc)

// The most one executor-path pread or pwrite moves: its bounce buffer.
inline constexpr std::size_t max_executor_transfer = std::size_t{1} << 20;

class file_awaiter : public io_awaiter {
 public:
  file_awaiter(op_kind k, int file, void* buffer, std::size_t length, int op_flags) noexcept
      : io_awaiter(k, file, buffer, length, op_flags) {}
  file_awaiter(file_awaiter&& o) noexcept : io_awaiter(std::move(o)) {}
  ~file_awaiter();

  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    if (loop_access::backend(get_running_loop()).traits().native_file_ops) {
      io_awaiter::await_suspend(h);
      return;
    }
    task.bind(h);
    start_on_executor();
    task.cancellable_by({&waits_on, this});
  }
  std::int64_t await_resume() { return io_awaiter::await_resume(); }

 private:
  friend struct file_call;
  void start_on_executor();
  // Loop thread: the call returned; takes its result and resumes the task.
  void complete_from(file_call& call) noexcept;
  static bool on_cancel(void* self) noexcept;
  // "pread on fd 5, on the default executor" (file_ops.cc).
  static void describe(const void* self, std::ostream& out);
  static constexpr wait_kind waits_on{&on_cancel, &describe};

  std::shared_ptr<file_call> call_;  // the executor path's call, while it is awaited
};

}  // namespace detail

// preadv2 / pwritev2 at `offset` (-1: at the file position, which it moves):
// bytes transferred; 0 from a read: end of file. A write may be short.
inline detail::file_awaiter async_pread(int fd, void* buf, std::size_t len,
                                        std::int64_t offset) noexcept {
  detail::file_awaiter a{op_kind::pread, fd, buf, len, 0};
  a.offset = offset;
  return a;
}
inline detail::file_awaiter async_pwrite(int fd, const void* buf, std::size_t len,
                                         std::int64_t offset) noexcept {
  detail::file_awaiter a{op_kind::pwrite, fd, const_cast<void*>(buf), len, 0};
  a.offset = offset;
  return a;
}
// fsync(2) / fdatasync(2).
inline detail::file_awaiter async_fsync(int fd) noexcept {
  return {op_kind::fsync, fd, nullptr, 0, 0};
}
inline detail::file_awaiter async_fdatasync(int fd) noexcept {
  return {op_kind::fsync, fd, nullptr, 0, 1};  // IORING_FSYNC_DATASYNC
}
// openat(2): the new fd. `path` must stay valid until it completes. Pass
// O_CLOEXEC yourself if you want it (File::open does).
inline detail::file_awaiter async_openat(int dirfd, const char* path, int flags,
                                         mode_t mode = 0666) noexcept {
  detail::file_awaiter a{op_kind::openat, dirfd, nullptr, mode, flags};
  a.path = path;
  return a;
}
// statx(2) into *out; `path` and `out` must stay valid until it completes.
// For an open fd: async_statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &st).
inline detail::file_awaiter async_statx(int dirfd, const char* path, int flags, unsigned mask,
                                        struct statx* out) noexcept {
  detail::file_awaiter a{op_kind::statx, dirfd, out, mask, flags};
  a.path = path;
  return a;
}
// close(2) of an fd used only with the operations here (on a backend
// without native_file_ops it is closed on the executor, not through the
// backend: close fds that had core/io.h operations with async_close()).
inline detail::file_awaiter async_close_file(int fd) noexcept {
  return {op_kind::close, fd, nullptr, 0, 0};
}

}  // namespace polyloop
