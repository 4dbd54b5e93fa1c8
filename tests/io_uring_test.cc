// io_uring-specific behaviour: many operations in flight, a tiny ring whose
// SQ and CQ overflow, cancel racing completion, and every way io_uring can
// be unavailable — under "auto" (falls back to epoll, says why) and under
// an explicit "io_uring" (a clear error). Skipped when io_uring is compiled
// out (--//policies:io_uring=false).
#include "backends/io_uring/io_uring_backend.h"

#define BOOST_TEST_MODULE io_uring
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "polyloop/polyloop.h"
#include "tests/support/io_uring_rings.h"

namespace pl = polyloop;
using pl::backends::IoUringBackend;
using pl::testing::io_uring_fds;
using pl::testing::pipe_pair;
using pl::testing::read_fdinfo;
using pl::testing::ring_fdinfo;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<pl::EventLoop> ring_loop(unsigned entries) {
  return std::make_unique<pl::EventLoop>(std::make_unique<IoUringBackend>(entries));
}

// Bytes left in a pipe, read without blocking: a test that expects a byte
// the backend wrongly consumed must fail, not hang.
std::size_t drain_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  std::size_t total = 0;
  char buf[16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) total += static_cast<std::size_t>(n);
  ::fcntl(fd, F_SETFL, flags);
  return total;
}

pl::Task<std::int64_t> read_one(int fd, char* buf) { co_return co_await pl::async_read(fd, buf, 1); }

// Many reads pending in a ring far smaller than their number: the SQ ring
// fills (backlog), and their completions overflow the CQ ring (NODROP).
// `after_writes` runs once every read's data is written, before the loop
// reaps the completions.
void many_reads(pl::EventLoop& loop, std::size_t count,
                const std::function<void()>& after_writes = {}) {
  std::vector<pipe_pair> pipes(count);
  std::vector<char> bufs(count, 0);
  std::vector<pl::Future<std::int64_t>> reads;
  for (std::size_t i = 0; i < count; ++i) {
    reads.push_back(loop.create_task(read_one(pipes[i].r, &bufs[i])));
  }
  // Let every read reach the kernel, then make them all complete at once.
  loop.run_until_complete([]() -> pl::Task<> { co_await pl::sleep(20ms); }());
  for (std::size_t i = 0; i < count; ++i) {
    char c = static_cast<char>('a' + i % 26);
    BOOST_REQUIRE(::write(pipes[i].w, &c, 1) == 1);
  }
  if (after_writes) after_writes();
  auto results = loop.run_until_complete(pl::gather(reads));
  BOOST_REQUIRE_EQUAL(results.size(), count);
  for (std::size_t i = 0; i < count; ++i) {
    BOOST_TEST(results[i] == 1);
    BOOST_TEST(bufs[i] == static_cast<char>('a' + i % 26));
  }
}

// Runs `body` in a child process; returns its exit status and what it wrote
// to stderr.
template <class F>
std::pair<int, std::string> in_child(F body) {
  int err_pipe[2];
  BOOST_REQUIRE(::pipe(err_pipe) == 0);
  pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(err_pipe[1], 2);
    ::close(err_pipe[0]);
    int code = 1;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: unexpected exception: %s\n", e.what());
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  ::close(err_pipe[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(err_pipe[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out};
}

// In a child: io_uring set-up fails with `err`; "auto" must come up on epoll
// and say why on stderr, an explicit "io_uring" must throw naming the cause.
void check_unavailable(int err, const std::string& cause) {
  auto [code, err_text] = in_child([err, cause] {
    IoUringBackend::force_setup_error_for_testing(err);
    auto info = pl::available_backends();
    bool listed = false;
    for (auto& b : info) {
      if (b.name == "io_uring") listed = !b.available && b.reason.find(cause) != std::string::npos;
    }
    if (!listed) return 2;
    auto loop = pl::new_event_loop("auto");
    if (loop->backend_name() != "epoll") return 3;
    try {
      pl::new_event_loop("io_uring");
      return 4;
    } catch (const pl::BackendError& e) {
      std::string what = e.what();
      if (what.find(cause) == std::string::npos) return 5;
      if (what.find("--backend=epoll") == std::string::npos) return 6;
    }
    return 0;
  });
  BOOST_TEST_INFO("stderr: " << err_text);
  BOOST_TEST(code == 0);
  // Exactly one line, naming what was skipped and why.
  BOOST_TEST(err_text.find("not using io_uring") != std::string::npos);
  BOOST_TEST(err_text.find(cause) != std::string::npos);
  BOOST_TEST(err_text.find("using epoll") != std::string::npos);
  BOOST_TEST(std::count(err_text.begin(), err_text.end(), '\n') == 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_thousand_reads_in_flight_all_complete_with_their_own_data) {
  auto loop = ring_loop(256);
  many_reads(*loop, 1000);
}

BOOST_AUTO_TEST_CASE(a_tiny_ring_overflows_its_sq_and_cq_without_losing_a_completion) {
  // Without DEFER_TASKRUN the kernel posts a read's completion as soon as
  // its data arrives (on return from our write(), or from an io-wq worker),
  // not inside the loop's next wait: so after the 300 writes the CQ ring
  // (4 SQ entries, 16 CQ entries) must have overflowed before the loop
  // reaps anything, and the kernel's fdinfo shows the overflow list.
  std::vector<int> before = io_uring_fds();
  IoUringBackend::options opts;
  opts.entries = 4;
  opts.defer_taskrun = false;
  auto loop = std::make_unique<pl::EventLoop>(std::make_unique<IoUringBackend>(opts));
  auto* backend = static_cast<IoUringBackend*>(&pl::detail::loop_access::backend(*loop));
  BOOST_TEST(backend->sq_entries() == 4u);
  std::vector<int> ring_fds;
  for (int fd : io_uring_fds()) {
    if (std::find(before.begin(), before.end(), fd) == before.end()) ring_fds.push_back(fd);
  }
  BOOST_REQUIRE_EQUAL(ring_fds.size(), 1u);
  const int ring_fd = ring_fds[0];
  ring_fdinfo at_start = read_fdinfo(ring_fd);
  BOOST_TEST_INFO("fdinfo:\n" << at_start.text);
  BOOST_REQUIRE(at_start.cq_entries > 0u);
  BOOST_TEST(at_start.cq_entries < 300u);
  BOOST_TEST(at_start.overflowed == 0u);
  ring_fdinfo after_writes;
  many_reads(*loop, 300, [&] {
    // io-wq workers may still be posting: wait up to 2 s for the overflow.
    auto give_up = std::chrono::steady_clock::now() + 2s;
    do {
      after_writes = read_fdinfo(ring_fd);
      if (after_writes.overflowed > 0) break;
      std::this_thread::sleep_for(1ms);
    } while (std::chrono::steady_clock::now() < give_up);
  });
  BOOST_TEST_INFO("fdinfo after the writes:\n" << after_writes.text);
  BOOST_TEST(after_writes.overflowed > 0u);
  // ...and the loop flushed it: nothing is left in the overflow list.
  BOOST_TEST(read_fdinfo(ring_fd).overflowed == 0u);
}

BOOST_AUTO_TEST_CASE(a_tiny_ring_with_defer_taskrun_loses_no_completion) {
  // The default set-up: with DEFER_TASKRUN the completions are posted, and
  // overflow, inside the loop's own wait, where a test cannot look; this
  // checks only that all of them arrive with their data.
  auto loop = ring_loop(4);
  many_reads(*loop, 300);
}

BOOST_AUTO_TEST_CASE(cancel_racing_completion_completes_each_operation_exactly_once) {
  // Data is already there when the cancel is issued: each read ends either
  // with its byte or with CancelledError, never both, never neither.
  auto loop = ring_loop(64);
  constexpr std::size_t n = 200;
  std::vector<pipe_pair> pipes(n);
  std::vector<char> bufs(n, 0);
  std::vector<pl::Future<std::int64_t>> reads;
  for (std::size_t i = 0; i < n; ++i) reads.push_back(loop->create_task(read_one(pipes[i].r, &bufs[i])));
  loop->run_until_complete([]() -> pl::Task<> { co_await pl::sleep(10ms); }());
  for (std::size_t i = 0; i < n; ++i) {
    char c = 'x';
    BOOST_REQUIRE(::write(pipes[i].w, &c, 1) == 1);
    reads[i].cancel();
  }
  auto settled = loop->run_until_complete(pl::wait_all(reads));
  // Each pipe had one byte: a read that got it leaves the pipe empty, a
  // cancelled one leaves it there. A read reported cancelled that consumed
  // the byte anyway (lost data), or one reporting data it did not take,
  // fails the per-pipe check.
  std::size_t got_data = 0, cancelled = 0, left_in_pipes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    BOOST_REQUIRE(settled[i].done());
    std::size_t left = drain_nonblocking(pipes[i].r);
    left_in_pipes += left;
    BOOST_TEST_CONTEXT("read " << i) {
      if (settled[i].cancelled()) {
        ++cancelled;
        BOOST_TEST(left == 1u);
      } else {
        ++got_data;
        BOOST_TEST(settled[i].result() == 1);
        BOOST_TEST(bufs[i] == 'x');
        BOOST_TEST(left == 0u);
      }
    }
  }
  // Every byte is accounted for exactly once.
  BOOST_TEST(got_data + left_in_pipes == n);
  BOOST_TEST_MESSAGE("cancel won " << cancelled << ", completion won " << got_data);
}

BOOST_AUTO_TEST_CASE(one_submission_per_iteration_whatever_the_number_of_operations) {
  // 100 writes started in one iteration are all submitted by the next wait:
  // the loop needs one iteration, not one per operation, to see them done.
  auto loop = ring_loop(256);
  std::vector<pipe_pair> pipes(100);
  int iterations_until_done = 0;
  auto writer = [](int fd) -> pl::Task<std::int64_t> {
    co_return co_await pl::async_write(fd, "y", 1);
  };
  std::vector<pl::Future<std::int64_t>> writes;
  for (auto& p : pipes) writes.push_back(loop->create_task(writer(p.w)));
  std::function<void()> count = [&] {
    ++iterations_until_done;
    bool all = true;
    for (auto& w : writes) all = all && w.done();
    if (all) {
      loop->stop();
    } else {
      loop->call_soon(count);
    }
  };
  loop->call_soon(count);
  loop->run_forever();
  for (auto& w : writes) BOOST_TEST(w.result() == 1);
  BOOST_TEST(iterations_until_done <= 4);
}

BOOST_AUTO_TEST_CASE(enomem_retries_with_a_smaller_ring) {
  IoUringBackend::force_setup_error_for_testing(ENOMEM, 16);
  std::unique_ptr<IoUringBackend> backend;
  BOOST_CHECK_NO_THROW(backend = std::make_unique<IoUringBackend>(256));
  IoUringBackend::force_setup_error_for_testing(0);
  BOOST_REQUIRE(backend);
  BOOST_TEST(backend->sq_entries() == 16u);
}

BOOST_AUTO_TEST_CASE(enosys_old_kernel_falls_back_under_auto_and_fails_explicitly) {
  check_unavailable(ENOSYS, "ENOSYS");
}

BOOST_AUTO_TEST_CASE(eperm_disabled_or_filtered_falls_back_under_auto_and_fails_explicitly) {
  check_unavailable(EPERM, "EPERM");
}

BOOST_AUTO_TEST_CASE(enomem_memlock_falls_back_under_auto_and_fails_explicitly) {
  check_unavailable(ENOMEM, "ENOMEM");
}

BOOST_AUTO_TEST_CASE(a_real_seccomp_filter_refusing_io_uring_setup_brings_auto_up_on_epoll) {
  auto [code, err_text] = in_child([] {
    // Refuse io_uring_setup with EPERM, as a container's default profile does.
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 10;
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return 11;
    auto loop = pl::new_event_loop("auto");
    if (loop->backend_name() != "epoll") return 3;
    int v = loop->run_until_complete([]() -> pl::Task<int> {
      co_await pl::sleep(1ms);
      co_return 7;
    }());
    if (v != 7) return 4;
    try {
      pl::new_event_loop("io_uring");
      return 5;
    } catch (const pl::BackendError& e) {
      if (std::string(e.what()).find("EPERM") == std::string::npos) return 6;
    }
    return 0;
  });
  BOOST_TEST_INFO("stderr: " << err_text);
  BOOST_TEST(code == 0);
  BOOST_TEST(err_text.find("not using io_uring") != std::string::npos);
  BOOST_TEST(err_text.find("EPERM") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(auto_picks_io_uring_where_it_runs) {
  BOOST_REQUIRE(IoUringBackend::unavailable_reason().empty());
  BOOST_TEST(pl::new_event_loop("auto")->backend_name() == "io_uring");
}

// Finding 4 (issue 16): the probe asks the kernel itself, not the opcode
// list. This kernel (6.18) has CANCEL_FD|ALL (5.19); a probe that wrongly
// said no would send every close through the per-operation fallback.
BOOST_AUTO_TEST_CASE(the_kernel_cancels_by_fd_here) {
  BOOST_TEST(IoUringBackend::kernel_cancels_by_fd());
}

// The same for IORING_RECVSEND_POLL_FIRST (5.19), which op_hint::expect_wait
// turns on: a probe that wrongly said no would quietly leave every hinted
// receive to try first (tests/recv_hint_test.cc runs both paths).
BOOST_AUTO_TEST_CASE(the_kernel_takes_recv_poll_first_here) {
  BOOST_TEST(IoUringBackend::kernel_has_recv_poll_first());
}

// The set-ups the test matrix runs on are made by name; an unknown one says
// which there are.
BOOST_AUTO_TEST_CASE(set_ups_are_made_by_name_and_an_unknown_one_lists_them) {
  for (const char* name : {"io_uring:coop", "io_uring:no_taskrun", "io_uring:unregistered",
                           "io_uring:no_cancel_fd", "epoll:no_pwait2"}) {
    auto loop = pl::new_event_loop(name);
    BOOST_TEST(loop->run_until_complete([]() -> pl::Task<int> { co_return 7; }()) == 7);
  }
  BOOST_CHECK_EXCEPTION(pl::new_event_loop("io_uring:fast"), pl::BackendError,
                        [](const pl::BackendError& e) {
                          std::string m = e.what();
                          return m.find("unknown set-up 'fast' of io_uring") != std::string::npos &&
                                 m.find("no_cancel_fd") != std::string::npos;
                        });
  BOOST_CHECK_THROW(pl::new_event_loop("asio:coop"), pl::BackendError);
  BOOST_CHECK_THROW(pl::new_event_loop("nope:coop"), pl::BackendError);
}

// Cancels asked while their requests wait for an SQE (the SQ ring is full
// before the ring's first poll), one of them asked twice, as the Backend
// contract allows. Before the guard in cancel() the second request pushed
// reads[0] onto the unsent-cancel list again, which cut reads[1] off it:
// its cancel was never sent and it never ended.
BOOST_AUTO_TEST_CASE(a_cancel_asked_twice_without_an_sqe_loses_no_other_cancel) {
  IoUringBackend ring(IoUringBackend::options{.entries = 4});
  int p[2];
  BOOST_TEST_REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  char buf[4];
  auto noop = [](pl::detail::ready_node*, pl::detail::ready_node::action) {};
  std::array<pl::operation, 3> reads{};
  for (pl::operation& op : reads) {
    op.kind = pl::op_kind::read;
    op.fd = p[0];
    op.buf = buf;
    op.len = 1;
    op.fn = noop;
    ring.start(op);  // with the wake read, these fill the SQ ring
  }
  ring.cancel(reads[0]);  // no SQE left: each waits for one
  ring.cancel(reads[1]);
  ring.cancel(reads[0]);
  pl::detail::ready_queue ready;
  std::map<pl::operation*, int> completions;
  auto deadline = std::chrono::steady_clock::now() + 1s;
  while (completions.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    BOOST_TEST_REQUIRE(!ring.poll(100ms, ready));
    while (!ready.empty()) ++completions[static_cast<pl::operation*>(ready.pop())];
  }
  BOOST_TEST(completions[&reads[0]] == 1);
  BOOST_TEST(completions[&reads[1]] == 1, "the second operation's cancel was lost");
  BOOST_TEST(completions.count(&reads[2]) == 0u);
  BOOST_TEST(reads[1].result == -ECANCELED);
  ::close(p[1]);  // ends reads[2] (end of file) before the ring goes
  ring.cancel(reads[2]);
  while (completions.size() < 3 && std::chrono::steady_clock::now() < deadline + 1s) {
    BOOST_TEST_REQUIRE(!ring.poll(100ms, ready));
    while (!ready.empty()) ++completions[static_cast<pl::operation*>(ready.pop())];
  }
  ::close(p[0]);
}
