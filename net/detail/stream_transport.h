// The hook between a Stream's buffers and its socket (net/stream.cc). A
// stream without a transport receives and sends on its socket itself; one
// with a transport (TLS) hands it plain bytes both ways, and the transport
// moves its own bytes over the socket the stream lends it (raw_socket), so
// that the stream's close and cancel rules stay the stream's.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "core/task/task.h"
#include "net/tls.h"

namespace polyloop::net::detail {

// The stream's socket, as a transport uses it.
class raw_socket {
 public:
  // Up to len bytes; 0 at end of stream (or when the stream's own close()
  // ended the receive).
  virtual Task<std::size_t> raw_recv(char* buf, std::size_t len) = 0;
  // All of it, or throws std::system_error.
  virtual Task<> raw_send(const char* buf, std::size_t len) = 0;
  // "127.0.0.1:443", for messages.
  virtual std::string peer_name() const = 0;

 protected:
  ~raw_socket() = default;
};

class stream_transport {
 public:
  virtual ~stream_transport() = default;
  // Bytes the stream had received but not read when the transport took
  // over (a ClientHello sent right after a STARTTLS command): its own.
  virtual void received_before(const char* data, std::size_t len) = 0;
  // Before any recv/send: TLS's handshake. Throws TlsError.
  virtual Task<> handshake(raw_socket& io) = 0;
  // Up to len plain bytes into buf (len > 0); 0 at end of stream.
  virtual Task<std::size_t> recv(raw_socket& io, char* buf, std::size_t len) = 0;
  // Takes some of data (len > 0) and sends it: the number of bytes taken.
  virtual Task<std::size_t> send(raw_socket& io, const char* data, std::size_t len) = 0;
  // Before the socket closes: close_notify. `reader_waiting`: a receive of
  // the stream's is in flight, so the peer's answer is not awaited.
  virtual Task<> close(raw_socket& io, bool reader_waiting) = 0;
  virtual const TlsInfo* tls_info() const = 0;
};

// A TLS transport in client or server mode, as `options` say (net/tls.cc).
// `host` is the name connected to (the default server_hostname).
std::unique_ptr<stream_transport> make_tls_transport(const TlsOptions& options,
                                                     const std::string& host);

}  // namespace polyloop::net::detail
