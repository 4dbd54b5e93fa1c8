#include "core/executor/thread_pool.h"

#include <algorithm>
#include <system_error>
#include <utility>

#include "core/errors/errors.h"
#include "core/errors/invariant.h"

namespace polyloop {

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t max_workers)
    : max_workers_(max_workers != 0
                       ? max_workers
                       : std::min<std::size_t>(32, std::thread::hardware_concurrency() + 4)) {}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  shutdown(true);
  // Left only if this runs on one of the pool's threads, which would go on
  // using the pool after it is freed.
  POLYLOOP_INVARIANT(threads_.empty(), "a ThreadPoolExecutor destroyed by one of its own threads");
}

void ThreadPoolExecutor::submit(std::shared_ptr<detail::executor_job> job) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (shut_down_) {
    throw EventLoopError(
        "cannot run a function in an executor that was shut down; use another executor (the "
        "loop's default one is shut down by shutdown_default_executor(), run() and close())");
  }
  jobs_.push_back(std::move(job));
  if (idle_ >= jobs_.size() || threads_.size() >= max_workers_) {
    work_ready_.notify_one();
    return;
  }
  try {
    threads_.emplace_back([this] { worker(); });
  } catch (const std::system_error&) {
    // No thread now (EAGAIN: a process or memory limit). A running thread
    // takes the job later; with none, the caller must hear it now.
    if (!threads_.empty()) return;
    jobs_.pop_back();
    throw;
  }
}

void ThreadPoolExecutor::worker() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    ++idle_;
    work_ready_.wait(lock, [this] { return !jobs_.empty() || shut_down_; });
    --idle_;
    if (jobs_.empty()) return;  // shut down and nothing left to run
    std::shared_ptr<detail::executor_job> job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job->run();
    job.reset();  // the job's last reference may go here, not under the lock
    lock.lock();
  }
}

void ThreadPoolExecutor::shutdown(bool wait, bool cancel_pending) {
  std::deque<std::shared_ptr<detail::executor_job>> dropped;
  std::vector<std::thread> to_join;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shut_down_ = true;
    if (cancel_pending) dropped.swap(jobs_);
    bool on_own_thread = std::any_of(threads_.begin(), threads_.end(), [](const std::thread& t) {
      return t.get_id() == std::this_thread::get_id();
    });
    if (wait && !on_own_thread) to_join.swap(threads_);
  }
  work_ready_.notify_all();
  for (auto& job : dropped) job->drop();
  // submit() starts no thread once shut_down_ is set, so none is missed.
  for (std::thread& t : to_join) t.join();
}

}  // namespace polyloop
