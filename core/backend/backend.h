// The Backend interface: what an I/O backend (epoll, io_uring, asio) gives
// the loop. Completion-based, as io_uring is natively: the loop starts an
// operation, and later the backend hands it back, finished, in poll().
//
// Threads: every method runs on the loop's thread except wakeup(), which any
// thread may call. Memory: an operation is owned by its starter (usually it
// lives in the awaiting coroutine's frame) and must stay put until it has
// completed; the backend only links it into its own queues.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>
#include <string_view>
#include <system_error>

#include "core/backend/ready_queue.h"

namespace polyloop {

enum class op_kind : std::uint8_t {
  read,     // read(fd, buf, len)
  write,    // write(fd, buf, len)
  recv,     // recv(fd, buf, len, flags)
  send,     // send(fd, buf, len, flags | MSG_NOSIGNAL)
  accept,   // accept4(fd, addr, &addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK); result: new fd
  connect,  // connect(fd, addr, addrlen); result: 0
  poll,     // wait until fd is ready for `flags` (POLLIN/POLLOUT); result: revents
  close,    // close(fd); the backend forgets everything about fd first
};

// One operation. The caller fills the request fields and `fn` (what runs when
// the completed operation is taken off the loop's ready queue), then starts
// it; the backend sets `result` (>= 0, or -errno) and pushes the operation.
struct operation : detail::ready_node {
  op_kind kind = op_kind::read;
  int fd = -1;
  int flags = 0;
  void* buf = nullptr;
  std::size_t len = 0;
  sockaddr* addr = nullptr;  // accept: filled in; connect: the peer
  socklen_t addrlen = 0;     // accept: capacity in, length out; connect: length
  std::int64_t result = 0;
  // Backend-private.
  operation* next = nullptr;
  std::uint32_t backend_state = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "epoll", "io_uring", "asio".
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

  // Where an exception thrown by user code that poll() ran is reported (the
  // asio backend runs the user's Asio handlers there). The loop that owns
  // the backend sets it to its exception handler; unset, it is dropped.
  using exception_reporter = void (*)(void* context, const char* what,
                                      std::exception_ptr e) noexcept;
  void set_exception_reporter(exception_reporter fn, void* context) noexcept {
    reporter_ = fn;
    reporter_context_ = context;
  }

 protected:
  void report_exception(const char* what, std::exception_ptr e) noexcept {
    if (reporter_ != nullptr) reporter_(reporter_context_, what, std::move(e));
  }

 private:
  exception_reporter reporter_ = nullptr;
  void* reporter_context_ = nullptr;
};

}  // namespace polyloop
