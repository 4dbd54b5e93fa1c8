// The loop's own costs, on the workloads of shared/bench/WORKLOADS.md that
// need no network (callbacks, sleep_chain, tasks, timers), with their
// built-in checks. A stopgap until loopbench (one process per run, JSON,
// tables) exists; it prints one line per workload.
//
//   bazel run -c opt //bench:core_micro -- --backend=epoll
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "polyloop/polyloop.h"

namespace pl = polyloop;
using namespace std::chrono_literals;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

long peak_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// callbacks: 100 chains, each re-scheduling itself with call_soon.
struct chain {
  pl::EventLoop* loop;
  long* counter;
  long n;
  void operator()() const {
    if (*counter >= n) return;
    if (++*counter < n) {
      loop->call_soon(*this);
    } else {
      loop->stop();
    }
  }
};

pl::Task<> sleeper(long n) {
  for (long i = 0; i < n; ++i) co_await pl::sleep(0ms);
}

pl::Task<int> one_task(int i) {
  co_await pl::sleep(0ms);
  co_return i;
}

pl::Task<bool> spawn_and_gather(int count) {
  std::vector<pl::Task<int>> tasks;
  tasks.reserve(count);
  for (int i = 0; i < count; ++i) tasks.push_back(one_task(i));
  std::vector<int> results = co_await pl::gather(std::move(tasks));
  long long sum = 0;
  bool in_order = true;
  for (int i = 0; i < count; ++i) {
    in_order = in_order && results[i] == i;
    sum += results[i];
  }
  co_return in_order && sum == static_cast<long long>(count) * (count - 1) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto loop = pl::new_event_loop(pl::backend_from_args(argc, argv));
  std::string backend(loop->backend_name());
  bool all_ok = true;

  long counter = 0;
  const long n_callbacks = 2'000'000;
  for (int i = 0; i < 100; ++i) loop->call_soon(chain{loop.get(), &counter, n_callbacks});
  double t0 = now_s();
  loop->run_forever();
  double t1 = now_s();
  bool ok = counter == n_callbacks;
  all_ok &= ok;
  std::printf("{\"workload\":\"callbacks\",\"backend\":\"%s\",\"n\":%ld,\"seconds\":%.4f,\"ns_per_op\":%.2f,\"ok\":%s}\n",
              backend.c_str(), n_callbacks, t1 - t0, (t1 - t0) * 1e9 / n_callbacks, ok ? "true" : "false");

  const long n_yields = 1'000'000;
  t0 = now_s();
  loop->run_until_complete(sleeper(n_yields));
  t1 = now_s();
  std::printf("{\"workload\":\"sleep_chain\",\"backend\":\"%s\",\"n\":%ld,\"seconds\":%.4f,\"ns_per_op\":%.2f,\"ok\":true}\n",
              backend.c_str(), n_yields, t1 - t0, (t1 - t0) * 1e9 / n_yields);

  const int n_tasks = 100'000;
  long rss_before = peak_rss_kib();
  t0 = now_s();
  ok = loop->run_until_complete(spawn_and_gather(n_tasks));
  t1 = now_s();
  all_ok &= ok;
  std::printf("{\"workload\":\"tasks\",\"backend\":\"%s\",\"n\":%d,\"seconds\":%.4f,\"ns_per_op\":%.2f,\"bytes_per_task\":%.0f,\"ok\":%s}\n",
              backend.c_str(), n_tasks, t1 - t0, (t1 - t0) * 1e9 / n_tasks,
              (peak_rss_kib() - rss_before) * 1024.0 / n_tasks, ok ? "true" : "false");

  const int k = 200'000;
  int fired = 0;
  bool early = false;
  std::vector<double> late_us;
  late_us.reserve(k);
  t0 = now_s();
  auto start = loop->time();
  for (int i = 0; i < k; ++i) {
    auto due = start + std::chrono::microseconds((i * 7919L) % 200'000);
    loop->call_at(due, [&, due] {
      auto lateness = loop->time() - due;
      early |= lateness < pl::Clock::duration::zero();
      late_us.push_back(std::chrono::duration<double, std::micro>(lateness).count());
      if (++fired == k) loop->stop();
    });
  }
  loop->run_forever();
  t1 = now_s();
  std::sort(late_us.begin(), late_us.end());
  ok = fired == k && !early;
  all_ok &= ok;
  std::printf("{\"workload\":\"timers\",\"backend\":\"%s\",\"n\":%d,\"seconds\":%.4f,\"overhead_ms\":%.1f,\"late_p50_us\":%.0f,\"late_p99_us\":%.0f,\"ok\":%s}\n",
              backend.c_str(), k, t1 - t0, (t1 - t0) * 1e3 - 200.0, late_us[late_us.size() / 2],
              late_us[late_us.size() * 99 / 100], ok ? "true" : "false");
  loop->close();
  return all_ok ? 0 : 1;
}
