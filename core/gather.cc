#include "core/gather.h"

#include <cstdio>

namespace polyloop::detail {

multi_waiter::multi_waiter(std::span<future_state_base* const> states, options opts)
    : states_(states), opts_(opts) {
  fn = &resume_awaiter<multi_waiter>;
  for (future_state_base* s : states_) {
    if (!s->done()) {
      ++remaining_;
    } else {
      any_done_ = true;
      if (first_failure_ == nullptr && is_failure(*s)) first_failure_ = s;
    }
  }
}

multi_waiter::~multi_waiter() {
  // Normally end_wait() unlinked everything; not if the frame is destroyed
  // while suspended (its loop was closed).
  if (ended_) return;
  for (std::size_t i = 0; i < links_.size(); ++i) {
    if (links_[i].linked) states_[i]->remove_link(&links_[i]);
  }
  if (!loop_closed_) timer_.cancel();
}

bool multi_waiter::satisfied() const noexcept {
  if (remaining_ == 0) return true;
  if (cancelling_) return false;  // a cancelled gather waits for every child
  switch (opts_.when) {
    case return_when::FIRST_COMPLETED:
      return any_done_;
    case return_when::FIRST_EXCEPTION:
      return first_failure_ != nullptr;
    case return_when::ALL_COMPLETED:
      return false;
  }
  return false;
}

void multi_waiter::begin() {
  links_.resize(states_.size());
  for (std::size_t i = 0; i < states_.size(); ++i) {
    if (states_[i]->done()) continue;
    link& l = links_[i];
    l.owner = this;
    l.linked = true;
    // Called inside the child's completion: only bookkeeping, no user code.
    // The loop closed: this wait never ends, and the frame holding it may be
    // destroyed after the loop, so it must not touch the loop's timers.
    l.fn = [](ready_node* self, action) {
      auto* me = static_cast<link*>(self);
      me->linked = false;
      me->owner->loop_closed_ = true;
    };
    l.notify = [](done_link* self, future_state_base& child) {
      auto* me = static_cast<link*>(self);
      me->linked = false;
      me->owner->on_child_done(child);
    };
    states_[i]->add_link(&l);
  }
  if (opts_.timeout) {
    timer_ = task.loop->call_later(*opts_.timeout, [this] {
      timed_out_ = true;
      end_wait();
    });
  }
  task.cancellable_by({&on_cancel, this});
}

void multi_waiter::on_child_done(future_state_base& child) noexcept {
  --remaining_;
  any_done_ = true;
  if (first_failure_ == nullptr && is_failure(child)) first_failure_ = &child;
  if (satisfied()) end_wait();
}

void multi_waiter::end_wait() noexcept {
  if (ended_) return;
  ended_ = true;
  for (std::size_t i = 0; i < links_.size(); ++i) {
    if (links_[i].linked) {
      states_[i]->remove_link(&links_[i]);
      links_[i].linked = false;
    }
  }
  timer_.cancel();
  task.loop->schedule(this);
}

bool multi_waiter::on_cancel(void* p) {
  auto* self = static_cast<multi_waiter*>(p);
  if (!self->opts_.cancel_children) {
    self->end_wait();
    return false;
  }
  self->cancelling_ = true;
  self->timer_.cancel();
  // Cancelling a plain future completes it at once, which re-enters
  // on_child_done(); iterate by index over what is still linked.
  for (std::size_t i = 0; i < self->links_.size(); ++i) {
    if (self->links_[i].linked) self->states_[i]->cancel();
  }
  if (self->remaining_ == 0) self->end_wait();
  return false;  // the gather itself ends cancelled, whatever the children do
}

void rethrow_failure(future_state_base& failed) {
  failed.check_result();  // rethrows the exception, or CancelledError
  throw CancelledError();
}

std::string timeout_message(Clock::duration timeout) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "wait_for: timed out after %g ms; the awaited work was cancelled",
                std::chrono::duration<double, std::milli>(timeout).count());
  return buf;
}

}  // namespace polyloop::detail
