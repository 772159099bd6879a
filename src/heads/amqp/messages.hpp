#pragma once
// IoT Hub's AMQP messages <-> hub types: CBS put-token requests and their replies, and a device's
// telemetry message as telemetry::message. Proton types, no Asio; unit-tested.
#include "base/error.hpp"
#include "domain/telemetry/message.hpp"

#include <proton/message.hpp>
#include <proton/message_id.hpp>

#include <string>

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

// The text of a message id: strings as they are, uuids canonical, ulongs in decimal, binaries as
// their bytes. Empty for an empty id.
std::string id_text(const proton::message_id& id);

}  // namespace hub::amqp_head
