// A stream's receive as one multishot operation into the buffers its
// backend lends (backend_traits::multishot_recv; io_uring: a provided
// buffer ring). Armed when a reader first needs bytes, it stays armed
// across reads, so a busy connection takes one start per burst, not per
// read; the kernel picks a buffer only when bytes come, so a quiet
// connection holds none. The stream reads the queued buffers in place and
// gives each back once consumed (net/stream.cc).
//
// Bounded: once the buffers queued here hold `limit()` bytes or more (its
// reader stopped reading), the operation is cancelled, and the bytes wait
// in the socket (TCP flow control) until the queue is read; it is armed
// again by the next wait. Out of lent buffers (-ENOBUFS), check() says
// `starved`: the stream then makes one plain receive, and the next check()
// arms it again. Nothing is lost either way: the kernel consumes bytes only
// into a buffer it reports.
#pragma once

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "core/backend/backend.h"
#include "core/future/future.h"
#include "core/future/suspended_task.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"

namespace polyloop::net::detail {

class lent_receiver final : operation {
 public:
  enum class status : std::uint8_t { data, eof, starved, wait };

  // `closed_locally`: the stream's flag, set before its own close (that
  // close's cancel is end of stream, as stream_recv says).
  lent_receiver(EventLoop& loop, int socket, const bool* closed_locally) noexcept
      : loop_(&loop),
        pool_(polyloop::detail::loop_access::backend(loop).lent()),
        closed_locally_(closed_locally) {
    fn = &on_ready;
    kind = op_kind::recv;
    fd = socket;
    multishot = true;
    buf = &results_;
    wake_.rx = this;
    wake_.fn = &on_wake;
  }
  // Only once !busy(), or after the loop's close (its backend forgot the
  // operation). Every buffer still held goes back.
  ~lent_receiver() {
    give_back_spent();
    for (std::size_t i = head_; i < queue_.size(); ++i) pool_->give_back(lent_id(queue_[i]));
    for (std::int64_t r : results_.results) {
      if (lent_len(r) > 0) pool_->give_back(lent_id(r));
    }
  }
  lent_receiver(const lent_receiver&) = delete;
  lent_receiver& operator=(const lent_receiver&) = delete;

  // The backend still holds the operation, or the ready queue does.
  bool busy() const noexcept { return results_.armed || !results_.results.empty() || !end_seen_; }

  // The unread rest of the first queued buffer; empty if none is queued.
  std::span<const char> front() const noexcept {
    if (head_ == queue_.size()) return {};
    std::int64_t r = queue_[head_];
    return {pool_->data(lent_id(r)) + offset_, lent_len(r) - offset_};
  }
  bool has_data() const noexcept { return head_ < queue_.size(); }
  // Takes n bytes of front(). A buffer read to its end is given back at
  // the next read (release_spent()): read_some() lends a view of it.
  void consume(std::size_t n) noexcept {
    offset_ += static_cast<std::uint32_t>(n);
    std::int64_t r = queue_[head_];
    if (offset_ < lent_len(r)) return;
    give_back_spent();
    spent_ = static_cast<std::int32_t>(lent_id(r));
    offset_ = 0;
    held_ -= lent_len(r);
    if (++head_ == queue_.size()) {
      queue_.clear();
      head_ = 0;
    }
  }
  // A read begins: the buffer the last one lent out goes back.
  void release_spent() noexcept { give_back_spent(); }

  // What a reader finds now; arms the operation if it must wait and it is
  // not armed. Throws std::system_error "recv(fd N)" for a failed
  // connection (reset), as a plain receive does.
  status check() {
    if (has_data()) return status::data;
    if (results_.armed || !end_seen_) [[likely]] return status::wait;
    return settle();
  }

 private:
  // check() once the operation has ended, and nothing is queued.
  status settle() {
    if (eof_) return status::eof;
    std::int64_t end = std::exchange(results_.end, 0);
    if (end == -ENOBUFS) return status::starved;
    if (end == -ECANCELED && *closed_locally_) {
      eof_ = true;
      return status::eof;
    }
    if (end < 0 && !(end == -ECANCELED && stopped_)) {
      results_.end = end;  // said again by the next read
      throw std::system_error(static_cast<int>(-end), std::generic_category(),
                              "recv(fd " + std::to_string(fd) + ")");
    }
    start();
    return status::wait;
  }

 public:

  // Until results come or the operation ends (then check() again). A
  // cancel of the task throws CancelledError; the operation stays armed.
  struct awaiter {
    lent_receiver* rx;
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
      rx->task_.bind(h);
      rx->waiting_ = true;
      rx->task_.cancellable_by({&waits_on, rx});
    }
    void await_resume() { rx->task_.resume_point(); }
  };
  awaiter wait() noexcept { return {this}; }

  // Ends the operation (start_tls: the TLS transport receives by itself
  // from then on); wait until !busy(), then take what is queued.
  void stop() noexcept {
    if (results_.armed) polyloop::detail::loop_access::backend(*loop_).cancel(*this);
    stopped_ = true;
  }

  // The stream goes while the operation is still busy: this object then
  // owns itself until it ends (a close of the fd ends it), or until the
  // loop's close() drops the future that holds it.
  static void orphan(std::unique_ptr<lent_receiver> self) {
    lent_receiver* me = self.get();
    me->orphaned_ = true;
    me->ended_ = me->loop_->create_future<>();
    me->ended_.add_done_callback([owner = std::move(self)](const Future<>&) {});
    me->settle_orphan();
  }

 private:
  static constexpr std::size_t default_limit = 64 * 1024;
  // 64 KiB (as one plain receive), at most half the pool, at least a buffer.
  std::size_t limit() const noexcept {
    std::size_t half = std::size_t{pool_->size} * pool_->count / 2;
    return std::max<std::size_t>(pool_->size, std::min(default_limit, half));
  }

  void start() {
    stopped_ = false;
    end_seen_ = false;
    ++polyloop::detail::loop_access::counts(*loop_).ops_started[static_cast<std::size_t>(kind)];
    polyloop::detail::loop_access::backend(*loop_).start(*this);
  }

  void give_back_spent() noexcept {
    if (spent_ >= 0) pool_->give_back(static_cast<std::uint16_t>(spent_));
    spent_ = -1;
  }

  // The backend pushed the operation: results came, or it ended. All of
  // them are taken now (the contract: the next one pushes it again).
  static void on_ready(polyloop::detail::ready_node* n, polyloop::detail::ready_node::action what) {
    if (what != polyloop::detail::ready_node::action::run) return;  // the destructor gives back
    auto* me = static_cast<lent_receiver*>(n);
    me->take_results();
    if (!me->results_.armed && !me->end_seen_) {
      me->end_seen_ = true;
      auto& counts = polyloop::detail::loop_access::counts(*me->loop_);
      ++counts.ops_completed[static_cast<std::size_t>(me->kind)];
      if (me->results_.end == -ECANCELED) ++counts.ops_cancelled[static_cast<std::size_t>(me->kind)];
    }
    if (me->orphaned_) {
      me->settle_orphan();
      return;
    }
    // Its reader stopped reading: stop receiving until it does.
    if (me->results_.armed && !me->stopped_ && me->held_ >= me->limit()) me->stop();
    if (me->waiting_) {
      me->waiting_ = false;
      me->task_.waiter.resume();
    }
  }

  void take_results() {
    std::vector<std::int64_t>& got = results_.results;
    if (got.empty()) return;
    if (lent_len(got.back()) == 0) {
      eof_ = true;  // the kernel's last completion: nothing follows
      got.pop_back();
    }
    if (orphaned_) {
      for (std::int64_t r : got) pool_->give_back(lent_id(r));
      got.clear();
      return;
    }
    for (std::int64_t r : got) held_ += lent_len(r);
    if (head_ == queue_.size()) {
      // The two vectors trade storage: no allocation once each has grown
      // to the few buffers a burst takes.
      queue_.clear();
      head_ = 0;
      queue_.swap(got);
    } else {
      queue_.insert(queue_.end(), got.begin(), got.end());
      got.clear();
    }
  }

  void settle_orphan() {
    take_results();
    if (!busy() && !ended_.done()) ended_.set_result();  // its callback deletes this
  }

  static void on_wake(polyloop::detail::ready_node* n, polyloop::detail::ready_node::action what) {
    if (what == polyloop::detail::ready_node::action::run) {
      static_cast<waker*>(n)->rx->task_.waiter.resume();
    }
  }
  // The task was cancelled while waiting: resume it soon (never inline),
  // to see CancelledError; the operation goes on.
  static bool on_cancel(void* self) {
    auto* me = static_cast<lent_receiver*>(self);
    if (me->waiting_) {
      me->waiting_ = false;
      polyloop::detail::loop_access::schedule(*me->loop_, &me->wake_);
    }
    return false;
  }
  static void describe(const void* self, std::ostream& out) {
    out << "recv (multishot) on fd " << static_cast<const lent_receiver*>(self)->fd;
  }
  static constexpr polyloop::detail::wait_kind waits_on{&on_cancel, &describe};

  struct waker : polyloop::detail::ready_node {
    lent_receiver* rx = nullptr;
  };

  EventLoop* loop_;
  lent_buffers* pool_;
  const bool* closed_locally_;
  multishot_results results_;
  std::vector<std::int64_t> queue_;  // buffers received, read from head_ on
  std::size_t head_ = 0;
  std::uint32_t offset_ = 0;  // bytes of queue_[head_] already read
  std::size_t held_ = 0;      // bytes of the queued buffers (read or not)
  std::int32_t spent_ = -1;   // a buffer read to its end, not yet given back
  bool eof_ = false;
  bool end_seen_ = true;  // on_ready saw the operation's last end (or it never started)
  bool stopped_ = false;  // stop() cancelled it: its -ECANCELED is no failure
  bool waiting_ = false;  // a reader is suspended in wait()
  bool orphaned_ = false;
  polyloop::detail::suspended_task task_;
  waker wake_;
  Future<> ended_;  // orphaned: its callback owns this
};

}  // namespace polyloop::net::detail
