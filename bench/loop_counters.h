// What a run caused, from EventLoop::stats() before and after it, as
// per-operation fields of its JSON line (docs/benchmarks.md, "Counters"):
// why one backend costs what it does, not only how much.
#pragma once

#include "bench/record.h"
#include "polyloop/polyloop.h"

namespace loopbench {

// Sets on `r`, each divided by `ops` (the run's n): iterations_per_op,
// blocking_waits_per_op, syscalls_per_op, and those of the backend's own
// counts that it made at all (epoll_waits_per_op, epoll_ctls_per_op,
// attempts_per_op, enters_per_op, sqes_per_op, cqes_per_op,
// asio_runs_per_op).
void set_loop_counters(run_record& r, const polyloop::LoopStats& before,
                       const polyloop::LoopStats& after, double ops);

}  // namespace loopbench
