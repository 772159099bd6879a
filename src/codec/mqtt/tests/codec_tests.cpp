#include "codec/mqtt/codec.hpp"

#include <gtest/gtest.h>

using namespace hub::mqtt;

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

decode_result dec(const std::string& s, decode_limits l = {}) { return decode({s.data(), s.size()}, l); }

// Returns a copy: callers pass temporaries.
template <class T>
T as(const decode_result& r) {
  EXPECT_EQ(r.st, decode_result::status::ok) << to_string(r.err);
  return std::get<T>(r.pkt);
}

}  // namespace

TEST(mqtt_codec, connect_as_the_azure_sdk_sends_it) {
  const std::string s = bytes({
      0x10, 34,                            // CONNECT, remaining length 34
      0, 4, 'M', 'Q', 'T', 'T',            // protocol name
      4,                                   // level 4 = 3.1.1
      0xC0,                                // username + password, clean session off
      0, 180,                              // keep-alive 180 s
      0, 4, 'd', 'e', 'v', '1',            // client id
      0, 9, 'h', '/', 'd', 'e', 'v', '1', '/', '?', 'x',  // username
      0, 5, 'S', 'h', 'A', 'S', '!'});     // password
  const auto r = dec(s);
  const auto& c = as<connect>(r);
  EXPECT_EQ(r.consumed, s.size());
  EXPECT_EQ(c.protocol_level, 4);
  EXPECT_FALSE(c.clean_session);
  EXPECT_EQ(c.keep_alive, 180);
  EXPECT_EQ(c.client_id, "dev1");
  EXPECT_EQ(c.username.value(), "h/dev1/?x");
  EXPECT_EQ(c.password.value(), "ShAS!");
  EXPECT_FALSE(c.will);
}

TEST(mqtt_codec, connect_of_another_version_decodes_far_enough_to_refuse_it) {
  const std::string s = bytes({
      0x10, 17,                            // CONNECT, remaining length 17
      0, 4, 'M', 'Q', 'T', 'T',            // protocol name
      5,                                   // level 5 = MQTT 5
      0x02,                                // clean start
      0, 60,                               // keep-alive
      0,                                   // MQTT 5 properties: none (not 3.1.1's layout)
      0, 4, 'd', 'e', 'v', '1'});          // client id
  const auto r = dec(s);
  const auto& c = as<connect>(r);
  EXPECT_EQ(r.consumed, s.size());
  EXPECT_EQ(c.protocol_level, 5);  // the session answers CONNACK 1
}

TEST(mqtt_codec, connect_round_trips_through_the_encoder) {
  connect c;
  c.clean_session = false;
  c.keep_alive = 60;
  c.client_id = "dev1/mod1";
  c.username = "hub/dev1/mod1/?api-version=2021-04-12";
  c.password = "SharedAccessSignature sr=x&sig=y&se=1";
  c.will = will_message{"t/w", "bye", 1, false};
  std::string wire;
  encode(c, wire);
  const auto r = dec(wire);
  const auto& d = as<connect>(r);
  EXPECT_EQ(d.client_id, c.client_id);
  EXPECT_EQ(d.username, c.username);
  EXPECT_EQ(d.password, c.password);
  ASSERT_TRUE(d.will);
  EXPECT_EQ(d.will->topic, "t/w");
  EXPECT_EQ(d.will->qos, 1);
}

TEST(mqtt_codec, connect_rejects_reserved_flag_and_password_without_username) {
  // flags 0x01: reserved bit set
  EXPECT_EQ(dec(bytes({0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x01, 0, 0, 0, 0})).err,
            decode_error::reserved_connect_flag);
  // flags 0x40: password without user name (§3.1.2-22)
  EXPECT_EQ(dec(bytes({0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x40, 0, 0, 0, 0, 0, 0})).err,
            decode_error::password_without_username);
  // will QoS 1 without the will flag
  EXPECT_EQ(dec(bytes({0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x08, 0, 0, 0, 0})).err,
            decode_error::bad_will_flags);
  // protocol name "MQTX"
  EXPECT_EQ(dec(bytes({0x10, 12, 0, 4, 'M', 'Q', 'T', 'X', 4, 0x02, 0, 0, 0, 0})).err,
            decode_error::bad_protocol_name);
}

TEST(mqtt_codec, publish_qos1_telemetry) {
  const std::string s = bytes({
      0x32, 14,                                       // PUBLISH QoS 1, remaining 14
      0, 8, 'd', 'e', 'v', 's', '/', 'd', '/', 'e',   // topic
      0x12, 0x34,                                     // packet id
      'h', 'i'});                                     // payload
  const auto& p = as<publish>(dec(s));
  EXPECT_EQ(p.topic, "devs/d/e");
  EXPECT_EQ(p.qos, 1);
  EXPECT_EQ(p.packet_id, 0x1234);
  EXPECT_EQ(p.payload, "hi");
}

TEST(mqtt_codec, publish_rules) {
  // QoS 3
  EXPECT_EQ(dec(bytes({0x36, 5, 0, 1, 't', 0, 1})).err, decode_error::bad_qos);
  // QoS 0 with DUP
  EXPECT_EQ(dec(bytes({0x38, 3, 0, 1, 't'})).err, decode_error::bad_qos);
  // packet id 0 on QoS 1
  EXPECT_EQ(dec(bytes({0x32, 5, 0, 1, 't', 0, 0})).err, decode_error::zero_packet_id);
  // wildcard in a topic name
  EXPECT_EQ(dec(bytes({0x30, 3, 0, 1, '#'})).err, decode_error::wildcard_in_topic_name);
  // empty topic
  EXPECT_EQ(dec(bytes({0x30, 2, 0, 0})).err, decode_error::empty_topic);
  // topic with U+0000
  EXPECT_EQ(dec(bytes({0x30, 4, 0, 2, 'a', 0})).err, decode_error::bad_utf8);
  // topic with an invalid UTF-8 byte
  EXPECT_EQ(dec(bytes({0x30, 4, 0, 2, 'a', 0xFF})).err, decode_error::bad_utf8);
  // topic length past the packet
  EXPECT_EQ(dec(bytes({0x30, 3, 0, 9, 'a'})).err, decode_error::truncated);
}

TEST(mqtt_codec, partial_input_needs_more) {
  std::string wire;
  encode(publish{"a/b", std::string(300, 'x'), 1, false, false, 7}, wire);
  for (std::size_t n = 0; n < wire.size(); ++n) {
    EXPECT_EQ(decode({wire.data(), n}).st, decode_result::status::need_more) << n;
  }
  EXPECT_EQ(decode({wire.data(), wire.size()}).st, decode_result::status::ok);
}

TEST(mqtt_codec, remaining_length_limits) {
  // five length bytes
  EXPECT_EQ(dec(bytes({0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01})).err, decode_error::malformed_remaining_length);
  // above the configured limit, rejected before the body arrives
  decode_limits l;
  l.max_packet_size = 100;
  EXPECT_EQ(dec(bytes({0x30, 0xC8, 0x01}), l).err, decode_error::packet_too_large);  // 200
}

TEST(mqtt_codec, fixed_header_flags_and_reserved_types) {
  EXPECT_EQ(dec(bytes({0x00, 0})).err, decode_error::reserved_packet_type);
  EXPECT_EQ(dec(bytes({0xF0, 0})).err, decode_error::reserved_packet_type);
  EXPECT_EQ(dec(bytes({0x80, 5, 0, 1, 0, 1, 't'})).err, decode_error::bad_fixed_header_flags);  // SUBSCRIBE w/o 0x2
  EXPECT_EQ(dec(bytes({0xC1, 0})).err, decode_error::bad_fixed_header_flags);  // PINGREQ with flags
  EXPECT_EQ(dec(bytes({0xE0, 1, 0})).err, decode_error::trailing_bytes);       // DISCONNECT with a body
}

TEST(mqtt_codec, subscribe_as_the_azure_sdk_sends_it) {
  const std::string filter = "devices/dev1/messages/devicebound/#";
  std::string s = bytes({0x82, static_cast<int>(2 + 2 + filter.size() + 1), 0, 5,
                         0, static_cast<int>(filter.size())});
  s += filter;
  s.push_back(1);
  const auto& sub = as<subscribe>(dec(s));
  EXPECT_EQ(sub.packet_id, 5);
  ASSERT_EQ(sub.subscriptions.size(), 1u);
  EXPECT_EQ(sub.subscriptions[0].filter, filter);
  EXPECT_EQ(sub.subscriptions[0].qos, 1);
}

TEST(mqtt_codec, subscribe_rules) {
  EXPECT_EQ(dec(bytes({0x82, 2, 0, 1})).err, decode_error::empty_subscription_list);
  EXPECT_EQ(dec(bytes({0x82, 6, 0, 1, 0, 1, 't', 3})).err, decode_error::bad_requested_qos);
  EXPECT_EQ(dec(bytes({0x82, 6, 0, 1, 0, 1, 't', 0x41})).err, decode_error::bad_requested_qos);
  EXPECT_EQ(dec(bytes({0x82, 8, 0, 1, 0, 3, 'a', '#', 'b', 1})).err, decode_error::bad_topic_filter);
  EXPECT_EQ(dec(bytes({0x82, 6, 0, 0, 0, 1, 't', 1})).err, decode_error::zero_packet_id);
}

TEST(mqtt_codec, topic_filters_and_matching) {
  EXPECT_TRUE(valid_topic_filter("#"));
  EXPECT_TRUE(valid_topic_filter("a/+/c"));
  EXPECT_TRUE(valid_topic_filter("$iothub/twin/res/#"));
  EXPECT_FALSE(valid_topic_filter("a/#/c"));
  EXPECT_FALSE(valid_topic_filter("a/b+"));
  EXPECT_FALSE(valid_topic_filter(""));
  EXPECT_TRUE(topic_matches("devices/d/messages/devicebound/#", "devices/d/messages/devicebound/%24.mid=1"));
  EXPECT_TRUE(topic_matches("a/#", "a"));
  EXPECT_TRUE(topic_matches("a/+/c", "a/b/c"));
  EXPECT_FALSE(topic_matches("a/+/c", "a/b/d"));
  EXPECT_FALSE(topic_matches("a/+", "a/b/c"));
  EXPECT_FALSE(topic_matches("#", "$iothub/x"));
  EXPECT_TRUE(topic_matches("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1"));
}

TEST(mqtt_codec, utf8_validation) {
  EXPECT_TRUE(valid_utf8("caf\xC3\xA9"));
  EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(valid_utf8("\xE2\x82"));          // truncated sequence
}

TEST(mqtt_codec, server_packets_encode_as_the_spec_says) {
  std::string out;
  encode(connack{false, connack_code::not_authorized}, out);
  EXPECT_EQ(out, bytes({0x20, 2, 0, 5}));
  out.clear();
  encode(puback{0x0102}, out);
  EXPECT_EQ(out, bytes({0x40, 2, 1, 2}));
  out.clear();
  encode(suback{9, {1, 0, 0x80}}, out);
  EXPECT_EQ(out, bytes({0x90, 5, 0, 9, 1, 0, 0x80}));
  out.clear();
  encode(pingresp{}, out);
  EXPECT_EQ(out, bytes({0xD0, 0}));
}
