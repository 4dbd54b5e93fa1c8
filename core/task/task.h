// Task<T>: the coroutine type.
//
// A Task is lazy: calling a coroutine function makes one but runs nothing.
// It runs either inline, when another task awaits it (`co_await child()`,
// with symmetric transfer, no trip through the loop), or as a scheduled
// task: EventLoop::create_task() starts it in a later iteration and returns
// a Future for its result. A scheduled task keeps itself alive until its
// coroutine ends; cancelling its Future makes its pending co_await throw
// CancelledError (asyncio's Task.cancel()).
//
// Coroutine frames come from a per-thread pool of size classes, so spawning
// a task does not call malloc in steady state.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <string>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

#include "core/future/task_root.h"
#include "core/future/future.h"
#include "core/task/frame_pool.h"

namespace polyloop {

template <class T>
class Task;

namespace detail {

template <class T>
class task_promise;
template <class T>
class own_tasks;

// "coroutine 'F' was never awaited": a Task destroyed before it was awaited
// or scheduled (asyncio's RuntimeWarning), told to the running loop's
// exception handler, or printed when none runs (introspection.cc).
[[gnu::cold]] void report_never_awaited(const void* coroutine_location) noexcept;

// Where a task goes next: the coroutine that awaits it inline (resumed when
// it ends), or, once scheduled, the ready node of its first step. A task is
// one or the other, never both, so the two share 8 bytes of every frame.
// A base of the promise, so that the step's ready_node leads back to the
// promise by two well-defined casts and no back pointer: ready_node ->
// task_next (a union member of a standard-layout class is
// pointer-interconvertible with it), then task_next -> promise (base to
// derived).
struct task_next {
  task_next() noexcept : continuation() {}
  union {
    std::coroutine_handle<> continuation;
    ready_node step;
  };
  static task_next& of(ready_node* n) noexcept { return *reinterpret_cast<task_next*>(n); }
};
static_assert(std::is_standard_layout_v<task_next> && sizeof(task_next) == sizeof(void*));

// The parts of the promise that do not depend on T.
template <class T>
class task_promise_common : public future_state<T>,
                            public promise_base,
                            public task_next,
                            public task_root {
 public:
  // `where` is the coroutine function (the compiler constructs the promise
  // inside it), so that a Task never awaited can say which coroutine it
  // was, and reports and dump_tasks() can show it: one store per task.
  explicit task_promise_common(source_location where)
      : future_state<T>(nullptr), coroutine_location_(location_pointer(where)) {}
  // Never started: neither awaited (continuation set) nor scheduled.
  bool never_started() const noexcept { return !this->continuation; }
  const void* coroutine_location() const noexcept override { return coroutine_location_; }
  ~task_promise_common() {
    if (this->has_notes) [[unlikely]] forget_notes(*this);
  }

  static void* operator new(std::size_t size) { return allocate_frame(size); }
  static void operator delete(void* p, std::size_t size) noexcept { free_frame(p, size); }

  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
      return h.promise().on_final();
    }
    void await_resume() const noexcept {}
  };

  // Empty, so that it takes no room in the frame: a scheduled task that
  // is cancelled before its first step is ended by step(), unstarted.
  std::suspend_always initial_suspend() noexcept { return {}; }
  final_awaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { this->exception_ = std::current_exception(); }

  // Scheduling (EventLoop::create_task): bind to `loop` and queue the first
  // step. The caller then holds one reference, the running task another.
  void schedule_on(EventLoop& loop) {
    loop_access::check_open(loop);
    this->loop_ = &loop;
    loop_access::link_state(loop, this);
    root = this;
    this->task_state = this;
    this->number = loop_access::next_task_number(loop);
    this->add_ref();
    std::construct_at(&this->step);  // continuation is never used by a scheduled task
    this->step.fn = &run_first_step;
    loop_access::schedule(loop, &this->step);
  }

  bool is_task() const noexcept override { return this->task_state != nullptr; }
  task_root* as_task() noexcept override { return is_task() ? this : nullptr; }
  // asyncio's Task.cancel(msg): counts the request (cancelling()), keeps
  // the message for the CancelledError, cancels what the task awaits.
  bool cancel_with(std::string message) override {
    if (this->done()) return false;
    loop_access::check_open(this->checked_loop());
    if (this->cancel_requests != UINT16_MAX) ++this->cancel_requests;
    if (!message.empty() || this->has_notes) notes_of(*this).cancel_message = std::move(message);
    request_cancel();
    return true;
  }

  // Rethrows what the coroutine threw, for the task that awaited it inline.
  void rethrow_if_failed() {
    if (this->exception_) std::rethrow_exception(this->exception_);
  }

  // Inline use: the coroutine that awaits this one.
  void set_continuation(std::coroutine_handle<> c) noexcept { this->continuation = c; }

  std::coroutine_handle<> on_final() noexcept {
    // The field, not the virtual is_task(): this runs at the end of every coroutine.
    if (this->task_state == nullptr) {
      return this->continuation ? this->continuation : std::noop_coroutine();
    }
    publish();
    ++loop_access::counts(*this->loop_).tasks_finished;
    this->release();  // the running task's own reference; may free the frame
    return std::noop_coroutine();
  }

 private:
  using status = typename future_state<T>::status;

  std::coroutine_handle<> handle() noexcept {
    return std::coroutine_handle<task_promise<T>>::from_promise(
        static_cast<task_promise<T>&>(*this));
  }
  // The first step of a scheduled task, queued by schedule_on().
  static void run_first_step(ready_node* n, ready_node::action what) {
    if (what != ready_node::action::run) return;
    // A reference cast: no null check for a node that cannot be null.
    auto* p = &static_cast<task_promise_common&>(task_next::of(n));
    if (p->must_cancel) [[unlikely]] {
      end_unstarted(p);
      return;
    }
    p->handle().resume();
  }
  // Cancelled before its first step: it ends cancelled, its body never
  // runs (the frame goes with the last reference). Out of line, so that
  // the first step of every task stays as short as it was.
  [[gnu::cold, gnu::noinline]] static void end_unstarted(task_promise_common* p) {
    p->must_cancel = false;
    if (p->has_notes) p->keep_cancel_message();
    p->finish(status::cancelled);
    ++loop_access::counts(*p->loop_).tasks_finished;
    p->release();  // the running task's own reference
  }

  void publish() noexcept {
    if (!this->exception_) {
      // A cancel that never reached a suspension point (the coroutine ended
      // first) still cancels the task, as in asyncio: cancel() said it would.
      this->finish(this->must_cancel ? status::cancelled : status::result);
      return;
    }
    try {
      std::rethrow_exception(this->exception_);
    } catch (const CancelledError&) {
      // Kept: result() rethrows it, with the cancel message it carries.
      this->finish(status::cancelled);
    } catch (...) {
      this->finish(status::exception);
    }
  }

  void destroy_self() noexcept override { handle().destroy(); }
  // Debug mode, after a slow step: a step of this task resumed its root
  // (stepping_task), or was its first step (`node`, which sets no
  // stepping_task, to keep every task's first step as short as it was).
  bool ran_step(const void* root, const void* node) const noexcept override {
    return root == static_cast<const task_root*>(this) || node == &this->step;
  }
  // A task cancelled before its first step: its result() says the message.
  void keep_cancel_message() {
    std::string message = this->cancel_message();
    if (!message.empty()) this->exception_ = std::make_exception_ptr(CancelledError(message));
  }

  bool on_loop_event(state_link::loop_event e) override {
    switch (e) {
      case state_link::loop_event::cancel_task:
        return is_task() && this->cancel();
      case state_link::loop_event::is_pending_task:
        return is_task() && !this->done();
      case state_link::loop_event::closed:
        this->drop_callbacks();
        end_unfinished();
        return false;
      case state_link::loop_event::destroyed:
        break;
    }
    return future_state_base::on_loop_event(e);
  }

  // The loop closed under a scheduled task that had not ended: it never can.
  void end_unfinished() noexcept {
    if (!is_task() || this->done()) return;
    this->loop_->call_exception_handler(
        {"Task was destroyed but it is pending! (" + describe_task(*this) +
             "; the loop was closed while it was suspended)",
         nullptr});
    this->status_ = status::cancelled;
    this->release();  // the running task's reference: its frame goes now or with the last Future
  }

  friend class Task<T>;
  const void* coroutine_location_;
};

template <class T>
class task_promise final : public task_promise_common<T> {
 public:
  task_promise(source_location where = source_location::current())
      : task_promise_common<T>(where) {}
  Task<T> get_return_object() noexcept;
  template <class U>
  requires std::is_convertible_v<U&&, T>
  void return_value(U&& value) { this->store_value(std::forward<U>(value)); }
  ~task_promise() {
    if (this->is_task()) this->report_unretrieved();
  }
  T take_value() {
    this->rethrow_if_failed();
    return std::move(this->stored_value());
  }
};

template <>
class task_promise<void> final : public task_promise_common<void> {
 public:
  task_promise(source_location where = source_location::current())
      : task_promise_common<void>(where) {}
  Task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  ~task_promise() {
    if (this->is_task()) this->report_unretrieved();
  }
  void take_value() { this->rethrow_if_failed(); }
};

}  // namespace detail

namespace detail {
// `co_await task`: runs the child coroutine inline, by symmetric transfer.
template <class T>
struct inline_task_awaiter {
  std::coroutine_handle<task_promise<T>> h;
  bool await_ready() const noexcept { return !h || h.done(); }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) noexcept {
    h.promise().set_continuation(parent);
    h.promise().root = root_of(parent);
    return h;
  }
  T await_resume() {
    if (!h) throw InvalidStateError("co_await on an empty Task (moved-from or already scheduled)");
    return h.promise().take_value();
  }
};
}  // namespace detail

template <class T = void>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::task_promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;
  using value_type = T;

  Task() = default;
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Task& operator=(Task o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  // A Task never awaited nor scheduled is reported as asyncio's "coroutine
  // ... was never awaited" (the running loop's exception handler).
  ~Task() {
    if (h_) {
      if (h_.promise().never_started()) [[unlikely]]
        detail::report_never_awaited(h_.promise().coroutine_location());
      h_.destroy();
    }
  }

  // False for a moved-from Task (one that was awaited or scheduled).
  bool valid() const noexcept { return static_cast<bool>(h_); }

  // Runs the coroutine inline, as a part of the awaiting task: its co_awaits
  // are the awaiting task's, and so is a cancel.
  auto operator co_await() && noexcept { return detail::inline_task_awaiter<T>{h_}; }
  auto operator co_await() & noexcept { return std::move(*this).operator co_await(); }

 private:
  friend promise_type;
  friend class EventLoop;  // create_task takes the frame over
  // Hands the frame over.
  handle_type release() noexcept { return std::exchange(h_, nullptr); }
  friend class detail::own_tasks<T>;  // gather: schedules the Tasks in place
  explicit Task(handle_type h) noexcept : h_(h) {}
  handle_type h_;
};

namespace detail {
template <class T>
Task<T> task_promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}
inline Task<void> task_promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}
}  // namespace detail

namespace detail {
template <class Awaitable>
using await_result_t = decltype(std::declval<Awaitable&>().await_resume());

// A task that awaits `awaitable` and returns what it gives.
template <class Awaitable>
Task<await_result_t<Awaitable>> as_task(Awaitable awaitable) {
  co_return co_await std::move(awaitable);
}
}  // namespace detail

// --- EventLoop's task members (declared in core/loop/event_loop.h) ---------------

template <class Awaitable>
  requires requires(Awaitable& a) { a.await_resume(); }
auto EventLoop::ensure_future(Awaitable awaitable) {
  return create_task(detail::as_task(std::move(awaitable)));
}

template <class T>
Future<T> EventLoop::create_task(Task<T> task) {
  if (!task.valid()) throw InvalidStateError("create_task: the Task is empty (moved-from)");
  check_open();
  auto h = task.release();
  h.promise().schedule_on(*this);
  return detail::future_access::adopt<T>(&h.promise());  // the reference schedule_on added
}

template <class T>
Future<T> EventLoop::create_task(Task<T> task, std::string name) {
  Future<T> future = create_task(std::move(task));
  if (!name.empty()) {
    detail::notes_of(*detail::future_access::state(future)->as_task()).name = std::move(name);
  }
  return future;
}

template <class T>
T EventLoop::run_until_complete(Future<T> future) {
  if (!future.valid()) throw InvalidStateError("run_until_complete: the Future is empty");
  detail::run_until_done(*this, *detail::future_access::state(future));
  if constexpr (std::is_void_v<T> || std::is_copy_constructible_v<T>) {
    return future.result();
  } else {
    return std::move(future.result());  // a move-only result can only be handed over
  }
}

template <class T>
T EventLoop::run_until_complete(Task<T> task) {
  check_can_run();  // before scheduling: a refused run must not start the task
  Future<T> future = create_task(std::move(task));
  detail::run_until_done(*this, *detail::future_access::state(future));
  // Nobody else can see this future: hand the result over without a copy.
  if constexpr (std::is_void_v<T>) {
    future.result();
  } else {
    return std::move(future.result());
  }
}

// asyncio.create_task / ensure_future: schedule on the running loop (from a
// task or callback). Throw EventLoopError when no loop is running.
template <class T>
Future<T> create_task(Task<T> task) {
  return get_running_loop().create_task(std::move(task));
}
template <class T>
Future<T> create_task(Task<T> task, std::string name) {
  return get_running_loop().create_task(std::move(task), std::move(name));
}
template <class A>
auto ensure_future(A awaitable) {
  return get_running_loop().ensure_future(std::move(awaitable));
}

}  // namespace polyloop
