#pragma once
// IoT Hub's REST API as a pure function: a parsed request in, a response out. The service API
// (registry, twins, direct methods, certificates, C2D purge) and the device API (telemetry, C2D
// receive and settlement). No sockets, no Beast: the Beast session (server/http_session.cpp)
// converts to and from these structs and calls route_async() off the I/O threads, because the
// domain services block on storage (and telemetry waits until its message is durable). A direct
// method waits for its device without holding that thread: its response comes later, through the
// completion.
#include "base/clock.hpp"
#include "domain/auth/service.hpp"
#include "domain/certificates/service.hpp"
#include "domain/registry/service.hpp"

#include <functional>
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
namespace hub::twins {
class service;
}
namespace hub::methods {
class service;
}
namespace hub::routing {
class service;
}

namespace hub::throttling {
class throttles;
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
  // The request proved a credential (a device's or a policy's): the server then counts the
  // connection as authenticated (its cap on unauthenticated connections). Not sent.
  bool authenticated = false;
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
  twins::service* twins = nullptr;          // /twins/{id}[/modules/{mid}]; null: 503
  methods::service* methods = nullptr;      // /twins/.../methods; null: 503
  routing::service* routing = nullptr;      // /routing (hubd's admin API); null: 503
  // Operation throttles (registry, service twin operations, direct methods, HTTPS telemetry);
  // null: none.
  throttling::throttles* throttles = nullptr;
};

// Thread safety: route() and route_async() may be called from any thread, concurrently; the
// services are thread-safe. Both block on storage: call them off the I/O threads.
class router {
 public:
  using respond_fn = std::function<void(response)>;

  explicit router(services s) : s_(s) {}

  // Answers `req`: `done` runs exactly once, with the response. For most routes that is before
  // route_async returns, on the calling thread; a direct method hands `done` to methods::service
  // and returns at once, and `done` runs later on the thread that settles the call (the device's
  // head, the timeout sweep). So `done` must be cheap and must not throw: post the response to
  // your executor. `req` is read only during the call (nothing keeps a reference to it).
  // Never throws on any input; unknown routes give 404, bad bodies 400, with IoT Hub's error body.
  void route_async(const request& req, respond_fn done) const;

  // The blocking form, for tests and tools: route_async, then waits on the calling thread for
  // the response (for a direct method, until the device answers or the call times out).
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
