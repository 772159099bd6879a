#pragma once
// The consumer of hubd-loadgen --consumer: reads the telemetry the publishers send back from the
// server and measures publish-to-arrival latency. Each publisher puts its send time in the first
// 8 bytes of the payload (steady_clock nanoseconds, little-endian: same machine, same clock);
// the consumer subtracts it from the time it decodes the message.
//
//   hubd:      the Event Hubs-compatible endpoint over AMQP/TLS (5671), every partition of the
//              built-in endpoint, consumer group $Default, from "now" (an enqueued-time selector,
//              as @azure/event-hubs sends for a start position), authorised by a CBS put-token
//              with a policy's SAS token signed the Event Hubs way. Qpid Proton's C++ container.
//   mosquitto: one more MQTT connection (user + password) subscribed with QoS 1 to
//              devices/+/messages/events/#, acknowledging each message.
//
// Both run on the consumer's own thread, so the publishers' io_context thread does not wait for
// it. Only messages sent inside the measured window [begin, end) count, as arrivals and as
// acknowledged messages, so that the two counts compare.
#include "bench/loadgen/histogram.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <string>

namespace loadgen {

using clock_type = std::chrono::steady_clock;

// Writes `sent` into the first 8 bytes of `payload` (which must hold 8).
void stamp_send_time(std::string& payload, clock_type::time_point sent);

struct consumer_options {
  std::string mode;               // hubd | mosquitto
  std::string host;               // address to connect to
  std::string sni;                // TLS server name
  bool tls = true;
  std::string ca_file;
  std::uint16_t port = 8883;      // mosquitto: its MQTT port
  std::uint16_t amqp_port = 5671; // hubd: the AMQP port
  std::string connection_string;  // hubd: HostName=...;SharedAccessKeyName=...;SharedAccessKey=... (ServiceConnect)
  std::string consumer_group = "$Default";
  std::string user;               // mosquitto
  std::string password;
};

class consumer {
 public:
  explicit consumer(consumer_options o);
  ~consumer();
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;

  // Starts the consumer's thread and waits until it receives (every partition attached, or the
  // subscription acknowledged). Throws std::runtime_error with the reason otherwise.
  void start(std::chrono::milliseconds timeout);
  // The measured window, in send times. Before begin() nothing counts.
  void begin(clock_type::time_point t);
  void end(clock_type::time_point t);
  bool ended() const { return end_ns_.load(std::memory_order_relaxed) != INT64_MAX; }
  // A publisher's acknowledged message (QoS 0: a sent one), sent at `sent`. Any thread.
  void acknowledged(clock_type::time_point sent, std::uint64_t n = 1) {
    if (in_window(sent)) acked_.fetch_add(n, std::memory_order_relaxed);
  }
  // Waits until every acknowledged message of the window has arrived or `timeout` passes
  // (publishers send nothing once the window has ended).
  void drain(std::chrono::milliseconds timeout);
  void stop();

  std::uint64_t acked() const { return acked_; }
  std::uint64_t arrived() const { return arrived_; }
  // Arrival latency; read after stop().
  const histogram& latency() const { return latency_; }
  // CPU seconds of the consumer's thread so far.
  double cpu_seconds() const;
  // The first error, empty if none.
  std::string error() const;

  bool in_window(clock_type::time_point t) const {
    const auto ns = t.time_since_epoch().count();
    return ns >= begin_ns_.load(std::memory_order_relaxed) && ns < end_ns_.load(std::memory_order_relaxed);
  }
  // Called on the consumer's thread for each message that came back.
  void arrived(std::string_view payload, clock_type::time_point at);
  void fail(const std::string& what);
  void ready();

  struct impl;

 private:
  consumer_options opt_;
  std::unique_ptr<impl> impl_;
  std::atomic<std::int64_t> begin_ns_{INT64_MAX};
  std::atomic<std::int64_t> end_ns_{INT64_MAX};
  std::atomic<std::uint64_t> acked_{0};
  std::atomic<std::uint64_t> arrived_{0};
  std::atomic<std::uint64_t> foreign_{0};  // payloads too short to hold a send time
  std::atomic<bool> ready_{false};
  std::atomic<bool> failed_{false};
  std::atomic<int> tid_{0};
  histogram latency_;
  mutable std::mutex error_mutex_;
  std::string error_;
};

}  // namespace loadgen
