#pragma once
// hubctl monitor-events: device-to-cloud events as `az iot hub monitor-events` shows them.
//
// Three parts, so that a second source can feed the same output:
// - `event`: one received event in the shape of IoT Hub's built-in (Event Hubs-compatible)
//   endpoint: partition, sequence number, offset, enqueued time, body, system properties under
//   their wire names (message-id, iothub-connection-device-id, ...) and application properties.
// - `source`: where events come from. `open_log_source` reads the event log in a data folder,
//   read-only, while hubd writes it. A remote source over the Event Hubs endpoint (AMQP) will
//   build the same `event`s from the message annotations and properties.
// - formatting (`to_json_line`, `to_human`) and the loop (`run`): filter, print, stop after a
//   timeout or a count.
//
// Thread safety: none needed; hubctl runs all of it on its main thread.
#include "base/error.hpp"
#include "domain/telemetry/message.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hub::storage {
struct log_record;
}

namespace hub::cli::monitor {

using property_list = std::vector<std::pair<std::string, telemetry::value>>;

struct event {
  std::string device_id;
  std::string module_id;               // empty for a device's own messages
  std::uint32_t partition = 0;
  std::int64_t sequence = 0;
  std::string offset;                  // a string, as Event Hubs offsets are
  std::int64_t enqueued_ms = 0;        // milliseconds since the epoch
  std::string body;                    // raw bytes
  property_list system_properties;     // wire names, in a stable order
  property_list properties;            // application properties, in the order sent
};

// The event a stored telemetry message makes: hub-stamped properties (connection ids, auth
// method, generation id, enqueued time, message source) next to those the device set.
event from_stored(const telemetry::message& m, std::uint32_t partition, const storage::log_record& record);

// The value of a system property, or nullptr.
const telemetry::value* find(const property_list& props, std::string_view name);

// --device / --module: exact ids or patterns with '*' and '?'. An empty pattern matches all;
// a module pattern never matches a device's own messages unless it is "*".
struct filter {
  std::string device;
  std::string module;
  bool matches(const event& e) const;
};
bool glob_match(std::string_view pattern, std::string_view text);

// How the body is shown: JSON when it parses as JSON and the content type (if any) is a JSON
// one, else UTF-8 text, else base64 (flagged with "bodyEncoding":"base64").
enum class body_kind { json, text, base64 };
body_kind classify_body(const event& e);
bool is_valid_utf8(std::string_view s);

// One line of JSON: {"deviceId","moduleId","partition","sequenceNumber","offset","enqueuedTime",
// "body"[,"bodyEncoding"],"systemProperties","properties"}.
std::string to_json_line(const event& e);
// A block like az's: {"event":{"origin","module","interface","component","payload",
// "annotations","properties":{"system","application"}}}, indented, ending in a newline.
std::string to_human(const event& e);

// ISO 8601 UTC with milliseconds, like JavaScript's toISOString().
std::string iso8601_ms(std::int64_t ms);

// Where events come from.
class source {
 public:
  virtual ~source() = default;
  // Returns as soon as events are available, or after `max_wait` with none.
  virtual result<std::vector<event>> poll(std::chrono::milliseconds max_wait) = 0;
  // A snapshot source (open_log_source's `snapshot`) has returned everything it will.
  virtual bool exhausted() const = 0;
};

enum class start_at { earliest, latest };

// The event log in `events_dir` (DIR/events), read-only: hubd may be writing it. `latest`
// starts after the newest event (only new ones), `earliest` with the oldest retained one.
// Records that do not decode are reported on stderr and skipped.
// `snapshot`: only what is stored when it opens (from `from`), then exhausted().
result<std::unique_ptr<source>> open_log_source(const std::string& events_dir, start_at from,
                                                std::chrono::milliseconds poll_interval = std::chrono::milliseconds(50),
                                                bool snapshot = false);

struct run_options {
  filter match;
  bool json = false;
  std::chrono::milliseconds timeout{0};   // 0: until stopped
  std::optional<std::uint64_t> count;     // stop after this many (matching) events
};

// Polls `src` and prints matching events to `out` until the timeout, the count, `stop` (set by
// a signal handler) or an error writing `out`. Returns hubctl's exit code.
int run(source& src, const run_options& options, std::FILE* out, const std::atomic<bool>& stop);

}  // namespace hub::cli::monitor
