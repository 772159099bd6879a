#pragma once
// What the MQTT head does with a PUBLISH from a connected device, and the order of its PUBACKs, as
// plain code (no Asio), unit-tested without sockets.
#include "base/clock.hpp"
#include "codec/mqtt/packets.hpp"
#include "domain/telemetry/message.hpp"

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace hub::mqtt_head {

// The connected identity, as the hub stamps it on its messages (never taken from the device).
struct sender {
  std::string device_id;
  std::string module_id;
  std::string generation_id;
  telemetry::auth_method auth = telemetry::auth_method::sas;
  std::string model_id;  // from the CONNECT username (model-id): dt-dataschema
};

// A PUBLISH the hub sends back (a twin response).
struct reply {
  std::string topic;
  std::string payload;
};

struct publish_decision {
  enum class action {
    telemetry,  // append `message` durably, then acknowledge
    answer,     // send `answer` (QoS 0), acknowledge at once
    ignore,     // acknowledge at once, nothing else (method responses, until methods come)
    close,      // IoT Hub closes the connection: `reason` for the log
  };
  action what = action::close;
  telemetry::message message;
  reply answer;
  std::string reason;
};

// Decides on a PUBLISH. Consumes the payload (moved into the message body).
//  - QoS 2: close (IoT Hub does not support it).
//  - devices/{d}[/modules/{m}]/messages/events/{bag}: telemetry, when it names the connected
//    identity and the bag decodes; else close. retain=1 adds the application property
//    mqtt-retain=true (IoT Hub does not retain, but passes the flag on).
//  - $iothub/twin/GET and PATCH reported: a 501 twin response with an "errorCode" JSON body (the
//    SDK waits forever for an answer and fails only on a body with errorCode), until twins come.
//  - $iothub/methods/res: ignored until direct methods come.
//  - anything else: close, as IoT Hub does for topics a device may not publish to.
publish_decision decide_publish(mqtt::publish&& p, const sender& who, sys_time now);

// The telemetry message a Will becomes when its connection ends without DISCONNECT, as IoT Hub
// sends it: the will's payload and property bag (retain adds mqtt-retain=true, as for a
// publish), stamped with the connected identity, plus the application property
// iothub-MessageType=Will. The will was checked at CONNECT (check_connect), so its topic is the
// identity's telemetry topic; nullopt if it is not after all.
std::optional<telemetry::message> will_telemetry(const mqtt::will_message& will, const sender& who, sys_time now);

// An error answer to a twin request: $iothub/twin/res/<status>/?$rid=<rid> with IoT Hub's JSON
// error body {"errorCode":<n>,"trackingId":...,"message":...,"timestampUtc":...}.
reply twin_error_reply(std::string_view rid, int status, int error_code, std::string_view message, sys_time now);

// PUBACKs in PUBLISH order (MQTT 3.1.1 §4.6), whatever order the completions arrive in. QoS 0
// publishes take a place too (packet id 0, never acknowledged) so that in_flight() counts every
// message still waiting, for flow control. Owned by one connection, used on its thread only.
class ack_queue {
 public:
  using ticket = std::uint64_t;

  ticket push(std::uint16_t packet_id);
  // Marks `t` done and appends to `ready` the packet ids that may now be acknowledged, in order.
  void complete(ticket t, std::vector<std::uint16_t>& ready);
  std::size_t in_flight() const noexcept { return entries_.size(); }

 private:
  struct entry {
    std::uint16_t packet_id = 0;
    bool done = false;
  };
  std::deque<entry> entries_;
  ticket first_ = 0;  // ticket of entries_.front()
};

}  // namespace hub::mqtt_head
