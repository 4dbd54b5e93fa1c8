// A count of operator new calls on this thread, for the workloads that
// promise no allocation per operation (queue, lock): loopbench replaces the
// global operator new/delete (alloc_count.cc) with ones that count and call
// malloc/free. A thread-local counter: no atomic on every allocation, and the
// workloads run on the loop's one thread.
#pragma once

#include <cstdint>

namespace loopbench {

// operator new calls made by this thread so far.
std::uint64_t allocations_on_this_thread() noexcept;

}  // namespace loopbench
