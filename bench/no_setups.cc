// No backend set-ups besides the registry's own (a build without io_uring).
#include "bench/backend_setups.h"

namespace polyloop::bench {

std::string default_setup(std::string_view) { return {}; }

std::vector<backend_setup> other_setups(std::string_view) { return {}; }

}  // namespace polyloop::bench
