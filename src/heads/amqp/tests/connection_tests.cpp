// The AMQP head's connection logic, driven by a Proton client driver as the device SDK drives
// IoT Hub (no SASL, CBS put-token, a telemetry sender link), with the real auth, registry and
// c2d services on memory_kv. Telemetry appends are answered by the test; C2D work runs at once.
#include "heads/amqp/connection.hpp"

#include "base/log.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/c2d/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/registry/service.hpp"
#include "heads/amqp/feedback_watch.hpp"
#include "heads/amqp/grants.hpp"
#include "storage/kv.hpp"

#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/timestamp.hpp>
#include <proton/types.hpp>
#include <proton/uuid.hpp>

#include <boost/json.hpp>

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
    connection_options opts;
    opts.hub_name = "myhub";
    conn_ = std::make_unique<connection>(opts, clock_, hub::log::get("amqp"), "connection 1");
    // As hubd wires them, but delivered by pump(): the connection is not re-entrant.
    c2d_.set_device_notifier([this](std::string_view device) { device_news_.emplace_back(device); });
    c2d_.set_feedback_notifier([this] { feedback_watch_.notify(); });
  }

  // Moves bytes both ways, answers token checks and delivers C2D notifications until nothing moves.
  void pump() {
    for (int i = 0; i < 100; ++i) {
      client_->poll(client_events_);
      std::string c = client_->take_output();
      std::vector<work> w;
      if (!c.empty()) conn_->recv({c.data(), c.size()}, w);
      run(w);
      const bool notified = deliver_notifications();
      std::string s = conn_->take_output();
      if (!s.empty()) client_->recv({s.data(), s.size()}, client_events_);
      if (c.empty() && s.empty() && !notified) return;
    }
    FAIL() << "never went quiet";
  }

  bool deliver_notifications() {
    bool any = false;
    for (int i = 0; i < 100 && (!device_news_.empty() || !feedback_woken_.empty()); ++i) {
      any = true;
      std::vector<std::string> devices;
      devices.swap(device_news_);
      std::vector<amqp::link_id> links;
      links.swap(feedback_woken_);
      std::vector<work> w;
      for (const std::string& d : devices) conn_->c2d_available(d, w);
      for (amqp::link_id l : links) conn_->feedback_available(l, w);
      run(w);
    }
    return any;
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
      } else if (auto* cs = std::get_if<c2d_send_work>(&w[i])) {
        auto r = c2d_.send(cs->device_id, std::move(cs->message));
        conn_->c2d_sent(cs->ticket, r ? result<void>() : result<void>(r.error()), more);
      } else if (auto* cr = std::get_if<c2d_receive_work>(&w[i])) {
        ++c2d_receives_;
        conn_->c2d_received(cr->link, c2d_.receive(cr->device_id, cr->max), more);
      } else if (auto* st = std::get_if<c2d_settle_work>(&w[i])) {
        settles_.push_back(*st);
        result<void> r;
        switch (st->action) {
          case c2d_action::complete: r = c2d_.complete(st->device_id, st->lock_token); break;
          case c2d_action::reject: r = c2d_.reject(st->device_id, st->lock_token); break;
          case c2d_action::abandon: r = c2d_.abandon(st->device_id, st->lock_token); break;
          case c2d_action::unlock: c2d_.unlock(st->device_id, st->lock_token); break;
        }
        EXPECT_TRUE(r) << r.error().message;
      } else if (auto* fr = std::get_if<feedback_receive_work>(&w[i])) {
        const std::uint64_t generation = feedback_watch_.generation();
        conn_->feedback_received(fr->link, c2d_.receive_feedback(), generation, more);
      } else if (auto* fw = std::get_if<feedback_wait_work>(&w[i])) {
        feedback_watch_.wait(fw->generation, owner_, [this, link = fw->link] { feedback_woken_.push_back(link); });
      } else if (auto* fs = std::get_if<feedback_settle_work>(&w[i])) {
        feedback_settles_.push_back(*fs);
        if (fs->complete) {
          EXPECT_TRUE(c2d_.complete_feedback(fs->lock_token));
        } else {
          c2d_.abandon_feedback(fs->lock_token);
        }
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
  c2d::service c2d_{*kv_, registry_, clock_};
  feedback_watch feedback_watch_;
  std::shared_ptr<int> owner_ = std::make_shared<int>(0);  // the feedback waits' owner
  std::vector<std::string> device_news_;
  std::vector<amqp::link_id> feedback_woken_;
  std::vector<c2d_settle_work> settles_;
  std::vector<feedback_settle_work> feedback_settles_;
  int c2d_receives_ = 0;
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
  client_->open_receiver("/devices/dev1/twin", 10);
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

TEST_F(amqp_connection, service_links_need_a_service_token) {
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
  EXPECT_EQ(updates[0].state, amqp::outcome::accepted);
  EXPECT_EQ(c2d_.pending("dev1"), 1u);
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

// --- cloud-to-device: the service's sender and feedback receiver, a device's devicebound receiver ---
namespace hub::amqp_head {
namespace {

class amqp_c2d : public amqp_connection {
 protected:
  void SetUp() override { attach_cbs(); }

  void put_service_token() {
    const auth::policy* service = auth_.identity().find("service");
    const std::string token = auth::make_sas_token(std::string(host), service->primary_key, 2'000'000'000, "service");
    ASSERT_EQ(put_token(std::string(host), token, "svc"), 200) << last_description_;
  }

  amqp::link_id open_service_sender() {
    put_service_token();
    const amqp::link_id l = client_->open_sender("/messages/devicebound");
    pump();
    EXPECT_EQ(client_got<amqp::link_opened>().size(), 1u);
    return l;
  }

  static proton::message c2d_msg(const std::string& device, const std::string& body, const std::string& ack = {}) {
    proton::message m;
    m.to("/devices/" + device + "/messages/devicebound");
    m.body(proton::binary(body.begin(), body.end()));
    m.inferred(true);
    if (!ack.empty()) m.properties().put("iothub-ack", ack);
    return m;
  }

  // Sends on the service's sender and returns the outcome it got.
  amqp::delivery_updated send(amqp::link_id sender, const proton::message& m) {
    auto sent = client_->send(sender, m);
    EXPECT_TRUE(sent);
    pump();
    auto updates = client_got<amqp::delivery_updated>();
    EXPECT_EQ(updates.size(), 1u);
    if (updates.empty()) return {};
    EXPECT_EQ(updates[0].delivery, *sent);
    return updates[0];
  }

  // The device's receiver, as azure-iot-device-amqp attaches it (manual settlement).
  amqp::link_id open_device_receiver(const std::string& device, std::uint32_t credit) {
    EXPECT_EQ(put_token(audience_of(device), device_token(device), "dev-" + device), 200);
    const amqp::link_id l = client_->open_receiver("/devices/" + device + "/messages/devicebound", credit);
    pump();
    EXPECT_EQ(client_got<amqp::link_opened>().size(), 1u);
    return l;
  }

  static std::string text(const proton::value& v) {
    const auto b = proton::get<proton::binary>(v);
    return std::string(b.begin(), b.end());
  }
  static proton::value annotation(const proton::message& m, const char* key) {
    return m.message_annotations().get(proton::annotation_key(proton::symbol(key)));
  }
};

TEST_F(amqp_c2d, a_service_message_is_queued_with_its_fields_and_accepted_once_durable) {
  const amqp::link_id sender = open_service_sender();
  proton::message m = c2d_msg("dev%31", "turn on", "full");  // encodeURIComponent: dev1
  const proton::uuid id = proton::uuid::random();
  m.id(proton::message_id(id));
  m.correlation_id(proton::message_id(std::string("corr-1")));
  m.content_type("application/json");
  m.content_encoding("utf-8");
  const auto expiry = clock_.now() + 10min;
  m.expiry_time(proton::timestamp(std::chrono::duration_cast<std::chrono::milliseconds>(expiry.time_since_epoch()).count()));
  m.properties().put("colour", std::string("red"));
  m.properties().put("count", std::int32_t(3));
  const auto outcome = send(sender, m);
  EXPECT_EQ(outcome.state, amqp::outcome::accepted);
  EXPECT_EQ(client_->credit(sender), 100) << "credit comes back as messages settle";

  auto got = c2d_.receive("dev1");
  ASSERT_EQ(got.size(), 1u);
  const c2d::outgoing& o = got[0].msg;
  EXPECT_EQ(o.body, "turn on");
  EXPECT_EQ(o.message_id, id.str()) << "a uuid id becomes its canonical text";
  EXPECT_EQ(o.correlation_id, "corr-1");
  EXPECT_EQ(o.content_type, "application/json");
  EXPECT_EQ(o.content_encoding, "utf-8");
  EXPECT_EQ(o.ack, c2d::ack_mode::full);
  ASSERT_TRUE(o.expiry);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(*o.expiry - expiry).count(), 0);
  ASSERT_EQ(o.properties.size(), 2u);
  EXPECT_EQ(o.properties[0], (std::pair<std::string, std::string>{"colour", "red"}));
  EXPECT_EQ(o.properties[1], (std::pair<std::string, std::string>{"count", "3"}));
}

TEST_F(amqp_c2d, refused_sends_carry_iot_hubs_conditions) {
  const amqp::link_id sender = open_service_sender();
  EXPECT_EQ(send(sender, c2d_msg("nobody", "x")).error.name(), "amqp:not-found");
  proton::message no_to = c2d_msg("dev1", "x");
  no_to.to("");
  EXPECT_EQ(send(sender, no_to).error.name(), "com.microsoft:argument-error");
  proton::message module = c2d_msg("dev1", "x");
  module.to("/devices/dev1/modules/mod1/messages/devicebound");
  const auto bad_to = send(sender, module);
  EXPECT_EQ(bad_to.state, amqp::outcome::rejected);
  EXPECT_EQ(bad_to.error.name(), "com.microsoft:argument-error");
  EXPECT_NE(bad_to.error.description().find("/devices/<deviceId>/messages/devicebound"), std::string::npos)
      << bad_to.error.description();
  EXPECT_EQ(send(sender, c2d_msg("dev1", "x", "sometimes")).error.name(), "com.microsoft:argument-error");
  EXPECT_EQ(send(sender, c2d_msg("dev1", std::string(64 * 1024 + 1, 'x'))).error.name(),
            "amqp:link:message-size-exceeded");
  for (int i = 0; i < 50; ++i) ASSERT_EQ(send(sender, c2d_msg("dev1", "m")).state, amqp::outcome::accepted) << i;
  EXPECT_EQ(send(sender, c2d_msg("dev1", "m")).error.name(), "amqp:resource-limit-exceeded");
  EXPECT_EQ(c2d_.pending("dev1"), 50u);
}

TEST_F(amqp_c2d, a_device_receives_its_messages_and_settles_them) {
  const amqp::link_id sender = open_service_sender();
  proton::message first = c2d_msg("dev1", "one", "full");
  first.id(proton::message_id(std::string("m1")));
  first.correlation_id(proton::message_id(std::string("c1")));
  first.content_type("text/plain");
  first.properties().put("k", std::string("v"));
  ASSERT_EQ(send(sender, first).state, amqp::outcome::accepted);
  proton::message second = c2d_msg("dev1", "two", "negative");
  second.id(proton::message_id(std::string("m2")));
  ASSERT_EQ(send(sender, second).state, amqp::outcome::accepted);

  open_device_receiver("dev1", 10);
  EXPECT_EQ(state_of("dev1"), registry::connection_state::connected) << "a devicebound link connects the device";
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 2u);
  const proton::message& m = msgs[0].message;
  EXPECT_FALSE(msgs[0].presettled) << "the device settles it";
  EXPECT_EQ(text(m.body()), "one");
  EXPECT_EQ(proton::get<std::string>(m.id()), "m1");
  EXPECT_EQ(proton::get<std::string>(m.correlation_id()), "c1");
  EXPECT_EQ(m.to(), "/devices/dev1/messages/devicebound");
  EXPECT_EQ(m.content_type(), "text/plain");
  EXPECT_GT(m.expiry_time().milliseconds(), 0) << "the effective expiry (default TTL)";
  EXPECT_EQ(proton::get<std::string>(m.properties().get("iothub-ack")), "full");
  EXPECT_EQ(proton::get<std::string>(m.properties().get("k")), "v");
  EXPECT_EQ(m.delivery_count(), 0u);
  EXPECT_EQ(annotation(m, "x-opt-sequence-number").type(), proton::ULONG);
  EXPECT_EQ(annotation(m, "iothub-enqueuedtime").type(), proton::TIMESTAMP);
  EXPECT_EQ(annotation(m, "x-opt-lock-token").type(), proton::STRING);
  EXPECT_EQ(proton::get<std::string>(msgs[1].message.id()), "m2");

  client_->settle(msgs[0].delivery, amqp::outcome::accepted);
  client_->settle(msgs[1].delivery, amqp::outcome::rejected);
  pump();
  // Proton reports the two dispositions in no particular order.
  ASSERT_EQ(settles_.size(), 2u);
  std::set<c2d_action> actions{settles_[0].action, settles_[1].action};
  EXPECT_EQ(actions, (std::set<c2d_action>{c2d_action::complete, c2d_action::reject}));
  EXPECT_EQ(c2d_.pending("dev1"), 0u);
  auto fb = c2d_.receive_feedback();
  ASSERT_TRUE(fb);
  ASSERT_EQ(fb->records.size(), 2u);
  std::map<std::string, c2d::outcome> status;
  for (const auto& r : fb->records) status[r.original_message_id] = r.status;
  EXPECT_EQ(status["m1"], c2d::outcome::success);
  EXPECT_EQ(status["m2"], c2d::outcome::rejected);
}

TEST_F(amqp_c2d, released_and_modified_abandon_and_the_message_comes_again) {
  const amqp::link_id sender = open_service_sender();
  ASSERT_EQ(send(sender, c2d_msg("dev1", "again")).state, amqp::outcome::accepted);
  open_device_receiver("dev1", 10);
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  client_->settle(msgs[0].delivery, amqp::outcome::released);  // the SDK's abandon
  pump();
  ASSERT_EQ(settles_.size(), 1u);
  EXPECT_EQ(settles_[0].action, c2d_action::abandon);
  msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u) << "abandoned: delivered again";
  EXPECT_EQ(msgs[0].message.delivery_count(), 1u);
  EXPECT_EQ(proton::get<std::uint8_t>(annotation(msgs[0].message, "iothub-deliverycount")), 1);
  client_->settle(msgs[0].delivery, amqp::outcome::modified);
  pump();
  ASSERT_EQ(settles_.size(), 2u);
  EXPECT_EQ(settles_[1].action, c2d_action::abandon);
  msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].message.delivery_count(), 2u);
}

TEST_F(amqp_c2d, a_message_sent_while_the_device_listens_is_pulled_by_the_notification) {
  open_device_receiver("dev1", 10);
  EXPECT_TRUE(client_got<amqp::message_received>().empty());
  const int receives = c2d_receives_;
  const amqp::link_id sender = open_service_sender();
  EXPECT_EQ(c2d_receives_, receives) << "an idle receiver does not poll";
  ASSERT_EQ(send(sender, c2d_msg("dev1", "live")).state, amqp::outcome::accepted);
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(text(msgs[0].message.body()), "live");
  // Another device's news is not for this link.
  ASSERT_EQ(send(sender, c2d_msg("dev2", "other")).state, amqp::outcome::accepted);
  EXPECT_TRUE(client_got<amqp::message_received>().empty());
}

TEST_F(amqp_c2d, credit_bounds_what_is_sent) {
  const amqp::link_id sender = open_service_sender();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(send(sender, c2d_msg("dev1", std::to_string(i))).state, amqp::outcome::accepted);
  // Credit 1 (Proton's receiver asks for 1 here, unlike rhea's 1000).
  const amqp::link_id rx = open_device_receiver("dev1", 1);
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(text(msgs[0].message.body()), "0");
  client_->settle(msgs[0].delivery, amqp::outcome::accepted);
  client_->grant(rx, 2);
  pump();
  msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(text(msgs[0].message.body()), "1");
  EXPECT_EQ(text(msgs[1].message.body()), "2");
}

TEST_F(amqp_c2d, a_closed_link_or_connection_gives_its_locks_back) {
  const amqp::link_id sender = open_service_sender();
  ASSERT_EQ(send(sender, c2d_msg("dev1", "a")).state, amqp::outcome::accepted);
  ASSERT_EQ(send(sender, c2d_msg("dev1", "b")).state, amqp::outcome::accepted);
  const amqp::link_id rx = open_device_receiver("dev1", 10);
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 2u);
  client_->settle(msgs[0].delivery, amqp::outcome::accepted);
  client_->close_link(rx);
  pump();
  ASSERT_EQ(settles_.size(), 2u);
  EXPECT_EQ(settles_[0].action, c2d_action::complete);
  EXPECT_EQ(settles_[1].action, c2d_action::unlock);
  EXPECT_EQ(c2d_.pending("dev1"), 1u);

  // The device comes back, gets "b" again (not counted as a delivery), and its connection ends.
  client_->open_receiver("/devices/dev1/messages/devicebound", 10);
  pump();
  msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(text(msgs[0].message.body()), "b");
  EXPECT_EQ(msgs[0].message.delivery_count(), 0u);
  std::vector<work> w;
  conn_->read_closed(w);  // as the session sees a connection end: the reader, then the writer
  conn_->write_failed(w);
  run(w);
  ASSERT_EQ(settles_.size(), 3u);
  EXPECT_EQ(settles_[2].action, c2d_action::unlock);
  auto again = c2d_.receive("dev1");
  ASSERT_EQ(again.size(), 1u) << "receivable at once, not after the lock timeout";
  std::vector<work> none;
  conn_->release_locks(none);
  EXPECT_TRUE(none.empty()) << "released once";
}

TEST_F(amqp_c2d, an_answer_for_a_link_that_went_away_is_unlocked) {
  const amqp::link_id sender = open_service_sender();
  ASSERT_EQ(send(sender, c2d_msg("dev1", "late")).state, amqp::outcome::accepted);
  auto d = c2d_.receive("dev1");
  ASSERT_EQ(d.size(), 1u);
  std::vector<work> w;
  conn_->c2d_received(9999, std::move(d), w);
  ASSERT_EQ(w.size(), 1u);
  auto* u = std::get_if<c2d_settle_work>(&w[0]);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->action, c2d_action::unlock);
}

TEST_F(amqp_c2d, devicebound_links_need_the_devices_token_and_are_not_for_modules) {
  client_->open_receiver("/devices/dev1/messages/devicebound", 10);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  client_events_.clear();
  const std::string token =
      auth::make_sas_token(std::string(host) + "/devices/dev1/modules/mod1", device_key, 2'000'000'000);
  ASSERT_EQ(put_token("myhub.example%2Fdevices%2Fdev1%2Fmodules%2Fmod1", token), 200);
  client_->open_receiver("/devices/dev1/modules/mod1/messages/devicebound", 10);
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1"), "req-2"), 200);
  client_->open_sender("/devices/dev1/messages/devicebound");
  pump();
  closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 2u);
  EXPECT_EQ(closed[0].error.name(), "amqp:not-allowed");
  EXPECT_EQ(closed[1].error.name(), "amqp:not-allowed");
}

TEST_F(amqp_c2d, an_expired_token_closes_the_devicebound_link_and_unlocks) {
  const amqp::link_id sender = open_service_sender();
  ASSERT_EQ(send(sender, c2d_msg("dev1", "x")).state, amqp::outcome::accepted);
  ASSERT_EQ(put_token(audience_of("dev1"), device_token("dev1", clock_.now_seconds() + 60), "short"), 200);
  client_->open_receiver("/devices/dev1/messages/devicebound", 10);
  pump();
  ASSERT_EQ(client_got<amqp::message_received>().size(), 1u);
  client_events_.clear();
  clock_.advance(61s);
  std::vector<work> w;
  conn_->tick(62'000ms, w);
  run(w);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  ASSERT_EQ(settles_.size(), 1u);
  EXPECT_EQ(settles_[0].action, c2d_action::unlock);
}

TEST_F(amqp_c2d, feedback_batches_go_to_the_feedback_receiver_and_acceptance_completes_them) {
  const amqp::link_id sender = open_service_sender();
  const amqp::link_id feedback = client_->open_receiver("/messages/serviceBound/feedback", 10);
  pump();
  ASSERT_EQ(client_got<amqp::link_opened>().size(), 1u);
  EXPECT_TRUE(client_got<amqp::message_received>().empty());
  EXPECT_EQ(feedback_watch_.waiting(), 1u) << "an empty queue: the receiver waits";

  proton::message m = c2d_msg("dev1", "x", "positive");
  m.id(proton::message_id(std::string("orig-1")));
  ASSERT_EQ(send(sender, m).state, amqp::outcome::accepted);
  EXPECT_TRUE(client_got<amqp::message_received>().empty()) << "no record until the device settles";
  auto d = c2d_.receive("dev1");
  ASSERT_EQ(d.size(), 1u);
  ASSERT_TRUE(c2d_.complete("dev1", d[0].lock_token));
  pump();
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].link, feedback);
  const proton::message& f = msgs[0].message;
  EXPECT_FALSE(msgs[0].presettled);
  EXPECT_EQ(f.content_type(), "application/vnd.microsoft.iothub.feedback.json");
  EXPECT_EQ(f.user(), "myhub");
  EXPECT_EQ(f.id().type(), proton::UUID);
  EXPECT_EQ(f.body().type(), proton::BINARY) << "a Data section";
  const auto json = boost::json::parse(text(f.body()));
  ASSERT_EQ(json.as_array().size(), 1u);
  const auto& rec = json.as_array()[0].as_object();
  EXPECT_EQ(rec.at("originalMessageId").as_string(), "orig-1");
  EXPECT_EQ(rec.at("statusCode").as_string(), "Success");
  EXPECT_EQ(rec.at("deviceId").as_string(), "dev1");
  EXPECT_EQ(rec.at("deviceGenerationId").as_string(), generation_["dev1"]);

  client_->settle(msgs[0].delivery, amqp::outcome::accepted);
  pump();
  ASSERT_EQ(feedback_settles_.size(), 1u);
  EXPECT_TRUE(feedback_settles_[0].complete);
  EXPECT_FALSE(c2d_.receive_feedback()) << "completed: gone";
}

TEST_F(amqp_c2d, released_feedback_comes_again_rejected_is_dropped_and_a_closed_link_abandons) {
  const amqp::link_id sender = open_service_sender();
  const amqp::link_id feedback = client_->open_receiver("/messages/serviceBound/feedback", 10);
  pump();
  client_got<amqp::link_opened>();
  const auto settle_one = [&](const std::string& id, std::string_view how) {
    proton::message m = c2d_msg("dev1", "x", "full");
    m.id(proton::message_id(id));
    ASSERT_EQ(send(sender, m).state, amqp::outcome::accepted);
    auto d = c2d_.receive("dev1");
    ASSERT_EQ(d.size(), 1u);
    ASSERT_TRUE(how == "reject" ? c2d_.reject("dev1", d[0].lock_token) : c2d_.complete("dev1", d[0].lock_token));
    pump();
  };
  settle_one("a", "complete");
  auto msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  client_->settle(msgs[0].delivery, amqp::outcome::released);
  pump();
  ASSERT_EQ(feedback_settles_.size(), 1u);
  EXPECT_FALSE(feedback_settles_[0].complete);
  msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u) << "released: the records come again";
  EXPECT_NE(text(msgs[0].message.body()).find("\"a\""), std::string::npos);
  client_->settle(msgs[0].delivery, amqp::outcome::rejected);
  pump();
  ASSERT_EQ(feedback_settles_.size(), 2u);
  EXPECT_TRUE(feedback_settles_[1].complete) << "rejected: dead-lettered, i.e. dropped";
  EXPECT_TRUE(client_got<amqp::message_received>().empty());

  settle_one("b", "reject");
  msgs = client_got<amqp::message_received>();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_NE(text(msgs[0].message.body()).find("Rejected"), std::string::npos);
  client_->close_link(feedback);
  pump();
  ASSERT_EQ(feedback_settles_.size(), 3u);
  EXPECT_FALSE(feedback_settles_[2].complete) << "the link went away: abandoned";
  auto back = c2d_.receive_feedback();
  ASSERT_TRUE(back) << "receivable again";
  EXPECT_EQ(back->records[0].original_message_id, "b");
}

TEST(feedback_watch_test, a_notify_between_the_read_and_the_wait_is_not_lost) {
  feedback_watch w;
  auto owner = std::make_shared<int>(0);
  int woken = 0;
  const std::uint64_t seen = w.generation();
  w.notify();  // came while the receive ran
  w.wait(seen, owner, [&] { ++woken; });
  EXPECT_EQ(woken, 1);
  w.wait(w.generation(), owner, [&] { ++woken; });
  EXPECT_EQ(woken, 1);
  EXPECT_EQ(w.waiting(), 1u);
  w.notify();
  EXPECT_EQ(woken, 2);
  w.wait(w.generation(), std::weak_ptr<int>(), [&] { ++woken; });
  w.notify();
  EXPECT_EQ(woken, 2) << "an owner that is gone is not called";
}

}  // namespace
}  // namespace hub::amqp_head
