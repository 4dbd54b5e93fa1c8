// Datagram endpoints (asyncio's loop.create_datagram_endpoint) over UDP or
// Unix datagram sockets, and fd passing over Unix sockets (SCM_RIGHTS).
//
//   auto server = co_await pl::net::create_datagram_endpoint(pl::net::Address{"127.0.0.1", 0},
//                                                           std::nullopt);
//   pl::net::Datagram d = co_await server.recvfrom();
//   co_await server.sendto("resp:" + d.data, d.sender);
//
// Where asyncio calls a protocol's datagram_received and error_received,
// an endpoint is awaited instead: recvfrom() returns the next datagram, and
// an error the socket reports (an ICMP "port unreachable" for a connected
// endpoint, ECONNREFUSED) is thrown as std::system_error by the recv, send
// or sendto awaited then; the endpoint stays usable afterwards, as asyncio's
// transport does after error_received. Everything runs on the loop that
// made the endpoint, over core/io/io.h operations, so on every backend.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/task/task.h"
#include "net/dns.h"

namespace polyloop::net {

// asyncio's create_datagram_endpoint keyword arguments of the same names.
struct DatagramOptions {
  // AF_INET, AF_INET6 or AF_UNIX; AF_UNSPEC: taken from the addresses. With
  // neither address given, a family is needed (the socket is then unbound).
  int family = AF_UNSPEC;
  bool reuse_port = false;       // SO_REUSEPORT before bind: several endpoints on one port
  bool allow_broadcast = false;  // SO_BROADCAST: sendto a broadcast address allowed
};

// One datagram received.
struct Datagram {
  std::string data;
  Address sender;  // empty (to_string() "(unnamed)") from an unbound Unix socket
  // The datagram was longer than the size asked for (MSG_TRUNC): `data`
  // holds its first bytes and the rest is lost, as with recvfrom(2).
  bool truncated = false;
};

// What recvfrom_into() received into the caller's buffer.
struct DatagramInfo {
  std::size_t size = 0;  // bytes written to the buffer
  Address sender;
  bool truncated = false;  // as Datagram::truncated
};

// A receive or send that was pending when its endpoint was closed (the
// task itself was not cancelled): asyncio's protocol would see
// connection_lost() instead.
class EndpointClosedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
struct datagram_state;
}

// A counted handle: copies share one socket, closed by close() or when the
// last handle goes.
class DatagramEndpoint {
 public:
  static constexpr std::size_t default_max_size = 65536;  // any UDP datagram fits

  DatagramEndpoint() = default;
  // Adopts a datagram socket (asyncio's create_datagram_endpoint(sock=...)),
  // on the running loop: it becomes the endpoint's (closed with it), made
  // non-blocking; connected mode if it has a peer. std::invalid_argument for
  // a socket that is not SOCK_DGRAM.
  explicit DatagramEndpoint(int fd);

  // The next datagram, at most max_size bytes of it (see
  // Datagram::truncated). On a connected endpoint only the peer's arrive.
  Task<Datagram> recvfrom(std::size_t max_size = default_max_size);
  // The same into the caller's buffer, allocating nothing for the data.
  Task<DatagramInfo> recvfrom_into(std::span<char> out);
  // Sends one datagram to `to` (a numeric host: "127.0.0.1", "::1", or a
  // Unix path). On a connected endpoint `to` must be empty or the remote
  // address (std::invalid_argument otherwise, as asyncio's ValueError).
  // Throws std::logic_error after close(), std::system_error for what the
  // kernel refuses (EMSGSIZE for a datagram too long, ECONNREFUSED, ...).
  // `data` is sent from where it is: keep it valid until the task is done
  // (`co_await ep.sendto(...)` does); `to` is converted at the call.
  Task<> sendto(std::string_view data, const Address& to);

  // Connected mode (a remote address was given): the next datagram from the
  // peer, and one datagram to it. send() on an unconnected endpoint throws
  // std::logic_error.
  Task<Datagram> recv(std::size_t max_size = default_max_size);
  Task<> send(std::string_view data);

  // Closes the socket: receives and sends pending then end with
  // EndpointClosedError. Idempotent.
  void close();
  // Until the socket is closed.
  Task<> wait_closed();
  bool is_closing() const;

  // The bound address (port 0 in the request: the one the kernel chose).
  Address local_address() const;
  // The peer of a connected endpoint.
  std::optional<Address> remote_address() const;
  int fd() const;

 private:
  friend Task<DatagramEndpoint> create_datagram_endpoint(std::optional<Address>,
                                                         std::optional<Address>, DatagramOptions);
  std::shared_ptr<detail::datagram_state> s_;
};

// Makes a datagram socket bound to `local` (if given; port 0: any free
// port) and connected to `remote` (if given), as asyncio does: a host name
// is resolved off the loop's thread, and the first (local, remote) pair of
// one family that binds and connects wins. An address with a path is a Unix
// datagram socket (a stale socket file at `local`'s path is removed first).
// Errors: std::invalid_argument for neither address nor family, or for
// addresses of no common family; std::system_error naming the call and the
// address for what the kernel refuses (bind's EADDRINUSE, ...).
Task<DatagramEndpoint> create_datagram_endpoint(std::optional<Address> local,
                                                std::optional<Address> remote,
                                                DatagramOptions options = {});

// An owned file descriptor (closed when it goes), as recv_fds() hands them out.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) noexcept : fd_(fd) {}
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.release()) {}
  OwnedFd& operator=(OwnedFd&& o) noexcept;
  ~OwnedFd();
  int get() const noexcept { return fd_; }
  // Gives up ownership: the caller closes it.
  int release() noexcept;

 private:
  int fd_ = -1;
};

// What recv_fds() received.
struct ReceivedFds {
  std::string data;
  std::vector<OwnedFd> fds;  // close-on-exec (MSG_CMSG_CLOEXEC)
  // More fds came than max_fds (MSG_CTRUNC): those that did not fit were
  // closed (by the kernel, or here), never left open.
  bool fds_truncated = false;
};

// The most fds one message carries (the kernel's SCM_MAX_FD).
inline constexpr std::size_t max_fds_per_message = 253;

// Sends `data` (at least one byte: a stream socket carries fds only with
// data) and, with its first byte, duplicates of `fds` (SCM_RIGHTS) over the
// Unix socket `sock` (stream or datagram); the caller's fds stay open.
// Returns the bytes sent (the fds went with the first). Never raises
// SIGPIPE. std::invalid_argument for empty data or too many fds.
Task<std::size_t> send_fds(int sock, std::string_view data, std::span<const int> fds);
// Receives up to max_bytes of data and up to max_fds fds sent with them.
// Data "" and no fds: the peer closed the connection.
Task<ReceivedFds> recv_fds(int sock, std::size_t max_bytes, std::size_t max_fds);

}  // namespace polyloop::net
