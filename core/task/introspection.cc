#include "core/task/introspection.h"

#include <algorithm>
#include <cstdio>
#include <ostream>

#include "core/loop/loop_access.h"
#include "core/task/sleep.h"
#include "core/task/task.h"

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

namespace {
std::string milliseconds(Clock::duration d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f ms", std::chrono::duration<double, std::milli>(d).count());
  return buf;
}
std::string seconds(Clock::time_point t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f s",
                std::chrono::duration<double>(t.time_since_epoch()).count());
  return buf;
}

// One task's line (without the newline): its name, and what it waits on.
void describe_pending(EventLoop& loop, detail::future_state_base& state, std::ostream& out) {
  detail::task_root& root = *state.as_task();
  out << detail::describe_task(root) << detail::describe_origin(state) << ": ";
  if (root.waiting.kind != nullptr) {
    out << "waits on ";
    root.waiting.kind->describe(root.waiting.self, out);
  } else if (loop.is_running() && detail::stepping_task == &root) {
    out << "running (this is the task that called dump_tasks)";
  } else {
    out << "ready to run (not suspended on anything)";
  }
}
}  // namespace

void detail::sleep_awaiter::describe(const void* self, std::ostream& out) {
  auto* me = static_cast<const sleep_awaiter*>(self);
  if (me->timer_loop_ == nullptr) {
    out << "sleep(0) (resumes next iteration)";
    return;
  }
  Clock::time_point when = me->timer_.when();
  out << "sleep until " << seconds(when) << " (in " << milliseconds(when - me->timer_loop_->time())
      << ")";
}

void EventLoop::dump_tasks(std::ostream& out) {
  std::vector<detail::future_state_base*> pending;
  for (detail::state_link* s = detail::loop_access::live_states(*this); s != nullptr; s = s->next) {
    detail::future_state_base* state = s->as_future_state();
    if (state != nullptr && state->as_task() != nullptr && !state->done()) pending.push_back(state);
  }
  // Oldest first: the order in which the loop scheduled them.
  std::sort(pending.begin(), pending.end(), [](auto* a, auto* b) {
    return a->as_task()->number < b->as_task()->number;
  });
  out << pending.size() << " pending task" << (pending.size() == 1 ? "" : "s") << " on this "
      << backend_name() << " loop at " << seconds(time()) << (is_closed() ? " (closed)" : "")
      << "\n";
  for (detail::future_state_base* state : pending) {
    out << "  ";
    describe_pending(*this, *state, out);
    out << "\n";
  }
  out.flush();
}

void detail::report_never_awaited(const void* coroutine_location) noexcept {
  try {
    std::string where = describe_location(coroutine_location);
    std::string name = where.empty() ? std::string("a Task") : "'" + where.substr(0, where.find(" at ")) + "'";
    ExceptionContext context{"coroutine " + name + " was never awaited" +
                                 (where.empty() ? "" : " (" + where.substr(where.find(" at ") + 1) + ")") +
                                 ": co_await the Task, or schedule it with create_task()",
                             nullptr};
    if (EventLoop* loop = running_loop()) {
      loop->call_exception_handler(context);
    } else {
      EventLoop::print_exception(context);
    }
  } catch (...) {
    std::fputs("polyloop: a Task was never awaited\n", stderr);
  }
}

std::vector<TaskRef> all_tasks(EventLoop& loop) {
  std::vector<TaskRef> tasks;
  for (detail::state_link* s = detail::loop_access::live_states(loop); s != nullptr; s = s->next) {
    detail::future_state_base* state = s->as_future_state();  // null: a stream's send
    if (state != nullptr && state->as_task() != nullptr && !state->done()) {
      tasks.push_back(detail::task_ref(*state->as_task()));
    }
  }
  return tasks;
}

}  // namespace polyloop
