#include "core/sync/barrier.h"

#include <stdexcept>

#include "core/sync/sync_errors.h"

namespace polyloop {

Barrier::Barrier(std::size_t parties) : parties_(parties) {
  if (parties == 0) throw std::invalid_argument("Barrier: parties must be at least 1");
}

// Waits while the barrier drains or resets; throws if it is broken.
Task<> Barrier::block() {
  co_await cond_.wait_for(
      [this] { return state_ != state::draining && state_ != state::resetting; });
  if (state_ == state::broken) throw BrokenBarrierError("Barrier.wait(): the barrier was aborted");
}

// The last task out of a drained or reset barrier opens it for the next round.
void Barrier::exit() {
  if (count_ == 0) {
    if (state_ == state::resetting || state_ == state::draining) state_ = state::filling;
    cond_.notify_all();
  }
}

Task<std::size_t> Barrier::wait() {
  auto held = co_await cond_.scoped();
  co_await block();
  std::size_t index = count_++;
  try {
    if (index + 1 == parties_) {
      state_ = state::draining;  // release the round
      cond_.notify_all();
    } else {
      co_await cond_.wait_for([this] { return state_ != state::filling; });
      if (state_ == state::broken || state_ == state::resetting) {
        throw BrokenBarrierError("Barrier.wait(): the barrier was aborted or reset while waiting");
      }
    }
  } catch (...) {
    --count_;
    exit();
    throw;
  }
  --count_;
  exit();
  co_return index;
}

Task<> Barrier::reset() {
  auto held = co_await cond_.scoped();
  if (count_ > 0) {
    state_ = state::resetting;
  } else {
    state_ = state::filling;
  }
  cond_.notify_all();
}

Task<> Barrier::abort() {
  auto held = co_await cond_.scoped();
  state_ = state::broken;
  cond_.notify_all();
}

}  // namespace polyloop
