// PUBLISH decisions and PUBACK order.
#include "base/json.hpp"
#include "heads/mqtt/publish.hpp"

#include <boost/json/object.hpp>

#include <algorithm>
#include <random>
#include <set>

#include <gtest/gtest.h>

namespace hub::mqtt_head {
namespace {

using action = publish_decision::action;

const sender dev1{"dev1", "", "123456789012345678", telemetry::auth_method::sas, "dtmi:com:example;1"};
const sender mod1{"dev1", "mod1", "223456789012345678", telemetry::auth_method::policy, ""};

mqtt::publish pub(std::string topic, std::string payload = "{}", std::uint8_t qos = 1) {
  return mqtt::publish{std::move(topic), std::move(payload), qos, false, false, qos ? std::uint16_t{7} : std::uint16_t{0}};
}

publish_decision decide(mqtt::publish p, const sender& who = dev1) {
  return decide_publish(std::move(p), who, sys_time{std::chrono::seconds{1'700'000'000}});
}

TEST(decide_publish, telemetry_is_stamped_with_the_connected_identity) {
  auto d = decide(pub("devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&alert=hot%20%26%20cold",
                      "{\"t\":21}"));
  ASSERT_EQ(d.what, action::telemetry) << d.reason;
  const auto& m = d.message;
  EXPECT_EQ(m.body, "{\"t\":21}");
  EXPECT_EQ(m.message_id, "m1");
  EXPECT_EQ(m.content_type, "application/json");
  ASSERT_EQ(m.properties.size(), 1u);
  EXPECT_EQ(m.properties[0].first, "alert");
  EXPECT_EQ(std::get<std::string>(m.properties[0].second), "hot & cold");
  EXPECT_EQ(m.device_id, "dev1");
  EXPECT_EQ(m.module_id, "");
  EXPECT_EQ(m.generation_id, "123456789012345678");
  EXPECT_EQ(m.auth, telemetry::auth_method::sas);
  EXPECT_EQ(m.model_id, "dtmi:com:example;1");
}

TEST(decide_publish, module_telemetry_and_outputs) {
  auto d = decide(pub("devices/dev1/modules/mod1/messages/events/%24.on=out1/"), mod1);
  ASSERT_EQ(d.what, action::telemetry) << d.reason;
  EXPECT_EQ(d.message.module_id, "mod1");
  EXPECT_EQ(d.message.output_name, "out1");
  EXPECT_EQ(d.message.auth, telemetry::auth_method::policy);
  // A module may not publish as its device, nor the device as its module.
  EXPECT_EQ(decide(pub("devices/dev1/messages/events/"), mod1).what, action::close);
  EXPECT_EQ(decide(pub("devices/dev1/modules/mod1/messages/events/"), dev1).what, action::close);
}

TEST(decide_publish, retain_is_passed_on_as_a_property) {
  auto p = pub("devices/dev1/messages/events/");
  p.retain = true;
  auto d = decide(std::move(p));
  ASSERT_EQ(d.what, action::telemetry);
  ASSERT_EQ(d.message.properties.size(), 1u);
  EXPECT_EQ(d.message.properties[0].first, "mqtt-retain");
  EXPECT_EQ(std::get<std::string>(d.message.properties[0].second), "true");
}

TEST(will_telemetry, is_telemetry_with_message_type_will) {
  const sys_time now{std::chrono::seconds{1'700'000'000}};
  auto m = will_telemetry(mqtt::will_message{"devices/dev1/messages/events/%24.ct=text%2Fplain&why=lost", "bye", 1, false},
                          dev1, now);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body, "bye");
  EXPECT_EQ(m->content_type, "text/plain");
  EXPECT_EQ(m->device_id, "dev1");
  EXPECT_EQ(m->generation_id, dev1.generation_id);
  ASSERT_EQ(m->properties.size(), 2u);
  EXPECT_EQ(m->properties[0].first, "why");
  EXPECT_EQ(m->properties[1].first, "iothub-MessageType");
  EXPECT_EQ(std::get<std::string>(m->properties[1].second), "Will");

  // Retained: mqtt-retain, as for a publish. A module's will is the module's.
  auto r = will_telemetry(mqtt::will_message{"devices/dev1/modules/mod1/messages/events/", "", 0, true}, mod1, now);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->module_id, "mod1");
  ASSERT_EQ(r->properties.size(), 2u);
  EXPECT_EQ(r->properties[0].first, "mqtt-retain");
  EXPECT_EQ(r->properties[1].first, "iothub-MessageType");

  // A device cannot pass its will off as something else.
  auto spoof = will_telemetry(mqtt::will_message{"devices/dev1/messages/events/iothub-MessageType=Normal", "", 0, false},
                              dev1, now);
  ASSERT_TRUE(spoof);
  ASSERT_EQ(spoof->properties.size(), 1u);
  EXPECT_EQ(std::get<std::string>(spoof->properties[0].second), "Will");

  EXPECT_FALSE(will_telemetry(mqtt::will_message{"devices/dev2/messages/events/", "", 0, false}, dev1, now));
}

TEST(decide_publish, what_iot_hub_closes_the_connection_for) {
  EXPECT_EQ(decide(pub("devices/dev2/messages/events/")).what, action::close);          // another device
  EXPECT_EQ(decide(pub("devices/dev1/messages/events/", "{}", 2)).what, action::close);  // QoS 2
  EXPECT_EQ(decide(pub("devices/dev1/messages/events/a=%zz")).what, action::close);      // bad escape
  EXPECT_EQ(decide(pub("devices/dev1/messages/devicebound/x")).what, action::close);     // not publishable
  EXPECT_EQ(decide(pub("some/topic")).what, action::close);
  EXPECT_EQ(decide(pub("$iothub/twin/GET/")).what, action::close);  // no $rid
}

TEST(decide_publish, twin_requests_go_to_the_twin_service) {
  auto get = decide(pub("$iothub/twin/GET/?$rid=6f3d", " ", 0));  // the SDK's GET payload is one space
  ASSERT_EQ(get.what, action::twin) << get.reason;
  EXPECT_EQ(get.twin.what, twin_request::kind::get);
  EXPECT_EQ(get.twin.rid, "6f3d");

  auto patch = decide(pub("$iothub/twin/PATCH/properties/reported/?$rid=9", "{\"a\":{\"b\":null}}", 0), mod1);
  ASSERT_EQ(patch.what, action::twin) << patch.reason;
  EXPECT_EQ(patch.twin.what, twin_request::kind::patch_reported);
  EXPECT_EQ(patch.twin.rid, "9");
  ASSERT_TRUE(patch.twin.patch.is_object());
  EXPECT_TRUE(patch.twin.patch.as_object().at("a").as_object().at("b").is_null());
}

TEST(decide_publish, a_reported_patch_that_is_not_json_gets_an_error_the_sdk_understands) {
  auto d = decide(pub("$iothub/twin/PATCH/properties/reported/?$rid=9", "{\"a\":", 0));
  ASSERT_EQ(d.what, action::answer);
  EXPECT_EQ(d.answer.topic, "$iothub/twin/res/400/?$rid=9");
  auto body = json::parse(d.answer.payload);
  ASSERT_TRUE(body.has_value());
  ASSERT_TRUE(body->is_object());
  EXPECT_EQ(body->as_object().at("errorCode").as_int64(), 400006);  // without it the SDK reports success
  EXPECT_TRUE(body->as_object().contains("message"));
}

TEST(decide_publish, method_responses) {
  auto d = decide(pub("$iothub/methods/res/201/?$rid=ab-1", "{\"ok\":true}", 0));
  ASSERT_EQ(d.what, action::method_response) << d.reason;
  EXPECT_EQ(d.method.rid, "ab-1");
  EXPECT_EQ(d.method.status, 201);
  EXPECT_EQ(d.method.payload, "{\"ok\":true}");
  // JSON.stringify(undefined) publishes nothing: the caller sees null.
  d = decide(pub("$iothub/methods/res/200/?$rid=2", "", 0));
  ASSERT_EQ(d.what, action::method_response);
  EXPECT_EQ(d.method.payload, "null");
}

TEST(decide_publish, broken_method_responses_are_ignored_with_a_reason) {
  for (const char* topic : {"$iothub/methods/res/x/?$rid=1", "$iothub/methods/res/200/", "$iothub/methods/res/200/?$rid="}) {
    auto d = decide(pub(topic, "null", 0));
    EXPECT_EQ(d.what, action::ignore) << topic;
    EXPECT_FALSE(d.reason.empty()) << topic;
  }
}

TEST(ack_queue, acknowledges_in_publish_order) {
  ack_queue q;
  const auto a = q.push(1);
  const auto b = q.push(0);  // QoS 0: ordered, never acknowledged
  const auto c = q.push(3);
  std::vector<std::uint16_t> ready;
  q.complete(c, ready);
  EXPECT_TRUE(ready.empty());
  EXPECT_EQ(q.in_flight(), 3u);
  q.complete(a, ready);
  EXPECT_EQ(ready, (std::vector<std::uint16_t>{1}));
  ready.clear();
  q.complete(b, ready);
  EXPECT_EQ(ready, (std::vector<std::uint16_t>{3}));
  EXPECT_EQ(q.in_flight(), 0u);
  ready.clear();
  q.complete(a, ready);  // twice: ignored
  q.complete(99, ready);  // unknown: ignored
  EXPECT_TRUE(ready.empty());
  const auto d = q.push(4);
  q.complete(d, ready);
  EXPECT_EQ(ready, (std::vector<std::uint16_t>{4}));
}

// Many publishes in flight, completed in a shuffled order while more arrive (the queue compacts
// and empties as it goes): every PUBACK comes out once, in push order, and only when every
// earlier publish is done.
TEST(ack_queue, keeps_order_across_compaction_and_draining) {
  ack_queue q;
  std::mt19937 rng(7);
  std::vector<ack_queue::ticket> open;  // pushed, not completed
  std::vector<std::uint16_t> pushed;    // packet ids in push order (0: QoS 0)
  std::vector<std::uint16_t> acked;
  std::set<ack_queue::ticket> done;
  ack_queue::ticket oldest = 0;  // oldest ticket not yet done
  std::vector<ack_queue::ticket> tickets;
  for (int round = 0; round < 2000; ++round) {
    const int pushes = static_cast<int>(rng() % 40);
    for (int i = 0; i < pushes; ++i) {
      const auto id = static_cast<std::uint16_t>(rng() % 5 == 0 ? 0 : 1 + pushed.size() % 65535);
      tickets.push_back(q.push(id));
      pushed.push_back(id);
      open.push_back(tickets.back());
    }
    std::shuffle(open.begin(), open.end(), rng);
    const std::size_t completes = open.empty() ? 0 : rng() % (open.size() + 1);
    for (std::size_t i = 0; i < completes; ++i) {
      std::vector<std::uint16_t> ready;
      q.complete(open.back(), ready);
      done.insert(open.back());
      open.pop_back();
      acked.insert(acked.end(), ready.begin(), ready.end());
      while (done.count(oldest)) ++oldest;
    }
    ASSERT_EQ(q.in_flight(), tickets.size() - oldest);
  }
  std::vector<std::uint16_t> expected;
  for (std::size_t i = 0; i < oldest; ++i) {
    if (pushed[i] != 0) expected.push_back(pushed[i]);
  }
  EXPECT_EQ(acked, expected);
}

}  // namespace
}  // namespace hub::mqtt_head
