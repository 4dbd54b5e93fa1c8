// The request handling of examples/http_hello (the "http" workload of
// bench/WORKLOADS.md): HTTP/1.1 with keep-alive and pipelining, answering
// `GET /` with a 13-byte "Hello, World!". Shared with tests/net_test.cc, so
// the test checks exactly what the example serves.
//
//   pl::net::Server server = co_await pl::net::start_server(http_hello::serve, "127.0.0.1", 0);
//
// Each request head is taken from the stream's buffer with
// read_until("\r\n\r\n"), which does not suspend while a complete head is
// buffered; write() only queues (the stream sends from a task of its own), so
// the answers to pipelined requests that arrived together leave in one send.
#pragma once

#include <array>
#include <cctype>
#include <cstddef>
#include <exception>
#include <string>
#include <string_view>
#include <system_error>

#include "net/stream.h"
#include "polyloop/polyloop.h"

namespace http_hello {

inline constexpr std::string_view ok_response =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";

inline constexpr std::string_view not_found_response =
    "HTTP/1.1 404 Not Found\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 10\r\n"
    "\r\n"
    "Not Found\n";

inline constexpr std::string_view method_not_allowed_response =
    "HTTP/1.1 405 Method Not Allowed\r\n"
    "Allow: GET, HEAD\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 19\r\n"
    "\r\n"
    "Method Not Allowed\n";

// Sent before the connection is closed.
inline constexpr std::string_view bad_request_response =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 12\r\n"
    "Connection: close\r\n"
    "\r\n"
    "Bad Request\n";

inline constexpr std::size_t max_head = 8 * 1024;     // request line + headers
inline constexpr std::size_t max_body = 1024 * 1024;  // a body is read and ignored

// What one request head asks for.
struct request {
  bool valid = false;       // false: answer 400 and close
  std::string_view method;  // "GET"
  std::string_view target;  // "/"
  bool keep_alive = true;   // HTTP/1.1 unless "Connection: close"; HTTP/1.0 never
  std::size_t content_length = 0;
};

namespace detail {

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9110 5.6.2's tchar: visible ASCII but the delimiters. A table, not a
// search of the delimiters per character (that search, a memchr call per
// byte of the method and of each header name, was a seventh of the http
// server's user-space instructions).
inline constexpr std::array<bool, 256> token_chars = [] {
  std::array<bool, 256> t{};
  constexpr std::string_view delimiters = "()<>@,;:\\\"/[]?={}";
  for (int c = 33; c < 127; ++c) {
    t[static_cast<std::size_t>(c)] =
        delimiters.find(static_cast<char>(c)) == std::string_view::npos;
  }
  return t;
}();

inline bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!token_chars[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}

// A request-target is visible ASCII (RFC 9112 3.2: no whitespace, no
// control characters: a bare CR or a NUL in it is an error, not a path).
inline bool is_target(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 32 || u >= 127) return false;
  }
  return true;
}

// A field value has no control characters but HTAB (RFC 9110 5.5): a bare
// CR or LF in it could be read as a line end by another parser on the way.
inline bool is_field_value(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 32 && c != '\t') || u == 127) return false;
  }
  return true;
}

// Whether a comma-separated header value lists `token`.
inline bool lists(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    std::size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace detail

// Parses a request head: the request line and headers, through the blank line
// ("\r\n\r\n" included). Views point into `head`.
inline request parse_request(std::string_view head) {
  request r;
  std::size_t eol = head.find("\r\n");
  if (eol == std::string_view::npos) return r;
  std::string_view line = head.substr(0, eol);
  std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return r;
  std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) return r;
  r.method = line.substr(0, sp1);
  r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!detail::is_token(r.method) || !detail::is_target(r.target)) return r;
  if (version == "HTTP/1.1") {
    r.keep_alive = true;
  } else if (version == "HTTP/1.0") {
    r.keep_alive = false;  // answered, then closed (no "Connection: keep-alive" here)
  } else {
    return r;
  }
  bool have_length = false;
  std::string_view rest = head.substr(eol + 2);
  while (true) {
    eol = rest.find("\r\n");
    if (eol == std::string_view::npos) return r;  // no blank line: not a head
    std::string_view field = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (field.empty()) break;  // the blank line
    std::size_t colon = field.find(':');
    if (colon == std::string_view::npos) return r;
    std::string_view name = field.substr(0, colon);
    std::string_view value = detail::trim(field.substr(colon + 1));
    if (!detail::is_token(name) || !detail::is_field_value(value)) return r;
    if (detail::iequals(name, "Connection")) {
      if (detail::lists(value, "close")) r.keep_alive = false;
    } else if (detail::iequals(name, "Content-Length")) {
      std::size_t n = 0;
      if (value.empty() || value.size() > 18) return r;
      for (char c : value) {
        if (c < '0' || c > '9') return r;
        n = n * 10 + static_cast<std::size_t>(c - '0');
      }
      if (have_length && n != r.content_length) return r;
      have_length = true;
      r.content_length = n;
    } else if (detail::iequals(name, "Transfer-Encoding")) {
      return r;  // chunked request bodies are not supported: 400
    }
  }
  if (!rest.empty()) return r;  // bytes after the blank line: not one head
  r.valid = true;
  return r;
}

// The answer to a valid request (without the body for HEAD).
inline std::string_view response_for(const request& r) {
  if (r.method != "GET" && r.method != "HEAD") return method_not_allowed_response;
  return r.target == "/" ? ok_response : not_found_response;
}

// Serves one connection until the client closes it, asks to, or sends
// something that is not an HTTP/1.x request (400, then close).
inline polyloop::Task<> serve(polyloop::net::Stream s) {
  namespace net = polyloop::net;
  try {
    s.set_nodelay(true);
    while (true) {
      std::string head;
      try {
        head = co_await s.read_until("\r\n\r\n", max_head);
      } catch (const net::IncompleteReadError&) {
        break;  // the client closed, between requests or inside a head
      } catch (const net::LimitOverrunError&) {
        s.write(bad_request_response);
        break;
      }
      request r = parse_request(head);
      if (!r.valid || r.content_length > max_body) {
        s.write(bad_request_response);
        break;
      }
      if (r.content_length > 0) {
        try {
          co_await s.read_exactly(r.content_length);  // ignored
        } catch (const net::IncompleteReadError&) {
          break;
        }
      }
      std::string_view answer = response_for(r);
      if (r.method == "HEAD") answer = answer.substr(0, answer.find("\r\n\r\n") + 4);
      s.write(answer);
      if (!r.keep_alive) break;
      // Waits only when the client stopped reading a while ago (drain()
      // returns at once below the high-water mark: with nothing queued, as
      // after nearly every answer, it is not called, which saves a
      // coroutine frame per request).
      if (s.write_buffer_size() > 0) co_await s.drain();
    }
  } catch (const std::system_error&) {
    // Reset by the client, or a send failed: nobody to answer.
  }
  s.close();
  try {
    co_await s.wait_closed();
  } catch (const std::system_error&) {
    // The last answers could not be delivered: the client is gone.
  }
}

}  // namespace http_hello
