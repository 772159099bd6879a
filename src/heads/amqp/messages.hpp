#pragma once
// IoT Hub's AMQP messages <-> hub types: CBS put-token requests and their replies, and a device's
// telemetry message as telemetry::message, cloud-to-device messages both ways (the service's
// send, the device's delivery) and feedback batches. Proton types, no Asio; unit-tested.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/c2d/service.hpp"
#include "domain/connections/device_link.hpp"
#include "domain/telemetry/message.hpp"

#include <proton/message.hpp>
#include <proton/message_id.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hub::amqp_head {

// A message on the "$cbs" link (device.md §4.2, service.md §6.2, §7.2).
struct cbs_request {
  proton::message_id id;      // echoed as the reply's correlation-id, with its AMQP type
  std::string reply_to;       // names the link the reply goes on
  std::string operation;      // "put-token"
  std::string type;           // "servicebus.windows.net:sastoken" or "azure-devices.net:sastoken"
  std::string name;           // the audience
  std::string token;          // the body: the SAS token text
};

// Reads what is there; check_put_token() says whether it is a request hubd serves.
cbs_request read_cbs_request(const proton::message& m);
// ArgumentInvalid (status 400) when the operation, type, name or token is missing or unknown.
result<void> check_put_token(const cbs_request& r);

// The reply: correlation-id = the request's message-id (same AMQP type: the Node SDKs compare
// with ===, so a uuid-typed echo of a string id is never matched), application properties
// status-code (int) and status-description (string).
proton::message cbs_reply(const proton::message_id& request_id, int status, const std::string& description);

// A device's D2C message (device.md §4.4) as the hub stores it. Body: a Data section (or an
// AMQP value holding a string or binary). message-id and correlation-id of type uuid become
// their canonical text. Application properties keep their type where telemetry::value can
// (string, integers, floating point, bool, null); others become text. iothub-outputname,
// iothub-creation-time-utc (application properties), iothub-interface-id and dt-subject
// (message annotations) go to their fields. The identity fields are left for the caller to stamp.
// ArgumentInvalid when the message has a body of another kind or does not decode.
result<telemetry::message> to_telemetry(const proton::message& m);

// A C2D message from the service SDK's sender on /messages/devicebound (service.md §6.3): the
// device it is for and the message.
struct c2d_request {
  std::string device_id;
  c2d::outgoing message;
};
// `to` names the device ("/devices/<url-encoded id>/messages/devicebound"); message-id and
// correlation-id become text (uuids canonical); absolute-expiry-time, content-type,
// content-encoding and user-id are kept; application property iothub-ack sets the ack mode and
// the others become strings, in order. Body: a Data section (or an AMQP value holding a string
// or binary). ArgumentInvalid, with a reason the service SDK shows, for a `to` that names no
// device's devicebound node, an unknown iothub-ack, another kind of body, or a message that does
// not decode. Size limits are the c2d service's.
result<c2d_request> to_c2d(const proton::message& m);
// The device id in "/devices/<url-encoded id>/messages/devicebound" (the path alone, as the SDK
// sends it); nullopt for anything else.
std::optional<std::string> devicebound_device(std::string_view to);

// A C2D message as the device's devicebound receiver gets it (device.md §4.4): a Data body;
// message-id, to, correlation-id, absolute-expiry-time, content-type, content-encoding and
// user-id properties; application properties iothub-ack (unless none) and the service's own; the
// header's delivery-count; and the annotations IoT Hub stamps for the other SDKs:
// x-opt-sequence-number (ulong), x-opt-enqueued-time and iothub-enqueuedtime (timestamps),
// iothub-deliverycount (ubyte) and x-opt-lock-token (the lock token, a string).
proton::message c2d_message(const c2d::delivery& d);

// A feedback batch as the service's feedback receiver gets it (service.md §6.4): the records'
// JSON in a Data section, content-type application/vnd.microsoft.iothub.feedback.json, user-id
// the hub's name, message-id a fresh uuid.
proton::message feedback_message(const c2d::feedback_batch& b, const std::string& hub_name);

// --- twins (device.md §4.7) ---

// What a request on a device's twin sender asks, by its message annotations `operation` and
// `resource`.
enum class twin_operation : std::uint8_t {
  get,                  // GET: the {desired, reported} view
  patch_reported,       // PATCH /properties/reported
  subscribe_desired,    // PUT /notifications/twin/properties/desired
  unsubscribe_desired,  // DELETE /notifications/twin/properties/desired
  unknown,
};

struct twin_request {
  proton::message_id correlation_id;  // the answer echoes it, with its AMQP type (the SDK matches by ===)
  twin_operation op = twin_operation::unknown;
  std::string operation;              // as sent, for error texts
  std::string resource;
  std::string body;                   // the Data section's bytes (PATCH: the JSON patch)
};
// Reads what is there (never throws); an empty correlation_id means the request cannot be
// answered.
twin_request read_twin_request(const proton::message& m);

// The answer to a twin request: status, JSON body (empty: none) and, for a reported patch, the
// reported section's new $version.
struct twin_answer {
  int status = 200;
  std::string body;
  std::optional<std::int64_t> version;
};
// IoT Hub's error answer: the errc's HTTP status and its JSON body {"errorCode":400004,
// "trackingId":...,"message":...,"timestampUtc":...} (the SDK JSON.parses error bodies).
twin_answer twin_error(const error& e, sys_time now);
// The message on the device's twin receiver: correlation-id, message-annotation `status` (int)
// and, when set, `version` (long); a Data section holding the body (the SDK reads
// body.content: an AMQP value would crash it), or no body.
proton::message twin_response(const proton::message_id& correlation_id, const twin_answer& a);
// A desired-properties patch (with "$version") as the device's twin receiver gets it: a Data
// section and no correlation-id (that is how the SDK tells it from an answer).
proton::message desired_message(const std::string& patch_json);

// --- direct methods (device.md §4.8) ---

// A call on the device's methods receiver: application property IoThub-methodname, the hub's
// request id as correlation-id (an AMQP uuid when it is one, as IoT Hub sends it; the Node SDK
// takes a uuid or a string), the payload JSON in a Data section.
proton::message method_request(const messaging::method_call& call);

// The device's answer on its methods sender: correlation-id = the request id (the Node SDK
// re-encodes a uuid-looking string as an AMQP uuid: compared as canonical text), application
// property IoThub-status (any integer type), the payload in a Data section.
struct method_response {
  std::string request_id;
  int status = 0;
  std::string payload;
};
// ArgumentInvalid when the correlation-id or the status is missing, or the body is not a Data
// section.
result<method_response> read_method_response(const proton::message& m);

// The hub's name as IoT Hub uses it (feedback user-id, the Event Hubs-compatible name): the host
// name's first label, lower case ("myhub" for myhub.example.com); an IP address as a whole.
std::string hub_name_of(std::string_view host_name);

// The text of a message id: strings as they are, uuids canonical, ulongs in decimal, binaries as
// their bytes. Empty for an empty id.
std::string id_text(const proton::message_id& id);

}  // namespace hub::amqp_head
