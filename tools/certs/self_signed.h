// A self-signed ECDSA P-256 certificate and its key, made in memory: for
// tests and benchmarks that need a TLS server, never for production.
#pragma once

#include <string>

namespace polyloop::tools {

struct self_signed_pem {
  std::string cert_pem;
  std::string key_pem;
};

// A certificate for common name `cn` with subjectAltName `san` (OpenSSL's
// syntax: "DNS:localhost,IP:127.0.0.1"), valid from an hour ago for a day,
// marked as a CA so that it can verify itself. Throws std::runtime_error
// naming the OpenSSL call that failed.
self_signed_pem make_self_signed(const std::string& cn, const std::string& san);

}  // namespace polyloop::tools
