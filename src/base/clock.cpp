#include "base/clock.hpp"

#include <ctime>
#include <fmt/format.h>

namespace hub {

std::string to_iso8601(sys_time t) {
  using namespace std::chrono;
  const auto secs = floor<seconds>(t);
  const auto ticks = duration_cast<duration<std::int64_t, std::ratio<1, 10'000'000>>>(t - secs).count();
  const std::time_t tt = std::chrono::system_clock::to_time_t(secs);  // not hub::system_clock
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ticks);
}

}  // namespace hub
