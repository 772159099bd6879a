#pragma once
// Wakes Event Hubs receivers that have read everything in their partition when new events are
// durable. The event log has one durable listener; this is it, and it fans the news out to the
// receivers waiting on each partition.
//
// Owner: the composition root, which makes it after the event log and drops it before the log
// closes (the destructor unregisters). Thread safety: every method may be called from any thread;
// callbacks run on the event log's writer thread (or the caller's, when already due): keep them
// short (post to your own executor).
#include "storage/event_log.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hub::amqp_head {

class partition_watch;

// An event hub the Event Hubs-compatible endpoint serves: the built-in one (the telemetry log,
// under the hub's name) or a custom routing endpoint's (its own log, under the endpoint's name).
struct event_hub {
  std::string name;
  storage::event_log* log = nullptr;
  partition_watch* watch = nullptr;
};

class partition_watch {
 public:
  explicit partition_watch(storage::event_log& log);
  ~partition_watch();
  partition_watch(const partition_watch&) = delete;
  partition_watch& operator=(const partition_watch&) = delete;

  // Calls `wake` once, as soon as the partition holds a durable record with sequence >=
  // `next_sequence` (at once if it already does). `owner` ties the wait to its receiver: once
  // the owner is gone the wait is dropped without a call.
  void wait(std::uint32_t partition, std::int64_t next_sequence, std::weak_ptr<void> owner, std::function<void()> wake);

  // The event log's durable listener.
  void notify(std::uint32_t partition, std::int64_t last_sequence);

  std::size_t waiting() const;

  // Which receivers read a partition for a consumer group, with Event Hubs' epoch (owner level)
  // rules: a receiver with epoch E displaces every receiver of that partition and group whose
  // epoch is <= E or that has none; it is refused while one with a higher epoch holds it; a
  // receiver without epoch is refused while any epoch receiver holds it.
  struct holder {
    const void* conn = nullptr;  // with `link`: names the receiver for release()
    std::uint64_t link = 0;
    std::weak_ptr<void> owner;   // gone: the holder no longer counts
    std::optional<std::int64_t> epoch;
    std::function<void(std::string reason)> displace;  // called (outside the lock) when displaced
  };
  // Why a receiver may not read: amqp:link:stolen (epochs) or amqp:not-found (no such group).
  struct refusal {
    std::string condition;
    std::string description;
  };
  // Nothing when the receiver may read. `group`: the consumer group as the client named it
  // (compared case-insensitively).
  std::optional<refusal> claim(std::uint32_t partition, const std::string& group, holder h);
  // The consumer groups receivers may name besides $Default (case-insensitive). Set before
  // the listeners start.
  void set_consumer_groups(const std::vector<std::string>& groups);
  bool has_consumer_group(const std::string& group) const;
  void release(std::uint32_t partition, const std::string& group, const void* conn, std::uint64_t link);
  std::size_t holders(std::uint32_t partition, const std::string& group) const;

 private:
  struct waiter {
    std::int64_t next_sequence = 0;
    std::weak_ptr<void> owner;
    std::function<void()> wake;
  };
  struct slot {
    std::int64_t last_sequence = -1;
    std::vector<waiter> waiters;
  };

  storage::event_log& log_;
  mutable std::mutex mutex_;
  std::vector<slot> slots_;
  mutable std::mutex owners_mutex_;
  std::map<std::pair<std::uint32_t, std::string>, std::vector<holder>> owners_;  // by partition, lower-case group
  std::vector<std::string> groups_{"$default"};  // lower case
};

}  // namespace hub::amqp_head
