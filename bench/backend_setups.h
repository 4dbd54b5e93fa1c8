// Set-ups of a backend besides the one make_backend(name) gives it, for
// backend_pingpong to measure side by side with it. Which backends have any
// is up to the implementation linked in (bench/BUILD): io_uring_setups.cc
// when io_uring is compiled in, no_setups.cc otherwise.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/backend/backend.h"

namespace polyloop::bench {

struct backend_setup {
  std::string name;  // what the table calls it, the backend's name first
  std::function<std::unique_ptr<Backend>()> make;
};

// What make_backend(backend) makes, described (e.g. its ring options), or ""
// when there is nothing to say.
std::string default_setup(std::string_view backend);
// The other set-ups of `backend` worth measuring; none for most.
std::vector<backend_setup> other_setups(std::string_view backend);

}  // namespace polyloop::bench
