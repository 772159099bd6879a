#pragma once
// Injectable time. Services take a `const clock&` so TTLs, token expiry and timeouts are tested
// without sleeping.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace hub {

using sys_time = std::chrono::system_clock::time_point;

class clock {
 public:
  virtual ~clock() = default;
  virtual sys_time now() const = 0;
  std::int64_t now_seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch()).count();
  }
};

class system_clock final : public clock {
 public:
  sys_time now() const override { return std::chrono::system_clock::now(); }
};

// A clock that moves only when told: for tests.
class manual_clock final : public clock {
 public:
  explicit manual_clock(sys_time start = sys_time{std::chrono::seconds{1'700'000'000}}) : t_(start.time_since_epoch().count()) {}
  sys_time now() const override { return sys_time{sys_time::duration{t_.load()}}; }
  void advance(std::chrono::nanoseconds d) { t_ += std::chrono::duration_cast<sys_time::duration>(d).count(); }

 private:
  std::atomic<sys_time::rep> t_;
};

// ISO 8601 UTC with 7 fractional digits, as IoT Hub writes timestamps: 2026-11-26T06:47:27.1234567Z.
std::string to_iso8601(sys_time t);
// The value IoT Hub uses for "never": 0001-01-01T00:00:00Z.
inline constexpr const char* iso8601_min = "0001-01-01T00:00:00Z";

}  // namespace hub
