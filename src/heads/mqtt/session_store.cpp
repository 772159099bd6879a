#include "heads/mqtt/session_store.hpp"

#include <algorithm>

namespace hub::mqtt_head {

session_store::opened session_store::open(const std::string& client_id, bool clean) {
  std::scoped_lock lock(mutex_);
  opened out;
  out.token = ++next_token_;
  auto it = sessions_.find(client_id);
  if (clean) {
    // A clean session still needs an entry while connected, for its subscriptions.
    sessions_[client_id] = session{{}, out.token};
    return out;
  }
  if (it == sessions_.end()) {
    sessions_.emplace(client_id, session{{}, out.token});
    return out;
  }
  out.present = true;
  it->second.token = out.token;
  return out;
}

void session_store::subscribe(const std::string& client_id, const std::string& filter, std::uint8_t qos) {
  std::scoped_lock lock(mutex_);
  auto& subs = sessions_[client_id].subscriptions;
  auto same = std::find_if(subs.begin(), subs.end(), [&](const mqtt::subscription& s) { return s.filter == filter; });
  if (same != subs.end()) {
    same->qos = qos;
    return;
  }
  subs.push_back(mqtt::subscription{filter, qos});
}

void session_store::unsubscribe(const std::string& client_id, std::string_view filter) {
  std::scoped_lock lock(mutex_);
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return;
  std::erase_if(it->second.subscriptions, [&](const mqtt::subscription& s) { return s.filter == filter; });
}

std::vector<mqtt::subscription> session_store::subscriptions(const std::string& client_id) const {
  std::scoped_lock lock(mutex_);
  auto it = sessions_.find(client_id);
  return it == sessions_.end() ? std::vector<mqtt::subscription>{} : it->second.subscriptions;
}

void session_store::close(const std::string& client_id, std::uint64_t token, bool clean) {
  if (!clean) return;
  std::scoped_lock lock(mutex_);
  auto it = sessions_.find(client_id);
  if (it != sessions_.end() && it->second.token == token) sessions_.erase(it);
}

std::size_t session_store::size() const {
  std::scoped_lock lock(mutex_);
  return sessions_.size();
}

}  // namespace hub::mqtt_head
