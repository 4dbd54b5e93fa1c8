// io_uring's ring set-up options, each measured beside its default (all on):
// what DEFER_TASKRUN, COOP_TASKRUN and the registered ring fd are worth.
#include <string_view>

#include "backends/io_uring/io_uring_backend.h"
#include "bench/backend_setups.h"

namespace polyloop::bench {

namespace {
using backends::IoUringBackend;

// The registry's name for it (IoUringBackend::name()).
constexpr std::string_view io_uring = "io_uring";

backend_setup ring(std::string what, IoUringBackend::options o) {
  return {std::string(io_uring) + " (" + what + ")",
          [o] { return std::unique_ptr<Backend>(new IoUringBackend(o)); }};
}
}  // namespace

// IoUringBackend::options{}, as the registry makes it.
std::string default_setup(std::string_view backend) {
  return backend == io_uring ? "defer_taskrun + registered fd" : "";
}

std::vector<backend_setup> other_setups(std::string_view backend) {
  if (backend != io_uring) return {};
  return {
      ring("defer_taskrun, fd not registered", {256, true, true, false}),
      ring("coop_taskrun + registered fd", {256, false, true, true}),
      ring("no taskrun flags, registered fd", {256, false, false, true}),
  };
}

}  // namespace polyloop::bench
