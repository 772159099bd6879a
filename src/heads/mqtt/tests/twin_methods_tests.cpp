// Twins and direct methods on MQTT: the replies, the desired notification, the method call, and
// which subscriptions take desired updates and method calls.
#include "base/json.hpp"
#include "heads/mqtt/twin_methods.hpp"

#include <boost/json/object.hpp>
#include <gtest/gtest.h>

namespace hub::mqtt_head {
namespace {

const sys_time now{std::chrono::seconds{1'700'000'000}};

boost::json::object body_of(const reply& r) {
  auto parsed = json::parse(r.payload);
  EXPECT_TRUE(parsed.has_value()) << r.payload;
  if (!parsed || !parsed->is_object()) return {};
  return parsed->as_object();
}

TEST(twin_replies, get_carries_the_view_as_json) {
  const boost::json::object view{{"desired", {{"x", 1}, {"$version", 3}}}, {"reported", {{"$version", 1}}}};
  const reply r = twin_get_reply("6f3d-1", view);
  EXPECT_EQ(r.topic, "$iothub/twin/res/200/?$rid=6f3d-1");
  EXPECT_EQ(body_of(r), view);
}

TEST(twin_replies, patch_carries_the_new_reported_version_and_no_body) {
  const reply r = twin_patch_reply("9", 42);
  EXPECT_EQ(r.topic, "$iothub/twin/res/204/?$rid=9&$version=42");
  EXPECT_TRUE(r.payload.empty());  // the SDK takes an empty body as success
}

TEST(twin_replies, errors_carry_iot_hubs_error_body) {
  const reply r = twin_error_reply("7", make_error(errc::argument_invalid, "bad key 'a.b'"), now);
  EXPECT_EQ(r.topic, "$iothub/twin/res/400/?$rid=7");
  const auto body = body_of(r);
  ASSERT_TRUE(body.contains("errorCode"));  // without it the SDK reports success
  EXPECT_EQ(body.at("errorCode").as_int64(), 400004);
  EXPECT_EQ(body.at("message").as_string(), "bad key 'a.b'");
  EXPECT_FALSE(body.at("trackingId").as_string().empty());
  EXPECT_EQ(body.at("timestampUtc").as_string(), to_iso8601(now));

  EXPECT_EQ(twin_error_reply("7", make_error(errc::device_not_found, "gone"), now).topic, "$iothub/twin/res/404/?$rid=7");
  EXPECT_EQ(twin_error_reply("7", make_error(errc::throttled, "slow down"), now).topic, "$iothub/twin/res/429/?$rid=7");
  EXPECT_EQ(body_of(twin_error_reply("7", make_error(errc::server_error, "x"), now)).at("errorCode").as_int64(), 500001);
}

TEST(twin_replies, without_twins_every_request_gets_501_with_an_error_code) {
  const reply r = twin_unavailable_reply("1", now);
  EXPECT_EQ(r.topic, "$iothub/twin/res/501/?$rid=1");
  EXPECT_EQ(body_of(r).at("errorCode").as_int64(), 501000);
}

TEST(desired_notification, topic_carries_the_patch_version) {
  const auto r = desired_notification(R"({"x":{"y":null},"$version":7})");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->topic, "$iothub/twin/PATCH/properties/desired/?$version=7");
  EXPECT_EQ(r->payload, R"({"x":{"y":null},"$version":7})");  // as the twin service wrote it
  EXPECT_FALSE(desired_notification(R"({"x":1})").has_value());
  EXPECT_FALSE(desired_notification(R"({"$version":"7"})").has_value());
  EXPECT_FALSE(desired_notification("[1]").has_value());
  EXPECT_FALSE(desired_notification("{").has_value());
}

TEST(method_calls, request_topic_and_payload) {
  const reply r = method_request("reboot", "0b6c7a2e-1", R"({"delay":5})");
  EXPECT_EQ(r.topic, "$iothub/methods/POST/reboot/?$rid=0b6c7a2e-1");
  EXPECT_EQ(r.payload, R"({"delay":5})");
  // Never empty: the SDK answers an empty body with status 400.
  EXPECT_EQ(method_request("m", "1", "").payload, "null");
}

TEST(method_calls, response_payloads) {
  EXPECT_EQ(method_response_payload(R"({"a":[1,2]})"), R"({"a":[1,2]})");
  EXPECT_EQ(method_response_payload("\"text\""), "\"text\"");
  EXPECT_EQ(method_response_payload("42"), "42");
  EXPECT_EQ(method_response_payload(""), "null");
  // Passed on as sent: the REST route decides how a caller sees an answer that is not JSON.
  EXPECT_EQ(method_response_payload("plain text"), "plain text");
}

TEST(subscriptions, which_take_method_calls_and_desired_updates) {
  using subs = std::vector<mqtt::subscription>;
  EXPECT_TRUE(takes_method_calls(subs{{"$iothub/methods/POST/#", 0}}));
  EXPECT_TRUE(takes_method_calls(subs{{"$iothub/methods/#", 1}}));
  EXPECT_TRUE(takes_method_calls(subs{{"devices/d/messages/devicebound/#", 1}, {"$iothub/methods/POST/+/+", 0}}));
  // One method only, or nothing of the kind: not a connection that takes calls.
  EXPECT_FALSE(takes_method_calls(subs{{"$iothub/methods/POST/reboot/#", 0}}));
  EXPECT_FALSE(takes_method_calls(subs{{"$iothub/twin/res/#", 0}, {"$iothub/twin/PATCH/properties/desired/#", 0}}));
  EXPECT_FALSE(takes_method_calls(subs{{"#", 0}}));  // '#' does not reach '$' topics
  EXPECT_FALSE(takes_method_calls(subs{}));

  EXPECT_TRUE(takes_desired_updates(subs{{"$iothub/twin/PATCH/properties/desired/#", 0}}));
  EXPECT_TRUE(takes_desired_updates(subs{{"$iothub/twin/#", 0}}));
  EXPECT_FALSE(takes_desired_updates(subs{{"$iothub/twin/res/#", 0}}));
  EXPECT_FALSE(takes_desired_updates(subs{{"$iothub/methods/POST/#", 0}}));
}

}  // namespace
}  // namespace hub::mqtt_head
