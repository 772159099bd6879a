#pragma once
// IoT Hub's MQTT topic grammar and CONNECT conventions, as pure functions over strings.
// Table-driven and unit-tested; the MQTT session (session.cpp) only dispatches on the result.
#include "domain/telemetry/message.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hub::mqtt_head {

// The identity a CONNECT claims: client id "<deviceId>" or "<deviceId>/<moduleId>".
struct client_identity {
  std::string device_id;
  std::string module_id;
};
std::optional<client_identity> parse_client_id(std::string_view client_id);

// Username "<host>/<clientId>/?api-version=...&DeviceClientType=...&model-id=...". The part
// before "/?" must name the same identity as the client id; the query is not strictly encoded
// (model-id comes raw), so it is split on '&' and the first '=' only.
struct username_info {
  std::string host;
  std::string api_version;
  std::string model_id;
  std::string client_type;
};
std::optional<username_info> parse_username(std::string_view username, const client_identity& id);

// What a PUBLISH from a device asks for.
enum class publish_kind {
  telemetry,          // devices/{d}[/modules/{m}]/messages/events/{bag}
  twin_get,           // $iothub/twin/GET/?$rid=
  twin_patch_reported,// $iothub/twin/PATCH/properties/reported/?$rid=
  method_response,    // $iothub/methods/res/{status}/?$rid= (status or $rid may be broken)
  unknown,
};
struct publish_target {
  publish_kind kind = publish_kind::unknown;
  std::string device_id;
  std::string module_id;
  std::string_view property_bag;   // telemetry: the raw bag (into the topic string)
  std::string request_id;          // $rid (twin requests: never empty; method responses: may be)
  std::optional<int> status;       // method response status; nullopt when not an integer
};
publish_target classify_publish(std::string_view topic);

// Percent-decoded key/value pairs of a property bag ("a=b&%24.mid=1"); '+' stays '+'.
// nullopt on a malformed escape.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_property_bag(std::string_view bag);

// Fills a telemetry message's system and application properties from a decoded bag.
void apply_properties(const std::vector<std::pair<std::string, std::string>>& props, telemetry::message& m);

// MQTT 3.1.1 §4.7 topic matching: '+' one level, '#' (last) this level and all below; a filter
// starting with a wildcard does not match a topic starting with '$'.
bool topic_matches(std::string_view filter, std::string_view topic);

// Whether a device may subscribe to this filter (its own devicebound, methods, twin topics).
bool subscription_allowed(std::string_view filter, const client_identity& id);

}  // namespace hub::mqtt_head
