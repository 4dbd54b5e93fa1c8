// TLS for streams (asyncio's ssl= arguments): a TlsContext says who we are
// and whom we trust; TlsOptions carry it into open_connection, start_server
// and Stream::start_tls (net/stream.h).
//
//   auto ctx = pl::net::TlsContext::client();          // system CAs, hostname checked
//   pl::net::Stream s = co_await pl::net::open_connection("example.org", 443, {ctx});
//
//   auto server_ctx = pl::net::TlsContext::server();
//   server_ctx.load_cert_chain("cert.pem", "key.pem");
//   auto server = co_await pl::net::start_server(handle, "", 8443, {server_ctx});
//
// OpenSSL 3 does the cryptography over memory buffers; the bytes travel over
// the stream's own socket operations, so TLS is the same on every backend.
// A TlsContext is a counted handle: copies share one context (and the
// client's session cache). Configure it before its first connection, from
// one thread; then loops on any threads may use it at once.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace polyloop::net {

// The handshake or the record layer failed (asyncio's ssl.SSLError): the
// message names the peer and OpenSSL's reason ("wrong version number").
class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The peer's certificate was refused (ssl.SSLCertVerificationError). The
// message says why and which certificate: "certificate verify failed:
// self-signed certificate (depth 0, subject CN=localhost, issuer
// CN=localhost)", or "hostname mismatch: expected X, certificate is for Y".
class TlsCertificateError : public TlsError {
 public:
  TlsCertificateError(const std::string& what, long verify_code, std::string subject,
                      std::string issuer);
  long verify_code;     // OpenSSL's X509_V_ERR_*
  std::string subject;  // of the certificate refused, "CN=..., O=..."
  std::string issuer;
};

enum class TlsVersion { tls1_2, tls1_3 };

namespace detail {
struct tls_context_state;
struct tls_access;
}

class TlsContext {
 public:
  // A client context: peers are verified against the system's CA store
  // (or the CAs given with load_verify_locations/add_ca_pem, which then
  // replace it), and their certificate must name the host connected to.
  static TlsContext client();
  // A server context: give it a certificate chain and key before serving.
  // Clients are not asked for certificates unless set_verify_peer(true).
  static TlsContext server();

  // The certificate chain (PEM, leaf first) and its private key (PEM,
  // unencrypted), from files or from memory. Throws TlsError naming the
  // file and OpenSSL's reason, or if the key does not match the leaf.
  void load_cert_chain(const std::string& cert_file, const std::string& key_file);
  void use_cert_chain(std::string_view chain_pem, std::string_view key_pem);
  // CAs to trust: a PEM file, a hashed directory (c_rehash), or PEM text.
  void load_verify_locations(const std::string& ca_file, const std::string& ca_dir = "");
  void add_ca_pem(std::string_view pem);
  // Peer verification: on by default for clients; for servers, asks
  // clients for a certificate and refuses those without a valid one.
  void set_verify_peer(bool on);
  // Clients: the certificate must name server_hostname (on by default;
  // only meaningful with verification on).
  void set_check_hostname(bool on);
  // ALPN, in order of preference ("h2", "http/1.1"). A server picks the
  // first of its list the client offers; with none in common, none is
  // negotiated (TlsInfo::alpn is "").
  void set_alpn_protocols(const std::vector<std::string>& protocols);
  // The oldest protocol version accepted (TLS 1.2 by default).
  void set_minimum_version(TlsVersion v);
  // Servers (SNI): a client asking for `server_name` gets `ctx`'s
  // certificate instead of this one's (exact names, case-insensitive).
  void add_server_name(const std::string& server_name, const TlsContext& ctx);

  bool is_server() const;

 private:
  friend struct detail::tls_access;
  std::shared_ptr<detail::tls_context_state> s_;
};

// How one connection uses a context.
struct TlsOptions {
  // Not explicit: a context alone, or {context, "name"}, is options.
  TlsOptions(TlsContext ctx, std::string hostname = {})  // NOLINT(google-explicit-constructor)
      : context(std::move(ctx)), server_hostname(std::move(hostname)) {}

  TlsContext context;
  // Clients: the name sent as SNI and checked against the certificate;
  // "" means the host given to open_connection (start_tls needs it given,
  // unless hostname checking is off).
  std::string server_hostname;
  // asyncio's ssl_handshake_timeout and ssl_shutdown_timeout.
  std::chrono::milliseconds handshake_timeout{60'000};
  std::chrono::milliseconds shutdown_timeout{30'000};
};

// What a handshake settled (Stream::tls_info()).
struct TlsInfo {
  std::string version;       // "TLSv1.3"
  std::string cipher;        // "TLS_AES_256_GCM_SHA384"
  std::string alpn;          // "" when none was negotiated
  std::string server_name;   // SNI: sent (client) or received (server)
  std::string peer_subject;  // "" when the peer sent no certificate
  bool session_reused = false;
};

}  // namespace polyloop::net
