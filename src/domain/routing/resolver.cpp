#include "domain/routing/resolver.hpp"

#include "base/json.hpp"
#include "base/text.hpp"

#include <fmt/format.h>

#include <array>
#include <span>

namespace hub::routing {

namespace {

constexpr std::array<std::string_view, 10> system_names{
    "$contentType", "$contentEncoding", "$connectionDeviceId", "$connectionModuleId", "$enqueuedTime",
    "$messageId",   "$userId",          "$correlationId",      "$dt-dataschema",      "$dt-subject"};
enum class system_index : std::int32_t {
  content_type, content_encoding, connection_device_id, connection_module_id, enqueued_time,
  message_id,   user_id,          correlation_id,       dt_dataschema,        dt_subject,
};

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// UTF-16 (BOM decides the byte order, little-endian without one, as .NET's "utf-16") to UTF-8.
std::optional<std::string> from_utf16(std::string_view in) {
  bool big = false;
  if (in.size() >= 2 && static_cast<unsigned char>(in[0]) == 0xFE && static_cast<unsigned char>(in[1]) == 0xFF) {
    big = true;
    in.remove_prefix(2);
  } else if (in.size() >= 2 && static_cast<unsigned char>(in[0]) == 0xFF && static_cast<unsigned char>(in[1]) == 0xFE) {
    in.remove_prefix(2);
  }
  if (in.size() % 2 != 0) return std::nullopt;
  const auto unit = [&](std::size_t i) -> std::uint32_t {
    const auto a = static_cast<unsigned char>(in[i]);
    const auto b = static_cast<unsigned char>(in[i + 1]);
    return big ? (a << 8 | b) : (b << 8 | a);
  };
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); i += 2) {
    std::uint32_t u = unit(i);
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (i + 3 >= in.size()) return std::nullopt;
      const std::uint32_t lo = unit(i + 2);
      if (lo < 0xDC00 || lo > 0xDFFF) return std::nullopt;
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      i += 2;
    } else if (u >= 0xDC00 && u <= 0xDFFF) {
      return std::nullopt;
    }
    append_utf8(out, u);
  }
  return out;
}

std::optional<std::string> from_utf32(std::string_view in) {
  bool big = false;
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])); };
  if (in.size() >= 4 && byte(0) == 0 && byte(1) == 0 && byte(2) == 0xFE && byte(3) == 0xFF) {
    big = true;
    in.remove_prefix(4);
  } else if (in.size() >= 4 && byte(0) == 0xFF && byte(1) == 0xFE && byte(2) == 0 && byte(3) == 0) {
    in.remove_prefix(4);
  }
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 2);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    const std::uint32_t cp = big ? (byte(i) << 24 | byte(i + 1) << 16 | byte(i + 2) << 8 | byte(i + 3))
                                 : (byte(i + 3) << 24 | byte(i + 2) << 16 | byte(i + 1) << 8 | byte(i));
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
    append_utf8(out, cp);
  }
  return out;
}

std::string_view media_type(std::string_view content_type) {
  return text::trim(content_type.substr(0, content_type.find(';')));
}

const std::string* optional_text(const std::optional<std::string>& s) { return s ? &*s : nullptr; }

std::string scalar_text(const telemetry::value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return {};
}

}  // namespace

result<std::int32_t> bind(const query::path& p) {
  if (p.segments.empty() || p.segments[0].index) return slot::undefined;
  const std::string& first = p.segments[0].name;
  if (!first.starts_with('$')) return p.segments.size() == 1 ? slot::app_property : slot::undefined;
  if (text::iequals(first, "$body")) return p.segments.size() > 1 ? slot::body : slot::undefined;
  if (text::iequals(first, "$twin")) return p.segments.size() > 1 ? slot::twin : slot::undefined;
  if (p.segments.size() != 1) return slot::undefined;
  for (std::size_t i = 0; i < system_names.size(); ++i) {
    if (text::iequals(first, system_names[i])) return slot::system_first + static_cast<std::int32_t>(i);
  }
  return slot::dollar_app_property;
}

bool reads_twin(const query::expression& e) noexcept {
  for (const query::path& p : e.paths()) {
    if (p.binding == slot::twin) return true;
  }
  return false;
}

bool json_body(const telemetry::message& m, bool utf8_only) noexcept {
  if (!m.content_type || !m.content_encoding) return false;
  if (!text::iequals(media_type(*m.content_type), "application/json")) return false;
  const std::string_view enc = text::trim(*m.content_encoding);
  if (text::iequals(enc, "utf-8")) return true;
  return !utf8_only && (text::iequals(enc, "utf-16") || text::iequals(enc, "utf-32"));
}

std::optional<bj::value> body_json(const telemetry::message& m) {
  if (!json_body(m)) return std::nullopt;
  const std::string_view enc = text::trim(*m.content_encoding);
  std::optional<std::string> transcoded;
  std::string_view text = m.body;
  if (text::iequals(enc, "utf-16")) {
    transcoded = from_utf16(m.body);
    if (!transcoded) return std::nullopt;
    text = *transcoded;
  } else if (text::iequals(enc, "utf-32")) {
    transcoded = from_utf32(m.body);
    if (!transcoded) return std::nullopt;
    text = *transcoded;
  }
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  auto parsed = json::parse(text, json::parse_limits{64, 1024 * 1024});
  if (!parsed) return std::nullopt;
  return std::move(*parsed);
}

message_view::message_view(const telemetry::message& m, std::string enqueued_time, const twin_source* twins)
    : m_(m), enqueued_time_(std::move(enqueued_time)), twins_(twins) {}

query::value message_view::app_property(std::string_view name) const {
  // Names are case-insensitive and a name given twice counts once: the first wins.
  for (const auto& [k, v] : m_.properties) {
    if (!text::iequals(k, name)) continue;
    if (const auto* s = std::get_if<std::string>(&v)) return query::value::string_ref(*s);
    if (std::holds_alternative<std::monostate>(v)) return query::value::null();
    return query::value::string(scalar_text(v));
  }
  return {};
}

const bj::value* message_view::body() const {
  if (!body_parsed_) {
    body_parsed_ = true;
    body_ = body_json(m_);
  }
  return body_ ? &*body_ : nullptr;
}

const bj::object* message_view::twin() const {
  if (!twin_fetched_) {
    twin_fetched_ = true;
    if (twins_ && *twins_) twin_ = (*twins_)(m_.device_id, m_.module_id);
  }
  return twin_ ? &*twin_ : nullptr;
}

query::value message_view::resolve(const query::path& p) const {
  const std::int32_t b = p.binding;
  if (b == slot::app_property || b == slot::dollar_app_property) return app_property(p.segments[0].name);
  if (b >= slot::system_first && b < slot::system_first + static_cast<std::int32_t>(system_names.size())) {
    const std::string* s = nullptr;
    std::string_view view;
    switch (static_cast<system_index>(b - slot::system_first)) {
      case system_index::content_type: s = optional_text(m_.content_type); break;
      case system_index::content_encoding: s = optional_text(m_.content_encoding); break;
      case system_index::connection_device_id: s = &m_.device_id; break;
      case system_index::connection_module_id:
        if (!m_.module_id.empty()) s = &m_.module_id;
        break;
      case system_index::enqueued_time: s = &enqueued_time_; break;
      case system_index::message_id: s = optional_text(m_.message_id); break;
      case system_index::user_id: s = optional_text(m_.user_id); break;
      case system_index::correlation_id: s = optional_text(m_.correlation_id); break;
      case system_index::dt_dataschema:
        if (!m_.model_id.empty()) s = &m_.model_id;
        break;
      case system_index::dt_subject: s = optional_text(m_.component); break;
    }
    if (s) return query::value::string_ref(*s);
    // Not set on the message: IoT Hub then looks among the application properties.
    return app_property(p.segments[0].name);
  }
  if (b == slot::body) {
    const bj::value* root = body();
    if (!root) return {};
    const bj::value* v = query::find(*root, std::span(p.segments).subspan(1), false);
    return v ? query::value::json(*v) : query::value{};
  }
  if (b == slot::twin) {
    const bj::object* t = twin();
    if (!t) return {};
    const bj::value* v = query::find(*t, std::span(p.segments).subspan(1), true);
    return v ? query::value::json(*v) : query::value{};
  }
  return {};
}

}  // namespace hub::routing
