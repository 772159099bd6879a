#pragma once
// A routing configuration compiled for the hot path: every condition parsed once, endpoints by
// index (0 is the built-in `events`, then the custom endpoints in configuration order), routes
// grouped by source, enrichments by endpoint.
//
// Immutable once compiled: any number of threads evaluate it at once.
#include "domain/query/expression.hpp"
#include "domain/routing/config.hpp"
#include "domain/routing/resolver.hpp"
#include "domain/telemetry/message.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hub::routing {

// A set of endpoints, bit i = endpoint i (at most 1 + 10 endpoints).
using endpoint_set = std::uint32_t;

struct compiled_route {
  std::string name;
  source from = source::device_messages;
  std::optional<query::expression> condition;  // none: true
  std::uint32_t endpoint = 0;
  bool enabled = true;
};

struct compiled_enrichment {
  enum class kind : std::uint8_t { fixed, hub_name, twin };
  std::string key;
  kind what = kind::fixed;
  std::string value;                    // as configured (the literal stamped when a twin path is missing)
  std::vector<query::segment> twin_path;  // kind::twin: the path below the twin's root
  endpoint_set endpoints = 0;
};

// Why a message went where it went (hubctl route test, the admin API).
struct selection {
  endpoint_set endpoints = 0;
  std::vector<std::string> matched_routes;  // in configuration order
  bool fallback = false;                    // delivered by the fallback route
};

class table {
 public:
  // Compiles every condition. ArgumentInvalid naming the route and the position in its
  // condition: "route 'hot': condition: Line 1:19 ..." (a syntax error, an unknown function).
  static result<std::unique_ptr<const table>> compile(const config& c);

  const config& configuration() const noexcept { return config_; }
  const std::vector<std::string>& endpoint_names() const noexcept { return endpoint_names_; }
  std::optional<std::uint32_t> endpoint_index(std::string_view name) const;

  // The endpoints a message from `s` goes to. Device messages no route takes go where the
  // fallback route says, if it is enabled; an empty set means the message is orphaned.
  selection select(source s, const message_view& v, bool explain = false) const;

  // Whether any enabled route (for device messages: or the fallback) takes messages from `s`.
  bool has_routes(source s) const noexcept { return active_[static_cast<std::size_t>(s)]; }
  // Whether evaluating a message from `s` may read the twin (a condition or an enrichment does).
  bool needs_twin(source s) const noexcept { return needs_twin_[static_cast<std::size_t>(s)]; }
  // Device messages go to `events` as they are: no route, the fallback enabled to `events`
  // without a condition, no enrichment there. The hot path then skips evaluation entirely.
  bool passthrough() const noexcept { return passthrough_; }
  // Endpoints with at least one enrichment.
  endpoint_set enriched() const noexcept { return enriched_; }

  // Stamps the enrichments of `endpoint` on `m` as application properties (replacing one of
  // the same name). A twin path that is missing (or not a primitive) stamps its literal text.
  void enrich(std::uint32_t endpoint, telemetry::message& m, const message_view& v, std::string_view hub_name) const;

 private:
  table() = default;

  config config_;
  std::vector<std::string> endpoint_names_;
  std::array<std::vector<compiled_route>, source_count> routes_;
  compiled_route fallback_;
  std::vector<compiled_enrichment> enrichments_;
  std::array<bool, source_count> active_{};
  std::array<bool, source_count> needs_twin_{};
  bool passthrough_ = false;
  endpoint_set enriched_ = 0;
};

}  // namespace hub::routing
