// polyloop: asyncio's programming model in C++20 over pluggable backends.
//
//   #include "polyloop/polyloop.h"
//   namespace pl = polyloop;
//
// See docs/api.md for a tour, docs/design.md for how it is built.
#pragma once

#include "core/backend.h"       // IWYU pragma: export
#include "core/clock.h"         // IWYU pragma: export
#include "core/errors.h"        // IWYU pragma: export
#include "core/event_loop.h"    // IWYU pragma: export
#include "core/future.h"        // IWYU pragma: export
#include "core/gather.h"        // IWYU pragma: export
#include "core/io.h"            // IWYU pragma: export
#include "core/sleep.h"         // IWYU pragma: export
#include "core/task.h"          // IWYU pragma: export
#include "policies/backends.h"  // IWYU pragma: export
