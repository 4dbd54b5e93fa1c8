// The connection handling of examples/echo_server (the "echo" workload of
// bench/WORKLOADS.md): what comes in goes back out, until the client closes.
// Shared with tests/sim_test.cc, which runs it under simulated clients.
//
//   pl::net::Server server = co_await pl::net::start_server(echo_server::serve, "127.0.0.1", 0);
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>

#include "net/stream.h"
#include "polyloop/polyloop.h"

namespace echo_server {

inline polyloop::Task<> serve(polyloop::net::Stream s) {
  try {
    s.set_nodelay(true);
    while (true) {
      // What came, lent in place (the stream's buffer, or on io_uring with
      // multishot receives the kernel's buffer): no buffer of its own, so a
      // connection that stays idle costs only what the stream holds.
      std::span<const char> got = co_await s.read_some();
      if (got.empty()) break;  // the client closed
      s.write(std::string_view(got.data(), got.size()));
      // Waits only when the client stopped reading a while ago. With
      // nothing queued (nearly every message) drain() would return at once;
      // not calling it saves its coroutine frame per message.
      if (s.write_buffer_size() > 0) co_await s.drain();
    }
  } catch (const std::system_error&) {
    // Reset by the client: nothing left to echo.
  }
  s.close();
  try {
    co_await s.wait_closed();
  } catch (const std::system_error&) {
    // The last bytes could not be delivered: the client is gone.
  }
}

}  // namespace echo_server
