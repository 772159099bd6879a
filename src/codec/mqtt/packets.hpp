#pragma once
// MQTT 3.1.1 control packets as plain values. No I/O, no hub state.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace hub::mqtt {

enum class packet_type : std::uint8_t {
  connect = 1, connack, publish, puback, pubrec, pubrel, pubcomp,
  subscribe, suback, unsubscribe, unsuback, pingreq, pingresp, disconnect,
};

// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
enum class connack_code : std::uint8_t {
  accepted = 0,
  unacceptable_protocol_version = 1,
  identifier_rejected = 2,
  server_unavailable = 3,
  bad_username_or_password = 4,
  not_authorized = 5,
};

struct will_message {
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
};

struct connect {
  std::uint8_t protocol_level = 4;
  bool clean_session = true;
  std::uint16_t keep_alive = 0;         // seconds; 0 = off
  std::string client_id;
  std::optional<will_message> will;
  std::optional<std::string> username;
  std::optional<std::string> password;  // bytes; a SAS token for IoT Hub
};

struct connack {
  bool session_present = false;
  connack_code code = connack_code::accepted;
};

struct publish {
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;          // QoS > 0 only
};

struct puback { std::uint16_t packet_id = 0; };
struct pubrec { std::uint16_t packet_id = 0; };
struct pubrel { std::uint16_t packet_id = 0; };
struct pubcomp { std::uint16_t packet_id = 0; };

struct subscription {
  std::string filter;
  std::uint8_t qos = 0;
};
struct subscribe {
  std::uint16_t packet_id = 0;
  std::vector<subscription> subscriptions;
};

inline constexpr std::uint8_t suback_failure = 0x80;
struct suback {
  std::uint16_t packet_id = 0;
  std::vector<std::uint8_t> codes;      // granted QoS or suback_failure
};

struct unsubscribe {
  std::uint16_t packet_id = 0;
  std::vector<std::string> filters;
};
struct unsuback { std::uint16_t packet_id = 0; };
struct pingreq {};
struct pingresp {};
struct disconnect {};

using packet = std::variant<connect, connack, publish, puback, pubrec, pubrel, pubcomp, subscribe, suback,
                            unsubscribe, unsuback, pingreq, pingresp, disconnect>;

}  // namespace hub::mqtt
