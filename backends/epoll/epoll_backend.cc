#include "backends/epoll/epoll_backend.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include "backends/reactive/nonblocking.h"
#include "backends/support/discard.h"
#include "backends/support/op_traits.h"
#include "backends/support/timeout.h"
#include "core/errors/errors.h"
#include "core/errors/invariant.h"

namespace polyloop::backends {

namespace {

// Bits kept in operation::backend_state.
constexpr std::uint32_t queued_bit = 1;
constexpr std::uint32_t connecting_bit = 2;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

// Each operation is tried in start() unless its direction saw EAGAIN since
// the last edge; an edge retries each queue in order.
EpollBackend::EpollBackend(const options& opts)
    : Backend({.tries_in_start = true, .fifo_per_fd = true, .kernel_performs_ops = false}),
      have_pwait2_(opts.epoll_pwait2) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw_errno("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = waker_.fd();
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, waker_.fd(), &ev) < 0) {
    int saved = errno;
    ::close(epfd_);
    errno = saved;
    throw_errno("epoll_ctl(ADD, eventfd)");
  }
}

EpollBackend::~EpollBackend() { ::close(epfd_); }

std::unique_ptr<Backend> EpollBackend::make_setup(std::string_view setup) {
  if (setup == "no_pwait2") return std::make_unique<EpollBackend>(options{.epoll_pwait2 = false});
  throw BackendError("unknown set-up '" + std::string(setup) +
                     "' of epoll: it has no_pwait2 (epoll_wait only, as before Linux 5.11)");
}

// Nothing is in the kernel: a queued operation is only linked here, and its
// syscall is made by poll() or start(). Unlinking them is enough.
void EpollBackend::shutdown() noexcept {
  for (fd_state& st : fds_) {
    for (op_queue* q : {&st.readers, &st.writers, &st.pollers}) {
      while (operation* o = q->pop()) o->backend_state = 0;
    }
  }
  queued_ = 0;
  // Finished in start() or by a readiness event, never to be handed back.
  while (operation* o = completed_.pop()) {
    o->backend_state = 0;
    detail::discard_unreturned(*o, o->result);
  }
}

bool EpollBackend::register_fd(int fd, fd_state& st) noexcept {
  reactive::set_nonblocking(fd, counts_);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  count_epoll_ctl();
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0 || errno == EEXIST) {
    st.registered = true;
    st.readable = st.writable = true;
    return true;
  }
  if (errno == EPERM) {  // a regular file or directory: always "ready"
    st.registered = true;
    st.pollable = false;
    return true;
  }
  return false;
}

void EpollBackend::complete(operation& op) noexcept {
  op.backend_state = 0;
  completed_.push(&op);
}

void EpollBackend::start(operation& op) noexcept {
  // Non-zero only while the operation sits in one of an fd's queues: a second
  // start would link it twice.
  POLYLOOP_INVARIANT(op.backend_state == 0, "an operation started while still queued");
  if (op.kind == op_kind::close) {
    close_fd(op);
    return;
  }
  if (is_file_op(op.kind)) {  // not native_file_ops: core/file uses the executor
    complete(op, -EOPNOTSUPP);
    return;
  }
  fd_state* st = fds_.slot(op.fd);
  if (st == nullptr) {
    complete(op, fds_.slot_error(op.fd));
    return;
  }
  if (!st->registered && !register_fd(op.fd, *st)) {
    complete(op, -errno);
    return;
  }
  if (op.kind == op_kind::connect) {
    if (reactive::start_connect(op, counts_)) {
      complete(op);
      return;
    }
  } else if (op.kind == op_kind::poll) {
    // A level check consumes nothing, so it never waits behind other ops.
    if (reactive::try_op(op, counts_) || !st->pollable) {
      complete(op);
      return;
    }
  } else {
    bool reader = detail::waits_for_input(op.kind);
    bool believed_ready = !st->pollable || (reader ? st->readable : st->writable);
    // The starter drained the fd with its last receive and no edge came
    // since: bytes arriving later bring an edge, so wait for it rather than
    // make a receive that fails with EAGAIN (libuv's level-triggered loop
    // makes no such call either).
    bool skip_try = reader && (op.hints & op_hint::expect_wait) != 0 && st->pollable &&
                    !st->input_since_receive;
    if (believed_ready && !skip_try && reactive::try_op(op, counts_, &st->hint)) {
      if (reader) st->input_since_receive = false;
      complete(op);
      return;
    }
    if (!st->pollable) {  // cannot wait on it: try_op never blocks there
      complete(op);
      return;
    }
    if (skip_try && believed_ready) st->skipped_try = true;
    (reader ? st->readable : st->writable) = false;
  }
  op.backend_state |= queued_bit;
  if (op.kind == op_kind::connect) op.backend_state |= connecting_bit;
  (op.kind == op_kind::poll                   ? st->pollers
   : detail::waits_for_input(op.kind) ? st->readers
                                      : st->writers)
      .push(&op);
  ++queued_;
  audit_.waiting(op.fd, st->audit);
}

void EpollBackend::cancel(operation& op) noexcept {
  if ((op.backend_state & queued_bit) == 0) return;  // done, or never started
  fd_state* st = fds_.find(op.fd);
  if (st == nullptr ||
      !(st->readers.remove(&op) || st->writers.remove(&op) || st->pollers.remove(&op))) {
    return;
  }
  --queued_;
  complete(op, -ECANCELED);
}

void EpollBackend::close_fd(operation& op) noexcept {
  if (fd_state* found = fds_.find(op.fd)) {
    fd_state& st = *found;
    for (op_queue* q : {&st.readers, &st.writers, &st.pollers}) {
      while (operation* o = q->head) {
        q->remove(o);
        --queued_;
        complete(*o, -ECANCELED);
      }
    }
    if (st.registered && st.pollable) {
      count_epoll_ctl();
      ::epoll_ctl(epfd_, EPOLL_CTL_DEL, op.fd, nullptr);
    }
    st = fd_state{};
  }
  reactive::close_now(op, counts_);
  complete(op);
}

std::size_t EpollBackend::drain(op_queue& q, bool& ready_flag,
                                reactive::write_hint& hint) noexcept {
  ready_flag = true;
  std::size_t done = 0;
  while (operation* op = q.head) {
    if (!reactive::try_op(*op, counts_, &hint)) {
      ready_flag = false;
      return done;
    }
    q.remove(op);
    --queued_;
    complete(*op);
    ++done;
  }
  return done;
}

void EpollBackend::recheck_registration(int fd) noexcept {
  fd_state& st = fds_[fd];
  if (!st.pollable) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  count_epoll_ctl();
  int rc = ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  if (rc != 0 && errno == EEXIST) {  // registered, as believed
    // A receive that skipped its try on op_hint::expect_wait relies on its
    // starter's word that the fd was drained. Where a short receive leaves
    // bytes (TCP urgent data stops a receive at its mark; a datagram or a
    // terminal line ends one), no edge comes for them: try it now, so such
    // bytes wait one to two audit periods, never for ever.
    if (std::exchange(st.skipped_try, false)) dispatch(EPOLLIN, fd);
    return;
  }
  // Added now (the registration had been dropped: a new file has the
  // number), or the fd cannot be added (closed: EBADF; a regular file now:
  // EPERM): try every waiting operation, which completes those that can
  // with their own result or error and leaves the rest waiting.
  if (rc != 0 && errno == EPERM) st.pollable = false;
  dispatch(EPOLLIN | EPOLLOUT, fd);
}

void EpollBackend::dispatch(std::uint32_t events, int fd) noexcept {
  fd_state* found = fds_.find(fd);
  if (found == nullptr) return;
  fd_state& st = *found;
  detail::quiet_wait_audit::event(st.audit);
  bool err = (events & (EPOLLERR | EPOLLHUP)) != 0;
  if (err || (events & (EPOLLIN | EPOLLRDHUP)) != 0) {
    st.input_since_receive = true;
    st.skipped_try = false;
    if (drain(st.readers, st.readable, st.hint) > 0) st.input_since_receive = false;
  }
  if (err || (events & EPOLLOUT) != 0) drain(st.writers, st.writable, st.hint);
  // Poll operations: each is a level check, so try every one on any edge.
  for (operation* op = st.pollers.head; op != nullptr;) {
    operation* next = op->next;
    if (reactive::try_op(*op, counts_)) {
      st.pollers.remove(op);
      --queued_;
      complete(*op);
    }
    op = next;
  }
}

std::error_code EpollBackend::poll(std::chrono::nanoseconds timeout,
                                   detail::ready_queue& ready) noexcept {
  if (completed_.head != nullptr) timeout = std::chrono::nanoseconds(0);
  // Nothing can complete and the caller will not wait: skip the syscall. (A
  // pending wake-up stays in the eventfd for the next blocking wait.)
  if (timeout.count() != 0 || queued_ != 0) {
    timeout = audit_.before_wait(
        timeout, [this](int fd) { return fds_.find(fd) ? &fds_[fd].audit : nullptr; },
        [this](int fd) {
          const fd_state& st = fds_[fd];
          return st.readers.head || st.writers.head || st.pollers.head;
        },
        [this](int fd) { recheck_registration(fd); });
    if (completed_.head != nullptr) timeout = std::chrono::nanoseconds(0);
    if (timeout.count() != 0 && !waker_.may_block()) timeout = std::chrono::nanoseconds(0);
    std::error_code ec = wait(timeout);
    waker_.after_wait();
    if (ec) return ec;
  }
  completed_.move_to(ready);
  return {};
}

// Out of poll(), so that an iteration that makes no syscall does not pay for
// this frame's event array and stack canary.
std::error_code EpollBackend::wait(std::chrono::nanoseconds timeout) noexcept {
  {
    epoll_event events[128];
    int n;
    ++counts_.syscalls;
    ++counts_.epoll_waits;
    if (have_pwait2_) {
      timespec ts;
      n = ::epoll_pwait2(epfd_, events, 128, detail::timespec_or_null(timeout, ts), nullptr);
      // ENOSYS: a kernel before 5.11. EPERM or EACCES: a seccomp filter or
      // security policy that predates the syscall refuses it (Docker's
      // default profile answered EPERM for unknown syscalls). EINVAL: our
      // arguments are valid (a timeout always is), so it means the same
      // kind of refusal, or a broken epfd that epoll_wait reports as well.
      // Either way epoll_wait (milliseconds, rounded up) does the job.
      if (n < 0 && (errno == ENOSYS || errno == EPERM || errno == EACCES || errno == EINVAL)) {
        have_pwait2_ = false;
        return wait(timeout);
      }
    } else {
      n = ::epoll_wait(epfd_, events, 128, detail::to_milliseconds_rounded_up(timeout));
    }
    if (n < 0 && errno != EINTR) return {errno, std::generic_category()};
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == waker_.fd()) {
        ++counts_.syscalls;  // the eventfd's read
        waker_.drain();
        waker_.clear_after_drain();
        continue;
      }
      dispatch(events[i].events, events[i].data.fd);
    }
  }
  return {};
}

void EpollBackend::wakeup() noexcept { waker_.wake(); }

}  // namespace polyloop::backends
