#include "core/task/introspection.h"

#include "core/loop/loop_access.h"

namespace polyloop {

TaskRef::TaskRef(detail::future_state_base* s) : state_(s) {
  if (s == nullptr) throw InvalidStateError("TaskRef: the Future is empty (default-constructed or moved-from)");
  if (s->as_task() == nullptr) {
    throw InvalidStateError(
        "TaskRef: this Future is not a task; only a Future that create_task() returned is one");
  }
  s->add_ref();
}

detail::future_state_base* TaskRef::st() const {
  if (state_ == nullptr) {
    throw InvalidStateError("this TaskRef is empty (default-constructed or moved-from)");
  }
  return state_;
}

void TaskRef::set_name(std::string name) { detail::notes_of(root()).name = std::move(name); }

TaskRef detail::task_ref(task_root& root) noexcept {
  root.task_state->add_ref();
  return TaskRef(root.task_state, TaskRef::adopt_tag{});
}

std::vector<TaskRef> all_tasks(EventLoop& loop) {
  std::vector<TaskRef> tasks;
  for (detail::state_link* s = detail::loop_access::live_states(loop); s != nullptr; s = s->next) {
    // Every state_link is a future state.
    auto* state = static_cast<detail::future_state_base*>(s);
    if (state->as_task() != nullptr && !state->done()) tasks.push_back(detail::task_ref(*state->as_task()));
  }
  return tasks;
}

}  // namespace polyloop
