#include "base/json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cmath>

namespace hub::json {

namespace {
// Boost.JSON reads a number past the double range (1e999) as infinity, and writes infinity as
// "Infinity", which is not JSON: a twin holding one would be stored and served as text nobody,
// hubd included, can parse again (found by fuzz_twin_patch).
bool finite_numbers(const bj::value& v) {
  switch (v.kind()) {
    case bj::kind::double_: return std::isfinite(v.get_double());
    case bj::kind::array:
      for (const auto& item : v.get_array())
        if (!finite_numbers(item)) return false;
      return true;
    case bj::kind::object:
      for (const auto& member : v.get_object())
        if (!finite_numbers(member.value())) return false;
      return true;
    default: return true;
  }
}
}  // namespace

result<bj::value> parse(std::string_view text, parse_limits limits) {
  if (text.size() > limits.max_size) {
    return make_error(errc::message_too_large, "The JSON body is larger than allowed");
  }
  bj::parse_options opt;
  opt.max_depth = limits.max_depth;
  boost::system::error_code ec;
  bj::value v = bj::parse(text, ec, {}, opt);
  if (ec) return make_error(errc::iothub_format_error, "Malformed JSON: " + ec.message());
  if (!finite_numbers(v)) return make_error(errc::iothub_format_error, "Malformed JSON: a number is out of range");
  return v;
}

std::string serialize(const bj::value& v) { return bj::serialize(v); }

namespace {
void pretty_into(std::string& out, const bj::value& v, int indent, int step) {
  const std::string pad(static_cast<std::size_t>(indent + step), ' ');
  const std::string close(static_cast<std::size_t>(indent), ' ');
  if (const auto* o = v.if_object(); o != nullptr && !o->empty()) {
    out += "{\n";
    bool first = true;
    for (const auto& kv : *o) {
      if (!first) out += ",\n";
      first = false;
      out += pad + bj::serialize(bj::string(kv.key())) + ": ";
      pretty_into(out, kv.value(), indent + step, step);
    }
    out += "\n" + close + "}";
    return;
  }
  if (const auto* a = v.if_array(); a != nullptr && !a->empty()) {
    out += "[\n";
    for (std::size_t i = 0; i < a->size(); ++i) {
      if (i) out += ",\n";
      out += pad;
      pretty_into(out, (*a)[i], indent + step, step);
    }
    out += "\n" + close + "]";
    return;
  }
  out += bj::serialize(v);  // scalars, {} and []
}
}  // namespace

std::string pretty(const bj::value& v, int step) {
  std::string out;
  pretty_into(out, v, 0, step);
  return out;
}

const bj::value* find(const bj::object& o, std::string_view key) { return o.if_contains(key); }

std::optional<std::string> get_string(const bj::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->get_string());
}

std::optional<bool> get_bool(const bj::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_bool()) return std::nullopt;
  return v->get_bool();
}

const bj::object* get_object(const bj::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_object() : nullptr;
}

}  // namespace hub::json
