#include "domain/telemetry/service.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <set>

using namespace hub;
using namespace hub::telemetry;

TEST(telemetry_message, round_trips_every_field_through_the_stored_form) {
  message m;
  m.body = std::string("{\"t\":21}\0bin", 12);
  m.message_id = "mid-1";
  m.correlation_id = "cid";
  m.user_id = "u";
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.expiry_time_utc = "2030-01-01T00:00:00.000Z";
  m.creation_time_utc = "2024-01-01T00:00:00Z";
  m.output_name = "out1";
  m.component = "thermostat1";
  m.properties = {{"alert", std::string("hot/cold & more")}, {"n", std::int64_t{-42}}, {"d", 2.5}, {"b", true},
                  {"nothing", std::monostate{}}};
  m.device_id = "dev1";
  m.module_id = "mod1";
  m.generation_id = "638000000000000001";
  m.auth = auth_method::x509_ca;
  const auto back = decode(encode(m));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->body, m.body);
  EXPECT_EQ(back->message_id, m.message_id);
  EXPECT_EQ(back->expiry_time_utc, m.expiry_time_utc);
  EXPECT_EQ(back->component, m.component);
  EXPECT_EQ(back->properties, m.properties);
  EXPECT_EQ(back->module_id, "mod1");
  EXPECT_EQ(back->auth, auth_method::x509_ca);
  EXPECT_EQ(back->source, "Telemetry");
  EXPECT_FALSE(back->to.has_value());
}

TEST(telemetry_message, corrupt_bytes_are_an_error_not_a_crash) {
  message m;
  m.body = "x";
  m.device_id = "d";
  auto bytes = encode(m);
  EXPECT_FALSE(decode(bytes.substr(0, bytes.size() - 1)).has_value());
  EXPECT_FALSE(decode("").has_value());
  bytes[0] = 9;  // unknown format version
  EXPECT_FALSE(decode(bytes).has_value());
}

TEST(telemetry_message, auth_method_json_matches_iot_hub) {
  message m;
  m.device_id = "d";
  EXPECT_EQ(auth_method_json(m), R"({"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null})");
  m.module_id = "m";
  m.auth = auth_method::x509_self_signed;
  EXPECT_EQ(auth_method_json(m), R"({"scope":"module","type":"x509","issuer":"iothub","acceptingIpFilterRule":null})");
}

TEST(telemetry_service, appends_to_the_device_partition_and_refuses_oversize) {
  char tmpl[] = "/tmp/hubd-tel-XXXXXX";
  const std::filesystem::path dir = ::mkdtemp(tmpl);
  {
    storage::log_options o;
    o.dir = dir.string();
    o.partitions = 4;
    auto log = std::move(*storage::event_log::open(o));
    service svc(*log);
    const auto p = svc.partition_for("dev1");
    EXPECT_EQ(p, svc.partition_for("dev1"));
    EXPECT_LT(p, 4u);
    // Ids spread over partitions.
    std::set<std::uint32_t> used;
    for (int i = 0; i < 64; ++i) used.insert(svc.partition_for("device-" + std::to_string(i)));
    EXPECT_EQ(used.size(), 4u);

    message m;
    m.device_id = "dev1";
    m.body = "hello";
    std::promise<result<storage::log_position>> done;
    svc.send(m, [&](result<storage::log_position> r) { done.set_value(std::move(r)); });
    ASSERT_TRUE(done.get_future().get().has_value());
    auto recs = log->read(p, 0, 10);
    ASSERT_EQ(recs->size(), 1u);
    EXPECT_EQ(decode(recs->front().data)->body, "hello");

    m.body.assign(256 * 1024 + 1, 'x');  // one byte over IoT Hub's 256 KB
    std::promise<result<storage::log_position>> refused;
    svc.send(m, [&](result<storage::log_position> r) { refused.set_value(std::move(r)); });
    auto r = refused.get_future().get();
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, errc::message_too_large);
  }
  std::filesystem::remove_all(dir);
}
