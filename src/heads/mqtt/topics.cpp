#include "heads/mqtt/topics.hpp"

#include "base/text.hpp"

#include <algorithm>
#include <cstdint>

namespace hub::mqtt_head {

std::optional<client_identity> parse_client_id(std::string_view client_id) {
  if (client_id.empty()) return std::nullopt;
  const auto slash = client_id.find('/');
  if (slash == std::string_view::npos) return client_identity{std::string(client_id), {}};
  const auto module = client_id.substr(slash + 1);
  if (slash == 0 || module.empty() || module.find('/') != std::string_view::npos) return std::nullopt;
  return client_identity{std::string(client_id.substr(0, slash)), std::string(module)};
}

std::optional<username_info> parse_username(std::string_view username, const client_identity& id) {
  const auto q = username.find("/?");
  const auto path = username.substr(0, q);
  const auto query = q == std::string_view::npos ? std::string_view{} : username.substr(q + 2);
  // path = <host>/<device>[/<module>], possibly with a trailing '/'.
  std::string expected = "/" + id.device_id;
  if (!id.module_id.empty()) expected += "/" + id.module_id;
  std::string_view p = path;
  if (p.ends_with('/')) p.remove_suffix(1);
  if (!p.ends_with(expected) || p.size() == expected.size()) return std::nullopt;
  username_info info;
  info.host = std::string(p.substr(0, p.size() - expected.size()));
  for (auto pair : text::split(query, '&')) {
    const auto eq = pair.find('=');
    const auto key = pair.substr(0, eq);
    const auto value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (key == "api-version") info.api_version = value;
    if (key == "model-id") info.model_id = value;
    if (key == "DeviceClientType") info.client_type = text::url_decode(value).value_or(std::string(value));
  }
  return info;
}

namespace {

// "$rid=7" out of a query such as "$rid=7&$version=3".
std::string query_value(std::string_view query, std::string_view key) {
  for (auto pair : text::split(query, '&')) {
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == key) return std::string(pair.substr(eq + 1));
  }
  return {};
}

// The request id of a "$iothub/..." topic: after "?" in the last level.
std::string rid_of(std::string_view topic) {
  const auto q = topic.find('?');
  return q == std::string_view::npos ? std::string{} : query_value(topic.substr(q + 1), "$rid");
}

}  // namespace

publish_target classify_publish(std::string_view topic) {
  publish_target t;
  if (topic.starts_with("$iothub/")) {
    const auto rest = topic.substr(8);
    if (rest.starts_with("twin/GET/")) {
      t.kind = publish_kind::twin_get;
    } else if (rest.starts_with("twin/PATCH/properties/reported/")) {
      t.kind = publish_kind::twin_patch_reported;
    } else if (rest.starts_with("methods/res/")) {
      // A broken status or $rid is the device's mistake about one answer: the head logs and
      // ignores it (the call times out), it does not close the connection.
      auto status = rest.substr(12);
      status = status.substr(0, status.find_first_of("/?"));
      if (const auto n = text::parse_int(status); n && *n >= INT32_MIN && *n <= INT32_MAX) {
        t.status = static_cast<int>(*n);
      }
      t.kind = publish_kind::method_response;
      t.request_id = rid_of(topic);
      return t;
    } else {
      return t;
    }
    t.request_id = rid_of(topic);
    if (t.request_id.empty()) t.kind = publish_kind::unknown;
    return t;
  }
  // devices/{d}/messages/events/{bag} or devices/{d}/modules/{m}/messages/events/{bag}
  if (!topic.starts_with("devices/")) return t;
  auto rest = topic.substr(8);
  const auto d_end = rest.find('/');
  if (d_end == std::string_view::npos || d_end == 0) return t;
  t.device_id = rest.substr(0, d_end);
  rest = rest.substr(d_end + 1);
  if (rest.starts_with("modules/")) {
    rest = rest.substr(8);
    const auto m_end = rest.find('/');
    if (m_end == std::string_view::npos || m_end == 0) return t;
    t.module_id = rest.substr(0, m_end);
    rest = rest.substr(m_end + 1);
  }
  constexpr std::string_view events = "messages/events";
  if (!rest.starts_with(events)) return t;
  rest = rest.substr(events.size());
  if (!rest.empty() && rest.front() != '/') return t;
  if (!rest.empty()) rest.remove_prefix(1);
  // The SDK appends a trailing '/' after a module output's bag.
  if (rest.ends_with('/')) rest.remove_suffix(1);
  t.kind = publish_kind::telemetry;
  t.property_bag = rest;
  return t;
}

std::optional<std::vector<std::pair<std::string, std::string>>> parse_property_bag(std::string_view bag) {
  std::vector<std::pair<std::string, std::string>> out;
  if (bag.empty()) return out;
  for (auto pair : text::split(bag, '&')) {
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    auto key = text::url_decode(pair.substr(0, eq));
    auto value = text::url_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    if (!key || !value || key->empty()) return std::nullopt;
    out.emplace_back(std::move(*key), std::move(*value));
  }
  return out;
}

void apply_properties(const std::vector<std::pair<std::string, std::string>>& props, telemetry::message& m) {
  struct system_key {
    std::string_view key;
    std::optional<std::string> telemetry::message::*field;
  };
  static constexpr system_key system_keys[] = {
      {"$.mid", &telemetry::message::message_id},     {"$.cid", &telemetry::message::correlation_id},
      {"$.uid", &telemetry::message::user_id},        {"$.to", &telemetry::message::to},
      {"$.ct", &telemetry::message::content_type},    {"$.ce", &telemetry::message::content_encoding},
      {"$.exp", &telemetry::message::expiry_time_utc}, {"$.on", &telemetry::message::output_name},
      {"$.sub", &telemetry::message::component},      {"$.ifid", &telemetry::message::interface_id},
      {"$.ctime", &telemetry::message::creation_time_utc},
  };
  for (const auto& [key, value] : props) {
    if (key.starts_with("$.")) {
      for (const auto& s : system_keys) {
        if (s.key == key) m.*(s.field) = value;
      }
      continue;  // unknown system keys are ignored, as IoT Hub does
    }
    m.properties.emplace_back(key, value);
  }
}

bool topic_matches(std::string_view filter, std::string_view topic) {
  if (filter.empty() || topic.empty()) return false;
  if (topic.front() == '$' && (filter.front() == '+' || filter.front() == '#')) return false;
  std::size_t f = 0;
  std::size_t t = 0;
  while (true) {
    const std::size_t f_end = std::min(filter.find('/', f), filter.size());
    const auto level = filter.substr(f, f_end - f);
    if (level == "#") return f_end == filter.size();  // '#' only as the last level
    const std::size_t t_end = std::min(topic.find('/', t), topic.size());
    if (level != "+" && level != topic.substr(t, t_end - t)) return false;
    const bool filter_done = f_end == filter.size();
    const bool topic_done = t_end == topic.size();
    if (filter_done) return topic_done;
    // "a/#" matches "a" too: the filter's next and last level is '#'.
    if (topic_done) return filter.substr(f_end + 1) == "#";
    f = f_end + 1;
    t = t_end + 1;
  }
}

bool subscription_allowed(std::string_view filter, const client_identity& id) {
  if (filter.starts_with("$iothub/twin/") || filter.starts_with("$iothub/methods/")) return true;
  std::string own = "devices/" + id.device_id + "/";
  if (!id.module_id.empty()) {
    own += "modules/" + id.module_id + "/";
    return filter.starts_with(own + "inputs/") || filter.starts_with(own + "messages/devicebound");
  }
  return filter.starts_with(own + "messages/devicebound");
}

}  // namespace hub::mqtt_head
