// Backend::poll()'s timeout (nanoseconds; negative: no limit) in the forms
// the kernel's waits take.
#pragma once

#include <chrono>
#include <climits>

namespace polyloop::detail {

// For a timespec-like type (timespec, __kernel_timespec); `t` >= 0.
template <class Timespec>
Timespec to_timespec(std::chrono::nanoseconds t) noexcept {
  Timespec ts{};
  ts.tv_sec = static_cast<decltype(ts.tv_sec)>(t.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<decltype(ts.tv_nsec)>(t.count() % 1'000'000'000);
  return ts;
}

// `t` in `storage` and a pointer to it, or null (no limit) for a negative
// `t`: the argument epoll_pwait2 and io_uring_submit_and_wait_timeout take.
template <class Timespec>
Timespec* timespec_or_null(std::chrono::nanoseconds t, Timespec& storage) noexcept {
  if (t.count() < 0) return nullptr;
  storage = to_timespec<Timespec>(t);
  return &storage;
}

// Whole milliseconds, rounded up so that a timer never fires early; -1 (no
// limit) for a negative `t`. For epoll_wait.
inline int to_milliseconds_rounded_up(std::chrono::nanoseconds t) noexcept {
  if (t.count() < 0) return -1;
  long long ms = (t.count() + 999'999) / 1'000'000;
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

}  // namespace polyloop::detail
