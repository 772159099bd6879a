// IoT Hub's AMQP names, table-driven.
#include "heads/amqp/addresses.hpp"

#include <gtest/gtest.h>

namespace hub::amqp_head {
namespace {

using k = link_address::kind;

TEST(amqp_addresses, link_addresses) {
  struct row {
    std::string_view address;
    k what;
    std::string_view device;
    std::string_view module;
  };
  const row rows[] = {
      {"$cbs", k::cbs, "", ""},
      {"/devices/dev1/messages/events", k::telemetry, "dev1", ""},
      {"/devices/dev1/modules/mod1/messages/events", k::telemetry, "dev1", "mod1"},
      {"amqps://hub.example:5671/devices/dev1/messages/events", k::telemetry, "dev1", ""},
      {"/devices/dev%201/messages/events", k::telemetry, "dev%201", ""},  // raw, as the SDK sends it
      {"/devices/dev1/messages/events/", k::telemetry, "dev1", ""},
      {"/devices/dev1/messages/devicebound", k::c2d, "dev1", ""},
      {"/devices/dev1/twin", k::twin, "dev1", ""},
      {"/devices/dev1/modules/m/twin", k::twin, "dev1", "m"},
      {"/devices/dev1/methods/devicebound", k::methods, "dev1", ""},
      {"/devices//messages/events", k::unknown, "", ""},
      {"/devices/dev1/messages", k::unknown, "", ""},
      {"/devices/dev1/modules//messages/events", k::unknown, "", ""},
      {"devices/dev1/messages/events", k::unknown, "", ""},
      {"/devices/dev1/messages/events/extra", k::unknown, "", ""},
      {"", k::unknown, "", ""},
      {"/messages/devicebound", k::service, "", ""},
      {"/messages/serviceBound/feedback", k::service, "", ""},
      {"/messages/serviceBound/filenotifications", k::service, "", ""},
      {"/messages/other", k::unknown, "", ""},
  };
  for (const row& r : rows) {
    const link_address a = parse_link_address(r.address);
    EXPECT_EQ(a.what, r.what) << r.address;
    EXPECT_EQ(a.device_id, r.device) << r.address;
    EXPECT_EQ(a.module_id, r.module) << r.address;
  }
}

TEST(amqp_addresses, audiences) {
  using a = audience::kind;
  struct row {
    std::string_view name;
    a what;
    std::string_view host, device, module, entity;
  };
  const row rows[] = {
      // The device SDK url-encodes the whole sr, port included.
      {"localhost%3A15671%2Fdevices%2Fdev1", a::device, "localhost:15671", "dev1", "", ""},
      {"hub.example%2Fdevices%2Fdev1%2Fmodules%2Fmod1", a::module, "hub.example", "dev1", "mod1", ""},
      {"hub.example/devices/dev1", a::device, "hub.example", "dev1", "", ""},
      // Decoded once: a '%' that is part of the id arrives as %25.
      {"hub.example%2Fdevices%2Fdev%25201", a::device, "hub.example", "dev%201", "", ""},
      {"hub.example/devices/dev%201", a::device, "hub.example", "dev 1", "", ""},
      // The service SDK's Client: the HostName as it is.
      {"127.0.0.2", a::hub, "127.0.0.2", "", "", ""},
      {"localhost:5676", a::hub, "localhost:5676", "", "", ""},
      // The Event Hubs client.
      {"sb://hub.example:5671/myhub/$management", a::event_hub, "hub.example:5671", "", "", "myhub/$management"},
      {"sb://hub.example/myhub/ConsumerGroups/$Default/Partitions/0", a::event_hub, "hub.example", "", "", "myhub/ConsumerGroups/$Default/Partitions/0"},
      {"sb://hub.example", a::invalid, "", "", "", ""},
      {"", a::invalid, "", "", "", ""},
      {"hub.example/devices", a::invalid, "", "", "", ""},
      {"hub.example/devices/dev1/messages/events", a::invalid, "", "", "", ""},
      {"%2Fdevices%2Fdev1", a::invalid, "", "", "", ""},
  };
  for (const row& r : rows) {
    const audience got = parse_audience(r.name);
    EXPECT_EQ(got.what, r.what) << r.name;
    EXPECT_EQ(got.host, r.host) << r.name;
    EXPECT_EQ(got.device_id, r.device) << r.name;
    EXPECT_EQ(got.module_id, r.module) << r.name;
    EXPECT_EQ(got.entity, r.entity) << r.name;
  }
}

TEST(amqp_addresses, same_host_ignores_port_and_case) {
  EXPECT_TRUE(same_host("Hub.Example:5671", "hub.example"));
  EXPECT_TRUE(same_host("127.0.0.2", "127.0.0.2:443"));
  EXPECT_FALSE(same_host("other.example", "hub.example"));
}

TEST(amqp_addresses, conditions_are_what_the_sdk_maps_back) {
  // device.md §4.5: the condition azure-iot-amqp-base turns into each SDK error class.
  EXPECT_EQ(condition_name(errc::unauthorized), "amqp:unauthorized-access");
  EXPECT_EQ(condition_name(errc::message_too_large), "amqp:link:message-size-exceeded");
  EXPECT_EQ(condition_name(errc::throttled), "com.microsoft:device-container-throttled");
  EXPECT_EQ(condition_name(errc::device_not_found), "amqp:not-found");
  EXPECT_EQ(condition_name(errc::server_error), "amqp:internal-error");
  EXPECT_EQ(condition_name(errc::quota_exceeded), "com.microsoft:quota-exceeded");
  EXPECT_EQ(condition_name(errc::argument_invalid), "com.microsoft:argument-error");
  EXPECT_EQ(condition_name(errc::precondition_failed), "com.microsoft:precondition-failed");
  EXPECT_EQ(condition_name(errc::service_unavailable), "com.microsoft:timeout");
}

}  // namespace
}  // namespace hub::amqp_head
