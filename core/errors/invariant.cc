#include "core/errors/invariant.h"

#include <cstdio>
#include <cstdlib>

namespace polyloop::detail {

void invariant_failed(const char* file, int line, const char* condition,
                      const char* what) noexcept {
  std::fprintf(stderr, "polyloop: invariant broken at %s:%d: %s (%s); aborting\n", file, line,
               what, condition);
  std::fflush(stderr);
  std::abort();
}

}  // namespace polyloop::detail
