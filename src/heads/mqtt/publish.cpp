#include "heads/mqtt/publish.hpp"

#include "base/json.hpp"
#include "heads/mqtt/topics.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace hub::mqtt_head {
namespace {

publish_decision close_with(std::string reason) {
  publish_decision d;
  d.what = publish_decision::action::close;
  d.reason = std::move(reason);
  return d;
}

}  // namespace

std::optional<telemetry::message> will_telemetry(const mqtt::will_message& will, const sender& who, sys_time now) {
  mqtt::publish p;
  p.topic = will.topic;
  p.payload = will.payload;
  p.qos = std::min<std::uint8_t>(will.qos, 1);
  p.retain = will.retain;
  publish_decision d = decide_publish(std::move(p), who, now);
  if (d.what != publish_decision::action::telemetry) return std::nullopt;
  std::erase_if(d.message.properties, [](const auto& kv) { return kv.first == "iothub-MessageType"; });
  d.message.properties.emplace_back("iothub-MessageType", std::string("Will"));
  return std::move(d.message);
}

publish_decision decide_publish(mqtt::publish&& p, const sender& who, sys_time now) {
  if (p.qos > 1) return close_with("QoS 2 PUBLISH (IoT Hub supports QoS 0 and 1 only)");
  const publish_target target = classify_publish(p.topic);
  switch (target.kind) {
    case publish_kind::telemetry: {
      if (target.device_id != who.device_id || target.module_id != who.module_id) {
        return close_with(fmt::format("PUBLISH to another identity's topic ({})", p.topic.substr(0, 200)));
      }
      auto props = parse_property_bag(target.property_bag);
      if (!props) return close_with("malformed property bag in the telemetry topic");
      publish_decision d;
      d.what = publish_decision::action::telemetry;
      telemetry::message& m = d.message;
      apply_properties(*props, m);
      if (p.retain) m.properties.emplace_back("mqtt-retain", std::string("true"));
      m.body = std::move(p.payload);
      m.device_id = who.device_id;
      m.module_id = who.module_id;
      m.generation_id = who.generation_id;
      m.auth = who.auth;
      m.model_id = who.model_id;
      return d;
    }
    case publish_kind::twin_get: {
      publish_decision d;
      d.what = publish_decision::action::twin;
      d.twin.what = twin_request::kind::get;
      d.twin.rid = target.request_id;
      return d;
    }
    case publish_kind::twin_patch_reported: {
      publish_decision d;
      auto patch = json::parse(p.payload);
      if (!patch) {
        d.what = publish_decision::action::answer;
        d.answer = twin_error_reply(target.request_id, patch.error(), now);
        return d;
      }
      d.what = publish_decision::action::twin;
      d.twin.what = twin_request::kind::patch_reported;
      d.twin.rid = target.request_id;
      d.twin.patch = std::move(*patch);
      return d;
    }
    case publish_kind::method_response: {
      publish_decision d;
      d.what = publish_decision::action::ignore;
      if (!target.status) {
        d.reason = fmt::format("method response with a status that is not an integer ({})", p.topic.substr(0, 200));
        return d;
      }
      if (target.request_id.empty()) {
        d.reason = fmt::format("method response without $rid ({})", p.topic.substr(0, 200));
        return d;
      }
      d.what = publish_decision::action::method_response;
      d.method = method_answer{target.request_id, *target.status, method_response_payload(std::move(p.payload))};
      return d;
    }
    case publish_kind::unknown:
      break;
  }
  return close_with(fmt::format("PUBLISH to a topic devices may not use ({})", p.topic.substr(0, 200)));
}

ack_queue::ticket ack_queue::push(std::uint16_t packet_id) {
  entries_.push_back(entry{packet_id, false});
  return first_ + in_flight() - 1;
}

void ack_queue::complete(ticket t, std::vector<std::uint16_t>& ready) {
  if (t < first_ || t - first_ >= in_flight()) return;  // not ours (or completed twice)
  entries_[head_ + (t - first_)].done = true;
  while (head_ < entries_.size() && entries_[head_].done) {
    if (entries_[head_].packet_id != 0) ready.push_back(entries_[head_].packet_id);
    ++head_;
    ++first_;
  }
  if (head_ == entries_.size()) {
    // Drained: an idle connection keeps no buffer. A busy one allocates again at its next
    // publish, at most once per batch of acknowledgements.
    head_ = 0;
    std::vector<entry>().swap(entries_);
  } else if (head_ >= 16 && head_ * 2 >= entries_.size()) {
    // Most of the buffer is done: move the waiting ones to the front (amortised O(1) per entry).
    entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
}

}  // namespace hub::mqtt_head
