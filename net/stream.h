// TCP and Unix-domain streams and servers: asyncio's streams API.
//
//   pl::net::Stream s = co_await pl::net::open_connection("127.0.0.1", 8080);
//   s.write("hello\n");
//   co_await s.drain();
//   std::string line = co_await s.read_until("\n");
//   s.close();
//   co_await s.wait_closed();
//
//   auto server = co_await pl::net::start_server(handle, "127.0.0.1", 0);
//   std::uint16_t port = server.port();       // port 0: the one bound
//   co_await server.serve_forever();
//
// A Stream is a counted handle (copies share one connection, as asyncio's
// reader and writer share a transport); its socket closes when close() has
// flushed what was written, or when the last handle goes. Everything runs on
// the loop that made it, over core/io/io.h operations, so on every backend.
// Errors are std::system_error naming the call and the peer ("connect
// 127.0.0.1:1: Connection refused"), or the types below.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/errors/errors.h"
#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "core/task/task.h"
#include "net/dns.h"
#include "net/tls.h"

namespace polyloop::net {

// EOF came before read_exactly() or read_until() had what they need
// (asyncio.IncompleteReadError). `partial` holds the bytes that did come.
class IncompleteReadError : public std::runtime_error {
 public:
  IncompleteReadError(std::string partial_bytes, std::size_t expected_bytes);
  std::string partial;
  std::size_t expected;  // 0 for read_until: "the separator"
};

// read_until() found no separator within its limit (asyncio's
// LimitOverrunError); the bytes stay buffered.
class LimitOverrunError : public std::runtime_error {
 public:
  LimitOverrunError(std::size_t limit, std::size_t buffered);
  std::size_t consumed;  // bytes buffered when the limit was hit
};

namespace detail {
struct stream_state;
struct server_state;
enum class stream_end : std::uint8_t { socket, read_pipe, write_pipe };
}  // namespace detail

class Stream {
 public:
  // Buffered writes above high_water make drain() wait until they are down
  // to low_water (asyncio's defaults).
  static constexpr std::size_t default_high_water = 64 * 1024;
  static constexpr std::size_t default_low_water = 16 * 1024;
  // What was written is still sent when the loop shuts down: the writer
  // task, cancelled by cancel_all_tasks() (run() does that before closing),
  // goes on sending for at most this long; bytes the peer has not taken by
  // then (or that a failure kept from it) are reported lost through the
  // loop's exception handler, with their number, never dropped silently.
  static constexpr std::chrono::milliseconds shutdown_flush_timeout{5000};

  Stream() = default;
  // Adopts a connected socket (non-blocking or not), on the running loop.
  explicit Stream(int fd);

  // Up to n bytes: what is buffered, else one receive. "" at end of stream.
  Task<std::string> read(std::size_t n = 64 * 1024);
  // The same into the caller's buffer, allocating nothing: the number of
  // bytes read, 0 at end of stream (or for an empty `out`).
  Task<std::size_t> read_into(std::span<char> out);
  // What is buffered, else one receive, lent without a copy: a view of the
  // bytes in the stream's own input buffer, taken as read. Valid until the
  // next read of any kind or close() of this stream (the buffer is then
  // reused); copy what must outlive that. Empty at end of stream.
  Task<std::span<const char>> read_some();
  // Exactly n bytes, or IncompleteReadError at end of stream.
  Task<std::string> read_exactly(std::size_t n);
  // Up to and including `separator`; IncompleteReadError at end of stream,
  // LimitOverrunError if `limit` bytes come without it.
  Task<std::string> read_until(std::string_view separator = "\n", std::size_t limit = 64 * 1024);
  // True once the peer closed its side and the buffer is empty.
  bool at_eof() const;

  // Queues data and starts sending; never waits. Throws std::system_error if
  // the connection already failed, std::logic_error after close().
  void write(std::string_view data);
  // The same, taking the string (an rvalue std::string only: a literal or
  // an lvalue goes to the overload above): when nothing is queued, its bytes
  // are sent from where they are (moved into the send queue, not copied)
  // and freed once sent. For a buffer the caller has no more use for.
  template <class String>
    requires std::same_as<String, std::string>
  void write(String&& data) {
    write_owned(std::move(data));
  }
  // Waits while more than the high-water mark is buffered; rethrows a
  // failure of the connection (reset by peer, broken pipe).
  Task<> drain();
  // Bytes written but not yet handed to the kernel.
  std::size_t write_buffer_size() const;
  void set_write_buffer_limits(std::size_t high, std::size_t low);
  // Half-close: after what is buffered, shut the sending side down.
  void write_eof();

  // Sends what is buffered, then closes the socket. Idempotent. A read
  // pending in another task then ends at end of stream ("", 0, or
  // IncompleteReadError with what came), as asyncio's reader sees EOF.
  void close();
  // Until the socket is closed; rethrows a failure to send what was written.
  Task<> wait_closed();
  bool is_closing() const;

  Address peer_address() const;
  Address local_address() const;
  void set_nodelay(bool on = true);
  int fd() const;

  // TLS (net/tls.h, docs/tls.md) -----------------------------------------------
  // Upgrades this connection to TLS (STARTTLS), as client or server as
  // options.context says: what was written goes first in the clear, then
  // the handshake, within options.handshake_timeout. Bytes the peer sent
  // after its last plain ones (already buffered) are TLS's. Throws
  // TlsError / TlsCertificateError (the stream then only closes), and
  // std::logic_error if a read is in progress or the stream is closed.
  // After it, the same API carries plain bytes over TLS; write_eof() throws
  // (TLS has no half-close) and close() sends close_notify first.
  Task<> start_tls(TlsOptions options);
  // What the handshake settled; nullptr for a plain stream.
  const TlsInfo* tls_info() const;

 private:
  friend Stream connect_read_pipe(int fd);
  friend Stream connect_write_pipe(int fd);
  explicit Stream(std::shared_ptr<detail::stream_state> state);
  void write_owned(std::string&& data);
  std::shared_ptr<detail::stream_state> s_;
};

// A Stream over one end of a pipe, or another fd that is not a socket (a
// FIFO, a terminal, a subprocess's pipe, the process's stdin or stdout):
// asyncio's connect_read_pipe / connect_write_pipe, with the Stream API. It
// takes the fd (closing the Stream closes it) and makes it non-blocking,
// which its other users share (as in asyncio). Reads and writes are read(2)
// and write(2) operations on the loop's backend. The read end only reads
// (write() is a std::logic_error), the write end only writes; write_eof()
// on the write end closes it once what was written is sent (the reader
// then sees EOF). A write to a pipe whose reader has gone fails with
// std::system_error EPIPE (from drain(), wait_closed() or the next
// write()), never SIGPIPE. peer_address, local_address and set_nodelay
// throw std::logic_error. A regular file is refused (std::invalid_argument):
// it is never "not ready" (use the file operations for it).
Stream connect_read_pipe(int fd);
Stream connect_write_pipe(int fd);

// How open_connection tries the addresses a name resolves to (asyncio's
// open_connection arguments of the same names).
struct ConnectOptions {
  // Happy eyeballs (RFC 8305): when the address being tried has not
  // connected within this delay (250 ms is the RFC's advice), the next one
  // is tried alongside it; the first to connect wins and the others are
  // cancelled. Without it, one address after another.
  std::optional<std::chrono::milliseconds> happy_eyeballs_delay;
  // Alternate the address families, taking this many of the first family
  // first; 1 by default with happy_eyeballs_delay, else 0 (keep the order).
  std::optional<int> interleave;
};

// Connects over TCP (IPv4 or IPv6). A name is resolved off the loop's
// thread (net/dns.h), then its addresses are tried as `options` say. When
// all fail: the one error, or "Multiple exceptions: ..." naming each.
Task<Stream> open_connection(std::string host, std::uint16_t port, ConnectOptions options = {});
// The same over addresses already resolved (getaddrinfo's, in the order to
// try them).
Task<Stream> open_connection(std::vector<AddrInfo> addresses, ConnectOptions options = {});
Task<Stream> open_unix_connection(std::string path);
// The same, then TLS (Stream::start_tls) with server_hostname defaulting to
// `host`; on any failure the socket is closed before the error is thrown.
Task<Stream> open_connection(std::string host, std::uint16_t port, TlsOptions tls,
                             ConnectOptions options = {});

using ConnectionHandler = std::function<Task<>(Stream)>;

// How start_server binds and listens: asyncio's start_server arguments of
// the same names.
struct ServerOptions {
  int backlog = 511;
  // SO_REUSEADDR: bind a port whose earlier connections linger in
  // TIME_WAIT (asyncio's default on Unix).
  bool reuse_address = true;
  // SO_REUSEPORT: several listening sockets (of this process or another of
  // the same user) share the port, and the kernel spreads new connections
  // among them by a hash of the client's address: one server per loop, one
  // loop per core (docs/api.md, "One loop per core"). Every socket on the
  // port must set it; a bind without it then fails with EADDRINUSE.
  bool reuse_port = false;
};

class Server {
 public:
  Server() = default;
  // Stops accepting and closes the listening socket; connections already
  // accepted go on. Idempotent.
  void close();
  // Until the accept loop has ended.
  Task<> wait_closed();
  // Until close() (or a cancel of the awaiting task, which closes it).
  Task<> serve_forever();
  bool is_serving() const;
  // The bound address (the first, if several); port() is its port (useful
  // after binding port 0). addresses(): every socket's (asyncio's sockets).
  Address address() const;
  std::vector<Address> addresses() const;
  std::uint16_t port() const;
  // Connections currently being handled.
  std::size_t active_connections() const;

 private:
  friend Task<Server> start_server(ConnectionHandler, std::string, std::uint16_t, int);
  friend Task<Server> start_unix_server(ConnectionHandler, std::string, int);
  friend Task<Server> start_server(ConnectionHandler, std::string, std::uint16_t, ServerOptions);
  friend Task<Server> start_server_from_socket(ConnectionHandler, int, int);
  std::vector<std::shared_ptr<detail::server_state>> listeners_;
};

// Listens on host:port (port 0: any free port) and runs handler(stream) as
// a task for each connection. A name is resolved off the loop's thread and
// every address it resolves to is listened on, all on one port (host ""
// means every interface: 0.0.0.0 and "::"; with port 0, should another
// program take the port the first socket got on another address meanwhile,
// all are bound again on a new port, up to 8 times). Running out of descriptors (EMFILE, ENFILE)
// does not stop the server: it is reported once through the loop's
// exception handler, clients waiting meanwhile are accepted and closed at
// once (with a spare descriptor kept for that, as libuv does), and
// accepting resumes when descriptors free up.
Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          int backlog = 511);
// The same with ServerOptions (reuse_port, reuse_address, backlog).
Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          ServerOptions options);
Task<Server> start_unix_server(ConnectionHandler handler, std::string path, int backlog = 511);
// A Server on a socket the caller made (asyncio's start_server(sock=...)):
// a TCP or Unix-domain stream socket, listening, or bound (then it listens
// with `backlog`). It is made non-blocking and the Server owns it from then
// on (close() closes it). Refused, the fd left to the caller:
// std::invalid_argument for an fd that is not a socket, a socket that is not
// SOCK_STREAM, one that is connected or not bound; std::system_error EBADF
// for a closed fd. Not on the sim backend (std::invalid_argument): its
// sockets exist only through start_server.
Task<Server> start_server_from_socket(ConnectionHandler handler, int fd, int backlog = 511);
// The same over TLS: each connection's handshake runs (within
// tls.handshake_timeout) before handler sees it. A client that fails it
// (bad certificate, garbage, a stall, a reset) is closed and not reported:
// it is the client's failure, not the server's (asyncio logs it only in
// debug mode).
Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          TlsOptions tls, int backlog = 511);
Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          TlsOptions tls, ServerOptions options);

}  // namespace polyloop::net
