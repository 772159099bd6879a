#pragma once
// Internal to heads/http: the route table shape shared by router.cpp (matching, auth, error
// wrapping) and the per-area route files (registry_routes.cpp, later twins, jobs...).
#include "domain/telemetry/message.hpp"
#include "heads/http/router.hpp"

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

// One row of a route table. Fixed words in the pattern match case-insensitively (IoT Hub is
// lenient there); "{id}", "{mid}" and "{name}" capture a whole decoded segment, case preserved.
// The router checks {id} and {mid} against IoT Hub's id rule; {name} is the handler's to check.
// `needed` = DeviceConnect marks a device route (IoT Hub's /devices/{id}/messages/*): the caller
// must prove to be the identity of the path (its SAS token, a policy token with DeviceConnect, or
// its TLS client certificate), and the handler sees it as route_context::caller. Every other
// permission is checked against a shared access policy token (service routes).
struct route {
  std::string_view method;
  std::string_view pattern;  // e.g. "devices/{id}/modules/{mid}", no leading '/'
  auth::permission needed;
  handler_fn handle;
};

// The registry routes of azure-iothub's Registry (service.md §3.1).
std::span<const route> registry_routes();
// The CA certificates API (IoT Hub's ARM "Certificates" shapes, served on the service API).
std::span<const route> certificate_routes();
// The device API (telemetry, C2D receive and settlement) and the service's C2D purge.
std::span<const route> device_routes();

// Shared response builders.
inline constexpr std::string_view json_content_type = "application/json; charset=utf-8";
// A JSON success response; the SDK parses the body only when Content-Type says JSON.
response json_response(int status, const boost::json::value& body);
// Same, plus ETag: "<etag>" for single-entity responses.
response json_response(int status, const boost::json::value& body, std::string_view etag);
response no_content();
response error_of(errc code, std::string message, const clock& clk);

}  // namespace hub::http::detail
