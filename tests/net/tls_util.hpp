// A self-signed certificate made in the test with BoringSSL (no committed keys): EC P-256, valid for
// one day, subjectAltName IP:127.0.0.1 and DNS:localhost.
#ifndef COGRID_TESTS_TLS_UTIL_HPP
#define COGRID_TESTS_TLS_UTIL_HPP

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdexcept>
#include <string>

namespace cogrid_test {

struct test_cert {
  std::string cert_pem, key_pem;
};

inline std::string bio_string(BIO* b) {
  const std::uint8_t* data = nullptr;
  std::size_t len = 0;
  BIO_mem_contents(b, &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

inline test_cert make_test_cert(const char* common_name = "cogrid-test") {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  if (!ec || !EC_KEY_generate_key(ec.get())) throw std::runtime_error("EC key");
  bssl::UniquePtr<EVP_PKEY> pkey(EVP_PKEY_new());
  EVP_PKEY_assign_EC_KEY(pkey.get(), ec.release());
  bssl::UniquePtr<X509> x(X509_new());
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 24 * 3600);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const std::uint8_t*>(common_name), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509_set_pubkey(x.get(), pkey.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
    if (!ext || !X509_add_ext(x.get(), ext.get(), -1)) throw std::runtime_error("X509 extension");
  }
  if (!X509_sign(x.get(), pkey.get(), EVP_sha256())) throw std::runtime_error("X509_sign");
  bssl::UniquePtr<BIO> cb(BIO_new(BIO_s_mem())), kb(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(cb.get(), x.get());
  PEM_write_bio_PrivateKey(kb.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr);
  return {bio_string(cb.get()), bio_string(kb.get())};
}

} // namespace cogrid_test

#endif // COGRID_TESTS_TLS_UTIL_HPP
