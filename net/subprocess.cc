#include "net/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <utility>

#include "core/backend/backend.h"
#include "core/combinators/gather.h"
#include "core/future/future.h"
#include "core/loop/loop_access.h"

extern char** environ;

// waitid's idtype for a pidfd (Linux 5.4); <linux/wait.h> has it but
// clashes with glibc's <sys/wait.h>.
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace polyloop::net {

using namespace std::chrono_literals;

ProcessLookupError::ProcessLookupError(const std::string& what)
    : std::system_error(ESRCH, std::generic_category(), what) {}

namespace {
[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}
}  // namespace

namespace detail {

namespace {

// A pidfd for `pid`, or -1 where the kernel has none (ENOSYS: before 5.3,
// or a seccomp filter that refuses it): then the exit is polled for.
int open_pidfd(pid_t pid) {
#ifdef POLYLOOP_NO_PIDFD
  (void)pid;
  return -1;
#else
  long fd = ::syscall(SYS_pidfd_open, pid, 0);  // always close-on-exec
  if (fd >= 0) return static_cast<int>(fd);
  if (errno == ENOSYS || errno == EPERM) return -1;
  throw_errno(errno, "pidfd_open(" + std::to_string(pid) + ")");
#endif
}

// asyncio's returncode: the exit status, or minus the signal that ended it.
int returncode_of(const siginfo_t& si) {
  return si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
}
int returncode_of_status(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

}  // namespace

struct child_watcher;
struct child;

// The close of a child's pidfd, through the backend (so it forgets the fd).
struct pidfd_closer : operation {
  child* owner = nullptr;
};

// One child of a loop, watched from its spawn until it is reaped and its
// pidfd closed. The operation it is waits for the pidfd to be readable
// (the child exited); `closing` then closes the pidfd through the backend.
struct child : operation, std::enable_shared_from_this<child> {
  EventLoop* loop = nullptr;
  child_watcher* watcher = nullptr;
  pid_t pid = -1;
  int pidfd = -1;
  std::optional<int> returncode;
  std::vector<Future<>> waiters;  // Process::wait()s, each its own future
  pidfd_closer closing;
  bool close_started = false;
  std::chrono::milliseconds backoff{1};  // the polling fallback's interval

  void start_watching();
  void reaped(int code);
  static void pidfd_ready(polyloop::detail::ready_node* n,
                          polyloop::detail::ready_node::action a) noexcept;
  static void pidfd_closed(polyloop::detail::ready_node* n,
                           polyloop::detail::ready_node::action a) noexcept;
  void poll_later();
  void kill_and_reap() noexcept;
};

// The loop's children that have not been reaped (or whose pidfd is being
// closed). Closing the loop kills and reaps those still running.
struct child_watcher : polyloop::detail::loop_extension {
  std::vector<std::shared_ptr<child>> children;

  static child_watcher& of(EventLoop& loop) {
    auto& ext = polyloop::detail::loop_access::child_watcher(loop);
    if (!ext) ext = std::make_unique<child_watcher>();
    return static_cast<child_watcher&>(*ext);
  }
  void forget(child* c) noexcept {
    auto it = std::find_if(children.begin(), children.end(),
                           [c](const std::shared_ptr<child>& p) { return p.get() == c; });
    if (it != children.end()) children.erase(it);  // may destroy *c
  }
  void on_close() noexcept override {
    for (auto& c : children) c->kill_and_reap();
    children.clear();
  }
};

void child::start_watching() {
  if (pidfd < 0) {
    poll_later();
    return;
  }
  fn = &pidfd_ready;
  kind = op_kind::poll;
  fd = pidfd;
  flags = POLLIN;
  polyloop::detail::loop_access::backend(*loop).start(*this);
}

void child::pidfd_ready(polyloop::detail::ready_node* n,
                        polyloop::detail::ready_node::action a) noexcept {
  auto* c = static_cast<child*>(static_cast<operation*>(n));
  if (a == polyloop::detail::ready_node::action::discard) return;  // the loop closes: on_close
  siginfo_t si{};
  int r;
  while ((r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c->pidfd), &si,
                       WEXITED | WNOHANG)) < 0 &&
         errno == EINTR) {
  }
  if (r == 0 && si.si_pid != 0) {
    c->reaped(returncode_of(si));
  } else if (r == 0 && c->result >= 0) {
    c->start_watching();  // readable, yet not exited: wait again
  } else if (r == 0) {
    c->poll_later();  // the poll itself failed: the fallback's timer
  } else {
    // ECHILD: someone else reaped it (a waitpid(-1) elsewhere); its status
    // is lost. asyncio reports 255 then too.
    c->reaped(255);
  }
}

void child::reaped(int code) {
  returncode = code;
  for (Future<>& f : waiters) {
    if (!f.done()) f.set_result();
  }
  waiters.clear();
  if (pidfd < 0) {
    watcher->forget(this);
    return;
  }
  closing.owner = this;
  closing.fn = &pidfd_closed;
  closing.kind = op_kind::close;
  closing.fd = pidfd;
  close_started = true;
  polyloop::detail::loop_access::backend(*loop).start(closing);
}

void child::pidfd_closed(polyloop::detail::ready_node* n,
                         polyloop::detail::ready_node::action) noexcept {
  child* c = static_cast<pidfd_closer*>(static_cast<operation*>(n))->owner;
  c->pidfd = -1;
  c->watcher->forget(c);
}

void child::poll_later() {
  // No pidfd: the fallback, a WNOHANG wait on a timer that backs off. The
  // timer holds the child (the loop's close() drops it, then on_close()
  // reaps the child).
  loop->call_later(backoff, [self = shared_from_this()] {
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(self->pid, &status, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r == 0) {
      self->backoff = std::min(self->backoff * 2, std::chrono::milliseconds(50));
      self->poll_later();
    } else {
      self->reaped(r > 0 ? returncode_of_status(status) : 255);
    }
  });
}

void child::kill_and_reap() noexcept {
  if (!returncode) {
    if (pidfd >= 0) {
      ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
      // Poll, then wait without blocking: a backend may have made the pidfd
      // non-blocking, and waitid on a non-blocking pidfd says EAGAIN.
      pollfd exited{pidfd, POLLIN, 0};
      while (::poll(&exited, 1, -1) < 0 && errno == EINTR) {
      }
      siginfo_t si{};
      int r;
      while ((r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &si,
                           WEXITED | WNOHANG)) < 0 &&
             errno == EINTR) {
      }
      returncode = r == 0 && si.si_pid != 0 ? returncode_of(si) : 255;
    } else {
      ::kill(pid, SIGKILL);
      int status = 0;
      pid_t r;
      while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
      }
      returncode = r > 0 ? returncode_of_status(status) : 255;
    }
  }
  waiters.clear();  // the loop discarded their callbacks
  // The backend is shut down: a plain close is right, unless the close
  // operation was already started (then the backend may have closed it).
  if (pidfd >= 0 && !close_started) ::close(pidfd);
  pidfd = -1;
}

struct process_state {
  std::shared_ptr<child> c;
  std::optional<Stream> in;
  std::optional<Stream> out;
  std::optional<Stream> err;
};

}  // namespace detail

namespace {

detail::process_state& state_of(const std::shared_ptr<detail::process_state>& s) {
  if (!s) throw std::logic_error("this Process is empty (default-constructed)");
  return *s;
}

// The fds made for a spawn; those the parent does not keep are closed
// when it ends, whether the spawn worked or not.
struct spawn_fds {
  std::vector<int> child_ends;  // the child's copies are made by posix_spawn
  int parent_end[3] = {-1, -1, -1};
  int devnull = -1;
  ~spawn_fds() {
    for (int fd : child_ends) ::close(fd);
    for (int fd : parent_end) {
      if (fd >= 0) ::close(fd);
    }
  }
};

struct spawn_plan {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  spawn_plan() {
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attr);
  }
  ~spawn_plan() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
  }
  spawn_plan(const spawn_plan&) = delete;
  spawn_plan& operator=(const spawn_plan&) = delete;
};

void check(int err, const char* what) {
  if (err != 0) throw_errno(err, std::string("create_subprocess_exec: ") + what);
}

// Connects the child's fd `target` (0, 1, 2) as `r` says.
void plan_redirect(spawn_plan& plan, spawn_fds& fds, const Redirect& r, int target) {
  const char* names[] = {"std_in", "std_out", "std_err"};
  switch (r.kind) {
    case Redirect::Kind::inherit:
      return;
    case Redirect::Kind::pipe: {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) throw_errno(errno, "create_subprocess_exec: pipe2");
      bool child_reads = target == 0;
      fds.child_ends.push_back(child_reads ? p[0] : p[1]);
      fds.parent_end[target] = child_reads ? p[1] : p[0];
      check(::posix_spawn_file_actions_adddup2(&plan.actions, fds.child_ends.back(), target),
            "posix_spawn_file_actions_adddup2");
      return;
    }
    case Redirect::Kind::devnull:
      if (fds.devnull < 0) {
        fds.devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fds.devnull < 0) throw_errno(errno, "create_subprocess_exec: open /dev/null");
        fds.child_ends.push_back(fds.devnull);
      }
      check(::posix_spawn_file_actions_adddup2(&plan.actions, fds.devnull, target),
            "posix_spawn_file_actions_adddup2");
      return;
    case Redirect::Kind::to_stdout:
      if (target != 2) {
        throw std::invalid_argument(std::string("create_subprocess_exec: ") + names[target] +
                                    " cannot be Redirect::to_stdout(); only std_err can");
      }
      check(::posix_spawn_file_actions_adddup2(&plan.actions, 1, 2),
            "posix_spawn_file_actions_adddup2");
      return;
    case Redirect::Kind::fd:
      if (r.descriptor < 0 || ::fcntl(r.descriptor, F_GETFD) < 0) {
        throw std::invalid_argument(std::string("create_subprocess_exec: ") + names[target] +
                                    " is Redirect::fd(" + std::to_string(r.descriptor) +
                                    "), which is not an open file descriptor");
      }
      check(::posix_spawn_file_actions_adddup2(&plan.actions, r.descriptor, target),
            "posix_spawn_file_actions_adddup2");
      return;
  }
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

pid_t spawn(std::vector<std::string>& argv, const SubprocessOptions& o, spawn_fds& fds) {
  spawn_plan plan;
  plan_redirect(plan, fds, o.std_in, 0);
  plan_redirect(plan, fds, o.std_out, 1);
  plan_redirect(plan, fds, o.std_err, 2);
  if (o.cwd) {
    check(::posix_spawn_file_actions_addchdir_np(&plan.actions, o.cwd->c_str()),
          "posix_spawn_file_actions_addchdir_np");
  }
  // The child starts with no signal blocked and SIGPIPE at its default
  // (as Python's subprocess restores it), whatever the loop's thread has.
  sigset_t none;
  sigset_t pipe;
  sigemptyset(&none);
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  check(::posix_spawnattr_setsigmask(&plan.attr, &none), "posix_spawnattr_setsigmask");
  check(::posix_spawnattr_setsigdefault(&plan.attr, &pipe), "posix_spawnattr_setsigdefault");
  check(::posix_spawnattr_setflags(&plan.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF),
        "posix_spawnattr_setflags");

  std::vector<std::string> env_strings;
  if (o.env) {
    for (const auto& [k, v] : *o.env) env_strings.push_back(k + "=" + v);
  }
  std::vector<char*> args = c_strings(argv);
  std::vector<char*> env = c_strings(env_strings);
  pid_t pid = -1;
  // posix_spawnp searches PATH when the name has no '/'; glibc's reports
  // an exec failure (ENOENT, EACCES) or a chdir failure as its result.
  int err = ::posix_spawnp(&pid, args[0], &plan.actions, &plan.attr, args.data(),
                           o.env ? env.data() : environ);
  if (err != 0) {
    throw_errno(err, "create_subprocess_exec: cannot run '" + argv[0] + "'" +
                         (o.cwd ? " in '" + *o.cwd + "'" : std::string()));
  }
  return pid;
}

}  // namespace

Task<Process> create_subprocess_exec(std::vector<std::string> argv, SubprocessOptions options) {
  if (argv.empty()) throw std::invalid_argument("create_subprocess_exec: argv is empty");
  EventLoop& loop = get_running_loop();
  detail::child_watcher& watcher = detail::child_watcher::of(loop);
  watcher.children.reserve(watcher.children.size() + 1);  // no throw after the spawn
  auto c = std::make_shared<detail::child>();
  auto state = std::make_shared<detail::process_state>();
  spawn_fds fds;
  c->pid = spawn(argv, options, fds);
  c->loop = &loop;
  c->watcher = &watcher;
  try {
    c->pidfd = detail::open_pidfd(c->pid);
  } catch (...) {
    // Without a pidfd nor a watch, nothing could reap it: end it here.
    ::kill(c->pid, SIGKILL);
    ::waitpid(c->pid, nullptr, 0);
    throw;
  }
  watcher.children.push_back(c);
  c->start_watching();
  state->c = c;
  // The parent's ends become Streams (each takes its fd).
  if (fds.parent_end[0] >= 0) state->in = connect_write_pipe(std::exchange(fds.parent_end[0], -1));
  if (fds.parent_end[1] >= 0) state->out = connect_read_pipe(std::exchange(fds.parent_end[1], -1));
  if (fds.parent_end[2] >= 0) state->err = connect_read_pipe(std::exchange(fds.parent_end[2], -1));
  Process p;
  p.s_ = std::move(state);
  co_return p;
}

Task<Process> create_subprocess_shell(std::string command, SubprocessOptions options) {
  std::vector<std::string> argv;  // (not a braced list: g++ 12 miscompiles those in coroutines)
  argv.push_back("/bin/sh");
  argv.push_back("-c");
  argv.push_back(std::move(command));
  co_return co_await create_subprocess_exec(std::move(argv), std::move(options));
}

pid_t Process::pid() const { return state_of(s_).c->pid; }
std::optional<int> Process::returncode() const { return state_of(s_).c->returncode; }
std::optional<Stream> Process::std_in() const { return state_of(s_).in; }
std::optional<Stream> Process::std_out() const { return state_of(s_).out; }
std::optional<Stream> Process::std_err() const { return state_of(s_).err; }

Task<int> Process::wait() {
  std::shared_ptr<detail::child> c = state_of(s_).c;
  if (!c->returncode) {
    c->waiters.push_back(c->loop->create_future<>());
    Future<> exited = c->waiters.back();
    co_await exited;
  }
  co_return *c->returncode;
}

namespace {

bool broken_pipe(const std::system_error& e) {
  return e.code().value() == EPIPE || e.code().value() == ECONNRESET;
}

// Writes `input` and closes stdin; a child that exits first is no error.
Task<> feed(std::optional<Stream> in, std::optional<std::string> input) {
  if (!in || !input) co_return;
  bool broken = false;
  try {
    in->write(*input);
    in->close();
    co_await in->wait_closed();
  } catch (const std::system_error& e) {
    if (!broken_pipe(e)) throw;
    broken = true;
  }
  if (broken) {
    in->close();
    try {
      co_await in->wait_closed();  // closed; it rethrows the EPIPE
    } catch (const std::system_error&) {
    }
  }
}

Task<std::optional<std::string>> read_all(std::optional<Stream> s) {
  if (!s) co_return std::nullopt;
  std::string all;
  while (true) {
    std::string piece = co_await s->read();
    if (piece.empty()) break;
    all += piece;
  }
  s->close();  // at its end: let the fd go now
  co_await s->wait_closed();
  co_return all;
}

}  // namespace

Task<Communicated> Process::communicate(std::optional<std::string> input) {
  std::shared_ptr<detail::process_state> s = s_;
  detail::process_state& st = state_of(s);
  if (input && !st.in) {
    throw std::logic_error(
        "communicate: input was given but the child's stdin is not a pipe "
        "(SubprocessOptions::std_in = Redirect::pipe())");
  }
  auto [fed, out, err] =
      co_await gather(feed(st.in, std::move(input)), read_all(st.out), read_all(st.err));
  (void)fed;
  co_await wait();
  co_return Communicated{std::move(out), std::move(err)};
}

void Process::send_signal(int sig) {
  detail::child& c = *state_of(s_).c;
  if (c.returncode) {
    throw ProcessLookupError("send_signal: process " + std::to_string(c.pid) +
                             " has already exited (returncode " + std::to_string(*c.returncode) +
                             ")");
  }
  long r = c.pidfd >= 0 ? ::syscall(SYS_pidfd_send_signal, c.pidfd, sig, nullptr, 0)
                        : ::kill(c.pid, sig);
  // ESRCH: it has exited and is about to be reaped; as asyncio (Popen), no
  // signal goes to a child known to have ended, and that is no error.
  if (r != 0 && errno != ESRCH) {
    throw_errno(errno,
                "send_signal(" + std::to_string(sig) + ") to process " + std::to_string(c.pid));
  }
}

void Process::terminate() { send_signal(SIGTERM); }
void Process::kill() { send_signal(SIGKILL); }

}  // namespace polyloop::net
