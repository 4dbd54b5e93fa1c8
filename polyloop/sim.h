// Testing polyloop code on the simulation backend (docs/testing.md): a loop
// with virtual time and an in-memory network, its faults and the order of
// its completions decided by a seed.
//
// new_event_loop("sim") (or POLYLOOP_BACKEND=sim) makes the same loop with
// the configuration of the environment (POLYLOOP_SIM_SEED, ...); this
// header is for a configuration set in code. Threads and ownership: as any
// EventLoop.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/sim/sim_config.h"
#include "core/loop/event_loop.h"

namespace polyloop {

using backends::sim_config;

// A loop on the sim backend with `config`. Throws std::invalid_argument for
// a configuration that cannot be simulated (a buffer of 0 bytes).
std::unique_ptr<EventLoop> new_sim_loop(const sim_config& config);

// The configuration of the sim loop `loop` runs on; throws
// std::invalid_argument if `loop` is on another backend.
const sim_config& sim_config_of(EventLoop& loop);

}  // namespace polyloop
