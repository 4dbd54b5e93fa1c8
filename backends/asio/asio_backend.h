// The Boost.Asio backend: the loop's I/O and waiting run on an
// io_context, so Asio code and polyloop tasks share one thread and one loop.
//
// Operations are reactive, as Asio's own sockets do it: the syscall is tried
// at once on the non-blocking fd, and on EAGAIN the operation is queued on
// the fd in Asio's reactor, which makes the syscall again on the fd's next
// readiness event. The fd is registered with the reactor once; a queued
// operation costs no epoll_ctl (an async_wait costs one each time, see
// docs/benchmarks.md "asiopath"), which takes Asio's reactor interface
// (boost/asio/detail, pinned to Asio 1.18 = Boost 1.74 below). Waiting with
// a timeout is io_context::run_one_for; cross-thread wake-up is a post().
// The loop's timers stay in core/ (polyloop's order and never-early rule);
// Asio timers of the user's run on the same context.
//
// Threads: as every backend, loop thread only, except wakeup(). Close an fd
// used here with an op_kind::close operation (polyloop::async_close).
#pragma once

#include "third_party/asio/asio.h"  // first: Boost 1.74 needs <utility> before Asio
// clang-format off
#include <boost/asio/detail/reactor.hpp>  // the reactor's interface; after asio.h
// clang-format on

#include <atomic>
#include <memory>
#include <optional>

#include <sys/types.h>

#include "core/backend/backend.h"
#include "backends/reactive/nonblocking.h"
#include "backends/support/fd_table.h"
#include "backends/support/op_list.h"
#include "backends/support/quiet_wait_audit.h"

namespace polyloop::backends {

class AsioBackend final : public Backend {
 public:
  AsioBackend();
  ~AsioBackend() override;
  AsioBackend(const AsioBackend&) = delete;
  AsioBackend& operator=(const AsioBackend&) = delete;

  std::string_view name() const noexcept override { return "asio"; }
  void start(operation& op) noexcept override;
  void cancel(operation& op) noexcept override;
  std::error_code poll(std::chrono::nanoseconds timeout,
                       detail::ready_queue& ready) noexcept override;
  void wakeup() noexcept override;
  void shutdown() noexcept override;

  // The io_context the loop runs: Asio objects made on it run on the loop's
  // thread while the loop runs (polyloop/asio.h).
  boost::asio::io_context& context() noexcept { return context_; }

 private:
  class wait_op;  // one queued operation's place in Asio's reactor (the .cc)
  using reactor = boost::asio::detail::reactor;

  struct fd_entry {
    reactor::per_descriptor_data reactor_data = nullptr;  // Asio's, while registered
    bool registered = false;       // the reactor took the fd (else waits fail: -EBADF)
    operation* waiting = nullptr;  // operations with a wait_op outstanding
    reactive::write_hint hint;     // for writes on kernels without RWF_NOSIGNAL
    detail::quiet_wait_audit::marks audit;
    // Which file the descriptor was registered for (fstat at creation): the
    // audit's check compares it with the file the number names now.
    dev_t dev = 0;
    ino_t ino = 0;
  };

  // The entry of `fd`, made if there is none; null
  // for a negative fd or out of memory (fd_table::slot_error tells).
  fd_entry* entry_for(int fd) noexcept;
  // Registers the fd with Asio's reactor (epoll_ctl ADD), or forgets it
  // (DEL; its queued wait_ops end with operation_aborted).
  void register_fd(int fd, fd_entry& entry) noexcept;
  void deregister_fd(int fd, fd_entry& entry) noexcept;
  // Queues `op`, just tried and found not ready, on its fd in the reactor.
  void wait_for_readiness(operation& op, fd_entry& entry) noexcept;
  // Hinted receives (op_hint::expect_wait) wait in a list for poll() to try
  // them, at the end of the iteration that started them.
  void unlink_deferred(operation& op) noexcept;
  void try_deferred() noexcept;
  void on_wait_end(operation& op, const boost::system::error_code& ec) noexcept;
  wait_op* new_wait_op() noexcept;
  void recycle(wait_op* w) noexcept;
  void close_fd(operation& op) noexcept;
  void complete(operation& op) noexcept;
  void complete(operation& op, std::int64_t result) noexcept {
    op.result = result;
    complete(op);
  }
  void unlink_waiting(operation& op) noexcept;
  // The audit's check of a quiet fd: if the number names another file than
  // the one registered (closed with ::close() and reused), registers it with
  // Asio's reactor anew; its waits end and are made again on it.
  void recheck_registration(int fd) noexcept;
  void run_ready(std::size_t limit);

  // Asio's turn (docs/backends.md): a poll() that will not block skips the
  // io_context while none of our waits is outstanding and Asio ran nothing
  // last time, but at most turn_iterations polls in a row and while fewer
  // than turn_ready callbacks were ready in them. A turn runs at most
  // turn_handlers of Asio's handlers.
  static constexpr unsigned turn_iterations = 64;
  static constexpr std::size_t turn_ready = 1024;
  static constexpr std::size_t turn_handlers = 256;

  boost::asio::io_context context_{1};  // one thread: the loop's
  reactor& reactor_;                     // context_'s
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  detail::fd_table<std::unique_ptr<fd_entry>> fds_;
  detail::quiet_wait_audit audit_;
  std::atomic<bool> wake_pending_{false};
  detail::ready_queue* ready_ = nullptr;  // set while poll() runs handlers
  detail::op_list completed_;             // finished outside poll()
  std::size_t waits_ = 0;                 // our wait_ops outstanding
  wait_op* free_waits_ = nullptr;         // finished wait_ops, for reuse
  operation* deferred_head_ = nullptr;    // hinted receives not tried yet, linked by next
  operation* deferred_tail_ = nullptr;
  bool shutting_down_ = false;            // shutdown(): completions are forgotten
  bool asio_busy_ = true;                 // the last turn ran a handler: poll next time too
  unsigned skipped_iterations_ = 0;       // polls since Asio's last turn
  std::size_t skipped_ready_ = 0;         // callbacks ready in them
};

}  // namespace polyloop::backends
