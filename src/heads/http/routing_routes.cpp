// hubd's routing admin API (not IoT Hub's: there routing is an ARM resource setting): the running
// configuration in IoT Hub's ARM routing shape, its replacement (routes, fallback route and
// enrichments; endpoints are fixed at start), and ARM's "test all routes" over a sample message.
// hubctl route list|set|test calls these.
//   GET  /routing        -> 200 {endpoints, routes, fallbackRoute, enrichments}   (ServiceConnect or RegistryRead)
//   PUT  /routing        -> 200 the configuration now running                      (RegistryWrite)
//   POST /routing/test   -> 200 {routes: [{properties: route}], endpoints, fallback} (ServiceConnect or RegistryRead)
#include "base/json.hpp"
#include "domain/routing/service.hpp"
#include "heads/http/routes.hpp"

namespace hub::http::detail {
namespace {

response unavailable(const route_context& c) {
  return error_of(errc::service_unavailable, "Message routing is not available on this hub", c.svc.clk);
}

response get_routing(const route_context& c) {
  if (c.svc.routing == nullptr) return unavailable(c);
  return json_response(200, c.svc.routing->configuration());
}

response put_routing(const route_context& c) {
  if (c.svc.routing == nullptr) return unavailable(c);
  auto body = json::parse(c.req.body);
  if (!body) return error_response(body.error(), c.svc.clk);
  if (auto r = c.svc.routing->reconfigure(*body); !r) return error_response(r.error(), c.svc.clk);
  return json_response(200, c.svc.routing->configuration());
}

response test_routing(const route_context& c) {
  if (c.svc.routing == nullptr) return unavailable(c);
  auto body = json::parse(c.req.body);
  if (!body) return error_response(body.error(), c.svc.clk);
  auto r = c.svc.routing->test_all(*body);
  if (!r) return error_response(r.error(), c.svc.clk);
  return json_response(200, *r);
}

using p = auth::permission;

constexpr route table[] = {
    {"GET", "routing", p::service_connect, get_routing, nullptr, p::registry_read},
    {"PUT", "routing", p::registry_write, put_routing},
    {"POST", "routing/test", p::service_connect, test_routing, nullptr, p::registry_read},
};

}  // namespace

std::span<const route> routing_routes() { return table; }

}  // namespace hub::http::detail
