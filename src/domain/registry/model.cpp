#include "domain/registry/model.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/text.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace hub::registry {
namespace {

namespace bj = boost::json;

constexpr std::size_t max_id_length = 128;
constexpr std::size_t max_status_reason_length = 128;
// IoT Hub accepts symmetric keys of 16 to 64 bytes (before base64).
constexpr std::size_t min_key_bytes = 16;
constexpr std::size_t max_key_bytes = 64;
// Bumped when the storage form changes incompatibly.
constexpr std::int64_t storage_version = 1;

error invalid(std::string message) { return make_error(errc::argument_invalid, std::move(message)); }

// Reads the optional fields of one JSON object, remembering the first field of a wrong type, so
// the readers below are a plain list of fields followed by one check. Absent and null are the
// same: the SDKs send null for fields they don't set.
class field_reader {
 public:
  field_reader(const bj::object& o, std::string path_prefix) : o_(o), prefix_(std::move(path_prefix)) {}

  std::optional<std::string> string(std::string_view key) {
    const auto* v = present(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) {
      fail(key, "a string");
      return std::nullopt;
    }
    return std::string(v->get_string());
  }

  std::optional<bool> boolean(std::string_view key) {
    const auto* v = present(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_bool()) {
      fail(key, "true or false");
      return std::nullopt;
    }
    return v->get_bool();
  }

  std::optional<std::int64_t> integer(std::string_view key) {
    const auto* v = present(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
      return static_cast<std::int64_t>(v->get_uint64());
    }
    fail(key, "an integer");
    return std::nullopt;
  }

  const bj::object* object(std::string_view key) {
    const auto* v = present(key);
    if (v == nullptr) return nullptr;
    if (!v->is_object()) {
      fail(key, "an object");
      return nullptr;
    }
    return &v->get_object();
  }

  // An array of strings; nullopt when absent.
  std::optional<std::vector<std::string>> strings(std::string_view key) {
    const auto* v = present(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_array()) {
      fail(key, "an array of strings");
      return std::nullopt;
    }
    std::vector<std::string> out;
    for (const auto& item : v->get_array()) {
      if (!item.is_string()) {
        fail(key, "an array of strings");
        return std::nullopt;
      }
      out.emplace_back(item.get_string());
    }
    return out;
  }

  bool failed() const noexcept { return error_.has_value(); }
  const error& failure() const { return *error_; }
  std::string path(std::string_view key) const { return prefix_ + std::string(key); }

 private:
  const bj::value* present(std::string_view key) const {
    const auto* v = o_.if_contains(key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }

  void fail(std::string_view key, std::string_view expected) {
    if (!error_) error_ = invalid(fmt::format("The field '{}' must be {}", path(key), expected));
  }

  const bj::object& o_;
  std::string prefix_;
  std::optional<error> error_;
};

bool id_char(char c) noexcept {
  if (std::isalnum(static_cast<unsigned char>(c)) != 0) return true;
  return std::string_view("-.+%_#*?!(),=@$':").find(c) != std::string_view::npos;
}

bool all_hex(std::string_view s) noexcept {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

std::optional<auth_type> parse_auth_type(std::string_view s) {
  for (auto t : {auth_type::sas, auth_type::self_signed, auth_type::certificate_authority, auth_type::none}) {
    if (text::iequals(s, to_string(t))) return t;
  }
  return std::nullopt;
}

std::optional<device_status> parse_status(std::string_view s) {
  if (text::iequals(s, "enabled")) return device_status::enabled;
  if (text::iequals(s, "disabled")) return device_status::disabled;
  return std::nullopt;
}

std::optional<connection_state> parse_connection_state(std::string_view s) {
  if (text::iequals(s, "connected")) return connection_state::connected;
  if (text::iequals(s, "disconnected")) return connection_state::disconnected;
  return std::nullopt;
}

result<void> validate_key(std::string_view key, std::string_view which) {
  if (key.empty()) return {};
  const auto bytes = crypto::base64_decode(key);
  if (bytes && bytes->size() >= min_key_bytes && bytes->size() <= max_key_bytes) return {};
  // Never echo the key itself.
  return invalid(fmt::format("The {} key is invalid: a symmetric key must be base64 of {} to {} bytes", which,
                             min_key_bytes, max_key_bytes));
}

result<void> normalise_thumbprint(std::string& print, std::string_view which) {
  if (print.empty()) return {};
  if ((print.size() != 40 && print.size() != 64) || !all_hex(print)) {
    return invalid(fmt::format("The {} thumbprint is invalid: expected 40 (SHA-1) or 64 (SHA-256) hex digits",
                               which));
  }
  std::transform(print.begin(), print.end(), print.begin(),
                 [](char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); });
  return {};
}

// The REST API writes "never" as IoT Hub's minimum date, not the Unix epoch.
bj::value timestamp_json(sys_time t) {
  if (t == sys_time{}) return bj::value(iso8601_min);
  return bj::value(to_iso8601(t));
}

// IoT Hub returns null, not "", for text it has no value for.
bj::value nullable(const std::string& s) { return s.empty() ? bj::value(nullptr) : bj::value(s); }

bj::object authentication_json(const authentication& a) {
  return bj::object{
      {"type", to_string(a.type)},
      {"symmetricKey", bj::object{{"primaryKey", nullable(a.primary_key)}, {"secondaryKey", nullable(a.secondary_key)}}},
      {"x509Thumbprint", bj::object{{"primaryThumbprint", nullable(a.primary_thumbprint)},
                                    {"secondaryThumbprint", nullable(a.secondary_thumbprint)}}},
  };
}

result<authentication> authentication_from_json(const bj::object* o) {
  authentication a;
  if (o == nullptr) return a;  // sas with keys to generate, as the SDKs default
  field_reader r(*o, "authentication.");
  const auto type = r.string("type");
  const auto* keys = r.object("symmetricKey");
  const auto* prints = r.object("x509Thumbprint");
  if (r.failed()) return r.failure();
  if (keys != nullptr) {
    field_reader k(*keys, "authentication.symmetricKey.");
    a.primary_key = k.string("primaryKey").value_or("");
    a.secondary_key = k.string("secondaryKey").value_or("");
    if (k.failed()) return k.failure();
  }
  if (prints != nullptr) {
    field_reader p(*prints, "authentication.x509Thumbprint.");
    a.primary_thumbprint = p.string("primaryThumbprint").value_or("");
    a.secondary_thumbprint = p.string("secondaryThumbprint").value_or("");
    if (p.failed()) return p.failure();
  }
  if (type) {
    const auto parsed = parse_auth_type(*type);
    if (!parsed) {
      return invalid(fmt::format("Unknown authentication type '{}': expected sas, selfSigned, certificateAuthority "
                                 "or none",
                                 *type));
    }
    a.type = *parsed;
  } else {
    // The SDKs' own rule for a missing type.
    const bool any_thumbprint = !a.primary_thumbprint.empty() || !a.secondary_thumbprint.empty();
    a.type = any_thumbprint ? auth_type::self_signed : auth_type::sas;
  }
  if (auto v = validate(a); !v) return v.error();
  return a;
}

// An etag as a client may send it: quotes are not part of the value.
std::string unquote(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

// --- storage form -----------------------------------------------------------------------------
// JSON with exact timestamps (nanoseconds since the epoch), so a record round-trips bit for bit.

std::int64_t to_ns(sys_time t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
sys_time from_ns(std::int64_t ns) {
  return sys_time{std::chrono::duration_cast<sys_time::duration>(std::chrono::nanoseconds{ns})};
}

error corrupt(std::string_view what) {
  return make_error(errc::server_error, fmt::format("corrupt registry record: {}", what));
}

bj::object encode_identity(const identity& i) {
  return bj::object{
      {"v", storage_version},
      {"deviceId", i.device_id},
      {"generationId", i.generation_id},
      {"etag", i.etag},
      {"auth", bj::object{{"type", to_string(i.auth.type)},
                          {"primaryKey", i.auth.primary_key},
                          {"secondaryKey", i.auth.secondary_key},
                          {"primaryThumbprint", i.auth.primary_thumbprint},
                          {"secondaryThumbprint", i.auth.secondary_thumbprint}}},
      {"connectionState", to_string(i.conn_state)},
      {"connectionStateUpdated", to_ns(i.conn_state_updated)},
      {"lastActivity", to_ns(i.last_activity)},
      {"c2dCount", i.c2d_message_count},
  };
}

result<bj::object> parse_record(std::string_view bytes) {
  auto v = json::parse(bytes);
  if (!v) return corrupt(v.error().message);
  if (!v->is_object()) return corrupt("not an object");
  return std::move(v->get_object());
}

result<void> decode_identity(const bj::object& o, identity& i) {
  field_reader r(o, "");
  const auto version = r.integer("v");
  i.device_id = r.string("deviceId").value_or("");
  i.generation_id = r.string("generationId").value_or("");
  i.etag = r.string("etag").value_or("");
  const auto* auth = r.object("auth");
  const auto state = r.string("connectionState");
  i.conn_state_updated = from_ns(r.integer("connectionStateUpdated").value_or(0));
  i.last_activity = from_ns(r.integer("lastActivity").value_or(0));
  i.c2d_message_count = r.integer("c2dCount").value_or(0);
  if (r.failed()) return corrupt(r.failure().message);
  if (version != storage_version) return corrupt(fmt::format("unknown version {}", version.value_or(0)));
  if (i.device_id.empty() || auth == nullptr) return corrupt("missing deviceId or auth");
  const auto parsed_state = parse_connection_state(state.value_or(""));
  if (!parsed_state) return corrupt("bad connectionState");
  i.conn_state = *parsed_state;

  field_reader a(*auth, "auth.");
  const auto type = parse_auth_type(a.string("type").value_or(""));
  i.auth.primary_key = a.string("primaryKey").value_or("");
  i.auth.secondary_key = a.string("secondaryKey").value_or("");
  i.auth.primary_thumbprint = a.string("primaryThumbprint").value_or("");
  i.auth.secondary_thumbprint = a.string("secondaryThumbprint").value_or("");
  if (a.failed()) return corrupt(a.failure().message);
  if (!type) return corrupt("bad auth.type");
  i.auth.type = *type;
  return {};
}

}  // namespace

bool valid_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= max_id_length && std::all_of(id.begin(), id.end(), id_char);
}

std::string_view to_string(auth_type t) noexcept {
  switch (t) {
    case auth_type::sas: return "sas";
    case auth_type::self_signed: return "selfSigned";
    case auth_type::certificate_authority: return "certificateAuthority";
    case auth_type::none: return "none";
  }
  return "none";
}

std::string_view to_string(device_status s) noexcept {
  switch (s) {
    case device_status::enabled: return "enabled";
    case device_status::disabled: return "disabled";
  }
  return "disabled";
}

std::string_view to_string(connection_state s) noexcept {
  switch (s) {
    case connection_state::connected: return "Connected";
    case connection_state::disconnected: return "Disconnected";
  }
  return "Disconnected";
}

result<void> validate(authentication& a) {
  switch (a.type) {
    case auth_type::sas:
      a.primary_thumbprint.clear();
      a.secondary_thumbprint.clear();
      if (auto r = validate_key(a.primary_key, "primary"); !r) return r;
      return validate_key(a.secondary_key, "secondary");
    case auth_type::self_signed:
      a.primary_key.clear();
      a.secondary_key.clear();
      if (a.primary_thumbprint.empty()) {
        return invalid("A selfSigned device needs authentication.x509Thumbprint.primaryThumbprint");
      }
      if (auto r = normalise_thumbprint(a.primary_thumbprint, "primary"); !r) return r;
      return normalise_thumbprint(a.secondary_thumbprint, "secondary");
    case auth_type::certificate_authority:
    case auth_type::none: {
      const auth_type type = a.type;
      a = authentication{};  // no credentials are stored for these types
      a.type = type;
      return {};
    }
  }
  return {};
}

bj::object to_json(const device& d) {
  bj::array parents;
  for (const auto& p : d.parent_scopes) parents.emplace_back(p);
  return bj::object{
      {"deviceId", d.device_id},
      {"generationId", d.generation_id},
      {"etag", d.etag},
      {"connectionState", to_string(d.conn_state)},
      {"status", to_string(d.status)},
      {"statusReason", nullable(d.status_reason)},
      {"connectionStateUpdatedTime", timestamp_json(d.conn_state_updated)},
      {"statusUpdatedTime", timestamp_json(d.status_updated)},
      {"lastActivityTime", timestamp_json(d.last_activity)},
      {"cloudToDeviceMessageCount", d.c2d_message_count},
      {"authentication", authentication_json(d.auth)},
      {"capabilities", bj::object{{"iotEdge", d.iot_edge}}},
      {"deviceScope", nullable(d.device_scope)},
      {"parentScopes", std::move(parents)},
  };
}

bj::object to_json(const module& m) {
  return bj::object{
      {"moduleId", m.module_id},
      {"managedBy", nullable(m.managed_by)},
      {"deviceId", m.device_id},
      {"generationId", m.generation_id},
      {"etag", m.etag},
      {"connectionState", to_string(m.conn_state)},
      {"connectionStateUpdatedTime", timestamp_json(m.conn_state_updated)},
      {"lastActivityTime", timestamp_json(m.last_activity)},
      {"cloudToDeviceMessageCount", m.c2d_message_count},
      {"authentication", authentication_json(m.auth)},
  };
}

result<device> device_from_json(const bj::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) return invalid("A device must be a JSON object");
  device d;
  field_reader r(*o, "");
  // The bulk API renames deviceId to id; accept either wherever a device is read.
  auto id = r.string("deviceId");
  if (!id) id = r.string("id");
  const auto status = r.string("status");
  const auto reason = r.string("statusReason");
  const auto* auth = r.object("authentication");
  const auto* capabilities = r.object("capabilities");
  const auto scope = r.string("deviceScope");
  auto parents = r.strings("parentScopes");
  const auto etag = r.string("etag");
  if (r.failed()) return r.failure();

  d.device_id = id.value_or("");
  if (status) {
    const auto parsed = parse_status(*status);
    if (!parsed) return invalid(fmt::format("Unknown status '{}': expected enabled or disabled", *status));
    d.status = *parsed;
  }
  d.status_reason = reason.value_or("");
  if (d.status_reason.size() > max_status_reason_length) {
    return invalid(fmt::format("statusReason is longer than {} characters", max_status_reason_length));
  }
  auto credentials = authentication_from_json(auth);
  if (!credentials) return credentials.error();
  d.auth = std::move(*credentials);
  if (capabilities != nullptr) {
    field_reader c(*capabilities, "capabilities.");
    d.iot_edge = c.boolean("iotEdge").value_or(false);
    if (c.failed()) return c.failure();
  }
  d.device_scope = scope.value_or("");
  d.parent_scopes = std::move(parents).value_or(std::vector<std::string>{});
  d.etag = unquote(etag.value_or(""));
  return d;
}

result<module> module_from_json(const bj::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) return invalid("A module must be a JSON object");
  module m;
  field_reader r(*o, "");
  const auto module_id = r.string("moduleId");
  const auto device_id = r.string("deviceId");
  const auto managed_by = r.string("managedBy");
  const auto* auth = r.object("authentication");
  const auto etag = r.string("etag");
  if (r.failed()) return r.failure();

  m.module_id = module_id.value_or("");
  m.device_id = device_id.value_or("");
  m.managed_by = managed_by.value_or("");
  auto credentials = authentication_from_json(auth);
  if (!credentials) return credentials.error();
  m.auth = std::move(*credentials);
  m.etag = unquote(etag.value_or(""));
  return m;
}

std::string encode(const device& d) {
  auto o = encode_identity(d);
  bj::array parents;
  for (const auto& p : d.parent_scopes) parents.emplace_back(p);
  o["status"] = to_string(d.status);
  o["statusReason"] = d.status_reason;
  o["statusUpdated"] = to_ns(d.status_updated);
  o["iotEdge"] = d.iot_edge;
  o["deviceScope"] = d.device_scope;
  o["parentScopes"] = std::move(parents);
  return json::serialize(o);
}

std::string encode(const module& m) {
  auto o = encode_identity(m);
  o["moduleId"] = m.module_id;
  o["managedBy"] = m.managed_by;
  return json::serialize(o);
}

result<device> decode_device(std::string_view bytes) {
  auto o = parse_record(bytes);
  if (!o) return o.error();
  device d;
  if (auto r = decode_identity(*o, d); !r) return r.error();
  field_reader r(*o, "");
  const auto status = parse_status(r.string("status").value_or(""));
  d.status_reason = r.string("statusReason").value_or("");
  d.status_updated = from_ns(r.integer("statusUpdated").value_or(0));
  d.iot_edge = r.boolean("iotEdge").value_or(false);
  d.device_scope = r.string("deviceScope").value_or("");
  d.parent_scopes = r.strings("parentScopes").value_or(std::vector<std::string>{});
  if (r.failed()) return corrupt(r.failure().message);
  if (!status) return corrupt("bad status");
  d.status = *status;
  return d;
}

result<module> decode_module(std::string_view bytes) {
  auto o = parse_record(bytes);
  if (!o) return o.error();
  module m;
  if (auto r = decode_identity(*o, m); !r) return r.error();
  field_reader r(*o, "");
  m.module_id = r.string("moduleId").value_or("");
  m.managed_by = r.string("managedBy").value_or("");
  if (r.failed()) return corrupt(r.failure().message);
  if (m.module_id.empty()) return corrupt("missing moduleId");
  return m;
}

}  // namespace hub::registry
