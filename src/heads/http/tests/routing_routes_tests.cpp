// hubd's routing admin API through the router: GET/PUT /routing and POST /routing/test over the
// real auth, registry and routing services (memory kv, a temporary event log, manual clock).
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/registry/service.hpp"
#include "domain/routing/service.hpp"
#include "heads/http/router.hpp"
#include "storage/event_log.hpp"
#include "storage/kv.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

namespace hub::http {
namespace {

namespace bj = boost::json;
constexpr const char* host = "127.0.0.2";

class routing_routes_test : public ::testing::Test {
 protected:
  routing_routes_test() {
    dir = std::filesystem::temp_directory_path() / ("hub-http-routing-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    for (const char* name : {"events", "hot"}) {
      storage::log_options o;
      o.dir = (dir / name).string();
      o.partitions = 2;
      o.sync = false;
      logs.push_back(std::move(storage::event_log::open(o).value()));
    }
    routing = std::make_unique<routing::service>(clk, *logs[0], routing::options{"myhub"}, routing::twin_source{});
    auto t = routing::table::compile(routing::parse(std::string_view(
        R"({"endpoints":{"eventHubs":[{"name":"hot"}]},
            "routes":[{"name":"r","source":"DeviceMessages","condition":"level = 'critical'","endpointNames":["hot"]}]})")).value());
    EXPECT_TRUE(routing->install(std::move(t.value()), {logs[0].get(), logs[1].get()}).has_value());
  }
  ~routing_routes_test() override {
    routing->stop();
    for (auto& l : logs) l->close();
    std::filesystem::remove_all(dir);
  }

  response call(router& rt, std::string method, std::string target, std::string body, std::string_view policy) {
    request req;
    req.method = std::move(method);
    req.target = std::move(target);
    const auto* p = auth.identity().find(policy);
    req.headers.emplace_back("Authorization", auth::make_sas_token(host, p->primary_key, clk.now_seconds() + 3600, policy));
    req.body = std::move(body);
    return rt.route(req);
  }

  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{host, auth::default_policies()}, reg, clk};
  certificates::service certs{*kv, reg, clk};
  std::filesystem::path dir;
  std::vector<std::unique_ptr<storage::event_log>> logs;
  std::unique_ptr<routing::service> routing;
};

TEST_F(routing_routes_test, read_replace_and_test_the_configuration) {
  router rt{services{reg, auth, clk, certs, nullptr, nullptr, nullptr, nullptr, nullptr, routing.get()}};
  response r = call(rt, "GET", "/routing", {}, "registryRead");
  ASSERT_EQ(r.status, 200) << r.body;
  bj::value cfg = bj::parse(r.body);
  EXPECT_EQ(cfg.at("routes").at(0).at("name").as_string(), "r");

  // Replacing needs RegistryWrite.
  cfg.at("routes").at(0).as_object()["condition"] = "level = 'warning'";
  EXPECT_EQ(call(rt, "PUT", "/routing", bj::serialize(cfg), "service").status, 401);
  r = call(rt, "PUT", "/routing", bj::serialize(cfg), "registryReadWrite");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(bj::parse(r.body).at("routes").at(0).at("condition").as_string(), "level = 'warning'");
  cfg.at("routes").at(0).as_object()["condition"] = "level = = 1";
  r = call(rt, "PUT", "/routing", bj::serialize(cfg), "iothubowner");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("route 'r': condition: Line 1:9"), std::string::npos) << r.body;
  EXPECT_EQ(call(rt, "PUT", "/routing", "{not json", "iothubowner").status, 400);

  r = call(rt, "POST", "/routing/test", R"({"message":{"appProperties":{"level":"warning"}}})", "service");
  ASSERT_EQ(r.status, 200) << r.body;
  const bj::value t = bj::parse(r.body);
  EXPECT_EQ(t.at("routes").at(0).at("properties").at("name").as_string(), "r");
  EXPECT_EQ(bj::serialize(t.at("endpoints")), R"(["hot"])");

  router none{services{reg, auth, clk, certs}};
  EXPECT_EQ(call(none, "GET", "/routing", {}, "iothubowner").status, 503);
}

}  // namespace
}  // namespace hub::http
