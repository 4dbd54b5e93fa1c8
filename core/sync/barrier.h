// Barrier: asyncio.Barrier, a meeting point for a fixed number of tasks.
//
//   pl::Barrier barrier(3);
//   std::size_t index = co_await barrier.wait();  // 0..2, in arrival order
//
// wait() blocks until `parties` tasks wait, then releases all of them; a task
// arriving while the released ones still drain out waits for the next round.
// abort() breaks the barrier: waiters and later wait()s throw
// BrokenBarrierError until reset(). reset() returns it to empty; tasks
// waiting at that moment get BrokenBarrierError. Built on Condition, as
// CPython's is. Threads and lifetime as Lock (lock.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/sync/condition.h"
#include "core/task/task.h"

namespace polyloop {

class Barrier {
 public:
  // Throws std::invalid_argument for 0 parties.
  explicit Barrier(std::size_t parties);

  // Waits for the others; returns this task's arrival index in its round.
  Task<std::size_t> wait();
  // Empties the barrier; tasks waiting in it get BrokenBarrierError.
  Task<> reset();
  // Breaks the barrier (see above).
  Task<> abort();

  std::size_t parties() const noexcept { return parties_; }
  // Tasks waiting for the round to fill.
  std::size_t n_waiting() const noexcept { return state_ == state::filling ? count_ : 0; }
  bool broken() const noexcept { return state_ == state::broken; }

 private:
  enum class state : std::uint8_t { filling, draining, resetting, broken };
  Task<> block();
  void exit();

  Condition cond_;
  std::size_t parties_;
  std::size_t count_ = 0;  // tasks inside wait()
  state state_ = state::filling;
};

}  // namespace polyloop
