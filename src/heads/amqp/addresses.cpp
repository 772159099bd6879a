#include "heads/amqp/addresses.hpp"

#include "base/text.hpp"


namespace hub::amqp_head {
namespace {

// "amqps://host/devices/d1/..." -> "/devices/d1/..."; a bare path is returned as is.
std::string_view strip_uri(std::string_view address) {
  for (std::string_view scheme : {"amqps://", "amqp://", "wss://"}) {
    if (!text::istarts_with(address, scheme)) continue;
    const auto rest = address.substr(scheme.size());
    const auto slash = rest.find('/');
    return slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  }
  return address;
}

// IoT Hub's rule for device and module ids is checked by the registry; here an id only has to
// be non-empty and free of '/' after decoding, so it names exactly one identity.
bool usable_id(std::string_view id) { return !id.empty(); }

}  // namespace

link_address parse_link_address(std::string_view address) {
  link_address out;
  if (address == "$cbs") {
    out.what = link_address::kind::cbs;
    return out;
  }
  const std::string_view path = strip_uri(address);
  if (!path.starts_with('/')) return out;
  for (std::string_view service_node :
       {"/messages/devicebound", "/messages/serviceBound/feedback", "/messages/serviceBound/filenotifications"}) {
    if (text::iequals(path, service_node)) {
      out.what = link_address::kind::service;
      return out;
    }
  }
  // Ids are taken as they are: the SDKs put them in the address raw (azure-iot-common
  // endpoint.js), and '%' is a legal character of an IoT Hub id.
  auto s = text::split(path.substr(1), '/');
  while (!s.empty() && s.back().empty()) s.pop_back();  // a trailing slash
  if (s.size() < 3 || s[0] != "devices" || !usable_id(s[1])) return out;
  std::size_t i = 2;
  std::string module;
  if (s.size() >= 5 && s[2] == "modules") {
    if (!usable_id(s[3])) return out;
    module = std::string(s[3]);
    i = 4;
  }
  const std::size_t rest = s.size() - i;
  link_address::kind k = link_address::kind::unknown;
  if (rest == 2 && s[i] == "messages" && s[i + 1] == "events") k = link_address::kind::telemetry;
  if (rest == 2 && s[i] == "messages" && s[i + 1] == "devicebound") k = link_address::kind::c2d;
  if (rest == 1 && s[i] == "twin") k = link_address::kind::twin;
  if (rest == 2 && s[i] == "methods" && s[i + 1] == "devicebound") k = link_address::kind::methods;
  if (k == link_address::kind::unknown) return out;
  out.what = k;
  out.device_id = std::string(s[1]);
  out.module_id = std::move(module);
  return out;
}

audience parse_audience(std::string_view name) {
  audience out;
  if (name.empty()) return out;
  if (text::istarts_with(name, "sb://")) {
    // Event Hubs audiences are not url-encoded.
    const std::string_view rest = name.substr(5);
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 >= rest.size()) return out;
    out.what = audience::kind::event_hub;
    out.host = std::string(rest.substr(0, slash));
    out.entity = std::string(rest.substr(slash + 1));
    return out;
  }
  // Device SDKs send the sr they signed, url-encoded as a whole: decode it once (a '%' in an id
  // arrives as %25), then split. An id that decodes to contain '/' makes the name invalid.
  auto decoded = text::url_decode(name);
  if (!decoded) return out;
  std::string_view text = *decoded;
  for (std::string_view scheme : {"amqps://", "https://"}) {
    if (text::istarts_with(text, scheme)) text = text.substr(scheme.size());
  }
  auto s = text::split(text, '/');
  while (s.size() > 1 && s.back().empty()) s.pop_back();
  if (s.empty() || s[0].empty()) return out;
  const auto id_ok = [](std::string_view id) { return !id.empty(); };
  if (s.size() == 1) {
    out.what = audience::kind::hub;
  } else if (s.size() == 3 && s[1] == "devices" && id_ok(s[2])) {
    out.what = audience::kind::device;
    out.device_id = std::string(s[2]);
  } else if (s.size() == 5 && s[1] == "devices" && id_ok(s[2]) && s[3] == "modules" && id_ok(s[4])) {
    out.what = audience::kind::module;
    out.device_id = std::string(s[2]);
    out.module_id = std::string(s[4]);
  } else {
    return out;
  }
  out.host = std::string(s[0]);
  return out;
}

bool same_host(std::string_view host, std::string_view hub_host) {
  const auto strip = [](std::string_view h) {
    const auto colon = h.rfind(':');
    if (colon == std::string_view::npos || h.find(':') != colon) return h;  // no port, or IPv6
    return h.substr(0, colon);
  };
  return text::iequals(strip(host), strip(hub_host));
}

std::string_view condition_name(errc e) {
  switch (e) {
    case errc::ok: return "";
    case errc::argument_invalid:
    case errc::argument_null:
    case errc::iothub_format_error:
    case errc::device_defined_multiple_times:
    case errc::bulk_registry_operation_failure: return "com.microsoft:argument-error";
    case errc::invalid_operation:
    case errc::method_not_allowed: return "amqp:not-allowed";
    case errc::unauthorized: return "amqp:unauthorized-access";
    case errc::quota_exceeded: return "com.microsoft:quota-exceeded";
    case errc::device_max_queue_depth_exceeded:
    case errc::too_many_devices: return "amqp:resource-limit-exceeded";
    case errc::device_not_found:
    case errc::module_not_found:
    case errc::not_found:
    case errc::device_not_online: return "amqp:not-found";
    case errc::device_already_exists:
    case errc::module_already_exists: return "com.microsoft:device-already-exists";
    case errc::precondition_failed: return "com.microsoft:precondition-failed";
    case errc::device_message_lock_lost: return "com.microsoft:message-lock-lost";
    case errc::message_too_large: return "amqp:link:message-size-exceeded";
    case errc::throttled: return "com.microsoft:device-container-throttled";
    case errc::server_error: return "amqp:internal-error";
    // Both are retried by the SDKs as ServiceUnavailableError.
    case errc::service_unavailable:
    case errc::gateway_timeout: return "com.microsoft:timeout";
  }
  return "amqp:internal-error";
}

}  // namespace hub::amqp_head
