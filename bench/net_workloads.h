// loopbench's network workloads: echo (64 B and 16 KiB) and http. Each runs
// a server of examples/ on the backend under test, pinned to one core, and an
// external load generator (bench/echo_client, or wrk) pinned to another, and
// reads the server's CPU time around the load.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bench/record.h"

namespace loopbench {

struct net_run_options {
  std::string backend;
  double seconds = 1;          // how long the load runs
  std::string programs_dir;    // where examples/ and bench/ binaries are
  // A peer's server (bench/peers.h) instead of the example of examples/: its
  // command line (`backend` then names the peer), and the port it listens on
  // if it does not print "listening on HOST:PORT" (0: it prints it).
  std::vector<std::string> server_command;
  int server_port = 0;
};

bool is_net_workload(std::string_view name);
// Runs "echo", "echo_16k" or "http" once; failures (a server that does not
// start, a client that reports a mismatch, wrk errors) give ok = false and
// say why in `error`.
run_record run_net_workload(std::string_view name, const net_run_options& options);

}  // namespace loopbench
