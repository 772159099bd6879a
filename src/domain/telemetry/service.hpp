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
#include <vector>

namespace hub::telemetry {

struct options {
  std::size_t max_message_bytes = 256 * 1024;   // IoT Hub's D2C limit
};

// The partition of a device in a log of `partitions`: a stable hash of its id (FNV-1a), so a
// device's messages stay in order in one partition across restarts.
std::uint32_t partition_of(std::string_view device_id, std::uint32_t partitions) noexcept;

// Message routing in front of the event log (routing::service): when set, send() hands every
// message that passed validation to it instead of appending it to the log itself.
class router {
 public:
  virtual ~router() = default;
  // Delivers `m` wherever the routes say; `done` runs once it is durable everywhere it goes (on
  // some log's writer thread), or at once when it goes nowhere.
  virtual void route(const message& m, std::uint32_t partition,
                     std::function<void(result<storage::log_position>)> done) = 0;
  // Several messages of one device (one partition), in order: `done` runs once, when all are
  // durable everywhere they go, or with the first failure. The default routes them one by one.
  virtual void route_batch(const std::vector<message>& ms, std::uint32_t partition,
                           std::function<void(result<void>)> done);
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

  // Messages of one device, in order (what one read of its connection brought): appended to its
  // partition as one batch, `done` once, after all are durable. One message over the size
  // limit fails the whole batch with MessageTooLarge (done called at once, nothing appended).
  using batch_done_fn = std::function<void(result<void>)>;
  void send_batch(const std::vector<message>& ms, batch_done_fn done);

  // Set before serving; not synchronised. Null: every message goes to the log (no routing).
  void set_router(router* r) noexcept { router_ = r; }

  storage::event_log& log() noexcept { return log_; }

 private:
  storage::event_log& log_;
  options options_;
  router* router_ = nullptr;
};

}  // namespace hub::telemetry
