#pragma once
// MQTT persistent sessions (CleanSession = 0), per client id: the subscriptions. The Azure device
// SDK connects with CleanSession = 0 and does not subscribe again after its token-renewal
// reconnect (nor its twin client after a network reconnect), so the hub must remember them
// (protocol/device.md §2.4). Queued QoS 1 cloud-to-device messages belong to the C2D service, not
// here.
//
// In memory: a hubd restart forgets the sessions (devices then see session present = 0).
// Owner: the composition root. Thread safety: every method may be called from any thread (one
// mutex; every operation is a short map operation, so the I/O threads may call it).
#include "codec/mqtt/packets.hpp"

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hub::mqtt_head {

class session_store {
 public:
  struct opened {
    bool present = false;       // CONNACK's session present flag
    std::uint64_t token = 0;    // identifies this connection's use of the session, for close()
  };

  // A CONNECT was accepted. clean: any stored session is discarded, and this one is discarded
  // again when the connection ends (MQTT 3.1.1 §3.1.2.4). Otherwise the stored session, if any,
  // resumes (present = true) or a new one starts.
  opened open(const std::string& client_id, bool clean);

  // Adds or replaces the subscription to `filter` (§3.8.4: same filter, new QoS).
  void subscribe(const std::string& client_id, const std::string& filter, std::uint8_t qos);
  void unsubscribe(const std::string& client_id, std::string_view filter);
  std::vector<mqtt::subscription> subscriptions(const std::string& client_id) const;

  // The connection that opened the session with `token` ended. A clean session is discarded,
  // unless a newer connection of the same client id has opened it since.
  void close(const std::string& client_id, std::uint64_t token, bool clean);

  std::size_t size() const;

 private:
  struct session {
    std::vector<mqtt::subscription> subscriptions;
    std::uint64_t token = 0;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, session> sessions_;
  std::uint64_t next_token_ = 0;
};

}  // namespace hub::mqtt_head
