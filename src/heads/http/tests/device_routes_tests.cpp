// The device API over HTTPS end to end through the router, over the real registry, auth,
// certificates, telemetry (a real event log in a temporary folder) and C2D services (memory kv,
// manual clock): requests shaped as azure-iot-device-http 1.14.4 sends them (protocol/device.md §5).
#include "base/crypto.hpp"
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/c2d/service.hpp"
#include "domain/certificates/tests/make_cert.hpp"
#include "domain/registry/service.hpp"
#include "domain/telemetry/service.hpp"
#include "heads/http/router.hpp"
#include "storage/event_log.hpp"
#include "storage/kv.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace hub::http {
namespace {

namespace bj = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using certificates::testing::issued;
using certificates::testing::make_cert;

constexpr const char* host = "127.0.0.2";
constexpr const char* api = "?api-version=2021-04-12";
constexpr const char* node_ua = "azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)";

using headers = std::vector<std::pair<std::string, std::string>>;

std::optional<std::string> header_of(const response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (text::iequals(k, name)) return v;
  }
  return std::nullopt;
}

void expect_error(const response& r, int status, std::string_view name) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), name) << r.body;
  const auto body = bj::parse(r.body);
  const std::string msg(body.at("Message").as_string());
  EXPECT_TRUE(msg.starts_with(fmt::format("ErrorCode:{};", name))) << msg;
}

// A fresh folder for the event log, removed with the fixture.
struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/hubd-http-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::unique_ptr<storage::event_log> open_log(const fs::path& dir) {
  storage::log_options o;
  o.dir = dir.string();
  o.partitions = 2;
  o.sync = false;
  return std::move(*storage::event_log::open(o));
}

class device_api_test : public ::testing::Test {
 protected:
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  temp_dir dir;
  std::unique_ptr<storage::event_log> log = open_log(dir.path);
  telemetry::service tel{*log};
  c2d::service c2d{*kv, reg, clk};
  router rt{services{reg, auth, clk, certs, nullptr, &tel, &c2d}};

  void TearDown() override { log->close(); }

  registry::device add_device(std::string id) {
    registry::device d;
    d.device_id = std::move(id);
    auto created = reg.create_device(d);
    EXPECT_TRUE(created.has_value());
    return *created;
  }

  registry::module add_module(std::string device_id, std::string module_id) {
    registry::module m;
    m.device_id = std::move(device_id);
    m.module_id = std::move(module_id);
    auto created = reg.create_module(m);
    EXPECT_TRUE(created.has_value());
    return *created;
  }

  // The token the Node SDK makes from a device connection string: sr = host/devices/<id>.
  std::string device_token(const registry::identity& who, std::string_view module_id = {},
                           std::chrono::seconds life = 3600s) const {
    const std::string resource = module_id.empty() ? fmt::format("{}/devices/{}", host, who.device_id)
                                                   : fmt::format("{}/devices/{}/modules/{}", host, who.device_id, module_id);
    return auth::make_sas_token(resource, who.auth.primary_key, clk.now_seconds() + life.count());
  }

  std::string policy_token(std::string_view policy) const {
    const auto* p = auth.identity().find(policy);
    return auth::make_sas_token(host, p->primary_key, clk.now_seconds() + 3600, policy);
  }

  response call(std::string method, std::string target, std::optional<std::string> authz, std::string body = {},
                headers extra = {}, const certificates::client_chain* chain = nullptr) {
    request req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.headers.emplace_back("Host", host);
    req.headers.emplace_back("User-Agent", node_ua);
    if (authz) req.headers.emplace_back("Authorization", *authz);
    for (auto& h : extra) req.headers.push_back(std::move(h));
    req.body = std::move(body);
    req.client_certificates = chain;
    return rt.route(req);
  }

  // sendEvent as azure-iot-device-http builds it (http.js sendEvent).
  response send_event(std::string_view device_id, const std::string& token, std::string body, headers extra = {}) {
    headers h{{"iothub-to", fmt::format("/devices/{}/messages/events", device_id)}};
    for (auto& e : extra) h.push_back(std::move(e));
    return call("POST", fmt::format("/devices/{}/messages/events{}", text::url_encode(device_id), api), token,
                std::move(body), std::move(h));
  }

  // Everything the log holds for a device, in log order.
  std::vector<telemetry::message> stored(std::string_view device_id) {
    std::vector<telemetry::message> out;
    for (std::uint32_t p = 0; p < log->partitions(); ++p) {
      auto records = log->read(p, 0, 10'000, 64 * 1024 * 1024);
      EXPECT_TRUE(records.has_value());
      for (const auto& r : *records) {
        auto m = telemetry::decode(r.data);
        EXPECT_TRUE(m.has_value());
        if (m && m->device_id == device_id) out.push_back(std::move(*m));
      }
    }
    return out;
  }

  // The value of a string application property, or "" when absent.
  static std::string prop(const telemetry::message& m, std::string_view key) {
    for (const auto& [k, v] : m.properties) {
      if (k == key) {
        if (const auto* s = std::get_if<std::string>(&v)) return *s;
      }
    }
    return {};
  }

  std::uint64_t send_c2d(std::string_view device_id, c2d::outgoing m) {
    auto seq = c2d.send(device_id, std::move(m));
    EXPECT_TRUE(seq.has_value()) << (seq ? "" : seq.error().message);
    return seq ? *seq : 0;
  }

  response receive(std::string_view device_id, const std::string& token, std::string_view path_word = "devicebound") {
    return call("GET", fmt::format("/devices/{}/messages/{}{}", device_id, path_word, api), token, {},
                {{"iothub-to", fmt::format("/devices/{}/messages/devicebound", device_id)}});
  }

  // _sendFeedback as http.js builds it: If-Match is the bare lock token.
  response complete(std::string_view device_id, const std::string& token, std::string_view lock) {
    return call("DELETE", fmt::format("/devices/{}/messages/devicebound/{}{}", device_id, lock, api), token, {},
                {{"If-Match", std::string(lock)}});
  }
  response reject(std::string_view device_id, const std::string& token, std::string_view lock) {
    return call("DELETE", fmt::format("/devices/{}/messages/devicebound/{}{}&reject", device_id, lock, api), token, {},
                {{"If-Match", std::string(lock)}});
  }
  response abandon(std::string_view device_id, const std::string& token, std::string_view lock) {
    return call("POST", fmt::format("/devices/{}/messages/devicebound/{}/abandon{}", device_id, lock, api), token, {},
                {{"If-Match", std::string(lock)}});
  }

  // The lock token of a 200 answer: the ETag without its quotes, as toMessage() strips them.
  static std::string lock_of(const response& r) {
    const std::string etag = header_of(r, "ETag").value_or("");
    EXPECT_GE(etag.size(), 2u);
    EXPECT_EQ(etag.front(), '"');
    EXPECT_EQ(etag.back(), '"');
    return etag.size() >= 2 ? etag.substr(1, etag.size() - 2) : std::string{};
  }
};

// ---- telemetry ---------------------------------------------------------------------------------

TEST_F(device_api_test, one_message_with_every_header_node_sends) {
  const auto d = add_device("dev1");
  const std::string body("{\"t\":21}\0\xff", 10);
  const auto r = send_event("dev1", device_token(d), body,
                            {{"iothub-app-alert", "hot/cold & more"},
                             {"iothub-app-Case", "Kept"},
                             {"dt-subject", "thermostat1"},
                             {"iothub-app-iothub-creation-time-utc", "2024-01-01T00:00:00Z"},
                             {"IoTHub-MessageId", "mid-1"},
                             {"IoTHub-CorrelationId", "cid-1"},
                             {"IoTHub-UserId", "u1"},
                             {"IoTHub-To", "/custom/to"},
                             {"IoTHub-Expiry", "2030-01-01T00:00:00.000Z"},
                             {"IoTHub-Ack", "full"},
                             {"iothub-contenttype", "application/json"},
                             {"iothub-contentencoding", "utf-8"},
                             {"iothub-interface-id", "urn:azureiot:Security:SecurityAgent:1"}});
  ASSERT_EQ(r.status, 204) << r.body;
  EXPECT_TRUE(r.body.empty());

  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 1u);
  const auto& m = got[0];
  EXPECT_EQ(m.body, body);
  EXPECT_EQ(m.message_id, "mid-1");
  EXPECT_EQ(m.correlation_id, "cid-1");
  EXPECT_EQ(m.user_id, "u1");
  EXPECT_EQ(m.to, "/custom/to") << "IoTHub-To comes after iothub-to and wins";
  EXPECT_EQ(m.expiry_time_utc, "2030-01-01T00:00:00.000Z");
  EXPECT_EQ(m.content_type, "application/json");
  EXPECT_EQ(m.content_encoding, "utf-8");
  EXPECT_EQ(m.interface_id, "urn:azureiot:Security:SecurityAgent:1");
  EXPECT_EQ(m.component, "thermostat1");
  EXPECT_EQ(m.creation_time_utc, "2024-01-01T00:00:00Z");
  EXPECT_EQ(prop(m, "alert"), "hot/cold & more");
  EXPECT_EQ(prop(m, "Case"), "Kept");
  EXPECT_EQ(prop(m, "iothub-ack"), "full");
  EXPECT_EQ(m.properties.size(), 3u) << "User-Agent, Host, Authorization are not properties";
  // Stamped by the hub.
  EXPECT_EQ(m.device_id, "dev1");
  EXPECT_EQ(m.module_id, "");
  EXPECT_EQ(m.generation_id, d.generation_id);
  EXPECT_FALSE(m.generation_id.empty());
  EXPECT_EQ(m.auth, telemetry::auth_method::sas);
}

TEST_F(device_api_test, without_iothub_to_override_the_path_is_the_to) {
  const auto d = add_device("dev1");
  ASSERT_EQ(send_event("dev1", device_token(d), "x").status, 204);
  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].to, "/devices/dev1/messages/events");
  EXPECT_FALSE(got[0].message_id.has_value());
}

TEST_F(device_api_test, spoofed_identity_headers_are_ignored) {
  const auto d = add_device("dev1");
  ASSERT_EQ(send_event("dev1", device_token(d), "x",
                       {{"iothub-connection-device-id", "other"}, {"iothub-connection-auth-generation-id", "1"}})
                .status,
            204);
  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].device_id, "dev1");
  EXPECT_EQ(got[0].generation_id, d.generation_id);
  EXPECT_TRUE(got[0].properties.empty());
}

TEST_F(device_api_test, batch_as_node_sends_it) {
  const auto d = add_device("dev1");
  // constructBatchBody() in http.js: a space after "body":, properties only when there are some.
  const std::string body = fmt::format(R"([{{"body": "{}", "properties":{{"iothub-app-k":"v","iothub-app-n":"1"}}}},{{"body": "{}"}}])",
                                       crypto::base64_encode(std::string_view("first")),
                                       crypto::base64_encode(std::string("sec\0ond", 7)));
  const auto r = send_event("dev1", device_token(d), body, {{"Content-Type", "application/vnd.microsoft.iothub.json"}});
  ASSERT_EQ(r.status, 204) << r.body;
  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].body, "first");
  EXPECT_EQ(prop(got[0], "k"), "v");
  EXPECT_EQ(prop(got[0], "n"), "1");
  EXPECT_EQ(got[1].body, std::string("sec\0ond", 7));
  EXPECT_TRUE(got[1].properties.empty());
  for (const auto& m : got) {
    EXPECT_EQ(m.device_id, "dev1");
    EXPECT_EQ(m.generation_id, d.generation_id);
    EXPECT_EQ(m.auth, telemetry::auth_method::sas);
  }
}

TEST_F(device_api_test, batch_with_system_properties_as_dotnet_sends_them) {
  const auto d = add_device("dev1");
  const std::string body = fmt::format(
      R"([{{"body":"{}","properties":{{"iothub-messageid":"m1","iothub-correlationid":"c1","iothub-contenttype":"text/plain","iothub-app-x":"y"}}}},)"
      R"({{"body":"plain text","base64Encoded":false,"properties":{{"iothub-app-n":5,"iothub-app-b":true}}}}])",
      crypto::base64_encode(std::string_view("one")));
  const auto r = send_event("dev1", device_token(d), body,
                            {{"Content-Type", "application/vnd.microsoft.iothub.json; charset=utf-8"}});
  ASSERT_EQ(r.status, 204) << r.body;
  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].body, "one");
  EXPECT_EQ(got[0].message_id, "m1");
  EXPECT_EQ(got[0].correlation_id, "c1");
  EXPECT_EQ(got[0].content_type, "text/plain");
  EXPECT_EQ(prop(got[0], "x"), "y");
  EXPECT_EQ(got[1].body, "plain text");
  EXPECT_EQ(prop(got[1], "n"), "5");
  EXPECT_EQ(prop(got[1], "b"), "true");
}

TEST_F(device_api_test, empty_batch_stores_nothing) {
  const auto d = add_device("dev1");
  EXPECT_EQ(send_event("dev1", device_token(d), "[]", {{"Content-Type", "application/vnd.microsoft.iothub.json"}}).status,
            204);
  EXPECT_TRUE(stored("dev1").empty());
}

TEST_F(device_api_test, malformed_batches_are_400_and_store_nothing) {
  const auto d = add_device("dev1");
  const std::string good = crypto::base64_encode(std::string_view("ok"));
  for (const std::string& body : {std::string("[{\"body\": \"a\""), std::string("{\"body\":\"" + good + "\"}"),
                                 std::string("[1]"), std::string("[{\"properties\":{}}]"),
                                 std::string("[{\"body\":\"not base64!\"}]"),
                                 "[{\"body\":\"" + good + "\",\"properties\":[1]}]",
                                 "[{\"body\":\"" + good + "\",\"properties\":{\"iothub-app-k\":{\"x\":1}}}]",
                                 // the first item is good: nothing of a bad batch is stored
                                 "[{\"body\":\"" + good + "\"},{\"body\":7}]"}) {
    SCOPED_TRACE(body);
    expect_error(send_event("dev1", device_token(d), body, {{"Content-Type", "application/vnd.microsoft.iothub.json"}}),
                 400, "IotHubFormatError");
  }
  EXPECT_TRUE(stored("dev1").empty());
}

TEST_F(device_api_test, size_limits) {
  const auto d = add_device("dev1");
  // One message: 256 KB of body and properties (telemetry::billed_size).
  // The iothub-to header Node always sends ("/devices/dev1/messages/events", 29 bytes) counts.
  ASSERT_EQ(send_event("dev1", device_token(d), std::string(256 * 1024 - 29, 'a')).status, 204);
  expect_error(send_event("dev1", device_token(d), std::string(256 * 1024 - 29 - 2, 'a'), {{"iothub-app-k", "vv"}}),
               413, "MessageTooLarge");
  // A batch: 256 KB for all its messages together.
  const std::string half = crypto::base64_encode(std::string(130 * 1024, 'b'));
  const std::string two = fmt::format(R"([{{"body":"{}"}},{{"body":"{}"}}])", half, half);
  expect_error(send_event("dev1", device_token(d), two, {{"Content-Type", "application/vnd.microsoft.iothub.json"}}), 413,
               "MessageTooLarge");
  // At most 500 messages.
  std::string many = "[";
  for (int i = 0; i < 501; ++i) many += i == 0 ? R"({"body":""})" : R"(,{"body":""})";
  many += "]";
  expect_error(send_event("dev1", device_token(d), many, {{"Content-Type", "application/vnd.microsoft.iothub.json"}}), 400,
               "ArgumentInvalid");
  EXPECT_EQ(stored("dev1").size(), 1u);
}

TEST_F(device_api_test, module_telemetry_is_stamped_with_the_module) {
  add_device("dev1");
  const auto m = add_module("dev1", "mod1");
  const auto r = call("POST", fmt::format("/devices/dev1/modules/mod1/messages/events{}", api), device_token(m, "mod1"),
                      "hello", {{"iothub-app-k", "v"}});
  ASSERT_EQ(r.status, 204) << r.body;
  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].module_id, "mod1");
  EXPECT_EQ(got[0].generation_id, m.generation_id);
  EXPECT_EQ(prop(got[0], "k"), "v");
  // The module's token is not the device's, and the reverse.
  expect_error(send_event("dev1", device_token(m, "mod1"), "x"), 401, "IotHubUnauthorizedAccess");
  const auto dev = *reg.get_device("dev1");
  expect_error(call("POST", fmt::format("/devices/dev1/modules/mod1/messages/events{}", api), device_token(dev), "x"), 401,
               "IotHubUnauthorizedAccess");
  expect_error(call("POST", fmt::format("/devices/dev1/modules/nope/messages/events{}", api), device_token(dev), "x"), 404,
               "ModuleNotFound");
}

// ---- authentication ----------------------------------------------------------------------------

TEST_F(device_api_test, a_device_token_reaches_only_its_own_paths) {
  const auto a = add_device("devA");
  add_device("devB");
  expect_error(send_event("devB", device_token(a), "x"), 401, "IotHubUnauthorizedAccess");
  expect_error(receive("devB", device_token(a)), 401, "IotHubUnauthorizedAccess");
  // A token whose sr names devB but is signed with devA's key.
  const std::string forged = auth::make_sas_token(fmt::format("{}/devices/devB", host), a.auth.primary_key,
                                                  clk.now_seconds() + 3600);
  expect_error(send_event("devB", forged, "x"), 401, "IotHubUnauthorizedAccess");
  EXPECT_TRUE(stored("devB").empty());
  // Nor the service API.
  expect_error(call("GET", fmt::format("/devices/devA{}", api), device_token(a)), 401, "IotHubUnauthorizedAccess");
  expect_error(call("DELETE", fmt::format("/devices/devA/commands{}", api), device_token(a)), 401,
               "IotHubUnauthorizedAccess");
}

TEST_F(device_api_test, refused_credentials) {
  const auto d = add_device("dev1");
  expect_error(send_event("dev1", "", "x"), 401, "IotHubUnauthorizedAccess");
  expect_error(call("POST", fmt::format("/devices/dev1/messages/events{}", api), std::nullopt, "x"), 401,
               "IotHubUnauthorizedAccess");
  expect_error(send_event("dev1", "SharedAccessSignature garbage", "x"), 401, "IotHubUnauthorizedAccess");
  registry::identity wrong = d;
  wrong.auth.primary_key = crypto::new_symmetric_key();
  expect_error(send_event("dev1", device_token(wrong), "x"), 401, "IotHubUnauthorizedAccess");
  const std::string token = device_token(d, {}, 10s);
  clk.advance(11s);
  expect_error(send_event("dev1", token, "x"), 401, "IotHubUnauthorizedAccess");
  EXPECT_TRUE(stored("dev1").empty());
}

TEST_F(device_api_test, unknown_or_disabled_devices_are_404_as_iot_hub_answers) {
  auto d = add_device("dev1");
  const std::string token = device_token(d);
  expect_error(send_event("ghost", token, "x"), 404, "DeviceNotFound");
  expect_error(receive("ghost", token), 404, "DeviceNotFound");
  d.status = registry::device_status::disabled;
  ASSERT_TRUE(reg.update_device(d, std::string("*")).has_value());
  expect_error(send_event("dev1", token, "x"), 404, "DeviceNotFound");
  expect_error(receive("dev1", token), 404, "DeviceNotFound");
  EXPECT_TRUE(stored("dev1").empty());
}

TEST_F(device_api_test, invalid_ids_are_400) {
  const auto d = add_device("dev1");
  expect_error(call("POST", fmt::format("/devices/{}/messages/events{}", text::url_encode("a/b"), api), device_token(d),
                    "x"),
               400, "ArgumentInvalid");
}

TEST_F(device_api_test, policies_with_device_connect_may_act_for_a_device) {
  add_device("dev1");
  // iothubowner and device have DeviceConnect (azure-iot-cli-extension uses iothubowner here).
  ASSERT_EQ(send_event("dev1", policy_token("iothubowner"), "x").status, 204);
  ASSERT_EQ(send_event("dev1", policy_token("device"), "y").status, 204);
  const auto got = stored("dev1");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].auth, telemetry::auth_method::policy);
  EXPECT_EQ(got[1].auth, telemetry::auth_method::policy);
  EXPECT_EQ(receive("dev1", policy_token("iothubowner")).status, 204);
  // service and registry policies do not.
  for (const char* p : {"service", "registryRead", "registryReadWrite"}) {
    SCOPED_TRACE(p);
    expect_error(send_event("dev1", policy_token(p), "x"), 401, "IotHubUnauthorizedAccess");
    expect_error(receive("dev1", policy_token(p)), 401, "IotHubUnauthorizedAccess");
  }
  // The device policy does not reach the service API.
  expect_error(call("DELETE", fmt::format("/devices/dev1/commands{}", api), policy_token("device")), 401,
               "IotHubUnauthorizedAccess");
}

TEST_F(device_api_test, x509_devices_authenticate_with_their_client_certificate) {
  const issued cert = make_cert({.cn = "devx"}, clk.now());
  registry::device d;
  d.device_id = "devx";
  d.auth.type = registry::auth_type::self_signed;
  d.auth.primary_thumbprint = crypto::sha1_hex(cert.der());
  d.auth.secondary_thumbprint = crypto::sha1_hex(cert.der());
  const auto created = reg.create_device(d);
  ASSERT_TRUE(created.has_value()) << created.error().message;
  add_device("other");

  const certificates::client_chain chain{cert.der(), {}};
  const auto r = call("POST", fmt::format("/devices/devx/messages/events{}", api), std::nullopt, "cert", {}, &chain);
  ASSERT_EQ(r.status, 204) << r.body;
  const auto got = stored("devx");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].auth, telemetry::auth_method::x509_self_signed);
  EXPECT_EQ(got[0].generation_id, created->generation_id);

  // The certificate proves devx only; another certificate proves nothing; no certificate neither.
  expect_error(call("POST", fmt::format("/devices/other/messages/events{}", api), std::nullopt, "x", {}, &chain), 401,
               "IotHubUnauthorizedAccess");
  const issued stranger = make_cert({.cn = "devx"}, clk.now());
  const certificates::client_chain wrong{stranger.der(), {}};
  expect_error(call("POST", fmt::format("/devices/devx/messages/events{}", api), std::nullopt, "x", {}, &wrong), 401,
               "IotHubUnauthorizedAccess");
  const certificates::client_chain none;
  expect_error(call("POST", fmt::format("/devices/devx/messages/events{}", api), std::nullopt, "x", {}, &none), 401,
               "IotHubUnauthorizedAccess");
  // A client certificate is no credential for the service API.
  expect_error(call("GET", fmt::format("/devices/devx{}", api), std::nullopt, {}, {}, &chain), 401,
               "IotHubUnauthorizedAccess");
  EXPECT_EQ(stored("devx").size(), 1u);
}

// ---- cloud-to-device ---------------------------------------------------------------------------

TEST_F(device_api_test, receive_gives_the_message_with_iot_hub_headers) {
  const auto d = add_device("dev1");
  const std::string token = device_token(d);
  EXPECT_EQ(receive("dev1", token).status, 204) << "empty queue";

  c2d::outgoing m;
  m.body = std::string("cmd\0\x01", 5);
  m.message_id = "mid-1";
  m.correlation_id = "cid-1";
  m.user_id = "svc";
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.ack = c2d::ack_mode::full;
  m.expiry = clk.now() + 10min;
  m.properties = {{"color", "blue"}, {"n", "1"}};
  const auto seq = send_c2d("dev1", m);

  const auto r = receive("dev1", token);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, m.body);
  const std::string lock = lock_of(r);
  EXPECT_FALSE(lock.empty());
  EXPECT_EQ(header_of(r, "iothub-messageid").value_or("?"), "mid-1");
  EXPECT_EQ(header_of(r, "iothub-correlationid").value_or("?"), "cid-1");
  EXPECT_EQ(header_of(r, "iothub-userid").value_or("?"), "svc");
  EXPECT_EQ(header_of(r, "iothub-to").value_or("?"), "/devices/dev1/messages/devicebound");
  EXPECT_EQ(header_of(r, "iothub-expiry").value_or("?"), to_iso8601(*m.expiry));
  EXPECT_EQ(header_of(r, "iothub-ack").value_or("?"), "full");
  EXPECT_EQ(header_of(r, "iothub-sequencenumber").value_or("?"), std::to_string(seq));
  EXPECT_EQ(header_of(r, "iothub-enqueuedtime").value_or("?"), to_iso8601(clk.now()));
  EXPECT_EQ(header_of(r, "iothub-deliverycount").value_or("?"), "0");
  EXPECT_EQ(header_of(r, "ContentType").value_or("?"), "application/json");
  EXPECT_EQ(header_of(r, "ContentEncoding").value_or("?"), "utf-8");
  EXPECT_EQ(header_of(r, "iothub-app-color").value_or("?"), "blue");
  EXPECT_EQ(header_of(r, "iothub-app-n").value_or("?"), "1");
  EXPECT_FALSE(header_of(r, "Content-Encoding")) << "not an HTTP content coding";

  // Locked: the next poll finds nothing.
  EXPECT_EQ(receive("dev1", token).status, 204);
  ASSERT_EQ(complete("dev1", token, lock).status, 204);
  // Settled once only.
  expect_error(complete("dev1", token, lock), 412, "DeviceMessageLockLost");
  EXPECT_EQ(c2d.pending("dev1"), 0u);
  const auto fb = c2d.receive_feedback();
  ASSERT_TRUE(fb.has_value());
  ASSERT_EQ(fb->records.size(), 1u);
  EXPECT_EQ(fb->records[0].status, c2d::outcome::success);
  EXPECT_EQ(fb->records[0].original_message_id, "mid-1");
}

TEST_F(device_api_test, ids_absent_from_the_message_are_sent_empty_like_iot_hub) {
  const auto d = add_device("dev1");
  c2d::outgoing m;
  m.body = "x";
  send_c2d("dev1", m);
  const auto r = receive("dev1", device_token(d));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(header_of(r, "iothub-messageid").value_or("?"), "");
  EXPECT_EQ(header_of(r, "iothub-correlationid").value_or("?"), "");
  EXPECT_EQ(header_of(r, "iothub-ack").value_or("?"), "none");
  EXPECT_FALSE(header_of(r, "ContentType"));
}

TEST_F(device_api_test, reject_and_abandon) {
  const auto d = add_device("dev1");
  const std::string token = device_token(d);
  c2d::outgoing m;
  m.body = "r";
  m.message_id = "to-reject";
  m.ack = c2d::ack_mode::full;
  send_c2d("dev1", m);
  auto r = receive("dev1", token);
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(reject("dev1", token, lock_of(r)).status, 204);
  auto fb = c2d.receive_feedback();
  ASSERT_TRUE(fb.has_value());
  ASSERT_EQ(fb->records.size(), 1u);
  EXPECT_EQ(fb->records[0].status, c2d::outcome::rejected);
  ASSERT_TRUE(c2d.complete_feedback(fb->lock_token).has_value());

  m.message_id = "to-abandon";
  send_c2d("dev1", m);
  r = receive("dev1", token);
  ASSERT_EQ(r.status, 200);
  const std::string first_lock = lock_of(r);
  ASSERT_EQ(abandon("dev1", token, first_lock).status, 204);
  // Back in the queue, counted; the old lock is gone.
  r = receive("dev1", token, "deviceBound");  // the REST docs' spelling
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(header_of(r, "iothub-messageid").value_or(""), "to-abandon");
  EXPECT_EQ(header_of(r, "iothub-deliverycount").value_or(""), "1");
  expect_error(abandon("dev1", token, first_lock), 412, "DeviceMessageLockLost");
  // Lock lapse: settling after the lock timeout is lock lost, and the message comes again.
  const std::string lock = lock_of(r);
  clk.advance(61s);
  expect_error(complete("dev1", token, lock), 412, "DeviceMessageLockLost");
  r = receive("dev1", token);
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(complete("dev1", token, lock_of(r)).status, 204);
  EXPECT_EQ(c2d.pending("dev1"), 0u);
}

TEST_F(device_api_test, settlement_checks_if_match_and_the_device) {
  const auto a = add_device("devA");
  const auto b = add_device("devB");
  c2d::outgoing m;
  m.body = "x";
  send_c2d("devA", m);
  const auto r = receive("devA", device_token(a));
  ASSERT_EQ(r.status, 200);
  const std::string lock = lock_of(r);
  // devB cannot settle devA's message, even knowing the lock token.
  expect_error(complete("devB", device_token(b), lock), 412, "DeviceMessageLockLost");
  // If-Match naming another token is a failed precondition; quoted or "*" is fine.
  expect_error(call("DELETE", fmt::format("/devices/devA/messages/devicebound/{}{}", lock, api), device_token(a), {},
                    {{"If-Match", "other"}}),
               412, "PreconditionFailed");
  EXPECT_EQ(call("DELETE", fmt::format("/devices/devA/messages/devicebound/{}{}", lock, api), device_token(a), {},
                 {{"If-Match", "\"" + lock + "\""}})
                .status,
            204);
  expect_error(complete("devA", device_token(a), "not-a-lock"), 412, "DeviceMessageLockLost");
}

TEST_F(device_api_test, unsafe_property_text_never_reaches_the_headers) {
  const auto d = add_device("dev1");
  c2d::outgoing m;
  m.body = "x";
  m.properties = {{"ok", "fine"}, {"bad name", "v"}, {"inject", "a\r\nSet-Cookie: x"}};
  send_c2d("dev1", m);
  const auto r = receive("dev1", device_token(d));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(header_of(r, "iothub-app-ok").value_or(""), "fine");
  for (const auto& [k, v] : r.headers) {
    EXPECT_EQ(k.find_first_of(" \r\n"), std::string::npos) << k;
    EXPECT_EQ(v.find_first_of("\r\n"), std::string::npos) << v;
  }
}

TEST_F(device_api_test, purge_command_queue) {
  add_device("dev1");
  c2d::outgoing m;
  m.body = "x";
  m.message_id = "p";
  m.ack = c2d::ack_mode::negative;
  send_c2d("dev1", m);
  send_c2d("dev1", m);
  const auto r = call("DELETE", fmt::format("/devices/dev1/commands{}", api), policy_token("service"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto body = bj::parse(r.body).as_object();
  EXPECT_EQ(body.at("totalMessagesPurged").to_number<int>(), 2);
  EXPECT_EQ(body.at("deviceId").as_string(), "dev1");
  EXPECT_EQ(c2d.pending("dev1"), 0u);
  const auto fb = c2d.receive_feedback();
  ASSERT_TRUE(fb.has_value());
  EXPECT_EQ(fb->records.size(), 2u);
  EXPECT_EQ(fb->records[0].status, c2d::outcome::purged);

  expect_error(call("DELETE", fmt::format("/devices/ghost/commands{}", api), policy_token("service")), 404,
               "DeviceNotFound");
  expect_error(call("DELETE", fmt::format("/devices/dev1/commands{}", api), policy_token("registryReadWrite")), 401,
               "IotHubUnauthorizedAccess");
}

TEST(device_api_unwired, missing_services_are_503) {
  manual_clock clk;
  auto kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  router rt{services{reg, auth, clk, certs}};
  registry::device d;
  d.device_id = "dev1";
  const auto created = *reg.create_device(d);
  request req;
  req.method = "POST";
  req.target = "/devices/dev1/messages/events";
  req.headers.emplace_back("Authorization", auth::make_sas_token(fmt::format("{}/devices/dev1", host),
                                                                 created.auth.primary_key, clk.now_seconds() + 60));
  EXPECT_EQ(rt.route(req).status, 503);
  req.method = "GET";
  req.target = "/devices/dev1/messages/devicebound";
  EXPECT_EQ(rt.route(req).status, 503);
}

}  // namespace
}  // namespace hub::http
