// Choosing a backend, and making loops with it.
//
// A backend is chosen by name: in code (new_event_loop("epoll")), on the
// command line (--backend=NAME, read by backend_from_args), or through the
// POLYLOOP_BACKEND environment variable. An empty name means the
// environment variable if set, else the build-time default. "auto" means
// the best backend that can run on this host. An unknown name throws
// BackendError listing the backends compiled in. "NAME:SETUP" names another
// set-up of a backend, for tests (io_uring:coop, io_uring:no_taskrun,
// io_uring:unregistered, io_uring:no_cancel_fd, io_uring:bufring, epoll:no_pwait2).
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/backend/backend.h"
#include "core/loop/event_loop.h"
#include "core/task/task.h"

namespace polyloop {

struct BackendInfo {
  std::string name;
  bool available = false;  // can run on this host
  std::string reason;      // why not, when it cannot
};

// Every backend polyloop knows, in the preference order of "auto": whether
// it can run here, or why not (including "not compiled in").
std::vector<BackendInfo> available_backends();
// The build-time default name.
std::string_view default_backend_name() noexcept;
// Resolves "" and "auto" to the name of the backend make_backend() would try
// first; throws BackendError for an unknown name.
std::string resolve_backend_name(std::string_view name);
// A new backend by name (see above). "auto" skips a backend that cannot run
// here, saying so once per process on stderr; an explicit name never falls
// back: it throws BackendError naming the cause and what to do.
std::unique_ptr<Backend> make_backend(std::string_view name = {});
// A new loop on the named backend. `clock` must outlive the loop.
std::unique_ptr<EventLoop> new_event_loop(std::string_view backend = {},
                                          Clock& clock = SteadyClock::instance());
// The same, with the backend's type fixed when the loop is made
// (StaticEventLoop): each iteration calls its poll() directly rather than
// through the Backend vtable. Behaves exactly as new_event_loop's loop.
std::unique_ptr<EventLoop> new_static_event_loop(std::string_view backend = {},
                                                 Clock& clock = SteadyClock::instance());
// The value of --backend=NAME (or "--backend NAME") in argv, or "" if absent.
// --backend=list prints print_backends() to stdout and exits the program; a
// --backend with no name throws BackendError.
std::string backend_from_args(int argc, char** argv);
// Each backend known to the build, whether it can run here and why not.
void print_backends(std::FILE* out);

// asyncio.run: makes a loop on `backend`, runs `main` to completion, cancels
// and waits for the tasks still pending, shuts the default executor down,
// closes the loop, and returns main's result (or rethrows its exception).
// While it runs, the first SIGINT (Ctrl-C) cancels `main`, and run() then
// throws KeyboardInterrupt; a second one ends the process as SIGINT would.
// That is only done if SIGINT has its default disposition (no handler of
// the program's own), as asyncio does.
template <class T>
T run(Task<T> main, std::string_view backend = {});

namespace detail {
// Cancels what is left and closes; reports (does not throw) failures.
void finish_run(EventLoop& loop) noexcept;

// run()'s SIGINT handling for the life of the run (see run()).
class sigint_cancels_main {
 public:
  sigint_cancels_main(EventLoop& loop, future_state_base& main);
  sigint_cancels_main(const sigint_cancels_main&) = delete;
  sigint_cancels_main& operator=(const sigint_cancels_main&) = delete;
  // Throws KeyboardInterrupt if a SIGINT cancelled a main that ended cancelled.
  void rethrow_if_interrupted(future_state_base& main) const;

 private:
  bool installed_ = false;
  int interrupts_ = 0;
};
}  // namespace detail

template <class T>
T run(Task<T> main, std::string_view backend) {
  std::unique_ptr<EventLoop> loop = new_event_loop(backend);
  Future<T> result = loop->create_task(std::move(main));
  detail::future_state_base& state = *detail::future_access::state(result);
  detail::sigint_cancels_main sigint(*loop, state);
  try {
    detail::run_until_done(*loop, state);
  } catch (...) {
    detail::finish_run(*loop);
    throw;
  }
  detail::finish_run(*loop);
  sigint.rethrow_if_interrupted(state);
  if constexpr (std::is_void_v<T>) {
    result.result();
  } else {
    return std::move(result.result());
  }
}

}  // namespace polyloop
