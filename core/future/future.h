// Future<T>: asyncio's Future — a result, an exception or a cancellation that
// arrives later, with done callbacks.
//
// A Future is a counted handle to shared state; copies refer to the same
// future. Done callbacks are always scheduled with the loop (call_soon order),
// never run inline. Use from the loop's thread only; a Future must not
// outlive its loop. A scheduled task (EventLoop::create_task) is a Future.
#pragma once

#include <coroutine>
#include <cstdint>
#include <exception>
#include <iosfwd>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "core/errors/invariant.h"
#include "core/future/suspended_task.h"
#include "core/future/task_root.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"

namespace polyloop {

namespace detail {

class future_state_base;

// Task names and cancel messages, kept by the loop for the tasks that have
// one (future.cc).
std::string task_name(const task_root& task);      // the name, or "Task-N"
std::string describe_task(const task_root& task);  // "task 'NAME'", for reports
// Debug mode: " (coroutine F at FILE:LINE)" for a task, " (made at
// FILE:LINE in F)" for a future, when its loop knows; else "".
std::string describe_origin(const future_state_base& state);
// "FUNC at FILE:LINE" for a detail::location_pointer; "" for null.
std::string describe_location(const void* location);
task_notes& notes_of(task_root& task);             // made on first use
void forget_notes(task_root& task) noexcept;       // when the task is destroyed

// An entry of a future's done list. notify() is called when the future
// completes; most entries then put themselves on the ready queue. notify()
// must not run user code: it is called inside set_result().
struct done_link : ready_node {
  done_link* next_link = nullptr;
  // Kept by the first entry of a list only: the last entry (so that the
  // future itself needs no tail pointer).
  done_link* list_tail = nullptr;
  void (*notify)(done_link* self, future_state_base& state) = nullptr;
  std::uint64_t user_id = 0;  // non-zero for add_done_callback() entries
};

// For dump_tasks(): "task 'NAME'" for a task, "a future" for a plain one
// (with where it was made, in debug mode).
void describe_awaited(const future_state_base& state, std::ostream& out);

// notify() for entries that run from the ready queue.
void schedule_link(done_link* self, future_state_base& state);

class future_state_base;
// Runs `loop` until `state` is done (run_until_complete without the result);
// throws EventLoopError if the loop stopped first.
void run_until_done(EventLoop& loop, future_state_base& state);

class future_state_base : public state_link {
 public:
  enum class status : std::uint8_t { pending, result, exception, cancelled };

  explicit future_state_base(EventLoop* loop) : loop_(loop) {
    if (loop_ != nullptr) loop_access::link_state(*loop_, this);
  }
  future_state_base(const future_state_base&) = delete;
  future_state_base& operator=(const future_state_base&) = delete;

  void add_ref() noexcept final { ++refs_; }
  void release() noexcept final {
    POLYLOOP_INVARIANT(refs_ != 0, "a future state released more often than referenced");
    if (--refs_ == 0) destroy_self();
  }

  future_state_base* as_future_state() noexcept final { return this; }
  bool done() const noexcept { return status_ != status::pending; }
  bool cancelled() const noexcept { return status_ == status::cancelled; }
  bool failed() const noexcept { return status_ == status::exception; }
  EventLoop* loop() const noexcept { return loop_; }
  EventLoop& checked_loop() const;
  virtual bool is_task() const noexcept { return false; }
  // The root of a scheduled task; null for a plain future.
  virtual task_root* as_task() noexcept { return nullptr; }

  // asyncio's Future.cancel(msg); a task overrides it to cancel what it
  // awaits. A non-empty message is what the CancelledError says.
  virtual bool cancel_with(std::string message);
  bool cancel() { return cancel_with(std::string()); }
  void set_exception(std::exception_ptr e);
  // Throws InvalidStateError while pending, CancelledError if cancelled.
  std::exception_ptr exception();
  // Throws what result() would, short of returning the value.
  void check_result() {
    if (status_ != status::result) check_result_slow();
  }
  void mark_retrieved() noexcept { retrieved_ = true; }

  void add_link(done_link* link) noexcept;
  bool remove_link(done_link* link) noexcept;
  // Unique in the process (so the future keeps no counter of its own).
  static std::uint64_t next_callback_id() noexcept;
  // Unlinks and releases the add_done_callback() entry with this id.
  std::size_t remove_user_link(std::uint64_t id) noexcept;

 protected:
  ~future_state_base();
  void check_can_complete(const char* what);
  // Debug mode: remembers where this was made (its loop's origins table).
  void keep_origin(const void* made_at);
  [[gnu::noinline, gnu::cold]] void forget_origin() noexcept;
  // Sets the final status and notifies the done list.
  void finish(status s) noexcept;
  // Reports an exception nobody retrieved (from the state's destructor).
  void report_unretrieved() noexcept {
    if (status_ == status::exception && !retrieved_) report_unretrieved_slow();
  }
  // A plain future drops its done callbacks when the loop closes and
  // forgets the loop when it is destroyed; a task does more (task.h).
  bool on_loop_event(loop_event e) override {
    if (e == loop_event::closed) drop_callbacks();
    if (e == loop_event::destroyed) loop_ = nullptr;
    return false;
  }
  // Releases the done list without running it: the loop closed.
  void drop_callbacks() noexcept;
  std::string describe_if_task(const void* root, const void* node) override;
  // A task's: whether a step of it ran as `node` or resumed `root`.
  virtual bool ran_step(const void*, const void*) const noexcept { return false; }
 public:
  // A task's coroutine function (detail::location_pointer), or null.
  virtual const void* coroutine_location() const noexcept { return nullptr; }
 protected:
  virtual void destroy_self() noexcept = 0;

 private:
  void check_result_slow();
  void report_unretrieved_slow() noexcept;

 protected:
  EventLoop* loop_;
  std::exception_ptr exception_;
  done_link* head_ = nullptr;  // the done list; head_->list_tail is its last entry
  std::uint32_t refs_ = 1;
  status status_ = status::pending;
  bool retrieved_ = false;
  bool has_origin_ = false;  // the loop's origins table has an entry for this (debug mode)

  friend std::string describe_origin(const future_state_base& state);
};

// Storage for the value, so that void needs no special case elsewhere.
template <class T>
class future_state : public future_state_base {
 public:
  using future_state_base::future_state_base;
  template <class U>
  void set_value(U&& v) {
    check_can_complete("set_result");
    value_.emplace(std::forward<U>(v));
    finish(status::result);
  }
  // For a task's return value: stored now, published when the task ends.
  template <class U>
  void store_value(U&& v) {
    value_.emplace(std::forward<U>(v));
  }
  T& value() {
    check_result();
    return *value_;
  }
  // The value as stored, whatever the status (for a task awaited inline).
  T& stored_value() noexcept { return *value_; }

 protected:
  ~future_state() = default;

 private:
  std::optional<T> value_;
};

template <>
class future_state<void> : public future_state_base {
 public:
  using future_state_base::future_state_base;
  void set_value() {
    check_can_complete("set_result");
    finish(status::result);
  }
  void value() { check_result(); }

 protected:
  ~future_state() = default;
};

// The state of a future made by EventLoop::create_future().
template <class T>
class plain_future_state final : public future_state<T> {
 public:
  using future_state<T>::future_state;
  void remember_origin(const void* made_at) { this->keep_origin(made_at); }

 private:
  ~plain_future_state() {
    this->report_unretrieved();
    if (this->has_origin_) [[unlikely]] this->forget_origin();  // debug mode's
  }
  void destroy_self() noexcept override { delete this; }
};

// A done callback added by the user: owns the callable and a reference.
template <class T, class F>
struct user_done_node final : done_link {
  user_done_node(future_state_base& s, F&& f, std::uint64_t callback_id)
      : state(&s), fn(std::move(f)) {
    ready_node::fn = &run;
    notify = &schedule_link;
    user_id = callback_id;
    s.add_ref();
  }
  static void run(ready_node* n, ready_node::action what);

  future_state_base* state;
  F fn;
};

}  // namespace detail

template <class T = void>
class Future;

namespace detail {
// For polyloop's own layers: a Future's state, and a Future made from a
// state whose reference the caller hands over. Users never need either.
struct future_access {
  template <class T>
  static future_state<T>* state(const Future<T>& f) noexcept {
    return f.state_;
  }
  template <class T>
  static Future<T> adopt(future_state<T>* s) noexcept {
    return Future<T>(s);
  }
};
}  // namespace detail

template <class T>
class Future {
 public:
  using value_type = T;
  using callback_id = std::uint64_t;

  Future() = default;
  Future(const Future& o) noexcept : state_(o.state_) {
    if (state_) state_->add_ref();
  }
  Future(Future&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  Future& operator=(Future o) noexcept {
    std::swap(state_, o.state_);
    return *this;
  }
  ~Future() {
    if (state_) state_->release();
  }

  // False for a default-constructed or moved-from Future.
  bool valid() const noexcept { return state_ != nullptr; }
  // Every member below throws InvalidStateError on an empty Future.
  bool done() const { return st()->done(); }
  bool cancelled() const { return st()->cancelled(); }
  // Cancels a pending future and schedules its callbacks; false if it was
  // already done. For a task: cancels what the task awaits (asyncio's
  // Task.cancel), so the task sees CancelledError and may still catch it.
  // A message travels in that CancelledError (its what()), and in the one
  // result() throws afterwards.
  bool cancel() { return st()->cancel(); }
  bool cancel(std::string message) { return st()->cancel_with(std::move(message)); }

  // Completes the future. Throws InvalidStateError if it is done already,
  // or is a task (a task's result is what its coroutine returns).
  template <class U = T>
  requires(!std::is_void_v<T> && std::is_constructible_v<T, U&&>) void set_result(U&& value) {
    st()->set_value(std::forward<U>(value));
  }
  void set_result() requires std::is_void_v<T> { st()->set_value(); }
  void set_exception(std::exception_ptr e) { st()->set_exception(std::move(e)); }
  template <class E>
  requires std::is_base_of_v<std::exception, std::decay_t<E>>
  void set_exception(E&& e) { set_exception(std::make_exception_ptr(std::forward<E>(e))); }

  // The result; rethrows the future's exception; throws CancelledError if it
  // was cancelled and InvalidStateError while it is pending.
  std::add_lvalue_reference_t<T> result() const { return st()->value(); }
  // The exception, or null if the future has a result. Throws as result()
  // does when cancelled or pending.
  std::exception_ptr exception() const { return st()->exception(); }

  // Schedules f(future) when the future is done (at once, if it is). Returns
  // an id for remove_done_callback().
  // (Defined here, not out of line: clang 14 cannot match an out-of-line
  // definition of a constrained member template of a class template.)
  template <class F>
  requires std::is_invocable_v < std::decay_t<F>
  &, Future& > callback_id add_done_callback(F&& f) {
    using Node = detail::user_done_node<T, std::decay_t<F>>;
    EventLoop& loop = st()->checked_loop();
    detail::loop_access::check_open(loop);
    auto* node = new Node(*state_, std::decay_t<F>(std::forward<F>(f)), st()->next_callback_id());
    std::uint64_t id = node->user_id;
    if (st()->done()) {
      detail::loop_access::schedule(loop, node);
    } else {
      st()->add_link(node);
    }
    return id;
  }
  // Removes a callback that has not been scheduled yet; returns how many
  // were removed (0 or 1).
  std::size_t remove_done_callback(callback_id id);

  EventLoop& get_loop() const { return st()->checked_loop(); }

  // Awaiting from a task suspends it until the future is done; cancelling the
  // task cancels the future.
  auto operator co_await() const;

 private:
  friend struct detail::future_access;
  // Adopts a state whose reference the caller hands over.
  explicit Future(detail::future_state<T>* adopted) noexcept : state_(adopted) {}
  detail::future_state<T>* st() const {
    if (state_ == nullptr) {
      throw InvalidStateError("this Future is empty (default-constructed or moved-from)");
    }
    return state_;
  }
  detail::future_state<T>* state_ = nullptr;
};

template <class T>
Future<T> EventLoop::create_future(detail::source_location where) {
  check_open("create_future");
  auto* state = new detail::plain_future_state<T>(this);
  if (get_debug()) [[unlikely]] state->remember_origin(detail::location_pointer(where));
  return detail::future_access::adopt<T>(state);
}

template <class T>
Future<T> EventLoop::ensure_future(Future<T> future) {
  if (detail::future_access::state(future)->loop() != this) {
    throw EventLoopError("ensure_future: the future belongs to another event loop");
  }
  return future;
}

template <class T, class F>
void detail::user_done_node<T, F>::run(ready_node* n, ready_node::action what) {
  auto* self = static_cast<user_done_node*>(n);
  // Adopts the reference taken at add_done_callback().
  Future<T> future = future_access::adopt<T>(static_cast<future_state<T>*>(self->state));
  std::unique_ptr<user_done_node> owner(self);
  if (what == ready_node::action::discard) return;
  try {
    self->fn(future);
  } catch (...) {
    if (EventLoop* loop = future_access::state(future)->loop()) {
      loop->call_exception_handler({"exception in a done callback", std::current_exception()});
    }
  }
}

template <class T>
std::size_t Future<T>::remove_done_callback(callback_id id) {
  return st()->remove_user_link(id);
}

}  // namespace polyloop

namespace polyloop::detail {

// `co_await future` from a task.
template <class T>
class future_awaiter : public done_link {
 public:
  explicit future_awaiter(Future<T> f) : future_(std::move(f)) {
    ready_node::fn = &resume_awaiter<future_awaiter>;
    notify = [](done_link* self, future_state_base& s) {
      static_cast<future_awaiter*>(self)->linked_ = false;
      schedule_link(self, s);
    };
  }
  future_awaiter(const future_awaiter&) = delete;
  future_awaiter& operator=(const future_awaiter&) = delete;
  ~future_awaiter() {
    if (linked_) future_access::state(future_)->remove_link(this);
  }

  bool await_ready() const { return future_.done(); }  // throws for an empty Future
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    task.root = root_of(h);
    task.loop = future_access::state(future_)->loop();
    task.waiter = h;
    if (task.root != nullptr && running_loop() != task.loop) {
      throw EventLoopError(
          "a task cannot await a future of another event loop; create the future with this "
          "task's loop (get_running_loop())");
    }
    future_access::state(future_)->add_link(this);
    linked_ = true;
    task.cancellable_by({&waits_on, this});
  }
  std::add_lvalue_reference_t<T> await_resume() {
    task.resume_point();
    return future_.result();
  }

  suspended_task task;

 private:
  // Hands the cancel on: a task awaited this way may catch it and return a
  // result, which is then this task's too (asyncio's Task.cancel).
  static bool on_cancel(void* self) {
    auto* me = static_cast<future_awaiter*>(self);
    return me->future_.cancel(me->task.root->cancel_message());
  }
  static void describe(const void* self, std::ostream& out) {
    describe_awaited(*future_access::state(static_cast<const future_awaiter*>(self)->future_), out);
  }
  static constexpr wait_kind waits_on{&on_cancel, &describe};

  Future<T> future_;
  bool linked_ = false;
};

}  // namespace polyloop::detail

namespace polyloop {

template <class T>
auto Future<T>::operator co_await() const {
  return detail::future_awaiter<T>(*this);
}

}  // namespace polyloop
