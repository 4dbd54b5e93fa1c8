#include "core/file/file_ops.h"

#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

namespace polyloop::detail {

namespace {

std::int64_t result_of(ssize_t r) noexcept { return r >= 0 ? r : -errno; }

// A write at the file position (offset -1) can reach a pipe whose reader is
// gone; on a pool thread SIGPIPE is blocked around it and taken back if the
// call raised it, so it never kills the process (backends/support/sigpipe.h
// does the same on the loop's thread).
std::int64_t pwrite_without_sigpipe(const operation& r, const iovec& iov) noexcept {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  sigset_t pending;
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  ssize_t n;
  do {
    n = ::pwritev2(r.fd, &iov, 1, r.offset, 0);
  } while (n < 0 && errno == EINTR);
  std::int64_t result = result_of(n);
  if (result == -EPIPE && !was_pending) {
    timespec zero{};
    while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return result;
}

}  // namespace

std::int64_t perform_file_op(const operation& r) noexcept {
  iovec iov{r.buf, r.len};
  ssize_t n = -1;
  switch (r.kind) {
    case op_kind::pread:
      do {
        n = ::preadv2(r.fd, &iov, 1, r.offset, 0);
      } while (n < 0 && errno == EINTR);
      return result_of(n);
    case op_kind::pwrite:
      if (r.offset == -1) return pwrite_without_sigpipe(r, iov);
      do {
        n = ::pwritev2(r.fd, &iov, 1, r.offset, 0);
      } while (n < 0 && errno == EINTR);
      return result_of(n);
    case op_kind::fsync:
      do {
        n = (r.flags & 1) != 0 ? ::fdatasync(r.fd) : ::fsync(r.fd);
      } while (n < 0 && errno == EINTR);
      return result_of(n);
    case op_kind::openat:
      do {
        n = ::openat(r.fd, r.path, r.flags, static_cast<mode_t>(r.len));
      } while (n < 0 && errno == EINTR);
      return result_of(n);
    case op_kind::statx:
      do {
        n = ::statx(r.fd, r.path, r.flags, static_cast<unsigned>(r.len),
                    static_cast<struct statx*>(r.buf));
      } while (n < 0 && errno == EINTR);
      return result_of(n);
    case op_kind::close:
      // Never retried: after EINTR the fd is gone and its number may be reused.
      n = ::close(r.fd);
      return n < 0 && errno != EINTR ? -errno : 0;
    default:
      return -EINVAL;
  }
}

// One file operation on the default executor. It owns every byte its
// syscall touches, so it may outlive the awaiter (a cancel, the loop's
// close) with no write into, or read of, the caller's memory.
struct file_call final : executor_job, ready_node, std::enable_shared_from_this<file_call> {
  file_call(EventLoop& l, file_awaiter& a)
      : ready_node{&on_ready}, request(static_cast<const operation&>(a)), loop(&l), waiter(&a) {
    switch (request.kind) {
      case op_kind::pread:
        request.len = std::min(request.len, max_executor_transfer);
        bytes = std::make_unique_for_overwrite<char[]>(request.len);
        request.buf = bytes.get();
        break;
      case op_kind::pwrite:
        request.len = std::min(request.len, max_executor_transfer);
        bytes = std::make_unique_for_overwrite<char[]>(request.len);
        std::memcpy(bytes.get(), a.buf, request.len);
        request.buf = bytes.get();
        break;
      case op_kind::statx:
        request.buf = &stx;
        break;
      default:
        break;
    }
    if (request.kind == op_kind::openat || request.kind == op_kind::statx) {
      path = a.path;
      request.path = path.c_str();
    }
  }
  ~file_call() {
    // An fd nobody took: the awaiter was cancelled or destroyed first.
    if (request.kind == op_kind::openat && result >= 0) ::close(static_cast<int>(result));
  }

  // Worker. Skipped if nobody waits any more, except a close (the fd would leak).
  void run() noexcept override {
    bool wanted;
    {
      std::lock_guard<std::mutex> lock(mutex);
      wanted = waiter != nullptr || request.kind == op_kind::close;
    }
    if (wanted) result = perform_file_op(request);
    finished();
  }
  // The pool's shutdown, on the closing loop's thread: nobody waits any more.
  void drop() noexcept override {
    if (request.kind == op_kind::close) result = perform_file_op(request);
    finished();
  }
  void finished() noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    done = true;
    // While waiter is set under this mutex, its frame, and so the loop, live.
    if (waiter == nullptr) return;
    queued_self = shared_from_this();  // the pool holds another: not the last
    try {
      if (loop_access::post_threadsafe(*loop, this)) return;
    } catch (...) {
    }
    // Closed (the awaiter's destructor comes next) or out of memory.
    queued_self.reset();
  }
  // Loop thread, from the loop's queue. The worker is done with the call.
  static void on_ready(ready_node* n, ready_node::action what) noexcept {
    auto* self = static_cast<file_call*>(n);
    std::shared_ptr<file_call> keep = std::move(self->queued_self);
    self->uncount();
    file_awaiter* w;
    {
      std::lock_guard<std::mutex> lock(self->mutex);
      w = self->waiter;
    }
    if (what == ready_node::action::run && w != nullptr) w->complete_from(*self);
  }
  // Loop thread: the awaiter stops waiting (its task was cancelled, or its
  // frame is going). False if the call had already returned.
  bool forget_waiter() noexcept {
    uncount();
    std::lock_guard<std::mutex> lock(mutex);
    waiter = nullptr;
    return !done;
  }
  // Loop thread. While the loop waits for this call, it counts among the
  // executor calls out (EventLoop::watch_for_threadsafe): the loop watches
  // for the result for a few microseconds before it blocks, as for
  // to_thread. Uncounted once, by whichever comes first on the loop's
  // thread: the result taken, or the waiter gone (then no result is posted
  // and the count must not stay raised).
  void count() noexcept {
    counted = true;
    ++loop_access::executor_calls_out(*loop);
  }
  void uncount() noexcept {
    if (!std::exchange(counted, false)) return;
    --loop_access::executor_calls_out(*loop);
  }

  operation request;  // buf and path point into this call
  std::unique_ptr<char[]> bytes;
  std::string path;
  struct statx stx {};
  EventLoop* loop;
  std::int64_t result = -ECANCELED;  // the worker's, read by the loop after it is posted
  std::mutex mutex;
  file_awaiter* waiter;  // under mutex; null once nobody waits
  bool done = false;     // under mutex
  std::shared_ptr<file_call> queued_self;  // while on the loop's queue
  bool counted = false;  // loop thread only: see count()
};

file_awaiter::~file_awaiter() {
  if (call_) call_->forget_waiter();
}

void file_awaiter::start_on_executor() {
  auto call = std::make_shared<file_call>(*task.loop, *this);
  default_executor_of(*task.loop).submit(call);
  call->count();
  call_ = std::move(call);
}

void file_awaiter::complete_from(file_call& c) noexcept {
  result = c.result;
  if (result > 0 && kind == op_kind::pread) std::memcpy(buf, c.bytes.get(), static_cast<std::size_t>(result));
  if (result == 0 && kind == op_kind::statx) *static_cast<struct statx*>(buf) = c.stx;
  if (kind == op_kind::openat) c.result = -1;  // the fd is the caller's now
  call_.reset();  // c lives on: the loop's queue entry holds it
  task.waiter.resume();
}

void file_awaiter::describe(const void* self, std::ostream& out) {
  io_awaiter::describe(self, out);
  out << ", on the default executor";
}

bool file_awaiter::on_cancel(void* self) noexcept {
  auto* me = static_cast<file_awaiter*>(self);
  if (me->kind == op_kind::close) return false;  // the fd must go: it runs, or ran, anyway
  // Returned already: its result is on the loop's queue and is delivered;
  // the cancel reaches the task at its next suspension (core/io.h's rule).
  if (!me->call_->forget_waiter()) return false;
  // Queued or running: the thread (if any) runs on into the call's own
  // memory; the task resumes now, cancelled.
  me->call_.reset();
  me->result = -ECANCELED;
  loop_access::schedule(*me->task.loop, me);
  return false;
}

}  // namespace polyloop::detail
