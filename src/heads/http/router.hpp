#pragma once
// IoT Hub's REST API as a pure function: a parsed request in, a response out. The service API
// (registry, certificates, C2D purge) and the device API (telemetry, C2D receive and settlement).
// No sockets, no Beast: the Beast session (server/http_session.cpp) converts to and from these
// structs and calls route() off the I/O threads, because the domain services block on storage
// (and telemetry waits until its message is durable).
#include "base/clock.hpp"
#include "domain/auth/service.hpp"
#include "domain/certificates/service.hpp"
#include "domain/registry/service.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hub::connections {
class connection_table;
}
namespace hub::telemetry {
class service;
}
namespace hub::c2d {
class service;
}

namespace hub::http {

struct request {
  std::string method;   // "GET", "PUT", ...
  std::string target;   // path and query as received, e.g. "/devices/dev%201?api-version=2021-04-12"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The certificates the client presented in the TLS handshake of this connection (X.509 devices
  // authenticate with them instead of an Authorization header); null or empty when none.
  const certificates::client_chain* client_certificates = nullptr;

  // Case-insensitive header lookup (the first occurrence); nullopt when absent.
  std::optional<std::string_view> header(std::string_view name) const;
};

struct response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// The domain services the REST API reaches.
struct services {
  registry::service& registry;
  auth::service& auth;
  const clock& clk;
  certificates::service& certificates;
  const connections::connection_table* connections = nullptr;  // connectedDeviceCount; null: 0
  telemetry::service* telemetry = nullptr;  // device telemetry; null: 503
  c2d::service* c2d = nullptr;              // C2D receive, settlement and purge; null: 503
};

class router {
 public:
  explicit router(services s) : s_(s) {}
  // Never throws on any input; unknown routes give 404, bad bodies 400, with IoT Hub's error body.
  response route(const request& req) const;

 private:
  services s_;
};

// errc -> HTTP status (exhaustive switch).
int http_status(errc e) noexcept;
// IoT Hub's error response: legacy body {"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":...}
// plus the iothub-errorcode header, which is the shape the Node SDK decodes into typed errors.
response error_response(const error& e, const clock& clk);

}  // namespace hub::http
