#pragma once
// MQTT persistent sessions (CleanSession = 0), per client id: the subscriptions. The Azure device
// SDK connects with CleanSession = 0 and does not subscribe again after its token-renewal
// reconnect (nor its twin client after a network reconnect), so the hub must remember them
// (protocol/device.md §2.4), across a restart of hubd too. Queued QoS 1 cloud-to-device messages
// belong to the C2D service, not here.
//
// Persistence: with a storage::kv, each persistent session is one record, key "s/<clientId>"
// (that is "s/<deviceId>" or "s/<deviceId>/<moduleId>"; '/' is no id character), value JSON
// [{"f":"<filter>","q":<qos>},...]. Written when a persistent session starts and on every
// SUBSCRIBE / UNSUBSCRIBE, before the SUBACK / UNSUBACK; deleted by a CleanSession = 1 connect and
// when the identity is deleted (forget()). Writes are not synced: RocksDB has them in its WAL
// once write() returns, so they survive a crash of hubd (SIGKILL), and only a crash of the machine
// can lose the last few — a device then sees session present = 0, which the MQTT contract covers.
// A sync per connect would cost an fsync per device in a reconnect storm. Without a kv (unit
// tests), sessions live in memory only.
//
// Owner: the composition root. Thread safety: every method may be called from any thread (one
// mutex, held across the storage calls so that a session's writes keep their order). With a kv
// they block on storage: call them on the blocking pool, never on an I/O thread.
#include "base/error.hpp"
#include "codec/mqtt/packets.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hub::storage {
class kv;
}

namespace hub::mqtt_head {

class session_store {
 public:
  struct opened {
    bool present = false;       // CONNACK's session present flag
    std::uint64_t token = 0;    // identifies this connection's use of the session, for close()
  };

  explicit session_store(storage::kv* kv = nullptr) : kv_(kv) {}

  // A CONNECT was accepted. clean: any stored session is discarded, and this one is discarded
  // again when the connection ends (MQTT 3.1.1 §3.1.2.4). Otherwise the stored session, if any
  // (in memory, else in storage after a restart), resumes (present = true) or a new one starts.
  // A storage failure: the error (the connection is refused with a retryable code).
  result<opened> open(const std::string& client_id, bool clean);

  // Adds or replaces the subscription to `filter` (§3.8.4: same filter, new QoS). Stored first
  // for a persistent session; on a storage failure nothing changes.
  result<void> subscribe(const std::string& client_id, const std::string& filter, std::uint8_t qos);
  result<void> unsubscribe(const std::string& client_id, std::string_view filter);
  std::vector<mqtt::subscription> subscriptions(const std::string& client_id) const;

  // The connection that opened the session with `token` ended. A clean session is discarded,
  // unless a newer connection of the same client id has opened it since.
  void close(const std::string& client_id, std::uint64_t token, bool clean);

  // The identity is gone (deleted): its sessions, and for a device (module_id empty) its modules'
  // sessions, in memory and in storage. A device re-created under the same id starts afresh.
  void forget(std::string_view device_id, std::string_view module_id);

  std::size_t size() const;

 private:
  struct session {
    std::vector<mqtt::subscription> subscriptions;
    std::uint64_t token = 0;
    bool clean = false;
  };
  result<void> store(const std::string& client_id, const std::vector<mqtt::subscription>& subs);

  storage::kv* kv_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, session> sessions_;
  std::uint64_t next_token_ = 0;
};

// The storage form of a session's subscriptions (exposed for tests).
std::string encode_subscriptions(const std::vector<mqtt::subscription>& subs);
std::optional<std::vector<mqtt::subscription>> decode_subscriptions(std::string_view text);

}  // namespace hub::mqtt_head
