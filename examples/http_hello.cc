// The server of the "http" workload (bench/WORKLOADS.md): HTTP/1.1 with
// keep-alive and pipelining, answering every `GET /` with 200 OK,
// Content-Type: text/plain, Content-Length: 13 and "Hello, World!"; a
// malformed request gets 400 and the connection is closed.
//
//   bazel run -c opt //examples:http_hello -- [--backend=NAME] [--port=N] [--host=H]
//   wrk -t1 -c64 -d5s http://127.0.0.1:PORT/
//
// --port=0 (the default) picks a free port; the server prints
// "listening on 127.0.0.1:PORT" (flushed) and serves until SIGINT or SIGTERM.
// The options are described in examples/serve_main.h, the request handling in
// examples/http_hello_handler.h (which tests/net_test.cc checks).
#include "examples/http_hello_handler.h"
#include "examples/serve_main.h"

int main(int argc, char** argv) {
  return examples::serve_main("http_hello", argc, argv, http_hello::serve);
}
