#include "heads/mqtt/connect.hpp"

#include "domain/throttling/throttle.hpp"

#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "heads/mqtt/c2d.hpp"
#include "heads/mqtt/session_store.hpp"
#include "heads/mqtt/twin_methods.hpp"

#include <fmt/format.h>

namespace hub::mqtt_head {
namespace {

connect_refusal refuse(mqtt::connack_code code, std::string reason) { return connect_refusal{code, std::move(reason)}; }

admission refused(mqtt::connack_code code, std::string reason) {
  admission a;
  a.code = code;
  a.reason = std::move(reason);
  return a;
}

admission refused(const error& e) { return refused(connack_for(e.code), e.message); }

sys_time from_seconds(std::int64_t s) { return sys_time{std::chrono::seconds{s}}; }

}  // namespace

std::variant<connect_refusal, connect_claim> check_connect(const mqtt::connect& c) {
  if (c.protocol_level != 4) {
    return refuse(mqtt::connack_code::unacceptable_protocol_version,
                  fmt::format("protocol level {} (only MQTT 3.1.1, level 4, is served)", c.protocol_level));
  }
  auto id = parse_client_id(c.client_id);
  if (!id) return refuse(mqtt::connack_code::identifier_rejected, "client id is not <deviceId> or <deviceId>/<moduleId>");
  if (!c.username) return refuse(mqtt::connack_code::bad_username_or_password, "no username");
  auto user = parse_username(*c.username, *id);
  if (!user) return refuse(mqtt::connack_code::bad_username_or_password, "the username names another identity than the client id");
  if (c.will) {
    if (c.will->qos > 1) return refuse(mqtt::connack_code::not_authorized, "Will QoS 2 (IoT Hub supports QoS 0 and 1 only)");
    const publish_target target = classify_publish(c.will->topic);
    if (target.kind != publish_kind::telemetry || target.device_id != id->device_id || target.module_id != id->module_id) {
      return refuse(mqtt::connack_code::not_authorized,
                    fmt::format("Will topic {} is not the identity's telemetry topic", c.will->topic.substr(0, 200)));
    }
    if (!parse_property_bag(target.property_bag)) {
      return refuse(mqtt::connack_code::not_authorized, "malformed property bag in the Will topic");
    }
  }
  connect_claim claim;
  claim.will = c.will;
  claim.id = std::move(*id);
  claim.user = std::move(*user);
  claim.client_id = c.client_id;
  claim.clean_session = c.clean_session;
  claim.sas_token = c.password;
  return claim;
}

mqtt::connack_code connack_for(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return mqtt::connack_code::accepted;
    // Credentials or identity: the device must not retry them.
    case errc::unauthorized:
    case errc::device_not_found:
    case errc::module_not_found:
    case errc::not_found:
    case errc::argument_invalid:
    case errc::argument_null:
    case errc::iothub_format_error:
    case errc::invalid_operation:
    case errc::device_defined_multiple_times:
    case errc::bulk_registry_operation_failure:
    case errc::quota_exceeded:
    case errc::device_max_queue_depth_exceeded:
    case errc::device_not_online:
    case errc::method_not_allowed:
    case errc::device_already_exists:
    case errc::module_already_exists:
    case errc::precondition_failed:
    case errc::device_message_lock_lost:
    case errc::message_too_large:
    case errc::too_many_devices:
      return mqtt::connack_code::not_authorized;
    // The hub's own trouble: worth the device's retries.
    case errc::throttled:
    case errc::server_error:
    case errc::service_unavailable:
    case errc::gateway_timeout:
      return mqtt::connack_code::server_unavailable;
  }
  return mqtt::connack_code::server_unavailable;
}

admission admit(const services& svc, const admission_request& req) {
  const connect_claim& claim = req.claim;
  admission out;
  if (claim.sas_token) {
    auto who = svc.auth.authenticate_device(*claim.sas_token, claim.id.device_id, claim.id.module_id);
    if (!who) return refused(who.error());
    out.expires = from_seconds(who->expiry);
    // A token signed with a shared access policy (skn) rather than the identity's own key.
    auto token = auth::parse_sas_token(*claim.sas_token);
    out.method = token && !token->key_name.empty() ? telemetry::auth_method::policy : telemetry::auth_method::sas;
  } else if (req.chain.leaf.empty()) {
    return refused(mqtt::connack_code::not_authorized, "no password and no client certificate");
  } else if (!svc.x509) {
    return refused(mqtt::connack_code::not_authorized, "X.509 authentication is not available");
  } else {
    auto verdict = svc.x509(req.chain, claim.id.device_id, claim.id.module_id);
    if (!verdict) return refused(verdict.error());
    out.method = verdict->method;
    out.expires = verdict->not_after;
  }

  // IoT Hub's "new device connections" throttle, counted once the identity is proved (callers
  // without a credential spend none of it): CONNACK 3, server unavailable, which the SDKs retry.
  if (svc.throttles != nullptr) {
    auto admitted = svc.throttles->admit(throttling::operation::connect, claim.id.device_id);
    if (!admitted) return refused(admitted.error());
  }
  auto attached = svc.connections.attach(connections::identity{claim.id.device_id, claim.id.module_id}, req.link);
  if (!attached) return refused(attached.error());
  out.attached = std::move(*attached);
  const auto session = svc.sessions.open(claim.client_id, claim.clean_session);
  if (!session) {
    // Attached already: undo it, so a refusal leaves no trace.
    svc.connections.detach(connections::identity{claim.id.device_id, claim.id.module_id}, req.link.get(),
                           "session store failure");
    return refused(session.error());
  }
  out.session_present = session->present;
  out.session_token = session->token;
  const auto subs = svc.sessions.subscriptions(claim.client_id);
  out.c2d_qos = c2d_qos(subs, claim.id);
  out.method_calls = takes_method_calls(subs);
  out.desired_updates = takes_desired_updates(subs);
  return out;
}

}  // namespace hub::mqtt_head
