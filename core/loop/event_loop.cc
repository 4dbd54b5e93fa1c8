#include "core/loop/event_loop.h"

#include <cstdio>
#include <system_error>

#include "core/loop/loop_access.h"

namespace polyloop {

namespace {
thread_local EventLoop* current_loop = nullptr;

// Calls f on every live state, holding a reference to each meanwhile: what f
// does to one (end a task, destroy its frame) may release others.
template <class F>
void for_each_live_state(detail::state_link* head, F f) {
  std::vector<detail::state_link*> live;
  for (detail::state_link* s = head; s != nullptr; s = s->next) {
    s->add_ref();
    live.push_back(s);
  }
  for (detail::state_link* s : live) f(s);
  for (detail::state_link* s : live) s->release();
}
}  // namespace

SteadyClock& SteadyClock::instance() noexcept {
  static SteadyClock clock;
  return clock;
}

EventLoop& get_running_loop() {
  if (current_loop == nullptr) {
    throw EventLoopError(
        "no running event loop: call this from a task or callback that the loop runs");
  }
  return *current_loop;
}

EventLoop* running_loop() noexcept { return current_loop; }

// --- Handle -----------------------------------------------------------------

void Handle::cancel() noexcept {
  detail::callback_node* n = node_;
  if (n == nullptr || n->generation != generation_ || n->cancelled) return;
  cancelled_here_ = true;
  n->cancelled = true;
  n->release();  // drop what the callback captured now, as asyncio does
  if (n->in_timer_heap) n->pool->loop().note_cancelled_timer();
}

bool Handle::cancelled() const noexcept {
  if (cancelled_here_) return true;
  return node_ != nullptr && node_->generation == generation_ && node_->cancelled;
}

// --- callback_pool ----------------------------------------------------------

void detail::report_threadsafe_exception() noexcept {
  // A threadsafe callable runs only from the loop's ready queue.
  get_running_loop().call_exception_handler(
      {"exception in a call_soon_threadsafe callback", std::current_exception()});
}

void detail::callback_pool::grow() {
  constexpr std::size_t chunk = 256;
  auto nodes = std::make_unique_for_overwrite<callback_node[]>(chunk);
  for (std::size_t i = 0; i < chunk; ++i) {
    nodes[i].fn = &callback_pool::run;
    nodes[i].pool = this;
    nodes[i].free = true;
    nodes[i].set_next_free((i + 1 < chunk) ? &nodes[i + 1] : free_);
  }
  free_ = &nodes[0];
  chunks_.push_back(std::move(nodes));
}

void detail::callback_pool::run(ready_node* node, ready_node::action what) {
  auto* n = static_cast<callback_node*>(node);
  if (what == ready_node::action::run) {
    n->pool->run_popped(n);
  } else {
    n->pool->release(n);
  }
}

void detail::count_threadsafe_callback() noexcept {
  if (current_loop != nullptr) ++detail::loop_access::counts(*current_loop).threadsafe_callbacks_run;
}

// Out of line, so that run() keeps no strings or stack canary of its own.
void detail::callback_pool::report_exception(EventLoop& loop) noexcept {
  loop.call_exception_handler({"exception in callback", std::current_exception()});
}

// --- EventLoop --------------------------------------------------------------

EventLoop::EventLoop(std::unique_ptr<Backend> backend, Clock& clock, iteration_driver drive)
    : backend_(std::move(backend)),
      drive_(drive),
      backend_name_(backend_->name()),
      // A backend with a clock of its own (sim's virtual time) runs on it
      // unless the loop is given another.
      clock_(&clock == &SteadyClock::instance() && backend_->own_clock() != nullptr
                 ? backend_->own_clock()
                 : &clock),
      pool_(*this) {
  if (debug_from_environment()) set_debug(true);
  backend_->set_exception_reporter(
      [](void* loop, const char* what, std::exception_ptr e) noexcept {
        static_cast<EventLoop*>(loop)->call_exception_handler({what, std::move(e)});
      },
      this);
}

EventLoop::~EventLoop() {
  if (running_) {
    std::fputs("polyloop: an EventLoop was destroyed while running; aborting\n", stderr);
    std::abort();
  }
  close();
  // Whatever still refers to this loop (futures users kept) must stop doing so.
  while (states_ != nullptr) {
    detail::state_link* s = states_;
    detail::loop_access::unlink_state(*this, s);
    s->on_loop_event(detail::state_link::loop_event::destroyed);
  }
  // The backend goes last, not in close(): the frames that close() destroyed
  // and the user's objects made on it (Asio timers and sockets on the asio
  // backend's io_context) are gone by now, and none of them may outlive it.
  backend_.reset();
}

void EventLoop::throw_closed() {
  throw EventLoopError(
      "event loop is closed: a closed loop cannot schedule or run anything; create a new "
      "loop with new_event_loop()");
}

void EventLoop::schedule(detail::ready_node* node) {
  // A task's step or a future's callback is a call_soon in asyncio: the same
  // FIFO, so callbacks other threads queued earlier go first.
  if (flags_.load(std::memory_order_relaxed) != 0 || ready_.full()) [[unlikely]] {
    schedule_slow(node);
    return;
  }
  ready_.push_into_room(node);  // the common path calls nothing (as call_soon's)
}

void EventLoop::schedule_slow(detail::ready_node* node) {
  check_open_and_take_threadsafe();
  ready_.push(node);
}

Backend& EventLoop::backend() {
  check_open();
  return *backend_;
}

void EventLoop::check_can_run() const {
  check_open();
  if (running_.load()) {
    throw EventLoopError(
        "this event loop is already running (on this or another thread); use create_task() "
        "to add work, or call_soon_threadsafe() from another thread");
  }
  if (current_loop != nullptr) {
    throw EventLoopError("cannot run an event loop while another loop is running on this thread");
  }
  std::thread::id owner = owner_.load(std::memory_order_relaxed);
  if (owner != std::thread::id() && owner != std::this_thread::get_id()) {
    throw EventLoopError("this event loop's backend (" + backend_name_ +
                         ") is bound to the thread that first ran the loop; run it on that "
                         "thread only, or make one loop per thread");
  }
}

// Marks the loop as running on this thread for the scope's life.
struct EventLoop::running_scope {
  explicit running_scope(EventLoop& l) : loop(l) {
    loop.check_can_run();
    // Two threads may pass the check at once: only one takes the loop.
    if (loop.running_.exchange(true)) {
      throw EventLoopError("this event loop is already running on another thread");
    }
    if (loop.backend_->traits().bound_to_first_thread &&
        loop.owner_.load(std::memory_order_relaxed) == std::thread::id()) {
      loop.owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    }
    loop.running_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    current_loop = &loop;
  }
  ~running_scope() {
    loop.running_thread_.store(std::thread::id(), std::memory_order_relaxed);
    loop.running_.store(false);
    loop.stopping_ = false;
    current_loop = nullptr;
  }
  EventLoop& loop;
};

void EventLoop::run_forever() {
  running_scope running(*this);
  drive_(*this);
}

void EventLoop::run_one_iteration() {
  running_scope running(*this);
  run_once(*backend_);
}

void EventLoop::close() {
  if (running_) throw EventLoopError("cannot close a running event loop; call stop() first");
  if (is_closed()) return;
  std::vector<detail::ready_node*> never_run;
  {
    std::lock_guard<std::mutex> lock(threadsafe_mutex_);
    flags_.fetch_or(closed_bit, std::memory_order_relaxed);
    never_run.swap(threadsafe_queue_);
  }
  // Discarded outside the lock: a callable's destructor may take a lock of
  // its own that another thread holds while it calls call_soon_threadsafe
  // (run_coroutine_threadsafe's cancel() does).
  for (detail::ready_node* n : never_run) n->fn(n, detail::ready_node::action::discard);
  // Before any frame goes: no operation may outlive its memory in the kernel.
  backend_->shutdown();
  ready_.discard_all();
  // Out of the heap first: releasing runs user destructors.
  for (timer_entry& t : timers_.take()) pool_.release(t.node);
  cancelled_timers_ = 0;
  // Tasks still pending can never run again.
  for_each_live_state(states_, [](detail::state_link* s) {
    s->on_loop_event(detail::state_link::loop_event::closed);
  });
  // After the states: each job of the executor that belongs to a future of
  // this loop has been cancelled or waited for by now (core/executor).
  if (default_executor_) default_executor_->on_close();
  if (signal_handlers_) signal_handlers_->on_close();  // the process's handlers come back
  if (child_watcher_) child_watcher_->on_close();      // children still running: killed, reaped
}

LoopStats EventLoop::stats() const noexcept {
  LoopStats s;
  s.iterations = counts_.iterations;
  // Derived, so that running a callback counts nothing: the callbacks
  // run_callbacks() popped (those of its current run too, when a callback
  // asks), but the cancelled ones.
  std::uint64_t popped = counts_.callbacks_popped;
  if (callbacks_run_from_ != no_callbacks_run) popped += ready_.popped() - callbacks_run_from_;
  s.callbacks_run = popped - pool_.cancelled_popped() + counts_.threadsafe_callbacks_run;
  s.timers_scheduled = counts_.timers_scheduled;
  s.timers_fired = counts_.timers_fired;
  s.timers_cancelled = counts_.timers_cancelled;
  s.tasks_created = tasks_created_;
  s.tasks_finished = counts_.tasks_finished;
  for (std::size_t k = 0; k < op_kind_count; ++k) {
    s.ops[k] = {counts_.ops_started[k], counts_.ops_completed[k], counts_.ops_cancelled[k]};
  }
  s.waits_nonblocking = counts_.waits_nonblocking;
  s.waits_blocking = counts_.iterations - counts_.waits_nonblocking;
  s.threadsafe_wakeups = threadsafe_wakeups_.load(std::memory_order_relaxed);
  s.backend = backend_->counters();
  return s;
}

void EventLoop::call_exception_handler(const ExceptionContext& context) noexcept {
  if (!handler_) {
    print_exception(context);
    return;
  }
  try {
    handler_(*this, context);
  } catch (...) {
    print_exception({"exception in the loop's exception handler", std::current_exception()});
    print_exception(context);
  }
}

void EventLoop::print_exception(const ExceptionContext& context) noexcept {
  std::string what;
  if (context.exception) {
    try {
      std::rethrow_exception(context.exception);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "an exception not derived from std::exception";
    }
  }
  if (what.empty()) {
    std::fprintf(stderr, "polyloop: %s\n", context.message.c_str());
  } else {
    std::fprintf(stderr, "polyloop: %s: %s\n", context.message.c_str(), what.c_str());
  }
}

std::size_t EventLoop::cancel_all_tasks() {
  check_open();
  std::size_t cancelled = 0;
  for_each_live_state(states_, [&cancelled](detail::state_link* s) {
    cancelled += s->on_loop_event(detail::state_link::loop_event::cancel_task) ? 1 : 0;
  });
  if (cancelled == 0) return 0;
  // Run until no task is pending; each iteration lets cancelled tasks unwind.
  auto any_pending = [this] {
    for (detail::state_link* s = states_; s != nullptr; s = s->next) {
      if (s->on_loop_event(detail::state_link::loop_event::is_pending_task)) return true;
    }
    return false;
  };
  // One iteration at a time, each waiting in the backend as run_forever()
  // would (not a stop() per pass, which would make every wait zero and spin
  // while a task unwinds slowly, e.g. a stream flushing at shutdown).
  while (any_pending()) run_one_iteration();
  return cancelled;
}

void EventLoop::note_cancelled_timer() noexcept {
  // Only counted here: a cancel can come from a callable's destructor while
  // its own node is being released, and compacting then would release that
  // node again. fire_expired_timers() compacts, with no user code on the stack.
  ++cancelled_timers_;
  ++counts_.timers_cancelled;
}

void EventLoop::compact_timers() {
  timers_.retain([this](const timer_entry& t) {
    if (!t.node->cancelled) return true;
    pool_.release(t.node);
    return false;
  });
  cancelled_timers_ = 0;
}

void EventLoop::closed_or_threadsafe_pending() {
  // The thread check's message cannot tell which of these asked: passing
  // the name on the fast path made g++ stop inlining call_soon.
  check_open("call_soon, call_at or another loop method that schedules a callback");
  // In debug mode every call comes here, pending or not.
  if (flags_.load(std::memory_order_relaxed) & threadsafe_pending_bit) take_threadsafe();
}

bool EventLoop::post_threadsafe(detail::ready_node* node) {
  std::lock_guard<std::mutex> lock(threadsafe_mutex_);
  if (flags_.load(std::memory_order_relaxed) & closed_bit) return false;
  threadsafe_queue_.push_back(node);
  // As call_soon_threadsafe: seq_cst, and the wake-up under the lock.
  flags_.fetch_or(threadsafe_pending_bit, std::memory_order_seq_cst);
  backend_->wakeup();
  return true;
}

void EventLoop::take_threadsafe() {
  std::lock_guard<std::mutex> lock(threadsafe_mutex_);
  flags_.fetch_and(static_cast<std::uint8_t>(~threadsafe_pending_bit), std::memory_order_relaxed);
  for (detail::ready_node* n : threadsafe_queue_) ready_.push(n);
  threadsafe_queue_.clear();
}

std::chrono::nanoseconds EventLoop::watch_for_threadsafe(std::chrono::nanoseconds timeout) {
  using std::chrono::steady_clock;
  std::chrono::nanoseconds limit = executor_watch_limit;
  if (timeout.count() > 0 && timeout < limit) limit = timeout;
  const steady_clock::time_point start = steady_clock::now();
  for (;;) {
    if (flags_.load(std::memory_order_relaxed) & threadsafe_pending_bit) {
      return std::chrono::nanoseconds(0);
    }
    // A yield per look, not a pure spin: on a machine with few, busy cores
    // the call's worker may need this very core (a spin of 64 pauses per
    // look measured 5.8 us per to_thread against 4.3 us with a yield each).
    std::this_thread::yield();
    std::chrono::nanoseconds spent = steady_clock::now() - start;
    if (spent >= limit) {
      if (timeout.count() < 0) return timeout;
      return std::max(timeout - spent, std::chrono::nanoseconds(0));
    }
  }
}

std::chrono::nanoseconds EventLoop::compute_timeout() {
  if (!ready_.empty() || stopping_) return std::chrono::nanoseconds(0);
  return timeout_from_timers();
}

// compute_timeout()'s part with a loop and calls, apart, so that an
// iteration with callbacks ready saves no registers to learn it.
std::chrono::nanoseconds EventLoop::timeout_from_timers() {
  // Cancelled timers on top of the heap must not decide the timeout.
  while (!timers_.empty() && timers_.top().node->cancelled) {
    pool_.release(timers_.top().node);
    timers_.pop();
    --cancelled_timers_;
  }
  if (timers_.empty()) return std::chrono::nanoseconds(-1);
  time_point deadline = timers_.top().when;
  time_point now = clock_->now();
  if (deadline <= now || clock_->skip_to(deadline)) return std::chrono::nanoseconds(0);
  return std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
}

void EventLoop::fire_expired_timers() {
  if (timers_.empty()) return;
  // Compact once most of a large heap is cancelled timers, so that code
  // which schedules and cancels many timeouts does not grow the heap.
  if (cancelled_timers_ > 50 && cancelled_timers_ * 2 > timers_.size()) [[unlikely]] {
    compact_timers();
  }
  time_point now = clock_->now();
  while (!timers_.empty() && timers_.top().when <= now) {
    detail::callback_node* n = timers_.top().node;
    timers_.pop();
    if (n->cancelled) {
      --cancelled_timers_;
      pool_.release(n);
    } else {
      n->in_timer_heap = false;
      ready_.push(n);
      ++counts_.timers_fired;
    }
  }
}

void EventLoop::throw_poll_error(std::error_code ec) const {
  std::string what = backend_name_ + " backend: waiting for events";
  // Refused, not failed: a seccomp filter or security policy that let the
  // backend set up denies its wait (io_uring_enter after io_uring_setup).
  if (ec == std::errc::operation_not_permitted || ec == std::errc::permission_denied ||
      ec == std::errc::function_not_supported) {
    what += " (the wait's system call was refused, e.g. by a seccomp filter or security "
            "policy; choose another backend with --backend=NAME or POLYLOOP_BACKEND)";
  }
  throw std::system_error(ec, what);
}

void EventLoop::run_ready() {
  if (flags_.load(std::memory_order_relaxed) & debug_bit) [[unlikely]] {
    run_ready_debug();
    return;
  }
  // Only what is ready now runs in this iteration.
  for (std::size_t n = ready_.size(); n != 0;) {
    detail::ready_node* node = ready_.pop();
    if (node->fn == &detail::callback_pool::run) {
      n = run_callbacks(static_cast<detail::callback_node*>(node), n);
    } else {
      node->fn(node, detail::ready_node::action::run);
      --n;
    }
  }
}

// Apart from run_ready(), which then keeps few registers to save: an
// iteration with one task step (sleep_chain) pays no more than before.
// It counts the callbacks it pops once per run, not per callback (stats()).
std::size_t EventLoop::run_callbacks(detail::callback_node* first, std::size_t left) noexcept {
  callbacks_run_from_ = ready_.popped() - 1;  // `first` was popped
  detail::callback_node* n = first;
  for (;;) {
    pool_.run_popped(n);  // catches what the callback throws
    if (--left == 0) break;
    detail::ready_node* next = ready_.front();
    if (next->fn != &detail::callback_pool::run) break;
    ready_.drop_front();
    n = static_cast<detail::callback_node*>(next);
  }
  counts_.callbacks_popped += ready_.popped() - callbacks_run_from_;
  callbacks_run_from_ = no_callbacks_run;
  return left;
}

}  // namespace polyloop
