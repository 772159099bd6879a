#include "heads/mqtt/c2d.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"

#include <algorithm>

namespace hub::mqtt_head {

namespace {

void add(std::string& bag, std::string_view key, std::string_view value) {
  if (!bag.empty()) bag.push_back('&');
  bag += text::url_encode(key);
  bag.push_back('=');
  bag += text::url_encode(value);
}

void add_if(std::string& bag, std::string_view key, std::string_view value) {
  if (!value.empty()) add(bag, key, value);
}

}  // namespace

std::string c2d_property_bag(const c2d::delivery& d) {
  const c2d::outgoing& m = d.msg;
  std::string bag;
  add_if(bag, "$.mid", m.message_id);
  add(bag, "$.to", d.to);
  add_if(bag, "$.cid", m.correlation_id);
  add_if(bag, "$.uid", m.user_id);
  add_if(bag, "$.ct", m.content_type);
  add_if(bag, "$.ce", m.content_encoding);
  if (m.expiry) add(bag, "$.exp", to_iso8601(*m.expiry));
  add(bag, "iothub-ack", c2d::to_string(m.ack));
  for (const auto& [key, value] : m.properties) {
    // iothub-ack is a system property (above), whatever the sender's head left in the list.
    if (!key.empty() && key != "iothub-ack") add(bag, key, value);
  }
  return bag;
}

std::string c2d_topic(const c2d::delivery& d) {
  return "devices/" + d.device_id + "/messages/devicebound/" + c2d_property_bag(d);
}

std::optional<std::uint8_t> c2d_qos(const std::vector<mqtt::subscription>& subs, const client_identity& id) {
  if (!id.module_id.empty()) return std::nullopt;
  const std::string prefix = "devices/" + id.device_id + "/messages/devicebound/";
  std::optional<std::uint8_t> qos;
  for (const mqtt::subscription& s : subs) {
    if (s.filter.size() != prefix.size() + 1 || !s.filter.starts_with(prefix)) continue;
    if (s.filter.back() != '#' && s.filter.back() != '+') continue;
    qos = std::max<std::uint8_t>(qos.value_or(0), std::min<std::uint8_t>(s.qos, 1));
  }
  return qos;
}

void c2d_window::notify() noexcept {
  maybe_more_ = true;
  if (receiving_) notified_meanwhile_ = true;
}

std::size_t c2d_window::to_receive() noexcept {
  if (receiving_ || !maybe_more_ || out_.size() >= capacity_) return 0;
  receiving_ = true;
  notified_meanwhile_ = false;
  return capacity_ - out_.size();
}

void c2d_window::received(std::size_t asked, std::size_t got) noexcept {
  receiving_ = false;
  // A full answer may have left more behind; a short one emptied the queue of enqueued messages,
  // unless something arrived (or a lock lapsed) after the receive looked.
  maybe_more_ = got >= asked || notified_meanwhile_;
  notified_meanwhile_ = false;
}

std::uint16_t c2d_window::sent(std::string lock_token) {
  // At most capacity_ (far below 65535) ids are in use, so a free one is always near.
  do {
    if (++last_id_ == 0) last_id_ = 1;
  } while (out_.contains(last_id_));
  out_.emplace(last_id_, std::move(lock_token));
  return last_id_;
}

std::optional<std::string> c2d_window::acked(std::uint16_t packet_id) {
  auto it = out_.find(packet_id);
  if (it == out_.end()) return std::nullopt;
  std::string token = std::move(it->second);
  out_.erase(it);
  return token;
}

std::vector<std::string> c2d_window::drain() {
  std::vector<std::string> tokens;
  tokens.reserve(out_.size());
  for (auto& [id, token] : out_) tokens.push_back(std::move(token));
  out_.clear();
  return tokens;
}

}  // namespace hub::mqtt_head
