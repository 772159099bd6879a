#pragma once
// Device and module identities as IoT Hub's registry holds them.
#include "base/clock.hpp"
#include "base/error.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::registry {

enum class auth_type { sas, self_signed, certificate_authority, none };
enum class device_status { enabled, disabled };
enum class connection_state { disconnected, connected };

struct authentication {
  auth_type type = auth_type::sas;
  std::string primary_key;          // base64, sas only
  std::string secondary_key;
  std::string primary_thumbprint;   // upper-case hex, selfSigned only
  std::string secondary_thumbprint;
};

// Fields common to devices and modules.
struct identity {
  std::string device_id;
  std::string generation_id;
  std::string etag;                 // unquoted
  authentication auth;
  connection_state conn_state = connection_state::disconnected;
  sys_time conn_state_updated{};    // epoch = never
  sys_time last_activity{};
  std::int64_t c2d_message_count = 0;
};

struct device : identity {
  device_status status = device_status::enabled;
  std::string status_reason;
  sys_time status_updated{};
  bool iot_edge = false;
  std::string device_scope;
  std::vector<std::string> parent_scopes;
};

struct module : identity {
  std::string module_id;
  std::string managed_by;
};

struct statistics {
  std::int64_t total = 0;
  std::int64_t enabled = 0;
  std::int64_t disabled = 0;
};

// IoT Hub's id rules: 1..128 chars of ASCII alnum and - . + % _ # * ? ! ( ) , = @ $ ' and :
bool valid_id(std::string_view id) noexcept;

// The REST API's spellings: "sas" / "selfSigned" / "certificateAuthority" / "none",
// "enabled" / "disabled", "Connected" / "Disconnected".
std::string_view to_string(auth_type t) noexcept;
std::string_view to_string(device_status s) noexcept;
std::string_view to_string(connection_state s) noexcept;

// Checks and normalises credentials in place, with IoT Hub's rules: sas keys, when given, are
// base64 of 16..64 bytes (empty keys are left for the registry to generate or keep);
// thumbprints are 40 (SHA-1) or 64 (SHA-256) hex digits, stored upper-case; selfSigned needs a
// primary thumbprint. Fields that do not belong to the type are cleared. ArgumentInvalid otherwise.
result<void> validate(authentication& a);

// JSON in the REST API's shape (deviceId, generationId, etag, status, authentication, ...).
boost::json::object to_json(const device& d);
boost::json::object to_json(const module& m);
// Reads a request body (or a bulk item, which names the id "id"). The writable fields, plus etag
// for the bulk *IfMatchETag modes; the other read-only fields (generationId, connection state...)
// are ignored. ArgumentInvalid for a field of the wrong type or value; the credentials are
// validated as validate() does. The caller parses the text (json::parse, bounded).
result<device> device_from_json(const boost::json::value& v);
result<module> module_from_json(const boost::json::value& v);

// Storage form: everything, including the read-only fields.
std::string encode(const device& d);
std::string encode(const module& m);
result<device> decode_device(std::string_view bytes);
result<module> decode_module(std::string_view bytes);

}  // namespace hub::registry
