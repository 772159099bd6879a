#pragma once
// A logger per module ("channel"). Log ids, never payloads, keys or SAS tokens.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace hub::log {

// The logger for a channel (e.g. "http", "registry"), created on first use with the global sink.
std::shared_ptr<spdlog::logger> get(const std::string& channel);

// Sets up the process-wide sink (stderr, with colour when a terminal) and level ("info", "debug"...).
void init(const std::string& level);

}  // namespace hub::log
