#pragma once
// The hub's X.509 CA certificates (IoT Hub's "Certificates" API: upload, list, get, delete, proof
// of possession), durable in storage::kv under "c/<name>", and the X.509 authentication of
// devices and modules against them.
//
// Owner: the composition root (hubd's main). Thread safety: all methods may be called from any
// thread; read-modify-write operations are serialised, so If-Match checks are atomic. Calls block
// on storage; heads run them off the I/O threads.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/certificates/device_auth.hpp"
#include "domain/certificates/model.hpp"
#include "domain/registry/service.hpp"
#include "storage/kv.hpp"

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::certificates {

// If-Match as the REST API carries it, quotes already stripped: nullopt = absent, "*" = any.
using if_match = std::optional<std::string>;

// IoT Hub holds at most 25 CA certificates per hub (semantics.md §5.4, §12).
inline constexpr std::size_t max_certificates = 25;

class service {
 public:
  service(storage::kv& kv, registry::service& registry, const clock& clk);

  // ---- the CA registry (REST: heads/http/certificate_routes.cpp) ----

  // PUT /certificates/{name}: uploads a CA certificate (PEM or base64 DER; root or intermediate,
  // basicConstraints CA:TRUE, not expired). Without If-Match it creates (PreconditionFailed if
  // the name exists); with If-Match it replaces, which resets the verification state to
  // `is_verified` and drops a pending verification code. `is_verified` = true marks it verified
  // at once, as IoT Hub's "set certificate status to verified on upload" does.
  // `created` tells a creation from a replacement.
  result<ca_certificate> put(std::string_view name, std::string_view certificate, bool is_verified,
                             const if_match& etag, bool* created = nullptr);
  result<ca_certificate> get(std::string_view name);
  // In name order.
  result<std::vector<ca_certificate>> list() const;
  // If-Match is required ("*" for any version), as IoT Hub's API requires the etag. Deleting a
  // certificate that does not exist succeeds and does nothing, as IoT Hub's API says.
  result<void> remove(std::string_view name, const if_match& etag);
  // A new random verification code (48 upper-case hex digits), replacing any earlier one; the
  // etag changes. If-Match required.
  result<ca_certificate> generate_verification_code(std::string_view name, const if_match& etag);
  // Proof of possession: `proof` (PEM or base64 DER) must be signed by this CA's key and carry the
  // current verification code as its subject CN, and be within its validity period. Then the
  // certificate is verified and the code consumed. If-Match required. ArgumentInvalid
  // ("Proof-Of-Possession failed. ...") otherwise.
  result<ca_certificate> verify(std::string_view name, std::string_view proof, const if_match& etag);

  // ---- device authentication (MQTT / AMQP heads; see device_auth.hpp) ----

  // Looks the device (or module) up, refuses it unless it exists, is enabled and uses selfSigned
  // or certificateAuthority authentication, then check_device_certificate() with the hub's
  // verified CA certificates at the clock's time. Every failure is errc::unauthorized with a
  // reason for the log; storage failures keep their own code.
  result<device_certificate> authenticate_device(const client_chain& chain, std::string_view device_id,
                                                 std::string_view module_id = {}) const;

  // The verified CA certificates, as trust anchors.
  result<std::vector<trust_anchor>> trust_anchors() const;

 private:
  result<std::optional<ca_certificate>> load(std::string_view name) const;
  result<void> store(const ca_certificate& c);

  storage::kv& kv_;
  registry::service& registry_;
  const clock& clock_;
  std::mutex write_mutex_;
};

}  // namespace hub::certificates
