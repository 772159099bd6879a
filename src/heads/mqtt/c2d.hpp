#pragma once
// Cloud-to-device delivery on MQTT, as plain code (no Asio), unit-tested without sockets: the
// topic and property bag a delivery goes out on (protocol/device.md §3.3), which subscription
// asks for C2D and at what QoS, and the per-connection window of messages out waiting for their
// PUBACK. session.cpp runs c2d::service's calls on the blocking pool and moves the bytes.
#include "codec/mqtt/packets.hpp"
#include "domain/c2d/service.hpp"
#include "heads/mqtt/topics.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace hub::mqtt_head {

// The property bag of a delivery: "$.mid", "$.to", "$.cid", "$.uid", "$.ct", "$.ce", "$.exp"
// (ISO 8601), "iothub-ack", then the application properties in order; empty system fields are
// left out, "$.to", "$.exp" and "iothub-ack" are always there. Keys and values are
// percent-encoded (everything but A-Z a-z 0-9 - _ . ~; a space is %20, never '+'): the SDK takes
// the bag from the topic's 5th '/'-segment, splits it on '&' and '=' and decodeURIComponent()s
// each side, so none of '/', '&', '=' or '%' may appear raw.
std::string c2d_property_bag(const c2d::delivery& d);

// "devices/<deviceId>/messages/devicebound/<bag>" (the id raw, as IoT Hub sends it).
std::string c2d_topic(const c2d::delivery& d);

// MQTT's limit on a topic name (a 2-byte length). A message whose topic is longer (its 64 KB of
// properties grow by percent-encoding) cannot be sent over MQTT.
inline constexpr std::size_t max_topic_bytes = 65535;

// The QoS C2D messages go out with on this connection: the highest granted QoS among the
// subscriptions that take every devicebound topic ("devices/<d>/messages/devicebound/#" as the
// SDK sends, or ".../devicebound/+"); nullopt when there is none, or for a module (IoT Hub has
// no C2D for modules: their devicebound subscription is granted but never delivers).
std::optional<std::uint8_t> c2d_qos(const std::vector<mqtt::subscription>& subs, const client_identity& id);

// The C2D messages of one connection: those sent at QoS 1 and not yet PUBACKed (by packet id,
// with their lock tokens), and when to ask c2d::service::receive for more. At most one receive
// runs at a time; a notification that arrives while one runs makes another follow it. Owned by
// one connection, used on its thread only.
//
//   to_receive() -> n > 0: start receive(device, n), then received(n, got) with what came back;
//   sent(token) for each message published at QoS 1 -> its packet id;
//   acked(id) on PUBACK -> the token to complete;  drain() when the connection ends -> unlock.
class c2d_window {
 public:
  explicit c2d_window(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  // The queue may have messages: subscribed, c2d_available(), or the connection (re)started.
  void notify() noexcept;
  // How many messages to receive now; 0 when a receive is running, none may be waiting, or the
  // window is full. Non-zero: the caller must start exactly one receive and report received().
  std::size_t to_receive() noexcept;
  // The receive asked for `asked` and got `got`. Fewer than asked: the queue has no more
  // enqueued messages (until the next notify()).
  void received(std::size_t asked, std::size_t got) noexcept;

  // A message went out at QoS 1: a packet id not used by any other message out.
  std::uint16_t sent(std::string lock_token);
  // A PUBACK: the lock token of the message it acknowledges, now settled here; nullopt for a
  // packet id that is not out (a duplicate PUBACK).
  std::optional<std::string> acked(std::uint16_t packet_id);
  // The connection ended: the lock tokens of every message still out; the window is empty after.
  std::vector<std::string> drain();

  std::size_t in_flight() const noexcept { return out_.size(); }
  bool receiving() const noexcept { return receiving_; }

 private:
  std::size_t capacity_;
  std::unordered_map<std::uint16_t, std::string> out_;
  std::uint16_t last_id_ = 0;
  bool receiving_ = false;
  bool maybe_more_ = false;        // the queue may hold enqueued messages
  bool notified_meanwhile_ = false;  // a notify() arrived while a receive ran
};

}  // namespace hub::mqtt_head
