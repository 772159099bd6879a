#pragma once
// The connection table: which devices and modules are connected, and through which
// messaging::device_link. A second connection of the same identity replaces the first (the
// caller closes the one attach() returns), as IoT Hub does. Attach and detach record the
// connection state in the registry (connectionState, connectionStateUpdatedTime, and the
// lastActivityTime kept in memory while connected) and emit connection events.
//
// Owner: the composition root (hubd's main), shared by every protocol head and, later, the
// services that reach devices (C2D, twins, methods). Thread safety: every method may be called
// from any thread. The table is sharded by device id, a mutex per shard; attach() and detach()
// write the registry (a non-synced storage write) while holding their shard's lock, so that the
// recorded state follows the table's order, and therefore must run off the I/O threads (on the
// heads' blocking pool), like every call that may touch storage.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/connections/device_link.hpp"
#include "domain/registry/presence.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hub::registry {
class service;
struct change;
}

namespace hub::connections {

// A device ("d1", "") or one of its modules ("d1", "m1").
struct identity {
  std::string device_id;
  std::string module_id;
};

// Connected / disconnected, for routing's deviceConnectionStateEvents later. Today they are kept
// in a bounded in-memory list (recent_events()) and passed to an optional listener.
struct connection_event {
  enum class kind { connected, disconnected };
  kind what = kind::connected;
  identity who;
  sys_time at{};
  std::string reason;  // disconnected only: why, for the log ("client disconnected", "replaced"...)
};

struct options {
  std::size_t recent_events = 1024;  // how many connection events recent_events() keeps
};

// What attach() hands back to the head.
struct attachment {
  // The identity's previous connection, replaced by this one: the caller closes it. Null when
  // there was none.
  std::shared_ptr<messaging::device_link> previous;
  // The live state the registry shows: touch() it on every message (lastActivityTime).
  std::shared_ptr<registry::presence> presence;
};

class connection_table {
 public:
  // Called on the thread that attached or detached, under the identity's shard lock (so an
  // identity's events arrive in order). Keep it short and non-blocking (queue the event
  // elsewhere), and never call back into the table from it.
  using listener_fn = std::function<void(const connection_event&)>;

  connection_table(registry::service& registry, const clock& clk, options opt = {});
  connection_table(const connection_table&) = delete;
  connection_table& operator=(const connection_table&) = delete;

  // Makes `link` the identity's connection and marks it Connected in the registry. Fails (and
  // changes nothing) when the registry does: DeviceNotFound / ModuleNotFound if the identity was
  // deleted since it authenticated, or a storage error. Blocks on storage.
  result<attachment> attach(const identity& who, std::shared_ptr<messaging::device_link> link);

  // Removes `link` if it is still the identity's connection (a replaced link changes nothing)
  // and marks the identity Disconnected, persisting its last activity. Blocks on storage.
  void detach(const identity& who, const messaging::device_link* link, std::string_view reason);

  // The identity's current connection, or null.
  std::shared_ptr<messaging::device_link> find(const identity& who) const;

  // Closes the connections the identity is deleted or disabled out of: a module's own, or a
  // device's and all its modules' (module_id empty). The links are closed outside the shard lock
  // (close() only posts); each head then detaches as usual. Returns how many were closed.
  std::size_t close(const identity& who, std::string_view reason);
  // The registry's change listener (registry::service::set_change_listener), as the composition
  // root connects it: a deleted device or module, or a disabled device, loses its connections.
  void on_registry_change(const registry::change& c);

  // Connected identities (devices and modules), and connected devices only (modules not counted):
  // the latter is IoT Hub's connectedDeviceCount.
  std::size_t connected() const noexcept { return connected_.load(std::memory_order_relaxed); }
  std::size_t connected_devices() const noexcept { return connected_devices_.load(std::memory_order_relaxed); }

  // The last options::recent_events connection events, oldest first.
  std::vector<connection_event> recent_events() const;
  // Set before serving; not synchronised with attach/detach.
  void set_listener(listener_fn fn) { listener_ = std::move(fn); }

 private:
  struct entry {
    std::shared_ptr<messaging::device_link> link;
    std::shared_ptr<registry::presence> presence;
  };
  struct shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, entry> entries;  // "<device>" or "<device>/<module>"
  };
  static constexpr std::size_t shard_count = 64;

  shard& shard_of(std::string_view device_id) const noexcept;
  void emit(connection_event e);

  registry::service& registry_;
  const clock& clock_;
  options options_;
  mutable std::array<shard, shard_count> shards_;
  std::atomic<std::size_t> connected_{0};
  std::atomic<std::size_t> connected_devices_{0};
  listener_fn listener_;
  mutable std::mutex events_mutex_;
  std::deque<connection_event> events_;
};

}  // namespace hub::connections
