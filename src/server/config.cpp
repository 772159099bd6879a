#include "server/config.hpp"

#include "server/files.hpp"

#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <sstream>

namespace hub::server {
namespace {

constexpr const char* description = R"(hubd — a self-hosted IoT hub, wire-compatible with Azure IoT Hub.

Devices and back ends use the official Azure IoT SDKs unchanged: give them a connection string
with HostName=<--hostname> and make them trust the hub's CA (DIR/ca.pem), e.g. for Node.js
  export NODE_EXTRA_CA_CERTS=DIR/ca.pem
Every port serves HTTPS, MQTT over TLS and AMQP over TLS (the protocol is detected), but the SDKs
expect these ports:
  443   service SDK REST calls (registry, jobs, direct methods, provisioning service): the SDKs
        ignore any port in HostName, so they need 443
  8883  MQTT (device SDKs)
  5671  AMQP (device and service SDKs, Event Hubs-compatible endpoint)
Device-to-cloud telemetry (MQTT, AMQP, HTTPS) is acknowledged once it is on disk in the event
log, DIR/events, split into --partitions partitions and kept for --retention. Cloud-to-device
messages wait in per-device queues in the database (at most 50 per device, as in IoT Hub).
On a shared machine give each hub its own loopback address (127.x.y.z) instead of other ports:
  hubd --data /tmp/hub1 --hostname 127.0.0.2 --listen 127.0.0.2
)";

bool valid_ip(const std::string& text) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, text.c_str(), buf) == 1 || ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

// Host names end up in connection strings (';' and '=' separate fields there), certificates and
// URLs, so only DNS characters or an IP literal are accepted.
bool valid_host_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  if (valid_ip(name)) return true;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return name.front() != '.' && name.front() != '-';
}

}  // namespace

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::int64_t unit = 1;
  switch (text.back()) {
    case 's': unit = 1; text.remove_suffix(1); break;
    case 'm': unit = 60; text.remove_suffix(1); break;
    case 'h': unit = 3600; text.remove_suffix(1); break;
    case 'd': unit = 86400; text.remove_suffix(1); break;
    default: break;
  }
  if (text.empty() || text.size() > 9) return std::nullopt;
  std::int64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  if (n == 0) return std::nullopt;
  return std::chrono::seconds(n * unit);
}

namespace {

parse_outcome parse(std::vector<std::string> args_reversed) {
  config cfg;
  std::string data_dir;
  std::string retention = "1d";
  std::string c2d_ttl = "1h";
  std::string c2d_feedback_ttl = "1h";
  std::string http_request_timeout = "30s";
  std::string http_idle_timeout = "2m";
  std::string auth_timeout = "30s";

  CLI::App app(description, "hubd");
  app.get_formatter()->column_width(30);
  app.set_version_flag("--version", fmt::format("hubd {}", hubd_version), "Print the version and exit");
  // A misspelt key in the file must not be ignored silently (CLI11's default).
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_config("--config", "", "Read options from an INI/TOML file with the same keys as the long options,\n"
                                 "e.g.  hostname = \"myhub.local\"  and  https-port = 8443")
      ->type_name("FILE");

  app.add_option("--data", data_dir,
                 "Data folder: hub identity and keys (hub.json), CA and server certificates, database\n"
                 "(db/), telemetry (events/).\n"
                 "Default: $HUBD_DATA, else /var/lib/hubd as root, else $XDG_DATA_HOME/hubd\n"
                 "or ~/.local/share/hubd")
      ->type_name("DIR");
  app.add_option("--hostname", cfg.host_name,
                 "Host name clients use (HostName= in connection strings): a DNS name or an IP\n"
                 "literal. The server certificate is issued for it")
      ->type_name("NAME")
      ->capture_default_str()
      ->check([](const std::string& v) {
        return valid_host_name(v) ? std::string{} : std::string("not a DNS name or IP literal: ") + v;
      });
  app.add_option("--listen", cfg.listen,
                 "Address to listen on (repeatable). Default: \"::\" dual-stack (all IPv4 and IPv6\n"
                 "addresses), or 0.0.0.0 where IPv6 is unavailable")
      ->type_name("ADDR")
      ->check([](const std::string& v) { return valid_ip(v) ? std::string{} : std::string("not an IP address: ") + v; });
  app.add_option("--https-port", cfg.https_port, "HTTPS port; the service SDKs' REST calls only ever use 443")
      ->type_name("PORT")
      ->capture_default_str();
  app.add_option("--mqtt-port", cfg.mqtt_port, "MQTT over TLS port (device SDKs: 8883)")
      ->type_name("PORT")
      ->capture_default_str();
  app.add_option("--amqp-port", cfg.amqp_port, "AMQP over TLS port (SDKs: 5671)")->type_name("PORT")->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "Log level: trace, debug, info, warn, error, critical, off")
      ->type_name("LEVEL")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--partitions", cfg.partitions,
                 "Partitions of the event log (device-to-cloud telemetry, DIR/events), as an IoT\n"
                 "hub's partition count: fixed once the log exists")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 128));
  app.add_option("--commit-delay-us", cfg.commit_delay_us,
                 "Group commit delay of the event log, in microseconds: a partition syncs to disk\n"
                 "at most once per delay while telemetry streams in, so more messages share each\n"
                 "fdatasync (less CPU per message under load, up to this much more latency); a\n"
                 "message after a quiet spell is synced at once. 0 = sync each group at once")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(0, 100'000));
  app.add_option("--consumer-group", cfg.consumer_groups,
                 "A consumer group of the Event Hubs-compatible endpoint besides $Default (repeat for\n"
                 "more; names compare case-insensitively). Receivers naming another group are refused")
      ->type_name("NAME")
      ->check([](const std::string& v) {
        const bool ok = !v.empty() && v.size() <= 50 &&
                        v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._$") ==
                            std::string::npos;
        return ok ? std::string{} : std::string("not a consumer group name (1-50 of A-Z a-z 0-9 - . _ $): ") + v;
      });
  app.add_option("--retention", retention,
                 "How long telemetry stays in the event log: 90m, 24h, 7d (whole segments are\n"
                 "deleted once their newest message is older)")
      ->type_name("DURATION")
      ->capture_default_str()
      ->check([](const std::string& v) {
        return parse_duration(v) ? std::string{} : std::string("not a duration like 90m, 24h or 7d: ") + v;
      });
  // IoT Hub's bounds for both TTLs: 1 minute to 2 days.
  const auto ttl_check = [](const std::string& v) {
    const auto d = parse_duration(v);
    if (!d) return std::string("not a duration like 90s, 30m or 1h: ") + v;
    if (*d < std::chrono::minutes(1) || *d > std::chrono::hours(48)) return std::string("must be 1m .. 2d: ") + v;
    return std::string{};
  };
  app.add_option("--c2d-ttl", c2d_ttl,
                 "Default time to live of a cloud-to-device message without its own expiry\n"
                 "(1m .. 2d, as IoT Hub's cloudToDevice.defaultTtlAsIso8601)")
      ->type_name("DURATION")
      ->capture_default_str()
      ->check(ttl_check);
  app.add_option("--c2d-max-delivery-count", cfg.c2d_max_delivery_count,
                 "Abandons after which a cloud-to-device message is dead-lettered (1 .. 100)")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--c2d-feedback-ttl", c2d_feedback_ttl,
                 "How long cloud-to-device feedback records wait for the service to read them (1m .. 2d)")
      ->type_name("DURATION")
      ->capture_default_str()
      ->check(ttl_check);
  // A client that stalls holds a connection (and its buffers) until these run out.
  const auto http_timeout_check = [](const std::string& v) {
    const auto d = parse_duration(v);
    if (!d) return std::string("not a duration like 30s or 2m: ") + v;
    if (*d > std::chrono::hours(1)) return std::string("must be 1s .. 1h: ") + v;
    return std::string{};
  };
  app.add_option("--http-request-timeout", http_request_timeout,
                 "HTTPS: how long a client may take to send one request body, or to read one response")
      ->type_name("DURATION")
      ->capture_default_str()
      ->check(http_timeout_check);
  app.add_option("--http-idle-timeout", http_idle_timeout,
                 "HTTPS: how long a kept-alive connection may wait for its next request, whose\n"
                 "headers must all arrive within this time")
      ->type_name("DURATION")
      ->capture_default_str()
      ->check(http_timeout_check);
  app.add_option("--routing", cfg.routing_file,
                 "Message routing: a JSON file with IoT Hub's ARM routing object (endpoints.eventHubs,\n"
                 "endpoints.storageContainers, routes, fallbackRoute, enrichments), checked at start")
      ->type_name("FILE");
  app.add_flag("--routing-test-batching", cfg.routing_test_batching,
               "For tests: let storage endpoints batch every second (batchFrequencyInSeconds >= 1)\n"
               "and in chunks from 1 KiB (maxChunkSizeInBytes >= 1024)");
  app.add_option("--max-unauthenticated", cfg.max_unauthenticated,
                 "Connections accepted but not yet authenticated (no CONNACK 0, CBS token, device\n"
                 "certificate or authorised request yet), hub-wide; past it new connections are\n"
                 "closed at once, before TLS (0 = no cap)")
      ->type_name("N")
      ->capture_default_str();
  app.add_option("--max-unauthenticated-per-ip", cfg.max_unauthenticated_per_ip,
                 "The same, per source address (0 = no cap)")
      ->type_name("N")
      ->capture_default_str();
  app.add_option("--max-connections-per-ip", cfg.max_connections_per_ip,
                 "Connections per source address, authenticated or not (0 = no cap; NAT and\n"
                 "gateways put many devices behind one address)")
      ->type_name("N")
      ->capture_default_str();
  app.add_option("--auth-timeout", auth_timeout,
                 "How long a connection may stay unauthenticated before it is closed: 30s, 2m\n"
                 "(0 = no limit; the TLS handshake and MQTT CONNECT have their own 10 s)")
      ->type_name("DURATION")
      ->capture_default_str()
      ->check([](const std::string& v) {
        return v == "0" || parse_duration(v) ? std::string{} : std::string("not a duration like 30s or 2m: ") + v;
      });
  app.add_option("--throttle", cfg.throttle_specs,
                 "Rate limits in IoT Hub's style, off by default (repeatable, applied in order):\n"
                 "tier=S1|S2|S3,units=N for a tier's published per-hub limits; per-hub overrides\n"
                 "d2c=, connect=, twin=, twin-service=, methods=, c2d=, registry= as 100/s or\n"
                 "5/min[:BURST] or off; device.<op>= for per-device rates; backlog=10s (how long\n"
                 "D2C over the rate is delayed before it is refused). Refusals are 429\n"
                 "ThrottlingException. See docs/limits.md")
      ->type_name("SPEC")
      ->check([](const std::string& v) {
        auto r = throttling::parse_throttle(v, throttling::limits{});
        return r ? std::string{} : r.error().message;
      });
  app.add_flag("--init", cfg.init_only,
               "Create the data folder, hub identity and certificates, print them and exit");

  try {
    app.parse(std::move(args_reversed));
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    if (code == 0) return parse_exit{0, out.str()};
    // CLI11's own exit codes (100+) mean nothing to a shell script; usage errors are 2.
    return parse_exit{2, fmt::format("hubd: {}\nRun with --help for more information.\n", e.what())};
  }

  // Ports: CLI11 already rejected anything that does not fit in 16 bits.
  cfg.data_dir = data_dir.empty() ? default_data_dir() : std::filesystem::path(data_dir);
  cfg.retention = *parse_duration(retention);  // checked above
  cfg.c2d_ttl = *parse_duration(c2d_ttl);
  cfg.c2d_feedback_ttl = *parse_duration(c2d_feedback_ttl);
  cfg.http_request_timeout = *parse_duration(http_request_timeout);
  cfg.http_idle_timeout = *parse_duration(http_idle_timeout);
  cfg.auth_timeout = auth_timeout == "0" ? std::chrono::seconds(0) : *parse_duration(auth_timeout);
  for (const std::string& spec : cfg.throttle_specs) cfg.throttle = *throttling::parse_throttle(spec, cfg.throttle);
  return cfg;
}

}  // namespace

parse_outcome parse_config(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = argc - 1; i > 0; --i) args.emplace_back(argv[i]);
  return parse(std::move(args));
}

parse_outcome parse_config(const std::vector<std::string>& args) {
  return parse(std::vector<std::string>(args.rbegin(), args.rend()));
}

}  // namespace hub::server
