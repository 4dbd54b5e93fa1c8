// The server of the "echo" workload (bench/WORKLOADS.md): a TCP echo server
// that sends back everything it reads, on every connection, until the client
// closes it.
//
//   bazel run -c opt //examples:echo_server -- [--backend=NAME] [--port=N] [--host=H]
//
// --port=0 (the default) picks a free port; the server prints
// "listening on 127.0.0.1:PORT" (flushed) and serves until SIGINT or SIGTERM.
// The options are described in examples/serve_main.h.
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "examples/serve_main.h"
#include "net/stream.h"
#include "polyloop/polyloop.h"

namespace pl = polyloop;

namespace {

// One connection: what comes in goes back out, until the client closes it.
pl::Task<> echo(pl::net::Stream s) {
  try {
    s.set_nodelay(true);
    // Not cleared (make_unique_for_overwrite): a connection that stays idle
    // keeps the buffer's pages untouched, so they cost it no memory.
    constexpr std::size_t buf_size = 64 * 1024;
    auto buf = std::make_unique_for_overwrite<char[]>(buf_size);
    while (true) {
      // One receive, straight into buf.
      std::size_t n = co_await s.read_into(std::span<char>(buf.get(), buf_size));
      if (n == 0) break;                          // the client closed
      s.write(std::string_view(buf.get(), n));
      co_await s.drain();  // at once unless the client stopped reading
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

}  // namespace

int main(int argc, char** argv) { return examples::serve_main("echo_server", argc, argv, echo); }
