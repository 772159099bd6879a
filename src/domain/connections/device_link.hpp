#pragma once
// The port between the domain and a protocol head: one connected device or module, as the
// services see it. Each head implements it per connection (the MQTT session, later the AMQP
// links) and registers it in the connection table on connect.
//
// Thread safety: every method may be called from any thread and returns at once; the head
// carries the work over to its connection's own executor.
#include <string>

namespace hub::messaging {

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

  // Later issues add the traffic to the device here, each completing asynchronously:
  //   push a desired-properties patch,
  //   invoke a direct method (the reply comes back through the methods service).
};

}  // namespace hub::messaging
