// Name resolution off the loop's thread (net/dns.h) and how open_connection
// and start_server use it: happy eyeballs over several addresses, every
// resolved address listened on (issue 12, "DNS off the loop thread").
// Only numeric addresses, "localhost" (from /etc/hosts) and names under
// .invalid (RFC 6761: never resolve) are used.
#include "net/dns.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE dns
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <semaphore>
#include <string>
#include <system_error>
#include <vector>

#include "net/stream.h"
#include "tests/support/test_support.h"

namespace pl = polyloop;
namespace net = polyloop::net;
using namespace pl::testing;
using namespace std::chrono_literals;
using wall = std::chrono::steady_clock;

namespace {

struct dns_fixture : loop_fixture {
  dns_fixture() { run_timeout = std::chrono::seconds(8); }
};

int open_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n;
}

// A listener on 127.0.0.1 whose accept queue is full (backlog 0, one
// client queued, never accepted): a further connect gets no answer and
// stays pending, as a silent host's would.
struct black_hole {
  int listener = -1;
  int queued = -1;
  std::uint16_t port = 0;
  black_hole() {
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_REQUIRE(::listen(listener, 0) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    queued = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    BOOST_REQUIRE(::connect(queued, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~black_hole() {
    ::close(queued);
    ::close(listener);
  }
};

// A closed port on 127.0.0.1: connecting is refused.
std::uint16_t refused_port() {
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

net::AddrInfo loopback(std::uint16_t port) {
  net::AddrInfo a;
  a.family = AF_INET;
  a.socktype = SOCK_STREAM;
  auto* in = reinterpret_cast<sockaddr_in*>(&a.addr);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.addrlen = sizeof(sockaddr_in);
  return a;
}

// A server that answers each line with "<tag>:<line>" and counts connections.
struct tagged_server {
  net::Server server;
  std::shared_ptr<int> connections = std::make_shared<int>(0);
  static pl::Task<tagged_server> start(std::string tag) {
    tagged_server t;
    auto count = t.connections;
    // Named, not a temporary inside co_await (GCC 12 destroys such a
    // temporary std::function twice).
    net::ConnectionHandler handler = [tag, count](net::Stream s) -> pl::Task<> {
      ++*count;
      for (;;) {
        std::string line = co_await s.read(100);
        if (line.empty()) break;
        s.write(tag + ":" + line);
        co_await s.drain();
      }
      s.close();
    };
    t.server = co_await net::start_server(handler, "127.0.0.1", 0);
    co_return t;
  }
};

pl::Task<std::string> ask(net::Stream s, std::string what) {
  s.write(what);
  co_await s.drain();
  std::string answer = co_await s.read(100);
  s.close();
  co_await s.wait_closed();
  co_return answer;
}

}  // namespace

// --- getaddrinfo / getnameinfo ----------------------------------------------------

// CPython test_base_events.py: BaseEventLoopTests.test_ipaddr_info (a numeric
// host is answered without a lookup).
BOOST_FIXTURE_TEST_CASE(a_numeric_host_is_answered_on_the_loop_thread_without_a_pool,
                        dns_fixture) {
  int before = thread_count();
  auto v4 = run(net::getaddrinfo("127.0.0.1", "80", {AF_UNSPEC, SOCK_STREAM, 0, 0}));
  auto v6 = run(net::getaddrinfo("::1", "443", {AF_UNSPEC, SOCK_STREAM, 0, 0}));
  BOOST_TEST(thread_count() == before);  // no default executor was started
  BOOST_REQUIRE(v4.size() == 1u);
  BOOST_TEST(v4[0].family == AF_INET);
  BOOST_TEST(v4[0].address().host == "127.0.0.1");
  BOOST_TEST(v4[0].address().port == 80);
  BOOST_REQUIRE(v6.size() == 1u);
  BOOST_TEST(v6[0].family == AF_INET6);
  BOOST_TEST(v6[0].address().host == "::1");
  BOOST_TEST(v6[0].address().port == 443);
}

BOOST_FIXTURE_TEST_CASE(a_name_is_resolved_on_a_pool_thread_while_the_loop_runs_on,
                        dns_fixture) {
  // One worker, kept busy: the lookup waits in the queue, and the loop
  // must go on running timers meanwhile.
  pl::set_default_executor(*loop, std::make_unique<pl::ThreadPoolExecutor>(1));
  std::binary_semaphore go{0};
  pl::Future<> busy = pl::run_in_executor(*loop, nullptr, [&] { go.acquire(); });
  pl::Future<std::vector<net::AddrInfo>> lookup =
      loop->create_task(net::getaddrinfo("localhost", "80", {AF_INET, SOCK_STREAM, 0, 0}));
  int ticks = 0;
  auto meanwhile = [&]() -> pl::Task<> {
    for (int i = 0; i < 5; ++i) {
      co_await pl::sleep(5ms);
      ++ticks;
    }
    BOOST_TEST(!lookup.done());
    go.release();
    co_await busy;
    co_await lookup;
  };
  run(meanwhile());
  BOOST_TEST(ticks == 5);
  BOOST_REQUIRE(!lookup.result().empty());
  BOOST_TEST(lookup.result()[0].address().host == "127.0.0.1");
}

BOOST_FIXTURE_TEST_CASE(cancelling_a_lookup_ends_the_wait_at_once, dns_fixture) {
  pl::set_default_executor(*loop, std::make_unique<pl::ThreadPoolExecutor>(1));
  std::binary_semaphore go{0};
  pl::Future<> busy = pl::run_in_executor(*loop, nullptr, [&] { go.acquire(); });
  pl::Future<std::vector<net::AddrInfo>> lookup =
      loop->create_task(net::getaddrinfo("localhost", "80"));
  auto main = [&]() -> pl::Task<> {
    co_await pl::sleep(5ms);
    lookup.cancel();
    try {
      co_await lookup;
    } catch (const pl::CancelledError&) {
    }
    go.release();
    co_await busy;
  };
  run(main());
  BOOST_TEST(lookup.cancelled());
}

// CPython test_base_events.py: test_create_connection_host_port_sock-like:
// an unknown name fails with gaierror naming the host.
BOOST_FIXTURE_TEST_CASE(an_unknown_name_fails_in_the_gai_category_naming_the_host,
                        dns_fixture) {
  try {
    run(net::getaddrinfo("no-such-host.invalid", "80"), 30s);
    BOOST_ERROR("getaddrinfo of a .invalid name did not throw");
  } catch (const std::system_error& e) {
    BOOST_TEST((e.code().category() == net::gai_category() ||
                e.code().category() == std::generic_category()));
    BOOST_TEST(std::string(e.what()).find("cannot resolve 'no-such-host.invalid'") !=
               std::string::npos, e.what());
  }
}

BOOST_FIXTURE_TEST_CASE(a_malformed_numeric_host_is_eai_noname, dns_fixture) {
  try {
    run(net::getaddrinfo("300.1.2.3", "80", {AF_UNSPEC, SOCK_STREAM, 0, AI_NUMERICHOST}));
    BOOST_ERROR("a malformed numeric host was accepted");
  } catch (const std::system_error& e) {
    BOOST_TEST(e.code().value() == EAI_NONAME);
    BOOST_TEST((e.code().category() == net::gai_category()));
    BOOST_TEST(std::string(e.what()).find("300.1.2.3") != std::string::npos, e.what());
  }
}

// CPython test_base_events.py: BaseEventLoopTests.test_getnameinfo
BOOST_FIXTURE_TEST_CASE(getnameinfo_gives_the_numeric_host_and_service, dns_fixture) {
  auto names = run(net::getnameinfo(loopback(8080), NI_NUMERICHOST | NI_NUMERICSERV));
  BOOST_TEST(names.first == "127.0.0.1");
  BOOST_TEST(names.second == "8080");
}

// --- open_connection --------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(open_connection_resolves_a_name_and_connects, dns_fixture) {
  auto main = []() -> pl::Task<std::string> {
    tagged_server a = co_await tagged_server::start("a");
    net::Stream s = co_await net::open_connection("localhost", a.server.port());
    std::string answer = co_await ask(s, "hi");
    a.server.close();
    co_await a.server.wait_closed();
    co_return answer;
  };
  BOOST_TEST(run(main()) == "a:hi");
}

BOOST_FIXTURE_TEST_CASE(without_happy_eyeballs_the_addresses_are_tried_in_turn, dns_fixture) {
  auto main = []() -> pl::Task<std::string> {
    tagged_server b = co_await tagged_server::start("b");
    std::vector<net::AddrInfo> addrs;  // (GCC 12 rejects a braced list inside co_await)
    addrs.push_back(loopback(refused_port()));
    addrs.push_back(loopback(b.server.port()));
    net::Stream s = co_await net::open_connection(addrs);
    std::string answer = co_await ask(s, "x");
    b.server.close();
    co_await b.server.wait_closed();
    co_return answer;
  };
  BOOST_TEST(run(main()) == "b:x");
}

// CPython test_base_events.py:
// test_create_connection_multiple_errors / test_create_connection_multiple
BOOST_FIXTURE_TEST_CASE(when_every_address_fails_differently_the_error_names_each, dns_fixture) {
  std::uint16_t p1 = refused_port(), p2 = refused_port();
  try {
    run(net::open_connection(std::vector<net::AddrInfo>{loopback(p1), loopback(p2)}));
    BOOST_ERROR("connecting to two closed ports did not throw");
  } catch (const std::system_error& e) {
    std::string what = e.what();
    BOOST_TEST(what.find("Multiple exceptions") != std::string::npos, what);
    BOOST_TEST(what.find("127.0.0.1:" + std::to_string(p1)) != std::string::npos, what);
    BOOST_TEST(what.find("127.0.0.1:" + std::to_string(p2)) != std::string::npos, what);
    BOOST_TEST(e.code().value() == ECONNREFUSED);
  }
}

BOOST_FIXTURE_TEST_CASE(when_the_only_address_fails_that_error_is_thrown, dns_fixture) {
  std::uint16_t p = refused_port();
  try {
    run(net::open_connection(std::vector<net::AddrInfo>{loopback(p)}));
    BOOST_ERROR("connecting to a closed port did not throw");
  } catch (const std::system_error& e) {
    BOOST_TEST(e.code().value() == ECONNREFUSED);
    BOOST_TEST(std::string(e.what()).find("Multiple") == std::string::npos, e.what());
  }
}

// RFC 8305 / asyncio's staggered_race: the second address is tried when the
// first has not connected within the delay, and wins.
BOOST_FIXTURE_TEST_CASE(happy_eyeballs_tries_the_next_address_after_the_delay, dns_fixture) {
  black_hole silent;
  double took = 0;
  auto main = [&]() -> pl::Task<std::string> {
    tagged_server b = co_await tagged_server::start("b");
    net::ConnectOptions o;
    o.happy_eyeballs_delay = 100ms;
    auto start = wall::now();
    std::vector<net::AddrInfo> addrs;
    addrs.push_back(loopback(silent.port));
    addrs.push_back(loopback(b.server.port()));
    net::Stream s = co_await net::open_connection(addrs, o);
    took = ms(wall::now() - start);
    std::string answer = co_await ask(s, "y");
    b.server.close();
    co_await b.server.wait_closed();
    co_return answer;
  };
  int fds_before = open_fds();
  BOOST_TEST(run(main()) == "b:y");
  BOOST_TEST(took >= 95.0);    // the second waited for the delay
  BOOST_TEST(took < 3000.0);   // and did not wait for the silent one to give up
  BOOST_TEST(open_fds() == fds_before);  // the silent attempt's socket was closed
}

// Sequentially, the silent address would hold the connection for the
// kernel's SYN retries (minutes): the happy-eyeballs test above could not
// pass without the staggering. Here the same first address with no delay
// option is still pending after the time happy eyeballs needed.
BOOST_FIXTURE_TEST_CASE(without_happy_eyeballs_a_silent_first_address_holds_the_connect,
                        dns_fixture) {
  black_hole silent;
  auto main = [&]() -> pl::Task<bool> {
    tagged_server b = co_await tagged_server::start("b");
    std::vector<net::AddrInfo> addrs;
    addrs.push_back(loopback(silent.port));
    addrs.push_back(loopback(b.server.port()));
    pl::Future<net::Stream> attempt =
        pl::get_running_loop().create_task(net::open_connection(addrs));
    co_await pl::sleep(300ms);
    bool still_pending = !attempt.done();
    attempt.cancel();
    try {
      co_await attempt;
    } catch (const pl::CancelledError&) {
    }
    b.server.close();
    co_await b.server.wait_closed();
    co_return still_pending;
  };
  BOOST_TEST(run(main()));
}

BOOST_FIXTURE_TEST_CASE(happy_eyeballs_closes_attempts_that_connected_too_late, dns_fixture) {
  auto main = [&]() -> pl::Task<> {
    tagged_server a = co_await tagged_server::start("a");
    tagged_server b = co_await tagged_server::start("b");
    net::ConnectOptions o;
    o.happy_eyeballs_delay = 0ms;  // both start at once: both may connect
    std::vector<net::AddrInfo> addrs;
    addrs.push_back(loopback(a.server.port()));
    addrs.push_back(loopback(b.server.port()));
    net::Stream s = co_await net::open_connection(addrs, o);
    std::string answer = co_await ask(s, "z");
    BOOST_TEST((answer == "a:z" || answer == "b:z"), answer);
    // The loser, if it connected, was closed: its handler saw end of stream.
    for (int i = 0; i < 100 && (a.server.active_connections() + b.server.active_connections()) > 0;
         ++i) {
      co_await pl::sleep(5ms);
    }
    BOOST_TEST(a.server.active_connections() + b.server.active_connections() == 0u);
    BOOST_TEST(*a.connections + *b.connections >= 1);
    a.server.close();
    b.server.close();
    co_await a.server.wait_closed();
    co_await b.server.wait_closed();
  };
  int fds_before = open_fds();
  run(main());
  BOOST_TEST(open_fds() == fds_before);
}

BOOST_FIXTURE_TEST_CASE(cancelling_a_staggered_connect_cancels_every_attempt, dns_fixture) {
  black_hole one, two;
  int fds_before = open_fds();
  auto main = [&]() -> pl::Task<> {
    net::ConnectOptions o;
    o.happy_eyeballs_delay = 20ms;
    std::vector<net::AddrInfo> addrs;
    addrs.push_back(loopback(one.port));
    addrs.push_back(loopback(two.port));
    pl::Future<net::Stream> attempt =
        pl::get_running_loop().create_task(net::open_connection(addrs, o));
    co_await pl::sleep(80ms);  // both attempts are in flight
    attempt.cancel();
    try {
      co_await attempt;
      BOOST_ERROR("a cancelled connect returned a stream");
    } catch (const pl::CancelledError&) {
    }
  };
  run(main());
  BOOST_TEST(open_fds() == fds_before);
}

// asyncio's _interleave_addrinfos: families alternate.
BOOST_FIXTURE_TEST_CASE(interleave_alternates_the_families, dns_fixture) {
  auto v6 = run(net::getaddrinfo("::1", "1", {AF_UNSPEC, SOCK_STREAM, 0, 0}))[0];
  // v4 a, v4 b, v6: tried as a, v6, b. b is refused and v6 has nothing
  // listening (refused too), so the order shows in the error message.
  std::uint16_t pa = refused_port(), pb = refused_port();
  net::ConnectOptions o;
  o.interleave = 1;
  try {
    run(net::open_connection(std::vector<net::AddrInfo>{loopback(pa), loopback(pb), v6}, o));
    BOOST_ERROR("expected every address to be refused");
  } catch (const std::system_error& e) {
    std::string what = e.what();
    auto at_a = what.find(":" + std::to_string(pa));
    auto at_v6 = what.find("[::1]:1");
    auto at_b = what.find(":" + std::to_string(pb));
    BOOST_TEST((at_a != std::string::npos && at_v6 != std::string::npos &&
                at_b != std::string::npos), what);
    BOOST_TEST((at_a < at_v6 && at_v6 < at_b), what);
  }
}

// --- start_server --------------------------------------------------------------------

// CPython test_base_events.py: test_create_server_multiple_hosts-like: every
// address of the host is listened on, on one port.
BOOST_FIXTURE_TEST_CASE(start_server_on_every_interface_listens_on_each_family_on_one_port,
                        dns_fixture) {
  auto main = []() -> pl::Task<> {
    auto handler = [](net::Stream s) -> pl::Task<> {
      std::string line = co_await s.read(100);
      s.write("got " + line);
      co_await s.drain();
      s.close();
    };
    net::Server server = co_await net::start_server(handler, "", 0);
    std::vector<net::Address> all = server.addresses();
    BOOST_REQUIRE(!all.empty());
    bool v4 = false;
    for (const net::Address& a : all) {
      BOOST_TEST(a.port == server.port());
      if (a.host == "0.0.0.0") v4 = true;
    }
    BOOST_TEST(v4);
    for (const net::Address& a : all) {
      std::string host = a.host == "0.0.0.0" ? "127.0.0.1" : "::1";
      net::Stream s = co_await net::open_connection(host, server.port());
      BOOST_TEST(co_await ask(s, host) == "got " + host);
    }
    server.close();
    co_await server.wait_closed();
    BOOST_TEST(!server.is_serving());
  };
  run(main());
}

BOOST_FIXTURE_TEST_CASE(start_server_resolves_a_name, dns_fixture) {
  auto main = []() -> pl::Task<> {
    auto handler = [](net::Stream s) -> pl::Task<> { s.close(); co_return; };
    net::Server server = co_await net::start_server(handler, "localhost", 0);
    BOOST_TEST(server.addresses().size() >= 1u);
    BOOST_TEST(server.address().host == "127.0.0.1");
    server.close();
    co_await server.wait_closed();
  };
  run(main());
}

// A server closed in the same step that started it: its accept task is
// cancelled before its first step, and wait_closed() must still return,
// with the listening socket closed (it used to hang, the socket leaked).
BOOST_FIXTURE_TEST_CASE(a_server_closed_right_after_it_started_closes_its_socket, dns_fixture) {
  int fds_before = open_fds();
  auto main = []() -> pl::Task<> {
    net::ConnectionHandler handler = [](net::Stream s) -> pl::Task<> {
      s.close();
      co_return;
    };
    net::Server server = co_await net::start_server(handler, "127.0.0.1", 0);
    server.close();
    co_await server.wait_closed();
  };
  run(main(), 2s);
  BOOST_TEST(open_fds() == fds_before);
}
