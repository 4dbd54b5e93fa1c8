// The socket calls net/ makes itself, outside operations (creating, binding,
// listening, naming, options, shutdown, closing an fd no backend has seen),
// behind one small interface chosen once per loop: its backend's sockets().
// The real one is the syscalls; the sim backend (backends/sim) replaces it
// with its in-memory network, so that net/ runs unchanged on either.
//
// Each call returns what its syscall returns (-1 with errno set on failure),
// so callers keep their error handling. Only the loop's thread calls it. Not
// on a hot path: a virtual call per socket set-up, none per byte.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

namespace polyloop::detail {

class socket_calls {
 public:
  virtual int socket(int family, int type, int protocol) noexcept = 0;
  virtual int bind(int fd, const sockaddr* addr, socklen_t len) noexcept = 0;
  virtual int listen(int fd, int backlog) noexcept = 0;
  virtual int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept = 0;
  virtual int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept = 0;
  virtual int setsockopt(int fd, int level, int name, const void* value,
                         socklen_t len) noexcept = 0;
  virtual int shutdown(int fd, int how) noexcept = 0;
  // A datagram socket's connect: it only sets the default peer and never
  // waits (a stream's connect is an operation, op_kind::connect).
  virtual int connect(int fd, const sockaddr* addr, socklen_t len) noexcept = 0;
  // Closes a socket no backend operation has named (net/ closes the others
  // with an op_kind::close, so that the backend forgets them first).
  virtual int close(int fd) noexcept = 0;

 protected:
  ~socket_calls() = default;
};

// The syscalls themselves.
class system_socket_calls final : public socket_calls {
 public:
  int socket(int family, int type, int protocol) noexcept override {
    return ::socket(family, type, protocol);
  }
  int bind(int fd, const sockaddr* addr, socklen_t len) noexcept override {
    return ::bind(fd, addr, len);
  }
  int listen(int fd, int backlog) noexcept override { return ::listen(fd, backlog); }
  int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept override {
    return ::getsockname(fd, addr, len);
  }
  int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept override {
    return ::getpeername(fd, addr, len);
  }
  int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept override {
    return ::setsockopt(fd, level, name, value, len);
  }
  int shutdown(int fd, int how) noexcept override { return ::shutdown(fd, how); }
  int connect(int fd, const sockaddr* addr, socklen_t len) noexcept override {
    return ::connect(fd, addr, len);
  }
  int close(int fd) noexcept override { return ::close(fd); }

  static system_socket_calls& instance() noexcept {
    static system_socket_calls calls;
    return calls;
  }
};

}  // namespace polyloop::detail
