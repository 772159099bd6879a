#pragma once
// What the MQTT head does with a PUBLISH from a connected device, and the order of its PUBACKs, as
// plain code (no Asio), unit-tested without sockets.
#include "base/clock.hpp"
#include "codec/mqtt/packets.hpp"
#include "domain/telemetry/message.hpp"
#include "heads/mqtt/twin_methods.hpp"

#include <boost/json/value.hpp>

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

// A twin request: answered by the session from twins::service, on the blocking pool.
struct twin_request {
  enum class kind { get, patch_reported };
  kind what = kind::get;
  std::string rid;
  boost::json::value patch;  // patch_reported: the parsed payload (twins::service validates it)
};

// A device's answer to a method call, for methods::service::respond.
struct method_answer {
  std::string rid;
  int status = 0;
  std::string payload;  // as sent ("null" for an empty body)
};

struct publish_decision {
  enum class action {
    telemetry,        // append `message` durably, then acknowledge
    twin,             // serve `twin`, send its answer (QoS 0), then acknowledge
    method_response,  // pass `method` to methods::service::respond, acknowledge at once
    answer,           // send `answer` (QoS 0), acknowledge at once
    ignore,           // acknowledge at once, nothing else; `reason` for the log
    close,            // IoT Hub closes the connection: `reason` for the log
  };
  action what = action::close;
  telemetry::message message;
  twin_request twin;
  method_answer method;
  reply answer;
  std::string reason;
};

// Decides on a PUBLISH. Consumes the payload (moved into the message body).
//  - QoS 2: close (IoT Hub does not support it).
//  - devices/{d}[/modules/{m}]/messages/events/{bag}: telemetry, when it names the connected
//    identity and the bag decodes; else close. retain=1 adds the application property
//    mqtt-retain=true (IoT Hub does not retain, but passes the flag on).
//  - $iothub/twin/GET/?$rid=: twin (the payload, " " from the SDK, is not looked at).
//  - $iothub/twin/PATCH/properties/reported/?$rid=: twin with the parsed patch; a payload that
//    is not JSON gets its error answer at once (400, IotHubFormatError).
//  - $iothub/twin/... without $rid: close (there is nobody to answer).
//  - $iothub/methods/res/<status>/?$rid=: method_response; a status that is not an integer or no
//    $rid: ignore (the call times out), with the reason.
//  - anything else: close, as IoT Hub does for topics a device may not publish to.
publish_decision decide_publish(mqtt::publish&& p, const sender& who, sys_time now);

// The telemetry message a Will becomes when its connection ends without DISCONNECT, as IoT Hub
// sends it: the will's payload and property bag (retain adds mqtt-retain=true, as for a
// publish), stamped with the connected identity, plus the application property
// iothub-MessageType=Will. The will was checked at CONNECT (check_connect), so its topic is the
// identity's telemetry topic; nullopt if it is not after all.
std::optional<telemetry::message> will_telemetry(const mqtt::will_message& will, const sender& who, sys_time now);

// PUBACKs in PUBLISH order (MQTT 3.1.1 §4.6), whatever order the completions arrive in. QoS 0
// publishes take a place too (packet id 0, never acknowledged) so that in_flight() counts every
// message still waiting, for flow control. Owned by one connection, used on its thread only.
//
// Holds no memory while nothing is in flight (an idle connection: see docs/benchmarks.md,
// "Memory per idle TLS connection"); a std::deque would allocate its map and a 512-byte block
// as soon as it is constructed.
class ack_queue {
 public:
  using ticket = std::uint64_t;

  ticket push(std::uint16_t packet_id);
  // Marks `t` done and appends to `ready` the packet ids that may now be acknowledged, in order.
  void complete(ticket t, std::vector<std::uint16_t>& ready);
  std::size_t in_flight() const noexcept { return entries_.size() - head_; }

 private:
  struct entry {
    std::uint16_t packet_id = 0;
    bool done = false;
  };
  // entries_[head_..] wait, oldest first; the done ones before head_ are dropped in bulk.
  std::vector<entry> entries_;
  std::size_t head_ = 0;
  ticket first_ = 0;  // ticket of entries_[head_]
};

}  // namespace hub::mqtt_head
