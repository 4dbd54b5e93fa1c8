#include "core/executor/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <utility>

#include "core/errors/errors.h"
#include "core/errors/invariant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace polyloop {

namespace detail {

// Shared by the pool and each of its threads, so that a thread detached at a
// loop's close (shutdown_leaving_busy_threads) can outlive the pool.
struct pool_core {
  std::mutex mutex;
  std::condition_variable work_ready;
  std::condition_variable all_ended;  // live reached 0
  std::deque<std::shared_ptr<executor_job>> jobs;
  // busy[i]: thread i runs a job. Sized to max_workers up front, so that it
  // never moves while a thread holds an index into it.
  std::vector<char> busy;
  std::size_t live = 0;      // threads started and not yet ended
  std::size_t idle = 0;      // threads asleep on work_ready
  std::size_t spinning = 0;  // threads watching `queued` before they sleep
  bool shut_down = false;
  // jobs.size(), readable without the mutex by the spinning threads.
  std::atomic<std::size_t> queued{0};
};

namespace {

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Outside the mutex: true once a job is queued, false after
// ThreadPoolExecutor::spin_before_sleep without one. It yields the CPU
// between rounds: on a busy machine (two cores, other processes) a pure
// spin takes the core from the very loop thread that would submit the next
// job, and made to_thread 3-5 times slower than no spin at all
// (docs/benchmarks.md).
bool spin_for_job(pool_core& c) noexcept {
  auto deadline = std::chrono::steady_clock::now() + ThreadPoolExecutor::spin_before_sleep;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (c.queued.load(std::memory_order_relaxed) != 0) return true;
      cpu_relax();
    }
    std::this_thread::yield();
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

// A thread of the pool: runs queued jobs until the pool shuts down with
// nothing left to run. Between jobs it spins briefly (a job often follows
// at once: a loop awaiting calls one after another), then sleeps.
void worker(std::shared_ptr<pool_core> core, std::size_t index) noexcept {
  pool_core& c = *core;
  std::unique_lock<std::mutex> lock(c.mutex);
  for (;;) {
    if (c.jobs.empty() && !c.shut_down) {
      ++c.spinning;
      lock.unlock();
      spin_for_job(c);
      lock.lock();
      --c.spinning;
      // Under the mutex, so submit() either saw this thread spinning and
      // queued before this test, or sees it idle and notifies.
      ++c.idle;
      c.work_ready.wait(lock, [&c] { return !c.jobs.empty() || c.shut_down; });
      --c.idle;
    }
    if (c.jobs.empty()) {  // shut down and nothing left to run
      if (--c.live == 0) c.all_ended.notify_all();
      return;
    }
    std::shared_ptr<executor_job> job = std::move(c.jobs.front());
    c.jobs.pop_front();
    c.queued.store(c.jobs.size(), std::memory_order_relaxed);
    c.busy[index] = 1;
    lock.unlock();
    job->run();
    job.reset();  // the job's last reference may go here, not under the lock
    lock.lock();
    c.busy[index] = 0;
  }
}

}  // namespace

bool wait_for_threads_to_end(ThreadPoolExecutor& pool, std::stop_token stop) {
  std::shared_ptr<pool_core> core = pool.core_;
  std::unique_lock<std::mutex> lock(core->mutex);
  while (core->live != 0) {
    if (stop.stop_requested()) return false;
    core->all_ended.wait_for(lock, std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace detail

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t max_workers)
    : max_workers_(max_workers != 0
                       ? max_workers
                       : std::min<std::size_t>(32, std::thread::hardware_concurrency() + 4)),
      core_(std::make_shared<detail::pool_core>()) {
  core_->busy.assign(max_workers_, 0);
  threads_.reserve(max_workers_);
}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  shutdown(true);
  // Left only if this runs on one of the pool's threads, which would go on
  // using the pool after it is freed.
  POLYLOOP_INVARIANT(threads_.empty(), "a ThreadPoolExecutor destroyed by one of its own threads");
}

void ThreadPoolExecutor::submit(std::shared_ptr<detail::executor_job> job) {
  detail::pool_core& c = *core_;
  std::unique_lock<std::mutex> lock(c.mutex);
  if (c.shut_down) {
    throw EventLoopError(
        "cannot run a function in an executor that was shut down; use another executor (the "
        "loop's default one is shut down by shutdown_default_executor(), run() and close())");
  }
  c.jobs.push_back(std::move(job));
  c.queued.store(c.jobs.size(), std::memory_order_relaxed);
  if (c.spinning >= c.jobs.size()) return;  // a spinning thread takes it: no wake-up
  if (c.idle + c.spinning >= c.jobs.size() || threads_.size() >= max_workers_) {
    c.work_ready.notify_one();
    return;
  }
  try {
    threads_.emplace_back(detail::worker, core_, threads_.size());
    ++c.live;
  } catch (const std::system_error&) {
    // No thread now (EAGAIN: a process or memory limit). A running thread
    // takes the job later; with none, the caller must hear it now.
    if (!threads_.empty()) return;
    c.jobs.pop_back();
    c.queued.store(c.jobs.size(), std::memory_order_relaxed);
    throw;
  }
}

void ThreadPoolExecutor::shutdown(bool wait, bool cancel_pending) {
  std::shared_ptr<detail::pool_core> core = core_;  // this pool may go while the joins wait
  detail::pool_core& c = *core;
  std::deque<std::shared_ptr<detail::executor_job>> dropped;
  std::vector<std::thread> to_join;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.shut_down = true;
    if (cancel_pending) {
      dropped.swap(c.jobs);
      c.queued.store(0, std::memory_order_relaxed);
    }
    bool on_own_thread = std::any_of(threads_.begin(), threads_.end(), [](const std::thread& t) {
      return t.get_id() == std::this_thread::get_id();
    });
    if (wait && !on_own_thread) to_join.swap(threads_);
  }
  c.work_ready.notify_all();
  for (auto& job : dropped) job->drop();
  // submit() starts no thread once shut_down is set, so none is missed.
  for (std::thread& t : to_join) t.join();
}

void ThreadPoolExecutor::shutdown_leaving_busy_threads() noexcept {
  detail::pool_core& c = *core_;
  std::deque<std::shared_ptr<detail::executor_job>> dropped;
  std::vector<std::thread> to_join;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.shut_down = true;
    dropped.swap(c.jobs);
    c.queued.store(0, std::memory_order_relaxed);
    for (std::size_t i = 0; i < threads_.size(); ++i) {
      // An idle thread ends at once; a busy one ends when its job returns,
      // which may be never.
      if (c.busy[i] != 0) {
        threads_[i].detach();
      } else {
        to_join.push_back(std::move(threads_[i]));
      }
    }
    threads_.clear();
  }
  c.work_ready.notify_all();
  for (auto& job : dropped) job->drop();
  for (std::thread& t : to_join) t.join();
}

}  // namespace polyloop
