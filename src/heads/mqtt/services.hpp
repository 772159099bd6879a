#pragma once
// What the MQTT head reaches: the domain services it calls, and the head's own persistent
// session state. Light (references and std::function only): the listener's header includes it.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/telemetry/message.hpp"

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::auth {
class service;
}
namespace hub::c2d {
class service;
}
namespace hub::certificates {
struct client_chain;
}
namespace hub::connections {
class connection_table;
}
namespace hub::methods {
class service;
}
namespace hub::telemetry {
class service;
}
namespace hub::twins {
class service;
}

namespace hub::throttling {
class throttles;
}

namespace hub::mqtt_head {

class session_store;

// What an X.509 check proved about a device or module.
struct x509_verdict {
  telemetry::auth_method method = telemetry::auth_method::x509_self_signed;  // or x509_ca
  sys_time not_after{};  // the certificate's expiry: the connection ends then (epoch = never)
};

// X.509 device authentication: certificates::service::authenticate_device (thumbprints for
// selfSigned identities, the chain to a verified CA for certificateAuthority ones, the identity
// enabled), adapted by the composition root. Blocks on storage. Unauthorized with a reason for
// the log when the certificates do not prove the identity.
using x509_authenticator = std::function<result<x509_verdict>(
    const certificates::client_chain& presented, std::string_view device_id, std::string_view module_id)>;

// Owned by the composition root; every member outlives the listeners.
struct services {
  auth::service& auth;
  connections::connection_table& connections;
  telemetry::service& telemetry;
  session_store& sessions;
  const clock& clk;
  x509_authenticator x509;  // empty: devices without a SAS token are refused
  c2d::service* c2d = nullptr;  // cloud-to-device delivery; null: devicebound subscriptions deliver nothing
  twins::service* twins = nullptr;  // twin requests; null: answered with a 501 error body, no desired updates
  methods::service* methods = nullptr;  // direct methods; null: no calls taken, answers ignored
  throttling::throttles* throttles = nullptr;  // operation throttles (connects, D2C, twin); null: none
};

}  // namespace hub::mqtt_head
