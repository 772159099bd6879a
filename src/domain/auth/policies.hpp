#pragma once
// The hub's shared access policies and their permissions.
#include "base/error.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hub::auth {

enum class permission : std::uint8_t {
  registry_read = 1,
  registry_write = 2,
  service_connect = 4,
  device_connect = 8,
};
using permissions = std::uint8_t;
constexpr permissions operator|(permission a, permission b) {
  return static_cast<permissions>(static_cast<permissions>(a) | static_cast<permissions>(b));
}
// So that a | b | c chains.
constexpr permissions operator|(permissions a, permission b) {
  return static_cast<permissions>(a | static_cast<permissions>(b));
}
constexpr bool has(permissions set, permission p) { return (set & static_cast<permissions>(p)) != 0; }
std::string to_string(permissions set);   // "RegistryRead, ServiceConnect", in IoT Hub's order

struct policy {
  std::string name;
  std::string primary_key;
  std::string secondary_key;
  permissions rights = 0;
};

// The hub's own identity: its name and policies. Persisted as hub.json in the data folder.
struct hub_identity {
  std::string host_name;
  std::vector<policy> policies;

  const policy* find(std::string_view name) const;
};

// The five policies every IoT Hub starts with, each with fresh random keys:
// iothubowner, service, device, registryRead, registryReadWrite.
std::vector<policy> default_policies();

boost::json::object to_json(const hub_identity& id);
result<hub_identity> identity_from_json(const boost::json::value& v);

// "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..."
std::string connection_string(const hub_identity& id, const policy& p);

}  // namespace hub::auth
