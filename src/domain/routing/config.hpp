#pragma once
// The routing configuration as IoT Hub's ARM template holds it (properties.routing):
//   {"endpoints": {"eventHubs": [{"name": ...}],
//                  "storageContainers": [{"name", "fileNameFormat", "batchFrequencyInSeconds",
//                                         "maxChunkSizeInBytes", "encoding"}],
//                  "webhooks": [{"name", "url", "batchSize", "headers": {...}, "caFile"}]},  (hubd's own)
//    "routes": [{"name", "source", "condition", "endpointNames": [one], "isEnabled"}],
//    "fallbackRoute": {"name": "$fallback", "source": "DeviceMessages", "condition": "true",
//                      "endpointNames": ["events"], "isEnabled": true},
//    "enrichments": [{"key", "value", "endpointNames": [...]}]}
// Plain data plus the rules IoT Hub checks when the configuration is saved (names, limits,
// reserved names, exactly one endpoint per route, storage settings). Conditions are compiled
// (and their errors reported) by routing::table, which needs the query module.
#include "base/error.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::routing {

namespace bj = boost::json;

enum class source : std::uint8_t {
  device_messages,
  twin_change_events,
  device_lifecycle_events,
  device_connection_state_events,
};
inline constexpr std::size_t source_count = 4;

// "DeviceMessages", "TwinChangeEvents", ... (ARM's spelling).
std::string_view to_string(source s) noexcept;
// Case-insensitive; nullopt for sources hubd does not produce (DeviceJobLifecycleEvents, ...).
std::optional<source> source_from_string(std::string_view s) noexcept;

// The built-in endpoint's name in routes and enrichments.
inline constexpr std::string_view builtin_endpoint = "events";

struct route {
  std::string name;
  source from = source::device_messages;
  std::string condition;  // empty: always true
  std::string endpoint;   // ARM's endpointNames holds exactly one
  bool enabled = true;
};

struct enrichment {
  std::string key;
  std::string value;  // static text, "$iothubname", or "$twin.tags.x" / "$twin.properties.desired|reported.x"
  std::vector<std::string> endpoints;
};

struct event_hub_endpoint {
  std::string name;
};

enum class file_encoding : std::uint8_t { json, avro, avro_deflate };

struct storage_endpoint {
  std::string name;
  std::string file_name_format = "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}";
  std::uint32_t batch_frequency_seconds = 300;
  std::uint64_t max_chunk_bytes = 314572800;
  file_encoding encoding = file_encoding::json;
  // hubd's addition: where the files go (absolute, or relative to the data folder). Empty: the
  // data folder's storage/<containerName, else the endpoint's name>.
  std::string path;
  std::string container_name;
};

// hubd's own endpoint type (IoT Hub has none): messages POSTed as JSON to an HTTPS URL, see
// webhook.hpp. The URL is https only; its parts are kept parsed.
struct webhook_endpoint {
  std::string name;
  std::string url;
  std::string host;          // a DNS name or an IP literal (IPv6 without brackets)
  std::uint16_t port = 443;
  std::string target = "/";  // path and query
  std::uint32_t batch_size = 1;  // messages per POST, 1..100 (one partition's, in order)
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers, as given
  std::string ca_file;  // PEM file of the CAs trusted for the server (relative: to the routing file's folder); empty: the system store
};

struct config {
  std::vector<event_hub_endpoint> event_hubs;
  std::vector<storage_endpoint> storage;
  std::vector<webhook_endpoint> webhooks;
  std::vector<route> routes;
  route fallback{"$fallback", source::device_messages, "true", std::string(builtin_endpoint), true};
  std::vector<enrichment> enrichments;
};

// IoT Hub's limits (paid tiers) and the test escape hatch.
struct limits {
  std::size_t max_routes = 100;
  std::size_t max_custom_endpoints = 10;
  std::size_t max_enrichments = 10;
  std::uint32_t min_batch_frequency_seconds = 60;  // tests may lower it (hubd --routing-test-batching)
  std::uint32_t max_batch_frequency_seconds = 720;
  std::uint64_t min_chunk_bytes = 10485760;
  std::uint64_t max_chunk_bytes = 524288000;
  bool avro = false;  // whether this build writes Avro files
};

// Reads the ARM shape and checks IoT Hub's rules. ArgumentInvalid with a message that names the
// route, endpoint or enrichment at fault ("route 'hot': endpointNames must hold exactly one
// endpoint"). Unknown members are ignored (ARM's connectionString, subscriptionId, ...).
result<config> parse(const bj::value& json, const limits& lim = {});
// The same from JSON text (errors also say where the JSON is malformed).
result<config> parse(std::string_view json_text, const limits& lim = {});

// The ARM shape back (for the admin API and `hubctl route list`).
bj::value to_json(const config& c);
bj::value to_json(const route& r);

// IoT Hub's rule for route, endpoint and enrichment-key names: 1..64 of A-Z a-z 0-9 . _ -.
bool valid_name(std::string_view name) noexcept;
// https://host[:port][/path][?query] into a webhook's host, port and target. ArgumentInvalid
// for another scheme, user info, a fragment, spaces or control characters, a bad port.
result<void> parse_webhook_url(webhook_endpoint& ep);
// Every custom endpoint's name, in configuration order (event hubs, storage containers, webhooks).
std::vector<std::string> custom_endpoint_names(const config& c);

}  // namespace hub::routing
