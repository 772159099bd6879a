#pragma once
// The server side of one MQTT connection, sans I/O: bytes in, events out.
//
// The session decides (what is a protocol violation, when the keep-alive has lapsed, what to
// answer to PINGREQ); the head executes the events. Lifecycle: one per accepted connection, owned
// by the head's connection coroutine and used only from its thread.
#include "codec/mqtt/codec.hpp"

#include <chrono>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace hub::mqtt {

enum class close_reason : std::uint8_t {
  protocol_violation,      // malformed packet or a packet not allowed in this state
  keep_alive_timeout,      // nothing received for 1.5 x keep-alive
  client_disconnect,       // DISCONNECT received
};

// A complete, valid packet from the client. CONNECT arrives first and exactly once; the head
// answers it (CONNACK) after authenticating.
struct packet_received {
  packet pkt;
};
// Bytes the session wants written (PINGRESP).
struct send_bytes {
  std::string bytes;
};
// Start (or restart) a periodic timer; call keep_alive_tick() each time it fires.
struct arm_keep_alive {
  std::chrono::milliseconds period;
};
struct close_connection {
  close_reason why;
  decode_error detail = decode_error::none;  // protocol_violation only
};

using event = std::variant<packet_received, send_bytes, arm_keep_alive, close_connection>;

class server_session {
 public:
  explicit server_session(decode_limits limits = {}) : limits_(limits) {}

  // Consumes all of `in`, buffering a partial packet, and appends events to `out`. Once a
  // close_connection event has been emitted, further input is ignored.
  void recv(std::span<const char> in, std::vector<event>& out);

  // The keep-alive timer fired. Emits close_connection once 1.5 x keep-alive has passed with
  // nothing received (MQTT 3.1.1 §3.1.2.10); otherwise nothing.
  void keep_alive_tick(std::vector<event>& out);

  // A fresh non-zero packet id for a server-to-client QoS 1 PUBLISH.
  std::uint16_t next_packet_id() noexcept;

  bool closed() const noexcept { return state_ == state::closed; }
  std::size_t buffered() const noexcept { return buf_.size(); }

 private:
  enum class state { awaiting_connect, connected, closed };

  // Handles one decoded packet; false once the connection must close.
  bool on_packet(packet&& p, std::vector<event>& out);
  void fail(close_reason why, decode_error detail, std::vector<event>& out);
  // Decodes as many packets as `data` holds; returns bytes consumed.
  std::size_t drain(std::span<const char> data, std::vector<event>& out);

  decode_limits limits_;
  state state_ = state::awaiting_connect;
  std::string buf_;
  std::uint16_t keep_alive_s_ = 0;
  int idle_ticks_ = 0;
  bool received_since_tick_ = false;
  std::uint16_t last_packet_id_ = 0;
};

}  // namespace hub::mqtt
