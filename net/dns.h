// Name resolution off the loop's thread: asyncio's loop.getaddrinfo() and
// loop.getnameinfo().
//
//   for (const pl::net::AddrInfo& a : co_await pl::net::getaddrinfo("example.org", "443"))
//     std::cout << a.address().to_string() << "\n";
//
// getaddrinfo(3) blocks (it may ask a DNS server), so a name is resolved on
// a thread of the loop's default executor (core/executor) and the loop runs
// on meanwhile. A numeric host ("127.0.0.1", "::1") or an empty one needs no
// lookup and answers on the loop's thread. Cancelling the awaiting task stops
// the wait; the lookup itself cannot be stopped, and its answer is dropped.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "core/task/task.h"

namespace polyloop::net {

// An endpoint: host and port, or a Unix-domain path.
struct Address {
  std::string host;  // "127.0.0.1", "::1"; empty for a Unix path
  std::uint16_t port = 0;
  std::string path;  // Unix domain
  std::string to_string() const;
};

// One answer of getaddrinfo (asyncio's 5-tuple).
struct AddrInfo {
  int family = AF_UNSPEC;  // AF_INET, AF_INET6
  int socktype = 0;        // SOCK_STREAM, SOCK_DGRAM
  int protocol = 0;
  sockaddr_storage addr{};
  socklen_t addrlen = 0;
  std::string canonname;  // with AI_CANONNAME, on the first answer
  // The address as host and port.
  Address address() const;
};

// What getaddrinfo(3)'s hints say; the defaults ask for every family and type.
struct AddrInfoHints {
  int family = AF_UNSPEC;
  int socktype = 0;
  int protocol = 0;
  int flags = 0;  // AI_PASSIVE, AI_CANONNAME, AI_NUMERICHOST, ...
};

// The error category of getaddrinfo's EAI_* codes (asyncio's socket.gaierror):
// message() is gai_strerror's. EAI_SYSTEM is reported as the errno instead.
const std::error_category& gai_category() noexcept;

// Resolves `host` and `service` (a port number or a name from
// /etc/services). Throws std::system_error in gai_category() naming the host
// ("cannot resolve 'no.such.host': Name or service not known").
Task<std::vector<AddrInfo>> getaddrinfo(std::string host, std::string service,
                                        AddrInfoHints hints = {});

// The host and service names of an address (getnameinfo(3), NI_* flags),
// resolved off the loop's thread as getaddrinfo is.
Task<std::pair<std::string, std::string>> getnameinfo(AddrInfo address, int flags = 0);

}  // namespace polyloop::net
