// quiet_wait_audit: finds fds whose readiness registration the kernel
// dropped behind the backend's back, for the readiness backends (epoll, asio).
//
// The kernel removes a file from an epoll set when the file is closed. When
// code the backend does not see (another library, a raw ::close()) closes an
// fd the backend registered and the number is reused by a new file, the
// backend still believes the number registered; an operation on the new
// file that has to wait would then never be woken. Checking the registration
// each time an operation starts to wait costs a syscall per wait (+15 %
// server CPU on echo 64 B, +11 % on http, measured), so instead an fd on
// which operations have waited for a whole period without any event is
// checked once, by the backend's `check`: a wait that is woken normally
// costs a flag test, and a stale registration is repaired within one to two
// periods.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <new>
#include <vector>

namespace polyloop::detail {

class quiet_wait_audit {
 public:
  static constexpr std::chrono::milliseconds period{100};

  // Per fd, in the backend's fd table.
  struct marks {
    bool listed = false;   // in the audit's list
    bool evented = false;  // an event came since the last sweep
    std::uint8_t quiet_sweeps = 0;
    std::uint32_t last_sweep = 0;  // the sweep that last looked at it
  };

  // An operation on `fd` starts to wait.
  void waiting(int fd, marks& m) noexcept {
    if (m.listed) return;
    try {
      fds_.push_back(fd);
    } catch (const std::bad_alloc&) {
      return;  // not audited: it still waits as it always did
    }
    m = marks{.listed = true};
    if (fds_.size() == 1) next_sweep_ = now() + period;
  }
  // An event came for the fd.
  static void event(marks& m) noexcept { m.evented = true; }

  // Called by poll() before it waits: runs a sweep when one is due, and
  // returns `timeout` shortened so that the wait ends by the next one.
  // marks_of(fd): the fd's marks, or null if the backend forgot the fd;
  // has_waiters(fd): operations still wait on it; check(fd): verify the
  // registration (and repair it, trying the waiting operations again).
  template <class MarksOf, class HasWaiters, class Check>
  std::chrono::nanoseconds before_wait(std::chrono::nanoseconds timeout, MarksOf&& marks_of,
                                       HasWaiters&& has_waiters, Check&& check) noexcept {
    if (fds_.empty()) return timeout;
    std::chrono::nanoseconds t = now();
    if (t >= next_sweep_) {
      sweep(marks_of, has_waiters, check);
      next_sweep_ = t + period;
      if (fds_.empty()) return timeout;
    }
    std::chrono::nanoseconds left = next_sweep_ - t;
    return timeout.count() < 0 || timeout > left ? left : timeout;
  }

 private:
  // The coarse clock (a few ns, ticks of a few ms) is plenty for periods
  // of 100 ms, and is read only while some fd is listed.
  static std::chrono::nanoseconds now() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  }

  template <class MarksOf, class HasWaiters, class Check>
  void sweep(MarksOf& marks_of, HasWaiters& has_waiters, Check& check) noexcept {
    ++sweeps_;
    std::size_t kept = 0;
    std::size_t n = fds_.size();  // check() may list more; they wait for the next sweep
    for (std::size_t i = 0; i < n; ++i) {
      int fd = fds_[i];
      marks* m = marks_of(fd);
      // Forgotten; or closed through the backend and listed again, so the
      // number is in the list twice and this sweep has seen it.
      if (m == nullptr || !m->listed || m->last_sweep == sweeps_) continue;
      m->last_sweep = sweeps_;
      if (!has_waiters(fd)) {
        m->listed = false;
        continue;
      }
      // The first sweep after listing may come at once: a wait counts as
      // quiet only after it has missed two sweeps, at least one period.
      if (m->evented || ++m->quiet_sweeps < 2) {
        if (m->evented) m->quiet_sweeps = 0;
        m->evented = false;
        fds_[kept++] = fd;
        continue;
      }
      m->listed = false;
      check(fd);
    }
    fds_.erase(fds_.begin() + static_cast<std::ptrdiff_t>(kept),
               fds_.begin() + static_cast<std::ptrdiff_t>(n));
  }

  std::vector<int> fds_;  // listed fds (a closed and re-listed number may appear twice)
  std::chrono::nanoseconds next_sweep_{0};
  std::uint32_t sweeps_ = 0;
};

}  // namespace polyloop::detail
