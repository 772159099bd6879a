#pragma once
// What an expression evaluates to: a JSON value or `undefined` (a missing property, a comparison
// between different types, arithmetic on a string, ...). IoT Hub's query language follows
// Cosmos DB SQL here: undefined is not null, it propagates, and a condition holds only when it is
// the boolean true.
//
// A value usually borrows: a property read from a document points into that document, a literal
// into the compiled expression. Only computed strings (CONCAT, LOWER, ...) own their text. So a
// value must not outlive the document it was resolved from nor the expression that made it; the
// evaluator only keeps values for the duration of one evaluate() call.
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace hub::query {

namespace bj = boost::json;

enum class value_type : std::uint8_t { undefined, null, boolean, number, string, array, object };

class value {
 public:
  value() = default;  // undefined

  static value null();
  static value boolean(bool b);
  static value number(double d);
  // A string the value owns (computed by a function).
  static value string(std::string s);
  // A string the caller keeps alive while the value is in use (a message property, say).
  static value string_ref(std::string_view s);
  // Borrows `v` (any kind); numbers keep their JSON form, so 300 projects as 300, not 3E2.
  static value json(const bj::value& v);
  // Owns a JSON value built during evaluation (an array expression with non-constant items).
  static value owned_json(bj::value v);

  value_type type() const noexcept { return type_; }
  bool is_defined() const noexcept { return type_ != value_type::undefined; }
  // A primitive in IoT Hub's sense: null, boolean, number or string.
  bool is_primitive() const noexcept;
  // True only for the boolean true: the WHERE rule.
  bool is_true() const noexcept { return type_ == value_type::boolean && b_; }

  // Accessors for the matching type (undefined behaviour otherwise; check type() first).
  bool get_bool() const noexcept { return b_; }
  double get_number() const noexcept { return n_; }
  std::string_view get_string() const noexcept;
  const bj::array& get_array() const noexcept { return json_->get_array(); }
  const bj::object& get_object() const noexcept { return json_->get_object(); }

  // The JSON form (copied). Integral numbers within ±2^53 become integers. undefined -> null;
  // callers omit undefined values instead (a projection drops the field).
  bj::value to_json() const;

 private:
  value_type type_ = value_type::undefined;
  bool b_ = false;
  bool owned_ = false;
  double n_ = 0;
  std::string_view view_;
  std::string text_;
  const bj::value* json_ = nullptr;  // set when borrowed from JSON (any type)
  std::shared_ptr<const bj::value> holder_;  // keeps an owned_json() alive; json_ points into it
};

// `a = b` under IoT Hub's rules: true/false for two primitives of the same type (null = null is
// true); undefined for anything else (different types, objects, arrays, undefined).
value equals(const value& a, const value& b);

// Three-way order of two primitives of the same type, for < <= > >=: numbers numerically,
// strings ordinally (UTF-8 bytes, i.e. code points), false < true. nullopt when the pair is not
// ordered (different types, null, objects, arrays, undefined): the comparison is undefined.
std::optional<int> compare(const value& a, const value& b) noexcept;

// JSON number -> double (int64, uint64 and double kinds).
double to_double(const bj::value& v) noexcept;
// A double as JSON: an integer when it is integral and within ±2^53, a double otherwise.
bj::value number_to_json(double d);

}  // namespace hub::query
