#include "tools/certs/self_signed.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <stdexcept>
#include <utility>

namespace polyloop::tools {

namespace {

struct free_key {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct free_cert {
  void operator()(X509* x) const { X509_free(x); }
};
struct free_bio {
  void operator()(BIO* b) const { BIO_free(b); }
};

void check(bool ok, const char* call) {
  if (!ok) throw std::runtime_error(std::string("make_self_signed: ") + call + " failed");
}

// What a memory BIO holds, after `write` filled it.
template <class Write>
std::string pem_text(Write write, const char* call) {
  std::unique_ptr<BIO, free_bio> b(BIO_new(BIO_s_mem()));
  check(b != nullptr && write(b.get()) == 1, call);
  char* data = nullptr;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

}  // namespace

self_signed_pem make_self_signed(const std::string& cn, const std::string& san) {
  static long serial = 1;  // distinct serials: a client may cache by issuer and serial
  std::unique_ptr<EVP_PKEY, free_key> key(EVP_EC_gen("P-256"));
  check(key != nullptr, "EVP_EC_gen(P-256)");
  std::unique_ptr<X509, free_cert> x(X509_new());
  check(x != nullptr, "X509_new");
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 86400);
  check(X509_set_pubkey(x.get(), key.get()) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(x.get());
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                   0) == 1,
        "X509_NAME_add_entry_by_txt(CN)");
  X509_set_issuer_name(x.get(), name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x.get(), x.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, san.c_str()},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    check(ext != nullptr, "X509V3_EXT_conf_nid (is the subjectAltName well formed?)");
    X509_add_ext(x.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  check(X509_sign(x.get(), key.get(), EVP_sha256()) > 0, "X509_sign");
  self_signed_pem out;
  out.cert_pem = pem_text([&](BIO* b) { return PEM_write_bio_X509(b, x.get()); },
                          "PEM_write_bio_X509");
  out.key_pem = pem_text(
      [&](BIO* b) {
        return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
      },
      "PEM_write_bio_PrivateKey");
  return out;
}

}  // namespace polyloop::tools
