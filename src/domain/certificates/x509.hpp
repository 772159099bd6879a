#pragma once
// Internal to domain/certificates: OpenSSL helpers shared by model.cpp, device_auth.cpp and
// peer_chain.cpp. Not for other modules (it includes OpenSSL headers).
#include "base/clock.hpp"

#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace hub::certificates::detail {

template <auto Free>
struct deleter {
  template <class T>
  void operator()(T* p) const noexcept { Free(p); }
};
using x509_ptr = std::unique_ptr<X509, deleter<X509_free>>;
using x509_store_ptr = std::unique_ptr<X509_STORE, deleter<X509_STORE_free>>;
using x509_store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, deleter<X509_STORE_CTX_free>>;

// A certificate from DER that must fill `der` exactly; nullptr otherwise.
x509_ptr from_der(std::string_view der);
std::string to_der(const X509* cert);

// "CN=dev-1, O=Contoso": RFC 2253 order (most specific first) with ", " between RDNs, as .NET's
// X509Certificate2.Subject prints it; UTF-8 kept as is.
std::string name_text(const X509_NAME* name);
// The subject's CN when it has exactly one; nullopt when it has none or several.
std::optional<std::string> single_common_name(const X509* cert);

sys_time to_sys_time(const ASN1_TIME* t);
std::int64_t to_time_t(sys_time t);

// The OpenSSL error queue's oldest entry as text, and an empty queue afterwards.
std::string openssl_error();

}  // namespace hub::certificates::detail
