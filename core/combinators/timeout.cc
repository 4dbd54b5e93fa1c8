#include "core/combinators/timeout.h"

#include "core/combinators/when_ready.h"

namespace polyloop::detail {

timeout_state::timeout_state(TaskRef task, std::optional<Clock::time_point> when)
    : task_(std::move(task)), when_(when), cancelling_at_entry_(task_.cancelling()) {
  arm();
}

void timeout_state::arm() {
  if (!when_) return;
  EventLoop& loop = task_.get_loop();
  if (*when_ <= loop.time()) {
    // asyncio: a deadline already past expires in the next iteration, so
    // the block starts, and its first suspension is where it ends.
    timer_ = loop.call_soon([this] { on_timeout(); });
  } else {
    timer_ = loop.call_at(*when_, [this] { on_timeout(); });
  }
}

void timeout_state::on_timeout() {
  task_.cancel();
  phase_ = phase::expiring;
}

void timeout_state::reschedule(std::optional<Clock::time_point> when) {
  if (phase_ != phase::entered) {
    throw InvalidStateError(
        phase_ == phase::exited || phase_ == phase::expired
            ? "Timeout::reschedule: the timeout has finished (its block ended); a deadline can "
              "only be moved from inside the block"
            : "Timeout::reschedule: the timeout has expired already (its task is being "
              "cancelled); it cannot be moved any more");
  }
  timer_.cancel();
  timer_ = Handle();
  when_ = when;
  arm();
}

bool timeout_state::exit(bool cancelled) {
  timer_.cancel();
  timer_ = Handle();
  if (phase_ == phase::expiring) {
    phase_ = phase::expired;
    // Our own cancel is taken back; if none came from elsewhere meanwhile,
    // the CancelledError is ours to turn into TimeoutError (asyncio 3.12).
    return task_.uncancel() <= cancelling_at_entry_ && cancelled;
  }
  if (phase_ == phase::entered) phase_ = phase::exited;
  return false;
}

void timeout_state::abandon() noexcept {
  if (phase_ == phase::entered || phase_ == phase::expiring) {
    timer_ = Handle();
    phase_ = phase::exited;
  }
}

std::string deadline_message(const deadline& d) {
  if (d.wait_for_limit) return timeout_message(*d.wait_for_limit);
  return "timeout: the deadline passed and the block was cancelled";
}

}  // namespace polyloop::detail
