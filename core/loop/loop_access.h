// detail::loop_access: the plumbing of EventLoop that polyloop's own layers
// (futures, tasks, io, net, the policies) need and users must not call.
// EventLoop keeps these members private; this passkey-like accessor is the
// one door to them, so the public class reads as asyncio's loop API.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/backend/backend.h"
#include "core/backend/ready_queue.h"
#include "core/loop/code_location.h"
#include "core/loop/event_loop.h"

namespace polyloop::detail {

class future_state_base;

// Links every live future state into its loop, so that closing the loop can
// drop their pending callbacks and end tasks that can never run again. A
// Stream is linked too while a send it started itself is in flight
// (net/stream.cc: it must hear the loop close and cancel_all_tasks()); it is
// no future state, so walkers that want those ask as_future_state().
struct state_link {
  // What the loop tells, or asks, every live future state.
  enum class loop_event : std::uint8_t {
    closed,           // close(): drop the done callbacks; a pending task ends
    destroyed,        // ~EventLoop: forget the loop
    // cancel_all_tasks(): a pending task cancels itself; true if it did (a
    // stream's send in flight too: it then ends and flushes as a task would)
    cancel_task,
    is_pending_task,  // true for a scheduled task that has not ended (or such a send)
  };
  state_link* prev = nullptr;
  state_link* next = nullptr;
  virtual void add_ref() noexcept = 0;
  virtual void release() noexcept = 0;
  virtual bool on_loop_event(loop_event e) = 0;
  // Debug mode, after a slow step: if this is the task whose root is
  // `root` (detail::stepping_task), what to call it in the report
  // ("task 'NAME' (coroutine ...)"); else "".
  // `node` is the ready node that ran (a task's first step sets no
  // stepping_task).
  virtual std::string describe_if_task(const void* root, const void* node) = 0;
  // This link's future state; null for a link that is none (a stream's send).
  virtual future_state_base* as_future_state() noexcept { return nullptr; }

 protected:
  ~state_link() = default;
};

struct loop_access {
  // Throws EventLoopError if the loop is closed; in debug mode also when
  // called from a thread other than the loop's (`method` names the call).
  static void check_open(const EventLoop& loop, const char* method = nullptr) {
    loop.check_open(method);
  }
  // Debug mode is on (one load; see EventLoop::set_debug).
  static bool debug(const EventLoop& loop) noexcept { return loop.get_debug(); }
  // Debug mode: where each future or task still alive was made.
  static std::unordered_map<const void*, debug_origin>& origins(EventLoop& loop) noexcept {
    return loop.origins_;
  }
  // policies: what set_debug() also switches (the SIGQUIT dump); called at
  // once if debug mode is already on.
  static void set_debug_hook(EventLoop& loop, void (*hook)(EventLoop&, bool)) {
    loop.debug_hook_ = hook;
    if (hook != nullptr && loop.get_debug()) hook(loop, true);
  }
  // Throws EventLoopError if the loop is closed, running, or another loop
  // runs on this thread.
  static void check_can_run(const EventLoop& loop) { loop.check_can_run(); }
  // The loop's backend, to start and cancel operations (throws if closed).
  static Backend& backend(EventLoop& loop) { return loop.backend(); }
  // The backend's socket calls, also once the loop is closed (net/ closes
  // its sockets then): the backend lives until the loop is destroyed.
  static socket_calls& sockets(EventLoop& loop) noexcept { return loop.backend_->sockets(); }
  // Puts `node` on the ready queue: it runs in the next iteration.
  static void schedule(EventLoop& loop, ready_node* node) { loop.schedule(node); }
  // The thread running `loop`, while it runs (debug mode's thread check).
  static std::thread::id running_thread(const EventLoop& loop) noexcept {
    return loop.running_thread_.load(std::memory_order_relaxed);
  }
  // Any thread: queues `node` to run on the loop's thread, as
  // call_soon_threadsafe does; false if the loop is closed.
  static bool post_threadsafe(EventLoop& loop, ready_node* node) {
    return loop.post_threadsafe(node);
  }
  // Test-only: how many entries the timer heap holds, cancelled ones
  // included, so a test can see that compaction really happened.
  static std::size_t timer_heap_size(const EventLoop& loop) noexcept { return loop.timers_.size(); }
  // The number of the next task scheduled on `loop` (its "Task-N").
  static std::uint32_t next_task_number(EventLoop& loop) noexcept {
    return static_cast<std::uint32_t>(++loop.tasks_created_);
  }
  // The loop's own counts (EventLoop::stats()), for the layers that count
  // what they do there: tasks finished, operations.
  static loop_counters& counts(EventLoop& loop) noexcept { return loop.counts_; }
  // The names and cancel messages of tasks that have one (see task_root).
  static std::unordered_map<const void*, task_notes>& notes_table(EventLoop& loop) noexcept {
    return loop.task_notes_;
  }
  // The head of the list of live future states (all_tasks() walks it).
  static state_link* live_states(EventLoop& loop) noexcept { return loop.states_; }
  // Every live future state is linked into its loop (see EventLoop::close).
  // Inline: every task a loop schedules is linked and unlinked once.
  static void link_state(EventLoop& loop, state_link* s) noexcept {
    s->prev = nullptr;
    s->next = loop.states_;
    if (loop.states_ != nullptr) loop.states_->prev = s;
    loop.states_ = s;
  }
  // The loop's default executor (core/executor makes it on first use).
  static std::unique_ptr<loop_extension>& default_executor(EventLoop& loop) noexcept {
    return loop.default_executor_;
  }
  // Executor calls out (submitted, not yet delivered): while there are
  // some, run_once() watches briefly for their completion before it blocks.
  static std::uint32_t& executor_calls_out(EventLoop& loop) noexcept {
    return loop.executor_calls_out_;
  }
  // The loop's signal handlers (core/signals makes them on first use).
  static std::unique_ptr<loop_extension>& signal_handlers(EventLoop& loop) noexcept {
    return loop.signal_handlers_;
  }
  // The loop's subprocesses (net/subprocess makes them on first use).
  static std::unique_ptr<loop_extension>& child_watcher(EventLoop& loop) noexcept {
    return loop.child_watcher_;
  }
  static void unlink_state(EventLoop& loop, state_link* s) noexcept {
    if (s->prev != nullptr) {
      s->prev->next = s->next;
    } else if (loop.states_ == s) {
      loop.states_ = s->next;
    }
    if (s->next != nullptr) s->next->prev = s->prev;
    s->prev = s->next = nullptr;
  }
};

}  // namespace polyloop::detail
