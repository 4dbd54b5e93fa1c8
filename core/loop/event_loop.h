// EventLoop: asyncio's event loop over a pluggable Backend.
//
// One iteration (asyncio's _run_once, docs/design.md):
//   0. callbacks other threads queued (call_soon_threadsafe) join the ready
//      queue; call_soon and the loop's own scheduling take them first too,
//      so the two make one FIFO;
//   1. timeout = 0 if callbacks are ready or stop() was called, else the time
//      to the earliest timer, else no limit;
//   2. backend.poll(timeout): completed operations join the ready queue;
//   3. expired timers join the ready queue, earliest first, ties in the order
//      they were scheduled;
//   4. the callbacks that were ready when this step began run in FIFO order;
//      callbacks they schedule wait for the next iteration.
//
// Threads: a loop is used from one thread, the one that runs it; the only
// exception is call_soon_threadsafe(). Ownership: the loop owns its backend,
// its timers and queued callbacks. Handles, futures and tasks must not
// outlive the loop they were made by.
//
// The members that take or give a Future or Task (create_future,
// ensure_future, create_task, run_until_complete) are declared here, with
// the rest of asyncio's loop API, and defined with the types they use:
// core/future/future.h and core/task/task.h. Include "polyloop/polyloop.h".
// Plumbing polyloop's own layers need (the backend, the ready queue, the
// list of live futures) is private, reached through detail::loop_access.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/ready_queue.h"
#include "core/errors/errors.h"
#include "core/loop/callback_pool.h"
#include "core/loop/clock.h"
#include "core/loop/code_location.h"
#include "core/loop/loop_stats.h"
#include "core/loop/quaternary_heap.h"

namespace polyloop {

class EventLoop;
template <class T>
class Future;
template <class T>
class Task;

namespace detail {
struct loop_access;
struct state_link;
// What a layer above the loop keeps per loop and must tear down with it:
// the default executor (core/executor), the signal handlers (core/signals),
// the subprocesses (net/subprocess).
// close() calls on_close() after every live future state heard the loop
// close; the loop destroys it last.
struct loop_extension {
  virtual ~loop_extension() = default;
  virtual void on_close() noexcept = 0;
};
// What EventLoop counts for stats() (LoopStats says what each means), laid
// out for the cheapest increment on the hot paths: the counts per op_kind
// as arrays indexed by it. Tasks created are counted where they already
// were (tasks_created_); callbacks run are derived (EventLoop::stats()).
struct loop_counters {
  std::uint64_t iterations = 0;
  std::uint64_t waits_nonblocking = 0;  // waits_blocking: the other iterations
  std::uint64_t timers_scheduled = 0;
  std::uint64_t timers_fired = 0;
  std::uint64_t timers_cancelled = 0;
  std::uint64_t tasks_finished = 0;
  std::uint64_t threadsafe_callbacks_run = 0;
  // call_soon / call_at callbacks popped from the ready queue (cancelled
  // ones too), added once per EventLoop::run_callbacks() run.
  std::uint64_t callbacks_popped = 0;
  std::array<std::uint64_t, op_kind_count> ops_started{};
  std::array<std::uint64_t, op_kind_count> ops_completed{};
  std::array<std::uint64_t, op_kind_count> ops_cancelled{};
};
// What a task keeps only once asked to (set_name, cancel(message)), held
// by its loop so that tasks without it pay nothing.
struct task_notes {
  std::string name;
  std::string cancel_message;
};
// Where a future or task was made, kept by a loop in debug mode: the
// create_future() call, or the task's coroutine function
// (detail::location_pointer of a source_location; null: not known).
struct debug_origin {
  const void* made_at = nullptr;
};
}  // namespace detail

// What call_soon() returns: lets the caller cancel the callback before it
// runs. A small value; copying it is free. Valid while the loop lives.
class Handle {
 public:
  Handle() = default;
  // Stops the callback from running and releases it. No effect once it ran.
  void cancel() noexcept;
  // True if a cancel() took effect: through this handle (for good, even
  // after the loop recycled the callback's slot), or through a copy while
  // the callback was still pending.
  bool cancelled() const noexcept;

 protected:
  friend class EventLoop;
  Handle(detail::callback_node* node) noexcept : node_(node), generation_(node->generation) {}
  detail::callback_node* node_ = nullptr;
  std::uint32_t generation_ = 0;
  bool cancelled_here_ = false;
};

// What call_later() and call_at() return.
class TimerHandle : public Handle {
 public:
  TimerHandle() = default;
  // When the callback is due, on the loop's clock.
  Clock::time_point when() const noexcept { return when_; }

 private:
  friend class EventLoop;
  TimerHandle(detail::callback_node* node, Clock::time_point when) noexcept
      : Handle(node), when_(when) {}
  Clock::time_point when_{};
};

// What the exception handler is told (asyncio's context dict).
struct ExceptionContext {
  std::string message;
  std::exception_ptr exception;  // may be null
};

using ExceptionHandler = std::function<void(EventLoop&, const ExceptionContext&)>;

class EventLoop {
 public:
  using time_point = Clock::time_point;
  using duration = Clock::duration;

  // Most code calls new_event_loop() (policies/) instead, which picks the
  // backend by name. `clock` must outlive the loop.
  explicit EventLoop(std::unique_ptr<Backend> backend, Clock& clock = SteadyClock::instance())
      : EventLoop(std::move(backend), clock, &EventLoop::run_iterations<Backend>) {}
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;
  // Closes the loop if it is still open. Must not be called while running.
  ~EventLoop();

  // Which backend really runs (its Backend::name(), e.g. "epoll").
  std::string_view backend_name() const noexcept { return backend_name_; }

  // What the loop and its backend have done so far (core/loop/loop_stats.h):
  // a copy of plain counters, made without a syscall or a virtual call.
  // Call it on the loop's thread, or while the loop is not running.
  LoopStats stats() const noexcept;

  // Schedules f() to run in a later iteration, after the callbacks already
  // scheduled. f runs on the loop's thread; what it throws goes to the
  // exception handler. Throws EventLoopError if the loop is closed.
  template <class F>
  Handle call_soon(F&& f);
  // Schedules f() for `delay` (any std::chrono::duration, rounded up) from
  // now, never earlier. Timers with equal deadlines run in the order they
  // were scheduled.
  template <class Rep, class Period, class F>
  TimerHandle call_later(std::chrono::duration<Rep, Period> delay, F&& f) {
    return call_at(time() + std::chrono::ceil<duration>(delay), std::forward<F>(f));
  }
  template <class F>
  TimerHandle call_at(time_point when, F&& f);
  // The one method any thread may call: queues f() and wakes the loop if it
  // is blocked in its backend. Throws EventLoopError if the loop is closed.
  // One FIFO with call_soon, as in asyncio: f runs after whatever the loop's
  // thread scheduled before this call, and before whatever it schedules
  // after it (a call that happens after this one: a thread joined, a lock
  // released, or simply the same thread).
  template <class F>
  void call_soon_threadsafe(F&& f);

  // The loop's monotonic clock.
  time_point time() const noexcept { return clock_->now(); }

  // Runs until stop() is called. Throws EventLoopError if the loop is closed
  // or a loop is already running on this thread.
  void run_forever();
  // Runs until `task` (scheduled first) or `future` is done; returns its
  // result or rethrows its exception. Defined in core/task/task.h.
  template <class T>
  T run_until_complete(Task<T> task);
  template <class T>
  T run_until_complete(Future<T> future);
  // Makes run_forever() return after the iteration in progress.
  void stop() noexcept { stopping_ = true; }
  // Drops queued callbacks and timers and ends every task still pending
  // (their frames are destroyed, which is reported through the exception
  // handler as asyncio's "Task was destroyed but it is pending!"). A closed
  // loop cannot run again. The backend itself lives until the loop is
  // destroyed, so objects made on it (Asio's) may be destroyed after close().
  // Throws EventLoopError while running; closing twice does nothing.
  void close();
  bool is_running() const noexcept { return running_.load(std::memory_order_relaxed); }
  bool is_closed() const noexcept { return (flags_.load(std::memory_order_relaxed) & closed_bit) != 0; }

  // Schedules a coroutine to run on this loop; the returned future completes
  // with its result. Defined in core/task/task.h.
  template <class T>
  Future<T> create_task(Task<T> task);
  // The same, with the task's name (asyncio's create_task(coro, name=...)):
  // shown in every report about it; by default "Task-N".
  template <class T>
  Future<T> create_task(Task<T> task, std::string name);
  template <class T>
  Future<T> ensure_future(Task<T> task) {
    return create_task(std::move(task));
  }
  template <class T>
  Future<T> ensure_future(Future<T> future);
  // Any other awaitable, e.g. sleep(d): wrapped in a task and scheduled.
  template <class Awaitable>
    requires requires(Awaitable& a) { a.await_resume(); }
  auto ensure_future(Awaitable awaitable);
  // A new pending future bound to this loop. In debug mode the future
  // remembers `where` it was made (reports about it say so).
  template <class T = void>
  Future<T> create_future(detail::source_location where = detail::source_location::current());

  // Replaces the handler told about exceptions nobody else could receive:
  // a callback that threw, a task's exception nobody retrieved. An empty
  // handler restores the default, which prints to stderr.
  void set_exception_handler(ExceptionHandler handler) { handler_ = std::move(handler); }
  void call_exception_handler(const ExceptionContext& context) noexcept;
  // What the default handler does: one line on stderr.
  static void print_exception(const ExceptionContext& context) noexcept;

  // Cancels every task still pending on this loop and runs the loop until
  // they have all ended (what run() does before closing). Returns how many
  // tasks were cancelled.
  std::size_t cancel_all_tasks();

  // Debug mode (asyncio's loop.set_debug; docs/api.md "Debug mode"). Off by
  // default; on from the start when the environment has POLYLOOP_DEBUG set
  // to anything but "" or "0" as the loop is made. While on:
  // - a callback or task step that runs longer than slow_callback_duration()
  //   is reported through the exception handler, with the task's name and
  //   the time it took;
  // - calling a loop method (call_soon, call_at, create_task, set_result, an
  //   operation...) from a thread other than the one running the loop
  //   throws EventLoopError naming the method and both threads;
  // - tasks and futures remember where they were made, and the reports
  //   about them ("exception was never retrieved") say so;
  // - on a loop made by new_event_loop(), SIGQUIT writes dump_tasks() to
  //   stderr (core/signals' add_signal_handler; off again with the mode).
  // Loop thread only. Costs nothing while off.
  void set_debug(bool enabled);
  bool get_debug() const noexcept {
    return (flags_.load(std::memory_order_relaxed) & debug_bit) != 0;
  }
  // How long a callback may run before debug mode reports it (default
  // 100 ms, asyncio's). Throws std::invalid_argument for a negative one.
  void set_slow_callback_duration(duration limit);
  duration slow_callback_duration() const noexcept { return slow_callback_duration_; }
  // Writes every pending task of this loop, one line each, oldest first:
  // its name and what it waits on (a sleep until T, an operation on fd N,
  // a future or another task, a gather or wait of K, a lock, event or
  // queue). Loop thread only. Defined in core/task/introspection.cc.
  void dump_tasks(std::ostream& out);

 protected:
  // What run_forever() calls to run iterations until stop(): run_iterations<B>
  // with B the backend's static type. EventLoop passes Backend (a virtual
  // poll() per iteration); StaticEventLoop<B> passes its final B.
  using iteration_driver = void (*)(EventLoop& loop);
  EventLoop(std::unique_ptr<Backend> backend, Clock& clock, iteration_driver drive);
  template <class B>
  static void run_iterations(EventLoop& loop) {
    B& backend = static_cast<B&>(*loop.backend_);
    do {
      loop.run_once(backend);
    } while (!loop.stopping_);
  }

 private:
  friend class detail::callback_pool;
  friend class Handle;
  friend struct detail::loop_access;  // the plumbing below, for polyloop's own layers

  // Throws EventLoopError if the loop is closed; in debug mode also if this
  // thread is not the loop's (`method` names the call). Inline: every
  // call_soon checks it; one load and test, with or without debug mode.
  void check_open(const char* method = nullptr) const {
    if (flags_.load(std::memory_order_relaxed) & (closed_bit | debug_bit)) [[unlikely]]
      check_open_slow(method);
  }
  [[gnu::noinline]] void check_open_slow(const char* method) const;
  // Debug mode: throws EventLoopError if the loop runs on another thread.
  void check_thread(const char* method) const;
  // Throws EventLoopError if the loop cannot run now: closed, already
  // running, or another loop runs on this thread.
  void check_can_run() const;
  Backend& backend();
  // Puts an intrusive node on the ready queue (throws if closed).
  void schedule(detail::ready_node* node);
  [[gnu::noinline]] void schedule_slow(detail::ready_node* node);
  // Before the loop's thread appends to the ready queue (call_soon,
  // schedule) or its timers (call_at): throws if the loop is closed, and
  // takes first the callbacks other threads queued, so that
  // call_soon_threadsafe and call_soon make one FIFO. Both conditions live
  // in flags_, so the fast path stays the single load and branch that
  // check_open() was. A relaxed load suffices: when the queuing happens
  // before this call (a join, a lock, the same thread), coherence makes the
  // load see its pending bit (or the clear of a take that already moved the
  // callback); take_threadsafe()'s mutex then orders the queue's contents.
  // When the two race, there is no order to keep. (On x86 an acquire load
  // is the same mov; relaxed spares weaker CPUs a barrier.)
  void check_open_and_take_threadsafe() {
    if (flags_.load(std::memory_order_relaxed) != 0) [[unlikely]] closed_or_threadsafe_pending();
  }
  [[gnu::noinline]] void closed_or_threadsafe_pending();
  // Any thread: `node` joins the queue call_soon_threadsafe feeds, with no
  // box to allocate (core/executor's completions are such nodes). False,
  // and nothing queued, if the loop is closed. Throws std::bad_alloc.
  bool post_threadsafe(detail::ready_node* node);
  // For Handle: bookkeeping of cancelled timers, so the heap is compacted when
  // most of it is dead (asyncio does the same).
  void note_cancelled_timer() noexcept;
  // 16 bytes: four fit a cache line (core/loop/quaternary_heap.h). Equal
  // deadlines are rare, so their tie-break, the scheduling order, lives in
  // the node.
  struct timer_entry {
    time_point when;
    detail::callback_node* node;
  };

  detail::callback_node* acquire_node();
  // call_soon's rare path: takes the threadsafe queue (or throws if closed)
  // and makes room in the pool and the ready queue, then queues f.
  template <class F>
  [[gnu::noinline]] Handle call_soon_slow(F&& f);
  // Queues f; the pool has a free node and the ready queue room for it.
  // Always inline: as a call, call_soon would save registers around it.
  template <class F>
  [[gnu::always_inline]] Handle queue_callback(F&& f);
  // One iteration (see the top of this file).
  template <class B>
  void run_once(B& backend) {
    if (flags_.load(std::memory_order_seq_cst) & threadsafe_pending_bit) take_threadsafe();
    ++counts_.iterations;
    std::chrono::nanoseconds timeout = compute_timeout();
    // About to block while an executor call is out: its result usually
    // comes within microseconds, sooner than a sleep and wake-up would.
    if (timeout.count() != 0 && executor_calls_out_ != 0) [[unlikely]] {
      timeout = watch_for_threadsafe(timeout);
    }
    counts_.waits_nonblocking += timeout.count() == 0;
    std::error_code ec = backend.poll(timeout, ready_);
    if (ec) throw_poll_error(ec);
    if (flags_.load(std::memory_order_seq_cst) & threadsafe_pending_bit) take_threadsafe();
    fire_expired_timers();
    run_ready();
  }
  struct running_scope;
  // One iteration, blocking in the backend as run_forever() would.
  void run_one_iteration();
  [[noreturn]] void throw_poll_error(std::error_code ec) const;
  [[noreturn]] static void throw_closed();
  void run_ready();
  // Runs one node popped from the ready queue.
  void run_node(detail::ready_node* node);
  // Runs `first` (popped) and the callbacks queued right behind it, of the
  // `left` nodes run_ready()'s batch has left; returns how many are left.
  [[gnu::noinline]] std::size_t run_callbacks(detail::callback_node* first,
                                               std::size_t left) noexcept;
  // While run_callbacks() runs: the ready queue's pop count before its first
  // callback (stats() counts those popped since); else no_callbacks_run.
  static constexpr std::uint64_t no_callbacks_run = ~std::uint64_t{0};
  std::uint64_t callbacks_run_from_ = no_callbacks_run;
  // run_ready() in debug mode: times each callback (debug.cc).
  [[gnu::noinline]] void run_ready_debug();
  void report_slow(std::chrono::nanoseconds took, const void* task, const void* node);
  // POLYLOOP_DEBUG is set, to anything but "" or "0".
  static bool debug_from_environment() noexcept;
  std::chrono::nanoseconds compute_timeout();
  // run_once() before it would block for `timeout` while executor calls
  // are out: watches for a call_soon_threadsafe (a call's completion) for
  // up to executor_watch_limit, with a sched_yield per look. Returns 0
  // if one came, else what is left of `timeout`. Once per blocking wait, so
  // a loop never spins longer than that between events.
  [[gnu::noinline]] std::chrono::nanoseconds watch_for_threadsafe(std::chrono::nanoseconds timeout);
  // Measured with bench/loopbench to_thread (docs/benchmarks.md): a
  // trivial call's round trip is a few microseconds when the worker has a
  // core; a longer watch only burns CPU for calls that take longer.
  static constexpr std::chrono::microseconds executor_watch_limit{30};
  [[gnu::noinline]] std::chrono::nanoseconds timeout_from_timers();
  void take_threadsafe();
  void fire_expired_timers();
  [[gnu::noinline]] void compact_timers();  // off the iteration's fast path
  struct timer_earlier {
    bool operator()(const timer_entry& a, const timer_entry& b) const noexcept {
      // The sequence wraps: compare by distance, as TCP does.
      return a.when != b.when
                 ? a.when < b.when
                 : static_cast<std::int32_t>(a.node->timer_seq - b.node->timer_seq) < 0;
    }
  };

  std::unique_ptr<Backend> backend_;
  iteration_driver drive_;
  std::string backend_name_;
  Clock* clock_;
  detail::ready_queue ready_;
  detail::callback_pool pool_;
  detail::quaternary_heap<timer_entry, timer_earlier> timers_;  // earliest on top
  std::uint32_t timer_seq_ = 0;
  std::size_t cancelled_timers_ = 0;

  std::mutex threadsafe_mutex_;
  std::vector<detail::ready_node*> threadsafe_queue_;
  // threadsafe_pending_bit: threadsafe_queue_ may be non-empty (set by
  // call_soon_threadsafe, cleared by take_threadsafe, both under the mutex);
  // closed_bit: close() ran. One word, so that call_soon tests both at once.
  static constexpr std::uint8_t threadsafe_pending_bit = 1;
  static constexpr std::uint8_t closed_bit = 2;
  // debug_bit: debug mode is on (set_debug). In flags_ so that the checks
  // call_soon and check_open already make take debug mode's slow path.
  static constexpr std::uint8_t debug_bit = 4;
  std::atomic<std::uint8_t> flags_{0};
  duration slow_callback_duration_ = std::chrono::milliseconds(100);
  // Set by new_event_loop (policies): what set_debug also switches on and
  // off there (the SIGQUIT dump, which needs layers above the loop).
  void (*debug_hook_)(EventLoop& loop, bool enabled) = nullptr;
  // The thread running the loop while it runs (debug mode's thread check).
  std::atomic<std::thread::id> running_thread_{};

  detail::state_link* states_ = nullptr;  // live future states (detail::loop_access links them)
  // Made on first use by the layers above, torn down by close().
  std::unique_ptr<detail::loop_extension> default_executor_;  // core/executor
  std::unique_ptr<detail::loop_extension> signal_handlers_;   // core/signals
  std::unique_ptr<detail::loop_extension> child_watcher_;     // net/subprocess
  // Scheduled tasks are numbered from 1 (their default name, "Task-N").
  std::uint64_t tasks_created_ = 0;  // also LoopStats::tasks_created
  // Keyed by the task's task_root; an entry lives as long as its task.
  std::unordered_map<const void*, detail::task_notes> task_notes_;
  // Debug mode: where live futures and tasks were made (keyed by state).
  std::unordered_map<const void*, detail::debug_origin> origins_;
  ExceptionHandler handler_;
  // Atomic: another thread's run (a misuse) must see it, to throw.
  std::atomic<bool> running_{false};
  bool stopping_ = false;
  // Executor calls submitted from this loop whose completion has not been
  // delivered yet (core/executor counts them; loop thread only). 32 bits,
  // in what was padding: each call out holds memory of its own.
  std::uint32_t executor_calls_out_ = 0;
  // The thread that first ran the loop, kept when the backend is bound to
  // it (backend_traits::bound_to_first_thread).
  std::atomic<std::thread::id> owner_{};  // atomic: a misusing thread reads it
  // stats(): counted on the loop's thread, but for the wake-ups other
  // threads send (counted under threadsafe_mutex_, read without it). The
  // backend's own counts stay in the backend; stats() copies them.
  detail::loop_counters counts_;
  std::atomic<std::uint64_t> threadsafe_wakeups_{0};
};

// A loop whose backend type B (a final class: EpollBackend, IoUringBackend,
// AsioBackend) is fixed at compile time, so each iteration calls B::poll()
// directly instead of through the Backend vtable. Everything else is
// EventLoop's; operations that core/io/io.h starts still go through Backend&.
// bench/loopbench measures what the difference is worth.
template <class B>
  requires std::derived_from<B, Backend>
class StaticEventLoop : public EventLoop {
  static_assert(std::is_final_v<B>, "StaticEventLoop needs a final backend class");

 public:
  explicit StaticEventLoop(std::unique_ptr<B> backend, Clock& clock = SteadyClock::instance())
      : EventLoop(std::move(backend), clock, &EventLoop::run_iterations<B>) {}
};

// The loop running on this thread (asyncio.get_running_loop). Throws
// EventLoopError when none is.
EventLoop& get_running_loop();
// Same, or nullptr.
EventLoop* running_loop() noexcept;

inline detail::callback_node* EventLoop::acquire_node() {
  check_open_and_take_threadsafe();
  detail::callback_node* n = pool_.acquire();
  return n;
}

// Callbacks run without the call through ready_node::fn and its frame
// (issue 17: the callback path against libuv).
inline void EventLoop::run_node(detail::ready_node* node) {
  if (node->fn == &detail::callback_pool::run) {
    run_callbacks(static_cast<detail::callback_node*>(node), 1);
  } else {
    node->fn(node, detail::ready_node::action::run);
  }
}

template <class F>
Handle EventLoop::call_soon(F&& f) {
  static_assert(std::is_invocable_v<std::decay_t<F>&>,
                "call_soon takes a callable with no arguments");
  // The rare cases (closed, debug mode or threadsafe callbacks pending; no
  // free node; a full ready queue) leave through one branch, so the common
  // path calls nothing and has no registers to save (issue 17).
  if (flags_.load(std::memory_order_relaxed) != 0 || !pool_.has_free() || ready_.full())
      [[unlikely]] {
    return call_soon_slow(std::forward<F>(f));
  }
  return queue_callback(std::forward<F>(f));
}

template <class F>
Handle EventLoop::call_soon_slow(F&& f) {
  check_open_and_take_threadsafe();
  pool_.make_room();
  ready_.make_room();  // after taking the threadsafe callbacks, which may fill it
  return queue_callback(std::forward<F>(f));
}

template <class F>
inline Handle EventLoop::queue_callback(F&& f) {
  detail::callback_node* n = pool_.acquire_free();
  pool_.emplace_or_release(n, std::forward<F>(f));
  n->in_timer_heap = false;
  ready_.push_into_room(n);
  return Handle(n);
}

template <class F>
TimerHandle EventLoop::call_at(time_point when, F&& f) {
  static_assert(std::is_invocable_v<std::decay_t<F>&>,
                "call_at takes a callable with no arguments");
  detail::callback_node* n = acquire_node();
  pool_.emplace_or_release(n, std::forward<F>(f));
  n->in_timer_heap = true;
  n->timer_seq = timer_seq_++;
  timers_.push({when, n});
  ++counts_.timers_scheduled;
  return TimerHandle(n, when);
}

template <class F>
void EventLoop::call_soon_threadsafe(F&& f) {
  // On the thread running this loop, call_soon is the same FIFO without the
  // lock, the allocation of a box and a wake-up the loop does not need.
  // (A loop that is not running has no owning thread to recognise: there,
  // the queue below is taken by the next call_soon or iteration.)
  if (running_loop() == this) {
    call_soon(std::forward<F>(f));
    return;
  }
  using Box = detail::threadsafe_box<std::decay_t<F>>;
  auto* box = new Box(std::decay_t<F>(std::forward<F>(f)));
  {
    std::lock_guard<std::mutex> lock(threadsafe_mutex_);
    if (flags_.load(std::memory_order_relaxed) & closed_bit) {
      delete box;
      throw EventLoopError(
          "call_soon_threadsafe: event loop is closed; nothing can run on it any more");
    }
    threadsafe_queue_.push_back(box);
    // seq_cst, like the backends' wake flag: the loop clears that flag and
    // then reads this one, and must not miss a callback queued in between.
    flags_.fetch_or(threadsafe_pending_bit, std::memory_order_seq_cst);
    // Waking under the lock keeps close() from releasing the backend meanwhile.
    threadsafe_wakeups_.fetch_add(1, std::memory_order_relaxed);
    backend_->wakeup();
  }
}

}  // namespace polyloop
