// polyloop's exception types, named after asyncio's.
//
// Futures and tasks carry a std::exception_ptr and rethrow it on co_await or
// result(); the loop throws these for misuse. Every message says what went
// wrong and what to do about it.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace polyloop {

// The awaited work was cancelled (asyncio.CancelledError). A task may catch
// it to clean up; a task that lets it escape ends as cancelled.
class CancelledError : public std::runtime_error {
 public:
  CancelledError() : std::runtime_error("operation was cancelled") {}
  using std::runtime_error::runtime_error;
};

// wait_for() ran out of time; the awaited work has been cancelled.
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A future was used in a state that does not allow it: result() of a pending
// future, set_result() on a done one (asyncio.InvalidStateError).
class InvalidStateError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// The loop cannot do what was asked: it is closed, already running, stopped
// before the awaited future completed, or the future belongs to another loop
// (asyncio raises RuntimeError for these).
class EventLoopError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Several exceptions at once (asyncio's ExceptionGroup): what a TaskGroup
// throws when its children (or its body) failed. exceptions() holds them
// in the order they happened; what() says how many and what each said.
class ExceptionGroup : public std::runtime_error {
 public:
  ExceptionGroup(const std::string& message, std::vector<std::exception_ptr> exceptions);
  const std::vector<std::exception_ptr>& exceptions() const noexcept { return exceptions_; }

 private:
  std::vector<std::exception_ptr> exceptions_;
};

// A backend name is unknown, not compiled in, or cannot run on this host.
class BackendError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace polyloop
