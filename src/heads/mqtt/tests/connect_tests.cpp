// CONNECT rules, errc -> CONNACK, admission (authentication, connection table, persistent
// sessions) against the real registry and auth services on memory_kv with a manual clock.
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/registry/service.hpp"
#include "domain/telemetry/service.hpp"
#include "heads/mqtt/connect.hpp"
#include "heads/mqtt/session_store.hpp"
#include "storage/kv.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace hub::mqtt_head {
namespace {

using namespace std::chrono_literals;
using code = mqtt::connack_code;

constexpr std::string_view host = "myhub.example";

mqtt::connect sdk_connect(std::string client_id, std::optional<std::string> password = "token") {
  mqtt::connect c;
  c.protocol_level = 4;
  c.clean_session = false;
  c.keep_alive = 180;
  c.client_id = client_id;
  c.username = fmt::format("{}/{}/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4", host, client_id);
  c.password = std::move(password);
  return c;
}

code refusal_of(const mqtt::connect& c) {
  auto r = check_connect(c);
  const auto* refusal = std::get_if<connect_refusal>(&r);
  return refusal ? refusal->code : code::accepted;
}

TEST(check_connect, takes_what_the_sdk_sends) {
  auto r = check_connect(sdk_connect("dev1/mod1"));
  const auto* claim = std::get_if<connect_claim>(&r);
  ASSERT_NE(claim, nullptr);
  EXPECT_EQ(claim->id.device_id, "dev1");
  EXPECT_EQ(claim->id.module_id, "mod1");
  EXPECT_EQ(claim->client_id, "dev1/mod1");
  EXPECT_EQ(claim->user.api_version, "2021-04-12");
  EXPECT_FALSE(claim->clean_session);
  EXPECT_EQ(claim->sas_token, "token");

  auto x509 = check_connect(sdk_connect("dev1", std::nullopt));
  ASSERT_NE(std::get_if<connect_claim>(&x509), nullptr);
  EXPECT_FALSE(std::get<connect_claim>(x509).sas_token);
}

TEST(check_connect, refusal_codes) {
  auto old = sdk_connect("dev1");
  old.protocol_level = 3;
  EXPECT_EQ(refusal_of(old), code::unacceptable_protocol_version);
  EXPECT_EQ(refusal_of(sdk_connect("")), code::identifier_rejected);
  EXPECT_EQ(refusal_of(sdk_connect("a/b/c")), code::identifier_rejected);
  auto no_user = sdk_connect("dev1");
  no_user.username.reset();
  EXPECT_EQ(refusal_of(no_user), code::bad_username_or_password);
  auto other = sdk_connect("dev1");
  other.username = fmt::format("{}/dev2/?api-version=2021-04-12", host);
  EXPECT_EQ(refusal_of(other), code::bad_username_or_password);
}

TEST(check_connect, a_will_must_be_the_identitys_telemetry) {
  const auto with_will = [](std::string client_id, std::string topic, std::uint8_t qos = 1) {
    auto c = sdk_connect(std::move(client_id));
    c.will = mqtt::will_message{std::move(topic), "gone", qos, false};
    return c;
  };
  auto ok = check_connect(with_will("dev1", "devices/dev1/messages/events/a=b"));
  ASSERT_NE(std::get_if<connect_claim>(&ok), nullptr);
  ASSERT_TRUE(std::get<connect_claim>(ok).will);
  EXPECT_EQ(std::get<connect_claim>(ok).will->payload, "gone");
  EXPECT_EQ(refusal_of(with_will("dev1", "devices/dev1/messages/events/")), code::accepted);
  EXPECT_EQ(refusal_of(with_will("dev1/mod1", "devices/dev1/modules/mod1/messages/events/")), code::accepted);

  EXPECT_EQ(refusal_of(with_will("dev1", "devices/dev2/messages/events/")), code::not_authorized);
  EXPECT_EQ(refusal_of(with_will("dev1/mod1", "devices/dev1/messages/events/")), code::not_authorized);
  EXPECT_EQ(refusal_of(with_will("dev1", "status/offline")), code::not_authorized);
  EXPECT_EQ(refusal_of(with_will("dev1", "$iothub/twin/GET/?$rid=1")), code::not_authorized);
  EXPECT_EQ(refusal_of(with_will("dev1", "devices/dev1/messages/events/a=%zz")), code::not_authorized);
  EXPECT_EQ(refusal_of(with_will("dev1", "devices/dev1/messages/events/", 2)), code::not_authorized);
}

TEST(connack_for, credentials_are_never_server_unavailable) {
  // The SDK retries CONNACK 3 for 4 minutes: only the hub's own trouble may answer it.
  EXPECT_EQ(connack_for(errc::unauthorized), code::not_authorized);
  EXPECT_EQ(connack_for(errc::device_not_found), code::not_authorized);
  EXPECT_EQ(connack_for(errc::module_not_found), code::not_authorized);
  EXPECT_EQ(connack_for(errc::server_error), code::server_unavailable);
  EXPECT_EQ(connack_for(errc::service_unavailable), code::server_unavailable);
  EXPECT_EQ(connack_for(errc::throttled), code::server_unavailable);
}

class fake_link final : public messaging::device_link {
 public:
  void close(std::string reason) override { closed_with.push_back(std::move(reason)); }
  std::vector<std::string> closed_with;
};

class admission_test : public ::testing::Test {
 protected:
  admission_test() {
    auth::hub_identity identity{std::string(host), auth::default_policies()};
    auth_.emplace(identity, registry_, clock_);
    owner_key_ = identity.find("iothubowner")->primary_key;
    registry::device d;
    d.device_id = "dev1";
    auto created = registry_.create_device(d);
    EXPECT_TRUE(created.has_value());
    key_ = created->auth.primary_key;
    registry::module m;
    m.device_id = "dev1";
    m.module_id = "mod1";
    auto mod = registry_.create_module(m);
    EXPECT_TRUE(mod.has_value());
    module_key_ = mod->auth.primary_key;
    registry::device x;
    x.device_id = "cam1";
    x.auth.type = registry::auth_type::self_signed;
    x.auth.primary_thumbprint = std::string(40, 'A');
    EXPECT_TRUE(registry_.create_device(x).has_value());

    dir_ = std::filesystem::temp_directory_path() / fmt::format("hub_mqtt_connect_{}", ::getpid());
    storage::log_options lo;
    lo.dir = dir_.string();
    lo.partitions = 1;
    lo.sync = false;
    auto opened = storage::event_log::open(lo);
    EXPECT_TRUE(opened.has_value());
    log_ = std::move(*opened);
    telemetry_.emplace(*log_);
    svc_.emplace(services{*auth_, table_, *telemetry_, sessions_, clock_, {}});
  }
  ~admission_test() override {
    log_->close();
    std::filesystem::remove_all(dir_);
  }

  std::string token(std::string_view resource, std::string_view key, std::int64_t expiry_in = 3600,
                    std::string_view key_name = {}) {
    return auth::make_sas_token(fmt::format("{}/{}", host, resource), key, clock_.now_seconds() + expiry_in, key_name);
  }

  admission_request request(std::string client_id, std::optional<std::string> password, bool clean = false) {
    auto mc = sdk_connect(std::move(client_id), std::move(password));
    mc.clean_session = clean;
    auto r = check_connect(mc);
    EXPECT_NE(std::get_if<connect_claim>(&r), nullptr);
    admission_request req;
    req.claim = std::get<connect_claim>(r);
    req.link = std::make_shared<fake_link>();
    return req;
  }

  admission admit_one(const admission_request& req) { return admit(*svc_, req); }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  std::optional<auth::service> auth_;
  connections::connection_table table_{registry_, clock_};
  session_store sessions_;
  std::filesystem::path dir_;
  std::unique_ptr<storage::event_log> log_;
  std::optional<telemetry::service> telemetry_;
  std::optional<services> svc_;
  std::string key_, module_key_, owner_key_;
};

TEST_F(admission_test, a_device_key_token_is_admitted_and_attached) {
  auto req = request("dev1", token("devices/dev1", key_));
  admission a = admit_one(req);
  ASSERT_EQ(a.code, code::accepted) << a.reason;
  EXPECT_FALSE(a.session_present);
  EXPECT_EQ(a.method, telemetry::auth_method::sas);
  EXPECT_EQ(a.expires, clock_.now() + 3600s);
  EXPECT_EQ(a.attached.previous, nullptr);
  ASSERT_NE(a.attached.presence, nullptr);
  EXPECT_EQ(table_.find({"dev1", ""}), req.link);
  EXPECT_EQ(registry_.get_device("dev1")->conn_state, registry::connection_state::connected);
}

TEST_F(admission_test, a_module_and_a_policy_token) {
  admission m = admit_one(request("dev1/mod1", token("devices/dev1/modules/mod1", module_key_)));
  ASSERT_EQ(m.code, code::accepted) << m.reason;
  EXPECT_EQ(table_.connected(), 1u);
  EXPECT_EQ(table_.connected_devices(), 0u);
  admission p = admit_one(request("dev1", token("devices/dev1", owner_key_, 3600, "iothubowner")));
  ASSERT_EQ(p.code, code::accepted) << p.reason;
  EXPECT_EQ(p.method, telemetry::auth_method::policy);
}

TEST_F(admission_test, bad_credentials_are_not_authorized_and_leave_no_trace) {
  const std::string wrong_key = auth::default_policies()[0].primary_key;
  EXPECT_EQ(admit_one(request("dev1", token("devices/dev1", wrong_key))).code, code::not_authorized);
  EXPECT_EQ(admit_one(request("ghost", token("devices/ghost", key_))).code, code::not_authorized);
  EXPECT_EQ(admit_one(request("dev1", token("devices/dev1", key_, -10))).code, code::not_authorized);
  EXPECT_EQ(admit_one(request("dev1", token("devices/dev2", key_))).code, code::not_authorized);
  EXPECT_EQ(admit_one(request("dev1", "not a token")).code, code::not_authorized);
  EXPECT_EQ(table_.connected(), 0u);
  EXPECT_EQ(sessions_.size(), 0u);
}

TEST_F(admission_test, a_disabled_device_is_not_authorized) {
  auto d = registry_.get_device("dev1");
  d->status = registry::device_status::disabled;
  ASSERT_TRUE(registry_.update_device(*d, std::nullopt).has_value());
  admission a = admit_one(request("dev1", token("devices/dev1", key_)));
  EXPECT_EQ(a.code, code::not_authorized);
  EXPECT_NE(a.reason.find("disabled"), std::string::npos);
}

TEST_F(admission_test, a_second_connection_gets_the_first_to_close) {
  auto first = request("dev1", token("devices/dev1", key_));
  ASSERT_EQ(admit_one(first).code, code::accepted);
  auto second = request("dev1", token("devices/dev1", key_));
  admission a = admit_one(second);
  ASSERT_EQ(a.code, code::accepted);
  EXPECT_EQ(a.attached.previous, first.link);
  EXPECT_TRUE(a.session_present);  // CleanSession=0: the first connection's session resumes
}

TEST_F(admission_test, persistent_sessions_keep_subscriptions_clean_ones_do_not) {
  auto first = request("dev1", token("devices/dev1", key_));
  admission a = admit_one(first);
  ASSERT_EQ(a.code, code::accepted);
  EXPECT_FALSE(a.c2d_qos);
  sessions_.subscribe("dev1", "devices/dev1/messages/devicebound/#", 1);
  sessions_.close("dev1", a.session_token, false);
  table_.detach({"dev1", ""}, first.link.get(), "gone");

  admission b = admit_one(request("dev1", token("devices/dev1", key_)));
  EXPECT_TRUE(b.session_present);
  ASSERT_EQ(sessions_.subscriptions("dev1").size(), 1u);
  EXPECT_EQ(b.c2d_qos, 1);  // the resumed session delivers the queued C2D messages at once

  admission c = admit_one(request("dev1", token("devices/dev1", key_), /*clean=*/true));
  EXPECT_FALSE(c.session_present);
  EXPECT_TRUE(sessions_.subscriptions("dev1").empty());
  EXPECT_FALSE(c.c2d_qos);
  sessions_.close("dev1", c.session_token, true);
  EXPECT_EQ(sessions_.size(), 0u);
}

// Persistent sessions in storage: what a restart of hubd (a new store on the same kv) finds.
TEST(session_store, persistent_sessions_survive_a_restart) {
  auto kv = storage::make_memory_kv();
  const std::string filter = "devices/dev1/messages/devicebound/#";
  {
    session_store before(kv.get());
    auto a = before.open("dev1", false);
    ASSERT_TRUE(a.has_value());
    EXPECT_FALSE(a->present);
    ASSERT_TRUE(before.subscribe("dev1", filter, 1).has_value());
    ASSERT_TRUE(before.subscribe("dev1", "$iothub/methods/POST/#", 0).has_value());
    ASSERT_TRUE(before.unsubscribe("dev1", "$iothub/methods/POST/#").has_value());
    // A clean session is never stored.
    ASSERT_TRUE(before.open("dev2", true).has_value());
    ASSERT_TRUE(before.subscribe("dev2", "devices/dev2/messages/devicebound/#", 1).has_value());
    // A persistent session without subscriptions is a session all the same.
    ASSERT_TRUE(before.open("dev3/mod1", false).has_value());
  }
  auto stored = kv->get("s/dev1");
  ASSERT_TRUE(stored.has_value() && stored->has_value());

  session_store after(kv.get());
  auto resumed = after.open("dev1", false);
  ASSERT_TRUE(resumed.has_value());
  EXPECT_TRUE(resumed->present);
  const auto subs = after.subscriptions("dev1");
  ASSERT_EQ(subs.size(), 1u);
  EXPECT_EQ(subs[0].filter, filter);
  EXPECT_EQ(subs[0].qos, 1);
  EXPECT_FALSE(after.open("dev2", false)->present);
  EXPECT_TRUE(after.open("dev3/mod1", false)->present);

  // CleanSession=1 discards the stored session.
  ASSERT_TRUE(after.open("dev1", true).has_value());
  auto gone = kv->get("s/dev1");
  ASSERT_TRUE(gone.has_value());
  EXPECT_FALSE(gone->has_value());

  // A deleted device takes its modules' sessions with it.
  after.forget("dev3", "");
  EXPECT_FALSE(kv->get("s/dev3/mod1")->has_value());
  EXPECT_FALSE(session_store(kv.get()).open("dev3/mod1", false)->present);
}

TEST(session_store, subscriptions_round_trip_and_bad_records_are_refused) {
  const std::vector<mqtt::subscription> subs{{"devices/d/messages/devicebound/#", 1}, {"$iothub/twin/res/#", 0}};
  auto back = decode_subscriptions(encode_subscriptions(subs));
  ASSERT_TRUE(back);
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[1].filter, "$iothub/twin/res/#");
  EXPECT_FALSE(decode_subscriptions("{"));
  EXPECT_FALSE(decode_subscriptions("[{\"f\":1,\"q\":1}]"));
  EXPECT_FALSE(decode_subscriptions("[{\"f\":\"x\",\"q\":2}]"));
}

TEST_F(admission_test, x509_needs_a_certificate_and_an_authenticator) {
  EXPECT_EQ(admit_one(request("cam1", std::nullopt)).code, code::not_authorized);  // no certificate
  auto req = request("cam1", std::nullopt);
  req.chain.leaf = "DER";
  EXPECT_EQ(admit_one(req).code, code::not_authorized);  // no authenticator configured

  std::string seen_device;
  svc_->x509 = [&](const certificates::client_chain& c, std::string_view device_id, std::string_view) -> result<x509_verdict> {
    seen_device = device_id;
    if (c.leaf != "DER") return make_error(errc::unauthorized, "thumbprint mismatch");
    return x509_verdict{telemetry::auth_method::x509_self_signed, clock_.now() + 24h};
  };
  admission a = admit_one(req);
  ASSERT_EQ(a.code, code::accepted) << a.reason;
  EXPECT_EQ(seen_device, "cam1");
  EXPECT_EQ(a.method, telemetry::auth_method::x509_self_signed);
  EXPECT_EQ(a.expires, clock_.now() + 24h);

  req.chain.leaf = "OTHER";
  admission refused = admit_one(req);
  EXPECT_EQ(refused.code, code::not_authorized);
  EXPECT_EQ(refused.reason, "thumbprint mismatch");
}

}  // namespace
}  // namespace hub::mqtt_head
