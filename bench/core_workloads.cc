// The workloads of ../shared/bench/WORKLOADS.md that need no network:
// callbacks, tasks, timers, sleep_chain, queue and lock, run inside one worker process of
// loopbench (one process per run, so memory figures start clean).
#include "bench/core_workloads.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "bench/alloc_count.h"
#include "bench/file_workloads.h"
#include "bench/loop_counters.h"
#include "bench/pingpong_tasks.h"
#include "polyloop/polyloop.h"

namespace loopbench {

namespace pl = polyloop;
using namespace std::chrono_literals;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The worst resident set so far (ru_maxrss), in KiB.
double peak_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss);
}

// The resident set now, in KiB.
double current_rss_kib() {
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1024.0;
}

void set_time(run_record& r, double n, double seconds) {
  r.set("n", n);
  r.set("seconds", seconds);
  r.set("ns_per_op", seconds * 1e9 / n);
}

// callbacks: 100 chains, each a callback that counts and reschedules itself
// with call_soon until the shared counter reaches N.
struct chain {
  pl::EventLoop* loop;
  long* counter;
  long n;
  void operator()() const {
    if (*counter >= n) return;  // another chain reached N first
    if (++*counter < n) {
      loop->call_soon(*this);
    } else {
      loop->stop();
    }
  }
};

void callbacks(pl::EventLoop& loop, run_record& r) {
  const long n = 2'000'000;
  long counter = 0;
  double t0 = now_s();
  for (int i = 0; i < 100; ++i) loop.call_soon(chain{&loop, &counter, n});
  loop.run_forever();
  set_time(r, static_cast<double>(n), now_s() - t0);
  r.ok = counter == n;
  if (!r.ok) r.error = "the counter ended at " + std::to_string(counter);
}

// tasks: T tasks, each awaits sleep(0) once and returns its index; gathered.
pl::Task<int> one_task(int i) {
  co_await pl::sleep(0ms);
  co_return i;
}

pl::Task<std::vector<int>> spawn_and_gather(int count) {
  std::vector<pl::Task<int>> tasks;
  tasks.reserve(count);
  for (int i = 0; i < count; ++i) tasks.push_back(one_task(i));
  co_return co_await pl::gather(std::move(tasks));
}

void tasks(pl::EventLoop& loop, run_record& r) {
  const int t = 100'000;
  double rss_before = current_rss_kib();
  double t0 = now_s();
  std::vector<int> results = loop.run_until_complete(spawn_and_gather(t));
  double t1 = now_s();
  double rss_after = peak_rss_kib();
  set_time(r, t, t1 - t0);
  r.set("bytes_per_task", (rss_after - rss_before) * 1024.0 / t);
  long long sum = 0;
  bool in_order = results.size() == static_cast<std::size_t>(t);
  for (std::size_t i = 0; i < results.size(); ++i) {
    in_order = in_order && results[i] == static_cast<int>(i);
    sum += results[i];
  }
  r.ok = in_order && sum == static_cast<long long>(t) * (t - 1) / 2;
  if (!r.ok) r.error = "results out of creation order or wrong sum";
}

// timers: K call_later timers, delays spread over 0..200 ms in a fixed
// unsorted order; each records how late it ran.
void timers(pl::EventLoop& loop, run_record& r) {
  const int k = 200'000;
  int fired = 0;
  int early = 0;
  std::vector<double> late_us;
  late_us.reserve(k);
  double t0 = now_s();
  for (int i = 0; i < k; ++i) {
    auto delay = std::chrono::microseconds((i * 7919L) % 200'000);
    auto due = loop.time() + delay;
    loop.call_later(delay, [&loop, &fired, &early, &late_us, due] {
      auto lateness = loop.time() - due;
      if (lateness < pl::Clock::duration::zero()) ++early;
      late_us.push_back(std::chrono::duration<double, std::micro>(lateness).count());
      if (++fired == k) loop.stop();
    });
  }
  double scheduled = now_s();
  loop.run_forever();
  double seconds = now_s() - t0;
  std::sort(late_us.begin(), late_us.end());
  set_time(r, k, seconds);
  r.set("overhead_ms", seconds * 1e3 - 200.0);
  r.set("late_p50_us", late_us[late_us.size() / 2]);
  r.set("late_p99_us", late_us[late_us.size() * 99 / 100]);
  r.set("schedule_ms", (scheduled - t0) * 1e3);  // of the overhead: making the timers
  r.ok = fired == k && early == 0;
  if (!r.ok) {
    r.error = std::to_string(fired) + " of " + std::to_string(k) + " fired, " +
              std::to_string(early) + " early";
  }
}

// sleep_chain: one coroutine awaits sleep(0) N times.
pl::Task<long> sleeper(long n) {
  long yields = 0;
  for (long i = 0; i < n; ++i) {
    co_await pl::sleep(0ms);
    ++yields;
  }
  co_return yields;
}

void sleep_chain(pl::EventLoop& loop, run_record& r) {
  const long n = 1'000'000;
  double t0 = now_s();
  long yields = loop.run_until_complete(sleeper(n));
  set_time(r, static_cast<double>(n), now_s() - t0);
  r.ok = yields == n;
}

// queue: one producer and one consumer task pass 0..N-1 through a Queue of
// maxsize 128. allocs_per_op: operator new calls per item while they run.
pl::Task<> produce(pl::Queue<long>* q, long n) {
  for (long i = 0; i < n; ++i) co_await q->put(i);
}

pl::Task<bool> consume(pl::Queue<long>* q, long n, long long* sum) {
  bool in_order = true;
  for (long i = 0; i < n; ++i) {
    long v = co_await q->get();
    in_order = in_order && v == i;
    *sum += v;
  }
  co_return in_order;
}

void queue(pl::EventLoop& loop, run_record& r) {
  const long n = 1'000'000;
  pl::Queue<long> q(128);
  long long sum = 0;
  std::uint64_t allocs_before = allocations_on_this_thread();
  double t0 = now_s();
  pl::Future<void> producer = loop.create_task(produce(&q, n));
  bool in_order = loop.run_until_complete(consume(&q, n, &sum));
  loop.run_until_complete(producer);
  double seconds = now_s() - t0;
  std::uint64_t allocs = allocations_on_this_thread() - allocs_before;
  set_time(r, static_cast<double>(n), seconds);
  r.set("allocs_per_op", static_cast<double>(allocs) / static_cast<double>(n));
  r.set("allocs", static_cast<double>(allocs));
  r.ok = in_order && sum == static_cast<long long>(n) * (n - 1) / 2;
  if (!r.ok) r.error = "items out of order or wrong sum";
}

// lock: 100 tasks each take one Lock 10,000 times, and while holding it
// count, yield once (sleep(0)) and check that nobody else holds it.
struct lock_state {
  pl::Lock lock;
  long counter = 0;
  int holders = 0;
  bool overlap = false;
};

pl::Task<> lock_user(lock_state* s, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    auto held = co_await s->lock.scoped();
    s->overlap = s->overlap || ++s->holders != 1;
    ++s->counter;
    co_await pl::sleep(0ms);
    s->overlap = s->overlap || s->holders != 1;
    --s->holders;
  }
}

void lock(pl::EventLoop& loop, run_record& r) {
  const int tasks = 100;
  const int rounds = 10'000;
  const long n = static_cast<long>(tasks) * rounds;
  lock_state s;
  std::vector<pl::Future<void>> users;
  users.reserve(tasks);
  std::uint64_t allocs_before = allocations_on_this_thread();
  double t0 = now_s();
  for (int i = 0; i < tasks; ++i) users.push_back(loop.create_task(lock_user(&s, rounds)));
  for (pl::Future<void>& u : users) loop.run_until_complete(u);
  double seconds = now_s() - t0;
  std::uint64_t allocs = allocations_on_this_thread() - allocs_before;
  set_time(r, static_cast<double>(n), seconds);
  r.set("allocs_per_op", static_cast<double>(allocs) / static_cast<double>(n));
  r.set("allocs", static_cast<double>(allocs));
  r.ok = s.counter == n && !s.overlap;
  if (!r.ok) {
    r.error = "counter " + std::to_string(s.counter) + (s.overlap ? ", holders overlapped" : "");
  }
}

// pingpong: the backend's cost per I/O round trip, in process (echo's
// shape without the network stack or a client process): 10 Unix socket
// pairs, on each a task that sends a byte and waits for the reply and one
// that echoes it. n: round trips (2 sends + 2 recvs each).

pl::Task<> close_both(int a, int b) {
  co_await pl::async_close(a);
  co_await pl::async_close(b);
}

void pingpong(pl::EventLoop& loop, run_record& r) {
  const int pairs = 10;
  const int rounds = 5'000;
  std::vector<int> fds;
  std::vector<pl::Task<>> tasks;
  for (int i = 0; i < pairs; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      r.error = "socketpair failed";
      return;
    }
    fds.insert(fds.end(), {sv[0], sv[1]});
    tasks.push_back(pinger(sv[0], rounds));
    tasks.push_back(ponger(sv[1], rounds));
  }
  const pl::LoopStats before = loop.stats();
  double t0 = now_s();
  try {
    loop.run_until_complete(pl::gather(std::move(tasks)));
    r.ok = true;
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  set_time(r, static_cast<double>(pairs) * rounds, now_s() - t0);
  // Counted here: the closes below are not part of a round trip.
  set_loop_counters(r, before, loop.stats(), static_cast<double>(pairs) * rounds);
  for (std::size_t i = 0; i < fds.size(); i += 2) {
    loop.run_until_complete(close_both(fds[i], fds[i + 1]));
  }
}

struct core_workload {
  std::string_view name;
  void (*run)(pl::EventLoop&, run_record&);
  bool has_static;  // also runs on a StaticEventLoop
};

constexpr core_workload core_workloads[] = {
    {"callbacks", &callbacks, true},
    {"tasks", &tasks, false},
    {"timers", &timers, false},
    {"sleep_chain", &sleep_chain, true},
    {"queue", &queue, false},
    {"lock", &lock, false},
    {"to_thread", &to_thread_workload, false},
    {"file_read", &file_read_workload, false},
    {"pingpong", &pingpong, false},
};

const core_workload* find(std::string_view name) {
  for (const core_workload& w : core_workloads) {
    if (w.name == name) return &w;
  }
  return nullptr;
}

}  // namespace

bool is_core_workload(std::string_view name) { return find(name) != nullptr; }

bool has_static_dispatch(std::string_view name) {
  const core_workload* w = find(name);
  return w != nullptr && w->has_static;
}

run_record run_core_workload(std::string_view name, std::string_view backend,
                             bool static_dispatch) {
  const core_workload* w = find(name);
  run_record r;
  r.workload = std::string(name);
  r.dispatch = static_dispatch ? "static" : "dynamic";
  std::unique_ptr<pl::EventLoop> loop =
      static_dispatch ? pl::new_static_event_loop(backend) : pl::new_event_loop(backend);
  r.backend = std::string(loop->backend_name());
  const pl::LoopStats before = loop->stats();
  w->run(*loop, r);
  // Unless the workload counted a part of its run itself (pingpong).
  if (!r.get("iterations_per_op")) {
    set_loop_counters(r, before, loop->stats(), r.get("n").value_or(0));
  }
  loop->close();
  r.set("peak_rss_kib", peak_rss_kib());
  return r;
}

}  // namespace loopbench
