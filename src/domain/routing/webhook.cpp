#include "domain/routing/webhook.hpp"

#include "base/log.hpp"
#include "domain/routing/file_writer.hpp"

#include <fmt/format.h>

#include <charconv>

namespace hub::routing {

delivery_outcome classify(int status) noexcept {
  if (status >= 200 && status < 300) return delivery_outcome::delivered;
  if (status == 0 || status == 408 || status == 429 || status >= 500) return delivery_outcome::retry;
  return delivery_outcome::invalid;  // other 4xx, 1xx, 3xx (redirects are not followed)
}

std::chrono::milliseconds retry_delay(unsigned attempt) noexcept {
  constexpr std::chrono::milliseconds first{250};
  constexpr std::chrono::milliseconds most{30'000};
  if (attempt >= 7) return most;  // 250 ms * 2^7 = 32 s
  return std::min(most, std::chrono::milliseconds(first.count() << attempt));
}

std::string webhook_body(const std::vector<storage::log_record>& records) {
  std::string body = "[";
  bool any = false;
  for (const storage::log_record& r : records) {
    auto line = storage_json_line(r);
    if (!line) continue;
    if (any) body += ',';
    body += *line;
    any = true;
  }
  if (!any) return {};
  body += ']';
  return body;
}

std::string webhook_delivery::cursor_key(std::string_view endpoint, std::uint32_t partition) {
  return fmt::format("routing/webhook/{}/{}", endpoint, partition);
}

webhook_delivery::webhook_delivery(storage::event_log& log, storage::kv& kv, webhook_endpoint ep,
                                   std::unique_ptr<webhook_transport> t)
    : log_(log), kv_(kv), ep_(std::move(ep)), transport_(std::move(t)), next_(log.partitions(), 0) {}

webhook_delivery::~webhook_delivery() { stop(); }

result<std::unique_ptr<webhook_delivery>> webhook_delivery::open(storage::event_log& log, storage::kv& kv,
                                                                 webhook_endpoint ep,
                                                                 std::unique_ptr<webhook_transport> transport) {
  std::unique_ptr<webhook_delivery> d(new webhook_delivery(log, kv, std::move(ep), std::move(transport)));
  for (std::uint32_t p = 0; p < log.partitions(); ++p) {
    auto stored = kv.get(cursor_key(d->ep_.name, p));
    if (!stored) return stored.error();
    const storage::partition_stats st = log.stats(p);
    std::int64_t next = st.begin_sequence;
    if (*stored) {
      std::int64_t v = 0;
      const auto [ptr, ec] = std::from_chars((*stored)->data(), (*stored)->data() + (*stored)->size(), v);
      // A cursor past the log's end belongs to an older log of this name (its folder removed).
      if (ec == std::errc() && v <= st.last_sequence + 1) next = std::max(v, st.begin_sequence);
    }
    d->next_[p] = next;
  }
  return d;
}

result<void> webhook_delivery::save_cursor(std::uint32_t partition, std::int64_t next) {
  storage::write_batch b;
  b.put(cursor_key(ep_.name, partition), std::to_string(next));
  return kv_.write(b, true);
}

std::int64_t webhook_delivery::cursor(std::uint32_t partition) const {
  std::scoped_lock lock(mutex_);
  return next_.at(partition);
}

webhook_stats webhook_delivery::stats() const {
  std::scoped_lock lock(mutex_);
  return stats_;
}

std::chrono::milliseconds webhook_delivery::step() {
  const auto partitions = static_cast<std::uint32_t>(next_.size());
  for (std::uint32_t i = 0; i < partitions; ++i) {
    const std::uint32_t p = (turn_ + i) % partitions;
    std::int64_t next = cursor(p);
    const storage::partition_stats st = log_.stats(p);
    if (st.empty || st.last_sequence < next) continue;
    if (next < st.begin_sequence) {
      hub::log::get("routing")->warn("webhook '{}': partition {}: messages {}..{} expired before delivery", ep_.name, p,
                                     next, st.begin_sequence - 1);
      next = st.begin_sequence;
    }
    auto records = log_.read(p, next, ep_.batch_size, 1024 * 1024);
    if (!records) {
      hub::log::get("routing")->warn("webhook '{}': reading partition {}: {}", ep_.name, p, records.error().message);
      return retry_delay(attempt_++);
    }
    if (records->empty()) continue;
    const std::int64_t first = records->front().sequence;
    const std::int64_t last = records->back().sequence;
    webhook_request req;
    req.body = webhook_body(*records);
    delivery_outcome outcome = delivery_outcome::delivered;  // nothing decodable: skip the records
    webhook_reply reply;
    if (!req.body.empty()) {
      req.headers = {{"x-hubd-endpoint", ep_.name},
                     {"x-hubd-partition", std::to_string(p)},
                     {"x-hubd-sequence", fmt::format("{}-{}", first, last)}};
      reply = transport_->post(req);
      outcome = classify(reply.status);
    }
    if (outcome == delivery_outcome::retry) {
      const auto wait = retry_delay(attempt_);
      {
        std::scoped_lock lock(mutex_);
        ++stats_.failures;
      }
      // Logged on the first failure and then at most every ~30 s (the backoff's ceiling).
      if (attempt_ == 0 || wait == retry_delay(100))
        hub::log::get("routing")->warn("webhook '{}': POST failed ({}), retrying in {} ms", ep_.name,
                                       reply.status == 0 ? reply.error : fmt::format("HTTP {}", reply.status),
                                       wait.count());
      ++attempt_;
      return wait;  // the same partition comes first again (turn_ unchanged)
    }
    if (attempt_ > 0) hub::log::get("routing")->info("webhook '{}': delivering again", ep_.name);
    attempt_ = 0;
    if (outcome == delivery_outcome::invalid) {
      hub::log::get("routing")->warn(
          "webhook '{}': HTTP {} (non-transient rejection): {} messages of partition {} ({}..{}) skipped as invalid",
          ep_.name, reply.status, records->size(), p, first, last);
    }
    if (auto saved = save_cursor(p, last + 1); !saved) {
      hub::log::get("routing")->warn("webhook '{}': cannot save the cursor: {}", ep_.name, saved.error().message);
      return retry_delay(attempt_++);
    }
    {
      std::scoped_lock lock(mutex_);
      next_[p] = last + 1;
      if (!req.body.empty()) {
        (outcome == delivery_outcome::invalid ? stats_.invalid : stats_.delivered) += records->size();
      }
    }
    turn_ = (p + 1) % partitions;
    return std::chrono::milliseconds(0);
  }
  return idle_poll;
}

void webhook_delivery::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
}

void webhook_delivery::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  transport_->cancel();
  wake_.notify_all();
  thread_.join();
}

void webhook_delivery::run(std::stop_token stop) {
  while (!stop.stop_requested()) {
    const auto wait = step();
    if (wait.count() == 0) continue;
    std::unique_lock lock(wait_mutex_);
    wake_.wait_for(lock, stop, wait, [] { return false; });
  }
}

}  // namespace hub::routing
