// The clock interface a loop reads its time from, and the virtual clock:
// here, under //core/backend, so that a backend that owns the loop's time
// (backends/sim) needs only the Backend contract, not the loop.
// core/loop/clock.h adds the steady clock and is what users include.
//
// A clock is owned by whoever created it and must outlive every loop using
// it. Only the loop's thread calls it.
#pragma once

#include <chrono>

namespace polyloop {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;

  virtual ~Clock() = default;
  virtual time_point now() const noexcept = 0;
  // The loop has nothing to do before `deadline` (the earliest timer). A real
  // clock returns false and the loop blocks in its backend until then; a
  // virtual clock may jump to `deadline` and return true, and the loop then
  // only polls its backend without blocking.
  virtual bool skip_to(time_point deadline) noexcept = 0;
};

// A clock that stands still while the loop has work, and jumps straight to
// the next timer whenever the loop would otherwise wait for it. Timer tests
// on it take no real time and see exact deadlines.
class VirtualClock final : public Clock {
 public:
  time_point now() const noexcept override { return now_; }
  bool skip_to(time_point deadline) noexcept override {
    if (deadline > now_) now_ = deadline;
    return true;
  }
  void advance(duration d) noexcept { now_ += d; }

 private:
  time_point now_{std::chrono::hours(1)};
};

}  // namespace polyloop
