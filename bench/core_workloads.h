// loopbench's in-process workloads: callbacks, tasks, timers, sleep_chain,
// queue, lock.
#pragma once

#include <string_view>

#include "bench/record.h"

namespace loopbench {

bool is_core_workload(std::string_view name);
// Whether the workload also runs on a loop with static dispatch
// (callbacks and sleep_chain: what the per-iteration virtual call costs).
bool has_static_dispatch(std::string_view name);
// Runs one core workload once on a new loop on `backend` (a StaticEventLoop
// if static_dispatch), and returns its record; its check decides `ok`.
// Throws what new_event_loop throws for a backend that cannot run.
run_record run_core_workload(std::string_view name, std::string_view backend,
                             bool static_dispatch);

}  // namespace loopbench
