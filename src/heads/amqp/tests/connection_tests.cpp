// The AMQP head's connection logic, driven by a Proton client driver as the device SDK drives
// IoT Hub (no SASL, CBS put-token, a telemetry sender link), with the real auth and registry
// services on memory_kv. Telemetry appends are answered by the test.
#include "heads/amqp/connection.hpp"

#include "base/log.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/registry/service.hpp"
#include "heads/amqp/grants.hpp"
#include "storage/kv.hpp"

#include <proton/binary.hpp>
#include <proton/types.hpp>

#include <gtest/gtest.h>

#include <set>

namespace hub::amqp_head {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view device_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view host = "myhub.example";

struct fake_link final : messaging::device_link {
  void close(std::string reason) override { closed_with = std::move(reason); }
  std::string closed_with;
};

class amqp_connection : public ::testing::Test {
 protected:
  amqp_connection() {
    for (const char* id : {"dev1", "dev2"}) {
      registry::device d;
      d.device_id = id;
      d.auth.primary_key = std::string(device_key);
      generation_[id] = registry_.create_device(d).value().generation_id;
    }
    registry::module m;
    m.device_id = "dev1";
    m.module_id = "mod1";
    m.auth.primary_key = std::string(device_key);
    EXPECT_TRUE(registry_.create_module(m).has_value());

    amqp::driver_options o;
    o.client_sasl = false;  // as rhea
    o.client_hostname = std::string(host);
    client_ = std::make_unique<amqp::driver>(amqp::role::client, o);
    conn_ = std::make_unique<connection>(connection_options{}, clock_, hub::log::get("amqp"), "connection 1");
  }

  // Moves bytes both ways and answers token checks until nothing moves.
  void pump() {
    for (int i = 0; i < 100; ++i) {
      client_->poll(client_events_);
      std::string c = client_->take_output();
      std::vector<work> w;
      if (!c.empty()) conn_->recv({c.data(), c.size()}, w);
      run(w);
      std::string s = conn_->take_output();
      if (!s.empty()) client_->recv({s.data(), s.size()}, client_events_);
      if (c.empty() && s.empty()) return;
    }
    FAIL() << "never went quiet";
  }

  // Does the work the connection asks for, as the session would (synchronously here); appends
  // wait for the test to answer them.
  void run(std::vector<work>& w) {
    for (std::size_t i = 0; i < w.size(); ++i) {
      std::vector<work> more;
      if (auto* t = std::get_if<check_token_work>(&w[i])) {
        conn_->token_checked(t->ticket, check_token(token_services{auth_, registry_}, t->aud, t->token), more);
      } else if (auto* a = std::get_if<append_telemetry_work>(&w[i])) {
        appends_.push_back(std::move(*a));
      } else if (auto* at = std::get_if<attach_identity_work>(&w[i])) {
        auto link = std::make_shared<fake_link>();
        links_[at->who.device_id + "/" + at->who.module_id] = link;
        auto r = table_.attach(at->who, link);
        conn_->identity_attached(at->who, r ? result<std::shared_ptr<registry::presence>>(r->presence)
                                            : result<std::shared_ptr<registry::presence>>(r.error()),
                                 more);
      } else if (auto* d = std::get_if<detach_identity_work>(&w[i])) {
        auto& link = links_[d->who.device_id + "/" + d->who.module_id];
        table_.detach(d->who, link.get(), d->reason);
        ++detaches_;
      }
      for (auto& m : more) w.push_back(std::move(m));
    }
    w.clear();
  }

  registry::connection_state state_of(const std::string& id) { return registry_.get_device(id).value().conn_state; }

  template <class E>
  std::vector<E> client_got() {
    std::vector<E> out;
    for (auto& e : client_events_)
      if (auto* p = std::get_if<E>(&e)) out.push_back(std::move(*p));
    std::erase_if(client_events_, [](const amqp::event& e) { return std::holds_alternative<E>(e); });
    return out;
  }

  // The SDK's CBS links: a sender to $cbs and a receiver from it.
  void attach_cbs() {
    cbs_out_ = client_->open_sender("$cbs");
    cbs_in_ = client_->open_receiver("$cbs", 10);
    pump();
    ASSERT_EQ(client_got<amqp::link_opened>().size(), 2u);
  }

  // Sends a put-token and returns the reply's status code (0 when there was no reply).
  int put_token(const std::string& name, const std::string& token, std::string id = "req-1") {
    proton::message m;
    m.id(proton::message_id(id));
    m.reply_to("cbs");
    m.to("$cbs");
    m.properties().put("operation", std::string("put-token"));
    m.properties().put("type", std::string("servicebus.windows.net:sastoken"));
    m.properties().put("name", name);
    m.body(token);
    EXPECT_TRUE(client_->send(cbs_out_, m));
    pump();
    auto replies = client_got<amqp::message_received>();
    client_got<amqp::delivery_updated>();  // the request's own acceptance
    if (replies.size() != 1) return 0;
    const proton::message& r = replies[0].message;
    EXPECT_EQ(r.correlation_id().type(), proton::STRING) << "the SDK matches correlation ids with ===";
    EXPECT_EQ(proton::get<std::string>(r.correlation_id()), id);
    last_description_ = proton::get<std::string>(r.properties().get("status-description"));
    return proton::get<std::int32_t>(r.properties().get("status-code"));
  }

  std::string device_token(const std::string& device, std::int64_t expiry = 2'000'000'000) {
    return auth::make_sas_token(std::string(host) + "/devices/" + device, device_key, expiry);
  }
  static std::string audience_of(const std::string& device) {
    return "myhub.example%2Fdevices%2F" + device;
  }

  static proton::message d2c(std::string body) {
    proton::message m;
    m.body(proton::binary(body.begin(), body.end()));
    m.inferred(true);
    return m;
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  auth::service auth_{auth::hub_identity{std::string(host), auth::default_policies()}, registry_, clock_};
  std::map<std::string, std::string> generation_;
  std::unique_ptr<amqp::driver> client_;
  std::unique_ptr<connection> conn_;
  std::vector<amqp::event> client_events_;
  std::vector<append_telemetry_work> appends_;
  connections::connection_table table_{registry_, clock_};
  std::map<std::string, std::shared_ptr<fake_link>> links_;
  int detaches_ = 0;
  amqp::link_id cbs_out_ = 0, cbs_in_ = 0;
  std::string last_description_;
};

TEST_F(amqp_connection, put_token_then_telemetry_is_accepted_once_durable) {
  attach_cbs();
  EXPECT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  EXPECT_EQ(conn_->grants(), 1u);

  const amqp::link_id events = client_->open_sender("/devices/dev1/messages/events");
  pump();
  ASSERT_EQ(client_got<amqp::link_opened>().size(), 1u);
  EXPECT_EQ(client_->credit(events), 100);

  proton::message m = d2c("hello");
  m.properties().put("alert", std::string("hot"));
  auto sent = client_->send(events, m);
  ASSERT_TRUE(sent);
  pump();
  ASSERT_EQ(appends_.size(), 1u);
  const telemetry::message& t = appends_[0].message;
  EXPECT_EQ(t.body, "hello");
  EXPECT_EQ(t.device_id, "dev1");
  EXPECT_EQ(t.module_id, "");
  EXPECT_EQ(t.generation_id, generation_["dev1"]);
  EXPECT_EQ(t.auth, telemetry::auth_method::sas);
  ASSERT_EQ(t.properties.size(), 1u);

  // Not settled until the append is durable.
  EXPECT_TRUE(client_got<amqp::delivery_updated>().empty());
  std::vector<work> w;
  conn_->telemetry_appended(appends_[0].ticket, {}, w);
  run(w);
  pump();
  auto updates = client_got<amqp::delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].delivery, *sent);
  EXPECT_EQ(updates[0].state, amqp::outcome::accepted);
  EXPECT_EQ(client_->credit(events), 100) << "credit comes back as messages settle";
}

TEST_F(amqp_connection, failed_append_is_rejected_with_iot_hubs_condition) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  const amqp::link_id events = client_->open_sender("/devices/dev1/messages/events");
  pump();
  ASSERT_TRUE(client_->send(events, d2c(std::string(10, 'x'))));
  pump();
  ASSERT_EQ(appends_.size(), 1u);
  std::vector<work> w;
  conn_->telemetry_appended(appends_[0].ticket, make_error(errc::message_too_large, "too big"), w);
  run(w);
  pump();
  auto updates = client_got<amqp::delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].state, amqp::outcome::rejected);
  EXPECT_EQ(updates[0].error.name(), "amqp:link:message-size-exceeded");
}

TEST_F(amqp_connection, module_telemetry) {
  attach_cbs();
  const std::string token =
      auth::make_sas_token(std::string(host) + "/devices/dev1/modules/mod1", device_key, 2'000'000'000);
  ASSERT_EQ(put_token("myhub.example%2Fdevices%2Fdev1%2Fmodules%2Fmod1", token), 200);
  // The module's token does not open its device's link.
  client_->open_sender("/devices/dev1/messages/events");
  pump();
  ASSERT_EQ(client_got<amqp::link_closed>().size(), 1u);
  client_events_.clear();  // a refused link is attached, then detached
  const amqp::link_id events = client_->open_sender("/devices/dev1/modules/mod1/messages/events");
  pump();
  ASSERT_EQ(client_got<amqp::link_opened>().size(), 1u);
  ASSERT_TRUE(client_->send(events, d2c("m")));
  pump();
  ASSERT_EQ(appends_.size(), 1u);
  EXPECT_EQ(appends_[0].message.device_id, "dev1");
  EXPECT_EQ(appends_[0].message.module_id, "mod1");
}

TEST_F(amqp_connection, wrong_key_gets_401_and_no_link) {
  attach_cbs();
  const std::string forged =
      auth::make_sas_token(std::string(host) + "/devices/dev1", "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXk=", 2'000'000'000);
  EXPECT_EQ(put_token(audience_of("dev1"), forged), 401);
  EXPECT_NE(last_description_.find("not valid"), std::string::npos) << last_description_;
  EXPECT_EQ(last_description_.find("sig="), std::string::npos) << "never echo the token";
  client_->open_sender("/devices/dev1/messages/events");
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
}

TEST_F(amqp_connection, a_token_opens_only_its_own_device) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  client_->open_sender("/devices/dev2/messages/events");
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  // A token for dev2 presented under dev1's audience is refused too.
  EXPECT_EQ(put_token(audience_of("dev2"), device_token("dev1"), "req-2"), 401);
}

TEST_F(amqp_connection, bad_requests_get_400) {
  attach_cbs();
  proton::message m;
  m.id(proton::message_id(std::string("req-x")));
  m.reply_to("cbs");
  m.properties().put("operation", std::string("delete-token"));
  ASSERT_TRUE(client_->send(cbs_out_, m));
  pump();
  auto replies = client_got<amqp::message_received>();
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(proton::get<std::int32_t>(replies[0].message.properties().get("status-code")), 400);
}

TEST_F(amqp_connection, expired_token_closes_the_links_it_authorised) {
  attach_cbs();
  const std::int64_t expiry = clock_.now_seconds() + 60;
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1", expiry)), 200);
  client_->open_sender("/devices/dev1/messages/events");
  pump();
  ASSERT_EQ(client_got<amqp::link_opened>().size(), 1u);

  std::vector<work> w;
  auto next = conn_->tick(1000ms, w);
  ASSERT_TRUE(next);
  EXPECT_LE(next->count(), 1000 + 60'000) << "wakes up by the token's expiry";
  clock_.advance(61s);
  conn_->tick(62'000ms, w);
  run(w);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  EXPECT_EQ(conn_->grants(), 0u);
  EXPECT_EQ(state_of("dev1"), registry::connection_state::disconnected) << "its only link is gone";
}

TEST_F(amqp_connection, renewal_on_the_same_links_extends_the_grant) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1", clock_.now_seconds() + 60)), 200);
  client_->open_sender("/devices/dev1/messages/events");
  pump();
  ASSERT_EQ(client_got<amqp::link_opened>().size(), 1u);
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1", clock_.now_seconds() + 3600), "req-2"), 200);
  clock_.advance(61s);
  std::vector<work> w;
  conn_->tick(62'000ms, w);
  run(w);
  pump();
  EXPECT_TRUE(client_got<amqp::link_closed>().empty());
}

TEST_F(amqp_connection, links_the_hub_does_not_serve_are_refused) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  client_->open_receiver("/devices/dev1/messages/devicebound", 10);
  client_->open_sender("/nowhere");
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 2u);
  std::set<std::string> names{closed[0].error.name(), closed[1].error.name()};
  EXPECT_EQ(names, (std::set<std::string>{"amqp:not-implemented", "amqp:not-found"}));
}

TEST_F(amqp_connection, service_client_token_for_the_hub) {
  attach_cbs();
  const auth::policy* service = auth_.identity().find("service");
  // The service SDK signs the raw HostName (service.md §1.2).
  const std::string token = auth::make_sas_token(std::string(host), service->primary_key, 2'000'000'000, "service");
  EXPECT_EQ(put_token(std::string(host), token), 200) << last_description_;
}

TEST_F(amqp_connection, service_links_need_a_service_token_and_c2d_sends_are_not_implemented) {
  attach_cbs();
  client_->open_sender("/messages/devicebound");
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  client_got<amqp::link_opened>();  // the refused link's attach
  const auth::policy* service = auth_.identity().find("service");
  const std::string token = auth::make_sas_token(std::string(host), service->primary_key, 2'000'000'000, "service");
  ASSERT_EQ(put_token(std::string(host), token), 200) << last_description_;
  const amqp::link_id c2d = client_->open_sender("/messages/devicebound");
  client_->open_receiver("/messages/serviceBound/feedback", 10);
  client_->open_receiver("/messages/serviceBound/filenotifications", 10);
  pump();
  EXPECT_EQ(client_got<amqp::link_opened>().size(), 3u);
  EXPECT_TRUE(client_got<amqp::link_closed>().empty());
  proton::message m;
  m.to("/devices/dev1/messages/devicebound");
  m.body(proton::binary("hi"));
  ASSERT_TRUE(client_->send(c2d, m));
  pump();
  auto updates = client_got<amqp::delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].state, amqp::outcome::rejected);
  EXPECT_EQ(updates[0].error.name(), "amqp:not-implemented");
}

}  // namespace
}  // namespace hub::amqp_head

namespace hub::amqp_head {
namespace {

TEST_F(amqp_connection, a_device_is_connected_while_it_has_a_link) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  EXPECT_EQ(state_of("dev1"), registry::connection_state::disconnected) << "a token alone does not connect";
  const amqp::link_id events = client_->open_sender("/devices/dev1/messages/events");
  pump();
  EXPECT_EQ(state_of("dev1"), registry::connection_state::connected);
  EXPECT_EQ(conn_->attached_identities().size(), 1u);
  client_->close_link(events);
  pump();
  EXPECT_EQ(state_of("dev1"), registry::connection_state::disconnected);
  EXPECT_EQ(detaches_, 1);
  EXPECT_TRUE(conn_->attached_identities().empty());
}

TEST_F(amqp_connection, replaced_identity_loses_its_links) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  client_->open_sender("/devices/dev1/messages/events");
  pump();
  client_events_.clear();
  std::vector<work> w;
  conn_->drop_identity({"dev1", ""}, "replaced by a new connection of the same identity", w);
  run(w);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:connection:forced");
  EXPECT_EQ(detaches_, 1);
}

TEST_F(amqp_connection, a_deleted_device_cannot_connect_with_its_old_token) {
  attach_cbs();
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1")), 200);
  ASSERT_TRUE(registry_.delete_device("dev1", std::nullopt).has_value());
  client_->open_sender("/devices/dev1/messages/events");
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:not-found");
  EXPECT_TRUE(conn_->attached_identities().empty());
}

}  // namespace
}  // namespace hub::amqp_head

namespace hub::amqp_head {
namespace {

TEST(amqp_connection_bounds, links_and_tokens_are_bounded) {
  auto kv = storage::make_memory_kv();
  manual_clock clk;
  registry::service reg(*kv, clk);
  auth::service auth(auth::hub_identity{std::string(host), auth::default_policies()}, reg, clk);
  for (const char* id : {"dev1", "dev2"}) {
    registry::device d;
    d.device_id = id;
    d.auth.primary_key = std::string(device_key);
    ASSERT_TRUE(reg.create_device(d).has_value());
  }

  connection_options opts;
  opts.max_links = 3;
  opts.max_grants = 1;
  amqp::driver_options co;
  co.client_sasl = false;
  amqp::driver client(amqp::role::client, co);
  connection conn(opts, clk, hub::log::get("amqp"), "connection b");
  std::vector<amqp::event> ev;
  auto pump = [&] {
    for (int i = 0; i < 50; ++i) {
      client.poll(ev);
      std::string c = client.take_output();
      std::vector<work> w;
      if (!c.empty()) conn.recv({c.data(), c.size()}, w);
      for (std::size_t j = 0; j < w.size(); ++j) {
        if (auto* t = std::get_if<check_token_work>(&w[j])) {
          std::vector<work> more;
          conn.token_checked(t->ticket, check_token(token_services{auth, reg}, t->aud, t->token), more);
        }
      }
      std::string s = conn.take_output();
      if (!s.empty()) client.recv({s.data(), s.size()}, ev);
      if (c.empty() && s.empty()) return;
    }
  };
  const auto cbs = client.open_sender("$cbs");
  client.open_receiver("$cbs", 10);
  pump();
  auto put = [&](const std::string& device) {
    proton::message m;
    m.id(proton::message_id(std::string("r-") + device));
    m.reply_to("cbs");
    m.properties().put("operation", std::string("put-token"));
    m.properties().put("type", std::string("servicebus.windows.net:sastoken"));
    m.properties().put("name", "myhub.example%2Fdevices%2F" + device);
    m.body(auth::make_sas_token(std::string(host) + "/devices/" + device, device_key, 2'000'000'000));
    client.send(cbs, m);
    pump();
    for (auto& e : ev) {
      if (auto* r = std::get_if<amqp::message_received>(&e)) {
        const int status = proton::get<std::int32_t>(r->message.properties().get("status-code"));
        ev.clear();
        return status;
      }
    }
    return 0;
  };
  EXPECT_EQ(put("dev1"), 200);
  EXPECT_EQ(put("dev1"), 200) << "a renewal of a held audience is fine";
  EXPECT_EQ(put("dev2"), 403) << "a second audience is one too many";
  client.open_sender("/devices/dev1/messages/events");  // the third link
  client.open_sender("/devices/dev1/messages/events");  // one too many
  pump();
  int refused = 0;
  for (auto& e : ev) {
    if (auto* c = std::get_if<amqp::link_closed>(&e)) {
      EXPECT_EQ(c->error.name(), "amqp:resource-limit-exceeded");
      ++refused;
    }
  }
  EXPECT_EQ(refused, 1);
}

}  // namespace
}  // namespace hub::amqp_head

namespace hub::amqp_head {
namespace {

TEST_F(amqp_connection, x509_links_wait_for_the_certificate_check) {
  conn_->client_certificate_presented(true);
  // No CBS at all: the links come straight away, as the SDK's X.509 path does.
  client_->open_sender("/devices/dev1/messages/events");
  client_->open_sender("/devices/dev2/messages/events");
  client_->poll(client_events_);
  std::string c = client_->take_output();
  std::vector<work> w;
  conn_->recv({c.data(), c.size()}, w);
  std::vector<check_certificate_work> checks;
  for (auto& item : w)
    if (auto* x = std::get_if<check_certificate_work>(&item)) checks.push_back(*x);
  ASSERT_EQ(checks.size(), 2u);
  pump();
  EXPECT_TRUE(client_got<amqp::link_opened>().empty()) << "unanswered until the check is done";

  grant g;
  g.who = grant::kind::device;
  g.device_id = "dev1";
  g.generation_id = generation_["dev1"];
  g.auth = telemetry::auth_method::x509_self_signed;
  g.expiry = 2'000'000'000;
  std::vector<work> out;
  conn_->certificate_checked(checks[0].ticket, g, out);
  run(out);
  conn_->certificate_checked(checks[1].ticket, make_error(errc::unauthorized, "thumbprint mismatch"), out);
  run(out);
  pump();
  EXPECT_EQ(client_got<amqp::link_opened>().size(), 2u) << "one accepted, one attached to be refused";
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  EXPECT_EQ(state_of("dev1"), registry::connection_state::connected);
}

}  // namespace
}  // namespace hub::amqp_head
