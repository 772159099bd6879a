// Twin queries (POST /devices/query): a query compiled by domain/query, run over the twins a
// scan of twins::service yields, and paged with IoT Hub's continuation tokens.
//
// Paging. A query that neither aggregates nor groups streams: a page scans on from the position
// after the last row of the previous page until it holds page_size rows, then looks for one more
// match so that the last page carries no token (an empty header, or one on the last page, would
// make the SDK ask again). The token is that position (plus the rows produced so far, for TOP),
// so nothing is kept between requests and a page costs what it reads. An aggregating query
// (GROUP BY, COUNT() ...) needs every row before its first: each request computes the whole
// result again and pages it by offset. Tokens carry a hash of the query text: a token is good for
// the query that made it only.
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "domain/query/query.hpp"
#include "domain/twins/service.hpp"

#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace hub::twins {

namespace {

constexpr std::size_t max_page_size = 100;  // IoT Hub's cap on a query page

std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// What a continuation token holds: the query's hash, then either the scan position of the last
// row sent and the rows sent so far (streaming), or the offset of the next row (aggregates).
struct token {
  std::string position;
  std::uint64_t produced = 0;
  std::uint64_t offset = 0;
};

std::string encode_token(std::uint64_t hash, const token& t, bool aggregated) {
  bj::object o;
  o["h"] = fmt::format("{:016x}", hash);
  if (aggregated) {
    o["o"] = t.offset;
  } else {
    o["p"] = t.position;
    o["n"] = t.produced;
  }
  return crypto::base64_encode(json::serialize(o));
}

error bad_token() {
  return make_error(errc::argument_invalid, "The continuation token is not valid for this query");
}

std::optional<std::uint64_t> unsigned_of(const bj::object& o, std::string_view key) {
  const bj::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_uint64()) return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
  return std::nullopt;
}

result<token> decode_token(std::string_view text, std::uint64_t hash, bool aggregated) {
  const auto bytes = crypto::base64_decode(text);
  if (!bytes) return bad_token();
  auto v = json::parse(*bytes, {.max_depth = 2, .max_size = 4096});
  const bj::object* o = v ? v->if_object() : nullptr;
  if (o == nullptr || json::get_string(*o, "h") != fmt::format("{:016x}", hash)) return bad_token();
  token t;
  if (aggregated) {
    const auto offset = unsigned_of(*o, "o");
    if (!offset) return bad_token();
    t.offset = *offset;
    return t;
  }
  auto position = json::get_string(*o, "p");
  const auto produced = unsigned_of(*o, "n");
  if (!position || !produced) return bad_token();
  t.position = std::move(*position);
  t.produced = *produced;
  return t;
}

}  // namespace

std::string_view to_string(item_type t) noexcept {
  switch (t) {
    case item_type::twin: return "twin";
    case item_type::device_job: return "deviceJob";
    case item_type::job_response: return "jobResponse";
    case item_type::raw: return "raw";
  }
  return "raw";
}

result<query_page> service::query(const query_request& req) {
  if (req.page_size == 0) return make_error(errc::argument_invalid, "The page size must be at least 1");
  const std::size_t page_size = std::min(req.page_size, max_page_size);
  auto parsed = hub::query::parse_query(req.text);
  if (!parsed) return parsed.error();
  const hub::query::query& q = *parsed;
  const std::uint64_t hash = fnv1a(req.text);
  const bool aggregated = q.grouped();
  token from;
  if (!req.continuation.empty()) {
    auto t = decode_token(req.continuation, hash, aggregated);
    if (!t) return t.error();
    from = std::move(*t);
  }

  query_page out;
  if (q.from == hub::query::collection::jobs) {
    out.type = item_type::device_job;  // no jobs yet: nothing to show
    return out;
  }
  out.type = q.select_all ? item_type::twin : item_type::raw;
  const scope s = q.from == hub::query::collection::modules ? scope::modules : scope::devices;

  if (aggregated) {
    hub::query::execution ex(q);
    auto scanned = scan(s, {}, [&](std::string_view, bj::object& doc) { return ex.add(doc); });
    if (!scanned) return scanned.error();
    auto rows = ex.finish();
    const std::size_t begin = static_cast<std::size_t>(std::min<std::uint64_t>(from.offset, rows.size()));
    const std::size_t end = std::min(begin + page_size, rows.size());
    out.items.assign(std::make_move_iterator(rows.begin() + static_cast<std::ptrdiff_t>(begin)),
                     std::make_move_iterator(rows.begin() + static_cast<std::ptrdiff_t>(end)));
    if (end < rows.size()) {
      token next;
      next.offset = end;
      out.continuation = encode_token(hash, next, true);
    }
    return out;
  }

  // Streaming. TOP counts the rows of every page: the token carries how many were sent.
  const std::uint64_t limit = q.top.value_or(std::numeric_limits<std::uint64_t>::max());
  if (from.produced >= limit) return out;
  std::uint64_t produced = from.produced;
  std::string last;
  bool more = false;
  hub::query::execution ex(q);
  auto scanned = scan(s, from.position, [&](std::string_view position, bj::object& doc) {
    std::optional<bj::value> row;
    if (q.select_all) {
      // The document itself is the row: no copy.
      if (q.where && !q.where->matches(hub::query::document_resolver(doc))) return true;
      row.emplace(std::move(doc));
    } else {
      ex.add(doc);
      auto rows = ex.take_rows();
      if (rows.empty()) return true;
      row.emplace(std::move(rows.front()));
    }
    if (out.items.size() == page_size) {
      more = true;  // a row for the next page exists
      return false;
    }
    out.items.push_back(std::move(*row));
    last = position;
    return ++produced < limit;
  });
  if (!scanned) return scanned.error();
  if (more) {
    token next;
    next.position = std::move(last);
    next.produced = produced;
    out.continuation = encode_token(hash, next, false);
  }
  return out;
}

}  // namespace hub::twins
