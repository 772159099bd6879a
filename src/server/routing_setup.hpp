#pragma once
// hubd's message routing as `--routing FILE` configures it: the file read and checked (IoT Hub's
// rules, every condition compiled; a failure names the route and the position), each custom
// endpoint's event log opened under DIR/endpoints/<name> with the hub's partition count, the
// storage endpoints' file writers, the webhook endpoints' delivery workers (cursors in kv), and the event hubs the AMQP head serves by name (the built-in
// one under the hub's Event Hub-compatible name, then each Event Hubs endpoint under its own).
//
// Startup only: failures throw startup_error. Owned by hubd's main for the process's life.
#include "domain/routing/config.hpp"
#include "domain/routing/file_writer.hpp"
#include "domain/routing/table.hpp"
#include "domain/routing/webhook.hpp"
#include "heads/amqp/partition_watch.hpp"
#include "server/config.hpp"
#include "server/files.hpp"
#include "storage/event_log.hpp"
#include "storage/kv.hpp"

#include <memory>
#include <string>
#include <vector>

namespace hub::server {

// The hub's name as IoT Hub shows it: the host name's first label, lower case (an IP literal is
// kept whole). $iothubname, the built-in event hub's name, {iothub} in storage file names.
std::string hub_name_of(std::string_view host_name);

struct routing_endpoints {
  routing::config configuration;
  std::unique_ptr<const routing::table> table;
  // The custom endpoints' logs, in the table's endpoint order (endpoint i + 1).
  std::vector<std::unique_ptr<storage::event_log>> logs;
  std::vector<std::unique_ptr<routing::file_writer>> writers;
  std::vector<std::unique_ptr<amqp_head::partition_watch>> watches;
  std::vector<amqp_head::event_hub> event_hubs;  // the built-in one first
  // The webhook endpoints' delivery workers (not started: hubd's main starts and stops them).
  std::vector<std::unique_ptr<routing::webhook_delivery>> webhooks;

  // Every endpoint's log, `events` first: what routing::service::install takes.
  std::vector<storage::event_log*> table_logs(storage::event_log& events) const;
};

// The routing file: --routing FILE, else DIR/routing.json (what the admin API's PUT /routing
// writes when hubd started without --routing). It may not exist.
std::filesystem::path routing_file(const config& cfg, const data_layout& layout);
// IoT Hub's limits, with the test flag's shorter batches and Avro when this build writes it.
routing::limits routing_limits(const config& cfg);

// Reads the routing file (none: the default configuration, no custom endpoints). `events` and
// `event_watch` are the built-in endpoint's.
routing_endpoints open_routing(const config& cfg, const data_layout& layout, const std::string& hub_name,
                               storage::event_log& events, amqp_head::partition_watch& event_watch, const clock& clk,
                               storage::kv& kv);

}  // namespace hub::server
