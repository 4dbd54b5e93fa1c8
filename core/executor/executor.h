// Blocking calls off the loop's thread: asyncio's run_in_executor and
// to_thread, the loop's default executor, and wrap_future.
//
//   int n = co_await pl::to_thread(count_lines, path);   // on a pool thread
//
// The call runs on a ThreadPoolExecutor's thread; its result or exception
// completes a Future of the loop, on the loop's thread. Cancelling that
// Future (or the task awaiting it) cancels the call if it has not started;
// a call already running runs on and its result is dropped, as in asyncio.
// A function whose first parameter is a std::stop_token is given one, and
// stop is requested when the Future is cancelled or the loop closes (C++20's
// cooperative cancellation, as std::jthread does it).
//
// Memory: a call may write to memory its task owns (a buffer in the frame).
// So closing the loop cancels the calls of its futures that have not
// started and waits for those that are running before any frame is
// destroyed: close() can block until they return. (core/file's operations
// own their memory instead: close() does not wait for them.)
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "core/executor/thread_pool.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"
#include "core/task/task.h"

namespace polyloop {

namespace detail {

// The loop's default executor, made on first use.
ThreadPoolExecutor& default_executor_of(EventLoop& loop);

// What a call's worker and its loop share. The worker never touches the
// Future: its state is counted, not thread-safe, so only the loop's thread
// may hold or release it. `claimed` marks that the loop still expects a
// delivery; the loop clears it when it delivers or closes, and then the
// worker must not touch the loop.
class executor_call_base : public executor_job,
                           public std::enable_shared_from_this<executor_call_base> {
 public:
  enum class phase : std::uint8_t { queued, running, finished, skipped };

  // Loop thread: the future was cancelled; a call not started is skipped
  // (true: skipped now, and the worker will not run it).
  bool cancel_if_queued() noexcept;
  // Loop thread, close(): skip the call if queued, else wait until it has
  // returned; afterwards the worker no longer touches the loop.
  void abandon() noexcept;

 protected:
  explicit executor_call_base(EventLoop& loop) : loop_(&loop) {}
  // Worker (or the pool's shutdown): the call ended (or never ran); tell
  // the loop, unless it has stopped listening.
  void finished(phase how) noexcept;
  // Runs the call unless it was cancelled first; true if it ran.
  bool start() noexcept;
  // Loop thread, from the callback finished() queued: false if close()
  // abandoned the call meanwhile (then the state was already released).
  bool take_delivery() noexcept;
  virtual void deliver() noexcept = 0;

  std::stop_source stop_;
  std::mutex mutex_;
  std::condition_variable ended_;
  EventLoop* loop_;
  phase phase_ = phase::queued;
  bool claimed_ = true;

 private:
  // What finished() queues on the loop (no box: loop_access::post_threadsafe).
  struct delivery_node : ready_node {
    executor_call_base* call;
  };
  static void on_delivery(ready_node* n, ready_node::action what) noexcept;
  delivery_node delivery_{{&on_delivery}, this};
  std::shared_ptr<executor_call_base> queued_self_;  // while delivery_ is on the loop's queue
};

// The state of the Future run_in_executor returns; holds the call alive
// until it is delivered or the loop closes.
template <class T>
class executor_future_state final : public future_state<T> {
 public:
  executor_future_state(EventLoop& loop, std::shared_ptr<executor_call_base> call)
      : future_state<T>(&loop), call_(std::move(call)) {}
  bool cancel_with(std::string message) override {
    bool cancelled = future_state<T>::cancel_with(std::move(message));
    if (cancelled && call_) call_->cancel_if_queued();
    return cancelled;
  }
  void forget_call() noexcept { call_.reset(); }

 private:
  bool on_loop_event(state_link::loop_event e) override {
    if (e == state_link::loop_event::closed && call_) {
      // Before any frame goes: the call may write into one.
      std::shared_ptr<executor_call_base> call = std::move(call_);
      call->abandon();
      this->release();  // the call's reference (for_each_live_state holds one)
    }
    return future_state<T>::on_loop_event(e);
  }
  ~executor_future_state() { this->report_unretrieved(); }
  void destroy_self() noexcept override { delete this; }

  std::shared_ptr<executor_call_base> call_;
};

template <class T, class Fn>
class executor_call final : public executor_call_base {
 public:
  executor_call(EventLoop& loop, Fn fn) : executor_call_base(loop), fn_(std::move(fn)) {}
  void bind(executor_future_state<T>* state) noexcept { state_ = state; }

  void run() noexcept override {
    if (!start()) return finished(phase::skipped);
    try {
      if constexpr (std::is_void_v<T>) {
        fn_(stop_.get_token());
        value_.emplace();
      } else {
        value_.emplace(fn_(stop_.get_token()));
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    finished(phase::finished);
  }
  void drop() noexcept override { finished(phase::skipped); }

 private:
  void deliver() noexcept override {
    if (!take_delivery()) return;
    executor_future_state<T>* s = state_;
    s->forget_call();
    if (!s->done()) {
      if (error_) {
        s->set_exception(std::move(error_));
      } else if (!value_) {
        s->cancel();  // dropped by a shutdown that cancelled pending calls
      } else if constexpr (std::is_void_v<T>) {
        s->set_value();
      } else {
        s->set_value(std::move(*value_));
      }
    }
    s->release();  // the call's reference
  }

  Fn fn_;
  executor_future_state<T>* state_ = nullptr;
  std::optional<std::conditional_t<std::is_void_v<T>, std::monostate, T>> value_;
  std::exception_ptr error_;
};

// Makes the call and its Future, and submits the call.
template <class T, class Fn>
Future<T> submit_call(EventLoop& loop, ThreadPoolExecutor* executor, Fn fn) {
  loop_access::check_open(loop);
  ThreadPoolExecutor& pool = executor != nullptr ? *executor : default_executor_of(loop);
  auto call = std::make_shared<executor_call<T, Fn>>(loop, std::move(fn));
  auto* state = new executor_future_state<T>(loop, call);
  Future<T> future = future_access::adopt<T>(state);
  call->bind(state);
  state->add_ref();  // the call's: released on delivery or when the loop closes
  try {
    pool.submit(call);
  } catch (...) {
    state->forget_call();
    state->release();
    throw;
  }
  ++loop_access::executor_calls_out(loop);  // until on_delivery()
  return future;
}

}  // namespace detail

// Runs fn(args...) on `executor`'s thread (the loop's default executor if
// null) and returns a Future of `loop` for its result. Arguments are
// copied or moved into the call, as std::thread does; pass std::ref to
// share. Throws EventLoopError if the loop is closed or the executor shut
// down. The executor must outlive the call.
template <class F, class... Args>
  requires(std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...> &&
           !std::is_invocable_v<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>)
auto run_in_executor(EventLoop& loop, ThreadPoolExecutor* executor, F&& fn, Args&&... args)
    -> Future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
  using T = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
  auto bound = [f = std::forward<F>(fn),
                tup = std::make_tuple(std::forward<Args>(args)...)](std::stop_token) mutable -> T {
    return std::apply(std::move(f), std::move(tup));
  };
  return detail::submit_call<T>(loop, executor, std::move(bound));
}

// The same for fn(stop_token, args...): stop is requested when the Future
// is cancelled or the loop closes; fn should then return soon (or throw
// CancelledError), since close() waits for it.
template <class F, class... Args>
  requires std::is_invocable_v<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>
auto run_in_executor(EventLoop& loop, ThreadPoolExecutor* executor, F&& fn, Args&&... args)
    -> Future<std::invoke_result_t<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>> {
  using T = std::invoke_result_t<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>;
  auto bound = [f = std::forward<F>(fn),
                tup = std::make_tuple(std::forward<Args>(args)...)](std::stop_token t) mutable -> T {
    return std::apply([&](auto&&... a) -> T { return std::move(f)(t, std::move(a)...); },
                      std::move(tup));
  };
  return detail::submit_call<T>(loop, executor, std::move(bound));
}

// asyncio.to_thread: fn(args...) on the running loop's default executor.
template <class F, class... Args>
auto to_thread(F&& fn, Args&&... args) {
  return run_in_executor(get_running_loop(), nullptr, std::forward<F>(fn),
                         std::forward<Args>(args)...);
}

// A Future of `loop` for a std::future or std::shared_future: a thread of
// the loop's default executor waits for it. Cancelling the Future (or
// closing the loop) stops the wait within wrap_future_poll; a std::future
// itself cannot be cancelled, and has no callback to wait on instead.
inline constexpr std::chrono::milliseconds wrap_future_poll{10};
template <class StdFuture>
  requires requires(StdFuture& f) {
    f.get();
    f.wait_for(wrap_future_poll);
  }
auto wrap_future(EventLoop& loop, StdFuture future) {
  using T = std::remove_cvref_t<decltype(future.get())>;
  return run_in_executor(loop, nullptr, [f = std::move(future)](std::stop_token stop) mutable -> T {
    while (f.wait_for(wrap_future_poll) != std::future_status::ready) {
      if (stop.stop_requested()) throw CancelledError("wrap_future: stopped waiting");
    }
    return f.get();
  });
}

// Replaces the loop's default executor (asyncio's set_default_executor);
// the old one is shut down and joined.
void set_default_executor(EventLoop& loop, std::unique_ptr<ThreadPoolExecutor> executor);

// asyncio's loop.shutdown_default_executor(): no more calls are taken, and
// the task ends once every thread of the default executor has ended (the
// calls already submitted run first). If they take longer than `timeout`,
// the exception handler is told and the task ends anyway; the threads are
// then joined when the loop closes. run() does this before closing.
Task<> shutdown_default_executor(EventLoop& loop,
                                 std::chrono::nanoseconds timeout = std::chrono::seconds(300));

}  // namespace polyloop
