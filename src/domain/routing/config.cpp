#include "domain/routing/config.hpp"

#include "base/json.hpp"
#include "base/text.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>

#include <fmt/format.h>

#include <array>
#include <unordered_set>

namespace hub::routing {

namespace {

constexpr std::array<std::string_view, source_count> source_names{
    "DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents", "DeviceConnectionStateEvents"};
constexpr std::array<std::string_view, 7> file_tokens{"{iothub}", "{partition}", "{YYYY}", "{MM}",
                                                       "{DD}",     "{HH}",        "{mm}"};

error invalid(std::string message) { return make_error(errc::argument_invalid, std::move(message)); }

std::string describe(std::string_view what, std::size_t index, std::string_view name) {
  if (name.empty()) return fmt::format("{}[{}]", what, index);
  return fmt::format("{} '{}'", what, name);
}

// Reads an optional string member; an error when it is there but not a string.
result<std::optional<std::string>> string_member(const bj::object& o, std::string_view key, std::string_view where) {
  const bj::value* v = o.if_contains(key);
  if (!v || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) return invalid(fmt::format("{}: {} must be a string", where, key));
  return std::optional<std::string>(std::string(v->get_string()));
}

result<std::optional<std::int64_t>> int_member(const bj::object& o, std::string_view key, std::string_view where) {
  const bj::value* v = o.if_contains(key);
  if (!v || v->is_null()) return std::optional<std::int64_t>();
  if (v->is_int64()) return std::optional<std::int64_t>(v->get_int64());
  if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    return std::optional<std::int64_t>(static_cast<std::int64_t>(v->get_uint64()));
  if (v->is_double() && v->get_double() == static_cast<double>(static_cast<std::int64_t>(v->get_double())))
    return std::optional<std::int64_t>(static_cast<std::int64_t>(v->get_double()));
  return invalid(fmt::format("{}: {} must be an integer", where, key));
}

result<std::vector<std::string>> names_member(const bj::object& o, std::string_view key, std::string_view where) {
  std::vector<std::string> out;
  const bj::value* v = o.if_contains(key);
  if (!v || v->is_null()) return out;
  if (!v->is_array()) return invalid(fmt::format("{}: {} must be an array of endpoint names", where, key));
  for (const bj::value& item : v->get_array()) {
    if (!item.is_string()) return invalid(fmt::format("{}: {} must be an array of endpoint names", where, key));
    out.emplace_back(item.get_string());
  }
  return out;
}

bool reserved_endpoint_name(std::string_view n) {
  return text::iequals(n, "events") || text::iequals(n, "fileNotifications") || text::iequals(n, "$default");
}

// The route object's members (routes[] and fallbackRoute share the shape).
result<route> read_route(const bj::value& v, const std::string& where) {
  if (!v.is_object()) return invalid(where + " must be an object");
  const bj::object& o = v.get_object();
  route r;
  auto name = string_member(o, "name", where);
  if (!name) return name.error();
  r.name = name->value_or("");
  const std::string at = r.name.empty() ? where : fmt::format("route '{}'", r.name);
  auto src = string_member(o, "source", at);
  if (!src) return src.error();
  if (!*src) return invalid(at + ": source is missing (DeviceMessages, TwinChangeEvents, DeviceLifecycleEvents, "
                                 "DeviceConnectionStateEvents)");
  const auto s = source_from_string(**src);
  if (!s) {
    return invalid(fmt::format("{}: source '{}' is not one hubd routes (DeviceMessages, TwinChangeEvents, "
                               "DeviceLifecycleEvents, DeviceConnectionStateEvents)",
                               at, **src));
  }
  r.from = *s;
  auto cond = string_member(o, "condition", at);
  if (!cond) return cond.error();
  r.condition = cond->value_or("");
  auto eps = names_member(o, "endpointNames", at);
  if (!eps) return eps.error();
  if (eps->size() != 1) return invalid(at + ": endpointNames must hold exactly one endpoint");
  r.endpoint = eps->front();
  if (const bj::value* e = o.if_contains("isEnabled"); e && !e->is_null()) {
    if (!e->is_bool()) return invalid(at + ": isEnabled must be true or false");
    r.enabled = e->get_bool();
  }
  return r;
}

result<void> check_file_name_format(const std::string& fmt_text, const std::string& at) {
  for (std::string_view token : file_tokens) {
    const auto first = fmt_text.find(token);
    if (first == std::string::npos)
      return invalid(fmt::format("{}: fileNameFormat must contain {} (all of {{iothub}} {{partition}} {{YYYY}} "
                                 "{{MM}} {{DD}} {{HH}} {{mm}}, in any order)",
                                 at, token));
    if (fmt_text.find(token, first + 1) != std::string::npos)
      return invalid(fmt::format("{}: fileNameFormat contains {} twice", at, token));
  }
  if (fmt_text.starts_with('/') || fmt_text.find('\\') != std::string::npos)
    return invalid(at + ": fileNameFormat must be a relative path with '/' separators");
  for (std::string_view part : text::split(fmt_text, '/')) {
    if (part.empty() || part == "." || part == "..")
      return invalid(at + ": fileNameFormat has an empty, '.' or '..' path segment");
  }
  return {};
}

result<storage_endpoint> read_storage(const bj::value& v, std::size_t i, const limits& lim) {
  const std::string where = fmt::format("endpoints.storageContainers[{}]", i);
  if (!v.is_object()) return invalid(where + " must be an object");
  const bj::object& o = v.get_object();
  storage_endpoint s;
  s.encoding = lim.avro ? file_encoding::avro : file_encoding::json;
  auto name = string_member(o, "name", where);
  if (!name) return name.error();
  s.name = name->value_or("");
  const std::string at = s.name.empty() ? where : fmt::format("endpoint '{}'", s.name);
  if (auto f = string_member(o, "fileNameFormat", at); !f) {
    return f.error();
  } else if (*f) {
    s.file_name_format = **f;
  }
  if (auto r = check_file_name_format(s.file_name_format, at); !r) return r.error();
  auto freq = int_member(o, "batchFrequencyInSeconds", at);
  if (!freq) return freq.error();
  if (*freq) {
    if (**freq < lim.min_batch_frequency_seconds || **freq > lim.max_batch_frequency_seconds)
      return invalid(fmt::format("{}: batchFrequencyInSeconds must be between {} and {}", at,
                                 lim.min_batch_frequency_seconds, lim.max_batch_frequency_seconds));
    s.batch_frequency_seconds = static_cast<std::uint32_t>(**freq);
  }
  auto chunk = int_member(o, "maxChunkSizeInBytes", at);
  if (!chunk) return chunk.error();
  if (*chunk) {
    if (**chunk < 0 || static_cast<std::uint64_t>(**chunk) < lim.min_chunk_bytes ||
        static_cast<std::uint64_t>(**chunk) > lim.max_chunk_bytes)
      return invalid(fmt::format("{}: maxChunkSizeInBytes must be between {} and {}", at, lim.min_chunk_bytes,
                                 lim.max_chunk_bytes));
    s.max_chunk_bytes = static_cast<std::uint64_t>(**chunk);
  }
  auto enc = string_member(o, "encoding", at);
  if (!enc) return enc.error();
  if (*enc) {
    if (text::iequals(**enc, "json")) {
      s.encoding = file_encoding::json;
    } else if (text::iequals(**enc, "avro")) {
      s.encoding = file_encoding::avro;
    } else if (text::iequals(**enc, "avrodeflate")) {
      s.encoding = file_encoding::avro_deflate;
    } else {
      return invalid(fmt::format("{}: encoding '{}' is not one of avro, avroDeflate, JSON", at, **enc));
    }
  }
  if (s.encoding != file_encoding::json && !lim.avro)
    return invalid(at + ": this hubd writes storage files as JSON only (built without libavro): set \"encoding\": \"JSON\"");
  auto path = string_member(o, "path", at);
  if (!path) return path.error();
  s.path = path->value_or("");
  auto container = string_member(o, "containerName", at);
  if (!container) return container.error();
  s.container_name = container->value_or("");
  if (!s.container_name.empty() && (!valid_name(s.container_name) || s.container_name == "." || s.container_name == ".."))
    return invalid(at + ": containerName must be 1-64 of A-Z a-z 0-9 . _ -");
  return s;
}

bool header_token(std::string_view n) {
  if (n.empty() || n.size() > 128) return false;
  for (char c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// Headers the client sets itself (framing, the body's type, hubd's own x-hubd-*).
bool reserved_header(std::string_view n) {
  for (std::string_view r : {"host", "content-length", "content-type", "transfer-encoding", "connection", "te",
                             "upgrade", "expect", "keep-alive", "trailer"}) {
    if (text::iequals(n, r)) return true;
  }
  return text::istarts_with(n, "x-hubd-");
}

result<webhook_endpoint> read_webhook(const bj::value& v, std::size_t i) {
  const std::string where = fmt::format("endpoints.webhooks[{}]", i);
  if (!v.is_object()) return invalid(where + " must be an object");
  const bj::object& o = v.get_object();
  webhook_endpoint w;
  auto name = string_member(o, "name", where);
  if (!name) return name.error();
  w.name = name->value_or("");
  const std::string at = w.name.empty() ? where : fmt::format("endpoint '{}'", w.name);
  auto url = string_member(o, "url", at);
  if (!url) return url.error();
  if (!*url) return invalid(at + ": url is missing (https://host[:port]/path)");
  w.url = **url;
  if (auto r = parse_webhook_url(w); !r) return invalid(fmt::format("{}: {}", at, r.error().message));
  auto batch = int_member(o, "batchSize", at);
  if (!batch) return batch.error();
  if (*batch) {
    if (**batch < 1 || **batch > 100) return invalid(at + ": batchSize must be between 1 and 100");
    w.batch_size = static_cast<std::uint32_t>(**batch);
  }
  if (const bj::value* h = o.if_contains("headers"); h && !h->is_null()) {
    if (!h->is_object()) return invalid(at + ": headers must be an object of header names and string values");
    if (h->get_object().size() > 16) return invalid(at + ": at most 16 headers");
    for (const auto& [k, hv] : h->get_object()) {
      const std::string_view key(k);
      if (!header_token(key)) return invalid(fmt::format("{}: '{}' is not a valid header name", at, key));
      if (reserved_header(key))
        return invalid(fmt::format("{}: header '{}' is set by hubd (Host, Content-Length, Content-Type, Connection, "
                                   "x-hubd-*, ...)",
                                   at, key));
      if (!hv.is_string()) return invalid(fmt::format("{}: header '{}' must have a string value", at, key));
      const std::string_view val = hv.get_string();
      if (val.size() > 4096) return invalid(fmt::format("{}: header '{}' is over 4096 characters", at, key));
      for (char c : val) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f)
          return invalid(fmt::format("{}: header '{}' has a control character in its value", at, key));
      }
      w.headers.emplace_back(std::string(key), std::string(val));
    }
  }
  auto ca = string_member(o, "caFile", at);
  if (!ca) return ca.error();
  w.ca_file = ca->value_or("");
  return w;
}

// A value the enrichment may use: static text, $iothubname, or a twin path of the three kinds.
bool valid_enrichment_value(std::string_view v) {
  if (v.empty()) return false;
  if (!v.starts_with('$')) return true;
  if (text::iequals(v, "$iothubname")) return true;
  for (std::string_view prefix : {"$twin.tags.", "$twin.properties.desired.", "$twin.properties.reported."}) {
    if (text::istarts_with(v, prefix) && v.size() > prefix.size()) {
      for (std::string_view seg : text::split(v.substr(prefix.size()), '.')) {
        if (seg.empty()) return false;
      }
      return true;
    }
  }
  return false;
}

}  // namespace

std::string_view to_string(source s) noexcept { return source_names[static_cast<std::size_t>(s)]; }

std::optional<source> source_from_string(std::string_view s) noexcept {
  for (std::size_t i = 0; i < source_names.size(); ++i) {
    if (text::iequals(s, source_names[i])) return static_cast<source>(i);
  }
  return std::nullopt;
}

bool valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == '-';
    if (!ok) return false;
  }
  return true;
}

std::vector<std::string> custom_endpoint_names(const config& c) {
  std::vector<std::string> out;
  for (const auto& e : c.event_hubs) out.push_back(e.name);
  for (const auto& s : c.storage) out.push_back(s.name);
  for (const auto& w : c.webhooks) out.push_back(w.name);
  return out;
}

result<void> parse_webhook_url(webhook_endpoint& ep) {
  const std::string_view url = ep.url;
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return invalid("url must not contain spaces or control characters");
  }
  if (!text::istarts_with(url, "https://")) return invalid("url must be https:// (webhooks are sent over TLS only)");
  std::string_view rest = url.substr(8);
  if (rest.find('#') != std::string_view::npos) return invalid("url must not have a fragment");
  const std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  ep.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (ep.target.starts_with('?')) ep.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) return invalid("url must not carry user info (use headers)");
  std::string_view port_text;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return invalid("url has an unclosed IPv6 address");
    ep.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) return invalid("url has text after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return invalid("url has an empty port");
    }
  } else {
    const std::size_t colon = authority.find(':');
    ep.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return invalid("url has an empty port");
    }
  }
  if (ep.host.empty()) return invalid("url has no host");
  ep.port = 443;
  if (!port_text.empty()) {
    unsigned long port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || port > 65535) return invalid("url has an invalid port");
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port == 0 || port > 65535) return invalid("url has an invalid port");
    ep.port = static_cast<std::uint16_t>(port);
  }
  return {};
}

result<config> parse(const bj::value& json, const limits& lim) {
  if (!json.is_object()) return invalid("the routing configuration must be a JSON object");
  const bj::object& root = json.get_object();
  config c;

  // --- endpoints ---
  if (const bj::value* eps = root.if_contains("endpoints"); eps && !eps->is_null()) {
    if (!eps->is_object()) return invalid("endpoints must be an object");
    const bj::object& e = eps->get_object();
    for (const auto& [kind, list] : e) {
      if (kind != "eventHubs" && kind != "storageContainers" && kind != "webhooks") {
        if (list.is_array() && !list.get_array().empty())
          return invalid(fmt::format("endpoints.{}: hubd serves eventHubs, storageContainers and webhooks endpoints only",
                                     std::string_view(kind)));
      }
    }
    if (const bj::value* hubs = e.if_contains("eventHubs"); hubs && !hubs->is_null()) {
      if (!hubs->is_array()) return invalid("endpoints.eventHubs must be an array");
      std::size_t i = 0;
      for (const bj::value& h : hubs->get_array()) {
        const std::string where = fmt::format("endpoints.eventHubs[{}]", i++);
        if (!h.is_object()) return invalid(where + " must be an object");
        auto name = string_member(h.get_object(), "name", where);
        if (!name) return name.error();
        c.event_hubs.push_back(event_hub_endpoint{name->value_or("")});
      }
    }
    if (const bj::value* st = e.if_contains("storageContainers"); st && !st->is_null()) {
      if (!st->is_array()) return invalid("endpoints.storageContainers must be an array");
      std::size_t i = 0;
      for (const bj::value& s : st->get_array()) {
        auto r = read_storage(s, i++, lim);
        if (!r) return r.error();
        c.storage.push_back(std::move(*r));
      }
    }
    if (const bj::value* wh = e.if_contains("webhooks"); wh && !wh->is_null()) {
      if (!wh->is_array()) return invalid("endpoints.webhooks must be an array");
      std::size_t i = 0;
      for (const bj::value& w : wh->get_array()) {
        auto r = read_webhook(w, i++);
        if (!r) return r.error();
        c.webhooks.push_back(std::move(*r));
      }
    }
  }
  const std::vector<std::string> custom = custom_endpoint_names(c);
  if (custom.size() > lim.max_custom_endpoints)
    return invalid(fmt::format("{} custom endpoints: at most {} are allowed", custom.size(), lim.max_custom_endpoints));
  std::unordered_set<std::string> endpoint_names;  // lower case
  for (std::size_t i = 0; i < custom.size(); ++i) {
    const std::string& n = custom[i];
    if (!valid_name(n) || n == "." || n == "..")
      return invalid(fmt::format("endpoint '{}': a name is 1-64 of A-Z a-z 0-9 . _ -", n));
    if (reserved_endpoint_name(n))
      return invalid(fmt::format("endpoint '{}': the names events, fileNotifications and $default are reserved", n));
    if (!endpoint_names.insert(text::to_lower(n)).second)
      return invalid(fmt::format("endpoint '{}': endpoint names must be unique across endpoint types", n));
  }
  const auto endpoint_exists = [&](const std::string& n) {
    return text::iequals(n, builtin_endpoint) || endpoint_names.contains(text::to_lower(n));
  };

  // --- routes ---
  if (const bj::value* routes = root.if_contains("routes"); routes && !routes->is_null()) {
    if (!routes->is_array()) return invalid("routes must be an array");
    if (routes->get_array().size() > lim.max_routes)
      return invalid(fmt::format("{} routes: at most {} are allowed", routes->get_array().size(), lim.max_routes));
    std::unordered_set<std::string> route_names;
    std::size_t i = 0;
    for (const bj::value& v : routes->get_array()) {
      const std::string where = fmt::format("routes[{}]", i++);
      auto r = read_route(v, where);
      if (!r) return r.error();
      const std::string at = describe("route", i - 1, r->name);
      if (!valid_name(r->name)) return invalid(fmt::format("{}: a route name is 1-64 of A-Z a-z 0-9 . _ -", at));
      if (!route_names.insert(text::to_lower(r->name)).second)
        return invalid(fmt::format("{}: route names must be unique", at));
      if (!endpoint_exists(r->endpoint))
        return invalid(fmt::format("{}: endpoint '{}' does not exist", at, r->endpoint));
      c.routes.push_back(std::move(*r));
    }
  }
  if (const bj::value* fb = root.if_contains("fallbackRoute"); fb && !fb->is_null()) {
    bj::value copy = *fb;
    // ARM's fallback route may leave out its fixed parts.
    if (copy.is_object()) {
      bj::object& o = copy.get_object();
      if (!o.contains("source")) o["source"] = "DeviceMessages";
      if (!o.contains("name")) o["name"] = "$fallback";
      if (!o.contains("endpointNames")) o["endpointNames"] = bj::array{"events"};
    }
    auto r = read_route(copy, "fallbackRoute");
    if (!r) return r.error();
    if (r->from != source::device_messages) return invalid("fallbackRoute: source must be DeviceMessages");
    if (!endpoint_exists(r->endpoint))
      return invalid(fmt::format("fallbackRoute: endpoint '{}' does not exist", r->endpoint));
    c.fallback = std::move(*r);
  }

  // --- enrichments ---
  if (const bj::value* en = root.if_contains("enrichments"); en && !en->is_null()) {
    if (!en->is_array()) return invalid("enrichments must be an array");
    if (en->get_array().size() > lim.max_enrichments)
      return invalid(fmt::format("{} enrichments: at most {} are allowed", en->get_array().size(), lim.max_enrichments));
    std::unordered_set<std::string> keys;
    std::size_t i = 0;
    for (const bj::value& v : en->get_array()) {
      const std::string where = fmt::format("enrichments[{}]", i++);
      if (!v.is_object()) return invalid(where + " must be an object");
      const bj::object& o = v.get_object();
      enrichment e;
      auto key = string_member(o, "key", where);
      if (!key) return key.error();
      e.key = key->value_or("");
      const std::string at = e.key.empty() ? where : fmt::format("enrichment '{}'", e.key);
      if (!valid_name(e.key)) return invalid(at + ": a key is 1-64 of A-Z a-z 0-9 . _ -");
      if (!keys.insert(text::to_lower(e.key)).second) return invalid(at + ": enrichment keys must be unique");
      auto value = string_member(o, "value", at);
      if (!value) return value.error();
      e.value = value->value_or("");
      if (!valid_enrichment_value(e.value))
        return invalid(fmt::format("{}: value '{}' must be static text, $iothubname, $twin.tags.<path>, "
                                   "$twin.properties.desired.<path> or $twin.properties.reported.<path>",
                                   at, e.value));
      auto eps = names_member(o, "endpointNames", at);
      if (!eps) return eps.error();
      if (eps->empty()) return invalid(at + ": endpointNames must name at least one endpoint");
      for (const std::string& n : *eps) {
        if (!endpoint_exists(n)) return invalid(fmt::format("{}: endpoint '{}' does not exist", at, n));
      }
      e.endpoints = std::move(*eps);
      c.enrichments.push_back(std::move(e));
    }
  }
  return c;
}

result<config> parse(std::string_view json_text, const limits& lim) {
  boost::system::error_code ec;
  bj::value v = bj::parse(json_text, ec);
  if (ec) return invalid(fmt::format("the routing configuration is not valid JSON: {}", ec.message()));
  return parse(v, lim);
}

bj::value to_json(const route& r) {
  bj::object o;
  o["name"] = r.name;
  o["source"] = to_string(r.from);
  o["condition"] = r.condition.empty() ? "true" : r.condition;
  o["endpointNames"] = bj::array{bj::value(r.endpoint)};
  o["isEnabled"] = r.enabled;
  return o;
}

bj::value to_json(const config& c) {
  const auto route_json = [](const route& r) { return to_json(r); };
  bj::object root;
  bj::object endpoints;
  bj::array hubs;
  for (const auto& e : c.event_hubs) hubs.push_back(bj::object{{"name", e.name}});
  endpoints["eventHubs"] = std::move(hubs);
  bj::array storage;
  for (const auto& s : c.storage) {
    bj::object o;
    o["name"] = s.name;
    if (!s.container_name.empty()) o["containerName"] = s.container_name;
    o["fileNameFormat"] = s.file_name_format;
    o["batchFrequencyInSeconds"] = s.batch_frequency_seconds;
    o["maxChunkSizeInBytes"] = s.max_chunk_bytes;
    o["encoding"] = s.encoding == file_encoding::json ? "JSON" : s.encoding == file_encoding::avro ? "avro" : "avroDeflate";
    if (!s.path.empty()) o["path"] = s.path;
    storage.push_back(std::move(o));
  }
  endpoints["storageContainers"] = std::move(storage);
  if (!c.webhooks.empty()) {  // hubd's own type: only when there are some, so the ARM shape stays ARM's
    bj::array hooks;
    for (const auto& w : c.webhooks) {
      bj::object o;
      o["name"] = w.name;
      o["url"] = w.url;
      o["batchSize"] = w.batch_size;
      if (!w.headers.empty()) {
        bj::object h;
        for (const auto& [k, v] : w.headers) h[k] = v;
        o["headers"] = std::move(h);
      }
      if (!w.ca_file.empty()) o["caFile"] = w.ca_file;
      hooks.push_back(std::move(o));
    }
    endpoints["webhooks"] = std::move(hooks);
  }
  root["endpoints"] = std::move(endpoints);
  bj::array routes;
  for (const auto& r : c.routes) routes.push_back(route_json(r));
  root["routes"] = std::move(routes);
  root["fallbackRoute"] = route_json(c.fallback);
  bj::array enrichments;
  for (const auto& e : c.enrichments) {
    bj::array eps;
    for (const auto& n : e.endpoints) eps.emplace_back(n);
    enrichments.push_back(bj::object{{"key", e.key}, {"value", e.value}, {"endpointNames", std::move(eps)}});
  }
  root["enrichments"] = std::move(enrichments);
  return root;
}

}  // namespace hub::routing
