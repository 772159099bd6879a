#include "domain/connections/connection_table.hpp"

#include "domain/registry/service.hpp"

#include <fmt/format.h>

namespace hub::connections {
namespace {

// '/' is not a legal id character, so "d/m" never collides with a device id.
std::string key_of(const identity& who) {
  return who.module_id.empty() ? who.device_id : fmt::format("{}/{}", who.device_id, who.module_id);
}

}  // namespace

connection_table::connection_table(registry::service& registry, const clock& clk, options opt)
    : registry_(registry), clock_(clk), options_(opt) {}

connection_table::shard& connection_table::shard_of(std::string_view device_id) const noexcept {
  // By device id only, so a device and its modules share a shard (closing "everything of a
  // device" later takes one lock).
  return shards_[std::hash<std::string_view>{}(device_id) % shard_count];
}

result<attachment> connection_table::attach(const identity& who, std::shared_ptr<messaging::device_link> link) {
  const std::string key = key_of(who);
  const sys_time now = clock_.now();
  attachment out;
  {
    shard& s = shard_of(who.device_id);
    std::scoped_lock lock(s.mutex);
    auto marked = registry_.mark_connected(who.device_id, who.module_id, now);
    if (!marked) return marked.error();
    out.presence = *marked;
    auto [it, inserted] = s.entries.try_emplace(key);
    if (!inserted) out.previous = std::move(it->second.link);
    it->second = entry{std::move(link), out.presence};
    if (inserted) {
      connected_.fetch_add(1, std::memory_order_relaxed);
      if (who.module_id.empty()) connected_devices_.fetch_add(1, std::memory_order_relaxed);
    }
    // Under the shard lock, so an identity's events keep the table's order. A replacement emits
    // no disconnected event for the old link: the identity stays connected.
    emit(connection_event{connection_event::kind::connected, who, now, {}});
  }
  return out;
}

void connection_table::detach(const identity& who, const messaging::device_link* link, std::string_view reason) {
  const std::string key = key_of(who);
  const sys_time now = clock_.now();
  {
    shard& s = shard_of(who.device_id);
    std::scoped_lock lock(s.mutex);
    auto it = s.entries.find(key);
    if (it == s.entries.end() || it->second.link.get() != link) return;  // replaced, or never attached
    registry_.mark_disconnected(who.device_id, who.module_id, it->second.presence, now);
    s.entries.erase(it);
    connected_.fetch_sub(1, std::memory_order_relaxed);
    if (who.module_id.empty()) connected_devices_.fetch_sub(1, std::memory_order_relaxed);
    emit(connection_event{connection_event::kind::disconnected, who, now, std::string(reason)});
  }
}

std::shared_ptr<messaging::device_link> connection_table::find(const identity& who) const {
  const std::string key = key_of(who);
  shard& s = shard_of(who.device_id);
  std::scoped_lock lock(s.mutex);
  auto it = s.entries.find(key);
  return it == s.entries.end() ? nullptr : it->second.link;
}

std::size_t connection_table::close(const identity& who, std::string_view reason) {
  std::vector<std::shared_ptr<messaging::device_link>> links;
  {
    shard& s = shard_of(who.device_id);
    std::scoped_lock lock(s.mutex);
    if (!who.module_id.empty()) {
      if (auto it = s.entries.find(key_of(who)); it != s.entries.end()) links.push_back(it->second.link);
    } else {
      const std::string modules = who.device_id + "/";
      for (const auto& [key, e] : s.entries) {
        if (key == who.device_id || key.starts_with(modules)) links.push_back(e.link);
      }
    }
  }
  for (const auto& link : links) link->close(std::string(reason));
  return links.size();
}

void connection_table::on_registry_change(const registry::change& c) {
  switch (c.what) {
    case registry::change::kind::device_deleted:
      close({c.device_id, {}}, "device deleted");
      return;
    case registry::change::kind::device_disabled:
      close({c.device_id, {}}, "device disabled");
      return;
    case registry::change::kind::module_deleted:
      close({c.device_id, c.module_id}, "module deleted");
      return;
    case registry::change::kind::device_created:
    case registry::change::kind::module_created:
      return;
  }
}

std::vector<connection_event> connection_table::recent_events() const {
  std::scoped_lock lock(events_mutex_);
  return {events_.begin(), events_.end()};
}

void connection_table::emit(connection_event e) {
  if (listener_) listener_(e);
  if (options_.recent_events == 0) return;
  std::scoped_lock lock(events_mutex_);
  if (events_.size() >= options_.recent_events) events_.pop_front();
  events_.push_back(std::move(e));
}

}  // namespace hub::connections
