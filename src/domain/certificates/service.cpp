#include "domain/certificates/service.hpp"

#include "base/crypto.hpp"
#include "base/log.hpp"
#include "domain/certificates/x509.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

namespace hub::certificates {
namespace {

constexpr std::string_view key_prefix = "c/";
// 24 random bytes as 48 hex digits: the length of the codes IoT Hub hands out today, and well
// under a CN's 64-character limit.
constexpr std::size_t verification_code_bytes = 24;

std::string key_of(std::string_view name) { return fmt::format("{}{}", key_prefix, name); }

error invalid(std::string message) { return make_error(errc::argument_invalid, std::move(message)); }

error not_found(std::string_view name) {
  return make_error(errc::not_found, fmt::format("Certificate '{}' not found", name));
}

error invalid_name(std::string_view name) {
  return invalid(fmt::format("The certificate name '{}' is invalid: 1 to 64 characters among letters, digits, "
                             "'-', '.' and '_'",
                             name.substr(0, 64)));
}

// A fresh random etag in the shape of IoT Hub's certificate etags (base64 of 8 bytes,
// "AAAAAAExpNs="). Random rather than counted, so an etag kept from a deleted certificate never
// matches one re-created under the same name.
std::string new_etag() { return crypto::base64_encode(crypto::random_bytes(8)); }

std::string new_verification_code() {
  const std::string raw = crypto::random_bytes(verification_code_bytes);
  std::string out;
  out.reserve(raw.size() * 2);
  for (const unsigned char c : raw) out += fmt::format("{:02X}", c);
  return out;
}

bool etag_matches(const if_match& wanted, std::string_view current) {
  return !wanted || *wanted == "*" || *wanted == current;
}

error etag_mismatch(std::string_view name) {
  return make_error(errc::precondition_failed,
                    fmt::format("The If-Match etag does not match the current version of certificate '{}'", name));
}

error etag_required(std::string_view name) {
  return make_error(errc::argument_null,
                    fmt::format("The If-Match header is required: send certificate '{}''s etag, or \"*\"", name));
}

const std::shared_ptr<spdlog::logger>& logger() {
  static const auto l = log::get("certificates");
  return l;
}

}  // namespace

service::service(storage::kv& kv, registry::service& registry, const clock& clk)
    : kv_(kv), registry_(registry), clock_(clk) {}

result<std::optional<ca_certificate>> service::load(std::string_view name) const {
  auto bytes = kv_.get(key_of(name));
  if (!bytes) return bytes.error();
  if (!*bytes) return std::optional<ca_certificate>{};
  auto c = decode(**bytes);
  if (!c) return c.error();
  return std::optional<ca_certificate>(std::move(*c));
}

result<void> service::store(const ca_certificate& c) {
  storage::write_batch batch;
  batch.put(key_of(c.name), encode(c));
  return kv_.write(batch, true);
}

result<ca_certificate> service::put(std::string_view name, std::string_view certificate, bool is_verified,
                                    const if_match& etag, bool* created) {
  if (!valid_name(name)) return invalid_name(name);
  auto parsed = parse_certificate(certificate);
  if (!parsed) return parsed.error();
  if (!parsed->is_ca) {
    return invalid(
        "The certificate is not a CA certificate (it lacks basicConstraints CA:TRUE): upload the root or "
        "intermediate CA certificate that signs your device certificates");
  }
  const sys_time now = clock_.now();
  if (parsed->not_after < now) {
    return invalid(fmt::format("The certificate expired on {}", to_rfc1123(parsed->not_after)));
  }

  std::lock_guard lock(write_mutex_);
  auto existing = load(name);
  if (!existing) return existing.error();

  ca_certificate c;
  if (*existing) {
    // Replacing needs the etag, as IoT Hub's API says: "Required to update an existing certificate".
    if (!etag) {
      return make_error(errc::precondition_failed,
                        fmt::format("Certificate '{}' already exists: send If-Match with its etag (or \"*\") to "
                                    "replace it",
                                    name));
    }
    if (!etag_matches(etag, (*existing)->etag)) return etag_mismatch(name);
    c.created = (*existing)->created;
  } else {
    if (etag && *etag != "*") return not_found(name);
    std::size_t count = 0;
    auto scanned = kv_.scan(key_prefix, {}, [&](std::string_view, std::string_view) {
      ++count;
      return count < max_certificates;
    });
    if (!scanned) return scanned.error();
    if (count >= max_certificates) {
      return make_error(errc::quota_exceeded,
                        fmt::format("The hub already holds {} CA certificates, the most it can hold",
                                    max_certificates));
    }
    c.created = now;
  }

  c.name = std::string(name);
  c.pem = std::move(parsed->pem);
  c.subject = std::move(parsed->subject);
  c.thumbprint = std::move(parsed->sha1_thumbprint);
  c.not_before = parsed->not_before;
  c.expiry = parsed->not_after;
  c.is_verified = is_verified;
  c.updated = now;
  c.etag = new_etag();
  if (auto saved = store(c); !saved) return saved.error();
  if (created != nullptr) *created = !*existing;
  logger()->info("{} CA certificate '{}' ({}, SHA1 {}){}", *existing ? "replaced" : "added", c.name, c.subject,
                 c.thumbprint, c.is_verified ? ", verified on upload" : "");
  return c;
}

result<ca_certificate> service::get(std::string_view name) {
  if (!valid_name(name)) return invalid_name(name);
  auto c = load(name);
  if (!c) return c.error();
  if (!*c) return not_found(name);
  return std::move(**c);
}

result<std::vector<ca_certificate>> service::list() const {
  std::vector<ca_certificate> out;
  std::optional<error> failed;
  auto scanned = kv_.scan(key_prefix, {}, [&](std::string_view, std::string_view value) {
    auto c = decode(value);
    if (!c) {
      failed = c.error();
      return false;
    }
    out.push_back(std::move(*c));
    return true;
  });
  if (!scanned) return scanned.error();
  if (failed) return *failed;
  return out;
}

result<void> service::remove(std::string_view name, const if_match& etag) {
  if (!valid_name(name)) return invalid_name(name);
  if (!etag) return etag_required(name);
  std::lock_guard lock(write_mutex_);
  auto existing = load(name);
  if (!existing) return existing.error();
  // IoT Hub's API: "Deletes an existing X509 certificate or does nothing if it does not exist."
  if (!*existing) return {};
  if (!etag_matches(etag, (*existing)->etag)) return etag_mismatch(name);
  storage::write_batch batch;
  batch.del(key_of(name));
  if (auto done = kv_.write(batch, true); !done) return done.error();
  logger()->info("deleted CA certificate '{}'", name);
  return {};
}

result<ca_certificate> service::generate_verification_code(std::string_view name, const if_match& etag) {
  if (!valid_name(name)) return invalid_name(name);
  if (!etag) return etag_required(name);
  std::lock_guard lock(write_mutex_);
  auto existing = load(name);
  if (!existing) return existing.error();
  if (!*existing) return not_found(name);
  if (!etag_matches(etag, (*existing)->etag)) return etag_mismatch(name);
  ca_certificate c = std::move(**existing);
  c.verification_code = new_verification_code();
  c.updated = clock_.now();
  c.etag = new_etag();
  if (auto saved = store(c); !saved) return saved.error();
  return c;
}

result<ca_certificate> service::verify(std::string_view name, std::string_view proof, const if_match& etag) {
  if (!valid_name(name)) return invalid_name(name);
  if (!etag) return etag_required(name);
  auto parsed = parse_certificate(proof);
  if (!parsed) return parsed.error();

  std::lock_guard lock(write_mutex_);
  auto existing = load(name);
  if (!existing) return existing.error();
  if (!*existing) return not_found(name);
  if (!etag_matches(etag, (*existing)->etag)) return etag_mismatch(name);
  ca_certificate c = std::move(**existing);
  if (c.verification_code.empty()) {
    return invalid(fmt::format("Proof-Of-Possession failed. Certificate '{}' has no verification code: generate one "
                               "first",
                               name));
  }

  // IoT Hub's wording for the wrong issuer: "Proof-Of-Possession failed. Issuer certificate '<subject>'
  // cannot be found in the certificate chain."
  const error wrong_signer = invalid(fmt::format(
      "Proof-Of-Possession failed. Issuer certificate '{}' cannot be found in the certificate chain: the "
      "verification certificate must be signed with this CA certificate's private key",
      c.subject));
  auto ca = parse_certificate(c.pem);
  auto ca_cert = ca ? detail::from_der(ca->der) : nullptr;
  auto proof_cert = detail::from_der(parsed->der);
  if (!ca_cert || !proof_cert) return make_error(errc::server_error, "A stored CA certificate no longer parses");
  // Issuer name (and key identifiers, when present) first, then the signature itself: a
  // certificate from another CA with the same subject name must still fail.
  if (X509_check_issued(ca_cert.get(), proof_cert.get()) != X509_V_OK) {
    ERR_clear_error();
    return wrong_signer;
  }
  EVP_PKEY* ca_key = X509_get0_pubkey(ca_cert.get());
  if (ca_key == nullptr || X509_verify(proof_cert.get(), ca_key) != 1) {
    ERR_clear_error();
    return wrong_signer;
  }
  const auto cn = detail::single_common_name(proof_cert.get());
  if (!cn || *cn != c.verification_code) {
    return invalid(fmt::format("Proof-Of-Possession failed. The verification certificate's subject must be "
                               "CN={} (the current verification code of certificate '{}'), not '{}'",
                               c.verification_code, name, parsed->subject));
  }
  const sys_time now = clock_.now();
  if (now < parsed->not_before || now > parsed->not_after) {
    return invalid(fmt::format("Proof-Of-Possession failed. The verification certificate is valid only from {} to {}",
                               to_rfc1123(parsed->not_before), to_rfc1123(parsed->not_after)));
  }

  c.is_verified = true;
  c.verification_code.clear();  // one proof per code
  c.updated = now;
  c.etag = new_etag();
  if (auto saved = store(c); !saved) return saved.error();
  logger()->info("verified CA certificate '{}' ({}) by proof of possession", c.name, c.subject);
  return c;
}

result<std::vector<trust_anchor>> service::trust_anchors() const {
  auto all = list();
  if (!all) return all.error();
  std::vector<trust_anchor> out;
  for (auto& c : *all) {
    if (!c.is_verified) continue;  // an unverified CA authenticates nobody
    auto parsed = parse_certificate(c.pem);
    if (parsed) out.push_back(trust_anchor{std::move(c.name), std::move(parsed->der)});
  }
  return out;
}

result<device_certificate> service::authenticate_device(const client_chain& chain, std::string_view device_id,
                                                        std::string_view module_id) const {
  const bool is_module = !module_id.empty();
  auto dev = registry_.get_device(device_id);
  if (!dev) {
    if (dev.error().code != errc::device_not_found) return dev.error();
    return make_error(errc::unauthorized, fmt::format("device '{}' is not registered", device_id));
  }
  registry::authentication auth = dev->auth;
  if (is_module) {
    auto mod = registry_.get_module(device_id, module_id);
    if (!mod) {
      if (mod.error().code != errc::module_not_found) return mod.error();
      return make_error(errc::unauthorized,
                        fmt::format("module '{}' of device '{}' is not registered", module_id, device_id));
    }
    auth = mod->auth;
  }

  std::vector<trust_anchor> anchors;
  if (auth.type == registry::auth_type::certificate_authority) {
    auto loaded = trust_anchors();
    if (!loaded) return loaded.error();
    anchors = std::move(*loaded);
  }
  auto checked = check_device_certificate(chain, auth, device_id, module_id, anchors, clock_.now());
  if (!checked) return checked.error();
  // Checked last and worded as auth::service words it, so heads treat both alike.
  if (dev->status == registry::device_status::disabled) {
    return make_error(errc::unauthorized, fmt::format("Device '{}' is disabled", device_id));
  }
  return checked;
}

}  // namespace hub::certificates
