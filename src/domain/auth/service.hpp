#pragma once
// Authentication and authorisation of every request, whatever its protocol.
//
// Thread safety: all methods may be called concurrently; the policies are fixed at construction.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/registry/service.hpp"

#include <string>
#include <string_view>

namespace hub::auth {

// Who made a request, once authenticated.
struct principal {
  enum class kind { policy, device, module };
  kind who = kind::policy;
  std::string name;           // policy name, or device id
  std::string device_id;
  std::string module_id;
  permissions rights = 0;
  std::int64_t expiry = 0;    // seconds since the epoch; the connection ends then
};

class service {
 public:
  service(hub_identity identity, registry::service& registry, const clock& clk);

  const hub_identity& identity() const noexcept { return identity_; }

  // Checks a service-side credential (Authorization header, CBS put-token) for `target`, a
  // resource such as "<host>/devices/d1", and the permission the operation needs.
  // Unauthorized (401, IotHubUnauthorizedAccess) when the token is malformed, signed with a wrong
  // key, expired, scoped elsewhere, or lacks the permission.
  // `keys`: raw_text for the Event Hubs-compatible endpoint (see key_encoding).
  result<principal> authorize(std::string_view token, std::string_view target, permission needed,
                              key_encoding keys = key_encoding::base64) const;

  // Checks a device or module's SAS token (MQTT password, CBS put-token, HTTP Authorization).
  // Accepts the identity's own keys or a policy with DeviceConnect.
  result<principal> authenticate_device(std::string_view token, std::string_view device_id,
                                        std::string_view module_id = {}) const;

 private:
  hub_identity identity_;
  registry::service& registry_;
  const clock& clock_;
};

}  // namespace hub::auth
