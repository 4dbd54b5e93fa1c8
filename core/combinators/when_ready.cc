#include "core/combinators/when_ready.h"

#include <cstdio>
#include <ostream>

#include "core/errors/invariant.h"
#include "core/loop/loop_access.h"

namespace polyloop::detail {

when_ready::when_ready(child_list children, until condition, on_cancel cancel,
                       std::optional<Clock::duration> timeout)
    : children_(children), until_(condition), on_cancel_(cancel), timeout_(timeout) {
  fn = &resume_awaiter<when_ready>;
  if (children_.one_link) {
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

when_ready::~when_ready() {
  // Normally end_wait() unlinked everything; not if the frame is destroyed
  // while suspended (its loop was closed).
  if (ended_) return;
  for (std::size_t i = 0; i < children_.size; ++i) unlink(i);
  if (!loop_closed_) timer_.cancel();
}

bool when_ready::satisfied() const noexcept {
  if (remaining_ == 0) return true;
  if (cancelling_) return false;  // a cancelled gather waits for every child
  switch (until_) {
    case until::first_done:
      return any_done_;
    case until::first_failure:
    case until::first_exception:
      return first_failure_ != nullptr;
    case until::all_done:
      return false;
  }
  return false;
}

void when_ready::rethrow_first_failure() const {
  if (first_failure_ == nullptr) return;
  first_failure_->check_result();  // rethrows the exception, or CancelledError
  throw CancelledError();
}

void when_ready::unlink(std::size_t i) noexcept {
  if (!is_linked(i)) return;
  link& l = link_of(i);
  children_[i]->remove_link(&l);
  l.linked = false;
}

void when_ready::init_link(link& l) noexcept {
  l.owner = this;
  l.linked = true;
  // The loop closed: this wait never ends, and the frame holding it may be
  // destroyed after the loop, so it must not touch the loop's timers.
  l.fn = [](ready_node* self, action) {
    auto* me = static_cast<link*>(self);
    me->linked = false;
    me->owner->loop_closed_ = true;
  };
  // Called inside the child's completion: only bookkeeping, no user code.
  l.notify = [](done_link* self, future_state_base& child) {
    auto* me = static_cast<link*>(self);
    me->linked = false;
    me->owner->on_child_done(child);
  };
}

void when_ready::begin() {
  POLYLOOP_INVARIANT(!begun_, "a when_ready is awaited once");
  if (children_.one_link) {
    init_link(shared_);
  } else {
    links_.resize(children_.size);
  }
  begun_ = true;
  for (std::size_t i = 0; i < children_.size; ++i) {
    future_state_base* child = children_[i];
    if (child->done()) continue;
    if (children_.one_link) {
      // The shared link is the only entry of every child's done list, so
      // its next_link stays null and its list_tail is itself, whichever
      // list it is read through.
      child->add_link(&shared_);
    } else {
      init_link(links_[i]);
      child->add_link(&links_[i]);
    }
  }
  if (timeout_) {
    timer_ = task.loop->call_later(*timeout_, [this] {
      timed_out_ = true;
      end_wait();
    });
  }
  task.cancellable_by({&waits_on, this});
}

void when_ready::on_child_done(future_state_base& child) noexcept {
  POLYLOOP_INVARIANT(remaining_ != 0, "a child of a when_ready completed twice");
  --remaining_;
  any_done_ = true;
  if (first_failure_ == nullptr && is_failure(child)) first_failure_ = &child;
  if (satisfied()) end_wait();
}

void when_ready::end_wait() noexcept {
  if (ended_) return;
  // Once every child has completed, none is linked any more.
  if (remaining_ != 0) {
    for (std::size_t i = 0; i < children_.size; ++i) unlink(i);
  }
  ended_ = true;
  timer_.cancel();
  loop_access::schedule(*task.loop, this);
}

bool when_ready::on_cancel_hook(void* p) {
  auto* self = static_cast<when_ready*>(p);
  if (self->on_cancel_ == on_cancel::end_wait) {
    self->end_wait();
    return false;
  }
  self->cancelling_ = true;
  self->timer_.cancel();
  // The children get the message of the cancel that reached the awaiting
  // task (asyncio's gather: child.cancel(msg=msg)). Cancelling a plain
  // future completes it at once, which re-enters on_child_done(); iterate by
  // index over what is still linked.
  std::string message = self->task.root != nullptr ? self->task.root->cancel_message() : std::string();
  for (std::size_t i = 0; i < self->children_.size; ++i) {
    if (self->is_linked(i)) self->children_[i]->cancel_with(message);
  }
  if (self->remaining_ == 0) self->end_wait();
  return false;  // the gather itself ends cancelled, whatever the children do
}

void when_ready::describe(const void* self, std::ostream& out) {
  auto* me = static_cast<const when_ready*>(self);
  const char* what = me->until_ == until::first_failure ? "gather"
                     : me->until_ == until::all_done   ? "wait_all"
                                                       : "wait";
  out << what << " of " << me->children_.size << " (" << me->remaining_ << " pending)";
}

std::string timeout_message(Clock::duration timeout) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "wait_for: timed out after %g ms; the awaited work was cancelled",
                std::chrono::duration<double, std::milli>(timeout).count());
  return buf;
}

}  // namespace polyloop::detail
