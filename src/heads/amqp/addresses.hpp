#pragma once
// IoT Hub's AMQP names as plain functions over strings (no Proton, no Asio): link addresses, CBS
// audiences, and errc -> AMQP error condition. Table-tested in tests/addresses_tests.cpp.
#include "base/error.hpp"

#include <string>
#include <string_view>

namespace hub::amqp_head {

// What a link's address names (device.md §4.3, service.md §6, §7).
struct link_address {
  enum class kind {
    cbs,        // "$cbs": put-token requests (target) and their replies (source)
    telemetry,  // "/devices/<d>/messages/events", "/devices/<d>/modules/<m>/messages/events"
    c2d,        // "/devices/<d>/messages/devicebound" (device receives)
    twin,       // "/devices/<d>[/modules/<m>]/twin"
    methods,    // "/devices/<d>[/modules/<m>]/methods/devicebound"
    service,    // the service SDK's "/messages/devicebound", "/messages/serviceBound/feedback" and
                // "/messages/serviceBound/filenotifications"
    unknown,
  };
  kind what = kind::unknown;
  std::string device_id;
  std::string module_id;
};

// Accepts the path alone (what the SDKs send) or a full "amqps://host/..." URI. Ids are taken
// raw, as the SDKs send them; anything else is kind::unknown.
link_address parse_link_address(std::string_view address);

// What a CBS put-token's `name` (its audience) is for.
struct audience {
  enum class kind {
    device,     // "<host>/devices/<d>": device SDKs, url-encoded ("host%2Fdevices%2Fd1")
    module,     // "<host>/devices/<d>/modules/<m>"
    hub,        // "<host>": the service SDK's Client (C2D, feedback, file notifications)
    event_hub,  // "sb://<host>/<entity>/...": the Event Hubs-compatible endpoint
    invalid,
  };
  kind what = kind::invalid;
  std::string host;       // as given, with any ":port"
  std::string device_id;
  std::string module_id;
  std::string entity;     // event_hub: the path after the host ("<hub>/ConsumerGroups/...")
};

// Percent-decodes the name first when it has no '/' (device SDKs encode the whole sr).
audience parse_audience(std::string_view name);

// True when `host` (from an audience, maybe with ":port") names this hub, whose host name is
// `hub_host` (case-insensitive, port ignored).
bool same_host(std::string_view host, std::string_view hub_host);

// The AMQP error condition IoT Hub uses for an error: what azure-iot-amqp-base maps back to the
// SDK's error classes (device.md §4.5). Exhaustive: a new errc breaks the build here.
std::string_view condition_name(errc e);

}  // namespace hub::amqp_head
