#pragma once
// Device-to-cloud telemetry: validates and stamps a message, then appends it durably to its
// device's partition of the event log.
//
// Owner: the hub (composition root). Thread safety: send() may be called from any thread; the
// completion runs on the event log's writer thread once the message is on disk, so a protocol
// head acknowledges (PUBACK, AMQP accepted, HTTP 204) only then.
#include "base/clock.hpp"
#include "domain/telemetry/message.hpp"
#include "storage/event_log.hpp"

#include <functional>

namespace hub::telemetry {

struct options {
  std::size_t max_message_bytes = 256 * 1024;   // IoT Hub's D2C limit
};

class service {
 public:
  using done_fn = std::function<void(result<storage::log_position>)>;

  service(storage::event_log& log, options opt = {});

  // The partition of a device: a stable hash of its id (FNV-1a), so a device's messages stay in
  // order in one partition across restarts as long as the partition count is unchanged.
  std::uint32_t partition_for(std::string_view device_id) const noexcept;

  // MessageTooLarge (done called at once) when billed_size exceeds the limit.
  void send(const message& m, done_fn done);

  storage::event_log& log() noexcept { return log_; }

 private:
  storage::event_log& log_;
  options options_;
};

}  // namespace hub::telemetry
