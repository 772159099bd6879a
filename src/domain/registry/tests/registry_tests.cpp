// Unit tests for the identity registry: IoT Hub's id rules, the REST JSON shape, and the service
// semantics (create/update/put/delete, etags, bulk, modules), on memory_kv with a manual clock.
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/text.hpp"
#include "domain/registry/model.hpp"
#include "domain/registry/service.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

namespace hub::registry {
namespace {

namespace bj = boost::json;
using namespace std::chrono_literals;

// Base64 keys of a given decoded length.
std::string key_of(std::size_t bytes, char fill = 'k') { return crypto::base64_encode(std::string(bytes, fill)); }
const std::string key_a = key_of(32, 'a');
const std::string key_b = key_of(32, 'b');
const std::string sha1_print = "0123456789abcdef0123456789abcdef01234567";
const std::string sha256_print = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF";

authentication self_signed(std::string print) {
  authentication a;
  a.type = auth_type::self_signed;
  a.primary_thumbprint = std::move(print);
  return a;
}

authentication sas_keys(std::string primary, std::string secondary) {
  authentication a;
  a.primary_key = std::move(primary);
  a.secondary_key = std::move(secondary);
  return a;
}

bj::value parse(std::string_view text) {
  auto v = json::parse(text);
  EXPECT_TRUE(v.has_value()) << text;
  return v ? *v : bj::value{};
}

result<device> device_from(std::string_view text) { return device_from_json(parse(text)); }

device sas_device(std::string id) {
  device d;
  d.device_id = std::move(id);
  return d;
}

module sas_module(std::string device_id, std::string module_id) {
  module m;
  m.device_id = std::move(device_id);
  m.module_id = std::move(module_id);
  return m;
}

std::vector<std::string> keys_of(const bj::object& o) {
  std::vector<std::string> keys;
  for (const auto& kv : o) keys.emplace_back(kv.key());
  return keys;
}

// --- ids --------------------------------------------------------------------------------------

TEST(valid_id, accepts_iot_hubs_alphabet) {
  EXPECT_TRUE(valid_id("d"));
  EXPECT_TRUE(valid_id("Device-01.a+b%c_d#e*f?g!h(i)j,k=l@m$n'o:p"));
  EXPECT_TRUE(valid_id(std::string(128, 'x')));
  EXPECT_TRUE(valid_id("$edgeAgent"));
}

TEST(valid_id, rejects_everything_else) {
  EXPECT_FALSE(valid_id(""));
  EXPECT_FALSE(valid_id(std::string(129, 'x')));
  const std::string_view bad_ids[] = {"a/b", "a b", "a&b", "a;b", "a^b", "a\\b", "a\"b", "a<b",  "a{b",
                                     "a|b", "a~b", "a`b", "a[b", "\xC3\xA9", std::string_view("a\0b", 3), "a\nb"};
  for (std::string_view bad : bad_ids) {
    EXPECT_FALSE(valid_id(bad)) << bad;
  }
}

// --- REST JSON --------------------------------------------------------------------------------

TEST(device_json, has_exactly_iot_hubs_fields) {
  device d = sas_device("dev1");
  d.generation_id = "637000000000000001";
  d.etag = "MQ==";
  d.auth.primary_key = key_a;
  d.auth.secondary_key = key_b;
  const auto o = to_json(d);
  EXPECT_EQ(keys_of(o), (std::vector<std::string>{
                            "deviceId", "generationId", "etag", "connectionState", "status", "statusReason",
                            "connectionStateUpdatedTime", "statusUpdatedTime", "lastActivityTime",
                            "cloudToDeviceMessageCount", "authentication", "capabilities", "deviceScope",
                            "parentScopes"}));
  EXPECT_EQ(o.at("deviceId"), "dev1");
  EXPECT_EQ(o.at("generationId"), "637000000000000001");
  EXPECT_EQ(o.at("etag"), "MQ==");
  EXPECT_EQ(o.at("connectionState"), "Disconnected");
  EXPECT_EQ(o.at("status"), "enabled");
  EXPECT_TRUE(o.at("statusReason").is_null());
  EXPECT_EQ(o.at("connectionStateUpdatedTime"), "0001-01-01T00:00:00Z");
  EXPECT_EQ(o.at("statusUpdatedTime"), "0001-01-01T00:00:00Z");
  EXPECT_EQ(o.at("lastActivityTime"), "0001-01-01T00:00:00Z");
  EXPECT_TRUE(o.at("cloudToDeviceMessageCount").is_int64());
  EXPECT_EQ(o.at("cloudToDeviceMessageCount"), 0);
  EXPECT_EQ(json::serialize(o.at("authentication")),
            json::serialize(parse(R"({"type":"sas","symmetricKey":{"primaryKey":")" + key_a + R"(","secondaryKey":")" +
                                  key_b + R"("},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null}})")));
  EXPECT_EQ(json::serialize(o.at("capabilities")), R"({"iotEdge":false})");
  EXPECT_TRUE(o.at("deviceScope").is_null());
  EXPECT_EQ(json::serialize(o.at("parentScopes")), "[]");
}

TEST(device_json, shows_state_and_times) {
  device d = sas_device("dev1");
  d.status = device_status::disabled;
  d.status_reason = "stolen";
  d.conn_state = connection_state::connected;
  d.conn_state_updated = sys_time{1'700'000'000s} + 5ms;
  d.status_updated = sys_time{1'700'000'001s};
  d.last_activity = sys_time{1'700'000'002s};
  d.c2d_message_count = 3;
  d.iot_edge = true;
  d.device_scope = "ms-azure-iot-edge://dev1-1";
  d.parent_scopes = {"ms-azure-iot-edge://parent-2"};
  d.auth = self_signed(sha256_print);
  const auto o = to_json(d);
  EXPECT_EQ(o.at("status"), "disabled");
  EXPECT_EQ(o.at("statusReason"), "stolen");
  EXPECT_EQ(o.at("connectionState"), "Connected");
  EXPECT_EQ(o.at("connectionStateUpdatedTime"), "2023-11-14T22:13:20.0050000Z");
  EXPECT_EQ(o.at("statusUpdatedTime"), "2023-11-14T22:13:21.0000000Z");
  EXPECT_EQ(o.at("lastActivityTime"), "2023-11-14T22:13:22.0000000Z");
  EXPECT_EQ(o.at("cloudToDeviceMessageCount"), 3);
  EXPECT_EQ(json::serialize(o.at("authentication")),
            R"({"type":"selfSigned","symmetricKey":{"primaryKey":null,"secondaryKey":null},)"
            R"("x509Thumbprint":{"primaryThumbprint":")" + sha256_print + R"(","secondaryThumbprint":null}})");
  EXPECT_EQ(json::serialize(o.at("capabilities")), R"({"iotEdge":true})");
  EXPECT_EQ(o.at("deviceScope"), "ms-azure-iot-edge://dev1-1");
  EXPECT_EQ(json::serialize(o.at("parentScopes")), R"(["ms-azure-iot-edge://parent-2"])");
}

TEST(module_json, has_exactly_iot_hubs_fields) {
  module m = sas_module("dev1", "mod1");
  m.generation_id = "637000000000000002";
  m.etag = "Mg==";
  m.auth.primary_key = key_a;
  m.auth.secondary_key = key_b;
  const auto o = to_json(m);
  EXPECT_EQ(keys_of(o), (std::vector<std::string>{"moduleId", "managedBy", "deviceId", "generationId", "etag",
                                                  "connectionState", "connectionStateUpdatedTime",
                                                  "lastActivityTime", "cloudToDeviceMessageCount",
                                                  "authentication"}));
  EXPECT_EQ(o.at("moduleId"), "mod1");
  EXPECT_TRUE(o.at("managedBy").is_null());
  EXPECT_EQ(o.at("deviceId"), "dev1");
  EXPECT_EQ(o.at("connectionState"), "Disconnected");
  EXPECT_EQ(o.at("lastActivityTime"), "0001-01-01T00:00:00Z");
  EXPECT_EQ(o.at("authentication").at("type"), "sas");
}

TEST(device_from_json, reads_the_writable_fields) {
  auto d = device_from(R"({"deviceId":"dev1","status":"disabled","statusReason":"why",
      "authentication":{"type":"sas","symmetricKey":{"primaryKey":")" + key_a + R"(","secondaryKey":")" + key_b + R"("}},
      "capabilities":{"iotEdge":true},"deviceScope":"scope","parentScopes":["p1"],"etag":"Mw==",
      "generationId":"ignored","connectionState":"Connected","cloudToDeviceMessageCount":9})");
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->device_id, "dev1");
  EXPECT_EQ(d->status, device_status::disabled);
  EXPECT_EQ(d->status_reason, "why");
  EXPECT_EQ(d->auth.type, auth_type::sas);
  EXPECT_EQ(d->auth.primary_key, key_a);
  EXPECT_EQ(d->auth.secondary_key, key_b);
  EXPECT_TRUE(d->iot_edge);
  EXPECT_EQ(d->device_scope, "scope");
  EXPECT_EQ(d->parent_scopes, std::vector<std::string>{"p1"});
  EXPECT_EQ(d->etag, "Mw==");
  // Read-only fields are not taken from a request.
  EXPECT_EQ(d->generation_id, "");
  EXPECT_EQ(d->conn_state, connection_state::disconnected);
  EXPECT_EQ(d->c2d_message_count, 0);
}

TEST(device_from_json, takes_id_as_the_bulk_api_names_it) {
  auto d = device_from(R"({"id":"dev1","importMode":"create"})");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->device_id, "dev1");
}

TEST(device_from_json, defaults_like_the_sdks) {
  auto d = device_from(R"({"deviceId":"dev1"})");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->status, device_status::enabled);
  EXPECT_EQ(d->auth.type, auth_type::sas);
  EXPECT_EQ(d->auth.primary_key, "");  // the registry generates
  EXPECT_FALSE(d->iot_edge);

  auto nulls = device_from(R"({"deviceId":"dev1","status":null,"statusReason":null,"authentication":null,
      "capabilities":null,"deviceScope":null,"parentScopes":null,"etag":null})");
  ASSERT_TRUE(nulls.has_value()) << nulls.error().message;
  EXPECT_EQ(nulls->status, device_status::enabled);
}

TEST(device_from_json, infers_the_authentication_type_like_the_sdks) {
  auto with_print = device_from(R"({"deviceId":"d","authentication":{"x509Thumbprint":{"primaryThumbprint":")" +
                                sha1_print + R"("}}})");
  ASSERT_TRUE(with_print.has_value()) << with_print.error().message;
  EXPECT_EQ(with_print->auth.type, auth_type::self_signed);

  auto with_keys = device_from(R"({"deviceId":"d","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},
      "x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null}}})");
  ASSERT_TRUE(with_keys.has_value());
  EXPECT_EQ(with_keys->auth.type, auth_type::sas);
}

TEST(device_from_json, matches_type_and_status_case_insensitively) {
  auto d = device_from(R"({"deviceId":"d","status":"Disabled","authentication":{"type":"CertificateAuthority"}})");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->status, device_status::disabled);
  EXPECT_EQ(d->auth.type, auth_type::certificate_authority);
  EXPECT_EQ(device_from(R"({"deviceId":"d","authentication":{"type":"SAS"}})")->auth.type, auth_type::sas);
  EXPECT_EQ(device_from(R"({"deviceId":"d","authentication":{"type":"NONE"}})")->auth.type, auth_type::none);
}

TEST(device_from_json, rejects_wrong_types_naming_the_field) {
  const std::pair<std::string, std::string> cases[] = {
      {R"([])", "JSON object"},
      {R"("dev1")", "JSON object"},
      {R"({"deviceId":5})", "'deviceId'"},
      {R"({"deviceId":"d","status":true})", "'status'"},
      {R"({"deviceId":"d","statusReason":{}})", "'statusReason'"},
      {R"({"deviceId":"d","authentication":"sas"})", "'authentication'"},
      {R"({"deviceId":"d","authentication":{"type":1}})", "'authentication.type'"},
      {R"({"deviceId":"d","authentication":{"symmetricKey":[]}})", "'authentication.symmetricKey'"},
      {R"({"deviceId":"d","authentication":{"symmetricKey":{"primaryKey":1}}})",
       "'authentication.symmetricKey.primaryKey'"},
      {R"({"deviceId":"d","authentication":{"x509Thumbprint":{"secondaryThumbprint":false}}})",
       "'authentication.x509Thumbprint.secondaryThumbprint'"},
      {R"({"deviceId":"d","capabilities":{"iotEdge":"yes"}})", "'capabilities.iotEdge'"},
      {R"({"deviceId":"d","capabilities":true})", "'capabilities'"},
      {R"({"deviceId":"d","parentScopes":"p"})", "'parentScopes'"},
      {R"({"deviceId":"d","parentScopes":[1]})", "'parentScopes'"},
      {R"({"deviceId":"d","deviceScope":7})", "'deviceScope'"},
  };
  for (const auto& [body, mention] : cases) {
    auto d = device_from(body);
    ASSERT_FALSE(d.has_value()) << body;
    EXPECT_EQ(d.error().code, errc::argument_invalid) << body;
    EXPECT_NE(d.error().message.find(mention), std::string::npos) << body << " -> " << d.error().message;
  }
}

TEST(device_from_json, rejects_unknown_status_and_type) {
  auto status = device_from(R"({"deviceId":"d","status":"paused"})");
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().code, errc::argument_invalid);
  auto type = device_from(R"({"deviceId":"d","authentication":{"type":"password"}})");
  ASSERT_FALSE(type.has_value());
  EXPECT_EQ(type.error().code, errc::argument_invalid);
  auto reason = device_from(R"({"deviceId":"d","statusReason":")" + std::string(129, 'r') + R"("})");
  ASSERT_FALSE(reason.has_value());
  EXPECT_EQ(reason.error().code, errc::argument_invalid);
}

TEST(device_from_json, keys_must_be_base64_of_16_to_64_bytes) {
  const auto with_key = [](const std::string& k) {
    return device_from(R"({"deviceId":"d","authentication":{"type":"sas","symmetricKey":{"primaryKey":")" + k +
                       R"(","secondaryKey":")" + key_b + R"("}}})");
  };
  EXPECT_TRUE(with_key(key_of(16)).has_value());
  EXPECT_TRUE(with_key(key_of(64)).has_value());
  for (const std::string& bad : {key_of(15), key_of(65), std::string("not base64!"), std::string("QUJD=")}) {
    auto d = with_key(bad);
    ASSERT_FALSE(d.has_value()) << bad;
    EXPECT_EQ(d.error().code, errc::argument_invalid);
    EXPECT_EQ(d.error().message.find(bad), std::string::npos) << "a key must never be echoed";
    EXPECT_NE(d.error().message.find("primary"), std::string::npos);
  }
}

TEST(device_from_json, thumbprints_are_normalised_and_checked) {
  auto d = device_from(R"({"deviceId":"d","authentication":{"type":"selfSigned","x509Thumbprint":
      {"primaryThumbprint":")" + sha1_print + R"(","secondaryThumbprint":")" + text::to_lower(sha256_print) + R"("}}})");
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->auth.primary_thumbprint, "0123456789ABCDEF0123456789ABCDEF01234567");
  EXPECT_EQ(d->auth.secondary_thumbprint, sha256_print);

  for (const std::string& bad : {std::string(39, 'a'), std::string(41, 'a'), std::string(63, 'a'),
                                 std::string(39, 'a') + "g", std::string("01:23")}) {
    auto r = device_from(R"({"deviceId":"d","authentication":{"type":"selfSigned","x509Thumbprint":
        {"primaryThumbprint":")" + bad + R"("}}})");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, errc::argument_invalid);
  }
  auto no_primary = device_from(R"({"deviceId":"d","authentication":{"type":"selfSigned","x509Thumbprint":
      {"secondaryThumbprint":")" + sha1_print + R"("}}})");
  ASSERT_FALSE(no_primary.has_value());
  EXPECT_EQ(no_primary.error().code, errc::argument_invalid);
}

TEST(device_from_json, clears_credentials_that_do_not_belong_to_the_type) {
  auto d = device_from(R"({"deviceId":"d","authentication":{"type":"sas","symmetricKey":{"primaryKey":")" + key_a +
                       R"("},"x509Thumbprint":{"primaryThumbprint":")" + sha1_print + R"("}}})");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->auth.primary_thumbprint, "");
  auto ca = device_from(R"({"deviceId":"d","authentication":{"type":"certificateAuthority","symmetricKey":
      {"primaryKey":")" + key_a + R"("}}})");
  ASSERT_TRUE(ca.has_value());
  EXPECT_EQ(ca->auth.primary_key, "");
}

TEST(module_from_json, reads_the_writable_fields) {
  auto m = module_from_json(parse(R"({"moduleId":"m1","deviceId":"d1","managedBy":"IotEdge","etag":"\"Mg==\"",
      "authentication":{"type":"sas","symmetricKey":{"primaryKey":")" + key_a + R"(","secondaryKey":""}}})"));
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->module_id, "m1");
  EXPECT_EQ(m->device_id, "d1");
  EXPECT_EQ(m->managed_by, "IotEdge");
  EXPECT_EQ(m->etag, "Mg==");  // quotes are not part of an etag
  EXPECT_EQ(m->auth.primary_key, key_a);
  auto bad = module_from_json(parse(R"({"moduleId":["m1"]})"));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, errc::argument_invalid);
}

// --- storage form -----------------------------------------------------------------------------

TEST(storage_form, round_trips_every_field) {
  device d = sas_device("dev:1");
  d.generation_id = "123456789012345678";
  d.etag = "NQ==";
  d.auth = sas_keys(key_a, key_b);
  d.conn_state = connection_state::connected;
  d.conn_state_updated = sys_time{1'700'000'000s} + 123'456'789ns;
  d.last_activity = sys_time{1'700'000'100s} + 1ns;
  d.c2d_message_count = 42;
  d.status = device_status::disabled;
  d.status_reason = "r";
  d.status_updated = sys_time{1'600'000'000s};
  d.iot_edge = true;
  d.device_scope = "s";
  d.parent_scopes = {"p1", "p2"};
  auto back = decode_device(encode(d));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(encode(*back), encode(d));
  EXPECT_EQ(back->conn_state_updated, d.conn_state_updated);
  EXPECT_EQ(back->parent_scopes, d.parent_scopes);
  EXPECT_EQ(back->status, device_status::disabled);

  module m = sas_module("dev:1", "m");
  m.managed_by = "edge";
  m.auth = self_signed(sha256_print);
  auto mback = decode_module(encode(m));
  ASSERT_TRUE(mback.has_value()) << mback.error().message;
  EXPECT_EQ(encode(*mback), encode(m));
}

TEST(storage_form, corrupt_records_are_server_errors) {
  for (std::string_view bad : {"", "{", "[]", R"({"v":1})", R"({"v":99,"deviceId":"d","auth":{"type":"sas"}})"}) {
    auto d = decode_device(bad);
    ASSERT_FALSE(d.has_value()) << bad;
    EXPECT_EQ(d.error().code, errc::server_error);
  }
}

// --- service ----------------------------------------------------------------------------------

class registry_service : public ::testing::Test {
 protected:
  device create(std::string id) {
    auto d = svc_.create_device(sas_device(std::move(id)));
    EXPECT_TRUE(d.has_value()) << d.error().message;
    return d ? *d : device{};
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  service svc_{*kv_, clock_};
};

// base64 of a decimal version number, like IoT Hub's etags.
bool is_version_etag(std::string_view etag) {
  const auto text = crypto::base64_decode(etag);
  return text && !text->empty() && text->find_first_not_of("0123456789") == std::string::npos;
}

bool is_18_digits(std::string_view s) {
  return s.size() == 18 && s[0] != '0' && s.find_first_not_of("0123456789") == std::string_view::npos;
}

TEST_F(registry_service, create_fills_the_read_only_fields_and_generates_keys) {
  const auto d = create("dev1");
  EXPECT_TRUE(is_18_digits(d.generation_id)) << d.generation_id;
  EXPECT_TRUE(is_version_etag(d.etag)) << d.etag;
  EXPECT_EQ(d.status, device_status::enabled);
  EXPECT_EQ(d.conn_state, connection_state::disconnected);
  EXPECT_EQ(d.last_activity, sys_time{});
  EXPECT_EQ(d.status_updated, sys_time{});
  EXPECT_EQ(d.auth.type, auth_type::sas);
  ASSERT_TRUE(crypto::base64_decode(d.auth.primary_key));
  EXPECT_EQ(crypto::base64_decode(d.auth.primary_key)->size(), 32u);
  EXPECT_EQ(crypto::base64_decode(d.auth.secondary_key)->size(), 32u);
  EXPECT_NE(d.auth.primary_key, d.auth.secondary_key);

  auto got = svc_.get_device("dev1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(encode(*got), encode(d));
}

TEST_F(registry_service, the_change_listener_hears_every_create_delete_and_disable) {
  std::vector<std::string> heard;
  svc_.set_change_listener([&](const change& c) {
    // Outside the registry's locks: the listener may read it.
    const bool exists = c.module_id.empty() ? svc_.get_device(c.device_id).has_value()
                                            : svc_.get_module(c.device_id, c.module_id).has_value();
    heard.push_back(std::to_string(static_cast<int>(c.what)) + ":" + c.device_id + "/" + c.module_id +
                    (exists ? "" : " (gone)"));
  });
  create("d1");
  module m;
  m.device_id = "d1";
  m.module_id = "m1";
  ASSERT_TRUE(svc_.create_module(m).has_value());
  EXPECT_FALSE(svc_.create_module(m).has_value());  // exists: no event
  EXPECT_FALSE(svc_.create_device(sas_device("d1")).has_value());
  bulk_item b;
  b.dev = sas_device("d2");
  EXPECT_TRUE(svc_.bulk({b}).is_successful);
  ASSERT_TRUE(svc_.delete_module("d1", "m1", std::nullopt).has_value());
  ASSERT_TRUE(svc_.delete_device("d2", std::nullopt).has_value());
  const auto k = [](change::kind what) { return std::to_string(static_cast<int>(what)); };
  EXPECT_EQ(heard, (std::vector<std::string>{k(change::kind::device_created) + ":d1/", k(change::kind::module_created) + ":d1/m1",
                                             k(change::kind::device_created) + ":d2/",
                                             k(change::kind::module_deleted) + ":d1/m1 (gone)",
                                             k(change::kind::device_deleted) + ":d2/ (gone)"}));
}

TEST_F(registry_service, create_keeps_given_keys_and_ignores_read_only_input) {
  device d = sas_device("dev1");
  d.auth.primary_key = key_a;
  d.auth.secondary_key = key_b;
  d.etag = "bogus";
  d.generation_id = "1";
  d.conn_state = connection_state::connected;
  d.c2d_message_count = 7;
  auto created = svc_.create_device(d);
  ASSERT_TRUE(created.has_value());
  EXPECT_EQ(created->auth.primary_key, key_a);
  EXPECT_EQ(created->auth.secondary_key, key_b);
  EXPECT_NE(created->etag, "bogus");
  EXPECT_TRUE(is_version_etag(created->etag));
  EXPECT_NE(created->generation_id, "1");
  EXPECT_EQ(created->conn_state, connection_state::disconnected);
  EXPECT_EQ(created->c2d_message_count, 0);
}

TEST_F(registry_service, create_generates_only_the_missing_key) {
  device d = sas_device("dev1");
  d.auth.primary_key = key_a;
  auto created = svc_.create_device(d);
  ASSERT_TRUE(created.has_value());
  EXPECT_EQ(created->auth.primary_key, key_a);
  EXPECT_EQ(crypto::base64_decode(created->auth.secondary_key)->size(), 32u);
}

TEST_F(registry_service, create_of_an_existing_id_is_device_already_exists) {
  create("dev1");
  auto again = svc_.create_device(sas_device("dev1"));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, errc::device_already_exists);
  EXPECT_EQ(again.error().message, "A device with ID 'dev1' is already registered.");
  // Ids are case-sensitive.
  EXPECT_TRUE(svc_.create_device(sas_device("DEV1")).has_value());
}

TEST_F(registry_service, create_validates_id_and_credentials) {
  for (const std::string& bad : {std::string(""), std::string("a/b"), std::string(129, 'x')}) {
    auto r = svc_.create_device(sas_device(bad));
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, errc::argument_invalid);
  }
  device d = sas_device("dev1");
  d.auth.primary_key = "short";
  EXPECT_EQ(svc_.create_device(d).error().code, errc::argument_invalid);
  device self = sas_device("dev2");
  self.auth.type = auth_type::self_signed;
  EXPECT_EQ(svc_.create_device(self).error().code, errc::argument_invalid);
}

TEST_F(registry_service, self_signed_devices_keep_no_keys) {
  device d = sas_device("cam");
  d.auth = self_signed(sha1_print);
  auto created = svc_.create_device(d);
  ASSERT_TRUE(created.has_value()) << created.error().message;
  EXPECT_EQ(created->auth.primary_key, "");
  EXPECT_EQ(created->auth.primary_thumbprint, "0123456789ABCDEF0123456789ABCDEF01234567");
  EXPECT_TRUE(to_json(*created).at("authentication").at("symmetricKey").at("primaryKey").is_null());
}

TEST_F(registry_service, get_of_a_missing_device_is_device_not_found) {
  auto r = svc_.get_device("ghost");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::device_not_found);
  EXPECT_NE(r.error().message.find("'ghost'"), std::string::npos);
}

TEST_F(registry_service, generation_id_differs_after_delete_and_recreate) {
  const auto first = create("dev1");
  ASSERT_TRUE(svc_.delete_device("dev1", std::nullopt).has_value());
  const auto second = create("dev1");
  EXPECT_NE(first.generation_id, second.generation_id);
  EXPECT_NE(first.auth.primary_key, second.auth.primary_key);
  // An etag kept from the deleted device must not pass If-Match on the new one.
  EXPECT_NE(first.etag, second.etag);
  auto stale = svc_.update_device(sas_device("dev1"), first.etag);
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, errc::precondition_failed);
}

TEST_F(registry_service, update_requires_an_existing_device) {
  auto r = svc_.update_device(sas_device("ghost"), std::nullopt);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::device_not_found);
}

TEST_F(registry_service, update_checks_if_match) {
  const auto d = create("dev1");
  auto stale = svc_.update_device(d, std::string("Nw=="));
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, errc::precondition_failed);

  auto exact = svc_.update_device(d, d.etag);
  ASSERT_TRUE(exact.has_value());
  EXPECT_NE(exact->etag, d.etag);
  // The old etag no longer matches.
  EXPECT_EQ(svc_.update_device(d, d.etag).error().code, errc::precondition_failed);

  auto star = svc_.update_device(d, std::string("*"));
  ASSERT_TRUE(star.has_value());
  auto none = svc_.update_device(d, std::nullopt);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ((std::set<std::string>{d.etag, exact->etag, star->etag, none->etag}).size(), 4u) << "etag changes each write";
}

TEST_F(registry_service, update_keeps_sas_keys_when_the_body_has_none) {
  const auto d = create("dev1");
  device body = sas_device("dev1");  // empty keys, as the SDK's update() may send
  body.status = device_status::disabled;
  auto updated = svc_.update_device(body, std::string("*"));
  ASSERT_TRUE(updated.has_value());
  EXPECT_EQ(updated->auth.primary_key, d.auth.primary_key);
  EXPECT_EQ(updated->auth.secondary_key, d.auth.secondary_key);
  EXPECT_EQ(updated->generation_id, d.generation_id);
  EXPECT_EQ(updated->status, device_status::disabled);

  body.auth.primary_key = key_a;  // a new primary, secondary kept
  auto rotated = svc_.update_device(body, std::nullopt);
  ASSERT_TRUE(rotated.has_value());
  EXPECT_EQ(rotated->auth.primary_key, key_a);
  EXPECT_EQ(rotated->auth.secondary_key, d.auth.secondary_key);
}

TEST_F(registry_service, update_generates_keys_when_switching_to_sas) {
  device d = sas_device("dev1");
  d.auth = self_signed(sha1_print);
  ASSERT_TRUE(svc_.create_device(d).has_value());
  auto updated = svc_.update_device(sas_device("dev1"), std::nullopt);
  ASSERT_TRUE(updated.has_value());
  EXPECT_EQ(updated->auth.type, auth_type::sas);
  EXPECT_EQ(crypto::base64_decode(updated->auth.primary_key)->size(), 32u);
  EXPECT_EQ(crypto::base64_decode(updated->auth.secondary_key)->size(), 32u);
  EXPECT_EQ(updated->auth.primary_thumbprint, "");
}

TEST_F(registry_service, status_updated_time_moves_only_when_status_changes) {
  const auto d = create("dev1");
  clock_.advance(10s);
  device body = d;
  body.status_reason = "same status";
  auto same = svc_.update_device(body, std::nullopt);
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(same->status_updated, sys_time{});
  EXPECT_EQ(same->status_reason, "same status");

  body.status = device_status::disabled;
  auto disabled = svc_.update_device(body, std::nullopt);
  ASSERT_TRUE(disabled.has_value());
  EXPECT_EQ(disabled->status_updated, clock_.now());
  EXPECT_EQ(to_json(*disabled).at("statusUpdatedTime"), "2023-11-14T22:13:30.0000000Z");

  clock_.advance(5s);
  body.status = device_status::enabled;
  auto enabled = svc_.update_device(body, std::nullopt);
  EXPECT_EQ(enabled->status_updated, clock_.now());
}

TEST_F(registry_service, update_does_not_touch_read_only_fields) {
  const auto d = create("dev1");
  device body = d;
  body.generation_id = "999999999999999999";
  body.conn_state = connection_state::connected;
  body.c2d_message_count = 5;
  auto updated = svc_.update_device(body, std::nullopt);
  ASSERT_TRUE(updated.has_value());
  EXPECT_EQ(updated->generation_id, d.generation_id);
  EXPECT_EQ(updated->conn_state, connection_state::disconnected);
  EXPECT_EQ(updated->c2d_message_count, 0);
}

TEST_F(registry_service, put_without_if_match_is_a_create) {
  auto created = svc_.put_device(sas_device("dev1"), std::nullopt);
  ASSERT_TRUE(created.has_value());
  auto again = svc_.put_device(sas_device("dev1"), std::nullopt);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, errc::device_already_exists);
}

TEST_F(registry_service, put_with_if_match_is_an_update) {
  auto missing = svc_.put_device(sas_device("dev1"), std::string("*"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, errc::device_not_found);
  const auto d = create("dev1");
  device body = d;
  body.status = device_status::disabled;
  auto updated = svc_.put_device(body, std::string("*"));
  ASSERT_TRUE(updated.has_value());
  EXPECT_EQ(updated->status, device_status::disabled);
  EXPECT_EQ(svc_.put_device(body, std::string("bad")).error().code, errc::precondition_failed);
}

TEST_F(registry_service, delete_checks_existence_and_if_match) {
  EXPECT_EQ(svc_.delete_device("ghost", std::nullopt).error().code, errc::device_not_found);
  const auto d = create("dev1");
  EXPECT_EQ(svc_.delete_device("dev1", std::string("Nw==")).error().code, errc::precondition_failed);
  ASSERT_TRUE(svc_.get_device("dev1").has_value());
  ASSERT_TRUE(svc_.delete_device("dev1", d.etag).has_value());
  EXPECT_EQ(svc_.get_device("dev1").error().code, errc::device_not_found);
  create("dev2");
  EXPECT_TRUE(svc_.delete_device("dev2", std::string("*")).has_value());
}

TEST_F(registry_service, delete_removes_the_modules_but_not_other_devices_modules) {
  create("dev");
  create("dev2");
  ASSERT_TRUE(svc_.create_module(sas_module("dev", "m1")).has_value());
  ASSERT_TRUE(svc_.create_module(sas_module("dev", "m2")).has_value());
  ASSERT_TRUE(svc_.create_module(sas_module("dev2", "m1")).has_value());
  ASSERT_TRUE(svc_.delete_device("dev", std::nullopt).has_value());
  std::vector<std::string> keys;
  ASSERT_TRUE(kv_->scan("m/", {}, [&](std::string_view k, std::string_view) {
                   keys.emplace_back(k);
                   return true;
                 }).has_value());
  EXPECT_EQ(keys, std::vector<std::string>{"m/dev2/m1"});
  // Re-creating the device does not resurrect its modules.
  create("dev");
  EXPECT_TRUE(svc_.list_modules("dev")->empty());
}

TEST_F(registry_service, list_is_ordered_by_id_and_limited_by_top) {
  for (const char* id : {"c", "a", "B", "b"}) create(id);
  auto all = svc_.list_devices();
  ASSERT_TRUE(all.has_value());
  std::vector<std::string> ids;
  for (const auto& d : *all) ids.push_back(d.device_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"B", "a", "b", "c"}));  // byte order
  auto two = svc_.list_devices(2);
  ASSERT_TRUE(two.has_value());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].device_id, "a");
  EXPECT_TRUE(svc_.list_devices(10)->size() == 4);
}

TEST_F(registry_service, list_does_not_include_modules) {
  create("dev");
  ASSERT_TRUE(svc_.create_module(sas_module("dev", "m1")).has_value());
  EXPECT_EQ(svc_.list_devices()->size(), 1u);
}

TEST_F(registry_service, stats_count_by_status) {
  EXPECT_EQ(svc_.stats()->total, 0);
  create("a");
  create("b");
  device off = sas_device("c");
  off.status = device_status::disabled;
  ASSERT_TRUE(svc_.create_device(off).has_value());
  auto s = svc_.stats();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->total, 3);
  EXPECT_EQ(s->enabled, 2);
  EXPECT_EQ(s->disabled, 1);
}

TEST_F(registry_service, edge_devices_get_their_own_scope) {
  device edge = sas_device("gw");
  edge.iot_edge = true;
  edge.device_scope = "ignored";
  auto created = svc_.create_device(edge);
  ASSERT_TRUE(created.has_value());
  EXPECT_EQ(created->device_scope, "ms-azure-iot-edge://gw-" + created->generation_id);

  device leaf = sas_device("leaf");
  leaf.device_scope = created->device_scope;
  leaf.parent_scopes = {created->device_scope};
  auto child = svc_.create_device(leaf);
  ASSERT_TRUE(child.has_value());
  EXPECT_EQ(child->device_scope, created->device_scope);
  EXPECT_EQ(child->parent_scopes, std::vector<std::string>{created->device_scope});
}

// --- bulk -------------------------------------------------------------------------------------

bulk_item item(import_mode mode, std::string id, std::string etag = {}) {
  bulk_item i{.mode = mode, .dev = sas_device(std::move(id))};
  i.dev.etag = std::move(etag);
  return i;
}

TEST_F(registry_service, bulk_create_all_ok) {
  auto r = svc_.bulk({item(import_mode::create, "a"), item(import_mode::create, "b")});
  EXPECT_TRUE(r.is_successful);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(svc_.list_devices()->size(), 2u);
  EXPECT_FALSE(svc_.get_device("a")->auth.primary_key.empty());
}

TEST_F(registry_service, bulk_applies_items_one_by_one_and_reports_each_failure) {
  create("exists");
  auto r = svc_.bulk({item(import_mode::create, "new1"), item(import_mode::create, "exists"),
                      item(import_mode::update, "ghost"), item(import_mode::create, "bad/id"),
                      item(import_mode::create, "new2")});
  EXPECT_FALSE(r.is_successful);
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].device_id, "exists");
  EXPECT_EQ(r.errors[0].code, errc::device_already_exists);
  EXPECT_EQ(r.errors[0].operation, "create");
  EXPECT_EQ(r.errors[0].message, "A device with ID 'exists' is already registered.");
  EXPECT_EQ(r.errors[1].device_id, "ghost");
  EXPECT_EQ(r.errors[1].code, errc::device_not_found);
  EXPECT_EQ(r.errors[1].operation, "update");
  EXPECT_EQ(r.errors[2].code, errc::argument_invalid);
  // Not atomic: the good items before and after the failures are in.
  EXPECT_TRUE(svc_.get_device("new1").has_value());
  EXPECT_TRUE(svc_.get_device("new2").has_value());
}

TEST_F(registry_service, bulk_rejects_ids_defined_more_than_once) {
  auto r = svc_.bulk({item(import_mode::create, "dup"), item(import_mode::create, "ok"),
                      item(import_mode::remove, "dup")});
  EXPECT_FALSE(r.is_successful);
  ASSERT_EQ(r.errors.size(), 2u);
  for (const auto& e : r.errors) {
    EXPECT_EQ(e.device_id, "dup");
    EXPECT_EQ(e.code, errc::device_defined_multiple_times);
  }
  EXPECT_EQ(r.errors[1].operation, "delete");
  EXPECT_EQ(svc_.get_device("dup").error().code, errc::device_not_found);
  EXPECT_TRUE(svc_.get_device("ok").has_value());
}

TEST_F(registry_service, bulk_update_modes) {
  const auto a = create("a");
  const auto b = create("b");
  bulk_item disable_a = item(import_mode::update, "a");
  disable_a.dev.status = device_status::disabled;
  bulk_item stale_b = item(import_mode::update_if_match_etag, "b", "Nw==");
  stale_b.dev.status = device_status::disabled;
  auto r = svc_.bulk({disable_a, stale_b});
  EXPECT_FALSE(r.is_successful);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].device_id, "b");
  EXPECT_EQ(r.errors[0].code, errc::precondition_failed);
  EXPECT_EQ(r.errors[0].operation, "updateIfMatchETag");
  EXPECT_EQ(svc_.get_device("a")->status, device_status::disabled);
  EXPECT_EQ(svc_.get_device("a")->auth.primary_key, a.auth.primary_key);
  EXPECT_EQ(svc_.get_device("b")->status, device_status::enabled);

  bulk_item fresh_b = item(import_mode::update_if_match_etag, "b", b.etag);
  fresh_b.dev.status = device_status::disabled;
  EXPECT_TRUE(svc_.bulk({fresh_b}).is_successful);
  EXPECT_EQ(svc_.get_device("b")->status, device_status::disabled);
}

TEST_F(registry_service, bulk_remove_modes) {
  create("a");
  const auto b = create("b");
  create("c");
  auto r = svc_.bulk({item(import_mode::remove, "a"), item(import_mode::remove_if_match_etag, "b", b.etag),
                      item(import_mode::remove_if_match_etag, "c", "Nw=="), item(import_mode::remove, "ghost")});
  EXPECT_FALSE(r.is_successful);
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].code, errc::precondition_failed);
  EXPECT_EQ(r.errors[0].operation, "deleteIfMatchETag");
  EXPECT_EQ(r.errors[1].code, errc::device_not_found);
  EXPECT_EQ(r.errors[1].operation, "delete");
  auto left = svc_.list_devices();
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].device_id, "c");
}

// --- modules ----------------------------------------------------------------------------------

TEST_F(registry_service, modules_need_their_device) {
  auto r = svc_.create_module(sas_module("ghost", "m1"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::device_not_found);
  EXPECT_EQ(svc_.list_modules("ghost").error().code, errc::device_not_found);
  EXPECT_EQ(svc_.get_module("ghost", "m1").error().code, errc::device_not_found);
}

TEST_F(registry_service, module_lifecycle) {
  create("dev");
  auto m = svc_.create_module(sas_module("dev", "m1"));
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_TRUE(is_version_etag(m->etag));
  EXPECT_TRUE(is_18_digits(m->generation_id));
  EXPECT_EQ(crypto::base64_decode(m->auth.primary_key)->size(), 32u);

  auto again = svc_.create_module(sas_module("dev", "m1"));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, errc::module_already_exists);
  EXPECT_EQ(again.error().message, "A module with ID 'm1' is already registered on device 'dev'.");
  EXPECT_EQ(svc_.put_module(sas_module("dev", "m1"), std::nullopt).error().code, errc::module_already_exists);

  auto missing = svc_.get_module("dev", "m2");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, errc::module_not_found);

  module body = sas_module("dev", "m1");
  body.managed_by = "IotEdge";
  EXPECT_EQ(svc_.update_module(body, std::string("Nw==")).error().code, errc::precondition_failed);
  auto updated = svc_.put_module(body, m->etag);
  ASSERT_TRUE(updated.has_value());
  EXPECT_EQ(updated->managed_by, "IotEdge");
  EXPECT_EQ(updated->auth.primary_key, m->auth.primary_key);  // kept: the body had none
  EXPECT_NE(updated->etag, m->etag);
  EXPECT_EQ(updated->generation_id, m->generation_id);
  EXPECT_EQ(svc_.update_module(sas_module("dev", "m2"), std::nullopt).error().code, errc::module_not_found);

  ASSERT_TRUE(svc_.create_module(sas_module("dev", "a0")).has_value());
  auto listed = svc_.list_modules("dev");
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].module_id, "a0");
  EXPECT_EQ((*listed)[1].module_id, "m1");

  EXPECT_EQ(svc_.delete_module("dev", "m1", std::string("Nw==")).error().code, errc::precondition_failed);
  EXPECT_TRUE(svc_.delete_module("dev", "m1", std::string("*")).has_value());
  EXPECT_EQ(svc_.delete_module("dev", "m1", std::nullopt).error().code, errc::module_not_found);
  EXPECT_EQ(svc_.get_module("dev", "m1").error().code, errc::module_not_found);
}

TEST_F(registry_service, module_ids_are_validated) {
  create("dev");
  EXPECT_EQ(svc_.create_module(sas_module("dev", "a/b")).error().code, errc::argument_invalid);
  EXPECT_EQ(svc_.create_module(sas_module("dev", "")).error().code, errc::argument_invalid);
}

// --- durability -------------------------------------------------------------------------------

TEST(registry_on_rocksdb, a_device_survives_reopen) {
  std::string dir = (std::filesystem::temp_directory_path() / "hub_registry_tests_XXXXXX").string();
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  manual_clock clk;
  device created;
  {
    auto kv = storage::open_rocksdb(dir);
    ASSERT_TRUE(kv.has_value()) << kv.error().message;
    service svc(**kv, clk);
    auto d = svc.create_device(sas_device("dev1"));
    ASSERT_TRUE(d.has_value());
    created = *d;
    ASSERT_TRUE(svc.create_module(sas_module("dev1", "m1")).has_value());
  }
  {
    auto kv = storage::open_rocksdb(dir);
    ASSERT_TRUE(kv.has_value()) << kv.error().message;
    service svc(**kv, clk);
    auto d = svc.get_device("dev1");
    ASSERT_TRUE(d.has_value()) << d.error().message;
    EXPECT_EQ(encode(*d), encode(created));
    EXPECT_EQ(svc.list_modules("dev1")->size(), 1u);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hub::registry
