// run_coroutine_threadsafe: a coroutine submitted to a loop from another
// thread, and ConcurrentFuture, the thread-safe future that thread waits on
// (asyncio.run_coroutine_threadsafe and concurrent.futures.Future).
//
//   // on a thread that is not the loop's:
//   pl::ConcurrentFuture<int> f = pl::run_coroutine_threadsafe(compute(), *loop);
//   int n = f.result(2s);  // blocks up to 2 s; TimeoutError after that
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/task/task.h"

namespace polyloop {

namespace detail {

template <class T>
struct concurrent_state {
  enum class status : std::uint8_t { pending, result, exception, cancelled };
  explicit concurrent_state(EventLoop& l) : loop(&l) {}

  // Under `mutex`: the first outcome wins.
  void finish(status s) {
    if (st != status::pending) return;
    st = s;
    done_cv.notify_all();
  }
  // Loop thread: copies the task's outcome.
  void finish_from(Future<T>& f) {
    std::lock_guard<std::mutex> lock(mutex);
    if (st != status::pending) return;  // cancel() came first; the outcome is dropped
    if (f.cancelled()) return finish(status::cancelled);
    if (std::exception_ptr e = f.exception()) {
      error = std::move(e);
      return finish(status::exception);
    }
    if constexpr (std::is_void_v<T>) {
      value.emplace();
    } else {
      value.emplace(std::move(f.result()));
    }
    finish(status::result);
  }

  std::mutex mutex;
  std::condition_variable done_cv;
  status st = status::pending;
  std::optional<std::conditional_t<std::is_void_v<T>, std::monostate, T>> value;
  std::exception_ptr error;
  EventLoop* loop;  // compared, and called only while st is pending (see cancel())
  Future<T> task;   // the loop's thread only: its count is not thread-safe
};

// Carried by each callable the loop might drop without running (at close):
// the future then ends cancelled instead of staying pending forever.
template <class T>
struct cancel_on_drop {
  std::shared_ptr<concurrent_state<T>> state;
  explicit cancel_on_drop(std::shared_ptr<concurrent_state<T>> s) : state(std::move(s)) {}
  cancel_on_drop(cancel_on_drop&&) noexcept = default;
  cancel_on_drop& operator=(cancel_on_drop&&) = delete;
  ~cancel_on_drop() {
    if (!state) return;
    state->task = Future<T>();  // dropped on the loop's thread, where it was made
    std::lock_guard<std::mutex> lock(state->mutex);
    state->finish(concurrent_state<T>::status::cancelled);
  }
};

}  // namespace detail

// What run_coroutine_threadsafe returns. Every member may be called from
// any thread; copies share the outcome.
template <class T>
class ConcurrentFuture {
  using state_t = detail::concurrent_state<T>;
  using status = typename state_t::status;

 public:
  bool done() const {
    std::lock_guard<std::mutex> lock(s_->mutex);
    return s_->st != status::pending;
  }
  bool cancelled() const {
    std::lock_guard<std::mutex> lock(s_->mutex);
    return s_->st == status::cancelled;
  }
  // Waits up to `timeout` for the outcome; true if it is there.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    std::unique_lock<std::mutex> lock(s_->mutex);
    return wait_locked(lock, std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  // Blocks until the coroutine ended (or `timeout` passed: TimeoutError)
  // and returns its result, or rethrows its exception; CancelledError if
  // it was cancelled (by cancel(), in the loop, or the loop closed first).
  // On the loop's own thread this would wait forever: EventLoopError.
  T result(std::optional<std::chrono::nanoseconds> timeout = std::nullopt) {
    std::unique_lock<std::mutex> lock(s_->mutex);
    if (!wait_locked(lock, timeout)) {
      throw TimeoutError("ConcurrentFuture::result: the coroutine did not end in time");
    }
    switch (s_->st) {
      case status::cancelled:
        throw CancelledError("the coroutine run by run_coroutine_threadsafe was cancelled");
      case status::exception:
        std::rethrow_exception(s_->error);
      default:
        break;
    }
    if constexpr (!std::is_void_v<T>) return *s_->value;
  }
  // Ends the future as cancelled at once and cancels the task in the loop
  // (concurrent.futures.Future.cancel with asyncio's chaining). False if
  // it was already done.
  bool cancel() {
    std::lock_guard<std::mutex> lock(s_->mutex);
    if (s_->st != status::pending) return false;
    s_->finish(status::cancelled);
    // Under the lock: the loop cannot close (every close path finishes the
    // state under this lock first), so `loop` is still alive here.
    try {
      s_->loop->call_soon_threadsafe([s = s_] {
        if (s->task.valid()) s->task.cancel();
      });
    } catch (const EventLoopError&) {
      // Closed: the task never runs again; nothing left to cancel.
    }
    return true;
  }

 private:
  template <class U>
  friend ConcurrentFuture<U> run_coroutine_threadsafe(Task<U> task, EventLoop& loop);
  explicit ConcurrentFuture(std::shared_ptr<state_t> s) : s_(std::move(s)) {}
  bool wait_locked(std::unique_lock<std::mutex>& lock,
                   std::optional<std::chrono::nanoseconds> timeout) const {
    auto ended = [this] { return s_->st != status::pending; };
    if (ended()) return true;
    if (running_loop() == s_->loop) {
      throw EventLoopError(
          "ConcurrentFuture: waiting on the loop's own thread would block the loop that must "
          "run the coroutine; co_await a task instead");
    }
    if (!timeout) {
      s_->done_cv.wait(lock, ended);
      return true;
    }
    return s_->done_cv.wait_for(lock, *timeout, ended);
  }
  std::shared_ptr<state_t> s_;
};

// Schedules `task` on `loop` from any thread (asyncio's
// run_coroutine_threadsafe). Throws EventLoopError if the loop is closed.
template <class T>
ConcurrentFuture<T> run_coroutine_threadsafe(Task<T> task, EventLoop& loop) {
  using state_t = detail::concurrent_state<T>;
  auto s = std::make_shared<state_t>(loop);
  loop.call_soon_threadsafe([&loop, guard = detail::cancel_on_drop<T>(s),
                             task = std::move(task)]() mutable {
    {
      std::lock_guard<std::mutex> lock(guard.state->mutex);
      if (guard.state->st != state_t::status::pending) return;  // cancelled before it started
    }
    Future<T> f = loop.create_task(std::move(task));
    guard.state->task = f;
    f.add_done_callback([g = std::move(guard)](Future<T>& done) mutable {
      std::shared_ptr<state_t> st = std::move(g.state);
      st->task = Future<T>();
      st->finish_from(done);
    });
  });
  return ConcurrentFuture<T>(std::move(s));
}

}  // namespace polyloop
