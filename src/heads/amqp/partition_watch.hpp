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
#include <memory>
#include <mutex>
#include <vector>

namespace hub::amqp_head {

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
};

}  // namespace hub::amqp_head
