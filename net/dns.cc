#include "net/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "core/executor/executor.h"
#include "net/detail/sockets.h"

namespace polyloop::net {

namespace {

class gai_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int code) const override { return ::gai_strerror(code); }
};

struct addrinfo_list {
  addrinfo* head = nullptr;
  ~addrinfo_list() {
    if (head != nullptr) ::freeaddrinfo(head);
  }
};

// getaddrinfo(3) with `extra_flags` added; the answers, or the EAI_* code
// (with errno for EAI_SYSTEM) in `err`.
std::vector<AddrInfo> lookup(const std::string& host, const std::string& service,
                             const AddrInfoHints& h, int extra_flags, std::error_code& err) {
  addrinfo hints{};
  hints.ai_family = h.family;
  hints.ai_socktype = h.socktype;
  hints.ai_protocol = h.protocol;
  hints.ai_flags = h.flags | extra_flags;
  addrinfo_list list;
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(),
                         service.empty() ? nullptr : service.c_str(), &hints, &list.head);
  std::vector<AddrInfo> out;
  if (rc != 0) {
    err = rc == EAI_SYSTEM ? std::error_code(errno, std::generic_category())
                           : std::error_code(rc, gai_category());
    return out;
  }
  for (addrinfo* ai = list.head; ai != nullptr; ai = ai->ai_next) {
    AddrInfo a;
    a.family = ai->ai_family;
    a.socktype = ai->ai_socktype;
    a.protocol = ai->ai_protocol;
    a.addrlen = ai->ai_addrlen;
    std::memcpy(&a.addr, ai->ai_addr, ai->ai_addrlen);
    if (ai->ai_canonname != nullptr) a.canonname = ai->ai_canonname;
    out.push_back(std::move(a));
  }
  return out;
}

[[noreturn]] void throw_lookup_error(std::error_code err, const std::string& host) {
  throw std::system_error(err, "cannot resolve '" + host + "'");
}

// Under the sim backend: "localhost" as ::1 and 127.0.0.1 (those the
// hints allow), any other name EAI_NONAME, saying why.
std::vector<AddrInfo> simulated_lookup(const std::string& host, const std::string& service,
                                       const AddrInfoHints& hints) {
  std::vector<AddrInfo> out;
  if (host == "localhost") {
    for (const char* loopback : {"::1", "127.0.0.1"}) {
      std::error_code err;
      std::vector<AddrInfo> found = lookup(loopback, service, hints, AI_NUMERICHOST, err);
      out.insert(out.end(), found.begin(), found.end());
    }
  }
  if (out.empty()) {
    throw std::system_error(std::error_code(EAI_NONAME, gai_category()),
                            "cannot resolve '" + host +
                                "' on a simulated network (only numeric addresses and "
                                "'localhost' resolve there)");
  }
  return out;
}

}  // namespace

const std::error_category& gai_category() noexcept {
  static const gai_error_category category;
  return category;
}

Address AddrInfo::address() const {
  Address a;
  char text[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    a.port = ntohs(in->sin_port);
  } else if (family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    a.port = ntohs(in6->sin6_port);
  }
  a.host = text;
  return a;
}

Task<std::vector<AddrInfo>> getaddrinfo(std::string host, std::string service,
                                        AddrInfoHints hints) {
  // A numeric host needs no lookup: answered here, without a thread (asyncio
  // takes the same shortcut). A numeric host that getaddrinfo rejects still
  // goes to the thread, to get its real error.
  if (host.empty() || (hints.flags & AI_NUMERICHOST) != 0) {
    std::error_code err;
    std::vector<AddrInfo> out = lookup(host, service, hints, 0, err);
    if (err) throw_lookup_error(err, host);
    co_return out;
  }
  {
    std::error_code err;
    std::vector<AddrInfo> out = lookup(host, service, hints, AI_NUMERICHOST, err);
    if (!err) co_return out;
  }
  // A simulated network (the sim backend) has no resolver and no real
  // time for a thread: "localhost" is its loopback, any other name unknown.
  if (&detail::sockets() != &polyloop::detail::system_socket_calls::instance()) {
    co_return simulated_lookup(host, service, hints);
  }
  struct answer {
    std::vector<AddrInfo> found;
    std::error_code err;
  };
  // A named callable, not a temporary lambda inside the co_await: GCC 12
  // miscompiles the captured strings of the latter (a double free, seen
  // with ASan).
  auto resolve_on_thread = [host, service, hints] {
    answer on_thread;
    on_thread.found = lookup(host, service, hints, 0, on_thread.err);
    return on_thread;
  };
  Future<answer> pending = to_thread(std::move(resolve_on_thread));
  answer a = std::move(co_await pending);
  if (a.err) throw_lookup_error(a.err, host);
  co_return std::move(a.found);
}

Task<std::pair<std::string, std::string>> getnameinfo(AddrInfo address, int flags) {
  auto names_on_thread = [address, flags]() -> std::pair<std::string, std::string> {
    char host[NI_MAXHOST] = {};
    char service[NI_MAXSERV] = {};
    int rc = ::getnameinfo(reinterpret_cast<const sockaddr*>(&address.addr), address.addrlen,
                           host, sizeof host, service, sizeof service, flags);
    if (rc != 0) {
      std::error_code err = rc == EAI_SYSTEM ? std::error_code(errno, std::generic_category())
                                             : std::error_code(rc, gai_category());
      throw std::system_error(err, "getnameinfo(" + address.address().to_string() + ")");
    }
    return {host, service};
  };
  Future<std::pair<std::string, std::string>> pending = to_thread(std::move(names_on_thread));
  std::pair<std::string, std::string> found = std::move(co_await pending);
  co_return found;
}

}  // namespace polyloop::net
