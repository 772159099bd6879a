#include "heads/mqtt/session_store.hpp"

#include "storage/kv.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace hub::mqtt_head {
namespace {

std::string key_of(std::string_view client_id) { return fmt::format("s/{}", client_id); }

}  // namespace

std::string encode_subscriptions(const std::vector<mqtt::subscription>& subs) {
  boost::json::array out;
  for (const auto& s : subs) out.push_back(boost::json::object{{"f", s.filter}, {"q", s.qos}});
  return boost::json::serialize(out);
}

std::optional<std::vector<mqtt::subscription>> decode_subscriptions(std::string_view text) {
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(text, ec);
  if (ec || !v.is_array()) return std::nullopt;
  std::vector<mqtt::subscription> out;
  for (const auto& item : v.get_array()) {
    const auto* o = item.if_object();
    const auto* f = o ? o->if_contains("f") : nullptr;
    const auto* q = o ? o->if_contains("q") : nullptr;
    if (!f || !f->is_string() || !q || !q->is_int64() || q->get_int64() < 0 || q->get_int64() > 1) return std::nullopt;
    out.push_back(mqtt::subscription{std::string(f->get_string()), static_cast<std::uint8_t>(q->get_int64())});
  }
  return out;
}

result<void> session_store::store(const std::string& client_id, const std::vector<mqtt::subscription>& subs) {
  if (kv_ == nullptr) return {};
  storage::write_batch batch;
  batch.put(key_of(client_id), encode_subscriptions(subs));
  return kv_->write(batch, /*sync=*/false);
}

result<session_store::opened> session_store::open(const std::string& client_id, bool clean) {
  std::scoped_lock lock(mutex_);
  opened out;
  out.token = ++next_token_;
  auto it = sessions_.find(client_id);
  if (clean) {
    if (kv_ != nullptr) {
      storage::write_batch batch;
      batch.del(key_of(client_id));
      if (auto w = kv_->write(batch, /*sync=*/false); !w) return w.error();
    }
    // A clean session still needs an entry while connected, for its subscriptions.
    sessions_[client_id] = session{{}, out.token, true};
    return out;
  }
  if (it != sessions_.end()) {
    // Resumed from memory. One opened clean by a connection still live becomes persistent.
    if (it->second.clean) {
      if (auto w = store(client_id, it->second.subscriptions); !w) return w.error();
      it->second.clean = false;
    }
    out.present = true;
    it->second.token = out.token;
    return out;
  }
  session s{{}, out.token, false};
  if (kv_ != nullptr) {
    auto stored = kv_->get(key_of(client_id));
    if (!stored) return stored.error();
    if (*stored) {
      // After a restart. An unreadable record is a session without subscriptions.
      s.subscriptions = decode_subscriptions(**stored).value_or(std::vector<mqtt::subscription>{});
      out.present = true;
    } else if (auto w = store(client_id, s.subscriptions); !w) {
      return w.error();
    }
  }
  sessions_.emplace(client_id, std::move(s));
  return out;
}

result<void> session_store::subscribe(const std::string& client_id, const std::string& filter, std::uint8_t qos) {
  std::scoped_lock lock(mutex_);
  session& s = sessions_[client_id];
  std::vector<mqtt::subscription> subs = s.subscriptions;
  auto same = std::find_if(subs.begin(), subs.end(), [&](const mqtt::subscription& x) { return x.filter == filter; });
  if (same != subs.end()) {
    same->qos = qos;
  } else {
    subs.push_back(mqtt::subscription{filter, qos});
  }
  if (!s.clean) {
    if (auto w = store(client_id, subs); !w) return w.error();
  }
  s.subscriptions = std::move(subs);
  return {};
}

result<void> session_store::unsubscribe(const std::string& client_id, std::string_view filter) {
  std::scoped_lock lock(mutex_);
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return {};
  std::vector<mqtt::subscription> subs = it->second.subscriptions;
  const auto removed = std::erase_if(subs, [&](const mqtt::subscription& s) { return s.filter == filter; });
  if (removed == 0) return {};
  if (!it->second.clean) {
    if (auto w = store(client_id, subs); !w) return w.error();
  }
  it->second.subscriptions = std::move(subs);
  return {};
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

void session_store::forget(std::string_view device_id, std::string_view module_id) {
  const std::string exact = module_id.empty() ? std::string(device_id) : fmt::format("{}/{}", device_id, module_id);
  const std::string modules = fmt::format("{}/", device_id);
  const auto gone = [&](std::string_view client_id) {
    return client_id == exact || (module_id.empty() && client_id.starts_with(modules));
  };
  std::scoped_lock lock(mutex_);
  std::erase_if(sessions_, [&](const auto& entry) { return gone(entry.first); });
  if (kv_ == nullptr) return;
  storage::write_batch batch;
  batch.del(key_of(exact));
  if (module_id.empty()) {
    (void)kv_->scan(key_of(modules), {}, [&](std::string_view key, std::string_view) {
      batch.del(std::string(key));
      return true;
    });
  }
  (void)kv_->write(batch, /*sync=*/false);  // a leftover record only makes a later session present
}

std::size_t session_store::size() const {
  std::scoped_lock lock(mutex_);
  return sessions_.size();
}

}  // namespace hub::mqtt_head
