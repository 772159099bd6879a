#include "base/json.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_stack.hpp>

#include <charconv>
#include <cmath>
#include <system_error>

namespace hub::json {

namespace {

// Boost.JSON 1.81's parser handler (detail::handler) with one change: numbers that are not
// integers are converted by std::from_chars, correctly rounded. Boost 1.81's own conversion is
// off by one unit in the last place for about one double in five as JavaScript writes them
// (-97570.19231092371), so a twin's numbers drifted through each store and reload (found by
// fuzz_twin_patch). And a number past the double range (1e999), which Boost reads as infinity
// and writes as "Infinity" (not JSON, so the twin could no longer be read back), is refused.
struct precise_handler {
  static constexpr std::size_t max_object_size = bj::object::max_size();
  static constexpr std::size_t max_array_size = bj::array::max_size();
  static constexpr std::size_t max_key_size = bj::string::max_size();
  static constexpr std::size_t max_string_size = bj::string::max_size();

  bj::value_stack st;
  std::string number;  // the earlier parts of a number split across buffers
  bool out_of_range = false;

  explicit precise_handler(bj::storage_ptr sp) : st(std::move(sp)) {}

  bool on_document_begin(bj::error_code&) { return true; }
  bool on_document_end(bj::error_code&) { return true; }
  bool on_object_begin(bj::error_code&) { return true; }
  bool on_object_end(std::size_t n, bj::error_code&) {
    st.push_object(n);
    return true;
  }
  bool on_array_begin(bj::error_code&) { return true; }
  bool on_array_end(std::size_t n, bj::error_code&) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(bj::string_view s, std::size_t, bj::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_key(bj::string_view s, std::size_t, bj::error_code&) {
    st.push_key(s);
    return true;
  }
  bool on_string_part(bj::string_view s, std::size_t, bj::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_string(bj::string_view s, std::size_t, bj::error_code&) {
    st.push_string(s);
    return true;
  }
  bool on_number_part(bj::string_view s, bj::error_code&) {
    number.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, bj::string_view, bj::error_code&) {
    number.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, bj::string_view, bj::error_code&) {
    number.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double d, bj::string_view s, bj::error_code& ec) {
    number.append(s.data(), s.size());
    double precise = 0;
    const auto [end, err] = std::from_chars(number.data(), number.data() + number.size(), precise);
    // result_out_of_range: an overflow (Boost's d is infinite, refused below) or an underflow
    // (Boost's zero or subnormal is as good as any); anything else cannot happen for JSON's
    // number syntax, and keeps Boost's reading too.
    if (err != std::errc{} || end != number.data() + number.size()) precise = d;
    number.clear();
    if (!std::isfinite(precise)) {
      out_of_range = true;
      ec = bj::error::exponent_overflow;
      return false;
    }
    st.push_double(precise);
    return true;
  }
  bool on_bool(bool b, bj::error_code&) {
    st.push_bool(b);
    return true;
  }
  bool on_null(bj::error_code&) {
    st.push_null();
    return true;
  }
  bool on_comment_part(bj::string_view, bj::error_code&) { return true; }
  bool on_comment(bj::string_view, bj::error_code&) { return true; }
};

}  // namespace

result<bj::value> parse(std::string_view text, parse_limits limits) {
  if (text.size() > limits.max_size) {
    return make_error(errc::message_too_large, "The JSON body is larger than allowed");
  }
  bj::parse_options opt;
  opt.max_depth = limits.max_depth;
  // What boost::json::parse does (parser::write, then release), over the precise handler.
  bj::basic_parser<precise_handler> p(opt, bj::storage_ptr());
  p.handler().st.reset();
  bj::error_code ec;
  const std::size_t used = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && used < text.size()) ec = bj::error::extra_data;
  if (p.handler().out_of_range) return make_error(errc::iothub_format_error, "Malformed JSON: a number is out of range");
  if (ec) return make_error(errc::iothub_format_error, "Malformed JSON: " + ec.message());
  if (!p.done()) return make_error(errc::iothub_format_error, "Malformed JSON: incomplete");
  return p.handler().st.release();
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
