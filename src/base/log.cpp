#include "base/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

namespace hub::log {
namespace {
std::mutex mutex;
spdlog::level::level_enum level = spdlog::level::info;
}  // namespace

std::shared_ptr<spdlog::logger> get(const std::string& channel) {
  std::scoped_lock lock(mutex);
  if (auto existing = spdlog::get(channel)) return existing;
  auto logger = spdlog::stderr_color_mt(channel);
  logger->set_level(level);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ [%n] %v", spdlog::pattern_time_type::utc);
  return logger;
}

void init(const std::string& name) {
  std::scoped_lock lock(mutex);
  level = spdlog::level::from_str(name);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->set_level(level); });
}

}  // namespace hub::log
