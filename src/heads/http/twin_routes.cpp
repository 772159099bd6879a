// Device and module twins and direct methods over REST, as azure-iothub's Registry (getTwin,
// updateTwin, twin.update, getModuleTwin, updateModuleTwin) and Client.invokeDeviceMethod call
// them (service.md §3.1, §3.3, §4). Each handler translates wire <-> domain; twins::service and
// methods::service decide everything else.
#include "base/json.hpp"
#include "domain/methods/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace hub::http::detail {
namespace {

namespace bj = boost::json;

response fail(const route_context& c, const error& e) { return error_response(e, c.svc.clk); }
response fail(const route_context& c, errc code, std::string message) {
  return error_of(code, std::move(message), c.svc.clk);
}

response unavailable(const route_context& c, std::string_view what) {
  return fail(c, errc::service_unavailable, fmt::format("{} are not available on this hub", what));
}

twins::identity twin_of(const route_context& c) { return {std::string(c.device_id), std::string(c.module_id)}; }

// The whole twin, with its etag quoted in the ETag header as IoT Hub sends it.
response twin_response(const bj::object& doc) {
  std::string_view etag;
  if (const auto* e = doc.if_contains("etag"); e != nullptr && e->is_string()) etag = e->get_string();
  return json_response(200, doc, etag);
}

// ---- twins ------------------------------------------------------------------------------

response get_twin(const route_context& c) {
  if (c.svc.twins == nullptr) return unavailable(c, "Twins");
  auto doc = c.svc.twins->get(twin_of(c));
  if (!doc) return fail(c, doc.error());
  return twin_response(*doc);
}

// PATCH: {"tags": {...}, "properties": {"desired": {...}}} merged (null deletes). Node's
// updateTwin and twin.update send If-Match "<etag>" (or "*" for a Twin without one).
response update_twin(const route_context& c) {
  if (c.svc.twins == nullptr) return unavailable(c, "Twins");
  auto body = json::parse(c.req.body);
  if (!body) return fail(c, body.error());
  auto doc = c.svc.twins->update(twin_of(c), *body, if_match_of(c.req));
  if (!doc) return fail(c, doc.error());
  return twin_response(*doc);
}

// PUT: tags and desired replaced. A client may send a whole twin document back (.NET's
// ReplaceTwinAsync serialises its Twin, reported section included, even when empty): the
// reported section belongs to the device and a replace keeps it, so it is not part of the request.
response replace_twin(const route_context& c) {
  if (c.svc.twins == nullptr) return unavailable(c, "Twins");
  auto body = json::parse(c.req.body);
  if (!body) return fail(c, body.error());
  if (auto* o = body->if_object()) {
    if (auto* props = o->if_contains("properties"); props != nullptr && props->is_object()) {
      props->get_object().erase("reported");
    }
  }
  auto doc = c.svc.twins->replace(twin_of(c), *body, if_match_of(c.req));
  if (!doc) return fail(c, doc.error());
  return twin_response(*doc);
}

// ---- direct methods ---------------------------------------------------------------------

// responseTimeoutInSeconds / connectTimeoutInSeconds: a whole number of seconds (Node sends
// integers; an integral double such as 30.0 is accepted too), `fallback` when absent or null.
// The range is methods::service's to check.
result<std::chrono::seconds> seconds_field(const bj::object& body, std::string_view key, std::chrono::seconds fallback) {
  const bj::value* v = body.if_contains(key);
  if (v == nullptr || v->is_null()) return fallback;
  // Far outside any allowed range, so out-of-range values still reach the service's check.
  constexpr std::int64_t bound = 1'000'000'000;
  const auto invalid = [&] { return make_error(errc::argument_invalid, fmt::format("{} must be a whole number", key)); };
  if (v->is_int64()) return std::chrono::seconds(std::clamp(v->get_int64(), -bound, bound));
  if (v->is_uint64()) return std::chrono::seconds(bound);
  if (v->is_double()) {
    const double d = v->get_double();
    if (!std::isfinite(d) || d != std::floor(d)) return invalid();
    return std::chrono::seconds(static_cast<std::int64_t>(std::clamp(d, double(-bound), double(bound))));
  }
  return invalid();
}

// The REST body {"methodName", "payload", "responseTimeoutInSeconds", "connectTimeoutInSeconds"}.
result<methods::invocation> invocation_of(const request& req) {
  auto body = body_object(req);
  if (!body) return body.error();
  methods::invocation inv;
  if (const bj::value* name = body->if_contains("methodName"); name != nullptr && !name->is_null()) {
    if (!name->is_string()) return make_error(errc::argument_invalid, "methodName must be a string");
    inv.name = std::string(name->get_string());
  }
  // Any JSON value; absent means null (Node sends null when the caller gave no payload).
  if (const bj::value* payload = body->if_contains("payload")) inv.payload = json::serialize(*payload);
  auto response_timeout = seconds_field(*body, "responseTimeoutInSeconds", inv.response_timeout);
  if (!response_timeout) return response_timeout.error();
  inv.response_timeout = *response_timeout;
  auto connect_timeout = seconds_field(*body, "connectTimeoutInSeconds", inv.connect_timeout);
  if (!connect_timeout) return connect_timeout.error();
  inv.connect_timeout = *connect_timeout;
  return inv;
}

// 200 {"status": <the device's status>, "payload": <the device's JSON>}. The payload is placed
// as the device sent it when it is JSON; otherwise (a device may send any bytes over MQTT) as a
// JSON string, so that the body stays a JSON document: IoT Hub relays such bytes verbatim and the
// SDKs then fail to parse its answer (azure-iot-sdk-c#1641).
response method_answer(const methods::answer& a) {
  std::string payload = a.payload;
  if (!json::parse(payload)) payload = json::serialize(bj::value(a.payload));
  response r;
  r.status = 200;
  r.headers.emplace_back("Content-Type", std::string(json_content_type));
  r.body = fmt::format(R"({{"status":{},"payload":{}}})", a.status, payload);
  return r;
}

// The completion runs on the thread that settles the call (the device's head, the timeout sweep):
// it builds the response and hands it on, and must not throw into the service.
void answer_method(const responder& done, const clock& clk, result<methods::answer> outcome) noexcept {
  try {
    done(outcome ? method_answer(*outcome) : error_response(outcome.error(), clk));
  } catch (...) {
    try {
      response r;
      r.status = 500;
      done(std::move(r));
    } catch (...) {
    }
  }
}

// POST /twins/{id}[/modules/{mid}]/methods. Asynchronous: methods::service::invoke checks the call
// and the identity (it reads the registry, on this thread), hands it to the identity's connection
// and returns; the answer comes when the device's does, or with IoT Hub's error (DeviceNotOnline
// 404103, GatewayTimeout 504101 after responseTimeoutInSeconds, DeviceNotFound, ModuleNotFound,
// ArgumentInvalid, MessageTooLarge). No thread waits in between.
void invoke_method(const route_context& c, responder done) {
  if (c.svc.methods == nullptr) return done(unavailable(c, "Direct methods"));
  auto inv = invocation_of(c.req);
  if (!inv) return done(fail(c, inv.error()));
  // The router's services outlive every call: the clock is safe to keep.
  const clock* clk = &c.svc.clk;
  c.svc.methods->invoke({std::string(c.device_id), std::string(c.module_id)}, std::move(*inv),
                        [done = std::move(done), clk](result<methods::answer> outcome) {
                          answer_method(done, *clk, std::move(outcome));
                        });
}

using p = auth::permission;

// Twin reads take ServiceConnect, as the permission docs say, or RegistryRead: IoT Hub's twin
// queries need RegistryRead (the docs' twin tutorial asks for both), and a query shows whole twins.
// Writes and methods take ServiceConnect only.
constexpr route table[] = {
    {"GET", "twins/{id}", p::service_connect, get_twin, nullptr, p::registry_read},
    {"PATCH", "twins/{id}", p::service_connect, update_twin},
    {"PUT", "twins/{id}", p::service_connect, replace_twin},
    {"GET", "twins/{id}/modules/{mid}", p::service_connect, get_twin, nullptr, p::registry_read},
    {"PATCH", "twins/{id}/modules/{mid}", p::service_connect, update_twin},
    {"PUT", "twins/{id}/modules/{mid}", p::service_connect, replace_twin},
    {"POST", "twins/{id}/methods", p::service_connect, nullptr, invoke_method},
    {"POST", "twins/{id}/modules/{mid}/methods", p::service_connect, nullptr, invoke_method},
};

}  // namespace

std::span<const route> twin_routes() { return table; }

}  // namespace hub::http::detail
