#include "domain/auth/service.hpp"

#include <fmt/format.h>

namespace hub::auth {
namespace {

error unauthorized(std::string message) { return make_error(errc::unauthorized, std::move(message)); }

bool signed_by(const sas_token& token, const policy& p, key_encoding keys = key_encoding::base64) {
  return signature_matches(token, p.primary_key, keys) || signature_matches(token, p.secondary_key, keys);
}

bool signed_by(const sas_token& token, const registry::authentication& a) {
  return a.type == registry::auth_type::sas &&
         (signature_matches(token, a.primary_key) || signature_matches(token, a.secondary_key));
}

std::string permission_name(permission p) { return to_string(static_cast<permissions>(p)); }

}  // namespace

service::service(hub_identity identity, registry::service& registry, const clock& clk)
    : identity_(std::move(identity)), registry_(registry), clock_(clk) {}

result<principal> service::authorize(std::string_view token_text, std::string_view target, permission needed,
                                     key_encoding keys) const {
  auto token = parse_sas_token(token_text);
  if (!token) return token.error();
  // Only policy keys authorise service operations; a token without skn is signed with a device key.
  if (token->key_name.empty()) return unauthorized("A device token cannot be used for a service operation");
  const policy* p = identity_.find(token->key_name);
  if (p == nullptr) return unauthorized(fmt::format("Unknown shared access policy '{}'", token->key_name));
  if (!signed_by(*token, *p, keys)) {
    return unauthorized(fmt::format("The SAS token's signature does not match the keys of policy '{}'", p->name));
  }
  // Details below are safe to give: the caller has proved it holds the key.
  if (token->expiry <= clock_.now_seconds()) return unauthorized("The SAS token has expired");
  if (!scope_covers(token->resource, target)) {
    return unauthorized(fmt::format("The SAS token's resource '{}' does not cover '{}'", token->resource, target));
  }
  if (!has(p->rights, needed)) {
    return unauthorized(fmt::format("The policy '{}' does not have the {} permission", p->name, permission_name(needed)));
  }
  principal who;
  who.who = principal::kind::policy;
  who.name = p->name;
  who.rights = p->rights;
  who.expiry = token->expiry;
  return who;
}

result<principal> service::authenticate_device(std::string_view token_text, std::string_view device_id,
                                               std::string_view module_id) const {
  auto token = parse_sas_token(token_text);
  if (!token) return token.error();
  const bool is_module = !module_id.empty();
  const std::string who = is_module ? fmt::format("module '{}' of device '{}'", module_id, device_id)
                                    : fmt::format("device '{}'", device_id);
  // One message for "no such identity" and "wrong key", so a caller without a key cannot probe
  // which ids exist.
  const auto rejected = [&] { return unauthorized(fmt::format("The SAS token is not valid for {}", who)); };

  // The identity is needed even for policy tokens: a policy cannot connect a device that does
  // not exist or is disabled.
  auto dev = registry_.get_device(device_id);
  if (!dev) return dev.error().code == errc::device_not_found ? rejected() : dev.error();
  std::optional<registry::module> mod;
  if (is_module) {
    auto m = registry_.get_module(device_id, module_id);
    if (!m) return m.error().code == errc::module_not_found ? rejected() : m.error();
    mod = std::move(*m);
  }

  if (!token->key_name.empty()) {
    const policy* p = identity_.find(token->key_name);
    if (p == nullptr || !signed_by(*token, *p)) return rejected();
    if (!has(p->rights, permission::device_connect)) {
      return unauthorized(fmt::format("The policy '{}' does not have the DeviceConnect permission", p->name));
    }
  } else if (!signed_by(*token, mod ? mod->auth : dev->auth)) {
    return rejected();
  }

  if (token->expiry <= clock_.now_seconds()) return unauthorized("The SAS token has expired");
  const std::string target = is_module ? fmt::format("{}/devices/{}/modules/{}", identity_.host_name, device_id, module_id)
                                       : fmt::format("{}/devices/{}", identity_.host_name, device_id);
  if (!scope_covers(token->resource, target)) {
    return unauthorized(fmt::format("The SAS token's resource '{}' does not cover {}", token->resource, who));
  }
  // Checked last, and worded distinctly, so heads can tell it apart (MQTT's "not authorized" vs
  // a disabled identity) once the caller has proved it holds a valid credential.
  if (dev->status == registry::device_status::disabled) {
    return unauthorized(fmt::format("Device '{}' is disabled", device_id));
  }

  principal out;
  out.who = is_module ? principal::kind::module : principal::kind::device;
  out.name = std::string(device_id);
  out.device_id = std::string(device_id);
  out.module_id = std::string(module_id);
  out.rights = static_cast<permissions>(permission::device_connect);
  out.expiry = token->expiry;
  return out;
}

}  // namespace hub::auth
