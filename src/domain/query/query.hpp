#pragma once
// IoT Hub queries (protocol/semantics.md §1):
//   SELECT [TOP n] (* | item [AS alias], ...) FROM devices | devices.modules | devices.jobs
//   [WHERE condition] [GROUP BY path, ...]
// parse_query() compiles the text once; an `execution` runs it over the rows of the FROM
// collection, which the caller supplies one JSON document at a time (the REST layer reads twins
// from storage and pages the rows it gets back; paging is not this module's business).
#include "domain/query/expression.hpp"

#include <functional>
#include <unordered_map>
#include <optional>
#include <string>
#include <vector>

namespace hub::query {

enum class collection { devices, modules, jobs };
std::string_view collection_name(collection c) noexcept;  // "devices", "devices.modules", ...

enum class aggregate { none, count, sum, avg, min, max };

struct select_item {
  aggregate agg = aggregate::none;
  expression expr;      // the projected expression, or the aggregate's argument (none for COUNT())
  bool has_expr = false;
  // The output member's name: the alias, else (a path) its last name as the document stores it,
  // else "$1", "$2", ... in order of the unnamed items (as Cosmos DB names them).
  std::optional<std::string> alias;
  std::string fallback_name;   // "$n" for unnamed non-path items
};

struct query {
  collection from = collection::devices;
  std::optional<std::uint64_t> top;
  bool select_all = false;            // SELECT *
  std::vector<select_item> items;     // empty for SELECT *
  std::optional<expression> where;
  std::vector<expression> group_by;   // each a property path

  // Aggregating: an aggregate in the select list or a GROUP BY; then rows are groups.
  bool grouped() const noexcept;
};

// Compiles a query. ArgumentInvalid with IoT Hub's wording and the line:column on a syntax
// error, an unknown collection or function, a query longer than options::max_length, or a
// construct the collection does not support (devices.jobs: SELECT * only, no GROUP BY).
result<query> parse_query(std::string_view text, const options& opts = {});

// One run of a query over a sequence of documents. Feed rows with add() and collect the output
// with take_rows() (as it comes) and finish() (after the last row). Not thread-safe; cheap to
// create. The query must outlive it.
class execution {
 public:
  explicit execution(const query& q);
  ~execution();
  execution(const execution&) = delete;
  execution& operator=(const execution&) = delete;

  // Offers one row of the FROM collection. Returns false once no further row can change the
  // result (TOP n rows produced, in a query without aggregates): the caller may stop reading.
  bool add(const bj::object& doc);
  // Rows produced so far and not yet taken (non-grouped queries produce rows as they go).
  std::vector<bj::value> take_rows();
  // Ends the run: the remaining rows (for a grouped query, all of them: one per group, in order
  // of first appearance, or exactly one row for aggregates without GROUP BY).
  std::vector<bj::value> finish();

  bool done() const noexcept { return done_; }

 private:
  struct group;
  void add_to_group(const bj::object& doc);
  bj::value project(const bj::object& doc) const;

  const query& q_;
  std::vector<bj::value> rows_;
  std::uint64_t produced_ = 0;
  bool done_ = false;
  std::vector<group> groups_;
  std::unordered_map<std::string, std::size_t> group_index_;  // canonical key -> groups_ index
};

// Yields the next row, or nullptr after the last; the object must stay valid until the next call.
using source = std::function<const bj::object*()>;

// Runs `q` over every row `next` yields (stopping early once TOP is satisfied) and returns the
// result rows.
std::vector<bj::value> run(const query& q, const source& next);

}  // namespace hub::query
