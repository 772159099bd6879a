#pragma once
// The live connection state of one connected device or module: what GET /devices/{id} shows as
// connectionState "Connected", connectionStateUpdatedTime and lastActivityTime while a protocol
// head holds a connection for it.
//
// Lifecycle: made by registry::service::mark_connected, shared by the registry's in-memory
// overlay and the connection table (and, through it, the head's connection), dropped at
// mark_disconnected. Thread safety: touch() and the getters may be called from any thread;
// touch() is one relaxed atomic store, cheap enough for every message.
#include "base/clock.hpp"

#include <atomic>
#include <string>

namespace hub::registry {

class presence {
 public:
  presence(std::string generation_id, sys_time connected_at, sys_time last_activity)
      : generation_id_(std::move(generation_id)),
        connected_at_(connected_at),
        last_activity_(last_activity.time_since_epoch().count()) {}
  presence(const presence&) = delete;
  presence& operator=(const presence&) = delete;

  // A message went either way: lastActivityTime. Kept in memory only; persisted at disconnect.
  void touch(sys_time at) noexcept { last_activity_.store(at.time_since_epoch().count(), std::memory_order_relaxed); }

  sys_time last_activity() const noexcept {
    return sys_time{sys_time::duration{last_activity_.load(std::memory_order_relaxed)}};
  }
  sys_time connected_at() const noexcept { return connected_at_; }
  // The identity's generation when it connected: a device deleted and re-created under the same
  // id is another identity, and must not show this connection.
  const std::string& generation_id() const noexcept { return generation_id_; }

 private:
  const std::string generation_id_;
  const sys_time connected_at_;
  std::atomic<sys_time::rep> last_activity_;
};

}  // namespace hub::registry
