// Shared helpers for the behaviour tests: the backend under test (from
// `-- --backend=NAME`, see tests/defs.bzl), loops made on it, and a
// leak-checking value type.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "polyloop/polyloop.h"

namespace polyloop::testing {

// The backend this test binary runs on ("" = the default).
const std::string& backend_under_test();

// A loop on the backend under test, with the real clock or `clock`.
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
  ~loop_fixture() {
    if (!loop->is_closed()) loop->close();
  }
};

}  // namespace polyloop::testing
