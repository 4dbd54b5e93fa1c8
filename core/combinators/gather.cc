#include "core/combinators/gather.h"

#include <cstdio>

namespace polyloop::detail {

multi_waiter::multi_waiter(child_list children, options opts)
    : children_(children), opts_(opts) {
  fn = &resume_awaiter<multi_waiter>;
  if (opts_.exclusive_tasks) {
    // Tasks scheduled just now, before any of them could take a step: all
    // pending. Not reading them here spares a pass over every child's frame.
    remaining_ = children_.size;
    return;
  }
  for (std::size_t i = 0; i < children_.size; ++i) {
    future_state_base* s = children_[i];
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
  for (std::size_t i = 0; i < children_.size; ++i) unlink(i);
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

void multi_waiter::unlink(std::size_t i) noexcept {
  if (!is_linked(i)) return;
  link& l = link_of(i);
  children_[i]->remove_link(&l);
  l.linked = false;
}

void multi_waiter::init_link(link& l) noexcept {
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
}

void multi_waiter::begin() {
  if (opts_.exclusive_tasks) {
    init_link(shared_);
  } else {
    links_.resize(children_.size);
  }
  begun_ = true;
  for (std::size_t i = 0; i < children_.size; ++i) {
    future_state_base* child = children_[i];
    if (child->done()) continue;
    if (opts_.exclusive_tasks) {
      // The shared link is the only entry of every child's done list, so
      // its next_link stays null and its list_tail is itself, whichever
      // list it is read through.
      child->add_link(&shared_);
    } else {
      init_link(links_[i]);
      child->add_link(&links_[i]);
    }
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
  // Once every child has completed, none is linked any more.
  if (remaining_ != 0) {
    for (std::size_t i = 0; i < children_.size; ++i) unlink(i);
  }
  ended_ = true;
  timer_.cancel();
  loop_access::schedule(*task.loop, this);
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
  for (std::size_t i = 0; i < self->children_.size; ++i) {
    if (self->is_linked(i)) self->children_[i]->cancel();
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
