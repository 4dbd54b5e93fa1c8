// What a backend does with an operation that finished but will never be
// handed back (shutdown(): its owner is about to be destroyed): the fds it
// brought into the process are nobody's but the backend's to close.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "core/backend/backend.h"

namespace polyloop::detail {

// Closes every fd an SCM_RIGHTS message in `msg`'s control data carries (as
// recvmsg filled it in).
inline void close_passed_fds(const msghdr& msg) noexcept {
  if (msg.msg_control == nullptr) return;
  for (const cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      ::close(fd);
    }
  }
}

// `op` finished with `result` (>= 0: it took effect) and will not be handed
// back: closes the fd an accept returned or the fds a recvmsg received, and
// marks it cancelled so that nothing reads them later.
inline void discard_unreturned(operation& op, std::int64_t result) noexcept {
  if (result >= 0) {
    if (op.kind == op_kind::accept || op.kind == op_kind::openat) ::close(static_cast<int>(result));
    if (op.kind == op_kind::recvmsg) close_passed_fds(*static_cast<const msghdr*>(op.buf));
  }
  op.result = -ECANCELED;
}

}  // namespace polyloop::detail
