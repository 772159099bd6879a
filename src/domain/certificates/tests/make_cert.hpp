#pragma once
// Test helper shared by the certificates and HTTP tests: certificates made with OpenSSL's APIs,
// so no test depends on files or on the openssl command.
#include "base/clock.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>

namespace hub::certificates::testing {

using namespace std::chrono_literals;

struct key_free {
  void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct cert_free {
  void operator()(X509* c) const noexcept { X509_free(c); }
};
using key_ptr = std::shared_ptr<EVP_PKEY>;
using cert_ptr = std::shared_ptr<X509>;

inline key_ptr new_key() {
  key_ptr k(EVP_EC_gen("P-256"), key_free{});
  if (!k) throw std::runtime_error("EVP_EC_gen");
  return k;
}

// A certificate and its key: what an owner holds.
struct issued {
  cert_ptr cert;
  key_ptr key;

  std::string der() const {
    unsigned char* buf = nullptr;
    const int n = i2d_X509(cert.get(), &buf);
    std::string out(reinterpret_cast<char*>(buf), static_cast<std::size_t>(n));
    OPENSSL_free(buf);
    return out;
  }
  std::string pem() const {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
    PEM_write_bio_X509(bio.get(), cert.get());
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  }
  std::string key_pem() const {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  }
};

struct cert_spec {
  std::string cn;
  bool ca = false;
  std::chrono::seconds not_before = -1h;  // relative to `now`
  std::chrono::seconds not_after = 24h * 365;
  bool v1 = false;                        // no extensions at all, as `openssl x509 -req` makes them
};

inline void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) throw std::runtime_error("X509V3_EXT_conf_nid");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// Issues a certificate for a fresh key, signed by `issuer` (self-signed when null).
inline issued make_cert(const cert_spec& spec, sys_time now, const issued* issuer = nullptr) {
  issued out{cert_ptr(X509_new(), cert_free{}), new_key()};
  X509* c = out.cert.get();
  X509_set_version(c, spec.v1 ? 0 : 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] = (serial[0] & 0x7f) | 0x01;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c));
  BN_free(bn);
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  ASN1_TIME_adj(X509_getm_notBefore(c), t, 0, static_cast<long>(spec.not_before.count()));
  ASN1_TIME_adj(X509_getm_notAfter(c), t, 0, static_cast<long>(spec.not_after.count()));
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("hubd tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer->cert.get()) : name);
  X509_set_pubkey(c, out.key.get());
  X509* issuer_cert = issuer ? issuer->cert.get() : c;
  if (!spec.v1) {
    add_ext(c, issuer_cert, NID_basic_constraints, spec.ca ? "critical,CA:TRUE" : "CA:FALSE");
    add_ext(c, issuer_cert, NID_key_usage, spec.ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_ext(c, issuer_cert, NID_subject_key_identifier, "hash");
    add_ext(c, issuer_cert, NID_authority_key_identifier, "keyid:always");
  }
  if (X509_sign(c, issuer ? issuer->key.get() : out.key.get(), EVP_sha256()) <= 0)
    throw std::runtime_error("X509_sign");
  return out;
}

}  // namespace hub::certificates::testing
