#include "domain/certificates/x509.hpp"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include <chrono>
#include <ctime>
#include <limits>

namespace hub::certificates::detail {

x509_ptr from_der(std::string_view der) {
  if (der.empty() || der.size() > static_cast<std::size_t>(std::numeric_limits<long>::max())) return nullptr;
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  const auto* const end = p + der.size();
  x509_ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  // Trailing bytes would let two different inputs map to one certificate (and one thumbprint).
  if (!cert || p != end) {
    ERR_clear_error();
    return nullptr;
  }
  return cert;
}

std::string to_der(const X509* cert) {
  unsigned char* buf = nullptr;
  const int n = i2d_X509(cert, &buf);
  if (n <= 0) {
    ERR_clear_error();
    return {};
  }
  std::string out(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  OPENSSL_free(buf);
  return out;
}

std::string name_text(const X509_NAME* name) {
  std::unique_ptr<BIO, deleter<BIO_free>> bio(BIO_new(BIO_s_mem()));
  // RFC 2253 without escaping non-ASCII bytes, and ", " between RDNs like .NET.
  constexpr unsigned long flags = ((XN_FLAG_RFC2253 & ~XN_FLAG_SEP_MASK) | XN_FLAG_SEP_CPLUS_SPC) &
                                  ~static_cast<unsigned long>(ASN1_STRFLGS_ESC_MSB);
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, flags) < 0) {
    ERR_clear_error();
    return {};
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::optional<std::string> single_common_name(const X509* cert) {
  const X509_NAME* subject = X509_get_subject_name(cert);
  const int first = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (first < 0 || X509_NAME_get_index_by_NID(subject, NID_commonName, first) >= 0) return std::nullopt;
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, first));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, value);
  if (n < 0) {
    ERR_clear_error();
    return std::nullopt;
  }
  // Kept with its exact length: a CN with an embedded NUL never equals an id.
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

sys_time to_sys_time(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    ERR_clear_error();
    return sys_time{};
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::int64_t to_time_t(sys_time t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

}  // namespace hub::certificates::detail
