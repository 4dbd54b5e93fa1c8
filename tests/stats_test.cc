// EventLoop::stats() (core/loop/loop_stats.h) on the backend under test:
// after a known amount of work each counter says what was done: exactly
// where the meaning is exact, within the bound the backend promises where a
// backend may legitimately make more syscalls. asyncio has no counterpart.
#include "core/loop/loop_stats.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE stats
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using pl::op_kind;
using pl::testing::loop_fixture;
using pl::testing::run_one_iteration;
using pl::testing::vloop;

namespace {

// after - before, member by member, for the counters a test reads.
pl::backend_counters minus(const pl::backend_counters& a, const pl::backend_counters& b) {
  return {.syscalls = a.syscalls - b.syscalls,
          .epoll_waits = a.epoll_waits - b.epoll_waits,
          .epoll_ctls = a.epoll_ctls - b.epoll_ctls,
          .io_attempts = a.io_attempts - b.io_attempts,
          .enters = a.enters - b.enters,
          .sqes_submitted = a.sqes_submitted - b.sqes_submitted,
          .cqes_reaped = a.cqes_reaped - b.cqes_reaped,
          .context_runs = a.context_runs - b.context_runs};
}

const pl::backend_traits& traits(pl::EventLoop& loop) {
  return pl::detail::loop_access::backend(loop).traits();
}

// The backend simulates sockets (sim): its socket calls are its own.
bool simulates_sockets(pl::EventLoop& loop) {
  return &pl::detail::loop_access::sockets(loop) !=
         &pl::detail::system_socket_calls::instance();
}

struct socket_pair {
  int a = -1;
  int b = -1;
};

pl::Task<int> accept_one(int listener) { co_return co_await pl::async_accept(listener); }

// A connected TCP pair over loopback, made through the loop's socket calls
// (the syscalls, or the sim's in-memory network), so that the cases below
// run on every backend, sim included. Set up before a case's first snapshot.
pl::Task<socket_pair> connected_pair() {
  pl::EventLoop& loop = pl::get_running_loop();
  pl::detail::socket_calls& calls = pl::detail::loop_access::sockets(loop);
  const int type = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
  int listener = calls.socket(AF_INET, type, 0);
  BOOST_TEST_REQUIRE(listener >= 0, "socket: " << std::strerror(errno));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof at;
  BOOST_TEST_REQUIRE(calls.bind(listener, reinterpret_cast<sockaddr*>(&at), len) == 0);
  BOOST_TEST_REQUIRE(calls.listen(listener, 1) == 0);
  BOOST_TEST_REQUIRE(calls.getsockname(listener, reinterpret_cast<sockaddr*>(&at), &len) == 0);
  int client = calls.socket(AF_INET, type, 0);
  BOOST_TEST_REQUIRE(client >= 0, "socket: " << std::strerror(errno));
  pl::Future<int> accepted = loop.create_task(accept_one(listener));
  BOOST_TEST_REQUIRE(co_await pl::async_connect(client, reinterpret_cast<sockaddr*>(&at), len) == 0);
  int server = co_await accepted;
  co_await pl::async_close(listener);
  co_return socket_pair{client, server};
}

pl::Task<> close_pair(socket_pair p) {
  co_await pl::async_close(p.a);
  co_await pl::async_close(p.b);
}

pl::Task<> echo_once(int fd) {
  char buf[16];
  std::int64_t n = co_await pl::async_recv(fd, buf, sizeof buf);
  co_await pl::async_send(fd, buf, static_cast<std::size_t>(n));
}

pl::Task<std::int64_t> ping(int fd) {
  co_await pl::async_send(fd, "ping", 4);
  char buf[16];
  co_return co_await pl::async_recv(fd, buf, sizeof buf);
}

pl::Task<std::int64_t> recv_one(int fd) {
  char buf[16];
  co_return co_await pl::async_recv(fd, buf, sizeof buf);
}

pl::Task<int> after_sleep(int v) {
  co_await pl::sleep(0ms);
  co_return v;
}

}  // namespace

BOOST_AUTO_TEST_CASE(callbacks_and_timers_are_counted_exactly) {
  vloop v;
  pl::EventLoop& loop = *v.loop;
  const pl::LoopStats before = loop.stats();
  const int callbacks = 5;
  const int timers = 6;
  const int cancelled = 2;
  int ran = 0;
  for (int i = 0; i < callbacks; ++i) loop.call_soon([&ran] { ++ran; });
  std::vector<pl::TimerHandle> handles;
  for (int i = 0; i < timers; ++i) {
    handles.push_back(loop.call_later(std::chrono::milliseconds(10 * (i + 1)), [&ran] { ++ran; }));
  }
  for (int i = 0; i < cancelled; ++i) handles[static_cast<std::size_t>(i) * 2].cancel();
  loop.call_later(1s, [&loop] { loop.stop(); });
  loop.run_forever();
  const pl::LoopStats after = loop.stats();

  BOOST_TEST(ran == callbacks + timers - cancelled);
  // The stop() timer is a callback and a timer too.
  BOOST_TEST(after.callbacks_run - before.callbacks_run ==
             static_cast<std::uint64_t>(callbacks + timers - cancelled + 1));
  BOOST_TEST(after.timers_scheduled - before.timers_scheduled ==
             static_cast<std::uint64_t>(timers + 1));
  BOOST_TEST(after.timers_fired - before.timers_fired ==
             static_cast<std::uint64_t>(timers - cancelled + 1));
  BOOST_TEST(after.timers_cancelled - before.timers_cancelled ==
             static_cast<std::uint64_t>(cancelled));
  // Every iteration made exactly one call of the backend's poll().
  BOOST_TEST(after.iterations - before.iterations ==
             (after.waits_blocking - before.waits_blocking) +
                 (after.waits_nonblocking - before.waits_nonblocking));
  BOOST_TEST(after.iterations > before.iterations);
}

BOOST_AUTO_TEST_CASE(iterations_and_nonblocking_waits_are_counted_exactly) {
  loop_fixture f;
  const pl::LoopStats before = f.loop->stats();
  const int iterations = 7;
  int ran = 0;
  for (int i = 0; i < iterations; ++i) {
    f.loop->call_soon([&ran] { ++ran; });
    run_one_iteration(*f.loop);  // stop() first: the wait does not block
  }
  const pl::LoopStats after = f.loop->stats();
  BOOST_TEST(ran == iterations);
  BOOST_TEST(after.iterations - before.iterations == static_cast<std::uint64_t>(iterations));
  BOOST_TEST(after.waits_nonblocking - before.waits_nonblocking ==
             static_cast<std::uint64_t>(iterations));
  BOOST_TEST(after.waits_blocking == before.waits_blocking);
  BOOST_TEST(after.callbacks_run - before.callbacks_run == static_cast<std::uint64_t>(iterations));
}

BOOST_AUTO_TEST_CASE(tasks_are_counted_when_created_and_when_finished) {
  vloop v;
  pl::EventLoop& loop = *v.loop;
  const pl::LoopStats before = loop.stats();
  const int tasks = 7;
  std::vector<pl::Future<int>> futures;
  for (int i = 0; i < tasks; ++i) futures.push_back(loop.create_task(after_sleep(i)));
  // Cancelled before its first step: it ends, unstarted, and counts as finished.
  pl::Future<int> unstarted = loop.create_task(after_sleep(-1));
  unstarted.cancel();
  const pl::LoopStats created = loop.stats();
  BOOST_TEST(created.tasks_created - before.tasks_created == static_cast<std::uint64_t>(tasks + 1));
  BOOST_TEST(created.tasks_finished == before.tasks_finished);

  auto main = [&futures]() -> pl::Task<int> {
    int sum = 0;
    for (pl::Future<int>& fut : futures) sum += co_await fut;
    co_return sum;
  };
  BOOST_TEST(loop.run_until_complete(main()) == tasks * (tasks - 1) / 2);
  const pl::LoopStats after = loop.stats();
  // run_until_complete scheduled `main` as a task of its own.
  BOOST_TEST(after.tasks_created - before.tasks_created == static_cast<std::uint64_t>(tasks + 2));
  BOOST_TEST(after.tasks_finished - before.tasks_finished == static_cast<std::uint64_t>(tasks + 2));
}

BOOST_AUTO_TEST_CASE(a_socket_round_trip_counts_its_operations_and_syscalls) {
  loop_fixture f;
  pl::EventLoop& loop = *f.loop;
  socket_pair s = loop.run_until_complete(connected_pair());
  const pl::LoopStats before = loop.stats();
  loop.create_task(echo_once(s.b));
  BOOST_TEST(loop.run_until_complete(ping(s.a)) == 4);
  const pl::LoopStats after = loop.stats();

  for (op_kind k : {op_kind::send, op_kind::recv}) {
    BOOST_TEST(after.op(k).started - before.op(k).started == 2u);
    BOOST_TEST(after.op(k).completed - before.op(k).completed == 2u);
    BOOST_TEST(after.op(k).cancelled == before.op(k).cancelled);
  }
  BOOST_TEST(after.op(op_kind::read).started == before.op(op_kind::read).started);

  const pl::backend_counters d = minus(after.backend, before.backend);
  BOOST_TEST_MESSAGE("round trip: syscalls "
                     << d.syscalls << ", epoll_waits " << d.epoll_waits << ", epoll_ctls "
                     << d.epoll_ctls << ", io_attempts " << d.io_attempts << ", enters " << d.enters
                     << ", sqes " << d.sqes_submitted << ", cqes " << d.cqes_reaped
                     << ", context_runs " << d.context_runs << ", iterations "
                     << after.iterations - before.iterations);
  // Every counted kind of syscall is also in `syscalls`.
  BOOST_TEST(d.syscalls >= d.epoll_waits + d.epoll_ctls + d.enters);
  BOOST_TEST(d.syscalls >= d.io_attempts);
  // The echo's recv had to wait for the ping: the backend waited on the
  // kernel at least once, in whichever way it waits (sim has no kernel).
  if (!simulates_sockets(loop)) BOOST_TEST(d.epoll_waits + d.enters + d.context_runs >= 1u);
  // At most one registration per fd (epoll registers each fd once; the
  // others have no epoll_ctl of their own).
  BOOST_TEST(d.epoll_ctls <= 2u);
  if (traits(loop).tries_in_start) {
    // Each of the 4 operations made at least the attempt that succeeded,
    // and at most two: one in start(), one after the single readiness
    // event a one-message exchange gives it.
    BOOST_TEST(d.io_attempts >= 4u);
    BOOST_TEST(d.io_attempts <= 8u);
  }
  if (traits(loop).kernel_performs_ops) {
    // One SQE and one CQE per operation at least (the backend's own, such
    // as its wake-up's eventfd read, come on top); no attempts of its own.
    BOOST_TEST(d.sqes_submitted >= 4u);
    BOOST_TEST(d.cqes_reaped >= 4u);
    BOOST_TEST(d.enters >= 1u);
    BOOST_TEST(d.io_attempts == 0u);
  }
  if (simulates_sockets(loop)) {
    // sim counts an attempt (and a syscall) each time it tries an
    // operation: each of the 4 at least once, and at most once more after
    // the one change (the ping's arrival, the echo's) that can unblock it.
    BOOST_TEST(d.io_attempts >= 4u);
    BOOST_TEST(d.io_attempts <= 8u);
    BOOST_TEST(d.syscalls == d.io_attempts);
  }
  BOOST_TEST(after.iterations - before.iterations ==
             (after.waits_blocking - before.waits_blocking) +
                 (after.waits_nonblocking - before.waits_nonblocking));
  loop.run_until_complete(close_pair(s));
}

// Sends on a socket whose peer was closed until one fails (the first may
// still succeed: the peer's reset arrives after it); the number made.
pl::Task<int> send_until_failure(int fd) {
  for (int sends = 1; sends <= 100; ++sends) {
    try {
      co_await pl::async_send(fd, "x", 1);
    } catch (const std::system_error&) {
      co_return sends;
    }
  }
  co_return -1;
}

pl::Task<> send_one(int fd) { co_await pl::async_send(fd, "x", 1); }

pl::Task<> close_one(int fd) { co_await pl::async_close(fd); }

// The failure path (io_awaiter::throw_failure): counted as completed, not as
// cancelled, and the error names the call.
BOOST_AUTO_TEST_CASE(a_failed_operation_counts_as_completed_and_not_cancelled) {
  loop_fixture f;
  pl::EventLoop& loop = *f.loop;
  socket_pair s = loop.run_until_complete(connected_pair());
  loop.run_until_complete(close_one(s.b));
  const pl::LoopStats before = loop.stats();
  const int sends = loop.run_until_complete(send_until_failure(s.a));
  BOOST_TEST_REQUIRE(sends > 0, "100 sends to a closed peer all succeeded");
  const pl::LoopStats after = loop.stats();
  const pl::OpCounts& s0 = before.op(op_kind::send);
  const pl::OpCounts& s1 = after.op(op_kind::send);
  BOOST_TEST(s1.started - s0.started == static_cast<std::uint64_t>(sends));
  BOOST_TEST(s1.completed - s0.completed == static_cast<std::uint64_t>(sends));
  BOOST_TEST(s1.cancelled == s0.cancelled);
  BOOST_CHECK_EXCEPTION(loop.run_until_complete(send_one(s.a)), std::system_error,
                        pl::testing::message_has("send(fd "));
  loop.run_until_complete(close_one(s.a));
}

BOOST_AUTO_TEST_CASE(a_cancelled_operation_counts_as_completed_and_cancelled) {
  loop_fixture f;
  pl::EventLoop& loop = *f.loop;
  socket_pair s = loop.run_until_complete(connected_pair());
  const pl::LoopStats before = loop.stats();
  pl::Future<std::int64_t> waiting = loop.create_task(recv_one(s.a));
  run_one_iteration(loop);  // the recv is started and waits: nothing was sent
  waiting.cancel();
  BOOST_CHECK_THROW(loop.run_until_complete(waiting), pl::CancelledError);
  const pl::LoopStats after = loop.stats();
  const pl::OpCounts& r0 = before.op(op_kind::recv);
  const pl::OpCounts& r1 = after.op(op_kind::recv);
  BOOST_TEST(r1.started - r0.started == 1u);
  BOOST_TEST(r1.completed - r0.completed == 1u);
  BOOST_TEST(r1.cancelled - r0.cancelled == 1u);
  loop.run_until_complete(close_pair(s));
}

BOOST_AUTO_TEST_CASE(each_wake_up_from_another_thread_is_counted_once) {
  loop_fixture f;
  pl::EventLoop& loop = *f.loop;
  const pl::LoopStats before = loop.stats();
  std::thread other;
  loop.call_soon([&] {
    // From the loop's own thread it is a call_soon: no wake-up.
    loop.call_soon_threadsafe([] {});
    other = std::thread([&loop] { loop.call_soon_threadsafe([&loop] { loop.stop(); }); });
  });
  loop.run_forever();  // blocks in the backend until the other thread's wake-up
  other.join();
  const pl::LoopStats after = loop.stats();
  BOOST_TEST(after.threadsafe_wakeups - before.threadsafe_wakeups == 1u);
  // The three callables: the call_soon, and both call_soon_threadsafe ones.
  BOOST_TEST(after.callbacks_run - before.callbacks_run == 3u);
}

BOOST_AUTO_TEST_CASE(each_loop_has_its_own_counters) {
  loop_fixture busy;
  loop_fixture idle;
  const pl::LoopStats idle_before = idle.loop->stats();
  BOOST_TEST(idle_before.iterations == 0u);
  BOOST_TEST(idle_before.callbacks_run == 0u);
  BOOST_TEST(idle_before.backend.syscalls == 0u);  // set-up calls are not counted
  for (int i = 0; i < 3; ++i) busy.loop->call_soon([] {});
  busy.loop->call_later(0ms, [] {});
  run_one_iteration(*busy.loop);
  const pl::LoopStats idle_after = idle.loop->stats();
  BOOST_TEST(busy.loop->stats().callbacks_run >= 3u);
  BOOST_TEST(std::memcmp(&idle_before, &idle_after, sizeof idle_before) == 0);

  const pl::LoopStats busy_before = busy.loop->stats();
  idle.loop->call_soon([] {});
  run_one_iteration(*idle.loop);
  BOOST_TEST(idle.loop->stats().callbacks_run == 1u);
  const pl::LoopStats busy_after = busy.loop->stats();
  BOOST_TEST(std::memcmp(&busy_before, &busy_after, sizeof busy_before) == 0);
}

BOOST_AUTO_TEST_CASE(reading_stats_on_the_loop_thread_is_consistent_and_makes_no_syscall) {
  loop_fixture f;
  pl::EventLoop& loop = *f.loop;
  bool same = false;
  loop.call_soon([&] {
    const pl::LoopStats first = loop.stats();
    for (int i = 0; i < 1000; ++i) (void)loop.stats();
    const pl::LoopStats last = loop.stats();
    // Nothing ran in between, so nothing moved: not even a syscall count.
    same = std::memcmp(&first, &last, sizeof first) == 0;
  });
  run_one_iteration(loop);
  BOOST_TEST(same);
}

// callbacks_run is derived from the ready queue's pops (core/loop/event_loop.cc,
// EventLoop::stats()) rather than counted per callback: these are the pops it
// must not count, and the moment each callback starts to count.
BOOST_AUTO_TEST_CASE(callbacks_run_counts_each_callback_as_it_starts_and_nothing_else) {
  loop_fixture f;
  pl::EventLoop& loop = *f.loop;
  pl::testing::handler_log log;
  log.install(loop);
  const std::uint64_t base = loop.stats().callbacks_run;
  // Read from inside a batch: the running callback and those before it count.
  std::vector<std::uint64_t> seen;
  for (int i = 0; i < 3; ++i) loop.call_soon([&] { seen.push_back(loop.stats().callbacks_run); });
  run_one_iteration(loop);
  BOOST_TEST(seen == (std::vector<std::uint64_t>{base + 1, base + 2, base + 3}));

  // A callback that throws ran; a cancelled one did not.
  loop.call_soon([] { throw std::runtime_error("counted anyway"); });
  loop.call_soon([] {}).cancel();
  run_one_iteration(loop);
  BOOST_TEST(log.messages.size() == 1u);
  BOOST_TEST(loop.stats().callbacks_run == base + 4);

  // Task steps and a future's done callbacks go through the same queue and
  // are not callbacks (loop_stats.h).
  pl::Future<int> done = loop.create_future<int>();
  done.add_done_callback([](pl::Future<int>&) {});
  done.set_result(1);
  BOOST_TEST(loop.run_until_complete(after_sleep(7)) == 7);
  // run_until_complete's own stop() is one callback (core/future/future.cc).
  const std::uint64_t after_tasks = loop.stats().callbacks_run;
  BOOST_TEST(after_tasks == base + 5);

  // Callbacks still queued when the loop closes never ran.
  for (int i = 0; i < 5; ++i) loop.call_soon([] {});
  loop.close();
  BOOST_TEST(loop.stats().callbacks_run == after_tasks);
}
