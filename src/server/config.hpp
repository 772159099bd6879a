#pragma once
// hubd's typed configuration: command line, optionally on top of a config file (--config FILE, an
// INI/TOML file with the same keys as the long options, e.g. `https-port = 8443`). Command-line
// values win over the file.
#include "domain/throttling/throttle.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace hub::server {

inline constexpr const char* hubd_version = "0.1.0";

struct config {
  std::filesystem::path data_dir;       // resolved: --data, else default_data_dir()
  std::string host_name = "localhost";  // what clients put in HostName; goes into certificate SANs
  std::vector<std::string> listen;      // IP literals; empty = "::" dual-stack (or 0.0.0.0 without IPv6)
  std::uint16_t https_port = 443;
  std::uint16_t mqtt_port = 8883;
  std::uint16_t amqp_port = 5671;
  std::string log_level = "info";
  bool init_only = false;               // --init: create the data folder, print it, exit
  std::uint32_t partitions = 4;         // event log (telemetry) partitions; fixed once the log exists
  std::vector<std::string> consumer_groups;  // Event Hubs-compatible endpoint, besides $Default
  std::chrono::seconds retention{std::chrono::hours(24)};  // how long telemetry stays readable
  // Group commit delay of a busy event-log partition (storage::log_options::commit_delay).
  std::uint32_t commit_delay_us = 1000;
  // Cloud-to-device, as an IoT hub's cloudToDevice settings: the default TTL of a message
  // (1 minute .. 2 days), the delivery count at which an abandoned message is dead-lettered
  // (1 .. 100), and how long feedback records wait for the service (1 minute .. 2 days).
  std::chrono::seconds c2d_ttl{std::chrono::hours(1)};
  std::uint32_t c2d_max_delivery_count = 10;
  std::chrono::seconds c2d_feedback_ttl{std::chrono::hours(1)};
  // Message routing: IoT Hub's ARM `routing` object (endpoints, routes, fallbackRoute,
  // enrichments) in a JSON file; empty = no routes, everything to the built-in endpoint.
  std::filesystem::path routing_file;
  // HTTPS: the time to receive one request body or send one response, and the time a kept-alive
  // connection may wait for its next request (headers included).
  std::chrono::seconds http_request_timeout{30};
  std::chrono::seconds http_idle_timeout{120};
  // Tests only: storage endpoints may batch every second and in chunks from 1 KiB.
  bool routing_test_batching = false;
  // Connection caps (listener.hpp connection_limits, docs/limits.md); 0 = no cap.
  std::size_t max_unauthenticated = 2048;
  std::size_t max_unauthenticated_per_ip = 256;
  std::size_t max_connections_per_ip = 0;
  std::chrono::seconds auth_timeout{30};  // accept to authentication; 0 = none
  // Operation throttles (domain/throttling, docs/limits.md): the --throttle values applied in
  // order; off (unlimited) by default.
  throttling::limits throttle;
  std::vector<std::string> throttle_specs;  // as given, for the log
};

// "90s", "30m", "24h", "1d", "7d" (or plain seconds, "3600"): nullopt when malformed or zero.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

// Parsing ended without a config to run: --help or --version (code 0, text for stdout), or a
// usage error (code != 0, text for stderr).
struct parse_exit {
  int code = 0;
  std::string text;
};

using parse_outcome = std::variant<config, parse_exit>;

// argv[0] is the program name. Never throws.
parse_outcome parse_config(int argc, const char* const* argv);
parse_outcome parse_config(const std::vector<std::string>& args);  // args without the program name

}  // namespace hub::server
