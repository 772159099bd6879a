#include "domain/auth/policies.hpp"

#include "base/crypto.hpp"
#include "base/text.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <array>
#include <utility>

namespace hub::auth {
namespace {

namespace bj = boost::json;

// In the order IoT Hub lists them.
constexpr std::array<std::pair<permission, std::string_view>, 4> permission_names{{
    {permission::registry_read, "RegistryRead"},
    {permission::registry_write, "RegistryWrite"},
    {permission::service_connect, "ServiceConnect"},
    {permission::device_connect, "DeviceConnect"},
}};

error invalid(std::string message) { return make_error(errc::argument_invalid, std::move(message)); }

result<permissions> parse_rights(std::string_view s) {
  permissions out = 0;
  for (auto part : text::split(s, ',')) {
    part = text::trim(part);
    if (part.empty()) continue;
    bool known = false;
    for (const auto& [p, name] : permission_names) {
      if (!text::iequals(part, name)) continue;
      out |= static_cast<permissions>(p);
      known = true;
    }
    if (!known) return invalid(fmt::format("Unknown permission '{}'", part));
  }
  return out;
}

policy make_policy(std::string name, permissions rights) {
  return policy{std::move(name), crypto::new_symmetric_key(), crypto::new_symmetric_key(), rights};
}

bool valid_key(std::string_view key) {
  const auto bytes = crypto::base64_decode(key);
  return bytes && !bytes->empty();
}

}  // namespace

std::string to_string(permissions set) {
  std::string out;
  for (const auto& [p, name] : permission_names) {
    if (!has(set, p)) continue;
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

const policy* hub_identity::find(std::string_view name) const {
  // Exact match: policy names are case-sensitive.
  for (const auto& p : policies) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::vector<policy> default_policies() {
  using enum permission;
  return {
      make_policy("iothubowner", registry_read | registry_write | service_connect | device_connect),
      make_policy("service", static_cast<permissions>(service_connect)),
      make_policy("device", static_cast<permissions>(device_connect)),
      make_policy("registryRead", static_cast<permissions>(registry_read)),
      make_policy("registryReadWrite", registry_read | registry_write),
  };
}

bj::object to_json(const hub_identity& id) {
  bj::array policies;
  for (const auto& p : id.policies) {
    policies.emplace_back(bj::object{{"keyName", p.name},
                                     {"primaryKey", p.primary_key},
                                     {"secondaryKey", p.secondary_key},
                                     {"rights", to_string(p.rights)}});
  }
  return bj::object{{"hostName", id.host_name}, {"policies", std::move(policies)}};
}

result<hub_identity> identity_from_json(const bj::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) return invalid("The hub identity must be a JSON object");
  hub_identity id;
  const auto* host = o->if_contains("hostName");
  if (host == nullptr || !host->is_string() || host->get_string().empty()) {
    return invalid("The hub identity needs a non-empty string 'hostName'");
  }
  id.host_name = host->get_string();
  const auto* list = o->if_contains("policies");
  if (list == nullptr || !list->is_array()) return invalid("The hub identity needs an array 'policies'");

  for (const auto& item : list->get_array()) {
    const auto* p = item.if_object();
    if (p == nullptr) return invalid("Each policy must be a JSON object");
    const auto text_field = [&](std::string_view key) -> std::optional<std::string> {
      const auto* f = p->if_contains(key);
      if (f == nullptr || !f->is_string()) return std::nullopt;
      return std::string(f->get_string());
    };
    auto name = text_field("keyName");
    auto primary = text_field("primaryKey");
    auto secondary = text_field("secondaryKey");
    const auto rights_text = text_field("rights");
    if (!name || name->empty() || !primary || !secondary || !rights_text) {
      return invalid("Each policy needs string fields keyName, primaryKey, secondaryKey and rights");
    }
    // The key itself is never part of a message.
    if (!valid_key(*primary) || !valid_key(*secondary)) {
      return invalid(fmt::format("The policy '{}' has a key that is not base64", *name));
    }
    if (id.find(*name) != nullptr) return invalid(fmt::format("The policy '{}' is defined twice", *name));
    auto rights = parse_rights(*rights_text);
    if (!rights) return rights.error();
    id.policies.push_back(policy{std::move(*name), std::move(*primary), std::move(*secondary), *rights});
  }
  return id;
}

std::string connection_string(const hub_identity& id, const policy& p) {
  return fmt::format("HostName={};SharedAccessKeyName={};SharedAccessKey={}", id.host_name, p.name, p.primary_key);
}

}  // namespace hub::auth
