// The REST router end to end over the real registry and auth services (memory kv, manual clock):
// requests shaped exactly as azure-iothub 1.16.6 sends them, responses checked field by field.
#include "base/crypto.hpp"
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/registry/service.hpp"
#include "heads/http/router.hpp"
#include "storage/kv.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <stdexcept>
#include <string>

namespace hub::http {
namespace {

namespace bj = boost::json;
using namespace std::chrono_literals;

constexpr const char* host = "127.0.0.2";
constexpr const char* api = "?api-version=2021-04-12";

// The body Registry.create() sends for new Device('<id>'): authentication normalised to sas with
// empty keys, which the hub must fill in.
std::string node_device_body(std::string_view id, std::string_view status = "enabled") {
  return fmt::format(
      R"({{"deviceId":"{}","status":"{}","authentication":{{"type":"sas","symmetricKey":{{"primaryKey":"","secondaryKey":""}}}}}})",
      id, status);
}

std::string node_module_body(std::string_view device_id, std::string_view module_id) {
  return fmt::format(
      R"({{"deviceId":"{}","moduleId":"{}","authentication":{{"type":"sas","symmetricKey":{{"primaryKey":"","secondaryKey":""}}}}}})",
      device_id, module_id);
}

std::optional<std::string> header_of(const response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (text::iequals(k, name)) return v;
  }
  return std::nullopt;
}

bj::value body_of(const response& r) { return bj::parse(r.body); }

// The Message the Node SDK splits on ';' and ':'.
std::string message_of(const response& r) { return std::string(body_of(r).at("Message").as_string()); }

// Asserts IoT Hub's legacy error shape for `name` and the status.
void expect_error(const response& r, int status, std::string_view name) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), name);
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto msg = message_of(r);
  const auto prefix = fmt::format("ErrorCode:{};", name);
  EXPECT_TRUE(msg.starts_with(prefix)) << msg;
  EXPECT_GT(msg.size(), prefix.size()) << "the SDK drops the code when the text is empty";
}

class router_test : public ::testing::Test {
 protected:
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  router rt{services{reg, auth, clk, certs}};

  std::string key_of(std::string_view policy) const {
    const auto* p = auth.identity().find(policy);
    EXPECT_NE(p, nullptr) << policy;
    return p != nullptr ? p->primary_key : std::string{};
  }

  std::string token(std::string_view policy = "iothubowner") const {
    return auth::make_sas_token(host, key_of(policy), clk.now_seconds() + 3600, policy);
  }

  // The Node service SDK's own form: sr is the raw host, fields in the order sr, sig, skn, se.
  std::string node_token(std::string_view policy = "iothubowner") const {
    const auto se = clk.now_seconds() + 3600;
    return fmt::format("SharedAccessSignature sr={}&sig={}&skn={}&se={}", host,
                       text::url_encode(auth::sign(key_of(policy), host, se)), text::url_encode(policy), se);
  }

  response call(std::string method, std::string target, std::string body = {},
                std::vector<std::pair<std::string, std::string>> extra = {},
                std::optional<std::string> authz = std::nullopt) {
    request req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.headers.emplace_back("Authorization", authz ? *authz : node_token());
    req.headers.emplace_back("Request-Id", "5f0c7d1e-0000-4000-8000-000000000000");
    req.headers.emplace_back("User-Agent", "azure-iothub/1.16.6");
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
    for (auto& h : extra) req.headers.push_back(std::move(h));
    req.body = std::move(body);
    return rt.route(req);
  }

  response create(std::string_view id, std::string_view status = "enabled") {
    return call("PUT", fmt::format("/devices/{}{}", text::url_encode(id), api), node_device_body(id, status));
  }
};

// ---- errors.cpp -------------------------------------------------------------------------

TEST(http_errors, status_per_code) {
  EXPECT_EQ(http_status(errc::ok), 200);
  EXPECT_EQ(http_status(errc::argument_invalid), 400);
  EXPECT_EQ(http_status(errc::argument_null), 400);
  EXPECT_EQ(http_status(errc::iothub_format_error), 400);
  EXPECT_EQ(http_status(errc::invalid_operation), 400);
  EXPECT_EQ(http_status(errc::device_defined_multiple_times), 400);
  EXPECT_EQ(http_status(errc::bulk_registry_operation_failure), 400);
  EXPECT_EQ(http_status(errc::unauthorized), 401);
  EXPECT_EQ(http_status(errc::quota_exceeded), 403);
  EXPECT_EQ(http_status(errc::device_max_queue_depth_exceeded), 403);
  EXPECT_EQ(http_status(errc::device_not_found), 404);
  EXPECT_EQ(http_status(errc::module_not_found), 404);
  EXPECT_EQ(http_status(errc::not_found), 404);
  EXPECT_EQ(http_status(errc::device_not_online), 404);
  EXPECT_EQ(http_status(errc::method_not_allowed), 405);
  EXPECT_EQ(http_status(errc::device_already_exists), 409);
  EXPECT_EQ(http_status(errc::module_already_exists), 409);
  EXPECT_EQ(http_status(errc::precondition_failed), 412);
  EXPECT_EQ(http_status(errc::message_too_large), 413);
  EXPECT_EQ(http_status(errc::too_many_devices), 413);
  EXPECT_EQ(http_status(errc::throttled), 429);
  EXPECT_EQ(http_status(errc::server_error), 500);
  EXPECT_EQ(http_status(errc::service_unavailable), 503);
  EXPECT_EQ(http_status(errc::gateway_timeout), 504);
}

TEST(http_errors, legacy_body_shape) {
  const manual_clock clk;  // 1'700'000'000 s = 2023-11-14T22:13:20Z
  const auto r = error_response(make_error(errc::device_not_found, "Device d1 not found"), clk);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), "DeviceNotFound");
  const auto body = body_of(r).as_object();
  EXPECT_EQ(body.size(), 2u);
  EXPECT_EQ(body.at("Message").as_string(), "ErrorCode:DeviceNotFound;Device d1 not found");
  const std::string exception(body.at("ExceptionMessage").as_string());
  EXPECT_TRUE(std::regex_match(exception, std::regex(R"(Tracking ID:[0-9a-f]{32}-G:0-TimeStamp:11/14/2023 22:13:20)")))
      << exception;
}

TEST(http_errors, message_is_never_empty_and_has_no_semicolon) {
  const manual_clock clk;
  EXPECT_EQ(message_of(error_response(make_error(errc::precondition_failed, ""), clk)),
            "ErrorCode:PreconditionFailed;PreconditionFailed");
  EXPECT_EQ(message_of(error_response(make_error(errc::argument_invalid, "a;b"), clk)),
            "ErrorCode:ArgumentInvalid;a,b");
}

TEST(http_request, header_lookup_ignores_case) {
  request req;
  req.headers.emplace_back("if-match", "\"*\"");
  EXPECT_EQ(req.header("If-Match").value_or(""), "\"*\"");
  EXPECT_FALSE(req.header("Authorization"));
}

// ---- devices ----------------------------------------------------------------------------

TEST_F(router_test, device_lifecycle) {
  // Registry.create
  auto r = create("d1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  auto dev = body_of(r).as_object();
  EXPECT_EQ(dev.at("deviceId").as_string(), "d1");
  EXPECT_EQ(dev.at("status").as_string(), "enabled");
  const std::string etag(dev.at("etag").as_string());
  EXPECT_FALSE(etag.empty());
  EXPECT_EQ(header_of(r, "ETag").value_or(""), "\"" + etag + "\"");
  // Empty keys in the request are replaced by generated ones (compat checklist #14).
  EXPECT_FALSE(dev.at("authentication").at("symmetricKey").at("primaryKey").as_string().empty());

  // Registry.get
  r = call("GET", std::string("/devices/d1") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "d1");
  EXPECT_EQ(header_of(r, "ETag").value_or(""), "\"" + etag + "\"");

  // Registry.list asks for "/devices/" (endpoint.devicePath('')).
  create("d2");
  r = call("GET", std::string("/devices/") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto list = body_of(r).as_array();
  ASSERT_EQ(list.size(), 2u);
  for (const auto& d : list) EXPECT_TRUE(d.as_object().contains("deviceId"));
  EXPECT_EQ(call("GET", "/devices").status, 200) << "no api-version is fine too";

  // Registry.update always sends If-Match: "*".
  r = call("PUT", std::string("/devices/d1") + api, node_device_body("d1", "disabled"), {{"If-Match", "\"*\""}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("status").as_string(), "disabled");
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "d1");

  // Registry.delete
  r = call("DELETE", std::string("/devices/d1") + api, {}, {{"If-Match", "\"*\""}});
  EXPECT_EQ(r.status, 204);
  EXPECT_TRUE(r.body.empty());

  r = call("GET", std::string("/devices/d1") + api);
  expect_error(r, 404, "DeviceNotFound");
  r = call("DELETE", std::string("/devices/d1") + api, {}, {{"If-Match", "\"*\""}});
  expect_error(r, 404, "DeviceNotFound");
}

TEST_F(router_test, duplicate_create_is_409) {
  ASSERT_EQ(create("d1").status, 200);
  const auto r = create("d1");
  expect_error(r, 409, "DeviceAlreadyExists");
}

TEST_F(router_test, update_of_missing_device_is_404) {
  const auto r = call("PUT", std::string("/devices/ghost") + api, node_device_body("ghost"), {{"If-Match", "\"*\""}});
  expect_error(r, 404, "DeviceNotFound");
}

TEST_F(router_test, stale_if_match_is_412) {
  auto r = create("d1");
  ASSERT_EQ(r.status, 200);
  const std::string old_etag(body_of(r).at("etag").as_string());

  r = call("PUT", std::string("/devices/d1") + api, node_device_body("d1", "disabled"),
           {{"If-Match", "\"" + old_etag + "\""}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string new_etag(body_of(r).at("etag").as_string());
  EXPECT_NE(new_etag, old_etag);

  r = call("PUT", std::string("/devices/d1") + api, node_device_body("d1"), {{"If-Match", "\"" + old_etag + "\""}});
  expect_error(r, 412, "PreconditionFailed");
  r = call("DELETE", std::string("/devices/d1") + api, {}, {{"If-Match", "\"" + old_etag + "\""}});
  expect_error(r, 412, "PreconditionFailed");

  // A weak validator names the same etag.
  r = call("DELETE", std::string("/devices/d1") + api, {}, {{"If-Match", "W/\"" + new_etag + "\""}});
  EXPECT_EQ(r.status, 204) << r.body;
}

TEST_F(router_test, ids_are_url_decoded_and_case_sensitive) {
  // encodeURIComponent('dev+1') == 'dev%2B1'
  auto r = call("PUT", std::string("/devices/dev%2B1") + api, node_device_body("dev+1"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "dev+1");

  r = call("GET", std::string("/devices/dev%2B1") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "dev+1");
  EXPECT_EQ(call("GET", std::string("/devices/dev+1") + api).status, 200) << "'+' in a path is literal";

  // Fixed words ignore case; ids do not.
  EXPECT_EQ(call("GET", std::string("/DEVICES/dev%2B1") + api).status, 200);
  expect_error(call("GET", std::string("/devices/DEV%2B1") + api), 404, "DeviceNotFound");

  // Characters encodeURIComponent leaves alone or escapes, round trip.
  r = call("PUT", std::string("/devices/a%3Ab%40c%24d%23e") + api, node_device_body("a:b@c$d#e"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "a:b@c$d#e");
}

TEST_F(router_test, invalid_ids_are_400) {
  const std::string long_id(130, 'x');
  expect_error(call("PUT", "/devices/" + long_id + api, node_device_body(long_id)), 400, "ArgumentInvalid");
  expect_error(call("GET", "/devices/" + long_id + api), 400, "ArgumentInvalid");
  // "a/b" encoded stays one segment, and '/' is not an id character.
  expect_error(call("PUT", std::string("/devices/a%2Fb") + api, node_device_body("a/b")), 400, "ArgumentInvalid");
  expect_error(call("GET", std::string("/devices/a%2Fb/modules/m") + api), 400, "ArgumentInvalid");
  expect_error(call("GET", std::string("/devices/d1/modules/m%20x") + api), 400, "ArgumentInvalid");
  // Malformed percent-encoding.
  expect_error(call("GET", std::string("/devices/a%zz") + api), 400, "ArgumentInvalid");
}

TEST_F(router_test, body_id_must_match_path) {
  expect_error(call("PUT", std::string("/devices/d1") + api, node_device_body("d2")), 400, "ArgumentInvalid");
  // An absent deviceId is taken from the path.
  const auto r = call("PUT", std::string("/devices/d1") + api, R"({"status":"enabled"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "d1");
}

TEST_F(router_test, malformed_json_is_400_format_error) {
  expect_error(call("PUT", std::string("/devices/d1") + api, R"({"deviceId":"d1",)"), 400, "IotHubFormatError");
  expect_error(call("PUT", std::string("/devices/d1") + api, "[1,2]"), 400, "IotHubFormatError");
  expect_error(call("PUT", std::string("/devices/d1") + api, ""), 400, "IotHubFormatError");
  expect_error(call("POST", std::string("/devices") + api, "not json"), 400, "IotHubFormatError");
  // Nesting beyond the parser's bound is refused, not a stack overflow.
  expect_error(call("PUT", std::string("/devices/d1") + api, std::string(5000, '[') + std::string(5000, ']')), 400,
               "IotHubFormatError");
}

TEST_F(router_test, list_honours_top) {
  create("a");
  create("b");
  create("c");
  auto r = call("GET", std::string("/devices") + api + "&top=2");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).as_array().size(), 2u);
  expect_error(call("GET", std::string("/devices") + api + "&top=x"), 400, "ArgumentInvalid");
  expect_error(call("GET", std::string("/devices") + api + "&top=0"), 400, "ArgumentInvalid");
}

TEST_F(router_test, unknown_paths_and_verbs) {
  expect_error(call("GET", std::string("/nothing/here") + api), 404, "NotFound");
  expect_error(call("GET", std::string("/devices/d1/unknown") + api), 404, "NotFound");
  expect_error(call("GET", "/"), 404, "NotFound");

  auto r = call("PATCH", std::string("/devices/d1") + api, "{}");
  expect_error(r, 405, "MethodNotAllowed");
  EXPECT_EQ(header_of(r, "Allow").value_or(""), "GET, PUT, DELETE");
  r = call("DELETE", std::string("/devices") + api);
  expect_error(r, 405, "MethodNotAllowed");
  EXPECT_EQ(header_of(r, "Allow").value_or(""), "GET, POST");
  // Unknown routes answer 404 before any credential is looked at.
  expect_error(call("GET", "/nothing", {}, {}, std::string{}), 404, "NotFound");
  // What the caller sent is quoted in valid UTF-8, so the body stays JSON (found by fuzz_http).
  r = call("GM\x8eT", std::string("/devices/d1") + api);
  expect_error(r, 405, "MethodNotAllowed");
  EXPECT_NE(body_of(r).at("Message").as_string().find("GM\xEF\xBF\xBDT"), boost::json::string::npos) << r.body;
  expect_error(call("GET", std::string("/devices/%FF%FE/unknown") + api), 404, "NotFound");
}

TEST_F(router_test, api_version_is_ignored) {
  ASSERT_EQ(create("d1").status, 200);
  EXPECT_EQ(call("GET", "/devices/d1?api-version=2018-06-30").status, 200);
  EXPECT_EQ(call("GET", "/devices/d1?api-version=").status, 200);
  EXPECT_EQ(call("GET", "/devices/d1?foo=bar&api-version=2021-04-12").status, 200);
}

// ---- authorisation ----------------------------------------------------------------------

TEST_F(router_test, both_token_forms_are_accepted) {
  EXPECT_EQ(call("GET", std::string("/statistics/devices") + api, {}, {}, token()).status, 200);
  EXPECT_EQ(call("GET", std::string("/statistics/devices") + api, {}, {}, node_token()).status, 200);
}

TEST_F(router_test, missing_token_is_401) {
  request req;
  req.method = "GET";
  req.target = std::string("/devices") + api;
  expect_error(rt.route(req), 401, "IotHubUnauthorizedAccess");
  expect_error(call("GET", std::string("/devices") + api, {}, {}, std::string("   ")), 401, "IotHubUnauthorizedAccess");
}

TEST_F(router_test, bad_tokens_are_401) {
  const auto se = clk.now_seconds() + 3600;
  // Signed with another policy's key.
  const auto wrong_key = fmt::format("SharedAccessSignature sr={}&sig={}&skn=iothubowner&se={}", host,
                                     text::url_encode(auth::sign(key_of("service"), host, se)), se);
  expect_error(call("GET", std::string("/devices") + api, {}, {}, wrong_key), 401, "IotHubUnauthorizedAccess");
  // Unknown policy.
  const auto ghost = fmt::format("SharedAccessSignature sr={}&sig={}&skn=ghost&se={}", host,
                                 text::url_encode(auth::sign(key_of("iothubowner"), host, se)), se);
  expect_error(call("GET", std::string("/devices") + api, {}, {}, ghost), 401, "IotHubUnauthorizedAccess");
  // Garbage and bearer tokens.
  expect_error(call("GET", std::string("/devices") + api, {}, {}, std::string("SharedAccessSignature nonsense")), 401,
               "IotHubUnauthorizedAccess");
  expect_error(call("GET", std::string("/devices") + api, {}, {}, std::string("Bearer eyJhbGciOi")), 401,
               "IotHubUnauthorizedAccess");
  // Another hub's token.
  const auto other = auth::make_sas_token("other.example", key_of("iothubowner"), se, "iothubowner");
  expect_error(call("GET", std::string("/devices") + api, {}, {}, other), 401, "IotHubUnauthorizedAccess");
}

TEST_F(router_test, expired_token_is_401) {
  const auto t = node_token();
  EXPECT_EQ(call("GET", std::string("/devices") + api, {}, {}, t).status, 200);
  clk.advance(3601s);
  expect_error(call("GET", std::string("/devices") + api, {}, {}, t), 401, "IotHubUnauthorizedAccess");
}

TEST_F(router_test, permissions_per_route) {
  ASSERT_EQ(create("d1").status, 200);
  const auto read = node_token("registryRead");
  EXPECT_EQ(call("GET", std::string("/devices/d1") + api, {}, {}, read).status, 200);
  EXPECT_EQ(call("GET", std::string("/devices") + api, {}, {}, read).status, 200);
  EXPECT_EQ(call("GET", std::string("/statistics/devices") + api, {}, {}, read).status, 200);
  expect_error(call("PUT", std::string("/devices/d2") + api, node_device_body("d2"), {}, read), 401,
               "IotHubUnauthorizedAccess");
  expect_error(call("DELETE", std::string("/devices/d1") + api, {}, {{"If-Match", "\"*\""}}, read), 401,
               "IotHubUnauthorizedAccess");
  expect_error(call("POST", std::string("/devices") + api, R"([{"id":"d3","importMode":"create"}])", {}, read), 401,
               "IotHubUnauthorizedAccess");
  expect_error(call("GET", std::string("/statistics/service") + api, {}, {}, read), 401, "IotHubUnauthorizedAccess");

  const auto rw = node_token("registryReadWrite");
  EXPECT_EQ(call("PUT", std::string("/devices/d2") + api, node_device_body("d2"), {}, rw).status, 200);

  const auto svc = node_token("service");
  EXPECT_EQ(call("GET", std::string("/statistics/service") + api, {}, {}, svc).status, 200);
  expect_error(call("GET", std::string("/devices/d1") + api, {}, {}, svc), 401, "IotHubUnauthorizedAccess");

  const auto dev = node_token("device");
  expect_error(call("GET", std::string("/devices/d1") + api, {}, {}, dev), 401, "IotHubUnauthorizedAccess");
}

// ---- bulk -------------------------------------------------------------------------------

TEST_F(router_test, bulk_create_all_new_is_200) {
  // Registry.addDevices: deviceId renamed to id, importMode "create".
  const auto r = call(
      "POST", std::string("/devices") + api,
      R"([{"id":"b1","importMode":"create","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}},
                          {"id":"b2","importMode":"create"}])");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto body = body_of(r).as_object();
  EXPECT_TRUE(body.at("isSuccessful").as_bool());
  EXPECT_TRUE(body.at("errors").as_array().empty());
  EXPECT_TRUE(body.at("warnings").as_array().empty());
  EXPECT_EQ(call("GET", std::string("/devices/b2") + api).status, 200);
}

TEST_F(router_test, bulk_create_with_existing_device_is_400_with_errors) {
  ASSERT_EQ(create("b2").status, 200);
  const auto r = call(
      "POST", std::string("/devices") + api,
      R"([{"id":"b1","importMode":"create"},{"id":"b2","importMode":"create"},{"id":"b3","importMode":"create"}])");
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), "BulkRegistryOperationFailure");
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto body = body_of(r).as_object();
  EXPECT_FALSE(body.at("isSuccessful").as_bool());
  EXPECT_TRUE(body.at("warnings").as_array().empty());
  const auto& errors = body.at("errors").as_array();
  ASSERT_EQ(errors.size(), 1u);
  const auto& e = errors[0].as_object();
  EXPECT_EQ(e.at("deviceId").as_string(), "b2");
  EXPECT_EQ(e.at("errorCode").as_string(), "DeviceAlreadyExists");
  EXPECT_TRUE(e.at("errorStatus").is_string());
  EXPECT_TRUE(e.at("moduleId").is_null());
  EXPECT_TRUE(e.at("operation").is_string());
}

TEST_F(router_test, bulk_modes_are_case_insensitive) {
  ASSERT_EQ(create("b1").status, 200);
  ASSERT_EQ(create("b2").status, 200);
  // Registry.updateDevices(devs, true) sends "Update"; removeDevices(devs, true) sends "Delete".
  auto r = call("POST", std::string("/devices") + api, R"([{"id":"b1","importMode":"Update","status":"disabled"}])");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(call("GET", std::string("/devices/b1") + api)).at("status").as_string(), "disabled");

  r = call("POST", std::string("/devices") + api,
           R"([{"id":"b1","importMode":"Delete"},{"id":"b2","importMode":"DELETE"}])");
  ASSERT_EQ(r.status, 200) << r.body;
  expect_error(call("GET", std::string("/devices/b1") + api), 404, "DeviceNotFound");
  expect_error(call("GET", std::string("/devices/b2") + api), 404, "DeviceNotFound");
}

TEST_F(router_test, bulk_etag_modes_check_the_etag) {
  auto r = create("b1");
  ASSERT_EQ(r.status, 200);
  // updateDevices(devs, false) sends "UpdateIfMatchETag" with the Device's own "etag".
  r = call("POST", std::string("/devices") + api,
           R"([{"id":"b1","importMode":"UpdateIfMatchETag","etag":"not-the-etag","status":"disabled"}])");
  ASSERT_EQ(r.status, 400) << r.body;
  const auto body = body_of(r);
  const auto& e = body.at("errors").as_array().at(0).as_object();
  EXPECT_EQ(e.at("deviceId").as_string(), "b1");
  EXPECT_EQ(e.at("errorCode").as_string(), "PreconditionFailed");
}

TEST_F(router_test, bulk_request_errors) {
  expect_error(call("POST", std::string("/devices") + api, R"({"id":"x"})"), 400, "ArgumentInvalid");
  expect_error(call("POST", std::string("/devices") + api, "[]"), 400, "ArgumentInvalid");
  expect_error(call("POST", std::string("/devices") + api, R"([{"importMode":"create"}])"), 400, "ArgumentNull");
  expect_error(call("POST", std::string("/devices") + api, R"([{"id":"x","importMode":"explode"}])"), 400,
               "ArgumentInvalid");
  // An id named twice is a per-identity failure, reported in the result.
  auto r = call("POST", std::string("/devices") + api,
                R"([{"id":"x","importMode":"create"},{"id":"x","importMode":"create"}])");
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), "BulkRegistryOperationFailure");
  const auto body = body_of(r);
  const auto& errors = body.at("errors").as_array();
  ASSERT_FALSE(errors.empty());
  EXPECT_EQ(errors[0].at("errorCode").as_string(), "DeviceDefinedMultipleTimes");

  std::string many = "[";
  for (int i = 0; i < 101; ++i) many += fmt::format(R"({}{{"id":"m{}","importMode":"create"}})", i ? "," : "", i);
  many += "]";
  expect_error(call("POST", std::string("/devices") + api, many), 413, "TooManyDevices");
  EXPECT_EQ(call("GET", std::string("/devices/m0") + api).status, 404) << "nothing of a refused batch is applied";
}

// ---- modules ----------------------------------------------------------------------------

TEST_F(router_test, module_lifecycle) {
  ASSERT_EQ(create("d1").status, 200);

  // Registry.addModule: no If-Match.
  auto r = call("PUT", std::string("/devices/d1/modules/m1") + api, node_module_body("d1", "m1"));
  ASSERT_EQ(r.status, 200) << r.body;
  auto mod = body_of(r).as_object();
  EXPECT_EQ(mod.at("deviceId").as_string(), "d1");
  EXPECT_EQ(mod.at("moduleId").as_string(), "m1");
  const std::string etag(mod.at("etag").as_string());
  EXPECT_EQ(header_of(r, "ETag").value_or(""), "\"" + etag + "\"");

  expect_error(call("PUT", std::string("/devices/d1/modules/m1") + api, node_module_body("d1", "m1")), 409,
               "ModuleAlreadyExistsOnDevice");

  r = call("GET", std::string("/devices/d1/modules/m1") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("moduleId").as_string(), "m1");

  // Modules route words ignore case too.
  r = call("GET", std::string("/devices/d1/Modules") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(body_of(r).as_array().size(), 1u);
  EXPECT_EQ(body_of(r).as_array()[0].at("moduleId").as_string(), "m1");

  // Registry.updateModule(module) sends the module's etag.
  r = call("PUT", std::string("/devices/d1/modules/m1") + api, node_module_body("d1", "m1"),
           {{"If-Match", "\"" + etag + "\""}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string new_etag(body_of(r).at("etag").as_string());
  expect_error(call("PUT", std::string("/devices/d1/modules/m1") + api, node_module_body("d1", "m1"),
                    {{"If-Match", "\"" + etag + "\""}}),
               412, "PreconditionFailed");
  // updateModule(module, true) sends "*".
  EXPECT_EQ(
      call("PUT", std::string("/devices/d1/modules/m1") + api, node_module_body("d1", "m1"), {{"If-Match", "\"*\""}})
          .status,
      200);

  // Body ids must match the path.
  expect_error(call("PUT", std::string("/devices/d1/modules/m2") + api, node_module_body("d1", "m1")), 400,
               "ArgumentInvalid");
  expect_error(call("PUT", std::string("/devices/d1/modules/m2") + api, node_module_body("d9", "m2")), 400,
               "ArgumentInvalid");

  // Registry.removeModule(deviceId, moduleId) sends "*".
  r = call("DELETE", std::string("/devices/d1/modules/m1") + api, {}, {{"If-Match", "\"*\""}});
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_TRUE(r.body.empty());
  expect_error(call("GET", std::string("/devices/d1/modules/m1") + api), 404, "ModuleNotFound");
  r = call("GET", std::string("/devices/d1/modules") + api);
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(body_of(r).as_array().empty());
  (void)new_etag;
}

TEST_F(router_test, modules_of_missing_device) {
  expect_error(call("PUT", std::string("/devices/ghost/modules/m1") + api, node_module_body("ghost", "m1")), 404,
               "DeviceNotFound");
}

// ---- statistics -------------------------------------------------------------------------

TEST_F(router_test, statistics) {
  auto r = call("GET", std::string("/statistics/devices") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("totalDeviceCount").to_number<std::int64_t>(), 0);

  ASSERT_EQ(create("s1").status, 200);
  ASSERT_EQ(create("s2", "disabled").status, 200);
  ASSERT_EQ(create("s3").status, 200);
  r = call("GET", std::string("/statistics/devices") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto s = body_of(r).as_object();
  EXPECT_EQ(s.at("totalDeviceCount").to_number<std::int64_t>(), 3);
  EXPECT_EQ(s.at("enabledDeviceCount").to_number<std::int64_t>(), 2);
  EXPECT_EQ(s.at("disabledDeviceCount").to_number<std::int64_t>(), 1);

  r = call("GET", std::string("/statistics/service") + api);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("connectedDeviceCount").to_number<std::int64_t>(), 0);
}

// ---- robustness -------------------------------------------------------------------------

TEST_F(router_test, odd_targets_never_throw) {
  for (const char* target :
       {"", "devices", "?", "/?&&=&a", "/%", "/devices/%", "/devices/%2", "//devices", "/devices//modules",
        "https://127.0.0.2/devices/x?api-version=1", "/devices/x#frag", "/statistics", "/statistics/devices/extra"}) {
    const auto r = call("GET", target);
    EXPECT_GE(r.status, 400) << target;
    EXPECT_LT(r.status, 500) << target;
  }
  // Absolute-form targets route like origin-form ones.
  ASSERT_EQ(create("x").status, 200);
  EXPECT_EQ(call("GET", "https://127.0.0.2/devices/x?api-version=1").status, 200);
}

TEST_F(router_test, random_bodies_never_throw) {
  const std::string fragments[] = {"{",          "}",           "[",     "]",
                                   "\"id\"",     ":",           ",",     "\"importMode\"",
                                   "\"create\"", "null",        "1e400", "\"deviceId\"",
                                   "\"d1\"",     "\"\\u0000\"", "true",  "-"};
  std::uint32_t seed = 12345;
  for (int i = 0; i < 300; ++i) {
    std::string body;
    const int n = 1 + static_cast<int>(seed % 12);
    for (int k = 0; k < n; ++k) {
      seed = seed * 1664525u + 1013904223u;
      body += fragments[(seed >> 8) % std::size(fragments)];
    }
    for (const char* target : {"/devices/d1", "/devices", "/devices/d1/modules/m1"}) {
      const auto method = std::string_view(target) == "/devices" ? "POST" : "PUT";
      const auto r = call(method, std::string(target) + api, body);
      EXPECT_TRUE(r.status == 200 || (r.status >= 400 && r.status < 500)) << body << " -> " << r.status;
    }
  }
}

// A storage engine that breaks: the router must still answer, never throw.
class throwing_kv final : public storage::kv {
 public:
  result<std::optional<std::string>> get(std::string_view) override { throw std::runtime_error("disk on fire"); }
  result<void> write(const storage::write_batch&, bool) override { throw std::runtime_error("disk on fire"); }
  result<void> scan(std::string_view, std::string_view, const storage::scan_fn&) override {
    return make_error(errc::service_unavailable, "storage is unavailable");
  }
};

TEST(router_failures, exceptions_become_500_and_errors_keep_their_code) {
  manual_clock clk;
  throwing_kv kv;
  registry::service reg{kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{kv, reg, clk};
  router rt{services{reg, auth, clk, certs}};
  const auto* owner = auth.identity().find("iothubowner");
  ASSERT_NE(owner, nullptr);
  request req;
  req.method = "GET";
  req.target = std::string("/devices/d1") + api;
  req.headers.emplace_back("Authorization",
                           auth::make_sas_token(host, owner->primary_key, clk.now_seconds() + 60, "iothubowner"));
  expect_error(rt.route(req), 500, "ServerError");

  req.target = std::string("/devices") + api;  // list scans: the domain's error passes through
  expect_error(rt.route(req), 503, "ServiceUnavailable");
}

}  // namespace
}  // namespace hub::http
