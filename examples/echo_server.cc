// The server of the "echo" workload (bench/WORKLOADS.md): a TCP echo server
// that sends back everything it reads, on every connection, until the client
// closes it.
//
//   bazel run -c opt //examples:echo_server -- [--backend=NAME] [--port=N] [--host=H]
//
// --port=0 (the default) picks a free port; the server prints
// "listening on 127.0.0.1:PORT" (flushed) and serves until SIGINT or SIGTERM.
// The options are described in examples/serve_main.h.
// The handling is examples/echo_handler.h.
#include "examples/echo_handler.h"
#include "examples/serve_main.h"

int main(int argc, char** argv) {
  return examples::serve_main("echo_server", argc, argv, echo_server::serve);
}
