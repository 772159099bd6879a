// libFuzzer target for the query language: arbitrary text must never crash, hang, overflow the
// stack or read out of bounds, whether it is parsed as a query or as a route condition. A failed
// parse is ArgumentInvalid; a query that compiles is run over a few twins and every row it
// returns must serialise to JSON that parses again. A condition that compiles must agree with itself: NOT (c) is the
// negation of c (undefined staying undefined), and a COUNT() query with WHERE c counts exactly
// the documents c matches.
#include "base/json.hpp"
#include "domain/query/query.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

const std::vector<boost::json::value>& rows() {
  static const std::vector<boost::json::value> docs = [] {
    std::vector<boost::json::value> out;
    for (const char* text : {
             R"({"deviceId":"d1","status":"enabled","version":3,"tags":{"location":{"region":"US"},"group":{"name":"n"},"list":[1,"two",{"three":3}],"nothing":null},"properties":{"desired":{"x":1,"$version":2},"reported":{"temperature":21.5,"telemetryConfig":{"status":"Success"},"$version":4}}})",
             R"({"deviceId":"d2","status":"disabled","version":1.5,"tags":{"location":{"region":"EU"},"flag":true},"properties":{"reported":{"temperature":"hot"}}})",
             R"({"deviceId":"d3","jobId":"j1","jobType":"scheduleUpdateTwin","status":"completed"})",
             R"({})",
         }) {
      out.push_back(*hub::json::parse(text));
    }
    return out;
  }();
  return docs;
}

void check_error(const hub::error& e) {
  if (e.code != hub::errc::argument_invalid) std::abort();
  if (e.message.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto& docs = rows();

  if (auto q = hub::query::parse_query(text)) {
    std::size_t i = 0;
    const auto out = hub::query::run(*q, [&]() -> const boost::json::object* {
      return i < docs.size() ? &docs[i++].get_object() : nullptr;
    });
    // Every row is JSON that reads back (no infinities, valid UTF-8).
    for (const auto& row : out) {
      if (!hub::json::parse(hub::json::serialize(row), hub::json::parse_limits{256, 64 * 1024 * 1024})) std::abort();
    }
  } else {
    check_error(q.error());
  }

  auto e = hub::query::parse_condition(text);
  if (!e) {
    check_error(e.error());
    return 0;
  }
  const std::string wrapped(text);
  auto negated = hub::query::parse_condition("NOT (" + wrapped + ")");
  auto counting = hub::query::parse_query("SELECT COUNT() AS n FROM devices WHERE (" + wrapped + ")");
  std::int64_t matches = 0;
  for (const auto& d : docs) {
    const hub::query::document_resolver r(d.get_object());
    const auto v = e->evaluate(r);
    if (v.is_defined() && !hub::json::parse(hub::json::serialize(v.to_json()), hub::json::parse_limits{256, 64 * 1024 * 1024}))
      std::abort();
    if (v.is_true()) ++matches;
    if (negated) {  // absent when the wrapping passes a limit (length, nesting)
      const auto n = negated->evaluate(r);
      const bool consistent = v.type() == hub::query::value_type::boolean
                                  ? n.type() == hub::query::value_type::boolean && n.get_bool() != v.get_bool()
                                  : !n.is_defined();
      if (!consistent) std::abort();
    }
  }
  if (counting) {
    std::size_t i = 0;
    const auto out = hub::query::run(*counting, [&]() -> const boost::json::object* {
      return i < docs.size() ? &docs[i++].get_object() : nullptr;
    });
    if (out.size() != 1 || out[0].at("n").as_int64() != matches) std::abort();
  }
  return 0;
}
