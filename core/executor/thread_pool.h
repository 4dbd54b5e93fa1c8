// ThreadPoolExecutor: a bounded pool of threads for blocking calls, what
// asyncio's loops use through concurrent.futures.ThreadPoolExecutor.
//
// Threads start on demand, one per submitted job while none is idle, up to
// max_workers; an idle thread watches for the next job for
// spin_before_sleep, then sleeps until one comes. Jobs run in the order
// they were submitted. run_in_executor() and to_thread() (executor.h) are
// how a loop uses one; submit() is their plumbing.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <thread>
#include <vector>

namespace polyloop {

namespace detail {
// One unit of work. The pool calls exactly one of run() (on a worker) or
// drop() (shutdown with cancel_pending, on the thread calling shutdown), once.
struct executor_job {
  virtual ~executor_job() = default;
  virtual void run() noexcept = 0;
  virtual void drop() noexcept = 0;
};
}  // namespace detail

class ThreadPoolExecutor;
namespace detail {
struct pool_core;  // what the pool and its threads share (thread_pool.cc)
// Waits until every thread of `pool` has ended (after its shutdown), or
// stop is requested (then false); checks `stop` every 10 ms.
// shutdown_default_executor's joining thread uses it.
bool wait_for_threads_to_end(ThreadPoolExecutor& pool, std::stop_token stop);
}  // namespace detail

class ThreadPoolExecutor {
 public:
  // 0 means Python's default: min(32, hardware threads + 4).
  explicit ThreadPoolExecutor(std::size_t max_workers = 0);
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;
  // shutdown(true): runs every job already submitted, then joins the threads.
  ~ThreadPoolExecutor();

  std::size_t max_workers() const noexcept { return max_workers_; }

  // Queues `job`. Throws EventLoopError after shutdown() (Python raises
  // RuntimeError: "cannot schedule new futures after shutdown"), or
  // std::system_error if no thread could be started and none runs.
  void submit(std::shared_ptr<detail::executor_job> job);

  // Takes no more jobs. cancel_pending: jobs not started yet are dropped
  // (their futures end cancelled) instead of run. wait: returns once every
  // thread has ended, else at once (the threads end by themselves, and the
  // destructor joins them). Calling it again is harmless; from one of the
  // pool's own threads, wait is ignored (a thread cannot join itself).
  void shutdown(bool wait = true, bool cancel_pending = false);

  // What a loop's close() does to its default executor: shutdown(wait,
  // cancel_pending), except that a thread inside a job is detached instead
  // of joined, so that a job blocked for ever (a read of a pipe nobody
  // writes) cannot block close(). Only for jobs that own what they touch
  // (core/file's operations, a File's close); the detached thread keeps what
  // it shares with the pool and ends when its job returns.
  void shutdown_leaving_busy_threads() noexcept;

  // How long an idle thread spins, watching for a job, before it sleeps: a
  // job submitted meanwhile starts without a futex wake-up (bench/loopbench
  // to_thread, docs/benchmarks.md).
  static constexpr std::chrono::microseconds spin_before_sleep{10};

 private:
  friend bool detail::wait_for_threads_to_end(ThreadPoolExecutor&, std::stop_token);
  const std::size_t max_workers_;
  std::shared_ptr<detail::pool_core> core_;
  std::vector<std::thread> threads_;  // under core_->mutex
};

}  // namespace polyloop
