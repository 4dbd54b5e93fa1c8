// loopbench's network workloads: echo (64 B and 16 KiB), http and https (the
// http workload over TLS 1.3, keep-alive: the record layer's cost, with the
// handshakes of wrk's 64 connections amortised over the run), and
// https_handshake (a full TLS handshake and one GET per connection, one
// connection after another), and idle_conns (64 B echo on 50 connections
// while the server holds 10,000 idle ones: its bytes per idle connection),
// and many_loops (echo 64 B and http with the server at 1 and then 2 loops,
// SO_REUSEPORT: msgs/s and server CPU per message at each).
// Each runs
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
  // https: the server's certificate and key files (PEM). Empty: the
  // workload makes a self-signed pair for 127.0.0.1 in a temporary directory.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The example server's --loops (many_loops): with 2 or more it is not
  // pinned as a whole, its loops pin themselves one per CPU.
  int server_loops = 1;
  // Whether the load generator is pinned to the second CPU (many_loops
  // leaves it free at 1 loop as at 2: docs/benchmarks.md, "many_loops").
  bool pin_load = true;
};

// A self-signed certificate for 127.0.0.1 and localhost written as
// cert.pem and key.pem into `dir`; false, with `error` set, if it cannot be.
bool write_self_signed_files(const std::string& dir, std::string& cert_file,
                             std::string& key_file, std::string& error);

bool is_net_workload(std::string_view name);
// Runs "echo", "echo_16k", "http", "https", "https_handshake", "idle_conns"
// or "many_loops" once; the example servers' runs also carry the counters
// of their loops (--stats: syscalls_per_op, iterations_per_op, ... per
// message or request, bench/loop_counters.h); failures (a server that does not
// start, a client that reports a mismatch, wrk errors) give ok = false and
// say why in `error`.
run_record run_net_workload(std::string_view name, const net_run_options& options);

}  // namespace loopbench
