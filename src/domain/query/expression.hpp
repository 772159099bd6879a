#pragma once
// Compiled expressions of IoT Hub's query language, evaluated against a resolver.
//
// An expression is parsed once (a WHERE clause, a select item, a route condition) into a flat
// node array and then evaluated many times. It never reads documents itself: every property path
// goes to a `resolver`, so the same evaluator serves twin queries (the resolver walks a twin's
// JSON) and message routing (the resolver answers `$connectionDeviceId`, application properties
// and `$body.x` from the message without building a JSON document per message).
//
// Thread safety: a compiled expression is immutable; any number of threads may evaluate it at
// once, each with its own resolver.
#include "base/error.hpp"
#include "domain/query/value.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hub::query {

// One step of a property path: a name (`tags`, `[[group]]`, `$body`) or an array index (`[0]`).
struct segment {
  std::string name;
  std::optional<std::uint32_t> index;  // set for `[n]`; name is then empty

  bool operator==(const segment&) const = default;
};

// A property path as written, e.g. `properties.reported.telemetryConfig.status`,
// `tags.[[group]].name`, `$body.readings[0].value`, `$connectionDeviceId`.
struct path {
  std::vector<segment> segments;
  // Set at compile time by options::bind (routing: which message part the path reads); -1 when
  // the caller did not classify it. The evaluator passes it through untouched.
  std::int32_t binding = -1;

  // The path as text, names joined by '.', indices as [n] (for messages and default names).
  std::string text() const;
  // Same path: the first name compared case-insensitively (root attributes are), the rest exactly.
  bool same_as(const path& other) const noexcept;
};

// Answers property paths for one evaluation. Implementations decide what a root name means:
// a twin's root attribute, a message's application property, `$body`, `$twin`, ...
class resolver {
 public:
  virtual ~resolver() = default;
  virtual value resolve(const path& p) const = 0;
};

// Walks `segs` from `root`. The first name is matched case-insensitively when `root_case_insensitive`
// (an exact match wins over a case-insensitive one), later names exactly; an index applies to an
// array. nullptr when any step is missing. `last_key`, when given, receives the stored name of
// the last member found (for projection names: `SELECT DeviceId` yields "deviceId").
const bj::value* find(const bj::value& root, std::span<const segment> segs, bool root_case_insensitive,
                      std::string_view* last_key = nullptr);
const bj::value* find(const bj::object& root, std::span<const segment> segs, bool root_case_insensitive,
                      std::string_view* last_key = nullptr);

// The resolver of twin queries: paths are read from one JSON document (a twin, a module twin, a
// job row), root attributes case-insensitively.
class document_resolver final : public resolver {
 public:
  explicit document_resolver(const bj::object& doc) : doc_(doc) {}
  value resolve(const path& p) const override;

 private:
  const bj::object& doc_;
};

// A built-in function: fixed arity range, arguments evaluated first (so undefined reaches it).
struct function {
  std::string name;        // canonical spelling, e.g. "IS_DEFINED"
  std::uint32_t min_args = 0;
  std::uint32_t max_args = 0;  // function::variadic for "any number"
  value (*call)(std::span<const value> args) = nullptr;

  static constexpr std::uint32_t variadic = 0xffffffff;
};

// Functions by case-insensitive name. builtin() has IoT Hub's type-checking, math and string
// functions (both STARTS_WITH and STARTSWITH spellings); routing copies it and adds its own.
class function_table {
 public:
  void add(function f);
  const function* find(std::string_view name) const;
  static const function_table& builtin();

 private:
  std::unordered_map<std::string, function> by_name_;  // key: upper-case name
};

struct options {
  const function_table* functions = &function_table::builtin();
  // Called once per property path at compile time; its result becomes path::binding. An error
  // (say, a path routing cannot serve) fails compilation at the path's position.
  std::function<result<std::int32_t>(const path&)> bind;
  std::size_t max_length = 8192;  // IoT Hub's limit on a query's length, in characters
};

enum class node_kind : std::uint8_t {
  constant,  // index: constants_
  property,  // index: paths_
  array,     // first/count: items in lists_
  call,      // fn; first/count: arguments in lists_
  negate,    // lhs
  logical_not,  // lhs
  binary,    // op; lhs, rhs
  all_of,    // AND of lists_[first .. first+count)
  any_of,    // OR of the same
  in,        // lhs IN rhs
  not_in,    // lhs NIN rhs
};

enum class binary_op : std::uint8_t { eq, ne, lt, le, gt, ge, add, sub, mul, div, mod };

struct node {
  node_kind kind = node_kind::constant;
  binary_op op = binary_op::eq;
  std::uint32_t offset = 0;  // where it starts in the query text
  std::uint32_t lhs = 0;
  std::uint32_t rhs = 0;
  std::uint32_t first = 0;
  std::uint32_t count = 0;
  std::uint32_t index = 0;
  const function* fn = nullptr;
};

class expression {
 public:
  value evaluate(const resolver& r) const;
  // The WHERE / route rule: true only when the expression evaluates to the boolean true.
  bool matches(const resolver& r) const { return evaluate(r).is_true(); }

  // When the whole expression is a property path (a projection, a GROUP BY key), that path.
  const path* as_path() const noexcept;
  const std::vector<path>& paths() const noexcept { return paths_; }
  // The expression's text as written (trimmed), for default names and messages.
  const std::string& text() const noexcept { return text_; }

 private:
  friend class parser;
  value eval(std::uint32_t i, const resolver& r) const;

  std::vector<node> nodes_;
  std::vector<std::uint32_t> lists_;
  std::vector<bj::value> constants_;
  std::vector<path> paths_;
  std::uint32_t root_ = 0;
  std::string text_;
};

// Compiles a bare condition (a route condition, a job's queryCondition). ArgumentInvalid with
// the position on a syntax error, an unknown function or a wrong argument count.
result<expression> parse_condition(std::string_view text, const options& opts = {});

}  // namespace hub::query
