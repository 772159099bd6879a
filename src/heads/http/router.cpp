// The REST router: target parsing, route matching, authorisation (service policies, or the device
// a device route names), and the never-throw boundary. Handlers live in per-area files
// (registry_routes.cpp, device_routes.cpp...) as rows of a route table.
#include "heads/http/router.hpp"

#include "domain/throttling/throttle.hpp"

#include "base/json.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/value.hpp>
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

namespace hub::http {

std::optional<std::string_view> request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (text::iequals(key, name)) return std::string_view(value);
  }
  return std::nullopt;
}

namespace detail {

std::optional<std::string_view> route_context::query_value(std::string_view name) const {
  std::optional<std::string_view> found;
  for (const auto& [key, value] : query) {
    if (text::iequals(key, name)) found = value;
  }
  return found;
}

response json_response(int status, const boost::json::value& body) {
  response r;
  r.status = status;
  r.headers.emplace_back("Content-Type", std::string(json_content_type));
  r.body = json::serialize(body);
  return r;
}

response json_response(int status, const boost::json::value& body, std::string_view etag) {
  response r = json_response(status, body);
  if (!etag.empty()) r.headers.emplace_back("ETag", fmt::format("\"{}\"", etag));
  return r;
}

response no_content() {
  response r;
  r.status = 204;
  return r;
}

response error_of(errc code, std::string message, const clock& clk) {
  return error_response(make_error(code, std::move(message)), clk);
}

std::optional<std::string> if_match_of(const request& req) {
  const auto header = req.header("If-Match");
  if (!header) return std::nullopt;
  std::string_view v = text::trim(*header);
  if (v.starts_with("W/") || v.starts_with("w/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty()) return std::string("*");
  return std::string(v);
}

result<boost::json::object> body_object(const request& req) {
  auto v = json::parse(req.body);
  if (!v) return v.error();
  if (!v->is_object()) return make_error(errc::iothub_format_error, "The request body must be a JSON object");
  return std::move(v->get_object());
}

}  // namespace detail

namespace {

using detail::query_params;
using detail::route;

const std::shared_ptr<spdlog::logger>& logger() {
  static const auto l = log::get("http");
  return l;
}

struct parsed_target {
  std::string path;                   // raw path, for logs
  std::vector<std::string> segments;  // decoded, one per '/'-separated piece
  query_params query;
};

// Splits "/a/b%2Fc?x=1" into decoded segments {"a", "b/c"} and query {{"x","1"}}. Segments are
// decoded one by one so an encoded '/' stays inside its id. A single trailing '/' is ignored:
// Registry.list() asks for "/devices/" (endpoint.devicePath('')).
result<parsed_target> parse_target(std::string_view target) {
  // Absolute-form targets (proxies) carry scheme and authority: skip them.
  if (const auto scheme = target.find("://"); scheme != std::string_view::npos && !target.starts_with('/')) {
    const auto slash = target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  if (const auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);

  parsed_target out;
  std::string_view path = target;
  std::string_view query;
  if (const auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  if (!path.starts_with('/')) return make_error(errc::argument_invalid, "The request path must start with '/'");
  out.path = std::string(path);

  path.remove_prefix(1);
  if (path.ends_with('/')) path.remove_suffix(1);
  if (!path.empty()) {
    for (const auto piece : text::split(path, '/')) {
      auto decoded = text::url_decode(piece);
      if (!decoded) return make_error(errc::argument_invalid, "The request path has a malformed percent-encoding");
      out.segments.push_back(std::move(*decoded));
    }
  }

  if (!query.empty()) {
    for (const auto pair : text::split(query, '&')) {
      if (pair.empty()) continue;
      const auto eq = pair.find('=');
      auto key = text::url_decode(pair.substr(0, eq));
      auto value = text::url_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
      if (!key || !value)
        return make_error(errc::argument_invalid, "The query string has a malformed percent-encoding");
      out.query.emplace_back(std::move(*key), std::move(*value));
    }
  }
  return out;
}

struct captures {
  std::string_view device_id;
  std::string_view module_id;
  std::string_view name;
};

// Matches decoded segments against a pattern such as "devices/{id}/modules/{mid}".
bool match_pattern(std::string_view pattern, const std::vector<std::string>& segments, captures& out) {
  const auto parts = text::split(pattern, '/');
  if (parts.size() != segments.size()) return false;
  captures c;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "{id}") {
      c.device_id = segments[i];
    } else if (parts[i] == "{mid}") {
      c.module_id = segments[i];
    } else if (parts[i] == "{name}") {
      c.name = segments[i];
    } else if (!text::iequals(parts[i], segments[i])) {
      return false;
    }
  }
  out = c;
  return true;
}

// Every route table of the REST API; later areas (jobs, configurations) add theirs here.
std::array<std::span<const route>, 6> route_tables() {
  return {detail::registry_routes(), detail::certificate_routes(), detail::device_routes(), detail::twin_routes(),
          detail::routing_routes(), detail::query_routes()};
}

struct lookup {
  const route* found = nullptr;
  captures ids;
  std::vector<std::string_view> allowed;  // methods of routes whose path matched
};

lookup find_route(std::string_view method, const std::vector<std::string>& segments) {
  lookup l;
  for (const auto table : route_tables()) {
    for (const auto& r : table) {
      captures c;
      if (!match_pattern(r.pattern, segments, c)) continue;
      if (r.method == method) {
        l.found = &r;
        l.ids = c;
        return l;
      }
      l.allowed.push_back(r.method);
    }
  }
  return l;
}

std::string join(const std::vector<std::string_view>& items, std::string_view sep) {
  std::string out;
  for (const auto item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

// The resource a credential must cover: the hub, or one device of it. Policy tokens are
// hub-scoped, so this matters for device-scoped tokens only.
std::string auth_target(const services& s, std::string_view device_id) {
  const auto& host = s.auth.identity().host_name;
  if (device_id.empty()) return host;
  return fmt::format("{}/devices/{}", host, device_id);
}

// Peer-chosen text (a url-decoded policy name, a path) made safe for one log line: control
// characters cannot forge lines and the length is bounded.
std::string loggable(std::string_view s) {
  constexpr std::size_t max_length = 200;
  std::string out;
  for (const unsigned char c : s.substr(0, max_length))
    out.push_back(c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c));
  if (s.size() > max_length) out += "...";
  return out;
}

// Logs a refused credential without the token: who it claims to be, why, and what it asked for.
void log_refused(const request& req, const parsed_target& t, std::string_view token, const error& why) {
  std::string who = "no token";
  if (!token.empty()) {
    auto parsed = auth::parse_sas_token(token);
    if (!parsed) {
      who = "unparsable token";
    } else if (!parsed->key_name.empty()) {
      who = fmt::format("policy '{}'", parsed->key_name);
    } else {
      who = fmt::format("device-scoped token for '{}'", parsed->resource);
    }
  }
  logger()->warn("refused {} {}: {} ({})", loggable(req.method), loggable(t.path), loggable(who),
                 loggable(why.message));
}

// Logs a refused device credential (a device route) without the token or certificate.
void log_refused_device(const request& req, const parsed_target& t, std::string_view how, const error& why) {
  logger()->warn("refused {} {}: {} ({})", loggable(req.method), loggable(t.path), how, loggable(why.message));
}

std::string_view credential_kind(std::string_view token) {
  auto parsed = auth::parse_sas_token(token);
  if (!parsed) return "unparsable token";
  return parsed->key_name.empty() ? "device-scoped token" : "policy token";
}

// A device route: the caller must prove to be the identity its path names, with that identity's
// SAS token (or a policy token with DeviceConnect), or else the client certificate of the TLS
// connection. nullopt when it did (`out` says how); else the response to send.
//
// IoT Hub's HTTPS API answers 404 DeviceNotFound for an identity that does not exist, and for a
// disabled one (azure-iot-sdk-node#777: a deleted device's sendEvent gets DeviceNotFoundError;
// azure-iot-sdk-c#1507: a disabled device gets 404), so the identity is looked up first. One text
// for both, so that a caller without a credential learns no more than "not usable".
std::optional<response> authenticate_device_route(const request& req, const parsed_target& t, const services& s,
                                                  const captures& ids, detail::device_caller& out) {
  const auto not_usable = [&] {
    return detail::error_of(errc::device_not_found,
                            fmt::format("The device '{}' does not exist or is disabled", ids.device_id), s.clk);
  };
  auto dev = s.registry.get_device(ids.device_id);
  if (!dev) return dev.error().code == errc::device_not_found ? not_usable() : error_response(dev.error(), s.clk);
  if (dev->status == registry::device_status::disabled) return not_usable();
  out.generation_id = dev->generation_id;
  if (!ids.module_id.empty()) {
    auto mod = s.registry.get_module(ids.device_id, ids.module_id);
    if (!mod) {
      if (mod.error().code != errc::module_not_found) return error_response(mod.error(), s.clk);
      return detail::error_of(errc::module_not_found,
                              fmt::format("The module '{}' of device '{}' does not exist", ids.module_id, ids.device_id),
                              s.clk);
    }
    out.generation_id = mod->generation_id;
  }

  const std::string_view token = text::trim(req.header("Authorization").value_or(std::string_view{}));
  if (!token.empty()) {
    auto who = s.auth.authenticate_device(token, ids.device_id, ids.module_id);
    if (!who) {
      if (who.error().code != errc::unauthorized) return error_response(who.error(), s.clk);
      log_refused_device(req, t, credential_kind(token), who.error());
      return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
    }
    const auto parsed = auth::parse_sas_token(token);
    out.method = parsed && !parsed->key_name.empty() ? telemetry::auth_method::policy : telemetry::auth_method::sas;
    return std::nullopt;
  }

  const certificates::client_chain* chain = req.client_certificates;
  if (chain == nullptr || chain->leaf.empty()) {
    log_refused_device(req, t, "no credential",
                       make_error(errc::unauthorized, "no Authorization header and no client certificate"));
    return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
  }
  auto proved = s.certificates.authenticate_device(*chain, ids.device_id, ids.module_id);
  if (!proved) {
    if (proved.error().code != errc::unauthorized) return error_response(proved.error(), s.clk);
    log_refused_device(req, t, "client certificate", proved.error());
    return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
  }
  out.method = proved->method == registry::auth_type::certificate_authority ? telemetry::auth_method::x509_ca
                                                                             : telemetry::auth_method::x509_self_signed;
  return std::nullopt;
}

response invalid_id(std::string_view id, const clock& clk) {
  return detail::error_of(errc::argument_invalid,
                          fmt::format("The id '{}' is invalid: ids have 1 to 128 characters among letters, digits "
                                      "and - . + % _ # * ? ! ( ) , = @ $ ' :",
                                      id.substr(0, 128)),
                          clk);
}

// Ids are checked once for every route: what IoT Hub accepts as an id is one rule.
std::optional<response> check_ids(const route& r, const captures& ids, const clock& clk) {
  if (r.pattern.find("{id}") != std::string_view::npos && !registry::valid_id(ids.device_id)) {
    return invalid_id(ids.device_id, clk);
  }
  if (r.pattern.find("{mid}") != std::string_view::npos && !registry::valid_id(ids.module_id)) {
    return invalid_id(ids.module_id, clk);
  }
  return std::nullopt;
}

// Runs the handler of a matched, authorised route. nullopt when an asynchronous handler took
// `done` (it answers through it); else the response.
std::optional<response> dispatch(const route& r, const detail::route_context& ctx, const detail::responder& done) {
  if (r.handle_async != nullptr) {
    r.handle_async(ctx, done);
    return std::nullopt;
  }
  return r.handle(ctx);
}

// Which operation throttle a route counts against (IoT Hub's: identity registry operations,
// twin reads and updates, direct method invocations, device-to-cloud sends); none for the rest.
std::optional<throttling::operation> throttled_as(const route& r) {
  const auto in = [&](std::span<const route> table) { return &r >= table.data() && &r < table.data() + table.size(); };
  if (in(detail::registry_routes())) return throttling::operation::registry;
  if (in(detail::twin_routes())) return r.handle_async != nullptr ? throttling::operation::methods : throttling::operation::twin_service;
  if (in(detail::device_routes()) && r.pattern.ends_with("/messages/events")) return throttling::operation::d2c;
  return std::nullopt;
}

// 429 ThrottlingException when the route's operation is over its rate (after authentication, so
// that refused callers spend none of it).
std::optional<response> throttle(const services& s, const route& r, std::string_view device_id) {
  if (s.throttles == nullptr) return std::nullopt;
  const auto op = throttled_as(r);
  if (!op) return std::nullopt;
  auto admitted = s.throttles->admit(*op, device_id);
  if (admitted) return std::nullopt;
  return error_response(admitted.error(), s.clk);
}

// The caller proved a credential: its answer (now, or later through the responder) says so.
std::optional<response> authenticated(std::optional<response> r) {
  if (r) r->authenticated = true;
  return r;
}
detail::responder authenticated(const detail::responder& done) {
  return [done](response r) {
    r.authenticated = true;
    done(std::move(r));
  };
}

// A device route: ids first (they are looked up), then the device's credential.
std::optional<response> route_device(const request& req, const services& s, const parsed_target& t, const lookup& l,
                                     const detail::responder& done) {
  const route& r = *l.found;
  if (auto bad = check_ids(r, l.ids, s.clk)) return std::move(*bad);
  detail::device_caller caller;
  if (auto refused = authenticate_device_route(req, t, s, l.ids, caller)) return std::move(*refused);
  if (auto throttled = throttle(s, r, l.ids.device_id)) return authenticated(std::move(throttled));
  detail::route_context ctx{req, s, l.ids.device_id, l.ids.module_id, t.query, l.ids.name};
  ctx.caller = &caller;
  return authenticated(dispatch(r, ctx, authenticated(done)));
}

// A policy token for a service route: the route's permission, or its alternative when it has one.
result<auth::principal> authorize_service(const services& s, std::string_view token, std::string_view target,
                                          const route& r) {
  auto who = s.auth.authorize(token, target, r.needed);
  if (who || who.error().code != errc::unauthorized || r.also == auth::permission{}) return who;
  auto alternative = s.auth.authorize(token, target, r.also);
  // Refused both ways: the first reason is the one logged (it names the route's main permission).
  return alternative ? alternative : who;
}

// nullopt when an asynchronous handler took `done`; else the response.
std::optional<response> route_unguarded(const request& req, const services& s, const detail::responder& done) {
  auto target = parse_target(req.target);
  if (!target) return error_response(target.error(), s.clk);

  const lookup l = find_route(req.method, target->segments);
  if (l.found == nullptr) {
    if (l.allowed.empty()) {
      return detail::error_of(errc::not_found, fmt::format("No resource at {}", target->path), s.clk);
    }
    auto r = detail::error_of(errc::method_not_allowed,
                              fmt::format("{} is not supported on {}", req.method, target->path), s.clk);
    r.headers.emplace_back("Allow", join(l.allowed, ", "));
    return r;
  }
  const route& r = *l.found;
  if (r.needed == auth::permission::device_connect) return route_device(req, s, *target, l, done);

  const std::string_view token = text::trim(req.header("Authorization").value_or(std::string_view{}));
  if (token.empty()) {
    const error why = make_error(errc::unauthorized, "no Authorization header");
    log_refused(req, *target, token, why);
    return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
  }
  auto who = authorize_service(s, token, auth_target(s, l.ids.device_id), r);
  if (!who) {
    if (who.error().code != errc::unauthorized) return error_response(who.error(), s.clk);
    log_refused(req, *target, token, who.error());
    // The client learns only that it was refused, as from IoT Hub; the reason is in our log.
    return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
  }

  if (auto bad = check_ids(r, l.ids, s.clk)) return std::move(*bad);
  if (auto throttled = throttle(s, r, l.ids.device_id)) return authenticated(std::move(throttled));

  const detail::route_context ctx{req, s, l.ids.device_id, l.ids.module_id, target->query, l.ids.name};
  return authenticated(dispatch(r, ctx, authenticated(done)));
}

// Logs an exception that escaped a handler; logging itself must not throw out of route().
void log_escaped(const request& req, std::string_view what) noexcept {
  try {
    logger()->error("unhandled exception in {} {}: {}", loggable(req.method),
                    loggable(std::string_view(req.target).substr(0, req.target.find('?'))), loggable(what));
  } catch (...) {
  }
}

// The bare 500 of last resort: building IoT Hub's error body allocates, which may be what failed.
response internal_error(const clock& clk) noexcept {
  try {
    return detail::error_of(errc::server_error, "An internal server error occurred", clk);
  } catch (...) {
    response r;
    r.status = 500;
    return r;
  }
}

// Makes a completion run-once, so that an asynchronous handler that answered and then threw (or
// a service that completes twice) cannot answer one request twice.
// `done` is moved from only once the wrapper's state exists.
detail::responder run_once(router::respond_fn& done) {
  struct state {
    std::atomic<bool> fired{false};
    router::respond_fn fn;
  };
  auto st = std::make_shared<state>();
  st->fn = std::move(done);
  return [st](response r) {
    if (st->fired.exchange(true)) return;
    auto fn = std::move(st->fn);
    fn(std::move(r));
  };
}

}  // namespace

void router::route_async(const request& req, respond_fn done) const {
  detail::responder once;
  try {
    once = run_once(done);
  } catch (...) {
    // No memory for the wrapper: answer with the bare status on the caller's completion.
    log_escaped(req, "out of memory");
    if (done) done(internal_error(s_.clk));
    return;
  }
  try {
    if (auto answered = route_unguarded(req, s_, once)) once(std::move(*answered));
    return;
  } catch (const std::exception& e) {
    log_escaped(req, e.what());
  } catch (...) {
    log_escaped(req, "non-standard exception");
  }
  once(internal_error(s_.clk));  // ignored if the handler answered before it threw
}

response router::route(const request& req) const {
  std::mutex m;
  std::condition_variable cv;
  std::optional<response> out;
  route_async(req, [&](response r) {
    std::scoped_lock lock(m);
    out = std::move(r);
    cv.notify_all();
  });
  std::unique_lock lock(m);
  cv.wait(lock, [&] { return out.has_value(); });
  return std::move(*out);
}

}  // namespace hub::http
