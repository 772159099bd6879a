// Authorisation of service requests and authentication of devices, against a registry on
// memory_kv and a manual clock. Literal tokens were computed outside hubd (see sas_tests.cpp).
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/service.hpp"

#include <boost/json/object.hpp>
#include <gtest/gtest.h>

#include <algorithm>

namespace hub::auth {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view device_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view owner_key = "aW90aHVib3duZXIta2V5LTAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::int64_t far_expiry = 2'000'000'000;  // the manual clock starts at 1'700'000'000

constexpr std::string_view node_device_token =
    "SharedAccessSignature sr=myhub.example%2Fdevices%2Fdev1&sig=RcWrUQYGdy6HtMHwZ7IM3j1jWqta2HFviTZiY82fXjc%3D"
    "&se=2000000000";
constexpr std::string_view node_module_token =
    "SharedAccessSignature sr=myhub.example%2Fdevices%2Fdev1%2Fmodules%2Fmod1"
    "&sig=Za5SiG6ohFX1xKZt%2F9BQEJCrAN73DuU4y8jmAZC7Zfo%3D&se=2000000000";
constexpr std::string_view node_policy_device_token =
    "SharedAccessSignature sr=myhub.example%2Fdevices%2Fdev1&sig=G19nknym8ERhzl2N9kPgQ4XbC7JIZlVlTPGPBrIULGE%3D"
    "&skn=iothubowner&se=2000000000";
// Exactly what azure-iothub's Registry sends for HostName=127.0.0.2 (sr raw, order sr sig skn se).
constexpr std::string_view node_service_token =
    "SharedAccessSignature sr=127.0.0.2&sig=jXflooJ6xJSYh%2F4KvDANwiK%2F9KNim3p1yMrZL%2FWkvEM%3D&skn=iothubowner"
    "&se=2000000000";

// --- policies ---------------------------------------------------------------------------------

TEST(policies, defaults_are_iot_hubs_five) {
  const auto ps = default_policies();
  ASSERT_EQ(ps.size(), 5u);
  const std::pair<std::string_view, std::string_view> expected[] = {
      {"iothubowner", "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"},
      {"service", "ServiceConnect"},
      {"device", "DeviceConnect"},
      {"registryRead", "RegistryRead"},
      {"registryReadWrite", "RegistryRead, RegistryWrite"},
  };
  for (std::size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].name, expected[i].first);
    EXPECT_EQ(to_string(ps[i].rights), expected[i].second);
    EXPECT_EQ(crypto::base64_decode(ps[i].primary_key)->size(), 32u);
    EXPECT_EQ(crypto::base64_decode(ps[i].secondary_key)->size(), 32u);
    EXPECT_NE(ps[i].primary_key, ps[i].secondary_key);
  }
  EXPECT_NE(default_policies()[0].primary_key, ps[0].primary_key) << "fresh keys each time";
}

TEST(policies, permissions_combine) {
  const permissions p = permission::registry_read | permission::service_connect | permission::device_connect;
  EXPECT_TRUE(has(p, permission::registry_read));
  EXPECT_FALSE(has(p, permission::registry_write));
  EXPECT_EQ(to_string(p), "RegistryRead, ServiceConnect, DeviceConnect");
  EXPECT_EQ(to_string(0), "");
}

TEST(policies, identity_round_trips_through_json) {
  hub_identity id{"myhub.example", default_policies()};
  const auto o = to_json(id);
  EXPECT_EQ(o.at("hostName"), "myhub.example");
  const auto& first = o.at("policies").as_array().at(0).as_object();
  EXPECT_EQ(first.at("keyName"), "iothubowner");
  EXPECT_EQ(first.at("rights"), "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect");
  EXPECT_EQ(first.at("primaryKey").as_string(), std::string_view(id.policies[0].primary_key));

  auto back = identity_from_json(json::parse(json::serialize(o)).value());
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->host_name, id.host_name);
  ASSERT_EQ(back->policies.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(back->policies[i].name, id.policies[i].name);
    EXPECT_EQ(back->policies[i].primary_key, id.policies[i].primary_key);
    EXPECT_EQ(back->policies[i].secondary_key, id.policies[i].secondary_key);
    EXPECT_EQ(back->policies[i].rights, id.policies[i].rights);
  }
}

TEST(policies, identity_from_json_rejects_bad_input) {
  const std::string key(device_key);
  for (const std::string& bad : {
           std::string(R"([])"),
           std::string(R"({"policies":[]})"),
           std::string(R"({"hostName":"h"})"),
           std::string(R"({"hostName":"h","policies":[1]})"),
           R"({"hostName":"h","policies":[{"keyName":"p","primaryKey":")" + key + R"("}]})",
           R"({"hostName":"h","policies":[{"keyName":"p","primaryKey":"!!","secondaryKey":")" + key +
               R"(","rights":"RegistryRead"}]})",
           R"({"hostName":"h","policies":[{"keyName":"p","primaryKey":")" + key + R"(","secondaryKey":")" + key +
               R"(","rights":"RegistryRead, Everything"}]})",
           R"({"hostName":"h","policies":[{"keyName":"p","primaryKey":")" + key + R"(","secondaryKey":")" + key +
               R"(","rights":"RegistryRead"},{"keyName":"p","primaryKey":")" + key + R"(","secondaryKey":")" + key +
               R"(","rights":"RegistryRead"}]})",
       }) {
    auto r = identity_from_json(json::parse(bad).value());
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, errc::argument_invalid) << bad;
  }
}

TEST(policies, find_is_case_sensitive) {
  hub_identity id{"h", default_policies()};
  ASSERT_NE(id.find("iothubowner"), nullptr);
  EXPECT_EQ(id.find("iothubowner")->name, "iothubowner");
  EXPECT_EQ(id.find("IotHubOwner"), nullptr);
  EXPECT_EQ(id.find(""), nullptr);
}

TEST(policies, connection_string_has_the_sdk_shape) {
  hub_identity id{"myhub.example", default_policies()};
  id.policies[0].primary_key = std::string(owner_key);
  EXPECT_EQ(connection_string(id, id.policies[0]),
            "HostName=myhub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=" + std::string(owner_key));
}

// --- the service ------------------------------------------------------------------------------

class auth_service : public ::testing::Test {
 protected:
  auth_service() {
    // dev1 and its module mod1 use the reference key; dev2 has keys of its own.
    registry::device dev1;
    dev1.device_id = "dev1";
    dev1.auth.primary_key = std::string(device_key);
    EXPECT_TRUE(registry_.create_device(dev1).has_value());
    registry::module mod1;
    mod1.device_id = "dev1";
    mod1.module_id = "mod1";
    mod1.auth.primary_key = std::string(device_key);
    EXPECT_TRUE(registry_.create_module(mod1).has_value());
    registry::device dev2;
    dev2.device_id = "dev2";
    dev2_ = registry_.create_device(dev2).value();
  }

  static hub_identity make_identity(std::string host) {
    hub_identity id{std::move(host), default_policies()};
    id.policies[0].primary_key = std::string(owner_key);
    return id;
  }

  // A token for `resource` signed with policy `name`'s primary key.
  std::string policy_token(std::string_view name, std::string_view resource = "myhub.example",
                           std::int64_t expiry = far_expiry) const {
    return make_sas_token(resource, auth_.identity().find(name)->primary_key, expiry, name);
  }

  void expect_unauthorized(const result<principal>& r, std::string_view mention) const {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, errc::unauthorized);
    EXPECT_NE(r.error().message.find(mention), std::string::npos) << r.error().message;
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  registry::device dev2_;
  service auth_{make_identity("myhub.example"), registry_, clock_};
};

TEST_F(auth_service, authorizes_a_policy_token) {
  auto p = auth_.authorize(node_policy_device_token, "myhub.example/devices/dev1", permission::registry_read);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->who, principal::kind::policy);
  EXPECT_EQ(p->name, "iothubowner");
  EXPECT_EQ(p->rights, permission::registry_read | permission::registry_write | permission::service_connect |
                           permission::device_connect);
  EXPECT_EQ(p->expiry, far_expiry);
}

TEST_F(auth_service, accepts_the_node_service_sdks_raw_host_token) {
  service hub{make_identity("127.0.0.2"), registry_, clock_};
  auto p = hub.authorize(node_service_token, "127.0.0.2/devices/dev1", permission::registry_write);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->name, "iothubowner");
  // The same token, whatever port the request came in on.
  EXPECT_TRUE(hub.authorize(node_service_token, "127.0.0.2:443/devices/dev1", permission::service_connect));
  service with_port{make_identity("127.0.0.2:5671"), registry_, clock_};
  EXPECT_TRUE(with_port.authorize(node_service_token, "127.0.0.2:5671", permission::service_connect));
}

TEST_F(auth_service, tolerates_a_port_in_the_tokens_host) {
  EXPECT_TRUE(auth_.authorize(policy_token("iothubowner", "myhub.example:443"), "myhub.example/devices/dev1",
                              permission::registry_read));
  EXPECT_TRUE(auth_.authorize(policy_token("service", "amqps://myhub.example:5671"), "myhub.example/messages/events",
                              permission::service_connect));
}

TEST_F(auth_service, accepts_the_secondary_key) {
  const auto* owner = auth_.identity().find("iothubowner");
  const auto token = make_sas_token("myhub.example", owner->secondary_key, far_expiry, "iothubowner");
  EXPECT_TRUE(auth_.authorize(token, "myhub.example", permission::registry_read));
}

TEST_F(auth_service, refuses_a_wrong_key_without_echoing_it) {
  const auto wrong = crypto::new_symmetric_key();
  const auto token = make_sas_token("myhub.example", wrong, far_expiry, "iothubowner");
  const auto r = auth_.authorize(token, "myhub.example", permission::registry_read);
  expect_unauthorized(r, "signature");
  const auto sig = parse_sas_token(token)->signature;
  EXPECT_EQ(r.error().message.find(sig), std::string::npos);
  EXPECT_EQ(r.error().message.find(wrong), std::string::npos);
  // Another policy's key under this policy's name.
  const auto mixed = make_sas_token("myhub.example", auth_.identity().find("service")->primary_key, far_expiry,
                                    "iothubowner");
  expect_unauthorized(auth_.authorize(mixed, "myhub.example", permission::registry_read), "signature");
}

TEST_F(auth_service, refuses_an_expired_token) {
  const auto now = clock_.now_seconds();
  expect_unauthorized(auth_.authorize(policy_token("iothubowner", "myhub.example", now), "myhub.example",
                                      permission::registry_read),
                      "expired");
  EXPECT_TRUE(auth_.authorize(policy_token("iothubowner", "myhub.example", now + 1), "myhub.example",
                              permission::registry_read));
  clock_.advance(std::chrono::seconds{far_expiry - now});
  expect_unauthorized(auth_.authorize(node_policy_device_token, "myhub.example/devices/dev1", permission::registry_read),
                      "expired");
}

TEST_F(auth_service, refuses_a_wrong_audience) {
  expect_unauthorized(auth_.authorize(policy_token("iothubowner", "otherhub.example"), "myhub.example/devices/dev1",
                                      permission::registry_read),
                      "does not cover");
  expect_unauthorized(auth_.authorize(policy_token("iothubowner", "myhub.example/devices/dev2"),
                                      "myhub.example/devices/dev1", permission::registry_read),
                      "does not cover");
  // A device-scoped policy token does not cover hub-wide operations.
  expect_unauthorized(auth_.authorize(node_policy_device_token, "myhub.example/devices", permission::registry_read),
                      "does not cover");
}

TEST_F(auth_service, refuses_device_tokens_and_unknown_policies) {
  expect_unauthorized(auth_.authorize(node_device_token, "myhub.example/devices/dev1", permission::registry_read),
                      "device token");
  // Policy names are exact: "IotHubOwner" is not "iothubowner".
  expect_unauthorized(auth_.authorize(make_sas_token("myhub.example", owner_key, far_expiry, "IotHubOwner"),
                                      "myhub.example", permission::registry_read),
                      "Unknown shared access policy");
  expect_unauthorized(auth_.authorize("garbage", "myhub.example", permission::registry_read), "Malformed");
}

TEST_F(auth_service, each_default_policy_has_only_its_permissions) {
  using enum permission;
  const std::pair<std::string_view, std::vector<permission>> grants[] = {
      {"iothubowner", {registry_read, registry_write, service_connect, device_connect}},
      {"service", {service_connect}},
      {"device", {device_connect}},
      {"registryRead", {registry_read}},
      {"registryReadWrite", {registry_read, registry_write}},
  };
  for (const auto& [name, granted] : grants) {
    for (auto p : {registry_read, registry_write, service_connect, device_connect}) {
      const bool expected = std::find(granted.begin(), granted.end(), p) != granted.end();
      const auto r = auth_.authorize(policy_token(name), "myhub.example/devices/dev1", p);
      EXPECT_EQ(r.has_value(), expected) << name << " / " << to_string(static_cast<permissions>(p));
      if (!expected) {
        EXPECT_EQ(r.error().code, errc::unauthorized);
        EXPECT_NE(r.error().message.find(to_string(static_cast<permissions>(p))), std::string::npos)
            << r.error().message;
      }
    }
  }
}

TEST_F(auth_service, spot_checks_of_registry_permissions) {
  expect_unauthorized(auth_.authorize(policy_token("registryRead"), "myhub.example/devices/dev1",
                                      permission::registry_write),
                      "does not have the RegistryWrite permission");
  expect_unauthorized(auth_.authorize(policy_token("service"), "myhub.example/devices", permission::registry_read),
                      "RegistryRead");
  expect_unauthorized(auth_.authorize(policy_token("device"), "myhub.example/devices", permission::registry_read),
                      "RegistryRead");
  expect_unauthorized(auth_.authorize(policy_token("device"), "myhub.example/devices/dev1", permission::registry_write),
                      "RegistryWrite");
}

// --- devices ----------------------------------------------------------------------------------

TEST_F(auth_service, authenticates_a_device_sdk_token) {
  auto p = auth_.authenticate_device(node_device_token, "dev1");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->who, principal::kind::device);
  EXPECT_EQ(p->name, "dev1");
  EXPECT_EQ(p->device_id, "dev1");
  EXPECT_EQ(p->module_id, "");
  EXPECT_EQ(p->rights, static_cast<permissions>(permission::device_connect));
  EXPECT_EQ(p->expiry, far_expiry);
}

TEST_F(auth_service, authenticates_a_module_token) {
  auto p = auth_.authenticate_device(node_module_token, "dev1", "mod1");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->who, principal::kind::module);
  EXPECT_EQ(p->device_id, "dev1");
  EXPECT_EQ(p->module_id, "mod1");
  // A module's token is not its device's.
  expect_unauthorized(auth_.authenticate_device(node_module_token, "dev1"), "does not cover");
  expect_unauthorized(auth_.authenticate_device(node_module_token, "dev1", "mod2"), "not valid");
}

TEST_F(auth_service, accepts_the_devices_secondary_key) {
  const auto d = registry_.get_device("dev2").value();
  const auto token = make_sas_token("myhub.example/devices/dev2", d.auth.secondary_key, far_expiry);
  EXPECT_TRUE(auth_.authenticate_device(token, "dev2"));
}

TEST_F(auth_service, refuses_a_token_for_another_device) {
  // dev2's id with dev1's token: dev2's keys do not sign it.
  expect_unauthorized(auth_.authenticate_device(node_device_token, "dev2"), "not valid for device 'dev2'");
  // Even when the keys are the same, the scope must name the device.
  registry::device twin_key;
  twin_key.device_id = "dev3";
  twin_key.auth.primary_key = std::string(device_key);
  ASSERT_TRUE(registry_.create_device(twin_key).has_value());
  expect_unauthorized(auth_.authenticate_device(node_device_token, "dev3"), "does not cover");
  // A scope that is a string prefix but not a path prefix.
  registry::device longer;
  longer.device_id = "dev10";
  longer.auth.primary_key = std::string(device_key);
  ASSERT_TRUE(registry_.create_device(longer).has_value());
  expect_unauthorized(auth_.authenticate_device(node_device_token, "dev10"), "does not cover");
}

TEST_F(auth_service, unknown_device_and_wrong_key_look_the_same) {
  const auto unknown = auth_.authenticate_device(make_sas_token("myhub.example/devices/ghost", device_key, far_expiry),
                                                 "ghost");
  const auto wrong = auth_.authenticate_device(
      make_sas_token("myhub.example/devices/dev2", crypto::new_symmetric_key(), far_expiry), "dev2");
  expect_unauthorized(unknown, "not valid");
  expect_unauthorized(wrong, "not valid");
  EXPECT_EQ(unknown.error().message.find("not found"), std::string::npos);
}

TEST_F(auth_service, refuses_an_expired_device_token) {
  clock_.advance(std::chrono::seconds{far_expiry - clock_.now_seconds()});
  expect_unauthorized(auth_.authenticate_device(node_device_token, "dev1"), "expired");
}

TEST_F(auth_service, device_token_host_may_carry_a_port) {
  const auto token = make_sas_token("MYHUB.example:8883/devices/dev1", device_key, far_expiry);
  EXPECT_TRUE(auth_.authenticate_device(token, "dev1"));
  const auto other_hub = make_sas_token("otherhub.example/devices/dev1", device_key, far_expiry);
  expect_unauthorized(auth_.authenticate_device(other_hub, "dev1"), "does not cover");
}

TEST_F(auth_service, accepts_a_policy_with_device_connect) {
  auto owner = auth_.authenticate_device(node_policy_device_token, "dev1");
  ASSERT_TRUE(owner.has_value()) << owner.error().message;
  EXPECT_EQ(owner->who, principal::kind::device);
  EXPECT_EQ(owner->device_id, "dev1");
  EXPECT_TRUE(auth_.authenticate_device(policy_token("device"), "dev2"));
  EXPECT_TRUE(auth_.authenticate_device(policy_token("device"), "dev1", "mod1"));
  expect_unauthorized(auth_.authenticate_device(policy_token("registryReadWrite"), "dev1"), "DeviceConnect");
  expect_unauthorized(auth_.authenticate_device(policy_token("service"), "dev1"), "DeviceConnect");
  // A policy cannot connect a device that does not exist.
  expect_unauthorized(auth_.authenticate_device(policy_token("device"), "ghost"), "not valid");
  // Scope still applies to policy tokens.
  expect_unauthorized(auth_.authenticate_device(node_policy_device_token, "dev2"), "does not cover");
}

TEST_F(auth_service, a_disabled_device_is_refused_distinctly) {
  auto d = registry_.get_device("dev1").value();
  d.status = registry::device_status::disabled;
  ASSERT_TRUE(registry_.update_device(d, std::nullopt).has_value());
  expect_unauthorized(auth_.authenticate_device(node_device_token, "dev1"), "disabled");
  expect_unauthorized(auth_.authenticate_device(node_module_token, "dev1", "mod1"), "disabled");
  expect_unauthorized(auth_.authenticate_device(node_policy_device_token, "dev1"), "disabled");
  // Without a valid credential, nothing is revealed about the device's status.
  const auto forged = make_sas_token("myhub.example/devices/dev1", crypto::new_symmetric_key(), far_expiry);
  const auto r = auth_.authenticate_device(forged, "dev1");
  expect_unauthorized(r, "not valid");
  EXPECT_EQ(r.error().message.find("disabled"), std::string::npos);
}

TEST_F(auth_service, a_device_without_sas_cannot_use_a_sas_token) {
  registry::device cam;
  cam.device_id = "cam";
  cam.auth.type = registry::auth_type::self_signed;
  cam.auth.primary_thumbprint = std::string(40, 'A');
  ASSERT_TRUE(registry_.create_device(cam).has_value());
  // Any key signs nothing for an identity without keys, the empty key included.
  const auto token = make_sas_token("myhub.example/devices/cam", device_key, far_expiry);
  expect_unauthorized(auth_.authenticate_device(token, "cam"), "not valid");
}

TEST_F(auth_service, malformed_device_tokens_are_unauthorized) {
  expect_unauthorized(auth_.authenticate_device("", "dev1"), "Malformed");
  expect_unauthorized(auth_.authenticate_device("SharedAccessSignature sr=x&se=1", "dev1"), "Malformed");
}

}  // namespace
}  // namespace hub::auth
