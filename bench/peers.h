// loopbench's peers: the same workloads on other event loops (bench/peers/),
// run in the same session as polyloop's, interleaved with them, so that their
// figures stand side by side with polyloop's in one table and chart.
//
//   libuv    bench/peers/libuv_peer.c   callbacks timers echo echo_16k http
//   asio     bench/peers/asio_peer.cc   callbacks tasks sleep_chain timers echo echo_16k http
//            (its runs and column are "boost_asio", apart from polyloop's asio backend)
//   uvloop   bench/peers/asyncio_peer.py (/usr/bin/python3, python3-uvloop)
//   asyncio  bench/peers/asyncio_peer.py   callbacks tasks sleep_chain timers queue lock
//                                          echo echo_16k http
//   nginx    nginx-light, a generated configuration: http
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bench/net_workloads.h"
#include "bench/record.h"

namespace loopbench {

// Every peer's name as its runs and column give it, in the order of the
// table's columns.
const std::vector<std::string>& peer_names();

// The peers of `list` ("all" or names separated by commas; "asio" is
// "boost_asio") that can run here, in peer_names() order. A peer that is not installed is left out with a line
// on stderr saying what to install. Throws std::invalid_argument for a name
// that is not a peer.
std::vector<std::string> peers_to_run(std::string_view list, const std::string& programs_dir);

// Whether `peer` has an implementation of `workload`.
bool peer_runs(std::string_view peer, std::string_view workload);

// One run of a core workload by `peer`, in a fresh process.
run_record run_peer_core(std::string_view peer, std::string_view workload,
                         const std::string& programs_dir);

// One run of a network workload ("echo", "echo_16k", "http") against
// `peer`'s server, driven by the same client and wrk as polyloop's servers.
run_record run_peer_net(std::string_view peer, std::string_view workload,
                        const net_run_options& options);

}  // namespace loopbench
