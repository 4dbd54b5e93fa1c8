#include "core/future/future.h"

#include <atomic>
#include <ostream>
#include <string>

namespace polyloop::detail {

void schedule_link(done_link* self, future_state_base& state) {
  loop_access::schedule(state.checked_loop(), self);
}

future_state_base::~future_state_base() {
  if (loop_ != nullptr) {
    loop_access::unlink_state(*loop_, this);
  }
}

void future_state_base::forget_origin() noexcept {
  if (loop_ != nullptr) loop_access::origins(*loop_).erase(this);
}

void future_state_base::keep_origin(const void* made_at) {
  if (loop_ == nullptr) return;
  loop_access::origins(*loop_)[this] = {made_at};
  has_origin_ = true;
}

std::string future_state_base::describe_if_task(const void* root, const void* node) {
  task_root* task = as_task();
  if (task == nullptr || !ran_step(root, node)) return {};
  return describe_task(*task) + describe_origin(*this);
}

void describe_awaited(const future_state_base& state, std::ostream& out) {
  auto& s = const_cast<future_state_base&>(state);
  if (task_root* task = s.as_task()) {
    out << describe_task(*task);
  } else {
    out << "a future" << describe_origin(state);
  }
  if (state.done()) out << " (done; resumes next)";
}

std::string describe_location(const void* location) {
  if (location == nullptr) return {};
  source_location l = location_from(location);
  if (l.line() == 0) return {};
  return std::string(l.function_name()) + " at " + l.file_name() + ":" + std::to_string(l.line());
}

std::string describe_origin(const future_state_base& state) {
  // Only in debug mode, as asyncio shows _source_traceback only then.
  if (state.loop_ == nullptr || !loop_access::debug(*state.loop_)) return {};
  if (const void* coroutine = state.coroutine_location()) {
    std::string where = describe_location(coroutine);
    return where.empty() ? where : " (coroutine " + where + ")";
  }
  if (!state.has_origin_) return {};
  auto& origins = loop_access::origins(*state.loop_);
  auto it = origins.find(&state);
  if (it == origins.end()) return {};
  std::string where = describe_location(it->second.made_at);
  if (where.empty()) return {};
  return (state.is_task() ? " (coroutine " : " (made by ") + where + ")";
}

EventLoop& future_state_base::checked_loop() const {
  if (loop_ == nullptr) {
    throw EventLoopError(
        "the event loop of this future was destroyed; futures must not outlive their loop");
  }
  return *loop_;
}

void future_state_base::check_can_complete(const char* what) {
  if (is_task()) {
    throw InvalidStateError(std::string(what) +
                            ": a task's outcome is what its coroutine returns or throws; it "
                            "cannot be set from outside (cancel() it instead)");
  }
  if (done()) {
    throw InvalidStateError(std::string(what) +
                            ": the future is already done; a future completes only once");
  }
  loop_access::check_open(checked_loop(), what);
}

bool future_state_base::cancel_with(std::string message) {
  if (done()) return false;
  loop_access::check_open(checked_loop());
  if (!message.empty()) exception_ = std::make_exception_ptr(CancelledError(std::move(message)));
  finish(status::cancelled);
  return true;
}

void future_state_base::set_exception(std::exception_ptr e) {
  if (!e) throw std::invalid_argument("set_exception: the exception_ptr is null");
  check_can_complete("set_exception");
  exception_ = std::move(e);
  finish(status::exception);
}

void future_state_base::check_result_slow() {
  switch (status_) {
    case status::pending:
      throw InvalidStateError(
          "result is not ready: the future is still pending; await it or check done() first");
    case status::cancelled:
      if (exception_) std::rethrow_exception(exception_);  // a CancelledError with its message
      throw CancelledError("the future was cancelled");
    case status::exception:
      retrieved_ = true;
      std::rethrow_exception(exception_);
    case status::result:
      return;
  }
}

std::exception_ptr future_state_base::exception() {
  if (status_ == status::pending) {
    throw InvalidStateError(
        "exception is not set: the future is still pending; await it or check done() first");
  }
  if (status_ == status::cancelled) check_result_slow();  // throws the CancelledError
  retrieved_ = true;
  return exception_;
}

std::uint64_t future_state_base::next_callback_id() noexcept {
  static std::atomic<std::uint64_t> last{0};
  return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

void future_state_base::add_link(done_link* link) noexcept {
  link->next_link = nullptr;
  if (head_ != nullptr) {
    head_->list_tail->next_link = link;
    head_->list_tail = link;
  } else {
    head_ = link;
    link->list_tail = link;
  }
}

bool future_state_base::remove_link(done_link* link) noexcept {
  done_link* prev = nullptr;
  for (done_link* l = head_; l != nullptr; prev = l, l = l->next_link) {
    if (l != link) continue;
    if (prev == nullptr) {
      head_ = l->next_link;
      if (head_ != nullptr) head_->list_tail = l->list_tail;
    } else {
      prev->next_link = l->next_link;
      if (head_->list_tail == l) head_->list_tail = prev;
    }
    l->next_link = nullptr;
    return true;
  }
  return false;
}

std::size_t future_state_base::remove_user_link(std::uint64_t id) noexcept {
  for (done_link* l = head_; l != nullptr; l = l->next_link) {
    if (l->user_id != id) continue;
    remove_link(l);
    l->fn(l, ready_node::action::discard);  // frees the node, releases its reference
    return 1;
  }
  return 0;
}

void future_state_base::finish(status s) noexcept {
  status_ = s;
  // Detach the list first: notify() may add or remove entries elsewhere.
  done_link* l = std::exchange(head_, nullptr);
  while (l != nullptr) {
    done_link* next = l->next_link;
    l->next_link = nullptr;
    l->notify(l, *this);
    l = next;
  }
}

void future_state_base::report_unretrieved_slow() noexcept {
  ExceptionContext context{"Future exception was never retrieved" + describe_origin(*this),
                           exception_};
  if (task_root* task = as_task()) {
    context.message = "Task exception was never retrieved (" + describe_task(*task) +
                      describe_origin(*this) + ")";
  }
  if (loop_ != nullptr) {
    loop_->call_exception_handler(context);
  } else {
    EventLoop::print_exception(context);
  }
}

void future_state_base::drop_callbacks() noexcept {
  // Callbacks can never run now: release them (and the references they hold).
  done_link* l = std::exchange(head_, nullptr);
  while (l != nullptr) {
    done_link* next = l->next_link;
    l->next_link = nullptr;
    l->fn(l, ready_node::action::discard);
    l = next;
  }
}

std::string task_name(const task_root& task) {
  EventLoop* loop = task.task_state != nullptr ? task.task_state->loop() : nullptr;
  if (task.has_notes && loop != nullptr) {
    auto& notes = loop_access::notes_table(*loop);
    auto it = notes.find(&task);
    if (it != notes.end() && !it->second.name.empty()) return it->second.name;
  }
  return "Task-" + std::to_string(task.number);
}

std::string describe_task(const task_root& task) { return "task '" + task_name(task) + "'"; }

task_notes& notes_of(task_root& task) {
  EventLoop& loop = task.task_state->checked_loop();
  task.has_notes = true;
  return loop_access::notes_table(loop)[&task];
}

void forget_notes(task_root& task) noexcept {
  if (!task.has_notes || task.task_state == nullptr) return;
  if (EventLoop* loop = task.task_state->loop()) loop_access::notes_table(*loop).erase(&task);
  task.has_notes = false;
}

std::string task_root::cancel_message() const {
  if (!has_notes || task_state == nullptr || task_state->loop() == nullptr) return {};
  auto& notes = loop_access::notes_table(*task_state->loop());
  auto it = notes.find(this);
  return it != notes.end() ? it->second.cancel_message : std::string();
}

void task_root::throw_cancelled() {
  must_cancel = false;
  std::string message = cancel_message();
  if (message.empty()) throw CancelledError();
  throw CancelledError(std::move(message));
}

}  // namespace polyloop::detail

namespace polyloop::detail {

void run_until_done(EventLoop& loop, future_state_base& state) {
  loop_access::check_open(loop);
  if (state.loop() != &loop) {
    throw EventLoopError("run_until_complete: the future belongs to another event loop");
  }
  // Stops the loop once the future's done callbacks have run, as asyncio's
  // _run_until_complete_cb does: a callback queued behind theirs. The link
  // lives on this stack; notify() only queues a pooled callback, so nothing
  // points here once this function returns.
  struct stop_link : done_link {
    EventLoop* loop = nullptr;
  } link;
  link.loop = &loop;
  link.fn = [](ready_node*, ready_node::action) {};
  link.notify = [](done_link* self, future_state_base&) {
    EventLoop* loop = static_cast<stop_link*>(self)->loop;
    loop->call_soon([loop] { loop->stop(); });
  };
  if (state.done()) {
    loop.call_soon([&loop] { loop.stop(); });
  } else {
    state.add_link(&link);
  }
  try {
    loop.run_forever();
  } catch (...) {
    state.remove_link(&link);
    throw;
  }
  if (!state.done()) {
    state.remove_link(&link);
    throw EventLoopError(
        "event loop stopped before the future completed (stop() was called while "
        "run_until_complete was waiting)");
  }
}

}  // namespace polyloop::detail
