#pragma once
// MQTT 3.1.1 wire format: bytes <-> packets. Strict about the specification's malformed-packet
// rules (§1.5.3 UTF-8, §2.2 fixed header flags, §2.3 packet ids, §3.x per-packet rules) and about
// sizes. Pure: no sockets, clocks or hub state. Fuzzed in tests/fuzz/fuzz_mqtt.cpp.
#include "codec/mqtt/packets.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace hub::mqtt {

enum class decode_error : std::uint8_t {
  none = 0,
  malformed_remaining_length,   // more than 4 length bytes
  packet_too_large,             // remaining length above the configured limit
  reserved_packet_type,         // type 0 or 15
  bad_fixed_header_flags,
  truncated,                    // fields run past the remaining length
  trailing_bytes,               // bytes left after the last field
  bad_utf8,                     // ill-formed UTF-8 or U+0000 in a string
  bad_protocol_name,
  reserved_connect_flag,
  bad_will_flags,
  password_without_username,
  bad_qos,                      // QoS 3, or QoS 0 with DUP
  zero_packet_id,
  wildcard_in_topic_name,
  empty_topic,
  bad_topic_filter,             // '#' not last, '+' not a whole level
  empty_subscription_list,
  bad_requested_qos,            // reserved bits set or QoS 3 in SUBSCRIBE
};

std::string_view to_string(decode_error e) noexcept;

struct decode_limits {
  std::size_t max_packet_size = 512 * 1024;   // remaining length
  std::size_t max_subscriptions = 64;
};

// Result of looking at the start of a buffer.
struct decode_result {
  enum class status { ok, need_more, error } st = status::need_more;
  packet pkt;
  std::size_t consumed = 0;     // bytes of the whole packet (ok only)
  decode_error err = decode_error::none;
};

// Decodes one packet from the front of `in`. need_more when `in` holds only part of a packet.
decode_result decode(std::span<const char> in, const decode_limits& limits = {});

// Appends the wire form of a packet to `out`. Packets hubd builds itself are valid by
// construction; the encoder does not re-validate them.
void encode(const packet& p, std::string& out);

// True if `s` is well-formed UTF-8 without U+0000 (§1.5.3).
bool valid_utf8(std::string_view s) noexcept;
// Topic name rules for PUBLISH (non-empty, no wildcards) and topic filter rules for SUBSCRIBE.
bool valid_topic_name(std::string_view s) noexcept;
bool valid_topic_filter(std::string_view s) noexcept;
// MQTT topic matching of a name against a filter with + and # wildcards.
bool topic_matches(std::string_view filter, std::string_view name) noexcept;

}  // namespace hub::mqtt
