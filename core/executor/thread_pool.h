// ThreadPoolExecutor: a bounded pool of threads for blocking calls, what
// asyncio's loops use through concurrent.futures.ThreadPoolExecutor.
//
// Threads start on demand, one per submitted job while none is idle, up to
// max_workers; an idle thread waits for the next job. Jobs run in the order
// they were submitted. run_in_executor() and to_thread() (executor.h) are
// how a loop uses one; submit() is their plumbing.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
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

 private:
  void worker() noexcept;

  const std::size_t max_workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::deque<std::shared_ptr<detail::executor_job>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;
  bool shut_down_ = false;
};

}  // namespace polyloop
