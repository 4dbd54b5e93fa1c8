#include "backends/asio/asio_backend.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "backends/reactive/nonblocking.h"
#include "backends/support/discard.h"
#include "backends/support/op_traits.h"
#include "core/errors/invariant.h"

namespace polyloop::backends {

namespace {

// operation::backend_state: flags, and above them the number of
// async_waits outstanding (two for a poll of both in and out).
constexpr std::uint32_t cancel_bit = 1;     // cancel() asked for it to end
constexpr std::uint32_t fd_closed_bit = 2;  // its fd was closed meanwhile
constexpr std::uint32_t done_bit = 4;       // result set; completes after its last wait
constexpr std::uint32_t one_wait = 8;

std::uint32_t waits(const operation& op) noexcept { return op.backend_state / one_wait; }

}  // namespace

AsioBackend::fd_entry::fd_entry(boost::asio::io_context& ctx, int fd) : descriptor(ctx) {
  boost::system::error_code ec;
  descriptor.assign(fd, ec);  // regular files: Asio accepts them, never waits
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    dev = st.st_dev;
    ino = st.st_ino;
  }
}

// start() always makes one attempt first; the waits that follow
// end in whatever order Asio runs their handlers, and a cancel() aborts and
// re-arms every wait on the fd, so no order per fd is kept.
AsioBackend::AsioBackend()
    : Backend({.tries_in_start = true, .fifo_per_fd = false, .kernel_performs_ops = false}) {
  work_.emplace(context_.get_executor());
  // Make Asio open its reactor's fds (epoll, eventfd, timerfd) now, not at
  // the first operation, where they could take the number of an fd the
  // program just closed and turn a clean EBADF into a read of Asio's own fd.
  boost::asio::posix::stream_descriptor warm_up(context_);
}

AsioBackend::~AsioBackend() {
  work_.reset();
  // The descriptors must not close fds they do not own.
  for (auto& e : fds_) {
    if (e) e->descriptor.release();
  }
}

AsioBackend::fd_entry* AsioBackend::entry_for(int fd) noexcept {
  std::unique_ptr<fd_entry>* slot = fds_.slot(fd);
  if (slot == nullptr) return nullptr;
  if (!*slot) {
    reactive::set_nonblocking(fd, counts_);
    ++counts_.syscalls;  // fd_entry's fstat (Asio's own epoll_ctl is not seen)
    // start() is noexcept: out of memory fails the operation (-ENOMEM)
    // instead of terminating.
    try {
      *slot = std::make_unique<fd_entry>(context_, fd);
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
  return slot->get();
}

void AsioBackend::complete(operation& op) noexcept {
  op.backend_state = 0;
  if (shutting_down_) return;  // its owner is about to be destroyed
  if (ready_ != nullptr) {
    ready_->push(&op);
    return;
  }
  completed_.push(&op);
}

void AsioBackend::start(operation& op) noexcept {
  // Every completion leaves backend_state 0: non-zero means async_waits of
  // the operation are still outstanding, and it would complete twice.
  POLYLOOP_INVARIANT(op.backend_state == 0, "an operation started while still waiting");
  if (op.kind == op_kind::close) {
    close_fd(op);
    return;
  }
  if (is_file_op(op.kind)) {  // not native_file_ops: core/file uses the executor
    complete(op, -EOPNOTSUPP);
    return;
  }
  fd_entry* entry = entry_for(op.fd);
  if (entry == nullptr) {
    complete(op, fds_.slot_error(op.fd));
    return;
  }
  if (op.kind == op_kind::connect) {
    if (reactive::start_connect(op, counts_)) {
      complete(op);
      return;
    }
    wait_for_readiness(op, *entry);
    return;
  }
  if (reactive::try_op(op, counts_, &entry->hint)) {
    complete(op);
    return;
  }
  if (!entry->descriptor.is_open()) {  // cannot be waited on: report, never spin
    complete(op, -EBADF);
    return;
  }
  wait_for_readiness(op, *entry);
}

void AsioBackend::wait_for_readiness(operation& op, fd_entry& entry) noexcept {
  using wait = boost::asio::posix::descriptor_base::wait_type;
  unsigned events = detail::readiness_events(op);
  bool in = (events & POLLIN) != 0;
  bool out = (events & POLLOUT) != 0;
  op.next = entry.waiting;
  entry.waiting = &op;
  audit_.waiting(op.fd, entry.audit);
  // A poll for in and out needs a wait of each type; the operation completes
  // only after both handlers ran, so neither can outlive it.
  for (wait type : {wait::wait_read, wait::wait_write}) {
    if (type == wait::wait_read ? !in : !out) continue;
    op.backend_state += one_wait;
    ++waits_;
    entry.descriptor.async_wait(
        type, [this, &op](const boost::system::error_code& ec) { on_ready(op, ec); });
  }
}

void AsioBackend::unlink_waiting(operation& op) noexcept {
  if ((op.backend_state & fd_closed_bit) != 0) return;  // its entry is gone
  fd_entry* entry = fds_[op.fd].get();
  for (operation** p = &entry->waiting; *p != nullptr; p = &(*p)->next) {
    if (*p == &op) {
      *p = op.next;
      break;
    }
  }
  op.next = nullptr;
}

// One async_wait of the operation ended: its fd may be ready, or the wait was
// aborted (by cancel(), by a close, or by a cancel of another operation on
// the same descriptor, which aborts every wait on it).
void AsioBackend::on_ready(operation& op, const boost::system::error_code& ec) noexcept {
  POLYLOOP_INVARIANT(waits(op) != 0, "an Asio wait ended for an operation with none outstanding");
  op.backend_state -= one_wait;
  --waits_;
  bool last = waits(op) == 0;
  if (!ec && (op.backend_state & fd_closed_bit) == 0) {
    detail::quiet_wait_audit::event(fds_[op.fd]->audit);
  }
  if ((op.backend_state & done_bit) == 0) {
    if ((op.backend_state & (cancel_bit | fd_closed_bit)) != 0) {
      op.result = -ECANCELED;
      op.backend_state |= done_bit;
    } else if (ec && ec != boost::asio::error::operation_aborted) {
      op.result = -ec.value();
      op.backend_state |= done_bit;
    } else if (reactive::try_op(op, counts_, &fds_[op.fd]->hint)) {
      op.backend_state |= done_bit;
    } else if (last) {
      // Not ready after all (or aborted for another operation's sake).
      unlink_waiting(op);
      wait_for_readiness(op, *fds_[op.fd]);
      return;
    }
    if (!last && (op.backend_state & fd_closed_bit) == 0) {
      boost::system::error_code ignored;  // end the operation's other wait
      fds_[op.fd]->descriptor.cancel(ignored);
    }
  }
  if (last) {
    unlink_waiting(op);
    complete(op);
  }
}

void AsioBackend::cancel(operation& op) noexcept {
  // Done, completing, or its fd was closed (it ends with -ECANCELED anyway,
  // and the fd's entry, maybe a new fd's by now, is not its own any more).
  if (waits(op) == 0 || (op.backend_state & (done_bit | fd_closed_bit)) != 0) return;
  op.backend_state |= cancel_bit;
  boost::system::error_code ec;
  fds_[op.fd]->descriptor.cancel(ec);
}

void AsioBackend::close_fd(operation& op) noexcept {
  std::unique_ptr<fd_entry>* slot = fds_.find(op.fd);
  if (slot != nullptr && *slot) {
    std::unique_ptr<fd_entry> entry = std::move(*slot);
    for (operation* w = entry->waiting; w != nullptr; w = w->next) w->backend_state |= fd_closed_bit;
    entry->waiting = nullptr;
    boost::system::error_code ec;
    entry->descriptor.cancel(ec);  // aborted waits complete with -ECANCELED
    entry->descriptor.release();   // the fd is closed below, not by Asio
  }
  reactive::close_now(op, counts_);
  complete(op);
}

void AsioBackend::recheck_registration(int fd) noexcept {
  // Asio cannot be asked whether its reactor still has the fd, so ask
  // whether the number still names the file registered. If not, release()
  // makes every wait on it end with operation_aborted (on_ready then tries
  // the operation and waits again), and assign() registers the fd anew; if
  // it fails (the fd was closed), the tries report EBADF.
  fd_entry& e = *fds_[fd];
  struct stat st {};
  ++counts_.syscalls;
  bool same_file = ::fstat(fd, &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino;
  if (same_file) return;
  e.dev = st.st_dev;
  e.ino = st.st_ino;
  e.descriptor.release();
  boost::system::error_code ignored;
  e.descriptor.assign(fd, ignored);
}

// Runs at most `limit` of Asio's ready handlers: poll() alone would run a
// handler that re-posts itself forever, and polyloop's callbacks never.
void AsioBackend::run_ready(std::size_t limit) {
  for (std::size_t n = 0; n < limit; ++n) {
    ++counts_.context_runs;
    if (context_.poll_one() == 0) break;
  }
}

std::error_code AsioBackend::poll(std::chrono::nanoseconds timeout,
                                  detail::ready_queue& ready) noexcept {
  if (completed_.move_to(ready)) timeout = std::chrono::nanoseconds(0);
  if (timeout.count() == 0 && waits_ == 0 && !asio_busy_) {
    // The loop will not block, no operation of ours waits on Asio, and Asio
    // ran nothing last time: skip io_context's poll (its lock and a
    // zero-timeout epoll_wait) for a while, but give Asio its turn at least
    // every turn_iterations iterations or turn_ready ready callbacks, for
    // whatever the user's own Asio code has pending (docs/backends.md).
    skipped_ready_ += ready.size();
    if (++skipped_iterations_ < turn_iterations && skipped_ready_ < turn_ready) return {};
  }
  skipped_iterations_ = 0;
  skipped_ready_ = 0;
  timeout = audit_.before_wait(
      timeout,
      [this](int fd) -> detail::quiet_wait_audit::marks* {
        std::unique_ptr<fd_entry>* slot = fds_.find(fd);
        return slot != nullptr && *slot ? &(*slot)->audit : nullptr;
      },
      [this](int fd) { return fds_[fd]->waiting != nullptr; },
      [this](int fd) { recheck_registration(fd); });
  ready_ = &ready;
  if (context_.stopped()) context_.restart();
  try {
    std::size_t ran;
    ++counts_.context_runs;
    if (timeout.count() == 0) {
      ran = context_.poll_one();
    } else if (timeout.count() < 0) {
      ran = context_.run_one();
    } else {
      ran = context_.run_one_for(timeout);
    }
    // Whatever ran (a user's handler, one of ours, a wake-up) may have queued
    // more: look again next iteration.
    asio_busy_ = ran != 0;
    if (ran != 0) run_ready(turn_handlers - 1);
  } catch (...) {
    asio_busy_ = true;  // the rest of Asio's ready handlers run next iteration
    // polyloop's own handlers never throw; a handler of the user's Asio code
    // did. Report it as a throwing callback is reported, and go on.
    report_exception("exception in an Asio handler", std::current_exception());
  }
  ready_ = nullptr;
  return {};
}

// Every operation still waiting has an Asio handler holding it. Abort those
// waits and run the handlers now, so that none is left for an io_context the
// user may still run after close() (polyloop/asio.h); they end the
// operations without handing them back.
void AsioBackend::shutdown() noexcept {
  shutting_down_ = true;
  // Finished in start() or by a readiness event, never to be handed back.
  while (operation* o = completed_.pop()) {
    o->backend_state = 0;
    detail::discard_unreturned(*o, o->result);
  }
  for (auto& e : fds_) {
    if (!e || e->waiting == nullptr) continue;
    for (operation* w = e->waiting; w != nullptr; w = w->next) w->backend_state |= cancel_bit;
    boost::system::error_code ignored;
    e->descriptor.cancel(ignored);
  }
  if (context_.stopped()) context_.restart();
  while (waits_ != 0) {
    try {
      if (context_.poll_one() == 0) break;
    } catch (...) {
      report_exception("exception in an Asio handler", std::current_exception());
    }
  }
}

void AsioBackend::wakeup() noexcept {
  // One post per wait is enough: the loop looks at its whole threadsafe
  // queue once poll() returns.
  if (wake_pending_.exchange(true, std::memory_order_seq_cst)) return;
  try {
    boost::asio::post(context_, [this] { wake_pending_.store(false, std::memory_order_seq_cst); });
  } catch (...) {
    wake_pending_.store(false);  // out of memory: the loop wakes at its next timer instead
  }
}

}  // namespace polyloop::backends
