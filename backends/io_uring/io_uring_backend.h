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

#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/backend/backend.h"
#include "backends/support/eventfd_waker.h"
#include "backends/support/fd_table.h"
#include "backends/support/op_list.h"
#include "backends/support/op_traits.h"

namespace polyloop::backends {

class IoUringBackend final : public Backend {
 public:
  struct options {
    unsigned entries = 256;       // SQ ring size (halved on ENOMEM down to 4)
    bool defer_taskrun = true;    // SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them
    bool coop_taskrun = true;     // else COOP_TASKRUN
    bool register_ring_fd = true;
    // Closing an fd and shutdown() cancel with one IORING_ASYNC_CANCEL_FD|ALL
    // (or ANY) where the kernel has it (5.19); false, or an older kernel:
    // each operation known to be on the fd is cancelled by its user_data.
    bool cancel_by_fd = true;
    // A receive hinted op_hint::expect_wait waits for readiness before its
    // first try (IORING_RECVSEND_POLL_FIRST, 5.19) where the kernel has it;
    // false, or an older kernel: the hint is ignored (try, then wait).
    bool recv_poll_first = true;
    // An accept may be multishot (backend_traits::multishot_accept: one SQE
    // for many connections) where the kernel has IORING_ACCEPT_MULTISHOT
    // (5.19) and cancels by fd (cancel_by_fd, which ends it on close); false,
    // or an older kernel: one SQE per accept.
    bool multishot_accept = true;
    // A recv may be multishot into a ring of buffers the backend provides
    // (backend_traits::multishot_recv, Backend::lent()) where the kernel
    // has IORING_REGISTER_PBUF_RING and IORING_RECV_MULTISHOT (6.0) and
    // cancels by fd; false, or an older kernel: one SQE per receive, into
    // the stream's own buffer. docs/benchmarks.md "bufring": an idle
    // connection costs a quarter of the memory, and server CPU is the same
    // or 2-3 % lower.
    bool multishot_recv = true;
    // The ring: recv_buffers buffers (a power of two, at most 32768) of
    // recv_buffer_size bytes, for the whole loop. 128 x 16 KiB (2 MiB): a
    // 16 KiB message fits one buffer, and 50 busy connections holding two
    // each leave room; idle connections hold none.
    unsigned recv_buffers = 128;
    unsigned recv_buffer_size = 16 * 1024;
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
  // Whether this kernel cancels by fd with IORING_ASYNC_CANCEL_FD|ALL (and
  // ANY): a cancel tried on a ring of its own, once per process.
  static bool kernel_cancels_by_fd();
  // Whether this kernel takes IORING_RECVSEND_POLL_FIRST on a recv (5.19+;
  // older ones reject the flag with -EINVAL): tried once per process.
  static bool kernel_has_recv_poll_first();
  // Whether this kernel takes IORING_ACCEPT_MULTISHOT (5.19+): an accept of
  // a waiting connection tried once per process.
  static bool kernel_has_multishot_accept();
  // Whether this kernel takes a multishot recv into a registered provided
  // buffer ring (6.0+): a receive of a byte already queued, tried once per
  // process.
  static bool kernel_has_multishot_recv();
  // The set-ups tests run the behaviour suite on besides the default
  // ("io_uring:coop", ...: the paths of kernels 5.11-6.0 on a newer one);
  // throws BackendError naming them for another name.
  static std::unique_ptr<Backend> make_setup(std::string_view setup);

  std::string_view name() const noexcept override { return "io_uring"; }
  void start(operation& op) noexcept override;
  void cancel(operation& op) noexcept override;
  std::error_code poll(std::chrono::nanoseconds timeout,
                       detail::ready_queue& ready) noexcept override;
  void wakeup() noexcept override;
  void shutdown() noexcept override;

  // The SQ ring's size after set-up (for tests).
  unsigned sq_entries() const noexcept { return ring_.sq.ring_entries; }

 private:
  using op_list = detail::op_list;

  io_uring_sqe* get_sqe() noexcept;
  void submit_now() noexcept;
  // Before each liburing call that enters the kernel: it hands over every
  // SQE the SQ ring holds (backend_counters). Each call makes at most one
  // io_uring_enter: liburing skips it for a wait that has nothing to submit
  // and finds a completion already posted, which only the set-ups without
  // DEFER_TASKRUN (coop, no_taskrun) can meet, since poll() reaps the CQ
  // ring empty and DEFER_TASKRUN posts completions inside io_uring_enter.
  void count_enter() noexcept {
    ++counts_.syscalls;
    ++counts_.enters;
    counts_.sqes_submitted += io_uring_sq_ready(&ring_);
  }
  bool submit_op(operation& op) noexcept;
  bool submit_cancel(operation& op) noexcept;
  void arm_wake() noexcept;
  void flush_backlog() noexcept;
  // ready is null in shutdown(): nothing is handed back then.
  void handle_cqe(const io_uring_cqe& cqe, detail::ready_queue* ready) noexcept;
  int reap(detail::ready_queue* ready) noexcept;
  void finish(operation& op, std::int64_t result, detail::ready_queue* ready) noexcept;
  // A multishot operation's completion that keeps it armed (F_MORE).
  void one_of_many(operation& op, std::int32_t res, detail::ready_queue* ready) noexcept;
  // A multishot operation's last completion (result: a last fd, or why).
  void end_multishot(operation& op, std::int64_t result, detail::ready_queue* ready) noexcept;
  // A multishot recv's completion: its bytes (or end of stream) to the
  // results, or the buffer straight back when nobody will take it.
  void lent_completion(operation& op, const io_uring_cqe& cqe, detail::ready_queue* ready) noexcept;
  void setup_lent_buffers(const options& opts);
  // Puts the buffers given back since the last poll() into the ring.
  void return_lent() noexcept;
  void retry_or_backlog(operation& op) noexcept;
  bool closed_since_start(const operation& op) noexcept;
  void cancel_ops_on_fd(int fd) noexcept;
  void track(operation& op) noexcept;
  void untrack(operation& op) noexcept;
  void cancel_everything() noexcept;
  void enable_once() noexcept;
  // Every completion passes here on its way back to the loop.
  void handed_back(const operation& op) noexcept {
    if (detail::may_raise_sigpipe(op.kind) && !nosignal_writes_) --signalling_writes_;
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
  bool cancel_by_fd_ = true;   // the kernel has CANCEL_FD|ALL and ANY, and the options allow it
  bool recv_poll_first_ = false;  // the kernel has RECVSEND_POLL_FIRST, and the options allow it
  bool shutting_down_ = false;
  // Multishot recv only: the provided buffer ring (group 0) and its buffers.
  lent_buffers lent_pool_;
  io_uring_buf_ring* buf_ring_ = nullptr;
  std::size_t buf_ring_bytes_ = 0;
  std::unique_ptr<char[]> buffer_memory_;
  std::unique_ptr<std::uint16_t[]> returned_ids_;  // lent_pool_.returned
  std::thread::id owner_;      // the thread that enabled the ring
  // Closes submitted so far; closed_at_[fd], the count when fd's last close
  // was submitted. An operation keeps the count of its start in
  // backend_seq, so a retry after -EAGAIN can tell that its fd was closed
  // (maybe reused) since: it then ends with -ECANCELED instead.
  std::uint64_t close_seq_ = 0;
  detail::fd_table<std::uint64_t> closed_at_;
  // Without cancel_by_fd_ only: the operations started on each fd, to
  // cancel one by one when it is closed or the backend shuts down.
  detail::fd_table<std::vector<operation*>> on_fd_;
};

}  // namespace polyloop::backends
