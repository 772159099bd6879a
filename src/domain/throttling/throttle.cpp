#include "domain/throttling/throttle.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cctype>
#include <cmath>
#include <vector>

namespace hub::throttling {
namespace {

constexpr std::array<std::string_view, operation_count> keys{"d2c",     "connect", "twin",    "twin-service",
                                                             "methods", "c2d",     "registry"};

// Drop idle per-device buckets every this many calls of an operation.
constexpr std::uint64_t prune_every = 4096;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<double> number(std::string_view s) {
  s = trim(s);
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

// "100/s", "100/min", "1.67/sec", "off", optionally ":BURST".
std::optional<rate> parse_rate(std::string_view text) {
  text = trim(text);
  if (text == "off" || text == "0") return rate{};
  rate r;
  if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    const auto burst = number(text.substr(colon + 1));
    if (!burst || *burst < 1) return std::nullopt;
    r.burst = *burst;
    text = text.substr(0, colon);
  }
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const auto count = number(text.substr(0, slash));
  const std::string_view unit = trim(text.substr(slash + 1));
  if (!count || *count <= 0) return std::nullopt;
  if (unit == "s" || unit == "sec") {
    r.per_second = *count;
  } else if (unit == "min" || unit == "m") {
    r.per_second = *count / 60;
  } else if (unit == "h") {
    r.per_second = *count / 3600;
  } else {
    return std::nullopt;
  }
  return r;
}

std::optional<std::chrono::milliseconds> parse_backlog(std::string_view text) {
  text = trim(text);
  double scale = 1000;
  if (text.ends_with("ms")) {
    scale = 1;
    text.remove_suffix(2);
  } else if (text.ends_with("s")) {
    text.remove_suffix(1);
  } else if (text.ends_with("m")) {
    scale = 60'000;
    text.remove_suffix(1);
  }
  const auto v = number(text);
  if (!v) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(*v * scale));
}

}  // namespace

std::string_view key_of(operation op) noexcept { return keys[static_cast<std::size_t>(op)]; }

std::optional<operation> operation_of(std::string_view key) noexcept {
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] == key) return static_cast<operation>(i);
  }
  return std::nullopt;
}

bool limits::any() const noexcept {
  const auto limited = [](const rate& r) { return !r.unlimited(); };
  return std::any_of(hub.begin(), hub.end(), limited) || std::any_of(device.begin(), device.end(), limited);
}

// IoT Hub's operation throttles (learn.microsoft.com, "IoT Hub quotas and throttling"), per hub:
//                      S1 (F1, B1)                     S2 (B2)              S3 (B3)
//   registry ops       1.67/s/unit (100/min/unit)      1.67/s/unit          83.33/s/unit (5000/min/unit)
//   new connections    max(100/s, 12/s/unit)           120/s/unit           6000/s/unit
//   D2C sends          max(100/s, 12/s/unit)           120/s/unit           6000/s/unit
//   C2D sends          1.67/s/unit (100/min/unit)      1.67/s/unit          83.33/s/unit
//   twin reads         100/s                           max(100/s, 10/s/unit) 500/s/unit
//   twin updates       50/s                            max(50/s, 5/s/unit)   250/s/unit
//   direct methods     160 KB/s/unit                   480 KB/s/unit        24 MB/s/unit
// Direct methods are throttled by bandwidth in 4 KB units (a call of up to 4 KB counts as one):
// here one invocation = 4 KB, so 40/s/unit for S1. Twin reads and updates share one rate here
// (device side: the reads' rate, which the SDKs' GET + PATCH traffic fits; service side: the
// updates'). Per-device rates are not IoT Hub's (it has none published): none by default.
result<limits> tier_limits(std::string_view tier, unsigned units) {
  if (units == 0) return make_error(errc::argument_invalid, "units must be at least 1");
  const double u = units;
  limits l;
  std::string t(tier);
  for (char& c : t) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (t == "S1" || t == "B1" || t == "F1") {
    l.of_hub(operation::registry) = {100.0 / 60 * u, 0};
    l.of_hub(operation::connect) = {std::max(100.0, 12 * u), 0};
    l.of_hub(operation::d2c) = {std::max(100.0, 12 * u), 0};
    l.of_hub(operation::c2d) = {100.0 / 60 * u, 0};
    l.of_hub(operation::twin_device) = {100, 0};
    l.of_hub(operation::twin_service) = {50, 0};
    l.of_hub(operation::methods) = {40 * u, 0};
  } else if (t == "S2" || t == "B2") {
    l.of_hub(operation::registry) = {100.0 / 60 * u, 0};
    l.of_hub(operation::connect) = {120 * u, 0};
    l.of_hub(operation::d2c) = {120 * u, 0};
    l.of_hub(operation::c2d) = {100.0 / 60 * u, 0};
    l.of_hub(operation::twin_device) = {std::max(100.0, 10 * u), 0};
    l.of_hub(operation::twin_service) = {std::max(50.0, 5 * u), 0};
    l.of_hub(operation::methods) = {120 * u, 0};
  } else if (t == "S3" || t == "B3") {
    l.of_hub(operation::registry) = {5000.0 / 60 * u, 0};
    l.of_hub(operation::connect) = {6000 * u, 0};
    l.of_hub(operation::d2c) = {6000 * u, 0};
    l.of_hub(operation::c2d) = {5000.0 / 60 * u, 0};
    l.of_hub(operation::twin_device) = {500 * u, 0};
    l.of_hub(operation::twin_service) = {250 * u, 0};
    l.of_hub(operation::methods) = {6000 * u, 0};
  } else {
    return make_error(errc::argument_invalid, fmt::format("unknown tier '{}' (S1, S2, S3, B1, B2, B3, F1)", tier));
  }
  return l;
}

result<limits> parse_throttle(std::string_view spec, limits base) {
  std::optional<std::string> tier;
  unsigned units = 1;
  std::vector<std::pair<std::string, std::string>> pairs;
  while (!spec.empty()) {
    const auto comma = spec.find(',');
    const std::string_view item = trim(spec.substr(0, comma));
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string_view::npos)
      return make_error(errc::argument_invalid, fmt::format("'{}': expected key=value", item));
    std::string key(trim(item.substr(0, eq)));
    std::string value(trim(item.substr(eq + 1)));
    if (key == "tier") {
      tier = value;
    } else if (key == "units") {
      const auto n = number(value);
      if (!n || *n < 1 || *n > 1000 || std::floor(*n) != *n)
        return make_error(errc::argument_invalid, fmt::format("units={}: expected 1 .. 1000", value));
      units = static_cast<unsigned>(*n);
    } else {
      pairs.emplace_back(std::move(key), std::move(value));
    }
  }
  limits out = base;
  if (tier) {
    auto t = tier_limits(*tier, units);
    if (!t) return t.error();
    out.hub = t->hub;
  }
  for (const auto& [key, value] : pairs) {
    if (key == "backlog") {
      const auto b = parse_backlog(value);
      if (!b) return make_error(errc::argument_invalid, fmt::format("backlog={}: expected a duration like 10s or 500ms", value));
      out.backlog = *b;
      continue;
    }
    const bool per_device = key.starts_with("device.");
    const std::string_view name = per_device ? std::string_view(key).substr(7) : std::string_view(key);
    const auto op = operation_of(name);
    if (!op)
      return make_error(errc::argument_invalid,
                        fmt::format("unknown key '{}' (tier, units, backlog, [device.]d2c, connect, twin, "
                                    "twin-service, methods, c2d, registry)",
                                    key));
    const auto r = parse_rate(value);
    if (!r) return make_error(errc::argument_invalid, fmt::format("{}={}: expected a rate like 100/s, 5/min or off", key, value));
    (per_device ? out.of_device(*op) : out.of_hub(*op)) = *r;
  }
  return out;
}

token_bucket::token_bucket(rate r) {
  if (r.unlimited()) return;
  interval_ns_ = std::max<std::int64_t>(1, std::llround(1e9 / r.per_second));
  const double burst = r.burst >= 1 ? r.burst : std::max(1.0, r.per_second);
  tolerance_ns_ = std::llround((burst - 1) * static_cast<double>(interval_ns_));
}

std::optional<std::chrono::nanoseconds> token_bucket::reserve(std::chrono::nanoseconds now_ns,
                                                              std::chrono::nanoseconds max_delay) {
  if (interval_ns_ <= 0) return std::chrono::nanoseconds(0);
  const std::int64_t now = now_ns.count();
  const std::int64_t tat = std::max(tat_ns_, now);
  // The caller may go once the bookings ahead of it fit within the tolerance.
  const std::int64_t delay = std::max<std::int64_t>(0, tat - tolerance_ns_ - now);
  if (delay > max_delay.count()) return std::nullopt;
  tat_ns_ = tat + interval_ns_;
  return std::chrono::nanoseconds(delay);
}

throttles::throttles(limits l, const clock& clk) : limits_(std::move(l)), clk_(clk), enabled_(limits_.any()) {
  for (std::size_t i = 0; i < operation_count; ++i) ops_[i].hub = token_bucket(limits_.hub[i]);
}

std::chrono::nanoseconds throttles::now() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clk_.now().time_since_epoch());
}

error throttled_error(operation op) {
  return make_error(errc::throttled,
                    fmt::format("IoT hub throttled: the rate of {} operations is over the hub's limit", key_of(op)));
}

result<std::chrono::nanoseconds> throttles::admit(operation op, std::string_view device_id, bool can_wait) {
  if (!enabled_) return std::chrono::nanoseconds(0);
  const std::size_t i = static_cast<std::size_t>(op);
  const rate& hub_rate = limits_.hub[i];
  const rate& device_rate = limits_.device[i];
  if (hub_rate.unlimited() && device_rate.unlimited()) return std::chrono::nanoseconds(0);
  const std::chrono::nanoseconds max_delay = can_wait ? std::chrono::nanoseconds(limits_.backlog) : std::chrono::nanoseconds(0);
  const std::chrono::nanoseconds t = now();
  per_operation& o = ops_[i];
  std::scoped_lock lock(o.mutex);

  if (!device_rate.unlimited() && ++o.calls % prune_every == 0) {
    std::erase_if(o.devices, [&](const auto& kv) { return kv.second.idle(t); });
  }
  // The device's bucket first, then the hub's: a refusal books nothing in either (the device's
  // booking is undone by restoring its copy).
  token_bucket* device_bucket = nullptr;
  token_bucket device_before;
  std::chrono::nanoseconds delay(0);
  if (!device_rate.unlimited() && !device_id.empty()) {
    std::string key(device_id);
    auto it = o.devices.find(key);
    if (it == o.devices.end()) it = o.devices.emplace(std::move(key), token_bucket(device_rate)).first;
    device_bucket = &it->second;
    device_before = *device_bucket;
    const auto d = device_bucket->reserve(t, max_delay);
    if (!d) return throttled_error(op);
    delay = *d;
  }
  if (!hub_rate.unlimited()) {
    const auto d = o.hub.reserve(t, max_delay);
    if (!d) {
      if (device_bucket != nullptr) *device_bucket = device_before;
      return throttled_error(op);
    }
    delay = std::max(delay, *d);
  }
  return delay;
}

std::size_t throttles::device_buckets() const {
  std::size_t n = 0;
  for (const per_operation& o : ops_) {
    std::scoped_lock lock(o.mutex);
    n += o.devices.size();
  }
  return n;
}

}  // namespace hub::throttling
