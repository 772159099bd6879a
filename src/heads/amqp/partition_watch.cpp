#include "heads/amqp/partition_watch.hpp"

#include <algorithm>
#include <cctype>
#include <string>

namespace hub::amqp_head {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

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

void partition_watch::set_consumer_groups(const std::vector<std::string>& groups) {
  std::scoped_lock lock(owners_mutex_);
  groups_ = {"$default"};
  for (const std::string& g : groups) {
    if (std::find(groups_.begin(), groups_.end(), lower(g)) == groups_.end()) groups_.push_back(lower(g));
  }
}

bool partition_watch::has_consumer_group(const std::string& group) const {
  std::scoped_lock lock(owners_mutex_);
  return std::find(groups_.begin(), groups_.end(), lower(group)) != groups_.end();
}

std::optional<partition_watch::refusal> partition_watch::claim(std::uint32_t partition, const std::string& group,
                                                               holder h) {
  std::vector<holder> displaced;
  std::string refusal;
  {
    std::scoped_lock lock(owners_mutex_);
    if (std::find(groups_.begin(), groups_.end(), lower(group)) == groups_.end()) {
      return partition_watch::refusal{"amqp:not-found", "The messaging entity 'consumergroups/" + group +
                                                            "' could not be found. The consumer group does not exist."};
    }
    auto& hs = owners_[{partition, lower(group)}];
    std::erase_if(hs, [](const holder& x) { return x.owner.expired(); });
    std::optional<std::int64_t> top;
    for (const holder& x : hs) {
      if (x.epoch && (!top || *x.epoch > *top)) top = x.epoch;
    }
    if (h.epoch) {
      if (top && *top > *h.epoch) {
        refusal = "Receiver with epoch '" + std::to_string(*h.epoch) + "' cannot be created because a receiver with epoch '" +
                  std::to_string(*top) + "' already exists for partition '" + std::to_string(partition) +
                  "' and consumer group '" + group + "'.";
      } else {
        displaced = std::move(hs);
        hs.clear();
      }
    } else if (top) {
      refusal = "At least one receiver for the endpoint is created with epoch of '" + std::to_string(*top) +
                "', and so non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make sure all "
                "epoch receivers are closed or disconnected.";
    }
    if (refusal.empty()) hs.push_back(h);
  }
  for (holder& x : displaced) {
    if (x.owner.expired() || !x.displace) continue;
    x.displace("New receiver with higher epoch of '" + std::to_string(*h.epoch) +
               "' is created hence current receiver " +
               (x.epoch ? "with epoch '" + std::to_string(*x.epoch) + "'" : std::string("without epoch")) +
               " is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used.");
  }
  if (refusal.empty()) return std::nullopt;
  return partition_watch::refusal{"amqp:link:stolen", refusal};
}

void partition_watch::release(std::uint32_t partition, const std::string& group, const void* conn, std::uint64_t link) {
  std::scoped_lock lock(owners_mutex_);
  auto it = owners_.find({partition, lower(group)});
  if (it == owners_.end()) return;
  std::erase_if(it->second, [&](const holder& x) { return (x.conn == conn && x.link == link) || x.owner.expired(); });
  if (it->second.empty()) owners_.erase(it);
}

std::size_t partition_watch::holders(std::uint32_t partition, const std::string& group) const {
  std::scoped_lock lock(owners_mutex_);
  auto it = owners_.find({partition, lower(group)});
  if (it == owners_.end()) return 0;
  return static_cast<std::size_t>(
      std::count_if(it->second.begin(), it->second.end(), [](const holder& x) { return !x.owner.expired(); }));
}

}  // namespace hub::amqp_head
