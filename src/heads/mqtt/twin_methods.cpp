#include "heads/mqtt/twin_methods.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "heads/mqtt/topics.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace hub::mqtt_head {

reply twin_get_reply(std::string_view rid, const boost::json::object& view) {
  return reply{fmt::format("$iothub/twin/res/200/?$rid={}", rid), boost::json::serialize(view)};
}

reply twin_patch_reply(std::string_view rid, std::int64_t reported_version) {
  // An empty body: the SDK takes it as success with no value.
  return reply{fmt::format("$iothub/twin/res/204/?$rid={}&$version={}", rid, reported_version), {}};
}

reply twin_error_reply(std::string_view rid, int status, int error_code, std::string_view message, sys_time now) {
  boost::json::object body{
      {"errorCode", error_code},
      {"trackingId", crypto::uuid_v4()},
      {"message", message},
      {"timestampUtc", to_iso8601(now)},
  };
  return reply{fmt::format("$iothub/twin/res/{}/?$rid={}", status, rid), boost::json::serialize(body)};
}

reply twin_error_reply(std::string_view rid, const error& e, sys_time now) {
  const int code = error_number(e.code);
  return twin_error_reply(rid, code / 1000, code, e.message, now);
}

reply twin_unavailable_reply(std::string_view rid, sys_time now) {
  // IoT Hub's numeric code for "not implemented": HTTP status * 1000.
  return twin_error_reply(rid, 501, 501000, "Device twins are not supported by this hub", now);
}

std::optional<reply> desired_notification(std::string patch_json) {
  auto parsed = json::parse(patch_json);
  if (!parsed || !parsed->is_object()) return std::nullopt;
  const auto* version = json::find(parsed->as_object(), "$version");
  if (!version || !version->is_int64()) return std::nullopt;
  return reply{fmt::format("$iothub/twin/PATCH/properties/desired/?$version={}", version->as_int64()),
               std::move(patch_json)};
}

reply method_request(std::string_view name, std::string_view request_id, std::string payload) {
  if (payload.empty()) payload = "null";
  return reply{fmt::format("$iothub/methods/POST/{}/?$rid={}", name, request_id), std::move(payload)};
}

std::string method_response_payload(std::string payload) {
  if (payload.empty()) return "null";
  return payload;  // the size limit (128 KB) is methods::service's to apply
}

namespace {

// Whether some filter matches both probes: that is, any name and any request id or version.
bool takes(const std::vector<mqtt::subscription>& subs, std::string_view probe1, std::string_view probe2) {
  for (const mqtt::subscription& s : subs) {
    if (topic_matches(s.filter, probe1) && topic_matches(s.filter, probe2)) return true;
  }
  return false;
}

}  // namespace

bool takes_method_calls(const std::vector<mqtt::subscription>& subs) {
  return takes(subs, "$iothub/methods/POST/a/?$rid=1", "$iothub/methods/POST/b/?$rid=2");
}

bool takes_desired_updates(const std::vector<mqtt::subscription>& subs) {
  return takes(subs, "$iothub/twin/PATCH/properties/desired/?$version=1",
               "$iothub/twin/PATCH/properties/desired/?$version=2");
}

}  // namespace hub::mqtt_head
