#include "heads/amqp/partition_watch.hpp"

namespace hub::amqp_head {

partition_watch::partition_watch(storage::event_log& log) : log_(log), slots_(log.partitions()) {
  {
    std::scoped_lock lock(mutex_);
    for (std::uint32_t p = 0; p < slots_.size(); ++p) slots_[p].last_sequence = log_.stats(p).last_sequence;
  }
  log_.set_durable_listener([this](std::uint32_t partition, std::int64_t last) { notify(partition, last); });
}

partition_watch::~partition_watch() { log_.set_durable_listener({}); }

void partition_watch::wait(std::uint32_t partition, std::int64_t next_sequence, std::weak_ptr<void> owner,
                           std::function<void()> wake) {
  {
    std::scoped_lock lock(mutex_);
    if (partition >= slots_.size()) return;
    slot& s = slots_[partition];
    if (s.last_sequence < next_sequence) {
      // Waits of receivers that have gone are dropped here, so they cannot pile up on a quiet
      // partition.
      std::erase_if(s.waiters, [](const waiter& w) { return w.owner.expired(); });
      s.waiters.push_back(waiter{next_sequence, std::move(owner), std::move(wake)});
      return;
    }
  }
  if (!owner.expired()) wake();
}

void partition_watch::notify(std::uint32_t partition, std::int64_t last_sequence) {
  std::vector<waiter> due;
  {
    std::scoped_lock lock(mutex_);
    if (partition >= slots_.size()) return;
    slot& s = slots_[partition];
    s.last_sequence = std::max(s.last_sequence, last_sequence);
    for (auto it = s.waiters.begin(); it != s.waiters.end();) {
      if (it->next_sequence <= s.last_sequence || it->owner.expired()) {
        due.push_back(std::move(*it));
        it = s.waiters.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (waiter& w : due) {
    if (!w.owner.expired()) w.wake();
  }
}

std::size_t partition_watch::waiting() const {
  std::scoped_lock lock(mutex_);
  std::size_t n = 0;
  for (const slot& s : slots_) n += s.waiters.size();
  return n;
}

}  // namespace hub::amqp_head
