// The load generator of the "https_handshake" workload: full TLS handshakes,
// one connection after another.
//
//   tls_handshake_client --port=P --cafile=CERT.pem [--seconds=5]
//
// Each round connects to 127.0.0.1:P, makes a full TLS handshake (no session
// resumption: the session cache is off and no session is offered), verifies
// the server's certificate against CERT.pem for 127.0.0.1, sends one
// "GET / HTTP/1.1", checks the "Hello, World!" reply, sends close_notify and
// closes. After `seconds` it prints one JSON line:
//
//   {"handshakes":N,"seconds":S,"handshakes_per_s":X,"p50_us":A,"p99_us":B,"ok":true}
//
// Blocking sockets and OpenSSL, nothing of polyloop, so that the client is
// the same whichever server is measured. Any failure is one line on stderr
// and a non-zero exit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& why) {
  char ssl_error[256] = "";
  if (unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, ssl_error, sizeof ssl_error);
  std::fprintf(stderr, "tls_handshake_client: %s%s%s\n", why.c_str(), *ssl_error ? ": " : "",
               ssl_error);
  std::exit(1);
}

// One full handshake, GET / and close; false never: a failure exits.
void one_round(SSL_CTX* ctx, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    fail("connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
  if (SSL_connect(ssl) != 1) {
    long verify = SSL_get_verify_result(ssl);
    fail(std::string("TLS handshake failed") +
         (verify != X509_V_OK ? std::string(" (") + X509_verify_cert_error_string(verify) + ")"
                              : ""));
  }
  static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  if (SSL_write(ssl, request, sizeof request - 1) != sizeof request - 1) fail("SSL_write");
  std::string reply;
  char buf[1024];
  while (reply.find("Hello, World!") == std::string::npos) {
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) fail("the reply ended before \"Hello, World!\": \"" + reply + "\"");
    reply.append(buf, static_cast<std::size_t>(n));
  }
  if (reply.rfind("HTTP/1.1 200 OK\r\n", 0) != 0) fail("not a 200 reply: \"" + reply + "\"");
  SSL_shutdown(ssl);  // close_notify; the server's own is not waited for
  SSL_free(ssl);
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  int port = -1;
  double seconds = 5;
  std::string cafile;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--port=", 0) == 0) {
      port = std::atoi(arg.c_str() + 7);
    } else if (arg.rfind("--seconds=", 0) == 0) {
      seconds = std::atof(arg.c_str() + 10);
    } else if (arg.rfind("--cafile=", 0) == 0) {
      cafile = arg.substr(9);
    } else {
      std::fprintf(stderr,
                   "tls_handshake_client: unknown argument '%s'\nusage: tls_handshake_client "
                   "--port=P --cafile=CERT.pem [--seconds=5]\n",
                   arg.c_str());
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || cafile.empty() || seconds <= 0) {
    std::fprintf(stderr, "tls_handshake_client: --port=P (1-65535), --cafile=CERT.pem and a "
                         "positive --seconds are needed\n");
    return 2;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr || SSL_CTX_load_verify_locations(ctx, cafile.c_str(), nullptr) != 1) {
    fail("cannot trust " + cafile);
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  // every handshake a full one
  std::vector<double> rtts_us;
  auto start = Clock::now();
  auto end = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(seconds));
  Clock::time_point now = start;
  while (now < end) {
    one_round(ctx, port);
    Clock::time_point after = Clock::now();
    rtts_us.push_back(std::chrono::duration<double, std::micro>(after - now).count());
    now = after;
  }
  SSL_CTX_free(ctx);
  double elapsed = std::chrono::duration<double>(now - start).count();
  std::sort(rtts_us.begin(), rtts_us.end());
  auto pct = [&](double p) {
    return rtts_us[std::min(rtts_us.size() - 1, static_cast<std::size_t>(p * rtts_us.size()))];
  };
  std::printf(
      "{\"handshakes\":%zu,\"seconds\":%.3f,\"handshakes_per_s\":%.1f,\"p50_us\":%.1f,"
      "\"p99_us\":%.1f,\"ok\":true}\n",
      rtts_us.size(), elapsed, static_cast<double>(rtts_us.size()) / elapsed, pct(0.5),
      pct(0.99));
  return 0;
}
