// Cloud-to-device delivery on MQTT: the topic and property bag, which subscription delivers at
// what QoS, and the window of messages waiting for PUBACK.
#include "base/text.hpp"
#include "heads/mqtt/c2d.hpp"
#include "heads/mqtt/topics.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace hub::mqtt_head {
namespace {

c2d::delivery sample() {
  c2d::delivery d;
  d.device_id = "dev1";
  d.to = "/devices/dev1/messages/devicebound";
  d.msg.body = "hello";
  d.msg.message_id = "m 1";
  d.msg.correlation_id = "c/1";
  d.msg.user_id = "u1";
  d.msg.content_type = "application/json";
  d.msg.content_encoding = "utf-8";
  d.msg.expiry = sys_time{std::chrono::seconds{1'700'000'000}};
  d.msg.ack = c2d::ack_mode::full;
  d.msg.properties = {{"a/b", "x y"}, {"k&=", "v=&%+"}, {"temp", "\xC3\xA9t\xC3\xA9"}};
  d.lock_token = "tok";
  return d;
}

// What the Node SDK does with the topic (azure-iot-device-mqtt mqtt.js _onC2DMessage): the 5th
// '/'-segment, split on '&' then '=', each side decodeURIComponent()ed.
std::vector<std::pair<std::string, std::string>> sdk_reads(const std::string& topic) {
  const auto parts = text::split(topic, '/');
  EXPECT_EQ(parts.size(), 5u) << topic;
  std::vector<std::pair<std::string, std::string>> out;
  if (parts.size() < 5) return out;
  for (auto pair : text::split(parts[4], '&')) {
    const auto kv = text::split(pair, '=');
    EXPECT_EQ(kv.size(), 2u) << pair;
    out.emplace_back(text::url_decode(kv[0]).value_or("?"), text::url_decode(kv.size() > 1 ? kv[1] : "").value_or("?"));
  }
  return out;
}

TEST(c2d_topic, carries_every_field_in_order_and_survives_the_sdks_split) {
  const auto d = sample();
  const std::string topic = c2d_topic(d);
  EXPECT_TRUE(topic.starts_with("devices/dev1/messages/devicebound/%24.mid=m%201&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&"))
      << topic;
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"$.mid", "m 1"},
      {"$.to", "/devices/dev1/messages/devicebound"},
      {"$.cid", "c/1"},
      {"$.uid", "u1"},
      {"$.ct", "application/json"},
      {"$.ce", "utf-8"},
      {"$.exp", "2023-11-14T22:13:20.0000000Z"},
      {"iothub-ack", "full"},
      {"a/b", "x y"},
      {"k&=", "v=&%+"},
      {"temp", "\xC3\xA9t\xC3\xA9"},
  };
  EXPECT_EQ(sdk_reads(topic), expected);
  // decodeURIComponent keeps '+' as '+': a space must never be sent as '+'.
  EXPECT_EQ(topic.find('+'), std::string::npos);
  EXPECT_EQ(topic.find(' '), std::string::npos);
}

TEST(c2d_topic, leaves_out_empty_system_fields_but_not_to_exp_and_ack) {
  c2d::delivery d;
  d.device_id = "dev-2";
  d.to = "/devices/dev-2/messages/devicebound";
  d.msg.expiry = sys_time{std::chrono::seconds{1'700'000'000}};
  const auto read = sdk_reads(c2d_topic(d));
  std::vector<std::string> keys;
  for (const auto& [k, v] : read) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"$.to", "$.exp", "iothub-ack"}));
  EXPECT_EQ(read.back().second, "none");
  // Round trip through the head's own decoder too.
  const auto bag = parse_property_bag(c2d_property_bag(d));
  ASSERT_TRUE(bag);
  EXPECT_EQ(bag->size(), 3u);
}

TEST(c2d_qos, only_a_devicebound_wildcard_of_the_device_delivers) {
  const client_identity dev{"dev1", ""};
  using subs = std::vector<mqtt::subscription>;
  EXPECT_EQ(c2d_qos(subs{{"devices/dev1/messages/devicebound/#", 1}}, dev), 1);
  EXPECT_EQ(c2d_qos(subs{{"devices/dev1/messages/devicebound/+", 0}}, dev), 0);
  EXPECT_EQ(c2d_qos(subs{{"$iothub/methods/POST/#", 0}, {"devices/dev1/messages/devicebound/#", 0},
                         {"devices/dev1/messages/devicebound/+", 1}},
                    dev),
            1);
  EXPECT_FALSE(c2d_qos(subs{}, dev));
  EXPECT_FALSE(c2d_qos(subs{{"$iothub/twin/res/#", 0}}, dev));
  EXPECT_FALSE(c2d_qos(subs{{"devices/dev1/messages/devicebound/%24.mid=1", 1}}, dev));
  EXPECT_FALSE(c2d_qos(subs{{"devices/dev1/messages/devicebound", 1}}, dev));
  EXPECT_FALSE(c2d_qos(subs{{"devices/dev2/messages/devicebound/#", 1}}, dev));
  // Modules have no C2D in IoT Hub, whatever they subscribe to.
  const client_identity mod{"dev1", "mod1"};
  EXPECT_FALSE(c2d_qos(subs{{"devices/dev1/modules/mod1/messages/devicebound/#", 1}}, mod));
  EXPECT_FALSE(c2d_qos(subs{{"devices/dev1/messages/devicebound/#", 1}}, mod));
}

TEST(c2d_window, receives_only_when_told_and_while_there_is_room) {
  c2d_window w(3);
  EXPECT_EQ(w.to_receive(), 0u);  // nothing said to be waiting
  w.notify();
  EXPECT_EQ(w.to_receive(), 3u);
  EXPECT_TRUE(w.receiving());
  EXPECT_EQ(w.to_receive(), 0u);  // one receive at a time
  w.received(3, 3);
  const auto a = w.sent("a");
  const auto b = w.sent("b");
  const auto c = w.sent("c");
  EXPECT_EQ(w.in_flight(), 3u);
  EXPECT_EQ(w.to_receive(), 0u);  // full
  EXPECT_EQ(w.acked(b), "b");
  EXPECT_EQ(w.acked(b), std::nullopt);  // a duplicate PUBACK
  EXPECT_EQ(w.to_receive(), 1u);        // the full answer may have left more behind
  w.received(1, 0);                     // it did not
  EXPECT_EQ(w.to_receive(), 0u);
  EXPECT_EQ(w.acked(a), "a");
  EXPECT_EQ(w.to_receive(), 0u);  // room, but the queue is empty until notified
  w.notify();
  EXPECT_EQ(w.to_receive(), 2u);
  w.received(2, 1);
  w.sent("d");
  EXPECT_EQ(w.to_receive(), 0u);
  auto left = w.drain();
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(w.in_flight(), 0u);
  EXPECT_EQ(w.acked(c), std::nullopt);
}

TEST(c2d_window, a_notification_during_a_receive_makes_another_follow) {
  c2d_window w(50);
  w.notify();
  EXPECT_EQ(w.to_receive(), 50u);
  w.notify();           // a message sent after the receive looked at the queue
  w.received(50, 0);    // so the empty answer does not mean empty
  EXPECT_EQ(w.to_receive(), 50u);
  w.received(50, 0);
  EXPECT_EQ(w.to_receive(), 0u);
}

TEST(c2d_window, packet_ids_skip_zero_and_those_still_out) {
  c2d_window w(4);
  std::set<std::uint16_t> out;
  const auto first = w.sent("first");  // stays out the whole time
  out.insert(first);
  for (int i = 0; i < 70000; ++i) {
    const auto id = w.sent("t");
    EXPECT_NE(id, 0);
    EXPECT_NE(id, first);
    EXPECT_EQ(w.acked(id), "t");
  }
  EXPECT_EQ(w.acked(first), "first");
}

}  // namespace
}  // namespace hub::mqtt_head
