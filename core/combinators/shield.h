// shield(aw) and as_completed(aws, timeout) (asyncio.shield,
// asyncio.as_completed).
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "core/combinators/gather.h"
#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/task/task.h"

namespace polyloop {

// A Future with the outcome of `aw` (a Task, scheduled here; a Future; or
// another awaitable) that a cancel does not pass through: cancelling the
// task that awaits it (or the returned Future) cancels only the returned
// Future, and `aw` runs on. Its exception is then marked retrieved (nobody
// is left to see it). If `aw` is cancelled itself, so is the result.
template <class A>
Future<detail::awaitable_value_t<A>> shield(A aw) {
  using T = detail::awaitable_value_t<A>;
  EventLoop& loop = get_running_loop();
  Future<T> inner = detail::to_future(loop, std::move(aw));
  if (inner.done()) return inner;
  Future<T> outer = loop.create_future<T>();
  inner.add_done_callback([outer](Future<T>& in) mutable {
    if (outer.done()) {  // the outer one was cancelled
      if (!in.cancelled()) (void)in.exception();
      return;
    }
    if (in.cancelled()) {
      outer.cancel();
    } else if (std::exception_ptr e = in.exception()) {
      outer.set_exception(e);
    } else if constexpr (std::is_void_v<T>) {
      outer.set_result();
    } else if constexpr (detail::awaitable_traits<A>::owned) {
      outer.set_result(std::move(in.result()));  // nobody else sees the inner one
    } else {
      outer.set_result(in.result());
    }
  });
  return outer;
}

namespace detail {
template <class T>
struct as_completed_state {
  EventLoop* loop = nullptr;
  std::deque<Future<T>> done;  // completed, not yet taken, in completion order
  std::size_t left = 0;        // results not yet taken
  Future<> wakeup;             // while next() waits
  Handle timer;
  bool timed_out = false;
  void wake() {
    if (wakeup.valid() && !wakeup.done()) wakeup.set_result();
  }
};
}  // namespace detail

// The results of a set of awaitables in the order they complete
// (asyncio.as_completed): each next() gives the next one, O(1) each, one
// done callback per child in all.
template <class T>
class AsCompleted {
 public:
  AsCompleted(AsCompleted&&) noexcept = default;
  AsCompleted& operator=(AsCompleted&&) noexcept = default;
  ~AsCompleted() {
    if (state_) state_->timer.cancel();
  }

  // How many results are left to take.
  std::size_t size() const noexcept { return state_->left; }
  // The next result to complete: its value, or its exception rethrown
  // (CancelledError for a cancelled one). Once the timeout has passed, the
  // results that completed before it, then TimeoutError for each of the
  // rest. Cancelling the task that awaits next() leaves the children
  // running. Throws InvalidStateError when none is left.
  Task<T> next() {
    auto st = state_;
    if (st->left == 0) {
      throw InvalidStateError("as_completed: every result has been taken (check size())");
    }
    while (st->done.empty()) {
      if (st->timed_out) {
        --st->left;
        throw TimeoutError("as_completed: the timeout passed before this result was ready");
      }
      st->wakeup = st->loop->template create_future<>();
      co_await st->wakeup;
    }
    Future<T> f = std::move(st->done.front());
    st->done.pop_front();
    --st->left;
    co_return co_await f;
  }

  // Made by as_completed().
  explicit AsCompleted(std::shared_ptr<detail::as_completed_state<T>> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<detail::as_completed_state<T>> state_;
};

// Starts watching `aws` (Tasks are scheduled here, Futures used as they
// are); see AsCompleted. With a timeout, results not ready by then become
// TimeoutError (the children are not cancelled, as in asyncio).
template <class C>
AsCompleted<detail::awaitable_value_t<C>> as_completed(
    std::vector<C> aws, std::optional<Clock::duration> timeout = std::nullopt) {
  using T = detail::awaitable_value_t<C>;
  EventLoop& loop = get_running_loop();
  auto st = std::make_shared<detail::as_completed_state<T>>();
  st->loop = &loop;
  st->left = aws.size();
  for (Future<T>& f : detail::to_futures(loop, std::move(aws))) {
    f.add_done_callback([st](Future<T>& done) {
      if (st->timed_out) return;
      st->done.push_back(done);
      st->wake();
    });
  }
  if (timeout) {
    st->timer = loop.call_later(*timeout, [raw = st.get()] {
      raw->timed_out = true;
      raw->wake();
    });
  }
  return AsCompleted<T>(std::move(st));
}

}  // namespace polyloop
