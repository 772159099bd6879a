#include "codec/mqtt/session.hpp"

#include <gtest/gtest.h>

using namespace hub::mqtt;

namespace {

std::string wire(const packet& p) {
  std::string s;
  encode(p, s);
  return s;
}

connect sdk_connect(std::uint16_t keep_alive = 180) {
  connect c;
  c.clean_session = false;
  c.keep_alive = keep_alive;
  c.client_id = "dev1";
  c.username = "hub/dev1/?api-version=2021-04-12";
  c.password = "token";
  return c;
}

std::vector<event> feed(server_session& s, const std::string& bytes) {
  std::vector<event> out;
  s.recv({bytes.data(), bytes.size()}, out);
  return out;
}

}  // namespace

TEST(mqtt_session, connect_then_publishes_arrive_in_order_even_split_byte_by_byte) {
  server_session s;
  std::string all = wire(sdk_connect());
  for (int i = 1; i <= 3; ++i) all += wire(publish{"devices/dev1/messages/events/", "m", 1, false, false,
                                                   static_cast<std::uint16_t>(i)});
  std::vector<event> events;
  for (char c : all) s.recv({&c, 1}, events);
  ASSERT_EQ(events.size(), 5u);  // CONNECT, arm keep-alive, 3 x PUBLISH
  EXPECT_TRUE(std::holds_alternative<connect>(std::get<packet_received>(events[0]).pkt));
  EXPECT_EQ(std::get<arm_keep_alive>(events[1]).period, std::chrono::milliseconds(90'000));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(std::get<publish>(std::get<packet_received>(events[2 + i]).pkt).packet_id, i + 1);
  }
  EXPECT_EQ(s.buffered(), 0u);
}

TEST(mqtt_session, first_packet_must_be_connect) {
  server_session s;
  auto ev = feed(s, wire(publish{"a", "b", 0, false, false, 0}));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<close_connection>(ev[0]).why, close_reason::protocol_violation);
  EXPECT_TRUE(s.closed());
  EXPECT_TRUE(feed(s, wire(sdk_connect())).empty());  // nothing after close
}

TEST(mqtt_session, second_connect_closes) {
  server_session s;
  feed(s, wire(sdk_connect()));
  auto ev = feed(s, wire(sdk_connect()));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<close_connection>(ev[0]).why, close_reason::protocol_violation);
}

TEST(mqtt_session, malformed_packet_closes_with_the_reason) {
  server_session s;
  feed(s, wire(sdk_connect()));
  const std::string bad = {0x32, 5, 0, 1, 't', 0, 0};  // QoS 1 with packet id 0
  auto ev = feed(s, bad);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<close_connection>(ev[0]).detail, decode_error::zero_packet_id);
}

TEST(mqtt_session, pingreq_is_answered_by_the_session) {
  server_session s;
  feed(s, wire(sdk_connect()));
  auto ev = feed(s, wire(pingreq{}));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<send_bytes>(ev[0]).bytes, wire(pingresp{}));
}

TEST(mqtt_session, disconnect_closes_cleanly) {
  server_session s;
  feed(s, wire(sdk_connect()));
  auto ev = feed(s, wire(disconnect{}));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<close_connection>(ev[0]).why, close_reason::client_disconnect);
}

TEST(mqtt_session, keep_alive_closes_after_three_idle_ticks_only) {
  server_session s;
  feed(s, wire(sdk_connect(10)));
  std::vector<event> ev;
  s.keep_alive_tick(ev);  // traffic since connect: resets
  s.keep_alive_tick(ev);  // idle 1
  s.keep_alive_tick(ev);  // idle 2
  EXPECT_TRUE(ev.empty());
  feed(s, wire(pingreq{}));
  s.keep_alive_tick(ev);  // traffic: resets
  s.keep_alive_tick(ev);
  s.keep_alive_tick(ev);
  EXPECT_TRUE(ev.empty());
  s.keep_alive_tick(ev);  // third idle tick: 1.5 x keep-alive passed
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<close_connection>(ev[0]).why, close_reason::keep_alive_timeout);
}

TEST(mqtt_session, oversize_packet_is_refused_from_its_header) {
  decode_limits l;
  l.max_packet_size = 1024;
  server_session s(l);
  feed(s, wire(sdk_connect()));
  auto ev = feed(s, wire(publish{"a", std::string(2000, 'x'), 0, false, false, 0}).substr(0, 4));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<close_connection>(ev[0]).detail, decode_error::packet_too_large);
}

TEST(mqtt_session, packet_ids_skip_zero) {
  server_session s;
  for (int i = 0; i < 65535; ++i) s.next_packet_id();
  EXPECT_EQ(s.next_packet_id(), 1);
}
