// The loop's clock, injectable so that timer tests advance time instead of
// sleeping (as Tokio's paused clock does).
//
// A clock is owned by whoever created it and must outlive every loop using
// it. Only the loop's thread calls it. Clock and VirtualClock live in
// core/backend/clock.h (a backend may own the loop's time); this header
// gives all three.
#pragma once

#include <chrono>

#include "core/backend/clock.h"  // IWYU pragma: export (Clock, VirtualClock)

namespace polyloop {

// std::chrono::steady_clock, the default.
class SteadyClock final : public Clock {
 public:
  time_point now() const noexcept override { return std::chrono::steady_clock::now(); }
  bool skip_to(time_point) noexcept override { return false; }
  static SteadyClock& instance() noexcept;
};

}  // namespace polyloop
