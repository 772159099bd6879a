#include "server/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace hub::server {
namespace {

namespace fs = std::filesystem;

config parse_ok(const std::vector<std::string>& args) {
  parse_outcome out = parse_config(args);
  if (auto* e = std::get_if<parse_exit>(&out)) {
    ADD_FAILURE() << "parse failed (" << e->code << "): " << e->text;
    return {};
  }
  return std::get<config>(out);
}

parse_exit parse_exits(const std::vector<std::string>& args) {
  parse_outcome out = parse_config(args);
  if (auto* e = std::get_if<parse_exit>(&out)) return *e;
  ADD_FAILURE() << "expected parsing to stop";
  return {};
}

TEST(config, defaults) {
  ::setenv("HUBD_DATA", "/tmp/hubd-config-test", 1);
  const config cfg = parse_ok({});
  ::unsetenv("HUBD_DATA");
  EXPECT_EQ(cfg.data_dir, fs::path("/tmp/hubd-config-test"));
  EXPECT_EQ(cfg.host_name, "localhost");
  EXPECT_TRUE(cfg.listen.empty());
  EXPECT_EQ(cfg.https_port, 443);
  EXPECT_EQ(cfg.mqtt_port, 8883);
  EXPECT_EQ(cfg.amqp_port, 5671);
  EXPECT_EQ(cfg.log_level, "info");
  EXPECT_FALSE(cfg.init_only);
}

TEST(config, command_line) {
  const config cfg = parse_ok({"--data", "/tmp/h1", "--hostname", "127.0.0.2", "--listen", "127.0.0.2", "--listen", "::1",
                               "--https-port", "8443", "--mqtt-port=1883", "--log-level", "debug", "--init"});
  EXPECT_EQ(cfg.data_dir, fs::path("/tmp/h1"));
  EXPECT_EQ(cfg.host_name, "127.0.0.2");
  EXPECT_EQ(cfg.listen, (std::vector<std::string>{"127.0.0.2", "::1"}));
  EXPECT_EQ(cfg.https_port, 8443);
  EXPECT_EQ(cfg.mqtt_port, 1883);
  EXPECT_EQ(cfg.amqp_port, 5671);
  EXPECT_EQ(cfg.log_level, "debug");
  EXPECT_TRUE(cfg.init_only);
}

TEST(config, config_file_with_command_line_overrides) {
  const fs::path file = fs::path(::testing::TempDir()) / "hubd-config-test.toml";
  std::ofstream(file) << "# hubd settings\n"
                         "hostname = \"myhub.local\"\n"
                         "https-port = 8443\n"
                         "listen = [\"127.0.0.3\", \"127.0.0.4\"]\n"
                         "log-level = \"warn\"\n";
  const config cfg = parse_ok({"--data", "/tmp/h2", "--config", file.string(), "--log-level", "debug"});
  fs::remove(file);
  EXPECT_EQ(cfg.host_name, "myhub.local");
  EXPECT_EQ(cfg.https_port, 8443);
  EXPECT_EQ(cfg.listen, (std::vector<std::string>{"127.0.0.3", "127.0.0.4"}));
  EXPECT_EQ(cfg.log_level, "debug");  // the command line wins
}

TEST(config, rejects_bad_values_with_usage_errors) {
  EXPECT_EQ(parse_exits({"--https-port", "70000"}).code, 2);
  EXPECT_EQ(parse_exits({"--listen", "localhost"}).code, 2);
  EXPECT_EQ(parse_exits({"--hostname", "a;b"}).code, 2);
  EXPECT_EQ(parse_exits({"--log-level", "loud"}).code, 2);
  EXPECT_EQ(parse_exits({"--no-such-option"}).code, 2);
  EXPECT_EQ(parse_exits({"--config", "/nonexistent/hubd.toml"}).code, 2);

  const fs::path file = fs::path(::testing::TempDir()) / "hubd-config-typo.toml";
  std::ofstream(file) << "https-prot = 8443\n";
  const parse_exit typo = parse_exits({"--config", file.string()});
  fs::remove(file);
  EXPECT_EQ(typo.code, 2);
  EXPECT_NE(typo.text.find("https-prot"), std::string::npos) << typo.text;
}

TEST(config, help_and_version) {
  const parse_exit help = parse_exits({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.text.find("--https-port"), std::string::npos);
  EXPECT_NE(help.text.find("443"), std::string::npos);
  EXPECT_NE(help.text.find("NODE_EXTRA_CA_CERTS"), std::string::npos);

  const parse_exit version = parse_exits({"--version"});
  EXPECT_EQ(version.code, 0);
  EXPECT_NE(version.text.find("hubd 0.1.0"), std::string::npos);
}

TEST(config, event_log_options) {
  const config defaults = parse_ok({"--data", "/tmp/h1"});
  EXPECT_EQ(defaults.partitions, 4u);
  EXPECT_EQ(defaults.retention, std::chrono::hours(24));
  const config cfg = parse_ok({"--data", "/tmp/h1", "--partitions", "8", "--retention", "36h"});
  EXPECT_EQ(cfg.partitions, 8u);
  EXPECT_EQ(cfg.retention, std::chrono::hours(36));
  EXPECT_EQ(parse_exits({"--partitions", "0"}).code, 2);
  EXPECT_EQ(parse_exits({"--partitions", "129"}).code, 2);
  EXPECT_EQ(parse_exits({"--retention", "soon"}).code, 2);
}

TEST(config, routing_options) {
  const config defaults = parse_ok({"--data", "/tmp/h1"});
  EXPECT_TRUE(defaults.routing_file.empty());
  EXPECT_FALSE(defaults.routing_test_batching);
  const config cfg = parse_ok({"--data", "/tmp/h1", "--routing", "/etc/hubd/routing.json", "--routing-test-batching"});
  EXPECT_EQ(cfg.routing_file, fs::path("/etc/hubd/routing.json"));
  EXPECT_TRUE(cfg.routing_test_batching);
  // A key of the config file too.
  const fs::path file = fs::path(::testing::TempDir()) / "hubd-routing-test.toml";
  std::ofstream(file) << "routing = \"/srv/routing.json\"\n";
  const config from_file = parse_ok({"--data", "/tmp/h2", "--config", file.string()});
  fs::remove(file);
  EXPECT_EQ(from_file.routing_file, fs::path("/srv/routing.json"));
}

TEST(config, c2d_options) {
  const config defaults = parse_ok({"--data", "/tmp/h1"});
  EXPECT_EQ(defaults.c2d_ttl, std::chrono::hours(1));
  EXPECT_EQ(defaults.c2d_max_delivery_count, 10u);
  EXPECT_EQ(defaults.c2d_feedback_ttl, std::chrono::hours(1));
  const config cfg = parse_ok(
      {"--data", "/tmp/h1", "--c2d-ttl", "2d", "--c2d-max-delivery-count", "3", "--c2d-feedback-ttl", "90s"});
  EXPECT_EQ(cfg.c2d_ttl, std::chrono::hours(48));
  EXPECT_EQ(cfg.c2d_max_delivery_count, 3u);
  EXPECT_EQ(cfg.c2d_feedback_ttl, std::chrono::seconds(90));
  EXPECT_EQ(parse_exits({"--c2d-ttl", "30s"}).code, 2) << "below IoT Hub's minute";
  EXPECT_EQ(parse_exits({"--c2d-ttl", "3d"}).code, 2) << "above IoT Hub's two days";
  EXPECT_EQ(parse_exits({"--c2d-max-delivery-count", "0"}).code, 2);
  EXPECT_EQ(parse_exits({"--c2d-max-delivery-count", "101"}).code, 2);
}

TEST(config, http_timeouts) {
  const config defaults = parse_ok({"--data", "/tmp/h1"});
  EXPECT_EQ(defaults.http_request_timeout, std::chrono::seconds(30));
  EXPECT_EQ(defaults.http_idle_timeout, std::chrono::minutes(2));
  const config cfg = parse_ok({"--data", "/tmp/h1", "--http-request-timeout", "2s", "--http-idle-timeout", "5"});
  EXPECT_EQ(cfg.http_request_timeout, std::chrono::seconds(2));
  EXPECT_EQ(cfg.http_idle_timeout, std::chrono::seconds(5));
  EXPECT_EQ(parse_exits({"--http-request-timeout", "0s"}).code, 2);
  EXPECT_EQ(parse_exits({"--http-idle-timeout", "2h"}).code, 2);
}

TEST(config, durations) {
  EXPECT_EQ(parse_duration("90s"), std::chrono::seconds(90));
  EXPECT_EQ(parse_duration("30m"), std::chrono::minutes(30));
  EXPECT_EQ(parse_duration("24h"), std::chrono::hours(24));
  EXPECT_EQ(parse_duration("7d"), std::chrono::hours(7 * 24));
  EXPECT_EQ(parse_duration("3600"), std::chrono::seconds(3600));
  EXPECT_FALSE(parse_duration(""));
  EXPECT_FALSE(parse_duration("0h"));
  EXPECT_FALSE(parse_duration("h"));
  EXPECT_FALSE(parse_duration("1.5h"));
  EXPECT_FALSE(parse_duration("-1d"));
  EXPECT_FALSE(parse_duration("1w"));
}

TEST(config, connection_limits) {
  const config d = parse_ok({"--data", "/tmp/x"});
  EXPECT_EQ(d.max_unauthenticated, 2048u);
  EXPECT_EQ(d.max_unauthenticated_per_ip, 256u);
  EXPECT_EQ(d.max_connections_per_ip, 0u);
  EXPECT_EQ(d.auth_timeout, std::chrono::seconds(30));
  const config c = parse_ok({"--data", "/tmp/x", "--max-unauthenticated", "10", "--max-unauthenticated-per-ip", "0",
                             "--max-connections-per-ip", "100", "--auth-timeout", "2m"});
  EXPECT_EQ(c.max_unauthenticated, 10u);
  EXPECT_EQ(c.max_unauthenticated_per_ip, 0u);
  EXPECT_EQ(c.max_connections_per_ip, 100u);
  EXPECT_EQ(c.auth_timeout, std::chrono::minutes(2));
  EXPECT_EQ(parse_ok({"--data", "/tmp/x", "--auth-timeout", "0"}).auth_timeout, std::chrono::seconds(0));
  EXPECT_EQ(parse_exits({"--auth-timeout", "soon"}).code, 2);
}

}  // namespace
}  // namespace hub::server
