// The Boost.Asio backend: the loop's I/O and waiting run on an
// io_context, so Asio code and polyloop tasks share one thread and one loop.
//
// Operations are reactive, as Asio's own sockets do it: the syscall is tried
// at once on the non-blocking fd, and on EAGAIN the fd's
// posix::stream_descriptor async_wait()s for readiness and tries again.
// Waiting with a timeout is io_context::run_one_for; cross-thread wake-up is
// a post(). The loop's timers stay in core/ (polyloop's order and
// never-early rule); Asio timers of the user's run on the same context.
//
// Threads: as every backend, loop thread only, except wakeup(). Close an fd
// used here with an op_kind::close operation (polyloop::async_close).
#pragma once

#include "third_party/asio/asio.h"  // first: Boost 1.74 needs <utility> before Asio

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
  struct fd_entry {
    explicit fd_entry(boost::asio::io_context& ctx, int fd);
    boost::asio::posix::stream_descriptor descriptor;
    operation* waiting = nullptr;  // operations with an async_wait outstanding
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
  void wait_for_readiness(operation& op, fd_entry& entry) noexcept;
  void on_ready(operation& op, const boost::system::error_code& ec) noexcept;
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
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  detail::fd_table<std::unique_ptr<fd_entry>> fds_;
  detail::quiet_wait_audit audit_;
  std::atomic<bool> wake_pending_{false};
  detail::ready_queue* ready_ = nullptr;  // set while poll() runs handlers
  detail::op_list completed_;             // finished outside poll()
  std::size_t waits_ = 0;                 // our async_waits outstanding
  bool shutting_down_ = false;            // shutdown(): completions are forgotten
  bool asio_busy_ = true;                 // the last turn ran a handler: poll next time too
  unsigned skipped_iterations_ = 0;       // polls since Asio's last turn
  std::size_t skipped_ready_ = 0;         // callbacks ready in them
};

}  // namespace polyloop::backends
