// Unix signals delivered to the loop: asyncio's loop.add_signal_handler().
//
//   pl::add_signal_handler(loop, SIGTERM, [&] { server.close(); });
//
// The callback runs on the loop's thread, scheduled as call_soon would,
// never inside the signal handler; what it throws goes to the exception
// handler. The signal may come to any thread of the process: a handler
// installed with sigaction() writes the signal's number to a pipe the loop
// reads through its backend (libuv and asyncio do the same), so every
// backend delivers it. While a loop handles a signal its previous
// disposition is kept, and put back when the last loop stops handling it
// (remove_signal_handler, or close()). Several loops may handle one signal:
// each is told.
#pragma once

#include <functional>
#include <stdexcept>

#include "core/loop/event_loop.h"

namespace polyloop {

// run() ended because the first SIGINT (Ctrl-C) cancelled the main task
// (Python's KeyboardInterrupt, as asyncio.run raises it).
class KeyboardInterrupt : public std::runtime_error {
 public:
  KeyboardInterrupt()
      : std::runtime_error("interrupted: SIGINT (Ctrl-C) cancelled the main task of run()") {}
};

// Calls `callback` on `loop` each time `sig` arrives, replacing the loop's
// previous callback for it. Throws std::invalid_argument for a signal that
// cannot be caught (SIGKILL, SIGSTOP) or out of range, EventLoopError if the
// loop is closed, std::system_error if no pipe could be made.
void add_signal_handler(EventLoop& loop, int sig, std::function<void()> callback);

// Stops handling `sig` on `loop`; false if it was not handled there.
bool remove_signal_handler(EventLoop& loop, int sig);

}  // namespace polyloop
