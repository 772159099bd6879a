#pragma once
// What the AMQP head reaches: the domain services it calls. Light (references only): the
// composition root and the listener's header include it.
#include <vector>

namespace hub {
class clock;
}
namespace hub::auth {
class service;
}
namespace hub::registry {
class service;
}
namespace hub::telemetry {
class service;
}
namespace hub::connections {
class connection_table;
}
namespace hub::certificates {
class service;
}
namespace hub::c2d {
class service;
}
namespace hub::twins {
class service;
}
namespace hub::methods {
class service;
}

namespace hub::throttling {
class throttles;
}

namespace hub::amqp_head {

class partition_watch;
class feedback_watch;
struct event_hub;

// Owned by the composition root; every member outlives the listeners.
struct services {
  const auth::service& auth;
  registry::service& registry;
  telemetry::service& telemetry;
  connections::connection_table& connections;
  const clock& clk;
  // The Event Hubs-compatible endpoint over the telemetry event log; null: not served.
  partition_watch* watch = nullptr;
  // X.509 devices (TLS client certificates); null: devices must put a SAS token.
  const certificates::service* certs = nullptr;
  // Cloud-to-device messages and their feedback; null: C2D sends are refused and devicebound
  // receivers get nothing.
  c2d::service* c2d = nullptr;
  // Wakes feedback receivers: the composition root points c2d's feedback notifier at it.
  feedback_watch* feedback = nullptr;
  // Device and module twins; null: twin links are refused (amqp:not-implemented).
  twins::service* twins = nullptr;
  // Direct methods; null: methods links are refused (amqp:not-implemented).
  methods::service* methods = nullptr;
  // The event hubs served by name, the built-in one first (its log and watch are the telemetry
  // log and `watch`); null: the built-in one only, under any name.
  const std::vector<event_hub>* event_hubs = nullptr;
  // Operation throttles (D2C, C2D sends, device twin requests); null: none.
  throttling::throttles* throttles = nullptr;
};

}  // namespace hub::amqp_head
