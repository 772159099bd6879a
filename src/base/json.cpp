#include "base/json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace hub::json {

result<bj::value> parse(std::string_view text, parse_limits limits) {
  if (text.size() > limits.max_size) {
    return make_error(errc::message_too_large, "The JSON body is larger than allowed");
  }
  bj::parse_options opt;
  opt.max_depth = limits.max_depth;
  boost::system::error_code ec;
  bj::value v = bj::parse(text, ec, {}, opt);
  if (ec) return make_error(errc::iothub_format_error, "Malformed JSON: " + ec.message());
  return v;
}

std::string serialize(const bj::value& v) { return bj::serialize(v); }

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
