#pragma once
// Operation throttles in IoT Hub's style: a rate per hub and per device for each kind of
// operation (device-to-cloud sends, new device connections, twin operations from devices and from
// the service, direct method invocations, cloud-to-device sends, registry operations), enforced
// with token buckets (GCRA). Off by default: hubd serves development, CI and on-premises hubs.
//
// IoT Hub shapes traffic rather than refusing it at once: requests over the rate are queued and
// served at the rate, and only when that backlog grows too long are they refused with 429
// ThrottlingException (docs/limits.md). Here a caller that can wait (a head that can hold a
// device's PUBACK or disposition) asks for a delay of up to `backlog`; every other call is
// admitted or refused at once.
//
// The heads call it; it knows no sockets. Thread-safe.
#include "base/clock.hpp"
#include "base/error.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace hub::throttling {

enum class operation : std::uint8_t {
  d2c,           // device-to-cloud sends (MQTT, AMQP, HTTPS)
  connect,       // new device connections (MQTT CONNECT, AMQP device token)
  twin_device,   // twin GET / reported PATCH from a device
  twin_service,  // twin reads and updates from the service (HTTPS)
  methods,       // direct method invocations (HTTPS)
  c2d,           // cloud-to-device sends (AMQP)
  registry,      // identity registry operations (HTTPS: create, get, list, update, delete)
};
inline constexpr std::size_t operation_count = 7;
// The key in --throttle: "d2c", "connect", "twin", "twin-service", "methods", "c2d", "registry".
std::string_view key_of(operation op) noexcept;
std::optional<operation> operation_of(std::string_view key) noexcept;

// A sustained rate with a burst allowance; per_second 0 = unlimited.
struct rate {
  double per_second = 0;
  double burst = 0;  // tokens available at once; 0 = one second's worth (at least 1)
  bool unlimited() const noexcept { return per_second <= 0; }
  bool operator==(const rate&) const = default;
};

struct limits {
  std::array<rate, operation_count> hub{};
  std::array<rate, operation_count> device{};
  // How long a shaped operation may wait for its turn before it is refused (IoT Hub's backlog).
  std::chrono::milliseconds backlog{10'000};
  bool any() const noexcept;
  rate& of_hub(operation op) { return hub[static_cast<std::size_t>(op)]; }
  rate& of_device(operation op) { return device[static_cast<std::size_t>(op)]; }
};

// IoT Hub's published per-hub throttles for a standard (or basic) tier, S1/S2/S3 (B1/B2/B3 and
// F1 as S1), for `units` units. Unknown tier: ArgumentInvalid.
result<limits> tier_limits(std::string_view tier, unsigned units);

// One --throttle value, applied on top of `base`: comma-separated key=value pairs.
//   tier=S1|S2|S3 units=N    IoT Hub's per-hub limits of that tier (units default 1)
//   d2c=100/s  registry=100/min  device.d2c=1/s   a per-hub (or, with "device.", per-device) rate
//   d2c=100/s:200           a rate with its burst (default: one second's worth)
//   d2c=off                 unlimited
//   backlog=10s             how long a shaped operation (D2C on MQTT/AMQP) may wait
// ArgumentInvalid with the reason when malformed.
result<limits> parse_throttle(std::string_view spec, limits base);

// GCRA (a token bucket that can book ahead): time in nanoseconds on any monotonic scale.
class token_bucket {
 public:
  token_bucket() = default;
  explicit token_bucket(rate r);
  // One token at `now`: the delay before the caller may proceed (0 = at once), booked; nullopt
  // when the delay would exceed `max_delay` (nothing booked).
  std::optional<std::chrono::nanoseconds> reserve(std::chrono::nanoseconds now, std::chrono::nanoseconds max_delay);
  // Full again at `now` (nothing booked ahead, the burst refilled): the bucket can be forgotten.
  bool idle(std::chrono::nanoseconds now) const noexcept { return tat_ns_ <= now.count(); }

 private:
  // Integer nanoseconds: a double loses sub-microsecond precision at today's epoch times.
  std::int64_t interval_ns_ = 0;   // time per token
  std::int64_t tolerance_ns_ = 0;  // how far ahead of now the bookings may run without delay (burst - 1 tokens)
  std::int64_t tat_ns_ = 0;        // theoretical arrival time of the next token
};

class throttles {
 public:
  throttles(limits l, const clock& clk);
  throttles(const throttles&) = delete;
  throttles& operator=(const throttles&) = delete;

  const limits& config() const noexcept { return limits_; }
  bool enabled() const noexcept { return enabled_; }

  // May `device_id` do `op` now? The delay before it may (0 = at once; only when `can_wait`, up
  // to the backlog), or errc::throttled (ThrottlingException) when over the hub's or the
  // device's rate. An empty device_id applies the hub's rate only.
  result<std::chrono::nanoseconds> admit(operation op, std::string_view device_id, bool can_wait = false);

  // Per-device buckets held (for tests): idle ones are dropped as calls go by.
  std::size_t device_buckets() const;

 private:
  struct per_operation {
    mutable std::mutex mutex;
    token_bucket hub;
    std::unordered_map<std::string, token_bucket> devices;
    std::uint64_t calls = 0;
  };
  std::chrono::nanoseconds now() const;

  const limits limits_;
  const clock& clk_;
  const bool enabled_;
  std::array<per_operation, operation_count> ops_;
};

// The error every refusal carries.
error throttled_error(operation op);

}  // namespace hub::throttling
