// Shared helpers for the behaviour tests: the backend under test (from
// `-- --backend=NAME`, see tests/defs.bzl), loops made on it, a
// leak-checking value type, and the small helpers several tests use.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "polyloop/polyloop.h"

namespace polyloop::testing {

// The backend this test binary runs on ("" = the default).
const std::string& backend_under_test();

// True when the backend under test is simulated (sim: its own virtual
// clock and in-memory sockets). A test case that needs real time passing,
// real descriptors (pipes, socketpairs, files polled, options set with
// syscalls) or other threads racing the loop's clock calls
// `if (skip_when_simulated("why")) return;` first: it then says why in the
// log and passes without running. docs/testing.md lists these cases.
bool skip_when_simulated(const char* why);

// A loop on the backend under test, with the real clock or `clock`; a
// StaticEventLoop if the test runs with `--dispatch=static`.
std::unique_ptr<EventLoop> make_loop();
std::unique_ptr<EventLoop> make_loop(Clock& clock);

// Records what the loop's exception handler is told, instead of printing.
struct handler_log {
  std::vector<std::string> messages;
  std::vector<std::exception_ptr> exceptions;
  void install(EventLoop& loop) {
    loop.set_exception_handler([this](EventLoop&, const ExceptionContext& c) {
      messages.push_back(c.message);
      exceptions.push_back(c.exception);
    });
  }
};

// Counts live instances, so a test can assert nothing leaked or was copied
// where it should have been moved.
struct counted {
  static inline int alive = 0;
  static inline int copies = 0;
  int value = 0;
  explicit counted(int v = 0) : value(v) { ++alive; }
  counted(const counted& o) : value(o.value) {
    ++alive;
    ++copies;
  }
  counted(counted&& o) noexcept : value(o.value) { ++alive; }
  counted& operator=(const counted& o) {
    value = o.value;
    ++copies;
    return *this;
  }
  counted& operator=(counted&&) noexcept = default;
  ~counted() { --alive; }
  static void reset() { alive = copies = 0; }
};

// A fixture with a loop on the backend under test, closed at the end.
struct loop_fixture {
  std::unique_ptr<EventLoop> loop = make_loop();
  // How long run() lets a task take before it fails it; a fixture may set
  // its own.
  std::chrono::milliseconds run_timeout{std::chrono::seconds(20)};
  ~loop_fixture() {
    if (!loop->is_closed()) loop->close();
  }
  // Runs `t` to completion, failing (TimeoutError) rather than hanging.
  template <class T>
  T run(Task<T> t) {
    return run(std::move(t), run_timeout);
  }
  template <class T>
  T run(Task<T> t, std::chrono::milliseconds timeout) {
    return loop->run_until_complete(wait_for(std::move(t), timeout));
  }
};

// A loop on the backend under test driven by a VirtualClock: sleeps and
// timeouts take no real time and their durations are exact.
struct vloop {
  VirtualClock clock;
  std::unique_ptr<EventLoop> loop = make_loop(clock);
  ~vloop() {
    if (!loop->is_closed()) loop->close();
  }
  // Loop time since `t0`.
  Clock::duration elapsed(Clock::time_point t0) const { return loop->time() - t0; }
};

// The threads of this process now (/proc/self/status), to see a pool's
// threads start and end.
int thread_count();

// An exception type no library code throws, for tests that throw their own.
struct my_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A duration as (fractional) milliseconds or whole nanoseconds, for
// assertions and messages.
double ms(std::chrono::nanoseconds d);
long long ns(std::chrono::nanoseconds d);

// For BOOST_CHECK_EXCEPTION: checks that the message contains `part`.
std::function<bool(const std::exception&)> message_has(std::string part);

// Runs exactly one loop iteration (stop() before run_forever()): the
// callbacks ready now, and timers already due.
void run_one_iteration(EventLoop& loop);

// Sleeps `d`.
Task<> pause(Clock::duration d);

// Sleeps `d`, appends `v` to `*log` (if given), returns `v`.
Task<int> value_after(int v, Clock::duration d, std::vector<std::string>* log = nullptr);

// Sleeps `d`, then sets `*flag`.
Task<> void_after(bool* flag, Clock::duration d);

}  // namespace polyloop::testing
