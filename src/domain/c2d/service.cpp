#include "domain/c2d/service.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/log.hpp"
#include "domain/registry/service.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace hub::c2d {

namespace bj = boost::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string_view to_string(ack_mode a) noexcept {
  switch (a) {
    case ack_mode::none: return "none";
    case ack_mode::positive: return "positive";
    case ack_mode::negative: return "negative";
    case ack_mode::full: return "full";
  }
  return "none";
}

std::optional<ack_mode> parse_ack(std::string_view s) noexcept {
  if (s == "none") return ack_mode::none;
  if (s == "positive") return ack_mode::positive;
  if (s == "negative") return ack_mode::negative;
  if (s == "full") return ack_mode::full;
  return std::nullopt;
}

std::string_view to_string(outcome o) noexcept {
  switch (o) {
    case outcome::success: return "Success";
    case outcome::expired: return "Expired";
    case outcome::delivery_count_exceeded: return "DeliveryCountExceeded";
    case outcome::rejected: return "Rejected";
    case outcome::purged: return "Purged";
  }
  return "Success";
}

std::string_view description(outcome o) noexcept {
  switch (o) {
    case outcome::success: return "Success";
    case outcome::expired: return "Message expired";
    case outcome::delivery_count_exceeded: return "Message delivery count exceeded";
    case outcome::rejected: return "Message rejected";
    case outcome::purged: return "Message purged";
  }
  return "Success";
}

std::string feedback_json(const feedback_batch& b) {
  bj::array out;
  out.reserve(b.records.size());
  for (const feedback_record& r : b.records) {
    out.push_back(bj::object{
        {"originalMessageId", r.original_message_id},
        {"enqueuedTimeUtc", to_iso8601(r.enqueued_time)},
        {"statusCode", to_string(r.status)},
        {"description", description(r.status)},
        {"deviceId", r.device_id},
        {"deviceGenerationId", r.device_generation_id},
    });
  }
  return json::serialize(out);
}

namespace {

// Storage keys. Device ids never contain '/', so "<device>/<sequence>" is unambiguous, and the
// fixed-width hex sequence keeps a device's messages in send order in a scan.
constexpr std::string_view message_prefix = "c2d/m/";
constexpr std::string_view feedback_prefix = "c2d/f/";
constexpr std::string_view sequence_key = "c2d/next";

std::string hex16(std::uint64_t n) { return fmt::format("{:016x}", n); }
std::string message_key(std::string_view device_id, std::uint64_t seq) {
  return fmt::format("{}{}/{}", message_prefix, device_id, hex16(seq));
}
std::string feedback_key(std::uint64_t seq) { return fmt::format("{}{}", feedback_prefix, hex16(seq)); }

std::int64_t to_ms(sys_time t) { return duration_cast<milliseconds>(t.time_since_epoch()).count(); }
sys_time from_ms(std::int64_t ms) { return sys_time{duration_cast<sys_time::duration>(milliseconds{ms})}; }

// Body plus the property names and values: what counts against the 64 KB limit.
std::size_t billed_size(const outgoing& m) {
  std::size_t n = m.body.size() + m.message_id.size() + m.correlation_id.size() + m.user_id.size() +
                  m.content_type.size() + m.content_encoding.size();
  for (const auto& [k, v] : m.properties) n += k.size() + v.size();
  return n;
}

bool wants_feedback(ack_mode ack, outcome o) {
  switch (ack) {
    case ack_mode::none: return false;
    case ack_mode::full: return true;
    case ack_mode::positive: return o == outcome::success;
    case ack_mode::negative: return o != outcome::success;
  }
  return false;
}

std::string encode_message(const delivery& d, std::string_view generation_id) {
  bj::array props;
  for (const auto& [k, v] : d.msg.properties) props.push_back(bj::array{bj::string(k), bj::string(v)});
  bj::object o{
      {"d", d.device_id},
      {"g", generation_id},
      {"s", d.sequence_number},
      {"e", to_ms(d.enqueued_time)},
      {"x", to_ms(*d.msg.expiry)},
      {"n", d.delivery_count},
      {"a", to_string(d.msg.ack)},
      {"mid", d.msg.message_id},
      {"cid", d.msg.correlation_id},
      {"uid", d.msg.user_id},
      {"ct", d.msg.content_type},
      {"ce", d.msg.content_encoding},
      {"p", std::move(props)},
      {"b", crypto::base64_encode(d.msg.body)},
  };
  return json::serialize(o);
}

// The stored form back; nullopt for a record this version cannot read (logged, then skipped).
std::optional<std::pair<delivery, std::string>> decode_message(std::string_view bytes) {
  auto v = json::parse(bytes);
  if (!v || !v->is_object()) return std::nullopt;
  const bj::object& o = v->as_object();
  try {
    delivery d;
    d.device_id = std::string(o.at("d").as_string());
    d.sequence_number = o.at("s").to_number<std::uint64_t>();
    d.enqueued_time = from_ms(o.at("e").to_number<std::int64_t>());
    d.msg.expiry = from_ms(o.at("x").to_number<std::int64_t>());
    d.delivery_count = o.at("n").to_number<std::uint32_t>();
    d.msg.ack = parse_ack(o.at("a").as_string()).value_or(ack_mode::none);
    d.msg.message_id = std::string(o.at("mid").as_string());
    d.msg.correlation_id = std::string(o.at("cid").as_string());
    d.msg.user_id = std::string(o.at("uid").as_string());
    d.msg.content_type = std::string(o.at("ct").as_string());
    d.msg.content_encoding = std::string(o.at("ce").as_string());
    for (const bj::value& p : o.at("p").as_array()) {
      const bj::array& kv = p.as_array();
      d.msg.properties.emplace_back(std::string(kv.at(0).as_string()), std::string(kv.at(1).as_string()));
    }
    auto body = crypto::base64_decode(o.at("b").as_string());
    if (!body) return std::nullopt;
    d.msg.body = std::move(*body);
    d.to = fmt::format("/devices/{}/messages/devicebound", d.device_id);
    return std::pair{std::move(d), std::string(o.at("g").as_string())};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string encode_feedback(const feedback_record& r) {
  return json::serialize(bj::object{
      {"m", r.original_message_id},
      {"t", to_ms(r.enqueued_time)},
      {"s", to_string(r.status)},
      {"d", r.device_id},
      {"g", r.device_generation_id},
  });
}

std::optional<feedback_record> decode_feedback(std::string_view bytes) {
  auto v = json::parse(bytes);
  if (!v || !v->is_object()) return std::nullopt;
  const bj::object& o = v->as_object();
  try {
    feedback_record r;
    r.original_message_id = std::string(o.at("m").as_string());
    r.enqueued_time = from_ms(o.at("t").to_number<std::int64_t>());
    const std::string_view s = o.at("s").as_string();
    bool known = false;
    for (outcome c : {outcome::success, outcome::expired, outcome::delivery_count_exceeded, outcome::rejected,
                      outcome::purged}) {
      if (to_string(c) == s) {
        r.status = c;
        known = true;
      }
    }
    if (!known) return std::nullopt;
    r.device_id = std::string(o.at("d").as_string());
    r.device_generation_id = std::string(o.at("g").as_string());
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

error lock_lost(std::string_view device_id) {
  return make_error(errc::device_message_lock_lost,
                    fmt::format("the lock on the message for device '{}' is unknown or has expired", device_id));
}

}  // namespace

service::service(storage::kv& kv, registry::service& registry, const clock& clk, options opt)
    : kv_(kv), registry_(registry), clock_(clk), options_(opt) {}

result<void> service::load() {
  auto log = hub::log::get("c2d");
  std::scoped_lock lock(mutex_);
  queues_.clear();
  feedback_.clear();
  std::uint64_t highest = 0;
  std::size_t skipped = 0;

  auto next = kv_.get(sequence_key);
  if (!next) return next.error();
  if (*next) highest = std::max<std::uint64_t>(highest, std::strtoull((*next)->c_str(), nullptr, 10));

  auto scanned = kv_.scan(message_prefix, {}, [&](std::string_view, std::string_view value) {
    auto decoded = decode_message(value);
    if (!decoded) {
      ++skipped;
      return true;
    }
    auto& [d, generation] = *decoded;
    highest = std::max(highest, d.sequence_number + 1);
    const std::uint64_t seq = d.sequence_number;
    entry e{std::move(d), std::move(generation), {}};
    queues_[e.d.device_id].entries.emplace(seq, std::move(e));
    return true;
  });
  if (!scanned) return scanned.error();

  std::size_t records = 0;
  scanned = kv_.scan(feedback_prefix, {}, [&](std::string_view key, std::string_view value) {
    auto rec = decode_feedback(value);
    const std::uint64_t seq = std::strtoull(std::string(key.substr(feedback_prefix.size())).c_str(), nullptr, 16);
    if (!rec || seq == 0) {
      ++skipped;
      return true;
    }
    highest = std::max(highest, seq + 1);
    feedback_.emplace(seq, stored_feedback{std::move(*rec), {}, {}});
    ++records;
    return true;
  });
  if (!scanned) return scanned.error();

  next_sequence_ = std::max<std::uint64_t>(highest, 1);
  std::size_t messages = 0;
  for (const auto& [_, q] : queues_) messages += q.entries.size();
  if (messages > 0 || records > 0)
    log->info("loaded {} cloud-to-device messages for {} devices and {} feedback records", messages, queues_.size(),
              records);
  if (skipped > 0) log->warn("skipped {} unreadable cloud-to-device records", skipped);
  return {};
}

result<std::uint64_t> service::send(std::string_view device_id, outgoing m) {
  if (billed_size(m) > options_.max_message_bytes) {
    return make_error(errc::message_too_large,
                      fmt::format("the message is {} bytes; cloud-to-device messages are limited to {} bytes",
                                  billed_size(m), options_.max_message_bytes));
  }
  // Outside mutex_: the registry calls pending() (our lock) while it holds its own.
  auto dev = registry_.get_device(device_id);
  if (!dev) return dev.error();

  const sys_time now = clock_.now();
  const sys_time latest = now + options_.max_ttl;
  if (!m.expiry) m.expiry = now + options_.default_ttl;
  if (*m.expiry > latest) m.expiry = latest;

  std::uint64_t seq = 0;
  {
    std::scoped_lock lock(mutex_);
    // Not a structured binding: clang 14 (the fuzz preset) cannot capture one in a lambda.
    const auto emplaced = queues_.try_emplace(std::string(device_id));
    const auto qit = emplaced.first;
    const bool created = emplaced.second;
    queue& q = qit->second;
    // Drops the queue entry this call made if the message does not go in.
    const auto undo = [&] {
      if (created) queues_.erase(qit);
    };
    if (q.entries.size() >= options_.max_queue_depth) {
      undo();
      return make_error(errc::device_max_queue_depth_exceeded,
                        fmt::format("device '{}' already has {} cloud-to-device messages pending (the limit)",
                                    device_id, options_.max_queue_depth));
    }
    entry e;
    e.d.msg = std::move(m);
    e.d.device_id = std::string(device_id);
    e.d.to = fmt::format("/devices/{}/messages/devicebound", device_id);
    e.d.sequence_number = seq = next_sequence_;
    e.d.enqueued_time = now;
    e.generation_id = dev->generation_id;

    storage::write_batch batch;
    batch.put(message_key(device_id, seq), encode_message(e.d, e.generation_id));
    batch.put(std::string(sequence_key), std::to_string(seq + 1));
    if (auto w = kv_.write(batch, true); !w) {
      undo();
      return w.error();
    }
    ++next_sequence_;
    q.entries.emplace(seq, std::move(e));
  }
  notify({std::string(device_id)}, false);
  return seq;
}

result<std::size_t> service::purge(std::string_view device_id) {
  auto dev = registry_.get_device(device_id);
  if (!dev) return dev.error();
  bool feedback = false;
  std::size_t purged = 0;
  {
    std::scoped_lock lock(mutex_);
    auto qit = queues_.find(std::string(device_id));
    if (qit == queues_.end()) return std::size_t{0};
    queue& q = qit->second;
    storage::write_batch batch;
    std::vector<feedback_record> records;
    for (auto& [seq, e] : q.entries) {
      batch.del(message_key(device_id, seq));
      if (wants_feedback(e.d.msg.ack, outcome::purged)) {
        records.push_back({e.d.msg.message_id, clock_.now(), outcome::purged, e.d.device_id, e.generation_id});
      }
    }
    std::uint64_t seq = next_sequence_;
    for (const feedback_record& r : records) batch.put(feedback_key(seq++), encode_feedback(r));
    batch.put(std::string(sequence_key), std::to_string(seq));
    if (auto w = kv_.write(batch, true); !w) return w.error();
    for (feedback_record& r : records) feedback_.emplace(next_sequence_++, stored_feedback{std::move(r), {}, {}});
    purged = q.entries.size();
    feedback = !records.empty();
    queues_.erase(qit);
  }
  notify({}, feedback);
  return purged;
}

std::size_t service::pending(std::string_view device_id) const {
  std::scoped_lock lock(mutex_);
  auto it = queues_.find(std::string(device_id));
  return it == queues_.end() ? 0 : it->second.entries.size();
}

std::vector<delivery> service::receive(std::string_view device_id, std::size_t max) {
  std::vector<delivery> out;
  bool feedback = false;
  {
    std::scoped_lock lock(mutex_);
    auto qit = queues_.find(std::string(device_id));
    if (qit == queues_.end() || max == 0) return out;
    queue& q = qit->second;
    const sys_time now = clock_.now();
    for (auto it = q.entries.begin(); it != q.entries.end() && out.size() < max;) {
      entry& e = it->second;
      if (!e.d.lock_token.empty()) {
        ++it;
        continue;
      }
      if (*e.d.msg.expiry <= now) {
        auto next = std::next(it);
        if (settle_locked(q, it, outcome::expired, &feedback)) it = next;
        else ++it;
        continue;
      }
      e.d.lock_token = crypto::uuid_v4();
      e.lock_until = now + options_.lock_timeout;
      out.push_back(e.d);
      ++it;
    }
    if (q.entries.empty()) queues_.erase(qit);
  }
  if (feedback) notify({}, true);
  return out;
}

result<service::held> service::hold(std::string_view device_id, std::string_view lock_token, bool* released) {
  auto qit = lock_token.empty() ? queues_.end() : queues_.find(std::string(device_id));
  if (qit == queues_.end()) return lock_lost(device_id);
  for (auto it = qit->second.entries.begin(); it != qit->second.entries.end(); ++it) {
    entry& e = it->second;
    if (e.d.lock_token != lock_token) continue;
    if (e.lock_until <= clock_.now()) {
      // The lock lapsed: the message is receivable again, and this settlement comes too late.
      e.d.lock_token.clear();
      *released = true;
      return lock_lost(device_id);
    }
    return held{qit, it};
  }
  return lock_lost(device_id);
}

result<void> service::settle_locked(queue& q, std::map<std::uint64_t, entry>::iterator it, std::optional<outcome> fb,
                                    bool* notify_feedback) {
  const entry& e = it->second;
  storage::write_batch batch;
  batch.del(message_key(e.d.device_id, e.d.sequence_number));
  std::optional<feedback_record> rec;
  if (fb && wants_feedback(e.d.msg.ack, *fb)) {
    rec = feedback_record{e.d.msg.message_id, clock_.now(), *fb, e.d.device_id, e.generation_id};
    batch.put(feedback_key(next_sequence_), encode_feedback(*rec));
    batch.put(std::string(sequence_key), std::to_string(next_sequence_ + 1));
  }
  if (auto w = kv_.write(batch, true); !w) {
    hub::log::get("c2d")->error("cannot settle a cloud-to-device message for '{}': {}", e.d.device_id,
                                w.error().message);
    return w.error();
  }
  if (rec) {
    feedback_.emplace(next_sequence_++, stored_feedback{std::move(*rec), {}, {}});
    if (notify_feedback) *notify_feedback = true;
  }
  q.entries.erase(it);
  return {};
}

result<void> service::settle(std::string_view device_id, std::string_view lock_token, outcome o) {
  bool feedback = false;
  bool released = false;
  result<void> r;
  {
    std::scoped_lock lock(mutex_);
    auto h = hold(device_id, lock_token, &released);
    if (!h) {
      r = h.error();
    } else {
      r = settle_locked(h->q->second, h->it, o, &feedback);
      if (r && h->q->second.entries.empty()) queues_.erase(h->q);
    }
  }
  notify(released ? std::vector<std::string>{std::string(device_id)} : std::vector<std::string>{}, feedback);
  return r;
}

result<void> service::complete(std::string_view device_id, std::string_view lock_token) {
  return settle(device_id, lock_token, outcome::success);
}

result<void> service::reject(std::string_view device_id, std::string_view lock_token) {
  return settle(device_id, lock_token, outcome::rejected);
}

result<void> service::abandon(std::string_view device_id, std::string_view lock_token) {
  bool feedback = false;
  bool receivable = false;
  result<void> r;
  {
    std::scoped_lock lock(mutex_);
    auto h = hold(device_id, lock_token, &receivable);
    if (!h) {
      r = h.error();
    } else if (entry& e = h->it->second; e.d.delivery_count + 1 >= options_.max_delivery_count) {
      r = settle_locked(h->q->second, h->it, outcome::delivery_count_exceeded, &feedback);
      if (r && h->q->second.entries.empty()) queues_.erase(h->q);
    } else {
      delivery next = e.d;
      ++next.delivery_count;
      next.lock_token.clear();
      storage::write_batch batch;
      batch.put(message_key(device_id, next.sequence_number), encode_message(next, e.generation_id));
      r = kv_.write(batch, true);
      if (r) {
        e.d = std::move(next);
        receivable = true;
      }
    }
  }
  notify(receivable ? std::vector<std::string>{std::string(device_id)} : std::vector<std::string>{}, feedback);
  return r;
}

void service::unlock(std::string_view device_id, std::string_view lock_token) {
  bool released = false;
  {
    std::scoped_lock lock(mutex_);
    auto h = hold(device_id, lock_token, &released);
    if (h) {
      h->it->second.d.lock_token.clear();
      released = true;
    }
  }
  if (released) notify({std::string(device_id)}, false);
}

std::optional<feedback_batch> service::receive_feedback() {
  std::scoped_lock lock(mutex_);
  feedback_batch b;
  const sys_time now = clock_.now();
  for (auto& [seq, f] : feedback_) {
    if (!f.lock_token.empty()) continue;
    if (b.lock_token.empty()) b.lock_token = crypto::uuid_v4();
    f.lock_token = b.lock_token;
    f.lock_until = now + options_.feedback_lock_timeout;
    b.records.push_back(f.rec);
    b.enqueued_time = std::max(b.enqueued_time, f.rec.enqueued_time);
    if (b.records.size() >= options_.feedback_batch_records) break;
  }
  if (b.records.empty()) return std::nullopt;
  return b;
}

result<void> service::complete_feedback(std::string_view lock_token) {
  bool released = false;
  auto r = complete_feedback_locked(lock_token, &released);
  // A lapsed lock made the records receivable again: a waiting receiver should take them.
  if (released) notify({}, true);
  return r;
}

result<void> service::complete_feedback_locked(std::string_view lock_token, bool* released) {
  std::scoped_lock lock(mutex_);
  storage::write_batch batch;
  std::vector<std::uint64_t> done;
  const sys_time now = clock_.now();
  bool lapsed = false;
  for (auto& [seq, f] : feedback_) {
    if (lock_token.empty() || f.lock_token != lock_token) continue;
    if (f.lock_until <= now) lapsed = true;
    batch.del(feedback_key(seq));
    done.push_back(seq);
  }
  if (done.empty()) return make_error(errc::device_message_lock_lost, "the feedback lock is unknown or has expired");
  if (lapsed) {
    for (std::uint64_t seq : done) feedback_[seq].lock_token.clear();
    *released = true;
    return make_error(errc::device_message_lock_lost, "the feedback lock has expired");
  }
  if (auto w = kv_.write(batch, true); !w) return w.error();
  for (std::uint64_t seq : done) feedback_.erase(seq);
  return {};
}

void service::abandon_feedback(std::string_view lock_token) {
  bool any = false;
  {
    std::scoped_lock lock(mutex_);
    for (auto& [seq, f] : feedback_) {
      if (!lock_token.empty() && f.lock_token == lock_token) {
        f.lock_token.clear();
        any = true;
      }
    }
  }
  if (any) notify({}, true);
}

void service::sweep() {
  std::vector<std::string> receivable;
  bool feedback = false;
  {
    std::scoped_lock lock(mutex_);
    const sys_time now = clock_.now();
    for (auto qit = queues_.begin(); qit != queues_.end();) {
      queue& q = qit->second;
      bool unlocked = false;
      for (auto it = q.entries.begin(); it != q.entries.end();) {
        entry& e = it->second;
        auto next = std::next(it);
        if (*e.d.msg.expiry <= now) {
          // Expired in any state, locked ones too: a later settlement gets DeviceMessageLockLost.
          if (!settle_locked(q, it, outcome::expired, &feedback)) {
            ++it;
            continue;
          }
        } else if (!e.d.lock_token.empty() && e.lock_until <= now) {
          e.d.lock_token.clear();
          unlocked = true;
        }
        it = next;
      }
      if (unlocked) receivable.push_back(qit->first);
      if (q.entries.empty()) qit = queues_.erase(qit);
      else ++qit;
    }

    storage::write_batch expired;
    std::vector<std::uint64_t> gone;
    for (auto& [seq, f] : feedback_) {
      if (f.rec.enqueued_time + options_.feedback_ttl <= now) {
        expired.del(feedback_key(seq));
        gone.push_back(seq);
      } else if (!f.lock_token.empty() && f.lock_until <= now) {
        f.lock_token.clear();
        feedback = true;
      }
    }
    if (!gone.empty()) {
      if (auto w = kv_.write(expired, false); w) {
        for (std::uint64_t seq : gone) feedback_.erase(seq);
      }
    }
  }
  notify(receivable, feedback);
}

void service::on_registry_change(const registry::change& c) {
  if (c.what != registry::change::kind::device_deleted) return;
  std::scoped_lock lock(mutex_);
  storage::write_batch batch;
  auto qit = queues_.find(c.device_id);
  if (qit != queues_.end()) {
    for (const auto& [seq, e] : qit->second.entries) batch.del(message_key(c.device_id, seq));
  }
  std::vector<std::uint64_t> gone;
  for (const auto& [seq, f] : feedback_) {
    if (f.rec.device_id == c.device_id) {
      batch.del(feedback_key(seq));
      gone.push_back(seq);
    }
  }
  if (batch.empty()) return;
  if (auto w = kv_.write(batch, true); !w) {
    hub::log::get("c2d")->error("cannot drop the cloud-to-device queue of deleted device '{}': {}", c.device_id,
                                w.error().message);
    return;
  }
  if (qit != queues_.end()) queues_.erase(qit);
  for (std::uint64_t seq : gone) feedback_.erase(seq);
}

void service::notify(const std::vector<std::string>& devices, bool feedback) {
  if (device_notifier_) {
    for (const std::string& d : devices) device_notifier_(d);
  }
  if (feedback && feedback_notifier_) feedback_notifier_();
}

}  // namespace hub::c2d
