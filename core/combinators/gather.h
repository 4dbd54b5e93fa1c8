// Waiting for several things at once: gather, wait_all, wait.
//
// Named by what they do with errors (as cppcoro and asyncio do):
//   wait_all(...)  never throws for a child: returns the settled futures
//                  (asyncio's gather(..., return_exceptions=True));
//   gather(...)    returns the results in argument order; the first child
//                  exception (in completion order) propagates at once, the
//                  other children keep running;
//   wait(fs, ...)  returns done and pending futures; never cancels them.
// (wait_for is in core/combinators/timeout.h, built on timeout().)
// All accept Task<T> (scheduled on the running loop) and Future<T>
// arguments. Cancelling a gather or wait_all cancels its children (with the cancel's
// message, as asyncio does) and ends
// once they have all ended. All of them must run on a loop: as a task, or
// awaited by one.
//
// All three are views of one primitive, detail::when_ready (core/combinators/
// when_ready.h): suspend until a condition over the children holds; gather
// adds the unwrapping of results.
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "core/combinators/when_ready.h"
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

// Each child as a Future on `loop`: a Task or other awaitable is scheduled.
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
// By value: the list, its Tasks emptied, is freed once the futures exist.
template <class C>
auto to_futures(EventLoop& loop, std::vector<C> children) {
  std::vector<Future<awaitable_value_t<C>>> fs;
  fs.reserve(children.size());
  for (C& c : children) fs.push_back(to_future(loop, std::move(c)));
  return fs;
}

// The states a when_ready watches. gather and wait_all see every child's
// outcome, so none of them is reported as "never retrieved".
enum class retrieval : bool { leave, mark };
template <class... T>
std::array<future_state_base*, sizeof...(T)> states_of(const std::tuple<Future<T>...>& fs,
                                                       retrieval r) {
  auto states = std::apply(
      [](const auto&... f) {
        return std::array<future_state_base*, sizeof...(T)>{future_access::state(f)...};
      },
      fs);
  if (r == retrieval::mark) {
    for (future_state_base* s : states) s->mark_retrieved();
  }
  return states;
}
template <class T>
std::vector<future_state_base*> states_of(const std::vector<Future<T>>& fs, retrieval r) {
  std::vector<future_state_base*> states;
  states.reserve(fs.size());
  for (const Future<T>& f : fs) {
    future_state_base* s = future_access::state(f);
    if (r == retrieval::mark) s->mark_retrieved();
    states.push_back(s);
  }
  return states;
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

// asyncio.wait's return_when as a when_ready condition: FIRST_EXCEPTION
// means an exception, not a cancellation.
constexpr until until_of(return_when when) noexcept {
  switch (when) {
    case return_when::FIRST_COMPLETED:
      return until::first_done;
    case return_when::FIRST_EXCEPTION:
      return until::first_exception;
    case return_when::ALL_COMPLETED:
      break;
  }
  return until::all_done;
}

template <class T>
using gather_list_result_t = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;

template <bool Owned, class T>
Task<gather_list_result_t<T>> gather_futures(std::vector<Future<T>> fs) {
  auto states = states_of(fs, retrieval::mark);  // outlives the wait
  when_ready w(states, until::first_failure, on_cancel::cancel_children);
  co_await w;
  w.rethrow_first_failure();
  if constexpr (!std::is_void_v<T>) {
    std::vector<T> results;
    results.reserve(fs.size());
    for (auto& f : fs) results.push_back(take_result<Owned>(f));
    co_return results;
  }
}

template <class T>
concept task_or_future = requires { typename awaitable_traits<T>::value_type; } &&
                         (std::is_same_v<T, Task<awaitable_value_t<T>>> ||
                          std::is_same_v<T, Future<awaitable_value_t<T>>>);

}  // namespace detail

// The settled futures of every child, in argument order; throws only if the
// wait itself is cancelled.
template <class... A>
Task<std::tuple<Future<detail::awaitable_value_t<A>>...>> wait_all(A... children) {
  EventLoop& loop = get_running_loop();
  std::tuple<Future<detail::awaitable_value_t<A>>...> fs{
      detail::to_future(loop, std::move(children))...};
  co_await detail::when_ready(detail::states_of(fs, detail::retrieval::mark),
                              detail::until::all_done, detail::on_cancel::cancel_children);
  co_return fs;
}

// The same over a list of Tasks or Futures, in list order.
template <detail::task_or_future C>
Task<std::vector<Future<detail::awaitable_value_t<C>>>> wait_all(std::vector<C> children) {
  auto fs = detail::to_futures(get_running_loop(), std::move(children));
  co_await detail::when_ready(detail::states_of(fs, detail::retrieval::mark),
                              detail::until::all_done, detail::on_cancel::cancel_children);
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
  auto states = detail::states_of(fs, detail::retrieval::mark);  // outlives the wait
  detail::when_ready w(states, detail::until::first_failure, detail::on_cancel::cancel_children);
  co_await w;
  w.rethrow_first_failure();
  if constexpr (!(std::is_void_v<detail::awaitable_value_t<A>> && ...)) {
    co_return std::apply(
        [](auto&... f) {
          return std::tuple<detail::slot_t<detail::awaitable_value_t<A>>...>{
              detail::take_result<detail::awaitable_traits<A>::owned>(f)...};
        },
        fs);
  }
}

// The results of a list of futures, in list order (void if T is).
template <class T>
auto gather(std::vector<Future<T>> fs) {
  return detail::gather_futures<false>(std::move(fs));
}

// The results of a list of tasks, in list order (void if T is). The one fast
// path of the combinators: the tasks run in the caller's list, with no
// Future per child and one done link for all (detail::own_tasks).
template <class T>
Task<detail::gather_list_result_t<T>> gather(std::vector<Task<T>> tasks) {
  detail::own_tasks<T> children(get_running_loop(), tasks);
  detail::when_ready w(children.list(), detail::until::first_failure,
                       detail::on_cancel::cancel_children);
  co_await w;
  w.rethrow_first_failure();
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
  co_await detail::when_ready(detail::states_of(fs, detail::retrieval::leave),
                              detail::until_of(when), detail::on_cancel::end_wait, timeout);
  WaitResult<T> out;
  for (auto& f : fs) (f.done() ? out.done : out.pending).push_back(std::move(f));
  co_return out;
}
template <class T, class Rep, class Period>
Task<WaitResult<T>> wait(std::vector<Future<T>> fs, std::chrono::duration<Rep, Period> timeout,
                         return_when when = ALL_COMPLETED) {
  return wait(std::move(fs), when, std::chrono::ceil<Clock::duration>(timeout));
}

}  // namespace polyloop
