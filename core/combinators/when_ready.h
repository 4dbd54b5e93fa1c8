// detail::when_ready: the one primitive under gather, wait_all, wait and
// wait_for (core/combinators/gather.h) — suspend the awaiting task until a
// condition over a set of futures holds, a timeout passes, or the task is
// cancelled. It never throws for a child's outcome; the views decide what
// to make of it (cppcoro's when_all_ready, with fmap(unwrap) on top).
#pragma once

#include <array>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/future/suspended_task.h"
#include "core/loop/event_loop.h"
#include "core/task/task.h"

namespace polyloop::detail {

// When the wait ends (besides a timeout).
enum class until : std::uint8_t {
  all_done,         // every child is done
  first_done,       // any child is done
  first_failure,    // a child ended with an exception or cancelled (gather)
  first_exception,  // a child ended with an exception; cancelled is not one (asyncio.wait)
};

// What a cancel of the awaiting task does to the wait.
enum class on_cancel : std::uint8_t {
  cancel_children,  // cancel the pending children, end once all have ended (gather)
  end_wait,         // end at once, children untouched (asyncio.wait)
  ignore,           // wait on (wait_for waiting for the work it cancelled)
};

// The children a when_ready watches, by index: a span of states, or a list
// the caller keeps in another form (own_tasks reads each state through its
// Task, so that it keeps no second list).
struct child_list {
  const void* data = nullptr;
  std::size_t size = 0;
  future_state_base* (*at)(const void* data, std::size_t i) noexcept = nullptr;
  // Set by own_tasks only: the children are tasks scheduled for this wait
  // that nothing else can see, so their done lists hold only this wait's
  // link, and one link serves them all.
  bool one_link = false;

  child_list() = default;
  child_list(std::span<future_state_base* const> states) noexcept
      : data(states.data()), size(states.size()), at(&span_at) {}
  template <std::size_t N>
  child_list(const std::array<future_state_base*, N>& states) noexcept
      : child_list(std::span<future_state_base* const>(states)) {}
  child_list(const std::vector<future_state_base*>& states) noexcept
      : child_list(std::span<future_state_base* const>(states)) {}
  child_list(const void* d, std::size_t n,
             future_state_base* (*a)(const void*, std::size_t) noexcept, bool shared) noexcept
      : data(d), size(n), at(a), one_link(shared) {}
  future_state_base* operator[](std::size_t i) const noexcept { return at(data, i); }

 private:
  static future_state_base* span_at(const void* d, std::size_t i) noexcept {
    return static_cast<future_state_base* const*>(d)[i];
  }
};

// The futures' states, and the list of them `children` points into, must
// stay alive while it waits (the caller holds their Futures or Tasks, and
// the list in a named variable or in the co_await's own full-expression).
// Awaited once, from a task on the children's loop.
class when_ready : public ready_node {
 public:
  when_ready(child_list children, until condition, on_cancel cancel,
             std::optional<Clock::duration> timeout = std::nullopt);
  when_ready(const when_ready&) = delete;
  when_ready& operator=(const when_ready&) = delete;
  ~when_ready();

  bool await_ready() const noexcept { return satisfied(); }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    task.bind(h);
    if (on_cancel_ == on_cancel::ignore) task.root = nullptr;  // a cancel does not reach this wait
    begin();
  }
  void await_resume() const { task.resume_point(); }

  // After the wait: whether the timeout ended it.
  bool timed_out() const noexcept { return timed_out_; }
  // Rethrows what the first child to fail ended with (its exception, or
  // CancelledError); returns if none failed.
  void rethrow_first_failure() const;

  suspended_task task;

 private:
  // The one link type: an entry on a child's done list.
  struct link : done_link {
    when_ready* owner = nullptr;
    bool linked = false;
  };
  bool is_failure(const future_state_base& child) const noexcept {
    return child.failed() || (until_ == until::first_failure && child.cancelled());
  }
  // Whether child i's done list (still) holds this waiter's link.
  bool is_linked(std::size_t i) const noexcept {
    if (!begun_) return false;  // never suspended: await_ready() said the wait was over
    if (!children_.one_link) return links_[i].linked;
    // Linked at begin() if pending then; on_child_done() is told as each
    // completes, end_wait() unlinks all the others.
    return !ended_ && !children_[i]->done();
  }
  link& link_of(std::size_t i) noexcept { return children_.one_link ? shared_ : links_[i]; }
  void unlink(std::size_t i) noexcept;
  void init_link(link& l) noexcept;

  void begin();
  bool satisfied() const noexcept;
  void on_child_done(future_state_base& child) noexcept;
  void end_wait() noexcept;
  static bool on_cancel_hook(void* self);
  // "gather of 3 (2 pending)".
  static void describe(const void* self, std::ostream& out);
  static constexpr wait_kind waits_on{&on_cancel_hook, &describe};

  child_list children_;
  until until_;
  on_cancel on_cancel_;
  std::optional<Clock::duration> timeout_;
  std::vector<link> links_;  // one per child, unless children_.one_link
  link shared_;              // the one link of own_tasks children
  std::size_t remaining_ = 0;
  future_state_base* first_failure_ = nullptr;
  bool any_done_ = false;
  bool timed_out_ = false;
  bool cancelling_ = false;
  bool begun_ = false;
  bool ended_ = false;
  bool loop_closed_ = false;
  TimerHandle timer_;
};

// The fast path of gather(std::vector<Task<T>>), the only one the
// combinators keep: the Tasks are scheduled in place, each keeping its
// handle, and the reference create_task() would have handed to a Future is
// held here instead, so a gather of N tasks keeps no list beside the
// caller's, allocates no Future, and links one done link for all
// (child_list::one_link). What it saves, on loopbench's tasks workload
// (gather of 100,000 tasks that each sleep(0) once; epoll, one worker run
// under `valgrind --tool=callgrind`, which counts the same on a noisy
// machine; 2026-12-07): 584 instructions and 236 bytes per task this way,
// against 671 instructions (+15%) and 308 bytes (+30%) through a Future and
// a link per child (gather_futures over to_futures).
//
// The destructor releases those references and empties the Tasks, whose
// own destructor would otherwise destroy the frames of tasks still running
// (a gather that failed leaves its other children running, as in asyncio).
template <class T>
class own_tasks {
 public:
  own_tasks(EventLoop& loop, std::vector<Task<T>>& tasks) : tasks_(tasks) {
    for (const Task<T>& t : tasks_) {
      if (!t.valid()) throw InvalidStateError("gather: a Task in the list is empty (moved-from)");
    }
    loop_access::check_open(loop);
    for (; scheduled_ < tasks_.size(); ++scheduled_) {
      task_promise<T>& p = tasks_[scheduled_].h_.promise();
      p.schedule_on(loop);
      p.mark_retrieved();  // failures after the first are not "never retrieved": gather saw them
    }
  }
  own_tasks(const own_tasks&) = delete;
  own_tasks& operator=(const own_tasks&) = delete;
  ~own_tasks() {
    for (std::size_t i = 0; i < scheduled_; ++i) {
      std::exchange(tasks_[i].h_, nullptr).promise().release();
    }
  }

  std::size_t size() const noexcept { return scheduled_; }
  future_state<T>& operator[](std::size_t i) const noexcept { return tasks_[i].h_.promise(); }
  child_list list() const noexcept { return {tasks_.data(), scheduled_, &state_at, true}; }

 private:
  static future_state_base* state_at(const void* data, std::size_t i) noexcept {
    return &static_cast<const Task<T>*>(data)[i].h_.promise();
  }

  std::vector<Task<T>>& tasks_;
  std::size_t scheduled_ = 0;
};

// "wait_for: timed out after 250 ms; ..."
std::string timeout_message(Clock::duration timeout);

}  // namespace polyloop::detail
