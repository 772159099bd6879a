#pragma once
// What a CBS put-token proves: a grant for its audience. The check calls the domain (auth,
// registry) and blocks on storage, so the AMQP session runs it on the blocking pool.
#include "base/error.hpp"
#include "domain/auth/policies.hpp"
#include "domain/telemetry/message.hpp"
#include "heads/amqp/addresses.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace hub::auth {
class service;
}
namespace hub::registry {
class service;
}
namespace hub::certificates {
class service;
struct client_chain;
}

namespace hub::amqp_head {

struct grant {
  enum class kind { device, module, hub, event_hub };
  kind who = kind::device;
  std::string device_id;      // device and module grants
  std::string module_id;      // module grants
  std::string generation_id;  // of the device or module, stamped on its telemetry
  std::string entity;         // event_hub: the audience's path ("<hub>/ConsumerGroups/...")
  telemetry::auth_method auth = telemetry::auth_method::sas;
  auth::permissions rights = 0;
  std::int64_t expiry = 0;    // seconds since the epoch: the grant (and what it authorised) ends then
};

// What an X.509 certificate check proves (certificates::service::authenticate_device).
struct certificate_services {
  const certificates::service& certs;
  registry::service& registry;
};

// Checks the TLS client certificate `chain` for a device or module: its thumbprint
// (selfSigned) or its chain to a verified hub CA (certificateAuthority). The grant lasts until
// the certificate expires. Unauthorized with a reason for the log otherwise. Blocks on storage.
result<grant> check_certificate(const certificate_services& svc, const certificates::client_chain& chain,
                                const std::string& device_id, const std::string& module_id);

struct token_services {
  const auth::service& auth;
  registry::service& registry;
};

// Checks `token` for `aud`:
//  - device / module audiences: a device or module SAS token (its keys, or a policy with
//    DeviceConnect), for an existing, enabled identity;
//  - the hub itself: a policy token with ServiceConnect (the service SDK's Client);
//  - Event Hubs audiences ("sb://<this hub's host>/<entity>..."): a policy token with
//    ServiceConnect, signed the Event Hubs way (the key's UTF-8 text, not its base64 bytes).
// Unauthorized with a reason for the log (never the token) otherwise. Blocks on storage.
result<grant> check_token(const token_services& svc, const audience& aud, std::string_view token);

}  // namespace hub::amqp_head
