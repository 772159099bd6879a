#pragma once
// The hub's own events as routed messages (protocol/semantics.md §2.8): twin changes, identity
// lifecycle, connection state. Each is a telemetry::message with IoT Hub's system properties
// (content-type application/json, content-encoding utf-8, a unique correlation-id, user-id = the
// hub's name, iothub-connection-device-id / -module-id, iothub-message-source) and application
// properties (hubName, deviceId, moduleId for modules, operationTimestamp, iothub-message-schema,
// opType), and a JSON body. Pure: the caller supplies the time and the sequence numbers.
#include "base/clock.hpp"
#include "domain/routing/config.hpp"
#include "domain/telemetry/message.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace hub::routing {

struct event_origin {
  std::string_view hub_name;
  std::string_view device_id;
  std::string_view module_id;  // empty for a device
  sys_time at{};
};

// iothub-message-source of a source's events ("twinChangeEvents", ...; "Telemetry" for devices').
std::string_view message_source(source s) noexcept;

// twinChangeEvents: opType updateTwin / replaceTwin; the body as twins::service made it.
telemetry::message twin_change_event(const event_origin& o, std::string_view op_type, const bj::object& body);
// deviceLifecycleEvents: opType createDeviceIdentity / deleteDeviceIdentity (modules too, with
// moduleId set, as IoT Hub's current docs describe); the body is lifecycle_body(twin document).
telemetry::message lifecycle_event(const event_origin& o, bool created, const bj::object& twin);
// deviceConnectionStateEvents: opType deviceConnected / deviceDisconnected; the body
// {"sequenceNumber": "<64 hex digits>"}.
telemetry::message connection_event(const event_origin& o, bool connected, std::string_view sequence_number);

// The lifecycle body from a twin document: deviceId, moduleId, etag, version, tags and
// properties (with their $metadata and $version); the registry's fields left out.
bj::object lifecycle_body(const bj::object& twin_document);

// Connection-state sequence numbers: 64 hex digits, strictly increasing within a process and
// across restarts (the high half is the event time in 100 ns ticks since 1601, never going
// back; the low half a counter), so they compare as strings. Thread-safe.
class sequence_numbers {
 public:
  std::string next(sys_time at);

 private:
  std::mutex mutex_;
  std::uint64_t last_ticks_ = 0;
  std::uint64_t counter_ = 0;
};

}  // namespace hub::routing
