#include "backends/asio/asio_backend.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <new>

#include "backends/reactive/nonblocking.h"
#include "backends/support/discard.h"
#include "backends/support/op_traits.h"
#include "core/errors/invariant.h"

// The reactor's interface (boost/asio/detail) is not Asio's public API: this
// file is written against Asio 1.18 (Boost 1.74), whose epoll_reactor it
// uses (register_descriptor, start_op, cancel_ops, deregister_descriptor,
// reactor_op). Another version must be checked against it before use.
#if BOOST_ASIO_VERSION != 101800 || !defined(BOOST_ASIO_HAS_EPOLL)
#error "backends/asio uses Asio 1.18's (Boost 1.74's) epoll_reactor; check it against this version"
#endif

namespace polyloop::backends {

namespace {

// operation::backend_state: flags, and above them the number of
// wait_ops outstanding (two for a poll of both in and out).
constexpr std::uint32_t cancel_bit = 1;     // cancel() asked for it to end
constexpr std::uint32_t fd_closed_bit = 2;  // its fd was closed meanwhile
constexpr std::uint32_t done_bit = 4;       // result set; completes after its last wait
constexpr std::uint32_t deferred_bit = 8;  // a hinted receive whose try waits for poll()
constexpr std::uint32_t one_wait = 16;

std::uint32_t waits(const operation& op) noexcept { return op.backend_state / one_wait; }

}  // namespace

// An operation queued on its fd in Asio's reactor, as Asio's own socket
// operations are: the reactor calls do_perform on each readiness event of
// the fd until it returns done, then runs do_complete from the io_context.
// For the kinds that retry on EAGAIN, do_perform makes the operation's
// syscall (the reactor's speculative call from start_op too, unless the
// caller has just made it); for poll and connect it only reports readiness,
// and on_wait_end checks. Made once and reused (free_waits_).
class AsioBackend::wait_op final : public boost::asio::detail::reactor_op {
 public:
  explicit wait_op(AsioBackend& b) noexcept
      : reactor_op(boost::system::error_code(), &wait_op::do_perform, &wait_op::do_complete),
        backend(b) {}

  // Ready for another start_op: the reactor set ec_ when it aborted it.
  // The caller has just tried `o` and got EAGAIN.
  void reset(polyloop::operation& o, bool performs_op) noexcept {
    ec_ = boost::system::error_code();
    bytes_transferred_ = 0;
    op = &o;
    performs = performs_op;
    skip_first = performs_op;
  }

  AsioBackend& backend;
  polyloop::operation* op = nullptr;
  wait_op* next_free = nullptr;
  bool performs = false;    // do_perform makes op's syscall
  bool skip_first = false;  // the next do_perform is the reactor's speculative one after ours

 private:
  static status do_perform(reactor_op* base) noexcept {
    auto* w = static_cast<wait_op*>(base);
    if (!w->performs) return done;  // a wait: readiness is all it reports
    if (w->skip_first) {
      w->skip_first = false;  // start() or on_wait_end just got EAGAIN
      return not_done;
    }
    polyloop::operation& op = *w->op;
    AsioBackend& b = w->backend;
    fd_entry& e = *b.fds_[op.fd];
    if (!reactive::try_op(op, b.counts_, &e.hint)) return not_done;
    op.backend_state |= done_bit;
    return done;
  }

  // owner null: the io_context is being destroyed with this still queued.
  static void do_complete(void* owner, boost::asio::detail::operation* base,
                          const boost::system::error_code&, std::size_t) noexcept {
    auto* w = static_cast<wait_op*>(base);
    if (owner == nullptr) {
      delete w;
      return;
    }
    AsioBackend& b = w->backend;
    polyloop::operation& op = *w->op;
    boost::system::error_code ec = w->ec_;  // the reactor's (aborted, not supported)
    b.recycle(w);
    b.on_wait_end(op, ec);
  }
};

AsioBackend::wait_op* AsioBackend::new_wait_op() noexcept {
  if (wait_op* w = free_waits_) {
    free_waits_ = w->next_free;
    return w;
  }
  // Plain new (a program may replace it without the nothrow form): start()
  // is noexcept, so out of memory is caught and fails the operation.
  try {
    return new wait_op(*this);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

void AsioBackend::recycle(wait_op* w) noexcept {
  w->op = nullptr;
  w->next_free = free_waits_;
  free_waits_ = w;
}

// start() makes one attempt first (a hinted receive: poll() makes it, at the
// end of the iteration); the waits that follow end in whatever order
// the reactor's queues and a cancel() (which aborts every wait on the fd)
// give, so no order per fd is promised.
AsioBackend::AsioBackend()
    : Backend({.tries_in_start = true, .fifo_per_fd = false, .kernel_performs_ops = false}),
      reactor_(boost::asio::use_service<reactor>(
          static_cast<boost::asio::execution_context&>(context_))) {
  work_.emplace(context_.get_executor());
  // Make Asio open its reactor's fds (epoll, eventfd, timerfd) now, not at
  // the first operation, where they could take the number of an fd the
  // program just closed and turn a clean EBADF into a read of Asio's own fd;
  // and put the reactor into the io_context's runs.
  reactor_.init_task();
}

AsioBackend::~AsioBackend() {
  work_.reset();
  // wait_ops still queued (none after shutdown()) are deleted by the
  // io_context's destruction; the registrations go with its reactor.
  while (wait_op* w = free_waits_) {
    free_waits_ = w->next_free;
    delete w;
  }
}

void AsioBackend::register_fd(int fd, fd_entry& entry) noexcept {
  // EPERM (a regular file) registers it with no events: waits on it fail
  // with operation_not_supported, and its operations never need one.
  entry.registered = reactor_.register_descriptor(fd, entry.reactor_data) == 0;
  if (!entry.registered) reactor_.cleanup_descriptor_data(entry.reactor_data);
}

void AsioBackend::deregister_fd(int fd, fd_entry& entry) noexcept {
  if (entry.registered) {
    // Not `closing`: the file may stay open through a dup, and its epoll
    // registration with it (Asio does the same for an assigned descriptor).
    reactor_.deregister_descriptor(fd, entry.reactor_data, false);
    reactor_.cleanup_descriptor_data(entry.reactor_data);
    entry.registered = false;
  }
}

AsioBackend::fd_entry* AsioBackend::entry_for(int fd) noexcept {
  std::unique_ptr<fd_entry>* slot = fds_.slot(fd);
  if (slot == nullptr) return nullptr;
  if (!*slot) {
    reactive::set_nonblocking(fd, counts_);
    // start() is noexcept: out of memory fails the operation (-ENOMEM)
    // instead of terminating.
    std::unique_ptr<fd_entry> entry;
    try {
      entry = std::make_unique<fd_entry>();
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
    struct stat st {};
    ++counts_.syscalls;  // the fstat (the reactor's epoll_ctl is not seen)
    if (::fstat(fd, &st) == 0) {
      entry->dev = st.st_dev;
      entry->ino = st.st_ino;
    }
    register_fd(fd, *entry);
    *slot = std::move(entry);
  }
  return slot->get();
}

void AsioBackend::complete(operation& op) noexcept {
  op.backend_state = 0;
  if (shutting_down_) {  // its owner is about to be destroyed
    // Made by the reactor before shutdown() aborted the waits: an fd it
    // brought in is closed, not leaked.
    detail::discard_unreturned(op, op.result);
    return;
  }
  if (ready_ != nullptr) {
    ready_->push(&op);
    return;
  }
  completed_.push(&op);
}

void AsioBackend::start(operation& op) noexcept {
  // Every completion leaves backend_state 0: non-zero means wait_ops of
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
  // A receive that will most likely wait (the last one drained the fd): its
  // try is put off to the end of the loop's iteration (poll()), when the
  // bytes it waits for are likelier to have come; a try then that finds none
  // queues it in the reactor as here.
  if ((op.hints & op_hint::expect_wait) != 0 && entry->registered &&
      (op.kind == op_kind::recv || op.kind == op_kind::read)) {
    op.backend_state = deferred_bit;
    op.next = nullptr;
    (deferred_tail_ != nullptr ? deferred_tail_->next : deferred_head_) = &op;
    deferred_tail_ = &op;
    return;
  }
  if (reactive::try_op(op, counts_, &entry->hint)) {
    complete(op);
    return;
  }
  if (!entry->registered) {  // cannot be waited on: report, never spin
    complete(op, -EBADF);
    return;
  }
  wait_for_readiness(op, *entry);
}

void AsioBackend::wait_for_readiness(operation& op, fd_entry& entry) noexcept {
  unsigned events = detail::readiness_events(op);
  bool in = (events & POLLIN) != 0;
  bool out = (events & POLLOUT) != 0;
  // poll and connect wait for readiness and check it in on_wait_end: their
  // start_op re-arms the fd in epoll (epoll_ctl MOD), so an fd ready already
  // reports at once. The others are made by the reactor on each event.
  bool performs = detail::retries_on_eagain(op.kind);
  op.next = entry.waiting;
  entry.waiting = &op;
  audit_.waiting(op.fd, entry.audit);
  // A poll for in and out needs a wait of each type; the operation completes
  // only after both ended, so neither can outlive it.
  for (int type : {reactor::read_op, reactor::write_op}) {
    if (type == reactor::read_op ? !in : !out) continue;
    wait_op* w = new_wait_op();
    if (w == nullptr) {
      // Out of memory: fail it; a wait already queued ends it (cancelled).
      op.result = -ENOMEM;
      op.backend_state |= done_bit;
      if (waits(op) == 0) {
        unlink_waiting(op);
        complete(op);
      } else {
        reactor_.cancel_ops(op.fd, entry.reactor_data);
      }
      return;
    }
    w->reset(op, performs);
    op.backend_state += one_wait;
    ++waits_;
    // A performing op is queued with no epoll_ctl: its fd was tried just now
    // (the reactor's own try, made at once if it believes the fd ready, is
    // skipped), so an event for it comes after this.
    reactor_.start_op(type, op.fd, entry.reactor_data, w, false, performs);
    w->skip_first = false;  // not called now: the next call is for an event
  }
}

void AsioBackend::unlink_deferred(operation& op) noexcept {
  operation* prev = nullptr;
  for (operation* d = deferred_head_; d != nullptr; prev = d, d = d->next) {
    if (d != &op) continue;
    (prev != nullptr ? prev->next : deferred_head_) = op.next;
    if (deferred_tail_ == &op) deferred_tail_ = prev;
    break;
  }
  op.next = nullptr;
  op.backend_state = 0;
}

void AsioBackend::try_deferred() noexcept {
  operation* list = deferred_head_;
  deferred_head_ = deferred_tail_ = nullptr;
  while (list != nullptr) {
    operation& op = *list;
    list = op.next;
    op.next = nullptr;
    op.backend_state = 0;
    fd_entry& entry = *fds_[op.fd];  // close_fd takes its fd's deferred ones out
    if (reactive::try_op(op, counts_, &entry.hint)) {
      complete(op);
    } else {
      wait_for_readiness(op, entry);
    }
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

// One wait_op of the operation ended: its operation was made (done_bit), or
// its fd may be ready (a poll's or a connect's wait), or it was aborted (by
// cancel(), by a close, or by a cancel of another operation on the same fd,
// which aborts every wait on it).
void AsioBackend::on_wait_end(operation& op, const boost::system::error_code& ec) noexcept {
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
      reactor_.cancel_ops(op.fd, fds_[op.fd]->reactor_data);  // end its other wait
    }
  }
  if (last) {
    unlink_waiting(op);
    complete(op);
  }
}

void AsioBackend::cancel(operation& op) noexcept {
  if ((op.backend_state & deferred_bit) != 0) {  // not tried yet: nothing taken
    unlink_deferred(op);
    complete(op, -ECANCELED);
    return;
  }
  // Done, completing, or its fd was closed (it ends with -ECANCELED anyway,
  // and the fd's entry, maybe a new fd's by now, is not its own any more).
  if (waits(op) == 0 || (op.backend_state & (done_bit | fd_closed_bit)) != 0) return;
  op.backend_state |= cancel_bit;
  // The reactor cannot take one operation out of a queue: every wait on the
  // fd is aborted, and the others wait again.
  reactor_.cancel_ops(op.fd, fds_[op.fd]->reactor_data);
}

void AsioBackend::close_fd(operation& op) noexcept {
  for (operation* d = deferred_head_; d != nullptr;) {
    operation* next = d->next;
    if (d->fd == op.fd) {
      unlink_deferred(*d);
      complete(*d, -ECANCELED);
    }
    d = next;
  }
  std::unique_ptr<fd_entry>* slot = fds_.find(op.fd);
  if (slot != nullptr && *slot) {
    std::unique_ptr<fd_entry> entry = std::move(*slot);
    for (operation* w = entry->waiting; w != nullptr; w = w->next) w->backend_state |= fd_closed_bit;
    entry->waiting = nullptr;
    deregister_fd(op.fd, *entry);  // aborted waits complete with -ECANCELED
  }
  reactive::close_now(op, counts_);
  complete(op);
}

void AsioBackend::recheck_registration(int fd) noexcept {
  // Asio cannot be asked whether its reactor still has the fd, so ask
  // whether the number still names the file registered. If not,
  // deregistering makes every wait on it end with operation_aborted
  // (on_wait_end then tries the operation and waits again), and the fd is
  // registered anew; if that fails (the fd was closed), the tries report
  // EBADF.
  fd_entry& e = *fds_[fd];
  struct stat st {};
  ++counts_.syscalls;
  bool same_file = ::fstat(fd, &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino;
  if (same_file) return;
  e.dev = st.st_dev;
  e.ino = st.st_ino;
  deregister_fd(fd, e);
  register_fd(fd, e);
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
  if (deferred_head_ != nullptr) try_deferred();
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
  while (operation* d = deferred_head_) unlink_deferred(*d);  // never tried: forgotten
  // Finished in start() or by a readiness event, never to be handed back.
  while (operation* o = completed_.pop()) {
    o->backend_state = 0;
    detail::discard_unreturned(*o, o->result);
  }
  for (auto& e : fds_) {
    if (!e || e->waiting == nullptr) continue;
    for (operation* w = e->waiting; w != nullptr; w = w->next) w->backend_state |= cancel_bit;
    reactor_.cancel_ops(e->waiting->fd, e->reactor_data);
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
