// CBS requests and replies, D2C messages as telemetry::message, C2D messages both ways.
#include "heads/amqp/messages.hpp"

#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/symbol.hpp>
#include <proton/timestamp.hpp>
#include <proton/types.hpp>
#include <proton/uuid.hpp>

#include <gtest/gtest.h>

namespace hub::amqp_head {
namespace {

proton::message put_token(std::string name = "hub.example%2Fdevices%2Fdev1") {
  // What azure-iot-amqp-base's CBS client sends (device.md §4.2).
  proton::message m;
  m.id(proton::message_id(std::string("3f1b2f3a-0d8e-4a6e-9a1e-111111111111")));
  m.to("$cbs");
  m.reply_to("cbs");
  m.properties().put("operation", std::string("put-token"));
  m.properties().put("type", std::string("servicebus.windows.net:sastoken"));
  m.properties().put("name", name);
  m.body(std::string("SharedAccessSignature sr=x&sig=y&se=1"));
  return m;
}

TEST(amqp_messages, put_token_is_read) {
  const cbs_request r = read_cbs_request(put_token());
  EXPECT_EQ(r.id.type(), proton::STRING);
  EXPECT_EQ(r.reply_to, "cbs");
  EXPECT_EQ(r.operation, "put-token");
  EXPECT_EQ(r.type, "servicebus.windows.net:sastoken");
  EXPECT_EQ(r.name, "hub.example%2Fdevices%2Fdev1");
  EXPECT_EQ(r.token, "SharedAccessSignature sr=x&sig=y&se=1");
  EXPECT_TRUE(check_put_token(r).has_value());
}

TEST(amqp_messages, put_token_checks) {
  auto r = read_cbs_request(put_token());
  r.type = "azure-devices.net:sastoken";  // the Java service SDK's
  EXPECT_TRUE(check_put_token(r).has_value());
  r.type = "jwt";
  EXPECT_FALSE(check_put_token(r).has_value());
  r = read_cbs_request(put_token());
  r.operation = "delete-token";
  EXPECT_EQ(check_put_token(r).error().code, errc::argument_invalid);
  proton::message no_body = put_token();
  no_body.body(proton::value());
  EXPECT_FALSE(check_put_token(read_cbs_request(no_body)).has_value());
  // A status-code typed property where a string is expected reads as text, never throws.
  proton::message odd = put_token();
  odd.properties().put("name", std::int32_t{5});
  EXPECT_EQ(read_cbs_request(odd).name, "5");
}

TEST(amqp_messages, reply_echoes_the_id_with_its_type) {
  const proton::message_id string_id(std::string("6e6c5fd6-0000-4000-8000-000000000001"));
  proton::message reply = cbs_reply(string_id, 200, "OK");
  EXPECT_EQ(reply.correlation_id().type(), proton::STRING);
  EXPECT_EQ(proton::get<std::string>(reply.correlation_id()), "6e6c5fd6-0000-4000-8000-000000000001");
  EXPECT_EQ(reply.properties().get("status-code").type(), proton::INT);
  EXPECT_EQ(proton::get<std::int32_t>(reply.properties().get("status-code")), 200);
  EXPECT_EQ(proton::get<std::string>(reply.properties().get("status-description")), "OK");

  const proton::message_id uuid_id(proton::uuid::random());
  EXPECT_EQ(cbs_reply(uuid_id, 401, "no").correlation_id().type(), proton::UUID);
}

TEST(amqp_messages, d2c_message_as_the_device_sdk_sends_it) {
  // The capture of device.md §4.4.
  proton::message m;
  const proton::uuid id = proton::uuid::random();
  m.id(proton::message_id(id));
  m.correlation_id(proton::message_id(std::string("cid-1")));
  m.to("/devices/dev1/messages/events");
  m.content_type("application/json");
  m.content_encoding("utf-8");
  m.expiry_time(proton::timestamp(1893456000000));
  m.properties().put("alert", std::string("hot"));
  m.properties().put("count", std::int32_t{3});
  m.properties().put("ratio", 0.5);
  m.properties().put("ok", true);
  m.properties().put("iothub-outputname", std::string("out1"));
  m.message_annotations().put(proton::annotation_key(proton::symbol("dt-subject")), proton::symbol("subj"));
  m.message_annotations().put(proton::annotation_key(proton::symbol("iothub-interface-id")), std::string("urn:x"));
  const std::string body = R"({"t":21.5})";
  m.body(proton::binary(body.begin(), body.end()));
  m.inferred(true);

  auto t = to_telemetry(m);
  ASSERT_TRUE(t.has_value()) << t.error().message;
  EXPECT_EQ(t->body, body);
  EXPECT_EQ(t->message_id, id.str());
  EXPECT_EQ(t->correlation_id, "cid-1");
  EXPECT_EQ(t->to, "/devices/dev1/messages/events");
  EXPECT_EQ(t->content_type, "application/json");
  EXPECT_EQ(t->content_encoding, "utf-8");
  EXPECT_EQ(t->expiry_time_utc, "2030-01-01T00:00:00.0000000Z");
  EXPECT_EQ(t->output_name, "out1");
  EXPECT_EQ(t->component, "subj");
  EXPECT_EQ(t->interface_id, "urn:x");
  ASSERT_EQ(t->properties.size(), 4u);
  auto prop = [&](std::string_view k) {
    for (auto& [name, v] : t->properties)
      if (name == k) return v;
    return telemetry::value{};
  };
  EXPECT_EQ(std::get<std::string>(prop("alert")), "hot");
  EXPECT_EQ(std::get<std::int64_t>(prop("count")), 3);
  EXPECT_EQ(std::get<double>(prop("ratio")), 0.5);
  EXPECT_EQ(std::get<bool>(prop("ok")), true);
  EXPECT_TRUE(t->device_id.empty()) << "the caller stamps the identity";
}

TEST(amqp_messages, bodies) {
  proton::message m;
  m.body(std::string("text"));
  EXPECT_EQ(to_telemetry(m)->body, "text");
  proton::message empty;
  EXPECT_EQ(to_telemetry(empty)->body, "");
  proton::message list;
  list.body(std::vector<proton::value>{proton::value(1), proton::value(2)});
  auto r = to_telemetry(list);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::argument_invalid);
}

TEST(amqp_messages, devicebound_addresses) {
  EXPECT_EQ(devicebound_device("/devices/dev1/messages/devicebound"), "dev1");
  EXPECT_EQ(devicebound_device("/devices/dev%201/messages/devicebound"), "dev 1") << "encodeURIComponent";
  EXPECT_EQ(devicebound_device("/devices/a%25b/messages/devicebound"), "a%b");
  EXPECT_EQ(devicebound_device("/devices/dev1/messages/devicebound/"), std::nullopt);
  EXPECT_EQ(devicebound_device("/devices/dev1/modules/m/messages/devicebound"), std::nullopt);
  EXPECT_EQ(devicebound_device("/devices//messages/devicebound"), std::nullopt);
  EXPECT_EQ(devicebound_device("/devices/dev1/messages/events"), std::nullopt);
  EXPECT_EQ(devicebound_device("devices/dev1/messages/devicebound"), std::nullopt);
  EXPECT_EQ(devicebound_device(""), std::nullopt);
}

TEST(amqp_messages, a_c2d_message_round_trips_to_the_device) {
  proton::message m;
  m.to("/devices/dev1/messages/devicebound");
  m.body(proton::binary("payload"));
  m.inferred(true);
  m.id(proton::message_id(std::string("mid")));
  m.user("svc");
  m.properties().put("iothub-ack", std::string("negative"));
  m.properties().put("b", std::string("2"));
  m.properties().put("a", std::string("1"));
  auto r = to_c2d(m);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->device_id, "dev1");
  EXPECT_EQ(r->message.ack, c2d::ack_mode::negative);
  EXPECT_EQ(r->message.user_id, "svc");
  EXPECT_FALSE(r->message.expiry) << "none given: the service's default TTL applies";
  ASSERT_EQ(r->message.properties.size(), 2u);

  c2d::delivery d;
  d.msg = r->message;
  d.msg.expiry = sys_time{std::chrono::milliseconds(1'893'456'000'000)};
  d.device_id = "dev1";
  d.to = "/devices/dev1/messages/devicebound";
  d.sequence_number = 7;
  d.enqueued_time = sys_time{std::chrono::milliseconds(1'700'000'000'000)};
  d.delivery_count = 300;
  d.lock_token = "3f1b2f3a-0d8e-4a6e-9a1e-111111111111";
  const proton::message out = c2d_message(d);
  EXPECT_EQ(out.body().type(), proton::BINARY);
  EXPECT_EQ(out.to(), d.to);
  EXPECT_EQ(proton::get<std::string>(out.id()), "mid");
  EXPECT_EQ(out.user(), "svc");
  EXPECT_EQ(out.expiry_time().milliseconds(), 1'893'456'000'000);
  EXPECT_EQ(proton::get<std::string>(out.properties().get("iothub-ack")), "negative");
  EXPECT_EQ(out.delivery_count(), 300u);
  const auto ann = [&](const char* k) { return out.message_annotations().get(proton::annotation_key(proton::symbol(k))); };
  EXPECT_EQ(proton::get<std::uint64_t>(ann("x-opt-sequence-number")), 7u);
  EXPECT_EQ(proton::get<proton::timestamp>(ann("iothub-enqueuedtime")).milliseconds(), 1'700'000'000'000);
  EXPECT_EQ(proton::get<std::uint8_t>(ann("iothub-deliverycount")), 255) << "capped";
  EXPECT_EQ(proton::get<std::string>(ann("x-opt-lock-token")), d.lock_token);

  d.msg.ack = c2d::ack_mode::none;
  EXPECT_FALSE(c2d_message(d).properties().exists("iothub-ack"));
}

TEST(amqp_messages, hub_names) {
  EXPECT_EQ(hub_name_of("MyHub.azure-devices.net"), "myhub");
  EXPECT_EQ(hub_name_of("localhost"), "localhost");
  EXPECT_EQ(hub_name_of("127.0.0.1"), "127.0.0.1");
}

}  // namespace
}  // namespace hub::amqp_head
