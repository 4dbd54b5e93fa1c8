// What a simulated network does: its seed and its faults. Settable from
// code (SimBackend's constructor) and from the environment (from_env()),
// so that a failing run's seed can be replayed: POLYLOOP_SIM_SEED=N.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace polyloop::backends {

struct sim_config {
  // Decides every random choice below and the order in which completions
  // that became ready at the same virtual instant reach the ready queue.
  // The same seed gives the same schedule, byte for byte.
  std::uint64_t seed = 1;
  // Shuffle, by the seed, the completions one poll() hands back (asyncio
  // promises no order among them). False: the order they completed in.
  bool perturb_order = true;
  // Bytes a receiving socket holds (delivered and in flight) before its
  // peer's sends wait: the back-pressure of a socket buffer.
  std::size_t buffer_size = 256 * 1024;
  // Each send reaches the peer after latency plus a uniform draw in
  // [0, jitter] of virtual time, in order (a stream never reorders).
  std::chrono::nanoseconds latency{0};
  std::chrono::nanoseconds jitter{0};
  // Bytes per second of virtual time on each connection; 0: unlimited.
  std::uint64_t bandwidth = 0;
  // Probability that a recv or send of more than one byte moves only part.
  double short_io = 0;
  // Probability that a send resets its connection (both ends then see
  // ECONNRESET); and a chosen point: a connection is reset once this many
  // bytes have been sent on it in one direction (0: never).
  double reset = 0;
  std::uint64_t reset_after_bytes = 0;
  // Probability that a UDP datagram is lost on the way (dropped after the
  // sender's sendto succeeded), drawn from the seed for each datagram that
  // has a receiver: the same seed drops the same datagrams. Unix datagrams
  // are never lost, as in the kernel.
  double datagram_loss = 0;
  // The faults of one link, where links_by_port sets them apart.
  struct link {
    std::chrono::nanoseconds latency{0};
    std::chrono::nanoseconds jitter{0};
    double datagram_loss = 0;
  };
  // Links whose latency, jitter and datagram_loss differ from the values
  // above, by port: a datagram's link is its receiver's port if listed,
  // else its sender's; a connection's (both directions, its handshake, FIN
  // and reset included) is its server's port if listed, else its client's.
  // Settable in code only.
  std::map<std::uint16_t, link> links_by_port;
  // Probability that an accept fails with EMFILE (the connection stays in
  // the backlog, as the kernel keeps it).
  double accept_emfile = 0;

  // The defaults, overridden by POLYLOOP_SIM_SEED, POLYLOOP_SIM_PERTURB
  // (0/1), POLYLOOP_SIM_BUFFER (bytes), POLYLOOP_SIM_LATENCY_US,
  // POLYLOOP_SIM_JITTER_US, POLYLOOP_SIM_BANDWIDTH (bytes/s),
  // POLYLOOP_SIM_SHORT_IO, POLYLOOP_SIM_RESET, POLYLOOP_SIM_RESET_AFTER,
  // POLYLOOP_SIM_ACCEPT_EMFILE, POLYLOOP_SIM_LOSS (probabilities 0..1). A
  // malformed value throws std::invalid_argument naming the variable.
  static sim_config from_env();
  // "seed=7 latency=0us ..." for reports.
  std::string describe() const;
};

}  // namespace polyloop::backends
