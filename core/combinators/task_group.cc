#include "core/combinators/task_group.h"

#include "core/loop/loop_access.h"

namespace polyloop::detail {

// One per pending child: an entry on the child's done list that runs from
// the ready queue (as asyncio's done callback does), so that what the group
// does about a child's end (cancel the others, the parent) runs from the
// loop, never inside the child's completion.
struct task_group_state::child : done_link {
  std::shared_ptr<task_group_state> group;
  future_state_base* state = nullptr;  // a reference held
  child* prev = nullptr;
  child* next = nullptr;

  static void run(ready_node* n, ready_node::action what) {
    std::unique_ptr<child> self(static_cast<child*>(n));
    if (what == ready_node::action::run) self->group->on_child_done(*self);
    self->unlink();
    self->state->release();
  }
  void unlink() noexcept {
    if (prev != nullptr) prev->next = next;
    if (next != nullptr) next->prev = prev;
    if (group->children_ == this) group->children_ = next;
    prev = next = nullptr;
  }
};

task_group_state::task_group_state(TaskRef parent) : parent_(std::move(parent)) {}

void task_group_state::check_can_add() const {
  if (finished_ || (exiting_ && children_ == nullptr)) {
    throw InvalidStateError(
        "TaskGroup::create_task: the group is finished (its task_group() scope has ended); "
        "start tasks from inside the body or from its children while they run");
  }
  if (aborting_) {
    throw InvalidStateError(
        "TaskGroup::create_task: the group is shutting down (a child failed or the task was "
        "cancelled, and its children are being cancelled); no new task may join it");
  }
}

void task_group_state::add(future_state_base& state, const std::shared_ptr<task_group_state>& self) {
  auto c = std::make_unique<child>();
  c->fn = &child::run;
  c->notify = &schedule_link;
  c->group = self;
  c->state = &state;
  state.add_ref();
  c->next = children_;
  if (children_ != nullptr) children_->prev = c.get();
  children_ = c.get();
  state.add_link(c.release());
}

void task_group_state::on_child_done(child& c) {
  c.unlink();
  if (children_ == nullptr && all_done_.valid() && !all_done_.done()) all_done_.set_result();
  future_state_base& s = *c.state;
  if (s.cancelled() || !s.failed()) return;
  errors_.push_back(s.exception());  // marks it retrieved: the group reports it
  if (parent_.done()) {
    loop().call_exception_handler(
        {"a TaskGroup child failed after its parent task ended", errors_.back()});
    return;
  }
  if (!aborting_ && !parent_cancel_requested_) {
    // Stop whatever the parent runs in the group's body (asyncio): its
    // cancel is taken back in exit(), so that the group's error, not a
    // CancelledError, leaves the scope.
    abort();
    parent_cancel_requested_ = true;
    parent_.cancel();
  }
}

void task_group_state::abort() {
  aborting_ = true;
  for (child* c = children_; c != nullptr; c = c->next) {
    if (!c->state->done()) c->state->cancel();
  }
}

Task<> task_group_state::exit(std::exception_ptr body_error, bool body_cancelled) {
  exiting_ = true;
  std::exception_ptr propagate_cancel = body_cancelled ? body_error : nullptr;
  if (body_error && !aborting_) abort();  // the body failed or its task is being cancelled
  while (children_ != nullptr) {
    all_done_ = loop().create_future<>();
    try {
      co_await all_done_;
    } catch (const CancelledError&) {
      // The parent is cancelled while it waits: cancel the children, and
      // leave with CancelledError once they have ended.
      if (!aborting_) {
        propagate_cancel = std::current_exception();
        abort();
      }
    }
    all_done_ = Future<>();
  }
  finished_ = true;
  if (parent_cancel_requested_ && parent_.uncancel() == 0) {
    propagate_cancel = nullptr;  // only our own cancel: not to be propagated
  }
  if (propagate_cancel && errors_.empty()) std::rethrow_exception(propagate_cancel);
  if (body_error && !body_cancelled) errors_.push_back(body_error);
  if (errors_.empty()) co_return;
  // A cancel from outside stays requested: keep its count stable, and let
  // it reach the task at its next suspension.
  if (parent_.cancelling() != 0) {
    parent_.uncancel();
    parent_.cancel();
  }
  throw ExceptionGroup("unhandled errors in a TaskGroup", std::move(errors_));
}

}  // namespace polyloop::detail
