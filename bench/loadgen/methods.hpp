#pragma once
// --scenario method: direct method round trips (hubd: HTTPS service calls to devices on MQTT;
// mosquitto: request/response over MQTT topics, the way RPC is done on a plain broker).
#include "codec/mqtt/packets.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace loadgen {

struct method_options {
  std::string mode;               // hubd | mosquitto
  std::string host;               // server address
  std::string sni;                // TLS server name / hub host name
  std::uint16_t port = 8883;      // MQTT
  std::uint16_t https_port = 443; // hubd: the service API
  bool tls = true;
  std::string ca_file;
  std::string connection_string;  // hubd: a policy with ServiceConnect
  std::vector<std::pair<std::string, std::string>> devices;  // id, key or password
  std::size_t concurrency = 8;    // calls outstanding at once
  std::size_t connect_concurrency = 64;  // devices between connect and SUBACK at once
  double warmup_s = 5;
  double duration_s = 20;
  int server_pid = 0;
  bool json = false;
  // The CONNECT a device sends (SAS token or password), from loadgen.cpp.
  std::function<hub::mqtt::connect(const std::string& id, const std::string& secret)> make_connect;
  // CPU seconds (utime + stime) of a process.
  std::function<double(int pid)> cpu_seconds;
};

// Runs the scenario and prints its report; returns the exit code.
int run_methods(const method_options& o);

}  // namespace loadgen
