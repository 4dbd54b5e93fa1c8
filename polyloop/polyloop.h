// polyloop: asyncio's programming model in C++20 over pluggable backends.
//
//   #include "polyloop/polyloop.h"
//   namespace pl = polyloop;
//
// See docs/api.md for a tour, docs/design.md for how it is built.
#pragma once

#include "core/backend/backend.h"       // IWYU pragma: export
#include "core/loop/clock.h"         // IWYU pragma: export
#include "core/errors/errors.h"        // IWYU pragma: export
#include "core/loop/event_loop.h"    // IWYU pragma: export
#include "core/future/future.h"        // IWYU pragma: export
#include "core/combinators/gather.h"        // IWYU pragma: export
#include "core/executor/concurrent_future.h"  // IWYU pragma: export
#include "core/executor/executor.h"  // IWYU pragma: export
#include "core/combinators/timeout.h"       // IWYU pragma: export
#include "core/combinators/task_group.h"    // IWYU pragma: export
#include "core/combinators/shield.h"        // IWYU pragma: export
#include "core/io/io.h"            // IWYU pragma: export
#include "core/file/file.h"        // IWYU pragma: export
#include "core/file/file_ops.h"    // IWYU pragma: export
#include "core/signals/signals.h"  // IWYU pragma: export
#include "core/sync/barrier.h"     // IWYU pragma: export
#include "core/sync/condition.h"   // IWYU pragma: export
#include "core/sync/event.h"       // IWYU pragma: export
#include "core/sync/lock.h"        // IWYU pragma: export
#include "core/sync/queue.h"       // IWYU pragma: export
#include "core/sync/semaphore.h"   // IWYU pragma: export
#include "core/task/sleep.h"         // IWYU pragma: export
#include "core/task/task.h"          // IWYU pragma: export
#include "core/task/introspection.h" // IWYU pragma: export
#include "policies/backends.h"  // IWYU pragma: export
