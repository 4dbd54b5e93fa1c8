#include "net/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <strings.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "core/future/future.h"
#include "core/loop/event_loop.h"
#include "net/detail/stream_transport.h"

namespace polyloop::net {

TlsCertificateError::TlsCertificateError(const std::string& what, long code, std::string subj,
                                         std::string iss)
    : TlsError(what), verify_code(code), subject(std::move(subj)), issuer(std::move(iss)) {}

namespace detail {

namespace {

// OpenSSL's error queue, drained (so nothing leaks to the next connection):
// "error:0A00010B:SSL routines::wrong version number", joined by "; ".
std::string drain_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

[[noreturn]] void throw_openssl(const std::string& what) {
  std::string why = drain_errors();
  throw TlsError(what + (why.empty() ? "" : ": " + why));
}

struct bio_ptr {
  BIO* b;
  explicit bio_ptr(std::string_view pem) : b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))) {
    if (b == nullptr) throw_openssl("BIO_new_mem_buf");
  }
  ~bio_ptr() { BIO_free(b); }
};

std::string name_of(const X509_NAME* name) {
  if (name == nullptr) return "";
  BIO* b = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(b, name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  // XN_FLAG_ONELINE prints "CN = x, O = y"; say "CN=x, O=y".
  std::string compact;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out.compare(i, 3, " = ") == 0) {
      compact += '=';
      i += 2;
    } else {
      compact += out[i];
    }
  }
  return compact;
}

// The names a certificate is for: its subjectAltName DNS and IP entries,
// else its CN. "localhost, 127.0.0.1".
std::string names_of(X509* cert) {
  std::string out;
  auto add = [&](std::string s) { out += (out.empty() ? "" : ", ") + s; };
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type == GEN_DNS) {
        const unsigned char* d = ASN1_STRING_get0_data(g->d.dNSName);
        add(std::string(reinterpret_cast<const char*>(d),
                        static_cast<std::size_t>(ASN1_STRING_length(g->d.dNSName))));
      } else if (g->type == GEN_IPADD) {
        int len = ASN1_STRING_length(g->d.iPAddress);
        const unsigned char* d = ASN1_STRING_get0_data(g->d.iPAddress);
        char buf[INET6_ADDRSTRLEN] = {};
        if (len == 4 || len == 16) ::inet_ntop(len == 4 ? AF_INET : AF_INET6, d, buf, sizeof buf);
        add(buf);
      }
    }
    GENERAL_NAMES_free(sans);
  }
  if (out.empty()) {
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0) {
      add(cn);
    }
  }
  return out.empty() ? "(no name)" : out;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

int connection_index();

}  // namespace

struct tls_context_state {
  SSL_CTX* ctx = nullptr;
  bool server = false;
  bool ca_given = false;
  bool defaults_loaded = false;
  bool verify_peer = false;
  bool check_hostname = false;
  std::vector<unsigned char> alpn_wire;  // length-prefixed, as ALPN sends it
  std::map<std::string, std::shared_ptr<tls_context_state>> server_names;  // lower-case
  std::map<std::string, SSL_SESSION*> sessions;  // clients: by server name
  // Loops on several threads may share a context: what connections change
  // in it (the sessions, the CA store loaded once) is guarded.
  std::mutex connections_mutex;

  explicit tls_context_state(bool is_server) : server(is_server) {
    ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (ctx == nullptr) throw_openssl("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // No renegotiation (TLS 1.2): a record layer over memory buffers never
    // has to write in the middle of a read for it.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    // Writes go whole (SSL_write takes everything into the memory buffer).
    SSL_CTX_clear_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (server) {
      SSL_CTX_set_tlsext_servername_callback(ctx, &on_server_name);
      SSL_CTX_set_tlsext_servername_arg(ctx, this);
    } else {
      verify_peer = check_hostname = true;
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(ctx, &on_new_session);
    }
    apply_verify();
  }
  ~tls_context_state() {
    for (auto& [name, sess] : sessions) SSL_SESSION_free(sess);
    SSL_CTX_free(ctx);
  }
  tls_context_state(const tls_context_state&) = delete;
  tls_context_state& operator=(const tls_context_state&) = delete;

  void apply_verify() {
    int mode = SSL_VERIFY_NONE;
    if (verify_peer) mode = server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER;
    SSL_CTX_set_verify(ctx, mode, &on_verify);
  }

  // The system's CAs, unless CAs were given: at the first connection, so
  // that giving CAs any time before replaces them.
  void ready_for_connections() {
    std::lock_guard<std::mutex> lock(connections_mutex);
    if (verify_peer && !ca_given && !defaults_loaded) {
      ERR_clear_error();
      if (SSL_CTX_set_default_verify_paths(ctx) != 1) throw_openssl("loading the system's CA store");
      defaults_loaded = true;
    }
  }

  static int on_verify(int ok, X509_STORE_CTX* store);
  static int on_server_name(SSL* ssl, int* alert, void* arg);
  static int on_new_session(SSL* ssl, SSL_SESSION* session);
  static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void* arg) {
    auto* self = static_cast<tls_context_state*>(arg);
    (void)ssl;
    unsigned char* chosen = nullptr;
    if (SSL_select_next_proto(&chosen, outlen, self->alpn_wire.data(),
                              static_cast<unsigned int>(self->alpn_wire.size()), in,
                              inlen) != OPENSSL_NPN_NEGOTIATED) {
      return SSL_TLSEXT_ERR_NOACK;
    }
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
  }
};

struct tls_access {
  static tls_context_state& state(const TlsContext& c) {
    if (!c.s_) {
      throw std::logic_error(
          "this TlsContext is empty: make it with TlsContext::client() or TlsContext::server()");
    }
    return *c.s_;
  }
  static std::shared_ptr<tls_context_state> shared(const TlsContext& c) {
    state(c);
    return c.s_;
  }
  static TlsContext make(bool server) {
    TlsContext c;
    c.s_ = std::make_shared<tls_context_state>(server);
    return c;
  }
};

namespace {

// One connection: the SSL object over two memory buffers, `net_in` (what
// came from the socket) and `net_out` (what must go to it).
class tls_transport final : public stream_transport {
 public:
  tls_transport(const TlsOptions& options, const std::string& host)
      : ctx_(tls_access::shared(options.context)), host_(options.server_hostname) {
    if (host_.empty()) host_ = host;
    tls_context_state& c = *ctx_;
    if (!c.server && c.verify_peer && c.check_hostname && host_.empty()) {
      throw std::invalid_argument(
          "TLS: no server_hostname to check the certificate against; give "
          "TlsOptions::server_hostname, or turn hostname checking off "
          "(TlsContext::set_check_hostname(false))");
    }
    c.ready_for_connections();
    ssl_ = SSL_new(c.ctx);
    if (ssl_ == nullptr) throw_openssl("SSL_new");
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    if (in == nullptr || out == nullptr) {
      BIO_free(in);
      BIO_free(out);
      throw_openssl("BIO_new");
    }
    SSL_set_bio(ssl_, in, out);
    net_in_ = in;
    net_out_ = out;
    SSL_set_ex_data(ssl_, connection_index(), this);
    if (c.server) {
      SSL_set_accept_state(ssl_);
      return;
    }
    SSL_set_connect_state(ssl_);
    if (!host_.empty() && !is_ip_literal(host_)) SSL_set_tlsext_host_name(ssl_, host_.c_str());
    if (c.verify_peer && c.check_hostname) {
      if (is_ip_literal(host_)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host_.c_str());
      } else {
        SSL_set1_host(ssl_, host_.c_str());
      }
    }
    std::lock_guard<std::mutex> lock(c.connections_mutex);
    auto it = c.sessions.find(host_);
    if (it != c.sessions.end()) SSL_set_session(ssl_, it->second);
  }
  ~tls_transport() override { SSL_free(ssl_); }

  void received_before(const char* data, std::size_t len) override {
    if (len > 0) BIO_write(net_in_, data, static_cast<int>(len));
  }

  Task<> handshake(raw_socket& io) override {
    while (true) {
      ERR_clear_error();
      int r = SSL_do_handshake(ssl_);
      int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ) {
        std::exception_ptr failure = handshake_failure(io, err);
        try {
          co_await flush(io);  // the alert that tells the peer why
        } catch (...) {
        }
        std::rethrow_exception(failure);
      }
      co_await flush(io);
      if (err == SSL_ERROR_NONE) break;
      if (co_await receive_more(io) == 0) {
        throw TlsError("TLS handshake with " + io.peer_name() +
                       ": the peer closed the connection before the handshake completed");
      }
    }
    ready_ = true;
    record_info();
  }

  Task<std::size_t> recv(raw_socket& io, char* buf, std::size_t len) override {
    while (true) {
      if (peer_closed_) co_return 0;
      ERR_clear_error();
      std::size_t got = 0;
      int r = SSL_read_ex(ssl_, buf, len, &got);
      int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      // A post-handshake message may have needed an answer (KeyUpdate).
      if (BIO_ctrl_pending(net_out_) > 0 && !flushing_) co_await flush(io);
      if (err == SSL_ERROR_NONE) co_return got;
      if (err == SSL_ERROR_ZERO_RETURN) {  // close_notify
        peer_closed_ = true;
        co_return 0;
      }
      if (err != SSL_ERROR_WANT_READ) throw failure(io, "read from", err);
      if (co_await receive_more(io) == 0) {
        // End of stream without close_notify: end of stream all the same,
        // as asyncio reports it (docs/tls.md, "Closing").
        peer_closed_ = true;
        co_return 0;
      }
    }
  }

  Task<std::size_t> send(raw_socket& io, const char* data, std::size_t len) override {
    // A piece at a time, so that drain() sees progress on big writes.
    constexpr std::size_t piece = 64 * 1024;
    len = std::min(len, piece);
    ERR_clear_error();
    std::size_t written = 0;
    int r = SSL_write_ex(ssl_, data, len, &written);
    if (r != 1) throw failure(io, "write to", SSL_get_error(ssl_, r));
    co_await flush(io);
    co_return written;
  }

  Task<> close(raw_socket& io, bool reader_waiting) override {
    if (!ready_ || broken_) co_return;
    ERR_clear_error();
    int r = SSL_shutdown(ssl_);  // queues close_notify
    if (r < 0) {
      drain_errors();
      co_return;
    }
    co_await flush(io);
    if (r == 1 || reader_waiting || peer_closed_) co_return;
    // Wait for the peer's close_notify (what comes before it is dropped).
    while (true) {
      ERR_clear_error();
      char sink[4096];
      std::size_t got = 0;
      int rr = SSL_read_ex(ssl_, sink, sizeof sink, &got);
      if (rr == 1) continue;
      int err = SSL_get_error(ssl_, rr);
      if (err != SSL_ERROR_WANT_READ) {
        drain_errors();
        co_return;
      }
      if (co_await receive_more(io) == 0) co_return;
    }
  }

  const TlsInfo* tls_info() const override { return ready_ ? &info_ : nullptr; }

  // For the verify callback.
  void note_verify_failure(int code, X509* cert, int depth) {
    if (verify_code_ != 0) return;  // the first reason is the one to tell
    verify_code_ = code;
    verify_depth_ = depth;
    if (cert != nullptr) {
      verify_subject_ = name_of(X509_get_subject_name(cert));
      verify_issuer_ = name_of(X509_get_issuer_name(cert));
      verify_names_ = names_of(cert);
    }
  }
  tls_context_state& context() { return *ctx_; }
  const std::string& host() const { return host_; }
  void set_server_name(std::string name) { info_.server_name = std::move(name); }

 private:
  // One receive from the socket into net_in; 0 at end of stream.
  Task<std::size_t> receive_more(raw_socket& io) {
    constexpr std::size_t chunk = 64 * 1024;
    if (!in_buf_) in_buf_.reset(new char[chunk]);
    std::size_t n = co_await io.raw_recv(in_buf_.get(), chunk);
    if (n > 0) BIO_write(net_in_, in_buf_.get(), static_cast<int>(n));
    co_return n;
  }

  // Sends what net_out holds, one sender at a time: a second waits for the
  // first and then sends what is left.
  Task<> flush(raw_socket& io) {
    while (flushing_) {
      Future<> done = get_running_loop().create_future<>();
      flush_waiters_.push_back(done);
      co_await done;
    }
    flushing_ = true;
    std::exception_ptr failure;
    try {
      while (std::size_t pending = BIO_ctrl_pending(net_out_)) {
        out_buf_.resize(pending);
        int n = BIO_read(net_out_, out_buf_.data(), static_cast<int>(pending));
        if (n <= 0) break;
        co_await io.raw_send(out_buf_.data(), static_cast<std::size_t>(n));
      }
    } catch (...) {
      failure = std::current_exception();
      broken_ = true;
    }
    flushing_ = false;
    std::vector<Future<>> waiting = std::move(flush_waiters_);
    flush_waiters_.clear();
    for (Future<>& f : waiting) {
      if (!f.done()) f.set_result();
    }
    if (failure) std::rethrow_exception(failure);
  }

  std::exception_ptr handshake_failure(raw_socket& io, int err) {
    broken_ = true;
    std::string who = "TLS handshake with " + io.peer_name();
    if (verify_code_ != 0) {
      std::string reason = X509_verify_cert_error_string(verify_code_);
      std::string what;
      if (verify_code_ == X509_V_ERR_HOSTNAME_MISMATCH || verify_code_ == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        what = who + ": certificate verify failed: hostname mismatch: expected " + host_ +
               ", certificate is for " + verify_names_ + " (subject " + verify_subject_ + ")";
      } else {
        what = who + ": certificate verify failed: " + reason + " (depth " +
               std::to_string(verify_depth_) + ", subject " + verify_subject_ + ", issuer " +
               verify_issuer_ + ")";
        if (verify_code_ == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
            verify_code_ == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
            verify_code_ == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY) {
          what += "; to trust it, give its CA to TlsContext::load_verify_locations or add_ca_pem";
        }
      }
      drain_errors();
      return std::make_exception_ptr(
          TlsCertificateError(what, verify_code_, verify_subject_, verify_issuer_));
    }
    return std::make_exception_ptr(failure(io, "handshake with", err));
  }

  TlsError failure(raw_socket& io, const char* during, int err) {
    broken_ = true;
    std::string what = std::string("TLS ") + during + " " + io.peer_name() + ": ";
    std::string why = drain_errors();
    if (!why.empty()) return TlsError(what + why);
    if (err == SSL_ERROR_SYSCALL) return TlsError(what + "the connection failed (SSL_ERROR_SYSCALL)");
    return TlsError(what + "OpenSSL error " + std::to_string(err));
  }

  void record_info() {
    info_.version = SSL_get_version(ssl_);
    info_.cipher = SSL_get_cipher_name(ssl_);
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
    info_.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    if (!ctx_->server) info_.server_name = is_ip_literal(host_) ? "" : host_;
    if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
      info_.peer_subject = name_of(X509_get_subject_name(peer));
    }
    info_.session_reused = SSL_session_reused(ssl_) == 1;
  }

  std::shared_ptr<tls_context_state> ctx_;
  std::string host_;
  SSL* ssl_ = nullptr;
  BIO* net_in_ = nullptr;   // owned by ssl_
  BIO* net_out_ = nullptr;  // owned by ssl_
  std::unique_ptr<char[]> in_buf_;
  std::string out_buf_;
  bool flushing_ = false;
  std::vector<Future<>> flush_waiters_;
  bool ready_ = false;
  bool broken_ = false;
  bool peer_closed_ = false;
  TlsInfo info_;
  long verify_code_ = 0;
  int verify_depth_ = 0;
  std::string verify_subject_, verify_issuer_, verify_names_;
};

int connection_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

tls_transport* connection_of(SSL* ssl) {
  return static_cast<tls_transport*>(SSL_get_ex_data(ssl, connection_index()));
}

}  // namespace

int tls_context_state::on_verify(int ok, X509_STORE_CTX* store) {
  if (ok == 1) return 1;
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (tls_transport* conn = ssl != nullptr ? connection_of(ssl) : nullptr) {
    conn->note_verify_failure(X509_STORE_CTX_get_error(store), X509_STORE_CTX_get_current_cert(store),
                              X509_STORE_CTX_get_error_depth(store));
  }
  return 0;
}

int tls_context_state::on_server_name(SSL* ssl, int*, void* arg) {
  auto* self = static_cast<tls_context_state*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (tls_transport* conn = connection_of(ssl)) conn->set_server_name(lower);
  auto it = self->server_names.find(lower);
  if (it != self->server_names.end()) SSL_set_SSL_CTX(ssl, it->second->ctx);
  return SSL_TLSEXT_ERR_OK;
}

int tls_context_state::on_new_session(SSL* ssl, SSL_SESSION* session) {
  tls_transport* conn = connection_of(ssl);
  if (conn == nullptr || conn->host().empty()) return 0;
  std::lock_guard<std::mutex> lock(conn->context().connections_mutex);
  auto& sessions = conn->context().sessions;
  auto [it, inserted] = sessions.try_emplace(conn->host(), session);
  if (!inserted) {
    SSL_SESSION_free(it->second);
    it->second = session;
  }
  return 1;  // the cache keeps the reference
}

std::unique_ptr<stream_transport> make_tls_transport(const TlsOptions& options,
                                                     const std::string& host) {
  return std::make_unique<tls_transport>(options, host);
}

}  // namespace detail

// --- TlsContext -------------------------------------------------------------------

TlsContext TlsContext::client() { return detail::tls_access::make(false); }
TlsContext TlsContext::server() { return detail::tls_access::make(true); }

bool TlsContext::is_server() const { return detail::tls_access::state(*this).server; }

void TlsContext::load_cert_chain(const std::string& cert_file, const std::string& key_file) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(c.ctx, cert_file.c_str()) != 1) {
    detail::throw_openssl("TLS: cannot load the certificate chain " + cert_file);
  }
  if (SSL_CTX_use_PrivateKey_file(c.ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    detail::throw_openssl("TLS: cannot load the private key " + key_file);
  }
  if (SSL_CTX_check_private_key(c.ctx) != 1) {
    detail::throw_openssl("TLS: the private key " + key_file + " does not match the certificate " +
                          cert_file);
  }
}

void TlsContext::use_cert_chain(std::string_view chain_pem, std::string_view key_pem) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  ERR_clear_error();
  detail::bio_ptr chain(chain_pem);
  X509* leaf = PEM_read_bio_X509(chain.b, nullptr, nullptr, nullptr);
  if (leaf == nullptr) detail::throw_openssl("TLS: no PEM certificate in the chain given");
  int ok = SSL_CTX_use_certificate(c.ctx, leaf);
  X509_free(leaf);
  if (ok != 1) detail::throw_openssl("TLS: cannot use the certificate given");
  SSL_CTX_clear_chain_certs(c.ctx);
  while (X509* extra = PEM_read_bio_X509(chain.b, nullptr, nullptr, nullptr)) {
    if (SSL_CTX_add0_chain_cert(c.ctx, extra) != 1) {
      X509_free(extra);
      detail::throw_openssl("TLS: cannot add a chain certificate");
    }
  }
  ERR_clear_error();  // the end of the PEM text
  detail::bio_ptr key_bio(key_pem);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio.b, nullptr, nullptr, nullptr);
  if (key == nullptr) detail::throw_openssl("TLS: no PEM private key in the text given");
  ok = SSL_CTX_use_PrivateKey(c.ctx, key);
  EVP_PKEY_free(key);
  if (ok != 1 || SSL_CTX_check_private_key(c.ctx) != 1) {
    detail::throw_openssl("TLS: the private key given does not match the certificate");
  }
}

void TlsContext::load_verify_locations(const std::string& ca_file, const std::string& ca_dir) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  if (ca_file.empty() && ca_dir.empty()) {
    throw std::invalid_argument("load_verify_locations: give a CA file, a CA directory or both");
  }
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(c.ctx, ca_file.empty() ? nullptr : ca_file.c_str(),
                                    ca_dir.empty() ? nullptr : ca_dir.c_str()) != 1) {
    detail::throw_openssl("TLS: cannot load the CAs of " + ca_file + (ca_dir.empty() ? "" : " " + ca_dir));
  }
  c.ca_given = true;
}

void TlsContext::add_ca_pem(std::string_view pem) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  ERR_clear_error();
  detail::bio_ptr bio(pem);
  X509_STORE* store = SSL_CTX_get_cert_store(c.ctx);
  int added = 0;
  while (X509* cert = PEM_read_bio_X509(bio.b, nullptr, nullptr, nullptr)) {
    int ok = X509_STORE_add_cert(store, cert);
    X509_free(cert);
    if (ok != 1) detail::throw_openssl("TLS: cannot add a CA certificate");
    ++added;
  }
  ERR_clear_error();
  if (added == 0) throw TlsError("TLS: add_ca_pem: no PEM certificate in the text given");
  c.ca_given = true;
}

void TlsContext::set_verify_peer(bool on) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  c.verify_peer = on;
  c.apply_verify();
}

void TlsContext::set_check_hostname(bool on) { detail::tls_access::state(*this).check_hostname = on; }

void TlsContext::set_alpn_protocols(const std::vector<std::string>& protocols) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  std::vector<unsigned char> wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) {
      throw std::invalid_argument("set_alpn_protocols: a protocol name must be 1 to 255 bytes: \"" +
                                  p + "\"");
    }
    wire.push_back(static_cast<unsigned char>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  c.alpn_wire = std::move(wire);
  if (c.server) {
    SSL_CTX_set_alpn_select_cb(c.ctx, &detail::tls_context_state::on_alpn, &c);
  } else if (SSL_CTX_set_alpn_protos(c.ctx, c.alpn_wire.data(),
                                     static_cast<unsigned int>(c.alpn_wire.size())) != 0) {
    detail::throw_openssl("TLS: set_alpn_protocols");
  }
}

void TlsContext::set_minimum_version(TlsVersion v) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  SSL_CTX_set_min_proto_version(c.ctx, v == TlsVersion::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
}

void TlsContext::add_server_name(const std::string& server_name, const TlsContext& ctx) {
  detail::tls_context_state& c = detail::tls_access::state(*this);
  if (!c.server || !ctx.is_server()) {
    throw std::logic_error("add_server_name: both contexts must be server contexts");
  }
  if (ctx.s_ == s_) throw std::invalid_argument("add_server_name: a context cannot name itself");
  std::string lower = server_name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  c.server_names[lower] = ctx.s_;
}

}  // namespace polyloop::net
