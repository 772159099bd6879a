#include "heads/mqtt/topics.hpp"

#include <gtest/gtest.h>

using namespace hub;
using namespace hub::mqtt_head;

TEST(mqtt_topics, client_ids) {
  EXPECT_EQ(parse_client_id("dev1")->device_id, "dev1");
  const auto m = parse_client_id("dev1/mod1");
  EXPECT_EQ(m->device_id, "dev1");
  EXPECT_EQ(m->module_id, "mod1");
  EXPECT_FALSE(parse_client_id(""));
  EXPECT_FALSE(parse_client_id("/mod"));
  EXPECT_FALSE(parse_client_id("dev/"));
  EXPECT_FALSE(parse_client_id("a/b/c"));
}

TEST(mqtt_topics, username_as_the_sdk_sends_it) {
  const client_identity dev{"dev1", ""};
  const auto u = parse_username(
      "localhost:18883/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20)", dev);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "localhost:18883");
  EXPECT_EQ(u->api_version, "2021-04-12");
  EXPECT_EQ(u->client_type, "azure-iot-device/1.18.4 (node v20)");
  // model-id is appended raw, with ':' and ';'
  const auto pnp = parse_username("h/dev1/?api-version=2021-04-12&model-id=dtmi:com:example;1", dev);
  EXPECT_EQ(pnp->model_id, "dtmi:com:example;1");
  const client_identity mod{"dev1", "mod1"};
  EXPECT_EQ(parse_username("127.0.0.2/dev1/mod1/?api-version=2021-04-12", mod)->host, "127.0.0.2");
  // A username naming another identity is refused.
  EXPECT_FALSE(parse_username("h/dev2/?api-version=2021-04-12", dev));
  EXPECT_FALSE(parse_username("h/dev1/mod2/?api-version=x", mod));
  EXPECT_FALSE(parse_username("dev1/?api-version=x", dev));  // no host
}

TEST(mqtt_topics, telemetry_topics) {
  auto t = classify_publish("devices/dev1/messages/events/%24.mid=mid-1&alert=hot%2Fcold");
  EXPECT_EQ(t.kind, publish_kind::telemetry);
  EXPECT_EQ(t.device_id, "dev1");
  EXPECT_EQ(t.property_bag, "%24.mid=mid-1&alert=hot%2Fcold");
  EXPECT_EQ(classify_publish("devices/dev1/messages/events/").property_bag, "");
  EXPECT_EQ(classify_publish("devices/dev1/messages/events").kind, publish_kind::telemetry);
  t = classify_publish("devices/dev1/modules/mod1/messages/events/%24.on=out1/");
  EXPECT_EQ(t.kind, publish_kind::telemetry);
  EXPECT_EQ(t.module_id, "mod1");
  EXPECT_EQ(t.property_bag, "%24.on=out1");
  EXPECT_EQ(classify_publish("devices/dev1/messages/eventsX").kind, publish_kind::unknown);
  EXPECT_EQ(classify_publish("devices//messages/events/").kind, publish_kind::unknown);
  EXPECT_EQ(classify_publish("devices/dev1/messages/devicebound/x").kind, publish_kind::unknown);
  EXPECT_EQ(classify_publish("some/other/topic").kind, publish_kind::unknown);
}

TEST(mqtt_topics, iothub_topics) {
  auto t = classify_publish("$iothub/twin/GET/?$rid=5e2f");
  EXPECT_EQ(t.kind, publish_kind::twin_get);
  EXPECT_EQ(t.request_id, "5e2f");
  EXPECT_EQ(classify_publish("$iothub/twin/PATCH/properties/reported/?$rid=9").kind,
            publish_kind::twin_patch_reported);
  t = classify_publish("$iothub/methods/res/200/?$rid=abc");
  EXPECT_EQ(t.kind, publish_kind::method_response);
  EXPECT_EQ(t.status, 200);
  EXPECT_EQ(t.request_id, "abc");
  EXPECT_EQ(classify_publish("$iothub/twin/GET/").kind, publish_kind::unknown);  // no $rid
}

TEST(mqtt_topics, broken_method_responses_are_still_method_responses) {
  // The head logs and ignores them; it does not close the connection over one answer.
  auto t = classify_publish("$iothub/methods/res/x/?$rid=abc");
  EXPECT_EQ(t.kind, publish_kind::method_response);
  EXPECT_FALSE(t.status.has_value());
  EXPECT_EQ(t.request_id, "abc");
  t = classify_publish("$iothub/methods/res/NaN/?$rid=abc");  // JS's %d of a non-number
  EXPECT_FALSE(t.status.has_value());
  t = classify_publish("$iothub/methods/res/99999999999/?$rid=abc");
  EXPECT_FALSE(t.status.has_value());
  t = classify_publish("$iothub/methods/res/-1/?$rid=abc");
  EXPECT_EQ(t.status, -1);
  t = classify_publish("$iothub/methods/res/404?$rid=7");
  EXPECT_EQ(t.status, 404);
  EXPECT_EQ(t.request_id, "7");
  t = classify_publish("$iothub/methods/res/200/");
  EXPECT_EQ(t.kind, publish_kind::method_response);
  EXPECT_EQ(t.status, 200);
  EXPECT_EQ(t.request_id, "");
  EXPECT_EQ(classify_publish("$iothub/methods/POST/x/?$rid=1").kind, publish_kind::unknown);
}

TEST(mqtt_topics, topic_matching) {
  EXPECT_TRUE(topic_matches("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1"));
  EXPECT_TRUE(topic_matches("$iothub/methods/#", "$iothub/methods/POST/reboot/?$rid=1"));
  EXPECT_TRUE(topic_matches("$iothub/methods/POST/+/+", "$iothub/methods/POST/reboot/?$rid=1"));
  EXPECT_FALSE(topic_matches("$iothub/methods/POST/+", "$iothub/methods/POST/reboot/?$rid=1"));
  EXPECT_TRUE(topic_matches("$iothub/methods/POST/reboot/#", "$iothub/methods/POST/reboot/?$rid=1"));
  EXPECT_FALSE(topic_matches("$iothub/methods/POST/reboot/#", "$iothub/methods/POST/other/?$rid=1"));
  EXPECT_TRUE(topic_matches("a/b/#", "a/b"));  // '#' includes the parent level
  EXPECT_TRUE(topic_matches("a/+/c", "a//c"));
  EXPECT_FALSE(topic_matches("a/b", "a/b/c"));
  EXPECT_FALSE(topic_matches("a/b/c", "a/b"));
  EXPECT_TRUE(topic_matches("a/b/", "a/b/"));
  EXPECT_FALSE(topic_matches("a/#/c", "a/b/c"));  // '#' only last
  // Wildcards at the first level do not reach '$' topics (MQTT 3.1.1 §4.7.2).
  EXPECT_FALSE(topic_matches("#", "$iothub/twin/res/200/?$rid=1"));
  EXPECT_FALSE(topic_matches("+/twin/#", "$iothub/twin/res/200/?$rid=1"));
  EXPECT_TRUE(topic_matches("#", "devices/d/messages/devicebound/x"));
  EXPECT_FALSE(topic_matches("", "a"));
}

TEST(mqtt_topics, property_bag_as_captured_from_the_sdk) {
  const auto props = parse_property_bag(
      "%24.mid=mid-1&%24.cid=cid-1&%24.uid=u1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.exp=2030-01-01T00%3A00%3A00.000Z"
      "&alert=hot%2Fcold%20%26%20more&iothub-creation-time-utc=2024-01-01T00%3A00%3A00Z&plus=a+b");
  ASSERT_TRUE(props);
  telemetry::message m;
  apply_properties(*props, m);
  EXPECT_EQ(m.message_id, "mid-1");
  EXPECT_EQ(m.correlation_id, "cid-1");
  EXPECT_EQ(m.user_id, "u1");
  EXPECT_EQ(m.content_type, "application/json");
  EXPECT_EQ(m.content_encoding, "utf-8");
  EXPECT_EQ(m.expiry_time_utc, "2030-01-01T00:00:00.000Z");
  ASSERT_EQ(m.properties.size(), 3u);
  EXPECT_EQ(m.properties[0].first, "alert");
  EXPECT_EQ(std::get<std::string>(m.properties[0].second), "hot/cold & more");
  EXPECT_EQ(m.properties[1].first, "iothub-creation-time-utc");
  EXPECT_EQ(std::get<std::string>(m.properties[2].second), "a+b");  // '+' is not a space
  // A raw '$' works as well as %24.
  auto raw = parse_property_bag("$.mid=7");
  telemetry::message m2;
  apply_properties(*raw, m2);
  EXPECT_EQ(m2.message_id, "7");
  EXPECT_FALSE(parse_property_bag("a=%zz"));
  EXPECT_FALSE(parse_property_bag("=v"));
}

TEST(mqtt_topics, subscriptions_are_limited_to_the_identity) {
  const client_identity dev{"dev1", ""};
  EXPECT_TRUE(subscription_allowed("devices/dev1/messages/devicebound/#", dev));
  EXPECT_TRUE(subscription_allowed("$iothub/methods/POST/#", dev));
  EXPECT_TRUE(subscription_allowed("$iothub/twin/res/#", dev));
  EXPECT_FALSE(subscription_allowed("devices/dev2/messages/devicebound/#", dev));
  EXPECT_FALSE(subscription_allowed("#", dev));
  const client_identity mod{"dev1", "mod1"};
  EXPECT_TRUE(subscription_allowed("devices/dev1/modules/mod1/inputs/#", mod));
  EXPECT_FALSE(subscription_allowed("devices/dev1/messages/devicebound/#", mod));
}
