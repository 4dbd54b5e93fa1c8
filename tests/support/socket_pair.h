// A connected pair of Unix stream sockets a test owns: each end it has not
// given away (to a Stream, which then closes it) is closed at the end.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstring>
#include <utility>

namespace polyloop::testing {

struct socket_pair {
  int a = -1;
  int b = -1;
  // extra_flags: SOCK_NONBLOCK, or 0 for the blocking sockets a program
  // would hand the loop (the readiness backends make them non-blocking).
  explicit socket_pair(int extra_flags = 0) {
    int s[2];
    BOOST_TEST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_flags, 0, s) == 0,
                       "socketpair: " << std::strerror(errno));
    a = s[0];
    b = s[1];
  }
  socket_pair(const socket_pair&) = delete;
  socket_pair& operator=(const socket_pair&) = delete;
  ~socket_pair() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
  int give_a() { return std::exchange(a, -1); }
  int give_b() { return std::exchange(b, -1); }
};

}  // namespace polyloop::testing
