// The exceptions of polyloop's synchronisation primitives and queues, named
// after asyncio's. Misuse that asyncio reports with RuntimeError (releasing a
// lock nobody holds, waiting on a condition without its lock) throws
// InvalidStateError (core/errors/errors.h); using a primitive from a loop or
// thread it is not bound to throws EventLoopError.
#pragma once

#include <stdexcept>

#include "core/errors/errors.h"

namespace polyloop {

// get_nowait() on an empty queue (asyncio.QueueEmpty).
class QueueEmpty : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// put_nowait() on a full queue (asyncio.QueueFull).
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The queue was shut down (asyncio.QueueShutDown, Python 3.13): put() at
// once, get() once the queue is empty (at once after shutdown(true)).
class QueueShutDown : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A Barrier was aborted or reset while a task waited on it, or is broken
// (asyncio.BrokenBarrierError).
class BrokenBarrierError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A counter would go past its bound: BoundedSemaphore::release() beyond the
// initial value, Queue::task_done() more often than items were put
// (asyncio raises ValueError for both).
class OverReleaseError : public InvalidStateError {
 public:
  using InvalidStateError::InvalidStateError;
};

}  // namespace polyloop
