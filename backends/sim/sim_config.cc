#include "backends/sim/sim_config.h"

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

namespace polyloop::backends {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

std::uint64_t env_uint(const char* name, std::uint64_t fallback) {
  const char* v = env(name);
  if (v == nullptr) return fallback;
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (*end != '\0' || errno != 0 || std::string_view(v).find('-') != std::string_view::npos) {
    throw std::invalid_argument(std::string(name) + "='" + v +
                                "': expected a whole number (decimal, not negative)");
  }
  return n;
}

double env_probability(const char* name, double fallback) {
  const char* v = env(name);
  if (v == nullptr) return fallback;
  char* end = nullptr;
  double p = std::strtod(v, &end);
  if (*end != '\0' || !(p >= 0 && p <= 1)) {
    throw std::invalid_argument(std::string(name) + "='" + v +
                                "': expected a probability from 0 to 1");
  }
  return p;
}

}  // namespace

sim_config sim_config::from_env() {
  sim_config c;
  c.seed = env_uint("POLYLOOP_SIM_SEED", c.seed);
  c.perturb_order = env_uint("POLYLOOP_SIM_PERTURB", c.perturb_order ? 1 : 0) != 0;
  c.buffer_size = env_uint("POLYLOOP_SIM_BUFFER", c.buffer_size);
  if (c.buffer_size == 0) {
    throw std::invalid_argument("POLYLOOP_SIM_BUFFER=0: a socket buffer holds at least one byte");
  }
  c.latency = std::chrono::microseconds(env_uint("POLYLOOP_SIM_LATENCY_US", 0));
  c.jitter = std::chrono::microseconds(env_uint("POLYLOOP_SIM_JITTER_US", 0));
  c.bandwidth = env_uint("POLYLOOP_SIM_BANDWIDTH", c.bandwidth);
  c.short_io = env_probability("POLYLOOP_SIM_SHORT_IO", c.short_io);
  c.reset = env_probability("POLYLOOP_SIM_RESET", c.reset);
  c.reset_after_bytes = env_uint("POLYLOOP_SIM_RESET_AFTER", c.reset_after_bytes);
  c.accept_emfile = env_probability("POLYLOOP_SIM_ACCEPT_EMFILE", c.accept_emfile);
  c.datagram_loss = env_probability("POLYLOOP_SIM_LOSS", c.datagram_loss);
  return c;
}

std::string sim_config::describe() const {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  return "seed=" + std::to_string(seed) + " perturb=" + (perturb_order ? "1" : "0") +
         " buffer=" + std::to_string(buffer_size) +
         " latency=" + std::to_string(duration_cast<microseconds>(latency).count()) + "us" +
         " jitter=" + std::to_string(duration_cast<microseconds>(jitter).count()) + "us" +
         " bandwidth=" + std::to_string(bandwidth) + " short_io=" + std::to_string(short_io) +
         " reset=" + std::to_string(reset) + " reset_after=" + std::to_string(reset_after_bytes) +
         " accept_emfile=" + std::to_string(accept_emfile) +
         " datagram_loss=" + std::to_string(datagram_loss) +
         " links_by_port=" + std::to_string(links_by_port.size());
}

}  // namespace polyloop::backends
