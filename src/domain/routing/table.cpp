#include "domain/routing/table.hpp"

#include "base/json.hpp"
#include "base/text.hpp"

#include <fmt/format.h>

#include <span>

namespace hub::routing {

namespace {

constexpr std::string_view query_error_prefix = "SQL query parse failed due to following errors: ";

result<std::optional<query::expression>> compile_condition(const route& r) {
  const std::string_view text = text::trim(r.condition);
  if (text.empty()) return std::optional<query::expression>();
  query::options opts;
  opts.bind = bind;
  auto e = query::parse_condition(r.condition, opts);
  if (!e) {
    std::string detail = e.error().message;
    if (detail.starts_with(query_error_prefix)) detail.erase(0, query_error_prefix.size());
    return make_error(errc::argument_invalid, fmt::format("route '{}': condition: {}", r.name, detail));
  }
  return std::optional<query::expression>(std::move(*e));
}

// "$twin.properties.desired.a.b" -> {"properties", "desired", "a", "b"}.
std::vector<query::segment> twin_path_of(std::string_view value) {
  std::vector<query::segment> out;
  std::size_t i = 0;
  for (std::string_view part : text::split(value, '.')) {
    if (i++ == 0) continue;  // $twin
    out.push_back(query::segment{std::string(part), std::nullopt});
  }
  return out;
}

std::optional<std::string> primitive_text(const bj::value& v) {
  switch (v.kind()) {
    case bj::kind::string: return std::string(v.get_string());
    case bj::kind::bool_: return std::string(v.get_bool() ? "true" : "false");
    case bj::kind::int64:
    case bj::kind::uint64:
    case bj::kind::double_: return json::serialize(v);
    default: return std::nullopt;  // null, objects, arrays: IoT Hub enriches with primitives only
  }
}

}  // namespace

result<std::unique_ptr<const table>> table::compile(const config& c) {
  std::unique_ptr<table> t(new table());
  t->config_ = c;
  t->endpoint_names_.emplace_back(builtin_endpoint);
  for (std::string& n : custom_endpoint_names(c)) t->endpoint_names_.push_back(std::move(n));

  const auto index_of = [&](const std::string& name) -> result<std::uint32_t> {
    auto i = t->endpoint_index(name);
    if (!i) return make_error(errc::argument_invalid, fmt::format("endpoint '{}' does not exist", name));
    return *i;
  };
  for (const route& r : c.routes) {
    auto cond = compile_condition(r);
    if (!cond) return cond.error();
    auto ep = index_of(r.endpoint);
    if (!ep) return make_error(errc::argument_invalid, fmt::format("route '{}': {}", r.name, ep.error().message));
    const std::size_t s = static_cast<std::size_t>(r.from);
    if (r.enabled) {
      t->active_[s] = true;
      if (*cond && reads_twin(**cond)) t->needs_twin_[s] = true;
    }
    t->routes_[s].push_back(compiled_route{r.name, r.from, std::move(*cond), *ep, r.enabled});
  }
  {
    auto cond = compile_condition(c.fallback);
    if (!cond) return cond.error();
    auto ep = index_of(c.fallback.endpoint);
    if (!ep) return make_error(errc::argument_invalid, fmt::format("fallbackRoute: {}", ep.error().message));
    // "true" is the fallback's usual condition: keep the hot path free of it.
    if (*cond && text::iequals(text::trim(c.fallback.condition), "true")) cond->reset();
    if (c.fallback.enabled) {
      t->active_[0] = true;
      if (*cond && reads_twin(**cond)) t->needs_twin_[0] = true;
    }
    t->fallback_ = compiled_route{c.fallback.name, source::device_messages, std::move(*cond), *ep, c.fallback.enabled};
  }
  for (const enrichment& e : c.enrichments) {
    compiled_enrichment ce;
    ce.key = e.key;
    ce.value = e.value;
    if (text::iequals(e.value, "$iothubname")) {
      ce.what = compiled_enrichment::kind::hub_name;
    } else if (text::istarts_with(e.value, "$twin.")) {
      ce.what = compiled_enrichment::kind::twin;
      ce.twin_path = twin_path_of(e.value);
    }
    for (const std::string& n : e.endpoints) {
      auto ep = index_of(n);
      if (!ep) return make_error(errc::argument_invalid, fmt::format("enrichment '{}': {}", e.key, ep.error().message));
      ce.endpoints |= endpoint_set{1} << *ep;
    }
    t->enriched_ |= ce.endpoints;
    if (ce.what == compiled_enrichment::kind::twin) {
      // Any source may reach an enriched endpoint.
      for (bool& n : t->needs_twin_) n = true;
    }
    t->enrichments_.push_back(std::move(ce));
  }
  const bool no_device_routes = t->routes_[0].empty() ||
                                std::none_of(t->routes_[0].begin(), t->routes_[0].end(),
                                             [](const compiled_route& r) { return r.enabled; });
  t->passthrough_ = no_device_routes && t->fallback_.enabled && !t->fallback_.condition && t->fallback_.endpoint == 0 &&
                    (t->enriched_ & 1u) == 0;
  return std::unique_ptr<const table>(std::move(t));
}

std::optional<std::uint32_t> table::endpoint_index(std::string_view name) const {
  for (std::size_t i = 0; i < endpoint_names_.size(); ++i) {
    if (text::iequals(endpoint_names_[i], name)) return static_cast<std::uint32_t>(i);
  }
  return std::nullopt;
}

selection table::select(source s, const message_view& v, bool explain) const {
  selection out;
  for (const compiled_route& r : routes_[static_cast<std::size_t>(s)]) {
    if (!r.enabled) continue;
    if (r.condition && !r.condition->matches(v)) continue;
    out.endpoints |= endpoint_set{1} << r.endpoint;
    if (explain) out.matched_routes.push_back(r.name);
  }
  if (out.endpoints == 0 && s == source::device_messages && fallback_.enabled &&
      (!fallback_.condition || fallback_.condition->matches(v))) {
    out.endpoints = endpoint_set{1} << fallback_.endpoint;
    out.fallback = true;
  }
  return out;
}

void table::enrich(std::uint32_t endpoint, telemetry::message& m, const message_view& v,
                   std::string_view hub_name) const {
  for (const compiled_enrichment& e : enrichments_) {
    if ((e.endpoints & (endpoint_set{1} << endpoint)) == 0) continue;
    std::string value;
    switch (e.what) {
      case compiled_enrichment::kind::fixed: value = e.value; break;
      case compiled_enrichment::kind::hub_name: value = std::string(hub_name); break;
      case compiled_enrichment::kind::twin: {
        value = e.value;  // what IoT Hub stamps when the path is missing
        if (const bj::object* twin = v.twin()) {
          if (const bj::value* found = query::find(*twin, std::span(e.twin_path), true)) {
            if (auto text = primitive_text(*found)) value = std::move(*text);
          }
        }
        break;
      }
    }
    bool replaced = false;
    for (auto& [k, val] : m.properties) {
      if (text::iequals(k, e.key)) {
        val = std::move(value);
        replaced = true;
        break;
      }
    }
    if (!replaced) m.properties.emplace_back(e.key, std::move(value));
  }
}

}  // namespace hub::routing
