#include "polyloop/sim.h"

#include <stdexcept>
#include <string>

#include "backends/sim/sim_backend.h"
#include "core/loop/loop_access.h"

namespace polyloop {

std::unique_ptr<EventLoop> new_sim_loop(const sim_config& config) {
  return std::make_unique<EventLoop>(std::make_unique<backends::SimBackend>(config));
}

const sim_config& sim_config_of(EventLoop& loop) {
  auto* sim = dynamic_cast<backends::SimBackend*>(&detail::loop_access::backend(loop));
  if (sim == nullptr) {
    throw std::invalid_argument("sim_config_of: this loop runs on the " +
                                std::string(loop.backend_name()) +
                                " backend, not sim; make it with new_sim_loop()");
  }
  return sim->config();
}

}  // namespace polyloop
