// The two sides of a one-byte socket ping-pong, shared by
// bench/backend_pingpong and loopbench's pingpong workload.
#pragma once

#include <stdexcept>

#include "polyloop/polyloop.h"

namespace loopbench {

// Sends a byte and waits for it to come back, `rounds` times.
inline polyloop::Task<> pinger(int fd, int rounds) {
  char b = 'p';
  for (int i = 0; i < rounds; ++i) {
    co_await polyloop::async_send(fd, &b, 1);
    if (co_await polyloop::async_recv(fd, &b, 1) != 1) throw std::runtime_error("short recv");
  }
}

// Sends back each byte it receives, `rounds` times.
inline polyloop::Task<> ponger(int fd, int rounds) {
  char b;
  for (int i = 0; i < rounds; ++i) {
    if (co_await polyloop::async_recv(fd, &b, 1) != 1) throw std::runtime_error("short recv");
    co_await polyloop::async_send(fd, &b, 1);
  }
}

}  // namespace loopbench
