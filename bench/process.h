// Child processes for loopbench: workers, servers and load generators.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace loopbench {

// The CPUs this process may run on, so that a server and its load can be
// pinned to different ones.
std::vector<int> allowed_cpus();

struct child {
  pid_t pid = -1;
  int out = -1;  // read end of its stdout
};

// Starts args[0] (searched on PATH if it has no '/') with its stdout to a
// pipe, pinned to `cpu` if cpu >= 0; its stderr stays ours. pid < 0 if it
// could not be started; an exec failure shows as exit status 127.
child spawn(const std::vector<std::string>& args, int cpu = -1);
// One line of `fd`, waiting at most `timeout`; false on timeout or end.
bool read_line(int fd, std::string& line, std::chrono::milliseconds timeout);
// Everything until end of file, or what came within `timeout` (then
// *timed_out is set).
std::string read_all(int fd, std::chrono::seconds timeout, bool* timed_out);
// waitpid()'s status, or -1 if there is no such child to wait for.
int wait_exit(pid_t pid);

}  // namespace loopbench
