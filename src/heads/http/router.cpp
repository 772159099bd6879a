// The REST router: target parsing, route matching, authorisation, and the never-throw boundary.
// Handlers live in per-area files (registry_routes.cpp) as rows of a route table.
#include "heads/http/router.hpp"

#include "base/json.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/value.hpp>
#include <fmt/format.h>

#include <array>
#include <exception>

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

// Every route table of the REST API; later areas (twins, jobs, methods) add theirs here.
std::array<std::span<const route>, 2> route_tables() {
  return {detail::registry_routes(), detail::certificate_routes()};
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

response invalid_id(std::string_view id, const clock& clk) {
  return detail::error_of(errc::argument_invalid,
                          fmt::format("The id '{}' is invalid: ids have 1 to 128 characters among letters, digits "
                                      "and - . + % _ # * ? ! ( ) , = @ $ ' :",
                                      id.substr(0, 128)),
                          clk);
}

response route_unguarded(const request& req, const services& s) {
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

  const std::string_view token = text::trim(req.header("Authorization").value_or(std::string_view{}));
  if (token.empty()) {
    const error why = make_error(errc::unauthorized, "no Authorization header");
    log_refused(req, *target, token, why);
    return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
  }
  auto who = s.auth.authorize(token, auth_target(s, l.ids.device_id), r.needed);
  if (!who) {
    if (who.error().code != errc::unauthorized) return error_response(who.error(), s.clk);
    log_refused(req, *target, token, who.error());
    // The client learns only that it was refused, as from IoT Hub; the reason is in our log.
    return detail::error_of(errc::unauthorized, "Unauthorized", s.clk);
  }

  // Ids are checked once here for every route: what IoT Hub accepts as an id is one rule.
  if (r.pattern.find("{id}") != std::string_view::npos && !registry::valid_id(l.ids.device_id)) {
    return invalid_id(l.ids.device_id, s.clk);
  }
  if (r.pattern.find("{mid}") != std::string_view::npos && !registry::valid_id(l.ids.module_id)) {
    return invalid_id(l.ids.module_id, s.clk);
  }

  const detail::route_context ctx{req, s, l.ids.device_id, l.ids.module_id, target->query, l.ids.name};
  return r.handle(ctx);
}

// Logs an exception that escaped a handler; logging itself must not throw out of route().
void log_escaped(const request& req, std::string_view what) noexcept {
  try {
    logger()->error("unhandled exception in {} {}: {}", loggable(req.method),
                    loggable(std::string_view(req.target).substr(0, req.target.find('?'))), loggable(what));
  } catch (...) {
  }
}

}  // namespace

response router::route(const request& req) const {
  try {
    return route_unguarded(req, s_);
  } catch (const std::exception& e) {
    log_escaped(req, e.what());
  } catch (...) {
    log_escaped(req, "non-standard exception");
  }
  try {
    return detail::error_of(errc::server_error, "An internal server error occurred", s_.clk);
  } catch (...) {
    // Out of memory while building the error: answer with the bare status.
    response r;
    r.status = 500;
    return r;
  }
}

}  // namespace hub::http
