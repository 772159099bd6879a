// Built-in functions (protocol/semantics.md §1.3 and §2.4). Every function takes evaluated
// arguments and answers undefined when they have the wrong types, like the operators do.
//
// Strings are UTF-8; LENGTH, SUBSTRING and INDEX_OF count characters (code points). LOWER and
// UPPER change ASCII letters only.
#include "base/text.hpp"
#include "domain/query/expression.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace hub::query {

namespace {

bool all_strings(std::span<const value> args) {
  return std::all_of(args.begin(), args.end(), [](const value& v) { return v.type() == value_type::string; });
}

value numeric(double r) { return std::isfinite(r) ? value::number(r) : value{}; }

template <double (*F)(double)>
value math1(std::span<const value> a) {
  if (a[0].type() != value_type::number) return {};
  return numeric(F(a[0].get_number()));
}

double abs_(double x) { return std::fabs(x); }
double exp_(double x) { return std::exp(x); }
double square_(double x) { return x * x; }
double ceil_(double x) { return std::ceil(x); }
double floor_(double x) { return std::floor(x); }
double sign_(double x) { return x > 0 ? 1 : (x < 0 ? -1 : 0); }
double sqrt_(double x) { return std::sqrt(x); }

value power(std::span<const value> a) {
  if (a[0].type() != value_type::number || a[1].type() != value_type::number) return {};
  return numeric(std::pow(a[0].get_number(), a[1].get_number()));
}

template <value_type T>
value is_type(std::span<const value> a) {
  return value::boolean(a[0].type() == T);
}
value is_defined(std::span<const value> a) { return value::boolean(a[0].is_defined()); }
value is_primitive(std::span<const value> a) { return value::boolean(a[0].is_primitive()); }

// "Converts the input string to a number. noop if input is a number; undefined if the string
// does not represent a number."
value as_number(std::span<const value> a) {
  if (a[0].type() == value_type::number) return a[0];
  if (a[0].type() != value_type::string) return {};
  const std::string_view s = text::trim(a[0].get_string());
  if (s.empty()) return {};
  double d = 0;
  const char* first = s.data();
  if (*first == '+') ++first;
  const auto [end, ec] = std::from_chars(first, s.data() + s.size(), d);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(d)) return {};
  return value::number(d);
}

// Byte offset of the n-th character of s (s.size() when past the end).
std::size_t char_offset(std::string_view s, std::size_t n) {
  std::size_t i = 0;
  while (i < s.size() && n > 0) {
    ++i;
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
    --n;
  }
  return i;
}

std::size_t char_count(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

value concat(std::span<const value> a) {
  if (!all_strings(a)) return {};
  std::string out;
  for (const value& v : a) out += v.get_string();
  return value::string(std::move(out));
}

value length(std::span<const value> a) {
  if (a[0].type() != value_type::string) return {};
  return value::number(static_cast<double>(char_count(a[0].get_string())));
}

template <int (*F)(int)>
value map_ascii(std::span<const value> a) {
  if (a[0].type() != value_type::string) return {};
  std::string out(a[0].get_string());
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(F(static_cast<unsigned char>(c)));
  }
  return value::string(std::move(out));
}
int lower_(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
int upper_(int c) { return (c >= 'a' && c <= 'z') ? c - 32 : c; }

// SUBSTRING(s, start[, length]): zero-based; a start or length past the end is clipped.
value substring(std::span<const value> a) {
  if (a[0].type() != value_type::string || a[1].type() != value_type::number) return {};
  if (a.size() == 3 && a[2].type() != value_type::number) return {};
  const std::string_view s = a[0].get_string();
  const double start_d = std::max(0.0, std::trunc(a[1].get_number()));
  const std::size_t total = char_count(s);
  const std::size_t start = start_d >= static_cast<double>(total) ? total : static_cast<std::size_t>(start_d);
  std::size_t count = total - start;
  if (a.size() == 3) {
    const double len = std::max(0.0, std::trunc(a[2].get_number()));
    if (len < static_cast<double>(count)) count = static_cast<std::size_t>(len);
  }
  const std::size_t from = char_offset(s, start);
  const std::size_t to = from + char_offset(s.substr(from), count);
  return value::string(std::string(s.substr(from, to - from)));
}

value index_of(std::span<const value> a) {
  if (!all_strings(a)) return {};
  const std::string_view s = a[0].get_string();
  const std::size_t at = s.find(a[1].get_string());
  if (at == std::string_view::npos) return value::number(-1);
  return value::number(static_cast<double>(char_count(s.substr(0, at))));
}

value starts_with(std::span<const value> a) {
  if (!all_strings(a)) return {};
  return value::boolean(a[0].get_string().starts_with(a[1].get_string()));
}
value ends_with(std::span<const value> a) {
  if (!all_strings(a)) return {};
  return value::boolean(a[0].get_string().ends_with(a[1].get_string()));
}
value contains(std::span<const value> a) {
  if (!all_strings(a)) return {};
  return value::boolean(a[0].get_string().find(a[1].get_string()) != std::string_view::npos);
}

function_table make_builtin() {
  function_table t;
  auto add = [&](std::string name, std::uint32_t min, std::uint32_t max, value (*fn)(std::span<const value>)) {
    t.add(function{std::move(name), min, max, fn});
  };
  // Type checking (twin queries document only IS_DEFINED; routing has them all).
  add("IS_DEFINED", 1, 1, is_defined);
  add("IS_ARRAY", 1, 1, is_type<value_type::array>);
  add("IS_BOOL", 1, 1, is_type<value_type::boolean>);
  add("IS_NULL", 1, 1, is_type<value_type::null>);
  add("IS_NUMBER", 1, 1, is_type<value_type::number>);
  add("IS_OBJECT", 1, 1, is_type<value_type::object>);
  add("IS_STRING", 1, 1, is_type<value_type::string>);
  add("IS_PRIMITIVE", 1, 1, is_primitive);
  add("AS_NUMBER", 1, 1, as_number);
  // Math.
  add("ABS", 1, 1, math1<abs_>);
  add("EXP", 1, 1, math1<exp_>);
  add("POWER", 2, 2, power);
  add("SQUARE", 1, 1, math1<square_>);
  add("CEILING", 1, 1, math1<ceil_>);
  add("FLOOR", 1, 1, math1<floor_>);
  add("SIGN", 1, 1, math1<sign_>);
  add("SQRT", 1, 1, math1<sqrt_>);
  // Strings. The docs spelled STARTS_WITH / ENDS_WITH until 2022 and STARTSWITH / ENDSWITH
  // since; the hub accepts the latter, edgeHub the former: both work here.
  add("CONCAT", 2, function::variadic, concat);
  add("LENGTH", 1, 1, length);
  add("LOWER", 1, 1, map_ascii<lower_>);
  add("UPPER", 1, 1, map_ascii<upper_>);
  add("SUBSTRING", 2, 3, substring);
  add("INDEX_OF", 2, 2, index_of);
  add("STARTSWITH", 2, 2, starts_with);
  add("STARTS_WITH", 2, 2, starts_with);
  add("ENDSWITH", 2, 2, ends_with);
  add("ENDS_WITH", 2, 2, ends_with);
  add("CONTAINS", 2, 2, contains);
  return t;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(upper_(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

void function_table::add(function f) {
  std::string key = upper(f.name);
  by_name_.insert_or_assign(std::move(key), std::move(f));
}

const function* function_table::find(std::string_view name) const {
  auto it = by_name_.find(upper(name));
  return it == by_name_.end() ? nullptr : &it->second;
}

const function_table& function_table::builtin() {
  static const function_table table = make_builtin();
  return table;
}

}  // namespace hub::query
