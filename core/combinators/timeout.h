// Deadlines over a block of code: timeout(delay, body), timeout_at(when,
// body) (asyncio.timeout / asyncio.timeout_at), and wait_for built on them.
//
//   int n = co_await pl::timeout(2s, [&](pl::Timeout cm) -> pl::Task<int> {
//     co_await pl::sleep(1s);
//     cm.reschedule(cm.when().value() + 1s);  // move the deadline
//     co_return 42;
//   });
//
// The block (`body`) runs inline, as part of the awaiting task. When the
// deadline passes, the task is cancelled (Task.cancel()); the CancelledError
// that ends the block leaves the scope as TimeoutError (with the
// CancelledError nested: std::rethrow_if_nested). A cancel that came from
// elsewhere stays a CancelledError, even when the deadline passed too: the
// scope tells the two apart with the task's cancelling()/uncancel()
// counters, so an inner timeout never swallows an outer one or a cancel of
// the task.
//
// Why a block and not an object: C++ has no async `with`, and a guard
// object's destructor cannot wait or throw TimeoutError. The scope is a
// coroutine that owns the deadline from entry to exit, so a timeout cannot
// be entered twice, left armed, or outlive its block. The Timeout handle the
// body may take is a counted reference: kept after the block, it still says
// when() and expired(), and reschedule() then throws InvalidStateError.
// Entry is when the returned Task is first awaited (it is lazy): the
// deadline of timeout(delay, ...) is loop.time() + delay at that point.
#pragma once

#include <chrono>
#include <concepts>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "core/combinators/when_ready.h"
#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/task/introspection.h"
#include "core/task/task.h"

namespace polyloop {

class Timeout;

namespace detail {

// The scope's state (asyncio's Timeout), shared with Timeout handles.
class timeout_state {
 public:
  enum class phase : std::uint8_t { entered, expiring, expired, exited };

  timeout_state(TaskRef task, std::optional<Clock::time_point> when);
  timeout_state(const timeout_state&) = delete;
  timeout_state& operator=(const timeout_state&) = delete;

  std::optional<Clock::time_point> when() const noexcept { return when_; }
  bool expired() const noexcept { return phase_ == phase::expiring || phase_ == phase::expired; }
  void reschedule(std::optional<Clock::time_point> when);
  // Leaving the block: true if the CancelledError it ended with (if any)
  // is this timeout's own and must become TimeoutError.
  bool exit(bool cancelled);
  // The block's frame was destroyed without leaving it (the loop closed,
  // and dropped the timer with everything else): never touch it again.
  void abandon() noexcept;

 private:
  void arm();
  void on_timeout();

  TaskRef task_;
  std::optional<Clock::time_point> when_;
  Handle timer_;  // call_at, or call_soon for a deadline already past
  std::uint32_t cancelling_at_entry_;
  phase phase_ = phase::entered;
};

// Where the deadline comes from: a time, or a delay from entry.
struct deadline {
  std::optional<Clock::time_point> at;
  std::optional<Clock::duration> in;
  std::optional<Clock::duration> wait_for_limit;  // set by wait_for: its message
};

struct timeout_scope;

}  // namespace detail

// What the body of a timeout sees (asyncio's Timeout context manager).
class Timeout {
 public:
  // The deadline on the loop's clock; nullopt for none.
  std::optional<Clock::time_point> when() const noexcept { return state_->when(); }
  // Moves the deadline (nullopt: none). A deadline already past expires
  // the timeout in the next iteration. Throws InvalidStateError once the
  // block has ended.
  void reschedule(std::optional<Clock::time_point> when) { state_->reschedule(when); }
  // Whether the deadline passed (and the task was cancelled for it).
  bool expired() const noexcept { return state_->expired(); }

 private:
  friend struct detail::timeout_scope;
  explicit Timeout(std::shared_ptr<detail::timeout_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::timeout_state> state_;
};

namespace detail {

// A body is a Task or other awaitable, awaited inline, or a callable that
// makes one, given the Timeout or nothing.
template <class B>
decltype(auto) start_body(B& body, const Timeout& cm) {
  if constexpr (std::is_invocable_v<B&, Timeout>) {
    return body(cm);
  } else if constexpr (std::is_invocable_v<B&>) {
    return body();
  } else {
    return std::move(body);
  }
}
template <class A>
decltype(auto) awaited(A&& a) {
  if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
    return std::forward<A>(a).operator co_await();
  } else {
    return std::forward<A>(a);
  }
}
template <class B>
using body_result_t = std::decay_t<decltype(awaited(
    std::declval<decltype(start_body(std::declval<B&>(), std::declval<const Timeout&>()))>())
                                                .await_resume())>;

// "timeout: the deadline passed; ..." or wait_for's message.
std::string deadline_message(const deadline& d);

struct timeout_scope {
  // Cancels nothing on the way out; only forgets the timer when the frame
  // goes without leaving the block (see timeout_state::abandon).
  struct frame_guard {
    timeout_state* state;
    ~frame_guard() { state->abandon(); }
  };

  template <class B, class R = body_result_t<B>>
  static Task<R> run(deadline d, B body) {
    TaskRef task = co_await current_task();
    if (!task.valid()) {
      throw EventLoopError(
          "timeout: must be awaited by a task (create_task or run_until_complete), so that it "
          "has a task to cancel");
    }
    if (d.in) d.at = task.get_loop().time() + *d.in;
    Timeout cm(std::make_shared<timeout_state>(std::move(task), d.at));
    frame_guard guard{cm.state_.get()};
    try {
      if constexpr (std::is_void_v<R>) {
        co_await start_body(body, cm);
        cm.state_->exit(false);
      } else {
        R result = co_await start_body(body, cm);
        cm.state_->exit(false);
        co_return result;
      }
    } catch (const CancelledError&) {
      if (cm.state_->exit(true)) std::throw_with_nested(TimeoutError(deadline_message(d)));
      throw;
    } catch (...) {
      cm.state_->exit(false);
      throw;
    }
  }
};

}  // namespace detail

// Runs `body` with a deadline of `when` (nullopt: none) on the loop's clock
// and returns what it returns. Throws TimeoutError if the deadline ended
// it; whatever else it threw, otherwise. Must be awaited by a task.
template <class B>
auto timeout_at(std::optional<Clock::time_point> when, B body) {
  return detail::timeout_scope::run(detail::deadline{when, std::nullopt, std::nullopt},
                                    std::move(body));
}

// The same with a deadline `delay` after entry (nullopt: none; <= 0: the
// next iteration).
template <class B>
auto timeout(std::optional<Clock::duration> delay, B body) {
  return detail::timeout_scope::run(detail::deadline{std::nullopt, delay, std::nullopt},
                                    std::move(body));
}
template <class Rep, class Period, class B>
auto timeout(std::chrono::duration<Rep, Period> delay, B body) {
  return timeout(std::optional<Clock::duration>(std::chrono::ceil<Clock::duration>(delay)),
                 std::move(body));
}

namespace detail {
template <class A, class R = body_result_t<A>>
Task<R> wait_for_impl(A aw, Clock::duration limit) {
  if (limit <= Clock::duration::zero()) {
    // asyncio: a timeout <= 0 times out unless `aw` is already done; a
    // Task or an operation is then never started.
    if constexpr (requires { aw.done(); aw.cancel(); }) {
      if (!aw.done()) {
        aw.cancel();
        try {
          co_await aw;
        } catch (const CancelledError&) {
          std::throw_with_nested(TimeoutError(timeout_message(limit)));
        }
      }
      co_return co_await aw;
    } else {
      throw TimeoutError(timeout_message(limit));
    }
  }
  co_return co_await timeout_scope::run(deadline{std::nullopt, limit, limit}, std::move(aw));
}
}  // namespace detail

// The result of `aw` (a Task, run inline; a Future; or any other
// awaitable: sleep(), async_read(), ...) if it ends within `timeout`.
// Else `aw` is cancelled, waited for, and TimeoutError thrown (asyncio
// 3.12's wait_for: a timeout() around `await aw`). If `aw` ends with its
// own result or exception while being cancelled, that is what wait_for
// gives. Cancelling the awaiting task cancels `aw`.
template <class A, class Rep, class Period>
auto wait_for(A aw, std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_for_impl(std::move(aw), std::chrono::ceil<Clock::duration>(timeout));
}

}  // namespace polyloop
