// The file descriptors this process has open, read from /proc/self/fd.
// Every behaviour test binary checks at its end that the set is what it was
// at its start (a Boost.Test global fixture in fd_check.cc); the soak test
// and the stream fuzzer use the same listing between rounds and inputs.
#pragma once

#include <map>
#include <string>

namespace polyloop::testing {

// fd number -> what it refers to (readlink of /proc/self/fd/N, e.g.
// "socket:[81234]", "anon_inode:[eventfd]", "pipe:[9]", "/dev/null").
// Throws std::system_error if /proc/self/fd cannot be read.
std::map<int, std::string> open_fds();

// The differences between two listings, one per line: "fd 7 (socket:[81234])
// left open", "fd 3 (pipe:[9]) closed", or "" if they are equal.
std::string fd_differences(const std::map<int, std::string>& before,
                           const std::map<int, std::string>& after);

}  // namespace polyloop::testing
