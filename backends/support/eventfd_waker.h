// eventfd_waker: the cross-thread wake-up of a backend that waits in the
// kernel (epoll, io_uring). wake() is Backend::wakeup(): any thread may call
// it. The backend's wait watches fd() (epoll: registered for input; io_uring:
// a read kept armed in the ring); once that wait has consumed the count, the
// loop's thread calls clear_after_drain().
//
// At most one write per wait: the flag says a write is already on its way,
// so a burst of call_soon_threadsafe() costs one syscall.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <system_error>

namespace polyloop::detail {

class eventfd_waker {
 public:
  // Non-blocking for a poller that reads the count itself (epoll), blocking
  // for io_uring, which would answer a read of a non-blocking eventfd with
  // -EAGAIN instead of waiting for a write. Throws std::system_error
  // ("eventfd").
  enum class mode { nonblocking, blocking };
  explicit eventfd_waker(mode m)
      : fd_(::eventfd(0, m == mode::nonblocking ? EFD_CLOEXEC | EFD_NONBLOCK : EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  ~eventfd_waker() { ::close(fd_); }
  eventfd_waker(const eventfd_waker&) = delete;
  eventfd_waker& operator=(const eventfd_waker&) = delete;

  int fd() const noexcept { return fd_; }

  // Thread-safe.
  void wake() noexcept {
    if (pending_.exchange(true, std::memory_order_seq_cst)) return;
    // Between after_wait() and may_block() the loop is not blocked and will
    // see pending_ before it blocks again (may_block), so no write: a
    // completion that comes while the loop still runs costs no syscall.
    if (awake_.load(std::memory_order_seq_cst)) return;
    std::uint64_t one = 1;
    while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  // Reads the count (a non-blocking eventfd whose wait reported it readable).
  void drain() noexcept {
    std::uint64_t count;
    while (::read(fd_, &count, sizeof count) < 0 && errno == EINTR) {
    }
  }

  // Call after the count was drained (by drain(), or by the ring's read),
  // never before. The other order loses wake-ups: a wake() between them
  // would see the flag clear, write, and have its write drained, leaving the
  // flag set with the eventfd empty, so every later wake() would skip its
  // write. In this order a wake() in between skips its write, but its
  // callback is already queued and the loop looks at its queue after poll()
  // returns.
  void clear_after_drain() noexcept { pending_.store(false, std::memory_order_seq_cst); }

  // Loop thread, just before a wait that would block: false if a wake()
  // came since the last wait (the wait must then not block). From here to
  // after_wait(), wake() writes the eventfd. (A Dekker pair with wake():
  // each stores its flag, then reads the other's, both seq_cst, so either
  // this sees pending_ or wake() sees the loop is not awake, and writes.)
  bool may_block() noexcept {
    awake_.store(false, std::memory_order_seq_cst);
    return !pending_.load(std::memory_order_seq_cst);
  }
  // Loop thread, after each wait, before the loop looks at what wake()'s
  // callers queued: until may_block(), wake() need not write. (A write
  // still on its way only makes a later wait return early, and is drained.)
  // A backend that never calls these keeps wake() writing every time.
  void after_wait() noexcept {
    awake_.store(true, std::memory_order_seq_cst);
    pending_.store(false, std::memory_order_seq_cst);
  }

 private:
  int fd_;
  std::atomic<bool> pending_{false};
  std::atomic<bool> awake_{false};  // see may_block() and after_wait()
};

}  // namespace polyloop::detail
