// libFuzzer target: the request-head parser of examples/http_hello
// (http_hello::parse_request and response_for). The input is one head as
// read_until("\r\n\r\n") would hand it over, or anything else.
//
// Checks, beyond "no crash, no sanitizer finding": a head accepted as valid
// ends at its only blank line, has no bare CR, LF or NUL, its method is a
// token and its target visible ASCII, both viewing into the input; the
// answer is one of the server's.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "examples/http_hello_handler.h"

namespace {
void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http_request_fuzzer: %s\n", what);
    std::abort();
  }
}

bool inside(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view head(reinterpret_cast<const char*>(data), size);
  http_hello::request r = http_hello::parse_request(head);
  if (!r.valid) return 0;
  require(head.find("\r\n\r\n") == head.size() - 4, "valid head not ending at its blank line");
  require(!r.method.empty() && inside(r.method, head), "method not a view into the head");
  require(!r.target.empty() && inside(r.target, head), "target empty or not in the head");
  for (char c : r.target) {
    auto u = static_cast<unsigned char>(c);
    require(u > 32 && u < 127, "target with whitespace or a control character");
  }
  // Every line of a valid head ends in CRLF; no bare CR, LF or NUL anywhere
  // (another parser could end a line there: request smuggling).
  for (std::size_t i = 0; i < head.size(); ++i) {
    require(head[i] != '\0', "NUL in a valid head");
    if (head[i] == '\r')
      require(i + 1 < head.size() && head[i + 1] == '\n', "bare CR in a valid head");
    if (head[i] == '\n') require(i > 0 && head[i - 1] == '\r', "bare LF in a valid head");
  }
  std::string_view answer = http_hello::response_for(r);
  require(answer == http_hello::ok_response || answer == http_hello::not_found_response ||
              answer == http_hello::method_not_allowed_response,
          "answer not one of the server's");
  return 0;
}
