#pragma once
// A device-to-cloud message as hubd stores and routes it, independent of the protocol that
// carried it in or will carry it out.
#include "base/error.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace hub::telemetry {

// An application property value. MQTT and HTTPS carry strings only; AMQP may carry the rest.
using value = std::variant<std::monostate, std::string, std::int64_t, double, bool>;

// How the sending identity authenticated, for iothub-connection-auth-method.
enum class auth_method : std::uint8_t { sas, x509_self_signed, x509_ca, policy };

struct message {
  std::string body;

  // System properties the device may set.
  std::optional<std::string> message_id;
  std::optional<std::string> correlation_id;
  std::optional<std::string> user_id;
  std::optional<std::string> to;
  std::optional<std::string> content_type;
  std::optional<std::string> content_encoding;
  std::optional<std::string> expiry_time_utc;     // ISO 8601 as sent
  std::optional<std::string> creation_time_utc;   // iothub-creation-time-utc
  std::optional<std::string> output_name;         // module outputs ($.on)
  std::optional<std::string> component;           // dt-subject
  std::optional<std::string> interface_id;        // iothub-interface-id

  std::vector<std::pair<std::string, value>> properties;

  // Stamped by the hub, never taken from the device (anti-spoofing).
  std::string device_id;
  std::string module_id;
  std::string generation_id;
  auth_method auth = auth_method::sas;
  std::string model_id;                           // dt-dataschema
  std::string source = "Telemetry";               // iothub-message-source
};

// IoT Hub's size of a message for the 256 KB limit: body + system property values + application
// property names and values.
std::size_t billed_size(const message& m);

// The JSON text of iothub-connection-auth-method, e.g.
// {"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}.
std::string auth_method_json(const message& m);

// Compact binary form stored in the event log (versioned, so the format can grow).
std::string encode(const message& m);
result<message> decode(std::string_view bytes);

}  // namespace hub::telemetry
