// The Backend interface: what an I/O backend (epoll, io_uring, asio) gives
// the loop. Completion-based, as io_uring is natively: the loop starts an
// operation, and later the backend hands it back, finished, in poll().
//
// Threads: every method runs on the loop's thread except wakeup(), which any
// thread may call. Memory: an operation is owned by its starter (usually it
// lives in the awaiting coroutine's frame) and must stay put until it has
// completed; the backend only links it into its own queues.
//
// The contract every backend keeps (tests/ checks it on each):
// - Each started operation completes exactly once, through poll(), never
//   inside start() or cancel(); starting it again before then is a bug.
// - start() may already make the operation's syscall (non-blocking): from
//   start() on, the operation may have taken effect. Whether it does is
//   backend_traits::tries_in_start.
// - Operations pending together on one fd are independent: each completes
//   once with its own result, and cancel() ends only its own. Their order is
//   promised only by backend_traits::fifo_per_fd; without it, where order
//   matters, keep one operation per direction pending on the fd (net/'s
//   streams have one reader and one writer).
// - A close operation ends every operation still pending on its fd (each
//   completes with -ECANCELED, or its result if it finished first) and makes
//   the backend forget the fd before the number can be reused. Close an fd
//   that had operations this way, not with ::close.
// - shutdown() (EventLoop::close() calls it before it destroys any frame)
//   ends every operation still started and returns only once nothing the
//   backend or the kernel does can touch their memory again; none of them is
//   handed back. An fd an accept returned meanwhile is closed, not leaked.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/backend/ready_queue.h"
#include "core/backend/socket_calls.h"

namespace polyloop {

class Clock;  // core/backend/clock.h

enum class op_kind : std::uint8_t {
  read,     // read(fd, buf, len)
  write,    // write(fd, buf, len)
  recv,     // recv(fd, buf, len, flags)
  send,     // send(fd, buf, len, flags | MSG_NOSIGNAL)
  accept,   // accept4(fd, addr, &addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK); result: new fd
  connect,  // connect(fd, addr, addrlen); result: 0
  poll,     // wait until fd is ready for `flags` (POLLIN/POLLOUT); result: revents
  close,    // close(fd); the backend forgets everything about fd first
  // `buf` is a msghdr* (with its iovecs, name and control buffers) that
  // stays put until the operation completes; `len` is unused.
  recvmsg,  // recvmsg(fd, msg, flags); msg's namelen, controllen, flags filled in
  sendmsg,  // sendmsg(fd, msg, flags | MSG_NOSIGNAL)
  // File operations, kept last (is_file_op below): backend_traits::
  // native_file_ops says whether the backend performs them; where it does
  // not, core/file runs them on the executor.
  pread,   // preadv2(fd, buf, len, offset); offset -1: the file position
  pwrite,  // pwritev2(fd, buf, len, offset); offset -1: the file position
  fsync,   // fsync(fd); flags IORING_FSYNC_DATASYNC (1): fdatasync(fd)
  openat,  // openat(fd, path, flags, mode = len); result: new fd
  statx,   // statx(fd, path, flags, mask = len, buf = struct statx*)
};

// True for the kinds above that only a backend with native_file_ops takes.
constexpr bool is_file_op(op_kind k) noexcept { return k >= op_kind::pread; }

// The kind's syscall name, for messages ("recv on fd 7 was cancelled").
constexpr const char* op_kind_name(op_kind k) noexcept {
  switch (k) {
    case op_kind::read: return "read";
    case op_kind::write: return "write";
    case op_kind::recv: return "recv";
    case op_kind::send: return "send";
    case op_kind::accept: return "accept";
    case op_kind::connect: return "connect";
    case op_kind::poll: return "poll";
    case op_kind::close: return "close";
    case op_kind::recvmsg: return "recvmsg";
    case op_kind::sendmsg: return "sendmsg";
    case op_kind::pread: return "pread";
    case op_kind::pwrite: return "pwrite";
    case op_kind::fsync: return "fsync";
    case op_kind::openat: return "openat";
    case op_kind::statx: return "statx";
  }
  return "operation";
}

// What a starter may tell the backend about an operation (operation::hints,
// a bit set). A hint never changes an operation's result, only how the
// backend goes about it; a backend may ignore any hint.
namespace op_hint {
// recv, read: the fd has just been drained (its last receive returned less
// than it asked for), so this receive will most likely wait. A backend that
// would try first and wait for readiness after the try failed may wait
// first (io_uring: IORING_RECVSEND_POLL_FIRST; epoll: for the next edge,
// when none came since the last receive). Set it only where a short
// receive empties the fd (a stream socket, a pipe): where it need not (a
// datagram, a terminal line), bytes left behind are still received, but
// epoll may find them only at its quiet-fd audit (100-200 ms).
inline constexpr std::uint8_t expect_wait = 1;
}  // namespace op_hint

// Where a multishot operation's completions wait for their starter (see
// operation::multishot). The backend appends; the starter takes them.
struct multishot_results {
  // Results not yet taken (accept: new fds), in the kernel's order. The
  // backend pushes the operation onto the ready queue when this goes from
  // empty to not empty, so the starter's `fn` must take them all (clear
  // it) each time it runs. Whoever holds an fd here must close it: the
  // starter closes the ones it will not use (server closed), also when it
  // is destroyed with some left.
  std::vector<std::int64_t> results;
  // True from start() until the operation's last completion.
  bool armed = false;
  // Once !armed: why it ended. 0: the kernel ended it (start it again to go
  // on); -ECANCELED: cancel(), a close of the fd, or shutdown(); else -errno.
  std::int64_t end = 0;
};

// One operation. The caller fills the request fields and `fn` (what runs when
// the completed operation is taken off the loop's ready queue), then starts
// it; the backend sets `result` (>= 0, or -errno) and pushes the operation.
//
// Multishot (`multishot` true; only an accept, only on a backend whose
// backend_traits::multishot_accept is true): one start, many completions.
// `buf` points to a multishot_results the starter keeps alive, with the
// operation, until results->armed is false after its fn ran (or until the
// loop's close(): shutdown() forgets it, and closes fds it accepts then).
// Each completion's result goes to results->results and the operation is
// pushed as said there; its last one sets armed false and `end`, and
// pushes it if nothing is pending. cancel() and a close of the fd end it
// (end -ECANCELED). `result` is not used.
struct operation : detail::ready_node {
  op_kind kind = op_kind::read;
  std::uint8_t hints = 0;  // op_hint bits; in what was padding
  bool multishot = false;  // see above; in what was padding
  int fd = -1;
  int flags = 0;
  void* buf = nullptr;
  std::size_t len = 0;
  // accept, connect: the address; file operations have none, so their
  // offset (pread, pwrite) or path (openat, statx) shares its storage: each
  // kind reads only the member it set, and the union keeps the operation at
  // 80 bytes, the size every awaiting frame pays.
  union {
    sockaddr* addr = nullptr;  // accept: filled in; connect: the peer
    std::int64_t offset;
    const char* path;
  };
  socklen_t addrlen = 0;     // accept: capacity in, length out; connect: length
  std::int64_t result = 0;
  // Backend-private.
  operation* next = nullptr;
  std::uint32_t backend_state = 0;
  std::uint32_t backend_seq = 0;
};
// backend_seq fills what was padding: an operation costs its frame no more.
static_assert(sizeof(void*) != 8 || sizeof(operation) == 80);

// Where backends really differ, each says so here, and code queries this,
// never the backend's name. Each flag, when true, promises exactly:
struct backend_traits {
  // start() makes the operation's syscall at once, non-blocking, on the
  // calling thread, unless the backend knows the fd is not ready (a try in
  // that direction would have blocked since its last readiness event). On a
  // ready fd the operation has taken effect (bytes read or sent) when start()
  // returns, and a cancel() then lets it complete with its result. False:
  // start() only queues it (io_uring: an SQE, submitted by the next poll()
  // at the latest).
  bool tries_in_start = false;
  // Operations on one fd that consume input (read, recv, accept) complete in
  // the order they were started, and so do those that wait for output
  // (write, send, connect): the first read started gets the first bytes.
  bool fifo_per_fd = false;
  // The kernel performs an operation from its submission on, rather than the
  // backend making each attempt as a syscall on the loop's thread, so it may
  // act on the process state of when it was submitted (an accept submitted
  // before RLIMIT_NOFILE was lowered can still succeed after). False: each
  // attempt is a syscall made then, and sees the state of then.
  bool kernel_performs_ops = false;
  // Once a thread has run the backend's poll(), only that thread may call
  // start(), cancel() and poll() (io_uring: SINGLE_ISSUER and the registered
  // ring fd belong to the thread). False: the loop may move between threads,
  // one at a time. The loop turns a run from another thread into an error.
  bool bound_to_first_thread = false;
  // start() takes the file operations (op_kind::pread ... statx, and close
  // on a regular file) and the kernel performs them without blocking the
  // loop's thread (io_uring: io-wq). False: start() fails them with
  // -EOPNOTSUPP, and core/file runs the syscall on the loop's default
  // executor instead (a regular file cannot be waited on by readiness).
  bool native_file_ops = false;
  // An accept may be started multishot (operation::multishot): it then
  // completes once per connection until it is cancelled or the kernel ends
  // it (io_uring: IORING_ACCEPT_MULTISHOT, 5.19). False: one-shot only.
  bool multishot_accept = false;
};

// What a backend counts of its own work, for EventLoop::stats() (LoopStats::
// backend). Plain increments on the loop's thread, read by the loop without
// a virtual call; each backend fills the members that apply to it and leaves
// the others zero (backends/README.md says what each must count). The
// constructor's set-up calls (epoll_create1, io_uring_setup, ...) and the
// wake-up another thread sends (EventLoop counts those) are not counted.
struct backend_counters {
  // Every syscall the backend made on the loop's thread, the kinds below
  // included, and also its registration and bookkeeping calls (fcntl,
  // fstat, close, an eventfd drained after a wake-up).
  std::uint64_t syscalls = 0;
  // epoll: epoll_pwait2 / epoll_wait calls, and epoll_ctl calls.
  std::uint64_t epoll_waits = 0;
  std::uint64_t epoll_ctls = 0;
  // epoll, asio (backends/reactive): each non-blocking attempt at an
  // operation (read, write, recv, send, recvmsg, sendmsg, accept4, a
  // connect started or checked, a poll check), whether it succeeded or
  // would have blocked. An attempt is one syscall, or two or three where a
  // write falls back (backends/support/sigpipe.h) or a connect is checked
  // (poll, then getsockopt).
  std::uint64_t io_attempts = 0;
  // io_uring: calls that enter the kernel (io_uring_enter, through
  // liburing's submit and wait calls), SQEs handed to the kernel by them,
  // and CQEs taken off the completion ring (the wake-up's included).
  std::uint64_t enters = 0;
  std::uint64_t sqes_submitted = 0;
  std::uint64_t cqes_reaped = 0;
  // asio: io_context run_one, run_one_for and poll_one calls (Asio's own
  // epoll calls inside them cannot be seen from outside and are not in
  // `syscalls`).
  std::uint64_t context_runs = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Fixed for the backend's life; no virtual call.
  const backend_traits& traits() const noexcept { return traits_; }
  // What the backend has counted so far (see backend_counters); no virtual
  // call. Read on the loop's thread.
  const backend_counters& counters() const noexcept { return counts_; }

  // The name it is chosen by (e.g. "epoll"), for messages too. Code
  // that depends on how a backend behaves asks traits() instead.
  virtual std::string_view name() const noexcept = 0;

  // Starts `op`. Never completes it inline: even an operation finished at once
  // is handed back by the next poll(). Does not block.
  virtual void start(operation& op) noexcept = 0;

  // Asks for `op` to end early. It then completes exactly once, through
  // poll(), with -ECANCELED, or with its real result if the cancel lost the
  // race. A no-op for an operation that already completed. Does not block.
  virtual void cancel(operation& op) noexcept = 0;

  // Waits at most `timeout` (negative: no limit, zero: do not block) for
  // operations to complete, and pushes each completed one onto `ready`.
  // Returns early after wakeup(). Errors are those of the wait itself.
  virtual std::error_code poll(std::chrono::nanoseconds timeout,
                               detail::ready_queue& ready) noexcept = 0;

  // Makes a poll() that is blocked, or the next one, return soon. The only
  // method any thread may call.
  virtual void wakeup() noexcept = 0;

  // Ends every operation started and not yet handed back by poll(): cancels
  // each, waits until neither the backend nor the kernel can write to its
  // buffer or address any more, closes an fd that an accept returned in the
  // meantime, and forgets them all (none is pushed to a ready queue; their
  // owners are about to be destroyed). EventLoop::close() calls it before it
  // destroys frames; afterwards only wakeup() and the destructor are called.
  // Blocks for as long as the kernel takes to confirm the cancels.
  virtual void shutdown() noexcept = 0;

  // Where an exception thrown by user code that poll() ran is reported (the
  // asio backend runs the user's Asio handlers there). The loop that owns
  // the backend sets it to its exception handler; unset, it is dropped.
  using exception_reporter = void (*)(void* context, const char* what,
                                      std::exception_ptr e) noexcept;
  void set_exception_reporter(exception_reporter fn, void* context) noexcept {
    reporter_ = fn;
    reporter_context_ = context;
  }

  // The socket calls net/ makes outside operations on this backend's loop:
  // the syscalls, unless the backend simulates sockets (backends/sim).
  detail::socket_calls& sockets() const noexcept { return *sockets_; }
  // The clock a loop on this backend uses when it is given none of its own
  // (the sim backend's virtual time); null: the steady clock. Lives as long
  // as the backend.
  Clock* own_clock() const noexcept { return own_clock_; }

 protected:
  explicit Backend(const backend_traits& traits) noexcept : traits_(traits) {}
  // For a backend that simulates sockets and time: `calls` and `clock`
  // must live as long as the backend.
  Backend(const backend_traits& traits, detail::socket_calls& calls, Clock& clock) noexcept
      : traits_(traits), sockets_(&calls), own_clock_(&clock) {}

  void report_exception(const char* what, std::exception_ptr e) noexcept {
    if (reporter_ != nullptr) reporter_(reporter_context_, what, std::move(e));
  }

  // Each backend increments these where it does the work they count.
  backend_counters counts_;

 private:
  backend_traits traits_;
  exception_reporter reporter_ = nullptr;
  void* reporter_context_ = nullptr;
  detail::socket_calls* sockets_ = &detail::system_socket_calls::instance();
  Clock* own_clock_ = nullptr;
};

}  // namespace polyloop
