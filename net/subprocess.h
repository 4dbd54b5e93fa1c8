// Child processes: asyncio's create_subprocess_exec / create_subprocess_shell
// and its Process, with the child's pipes as net::Streams.
//
//   pl::net::SubprocessOptions o;
//   o.std_out = pl::net::Redirect::pipe();
//   pl::net::Process p = co_await pl::net::create_subprocess_exec({"ls", "-l"}, o);
//   std::string listing = (co_await p.communicate()).out.value();
//   int status = co_await p.wait();              // 0, or -SIGKILL if killed by it
//
// Spawning is posix_spawn (vfork-like, safe in a multithreaded process);
// every fd polyloop opens is close-on-exec, so a child gets only its
// stdin, stdout and stderr. An exec that fails (no such program, not
// executable, a bad cwd) throws std::system_error naming the program.
//
// The exit is watched through a pidfd (pidfd_open, Linux >= 5.3) that the
// loop's backend polls, then reaped with waitid(P_PIDFD): no SIGCHLD
// handler, so other libraries' children are left alone. Where pidfd_open is
// missing (ENOSYS), the loop polls waitpid(pid, WNOHANG) on a timer instead
// (every 1 ms at first, backing off to 50 ms).
//
// Lifetime: a Process is a counted handle (copies share the child). When
// the last handle goes while the child runs, the child is not killed (as in
// asyncio); its pipes close (it sees EOF on stdin, EPIPE on a write) and
// the loop still reaps it when it exits, so no zombie is left. When the loop
// is closed while a child of it still runs, the child is killed (SIGKILL)
// and reaped: nothing would be left to reap it. Everything runs on the loop
// that made the Process.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "core/task/task.h"
#include "net/stream.h"

namespace polyloop::net {

// What one of the child's stdin, stdout or stderr is connected to.
class Redirect {
 public:
  enum class Kind : std::uint8_t { inherit, pipe, devnull, to_stdout, fd };
  // The parent's own (asyncio's None): the default.
  static constexpr Redirect inherit() noexcept { return {Kind::inherit, -1}; }
  // A pipe to the parent, given as a Stream on the Process (asyncio's PIPE).
  static constexpr Redirect pipe() noexcept { return {Kind::pipe, -1}; }
  // /dev/null (asyncio's DEVNULL).
  static constexpr Redirect devnull() noexcept { return {Kind::devnull, -1}; }
  // For std_err only: wherever stdout goes (asyncio's STDOUT).
  static constexpr Redirect to_stdout() noexcept { return {Kind::to_stdout, -1}; }
  // An open fd of the caller's: the child gets a copy; the caller keeps it.
  static constexpr Redirect fd(int descriptor) noexcept { return {Kind::fd, descriptor}; }

  Kind kind = Kind::inherit;
  int descriptor = -1;
};

struct SubprocessOptions {
  Redirect std_in;  // (stdin, stdout and stderr are macros of <cstdio>)
  Redirect std_out;
  Redirect std_err;
  // The child's working directory; the parent's if unset.
  std::optional<std::string> cwd;
  // The child's whole environment; the parent's if unset.
  std::optional<std::map<std::string, std::string>> env;
};

// A signal sent to a child that was already reaped (asyncio's
// ProcessLookupError: errno ESRCH).
class ProcessLookupError : public std::system_error {
 public:
  explicit ProcessLookupError(const std::string& what);
};

// What communicate() read: nullopt for a stream that is not a pipe
// (asyncio's None).
struct Communicated {
  std::optional<std::string> out;
  std::optional<std::string> err;
};

namespace detail {
struct process_state;
}

class Process {
 public:
  Process() = default;

  pid_t pid() const;
  // The exit status once the child has been reaped; a negative signal
  // number if a signal ended it (asyncio's returncode).
  std::optional<int> returncode() const;

  // The ends of the pipes asked for with Redirect::pipe(); nullopt otherwise.
  std::optional<Stream> std_in() const;
  std::optional<Stream> std_out() const;
  std::optional<Stream> std_err() const;

  // Until the child has exited and been reaped: its returncode. Cancelling
  // the wait leaves the child alone. (Reading nothing from a pipe the child
  // fills can keep it from exiting: communicate() reads them.)
  Task<int> wait();
  // Writes `input` to stdin (if given; stdin must be a pipe) and closes it,
  // while reading stdout and stderr (those that are pipes) to their end, all
  // at once, so no pipe filling up can block the child; then waits for the
  // exit. A child that exits without reading all its input is no error
  // (EPIPE on stdin is ignored, as asyncio does).
  Task<Communicated> communicate(std::optional<std::string> input = std::nullopt);

  // Sends `sig` to the child (through its pidfd, so never to a reused pid).
  // ProcessLookupError once the child has been reaped.
  void send_signal(int sig);
  void terminate();  // SIGTERM
  void kill();       // SIGKILL

 private:
  friend Task<Process> create_subprocess_exec(std::vector<std::string>, SubprocessOptions);
  std::shared_ptr<detail::process_state> s_;
};

// Runs argv[0] (searched in PATH when it has no '/') with the arguments
// argv. std::invalid_argument for an empty argv or an option that cannot
// be (to_stdout for stdin or stdout); std::system_error naming the program
// if it cannot be started.
Task<Process> create_subprocess_exec(std::vector<std::string> argv, SubprocessOptions options = {});
// Runs `command` with /bin/sh -c.
Task<Process> create_subprocess_shell(std::string command, SubprocessOptions options = {});

}  // namespace polyloop::net
