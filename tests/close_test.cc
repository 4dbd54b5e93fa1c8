// Loop close() and fd close with operations still in the kernel, and a loop
// used from the wrong thread, on the backend (and set-up) under test
// (issue 16, findings 3-6). Each case says how it failed before its fix.
#define BOOST_TEST_MODULE close
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/socket_pair.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
using namespace std::chrono_literals;
using pl::testing::handler_log;
using pl::testing::loop_fixture;
using pl::testing::make_loop;
using pl::testing::message_has;
using pl::testing::run_one_iteration;
using pl::testing::socket_pair;

namespace {


int open_fd_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  BOOST_TEST_REQUIRE(d != nullptr);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory's own fd
}

// Returns to user space a few times over `total`: where the kernel runs a
// request's completion as task work at such a return (io_uring without
// DEFER_TASKRUN), it has run by the end.
void let_the_kernel_run(std::chrono::milliseconds total = 60ms) {
  for (int i = 0; i < 6; ++i) std::this_thread::sleep_for(total / 6);
}

pl::Task<std::int64_t> recv_into(int fd, char* buf, std::size_t len) {
  co_return co_await pl::async_recv(fd, buf, len);
}

pl::Task<std::int64_t> accept_one(int fd) { co_return co_await pl::async_accept(fd); }

// Runs iterations until the operation the task started is surely in the
// backend (and, on io_uring, submitted to the kernel).
void run_until_in_flight(pl::EventLoop& loop) {
  for (int i = 0; i < 3; ++i) run_one_iteration(loop);
}

}  // namespace

// Finding 3. Before the fix, on io_uring:coop and io_uring:no_taskrun the
// kernel completed the recv after close() into the buffer (16 bytes no
// longer zero) and took the bytes out of the socket.
BOOST_AUTO_TEST_CASE(close_leaves_no_recv_in_the_kernel) {
  socket_pair s;
  std::vector<char> buf(16, 0);  // outlives the loop, so a late write shows
  {
    auto loop = make_loop();
    handler_log log;
    log.install(*loop);
    auto reader = loop->create_task(recv_into(s.a, buf.data(), buf.size()));
    run_until_in_flight(*loop);
    BOOST_TEST_REQUIRE(!reader.done());
    loop->close();
    BOOST_TEST(reader.cancelled());
    // The window between close() (frames destroyed) and the loop's end.
    BOOST_TEST_REQUIRE(::write(s.b, "hello", 5) == 5);
    let_the_kernel_run();
    BOOST_TEST(std::count(buf.begin(), buf.end(), 0) == 16,
               "the kernel wrote into the buffer after close()");
  }
  char out[16];
  BOOST_TEST(::recv(s.a, out, sizeof out, MSG_DONTWAIT) == 5, "the bytes are still in the socket");
}

// Finding 3, closed by another thread than the one that ran the loop (a
// loop run in a worker thread and destroyed by main). io_uring with
// SINGLE_ISSUER cannot be entered from there (its completions wait for the
// owner, DEFER_TASKRUN); without it close() enters through the ring's own fd.
BOOST_AUTO_TEST_CASE(close_on_another_thread_leaves_no_recv_in_the_kernel) {
  socket_pair s;
  std::vector<char> buf(16, 0);
  {
    auto loop = make_loop();
    handler_log log;
    log.install(*loop);
    auto reader = loop->create_task(recv_into(s.a, buf.data(), buf.size()));
    // The runner stays alive across the close (a thread's exit cancels its
    // io_uring requests), and returns to user space after the write: where
    // completions run as its task work (COOP_TASKRUN), they run then.
    std::mutex m;
    std::condition_variable cv;
    int stage = 0;
    std::thread runner([&] {
      run_until_in_flight(*loop);
      std::unique_lock lock(m);
      stage = 1;
      cv.notify_all();
      cv.wait(lock, [&] { return stage == 2; });
      lock.unlock();
      let_the_kernel_run();
    });
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return stage == 1; });
    }
    BOOST_TEST(!reader.done());
    loop->close();
    BOOST_TEST(::write(s.b, "hello", 5) == 5);
    {
      std::lock_guard lock(m);
      stage = 2;
    }
    cv.notify_all();
    runner.join();
    let_the_kernel_run();
    BOOST_TEST(std::count(buf.begin(), buf.end(), 0) == 16,
               "the kernel wrote into the buffer after close()");
  }
  let_the_kernel_run();
  BOOST_TEST(std::count(buf.begin(), buf.end(), 0) == 16,
             "the kernel wrote into the buffer after the loop's end");
  char out[16];
  BOOST_TEST(::recv(s.a, out, sizeof out, MSG_DONTWAIT) == 5, "the bytes are still in the socket");
}

// Finding 3, accepts. Before the fix, on io_uring:coop and :no_taskrun the
// accept completed after close(): one fd more than expected stayed open (a
// leak) and the connection was no longer in the backlog.
BOOST_AUTO_TEST_CASE(close_leaves_no_accept_in_the_kernel_and_leaks_no_fd) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  BOOST_TEST_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  BOOST_TEST_REQUIRE(::listen(listener, 8) == 0);
  BOOST_TEST_REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  int client = -1;
  {
    auto loop = make_loop();
    handler_log log;
    log.install(*loop);
    auto acceptor = loop->create_task(accept_one(listener));
    run_until_in_flight(*loop);
    BOOST_TEST_REQUIRE(!acceptor.done());
    loop->close();
    // The window between close() and the loop's end.
    int before = open_fd_count();
    client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    BOOST_TEST_REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    let_the_kernel_run();
    BOOST_TEST(open_fd_count() == before + 1, "an fd was accepted after close()");
  }
  int accepted = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  BOOST_TEST(accepted >= 0, "the connection is still in the backlog");
  if (accepted >= 0) ::close(accepted);
  ::close(client);
  ::close(listener);
}

// Finding 4. With cancel by fd unsupported (io_uring:no_cancel_fd, as on
// 5.11-5.18), before the fallback the recv stayed in the kernel holding the
// socket, so the peer never saw the close (no EOF) and the recv never ended.
BOOST_FIXTURE_TEST_CASE(async_close_ends_a_pending_recv_and_the_peer_sees_eof, loop_fixture) {
  socket_pair s;
  char buf[8];
  auto reader = loop->create_task(recv_into(s.a, buf, sizeof buf));
  run_until_in_flight(*loop);
  BOOST_TEST_REQUIRE(!reader.done());
  int fd = s.a;
  s.a = -1;  // closed by the backend from here on
  BOOST_TEST(loop->run_until_complete([](int fd) -> pl::Task<std::int64_t> {
    co_return co_await pl::async_close(fd);
  }(fd)) == 0);
  BOOST_CHECK_THROW(loop->run_until_complete(pl::wait_for(reader, 2s)), pl::CancelledError);
  BOOST_TEST(::recv(s.b, buf, sizeof buf, MSG_DONTWAIT) == 0, "the peer sees end of stream");
}

// Finding 5. A recv with MSG_DONTWAIT (io_uring answers -EAGAIN and the
// backend waits for readiness, then retries) and a close of its socket in
// the same iteration; the number is reused at once by a new socket with
// data waiting. Before the fix io_uring re-armed on the number and the recv
// returned the new socket's bytes.
BOOST_FIXTURE_TEST_CASE(a_recv_on_an_fd_closed_meanwhile_never_reads_the_next_file, loop_fixture) {
  auto s = std::make_unique<socket_pair>();
  int fd = s->a;
  s->a = -1;  // closed by the backend below
  char buf[16] = {};
  auto reader = loop->create_task([](int fd, char* buf) -> pl::Task<std::int64_t> {
    co_return co_await pl::async_recv(fd, buf, 16, MSG_DONTWAIT);
  }(fd, buf));
  std::unique_ptr<socket_pair> reused;
  auto closer = loop->create_task([](int fd, std::unique_ptr<socket_pair>* reused) -> pl::Task<> {
    co_await pl::async_close(fd);
    *reused = std::make_unique<socket_pair>();
    BOOST_TEST(::write((*reused)->b, "other", 5) == 5);
  }(fd, &reused));
  loop->run_until_complete(closer);
  BOOST_TEST_REQUIRE(reused != nullptr);
  BOOST_TEST(reused->a == fd, "the new socket took the closed number (else the case is weaker)");
  try {
    std::int64_t n = loop->run_until_complete(pl::wait_for(reader, 2s));
    BOOST_ERROR("the recv of the closed fd returned " << n << " bytes: "
                                                      << std::string(buf, n > 0 ? n : 0));
  } catch (const pl::CancelledError&) {
    // ended by the close, as the Backend contract says
  } catch (const std::system_error& e) {
    BOOST_ERROR("the recv of the closed fd failed: " << e.what());
  }
  char out[16];
  BOOST_TEST(::recv(reused->a, out, sizeof out, MSG_DONTWAIT) == 5,
             "the new socket's bytes are its own");
}

// Finding 6. Before the fix a second thread's run_until_complete raced on a
// plain bool (a data race TSan reports) and could enter the backend.
BOOST_FIXTURE_TEST_CASE(running_a_loop_from_another_thread_while_it_runs_is_an_error,
                        loop_fixture) {
  std::string error;
  auto main = [](pl::EventLoop* loop, std::string* error) -> pl::Task<> {
    std::thread other([loop, error] {
      try {
        loop->run_forever();
        *error = "no error";
      } catch (const pl::EventLoopError& e) {
        *error = e.what();
      }
    });
    co_await pl::sleep(20ms);
    other.join();
  };
  loop->run_until_complete(main(loop.get(), &error));
  BOOST_TEST(error.find("already running") != std::string::npos, error);
}

// Finding 6. asyncio lets a loop run on one thread after another; a backend
// bound to the thread that first ran it (io_uring's SINGLE_ISSUER and
// registered ring fd) cannot. Before the fix that was a system_error from
// the wait ("File exists" or "Bad file descriptor") at the first poll.
BOOST_FIXTURE_TEST_CASE(running_a_loop_on_a_second_thread_works_or_is_a_clear_error,
                        loop_fixture) {
  BOOST_TEST(loop->run_until_complete(pl::testing::value_after(1, 1ms)) == 1);
  bool bound = pl::detail::loop_access::backend(*loop).traits().bound_to_first_thread;
  std::string error;
  int result = 0;
  std::thread other([&] {
    try {
      result = loop->run_until_complete(pl::testing::value_after(2, 1ms));
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  other.join();
  if (bound) {
    BOOST_TEST(error.find("bound to the thread that first ran the loop") != std::string::npos,
               error);
    // The owner can still run it.
    BOOST_TEST(loop->run_until_complete(pl::testing::value_after(3, 1ms)) == 3);
  } else {
    BOOST_TEST(error.empty(), error);
    BOOST_TEST(result == 2);
  }
}
