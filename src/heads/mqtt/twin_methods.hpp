#pragma once
// Twins and direct methods on MQTT (protocol/device.md §3.4, §3.5), as plain code (no Asio),
// unit-tested without sockets: the topics and payloads the hub sends, which subscriptions ask for
// desired changes and method calls, and what a device's method answer may carry. session.cpp
// runs twins::service / methods::service on the blocking pool and moves the bytes.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "codec/mqtt/packets.hpp"

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::mqtt_head {

// A PUBLISH the hub sends back (twin answers and notifications, method calls). Always QoS 0, as
// IoT Hub sends them.
struct reply {
  std::string topic;
  std::string payload;
};

// --- twin (§3.4). The SDK ignores the status in the topic: it fails a request only on a JSON body
// with "errorCode", succeeds on anything else, and waits forever for a request with no answer.

// GET: "$iothub/twin/res/200/?$rid=<rid>", the {desired, reported} view as JSON.
reply twin_get_reply(std::string_view rid, const boost::json::object& view);
// PATCH reported: "$iothub/twin/res/204/?$rid=<rid>&$version=<reported $version>", empty payload.
reply twin_patch_reply(std::string_view rid, std::int64_t reported_version);
// An error: "$iothub/twin/res/<status>/?$rid=<rid>" with IoT Hub's JSON error body
// {"errorCode":<six digits>,"trackingId":...,"message":...,"timestampUtc":...}; the status is the
// code's first three digits (error_number).
reply twin_error_reply(std::string_view rid, const error& e, sys_time now);
reply twin_error_reply(std::string_view rid, int status, int error_code, std::string_view message, sys_time now);
// The answer to every twin request when the hub serves no twins (services::twins null): 501.
reply twin_unavailable_reply(std::string_view rid, sys_time now);

// A desired-properties change as devices receive it: the patch JSON (with "$version") on
// "$iothub/twin/PATCH/properties/desired/?$version=<n>". nullopt when the patch is not a JSON
// object with an integer "$version" (twins::service always gives one).
std::optional<reply> desired_notification(std::string patch_json);

// --- direct methods (§3.5).

// "$iothub/methods/POST/<name>/?$rid=<rid>" with the call's payload (JSON text, never empty: the
// SDK answers an empty body with status 400).
reply method_request(std::string_view name, std::string_view request_id, std::string payload);

// The payload of a device's answer as methods::service::respond takes it: as sent, "null" for an
// empty body (the SDK sends JSON.stringify(undefined) as nothing). A payload that is not JSON is
// passed on too, as the AMQP head does: how the caller sees it is the REST route's choice.
std::string method_response_payload(std::string payload);

// --- subscriptions. Each says whether any of a session's subscriptions takes the topics in
// question (MQTT matching: the SDK's "$iothub/methods/POST/#" and
// "$iothub/twin/PATCH/properties/desired/#", or any filter that matches them all).
bool takes_method_calls(const std::vector<mqtt::subscription>& subs);
bool takes_desired_updates(const std::vector<mqtt::subscription>& subs);

}  // namespace hub::mqtt_head
