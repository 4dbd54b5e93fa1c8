// LoopStats: what one EventLoop has done since it was made, as counts with
// the same meaning on every backend, read with EventLoop::stats().
//
//   polyloop::LoopStats before = loop.stats();
//   ... run something ...
//   std::uint64_t iterations = loop.stats().iterations - before.iterations;
//
// Threads: the loop counts on its own thread with plain increments (the
// cross-thread wake-ups are the one atomic count); read stats() on that
// thread, or while the loop is not running. Each loop has its own counts.
// A LoopStats is a plain value: copying it is the whole read.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/backend/backend.h"

namespace polyloop {

// The operations of one op_kind started through core/io/io.h's awaitables
// (async_read ... async_close, and what net/ and core/file build on them).
struct OpCounts {
  std::uint64_t started = 0;
  // Handed back by the backend and taken by the awaiting task, with any
  // result; an operation the loop's close() ended is never completed.
  std::uint64_t completed = 0;
  // Of the completed ones, those a cancel ended (-ECANCELED): the cancel
  // took effect before the operation did.
  std::uint64_t cancelled = 0;
};

// One more than the last op_kind: the size of LoopStats::ops.
inline constexpr std::size_t op_kind_count = static_cast<std::size_t>(op_kind::statx) + 1;

struct LoopStats {
  // Iterations run (run_forever, run_until_complete, each a run_once).
  std::uint64_t iterations = 0;
  // Callbacks run: call_soon, call_later / call_at and call_soon_threadsafe
  // callables that were invoked (not cancelled ones; task steps and done
  // callbacks of futures are not callbacks here).
  std::uint64_t callbacks_run = 0;
  // call_later / call_at timers: scheduled; fired (due, and moved to the
  // ready queue); cancelled while waiting for their deadline.
  std::uint64_t timers_scheduled = 0;
  std::uint64_t timers_fired = 0;
  std::uint64_t timers_cancelled = 0;
  // Tasks scheduled on the loop (create_task, ensure_future, and gather's
  // or a TaskGroup's children), and those that ended (with a result, an
  // exception or cancelled) while the loop ran; a task still pending when
  // the loop closes never finishes.
  std::uint64_t tasks_created = 0;
  std::uint64_t tasks_finished = 0;
  // Per op_kind, indexed by it: op(op_kind::recv) reads one.
  std::array<OpCounts, op_kind_count> ops{};
  // Calls of the backend's poll(): blocking with a timeout that is not
  // zero (it may wait), non-blocking with zero (callbacks were ready, or
  // stop() was called). Whether one made a syscall is the backend's count.
  std::uint64_t waits_blocking = 0;
  std::uint64_t waits_nonblocking = 0;
  // Wake-ups other threads sent the loop: call_soon_threadsafe calls made
  // off the loop's running thread (each wakes the backend once).
  std::uint64_t threadsafe_wakeups = 0;
  // What the backend counted of its own work: syscalls, and per backend
  // epoll_wait / epoll_ctl, non-blocking attempts, io_uring_enter calls,
  // SQEs and CQEs, Asio's run calls (core/backend/backend.h).
  backend_counters backend;

  const OpCounts& op(op_kind k) const noexcept { return ops[static_cast<std::size_t>(k)]; }
};

}  // namespace polyloop
