// Interop with Boost.Asio (1.74), for loops on the "asio" backend.
//
// The loop runs an io_context; Asio objects made on it run on the loop's
// thread while the loop runs, in both directions:
//   - Asio handlers may call loop.call_soon(), create_task(), set futures;
//   - polyloop tasks may start Asio operations, with a handler, or awaited
//     through the completion token polyloop::use_task:
//
//       boost::asio::steady_timer timer(polyloop::asio_context(*loop), 50ms);
//       co_await timer.async_wait(polyloop::use_task);
//       std::size_t n = co_await socket.async_read_some(buffer, polyloop::use_task);
//
// An error code becomes a boost::system::system_error. Cancelling the task
// with use_task ends the co_await at once with CancelledError and drops the
// operation's late completion (Asio 1.74 has no per-operation cancellation);
// with use_task_cancelling(io_object) it also calls io_object.cancel(), so
// the operation itself ends. Use from the loop's thread.
#pragma once

#include "third_party/asio/asio.h"  // first: Boost 1.74 needs <utility> before Asio

#include <coroutine>
#include <memory>
#include <optional>
#include <ostream>
#include <tuple>
#include <type_traits>
#include <utility>

#include "core/loop/loop_access.h"
#include "polyloop/polyloop.h"

namespace polyloop {

// The io_context behind a loop on the asio backend. Throws BackendError for
// a loop on another backend.
boost::asio::io_context& asio_context(EventLoop& loop);

struct use_task_t {};
inline constexpr use_task_t use_task{};

template <class IoObject>
struct use_task_cancelling_t {
  IoObject* object;
};
// use_task, and on a cancel of the task, io_object.cancel().
template <class IoObject>
use_task_cancelling_t<IoObject> use_task_cancelling(IoObject& io_object) {
  return {&io_object};
}

namespace detail {

// Shared by the awaiter and the handler: the handler may outlive the
// awaiting frame when the task was cancelled without cancelling the operation.
template <class... Args>
struct asio_result : ready_node {
  boost::system::error_code ec;
  std::optional<std::tuple<Args...>> values;
  suspended_task task;
  bool completed = false;  // the handler ran
  bool resumed = false;    // resume scheduled (by the handler or a cancel)

  asio_result() { fn = &resume_awaiter<asio_result>; }
  void schedule_resume() {
    if (resumed) return;
    resumed = true;
    detail::loop_access::schedule(*task.loop, this);
  }
};

template <class... Args>
struct asio_handler {
  std::shared_ptr<asio_result<Args...>> result;
  void operator()(boost::system::error_code ec, Args... args) {
    result->ec = ec;
    result->values.emplace(std::move(args)...);
    result->completed = true;
    if (!result->task.loop->is_closed()) result->schedule_resume();
  }
};

template <class Canceller, class Initiation, class InitArgs, class... Args>
class asio_awaiter {
 public:
  asio_awaiter(Canceller canceller, Initiation init, InitArgs args)
      : canceller_(canceller), init_(std::move(init)), args_(std::move(args)) {}

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    result_ = std::make_shared<asio_result<Args...>>();
    result_->task.bind(h);
    std::apply(
        [this](auto&&... a) {
          std::move(init_)(asio_handler<Args...>{result_}, std::forward<decltype(a)>(a)...);
        },
        std::move(args_));
    result_->task.cancellable_by({&waits_on, this});
  }
  auto await_resume() {
    result_->task.resume_point();
    if (result_->ec) throw boost::system::system_error(result_->ec);
    if constexpr (sizeof...(Args) == 1) {
      return std::move(std::get<0>(*result_->values));
    } else if constexpr (sizeof...(Args) > 1) {
      return std::move(*result_->values);
    }
  }

 private:
  static bool on_cancel(void* self) {
    auto* me = static_cast<asio_awaiter*>(self);
    if (me->result_->completed) return false;  // already resuming: delivered there
    if constexpr (!std::is_same_v<Canceller, std::nullptr_t>) {
      me->canceller_->cancel();  // the operation ends with operation_aborted
    } else {
      me->result_->schedule_resume();  // resume now; a late completion is dropped
    }
    return false;
  }
  static void describe(const void*, std::ostream& out) { out << "an Asio operation"; }
  static constexpr wait_kind waits_on{&on_cancel, &describe};

  Canceller canceller_;
  Initiation init_;
  InitArgs args_;
  std::shared_ptr<asio_result<Args...>> result_;
};

template <class Canceller, class... Args>
struct use_task_result {
  template <class Initiation, class... InitArgs>
  static auto make(Canceller canceller, Initiation&& init, InitArgs&&... args) {
    using args_tuple = std::tuple<std::decay_t<InitArgs>...>;
    return asio_awaiter<Canceller, std::decay_t<Initiation>, args_tuple, Args...>(
        canceller, std::forward<Initiation>(init), args_tuple(std::forward<InitArgs>(args)...));
  }
};

}  // namespace detail
}  // namespace polyloop

namespace boost::asio {

template <class... Args>
class async_result<polyloop::use_task_t, void(boost::system::error_code, Args...)> {
 public:
  template <class Initiation, class... InitArgs>
  static auto initiate(Initiation&& init, polyloop::use_task_t, InitArgs&&... args) {
    return polyloop::detail::use_task_result<std::nullptr_t, std::decay_t<Args>...>::make(
        nullptr, std::forward<Initiation>(init), std::forward<InitArgs>(args)...);
  }
};

template <class IoObject, class... Args>
class async_result<polyloop::use_task_cancelling_t<IoObject>,
                   void(boost::system::error_code, Args...)> {
 public:
  template <class Initiation, class... InitArgs>
  static auto initiate(Initiation&& init, polyloop::use_task_cancelling_t<IoObject> token,
                       InitArgs&&... args) {
    return polyloop::detail::use_task_result<IoObject*, std::decay_t<Args>...>::make(
        token.object, std::forward<Initiation>(init), std::forward<InitArgs>(args)...);
  }
};

}  // namespace boost::asio
