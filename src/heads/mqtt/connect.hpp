#pragma once
// What the MQTT head does with a CONNECT, as plain functions: the checks that need no credential
// (check_connect), errc -> CONNACK code (connack_for), and admission (admit): authenticate,
// register in the connection table, open the persistent session. Light: no Asio, so the rules
// are unit-tested without sockets; session.cpp only runs admit() on the blocking pool.
//
// CONNACK codes, chosen for what the Node SDK makes of them (azure-iot-mqtt-base
// mqtt_translate_error.js): 1 -> NotImplementedError, 2 / 4 / 5 -> UnauthorizedError (not
// retried), 3 -> ServiceUnavailableError (retried for 4 minutes). So a credential problem is never
// 3: the device would retry a wrong key for 4 minutes.
//   protocol level != 4                                   -> 1 unacceptable protocol version
//   empty or malformed client id                          -> 2 identifier rejected
//   username missing, or naming another identity          -> 4 bad username or password
//   no credential (no password, no client certificate)    -> 5 not authorized
//   unknown identity, wrong key, expired or misscoped token,
//   certificate that does not match, disabled identity    -> 5 not authorized (as IoT Hub answers;
//                                                            the reason goes to the log only)
//   storage failure, or the identity deleted meanwhile     -> 3 / 5 (connack_for)
//   a Will whose topic is not the identity's telemetry topic
//   (devices/{d}[/modules/{m}]/messages/events/{bag}), a
//   malformed property bag in it, or Will QoS 2          -> 5 not authorized (a client that
//                                                            may not publish there; refused with a
//                                                            CONNACK rather than a silent close, so
//                                                            the log and the client say why)
#include "base/clock.hpp"
#include "base/error.hpp"
#include "codec/mqtt/packets.hpp"
#include "domain/certificates/device_auth.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/telemetry/message.hpp"
#include "heads/mqtt/services.hpp"
#include "heads/mqtt/topics.hpp"

#include <memory>
#include <optional>
#include <string>
#include <variant>

namespace hub::mqtt_head {

// A CONNECT that passed the checks needing no credential.
struct connect_claim {
  client_identity id;
  username_info user;
  std::string client_id;                 // as sent: the persistent session's key
  bool clean_session = false;
  std::optional<std::string> sas_token;  // the password; none: the client certificate must do
  std::optional<mqtt::will_message> will;  // checked: the identity's telemetry topic
};

struct connect_refusal {
  mqtt::connack_code code = mqtt::connack_code::not_authorized;
  std::string reason;  // for the log; never contains the password
};

std::variant<connect_refusal, connect_claim> check_connect(const mqtt::connect& c);

// The CONNACK refusal code for a failed authentication or admission (exhaustive switch).
mqtt::connack_code connack_for(errc e) noexcept;

struct admission_request {
  connect_claim claim;
  certificates::client_chain chain;              // what the TLS client presented; used when
                                                 // claim.sas_token is empty (X.509 devices)
  std::shared_ptr<messaging::device_link> link;  // the new connection, for the connection table
};

struct admission {
  mqtt::connack_code code = mqtt::connack_code::accepted;
  std::string reason;                    // refusals: for the log
  bool session_present = false;
  std::uint64_t session_token = 0;       // for session_store::close
  connections::attachment attached;      // accepted: previous link to close, presence to touch
  telemetry::auth_method method = telemetry::auth_method::sas;
  sys_time expires{};                    // token expiry or certificate notAfter; epoch = never
  std::optional<std::uint8_t> c2d_qos;   // a resumed session subscribed to devicebound (c2d.hpp)
  bool method_calls = false;             // ... to $iothub/methods/POST/# (twin_methods.hpp)
  bool desired_updates = false;          // ... to $iothub/twin/PATCH/properties/desired/#
};

// Authenticates the claim (SAS token, else the client certificate), then attaches the link in the
// connection table and opens the persistent session. Blocks on storage: call it on the blocking
// pool. Refusals leave no trace in the table or the session store.
admission admit(const services& svc, const admission_request& req);

}  // namespace hub::mqtt_head
