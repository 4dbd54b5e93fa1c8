// The io_uring backend: every operation is an SQE, every completion a CQE.
//
// Operations queued during a loop iteration are submitted together with the
// wait for completions (one io_uring_enter per iteration). A full SQ ring is
// submitted and refilled; an operation that finds no SQE waits in a backlog
// for the next iteration. Cancel is an async-cancel SQE: the operation still
// completes exactly once, with -ECANCELED or its real result. The CQ ring
// never drops completions (IORING_FEAT_NODROP is required; an overflow is
// flushed before the wait). Cross-thread wake-up is an eventfd with a read
// always armed in the ring.
//
// Where the kernel has them, the ring is set up with SINGLE_ISSUER and
// DEFER_TASKRUN (else COOP_TASKRUN, else neither), and its fd is registered.
// The ring belongs to the thread that first runs the loop (SINGLE_ISSUER and
// the registered ring fd are per thread): run a loop on one thread only.
#pragma once

#include <liburing.h>

#include <string>

#include "core/backend/backend.h"
#include "backends/support/eventfd_waker.h"
#include "backends/support/op_list.h"

namespace polyloop::backends {

class IoUringBackend final : public Backend {
 public:
  struct options {
    unsigned entries = 256;       // SQ ring size (halved on ENOMEM down to 4)
    bool defer_taskrun = true;    // SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them
    bool coop_taskrun = true;     // else COOP_TASKRUN
    bool register_ring_fd = true;
  };
  // Throws BackendError saying why io_uring cannot be used, or
  // std::system_error naming the syscall for other failures.
  IoUringBackend() : IoUringBackend(options{}) {}
  explicit IoUringBackend(unsigned entries) : IoUringBackend(options{entries}) {}
  explicit IoUringBackend(const options& opts);
  ~IoUringBackend() override;
  IoUringBackend(const IoUringBackend&) = delete;
  IoUringBackend& operator=(const IoUringBackend&) = delete;

  // Empty if io_uring can run here, else why not, e.g.
  // "kernel.io_uring_disabled=2 (EPERM)". Probed once per process.
  static std::string unavailable_reason();
  // Test-only: make ring set-up fail with `err` (ENOSYS, EPERM, ENOMEM, ...)
  // for rings of more than `above_entries` entries (0: every ring), in the
  // probe and in construction; err = 0 restores normal behaviour.
  static void force_setup_error_for_testing(int err, unsigned above_entries = 0) noexcept;

  std::string_view name() const noexcept override { return "io_uring"; }
  void start(operation& op) noexcept override;
  void cancel(operation& op) noexcept override;
  std::error_code poll(std::chrono::nanoseconds timeout,
                       detail::ready_queue& ready) noexcept override;
  void wakeup() noexcept override;

  // The SQ ring's size after set-up (for tests).
  unsigned sq_entries() const noexcept { return ring_.sq.ring_entries; }

 private:
  using op_list = detail::op_list;

  io_uring_sqe* get_sqe() noexcept;
  void submit_now() noexcept;
  bool submit_op(operation& op) noexcept;
  bool submit_cancel(operation& op) noexcept;
  void arm_wake() noexcept;
  void flush_backlog() noexcept;
  void handle_cqe(const io_uring_cqe& cqe, detail::ready_queue& ready) noexcept;
  void reap(detail::ready_queue& ready) noexcept;
  void enable_once() noexcept;
  // Every completion passes here on its way back to the loop.
  void handed_back(const operation& op) noexcept {
    if (op.kind == op_kind::write && !nosignal_writes_) --signalling_writes_;
  }

  // Blocking: the ring keeps a read of it armed (into wake_buf_).
  detail::eventfd_waker waker_{detail::eventfd_waker::mode::blocking};
  io_uring ring_{};
  std::uint64_t wake_buf_ = 0;
  bool wake_armed_ = false;
  bool enabled_ = false;
  bool register_ring_fd_ = true;
  bool nosignal_writes_ = false;       // the kernel has RWF_NOSIGNAL (Linux 6.18)
  std::size_t signalling_writes_ = 0;  // without it: writes started, not yet handed back
  std::size_t in_flight_ = 0;  // operations with an SQE or CQE outstanding
  op_list backlog_;            // started while the SQ ring was full
  op_list completed_;          // ended without a CQE (cancelled in the backlog)
  op_list unsent_cancels_;     // in flight, cancel asked, no SQE for it yet
};

}  // namespace polyloop::backends
