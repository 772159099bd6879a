// Twin queries over REST (POST /devices/query), through the router, over the real registry, auth
// and twins services (memory kv, manual clock): requests shaped as azure-iothub 1.16.6's
// Registry.createQuery sends them (service.md §3.1), paged the way its Query object follows
// x-ms-continuation.
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/registry/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/http/router.hpp"
#include "storage/kv.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace hub::http {
namespace {

namespace bj = boost::json;

constexpr const char* host = "127.0.0.2";
constexpr const char* query_path = "/devices/query?api-version=2021-04-12";

std::optional<std::string> header_of(const response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (text::iequals(k, name)) return v;
  }
  return std::nullopt;
}

void expect_error(const response& r, int status, std::string_view name) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(header_of(r, "iothub-errorcode").value_or(""), name) << r.body;
  const std::string msg(bj::parse(r.body).at("Message").as_string());
  EXPECT_TRUE(msg.starts_with(fmt::format("ErrorCode:{};", name))) << msg;
}

class query_routes_test : public ::testing::Test {
 protected:
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  twins::service twins{*kv, reg, clk};
  router rt{services{reg, auth, clk, certs, nullptr, nullptr, nullptr, &twins, nullptr}};

  void add_device(const std::string& id, std::string_view tags_json = {}) {
    registry::device d;
    d.device_id = id;
    ASSERT_TRUE(reg.create_device(d).has_value());
    if (tags_json.empty()) return;
    auto body = bj::parse(fmt::format(R"({{"tags":{}}})", tags_json));
    ASSERT_TRUE(twins.update({id, ""}, body, std::nullopt).has_value());
  }

  std::string token(std::string_view policy) const {
    const auto* p = auth.identity().find(policy);
    EXPECT_NE(p, nullptr) << policy;
    return auth::make_sas_token(host, p ? p->primary_key : "", clk.now_seconds() + 3600, policy);
  }

  // The request Registry.createQuery(sql, pageSize).next(token) sends.
  response post(std::string body, std::optional<std::string> page_size, std::optional<std::string> continuation,
                std::string_view policy = "iothubowner") {
    request req;
    req.method = "POST";
    req.target = query_path;
    req.headers.emplace_back("Authorization", token(policy));
    req.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
    if (continuation) req.headers.emplace_back("x-ms-continuation", *continuation);
    if (page_size) req.headers.emplace_back("x-ms-max-item-count", *page_size);
    req.body = std::move(body);
    return rt.route(req);
  }

  response query(std::string_view sql, std::optional<std::string> page_size = std::nullopt,
                 std::optional<std::string> continuation = std::nullopt, std::string_view policy = "iothubowner") {
    return post(bj::serialize(bj::object{{"query", sql}}), std::move(page_size), std::move(continuation), policy);
  }

  // Every page, following x-ms-continuation as the SDK's nextAsTwin does.
  std::vector<response> pages(std::string_view sql, std::optional<std::string> page_size) {
    std::vector<response> out;
    std::optional<std::string> continuation;
    for (int i = 0; i < 100; ++i) {
      out.push_back(query(sql, page_size, continuation));
      EXPECT_EQ(out.back().status, 200) << out.back().body;
      continuation = header_of(out.back(), "x-ms-continuation");
      if (out.back().status != 200 || !continuation) break;
    }
    return out;
  }

  static std::vector<std::string> ids_of(const std::vector<response>& rs) {
    std::vector<std::string> ids;
    for (const auto& r : rs) {
      const bj::value rows = bj::parse(r.body);
      for (const auto& item : rows.as_array()) ids.emplace_back(item.at("deviceId").as_string());
    }
    return ids;
  }
};

TEST_F(query_routes_test, select_star_pages_with_continuation_headers) {
  std::set<std::string> expected;
  for (int i = 0; i < 250; ++i) {
    const std::string id = fmt::format("dev-{:03}", i);
    add_device(id, i % 2 ? R"({"x":"y"})" : R"({"x":"n"})");
    if (i % 2) expected.insert(id);
  }
  const auto rs = pages("SELECT * FROM devices WHERE tags.x = 'y'", "50");
  ASSERT_EQ(rs.size(), 3u);  // 125 matches
  for (const auto& r : rs) {
    EXPECT_EQ(header_of(r, "Content-Type").value_or(""), "application/json; charset=utf-8");
    EXPECT_EQ(header_of(r, "x-ms-item-type").value_or(""), "twin");
  }
  EXPECT_TRUE(header_of(rs[0], "x-ms-continuation"));
  EXPECT_FALSE(header_of(rs[2], "x-ms-continuation")) << "the last page must carry no token";
  EXPECT_EQ(bj::parse(rs[2].body).as_array().size(), 25u);
  const auto ids = ids_of(rs);
  EXPECT_EQ(ids.size(), 125u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), expected);

  // A row is the twin as GET /twins/{id} shows it, without connectionStateUpdatedTime or
  // generationId (semantics.md §1.1).
  const auto row = bj::parse(rs[0].body).as_array().at(0).as_object();
  EXPECT_EQ(row, *twins.get({std::string(row.at("deviceId").as_string()), ""}));
  EXPECT_FALSE(row.contains("generationId"));
  EXPECT_FALSE(row.contains("connectionStateUpdatedTime"));
  EXPECT_EQ(row.at("tags").at("x").as_string(), "y");
}

TEST_F(query_routes_test, page_size_defaults_to_and_stops_at_100) {
  for (int i = 0; i < 120; ++i) add_device(fmt::format("dev-{:03}", i));
  auto first = query("SELECT deviceId FROM devices");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(bj::parse(first.body).as_array().size(), 100u);
  EXPECT_EQ(header_of(first, "x-ms-item-type").value_or(""), "raw");
  EXPECT_EQ(bj::parse(query("SELECT deviceId FROM devices", "1000").body).as_array().size(), 100u);
  EXPECT_EQ(bj::parse(query("SELECT deviceId FROM devices", "7").body).as_array().size(), 7u);
  const auto rs = pages("SELECT deviceId FROM devices", std::nullopt);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(ids_of(rs).size(), 120u);
}

TEST_F(query_routes_test, projections_and_group_by_are_raw) {
  add_device("a", R"({"site":"north","n":1})");
  add_device("b", R"({"site":"south","n":2})");
  add_device("c", R"({"site":"north","n":3})");
  add_device("d");
  auto r = query("SELECT deviceId, tags.site FROM devices WHERE tags.n >= 2");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "x-ms-item-type").value_or(""), "raw");
  EXPECT_EQ(bj::parse(r.body), bj::parse(R"([{"deviceId":"b","site":"south"},{"deviceId":"c","site":"north"}])"));

  r = query("SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "x-ms-item-type").value_or(""), "raw");
  std::map<std::string, std::int64_t> counts;
  const bj::value grouped = bj::parse(r.body);
  for (const auto& row : grouped.as_array()) {
    const auto& o = row.as_object();
    counts[o.contains("site") ? std::string(o.at("site").as_string()) : "-"] = o.at("n").as_int64();
  }
  EXPECT_EQ(counts, (std::map<std::string, std::int64_t>{{"-", 1}, {"north", 2}, {"south", 1}}));

  // Grouped results page too: one group per page here.
  const auto rs = pages("SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site", "1");
  EXPECT_EQ(rs.size(), 3u);
}

TEST_F(query_routes_test, module_twins_and_jobs) {
  add_device("d1");
  registry::module m;
  m.device_id = "d1";
  m.module_id = "m1";
  ASSERT_TRUE(reg.create_module(m).has_value());
  auto r = query("SELECT * FROM devices.modules");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "x-ms-item-type").value_or(""), "twin");
  const auto rows = bj::parse(r.body).as_array();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].at("moduleId").as_string(), "m1");
  EXPECT_EQ(rows[0].at("deviceId").as_string(), "d1");

  r = query("SELECT * FROM devices.jobs");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_of(r, "x-ms-item-type").value_or(""), "deviceJob");
  EXPECT_EQ(r.body, "[]");
  EXPECT_FALSE(header_of(r, "x-ms-continuation"));
}

TEST_F(query_routes_test, bad_queries_and_requests) {
  add_device("d1");
  auto r = query("SELECT * FROM devices WHERE tags.x = ");
  expect_error(r, 400, "ArgumentInvalid");
  EXPECT_NE(r.body.find("SQL query parse failed"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("Line 1:"), std::string::npos) << r.body;
  expect_error(query("SELECT * FROM nowhere"), 400, "ArgumentInvalid");
  expect_error(post("{not json", std::nullopt, std::nullopt), 400, "IotHubFormatError");
  expect_error(post(R"({"sql":"SELECT * FROM devices"})", std::nullopt, std::nullopt), 400, "ArgumentInvalid");
  expect_error(post(R"({"query":""})", std::nullopt, std::nullopt), 400, "ArgumentInvalid");
  expect_error(query("SELECT * FROM devices", "0"), 400, "ArgumentInvalid");
  expect_error(query("SELECT * FROM devices", "many"), 400, "ArgumentInvalid");
  expect_error(query("SELECT * FROM devices", "10", "bm90IGEgdG9rZW4="), 400, "ArgumentInvalid");
  // An empty token is no token: the first page.
  r = query("SELECT * FROM devices", "10", "");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(query_routes_test, registry_read_or_service_connect) {
  add_device("d1");
  EXPECT_EQ(query("SELECT * FROM devices", {}, {}, "registryRead").status, 200);
  EXPECT_EQ(query("SELECT * FROM devices", {}, {}, "registryReadWrite").status, 200);
  EXPECT_EQ(query("SELECT * FROM devices", {}, {}, "service").status, 200);
  expect_error(query("SELECT * FROM devices", {}, {}, "device"), 401, "IotHubUnauthorizedAccess");
  // GET on the path is a device named "query".
  request get;
  get.method = "GET";
  get.target = query_path;
  get.headers.emplace_back("Authorization", token("iothubowner"));
  expect_error(rt.route(get), 404, "DeviceNotFound");
}

}  // namespace
}  // namespace hub::http
