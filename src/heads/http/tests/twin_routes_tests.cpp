// Twins and direct methods over REST, through the router, over the real registry, auth, twins,
// connection table and methods services (memory kv, manual clock), with a fake connection in the
// table standing for a device: requests shaped as azure-iothub 1.16.6 sends them (service.md
// §3.1, §3.3, §4).
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/methods/service.hpp"
#include "domain/registry/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/http/router.hpp"
#include "storage/kv.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace hub::http {
namespace {

namespace bj = boost::json;
using namespace std::chrono_literals;

constexpr const char* host = "127.0.0.2";
constexpr const char* api = "?api-version=2021-04-12";

std::optional<std::string> header_of(const response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (text::iequals(k, name)) return v;
  }
  return std::nullopt;
}

bj::value body_of(const response& r) { return bj::parse(r.body); }

void expect_error(const response& r, int status, std::string_view name) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), name) << r.body;
  const std::string msg(body_of(r).at("Message").as_string());
  EXPECT_TRUE(msg.starts_with(fmt::format("ErrorCode:{};", name))) << msg;
  EXPECT_GT(msg.size(), fmt::format("ErrorCode:{};", name).size());
}

// A connected device or module as methods::service sees it: records the calls it is handed.
class fake_device final : public messaging::device_link {
 public:
  void close(std::string) override {}
  bool invoke_method(const messaging::method_call& c) override {
    if (!takes_calls) return false;
    std::scoped_lock lock(mutex);
    calls.push_back(c);
    if (on_call) on_call(c);
    return true;
  }
  bool takes_calls = true;
  std::function<void(const messaging::method_call&)> on_call;  // answers inline, if set
  std::mutex mutex;
  std::vector<messaging::method_call> calls;
};

// What an asynchronous request answered, and when.
struct outcome {
  std::mutex m;
  std::optional<response> res;
  int completions = 0;
};

class twin_routes_test : public ::testing::Test {
 protected:
  twin_routes_test() {
    add_device("d1");
    add_module("d1", "m1");
  }

  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  connections::connection_table table{reg, clk};
  twins::service twins{*kv, reg, clk};
  methods::service methods{
      reg, [this](const methods::identity& who) { return table.find({who.device_id, who.module_id}); }, clk};
  router rt{services{reg, auth, clk, certs, &table, nullptr, nullptr, &twins, &methods}};

  void add_device(std::string id) {
    registry::device d;
    d.device_id = std::move(id);
    ASSERT_TRUE(reg.create_device(d).has_value());
  }

  void add_module(std::string device_id, std::string module_id) {
    registry::module m;
    m.device_id = std::move(device_id);
    m.module_id = std::move(module_id);
    ASSERT_TRUE(reg.create_module(m).has_value());
  }

  std::shared_ptr<fake_device> connect(std::string device_id, std::string module_id = {}) {
    auto link = std::make_shared<fake_device>();
    EXPECT_TRUE(table.attach({std::move(device_id), std::move(module_id)}, link).has_value());
    return link;
  }

  std::string token(std::string_view policy = "iothubowner") const {
    const auto* p = auth.identity().find(policy);
    EXPECT_NE(p, nullptr) << policy;
    return auth::make_sas_token(host, p ? p->primary_key : "", clk.now_seconds() + 3600, policy);
  }

  request make(std::string method, std::string target, std::string body, std::vector<std::pair<std::string, std::string>> extra,
               std::string_view policy) const {
    request req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.headers.emplace_back("Authorization", token(policy));
    req.headers.emplace_back("User-Agent", "azure-iothub/1.16.6");
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
    for (auto& h : extra) req.headers.push_back(std::move(h));
    req.body = std::move(body);
    return req;
  }

  response call(std::string method, std::string target, std::string body = {},
                std::vector<std::pair<std::string, std::string>> extra = {}, std::string_view policy = "iothubowner") {
    return rt.route(make(std::move(method), std::move(target), std::move(body), std::move(extra), policy));
  }

  // route_async, keeping what comes back (possibly later, from another thread).
  std::shared_ptr<outcome> start(std::string target, std::string body, std::string_view policy = "service") {
    auto out = std::make_shared<outcome>();
    rt.route_async(make("POST", std::move(target), std::move(body), {}, policy), [out](response r) {
      std::scoped_lock lock(out->m);
      ++out->completions;
      out->res = std::move(r);
    });
    return out;
  }

  static std::optional<response> result_of(const std::shared_ptr<outcome>& o) {
    std::scoped_lock lock(o->m);
    EXPECT_LE(o->completions, 1) << "answered twice";
    return o->res;
  }

  static std::string if_match(const response& r) { return header_of(r, "ETag").value_or(""); }
};

// ---- twins ------------------------------------------------------------------------------

TEST_F(twin_routes_test, get_twin_is_the_document_with_a_quoted_etag) {
  const auto r = call("GET", fmt::format("/twins/d1{}", api));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  const auto doc = body_of(r).as_object();
  EXPECT_EQ(doc.at("deviceId").as_string(), "d1");
  EXPECT_FALSE(doc.contains("moduleId"));
  const std::string etag(doc.at("etag").as_string());
  EXPECT_EQ(header_of(r, "ETag").value_or(""), fmt::format("\"{}\"", etag));
  const auto& desired = doc.at("properties").at("desired").as_object();
  EXPECT_EQ(desired.at("$version").as_int64(), 1);
  EXPECT_TRUE(desired.at("$metadata").as_object().contains("$lastUpdated"));
  EXPECT_TRUE(doc.at("properties").at("reported").as_object().contains("$version"));
  EXPECT_TRUE(doc.at("tags").as_object().empty());
}

TEST_F(twin_routes_test, unknown_identities) {
  expect_error(call("GET", fmt::format("/twins/nope{}", api)), 404, "DeviceNotFound");
  expect_error(call("GET", fmt::format("/twins/d1/modules/nope{}", api)), 404, "ModuleNotFound");
  expect_error(call("PATCH", fmt::format("/twins/nope{}", api), R"({"tags":{"a":1}})", {{"If-Match", "\"*\""}}), 404,
               "DeviceNotFound");
  expect_error(call("GET", fmt::format("/twins/bad%20id{}", api)), 400, "ArgumentInvalid");
}

TEST_F(twin_routes_test, a_number_past_the_double_range_is_refused_and_the_twin_stays_readable) {
  // Read as infinity, it would be stored and served as "Infinity", which is not JSON (found by
  // fuzz_twin_patch).
  expect_error(call("PATCH", fmt::format("/twins/d1{}", api), R"({"properties":{"desired":{"x":1e999}}})",
                    {{"If-Match", "\"*\""}}),
               400, "IotHubFormatError");
  const response r = call("GET", fmt::format("/twins/d1{}", api));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(body_of(r).at("properties").at("desired").as_object().contains("x"));
}

TEST_F(twin_routes_test, patch_merges_tags_and_desired_and_null_deletes) {
  const auto before = call("GET", fmt::format("/twins/d1{}", api));
  auto r = call("PATCH", fmt::format("/twins/d1{}", api),
                R"({"tags":{"floor":3,"room":"a"},"properties":{"desired":{"fan":{"speed":2,"on":true},"mode":"eco"}}})",
                {{"If-Match", if_match(before)}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(if_match(r), if_match(before));
  auto doc = body_of(r).as_object();
  EXPECT_EQ(doc.at("tags").at("floor").as_int64(), 3);
  EXPECT_EQ(doc.at("properties").at("desired").at("fan").at("speed").as_int64(), 2);
  EXPECT_EQ(doc.at("properties").at("desired").at("$version").as_int64(), 2);

  // Second patch: delete one tag and one nested desired member, leave the rest.
  r = call("PATCH", fmt::format("/twins/d1{}", api),
           R"({"tags":{"room":null},"properties":{"desired":{"fan":{"on":null}}}})", {{"If-Match", if_match(r)}});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto got = call("GET", fmt::format("/twins/d1{}", api));
  doc = body_of(got).as_object();
  EXPECT_EQ(if_match(got), if_match(r));
  EXPECT_EQ(bj::serialize(doc.at("tags")), R"({"floor":3})");
  const auto& desired = doc.at("properties").at("desired").as_object();
  EXPECT_EQ(desired.at("mode").as_string(), "eco");
  EXPECT_EQ(bj::serialize(desired.at("fan")), R"({"speed":2})");
  EXPECT_EQ(desired.at("$version").as_int64(), 3);
  EXPECT_TRUE(desired.at("$metadata").at("fan").as_object().contains("$lastUpdatedVersion"));
}

TEST_F(twin_routes_test, if_match_forms_and_a_stale_etag) {
  const auto first = call("GET", fmt::format("/twins/d1{}", api));
  const std::string quoted = if_match(first);
  ASSERT_GE(quoted.size(), 3u);
  const std::string bare = quoted.substr(1, quoted.size() - 2);

  auto r = call("PATCH", fmt::format("/twins/d1{}", api), R"({"tags":{"a":1}})", {{"If-Match", bare}});
  ASSERT_EQ(r.status, 200) << "a bare etag matches too: " << r.body;
  // The etag of `first` is stale now: 412 with IoT Hub's body (Node: InvalidEtagError).
  r = call("PATCH", fmt::format("/twins/d1{}", api), R"({"tags":{"a":2}})", {{"If-Match", quoted}});
  expect_error(r, 412, "PreconditionFailed");
  r = call("PUT", fmt::format("/twins/d1{}", api), R"({"tags":{"a":2}})", {{"If-Match", quoted}});
  expect_error(r, 412, "PreconditionFailed");
  // "*" and no If-Match are unconditional.
  EXPECT_EQ(call("PATCH", fmt::format("/twins/d1{}", api), R"({"tags":{"a":3}})", {{"If-Match", "\"*\""}}).status, 200);
  EXPECT_EQ(call("PATCH", fmt::format("/twins/d1{}", api), R"({"tags":{"a":4}})").status, 200);
  EXPECT_EQ(body_of(call("GET", fmt::format("/twins/d1{}", api))).at("tags").at("a").as_int64(), 4);
}

TEST_F(twin_routes_test, put_replaces_tags_and_desired_and_ignores_a_reported_section) {
  ASSERT_EQ(call("PATCH", fmt::format("/twins/d1{}", api), R"({"tags":{"a":1,"b":2},"properties":{"desired":{"x":1}}})")
                .status,
            200);
  ASSERT_TRUE(twins.patch_reported({"d1", ""}, bj::parse(R"({"temp":20})")).has_value());
  // A whole document read back, as .NET's ReplaceTwinAsync sends it: reported included.
  const auto r = call("PUT", fmt::format("/twins/d1{}", api),
                      R"({"deviceId":"d1","tags":{"c":3},"properties":{"desired":{"y":2},"reported":{"temp":99}}})",
                      {{"If-Match", "\"*\""}});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto doc = body_of(r).as_object();
  EXPECT_EQ(bj::serialize(doc.at("tags")), R"({"c":3})");
  const auto& desired = doc.at("properties").at("desired").as_object();
  EXPECT_FALSE(desired.contains("x"));
  EXPECT_EQ(desired.at("y").as_int64(), 2);
  EXPECT_EQ(doc.at("properties").at("reported").at("temp").as_int64(), 20) << "reported belongs to the device";
}

TEST_F(twin_routes_test, refused_patches) {
  const auto target = fmt::format("/twins/d1{}", api);
  expect_error(call("PATCH", target, R"({"properties":{"reported":{"x":1}}})"), 400, "ArgumentInvalid");
  expect_error(call("PATCH", target, R"({"tags":{"a":)"), 400, "IotHubFormatError");
  expect_error(call("PATCH", target, R"([1,2])"), 400, "ArgumentInvalid");
  expect_error(call("PATCH", target, R"({"tags":{"bad.key":1}})"), 400, "ArgumentInvalid");

  // Desired over 32 KB: IoT Hub's ArgumentInvalid with the size text; the twin is unchanged.
  const std::string big(4000, 'x');
  std::string patch = R"({"properties":{"desired":{)";
  for (int i = 0; i < 9; ++i) patch += fmt::format(R"({}"k{}":"{}")", i ? "," : "", i, big);
  patch += "}}}";
  const auto r = call("PATCH", target, patch);
  expect_error(r, 400, "ArgumentInvalid");
  EXPECT_NE(r.body.find("'Properties.Desired' size should be less than 32768 bytes"), std::string::npos) << r.body;
  EXPECT_EQ(body_of(call("GET", target)).at("properties").at("desired").at("$version").as_int64(), 1);
}

TEST_F(twin_routes_test, module_twins) {
  const auto target = fmt::format("/twins/d1/modules/m1{}", api);
  auto r = call("GET", target);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r).at("moduleId").as_string(), "m1");
  EXPECT_EQ(body_of(r).at("deviceId").as_string(), "d1");
  r = call("PATCH", target, R"({"properties":{"desired":{"rate":5}}})", {{"If-Match", if_match(r)}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(call("GET", target)).at("properties").at("desired").at("rate").as_int64(), 5);
  // The device's own twin is another document.
  EXPECT_FALSE(body_of(call("GET", fmt::format("/twins/d1{}", api))).at("properties").at("desired").as_object().contains("rate"));
}

TEST_F(twin_routes_test, permissions) {
  const auto target = fmt::format("/twins/d1{}", api);
  EXPECT_EQ(call("GET", target, {}, {}, "service").status, 200);
  EXPECT_EQ(call("GET", target, {}, {}, "registryRead").status, 200) << "twin reads take RegistryRead too";
  EXPECT_EQ(call("PATCH", target, R"({"tags":{"a":1}})", {}, "service").status, 200);
  expect_error(call("PATCH", target, R"({"tags":{"a":1}})", {}, "registryReadWrite"), 401, "IotHubUnauthorizedAccess");
  expect_error(call("PUT", target, R"({"tags":{"a":1}})", {}, "registryRead"), 401, "IotHubUnauthorizedAccess");
  expect_error(call("GET", target, {}, {}, "device"), 401, "IotHubUnauthorizedAccess");
  const auto wrong_verb = call("DELETE", target);
  EXPECT_EQ(wrong_verb.status, 405);
  EXPECT_EQ(header_of(wrong_verb, "Allow").value_or(""), "GET, PATCH, PUT");
}

// ---- direct methods ---------------------------------------------------------------------

TEST_F(twin_routes_test, method_round_trip_answers_later_without_holding_the_caller) {
  auto dev = connect("d1");
  auto out = start(fmt::format("/twins/d1/methods{}", api),
                   R"({"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0})");
  // route_async returned with the call handed to the connection, and no answer yet.
  EXPECT_FALSE(result_of(out).has_value());
  ASSERT_EQ(dev->calls.size(), 1u);
  EXPECT_EQ(dev->calls[0].name, "reboot");
  EXPECT_EQ(dev->calls[0].payload, R"({"delay":5})");

  // The device answers from another thread, as a head does.
  std::thread head([&] {
    ASSERT_TRUE(methods.respond({"d1", ""}, dev->calls[0].request_id, 201, R"({"done":true})").has_value());
  });
  head.join();
  const auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(header_of(*r, "Content-Type").value_or(""), "application/json; charset=utf-8");
  EXPECT_EQ(r->body, R"({"status":201,"payload":{"done":true}})");
}

TEST_F(twin_routes_test, module_method_round_trip) {
  auto mod = connect("d1", "m1");
  auto dev = connect("d1");
  auto out = start(fmt::format("/twins/d1/modules/m1/methods{}", api), R"({"methodName":"ping","payload":null})");
  ASSERT_EQ(mod->calls.size(), 1u);
  EXPECT_TRUE(dev->calls.empty());
  EXPECT_EQ(mod->calls[0].payload, "null");
  ASSERT_TRUE(methods.respond({"d1", "m1"}, mod->calls[0].request_id, 200, R"("pong")").has_value());
  const auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, R"({"status":200,"payload":"pong"})");
}

TEST_F(twin_routes_test, the_blocking_form_waits_for_the_device) {
  auto dev = connect("d1");
  dev->on_call = [this](const messaging::method_call& c) {
    // An answer that arrives while the invocation is still being handed over.
    EXPECT_TRUE(methods.respond({"d1", ""}, c.request_id, 200, c.payload).has_value());
  };
  const auto r = call("POST", fmt::format("/twins/d1/methods{}", api), R"({"methodName":"echo","payload":[1,"two"]})",
                      {}, "service");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, R"({"status":200,"payload":[1,"two"]})");
}

TEST_F(twin_routes_test, method_payloads) {
  auto dev = connect("d1");
  // Absent payload: the device gets null.
  auto out = start(fmt::format("/twins/d1/methods{}", api), R"({"methodName":"noargs"})");
  ASSERT_EQ(dev->calls.size(), 1u);
  EXPECT_EQ(dev->calls[0].payload, "null");
  // A device answer that is not JSON reaches the caller as a JSON string; an empty one as null.
  ASSERT_TRUE(methods.respond({"d1", ""}, dev->calls[0].request_id, 200, "plain text").has_value());
  auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, R"({"status":200,"payload":"plain text"})");
  EXPECT_NO_THROW((void)body_of(*r));

  out = start(fmt::format("/twins/d1/methods{}", api), R"({"methodName":"empty","payload":"s"})");
  ASSERT_EQ(dev->calls.size(), 2u);
  EXPECT_EQ(dev->calls[1].payload, R"("s")");
  ASSERT_TRUE(methods.respond({"d1", ""}, dev->calls[1].request_id, -1, "").has_value());
  r = result_of(out);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, R"({"status":-1,"payload":null})");
}

TEST_F(twin_routes_test, method_errors) {
  const auto target = fmt::format("/twins/d1/methods{}", api);
  // Not connected: 404 DeviceNotOnline, answered at once (connectTimeoutInSeconds 0).
  auto out = start(target, R"({"methodName":"reboot"})");
  auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 404, "DeviceNotOnline");

  // Connected but not taking method calls (no methods subscription): the same.
  auto dev = connect("d1");
  dev->takes_calls = false;
  r = result_of(start(target, R"({"methodName":"reboot"})"));
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 404, "DeviceNotOnline");
  dev->takes_calls = true;

  r = result_of(start(fmt::format("/twins/nope/methods{}", api), R"({"methodName":"reboot"})"));
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 404, "DeviceNotFound");
  r = result_of(start(fmt::format("/twins/d1/modules/nope/methods{}", api), R"({"methodName":"reboot"})"));
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 404, "ModuleNotFound");

  for (const char* bad : {R"({"payload":1})", R"({"methodName":"a b"})", R"({"methodName":7})",
                          R"({"methodName":"m","responseTimeoutInSeconds":"30"})",
                          R"({"methodName":"m","responseTimeoutInSeconds":2.5})",
                          R"({"methodName":"m","responseTimeoutInSeconds":4})",
                          R"({"methodName":"m","responseTimeoutInSeconds":301})",
                          R"({"methodName":"m","connectTimeoutInSeconds":-1})",
                          R"({"methodName":"m","connectTimeoutInSeconds":1e300})"}) {
    r = result_of(start(target, bad));
    ASSERT_TRUE(r.has_value()) << bad;
    expect_error(*r, 400, "ArgumentInvalid");
  }
  r = result_of(start(target, R"({"methodName":)"));
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 400, "IotHubFormatError");

  const std::string big(128 * 1024, 'x');
  r = result_of(start(target, fmt::format(R"({{"methodName":"m","payload":"{}"}})", big)));
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 413, "MessageTooLarge");
  EXPECT_TRUE(dev->calls.empty()) << "no refused call reached the device";

  // Methods take ServiceConnect.
  r = result_of(start(target, R"({"methodName":"m"})", "registryReadWrite"));
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 401, "IotHubUnauthorizedAccess");
}

TEST_F(twin_routes_test, a_device_that_never_answers_times_out_with_504) {
  auto dev = connect("d1");
  auto out = start(fmt::format("/twins/d1/methods{}", api), R"({"methodName":"slow","responseTimeoutInSeconds":5})");
  ASSERT_EQ(dev->calls.size(), 1u);
  clk.advance(4s);
  methods.sweep();
  EXPECT_FALSE(result_of(out).has_value());
  clk.advance(1s);
  methods.sweep();
  const auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 504, "GatewayTimeout");
  // A late answer changes nothing.
  EXPECT_FALSE(methods.respond({"d1", ""}, dev->calls[0].request_id, 200, "1").has_value());
  EXPECT_EQ(out->completions, 1);
}

TEST_F(twin_routes_test, a_call_waits_for_its_device_to_connect) {
  auto out = start(fmt::format("/twins/d1/methods{}", api), R"({"methodName":"m","connectTimeoutInSeconds":10})");
  EXPECT_FALSE(result_of(out).has_value());
  auto dev = connect("d1");
  methods.ready({"d1", ""});
  ASSERT_EQ(dev->calls.size(), 1u);
  ASSERT_TRUE(methods.respond({"d1", ""}, dev->calls[0].request_id, 200, "{}").has_value());
  const auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(twin_routes_test, many_concurrent_calls_each_get_their_own_answer) {
  auto dev = connect("d1");
  constexpr int n = 100;
  std::vector<std::shared_ptr<outcome>> outs;
  for (int i = 0; i < n; ++i) {
    outs.push_back(start(fmt::format("/twins/d1/methods{}", api), fmt::format(R"({{"methodName":"m{}","payload":{}}})", i, i)));
  }
  ASSERT_EQ(dev->calls.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(methods.pending(), static_cast<std::size_t>(n));
  // Answered in reverse order, from two threads: each answer echoes its call's payload.
  auto answer = [&](int from, int to) {
    for (int i = to - 1; i >= from; --i) {
      const auto& c = dev->calls[static_cast<std::size_t>(i)];
      EXPECT_TRUE(methods.respond({"d1", ""}, c.request_id, 200 + i, c.payload).has_value());
    }
  };
  std::thread a(answer, 0, n / 2);
  std::thread b(answer, n / 2, n);
  a.join();
  b.join();
  for (int i = 0; i < n; ++i) {
    const auto r = result_of(outs[static_cast<std::size_t>(i)]);
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_EQ(r->body, fmt::format(R"({{"status":{},"payload":{}}})", 200 + i, i));
  }
  EXPECT_EQ(methods.pending(), 0u);
}

TEST_F(twin_routes_test, shutdown_settles_waiting_calls) {
  auto dev = connect("d1");
  auto out = start(fmt::format("/twins/d1/methods{}", api), R"({"methodName":"m"})");
  EXPECT_FALSE(result_of(out).has_value());
  methods.shutdown();
  const auto r = result_of(out);
  ASSERT_TRUE(r.has_value());
  expect_error(*r, 503, "ServiceUnavailable");
  EXPECT_EQ(methods.pending(), 0u);
}

TEST(twin_routes_unwired, services_absent_answer_503) {
  manual_clock clk;
  auto kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  registry::device d;
  d.device_id = "d1";
  ASSERT_TRUE(reg.create_device(d).has_value());
  const router rt{services{reg, auth, clk, certs}};
  const auto* p = auth.identity().find("iothubowner");
  request req;
  req.method = "GET";
  req.target = "/twins/d1";
  req.headers.emplace_back("Authorization", auth::make_sas_token(host, p->primary_key, clk.now_seconds() + 60, "iothubowner"));
  expect_error(rt.route(req), 503, "ServiceUnavailable");
  req.method = "POST";
  req.target = "/twins/d1/methods";
  req.body = R"({"methodName":"m"})";
  expect_error(rt.route(req), 503, "ServiceUnavailable");
}

}  // namespace
}  // namespace hub::http
