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
    // Not cleared (make_unique_for_overwrite): a connection that stays idle
    // keeps the buffer's pages untouched, so they cost it no memory.
    constexpr std::size_t buf_size = 64 * 1024;
    auto buf = std::make_unique_for_overwrite<char[]>(buf_size);
    while (true) {
      // One receive, straight into buf.
      std::size_t n = co_await s.read_into(std::span<char>(buf.get(), buf_size));
      if (n == 0) break;  // the client closed
      s.write(std::string_view(buf.get(), n));
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
