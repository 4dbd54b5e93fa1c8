#include "net/datagram.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "core/errors/errors.h"
#include "core/io/io.h"
#include "core/loop/event_loop.h"
#include "core/loop/loop_access.h"
#include "core/sync/event.h"
#include "net/detail/orphan_close.h"
#include "net/detail/sockets.h"

namespace polyloop::net {

namespace detail {

struct datagram_state {
  EventLoop* loop = nullptr;
  int fd = -1;
  bool closing = false;
  bool closed_locally = false;  // set before the async_close that ends pending operations
  std::optional<Address> remote;
  Address local;
  Event closed;
  // recvfrom()'s landing buffer, reused (never cleared: the kernel writes
  // what is read) by one receive at a time; a receive started while it is
  // taken gets its own.
  std::unique_ptr<char[]> rx;
  std::size_t rx_size = 0;
  bool rx_taken = false;

  datagram_state(EventLoop* l, int f) : loop(l), fd(f) {}
  datagram_state(const datagram_state&) = delete;
  datagram_state& operator=(const datagram_state&) = delete;

  // The last handle went without close(): close now (net/detail/orphan_close.h).
  ~datagram_state() { close_orphaned_fd(*loop, fd); }

  static Task<> closer(std::shared_ptr<datagram_state> s) {
    int f = std::exchange(s->fd, -1);
    s->closed_locally = true;
    try {
      co_await async_close(f);
    } catch (...) {
    }
    s->closed.set();
  }
};

}  // namespace detail

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

Address to_address(const sockaddr_storage& ss, socklen_t len) {
  Address a;
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    a.host = text;
    a.port = ntohs(in.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    a.host = text;
    a.port = ntohs(in6.sin6_port);
  } else if (ss.ss_family == AF_UNIX && len > offsetof(sockaddr_un, sun_path)) {
    const auto& un = reinterpret_cast<const sockaddr_un&>(ss);
    a.path.assign(un.sun_path, ::strnlen(un.sun_path, len - offsetof(sockaddr_un, sun_path)));
  }
  return a;
}

socklen_t unix_sockaddr(const std::string& path, sockaddr_storage& ss) {
  auto& un = reinterpret_cast<sockaddr_un&>(ss);
  if (path.size() >= sizeof un.sun_path) {
    throw std::invalid_argument("Unix socket path too long (" + std::to_string(path.size()) +
                                " bytes, at most " + std::to_string(sizeof un.sun_path - 1) +
                                "): " + path);
  }
  ss = {};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
}

// A numeric address (or a Unix path) as a sockaddr, without a lookup: the
// per-datagram path of sendto().
socklen_t numeric_sockaddr(const Address& a, sockaddr_storage& ss) {
  if (!a.path.empty()) return unix_sockaddr(a.path, ss);
  ss = {};
  auto& in = reinterpret_cast<sockaddr_in&>(ss);
  if (::inet_pton(AF_INET, a.host.c_str(), &in.sin_addr) == 1) {
    in.sin_family = AF_INET;
    in.sin_port = htons(a.port);
    return sizeof in;
  }
  auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
  if (::inet_pton(AF_INET6, a.host.c_str(), &in6.sin6_addr) == 1) {
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(a.port);
    return sizeof in6;
  }
  throw std::invalid_argument("sendto needs a numeric address or a Unix path, not '" +
                              a.to_string() + "': resolve the name with net::getaddrinfo first");
}

bool same_address(const Address& a, const Address& b) {
  return a.host == b.host && a.port == b.port && a.path == b.path;
}

// One recvmsg or sendmsg on an endpoint's socket, telling apart the two
// things that end it with ECANCELED (as net/stream.cc's stream_recv does): a
// cancel of the awaiting task stays a CancelledError; the endpoint's own
// close(), which nobody awaiting asked for, is EndpointClosedError.
struct endpoint_op {
  polyloop::detail::io_awaiter io;
  msghdr msg{};
  iovec iov{};
  const bool* closed_locally;
  const char* what;

  endpoint_op(op_kind kind, int fd, void* buf, std::size_t len, sockaddr* addr, socklen_t addrlen,
              const bool* closed, const char* name) noexcept
      : io(kind, fd, nullptr, 0, 0), closed_locally(closed), what(name) {
    iov = {buf, len};
    msg.msg_name = addr;
    msg.msg_namelen = addrlen;
  }
  endpoint_op(const endpoint_op&) = delete;
  endpoint_op& operator=(const endpoint_op&) = delete;

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    io.buf = &msg;
    io.await_suspend(h);
  }
  std::size_t await_resume() {
    polyloop::detail::task_root* root = io.task.root;
    bool task_cancelled = root != nullptr && root->must_cancel;
    if (io.result == -ECANCELED && *closed_locally && !task_cancelled) {
      if (root != nullptr) root->waiting = {};  // what io_awaiter's await_resume would do
      throw EndpointClosedError(std::string(what) + ": the endpoint was closed");
    }
    return static_cast<std::size_t>(io.await_resume());
  }
};

detail::datagram_state& state_of(const std::shared_ptr<detail::datagram_state>& s) {
  if (!s) throw std::logic_error("DatagramEndpoint: used before create_datagram_endpoint made it");
  return *s;
}

int open_fd_of(detail::datagram_state& s, const char* what) {
  if (s.closing) {
    throw std::logic_error(std::string(what) + " on a closed DatagramEndpoint");
  }
  return s.fd;
}

std::string with_peer(const char* what, const Address& a) {
  return std::string(what) + " " + a.to_string();
}

Task<DatagramInfo> receive_into(std::shared_ptr<detail::datagram_state> keep, std::span<char> out,
                                const char* what) {
  detail::datagram_state& s = *keep;
  int fd = open_fd_of(s, what);
  sockaddr_storage from{};
  endpoint_op op(op_kind::recvmsg, fd, out.data(), out.size(), reinterpret_cast<sockaddr*>(&from),
                 sizeof from, &s.closed_locally, what);
  DatagramInfo info;
  try {
    info.size = co_await op;
  } catch (const std::system_error& e) {
    // An error the socket reported (asyncio's error_received), e.g. the
    // ECONNREFUSED an ICMP "port unreachable" left on a connected socket.
    throw std::system_error(e.code(), with_peer(what, s.remote ? *s.remote : s.local));
  }
  info.sender = to_address(from, op.msg.msg_namelen);
  info.truncated = (op.msg.msg_flags & MSG_TRUNC) != 0;
  co_return info;
}

// `to` null: the connected peer. The address is converted by the caller,
// so that a bad one is reported when sendto() is called.
Task<> send_one(std::shared_ptr<detail::datagram_state> keep, std::string_view data,
                std::optional<sockaddr_storage> to, socklen_t to_len, const char* what) {
  detail::datagram_state& s = *keep;
  int fd = open_fd_of(s, what);
  endpoint_op op(op_kind::sendmsg, fd, const_cast<char*>(data.data()), data.size(),
                 to ? reinterpret_cast<sockaddr*>(&*to) : nullptr, to_len, &s.closed_locally,
                 what);
  std::size_t sent;
  try {
    sent = co_await op;
  } catch (const std::system_error& e) {
    Address peer = to ? to_address(*to, to_len) : (s.remote ? *s.remote : s.local);
    throw std::system_error(e.code(), with_peer(what, peer));
  }
  // A datagram goes whole or not at all: a short count would be a kernel bug.
  if (sent != data.size()) {
    throw std::system_error(EMSGSIZE, std::generic_category(),
                            std::string(what) + " sent " + std::to_string(sent) + " of " +
                                std::to_string(data.size()) + " bytes");
  }
}

Task<Datagram> receive(std::shared_ptr<detail::datagram_state> keep, std::size_t max_size,
                       const char* what) {
  detail::datagram_state& s = *keep;
  // Received into a buffer of max_size that is not zero-filled each time,
  // then copied into a string of the datagram's size.
  std::unique_ptr<char[]> own;
  char* landing;
  bool shared = !s.rx_taken;
  if (shared) {
    if (s.rx_size < max_size) {
      s.rx = std::make_unique_for_overwrite<char[]>(max_size);
      s.rx_size = max_size;
    }
    s.rx_taken = true;
    landing = s.rx.get();
  } else {
    own = std::make_unique_for_overwrite<char[]>(max_size);
    landing = own.get();
  }
  struct release_rx {
    detail::datagram_state* s;
    ~release_rx() {
      if (s != nullptr) s->rx_taken = false;
    }
  } release{shared ? &s : nullptr};
  DatagramInfo info = co_await receive_into(keep, std::span<char>(landing, max_size), what);
  Datagram d;
  d.data.assign(landing, info.size);
  d.sender = std::move(info.sender);
  d.truncated = info.truncated;
  co_return d;
}

// One socket of `family` bound to `local` and connected to `remote` (either
// may be null), as options say. Returns the fd, or throws.
int make_socket(int family, const sockaddr* local, socklen_t local_len, const sockaddr* remote,
                socklen_t remote_len, const DatagramOptions& options, const std::string& where) {
  // Through the loop's socket calls: the sim backend refuses datagrams
  // (EOPNOTSUPP) rather than a real socket appearing in a simulation.
  // Every call through the loop's socket calls, so that the sim backend
  // simulates the socket (its datagrams are in memory).
  polyloop::detail::socket_calls& calls = detail::sockets();
  int fd = calls.socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno(errno, "socket for " + where);
  auto fail = [&](const char* call) {
    int err = errno;
    calls.close(fd);
    throw_errno(err, std::string(call) + " " + where);
  };
  int one = 1;
  if (options.reuse_port &&
      calls.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    fail("setsockopt(SO_REUSEPORT) for");
  }
  if (options.allow_broadcast &&
      calls.setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) != 0) {
    fail("setsockopt(SO_BROADCAST) for");
  }
  if (local != nullptr && calls.bind(fd, local, local_len) != 0) fail("bind");
  // A non-blocking UDP or Unix datagram connect completes at once: it only
  // sets the default peer.
  if (remote != nullptr && calls.connect(fd, remote, remote_len) != 0) fail("connect");
  return fd;
}

Task<std::vector<AddrInfo>> resolve(const Address& a, int family, bool passive) {
  AddrInfoHints hints;
  hints.family = family;
  hints.socktype = SOCK_DGRAM;
  hints.flags = passive ? AI_PASSIVE : 0;
  std::vector<AddrInfo> found = co_await getaddrinfo(a.host, std::to_string(a.port), hints);
  if (found.empty()) {
    throw std::system_error(EADDRNOTAVAIL, std::generic_category(),
                            "getaddrinfo() returned an empty list for " + a.to_string());
  }
  co_return found;
}

}  // namespace

Task<DatagramEndpoint> create_datagram_endpoint(std::optional<Address> local,
                                                std::optional<Address> remote,
                                                DatagramOptions options) {
  EventLoop& loop = get_running_loop();
  int fd = -1;
  bool is_unix = options.family == AF_UNIX || (local && !local->path.empty()) ||
                 (remote && !remote->path.empty());
  if (!local && !remote) {
    if (options.family == AF_UNSPEC) {
      throw std::invalid_argument(
          "create_datagram_endpoint: unexpected address family: give a local or remote address, "
          "or DatagramOptions::family");
    }
    fd = make_socket(options.family, nullptr, 0, nullptr, 0, options, "(unbound)");
  } else if (is_unix) {
    if ((local && local->path.empty()) || (remote && remote->path.empty())) {
      throw std::invalid_argument(
          "create_datagram_endpoint: a Unix datagram endpoint needs paths for both addresses");
    }
    sockaddr_storage l{}, r{};
    socklen_t ll = 0, rl = 0;
    if (local) {
      ll = unix_sockaddr(local->path, l);
      struct stat st{};
      if (::stat(local->path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        ::unlink(local->path.c_str());  // stale, as asyncio removes it
      }
    }
    if (remote) rl = unix_sockaddr(remote->path, r);
    fd = make_socket(AF_UNIX, local ? reinterpret_cast<sockaddr*>(&l) : nullptr, ll,
                     remote ? reinterpret_cast<sockaddr*>(&r) : nullptr, rl, options,
                     local ? local->path : remote->path);
  } else {
    std::vector<AddrInfo> locals, remotes;
    if (local) locals = co_await resolve(*local, options.family, true);
    if (remote) remotes = co_await resolve(*remote, options.family, false);
    // Pairs of one family, in getaddrinfo's order: the first that binds and
    // connects wins; the last failure is reported if none does.
    std::exception_ptr last_error;
    bool any_pair = false;
    auto try_pair = [&](const AddrInfo* l, const AddrInfo* r) {
      any_pair = true;
      std::string where = r != nullptr ? r->address().to_string() : l->address().to_string();
      try {
        fd = make_socket(l != nullptr ? l->family : r->family,
                         l != nullptr ? reinterpret_cast<const sockaddr*>(&l->addr) : nullptr,
                         l != nullptr ? l->addrlen : 0,
                         r != nullptr ? reinterpret_cast<const sockaddr*>(&r->addr) : nullptr,
                         r != nullptr ? r->addrlen : 0, options, where);
      } catch (const std::system_error&) {
        last_error = std::current_exception();
      }
    };
    if (remote) {
      for (const AddrInfo& r : remotes) {
        if (!local) {
          try_pair(nullptr, &r);
        } else {
          for (const AddrInfo& l : locals) {
            if (l.family == r.family) try_pair(&l, &r);
            if (fd >= 0) break;
          }
        }
        if (fd >= 0) break;
      }
    } else {
      for (const AddrInfo& l : locals) {
        try_pair(&l, nullptr);
        if (fd >= 0) break;
      }
    }
    if (!any_pair) {
      throw std::invalid_argument("create_datagram_endpoint: no matching address family for " +
                                  local->to_string() + " and " + remote->to_string());
    }
    if (fd < 0) std::rethrow_exception(last_error);
  }
  DatagramEndpoint e;
  e.s_ = std::make_shared<detail::datagram_state>(&loop, fd);
  e.s_->local = e.local_address();
  if (remote) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (detail::sockets_of(loop).getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      e.s_->remote = to_address(ss, len);
    } else {
      e.s_->remote = *remote;
    }
  }
  co_return e;
}

DatagramEndpoint::DatagramEndpoint(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    throw_errno(errno, "DatagramEndpoint(fd " + std::to_string(fd) + ")");
  }
  if (type != SOCK_DGRAM) {
    throw std::invalid_argument("DatagramEndpoint(fd " + std::to_string(fd) +
                                "): not a datagram socket (SOCK_DGRAM); for a stream, use "
                                "net::Stream");
  }
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    throw_errno(errno, "fcntl(O_NONBLOCK) on fd " + std::to_string(fd));
  }
  s_ = std::make_shared<detail::datagram_state>(&get_running_loop(), fd);
  s_->local = local_address();
  sockaddr_storage ss{};
  len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    s_->remote = to_address(ss, len);
  }
}

Task<Datagram> DatagramEndpoint::recvfrom(std::size_t max_size) {
  state_of(s_);
  return receive(s_, max_size, "recvfrom");
}

Task<DatagramInfo> DatagramEndpoint::recvfrom_into(std::span<char> out) {
  state_of(s_);
  return receive_into(s_, out, "recvfrom");
}

Task<Datagram> DatagramEndpoint::recv(std::size_t max_size) {
  state_of(s_);
  return receive(s_, max_size, "recv");
}

Task<> DatagramEndpoint::sendto(std::string_view data, const Address& to) {
  detail::datagram_state& s = state_of(s_);
  bool empty = to.host.empty() && to.path.empty();
  if (s.remote) {
    if (!empty && !same_address(to, *s.remote)) {
      throw std::invalid_argument("Invalid address: must be empty or " + s.remote->to_string() +
                                  " (the endpoint is connected), not " + to.to_string());
    }
    return send_one(s_, data, std::nullopt, 0, "sendto");
  }
  if (empty) {
    throw std::invalid_argument("sendto: no address given and the endpoint is not connected");
  }
  sockaddr_storage ss;
  socklen_t len = numeric_sockaddr(to, ss);
  return send_one(s_, data, ss, len, "sendto");
}

Task<> DatagramEndpoint::send(std::string_view data) {
  detail::datagram_state& s = state_of(s_);
  if (!s.remote) {
    throw std::logic_error(
        "send() needs a connected endpoint (create it with a remote address); use sendto()");
  }
  return send_one(s_, data, std::nullopt, 0, "send");
}

void DatagramEndpoint::close() {
  detail::datagram_state& s = state_of(s_);
  if (s.closing) return;
  s.closing = true;
  s.loop->create_task(detail::datagram_state::closer(s_));
}

Task<> DatagramEndpoint::wait_closed() {
  auto keep = s_;
  co_await state_of(keep).closed.wait();
}

bool DatagramEndpoint::is_closing() const { return state_of(s_).closing; }

Address DatagramEndpoint::local_address() const {
  detail::datagram_state& s = state_of(s_);
  if (s.fd < 0) return s.local;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (detail::sockets_of(*s.loop).getsockname(s.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    throw_errno(errno, "getsockname");
  }
  return to_address(ss, len);
}

std::optional<Address> DatagramEndpoint::remote_address() const { return state_of(s_).remote; }

int DatagramEndpoint::fd() const { return state_of(s_).fd; }

// --- fd passing ---------------------------------------------------------------

OwnedFd& OwnedFd::operator=(OwnedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

OwnedFd::~OwnedFd() {
  if (fd_ >= 0) ::close(fd_);
}

int OwnedFd::release() noexcept { return std::exchange(fd_, -1); }

namespace {

// A recvmsg whose control buffer may carry fds. Should its frame be
// destroyed after the kernel delivered them but before await_resume took
// them (the loop closed with the completion still queued), the destructor
// closes them: received fds are never left open unowned.
struct fds_recv {
  polyloop::detail::io_awaiter io;
  msghdr msg{};
  iovec iov{};
  std::vector<char> control;  // zeroed: an unfilled buffer holds no SCM_RIGHTS
  bool taken = false;

  fds_recv(int fd, void* buf, std::size_t len, std::size_t max_fds)
      : io(op_kind::recvmsg, fd, nullptr, 0, MSG_CMSG_CLOEXEC),
        control(CMSG_SPACE(sizeof(int) * max_fds)) {
    iov = {buf, len};
  }
  fds_recv(const fds_recv&) = delete;
  fds_recv& operator=(const fds_recv&) = delete;
  ~fds_recv() {
    if (!taken && io.result > 0) take([](int fd) { ::close(fd); });
  }

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    io.buf = &msg;
    io.await_suspend(h);
  }
  std::size_t await_resume() { return static_cast<std::size_t>(io.await_resume()); }

  // Hands every fd of every SCM_RIGHTS message to `sink`, once.
  template <class Sink>
  void take(Sink&& sink) {
    taken = true;
    if (msg.msg_control == nullptr) return;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        sink(fd);
      }
    }
  }
};

}  // namespace

namespace {
Task<std::size_t> send_fds_now(int sock, std::string_view data, std::span<const int> fds) {
  std::vector<char> control(fds.empty() ? 0 : CMSG_SPACE(sizeof(int) * fds.size()));
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  co_return static_cast<std::size_t>(co_await async_sendmsg(sock, &msg));
}

}  // namespace

// Not coroutines themselves: bad arguments are reported at the call.
Task<std::size_t> send_fds(int sock, std::string_view data, std::span<const int> fds) {
  if (data.empty()) {
    throw std::invalid_argument("send_fds: give at least one byte of data to carry the fds");
  }
  if (fds.size() > max_fds_per_message) {
    throw std::invalid_argument("send_fds: " + std::to_string(fds.size()) +
                                " fds in one message, at most " +
                                std::to_string(max_fds_per_message) + "; send them in parts");
  }
  return send_fds_now(sock, data, fds);
}

namespace {
Task<ReceivedFds> recv_fds_now(int sock, std::size_t max_bytes, std::size_t max_fds) {
  ReceivedFds got;
  got.data.resize(max_bytes);
  fds_recv op(sock, got.data.data(), got.data.size(), max_fds);
  std::size_t n = co_await op;
  got.data.resize(n);
  got.fds.reserve(max_fds);
  // Within max_fds the kernel delivered no more than fit; any beyond (more
  // SCM_RIGHTS than expected) is closed rather than kept.
  op.take([&](int fd) {
    if (got.fds.size() < max_fds) {
      got.fds.emplace_back(fd);
    } else {
      ::close(fd);
      got.fds_truncated = true;
    }
  });
  if ((op.msg.msg_flags & MSG_CTRUNC) != 0) got.fds_truncated = true;
  co_return got;
}

}  // namespace

Task<ReceivedFds> recv_fds(int sock, std::size_t max_bytes, std::size_t max_fds) {
  if (max_bytes == 0) throw std::invalid_argument("recv_fds: max_bytes must be at least 1");
  return recv_fds_now(sock, max_bytes, std::min(max_fds, max_fds_per_message));
}

}  // namespace polyloop::net
