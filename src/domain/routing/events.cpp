#include "domain/routing/events.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"

#include <fmt/format.h>

namespace hub::routing {

namespace {

// A correlation id per event, hex as IoT Hub's look ("12ac42a8d4f2..."): unique enough (64 random bits).
std::string new_correlation_id() {
  const std::string bytes = crypto::random_bytes(8);
  std::string out;
  out.reserve(16);
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

telemetry::message base_event(const event_origin& o, source s, std::string_view schema, std::string_view op_type,
                              std::string body) {
  telemetry::message m;
  m.body = std::move(body);
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.correlation_id = new_correlation_id();
  m.user_id = std::string(o.hub_name);
  m.device_id = std::string(o.device_id);
  m.module_id = std::string(o.module_id);
  m.auth = telemetry::auth_method::policy;
  m.source = std::string(message_source(s));
  m.properties.emplace_back("hubName", std::string(o.hub_name));
  m.properties.emplace_back("deviceId", std::string(o.device_id));
  if (!o.module_id.empty()) m.properties.emplace_back("moduleId", std::string(o.module_id));
  m.properties.emplace_back("operationTimestamp", to_iso8601(o.at));
  m.properties.emplace_back("iothub-message-schema", std::string(schema));
  m.properties.emplace_back("opType", std::string(op_type));
  return m;
}

}  // namespace

std::string_view message_source(source s) noexcept {
  switch (s) {
    case source::device_messages: return "Telemetry";
    case source::twin_change_events: return "twinChangeEvents";
    case source::device_lifecycle_events: return "deviceLifecycleEvents";
    case source::device_connection_state_events: return "deviceConnectionStateEvents";
  }
  return "Telemetry";
}

telemetry::message twin_change_event(const event_origin& o, std::string_view op_type, const bj::object& body) {
  return base_event(o, source::twin_change_events, "twinChangeNotification", op_type, json::serialize(body));
}

telemetry::message lifecycle_event(const event_origin& o, bool created, const bj::object& twin) {
  telemetry::message m = base_event(o, source::device_lifecycle_events, "deviceLifecycleNotification",
                                    created ? "createDeviceIdentity" : "deleteDeviceIdentity",
                                    json::serialize(lifecycle_body(twin)));
  if (const auto gen = json::get_string(twin, "generationId")) m.generation_id = *gen;
  return m;
}

telemetry::message connection_event(const event_origin& o, bool connected, std::string_view sequence_number) {
  return base_event(o, source::device_connection_state_events, "deviceConnectionStateNotification",
                    connected ? "deviceConnected" : "deviceDisconnected",
                    json::serialize(bj::object{{"sequenceNumber", sequence_number}}));
}

bj::object lifecycle_body(const bj::object& doc) {
  bj::object out;
  for (std::string_view key : {"deviceId", "moduleId", "etag", "version", "tags", "properties"}) {
    if (const bj::value* v = doc.if_contains(key)) out[key] = *v;
  }
  return out;
}

std::string sequence_numbers::next(sys_time at) {
  // 100 ns ticks since 1601-01-01 (Windows FILETIME), as IoT Hub's numbers appear to start.
  constexpr std::uint64_t epoch_1601 = 116444736000000000ull;
  const auto since_1970 = std::chrono::duration_cast<std::chrono::duration<std::int64_t, std::ratio<1, 10'000'000>>>(
                              at.time_since_epoch())
                              .count();
  const std::uint64_t ticks = epoch_1601 + static_cast<std::uint64_t>(std::max<std::int64_t>(since_1970, 0));
  std::scoped_lock lock(mutex_);
  if (ticks > last_ticks_) last_ticks_ = ticks;  // never back, even when the clock is
  ++counter_;
  return fmt::format("{:016X}{:016X}{:016X}{:016X}", 0, last_ticks_, 0, counter_);
}

}  // namespace hub::routing
