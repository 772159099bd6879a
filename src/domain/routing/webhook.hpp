#pragma once
// A webhook endpoint (hubd's own endpoint type): the messages routed to it are durable in the
// endpoint's event log the moment the device is acknowledged, like every custom endpoint's; a
// delivery worker reads that log from a cursor and POSTs the messages to the endpoint's HTTPS URL:
//   POST <target>  Content-Type: application/json; charset=utf-8
//                  x-hubd-endpoint: <name>, x-hubd-partition: <p>, x-hubd-sequence: <first>-<last>
//                  + the endpoint's headers
//   [ {"EnqueuedTimeUtc", "Properties", "SystemProperties", "Body"}, ... ]   (storage records, file_writer.hpp)
// One JSON array per POST, at most batchSize messages of one partition, in the partition's order.
// The answer decides (classify()): 2xx delivered; a network error, 408, 429 or 5xx is transient
// and the same batch is retried after retry_delay() (250 ms doubling to 30 s, no limit: the log's
// retention bounds it); any other status (4xx, 3xx: redirects are not followed) is IoT Hub's
// "non-transient rejection": the batch is counted invalid, logged and skipped. The cursor (the next
// sequence of each partition) is written to kv, synced, after each delivered or skipped batch:
// a message is delivered at least once, a restart may send the last batch again (the
// x-hubd-sequence header tells a receiver which messages it already has). One request in flight
// per endpoint; partitions take turns.
//
// Owner: the composition root. start() runs the worker on its own thread; stop() cancels the
// request in flight (transport::cancel) and joins. step() is the worker's one move (tests call it).
#include "base/error.hpp"
#include "domain/routing/config.hpp"
#include "storage/event_log.hpp"
#include "storage/kv.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hub::routing {

enum class delivery_outcome : std::uint8_t { delivered, retry, invalid };

// status 0 = no answer (connection, TLS or timeout error).
delivery_outcome classify(int status) noexcept;
// The wait before retry `attempt` (0 = the first retry): 250 ms * 2^attempt, at most 30 s.
std::chrono::milliseconds retry_delay(unsigned attempt) noexcept;

struct webhook_request {
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // hubd's x-hubd-* (the endpoint's own are the transport's)
};

struct webhook_reply {
  int status = 0;     // 0: no answer
  std::string error;  // why there was no answer, or the start of the answer's body
};

// The HTTP side (server/webhook_client.cpp: Beast over TLS). post() blocks; cancel() may be
// called from another thread and makes the current and every later post() fail at once.
class webhook_transport {
 public:
  virtual ~webhook_transport() = default;
  virtual webhook_reply post(const webhook_request& request) = 0;
  virtual void cancel() = 0;
};

// The body of one POST: a JSON array of the records' storage lines (records that do not decode
// are left out). Empty when none decodes.
std::string webhook_body(const std::vector<storage::log_record>& records);

struct webhook_stats {
  std::uint64_t delivered = 0;  // messages
  std::uint64_t invalid = 0;    // messages skipped after a non-transient rejection
  std::uint64_t failures = 0;   // attempts that will be retried
};

class webhook_delivery {
 public:
  static constexpr std::chrono::milliseconds idle_poll{50};

  // Reads the cursor from kv (none: the oldest retained record of each partition).
  static result<std::unique_ptr<webhook_delivery>> open(storage::event_log& log, storage::kv& kv, webhook_endpoint ep,
                                                       std::unique_ptr<webhook_transport> transport);
  ~webhook_delivery();

  // One move: POSTs the next batch (if any) and returns how long to wait before the next step:
  // zero after a delivered or skipped batch, idle_poll when nothing waits, the backoff after a
  // transient failure (the same batch goes again).
  std::chrono::milliseconds step();

  void start();
  void stop();

  const webhook_endpoint& endpoint() const noexcept { return ep_; }
  std::int64_t cursor(std::uint32_t partition) const;
  webhook_stats stats() const;

  // kv key of a partition's cursor.
  static std::string cursor_key(std::string_view endpoint, std::uint32_t partition);

 private:
  webhook_delivery(storage::event_log& log, storage::kv& kv, webhook_endpoint ep, std::unique_ptr<webhook_transport> t);
  result<void> save_cursor(std::uint32_t partition, std::int64_t next);
  void run(std::stop_token stop);

  storage::event_log& log_;
  storage::kv& kv_;
  webhook_endpoint ep_;
  std::unique_ptr<webhook_transport> transport_;
  mutable std::mutex mutex_;  // cursors and stats (step() runs on one thread; readers are tests)
  std::vector<std::int64_t> next_;
  webhook_stats stats_;
  std::uint32_t turn_ = 0;      // the partition to look at first
  unsigned attempt_ = 0;        // consecutive failures of the current batch
  std::mutex wait_mutex_;
  std::condition_variable_any wake_;
  std::jthread thread_;
};

}  // namespace hub::routing
