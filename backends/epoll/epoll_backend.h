// The epoll backend: completions emulated with readiness plus non-blocking
// syscalls, as libuv's src/unix/linux.c does.
//
// Each fd is registered once, edge-triggered, on its first operation, and
// made non-blocking (O_NONBLOCK on the open file description). An operation
// is tried at once when its fd is believed ready and queued otherwise; an
// edge retries the queue in order until a call would block. Regular files
// cannot be polled: their operations run synchronously. Close an fd that had
// operations with an op_kind::close operation, so the backend forgets it
// before the number is reused. Cross-thread wake-up is an eventfd.
#pragma once

#include <memory>
#include <string_view>

#include "core/backend/backend.h"
#include "backends/reactive/nonblocking.h"
#include "backends/support/eventfd_waker.h"
#include "backends/support/fd_table.h"
#include "backends/support/op_list.h"
#include "backends/support/quiet_wait_audit.h"

namespace polyloop::backends {

class EpollBackend final : public Backend {
 public:
  struct options {
    bool epoll_pwait2 = true;  // false: epoll_wait only, as before Linux 5.11
  };
  // Throws std::system_error naming the syscall that failed.
  EpollBackend() : EpollBackend(options{}) {}
  explicit EpollBackend(const options& opts);
  // The set-ups tests run the behaviour suite on besides the default
  // ("epoll:no_pwait2"); throws BackendError naming them for another name.
  static std::unique_ptr<Backend> make_setup(std::string_view setup);
  ~EpollBackend() override;
  EpollBackend(const EpollBackend&) = delete;
  EpollBackend& operator=(const EpollBackend&) = delete;

  std::string_view name() const noexcept override { return "epoll"; }
  void start(operation& op) noexcept override;
  void cancel(operation& op) noexcept override;
  std::error_code poll(std::chrono::nanoseconds timeout,
                       detail::ready_queue& ready) noexcept override;
  void wakeup() noexcept override;
  void shutdown() noexcept override;

 private:
  using op_queue = detail::op_list;
  struct fd_state {
    op_queue readers;  // read, recv, accept: tried in order on in-edges
    op_queue writers;  // write, send, connect: tried in order on out-edges
    op_queue pollers;  // poll: each level-checked on any edge
    bool registered = false;
    bool pollable = true;
    bool readable = true;  // no EAGAIN seen since the last edge
    bool writable = true;
    // An input edge came (or the fd is new) since a receive on it last
    // completed. Without one, a receive hinted op_hint::expect_wait waits
    // for the next edge without trying: the try would fail with EAGAIN.
    bool input_since_receive = true;
    // A receive waits that skipped its try on that hint: the audit's check
    // of a quiet fd tries it (the hint was wrong: bytes were left).
    bool skipped_try = false;
    reactive::write_hint hint;  // for writes on kernels without RWF_NOSIGNAL
    detail::quiet_wait_audit::marks audit;
  };

  // epoll_pwait2 (or epoll_wait) for at most `timeout`; what is ready lands
  // in completed_.
  [[gnu::noinline]] std::error_code wait(std::chrono::nanoseconds timeout) noexcept;
  bool register_fd(int fd, fd_state& st) noexcept;
  void close_fd(operation& op) noexcept;
  // Tries q's operations in order until one would block; returns how many
  // completed.
  std::size_t drain(op_queue& q, bool& ready_flag, reactive::write_hint& hint) noexcept;
  void complete(operation& op) noexcept;
  void complete(operation& op, std::int64_t result) noexcept {
    op.result = result;
    complete(op);
  }
  void dispatch(std::uint32_t events, int fd) noexcept;
  void count_epoll_ctl() noexcept {
    ++counts_.syscalls;
    ++counts_.epoll_ctls;
  }
  // The audit's check of a quiet fd: registers it again if the kernel had
  // dropped it (closed with ::close() and the number reused), and retries
  // its operations.
  void recheck_registration(int fd) noexcept;

  detail::eventfd_waker waker_{detail::eventfd_waker::mode::nonblocking};
  int epfd_ = -1;
  bool have_pwait2_ = true;
  std::size_t queued_ = 0;  // operations waiting for readiness
  detail::fd_table<fd_state> fds_;
  detail::quiet_wait_audit audit_;
  op_queue completed_;  // finished in start()/cancel(), handed over by poll()
};

}  // namespace polyloop::backends
