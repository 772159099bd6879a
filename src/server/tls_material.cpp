#include "server/tls_material.hpp"

#include "base/crypto.hpp"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>

namespace hub::server {
namespace fs = std::filesystem;

namespace {

template <auto Free>
struct deleter {
  template <class T>
  void operator()(T* p) const noexcept { Free(p); }
};
using x509_ptr = std::unique_ptr<X509, deleter<X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY_free>>;
using bio_ptr = std::unique_ptr<BIO, deleter<BIO_free>>;
using name_ptr = std::unique_ptr<X509_NAME, deleter<X509_NAME_free>>;
using general_names_ptr = std::unique_ptr<GENERAL_NAMES, deleter<GENERAL_NAMES_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, deleter<BN_free>>;

constexpr int ca_days = 3650;
constexpr int server_days = 825;
constexpr std::int64_t renew_before_seconds = 30LL * 24 * 3600;
// Certificates start an hour in the past so a client whose clock lags a little still accepts them.
constexpr long backdate_seconds = 3600;

// The oldest OpenSSL error, as text, and an empty queue for the next call.
std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

[[noreturn]] void fail(std::string message) {
  ERR_clear_error();
  throw startup_error(std::move(message));
}

void check(bool ok, std::string_view what) {
  if (!ok) fail(fmt::format("cannot create certificate: {}: {}", what, openssl_error()));
}

bio_ptr memory_bio(const std::string& text) {
  bio_ptr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  check(bio != nullptr, "BIO_new_mem_buf");
  return bio;
}

// The first certificate in a PEM file (the leaf of a chain file).
x509_ptr load_cert(const fs::path& file) {
  const std::string text = read_file(file);
  auto bio = memory_bio(text);
  x509_ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) fail(fmt::format("{} is not a PEM certificate ({})", file.string(), openssl_error()));
  return cert;
}

pkey_ptr load_key(const fs::path& file) {
  const std::string text = read_file(file);
  auto bio = memory_bio(text);
  // An empty passphrase callback: an encrypted key fails here instead of prompting on the terminal.
  pkey_ptr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!key) fail(fmt::format("{} is not an unencrypted PEM private key ({})", file.string(), openssl_error()));
  return key;
}

std::string to_pem(X509* cert) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  check(bio && PEM_write_bio_X509(bio.get(), cert) == 1, "PEM_write_bio_X509");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string to_pem(EVP_PKEY* key) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  check(bio && PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

pkey_ptr new_p256_key() {
  pkey_ptr key(EVP_EC_gen("P-256"));
  check(key != nullptr, "EVP_EC_gen(P-256)");
  return key;
}

std::string name_text(const X509_NAME* name) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::time_t to_time_t(sys_time t) { return std::chrono::system_clock::to_time_t(t); }

// A fresh certificate with a random positive 128-bit serial, validity [now - 1 h, now + days].
x509_ptr new_cert(std::string_view common_name, EVP_PKEY* key, sys_time now, int days) {
  x509_ptr cert(X509_new());
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert.get(), 2) == 1, "X509_set_version");  // v3

  unsigned char serial[16];
  check(RAND_bytes(serial, sizeof serial) == 1, "RAND_bytes");
  serial[0] &= 0x7f;  // positive
  serial[0] |= 0x01;  // and never a leading zero byte
  bignum_ptr bn(BN_bin2bn(serial, sizeof serial, nullptr));
  check(bn && BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) != nullptr, "serial number");

  const std::time_t t = to_time_t(now);
  check(ASN1_TIME_adj(X509_getm_notBefore(cert.get()), t, 0, -backdate_seconds) != nullptr, "notBefore");
  check(ASN1_TIME_adj(X509_getm_notAfter(cert.get()), t, days, 0) != nullptr, "notAfter");

  X509_NAME* subject = X509_get_subject_name(cert.get());
  // A CN is at most 64 characters (RFC 5280 ub-common-name); the SANs carry the full names.
  const std::string cn(common_name.substr(0, 64));
  check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                                   static_cast<int>(cn.size()), -1, 0) == 1,
        "subject CN");
  check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
  return cert;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  check(ext != nullptr, OBJ_nid2sn(nid));
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  check(ok == 1, OBJ_nid2sn(nid));
}

void sign(X509* cert, EVP_PKEY* key) {
  // EdDSA keys (a CA someone brought) sign without a separate digest.
  const int id = EVP_PKEY_get_id(key);
  const EVP_MD* md = (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) ? nullptr : EVP_sha256();
  check(X509_sign(cert, key, md) > 0, "X509_sign");
}

std::string random_hex(std::size_t bytes) {
  const std::string raw = crypto::random_bytes(bytes);
  std::string out;
  for (unsigned char c : raw) out += fmt::format("{:02x}", c);
  return out;
}

bool is_wildcard(const std::string& address) {
  return address.empty() || address == "::" || address == "0.0.0.0" || address == "[::]";
}

// Normalises an IP literal ("0:0::1" -> "::1") so equal addresses compare equal.
std::string canonical_ip(const std::string& text) {
  unsigned char buf[16];
  char out[INET6_ADDRSTRLEN];
  if (::inet_pton(AF_INET, text.c_str(), buf) == 1 && ::inet_ntop(AF_INET, buf, out, sizeof out)) return out;
  if (::inet_pton(AF_INET6, text.c_str(), buf) == 1 && ::inet_ntop(AF_INET6, buf, out, sizeof out)) return out;
  return text;
}

GENERAL_NAMES* make_alt_names(const std::vector<std::string>& sans) {
  general_names_ptr names(sk_GENERAL_NAME_new_null());
  check(names != nullptr, "subjectAltName");
  for (const std::string& san : sans) {
    GENERAL_NAME* gn = nullptr;
    if (san.starts_with("IP:")) {
      ASN1_OCTET_STRING* ip = a2i_IPADDRESS(san.c_str() + 3);
      check(ip != nullptr, "subjectAltName IP");
      gn = GENERAL_NAME_new();
      check(gn != nullptr, "GENERAL_NAME_new");
      GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    } else {
      const std::string dns = san.substr(4);  // "DNS:"
      ASN1_IA5STRING* s = ASN1_IA5STRING_new();
      check(s && ASN1_STRING_set(s, dns.data(), static_cast<int>(dns.size())) == 1, "subjectAltName DNS");
      gn = GENERAL_NAME_new();
      check(gn != nullptr, "GENERAL_NAME_new");
      GENERAL_NAME_set0_value(gn, GEN_DNS, s);
    }
    check(sk_GENERAL_NAME_push(names.get(), gn) > 0, "subjectAltName");
  }
  return names.release();
}

std::vector<std::string> alt_names_of(X509* cert) {
  std::vector<std::string> out;
  general_names_ptr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_DNS) {
      const ASN1_IA5STRING* s = gn->d.dNSName;
      out.push_back("DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                         static_cast<std::size_t>(ASN1_STRING_length(s))));
    } else if (gn->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = gn->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      const int len = ASN1_STRING_length(ip);
      const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : AF_UNSPEC;
      if (family != AF_UNSPEC && ::inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof text))
        out.push_back(std::string("IP:") + text);
    }
  }
  return out;
}

struct ca_material {
  x509_ptr cert;
  pkey_ptr key;
  std::string chain_pem;  // all of ca.pem, appended to server.pem
  bool created = false;
};

// "2026-11-26 13:04:05 UTC", or "?" when OpenSSL cannot read the time.
std::string time_text(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// The CA signs the server certificate every client checks: one outside its validity period makes
// every TLS handshake fail, so the start does; one about to expire is worth a warning.
void check_ca_validity(X509* cert, const fs::path& file, sys_time now, std::vector<std::string>& warnings) {
  std::time_t t = to_time_t(now);
  const ASN1_TIME* not_before = X509_get0_notBefore(cert);
  const ASN1_TIME* not_after = X509_get0_notAfter(cert);
  if (X509_cmp_time(not_before, &t) > 0)
    fail(fmt::format("{} is not valid before {} (check the clock, or bring a CA that is valid now)", file.string(),
                     time_text(not_before)));
  if (X509_cmp_time(not_after, &t) <= 0)
    fail(fmt::format("{} expired on {}: clients refuse every certificate it signs (bring a new ca.pem and ca.key, or "
                     "remove both to create a new CA, which clients must then trust)",
                     file.string(), time_text(not_after)));
  std::time_t soon = t + renew_before_seconds;
  if (X509_cmp_time(not_after, &soon) <= 0)
    warnings.push_back(fmt::format("{} expires on {}: replace the CA before then", file.string(), time_text(not_after)));
}

// The permission bits of `file` other than the owner's (0 when it cannot be read: the load
// reports that).
mode_t group_other_bits(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return 0;
  return st.st_mode & (S_IRWXG | S_IRWXO);
}

// The CA key someone brought (hubd writes its own 0600): other users' access refuses the start,
// as sshd and PostgreSQL refuse such keys; the group's access is a warning, for deployments that
// share keys with a group on purpose (Debian's ssl-cert group).
void check_ca_key_permissions(const fs::path& file, std::vector<std::string>& warnings) {
  const mode_t bits = group_other_bits(file);
  if (bits & S_IRWXO)
    fail(fmt::format("{} is accessible by other users (mode {:04o}): chmod 600 {}", file.string(), bits, file.string()));
  if (bits & S_IRWXG)
    warnings.push_back(fmt::format("{} is accessible by its group (mode {:04o}): chmod 600 {} unless the group needs it",
                                   file.string(), bits, file.string()));
}

ca_material create_ca(const data_layout& layout, sys_time now) {
  ca_material ca;
  ca.key = new_p256_key();
  ca.cert = new_cert("hubd local CA " + random_hex(4), ca.key.get(), now, ca_days);
  check(X509_set_issuer_name(ca.cert.get(), X509_get_subject_name(ca.cert.get())) == 1, "issuer");
  add_ext(ca.cert.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  add_ext(ca.cert.get(), ca.cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(ca.cert.get(), ca.cert.get(), NID_subject_key_identifier, "hash");
  add_ext(ca.cert.get(), ca.cert.get(), NID_authority_key_identifier, "keyid:always");
  sign(ca.cert.get(), ca.key.get());
  ca.chain_pem = to_pem(ca.cert.get());
  // The key first: a crash between the two writes leaves no certificate whose key is lost.
  write_file_atomic(layout.ca_key(), to_pem(ca.key.get()), 0600);
  write_file_atomic(layout.ca_cert(), ca.chain_pem, 0644);
  ca.created = true;
  return ca;
}

ca_material ensure_ca(const data_layout& layout, sys_time now, std::vector<std::string>& warnings) {
  std::error_code ec;
  const bool have_cert = fs::exists(layout.ca_cert(), ec);
  const bool have_key = fs::exists(layout.ca_key(), ec);
  if (!have_cert && !have_key) return create_ca(layout, now);
  // Never replace half of a CA: clients may already trust ca.pem, or the user brought the key.
  if (!have_key)
    fail(fmt::format("{} exists but {} is missing (bring both, or remove both to create a new CA)",
                     layout.ca_cert().string(), layout.ca_key().string()));
  if (!have_cert)
    fail(fmt::format("{} exists but {} is missing (bring both, or remove both to create a new CA)",
                     layout.ca_key().string(), layout.ca_cert().string()));

  ca_material ca;
  ca.cert = load_cert(layout.ca_cert());
  ca.key = load_key(layout.ca_key());
  ca.chain_pem = read_file(layout.ca_cert());
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1)
    fail(fmt::format("{} does not match {}", layout.ca_key().string(), layout.ca_cert().string()));
  if (X509_check_ca(ca.cert.get()) == 0)
    fail(fmt::format("{} is not a CA certificate (basicConstraints CA:TRUE missing)", layout.ca_cert().string()));
  check_ca_validity(ca.cert.get(), layout.ca_cert(), now, warnings);
  check_ca_key_permissions(layout.ca_key(), warnings);
  if (!ca.chain_pem.ends_with('\n')) ca.chain_pem += '\n';
  ERR_clear_error();
  return ca;
}

// Why the current server certificate must be replaced; empty when it still fits.
std::string server_cert_problem(const data_layout& layout, const ca_material& ca,
                                const std::vector<std::string>& sans, sys_time now) {
  std::error_code ec;
  if (!fs::exists(layout.server_cert(), ec)) return "server.pem is missing";
  if (!fs::exists(layout.server_key(), ec)) return "server.key is missing";
  // hubd's own key: one that others could read may have leaked, so it is replaced, not refused.
  if (const mode_t bits = group_other_bits(layout.server_key()); bits != 0)
    return fmt::format("server.key is accessible by group or other users (mode {:04o})", bits);
  x509_ptr cert = load_cert(layout.server_cert());
  pkey_ptr key = load_key(layout.server_key());
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return "server.key does not match server.pem";
  }
  EVP_PKEY* ca_public = X509_get0_pubkey(ca.cert.get());
  if (X509_check_issued(ca.cert.get(), cert.get()) != X509_V_OK || X509_verify(cert.get(), ca_public) != 1) {
    ERR_clear_error();
    return "server.pem is not signed by the current CA";
  }
  // Issued "in the future" (a clock that went back, a copied data folder): clients would refuse it.
  std::time_t now_t = to_time_t(now);
  if (X509_cmp_time(X509_get0_notBefore(cert.get()), &now_t) > 0) return "server.pem is not valid yet";
  std::time_t renew_at = to_time_t(now) + renew_before_seconds;
  if (X509_cmp_time(X509_get0_notAfter(cert.get()), &renew_at) <= 0) return "server.pem expires within 30 days";
  for (const std::string& san : sans) {
    const bool ok = san.starts_with("IP:")
                        ? X509_check_ip_asc(cert.get(), san.c_str() + 3, 0) == 1
                        : X509_check_host(cert.get(), san.data() + 4, san.size() - 4,
                                          X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
    if (!ok) return fmt::format("server.pem does not cover {}", san);
  }
  return {};
}

void issue_server_cert(const data_layout& layout, const ca_material& ca, const std::string& host_name,
                       const std::vector<std::string>& sans, sys_time now) {
  pkey_ptr key = new_p256_key();
  x509_ptr cert = new_cert(host_name, key.get(), now, server_days);
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get())) == 1, "issuer");
  add_ext(cert.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(cert.get(), ca.cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_ext(cert.get(), ca.cert.get(), NID_ext_key_usage, "serverAuth");
  add_ext(cert.get(), ca.cert.get(), NID_subject_key_identifier, "hash");
  // keyid only when the CA has one (a CA someone brought may not).
  add_ext(cert.get(), ca.cert.get(), NID_authority_key_identifier, "keyid,issuer");
  general_names_ptr names(make_alt_names(sans));
  check(X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) == 1, "subjectAltName");
  sign(cert.get(), ca.key.get());
  // The key first: a crash in between leaves a mismatched pair, which the next start reissues.
  write_file_atomic(layout.server_key(), to_pem(key.get()), 0600);
  write_file_atomic(layout.server_cert(), to_pem(cert.get()) + ca.chain_pem, 0644);
}

}  // namespace

bool is_ip_literal(const std::string& text) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, text.c_str(), buf) == 1 || ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

std::vector<std::string> required_alt_names(const tls_names& names) {
  std::vector<std::string> out;
  auto add = [&](std::string san) {
    if (std::find(out.begin(), out.end(), san) == out.end()) out.push_back(std::move(san));
  };
  auto add_host = [&](const std::string& host) {
    if (is_ip_literal(host)) {
      add("IP:" + canonical_ip(host));
    } else {
      add("DNS:" + host);
    }
  };
  if (!names.host_name.empty()) add_host(names.host_name);
  add("DNS:localhost");
  add("IP:127.0.0.1");
  add("IP:::1");
  for (const std::string& address : names.addresses) {
    if (!is_wildcard(address)) add_host(address);
  }
  return out;
}

tls_report ensure_tls_material(const data_layout& layout, const tls_names& names, sys_time now) {
  ERR_clear_error();
  tls_report report;
  ca_material ca = ensure_ca(layout, now, report.warnings);
  report.ca_created = ca.created;
  report.ca_subject = name_text(X509_get_subject_name(ca.cert.get()));

  const std::vector<std::string> sans = required_alt_names(names);
  report.reason = server_cert_problem(layout, ca, sans, now);
  if (!report.reason.empty()) {
    issue_server_cert(layout, ca, names.host_name.empty() ? std::string("localhost") : names.host_name, sans, now);
    report.server_cert_issued = true;
  }
  x509_ptr cert = load_cert(layout.server_cert());
  report.subject_alt_names = alt_names_of(cert.get());
  const ASN1_TIME* not_after = X509_get0_notAfter(cert.get());
  std::tm tm{};
  if (ASN1_TIME_to_tm(not_after, &tm) == 1) report.server_not_after = std::chrono::system_clock::from_time_t(timegm(&tm));
  ERR_clear_error();
  return report;
}

}  // namespace hub::server
