// A server's accept as one multishot operation (backend_traits::
// multishot_accept; io_uring: IORING_ACCEPT_MULTISHOT): one start, then one
// completion per connection, taken here one by one. net/stream.cc's accept
// loop uses it where the backend has it, and async_accept elsewhere.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "core/backend/backend.h"
#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"
#include "core/task/task.h"
#include "net/detail/sockets.h"

namespace polyloop::net::detail {

class multishot_acceptor final : operation {
 public:
  multishot_acceptor(EventLoop& loop, int listening_fd) noexcept : loop_(&loop) {
    fn = &on_ready;
    kind = op_kind::accept;
    fd = listening_fd;
    multishot = true;
    buf = &results_;
  }
  // The operation must have ended (armed() false), or the loop be closed
  // (its backend then forgot it). Fds not taken are closed: their clients
  // see the connection end.
  ~multishot_acceptor() {
    for (std::size_t i = next_; i < taken_.size(); ++i) close_fd(taken_[i]);
    for (std::int64_t r : results_.results) close_fd(r);
  }
  multishot_acceptor(const multishot_acceptor&) = delete;
  multishot_acceptor& operator=(const multishot_acceptor&) = delete;

  // A connection (or an accept error) is there to take().
  bool ready() const noexcept { return next_ < taken_.size() || error_pending_; }
  // Until ready() (or the kernel ended the operation: then it is started
  // again first). Arms the operation if it is not. Throws CancelledError if
  // the awaiting task is cancelled; the operation stays armed.
  Future<> wait() {
    if (!results_.armed) start();
    signal_ = loop_->create_future<>();
    return signal_;
  }
  // The next accepted fd, which the caller now owns; or throws
  // std::system_error for an accept that failed (named as async_accept
  // names it), after which wait() starts the operation again.
  int take() {
    if (next_ < taken_.size()) {
      std::int64_t r = taken_[next_++];
      if (r >= 0) return static_cast<int>(r);
      throw accept_error(r);
    }
    error_pending_ = false;
    throw accept_error(results_.end);
  }

  bool armed() const noexcept { return results_.armed; }
  // Asks the operation to end; wait_end() then waits for it.
  void cancel() noexcept {
    if (results_.armed) polyloop::detail::loop_access::backend(*loop_).cancel(*this);
  }
  // Until the operation has ended and on_ready has seen it end (the backend
  // no longer holds it, nor the ready queue). Not cancellable: the
  // operation's memory is this object's, so its owner must outlive the end.
  Task<> wait_end() {
    while (!end_counted_) {
      signal_ = loop_->create_future<>();
      try {
        co_await signal_;
      } catch (const CancelledError&) {  // a second cancel of the task: still wait
      }
    }
  }

 private:
  void start() {
    error_pending_ = false;
    end_counted_ = false;
    ++polyloop::detail::loop_access::counts(*loop_).ops_started[static_cast<std::size_t>(kind)];
    polyloop::detail::loop_access::backend(*loop_).start(*this);
  }

  // The backend pushed the operation: results came, or it ended. All of
  // them are taken now (the contract: the next one pushes it again).
  static void on_ready(polyloop::detail::ready_node* n, polyloop::detail::ready_node::action what) {
    if (what != polyloop::detail::ready_node::action::run) return;  // the destructor closes them
    auto* me = static_cast<multishot_acceptor*>(n);
    if (me->next_ == me->taken_.size()) {
      me->taken_.clear();
      me->next_ = 0;
      std::swap(me->taken_, me->results_.results);
    } else {
      me->taken_.insert(me->taken_.end(), me->results_.results.begin(),
                        me->results_.results.end());
      me->results_.results.clear();
    }
    if (!me->results_.armed && !me->end_counted_) {
      me->end_counted_ = true;
      auto& counts = polyloop::detail::loop_access::counts(*me->loop_);
      ++counts.ops_completed[static_cast<std::size_t>(me->kind)];
      if (me->results_.end == -ECANCELED) ++counts.ops_cancelled[static_cast<std::size_t>(me->kind)];
      // Ended with an error (not by the kernel's choice, end 0): take() says it.
      if (me->results_.end < 0) me->error_pending_ = true;
    }
    if (me->signal_.valid() && !me->signal_.done()) me->signal_.set_result();
  }

  std::system_error accept_error(std::int64_t r) const {
    return std::system_error(static_cast<int>(-r), std::generic_category(),
                             "accept(fd " + std::to_string(fd) + ")");
  }
  void close_fd(std::int64_t r) noexcept {
    if (r >= 0) sockets_of(*loop_).close(static_cast<int>(r));
  }

  EventLoop* loop_;
  multishot_results results_;
  std::vector<std::int64_t> taken_;  // taken from results_, not yet handed out
  std::size_t next_ = 0;
  bool error_pending_ = false;
  bool end_counted_ = true;  // the end of the last start() was counted in the loop's stats
  Future<> signal_;
};

}  // namespace polyloop::net::detail
