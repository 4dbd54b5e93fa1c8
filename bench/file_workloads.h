// loopbench's workloads at the operating system's edge: to_thread (round
// trips through the loop's default executor) and file_read (a 256 MiB file
// in 64 KiB reads, against cat on the same file). core_workloads.cc lists
// them with the other in-process workloads.
#pragma once

#include "bench/record.h"
#include "polyloop/polyloop.h"

namespace loopbench {

void to_thread_workload(polyloop::EventLoop& loop, run_record& r);
void file_read_workload(polyloop::EventLoop& loop, run_record& r);

}  // namespace loopbench
