#include "heads/amqp/grants.hpp"

#include "domain/auth/service.hpp"
#include "domain/certificates/service.hpp"
#include "domain/registry/service.hpp"

#include <chrono>
#include <limits>

namespace hub::amqp_head {

result<grant> check_certificate(const certificate_services& svc, const certificates::client_chain& chain,
                                const std::string& device_id, const std::string& module_id) {
  auto proved = svc.certs.authenticate_device(chain, device_id, module_id);
  if (!proved) return proved.error();
  grant g;
  g.who = module_id.empty() ? grant::kind::device : grant::kind::module;
  g.device_id = device_id;
  g.module_id = module_id;
  g.auth = proved->method == registry::auth_type::certificate_authority ? telemetry::auth_method::x509_ca
                                                                         : telemetry::auth_method::x509_self_signed;
  g.rights = static_cast<auth::permissions>(auth::permission::device_connect);
  const auto not_after = std::chrono::duration_cast<std::chrono::seconds>(proved->not_after.time_since_epoch()).count();
  // A certificate without an expiry the check could read: the grant lasts as long as the link.
  g.expiry = not_after > 0 ? not_after : std::numeric_limits<std::int64_t>::max();
  if (module_id.empty()) {
    auto d = svc.registry.get_device(device_id);
    if (!d) return d.error();
    g.generation_id = d->generation_id;
  } else {
    auto m = svc.registry.get_module(device_id, module_id);
    if (!m) return m.error();
    g.generation_id = m->generation_id;
  }
  return g;
}

result<grant> check_token(const token_services& svc, const audience& aud, std::string_view token) {
  switch (aud.what) {
    case audience::kind::device:
    case audience::kind::module: {
      auto who = svc.auth.authenticate_device(token, aud.device_id, aud.module_id);
      if (!who) return who.error();
      grant g;
      g.who = aud.what == audience::kind::module ? grant::kind::module : grant::kind::device;
      g.device_id = who->device_id;
      g.module_id = who->module_id;
      g.rights = who->rights;
      g.expiry = who->expiry;
      // The generation id tells the identity's incarnations apart on its telemetry.
      if (g.who == grant::kind::module) {
        auto m = svc.registry.get_module(g.device_id, g.module_id);
        if (!m) return m.error();
        g.generation_id = m->generation_id;
      } else {
        auto d = svc.registry.get_device(g.device_id);
        if (!d) return d.error();
        g.generation_id = d->generation_id;
      }
      return g;
    }
    case audience::kind::hub: {
      auto who = svc.auth.authorize(token, svc.auth.identity().host_name, auth::permission::service_connect);
      if (!who) return who.error();
      grant g;
      g.who = grant::kind::hub;
      g.rights = who->rights;
      g.expiry = who->expiry;
      g.auth = telemetry::auth_method::policy;
      return g;
    }
    case audience::kind::event_hub: {
      const std::string& host = svc.auth.identity().host_name;
      if (!same_host(aud.host, host))
        return make_error(errc::unauthorized, "The audience names another host than this hub (" + host + ")");
      const std::string target = "sb://" + aud.host + "/" + aud.entity;
      auto who = svc.auth.authorize(token, target, auth::permission::service_connect, auth::key_encoding::raw_text);
      if (!who) return who.error();
      grant g;
      g.who = grant::kind::event_hub;
      g.entity = aud.entity;
      g.rights = who->rights;
      g.expiry = who->expiry;
      g.auth = telemetry::auth_method::policy;
      return g;
    }
    case audience::kind::invalid: break;
  }
  return make_error(errc::unauthorized, "The put-token audience is not a device, module or hub of this IoT hub");
}

}  // namespace hub::amqp_head
