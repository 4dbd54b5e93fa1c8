#include "core/signals/signals.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "core/errors/invariant.h"
#include "core/backend/backend.h"
#include "core/loop/loop_access.h"

namespace polyloop {

namespace {

constexpr int max_signal = 64;  // SIGRTMAX on Linux; one bit each
constexpr std::size_t max_loops = 64;

std::uint64_t bit_of(int sig) { return std::uint64_t{1} << (sig - 1); }

// What the signal handler reads: plain atomics (lock-free, so
// async-signal-safe). A loop that handles signals owns one slot.
struct signal_slot {
  std::atomic<int> write_fd{-1};
  std::atomic<std::uint64_t> signals{0};
};
std::array<signal_slot, max_loops> slots;
// Handlers running now: a slot's pipe is closed only once none is, so a
// handler never writes to a descriptor number that was closed and reused.
std::atomic<int> handlers_running{0};
static_assert(std::atomic<int>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

void on_signal(int sig) {
  int saved_errno = errno;
  handlers_running.fetch_add(1);
  for (signal_slot& s : slots) {
    if ((s.signals.load() & bit_of(sig)) == 0) continue;
    int fd = s.write_fd.load();
    unsigned char byte = static_cast<unsigned char>(sig);
    if (fd >= 0) (void)!::write(fd, &byte, 1);  // full pipe: the loop has it pending anyway
  }
  handlers_running.fetch_sub(1);
  errno = saved_errno;
}

// Installs and restores the process's dispositions; never taken in a handler.
std::mutex install_mutex;
std::array<int, max_signal + 1> loops_handling{};
std::array<struct sigaction, max_signal + 1> previous{};

void start_handling(int sig) {
  std::lock_guard<std::mutex> lock(install_mutex);
  if (loops_handling[sig]++ > 0) return;
  struct sigaction sa {};
  sa.sa_handler = &on_signal;
  sigfillset(&sa.sa_mask);  // one handler at a time per thread
  sa.sa_flags = SA_RESTART | SA_ONSTACK;
  if (::sigaction(sig, &sa, &previous[sig]) != 0) {
    int err = errno;
    --loops_handling[sig];
    throw std::system_error(err, std::generic_category(),
                            "add_signal_handler: sigaction(" + std::to_string(sig) + ")");
  }
}

void stop_handling(int sig) noexcept {
  std::lock_guard<std::mutex> lock(install_mutex);
  POLYLOOP_INVARIANT(loops_handling[sig] > 0, "a signal released more often than handled");
  if (--loops_handling[sig] == 0) ::sigaction(sig, &previous[sig], nullptr);
}

void check_signal(int sig) {
  if (sig < 1 || sig > max_signal) {
    throw std::invalid_argument("add_signal_handler: " + std::to_string(sig) +
                                " is not a signal number (1.." + std::to_string(max_signal) + ")");
  }
  if (sig == SIGKILL || sig == SIGSTOP) {
    throw std::invalid_argument("add_signal_handler: signal " + std::to_string(sig) +
                                " (SIGKILL or SIGSTOP) cannot be caught");
  }
}

}  // namespace

namespace detail {

// One loop's signal handling: its slot, its pipe, its callbacks, and the
// read of the pipe, a Backend operation of its own (not a task: it must
// neither be cancelled by cancel_all_tasks() nor reported as a pending task
// when the loop closes). It lives until the loop is destroyed, after the
// backend, so the backend never holds it past its life.
struct signal_handlers final : loop_extension {
  EventLoop* loop;
  signal_slot* slot = nullptr;
  int read_fd = -1;
  int write_fd = -1;
  std::array<std::function<void()>, max_signal + 1> callbacks;
  // The operation, with the way back to its owner.
  struct pipe_read : operation {
    signal_handlers* owner = nullptr;
  };
  pipe_read read_op;
  unsigned char buf[64];
  bool reading = false;
  bool closed = false;

  explicit signal_handlers(EventLoop& l) : loop(&l) {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "add_signal_handler: pipe2");
    }
    read_fd = fds[0];
    write_fd = fds[1];
    for (signal_slot& s : slots) {
      int free_fd = -1;
      if (s.write_fd.compare_exchange_strong(free_fd, write_fd)) {
        slot = &s;
        break;
      }
    }
    if (slot == nullptr) {
      ::close(read_fd);
      ::close(write_fd);
      throw EventLoopError("add_signal_handler: more than " + std::to_string(max_loops) +
                           " loops handle signals at once; close some");
    }
    read_op.fn = &on_read;
    read_op.owner = this;
  }

  // Keeps one read of the pipe pending while the loop is open.
  void start_reading() {
    if (reading || closed) return;
    read_op.kind = op_kind::read;
    read_op.fd = read_fd;
    read_op.buf = buf;
    read_op.len = sizeof buf;
    read_op.result = 0;
    loop_access::backend(*loop).start(read_op);
    reading = true;
  }

  static void on_read(ready_node* node, ready_node::action what) {
    signal_handlers* self = static_cast<pipe_read*>(node)->owner;
    self->reading = false;
    if (what == ready_node::action::discard || self->closed) return;
    std::int64_t n = self->read_op.result;
    for (std::int64_t i = 0; i < n; ++i) {
      int sig = self->buf[i];
      if (sig >= 1 && sig <= max_signal && self->callbacks[sig]) {
        self->loop->call_soon(self->callbacks[sig]);
      }
    }
    if (n < 0 && n != -EAGAIN && n != -EINTR) {
      self->loop->call_exception_handler(
          {"signal handling stopped: reading its pipe failed",
           std::make_exception_ptr(std::system_error(static_cast<int>(-n),
                                                     std::generic_category(), "read"))});
      return;
    }
    try {
      self->start_reading();
    } catch (...) {
      self->loop->call_exception_handler(
          {"signal handling stopped: the pipe cannot be read", std::current_exception()});
    }
  }

  void on_close() noexcept override {
    closed = true;
    for (int sig = 1; sig <= max_signal; ++sig) {
      if (callbacks[sig]) remove(sig);
    }
    slot->write_fd.store(-1);
    while (handlers_running.load() != 0) std::this_thread::yield();
    // The loop runs no more; a read still in the backend completes into
    // this object, which outlives the backend.
    ::close(read_fd);
    ::close(write_fd);
  }

  void remove(int sig) noexcept {
    slot->signals.fetch_and(~bit_of(sig));
    stop_handling(sig);
    callbacks[sig] = nullptr;
  }
};

}  // namespace detail

void add_signal_handler(EventLoop& loop, int sig, std::function<void()> callback) {
  check_signal(sig);
  if (!callback) throw std::invalid_argument("add_signal_handler: the callback is empty");
  detail::loop_access::check_open(loop);
  std::unique_ptr<detail::loop_extension>& ext = detail::loop_access::signal_handlers(loop);
  if (!ext) ext = std::make_unique<detail::signal_handlers>(loop);
  auto& h = static_cast<detail::signal_handlers&>(*ext);
  h.start_reading();
  bool handled = static_cast<bool>(h.callbacks[sig]);
  h.callbacks[sig] = std::move(callback);
  if (!handled) {
    start_handling(sig);
    h.slot->signals.fetch_or(bit_of(sig));
  }
}

bool remove_signal_handler(EventLoop& loop, int sig) {
  check_signal(sig);
  std::unique_ptr<detail::loop_extension>& ext = detail::loop_access::signal_handlers(loop);
  if (!ext) return false;
  auto& h = static_cast<detail::signal_handlers&>(*ext);
  if (!h.callbacks[sig]) return false;
  h.remove(sig);
  return true;
}

}  // namespace polyloop
