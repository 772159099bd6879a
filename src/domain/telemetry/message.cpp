#include "domain/telemetry/message.hpp"

#include <cstring>

namespace hub::telemetry {

std::size_t billed_size(const message& m) {
  std::size_t n = m.body.size();
  for (const auto* p : {&m.message_id, &m.correlation_id, &m.user_id, &m.to, &m.content_type, &m.content_encoding,
                        &m.expiry_time_utc, &m.creation_time_utc, &m.output_name, &m.component, &m.interface_id}) {
    if (*p) n += (*p)->size();
  }
  for (const auto& [k, v] : m.properties) {
    n += k.size();
    if (const auto* s = std::get_if<std::string>(&v)) {
      n += s->size();
    } else {
      n += 8;
    }
  }
  return n;
}

std::string auth_method_json(const message& m) {
  std::string_view scope = m.module_id.empty() ? "device" : "module";
  std::string_view type = "sas";
  switch (m.auth) {
    case auth_method::sas: type = "sas"; break;
    case auth_method::x509_self_signed:
    case auth_method::x509_ca: type = "x509"; break;
    case auth_method::policy:
      scope = "hub";
      type = "sas";
      break;
  }
  std::string out = R"({"scope":")";
  out += scope;
  out += R"(","type":")";
  out += type;
  out += R"(","issuer":"iothub","acceptingIpFilterRule":null})";
  return out;
}

namespace {

// Field tags of the stored form. Append new tags; never renumber.
enum tag : std::uint8_t {
  t_body = 1, t_message_id, t_correlation_id, t_user_id, t_to, t_content_type, t_content_encoding, t_expiry,
  t_creation_time, t_output_name, t_component, t_interface_id, t_device_id, t_module_id, t_generation_id,
  t_auth, t_model_id, t_source,
  t_prop_null = 64, t_prop_string, t_prop_int, t_prop_double, t_prop_bool,
};
constexpr std::uint8_t format_version = 1;

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_field(std::string& out, std::uint8_t t, std::string_view s) {
  out.push_back(static_cast<char>(t));
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}
void put_opt(std::string& out, std::uint8_t t, const std::optional<std::string>& s) {
  if (s) put_field(out, t, *s);
}

class reader {
 public:
  explicit reader(std::string_view s) : s_(s) {}
  bool done() const { return pos_ == s_.size(); }
  bool u8(std::uint8_t& v) {
    if (pos_ + 1 > s_.size()) return false;
    v = static_cast<std::uint8_t>(s_[pos_++]);
    return true;
  }
  bool bytes(std::string_view& v) {
    if (pos_ + 4 > s_.size()) return false;
    std::uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len |= static_cast<std::uint32_t>(static_cast<unsigned char>(s_[pos_ + i])) << (8 * i);
    pos_ += 4;
    if (len > s_.size() - pos_) return false;
    v = s_.substr(pos_, len);
    pos_ += len;
    return true;
  }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace

std::string encode(const message& m) {
  std::string out;
  out.reserve(m.body.size() + 128);
  out.push_back(static_cast<char>(format_version));
  put_opt(out, t_message_id, m.message_id);
  put_opt(out, t_correlation_id, m.correlation_id);
  put_opt(out, t_user_id, m.user_id);
  put_opt(out, t_to, m.to);
  put_opt(out, t_content_type, m.content_type);
  put_opt(out, t_content_encoding, m.content_encoding);
  put_opt(out, t_expiry, m.expiry_time_utc);
  put_opt(out, t_creation_time, m.creation_time_utc);
  put_opt(out, t_output_name, m.output_name);
  put_opt(out, t_component, m.component);
  put_opt(out, t_interface_id, m.interface_id);
  put_field(out, t_device_id, m.device_id);
  if (!m.module_id.empty()) put_field(out, t_module_id, m.module_id);
  put_field(out, t_generation_id, m.generation_id);
  const char auth = static_cast<char>(m.auth);
  put_field(out, t_auth, std::string_view(&auth, 1));
  if (!m.model_id.empty()) put_field(out, t_model_id, m.model_id);
  if (m.source != "Telemetry") put_field(out, t_source, m.source);
  for (const auto& [k, v] : m.properties) {
    // A property is two fields: the tag of its type carrying the name, then the value.
    std::string val;
    std::uint8_t t = t_prop_null;
    if (const auto* s = std::get_if<std::string>(&v)) {
      t = t_prop_string;
      val = *s;
    } else if (const auto* i = std::get_if<std::int64_t>(&v)) {
      t = t_prop_int;
      val.resize(8);
      std::memcpy(val.data(), i, 8);
    } else if (const auto* d = std::get_if<double>(&v)) {
      t = t_prop_double;
      val.resize(8);
      std::memcpy(val.data(), d, 8);
    } else if (const auto* b = std::get_if<bool>(&v)) {
      t = t_prop_bool;
      val.assign(1, *b ? '\1' : '\0');
    }
    put_field(out, t, k);
    put_u32(out, static_cast<std::uint32_t>(val.size()));
    out.append(val);
  }
  put_field(out, t_body, m.body);
  return out;
}

result<message> decode(std::string_view bytes) {
  const auto bad = [] { return make_error(errc::server_error, "stored message is corrupt"); };
  reader r(bytes);
  std::uint8_t version = 0;
  if (!r.u8(version) || version != format_version) return bad();
  message m;
  while (!r.done()) {
    std::uint8_t t = 0;
    std::string_view v;
    if (!r.u8(t) || !r.bytes(v)) return bad();
    auto set = [&](std::optional<std::string>& field) { field = std::string(v); };
    switch (t) {
      case t_body: m.body = v; break;
      case t_message_id: set(m.message_id); break;
      case t_correlation_id: set(m.correlation_id); break;
      case t_user_id: set(m.user_id); break;
      case t_to: set(m.to); break;
      case t_content_type: set(m.content_type); break;
      case t_content_encoding: set(m.content_encoding); break;
      case t_expiry: set(m.expiry_time_utc); break;
      case t_creation_time: set(m.creation_time_utc); break;
      case t_output_name: set(m.output_name); break;
      case t_component: set(m.component); break;
      case t_interface_id: set(m.interface_id); break;
      case t_device_id: m.device_id = v; break;
      case t_module_id: m.module_id = v; break;
      case t_generation_id: m.generation_id = v; break;
      case t_auth:
        if (v.size() != 1) return bad();
        m.auth = static_cast<auth_method>(v[0]);
        break;
      case t_model_id: m.model_id = v; break;
      case t_source: m.source = v; break;
      case t_prop_null:
      case t_prop_string:
      case t_prop_int:
      case t_prop_double:
      case t_prop_bool: {
        std::string_view val;
        if (!r.bytes(val)) return bad();
        value pv;
        if (t == t_prop_string) {
          pv = std::string(val);
        } else if (t == t_prop_int || t == t_prop_double) {
          if (val.size() != 8) return bad();
          if (t == t_prop_int) {
            std::int64_t i = 0;
            std::memcpy(&i, val.data(), 8);
            pv = i;
          } else {
            double d = 0;
            std::memcpy(&d, val.data(), 8);
            pv = d;
          }
        } else if (t == t_prop_bool) {
          if (val.size() != 1) return bad();
          pv = val[0] != 0;
        }
        m.properties.emplace_back(std::string(v), std::move(pv));
        break;
      }
      default: return bad();  // a tag from a newer hubd: refuse rather than drop data
    }
  }
  return m;
}

}  // namespace hub::telemetry
