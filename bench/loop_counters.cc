#include "bench/loop_counters.h"

#include <cstdint>

namespace loopbench {

void set_loop_counters(run_record& r, const polyloop::LoopStats& before,
                       const polyloop::LoopStats& after, double ops) {
  if (ops <= 0) return;
  auto per_op = [ops](std::uint64_t a, std::uint64_t b) {
    return static_cast<double>(a - b) / ops;
  };
  r.set("iterations_per_op", per_op(after.iterations, before.iterations));
  r.set("blocking_waits_per_op", per_op(after.waits_blocking, before.waits_blocking));
  const polyloop::backend_counters& a = after.backend;
  const polyloop::backend_counters& b = before.backend;
  r.set("syscalls_per_op", per_op(a.syscalls, b.syscalls));
  // Only what this backend counts: the others stay zero on it.
  auto set_if_made = [&r, &per_op](const char* key, std::uint64_t x, std::uint64_t y) {
    if (x != y) r.set(key, per_op(x, y));
  };
  set_if_made("epoll_waits_per_op", a.epoll_waits, b.epoll_waits);
  set_if_made("epoll_ctls_per_op", a.epoll_ctls, b.epoll_ctls);
  set_if_made("attempts_per_op", a.io_attempts, b.io_attempts);
  set_if_made("enters_per_op", a.enters, b.enters);
  set_if_made("sqes_per_op", a.sqes_submitted, b.sqes_submitted);
  set_if_made("cqes_per_op", a.cqes_reaped, b.cqes_reaped);
  set_if_made("asio_runs_per_op", a.context_runs, b.context_runs);
}

}  // namespace loopbench
