// ring_refused --backend=NAME: runs one 10 ms sleep on a loop of that backend
// and prints how it ended. Run under seccomp_exec with io_uring_enter refused
// after the ring was set up, it must end with a clear error (exit 3), not hang
// or spin (issue 16, the fault matrix).
#include <chrono>
#include <cstdio>
#include <exception>

#include "polyloop/polyloop.h"

namespace pl = polyloop;
using namespace std::chrono_literals;

static pl::Task<> nap() { co_await pl::sleep(10ms); }

int main(int argc, char** argv) {
  try {
    auto loop = pl::new_event_loop(pl::backend_from_args(argc, argv));
    std::printf("backend: %s\n", std::string(loop->backend_name()).c_str());
    loop->run_until_complete(nap());
    loop->close();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 3;
  }
  std::printf("slept\n");
  return 0;
}
