// EventLoop's debug mode (asyncio's loop.set_debug): the slow-callback
// report, the thread check, and the switch itself. Nothing here runs while
// debug mode is off: every entry is behind debug_bit, which shares the word
// call_soon and check_open test anyway.
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"
#include "core/loop/stepping_task.h"

namespace polyloop {

namespace {
std::string thread_name(std::thread::id id) {
  std::ostringstream out;
  out << id;
  return out.str();
}
}  // namespace

bool EventLoop::debug_from_environment() noexcept {
  const char* value = std::getenv("POLYLOOP_DEBUG");
  return value != nullptr && value[0] != '\0' && std::string_view(value) != "0";
}

void EventLoop::set_debug(bool enabled) {
  if (enabled == get_debug()) return;
  if (enabled) {
    flags_.fetch_or(debug_bit, std::memory_order_relaxed);
  } else {
    flags_.fetch_and(static_cast<std::uint8_t>(~debug_bit), std::memory_order_relaxed);
    origins_.clear();
  }
  if (debug_hook_ != nullptr) debug_hook_(*this, enabled);
}

void EventLoop::set_slow_callback_duration(duration limit) {
  if (limit < duration::zero()) {
    throw std::invalid_argument(
        "set_slow_callback_duration: the duration is negative; give 0 or more (0 reports "
        "every callback)");
  }
  slow_callback_duration_ = limit;
}

void EventLoop::check_open_slow(const char* method) const {
  if (flags_.load(std::memory_order_relaxed) & closed_bit) throw_closed();
  check_thread(method);
}

// asyncio's BaseEventLoop._check_thread: only while the loop runs, as
// asyncio knows the loop's thread only then.
void EventLoop::check_thread(const char* method) const {
  if (!running_.load(std::memory_order_relaxed)) return;
  std::thread::id loop_thread = running_thread_.load(std::memory_order_relaxed);
  std::thread::id here = std::this_thread::get_id();
  if (loop_thread == std::thread::id() || loop_thread == here) return;
  throw EventLoopError(std::string(method != nullptr ? method : "a loop method") +
                       " was called from thread " + thread_name(here) +
                       ", but this loop runs on thread " + thread_name(loop_thread) +
                       " (debug mode checks this): a loop is used from its own thread only; "
                       "use call_soon_threadsafe() or run_coroutine_threadsafe() from others");
}

void EventLoop::run_ready_debug() {
  for (std::size_t n = ready_.size(); n != 0; --n) {
    detail::ready_node* node = ready_.pop();
    detail::stepping_task = nullptr;
    time_point start = clock_->now();
    run_node(node);
    duration took = clock_->now() - start;
    if (took > slow_callback_duration_) [[unlikely]] {
      report_slow(took, detail::stepping_task, node);
    }
  }
}

// asyncio's _run_once: "Executing <Handle ...> took 0.150 seconds".
void EventLoop::report_slow(std::chrono::nanoseconds took, const void* task, const void* node) {
  // The task may have ended in this step and its frame be gone: only live
  // ones are asked, by address, whether the step was theirs.
  std::string what;
  for (detail::state_link* s = states_; s != nullptr && what.empty(); s = s->next) {
    what = s->describe_if_task(task, node);
  }
  if (!what.empty()) {
    what = "a step of " + what;
  } else if (task != nullptr) {
    what = "a step of a task that ended in it";
  } else {
    what = "a callback";
  }
  char figures[160];
  std::snprintf(figures, sizeof figures, " took %.3f ms (slow_callback_duration is %.3f ms)",
                std::chrono::duration<double, std::milli>(took).count(),
                std::chrono::duration<double, std::milli>(slow_callback_duration_).count());
  call_exception_handler({"Executing " + what + figures, nullptr});
}

}  // namespace polyloop
