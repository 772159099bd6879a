#pragma once
// JSON helpers around Boost.JSON: bounded parsing of untrusted input and typed field access.
#include "base/error.hpp"

#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace hub::json {

namespace bj = boost::json;

struct parse_limits {
  std::size_t max_depth = 32;
  std::size_t max_size = 4 * 1024 * 1024;
};

// Parses untrusted text; IotHubFormatError (400006) on malformed or over-limit input.
result<bj::value> parse(std::string_view text, parse_limits limits = {});

std::string serialize(const bj::value& v);
// Indented text, `step` spaces per level (Boost.JSON 1.81 writes only compact text).
std::string pretty(const bj::value& v, int step = 2);

// Field access that never throws: nullptr / nullopt when absent or of another type.
const bj::value* find(const bj::object& o, std::string_view key);
std::optional<std::string> get_string(const bj::object& o, std::string_view key);
std::optional<bool> get_bool(const bj::object& o, std::string_view key);
const bj::object* get_object(const bj::object& o, std::string_view key);

}  // namespace hub::json
