#include "backends/sim/sim_backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "backends/support/timeout.h"
#include "core/errors/invariant.h"

namespace polyloop::backends {

namespace {

constexpr backend_traits sim_traits{
    .tries_in_start = false,  // start() only queues: net/ never sends on its own
    .fifo_per_fd = false,     // a poll()'s completions are shuffled by the seed
    .kernel_performs_ops = false,
    .bound_to_first_thread = false,
    .native_file_ops = false,  // core/file runs real files on the executor
};

// backend_state of an operation the sim holds.
enum : std::uint32_t { held_none = 0, held_pending = 1, held_completed = 2 };

// The key of an address in bound_: family, address bytes, port; a Unix
// socket by its path.
std::string address_key(const sockaddr* a, socklen_t len) {
  std::string key(1, static_cast<char>(a->sa_family));
  if (a->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(a);
    key.append(reinterpret_cast<const char*>(&in->sin_addr), sizeof in->sin_addr);
    key.append(reinterpret_cast<const char*>(&in->sin_port), sizeof in->sin_port);
  } else if (a->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a);
    key.append(reinterpret_cast<const char*>(&in6->sin6_addr), sizeof in6->sin6_addr);
    key.append(reinterpret_cast<const char*>(&in6->sin6_port), sizeof in6->sin6_port);
  } else if (a->sa_family == AF_UNIX && len > offsetof(sockaddr_un, sun_path)) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(a);
    key.append(un->sun_path, ::strnlen(un->sun_path, len - offsetof(sockaddr_un, sun_path)));
  } else {
    return {};
  }
  return key;
}

// The key of a bound socket: stream and datagram sockets have ports of
// their own, as TCP and UDP do.
std::string socket_key(bool datagram, const sockaddr* a, socklen_t len) {
  std::string key = address_key(a, len);
  if (!key.empty()) key.insert(key.begin(), datagram ? 'd' : 's');
  return key;
}

// The same address with the wildcard host (0.0.0.0, ::): what a listener
// bound to every address is found by.
std::string wildcard_key(const sockaddr* a, socklen_t len) {
  sockaddr_storage ss{};
  std::memcpy(&ss, a, std::min<std::size_t>(len, sizeof ss));
  if (a->sa_family == AF_INET) {
    reinterpret_cast<sockaddr_in&>(ss).sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (a->sa_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6&>(ss).sin6_addr = in6addr_any;
  } else {
    return {};
  }
  return address_key(reinterpret_cast<const sockaddr*>(&ss), len);
}

std::uint16_t port_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return 0;
}

void set_port(sockaddr_storage& ss, std::uint16_t port) {
  if (ss.ss_family == AF_INET) reinterpret_cast<sockaddr_in&>(ss).sin_port = htons(port);
  if (ss.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6&>(ss).sin6_port = htons(port);
}

socklen_t family_length(int family) {
  if (family == AF_INET) return sizeof(sockaddr_in);
  if (family == AF_INET6) return sizeof(sockaddr_in6);
  return sizeof(sa_family_t);  // an unnamed Unix socket
}

// Copies `from` into a caller's buffer of capacity *len, as the kernel
// does (truncated), and sets *len to its full length.
void copy_address(const sockaddr_storage& from, socklen_t from_len, sockaddr* to, socklen_t* len) {
  if (to != nullptr && len != nullptr) {
    std::memcpy(to, &from, std::min(*len, from_len));
  }
  if (len != nullptr) *len = from_len;
}

int fail(int err) noexcept {
  errno = err;
  return -1;
}

}  // namespace

// --- clock --------------------------------------------------------------------

bool SimBackend::sim_clock::skip_to(time_point deadline) noexcept {
  // Operations completed and not yet handed back are runnable work: time
  // stands still until the loop has run them.
  if (sim_.completed_.head != nullptr) return true;
  return time_.skip_to(std::min(deadline, sim_.next_delivery()));
}

// --- construction ---------------------------------------------------------------

SimBackend::SimBackend() : SimBackend(sim_config::from_env()) {}

SimBackend::SimBackend(const sim_config& config)
    : Backend(sim_traits, *this, clock_),
      config_(config),
      clock_(*this),
      rng_(config.seed),
      waker_(detail::eventfd_waker::mode::nonblocking) {
  if (config_.buffer_size == 0) {
    throw std::invalid_argument(
        "sim_config::buffer_size is 0: a socket buffer holds at least one byte");
  }
  if (!(config_.datagram_loss >= 0 && config_.datagram_loss <= 1)) {
    throw std::invalid_argument("sim_config::datagram_loss is " +
                                std::to_string(config_.datagram_loss) +
                                ": a probability from 0 to 1 is needed");
  }
  for (const auto& [port, link] : config_.links_by_port) {
    if (!(link.datagram_loss >= 0 && link.datagram_loss <= 1)) {
      throw std::invalid_argument("sim_config::links_by_port[" + std::to_string(port) +
                                  "].datagram_loss is " + std::to_string(link.datagram_loss) +
                                  ": a probability from 0 to 1 is needed");
    }
  }
  default_link_ = {config_.latency, config_.jitter, config_.datagram_loss};
}

SimBackend::~SimBackend() {
  for (auto& slot : sockets_) {
    if (slot != nullptr) ::close(static_cast<int>(&slot - &*sockets_.begin()));
  }
}

SimBackend::sim_socket* SimBackend::find(int fd) noexcept {
  auto* slot = sockets_.find(fd);
  return slot != nullptr ? slot->get() : nullptr;
}

int SimBackend::make_socket(int family) noexcept {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);  // the placeholder
  if (fd < 0) return -1;
  auto* slot = sockets_.slot(fd);
  if (slot == nullptr) {
    ::close(fd);
    return fail(ENOMEM);
  }
  try {
    *slot = std::make_unique<sim_socket>();
  } catch (...) {
    ::close(fd);
    return fail(ENOMEM);
  }
  (*slot)->fd = fd;
  (*slot)->family = family;
  (*slot)->local.ss_family = static_cast<sa_family_t>(family);
  (*slot)->local_len = family_length(family);
  return fd;
}

std::uint16_t SimBackend::ephemeral_port() noexcept {
  for (;;) {
    std::uint16_t p = next_port_++;
    if (next_port_ < 40000) next_port_ = 40000;
    bool taken = false;
    for (int family : {AF_INET, AF_INET6}) {
      for (bool datagram : {false, true}) {
        for (bool loopback : {false, true}) {
          sockaddr_storage ss{};
          ss.ss_family = static_cast<sa_family_t>(family);
          if (loopback && family == AF_INET) {
            reinterpret_cast<sockaddr_in&>(ss).sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          } else if (loopback) {
            reinterpret_cast<sockaddr_in6&>(ss).sin6_addr = in6addr_loopback;
          }
          set_port(ss, p);
          taken = taken || bound_.contains(socket_key(
                               datagram, reinterpret_cast<sockaddr*>(&ss), family_length(family)));
        }
      }
    }
    if (!taken) return p;
  }
}

// A connecting socket with no address of its own gets one, as the kernel
// binds it on connect: the loopback address and an ephemeral port.
void SimBackend::bind_ephemeral(sim_socket& s) noexcept {
  if (s.state != sock_state::fresh || s.family == AF_UNIX) return;
  if (s.family == AF_INET) {
    reinterpret_cast<sockaddr_in&>(s.local).sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else {
    reinterpret_cast<sockaddr_in6&>(s.local).sin6_addr = in6addr_loopback;
  }
  set_port(s.local, ephemeral_port());
}

// The socket bound to `addr` (or to its port on the wildcard host), or -1.
int SimBackend::bound_socket(bool datagram, const sockaddr* addr, socklen_t len) const noexcept {
  auto it = bound_.find(socket_key(datagram, addr, len));
  if (it == bound_.end()) {
    std::string wild = wildcard_key(addr, len);
    if (!wild.empty()) it = bound_.find((datagram ? "d" : "s") + wild);
  }
  return it != bound_.end() ? it->second : -1;
}

// A datagram socket that sends or connects unbound gets an address, as the
// kernel autobinds it: loopback and an ephemeral port (a Unix socket stays
// unnamed, and its datagrams arrive with an empty sender). False: no room.
bool SimBackend::autobind_datagram(sim_socket& s) noexcept {
  if (s.state != sock_state::fresh || s.family == AF_UNIX) return true;
  bind_ephemeral(s);
  std::string key = socket_key(true, reinterpret_cast<sockaddr*>(&s.local), s.local_len);
  try {
    bound_.emplace(key, s.fd);
    s.bound_key = std::move(key);
  } catch (...) {
    return false;
  }
  s.state = sock_state::bound;
  return true;
}

// --- socket calls -----------------------------------------------------------------

int SimBackend::socket(int family, int type, int) noexcept {
  ++counts_.syscalls;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX) return fail(EAFNOSUPPORT);
  int kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  // Anything else (raw, seqpacket) is not simulated: a clear refusal, not a
  // real socket.
  if (kind != SOCK_STREAM && kind != SOCK_DGRAM) return fail(EOPNOTSUPP);
  int fd = make_socket(family);
  if (fd >= 0) find(fd)->is_datagram = kind == SOCK_DGRAM;
  return fd;
}

int SimBackend::bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
  ++counts_.syscalls;
  sim_socket* s = find(fd);
  if (s == nullptr) return fail(EBADF);
  if (s->state != sock_state::fresh) return fail(EINVAL);
  if (addr == nullptr || addr->sa_family != s->family || len > sizeof(sockaddr_storage)) {
    return fail(EINVAL);
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, addr, len);
  if (s->family != AF_UNIX && port_of(ss) == 0) set_port(ss, ephemeral_port());
  std::string key = socket_key(s->is_datagram, reinterpret_cast<sockaddr*>(&ss), len);
  if (key.empty()) return fail(EINVAL);
  if (bound_.contains(key)) return fail(EADDRINUSE);
  bound_.emplace(key, fd);
  s->bound_key = std::move(key);
  s->local = ss;
  s->local_len = len;
  s->state = sock_state::bound;
  return 0;
}

int SimBackend::listen(int fd, int backlog) noexcept {
  ++counts_.syscalls;
  sim_socket* s = find(fd);
  if (s == nullptr) return fail(EBADF);
  if (s->is_datagram) return fail(EOPNOTSUPP);  // as listen(2) on a datagram socket
  if (s->state != sock_state::bound && s->state != sock_state::listening) return fail(EINVAL);
  s->state = sock_state::listening;
  s->backlog = std::max(backlog, 0);
  return 0;
}

int SimBackend::getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept {
  ++counts_.syscalls;
  sim_socket* s = find(fd);
  if (s == nullptr) return fail(EBADF);
  copy_address(s->local, s->local_len, addr, len);
  return 0;
}

int SimBackend::getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept {
  ++counts_.syscalls;
  sim_socket* s = find(fd);
  if (s == nullptr) return fail(EBADF);
  if (s->state != sock_state::connected) return fail(ENOTCONN);
  copy_address(s->remote, s->remote_len, addr, len);
  return 0;
}

// Options change nothing in the simulation (no Nagle, no TIME_WAIT).
int SimBackend::setsockopt(int fd, int, int, const void*, socklen_t) noexcept {
  ++counts_.syscalls;
  return find(fd) != nullptr ? 0 : fail(EBADF);
}

int SimBackend::shutdown(int fd, int how) noexcept {
  ++counts_.syscalls;
  sim_socket* s = find(fd);
  if (s == nullptr) return fail(EBADF);
  if (s->state != sock_state::connected) return fail(ENOTCONN);
  if ((how == SHUT_WR || how == SHUT_RDWR) && !s->write_shut) {
    s->write_shut = true;
    send_fin(*s);
  }
  if (how == SHUT_RD || how == SHUT_RDWR) s->read_shut = true;
  touch(fd);
  settle();
  return 0;
}

int SimBackend::close(int fd) noexcept {
  ++counts_.syscalls;
  if (find(fd) == nullptr) return ::close(fd);
  forget(fd);
  settle();
  return 0;
}

const sim_config::link& SimBackend::link_between(const sockaddr_storage& from,
                                                 const sockaddr_storage& to) const noexcept {
  if (!config_.links_by_port.empty()) {
    for (std::uint16_t port : {port_of(to), port_of(from)}) {
      auto it = config_.links_by_port.find(port);
      if (port != 0 && it != config_.links_by_port.end()) return it->second;
    }
  }
  return default_link_;
}

std::chrono::nanoseconds SimBackend::link_delay(const sim_config::link& link) noexcept {
  auto delay = link.latency;
  if (link.jitter.count() > 0) {
    delay += std::chrono::nanoseconds(draw(static_cast<std::uint64_t>(link.jitter.count()) + 1));
  }
  return delay;
}

// A FIN or RST for `peer`, travelling after the bytes already sent: on a
// link with latency it arrives one delay later (in order, never before
// them). False: the link has no delay and nothing in flight, so the caller
// applies it at once.
bool SimBackend::queue_notice(const sim_socket& from, sim_socket& peer, bool fin,
                              bool rst) noexcept {
  auto delay = link_delay(link_between(from.local, peer.local));
  if (delay.count() == 0 && peer.in_flight.empty()) return false;
  try {
    Clock::time_point due = std::max(clock_.now() + delay, peer.last_due);
    peer.last_due = due;
    if (peer.in_flight.empty()) delivering_.push_back(peer.fd);
    peer.in_flight.push_back({due, std::string(), fin, rst});
  } catch (...) {
    return false;  // no memory: the notice arrives at once instead
  }
  return true;
}

// The peer sees EOF after the bytes already sent, one delay of the link
// after the shutdown or close.
void SimBackend::send_fin(sim_socket& s) noexcept {
  sim_socket* p = find(s.peer);
  if (p == nullptr) return;
  if (!queue_notice(s, *p, true, false)) {
    p->eof_in = true;
    touch(s.peer);
  }
}

// `peer` learns of a reset one delay of the link later (at once on a link
// without): ECONNRESET, and what was in flight behind it is lost.
void SimBackend::send_rst(const sim_socket& from, sim_socket& peer) noexcept {
  if (queue_notice(from, peer, false, true)) return;
  peer.reset = true;
  peer.in_flight.clear();
  peer.in_flight_bytes = 0;
  touch(peer.fd);
}

void SimBackend::reset_connection(sim_socket& s) noexcept {
  if (sim_socket* p = find(s.peer)) {
    p->peer = -1;
    send_rst(s, *p);
  }
  s.reset = true;
  s.peer = -1;
  s.in_flight.clear();
  s.in_flight_bytes = 0;
  touch(s.fd);
}

// Ends every operation pending on `fd` (-ECANCELED), tells the other side,
// and closes the placeholder: the number is free for the kernel again.
void SimBackend::forget(int fd) noexcept {
  std::unique_ptr<sim_socket> s = std::move((*sockets_.find(fd)));
  while (operation* op = s->pending.pop()) complete(*op, -ECANCELED);
  if (!s->bound_key.empty()) bound_.erase(s->bound_key);
  for (int w : s->waiting_senders) touch(w);  // their sends are refused now
  if (s->state == sock_state::listening) {
    // Connections never accepted are reset, waiting connects refused.
    for (int c : s->accept_queue) {
      if (sim_socket* conn = find(c)) {
        reset_connection(*conn);
        forget(c);
      }
    }
    for (int w : s->waiting_connects) touch(w);
  }
  if (s->state == sock_state::connected && !s->is_datagram) {
    if (sim_socket* p = find(s->peer)) {
      // Unread data makes the kernel answer with a reset, not a FIN.
      if (s->unread() > 0) {
        send_rst(*s, *p);
      } else if (!s->write_shut) {
        send_fin(*s);
      }
      p->peer = -1;
      touch(s->peer);
    }
  }
  ::close(fd);
}

// --- operations -------------------------------------------------------------------

void SimBackend::complete(operation& op, std::int64_t result) noexcept {
  op.result = result;
  op.backend_state = held_completed;
  completed_.push(&op);
}

void SimBackend::refuse_unsimulated(operation& op) noexcept {
  int err = is_file_op(op.kind) ? EOPNOTSUPP : EBADF;
  complete(op, -err);
  if (is_file_op(op.kind)) return;  // core/file takes these to the executor
  std::string what = std::string("sim backend: ") + op_kind_name(op.kind) + " on fd " +
                     std::to_string(op.fd) +
                     ", which is not a simulated socket (under sim, only sockets made through "
                     "net/ on this loop can be used)";
  try {
    report_exception(what.c_str(), std::make_exception_ptr(
                                       std::system_error(err, std::generic_category(), what)));
  } catch (...) {
  }
}

void SimBackend::start(operation& op) noexcept {
  POLYLOOP_INVARIANT(op.backend_state == held_none, "sim: an operation started twice");
  sim_socket* s = find(op.fd);
  if (s == nullptr) {
    // A real fd: only its close is kernel-like here (a file core/file opened).
    if (op.kind == op_kind::close && op.fd >= 0) {
      complete(op, ::close(op.fd) == 0 ? 0 : -errno);
      return;
    }
    refuse_unsimulated(op);
    return;
  }
  if (op.kind == op_kind::close) {
    forget(op.fd);
    complete(op, 0);
    settle();
    return;
  }
  op.backend_state = held_pending;
  s->pending.push(&op);
  touch(op.fd);
  settle();
}

void SimBackend::cancel(operation& op) noexcept {
  if (op.backend_state != held_pending) return;
  sim_socket* s = find(op.fd);
  bool held = s != nullptr && s->pending.remove(&op);
  POLYLOOP_INVARIANT(held, "sim: a pending operation not on its socket's list");
  if (op.kind == op_kind::connect && s->state == sock_state::connecting) {
    s->state = s->bound_key.empty() ? sock_state::fresh : sock_state::bound;
    s->target = -1;
    s->handshaking = false;
  }
  complete(op, -ECANCELED);
}

bool SimBackend::try_op(sim_socket& s, operation& op) noexcept {
  // What a readiness backend would make a syscall of.
  ++counts_.syscalls;
  ++counts_.io_attempts;
  if (s.is_datagram) return try_datagram_op(s, op);
  switch (op.kind) {
    case op_kind::read:
    case op_kind::recv: {
      iovec one{op.buf, op.len};
      return try_recv(s, op, &one, 1, op.kind == op_kind::recv ? op.flags : 0);
    }
    case op_kind::recvmsg: {
      auto* msg = static_cast<msghdr*>(op.buf);
      msg->msg_namelen = 0;
      msg->msg_controllen = 0;
      msg->msg_flags = 0;
      return try_recv(s, op, msg->msg_iov, msg->msg_iovlen, op.flags);
    }
    case op_kind::write:
    case op_kind::send: {
      iovec one{op.buf, op.len};
      return try_send(s, op, &one, 1);
    }
    case op_kind::sendmsg: {
      auto* msg = static_cast<msghdr*>(op.buf);
      if (msg->msg_controllen > 0) {  // SCM_RIGHTS needs real descriptors
        op.result = -EOPNOTSUPP;
        return true;
      }
      return try_send(s, op, msg->msg_iov, msg->msg_iovlen);
    }
    case op_kind::accept:
      return try_accept(s, op);
    case op_kind::connect:
      return try_connect(s, op);
    case op_kind::poll:
      return try_poll(s, op);
    default:
      op.result = -EOPNOTSUPP;
      return true;
  }
}

bool SimBackend::chance(double p) noexcept {
  if (p <= 0) return false;
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53 < p;
}

std::uint64_t SimBackend::draw(std::uint64_t n) noexcept { return n == 0 ? 0 : rng_() % n; }

bool SimBackend::try_recv(sim_socket& s, operation& op, iovec* iov, std::size_t n,
                          int flags) noexcept {
  if (s.state == sock_state::listening || s.state == sock_state::fresh ||
      s.state == sock_state::bound || s.state == sock_state::connecting) {
    op.result = -ENOTCONN;
    return true;
  }
  std::size_t want = 0;
  for (std::size_t i = 0; i < n; ++i) want += iov[i].iov_len;
  if (s.unread() > 0 && want > 0) {
    std::size_t take = std::min(want, s.unread());
    if (take > 1 && chance(config_.short_io)) take = 1 + draw(take - 1);
    std::size_t done = 0;
    for (std::size_t i = 0; i < n && done < take; ++i) {
      std::size_t k = std::min(iov[i].iov_len, take - done);
      std::memcpy(iov[i].iov_base, s.inbox.data() + s.inbox_read + done, k);
      done += k;
    }
    if ((flags & MSG_PEEK) == 0) {
      s.inbox_read += take;
      if (s.inbox_read == s.inbox.size()) {
        s.inbox.clear();
        s.inbox_read = 0;
      }
      if (s.peer >= 0) touch(s.peer);  // room for the peer's sends
    }
    op.result = static_cast<std::int64_t>(take);
    return true;
  }
  if (s.reset) {
    s.reset = false;
    s.broken = true;
    op.result = -ECONNRESET;
    return true;
  }
  if (s.eof_in || s.read_shut || s.broken || want == 0) {
    op.result = 0;
    return true;
  }
  return false;
}

// Room in `s`'s peer for what `s` sends.
std::size_t SimBackend::room(const sim_socket& s) const noexcept {
  const sim_socket* p = const_cast<SimBackend*>(this)->find(s.peer);
  if (p == nullptr) return 0;
  std::size_t held = p->unread() + p->in_flight_bytes;
  return held >= config_.buffer_size ? 0 : config_.buffer_size - held;
}

bool SimBackend::try_send(sim_socket& s, operation& op, const iovec* iov, std::size_t n) noexcept {
  if (s.reset) {
    s.reset = false;
    s.broken = true;
    op.result = -ECONNRESET;
    return true;
  }
  if (s.state != sock_state::connected) {
    op.result = -ENOTCONN;
    return true;
  }
  if (s.write_shut || s.broken || s.peer < 0) {
    op.result = -EPIPE;
    return true;
  }
  std::size_t want = 0;
  for (std::size_t i = 0; i < n; ++i) want += iov[i].iov_len;
  if (want == 0) {
    op.result = 0;
    return true;
  }
  std::size_t space = room(s);
  if (space == 0) return false;  // back-pressure: wait for the peer to read
  if (chance(config_.reset)) {
    reset_connection(s);
    s.reset = false;
    s.broken = true;
    op.result = -ECONNRESET;
    return true;
  }
  std::size_t take = std::min(want, space);
  if (take > 1 && chance(config_.short_io)) take = 1 + draw(take - 1);
  std::string bytes;
  bytes.reserve(take);
  for (std::size_t i = 0; i < n && bytes.size() < take; ++i) {
    std::size_t k = std::min(iov[i].iov_len, take - bytes.size());
    bytes.append(static_cast<const char*>(iov[i].iov_base), k);
  }
  sim_socket& p = *find(s.peer);
  auto delay = link_delay(link_between(s.local, p.local));
  if (config_.bandwidth > 0) {
    delay += std::chrono::nanoseconds(take * 1'000'000'000ull / config_.bandwidth);
  }
  if (delay.count() == 0 && p.in_flight.empty()) {
    p.inbox.append(bytes);
    touch(s.peer);
  } else {
    // In order: a segment never overtakes the one before it.
    Clock::time_point due = std::max(clock_.now() + delay, p.last_due);
    p.last_due = due;
    p.in_flight_bytes += take;
    if (p.in_flight.empty()) delivering_.push_back(s.peer);
    p.in_flight.push_back({due, std::move(bytes), false});
  }
  s.bytes_sent += take;
  op.result = static_cast<std::int64_t>(take);
  if (config_.reset_after_bytes > 0 && s.bytes_sent >= config_.reset_after_bytes) {
    reset_connection(s);  // the next operation on either end sees it
  }
  return true;
}

bool SimBackend::try_accept(sim_socket& s, operation& op) noexcept {
  if (s.state != sock_state::listening) {
    op.result = -EINVAL;
    return true;
  }
  if (s.accept_queue.empty()) return false;
  if (chance(config_.accept_emfile)) {
    op.result = -EMFILE;  // the connection stays queued, as in the kernel
    return true;
  }
  int c = s.accept_queue.front();
  s.accept_queue.pop_front();
  sim_socket& conn = *find(c);
  if (op.addr != nullptr) copy_address(conn.remote, conn.remote_len, op.addr, &op.addrlen);
  for (int w : s.waiting_connects) touch(w);  // room in the backlog
  op.result = c;
  return true;
}

// `s` (fd `fd`) connects to `listener`: the server's end is made and
// queued for accept. On failure (no descriptor) `s` stays unconnected.
void SimBackend::establish(int fd, sim_socket& s, sim_socket& listener, const sockaddr* to,
                           socklen_t len) noexcept {
  int c = make_socket(s.family);
  if (c < 0) return;
  sim_socket& conn = *find(c);
  bind_ephemeral(s);
  std::memcpy(&conn.local, to, len);
  conn.local_len = len;
  conn.remote = s.local;
  conn.remote_len = s.local_len;
  conn.state = sock_state::connected;
  conn.peer = fd;
  std::memcpy(&s.remote, to, len);
  s.remote_len = len;
  s.state = sock_state::connected;
  s.target = -1;
  s.peer = c;
  listener.accept_queue.push_back(c);
}

bool SimBackend::try_connect(sim_socket& s, operation& op) noexcept {
  if (s.state == sock_state::connected) {
    op.result = -EISCONN;
    return true;
  }
  if (s.state == sock_state::listening) {
    op.result = -EINVAL;
    return true;
  }
  if (op.addr == nullptr || op.addr->sa_family != s.family ||
      op.addrlen > sizeof(sockaddr_storage)) {
    op.result = op.addr == nullptr ? -EFAULT : -EAFNOSUPPORT;
    return true;
  }
  if (!s.handshaking && s.state != sock_state::connecting) {
    // One round trip of the link (SYN out, SYN-ACK or RST back) before the
    // answer; none on a link without latency.
    sockaddr_storage to{};
    std::memcpy(&to, op.addr, op.addrlen);
    const sim_config::link& link = link_between(s.local, to);
    auto rtt = link_delay(link) + link_delay(link);
    if (rtt.count() > 0) {
      try {
        handshaking_.push_back(op.fd);
      } catch (...) {
        op.result = -ENOBUFS;
        return true;
      }
      s.handshaking = true;
      s.handshake_due = clock_.now() + rtt;
      s.state = sock_state::connecting;
      s.target = -1;
      return false;
    }
  }
  if (s.handshaking) {
    if (clock_.now() < s.handshake_due) return false;
    s.handshaking = false;
  }
  int target = -1;
  if (s.state == sock_state::connecting && s.target >= 0) {
    target = s.target;
  } else {
    target = bound_socket(false, op.addr, op.addrlen);
  }
  sim_socket* l = find(target);
  if (l == nullptr || l->state != sock_state::listening) {
    if (s.state == sock_state::connecting) s.state = sock_state::fresh;
    op.result = -ECONNREFUSED;
    return true;
  }
  if (l->accept_queue.size() > static_cast<std::size_t>(l->backlog)) {
    // A full backlog: the kernel drops the SYN and the client retries.
    if (s.state != sock_state::connecting) {
      s.state = sock_state::connecting;
      s.target = target;
      l->waiting_connects.push_back(op.fd);
    }
    return false;
  }
  std::erase(l->waiting_connects, op.fd);
  establish(op.fd, s, *l, op.addr, op.addrlen);
  if (s.state != sock_state::connected) {
    op.result = -EMFILE;
    return true;
  }
  touch(target);
  op.result = 0;
  return true;
}

bool SimBackend::readable(const sim_socket& s) const noexcept {
  if (s.state == sock_state::listening) return !s.accept_queue.empty();
  return s.unread() > 0 || s.eof_in || s.reset || s.broken || s.read_shut;
}

bool SimBackend::writable(const sim_socket& s) const noexcept {
  if (s.state != sock_state::connected) return false;
  return s.reset || s.broken || s.write_shut || s.peer < 0 || room(s) > 0;
}

bool SimBackend::try_poll(sim_socket& s, operation& op) noexcept {
  std::int64_t revents = 0;
  if ((op.flags & POLLIN) != 0 && readable(s)) revents |= POLLIN;
  if ((op.flags & POLLOUT) != 0 && writable(s)) revents |= POLLOUT;
  if (s.reset || s.broken) revents |= POLLERR;
  if (s.state == sock_state::connected && s.eof_in && (s.peer < 0 || s.write_shut)) {
    revents |= POLLHUP;
  }
  if (revents == 0) return false;
  op.result = revents;
  return true;
}

void SimBackend::settle() noexcept {
  while (!dirty_.empty()) {
    int fd = dirty_.back();
    dirty_.pop_back();
    sim_socket* s = find(fd);
    if (s == nullptr) continue;
    detail::op_list waiting = std::exchange(s->pending, {});
    while (operation* op = waiting.pop()) {
      if (try_op(*s, *op)) {
        complete(*op, op->result);
      } else {
        s->pending.push(op);
      }
    }
  }
}

// --- datagram sockets ---------------------------------------------------------------

// A datagram socket's connect: the default peer, set at once. A Unix path
// nobody binds is refused (the kernel checks the path at connect); a UDP
// port nobody binds is not (that is learnt from the first send).
int SimBackend::connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
  ++counts_.syscalls;
  sim_socket* s = find(fd);
  if (s == nullptr) return fail(EBADF);
  if (!s->is_datagram) return fail(EOPNOTSUPP);  // a stream connects by op_kind::connect
  if (addr == nullptr) return fail(EFAULT);
  if (addr->sa_family != s->family || len > sizeof(sockaddr_storage)) return fail(EAFNOSUPPORT);
  if (s->family == AF_UNIX && bound_socket(true, addr, len) < 0) return fail(ECONNREFUSED);
  if (!autobind_datagram(*s)) return fail(ENOMEM);
  std::memcpy(&s->remote, addr, len);
  s->remote_len = len;
  s->state = sock_state::connected;
  return 0;
}

bool SimBackend::try_datagram_op(sim_socket& s, operation& op) noexcept {
  switch (op.kind) {
    case op_kind::read:
    case op_kind::recv: {
      iovec one{op.buf, op.len};
      return try_recv_datagram(s, op, &one, 1, op.kind == op_kind::recv ? op.flags : 0, nullptr);
    }
    case op_kind::recvmsg: {
      auto* msg = static_cast<msghdr*>(op.buf);
      return try_recv_datagram(s, op, msg->msg_iov, msg->msg_iovlen, op.flags, msg);
    }
    case op_kind::write:
    case op_kind::send: {
      iovec one{op.buf, op.len};
      return try_send_datagram(s, op, &one, 1, nullptr, 0);
    }
    case op_kind::sendmsg: {
      auto* msg = static_cast<msghdr*>(op.buf);
      if (msg->msg_controllen > 0) {  // SCM_RIGHTS needs real descriptors
        op.result = -EOPNOTSUPP;
        return true;
      }
      return try_send_datagram(s, op, msg->msg_iov, msg->msg_iovlen,
                               static_cast<const sockaddr*>(msg->msg_name), msg->msg_namelen);
    }
    case op_kind::poll: {
      std::int64_t revents = 0;
      if ((op.flags & POLLIN) != 0 && !s.datagrams.empty()) revents |= POLLIN;
      if ((op.flags & POLLOUT) != 0) revents |= POLLOUT;  // a datagram socket is writable
      if (s.pending_error != 0) revents |= POLLERR;
      if (revents == 0) return false;
      op.result = revents;
      return true;
    }
    case op_kind::accept:
    case op_kind::connect:
      op.result = -EOPNOTSUPP;  // as accept(2) on a datagram socket; connect: socket_calls
      return true;
    default:
      op.result = -EOPNOTSUPP;
      return true;
  }
}

// The next datagram, cut to the buffer (MSG_TRUNC in msg_flags, as
// recvmsg(2) reports it); an error an ICMP left comes first, as in Linux.
bool SimBackend::try_recv_datagram(sim_socket& s, operation& op, iovec* iov, std::size_t n,
                                   int flags, msghdr* msg) noexcept {
  if (s.pending_error != 0) {
    op.result = -std::exchange(s.pending_error, 0);
    return true;
  }
  if (s.datagrams.empty()) return false;
  datagram& d = s.datagrams.front();
  std::size_t done = 0;
  for (std::size_t i = 0; i < n && done < d.bytes.size(); ++i) {
    std::size_t k = std::min(iov[i].iov_len, d.bytes.size() - done);
    std::memcpy(iov[i].iov_base, d.bytes.data() + done, k);
    done += k;
  }
  if (msg != nullptr) {
    msg->msg_controllen = 0;
    msg->msg_flags = done < d.bytes.size() ? MSG_TRUNC : 0;
    if (msg->msg_name != nullptr) {
      copy_address(d.from, d.from_len, static_cast<sockaddr*>(msg->msg_name), &msg->msg_namelen);
    } else {
      msg->msg_namelen = 0;
    }
  }
  op.result = static_cast<std::int64_t>((flags & MSG_TRUNC) != 0 ? d.bytes.size() : done);
  if ((flags & MSG_PEEK) == 0) {
    s.datagram_bytes -= d.bytes.size();
    s.datagrams.pop_front();
    for (int w : s.waiting_senders) touch(w);  // room for Unix senders
    s.waiting_senders.clear();
  }
  return true;
}

// One datagram to `to` (null: the connected peer). UDP: dropped by the
// seed's loss, by a full receive buffer, or for want of a receiver (a
// connected sender then learns ECONNREFUSED); Unix: never lost, the sender
// waits for room, and a path nobody binds is refused.
bool SimBackend::try_send_datagram(sim_socket& s, operation& op, const iovec* iov, std::size_t n,
                                   const sockaddr* to, socklen_t to_len) noexcept {
  if (s.pending_error != 0) {
    op.result = -std::exchange(s.pending_error, 0);
    return true;
  }
  if (s.write_shut) {
    op.result = -EPIPE;
    return true;
  }
  bool connected = s.state == sock_state::connected;
  if (to == nullptr || to_len == 0) {
    if (!connected) {
      op.result = -EDESTADDRREQ;
      return true;
    }
    to = reinterpret_cast<const sockaddr*>(&s.remote);
    to_len = s.remote_len;
  } else if (connected && s.family == AF_UNIX) {
    op.result = -EISCONN;
    return true;
  }
  if (to->sa_family != s.family || to_len > sizeof(sockaddr_storage)) {
    op.result = s.family == AF_UNIX ? -EINVAL : -EAFNOSUPPORT;
    return true;
  }
  std::size_t size = 0;
  for (std::size_t i = 0; i < n; ++i) size += iov[i].iov_len;
  // The largest UDP payload (65535 less the IP and UDP headers); a Unix
  // datagram beyond the socket buffer.
  std::size_t largest = s.family == AF_INET    ? 65507
                        : s.family == AF_INET6 ? 65527
                                               : config_.buffer_size;
  if (size > largest) {
    op.result = -EMSGSIZE;
    return true;
  }
  if (!autobind_datagram(s)) {
    op.result = -ENOMEM;
    return true;
  }
  op.result = static_cast<std::int64_t>(size);  // UDP: sent, whatever becomes of it
  sim_socket* r = find(bound_socket(true, to, to_len));
  bool is_udp = s.family != AF_UNIX;
  if (r == nullptr) {
    if (!is_udp) {
      op.result = -ECONNREFUSED;
    } else if (connected) {
      s.pending_error = ECONNREFUSED;  // the "port unreachable" coming back
      touch(s.fd);
    }
    return true;
  }
  // A connected receiver takes datagrams from its peer only.
  if (r->state == sock_state::connected &&
      address_key(reinterpret_cast<const sockaddr*>(&r->remote), r->remote_len) !=
          address_key(reinterpret_cast<const sockaddr*>(&s.local), s.local_len)) {
    if (!is_udp) op.result = -EPERM;
    return true;
  }
  if (r->datagram_bytes + size > config_.buffer_size) {
    if (is_udp) return true;  // the receive buffer is full: dropped
    r->waiting_senders.push_back(s.fd);
    return false;
  }
  sockaddr_storage dest{};
  std::memcpy(&dest, to, to_len);
  const sim_config::link& link = link_between(s.local, dest);
  if (is_udp && chance(link.datagram_loss)) return true;  // lost on the way
  datagram d;
  try {
    d.bytes.reserve(size);
    for (std::size_t i = 0; i < n; ++i) {
      d.bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    }
  } catch (...) {
    op.result = -ENOBUFS;
    return true;
  }
  d.from = s.local;
  d.from_len = s.local_len;
  // A sender bound to the wildcard host is seen from the loopback address.
  if (d.from.ss_family == AF_INET) {
    auto& in = reinterpret_cast<sockaddr_in&>(d.from);
    if (in.sin_addr.s_addr == htonl(INADDR_ANY)) in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else if (d.from.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<sockaddr_in6&>(d.from);
    if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) in6.sin6_addr = in6addr_loopback;
  }
  auto delay = link_delay(link);
  if (config_.bandwidth > 0) {
    delay += std::chrono::nanoseconds(size * 1'000'000'000ull / config_.bandwidth);
  }
  r->datagram_bytes += size;
  if (delay.count() == 0 && r->datagrams_in_flight.empty()) {
    r->datagrams.push_back(std::move(d));
    touch(r->fd);
    return true;
  }
  // In the order sent: the sim does not reorder datagrams.
  d.due = std::max(clock_.now() + delay, r->last_due);
  r->last_due = d.due;
  if (r->datagrams_in_flight.empty()) delivering_.push_back(r->fd);
  r->datagrams_in_flight.push_back(std::move(d));
  return true;
}

// --- time and delivery -------------------------------------------------------------

Clock::time_point SimBackend::next_delivery() const noexcept {
  Clock::time_point next = Clock::time_point::max();
  for (int fd : handshaking_) {
    const sim_socket* s = const_cast<SimBackend*>(this)->find(fd);
    if (s != nullptr && s->handshaking) next = std::min(next, s->handshake_due);
  }
  for (int fd : delivering_) {
    const sim_socket* s = const_cast<SimBackend*>(this)->find(fd);
    if (s != nullptr && !s->in_flight.empty()) next = std::min(next, s->in_flight.front().due);
    if (s != nullptr && !s->datagrams_in_flight.empty()) {
      next = std::min(next, s->datagrams_in_flight.front().due);
    }
  }
  return next;
}

void SimBackend::deliver_due() noexcept {
  Clock::time_point now = clock_.now();
  std::erase_if(handshaking_, [&](int fd) {
    sim_socket* s = find(fd);
    if (s == nullptr || !s->handshaking) return true;
    if (s->handshake_due > now) return false;
    touch(fd);  // its connect retries and now gets its answer
    return true;
  });
  std::erase_if(delivering_, [&](int fd) {
    sim_socket* s = find(fd);
    if (s == nullptr) return true;
    while (!s->in_flight.empty() && s->in_flight.front().due <= now) {
      segment& seg = s->in_flight.front();
      s->in_flight_bytes -= seg.bytes.size();
      s->inbox.append(seg.bytes);
      if (seg.fin) s->eof_in = true;
      touch(fd);
      if (seg.rst) {  // nothing comes after a reset
        s->reset = true;
        s->in_flight.clear();
        s->in_flight_bytes = 0;
        break;
      }
      s->in_flight.pop_front();
    }
    while (!s->datagrams_in_flight.empty() && s->datagrams_in_flight.front().due <= now) {
      s->datagrams.push_back(std::move(s->datagrams_in_flight.front()));
      s->datagrams_in_flight.pop_front();
      touch(fd);
    }
    return s->in_flight.empty() && s->datagrams_in_flight.empty();
  });
  settle();
}

std::error_code SimBackend::poll(std::chrono::nanoseconds timeout,
                                 detail::ready_queue& ready) noexcept {
  deliver_due();
  if (completed_.head == nullptr && timeout.count() != 0 &&
      (!delivering_.empty() || !handshaking_.empty())) {
    // Nothing runnable and no timer sooner: the network's next delivery.
    clock_.time_.skip_to(next_delivery());
    deliver_due();
  }
  if (completed_.head == nullptr && timeout.count() != 0) {
    // Only another thread can make work now (call_soon_threadsafe).
    pollfd p{waker_.fd(), POLLIN, 0};
    timespec storage{};
    int n = ::ppoll(&p, 1, detail::timespec_or_null(timeout, storage), nullptr);
    if (n < 0 && errno != EINTR) return {errno, std::generic_category()};
  }
  waker_.drain();
  waker_.clear_after_drain();
  batch_.clear();
  while (operation* op = completed_.pop()) batch_.push_back(op);
  if (config_.perturb_order) {
    for (std::size_t i = batch_.size(); i > 1; --i) std::swap(batch_[i - 1], batch_[draw(i)]);
  }
  for (operation* op : batch_) {
    op->backend_state = held_none;
    ready.push(op);
  }
  return {};
}

void SimBackend::wakeup() noexcept { waker_.wake(); }

void SimBackend::shutdown() noexcept {
  for (auto& slot : sockets_) {
    if (slot == nullptr) continue;
    while (operation* op = slot->pending.pop()) op->backend_state = held_none;
  }
  while (operation* op = completed_.pop()) {
    op->backend_state = held_none;
    if (op->kind == op_kind::accept && op->result >= 0) {
      if (find(static_cast<int>(op->result)) != nullptr) forget(static_cast<int>(op->result));
    }
    op->result = -ECANCELED;
  }
  dirty_.clear();
}

}  // namespace polyloop::backends
