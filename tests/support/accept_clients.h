// What the accept tests share (accept_many_test, io_uring_multishot_test): a
// blocking client the kernel connects, and a handler that answers it once.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <string>

#include "net/stream.h"

namespace polyloop::testing {

// A blocking client connected to 127.0.0.1:port (completed by the kernel,
// whether or not the server has accepted it yet).
inline int connect_raw(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_TEST_REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  BOOST_TEST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// Each connection: one byte in, the same byte plus one out, then close.
inline Task<> bump_one(net::Stream s, int* served) {
  std::string b = co_await s.read_exactly(1);
  s.write(std::string(1, static_cast<char>(b[0] + 1)));
  co_await s.drain();
  ++*served;
  s.close();
  co_await s.wait_closed();
}

}  // namespace polyloop::testing
