#include "domain/certificates/model.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "domain/certificates/x509.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include <ctime>

namespace hub::certificates {
namespace {

namespace bj = boost::json;

constexpr std::size_t max_name_length = 64;
// A CA certificate is a few KiB; anything much larger is not one.
constexpr std::size_t max_certificate_text = 64 * 1024;
constexpr std::int64_t storage_version = 1;
constexpr std::string_view resource_type = "Microsoft.Devices/IotHubs/Certificates";

error invalid(std::string message) { return make_error(errc::argument_invalid, std::move(message)); }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::size_t count_of(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::string to_pem(X509* cert) {
  std::unique_ptr<BIO, detail::deleter<BIO_free>> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    ERR_clear_error();
    return {};
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

result<detail::x509_ptr> read_pem(std::string_view text) {
  // IoT Hub takes one certificate; a chain file is a common mistake worth naming.
  const std::size_t blocks = count_of(text, "-----BEGIN");
  const std::size_t certs = count_of(text, "-----BEGIN CERTIFICATE-----");
  if (certs == 0 || blocks != certs) {
    return invalid("The PEM text holds no CERTIFICATE block: expected \"-----BEGIN CERTIFICATE-----\"");
  }
  if (certs > 1) {
    return invalid(fmt::format("The PEM text holds {} certificates: upload one certificate at a time", certs));
  }
  std::unique_ptr<BIO, detail::deleter<BIO_free>> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) return make_error(errc::server_error, "Out of memory reading a certificate");
  detail::x509_ptr cert(PEM_read_bio_X509(bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!cert) {
    return invalid(fmt::format("The PEM certificate cannot be parsed ({})", detail::openssl_error()));
  }
  return cert;
}

std::string month_name(int m) {
  static constexpr const char* names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  return names[(m % 12 + 12) % 12];
}

std::int64_t to_ns(sys_time t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
sys_time from_ns(std::int64_t ns) {
  return sys_time{std::chrono::duration_cast<sys_time::duration>(std::chrono::nanoseconds{ns})};
}

// The ARM resource id shape, under a placeholder subscription: hubd has no Azure subscription
// or resource group, but tools that split ids by segment keep working.
std::string resource_id(std::string_view hub_name, std::string_view name) {
  return fmt::format(
      "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/hubd/providers/Microsoft.Devices/"
      "IotHubs/{}/certificates/{}",
      hub_name, name);
}

bj::object properties_json(const ca_certificate& c) {
  return bj::object{
      {"subject", c.subject},
      {"expiry", to_rfc1123(c.expiry)},
      {"thumbprint", c.thumbprint},
      {"isVerified", c.is_verified},
      {"created", to_rfc1123(c.created)},
      {"updated", to_rfc1123(c.updated)},
      {"certificate", c.pem},
  };
}

bj::object envelope(bj::object properties, const ca_certificate& c, std::string_view hub_name) {
  return bj::object{
      {"properties", std::move(properties)},
      {"id", resource_id(hub_name, c.name)},
      {"name", c.name},
      {"etag", c.etag},
      {"type", resource_type},
  };
}

}  // namespace

bool valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > max_name_length) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

result<parsed_certificate> parse_certificate_der(std::string_view der) {
  auto cert = detail::from_der(der);
  if (!cert) return invalid("The certificate is not a valid DER-encoded X.509 certificate");
  // Also fills the extension cache that EXFLAG_* below reads.
  const std::uint32_t flags = X509_get_extension_flags(cert.get());
  if ((flags & EXFLAG_INVALID) != 0) return invalid("The certificate has malformed extensions");

  parsed_certificate out;
  out.der = std::string(der);
  out.pem = to_pem(cert.get());
  out.subject = detail::name_text(X509_get_subject_name(cert.get()));
  out.common_name = detail::single_common_name(cert.get()).value_or("");
  out.sha1_thumbprint = crypto::sha1_hex(der);
  out.sha256_thumbprint = crypto::sha256_hex(der);
  out.not_before = detail::to_sys_time(X509_get0_notBefore(cert.get()));
  out.not_after = detail::to_sys_time(X509_get0_notAfter(cert.get()));
  out.is_ca = (flags & EXFLAG_CA) != 0;
  return out;
}

result<parsed_certificate> parse_certificate(std::string_view text) {
  if (text.size() > max_certificate_text) {
    return invalid(fmt::format("The certificate text is longer than {} KiB", max_certificate_text / 1024));
  }
  // Refused outright so that a key pasted by mistake is never stored or echoed back.
  if (text.find("PRIVATE KEY") != std::string_view::npos) {
    return invalid("The text contains a private key: upload only the public certificate");
  }
  text = trim(text);
  if (text.empty()) return make_error(errc::argument_null, "The certificate is empty");

  // PEM may follow other text (the output of `openssl x509 -text`), which PEM reading skips.
  if (text.find("-----BEGIN") != std::string_view::npos) {
    auto cert = read_pem(text);
    if (!cert) return cert.error();
    const std::string der = detail::to_der(cert->get());
    if (der.empty()) return invalid("The PEM certificate cannot be re-encoded");
    return parse_certificate_der(der);
  }

  // Base64 of the DER (a .cer file), possibly wrapped over several lines.
  std::string compact;
  compact.reserve(text.size());
  for (const char c : text) {
    if (!is_space(c)) compact.push_back(c);
  }
  auto der = crypto::base64_decode(compact);
  if (!der) {
    return invalid("The certificate is neither PEM (\"-----BEGIN CERTIFICATE-----\") nor base64 of a DER certificate");
  }
  return parse_certificate_der(*der);
}

std::string to_rfc1123(sys_time t) {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  const std::time_t secs = std::chrono::system_clock::to_time_t(std::chrono::floor<std::chrono::seconds>(t));
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT", days[tm.tm_wday % 7], tm.tm_mday,
                     month_name(tm.tm_mon), tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

bj::object to_json(const ca_certificate& c, std::string_view hub_name) {
  return envelope(properties_json(c), c, hub_name);
}

bj::object to_json_with_nonce(const ca_certificate& c, std::string_view hub_name) {
  bj::object props = properties_json(c);
  props["verificationCode"] = c.verification_code;
  return envelope(std::move(props), c, hub_name);
}

std::string encode(const ca_certificate& c) {
  const bj::object o{
      {"v", storage_version},
      {"name", c.name},
      {"pem", c.pem},
      {"subject", c.subject},
      {"thumbprint", c.thumbprint},
      {"notBefore", to_ns(c.not_before)},
      {"expiry", to_ns(c.expiry)},
      {"isVerified", c.is_verified},
      {"verificationCode", c.verification_code},
      {"created", to_ns(c.created)},
      {"updated", to_ns(c.updated)},
      {"etag", c.etag},
  };
  return json::serialize(o);
}

result<ca_certificate> decode(std::string_view bytes) {
  json::parse_limits limits;
  limits.max_size = 1024 * 1024;
  auto v = json::parse(bytes, limits);
  if (!v || !v->is_object()) return make_error(errc::server_error, "A stored CA certificate is corrupt");
  const bj::object& o = v->get_object();
  const auto integer = [&](std::string_view key) -> std::int64_t {
    const auto* f = o.if_contains(key);
    return f != nullptr && f->is_int64() ? f->get_int64() : 0;
  };
  if (integer("v") != storage_version) {
    return make_error(errc::server_error, "A stored CA certificate has an unknown storage version");
  }
  ca_certificate c;
  c.name = json::get_string(o, "name").value_or("");
  c.pem = json::get_string(o, "pem").value_or("");
  c.subject = json::get_string(o, "subject").value_or("");
  c.thumbprint = json::get_string(o, "thumbprint").value_or("");
  c.not_before = from_ns(integer("notBefore"));
  c.expiry = from_ns(integer("expiry"));
  c.is_verified = json::get_bool(o, "isVerified").value_or(false);
  c.verification_code = json::get_string(o, "verificationCode").value_or("");
  c.created = from_ns(integer("created"));
  c.updated = from_ns(integer("updated"));
  c.etag = json::get_string(o, "etag").value_or("");
  if (c.name.empty() || c.pem.empty()) return make_error(errc::server_error, "A stored CA certificate is incomplete");
  return c;
}

}  // namespace hub::certificates
