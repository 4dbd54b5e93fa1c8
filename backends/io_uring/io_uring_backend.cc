#include "backends/io_uring/io_uring_backend.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "backends/support/discard.h"
#include "backends/support/op_traits.h"
#include "backends/support/sigpipe.h"
#include "backends/support/timeout.h"
#include "core/errors/errors.h"
#include "core/errors/invariant.h"

namespace polyloop::backends {

namespace {

// user_data values that are not operations (operations are aligned pointers).
constexpr std::uint64_t wake_tag = 1;
constexpr std::uint64_t cancel_tag = 2;

// Bits kept in operation::backend_state.
constexpr std::uint32_t in_flight_bit = 1;
constexpr std::uint32_t retry_poll_bit = 2;  // waiting for readiness after -EAGAIN
constexpr std::uint32_t backlog_bit = 4;
constexpr std::uint32_t cancel_bit = 8;            // cancel() was asked
constexpr std::uint32_t cancel_unsent_bit = 16;    // ...and still waits for an SQE
constexpr std::uint32_t tracked_bit = 32;          // in on_fd_ (no cancel by fd)

std::atomic<int> forced_error{0};
std::atomic<unsigned> forced_above{0};

// The opcodes the backend issues.
constexpr int needed_ops[] = {IORING_OP_READ,    IORING_OP_WRITE,   IORING_OP_RECV,
                              IORING_OP_SEND,    IORING_OP_ACCEPT,  IORING_OP_CONNECT,
                              IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL, IORING_OP_CLOSE};

std::string read_sysctl(const char* path) {
  std::ifstream in(path);
  std::string v;
  if (in) std::getline(in, v);
  return v;
}

// Why io_uring_queue_init failed with -err, in words a user can act on.
std::string explain_setup_error(int err) {
  switch (err) {
    case ENOSYS:
      return "io_uring unavailable: this kernel has no io_uring (ENOSYS)";
    case EPERM: {
      std::string disabled = read_sysctl("/proc/sys/kernel/io_uring_disabled");
      if (disabled == "2") return "io_uring unavailable: kernel.io_uring_disabled=2 (EPERM)";
      if (disabled == "1") {
        return "io_uring unavailable: kernel.io_uring_disabled=1 and this process is not in "
               "kernel.io_uring_group (EPERM)";
      }
      return "io_uring unavailable: io_uring_setup was refused by a seccomp filter or security "
             "policy, as in a container's default profile (EPERM)";
    }
    case ENOMEM:
      return "io_uring unavailable: not enough lockable memory for a ring (ENOMEM; raise "
             "RLIMIT_MEMLOCK, ulimit -l)";
    default:
      return std::string("io_uring unavailable: io_uring_setup failed: ") + std::strerror(err);
  }
}

std::string with_advice(const std::string& reason) {
  return reason + "; use --backend=epoll or --backend=auto";
}

// Sets up `ring`, trying the fastest flags the kernel accepts and, on
// ENOMEM, smaller rings. Returns 0 or a positive errno.
int setup_ring(io_uring& ring, const IoUringBackend::options& opts) {
  const unsigned defer =
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
  const unsigned flag_sets[] = {
      opts.defer_taskrun ? defer : 0u,
      opts.coop_taskrun ? IORING_SETUP_COOP_TASKRUN : 0u,
      0u,
  };
  int err = EINVAL;
  for (unsigned n = opts.entries; n >= 4; n /= 2) {
    for (unsigned flags : flag_sets) {
      io_uring_params params{};
      params.flags = flags | IORING_SETUP_CQSIZE;
      params.cq_entries = n * 4;  // room for a burst of completions
      int forced = forced_error.load();
      int r = (forced != 0 && n > forced_above.load()) ? -forced
                                                        : io_uring_queue_init_params(n, &ring, &params);
      if (r == 0) {
        if ((params.features & IORING_FEAT_NODROP) == 0 ||
            (params.features & IORING_FEAT_EXT_ARG) == 0) {
          io_uring_queue_exit(&ring);
          return EOPNOTSUPP;  // pre-5.11 kernel: no lossless CQ or timed waits
        }
        return 0;
      }
      err = -r;
      if (err != EINVAL) break;  // EINVAL: flags unknown to this kernel, try fewer
    }
    if (err != ENOMEM) return err;
  }
  return err;
}

std::string probe_ops(io_uring& ring) {
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  if (probe == nullptr) return "io_uring unavailable: the kernel cannot report its opcodes";
  std::string missing;
  for (int op : needed_ops) {
    if (!io_uring_opcode_supported(probe, op)) missing += " " + std::to_string(op);
  }
  io_uring_free_probe(probe);
  if (missing.empty()) return {};
  return "io_uring unavailable: the kernel lacks opcodes" + missing;
}

bool probe_cancel_by_fd() {
  io_uring ring{};
  if (io_uring_queue_init(2, &ring, 0) != 0) return false;
  bool supported = false;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  // Nothing is pending on the ring's own fd: 5.19+ answers 0 (none
  // cancelled) or -ENOENT; an older kernel rejects the flags (-EINVAL).
  io_uring_prep_cancel_fd(sqe, ring.ring_fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_cqe* cqe = nullptr;
  if (io_uring_submit_and_wait(&ring, 1) == 1 && io_uring_peek_cqe(&ring, &cqe) == 0) {
    supported = cqe->res >= 0 || cqe->res == -ENOENT;
  }
  io_uring_queue_exit(&ring);
  return supported;
}

// A recv with POLL_FIRST of a byte already queued on a socket pair: 5.19+
// receives it (the poll is ready at once); an older kernel rejects the flag
// in sqe->ioprio (-EINVAL).
bool probe_recv_poll_first() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) return false;
  io_uring ring{};
  bool supported = false;
  char byte = 'x';
  if (::write(sv[1], &byte, 1) == 1 && io_uring_queue_init(2, &ring, 0) == 0) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv(sqe, sv[0], &byte, 1, 0);
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit_and_wait(&ring, 1) == 1 && io_uring_peek_cqe(&ring, &cqe) == 0) {
      supported = cqe->res == 1;
    }
    io_uring_queue_exit(&ring);
  }
  ::close(sv[0]);
  ::close(sv[1]);
  return supported;
}

// A multishot accept of a connection already waiting on an abstract Unix
// socket: 5.19+ accepts it and stays armed (F_MORE); an older kernel rejects
// the flag in sqe->ioprio (-EINVAL).
bool probe_multishot_accept() {
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listener < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  socklen_t addrlen = sizeof addr;
  int client = -1;
  io_uring ring{};
  bool supported = false;
  // bind() with the family only: the kernel picks a free abstract name.
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(sa_family_t)) == 0 &&
      ::listen(listener, 1) == 0 &&
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &addrlen) == 0 &&
      (client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) >= 0 &&
      ::connect(client, reinterpret_cast<sockaddr*>(&addr), addrlen) == 0 &&
      io_uring_queue_init(2, &ring, 0) == 0) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_multishot_accept(sqe, listener, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit_and_wait(&ring, 1) == 1 && io_uring_peek_cqe(&ring, &cqe) == 0) {
      supported = cqe->res >= 0 && (cqe->flags & IORING_CQE_F_MORE) != 0;
      if (cqe->res >= 0) ::close(cqe->res);
    }
    io_uring_queue_exit(&ring);  // cancels the accept still armed
  }
  if (client >= 0) ::close(client);
  ::close(listener);
  return supported;
}

// Registers a provided buffer ring of `entries` (a power of two) at `mem`
// (page-aligned, zeroed) as group 0. Returns 0 or -errno.
int register_buf_ring(io_uring& ring, void* mem, unsigned entries) {
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(mem);
  reg.ring_entries = entries;
  reg.bgid = 0;
  return io_uring_register_buf_ring(&ring, &reg, 0);
}

// A multishot recv of a byte already queued on a socket pair, into a
// provided buffer ring of one buffer: 6.0+ receives it into buffer 0 and
// stays armed (F_MORE); an older kernel rejects the registration or the
// flag (-EINVAL).
bool probe_multishot_recv() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) return false;
  io_uring ring{};
  bool supported = false;
  char byte = 'x';
  char buffer[16];
  void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem != MAP_FAILED && ::write(sv[1], &byte, 1) == 1 && io_uring_queue_init(2, &ring, 0) == 0) {
    auto* br = static_cast<io_uring_buf_ring*>(mem);
    if (register_buf_ring(ring, br, 1) == 0) {
      io_uring_buf_ring_init(br);
      io_uring_buf_ring_add(br, buffer, sizeof buffer, 0, io_uring_buf_ring_mask(1), 0);
      io_uring_buf_ring_advance(br, 1);
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_recv_multishot(sqe, sv[0], nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
      io_uring_cqe* cqe = nullptr;
      if (io_uring_submit_and_wait(&ring, 1) == 1 && io_uring_peek_cqe(&ring, &cqe) == 0) {
        supported = cqe->res == 1 && (cqe->flags & IORING_CQE_F_BUFFER) != 0 &&
                    (cqe->flags & IORING_CQE_F_MORE) != 0;
      }
    }
    io_uring_queue_exit(&ring);  // ends the recv before the buffer goes
  }
  if (mem != MAP_FAILED) ::munmap(mem, 4096);
  ::close(sv[0]);
  ::close(sv[1]);
  return supported;
}

std::string probe_now() {
  io_uring ring{};
  IoUringBackend::options opts;
  opts.entries = 8;
  int err = setup_ring(ring, opts);
  if (err == EOPNOTSUPP) {
    return "io_uring unavailable: the kernel lacks IORING_FEAT_NODROP or EXT_ARG (5.11+ needed)";
  }
  if (err != 0) return explain_setup_error(err);
  std::string missing = probe_ops(ring);
  io_uring_queue_exit(&ring);
  return missing;
}

}  // namespace

void IoUringBackend::force_setup_error_for_testing(int err, unsigned above_entries) noexcept {
  forced_above = above_entries;
  forced_error = err;
}

bool IoUringBackend::kernel_cancels_by_fd() {
  static const bool supported = probe_cancel_by_fd();
  return supported;
}

bool IoUringBackend::kernel_has_recv_poll_first() {
  static const bool supported = probe_recv_poll_first();
  return supported;
}

bool IoUringBackend::kernel_has_multishot_accept() {
  static const bool supported = probe_multishot_accept();
  return supported;
}

bool IoUringBackend::kernel_has_multishot_recv() {
  static const bool supported = probe_multishot_recv();
  return supported;
}

std::unique_ptr<Backend> IoUringBackend::make_setup(std::string_view setup) {
  options o;
  if (setup == "coop") {
    o.defer_taskrun = false;  // COOP_TASKRUN: kernels 5.19-6.0
  } else if (setup == "no_taskrun") {
    o.defer_taskrun = o.coop_taskrun = false;  // kernels 5.11-5.18
    o.recv_poll_first = false;                 // (5.19)
    o.multishot_accept = false;                // (5.19)
  } else if (setup == "plain_recv") {
    o.multishot_recv = false;  // one SQE per receive: to measure beside the default
  } else if (setup == "bufring") {
    // Multishot receives into a ring of 8 buffers of 4 KiB: the ring runs
    // dry (-ENOBUFS) and re-arms often, which the default ring seldom does.
    o.multishot_recv = true;
    o.recv_buffers = 8;
    o.recv_buffer_size = 4096;
  } else if (setup == "unregistered") {
    o.register_ring_fd = false;  // before 5.18
  } else if (setup == "no_cancel_fd") {
    o.cancel_by_fd = false;  // before 5.19
    o.recv_poll_first = false;
    o.multishot_accept = false;
  } else {
    throw BackendError("unknown set-up '" + std::string(setup) +
                       "' of io_uring: it has coop (COOP_TASKRUN), no_taskrun (neither "
                       "taskrun flag), unregistered (ring fd not registered), no_cancel_fd "
                       "(cancel each operation of a closed fd by its user_data), bufring "
                       "(multishot receives into a ring of 8 small buffers), plain_recv (no multishot "
                       "receive: one SQE per receive)");
  }
  return std::make_unique<IoUringBackend>(o);
}

std::string IoUringBackend::unavailable_reason() {
  if (forced_error.load() != 0) return probe_now();
  static const std::string reason = probe_now();
  return reason;
}

// The kernel copies a buffered read of cached pages (and, on file systems
// with async buffered writes, a write into the page cache) inside
// io_uring_enter, on the loop's thread: 32 MiB took 6-17 ms there
// (tests/files_test.cc saw the timer that late). Larger file transfers go
// to io-wq (IOSQE_ASYNC), so an inline copy stays under ~0.1 ms.
constexpr std::size_t inline_copy_limit = 1u << 20;

// --- set-up -----------------------------------------------------------------

// start() only fills an SQE; the kernel performs the operation (an -EAGAIN
// from a non-blocking fd is re-submitted after a POLL_ADD), in no order the
// kernel promises between requests on one fd.
IoUringBackend::IoUringBackend(const options& opts)
    : Backend({.tries_in_start = false,
               .fifo_per_fd = false,
               .kernel_performs_ops = true,
               .bound_to_first_thread = opts.defer_taskrun || opts.register_ring_fd,
               .native_file_ops = true,
               .multishot_accept = opts.multishot_accept && opts.cancel_by_fd &&
                                   kernel_cancels_by_fd() && kernel_has_multishot_accept(),
               .multishot_recv = opts.multishot_recv && opts.cancel_by_fd &&
                                 kernel_cancels_by_fd() && kernel_has_multishot_recv()}),
      register_ring_fd_(opts.register_ring_fd),
      nosignal_writes_(detail::kernel_has_rwf_nosignal()),
      cancel_by_fd_(opts.cancel_by_fd && kernel_cancels_by_fd()),
      recv_poll_first_(opts.recv_poll_first && kernel_has_recv_poll_first()) {
  int err = setup_ring(ring_, opts);
  if (err == EOPNOTSUPP) {
    throw BackendError(with_advice(
        "io_uring unavailable: the kernel lacks IORING_FEAT_NODROP or EXT_ARG (5.11+ needed)"));
  }
  if (err != 0) throw BackendError(with_advice(explain_setup_error(err)));
  std::string missing = probe_ops(ring_);
  if (!missing.empty()) {
    io_uring_queue_exit(&ring_);
    throw BackendError(with_advice(missing));
  }
  if (traits().multishot_recv) {
    try {
      setup_lent_buffers(opts);
    } catch (...) {
      io_uring_queue_exit(&ring_);
      throw;
    }
  }
  arm_wake();
}

IoUringBackend::~IoUringBackend() {
  // Tearing the ring down cancels what is still in flight; the kernel no
  // longer touches any operation's memory once io_uring_queue_exit returns
  // for sockets and pipes, whose requests hold no user pages. The provided
  // buffers go after it, for the same reason.
  io_uring_queue_exit(&ring_);
  if (buf_ring_ != nullptr) ::munmap(buf_ring_, buf_ring_bytes_);
}

// The provided buffer ring: its entries in page-aligned memory of their own
// (the kernel maps it), the buffers in one allocation, all of them in the
// ring at first.
void IoUringBackend::setup_lent_buffers(const options& opts) {
  unsigned count = opts.recv_buffers;
  if (count == 0 || count > 32768 || (count & (count - 1)) != 0 || opts.recv_buffer_size == 0) {
    throw std::invalid_argument(
        "IoUringBackend: recv_buffers must be a power of two from 1 to 32768, and "
        "recv_buffer_size more than 0 (got " +
        std::to_string(count) + " and " + std::to_string(opts.recv_buffer_size) + ")");
  }
  std::size_t ring_bytes = count * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
  if (mem == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap(buffer ring)");
  int r = register_buf_ring(ring_, mem, count);
  if (r < 0) {
    ::munmap(mem, ring_bytes);
    throw std::system_error(-r, std::generic_category(), "io_uring_register_buf_ring");
  }
  buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
  buf_ring_bytes_ = ring_bytes;
  // Not cleared: pages of buffers never used cost no memory.
  buffer_memory_.reset(new char[std::size_t{count} * opts.recv_buffer_size]);
  lent_pool_.base = buffer_memory_.get();
  lent_pool_.size = opts.recv_buffer_size;
  lent_pool_.count = count;
  returned_ids_.reset(new std::uint16_t[count]);
  lent_pool_.returned = returned_ids_.get();
  io_uring_buf_ring_init(buf_ring_);
  for (unsigned id = 0; id < count; ++id) lent_pool_.give_back(static_cast<std::uint16_t>(id));
  return_lent();
  lent_ = &lent_pool_;
}

void IoUringBackend::return_lent() noexcept {
  const std::uint32_t n = lent_pool_.returned_count;
  if (n == 0) return;
  const int mask = io_uring_buf_ring_mask(lent_pool_.count);
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint16_t id = lent_pool_.returned[i];
    io_uring_buf_ring_add(buf_ring_, lent_pool_.data(id), lent_pool_.size, id, mask,
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, static_cast<int>(n));
  lent_pool_.returned_count = 0;
}

void IoUringBackend::enable_once() noexcept {
  if (enabled_) return;
  enabled_ = true;
  owner_ = std::this_thread::get_id();
  // SINGLE_ISSUER binds the ring to the thread that enables it: the loop's.
  // (liburing 2.3 declares io_uring_enable_rings but does not export it.)
  if ((ring_.flags & IORING_SETUP_R_DISABLED) != 0) {
    ::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  }
  // The registered ring fd is this thread's: a loop stays on the thread that
  // first ran it.
  if (register_ring_fd_) io_uring_register_ring_fd(&ring_);  // best effort: saves an fd lookup per enter
}

// --- submission ---------------------------------------------------------------

// Hands the SQ ring to the kernel outside poll() (the ring is full), with
// SIGPIPE kept off as poll() keeps it (see there).
void IoUringBackend::submit_now() noexcept {
  std::optional<detail::sigpipe_guard> sigpipe;
  if (signalling_writes_ != 0) sigpipe.emplace();
  count_enter();
  io_uring_submit(&ring_);
  if (sigpipe) sigpipe->consume_if_raised();
}

io_uring_sqe* IoUringBackend::get_sqe() noexcept {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr && enabled_) {
    submit_now();  // SQ ring full: hand it over and refill
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

bool IoUringBackend::submit_op(operation& op) noexcept {
  const unsigned close_sqes = cancel_by_fd_ ? 2 : 1;
  if (op.kind == op_kind::close && io_uring_sq_space_left(&ring_) < close_sqes && enabled_) {
    submit_now();  // the cancel and the close must go in together
  }
  if (op.kind == op_kind::close && io_uring_sq_space_left(&ring_) < close_sqes) return false;
  if (op.kind == op_kind::close) {
    // From here on a retry of an operation started before sees the fd closed.
    if (std::uint64_t* at = closed_at_.slot(op.fd)) *at = ++close_seq_;
    if (!cancel_by_fd_) cancel_ops_on_fd(op.fd);
  }
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  void* buf = op.buf;
  auto len = static_cast<unsigned>(op.len);
  if ((op.backend_state & retry_poll_bit) != 0) {
    io_uring_prep_poll_add(sqe, op.fd, detail::readiness_events(op));
  } else {
    switch (op.kind) {
      case op_kind::read:
        io_uring_prep_read(sqe, op.fd, buf, len, static_cast<__u64>(-1));
        break;
      case op_kind::write:
        io_uring_prep_write(sqe, op.fd, buf, len, static_cast<__u64>(-1));
        // The kernel raises SIGPIPE for an IORING_OP_WRITE to a pipe or
        // socket whose reader is gone, as for write(2) (checked on 6.18,
        // with and without DEFER_TASKRUN). RWF_NOSIGNAL, where the kernel
        // has it, makes that a plain -EPIPE for pipes and sockets alike, so
        // the write stays one SQE. Elsewhere, poll() blocks SIGPIPE around
        // the io_uring_enter calls while such writes are in flight (see
        // there). IORING_OP_SEND with MSG_NOSIGNAL would spare sockets that,
        // but needs to know per fd which are sockets (a table this backend
        // does not keep, and a -ENOTSOCK round trip per new fd), and pipes
        // would still need the mask.
        if (nosignal_writes_) sqe->rw_flags = detail::rwf_nosignal;
        break;
      case op_kind::recv:
        if (op.multishot) {
          // Into whichever provided buffer is next: no buffer is held while
          // the socket is quiet.
          io_uring_prep_recv_multishot(sqe, op.fd, nullptr, 0, op.flags);
          sqe->flags |= IOSQE_BUFFER_SELECT;
          sqe->buf_group = 0;
          break;
        }
        io_uring_prep_recv(sqe, op.fd, buf, op.len, op.flags);
        // The fd was just drained: arm the kernel's poll at once rather
        // than let it try, fail with -EAGAIN and arm it then.
        if ((op.hints & op_hint::expect_wait) != 0 && recv_poll_first_) {
          sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        }
        break;
      case op_kind::send:
        io_uring_prep_send(sqe, op.fd, buf, op.len, op.flags | MSG_NOSIGNAL);
        break;
      case op_kind::accept:
        if (op.multishot) {
          io_uring_prep_multishot_accept(sqe, op.fd, nullptr, nullptr,
                                         SOCK_NONBLOCK | SOCK_CLOEXEC);
          break;
        }
        io_uring_prep_accept(sqe, op.fd, op.addr, op.addr != nullptr ? &op.addrlen : nullptr,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
      case op_kind::connect:
        io_uring_prep_connect(sqe, op.fd, op.addr, op.addrlen);
        break;
      case op_kind::poll:
        io_uring_prep_poll_add(sqe, op.fd, static_cast<unsigned>(op.flags));
        break;
      case op_kind::recvmsg:
        io_uring_prep_recvmsg(sqe, op.fd, static_cast<msghdr*>(op.buf),
                              static_cast<unsigned>(op.flags));
        break;
      case op_kind::sendmsg:
        io_uring_prep_sendmsg(sqe, op.fd, static_cast<const msghdr*>(op.buf),
                              static_cast<unsigned>(op.flags | MSG_NOSIGNAL));
        break;
      case op_kind::close:
        // First end every request still on the fd (as epoll does), then
        // close it; the hard link keeps the order whatever the cancel finds.
        // Without cancel by fd, cancel_ops_on_fd() has already asked.
        if (cancel_by_fd_) {
          io_uring_prep_cancel_fd(sqe, op.fd, IORING_ASYNC_CANCEL_ALL);
          io_uring_sqe_set_data64(sqe, cancel_tag);
          sqe->flags |= IOSQE_IO_HARDLINK;
          sqe = io_uring_get_sqe(&ring_);
        }
        io_uring_prep_close(sqe, op.fd);
        break;
      case op_kind::pread:
        io_uring_prep_read(sqe, op.fd, buf, len, static_cast<__u64>(op.offset));
        if (op.len > inline_copy_limit) sqe->flags |= IOSQE_ASYNC;
        break;
      case op_kind::pwrite:
        io_uring_prep_write(sqe, op.fd, buf, len, static_cast<__u64>(op.offset));
        if (nosignal_writes_) sqe->rw_flags = detail::rwf_nosignal;
        if (op.len > inline_copy_limit) sqe->flags |= IOSQE_ASYNC;
        break;
      case op_kind::fsync:
        io_uring_prep_fsync(sqe, op.fd, static_cast<unsigned>(op.flags));
        break;
      case op_kind::openat:
        io_uring_prep_openat(sqe, op.fd, op.path, op.flags, static_cast<mode_t>(op.len));
        break;
      case op_kind::statx:
        io_uring_prep_statx(sqe, op.fd, op.path, op.flags, static_cast<unsigned>(op.len),
                            static_cast<struct statx*>(buf));
        break;
    }
  }
  io_uring_sqe_set_data(sqe, &op);
  op.backend_state |= in_flight_bit;
  ++in_flight_;
  return true;
}

void IoUringBackend::start(operation& op) noexcept {
  // Every completion leaves backend_state 0, and a retry re-submits through
  // submit_op(), not here: non-zero means the operation is still in the
  // backlog or the ring, and a second SQE for it would complete it twice.
  POLYLOOP_INVARIANT(op.backend_state == 0, "an operation started while still in flight");
  if (op.multishot) {
    POLYLOOP_INVARIANT(op.buf != nullptr &&
                           ((op.kind == op_kind::accept && traits().multishot_accept) ||
                            (op.kind == op_kind::recv && traits().multishot_recv)),
                       "a multishot operation this backend cannot run (see multishot_accept, "
                       "multishot_recv)");
    auto& r = *static_cast<multishot_results*>(op.buf);
    r.armed = true;
    r.end = 0;
  }
  if (detail::may_raise_sigpipe(op.kind) && !nosignal_writes_) ++signalling_writes_;
  op.backend_seq = static_cast<std::uint32_t>(close_seq_);
  if (!cancel_by_fd_ && op.kind != op_kind::close) track(op);
  if (backlog_.head != nullptr || !submit_op(op)) {
    op.backend_state |= backlog_bit;
    backlog_.push(&op);  // keeps start order: no SQE until those before it have one
  }
}

void IoUringBackend::flush_backlog() noexcept {
  while (operation* op = backlog_.head) {
    op->backend_state &= ~backlog_bit;
    if (!submit_op(*op)) {
      op->backend_state |= backlog_bit;
      return;
    }
    backlog_.pop();
  }
}

void IoUringBackend::track(operation& op) noexcept {
  std::vector<operation*>* ops = on_fd_.slot(op.fd);
  if (ops == nullptr) return;  // out of memory: a close will not find it
  try {
    ops->push_back(&op);  // no allocation once the fd's vector has grown
  } catch (const std::bad_alloc&) {
    return;
  }
  op.backend_state |= tracked_bit;
}

void IoUringBackend::untrack(operation& op) noexcept {
  if ((op.backend_state & tracked_bit) == 0) return;
  std::vector<operation*>& ops = on_fd_[op.fd];
  for (operation*& o : ops) {
    if (o == &op) {
      o = ops.back();
      ops.pop_back();
      break;
    }
  }
  op.backend_state &= ~tracked_bit;
}

// Kernels before 5.19 cannot cancel by fd: ask each operation in flight on
// the fd to end. Those still in the backlog go into the ring before the
// close (it comes after them), and are then cancelled by the close's
// sequence check, or run into a closed fd.
void IoUringBackend::cancel_ops_on_fd(int fd) noexcept {
  std::vector<operation*>* ops = on_fd_.find(fd);
  if (ops == nullptr) return;
  for (operation* o : *ops) {
    if ((o->backend_state & in_flight_bit) != 0) cancel(*o);
  }
}

bool IoUringBackend::closed_since_start(const operation& op) noexcept {
  const std::uint64_t* at = closed_at_.find(op.fd);
  if (at == nullptr) return false;
  // The full count at the operation's start, from its low 32 bits (an
  // operation outlives fewer than 2^32 closes).
  std::uint64_t started =
      close_seq_ - static_cast<std::uint32_t>(static_cast<std::uint32_t>(close_seq_) - op.backend_seq);
  return *at > started;
}

void IoUringBackend::cancel(operation& op) noexcept {
  if ((op.backend_state & backlog_bit) != 0) {
    backlog_.remove(&op);
    untrack(op);
    op.backend_state = 0;
    op.result = -ECANCELED;
    handed_back(op);
    if (op.multishot) {
      // Its results are queued with it already if there are any.
      auto& r = *static_cast<multishot_results*>(op.buf);
      r.armed = false;
      r.end = -ECANCELED;
      if (!r.results.empty()) return;
    }
    completed_.push(&op);
    return;
  }
  if ((op.backend_state & in_flight_bit) == 0) return;  // already completed
  // Asked already, waiting for an SQE: a second push would corrupt the list.
  if ((op.backend_state & cancel_unsent_bit) != 0) return;
  op.backend_state |= cancel_bit;
  if (!submit_cancel(op)) {
    // No SQE even after submitting: the next poll() sends it.
    op.backend_state |= cancel_unsent_bit;
    unsent_cancels_.push(&op);
  }
}

bool IoUringBackend::submit_cancel(operation& op) noexcept {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_cancel(sqe, &op, 0);
  io_uring_sqe_set_data64(sqe, cancel_tag);
  return true;
}

void IoUringBackend::arm_wake() noexcept {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return;  // re-armed at the next poll()
  io_uring_prep_read(sqe, waker_.fd(), &wake_buf_, sizeof wake_buf_, 0);
  io_uring_sqe_set_data64(sqe, wake_tag);
  wake_armed_ = true;
}

void IoUringBackend::wakeup() noexcept { waker_.wake(); }

// --- completion ---------------------------------------------------------------

void IoUringBackend::finish(operation& op, std::int64_t result,
                            detail::ready_queue* ready) noexcept {
  untrack(op);
  op.backend_state = 0;
  handed_back(op);
  if (op.multishot) {
    end_multishot(op, result, ready);
    return;
  }
  op.result = result;
  if (ready != nullptr) ready->push(&op);
}

namespace {
// Appends one result; true if the operation must now be pushed (nothing of
// it was pending). Out of memory, an accepted fd is closed: its client sees
// the connection end, as when a server cannot take it.
bool add_result(operation& op, std::int64_t result) noexcept {
  auto& r = *static_cast<multishot_results*>(op.buf);
  bool first = r.results.empty();
  try {
    r.results.push_back(result);
  } catch (const std::bad_alloc&) {
    if (result >= 0) ::close(static_cast<int>(result));
    return false;
  }
  return first;
}
}  // namespace

void IoUringBackend::one_of_many(operation& op, std::int32_t res,
                                 detail::ready_queue* ready) noexcept {
  if (ready == nullptr || shutting_down_) {
    if (res >= 0) ::close(res);  // its owner is about to be destroyed
    return;
  }
  if (add_result(op, res)) ready->push(&op);
}

void IoUringBackend::end_multishot(operation& op, std::int64_t result,
                                   detail::ready_queue* ready) noexcept {
  auto& r = *static_cast<multishot_results*>(op.buf);
  bool pending = !r.results.empty();  // then the operation is queued already
  if (op.kind == op_kind::recv) {
    // Its last bytes (or end of stream) went to the results already.
    r.end = result > 0 ? 0 : result;
  } else if (result >= 0) {
    // The kernel's last completion carried a connection too: keep it, and
    // say "ended by the kernel" so that the starter starts it again.
    if (ready != nullptr) {
      add_result(op, result);
    } else {
      ::close(static_cast<int>(result));
    }
    r.end = 0;
  } else {
    r.end = result;
  }
  r.armed = false;
  if (ready != nullptr && !pending) ready->push(&op);
}

void IoUringBackend::lent_completion(operation& op, const io_uring_cqe& cqe,
                                     detail::ready_queue* ready) noexcept {
  bool has_buffer = (cqe.flags & IORING_CQE_F_BUFFER) != 0;
  auto id = static_cast<std::uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  bool nobody = ready == nullptr || shutting_down_;
  if (cqe.res <= 0 || nobody || !has_buffer) [[unlikely]] {
    if (has_buffer) lent_pool_.give_back(id);  // nothing in it, or nobody to read it
    bool end_of_stream = cqe.res == 0 && (cqe.flags & IORING_CQE_F_MORE) == 0;
    if (!end_of_stream || nobody) return;
  }
  std::int64_t entry = cqe.res > 0 ? lent_result(id, static_cast<std::uint32_t>(cqe.res)) : 0;
  auto& r = *static_cast<multishot_results*>(op.buf);
  bool first = r.results.empty();
  try {
    r.results.push_back(entry);
  } catch (const std::bad_alloc&) {
    // Out of memory: the bytes cannot be kept. Said, not dropped: the
    // operation is cancelled and ends with -ENOMEM for its reader.
    if (has_buffer) lent_pool_.give_back(id);
    r.end = -ENOMEM;
    if ((cqe.flags & IORING_CQE_F_MORE) != 0) cancel(op);
    return;
  }
  if (first) ready->push(&op);
}

void IoUringBackend::retry_or_backlog(operation& op) noexcept {
  if (!submit_op(op)) {
    op.backend_state |= backlog_bit;
    backlog_.push(&op);
  }
}

// The kernel's internal "restart the syscall" codes (ERESTARTSYS 512 and
// its siblings, include/linux/errno.h), which user space never sees from a
// syscall: an io-wq worker's blocking call interrupted by a cancel (seen:
// an openat of a FIFO waiting for a writer, 6.18) completes with one. They
// mean "interrupted", as EINTR does.
namespace {
constexpr bool is_kernel_restart(std::int32_t res) noexcept {
  return res == -512 || res == -513 || res == -514 || res == -516;
}
}  // namespace

void IoUringBackend::handle_cqe(const io_uring_cqe& cqe, detail::ready_queue* ready) noexcept {
  std::uint64_t tag = cqe.user_data;
  if (tag == cancel_tag) return;
  if (tag == wake_tag) {
    wake_armed_ = false;
    waker_.clear_after_drain();  // the armed read drained the eventfd
    return;                      // re-armed after the reap
  }
  auto* op = reinterpret_cast<operation*>(tag);
  POLYLOOP_INVARIANT((op->backend_state & in_flight_bit) != 0,
                     "a completion for an operation not in flight (completed twice?)");
  if (op->multishot && op->kind == op_kind::recv) {
    lent_completion(*op, cqe, ready);
    if ((cqe.flags & IORING_CQE_F_MORE) != 0) return;
    --in_flight_;
    op->backend_state &= ~in_flight_bit;
    if ((op->backend_state & cancel_unsent_bit) != 0) {
      unsent_cancels_.remove(op);
      op->backend_state &= ~cancel_unsent_bit;
    }
    // Bytes (or end of stream) in its last completion: ended by the kernel,
    // or by end of stream (in the results); else why. An out-of-memory end
    // said already stays.
    auto& r = *static_cast<multishot_results*>(op->buf);
    std::int64_t why = cqe.res >= 0 || cqe.res == -EAGAIN ? 0 : cqe.res;
    if (r.end == -ENOMEM) why = -ENOMEM;
    finish(*op, shutting_down_ ? -ECANCELED : why, shutting_down_ ? nullptr : ready);
    return;
  }
  if ((cqe.flags & IORING_CQE_F_MORE) != 0) {
    // One completion of a multishot operation, which stays in flight.
    one_of_many(*op, cqe.res, ready);
    return;
  }
  --in_flight_;
  op->backend_state &= ~in_flight_bit;
  if ((op->backend_state & cancel_unsent_bit) != 0) {
    unsent_cancels_.remove(op);  // it ended first: nothing left to cancel
    op->backend_state &= ~cancel_unsent_bit;
  }
  if (shutting_down_) [[unlikely]] {
    // Its owner is about to be destroyed: no retry, nothing handed back,
    // and an fd accepted or received meanwhile is nobody's but ours to close.
    if ((op->backend_state & retry_poll_bit) == 0) detail::discard_unreturned(*op, cqe.res);
    finish(*op, -ECANCELED, nullptr);
    return;
  }
  bool cancelled = (op->backend_state & cancel_bit) != 0;
  if (cancelled && (cqe.res == -EAGAIN || cqe.res == -EINTR || is_kernel_restart(cqe.res))) {
    // Asked to cancel while the kernel said "try again" (do not re-arm),
    // or interrupted by the cancel (an io-wq worker's blocking call).
    finish(*op, -ECANCELED, ready);
    return;
  }
  if ((op->backend_state & retry_poll_bit) != 0) {
    // The readiness wait after -EAGAIN ended: retry the operation itself,
    // unless the cancel ended the wait or the fd was closed meanwhile (its
    // number may belong to another file by now).
    op->backend_state &= ~retry_poll_bit;
    if (cancelled || closed_since_start(*op)) {
      finish(*op, -ECANCELED, ready);
      return;
    }
    if (cqe.res >= 0) {
      retry_or_backlog(*op);
      return;
    }
  } else if (cqe.res == -EAGAIN && detail::retries_on_eagain(op->kind)) {
    // The fd is O_NONBLOCK, so the kernel did not wait for it: wait for
    // readiness, then try again; not on an fd closed since the start.
    if (closed_since_start(*op)) {
      finish(*op, -ECANCELED, ready);
      return;
    }
    op->backend_state |= retry_poll_bit;
    retry_or_backlog(*op);
    return;
  }
  finish(*op, is_kernel_restart(cqe.res) ? -EINTR : cqe.res, ready);
}

// Returns 0, or -errno when the kernel's overflow list cannot be fetched.
int IoUringBackend::reap(detail::ready_queue* ready) noexcept {
  // Bounded: a CQ that keeps overflowing is fetched again next iteration.
  for (int round = 0; round < 16; ++round) {
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      handle_cqe(*cqe, ready);
    }
    io_uring_cq_advance(&ring_, seen);
    counts_.cqes_reaped += seen;
    // Completions the CQ ring had no room for wait in the kernel (NODROP):
    // fetch them now rather than a whole iteration later.
    if (!io_uring_cq_has_overflow(&ring_)) break;
    count_enter();
    int r = io_uring_get_events(&ring_);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) return r;
  }
  return 0;
}

// Cancels every operation in flight: one ASYNC_CANCEL with CANCEL_ANY, or
// one per operation where the kernel cannot cancel by fd (before 5.19).
void IoUringBackend::cancel_everything() noexcept {
  if (cancel_by_fd_) {
    if (io_uring_sqe* sqe = get_sqe()) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      io_uring_sqe_set_data64(sqe, cancel_tag);
    }
    return;
  }
  for (std::vector<operation*>& ops : on_fd_) {
    for (operation* o : ops) {
      if ((o->backend_state & in_flight_bit) != 0) submit_cancel(*o);
    }
  }
}

void IoUringBackend::shutdown() noexcept {
  shutting_down_ = true;
  // Never submitted, or finished without a CQE: nothing in the kernel.
  while (operation* o = backlog_.pop()) finish(*o, -ECANCELED, nullptr);
  while (operation* o = completed_.pop()) o->backend_state = 0;
  while (operation* o = unsent_cancels_.pop()) o->backend_state &= ~cancel_unsent_bit;
  if (in_flight_ == 0) return;
  bool other_thread = enabled_ && owner_ != std::this_thread::get_id();
  if (!enabled_ || (other_thread && (ring_.flags & IORING_SETUP_SINGLE_ISSUER) != 0)) {
    // Never enabled: the kernel has not seen an SQE. Or another thread may
    // not enter a SINGLE_ISSUER ring; it was set up with DEFER_TASKRUN,
    // whose completions run only inside the owner's io_uring_enter, so
    // nothing touches the operations until the ring is torn down (which
    // cancels them). Forget them.
    for (std::vector<operation*>& ops : on_fd_) ops.clear();
    in_flight_ = 0;
    return;
  }
  if (other_thread && register_ring_fd_) {
    // The registered index is the owner's: enter through the ring's own fd
    // (what io_uring_unregister_ring_fd leaves, without its syscall, which
    // would fail on this thread).
    ring_.enter_ring_fd = ring_.ring_fd;
    ring_.int_flags &= static_cast<__u8>(~1u);  // liburing's INT_FLAG_REG_RING
  }
  std::optional<detail::sigpipe_guard> sigpipe;
  if (signalling_writes_ != 0) sigpipe.emplace();
  // Each round asks again (an operation may have been between a CQE and
  // its retry), and waits up to 100 ms; after 10 s the rest is left to the
  // ring's teardown, said on stderr.
  for (int round = 0; in_flight_ != 0; ++round) {
    if (round == 100) {
      std::fprintf(stderr,
                   "polyloop: io_uring: %zu operations did not end within 10 s of the loop's "
                   "close(); leaving them to the ring's teardown\n",
                   in_flight_);
      break;
    }
    cancel_everything();
    __kernel_timespec ts{.tv_sec = 0, .tv_nsec = 100'000'000};
    io_uring_cqe* cqe = nullptr;
    count_enter();
    int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      std::fprintf(stderr, "polyloop: io_uring: close() could not reap its operations: %s\n",
                   std::strerror(-r));
      break;
    }
    reap(nullptr);
  }
  if (sigpipe) sigpipe->consume_if_raised();
}

std::error_code IoUringBackend::poll(std::chrono::nanoseconds timeout,
                                     detail::ready_queue& ready) noexcept {
  enable_once();
  // The wake-up first: a wait with none armed could miss wakeup().
  if (!wake_armed_) arm_wake();
  return_lent();
  flush_backlog();
  while (operation* op = unsent_cancels_.head) {
    if (!submit_cancel(*op)) break;
    unsent_cancels_.pop();
    op->backend_state &= ~cancel_unsent_bit;
  }
  if (completed_.move_to(ready)) timeout = std::chrono::nanoseconds(0);
  if (!wake_armed_) timeout = std::chrono::nanoseconds(0);  // not even after a submit
  // Nothing can complete and the caller will not wait: no syscall. (The
  // eventfd read stays armed; a wake-up is seen by the next wait.)
  if (timeout.count() == 0 && in_flight_ == 0 && backlog_.head == nullptr) return {};
  // Without RWF_NOSIGNAL, a write to a pipe or socket whose reader is gone
  // raises SIGPIPE in the task that runs it: the one that submits it (a
  // write the kernel tries at once, inside io_uring_enter), or the one whose
  // task work retries it after a poll (io-wq workers block every signal).
  // So while writes are in flight, SIGPIPE is blocked around the enter
  // calls (and their reap) and a SIGPIPE raised meanwhile is taken back, the
  // thread's mask restored: the writes end with -EPIPE and the process's
  // disposition is untouched. Exact with DEFER_TASKRUN (6.1+), whose task
  // work runs only inside io_uring_enter. Not covered: a kernel before 6.1
  // (COOP_TASKRUN or neither), where a retry's task work can run at any
  // return to user space, outside the mask.
  std::optional<detail::sigpipe_guard> sigpipe;
  if (signalling_writes_ != 0) sigpipe.emplace();
  int r;
  count_enter();
  if (timeout.count() == 0) {
    r = io_uring_submit_and_get_events(&ring_);
  } else if (!waker_.may_block()) {
    r = io_uring_submit_and_get_events(&ring_);  // a wake-up came: no wait
  } else {
    __kernel_timespec ts;
    io_uring_cqe* cqe = nullptr;
    r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, detail::timespec_or_null(timeout, ts),
                                         nullptr);
  }
  waker_.after_wait();
  // Whatever the enter said, what is in the CQ ring is handed back: an error
  // that repeats must not starve the completions already there.
  int reaped = reap(&ready);
  if (sigpipe) sigpipe->consume_if_raised();
  if (!wake_armed_) arm_wake();
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
    return {-r, std::generic_category()};
  }
  if (reaped < 0) return {-reaped, std::generic_category()};
  return {};
}

}  // namespace polyloop::backends
