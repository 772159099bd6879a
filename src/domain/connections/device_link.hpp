#pragma once
// The port between the domain and a protocol head: one connected device or module, as the
// services see it. Each head implements it per connection (the MQTT session, later the AMQP
// links) and registers it in the connection table on connect.
//
// Thread safety: every method may be called from any thread and returns at once; the head
// carries the work over to its connection's own executor.
#include <string>

namespace hub::messaging {

// A direct method call as a connection delivers it.
struct method_call {
  std::string request_id;  // the hub's; the device echoes it ($rid / correlation-id)
  std::string name;
  std::string payload;     // JSON text, never empty ("null" when the caller gave none)
};

class device_link {
 public:
  virtual ~device_link() = default;

  // Ends the connection; `reason` goes to the head's log line. Idempotent. Used when another
  // connection of the same identity replaces this one (as IoT Hub does), and later when the
  // identity is disabled or deleted.
  virtual void close(std::string reason) = 0;

  // The device's cloud-to-device queue has messages to receive (c2d::service's device notifier,
  // through the connection table). A head that delivers C2D on this connection (MQTT subscribed
  // to devicebound, an AMQP devicebound receiver with credit) pulls them with c2d::service::receive
  // off its I/O thread; others ignore it. Spurious calls are harmless: receive() may find nothing.
  virtual void c2d_available() {}

  // A direct method call for this identity (methods::service). Returns false at once when the
  // connection does not take method calls (MQTT not subscribed to $iothub/methods/POST/#, no AMQP
  // methods links): the caller then answers DeviceNotOnline. Otherwise the head sends it (MQTT
  // $iothub/methods/POST/<name>/?$rid=<request_id>, AMQP IoThub-methodname + correlation-id) and
  // hands the device's answer to methods::service::respond with the same request_id.
  virtual bool invoke_method(const method_call& call) { return false; }

  // A desired-properties change (twins::service's desired listener): the JSON patch with
  // "$version", as the device receives it. A connection subscribed to desired changes (MQTT
  // $iothub/twin/PATCH/properties/desired/#, AMQP twin notifications enabled) sends it; others
  // ignore it (devices fetch the whole twin after reconnecting, as IoT Hub expects).
  virtual void desired_properties(std::string patch_json) {}
};

}  // namespace hub::messaging
