// The socket calls of the running loop's backend (core/backend/
// socket_calls.h): the syscalls, or the sim backend's in-memory network.
#pragma once

#include "core/backend/socket_calls.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"

namespace polyloop::net::detail {

inline polyloop::detail::socket_calls& sockets_of(EventLoop& loop) noexcept {
  return polyloop::detail::loop_access::sockets(loop);
}

// Outside a running loop (a close in a destructor after the loop stopped):
// the syscalls.
inline polyloop::detail::socket_calls& sockets() noexcept {
  EventLoop* loop = running_loop();
  return loop != nullptr ? sockets_of(*loop) : polyloop::detail::system_socket_calls::instance();
}

}  // namespace polyloop::net::detail
