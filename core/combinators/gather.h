// Waiting for several things at once: gather, wait_all, wait, wait_for.
//
// Named by what they do with errors (as cppcoro and asyncio do):
//   wait_all(...)  never throws for a child: returns the settled futures
//                  (asyncio's gather(..., return_exceptions=True));
//   gather(...)    returns the results in argument order; the first child
//                  exception (in completion order) propagates at once, the
//                  other children keep running;
//   wait(fs, ...)  returns done and pending futures; never cancels them;
//   wait_for(aw, timeout)  the result of `aw`, or TimeoutError after
//                  cancelling it and waiting for it to end.
// All accept Task<T> (scheduled on the running loop) and Future<T>
// arguments. Cancelling a gather or wait_all cancels its children and ends
// once they have all ended. All of them must run on a loop: as a task, or
// awaited by one.
#pragma once

#include <array>
#include <chrono>
#include <coroutine>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "core/future/suspended_task.h"
#include "core/future/task_root.h"
#include "core/future/future.h"
#include "core/task/task.h"

namespace polyloop {

enum class return_when { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };
inline constexpr return_when FIRST_COMPLETED = return_when::FIRST_COMPLETED;
inline constexpr return_when FIRST_EXCEPTION = return_when::FIRST_EXCEPTION;
inline constexpr return_when ALL_COMPLETED = return_when::ALL_COMPLETED;

template <class T>
struct WaitResult {
  std::vector<Future<T>> done;     // in the order given
  std::vector<Future<T>> pending;  // in the order given
};

namespace detail {

// The children a multi_waiter watches, by index: a span of states, or a
// list the caller keeps in another form (gather over Tasks reads each state
// through its Task, so that it keeps no second list).
struct child_list {
  const void* data = nullptr;
  std::size_t size = 0;
  future_state_base* (*at)(const void* data, std::size_t i) noexcept = nullptr;

  child_list() = default;
  child_list(std::span<future_state_base* const> states) noexcept
      : data(states.data()), size(states.size()), at(&span_at) {}
  template <std::size_t N>
  child_list(const std::array<future_state_base*, N>& states) noexcept
      : child_list(std::span<future_state_base* const>(states)) {}
  child_list(const std::vector<future_state_base*>& states) noexcept
      : child_list(std::span<future_state_base* const>(states)) {}
  child_list(const void* d, std::size_t n,
             future_state_base* (*a)(const void*, std::size_t) noexcept) noexcept
      : data(d), size(n), at(a) {}
  future_state_base* operator[](std::size_t i) const noexcept { return at(data, i); }

 private:
  static future_state_base* span_at(const void* d, std::size_t i) noexcept {
    return static_cast<future_state_base* const*>(d)[i];
  }
};

// Suspends a task until a set of futures meets a condition, a timeout
// passes, or the task is cancelled. The futures' states must stay alive
// while it waits (the caller holds their Futures).
class multi_waiter : public ready_node {
 public:
  struct options {
    return_when when = return_when::ALL_COMPLETED;
    std::optional<Clock::duration> timeout;
    // On cancel: cancel the children and end when they have all ended
    // (gather), rather than end at once (wait).
    bool cancel_children = false;
    // Ignore cancels of the awaiting task (wait_for's wait for the
    // cancelled inner work to end).
    bool shielded = false;
    // A cancelled child counts as a failure (gather); for wait(), as in
    // asyncio, FIRST_EXCEPTION means an exception, not a cancellation.
    bool cancelled_is_failure = true;
    // The children are tasks made for this wait, which nothing else can
    // see yet: their done lists hold nothing but this waiter's link, so one
    // link serves them all (instead of one per child).
    bool exclusive_tasks = false;

    static options children(return_when w) {  // gather, wait_all
      options o;
      o.when = w;
      o.cancel_children = true;
      return o;
    }
    static options own_tasks(return_when w) {  // gather, wait_all over Tasks
      options o = children(w);
      o.exclusive_tasks = true;
      return o;
    }
    static options waiting(return_when w, std::optional<Clock::duration> t) {  // wait
      options o;
      o.when = w;
      o.timeout = t;
      o.cancelled_is_failure = false;
      return o;
    }
  };

  multi_waiter(child_list children, options opts);
  multi_waiter(const multi_waiter&) = delete;
  multi_waiter& operator=(const multi_waiter&) = delete;
  ~multi_waiter();

  bool await_ready() const noexcept { return satisfied(); }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    task.bind(h);
    if (opts_.shielded) task.root = nullptr;  // a cancel of the task does not end this wait
    begin();
  }
  void await_resume() const {
    task.resume_point();
  }

  // After the wait: whether the timeout ended it.
  bool timed_out() const noexcept { return timed_out_; }
  // The first child to end with an exception or cancelled, or nullptr.
  future_state_base* first_failure() const noexcept { return first_failure_; }

 private:
  struct link : done_link {
    multi_waiter* owner = nullptr;
    bool linked = false;
  };
  bool is_failure(const future_state_base& child) const noexcept {
    return child.failed() || (opts_.cancelled_is_failure && child.cancelled());
  }
  // Whether child i's done list (still) holds this waiter's link.
  bool is_linked(std::size_t i) const noexcept {
    if (!begun_) return false;  // never suspended: await_ready() said the wait was over
    if (!opts_.exclusive_tasks) return links_[i].linked;
    // Linked at begin() if pending then; finish() unlinks a child as it
    // completes, end_wait() all the others.
    return !ended_ && !children_[i]->done();
  }
  link& link_of(std::size_t i) noexcept { return opts_.exclusive_tasks ? shared_ : links_[i]; }
  void unlink(std::size_t i) noexcept;
  void init_link(link& l) noexcept;

  void begin();
  bool satisfied() const noexcept;
  void on_child_done(future_state_base& child) noexcept;
  void end_wait() noexcept;
  static bool on_cancel(void* self);

  child_list children_;
  options opts_;
  std::vector<link> links_;  // one per child, unless the children are exclusive_tasks
  link shared_;              // the one link of exclusive_tasks children
  std::size_t remaining_ = 0;
  future_state_base* first_failure_ = nullptr;
  bool any_done_ = false;
  bool timed_out_ = false;
  bool cancelling_ = false;
  bool begun_ = false;
  bool ended_ = false;
  bool loop_closed_ = false;
  TimerHandle timer_;

 public:
  suspended_task task;
};

template <class A>
struct awaitable_traits;
template <class T>
struct awaitable_traits<Task<T>> {
  using value_type = T;
  static constexpr bool owned = true;  // the future is made here; results can move out
};
template <class T>
struct awaitable_traits<Future<T>> {
  using value_type = T;
  static constexpr bool owned = false;
};
// Any other awaitable (sleep(d), ...) runs as a task made here.
template <class A>
  requires requires(A& a) { a.await_resume(); }
struct awaitable_traits<A> {
  using value_type = await_result_t<A>;
  static constexpr bool owned = true;
};
template <class A>
using awaitable_value_t = typename awaitable_traits<std::decay_t<A>>::value_type;

template <class T>
Future<T> to_future(EventLoop& loop, Task<T>&& task) {
  return loop.create_task(std::move(task));
}
template <class T>
Future<T> to_future(EventLoop& loop, Future<T>&& future) {
  return loop.ensure_future(std::move(future));
}
template <class A>
  requires requires(A& a) { a.await_resume(); }
auto to_future(EventLoop& loop, A&& awaitable) {
  return loop.ensure_future(std::move(awaitable));
}

// void results stand as std::monostate in a tuple.
template <class T>
using slot_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <bool Owned, class T>
slot_t<T> take_result(Future<T>& f) {
  if constexpr (std::is_void_v<T>) {
    f.result();
    return {};
  } else if constexpr (Owned) {
    return std::move(f.result());
  } else {
    return f.result();
  }
}

// The Tasks of a gather, scheduled in place: each Task keeps its handle,
// and the reference create_task() would have handed to a Future is held
// here instead, so a gather of N tasks keeps no list beside the caller's.
// The destructor releases those references and empties the Tasks, whose own
// destructor would otherwise destroy the frames of tasks still running (a
// gather that failed leaves its other children running, as in asyncio).
template <class T>
class scheduled_tasks {
 public:
  scheduled_tasks(EventLoop& loop, std::vector<Task<T>>& tasks) : tasks_(tasks) {
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
  scheduled_tasks(const scheduled_tasks&) = delete;
  scheduled_tasks& operator=(const scheduled_tasks&) = delete;
  ~scheduled_tasks() {
    for (std::size_t i = 0; i < scheduled_; ++i) {
      std::exchange(tasks_[i].h_, nullptr).promise().release();
    }
  }

  std::size_t size() const noexcept { return scheduled_; }
  future_state<T>& operator[](std::size_t i) const noexcept { return tasks_[i].h_.promise(); }
  child_list list() const noexcept { return {tasks_.data(), scheduled_, &state_at}; }

 private:
  static future_state_base* state_at(const void* data, std::size_t i) noexcept {
    return &static_cast<const Task<T>*>(data)[i].h_.promise();
  }

  std::vector<Task<T>>& tasks_;
  std::size_t scheduled_ = 0;
};

[[noreturn]] void rethrow_failure(future_state_base& failed);
std::string timeout_message(Clock::duration timeout);

}  // namespace detail

// The settled futures of every child, in argument order; throws only if the
// wait itself is cancelled.
template <class... A>
Task<std::tuple<Future<detail::awaitable_value_t<A>>...>> wait_all(A... children) {
  EventLoop& loop = get_running_loop();
  std::tuple<Future<detail::awaitable_value_t<A>>...> fs{
      detail::to_future(loop, std::move(children))...};
  std::array<detail::future_state_base*, sizeof...(A)> states = std::apply(
      [](auto&... f) { return std::array<detail::future_state_base*, sizeof...(A)>{detail::future_access::state(f)...}; },
      fs);
  for (auto* s : states) s->mark_retrieved();
  co_await detail::multi_waiter(states, detail::multi_waiter::options::children(ALL_COMPLETED));
  co_return fs;
}

template <class T>
Task<std::vector<Future<T>>> wait_all(std::vector<Future<T>> fs) {
  std::vector<detail::future_state_base*> states;
  states.reserve(fs.size());
  for (auto& f : fs) {
    detail::future_access::state(f)->mark_retrieved();
    states.push_back(detail::future_access::state(f));
  }
  co_await detail::multi_waiter(states, detail::multi_waiter::options::children(ALL_COMPLETED));
  co_return fs;
}

template <class T>
Task<std::vector<Future<T>>> wait_all(std::vector<Task<T>> tasks) {
  EventLoop& loop = get_running_loop();
  std::vector<Future<T>> fs;
  fs.reserve(tasks.size());
  for (auto& t : tasks) fs.push_back(loop.create_task(std::move(t)));
  tasks = std::vector<Task<T>>();  // the Tasks are empty now: free the list
  std::vector<detail::future_state_base*> states;
  states.reserve(fs.size());
  for (auto& f : fs) {
    detail::future_access::state(f)->mark_retrieved();
    states.push_back(detail::future_access::state(f));
  }
  // Nothing else can see these tasks yet: one link serves them all.
  co_await detail::multi_waiter(states, detail::multi_waiter::options::own_tasks(ALL_COMPLETED));
  co_return fs;
}

// The results in argument order: a std::tuple, with std::monostate for a
// void child, or void if every child is void.
template <class... A>
auto gather(A... children)
    -> Task<std::conditional_t<(std::is_void_v<detail::awaitable_value_t<A>> && ...), void,
                               std::tuple<detail::slot_t<detail::awaitable_value_t<A>>...>>> {
  EventLoop& loop = get_running_loop();
  std::tuple<Future<detail::awaitable_value_t<A>>...> fs{
      detail::to_future(loop, std::move(children))...};
  std::array<detail::future_state_base*, sizeof...(A)> states = std::apply(
      [](auto&... f) { return std::array<detail::future_state_base*, sizeof...(A)>{detail::future_access::state(f)...}; },
      fs);
  // Failures after the first are not "never retrieved": gather saw them.
  for (auto* s : states) s->mark_retrieved();
  detail::multi_waiter waiter(states, detail::multi_waiter::options::children(FIRST_EXCEPTION));
  co_await waiter;
  if (waiter.first_failure() != nullptr) detail::rethrow_failure(*waiter.first_failure());
  if constexpr (!(std::is_void_v<detail::awaitable_value_t<A>> && ...)) {
    co_return std::apply(
        [](auto&... f) {
          return std::tuple<detail::slot_t<detail::awaitable_value_t<A>>...>{
              detail::take_result<detail::awaitable_traits<A>::owned>(f)...};
        },
        fs);
  }
}

namespace detail {
template <bool Owned, class T>
Task<std::conditional_t<std::is_void_v<T>, void, std::vector<T>>> gather_vector(
    std::vector<Future<T>> fs) {
  std::vector<future_state_base*> states;
  states.reserve(fs.size());
  for (auto& f : fs) {
    detail::future_access::state(f)->mark_retrieved();
    states.push_back(detail::future_access::state(f));
  }
  multi_waiter waiter(states, multi_waiter::options::children(FIRST_EXCEPTION));
  co_await waiter;
  if (waiter.first_failure() != nullptr) rethrow_failure(*waiter.first_failure());
  if constexpr (!std::is_void_v<T>) {
    std::vector<T> results;
    results.reserve(fs.size());
    for (auto& f : fs) results.push_back(take_result<Owned>(f));
    co_return results;
  }
}
}  // namespace detail

// The results of a list of tasks or futures, in list order (void if T is).
template <class T>
auto gather(std::vector<Future<T>> fs) {
  return detail::gather_vector<false>(std::move(fs));
}
template <class T>
Task<std::conditional_t<std::is_void_v<T>, void, std::vector<T>>> gather(
    std::vector<Task<T>> tasks) {
  // The list itself holds the scheduled tasks: no Future, no list of
  // states, and (nothing else can see the tasks) one link for them all.
  detail::scheduled_tasks<T> children(get_running_loop(), tasks);
  detail::multi_waiter waiter(children.list(),
                              detail::multi_waiter::options::own_tasks(FIRST_EXCEPTION));
  co_await waiter;
  if (waiter.first_failure() != nullptr) detail::rethrow_failure(*waiter.first_failure());
  if constexpr (!std::is_void_v<T>) {
    std::vector<T> results;
    results.reserve(children.size());
    // Nobody else can see these tasks: their results move out.
    for (std::size_t i = 0; i < children.size(); ++i) results.push_back(std::move(children[i].value()));
    co_return results;
  }
}

// asyncio.wait: splits `fs` into done and pending once `when` holds, or the
// timeout passes (no exception then). Throws std::invalid_argument for an
// empty list.
template <class T>
Task<WaitResult<T>> wait(std::vector<Future<T>> fs, return_when when = ALL_COMPLETED,
                         std::optional<Clock::duration> timeout = std::nullopt) {
  if (fs.empty()) throw std::invalid_argument("wait: the list of futures is empty");
  std::vector<detail::future_state_base*> states;
  states.reserve(fs.size());
  for (auto& f : fs) states.push_back(detail::future_access::state(f));
  co_await detail::multi_waiter(states, detail::multi_waiter::options::waiting(when, timeout));
  WaitResult<T> out;
  for (auto& f : fs) (f.done() ? out.done : out.pending).push_back(std::move(f));
  co_return out;
}
template <class T, class Rep, class Period>
Task<WaitResult<T>> wait(std::vector<Future<T>> fs, std::chrono::duration<Rep, Period> timeout,
                         return_when when = ALL_COMPLETED) {
  return wait(std::move(fs), when, std::chrono::ceil<Clock::duration>(timeout));
}

// The result of `aw` (a Task or Future) if it ends within `timeout`. Else
// cancels it, waits for it to end, and throws TimeoutError. Cancelling the
// wait_for cancels `aw` as well.
template <class A, class Rep, class Period>
Task<detail::awaitable_value_t<A>> wait_for(A aw, std::chrono::duration<Rep, Period> timeout) {
  EventLoop& loop = get_running_loop();
  auto f = detail::to_future(loop, std::move(aw));
  std::array<detail::future_state_base*, 1> states{detail::future_access::state(f)};
  detail::multi_waiter::options until_ended;
  until_ended.shielded = true;
  auto first = detail::multi_waiter::options::children(FIRST_COMPLETED);
  first.timeout = std::chrono::ceil<Clock::duration>(timeout);
  bool cancelled = false;
  try {
    co_await detail::multi_waiter(states, first);
  } catch (const CancelledError&) {
    cancelled = true;  // usually `aw` was cancelled with us; not if the timeout won the race
  }
  bool timed_out = false;
  if (!f.done()) {
    timed_out = !cancelled;
    f.cancel();
    co_await detail::multi_waiter(states, until_ended);
  }
  if (cancelled) throw CancelledError();
  // Only the cancellation the timeout caused becomes TimeoutError; whatever
  // else `aw` ended with (a result, its own exception) is what wait_for gives.
  if (timed_out && f.cancelled()) {
    throw TimeoutError(detail::timeout_message(std::chrono::ceil<Clock::duration>(timeout)));
  }
  if constexpr (std::is_void_v<detail::awaitable_value_t<A>>) {
    f.result();
  } else {
    co_return detail::take_result<detail::awaitable_traits<A>::owned>(f);
  }
}

}  // namespace polyloop
