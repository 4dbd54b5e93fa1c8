// Regressions found by review: each case is an expectation from asyncio or
// from the contract in the headers that an earlier version did not meet
// (close during gather, cancel after close on asio, wait_for racing its
// timeout, wait(FIRST_EXCEPTION) and cancellation, a cancel handed on to an
// awaited task, wait_for and the inner task's own error), plus guards for
// cancel/close in the iteration an operation starts. One binary per backend.
#define BOOST_TEST_MODULE regression
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using pl::testing::make_loop;

namespace {

void one_iteration(pl::EventLoop& loop) {
  loop.stop();
  loop.run_forever();
}

// Runs the loop until `f` is done or `limit` (real time) passes.
template <class T>
void run_until_done_or(pl::EventLoop& loop, const pl::Future<T>& f,
                       std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!f.done() && std::chrono::steady_clock::now() < deadline) {
    auto h = loop.call_later(5ms, [] {});
    one_iteration(loop);
    h.cancel();
  }
}

struct quiet_handler {
  std::vector<std::string> messages;
  void install(pl::EventLoop& loop) {
    loop.set_exception_handler(
        [this](pl::EventLoop&, const pl::ExceptionContext& c) { messages.push_back(c.message); });
  }
};

pl::Task<int> sleeper(pl::Clock::duration d) {
  co_await pl::sleep(d);
  co_return 1;
}

// --- 1. close() while a task waits in gather/wait_all on newer children ----

pl::Task<> gathers_two_sleepers() { co_await pl::gather(sleeper(1h), sleeper(1h)); }
pl::Task<> wait_alls_two_sleepers() { co_await pl::wait_all(sleeper(1h), sleeper(1h)); }

}  // namespace

// EventLoop::close() documents: drops callbacks and ends every pending task.
// The children's done lists still hold the when_ready's links, whose
// ready_node::fn was never set; future_state_base::drop_callbacks() calls
// l->fn(l, discard) on them: a call through a null function pointer.
BOOST_AUTO_TEST_CASE(close_while_a_task_awaits_gather_of_pending_children) {
  auto loop = make_loop();
  quiet_handler log;
  log.install(*loop);
  auto f = loop->create_task(gathers_two_sleepers());
  one_iteration(*loop);
  one_iteration(*loop);
  BOOST_REQUIRE(!f.done());
  loop->close();
  BOOST_CHECK(f.cancelled());
}

BOOST_AUTO_TEST_CASE(destroying_a_loop_while_a_task_awaits_wait_all_of_pending_children) {
  quiet_handler log;
  {
    auto loop = make_loop();
    log.install(*loop);
    loop->create_task(wait_alls_two_sleepers());
    one_iteration(*loop);
    one_iteration(*loop);
  }  // ~EventLoop closes the loop
  BOOST_CHECK(!log.messages.empty());
}

// --- 2. wait(FIRST_EXCEPTION): a cancelled future is not an exception -------

namespace {
pl::Task<std::size_t> wait_first_exception(std::vector<pl::Future<int>> fs) {
  auto r = co_await pl::wait(std::move(fs), pl::FIRST_EXCEPTION);
  co_return r.pending.size();
}
}  // namespace

// asyncio.wait(FIRST_EXCEPTION) returns early only for a future that has an
// exception and is *not* cancelled (`not f.cancelled() and f.exception() is
// not None`); else it waits for all. when_ready counts a cancelled child as
// a failure, so wait() returns at once with `b` still pending.
BOOST_AUTO_TEST_CASE(wait_first_exception_does_not_return_for_a_cancelled_future) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  auto a = loop->create_future<int>();
  auto b = loop->create_future<int>();
  a.cancel();
  loop->call_later(10ms, [b]() mutable { b.set_result(1); });
  std::size_t pending = loop->run_until_complete(wait_first_exception({a, b}));
  BOOST_CHECK_EQUAL(pending, 0u);
  BOOST_CHECK(b.done());
  loop->close();
}

// --- 3. wait_for cancelled after its timeout fired ---------------------------

namespace {
pl::Task<int> wait_for_future(pl::Future<int> inner, pl::Clock::duration t) {
  co_return co_await pl::wait_for(inner, t);
}
}  // namespace

// gather.h: "Cancelling the wait_for cancels `aw` as well" (asyncio: wait_for
// never returns or raises with the inner work still running). If the cancel
// lands after the timeout ended the first wait but before the task resumed,
// when_ready::on_cancel_hook finds no linked child, and wait_for raises
// CancelledError with the inner future still pending and uncancelled.
BOOST_AUTO_TEST_CASE(wait_for_cancelled_in_the_iteration_its_timeout_fired_still_cancels_inner) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  auto inner = loop->create_future<int>();
  auto t0 = loop->time();
  auto outer = loop->create_task(wait_for_future(inner, 1s));
  one_iteration(*loop);  // wait_for's timer is at t0 + 1s
  // Same deadline, scheduled later: runs right after the timeout, same iteration.
  loop->call_at(t0 + 1s, [&] { outer.cancel(); });
  try {
    loop->run_until_complete(outer);
  } catch (const pl::CancelledError&) {
  }
  BOOST_CHECK(outer.cancelled());
  BOOST_CHECK(inner.cancelled());
  loop->close();
}

// --- 4. an awaited task that swallows the cancel -----------------------------

namespace {
pl::Task<int> swallow_cancel() {
  try {
    co_await pl::sleep(1h);
  } catch (const pl::CancelledError&) {
    co_return 42;
  }
  co_return 0;
}
pl::Task<int> await_future(pl::Future<int> f) { co_return co_await f; }
}  // namespace

// asyncio Task.cancel(): when the task waits on a future whose cancel()
// succeeds, _must_cancel is NOT set ("it may be a Task that catches and
// ignores the cancellation so we may have to ignore it as well"): the outer
// task gets the inner task's result. polyloop always sets must_cancel, so
// the outer task raises CancelledError although the inner one returned 42.
BOOST_AUTO_TEST_CASE(outer_task_gets_the_result_when_the_awaited_task_swallows_the_cancel) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  auto inner = loop->create_task(swallow_cancel());
  auto outer = loop->create_task(await_future(inner));
  one_iteration(*loop);
  outer.cancel();
  while (!outer.done()) one_iteration(*loop);
  BOOST_CHECK_EQUAL(inner.result(), 42);
  BOOST_CHECK(!outer.cancelled());
  if (!outer.cancelled()) BOOST_CHECK_EQUAL(outer.result(), 42);
  loop->close();
}

// --- 5. I/O on a non-blocking fd: cancel / close in the start iteration ------

namespace {
struct read_outcome {
  bool cancelled = false;
  int error = 0;
  std::int64_t result = -1;
};
pl::Task<> read_into(int fd, read_outcome* out) {
  char buf[16];
  try {
    out->result = co_await pl::async_read(fd, buf, sizeof buf);
  } catch (const pl::CancelledError&) {
    out->cancelled = true;
  } catch (const std::system_error& e) {
    out->error = e.code().value();
  }
}
pl::Task<> close_fd(int fd) { co_await pl::async_close(fd); }
}  // namespace

// Backend::cancel(): "It then completes exactly once, through poll(), with
// -ECANCELED, or with its real result". On io_uring a read of an O_NONBLOCK
// pipe gets -EAGAIN from the kernel in the same submission as the cancel
// SQE; the cancel finds nothing, and handle_cqe() re-arms a readiness poll:
// the cancel is lost and the task stays suspended until data comes.
BOOST_AUTO_TEST_CASE(cancel_in_the_iteration_a_read_started_ends_it_promptly) {
  auto loop = make_loop();
  int p[2];
  BOOST_REQUIRE_EQUAL(::pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  read_outcome out;
  auto f = loop->create_task(read_into(p[0], &out));
  loop->call_soon([&] { f.cancel(); });  // after the task's first step, same iteration
  run_until_done_or(*loop, f, 500ms);
  BOOST_CHECK(f.done());
  BOOST_CHECK(out.cancelled);
  if (!f.done()) {  // let it finish so nothing is left in flight
    BOOST_REQUIRE_EQUAL(::write(p[1], "x", 1), 1);
    run_until_done_or(*loop, f, 2000ms);
  }
  auto c = loop->create_task(close_fd(p[0]));
  run_until_done_or(*loop, c, 2000ms);
  ::close(p[1]);
  loop->close();
}

// io.h: async_close: "its pending operations end with CancelledError". On
// io_uring, a read started in the same iteration got -EAGAIN before the
// cancel-fd SQE ran, so nothing was cancelled; after the close the read is
// re-armed as a poll on the closed fd number and ends with EBADF (or waits on
// whatever file reuses the number).
BOOST_AUTO_TEST_CASE(close_in_the_iteration_a_read_started_cancels_the_read) {
  auto loop = make_loop();
  int p[2];
  BOOST_REQUIRE_EQUAL(::pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  read_outcome out;
  auto r = loop->create_task(read_into(p[0], &out));
  auto c = loop->create_task(close_fd(p[0]));
  run_until_done_or(*loop, r, 500ms);
  run_until_done_or(*loop, c, 500ms);
  BOOST_CHECK(r.done());
  BOOST_CHECK(out.cancelled);
  BOOST_CHECK_EQUAL(out.error, 0);
  ::close(p[1]);
  loop->close();
}

// --- 6. asio: cancel of an operation whose fd was just closed ---------------

namespace {
pl::Task<> recv_into(int fd, read_outcome* out) {
  char buf[16];
  try {
    out->result = co_await pl::async_recv(fd, buf, sizeof buf);
  } catch (const pl::CancelledError&) {
    out->cancelled = true;
  } catch (const std::system_error& e) {
    out->error = e.code().value();
  }
}
}  // namespace

// A recv waits; in one iteration another task async_close()s its fd and then
// the recv's task is cancelled. asio: close_fd() moved fds_[fd] out, but the
// operation's aborted wait has not run yet (waits(op) == 1), so cancel()
// dereferences the null fds_[fd] (or, if the number was reused, cancels an
// unrelated descriptor's waits).
BOOST_AUTO_TEST_CASE(cancelling_an_operation_after_its_fd_was_closed_in_the_same_iteration) {
  auto loop = make_loop();
  int sv[2];
  BOOST_REQUIRE_EQUAL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  read_outcome out;
  auto r = loop->create_task(recv_into(sv[0], &out));
  one_iteration(*loop);
  one_iteration(*loop);
  BOOST_REQUIRE(!r.done());
  auto c = loop->create_task(close_fd(sv[0]));
  loop->call_soon([&] { r.cancel(); });  // after the close's step, same iteration
  run_until_done_or(*loop, r, 1000ms);
  run_until_done_or(*loop, c, 1000ms);
  BOOST_CHECK(r.done());
  BOOST_CHECK(out.cancelled);
  ::close(sv[1]);
  loop->close();
}

// --- 7. wait_for: an inner task that fails while being cancelled -------------

namespace {
struct cleanup_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
pl::Task<int> fails_when_cancelled() {
  try {
    co_await pl::sleep(1h);
  } catch (const pl::CancelledError&) {
    throw cleanup_error("cleanup failed");
  }
  co_return 0;
}
pl::Task<int> wait_for_task(pl::Clock::duration t) {
  co_return co_await pl::wait_for(fails_when_cancelled(), t);
}
}  // namespace

// asyncio.wait_for (3.11: `return fut.result()` after _cancel_and_wait;
// 3.12: `async with timeout(): await fut`) lets an exception the inner work
// raised while being cancelled propagate; only CancelledError becomes
// TimeoutError. polyloop's wait_for turns any exception into TimeoutError
// and drops the inner one.
BOOST_AUTO_TEST_CASE(wait_for_propagates_an_error_the_inner_task_raises_while_cancelled) {
  pl::VirtualClock clock;
  auto loop = make_loop(clock);
  try {
    loop->run_until_complete(wait_for_task(1s));
    BOOST_ERROR("wait_for returned a value");
  } catch (const cleanup_error&) {
  } catch (const pl::TimeoutError& e) {
    BOOST_ERROR("the inner error became TimeoutError: " << e.what());
  }
  loop->close();
}

