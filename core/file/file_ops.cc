#include "core/file/file_ops.h"

#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <ostream>

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

void file_awaiter::start_on_executor() {
  // The call gets a copy of the request; the buffer and path it points to
  // stay valid because this task resumes only after the call returned.
  operation request = static_cast<const operation&>(*this);
  call_ = submit_call<std::int64_t>(*task.loop, nullptr, [request](std::stop_token) noexcept {
    return perform_file_op(request);
  });
  link_.self = this;
  link_.fn = [](ready_node* n, ready_node::action what) {
    if (what == ready_node::action::run) static_cast<future_link*>(n)->self->task.waiter.resume();
  };
  link_.notify = [](done_link* n, future_state_base& state) {
    static_cast<future_link*>(n)->self->linked_ = false;
    schedule_link(n, state);
  };
  future_access::state(call_)->add_link(&link_);
  linked_ = true;
}

void file_awaiter::describe(const void* self, std::ostream& out) {
  io_awaiter::describe(self, out);
  out << ", on the default executor";
}

bool file_awaiter::on_cancel(void* self) noexcept {
  auto* me = static_cast<file_awaiter*>(self);
  if (me->kind == op_kind::close) return false;  // skipping it would leak the fd
  auto* state = static_cast<executor_future_state<std::int64_t>*>(future_access::state(me->call_));
  // Running: it runs on, and the future ends with its result once the
  // thread is done with the buffer. Not started: skipped, no thread will
  // touch the buffer, so the task resumes now (its future ends later,
  // cancelled, when a worker dequeues the call).
  if (state->cancel_call_only() && me->linked_) {
    state->remove_link(&me->link_);
    me->linked_ = false;
    me->skipped_ = true;
    schedule_link(&me->link_, *state);
  }
  return false;
}

std::int64_t file_awaiter::await_resume() {
  if (call_.valid()) {
    future_state<std::int64_t>* state = future_access::state(call_);
    result = skipped_ || state->cancelled() ? -ECANCELED : call_.result();
    call_ = Future<std::int64_t>();
  }
  return io_awaiter::await_resume();
}

}  // namespace polyloop::detail
