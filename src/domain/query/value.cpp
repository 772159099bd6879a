#include "domain/query/value.hpp"

#include <cmath>

namespace hub::query {

value value::null() {
  value v;
  v.type_ = value_type::null;
  return v;
}

value value::boolean(bool b) {
  value v;
  v.type_ = value_type::boolean;
  v.b_ = b;
  return v;
}

value value::number(double d) {
  value v;
  v.type_ = value_type::number;
  v.n_ = d;
  return v;
}

value value::string(std::string s) {
  value v;
  v.type_ = value_type::string;
  v.owned_ = true;
  v.text_ = std::move(s);
  return v;
}

value value::string_ref(std::string_view s) {
  value v;
  v.type_ = value_type::string;
  v.view_ = s;
  return v;
}

value value::json(const bj::value& j) {
  value v;
  v.json_ = &j;
  switch (j.kind()) {
    case bj::kind::null:
      v.type_ = value_type::null;
      break;
    case bj::kind::bool_:
      v.type_ = value_type::boolean;
      v.b_ = j.get_bool();
      break;
    case bj::kind::int64:
    case bj::kind::uint64:
    case bj::kind::double_:
      v.type_ = value_type::number;
      v.n_ = to_double(j);
      break;
    case bj::kind::string:
      v.type_ = value_type::string;
      v.view_ = std::string_view(j.get_string());
      break;
    case bj::kind::array:
      v.type_ = value_type::array;
      break;
    case bj::kind::object:
      v.type_ = value_type::object;
      break;
  }
  return v;
}

value value::owned_json(bj::value j) {
  auto holder = std::make_shared<const bj::value>(std::move(j));
  value v = json(*holder);
  v.holder_ = std::move(holder);
  return v;
}

bool value::is_primitive() const noexcept {
  switch (type_) {
    case value_type::null:
    case value_type::boolean:
    case value_type::number:
    case value_type::string:
      return true;
    case value_type::undefined:
    case value_type::array:
    case value_type::object:
      return false;
  }
  return false;
}

std::string_view value::get_string() const noexcept { return owned_ ? std::string_view(text_) : view_; }

bj::value value::to_json() const {
  if (json_ != nullptr) return *json_;
  switch (type_) {
    case value_type::undefined:
    case value_type::null:
      return nullptr;
    case value_type::boolean:
      return b_;
    case value_type::number:
      return number_to_json(n_);
    case value_type::string:
      return bj::string(get_string());
    case value_type::array:   // only ever borrowed (json_ set)
    case value_type::object:
      return nullptr;
  }
  return nullptr;
}

value equals(const value& a, const value& b) {
  if (a.type() != b.type()) return {};
  switch (a.type()) {
    case value_type::null:
      return value::boolean(true);
    case value_type::boolean:
      return value::boolean(a.get_bool() == b.get_bool());
    case value_type::number:
      return value::boolean(a.get_number() == b.get_number());
    case value_type::string:
      return value::boolean(a.get_string() == b.get_string());
    case value_type::undefined:
    case value_type::array:
    case value_type::object:
      return {};
  }
  return {};
}

std::optional<int> compare(const value& a, const value& b) noexcept {
  if (a.type() != b.type()) return std::nullopt;
  switch (a.type()) {
    case value_type::boolean:
      return static_cast<int>(a.get_bool()) - static_cast<int>(b.get_bool());
    case value_type::number: {
      const double x = a.get_number();
      const double y = b.get_number();
      return x < y ? -1 : (y < x ? 1 : 0);
    }
    case value_type::string: {
      const int c = a.get_string().compare(b.get_string());
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    case value_type::undefined:
    case value_type::null:
    case value_type::array:
    case value_type::object:
      return std::nullopt;
  }
  return std::nullopt;
}

double to_double(const bj::value& v) noexcept {
  switch (v.kind()) {
    case bj::kind::int64:
      return static_cast<double>(v.get_int64());
    case bj::kind::uint64:
      return static_cast<double>(v.get_uint64());
    case bj::kind::double_:
      return v.get_double();
    default:
      return 0;
  }
}

bj::value number_to_json(double d) {
  constexpr double limit = 9007199254740992.0;  // 2^53: every integer up to it is exact
  if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= limit) {
    return static_cast<std::int64_t>(d);
  }
  return d;
}

}  // namespace hub::query
