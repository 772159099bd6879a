#pragma once
#include <cstdint>
#include <string>

namespace loadgen {

struct create_options {
  std::string connection_string;  // a policy with RegistryWrite
  std::string address;            // where to connect; default: the HostName
  std::uint16_t port = 443;
  std::string ca_file;
  std::size_t count = 1000;
  std::string prefix = "bench-";
  std::string out_file;           // "id key" lines
};

// The value of NAME in an IoT Hub connection string ("HostName=...;SharedAccessKeyName=...;...").
// Throws std::runtime_error if it is missing.
std::string connection_string_field(const std::string& cs, const std::string& name);

// Throws std::runtime_error with the hub's answer on failure.
void create_devices(const create_options& o);

}  // namespace loadgen
