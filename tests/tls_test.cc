// TLS streams (net/tls.h, net/stream.h) on the backend under test: echo
// round trips and 16 MiB both ways, certificate refusals with their reasons
// (self-signed, hostname mismatch), ALPN, SNI, STARTTLS, session resumption,
// close_notify and a peer closing without it, a stalled, a reset and a
// garbage handshake against the server, 1,000 connections with the fd count
// flat, and real peers: `openssl s_server` and `openssl s_client`.
//
// Certificates are made here, at test time, with OpenSSL's API (ECDSA P-256,
// self-signed, valid for a day). Every test runs under wait_for, so a bug
// shows as a failure, not a hang. Only 127.0.0.1 and port 0 are used.
#include "net/tls.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE tls
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/x509_vfy.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "net/stream.h"
#include "tools/certs/self_signed.h"
#include "tests/support/stream_echo.h"
#include "tests/support/test_support.h"

extern char** environ;

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace std::chrono_literals;
using pl::testing::echo_until_eof;
using wall = std::chrono::steady_clock;

namespace {

// --- certificates ----------------------------------------------------------------

using cert_pair = pl::tools::self_signed_pem;
using pl::tools::make_self_signed;

const cert_pair& localhost_cert() {
  static const cert_pair c = make_self_signed("localhost", "DNS:localhost,IP:127.0.0.1");
  return c;
}
const cert_pair& other_cert() {
  static const cert_pair c = make_self_signed("other.example", "DNS:other.example");
  return c;
}

// A directory with the certificates as files (for load_cert_chain and the
// openssl command line), removed at the end.
struct cert_files {
  std::string dir, cert, key;
  cert_files() {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TEST_TMPDIR"); t != nullptr) base = t;
    std::string tmpl = base + "/pltls.XXXXXX";
    BOOST_TEST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    cert = dir + "/cert.pem";
    key = dir + "/key.pem";
    std::ofstream(cert) << localhost_cert().cert_pem;
    std::ofstream(key) << localhost_cert().key_pem;
  }
  ~cert_files() {
    ::unlink(cert.c_str());
    ::unlink(key.c_str());
    ::rmdir(dir.c_str());
  }
};

net::TlsContext server_context() {
  auto ctx = net::TlsContext::server();
  ctx.use_cert_chain(localhost_cert().cert_pem, localhost_cert().key_pem);
  return ctx;
}
net::TlsContext trusting_client() {
  auto ctx = net::TlsContext::client();
  ctx.add_ca_pem(localhost_cert().cert_pem);
  return ctx;
}

// --- loop helpers ----------------------------------------------------------------

struct tls_fixture : pl::testing::loop_fixture {
  pl::testing::handler_log log;
  tls_fixture() { log.install(*loop); }
};

pl::Task<bool> wait_until(std::function<bool()> pred, std::chrono::milliseconds timeout = 5s) {
  auto deadline = wall::now() + timeout;
  while (!pred()) {
    if (wall::now() > deadline) co_return false;
    co_await pl::sleep(1ms);
  }
  co_return true;
}


std::string pattern(std::size_t n, std::uint32_t seed = 1) {
  std::string out(n, '\0');
  std::uint32_t x = seed * 2654435761u + 12345u;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

int open_fd_count() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

// The resident set (VmRSS of /proc/self/status), in KiB.
long rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// Sanitizers keep freed memory in quarantine: RSS grows by design there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool rss_meaningful = false;
#else
constexpr bool rss_meaningful = true;
#endif

// A blocking client socket connected to 127.0.0.1:port.
int raw_connect(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  BOOST_TEST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool openssl_cli_found() { return std::system("command -v openssl >/dev/null 2>&1") == 0; }

// A TLS echo server on 127.0.0.1, port 0.
pl::Task<net::Server> tls_echo_server(net::TlsOptions tls = {server_context()}) {
  co_return co_await net::start_server(echo_until_eof, "127.0.0.1", 0, std::move(tls));
}

}  // namespace

// --- round trips -------------------------------------------------------------------

// CPython test_asyncio/test_ssl.py: test_create_server_ssl_1 (echo over TLS).
BOOST_FIXTURE_TEST_CASE(echo_round_trip_and_what_the_handshake_settled, tls_fixture) {
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {trusting_client()});
    const net::TlsInfo* info = c.tls_info();
    BOOST_TEST_REQUIRE(info != nullptr);
    BOOST_TEST(info->version == "TLSv1.3");
    BOOST_TEST(info->peer_subject == "CN=localhost");
    BOOST_TEST(info->alpn == "");
    c.write("hello over TLS\n");
    BOOST_TEST(co_await c.read_until("\n") == "hello over TLS\n");
    c.close();
    co_await c.wait_closed();
    BOOST_TEST(co_await wait_until([&] { return server.active_connections() == 0; }));
    server.close();
    co_await server.wait_closed();
  }());
  BOOST_TEST(log.messages.empty());
}

BOOST_FIXTURE_TEST_CASE(sixteen_mib_both_ways_every_byte_checked, tls_fixture) {
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {trusting_client()});
    const std::string sent = pattern(16 * 1024 * 1024, 7);
    auto writer = [](net::Stream s, const std::string* data) -> pl::Task<> {
      for (std::size_t off = 0; off < data->size(); off += 100'000) {
        s.write(std::string_view(*data).substr(off, 100'000));
        co_await s.drain();
      }
    };
    pl::Future<> w = pl::get_running_loop().create_task(writer(c, &sent));
    std::string got = co_await c.read_exactly(sent.size());
    co_await w;
    BOOST_TEST_REQUIRE(got.size() == sent.size());
    BOOST_TEST((got == sent), "the echoed bytes differ from those sent");
    c.close();
    co_await c.wait_closed();
    server.close();
    co_await server.wait_closed();
  }(), 60s);
}

// read_into and small reads go through the record layer too; certificate
// chain and key from files.
BOOST_FIXTURE_TEST_CASE(read_into_and_files, tls_fixture) {
  cert_files files;
  run([](const cert_files* f) -> pl::Task<> {
    auto sctx = net::TlsContext::server();
    sctx.load_cert_chain(f->cert, f->key);
    auto cctx = net::TlsContext::client();
    cctx.load_verify_locations(f->cert);
    net::Server server = co_await tls_echo_server({sctx});
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {cctx, "localhost"});
    c.write("abcdef");
    char buf[4];
    std::string got;
    while (got.size() < 6) {
      std::size_t n = co_await c.read_into(buf);
      BOOST_TEST_REQUIRE(n > 0u);
      got.append(buf, n);
    }
    BOOST_TEST(got == "abcdef");
    c.close();
    co_await c.wait_closed();
    server.close();
    co_await server.wait_closed();
  }(&files));
}

// --- certificates refused -----------------------------------------------------------

// CPython test_asyncio/test_ssl.py: test_create_connection_ssl_failed_certificate.
BOOST_FIXTURE_TEST_CASE(self_signed_certificate_refused_with_the_reason, tls_fixture) {
  int fds_before = open_fd_count();
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    bool refused = false;
    try {
      // The system's CA store: it does not trust our certificate.
      co_await net::open_connection("127.0.0.1", server.port(), {net::TlsContext::client()});
    } catch (const net::TlsCertificateError& e) {
      refused = true;
      std::string what = e.what();
      BOOST_TEST(what.find("self-signed certificate") != std::string::npos, what);
      BOOST_TEST(what.find("subject CN=localhost") != std::string::npos, what);
      BOOST_TEST(what.find("127.0.0.1:") != std::string::npos, what);
      BOOST_TEST(e.verify_code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
    }
    BOOST_TEST(refused);
    BOOST_TEST(co_await wait_until([&] { return server.active_connections() == 0; }));
    server.close();
    co_await server.wait_closed();
  }());
  BOOST_TEST(open_fd_count() == fds_before);
}

BOOST_FIXTURE_TEST_CASE(hostname_mismatch_refused_naming_both_names, tls_fixture) {
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    bool refused = false;
    try {
      co_await net::open_connection("127.0.0.1", server.port(), {trusting_client(), "wrong.example"});
    } catch (const net::TlsCertificateError& e) {
      refused = true;
      std::string what = e.what();
      BOOST_TEST(what.find("hostname mismatch: expected wrong.example, certificate is for "
                           "localhost, 127.0.0.1") != std::string::npos,
                 what);
    }
    BOOST_TEST(refused);
    // With hostname checking off, the same certificate is accepted.
    auto lax = trusting_client();
    lax.set_check_hostname(false);
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {lax, "wrong.example"});
    c.close();
    co_await c.wait_closed();
    server.close();
    co_await server.wait_closed();
  }());
}

// --- ALPN, SNI, resumption -------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(alpn_negotiates_the_servers_first_choice_the_client_offers, tls_fixture) {
  run([]() -> pl::Task<> {
    auto sctx = server_context();
    sctx.set_alpn_protocols({"h2", "http/1.1"});
    std::string server_saw;
    net::Server server = co_await net::start_server(
        [&server_saw](net::Stream s) -> pl::Task<> {
          server_saw = s.tls_info()->alpn;
          co_await echo_until_eof(s);
        },
        "127.0.0.1", 0, net::TlsOptions{sctx});
    auto cctx = trusting_client();
    cctx.set_alpn_protocols({"spdy/3", "http/1.1"});
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {cctx});
    BOOST_TEST(c.tls_info()->alpn == "http/1.1");
    c.write("x");
    co_await c.read_exactly(1);
    BOOST_TEST(server_saw == "http/1.1");
    c.close();
    co_await c.wait_closed();
    // Nothing in common: no protocol, and the connection still works.
    auto other = trusting_client();
    other.set_alpn_protocols({"imap"});
    net::Stream d = co_await net::open_connection("127.0.0.1", server.port(), {other});
    BOOST_TEST(d.tls_info()->alpn == "");
    d.close();
    co_await d.wait_closed();
    server.close();
    co_await server.wait_closed();
  }());
}

BOOST_FIXTURE_TEST_CASE(sni_chooses_the_certificate_for_the_name_asked, tls_fixture) {
  run([]() -> pl::Task<> {
    auto sctx = server_context();
    auto other = net::TlsContext::server();
    other.use_cert_chain(other_cert().cert_pem, other_cert().key_pem);
    sctx.add_server_name("Other.Example", other);
    std::vector<std::string> names;
    net::Server server = co_await net::start_server(
        [&names](net::Stream s) -> pl::Task<> {
          names.push_back(s.tls_info()->server_name);
          co_await echo_until_eof(s);
        },
        "127.0.0.1", 0, net::TlsOptions{sctx});
    auto cctx = net::TlsContext::client();
    cctx.add_ca_pem(other_cert().cert_pem);
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {cctx, "other.example"});
    BOOST_TEST(c.tls_info()->peer_subject == "CN=other.example");
    c.write("x");
    co_await c.read_exactly(1);
    c.close();
    co_await c.wait_closed();
    // Another name: the default certificate.
    net::Stream d = co_await net::open_connection("127.0.0.1", server.port(), {trusting_client(), "localhost"});
    BOOST_TEST(d.tls_info()->peer_subject == "CN=localhost");
    d.write("x");
    co_await d.read_exactly(1);
    d.close();
    co_await d.wait_closed();
    BOOST_TEST((names == std::vector<std::string>{"other.example", "localhost"}));
    server.close();
    co_await server.wait_closed();
  }());
}

BOOST_FIXTURE_TEST_CASE(client_resumes_its_session, tls_fixture) {
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    auto cctx = trusting_client();  // one context: one session cache
    for (int i = 0; i < 2; ++i) {
      net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {cctx, "localhost"});
      BOOST_TEST(c.tls_info()->session_reused == (i == 1), "connection " << i);
      c.write("ping");
      BOOST_TEST(co_await c.read_exactly(4) == "ping");  // the tickets come with the data
      c.close();
      co_await c.wait_closed();
    }
    server.close();
    co_await server.wait_closed();
  }());
}

// A server that asks for client certificates sees the client's subject, and
// refuses a client without one. CPython test_ssl.py:
// ThreadedTests.test_verify_client_cert (not asyncio's, which has none).
BOOST_FIXTURE_TEST_CASE(client_certificates_required_by_the_server, tls_fixture) {
  run([]() -> pl::Task<> {
    auto sctx = server_context();
    sctx.set_verify_peer(true);
    sctx.add_ca_pem(other_cert().cert_pem);  // the client's certificate, as its own CA
    std::vector<std::string> subjects;
    net::Server server = co_await net::start_server(
        [&subjects](net::Stream s) -> pl::Task<> {
          subjects.push_back(s.tls_info()->peer_subject);
          co_await echo_until_eof(s);
        },
        "127.0.0.1", 0, net::TlsOptions{sctx});
    auto with_cert = trusting_client();
    with_cert.use_cert_chain(other_cert().cert_pem, other_cert().key_pem);
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {with_cert});
    c.write("x");
    BOOST_TEST(co_await c.read_exactly(1) == "x");
    c.close();
    co_await c.wait_closed();
    BOOST_TEST((subjects == std::vector<std::string>{"CN=other.example"}));
    // Without one: TLS 1.3 ends the client's handshake before the server
    // checks, so the refusal (the server's alert) comes with the first read.
    bool refused = false;
    try {
      net::Stream d = co_await net::open_connection("127.0.0.1", server.port(), {trusting_client()});
      d.write("x");
      std::string got = co_await d.read();
      BOOST_TEST(false, "the read returned \"" << got << "\" instead of the server's refusal");
    } catch (const net::TlsError& e) {
      refused = std::string(e.what()).find("alert certificate required") != std::string::npos;
      BOOST_TEST(refused, e.what());
    }
    BOOST_TEST(refused);
    BOOST_TEST(subjects.size() == 1u);  // the handler never saw the second client
    server.close();
    co_await server.wait_closed();
  }());
}

// --- STARTTLS ----------------------------------------------------------------------------

// CPython test_asyncio/test_ssl.py: test_start_tls_server_1 and
// test_start_tls_client_reg_proto_1 (a plain exchange, then TLS).
BOOST_FIXTURE_TEST_CASE(starttls_upgrades_mid_stream, tls_fixture) {
  run([]() -> pl::Task<> {
    net::Server server = co_await net::start_server(
        [](net::Stream s) -> pl::Task<> {
          BOOST_TEST(co_await s.read_until("\r\n") == "STARTTLS\r\n");
          s.write("220 go ahead\r\n");
          co_await s.start_tls({server_context()});
          co_await echo_until_eof(s);
        },
        "127.0.0.1", 0);
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port());
    BOOST_TEST(c.tls_info() == nullptr);
    c.write("STARTTLS\r\n");
    BOOST_TEST(co_await c.read_until("\r\n") == "220 go ahead\r\n");
    co_await c.start_tls({trusting_client(), "localhost"});
    BOOST_TEST_REQUIRE(c.tls_info() != nullptr);
    c.write("secret\n");
    BOOST_TEST(co_await c.read_until("\n") == "secret\n");
    BOOST_CHECK_EXCEPTION(c.write_eof(), std::logic_error,
                          pl::testing::message_has("cannot half-close"));
    c.close();
    co_await c.wait_closed();
    server.close();
    co_await server.wait_closed();
  }());
}

// --- closing -----------------------------------------------------------------------------

// close() sends close_notify: the peer reads end of stream, and a close
// without it (the socket shut down under TLS) is end of stream too
// (docs/tls.md, "Closing"). CPython test_asyncio/test_ssl.py:
// test_remote_shutdown_receives_trailing_data (end of stream after data).
BOOST_FIXTURE_TEST_CASE(end_of_stream_with_and_without_close_notify, tls_fixture) {
  run([]() -> pl::Task<> {
    bool abrupt = false;
    net::Server server = co_await net::start_server(
        [&abrupt](net::Stream s) -> pl::Task<> {
          s.write("bye");
          co_await wait_until([&] { return s.write_buffer_size() == 0; });  // sent
          if (abrupt) ::shutdown(s.fd(), SHUT_RDWR);  // no close_notify can follow
          s.close();
          co_await s.wait_closed();
        },
        "127.0.0.1", 0, net::TlsOptions{server_context()});
    for (bool without : {false, true}) {
      abrupt = without;
      net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {trusting_client()});
      BOOST_TEST(co_await c.read_exactly(3) == "bye");
      BOOST_TEST(co_await c.read() == "", "abrupt " << without);
      BOOST_TEST(c.at_eof());
      c.close();
      co_await c.wait_closed();
    }
    server.close();
    co_await server.wait_closed();
  }());
}

// --- bad peers ---------------------------------------------------------------------------

// CPython test_asyncio/test_ssl.py: test_handshake_timeout_handler_leak and
// test_sslproto.py: test_handshake_timeout. A client that connects and says
// nothing is closed after the handshake timeout, and nothing is left.
BOOST_FIXTURE_TEST_CASE(stalled_handshake_times_out_and_nothing_leaks, tls_fixture) {
  int fds_before = open_fd_count();
  run([]() -> pl::Task<> {
    net::TlsOptions tls{server_context()};
    tls.handshake_timeout = 300ms;
    bool handled = false;
    net::Server server = co_await net::start_server(
        [&handled](net::Stream) -> pl::Task<> {
          handled = true;
          co_return;
        },
        "127.0.0.1", 0, tls);
    int fd = raw_connect(server.port());
    auto t0 = wall::now();
    BOOST_TEST(co_await wait_until([&] { return server.active_connections() == 1; }));
    BOOST_TEST(co_await wait_until([&] { return server.active_connections() == 0; }, 5s));
    auto took = wall::now() - t0;
    BOOST_TEST(took >= 250ms, pl::testing::ms(took) << " ms");
    char b;
    BOOST_TEST(::recv(fd, &b, 1, MSG_DONTWAIT) == 0);  // closed by the server
    ::close(fd);
    BOOST_TEST(!handled);
    // And a client's own timeout against a server that never answers.
    net::Server mute = co_await net::start_server(
        [](net::Stream s) -> pl::Task<> {
          while (!(co_await s.read()).empty()) {  // takes the ClientHello, never answers
          }
        },
        "127.0.0.1", 0);
    net::TlsOptions client{trusting_client()};
    client.handshake_timeout = 200ms;
    BOOST_CHECK_EXCEPTION(co_await net::open_connection("127.0.0.1", mute.port(), client),
                          net::TlsError, pl::testing::message_has("did not complete within 200 ms"));
    server.close();
    mute.close();
    co_await server.wait_closed();
    co_await mute.wait_closed();
  }());
  BOOST_TEST(open_fd_count() == fds_before);
}

// A reset mid-handshake and garbage instead of a ClientHello end those
// connections only: the server goes on serving. CPython
// test_asyncio/test_ssl.py: test_start_tls_client_corrupted_ssl.
BOOST_FIXTURE_TEST_CASE(reset_and_garbage_mid_handshake_leave_the_server_serving, tls_fixture) {
  int fds_before = open_fd_count();
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    std::vector<std::string> garbage = {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", pattern(5000, 3),
                                        std::string("\x16\x03\x01\xff\xff", 5) + pattern(300, 4),
                                        std::string(1, '\x16')};
    for (const std::string& g : garbage) {
      int fd = raw_connect(server.port());
      ::send(fd, g.data(), g.size(), MSG_NOSIGNAL);
      if (g.size() == 1) {  // a reset after the first byte of a record
        linger l{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      } else {
        // The server answers with an alert (or nothing) and closes.
        bool closed = co_await wait_until([fd] {
          char buf[512];
          ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
          return n == 0 || (n < 0 && errno != EAGAIN);
        });
        BOOST_TEST(closed, "the server kept a garbage connection open");
      }
      ::close(fd);
    }
    BOOST_TEST(co_await wait_until([&] { return server.active_connections() == 0; }));
    net::Stream c = co_await net::open_connection("127.0.0.1", server.port(), {trusting_client()});
    c.write("still here");
    BOOST_TEST(co_await c.read_exactly(10) == "still here");
    c.close();
    co_await c.wait_closed();
    server.close();
    co_await server.wait_closed();
  }());
  BOOST_TEST(open_fd_count() == fds_before);
}

// CPython test_asyncio/test_ssl.py: test_create_connection_memory_leak
// (here: descriptors, over many more connections).
BOOST_FIXTURE_TEST_CASE(a_thousand_connections_leave_the_fd_count_flat, tls_fixture) {
  int fds_before = open_fd_count();
  run([]() -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    auto cctx = trusting_client();
    auto one = [](std::uint16_t port, net::TlsContext ctx, int i) -> pl::Task<> {
      net::Stream c = co_await net::open_connection("127.0.0.1", port, {ctx, "localhost"});
      std::string msg = std::to_string(i);
      c.write(msg);
      BOOST_TEST_REQUIRE(co_await c.read_exactly(msg.size()) == msg);
      c.close();
      co_await c.wait_closed();
    };
    long rss_warm = 0;
    for (int batch = 0; batch < 20; ++batch) {
      if (batch == 4) rss_warm = rss_kib();  // after 200 connections: allocators warm
      std::vector<pl::Future<>> fs;
      for (int i = 0; i < 50; ++i) {
        fs.push_back(pl::get_running_loop().create_task(one(server.port(), cctx, batch * 50 + i)));
      }
      co_await pl::wait_all(std::move(fs));
    }
    BOOST_TEST(co_await wait_until([&] { return server.active_connections() == 0; }));
    long growth = rss_kib() - rss_warm;
    BOOST_TEST_MESSAGE("RSS growth over the last 800 TLS connections: " << growth << " KiB");
    if (rss_meaningful) BOOST_TEST(growth < 2048, "RSS grew by " << growth << " KiB");
    server.close();
    co_await server.wait_closed();
  }(), 120s);
  BOOST_TEST(open_fd_count() == fds_before);
}

// One client context used by loops on two threads at once (its session
// cache is shared); run under TSan by .ci/run (threads = True).
BOOST_FIXTURE_TEST_CASE(one_client_context_on_two_threads, tls_fixture) {
  auto cctx = trusting_client();
  auto connect_many = [](std::uint16_t port, net::TlsContext ctx) -> pl::Task<int> {
    int reused = 0;
    for (int i = 0; i < 20; ++i) {
      net::Stream c = co_await net::open_connection("127.0.0.1", port, {ctx, "localhost"});
      c.write("ping");
      // No Boost.Test macro here: Boost.Test is not thread-safe.
      if (co_await c.read_exactly(4) != "ping") throw std::runtime_error("wrong echo");
      reused += c.tls_info()->session_reused ? 1 : 0;
      c.close();
      co_await c.wait_closed();
    }
    co_return reused;
  };
  run([](net::TlsContext ctx, auto many) -> pl::Task<> {
    net::Server server = co_await tls_echo_server();
    std::uint16_t port = server.port();
    std::atomic<bool> done{false};
    std::atomic<int> other_reused{-1};
    std::thread other([&] {
      auto loop = pl::testing::make_loop();
      try {
        other_reused = loop->run_until_complete(pl::wait_for(many(port, ctx), 20s));
      } catch (const std::exception&) {  // other_reused stays -1
      }
      loop->close();
      done = true;
    });
    int reused = co_await many(port, ctx);
    bool finished = co_await wait_until([&] { return done.load(); }, 20s);
    other.join();
    BOOST_TEST(finished);
    BOOST_TEST(other_reused.load() >= 0, "the other thread's connections failed");
    BOOST_TEST(reused + other_reused.load() >= 30, "sessions resumed: " << reused << " + " << other_reused.load());
    server.close();
    co_await server.wait_closed();
  }(cctx, connect_many), 40s);
}

// --- bad input -----------------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(bad_configuration_is_a_clear_error, tls_fixture) {
  auto sctx = net::TlsContext::server();
  BOOST_CHECK_EXCEPTION(sctx.load_cert_chain("/nonexistent/cert.pem", "/nonexistent/key.pem"),
                        net::TlsError, pl::testing::message_has("/nonexistent/cert.pem"));
  BOOST_CHECK_EXCEPTION(sctx.use_cert_chain(localhost_cert().cert_pem, other_cert().key_pem),
                        net::TlsError, pl::testing::message_has("does not match"));
  BOOST_CHECK_EXCEPTION(net::TlsContext().set_verify_peer(true), std::logic_error,
                        pl::testing::message_has("TlsContext::client()"));
  BOOST_CHECK_EXCEPTION(net::TlsContext::client().add_ca_pem("not a certificate"), net::TlsError,
                        pl::testing::message_has("no PEM certificate"));
  BOOST_CHECK_EXCEPTION(net::TlsContext::client().set_alpn_protocols({""}), std::invalid_argument,
                        pl::testing::message_has("1 to 255 bytes"));
  run([]() -> pl::Task<> {
    BOOST_CHECK_EXCEPTION(co_await net::open_connection("127.0.0.1", 1, {server_context()}),
                          std::invalid_argument, pl::testing::message_has("TlsContext::client()"));
    net::Server plain = co_await net::start_server(echo_until_eof, "127.0.0.1", 0);
    net::Stream c = co_await net::open_connection("127.0.0.1", plain.port());
    BOOST_CHECK_EXCEPTION(co_await c.start_tls({trusting_client()}), std::invalid_argument,
                          pl::testing::message_has("server_hostname"));
    c.close();
    co_await c.wait_closed();
    plain.close();
    co_await plain.wait_closed();
  }());
}

// --- real peers: the openssl command line ---------------------------------------------------

// polyloop's client against `openssl s_server -rev` (it answers each line
// reversed).
BOOST_FIXTURE_TEST_CASE(client_against_openssl_s_server, tls_fixture) {
  if (!openssl_cli_found()) {
    BOOST_TEST_MESSAGE("SKIPPED: no openssl on PATH (tools/install_deps.sh installs it)");
    return;
  }
  cert_files files;
  std::uint16_t port = free_port();
  std::string accept = "127.0.0.1:" + std::to_string(port);
  std::vector<std::string> args = {"openssl", "s_server", "-quiet",  "-rev",     "-naccept", "1",
                                   "-accept", accept,     "-cert",   files.cert, "-key",     files.key};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  BOOST_TEST_REQUIRE(::posix_spawnp(&pid, "openssl", &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  run([](std::uint16_t p) -> pl::Task<> {
    std::optional<net::Stream> c;
    for (int attempt = 0; attempt < 100 && !c; ++attempt) {  // until s_server listens
      try {
        c = co_await net::open_connection("127.0.0.1", p, {trusting_client(), "localhost"});
      } catch (const std::system_error&) {
      }
      if (!c) co_await pl::sleep(50ms);
    }
    BOOST_TEST_REQUIRE(c.has_value(), "openssl s_server never listened");
    c->write("hello openssl\n");
    BOOST_TEST(co_await c->read_until("\n") == "lssnepo olleh\n");
    c->close();
    co_await c->wait_closed();
  }(port));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

// `openssl s_client` (verifying our certificate and the host name) against
// polyloop's server.
BOOST_FIXTURE_TEST_CASE(openssl_s_client_against_the_server, tls_fixture) {
  if (!openssl_cli_found()) {
    BOOST_TEST_MESSAGE("SKIPPED: no openssl on PATH (tools/install_deps.sh installs it)");
    return;
  }
  cert_files files;
  run([](const cert_files* f) -> pl::Task<> {
    net::Server server = co_await net::start_server(
        [](net::Stream s) -> pl::Task<> {
          std::string line = co_await s.read_until("\n");
          for (char& ch : line) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
          s.write(line);
          s.close();  // close_notify: s_client then exits
          co_await s.wait_closed();
        },
        "127.0.0.1", 0, net::TlsOptions{server_context()});
    std::string command = "printf 'hello polyloop\\n' | timeout 10 openssl s_client -quiet -connect 127.0.0.1:" +
                          std::to_string(server.port()) + " -CAfile " + f->cert +
                          " -verify_return_error -verify_hostname localhost 2>/dev/null";
    std::string output;
    std::atomic<bool> done{false};
    std::thread client([&] {
      if (FILE* p = ::popen(command.c_str(), "r")) {
        char buf[256];
        while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) output.append(buf, n);
        ::pclose(p);
      }
      done = true;
    });
    // s_client exits on our close_notify; `timeout` ends it otherwise.
    BOOST_TEST(co_await wait_until([&] { return done.load(); }, 15s));
    client.join();
    BOOST_TEST(output == "HELLO POLYLOOP\n");
    server.close();
    co_await server.wait_closed();
  }(&files), 30s);
}

// The minimum version: TLS 1.2 is served by default (`openssl s_client
// -tls1_2` gets it), TLS 1.1 is not, and set_minimum_version(tls1_3) refuses
// 1.2 too. CPython test_ssl.py: ThreadedTests.test_min_max_version_tlsv1_2.
BOOST_FIXTURE_TEST_CASE(minimum_version_against_openssl_s_client, tls_fixture) {
  if (!openssl_cli_found()) {
    BOOST_TEST_MESSAGE("SKIPPED: no openssl on PATH (tools/install_deps.sh installs it)");
    return;
  }
  run([]() -> pl::Task<> {
    auto strict = server_context();
    strict.set_minimum_version(net::TlsVersion::tls1_3);
    net::Server normal = co_await tls_echo_server();
    net::Server only13 = co_await tls_echo_server({strict});
    // What `openssl s_client -brief` says about the handshake (on stderr).
    auto handshake_with = [](std::uint16_t port, std::string version) -> pl::Task<std::string> {
      std::string command = "printf x | timeout 10 openssl s_client -brief -" + version +
                            " -connect 127.0.0.1:" + std::to_string(port) + " 2>&1";
      std::string output;
      std::atomic<bool> done{false};
      std::thread client([&] {
        if (FILE* p = ::popen(command.c_str(), "r")) {
          char buf[256];
          while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) output.append(buf, n);
          ::pclose(p);
        }
        done = true;
      });
      co_await wait_until([&] { return done.load(); }, 15s);
      client.join();
      co_return output;
    };
    std::string out = co_await handshake_with(normal.port(), "tls1_2");
    BOOST_TEST(out.find("Protocol version: TLSv1.2") != std::string::npos, out);
    out = co_await handshake_with(normal.port(), "tls1_1");
    BOOST_TEST(out.find("Protocol version") == std::string::npos, out);
    out = co_await handshake_with(only13.port(), "tls1_2");
    BOOST_TEST(out.find("Protocol version") == std::string::npos, out);
    BOOST_TEST(out.find("alert protocol version") != std::string::npos, out);
    out = co_await handshake_with(only13.port(), "tls1_3");
    BOOST_TEST(out.find("Protocol version: TLSv1.3") != std::string::npos, out);
    normal.close();
    only13.close();
    co_await normal.wait_closed();
    co_await only13.wait_closed();
  }(), 60s);
}
