#include "domain/telemetry/service.hpp"

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

}  // namespace hub::telemetry
