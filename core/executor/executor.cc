#include "core/executor/executor.h"

#include <string>

#include "core/combinators/timeout.h"

namespace polyloop {

namespace detail {

bool executor_call_base::cancel_if_queued() noexcept {
  stop_.request_stop();
  std::lock_guard<std::mutex> lock(mutex_);
  if (phase_ != phase::queued) return false;
  phase_ = phase::skipped;
  return true;
}

void executor_call_base::abandon() noexcept {
  stop_.request_stop();
  std::unique_lock<std::mutex> lock(mutex_);
  if (phase_ == phase::queued) phase_ = phase::skipped;
  ended_.wait(lock, [this] { return phase_ != phase::running; });
  claimed_ = false;
}

bool executor_call_base::start() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (phase_ != phase::queued) return false;
  phase_ = phase::running;
  return true;
}

void executor_call_base::finished(phase how) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  phase_ = how;
  ended_.notify_all();
  if (!claimed_) return;  // close() abandoned the call: the loop may be gone
  // The pool (or shutdown's list) holds the call while this runs, so
  // dropping queued_self_ here never destroys it under its own mutex.
  queued_self_ = shared_from_this();
  try {
    if (loop_access::post_threadsafe(*loop_, &delivery_)) return;
  } catch (...) {
    // No memory for the loop's queue to grow.
  }
  // The loop is closing (its close() has not reached this call's future yet
  // and will abandon it), or out of memory: either way the loop's close()
  // releases the future; nothing else can be done here.
  queued_self_.reset();
}

void executor_call_base::on_delivery(ready_node* n, ready_node::action what) noexcept {
  executor_call_base* self = static_cast<delivery_node*>(n)->call;
  std::shared_ptr<executor_call_base> keep = std::move(self->queued_self_);
  --loop_access::executor_calls_out(*self->loop_);
  if (what == ready_node::action::run) self->deliver();
}

bool executor_call_base::take_delivery() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!claimed_) return false;
  claimed_ = false;
  return true;
}

// The loop keeps its default executor as an extension it destroys last.
struct default_executor final : loop_extension {
  explicit default_executor(std::unique_ptr<ThreadPoolExecutor> p) : pool(std::move(p)) {}
  // Every call of this loop's futures was skipped or waited for by now, so
  // the threads are idle or finishing a call whose future is gone.
  // A thread still in a job by then runs a file operation or a File's close
  // (core/file), which own what they touch: it is left to end by itself,
  // so that a read nobody answers cannot block close().
  void on_close() noexcept override {
    pool->shutdown_leaving_busy_threads();
    if (joiner) joiner->shutdown(true);
  }
  std::unique_ptr<ThreadPoolExecutor> pool;
  std::unique_ptr<ThreadPoolExecutor> joiner;  // shutdown_default_executor's
};

ThreadPoolExecutor& default_executor_of(EventLoop& loop) {
  std::unique_ptr<loop_extension>& slot = loop_access::default_executor(loop);
  if (!slot) slot = std::make_unique<default_executor>(std::make_unique<ThreadPoolExecutor>());
  return *static_cast<default_executor&>(*slot).pool;
}

}  // namespace detail

void set_default_executor(EventLoop& loop, std::unique_ptr<ThreadPoolExecutor> executor) {
  if (!executor) throw std::invalid_argument("set_default_executor: the executor is null");
  detail::loop_access::check_open(loop);
  std::unique_ptr<detail::loop_extension>& slot = detail::loop_access::default_executor(loop);
  std::unique_ptr<detail::loop_extension> old = std::move(slot);
  slot = std::make_unique<detail::default_executor>(std::move(executor));
  // The old pool's calls still deliver to the loop: it finishes them first.
  old.reset();
}

Task<> shutdown_default_executor(EventLoop& loop, std::chrono::nanoseconds timeout) {
  std::unique_ptr<detail::loop_extension>& slot = detail::loop_access::default_executor(loop);
  if (!slot) co_return;
  auto& ext = static_cast<detail::default_executor&>(*slot);
  ThreadPoolExecutor* pool = ext.pool.get();
  pool->shutdown(false);  // no more calls; the threads end when the queue is empty
  // Joining blocks, so a thread of its own does it (asyncio does the same);
  // the loop keeps that thread and joins it when it closes.
  if (!ext.joiner) ext.joiner = std::make_unique<ThreadPoolExecutor>(1);
  // It waits, rather than joins, so that close() can stop it (stop_token):
  // a thread blocked in a file read may never end. close() joins what ended.
  Future<> joined = run_in_executor(loop, ext.joiner.get(), [pool](std::stop_token stop) {
    detail::wait_for_threads_to_end(*pool, std::move(stop));
  });
  try {
    co_await wait_for(joined, timeout);
  } catch (const TimeoutError&) {
    loop.call_exception_handler(
        {"shutdown_default_executor: the default executor's threads did not end within the "
         "timeout; close() will wait for the calls of this loop's futures, and leave a thread "
         "blocked in a file operation to end by itself",
         std::current_exception()});
  }
}

}  // namespace polyloop
