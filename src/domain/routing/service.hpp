#pragma once
// Message routing (protocol/semantics.md §2): the layer between telemetry::service and the event
// logs. Every endpoint is an event log: the built-in `events` (what the Event Hubs-compatible
// endpoint serves under the hub's name), one per custom Event Hubs endpoint (served under the
// endpoint's name), one per storage endpoint (the staging log its file_writer turns into files).
//
// Device messages: route() evaluates the current table's DeviceMessages routes (each condition
// compiled once), adds the fallback when none matched, stamps each endpoint's enrichments and
// appends the message once to every selected endpoint's log, in the device's partition; `done`
// runs when all those appends are durable. A message no route and no fallback takes is
// acknowledged and dropped ("orphaned"), counted, and logged at most every few seconds. With no
// routes and the fallback to `events` (the default), route() appends exactly as telemetry did
// before routing existed.
//
// System events (twin changes, identity lifecycle, connection state) are built only when an
// enabled route for their source exists, and go only where such routes send them.
//
// Threads: route() runs on the caller's thread unless the table reads twins (a condition or an
// enrichment with $twin): then, like every system event, on the service's routing thread, one
// thread so that each device's messages and each identity's events keep their order. Twin reads
// block on storage, which is why they never run on a caller's (I/O) thread.
//
// Owner: the composition root. Thread safety: every method may be called from any thread;
// install() swaps the table atomically (messages being routed finish with the old one).
#include "base/clock.hpp"
#include "domain/routing/events.hpp"
#include "domain/routing/resolver.hpp"
#include "domain/routing/table.hpp"
#include "domain/telemetry/service.hpp"
#include "storage/event_log.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace hub::routing {

struct options {
  std::string hub_name;                       // $iothubname, hubName, user-id of system events
  std::size_t max_message_bytes = 256 * 1024;  // an enriched message past this is dropped for its endpoint
  std::size_t max_queued = 65536;              // work waiting for the routing thread
  std::chrono::seconds orphan_log_interval{5};
  limits lim{};                                // what reconfigure() accepts
};

class service final : public telemetry::router {
 public:
  using done_fn = std::function<void(result<storage::log_position>)>;

  // Starts with the default configuration: no routes, the fallback route to `events`.
  // `twins` answers $twin paths and lifecycle bodies (may be empty: no twins).
  service(const clock& clk, storage::event_log& events, options opt, twin_source twins);
  ~service() override;
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // Makes `t` the routing table. `logs[i]` is the log of t->endpoint_names()[i] (0: events);
  // all of them must have the same partition count. ArgumentInvalid when they do not match.
  result<void> install(std::unique_ptr<const table> t, std::vector<storage::event_log*> logs);
  const table& current() const noexcept;

  // telemetry::router.
  void route(const telemetry::message& m, std::uint32_t partition, done_fn done) override;
  // With no routes (passthrough), one batch append to `events`; otherwise message by message.
  void route_batch(const std::vector<telemetry::message>& ms, std::uint32_t partition,
                   std::function<void(result<void>)> done) override;

  // System events (fire and forget): what the twins service, the registry and the connection
  // table report, as the composition root connects them.
  void twin_changed(std::string_view device_id, std::string_view module_id, std::string_view op_type,
                    const bj::object& body, sys_time at);
  // A created identity: its twin is read on the routing thread.
  void identity_created(std::string_view device_id, std::string_view module_id, sys_time at);
  // A deleted identity: `twin` is its twin document as it was (read before the twin goes).
  void identity_deleted(std::string_view device_id, std::string_view module_id, const std::optional<bj::object>& twin,
                        sys_time at);
  // Called in the order the connection table emits them (the sequence number is taken here).
  void connection_changed(std::string_view device_id, std::string_view module_id, bool connected, sys_time at);
  // Whether any enabled route takes events of `s` (cheap: callers may skip building them).
  bool wants(source s) const noexcept { return current().has_routes(s); }

  // Evaluates a sample message without delivering it (hubctl route test). Twins are read on
  // the caller's thread.
  selection test(source s, const telemetry::message& m) const;

  // --- the admin API (hubd's REST /routing, hubctl route) ---
  // The running configuration in IoT Hub's ARM routing shape.
  bj::value configuration() const;
  // Replaces the routes, the fallback route and the enrichments with those of `arm_routing`
  // (the same shape), checked as at start. The endpoints must stay as they are (their logs are
  // opened at start): ArgumentInvalid otherwise, as for any rule broken. The persist hook (when
  // set) writes the new configuration first; its failure leaves the running one in place.
  result<void> reconfigure(const bj::value& arm_routing);
  using persist_fn = std::function<result<void>(const bj::value& arm_routing)>;
  void set_persist(persist_fn fn) { persist_ = std::move(fn); }
  // ARM's "test all routes": {"routingSource": "DeviceMessages", "message": {"body": "...",
  // "appProperties": {...}, "systemProperties": {"contentType": ..., ...}}, "twin": {"tags":
  // {...}, "properties": {"desired": {...}, "reported": {...}}}} -> {"routes": [{"properties":
  // {route}}], plus hubd's "endpoints" (the endpoints it would reach) and "fallback"}.
  result<bj::value> test_all(const bj::value& input) const;

  // Finishes the queued work and stops the routing thread; later events are dropped and later
  // twin-reading messages fail with ServiceUnavailable. Call before the logs close.
  void stop();

  std::uint64_t orphaned() const noexcept { return orphaned_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  struct state {
    std::unique_ptr<const table> routes;
    std::vector<storage::event_log*> logs;
  };

  void deliver(const state& st, source s, const telemetry::message& m, done_fn done);
  void publish(source s, telemetry::message m);
  bool post(std::function<void()> job);
  void run_worker(std::stop_token stop);
  void count_orphan();
  std::uint32_t partition_of(const state& st, std::string_view device_id) const noexcept;

  const clock& clock_;
  options options_;
  twin_source twins_;
  sequence_numbers sequences_;

  persist_fn persist_;
  std::mutex reconfigure_mutex_;
  std::atomic<const state*> current_{nullptr};
  std::mutex states_mutex_;
  std::vector<std::unique_ptr<state>> states_;  // every table installed, kept for messages in flight

  std::atomic<std::uint64_t> orphaned_{0};
  std::atomic<std::uint64_t> orphans_logged_{0};
  std::atomic<std::int64_t> orphan_log_at_{0};
  std::atomic<std::uint64_t> dropped_{0};

  std::mutex queue_mutex_;
  std::condition_variable_any queue_cv_;
  std::deque<std::function<void()>> queue_;
  bool stopped_ = false;
  std::jthread worker_;  // last: starts after the members it uses exist, joins before they go
};

}  // namespace hub::routing
