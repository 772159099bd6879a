#pragma once
// Internal to heads/http: the route table shape shared by router.cpp (matching, auth, error
// wrapping) and the per-area route files (registry_routes.cpp, twin_routes.cpp, later jobs...).
#include "domain/telemetry/message.hpp"
#include "heads/http/router.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hub::http::detail {

using query_params = std::vector<std::pair<std::string, std::string>>;

// The identity a device route was authenticated as: the {id} (and {mid}) of its path, proved by
// the identity's own SAS token, a policy token with DeviceConnect, or its X.509 certificate.
struct device_caller {
  telemetry::auth_method method = telemetry::auth_method::sas;
  std::string generation_id;  // of the device, or of the module for module routes
};

// What a handler sees once the route matched and the caller is authorised.
struct route_context {
  const request& req;
  const services& svc;
  std::string_view device_id;  // decoded {id}; empty when the route has none
  std::string_view module_id;  // decoded {mid}
  const query_params& query;   // decoded; api-version included but meaningless
  std::string_view name;       // decoded {name} (a certificate's name, a lock token); empty when none
  const device_caller* caller = nullptr;  // device routes only: who proved to be {id} / {mid}

  // Last value of a query parameter (names compare case-insensitively), nullopt when absent.
  std::optional<std::string_view> query_value(std::string_view name) const;
};

using handler_fn = response (*)(const route_context&);
// The completion of an asynchronous route. The router makes it run-once: a second call is ignored.
using responder = router::respond_fn;
// An asynchronous handler answers through `done`, now or later from another thread. The context
// (and the request it points to) is valid only during the call: copy what the answer needs.
using async_handler_fn = void (*)(const route_context&, responder done);

// One row of a route table. Fixed words in the pattern match case-insensitively (IoT Hub is
// lenient there); "{id}", "{mid}" and "{name}" capture a whole decoded segment, case preserved.
// The router checks {id} and {mid} against IoT Hub's id rule; {name} is the handler's to check.
// `needed` = DeviceConnect marks a device route (IoT Hub's /devices/{id}/messages/*): the caller
// must prove to be the identity of the path (its SAS token, a policy token with DeviceConnect, or
// its TLS client certificate), and the handler sees it as route_context::caller. Every other
// permission is checked against a shared access policy token (service routes); `also`, when set,
// is a second permission that is enough on its own (twin reads: ServiceConnect or RegistryRead).
// A route has either `handle` (synchronous) or `handle_async` (direct methods: the answer comes
// when the device's does, and no thread waits for it).
struct route {
  std::string_view method;
  std::string_view pattern;  // e.g. "devices/{id}/modules/{mid}", no leading '/'
  auth::permission needed;
  handler_fn handle;
  async_handler_fn handle_async = nullptr;
  auth::permission also{};  // 0: none
};

// The registry routes of azure-iothub's Registry (service.md §3.1).
std::span<const route> registry_routes();
// The CA certificates API (IoT Hub's ARM "Certificates" shapes, served on the service API).
std::span<const route> certificate_routes();
// The device API (telemetry, C2D receive and settlement) and the service's C2D purge.
std::span<const route> device_routes();
// Device and module twins (get, update, replace) and direct methods (service.md §3.3, §4).
std::span<const route> twin_routes();
// hubd's routing admin API: GET/PUT /routing, POST /routing/test.
std::span<const route> routing_routes();
// Twin queries: POST /devices/query (service.md §3.1, semantics.md §1).
std::span<const route> query_routes();

// If-Match as the SDKs send it: quoted ("*", "<etag>"), possibly weak (W/"..."), or bare; the
// value without quotes, nullopt when absent. Present but empty ("" from the SDK quoting an empty
// etag) is "*": there is no etag to match.
std::optional<std::string> if_match_of(const request& req);
// The request body as a JSON object. Malformed JSON is IotHubFormatError (from json::parse).
result<boost::json::object> body_object(const request& req);

// Shared response builders.
inline constexpr std::string_view json_content_type = "application/json; charset=utf-8";
// A JSON success response; the SDK parses the body only when Content-Type says JSON.
response json_response(int status, const boost::json::value& body);
// Same, plus ETag: "<etag>" for single-entity responses.
response json_response(int status, const boost::json::value& body, std::string_view etag);
response no_content();
response error_of(errc code, std::string message, const clock& clk);

}  // namespace hub::http::detail
