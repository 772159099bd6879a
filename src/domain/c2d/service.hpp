#pragma once
// Cloud-to-device messages: a durable queue per device with IoT Hub's lifecycle, and the hub-wide
// feedback queue the service side reads (protocol/semantics.md §4, service.md §6.3-6.4).
//
//   send ──► Enqueued ──receive──► Invisible (locked, lock_timeout) ──complete──► gone  (Success)
//               ▲                      │  │ ──reject──► dead-lettered                 (Rejected)
//               └──abandon (count+1)───┘  │ ──abandon at max_delivery_count──►        (DeliveryCountExceeded)
//               └──lock timeout / unlock──┘
//   expiry (any state) ──► dead-lettered (Expired);  purge ──► gone (Purged)
//
// Feedback records are made per the message's ack mode (positive: Success; negative: Expired,
// DeliveryCountExceeded, Rejected, Purged; full: both) and queued hub-wide; the service side takes
// them in batches of up to feedback_batch_records, each batch locked until completed or abandoned.
//
// Durability: a message is stored (synced) before send() returns, and leaves storage only when it
// is completed, rejected, expired, purged or dead-lettered, in the same atomic write that stores
// its feedback record. Locks live in memory only: after a crash every message is Enqueued again
// (at-least-once). Abandon persists the delivery count.
//
// Owner: hub (the composition root). Thread safety: every method may be called from any thread;
// calls that change a queue block on storage (heads call them off the I/O threads). Notifiers are
// called outside the service's lock, on the calling thread; keep them short (post to the
// connection's executor).
#include "base/clock.hpp"
#include "base/error.hpp"
#include "storage/kv.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hub::registry {
class service;
struct change;
}  // namespace hub::registry

namespace hub::c2d {

// iothub-ack as the service sets it: "none" (default), "positive", "negative", "full".
enum class ack_mode : std::uint8_t { none, positive, negative, full };
std::string_view to_string(ack_mode a) noexcept;
// Case-sensitive, as IoT Hub's spellings; nullopt for anything else (the caller rejects it).
std::optional<ack_mode> parse_ack(std::string_view s) noexcept;

// Feedback statusCode values, spelt as IoT Hub spells them by to_string().
enum class outcome : std::uint8_t { success, expired, delivery_count_exceeded, rejected, purged };
std::string_view to_string(outcome o) noexcept;
// The record's "description" text for an outcome.
std::string_view description(outcome o) noexcept;

// A message as the service sends it (azure-iothub Client.send over AMQP).
struct outgoing {
  std::string body;
  std::string message_id;        // empty: none given
  std::string correlation_id;
  std::string user_id;
  std::string content_type;
  std::string content_encoding;
  std::optional<sys_time> expiry;  // absolute-expiry-time; nullopt: now + default_ttl
  ack_mode ack = ack_mode::none;
  std::vector<std::pair<std::string, std::string>> properties;  // application properties, in order
};

// A message as a device receives it: the service's fields plus what the hub stamps.
struct delivery {
  outgoing msg;                  // msg.expiry is always set (the effective expiry)
  std::string device_id;
  std::string to;                // "/devices/<deviceId>/messages/devicebound" (id not encoded)
  std::uint64_t sequence_number = 0;  // per device queue, increasing
  sys_time enqueued_time{};
  std::uint32_t delivery_count = 0;   // abandons so far
  std::string lock_token;        // a UUID: the handle for complete / reject / abandon / unlock
};

// One feedback record, as the feedback JSON array carries it.
struct feedback_record {
  std::string original_message_id;
  sys_time enqueued_time{};      // when the record was made ("enqueuedTimeUtc")
  outcome status = outcome::success;
  std::string device_id;
  std::string device_generation_id;
};

// A locked batch of feedback records: one AMQP message to the service's feedback receiver.
struct feedback_batch {
  std::string lock_token;
  std::vector<feedback_record> records;  // 1..feedback_batch_records
  sys_time enqueued_time{};              // the batch's time (its newest record's)
};
// The batch's message body: the JSON array IoT Hub sends, e.g.
// [{"originalMessageId":"m1","enqueuedTimeUtc":"...","statusCode":"Success","description":"Success",
//   "deviceId":"d1","deviceGenerationId":"638..."}].
std::string feedback_json(const feedback_batch& b);
inline constexpr std::string_view feedback_content_type = "application/vnd.microsoft.iothub.feedback.json";

struct options {
  std::chrono::seconds default_ttl{3600};          // cloudToDevice.defaultTtlAsIso8601
  std::chrono::seconds max_ttl{48 * 3600};         // an expiry further out is cut to this
  std::uint32_t max_delivery_count = 10;           // cloudToDevice.maxDeliveryCount
  std::size_t max_queue_depth = 50;                // pending (enqueued + locked) per device
  std::size_t max_message_bytes = 64 * 1024;       // body + property names and values
  std::chrono::seconds lock_timeout{60};           // Invisible -> Enqueued when not settled
  std::chrono::seconds feedback_ttl{3600};         // cloudToDevice.feedback.ttlAsIso8601
  std::chrono::seconds feedback_lock_timeout{60};  // cloudToDevice.feedback.lockDurationAsIso8601
  std::size_t feedback_batch_records = 64;
};

class service {
 public:
  // A device's queue has messages to receive (after send, abandon, a lock lapsing or unlock).
  using device_notifier = std::function<void(std::string_view device_id)>;
  // The feedback queue has records to receive.
  using feedback_notifier = std::function<void()>;

  service(storage::kv& kv, registry::service& registry, const clock& clk, options opt = {});
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // Reads the queues and feedback records back from storage; once, before serving.
  result<void> load();

  // Set before serving; not synchronised.
  void set_device_notifier(device_notifier fn) { device_notifier_ = std::move(fn); }
  void set_feedback_notifier(feedback_notifier fn) { feedback_notifier_ = std::move(fn); }

  // --- service side ---
  // Queues a message for a device. DeviceNotFound when the device does not exist, MessageTooLarge
  // over max_message_bytes, DeviceMaximumQueueDepthExceeded when max_queue_depth are pending.
  // An expiry beyond max_ttl is cut to it; one already past is accepted and expires at the next
  // receive or sweep (Expired feedback where asked). Durable on return; returns the sequence number.
  result<std::uint64_t> send(std::string_view device_id, outgoing m);
  // Drops every pending message of the device (Purged feedback where asked); returns how many.
  // DeviceNotFound when the device does not exist.
  result<std::size_t> purge(std::string_view device_id);
  // Pending messages (enqueued + locked): the device's cloudToDeviceMessageCount.
  std::size_t pending(std::string_view device_id) const;

  // --- device side ---
  // Locks and returns up to `max` enqueued messages, oldest first; expired ones are dead-lettered
  // on the way. Empty when none.
  std::vector<delivery> receive(std::string_view device_id, std::size_t max = 1);
  // Settles a locked message. DeviceMessageLockLost when the token is unknown or its lock lapsed
  // (the message may since have been delivered again).
  result<void> complete(std::string_view device_id, std::string_view lock_token);
  result<void> reject(std::string_view device_id, std::string_view lock_token);
  // Back to Enqueued with delivery_count + 1; dead-lettered (DeliveryCountExceeded) at
  // max_delivery_count.
  result<void> abandon(std::string_view device_id, std::string_view lock_token);
  // The connection or link that held the lock went away: back to Enqueued, the count unchanged.
  // Unknown tokens are ignored.
  void unlock(std::string_view device_id, std::string_view lock_token);

  // --- feedback (service side) ---
  // Locks and returns the oldest unlocked records as one batch; nullopt when there are none.
  std::optional<feedback_batch> receive_feedback();
  // The service accepted the batch: its records are gone. DeviceMessageLockLost when unknown.
  result<void> complete_feedback(std::string_view lock_token);
  // Released / the link went away: the records become receivable again. Unknown tokens ignored.
  void abandon_feedback(std::string_view lock_token);

  // --- time and registry ---
  // Expires messages and feedback past their TTL and returns lapsed locks to the queue. The
  // composition root calls it about once a second.
  void sweep();
  // A deleted device loses its queue and its pending feedback records (no feedback is made).
  void on_registry_change(const registry::change& c);

 private:
  struct entry {
    delivery d;                       // d.lock_token empty while Enqueued
    std::string generation_id;
    sys_time lock_until{};
  };
  struct queue {
    std::map<std::uint64_t, entry> entries;  // by sequence number
  };
  struct stored_feedback {
    feedback_record rec;
    std::string lock_token;           // empty while receivable
    sys_time lock_until{};
  };

  // With mutex_ held: removes the entry (storage and memory) and records feedback per its ack.
  result<void> settle_locked(queue& q, std::map<std::uint64_t, entry>::iterator it, std::optional<outcome> fb,
                             bool* notify_feedback);
  using queue_map = std::unordered_map<std::string, queue>;
  struct held {
    queue_map::iterator q;
    std::map<std::uint64_t, entry>::iterator it;
  };
  // With mutex_ held: the message a device's lock token names, while the lock holds. A lapsed
  // lock is released here (*released = true: the message is receivable again) and reported
  // lost, like an unknown token.
  result<held> hold(std::string_view device_id, std::string_view lock_token, bool* released);
  // complete and reject: settle a held message with the outcome's feedback.
  result<void> settle(std::string_view device_id, std::string_view lock_token, outcome o);
  result<void> complete_feedback_locked(std::string_view lock_token, bool* released);
  void notify(const std::vector<std::string>& devices, bool feedback);

  storage::kv& kv_;
  registry::service& registry_;
  const clock& clock_;
  options options_;
  device_notifier device_notifier_;
  feedback_notifier feedback_notifier_;

  mutable std::mutex mutex_;
  queue_map queues_;                                  // only devices with pending messages
  std::map<std::uint64_t, stored_feedback> feedback_; // by sequence number
  // One hub-wide counter numbers messages and feedback records; stored with each write that uses
  // it, so numbers are never reused, across restarts too.
  std::uint64_t next_sequence_ = 1;
};

}  // namespace hub::c2d
