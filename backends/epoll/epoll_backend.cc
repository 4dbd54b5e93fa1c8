#include "backends/epoll/epoll_backend.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

namespace polyloop::backends {

namespace {

// Bits kept in operation::backend_state.
constexpr std::uint32_t queued_bit = 1;
constexpr std::uint32_t connecting_bit = 2;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

bool is_reader(const operation& op) noexcept {
  switch (op.kind) {
    case op_kind::read:
    case op_kind::recv:
    case op_kind::accept:
      return true;
    default:
      return false;
  }
}

// Level check for op_kind::poll, and for whether a connect has finished.
short poll_now(int fd, short events) noexcept {
  pollfd p{fd, events, 0};
  int r;
  do {
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r > 0 ? p.revents : 0;
}

// Tries `op` once. Returns false if it would block; otherwise sets result.
bool try_op(operation& op) noexcept {
  if (op.kind == op_kind::poll) {
    short revents = poll_now(op.fd, static_cast<short>(op.flags));
    if (revents == 0) return false;
    op.result = revents;
    return true;
  }
  if (op.kind == op_kind::connect) {
    // Stale edges can arrive while the handshake runs: ask the socket.
    if (poll_now(op.fd, POLLOUT) == 0) return false;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    op.result = -err;
    return true;
  }
  while (true) {
    ssize_t r = -1;
    switch (op.kind) {
      case op_kind::read:
        r = ::read(op.fd, op.buf, op.len);
        break;
      case op_kind::write:
        r = ::write(op.fd, op.buf, op.len);
        break;
      case op_kind::recv:
        r = ::recv(op.fd, op.buf, op.len, op.flags);
        break;
      case op_kind::send:
        r = ::send(op.fd, op.buf, op.len, op.flags | MSG_NOSIGNAL);
        break;
      case op_kind::accept: {
        socklen_t len = op.addrlen;
        r = ::accept4(op.fd, op.addr, op.addr != nullptr ? &len : nullptr,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (r >= 0) op.addrlen = len;
        break;
      }
      default:
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

}  // namespace

void EpollBackend::op_queue::push(operation* op) noexcept {
  op->next = nullptr;
  if (tail != nullptr) {
    tail->next = op;
  } else {
    head = op;
  }
  tail = op;
}

bool EpollBackend::op_queue::remove(operation* op) noexcept {
  operation* prev = nullptr;
  for (operation* o = head; o != nullptr; prev = o, o = o->next) {
    if (o != op) continue;
    (prev != nullptr ? prev->next : head) = o->next;
    if (tail == o) tail = prev;
    o->next = nullptr;
    return true;
  }
  return false;
}

EpollBackend::EpollBackend() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw_errno("epoll_create1");
  wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakefd_ < 0) {
    int saved = errno;
    ::close(epfd_);
    errno = saved;
    throw_errno("eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wakefd_;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) {
    int saved = errno;
    ::close(wakefd_);
    ::close(epfd_);
    errno = saved;
    throw_errno("epoll_ctl(ADD, eventfd)");
  }
}

EpollBackend::~EpollBackend() {
  ::close(wakefd_);
  ::close(epfd_);
}

EpollBackend::fd_state* EpollBackend::state_for(int fd) noexcept {
  if (fd < 0) return nullptr;
  if (static_cast<std::size_t>(fd) >= fds_.size()) fds_.resize(static_cast<std::size_t>(fd) + 1);
  return &fds_[static_cast<std::size_t>(fd)];
}

bool EpollBackend::register_fd(int fd, fd_state& st) noexcept {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
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
  if (op.kind == op_kind::close) {
    close_fd(op);
    return;
  }
  fd_state* st = state_for(op.fd);
  if (st == nullptr) {
    op.result = -EBADF;
    complete(op);
    return;
  }
  if (!st->registered && !register_fd(op.fd, *st)) {
    op.result = -errno;
    complete(op);
    return;
  }
  if (op.kind == op_kind::connect) {
    // EINTR from a non-blocking connect means it goes on in the background.
    int r = ::connect(op.fd, op.addr, op.addrlen);
    if (r == 0 || (errno != EINPROGRESS && errno != EINTR)) {
      op.result = r == 0 ? 0 : -errno;
      complete(op);
      return;
    }
    op.backend_state = connecting_bit;
  } else if (op.kind == op_kind::poll) {
    // A level check consumes nothing, so it never waits behind other ops.
    if (try_op(op) || !st->pollable) {
      complete(op);
      return;
    }
    op.backend_state |= queued_bit;
    st->pollers.push(&op);
    ++queued_;
    return;
  } else {
    bool reader = is_reader(op);
    bool believed_ready = !st->pollable || (reader ? st->readable : st->writable);
    if (believed_ready && try_op(op)) {
      complete(op);
      return;
    }
    if (!st->pollable) {  // cannot wait on it: try_op never blocks there
      complete(op);
      return;
    }
    (reader ? st->readable : st->writable) = false;
  }
  op.backend_state |= queued_bit;
  (is_reader(op) ? st->readers : st->writers).push(&op);
  ++queued_;
}

void EpollBackend::cancel(operation& op) noexcept {
  if ((op.backend_state & queued_bit) == 0) return;  // done, or never started
  fd_state* st = state_for(op.fd);
  if (st == nullptr ||
      !(st->readers.remove(&op) || st->writers.remove(&op) || st->pollers.remove(&op))) {
    return;
  }
  --queued_;
  op.result = -ECANCELED;
  complete(op);
}

void EpollBackend::close_fd(operation& op) noexcept {
  if (op.fd >= 0 && static_cast<std::size_t>(op.fd) < fds_.size()) {
    fd_state& st = fds_[static_cast<std::size_t>(op.fd)];
    for (op_queue* q : {&st.readers, &st.writers, &st.pollers}) {
      while (operation* o = q->head) {
        q->remove(o);
        --queued_;
        o->result = -ECANCELED;
        complete(*o);
      }
    }
    if (st.registered && st.pollable) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, op.fd, nullptr);
    st = fd_state{};
  }
  // No retry on EINTR: Linux has released the descriptor anyway.
  op.result = ::close(op.fd) == 0 ? 0 : -errno;
  complete(op);
}

void EpollBackend::drain(op_queue& q, bool& ready_flag) noexcept {
  ready_flag = true;
  while (operation* op = q.head) {
    if (!try_op(*op)) {
      ready_flag = false;
      return;
    }
    q.remove(op);
    --queued_;
    complete(*op);
  }
}

void EpollBackend::dispatch(std::uint32_t events, int fd) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size()) return;
  fd_state& st = fds_[static_cast<std::size_t>(fd)];
  bool err = (events & (EPOLLERR | EPOLLHUP)) != 0;
  if (err || (events & (EPOLLIN | EPOLLRDHUP)) != 0) drain(st.readers, st.readable);
  if (err || (events & EPOLLOUT) != 0) drain(st.writers, st.writable);
  // Poll operations: each is a level check, so try every one on any edge.
  for (operation* op = st.pollers.head; op != nullptr;) {
    operation* next = op->next;
    if (try_op(*op)) {
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
    epoll_event events[128];
    int n;
    if (have_pwait2_) {
      timespec ts{};
      timespec* tsp = nullptr;
      if (timeout.count() >= 0) {
        ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
        tsp = &ts;
      }
      n = ::epoll_pwait2(epfd_, events, 128, tsp, nullptr);
      if (n < 0 && errno == ENOSYS) {
        have_pwait2_ = false;
        return poll(timeout, ready);
      }
    } else {
      // Millisecond resolution: round up so a timer never fires early.
      long long ms = timeout.count() < 0 ? -1 : (timeout.count() + 999'999) / 1'000'000;
      n = ::epoll_wait(epfd_, events, 128, static_cast<int>(ms > INT32_MAX ? INT32_MAX : ms));
    }
    if (n < 0 && errno != EINTR) return {errno, std::generic_category()};
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == wakefd_) {
        // Drain first, then clear the flag. The other order loses wake-ups:
        // a wakeup() between them would see the flag clear, write, and have
        // its write drained here, leaving the flag set with the eventfd
        // empty, so every later wakeup() would skip its write. In this order
        // a wakeup() in between skips its write, but its callback is already
        // queued and the loop looks at its queue after poll() returns.
        std::uint64_t count;
        while (::read(wakefd_, &count, sizeof count) < 0 && errno == EINTR) {
        }
        wake_pending_.store(false, std::memory_order_seq_cst);
        continue;
      }
      dispatch(events[i].events, events[i].data.fd);
    }
  }
  while (operation* op = completed_.head) {
    completed_.remove(op);
    ready.push(op);
  }
  return {};
}

void EpollBackend::wakeup() noexcept {
  if (wake_pending_.exchange(true, std::memory_order_seq_cst)) return;
  std::uint64_t one = 1;
  while (::write(wakefd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

}  // namespace polyloop::backends
