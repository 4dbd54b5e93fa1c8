// The simulation backend: virtual time and an in-memory network, for tests.
//
// Time: the backend owns the loop's clock (a VirtualClock, which the loop
// uses unless it is given another): whenever nothing is runnable the clock
// jumps to the next timer or the next delivery on the network, so a 30 s
// sleep takes microseconds and every deadline is exact.
//
// Network: net/'s socket calls (core/backend/socket_calls.h) and the socket
// operations (recv, send, read, write, recvmsg, sendmsg, accept, connect,
// poll, close) act on simulated stream sockets (TCP over IPv4/IPv6, Unix),
// with listening sockets and their backlog, a receive buffer that makes a
// sender wait (back-pressure), half-close, EOF, reset, and ECONNREFUSED for
// an address nobody listens on (on a link with latency a connect takes one
// round trip, and a FIN or reset reaches the peer one delay later); and on simulated datagram sockets (UDP over
// IPv4/IPv6, Unix), as Linux has them: message boundaries, MSG_TRUNC for a
// datagram longer than the receive, a receive buffer beyond which UDP
// datagrams are dropped (a Unix sender waits instead), a UDP datagram to a
// port nobody binds dropped (on a connected socket: ECONNREFUSED at its next
// operation, as the ICMP "port unreachable" leaves it), and UDP loss drawn
// from the seed (sim_config::datagram_loss). Each simulated socket holds a real
// placeholder descriptor (an eventfd) for its number, so that it can never
// collide with a real fd of the process, and a stray real syscall on it
// fails (ENOTSOCK) instead of touching another file. An operation on an fd
// the sim did not make fails with -EBADF (file operations: -EOPNOTSUPP, so
// core/file runs them on the executor), reported to the loop's exception
// handler naming the operation; fds sent with a message (SCM_RIGHTS) are
// refused (EOPNOTSUPP: passing needs real descriptors).
//
// Counters (Backend::counters()): each socket call and each attempt at an
// operation is one `syscalls` and, for an attempt, one `io_attempts` (what
// epoll would make a syscall of); backends/README.md says so.
//
// Seeded: sim_config's seed decides the faults it injects and the order in
// which a poll() hands back what completed at the same instant.
//
// Threads: as every backend; only wakeup() is thread-safe.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "backends/sim/sim_config.h"
#include "backends/support/eventfd_waker.h"
#include "backends/support/fd_table.h"
#include "backends/support/op_list.h"
#include "core/backend/backend.h"
#include "core/backend/socket_calls.h"
#include "core/backend/clock.h"

namespace polyloop::backends {

// socket_calls first: it exists before Backend is given it.
class SimBackend final : private detail::socket_calls, public Backend {
 public:
  // sim_config::from_env(): throws std::invalid_argument for a malformed
  // POLYLOOP_SIM_* variable, std::system_error ("eventfd") if the wake-up
  // descriptor cannot be made.
  SimBackend();
  explicit SimBackend(const sim_config& config);
  ~SimBackend() override;
  SimBackend(const SimBackend&) = delete;
  SimBackend& operator=(const SimBackend&) = delete;

  const sim_config& config() const noexcept { return config_; }
  // The loop's clock unless it was given another.
  Clock& clock() noexcept { return clock_; }

  std::string_view name() const noexcept override { return "sim"; }
  void start(operation& op) noexcept override;
  void cancel(operation& op) noexcept override;
  std::error_code poll(std::chrono::nanoseconds timeout,
                       detail::ready_queue& ready) noexcept override;
  void wakeup() noexcept override;
  void shutdown() noexcept override;

 private:
  // The clock: a VirtualClock that, asked to skip to a timer, stops first
  // at the network's next delivery, if that comes sooner.
  class sim_clock final : public Clock {
   public:
    explicit sim_clock(SimBackend& sim) noexcept : sim_(sim) {}
    time_point now() const noexcept override { return time_.now(); }
    bool skip_to(time_point deadline) noexcept override;
    VirtualClock time_;

   private:
    SimBackend& sim_;
  };

  // One datagram, in flight or delivered.
  struct datagram {
    Clock::time_point due;
    std::string bytes;
    sockaddr_storage from{};
    socklen_t from_len = 0;
  };
  struct segment {
    Clock::time_point due;
    std::string bytes;
    bool fin = false;  // the sender shut down or closed after these bytes
    bool rst = false;  // the sender reset the connection after these bytes
  };
  enum class sock_state : std::uint8_t { fresh, bound, listening, connecting, connected };
  struct sim_socket {
    int fd = -1;  // its own number (the placeholder's)
    int family = AF_INET;
    bool is_datagram = false;
    sock_state state = sock_state::fresh;
    sockaddr_storage local{};
    socklen_t local_len = 0;
    sockaddr_storage remote{};
    socklen_t remote_len = 0;
    std::string bound_key;  // its entry in bound_, or empty
    // Listening: connections made and not yet accepted, and sockets whose
    // connect waits for room in the backlog.
    int backlog = 0;
    std::deque<int> accept_queue;
    std::vector<int> waiting_connects;
    int target = -1;  // connecting: the listener it waits on
    // A connect on a link with latency: its SYN-ACK (or RST) comes back at
    // handshake_due, one round trip after the connect started.
    bool handshaking = false;
    Clock::time_point handshake_due{};
    // Connected.
    int peer = -1;      // -1 once the peer is gone
    std::string inbox;  // delivered, unread: [inbox_read, size)
    std::size_t inbox_read = 0;
    std::deque<segment> in_flight;
    std::size_t in_flight_bytes = 0;
    Clock::time_point last_due{};
    std::uint64_t bytes_sent = 0;
    bool eof_in = false;  // the peer's FIN has arrived
    bool reset = false;   // ECONNRESET to report once
    bool broken = false;  // reset reported: sends fail with EPIPE
    bool write_shut = false;
    bool read_shut = false;
    detail::op_list pending;
    // Datagram sockets: delivered and in flight (in the order sent), their
    // bytes (against the buffer), the error an ICMP left (ECONNREFUSED) for
    // the next operation, and Unix senders waiting for room here.
    std::deque<datagram> datagrams;
    std::deque<datagram> datagrams_in_flight;
    std::size_t datagram_bytes = 0;
    int pending_error = 0;
    std::vector<int> waiting_senders;
    std::size_t unread() const noexcept { return inbox.size() - inbox_read; }
  };

  // socket_calls (net/'s socket set-up), in sim_backend.cc.
  int socket(int family, int type, int protocol) noexcept override;
  int bind(int fd, const sockaddr* addr, socklen_t len) noexcept override;
  int listen(int fd, int backlog) noexcept override;
  int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept override;
  int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept override;
  int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept override;
  int shutdown(int fd, int how) noexcept override;
  int connect(int fd, const sockaddr* addr, socklen_t len) noexcept override;
  int close(int fd) noexcept override;

  sim_socket* find(int fd) noexcept;
  int make_socket(int family) noexcept;
  void forget(int fd) noexcept;
  void send_fin(sim_socket& s) noexcept;
  void send_rst(const sim_socket& from, sim_socket& peer) noexcept;
  bool queue_notice(const sim_socket& from, sim_socket& peer, bool fin, bool rst) noexcept;
  // The link between two addresses (sim_config::links_by_port, else the
  // defaults), and one delay on it: its latency plus a draw of its jitter.
  const sim_config::link& link_between(const sockaddr_storage& from,
                                       const sockaddr_storage& to) const noexcept;
  std::chrono::nanoseconds link_delay(const sim_config::link& link) noexcept;
  void reset_connection(sim_socket& s) noexcept;
  std::uint16_t ephemeral_port() noexcept;
  void bind_ephemeral(sim_socket& s) noexcept;
  int bound_socket(bool datagram, const sockaddr* addr, socklen_t len) const noexcept;
  bool autobind_datagram(sim_socket& s) noexcept;

  // Operations: each try_ returns true when `op` is finished (result set).
  bool try_op(sim_socket& s, operation& op) noexcept;
  bool try_recv(sim_socket& s, operation& op, iovec* iov, std::size_t n, int flags) noexcept;
  bool try_send(sim_socket& s, operation& op, const iovec* iov, std::size_t n) noexcept;
  bool try_accept(sim_socket& s, operation& op) noexcept;
  bool try_connect(sim_socket& s, operation& op) noexcept;
  bool try_poll(sim_socket& s, operation& op) noexcept;
  // Datagram sockets' operations.
  bool try_datagram_op(sim_socket& s, operation& op) noexcept;
  bool try_recv_datagram(sim_socket& s, operation& op, iovec* iov, std::size_t n, int flags,
                         msghdr* msg) noexcept;
  bool try_send_datagram(sim_socket& s, operation& op, const iovec* iov, std::size_t n,
                         const sockaddr* to, socklen_t to_len) noexcept;
  void establish(int fd, sim_socket& s, sim_socket& listener, const sockaddr* to,
                 socklen_t len) noexcept;
  std::size_t room(const sim_socket& s) const noexcept;
  bool readable(const sim_socket& s) const noexcept;
  bool writable(const sim_socket& s) const noexcept;
  void complete(operation& op, std::int64_t result) noexcept;
  void refuse_unsimulated(operation& op) noexcept;

  // Progress: sockets whose state changed retry their pending operations.
  void touch(int fd) { dirty_.push_back(fd); }
  void settle() noexcept;
  void deliver_due() noexcept;
  Clock::time_point next_delivery() const noexcept;
  bool chance(double p) noexcept;
  std::uint64_t draw(std::uint64_t n) noexcept;  // uniform in [0, n)

  sim_config config_;
  sim_config::link default_link_;  // config_'s latency, jitter and datagram_loss
  sim_clock clock_;
  std::mt19937_64 rng_;
  detail::eventfd_waker waker_;
  detail::fd_table<std::unique_ptr<sim_socket>> sockets_;
  std::map<std::string, int> bound_;  // address key -> socket
  std::vector<int> dirty_;
  std::vector<int> delivering_;  // sockets with segments or datagrams in flight
  std::vector<int> handshaking_;  // sockets whose connect waits for its round trip
  detail::op_list completed_;
  std::vector<operation*> batch_;
  std::uint16_t next_port_ = 40000;
};

}  // namespace polyloop::backends
