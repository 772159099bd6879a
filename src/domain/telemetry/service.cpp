#include "domain/telemetry/service.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>

namespace hub::telemetry {

service::service(storage::event_log& log, options opt) : log_(log), options_(opt) {}

std::uint32_t partition_of(std::string_view device_id, std::uint32_t partitions) noexcept {
  std::uint32_t h = 2166136261u;
  for (unsigned char c : device_id) {
    h ^= c;
    h *= 16777619u;
  }
  return h % partitions;
}

std::uint32_t service::partition_for(std::string_view device_id) const noexcept {
  return partition_of(device_id, log_.partitions());
}

void service::send(const message& m, done_fn done) {
  if (billed_size(m) > options_.max_message_bytes) {
    done(make_error(errc::message_too_large, "Message size exceeds the maximum of " +
                                                 std::to_string(options_.max_message_bytes) + " bytes"));
    return;
  }
  if (router_ != nullptr) {
    router_->route(m, partition_for(m.device_id), std::move(done));
    return;
  }
  log_.append(partition_for(m.device_id), encode(m), std::move(done));
}

void router::route_batch(const std::vector<message>& ms, std::uint32_t partition,
                         std::function<void(result<void>)> done) {
  struct join {
    std::atomic<std::size_t> left;
    std::mutex mutex;
    std::optional<error> failure;
    std::function<void(result<void>)> done;
  };
  if (ms.empty()) {
    if (done) done(result<void>{});
    return;
  }
  auto j = std::make_shared<join>();
  j->left = ms.size();
  j->done = std::move(done);
  for (const auto& m : ms) {
    route(m, partition, [j](result<storage::log_position> r) {
      if (!r) {
        std::scoped_lock lock(j->mutex);
        if (!j->failure) j->failure = r.error();
      }
      if (j->left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
      if (!j->done) return;
      if (j->failure) {
        j->done(*j->failure);
      } else {
        j->done(result<void>{});
      }
    });
  }
}

void service::send_batch(const std::vector<message>& ms, batch_done_fn done) {
  if (ms.empty()) {
    done(result<void>{});
    return;
  }
  for (const auto& m : ms) {
    if (billed_size(m) > options_.max_message_bytes) {
      done(make_error(errc::message_too_large, "Message size exceeds the maximum of " +
                                                   std::to_string(options_.max_message_bytes) + " bytes"));
      return;
    }
  }
  const std::uint32_t partition = partition_for(ms.front().device_id);
  if (router_ != nullptr) {
    router_->route_batch(ms, partition, std::move(done));
    return;
  }
  std::vector<std::string> records;
  records.reserve(ms.size());
  for (const auto& m : ms) records.push_back(encode(m));
  log_.append(partition, std::move(records), [done = std::move(done)](result<std::vector<storage::log_position>> r) {
    if (!r) {
      done(r.error());
    } else {
      done(result<void>{});
    }
  });
}

}  // namespace hub::telemetry
