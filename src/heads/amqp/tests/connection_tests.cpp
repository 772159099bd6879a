// The AMQP head's connection logic, driven by a Proton client driver as the device SDK drives
// IoT Hub (no SASL, CBS put-token, a telemetry sender link), with the real auth, registry and
// c2d services on memory_kv. Telemetry appends are answered by the test; C2D work runs at once.
#include "heads/amqp/connection.hpp"

#include "base/log.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/c2d/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/methods/service.hpp"
#include "domain/registry/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/amqp/feedback_watch.hpp"
#include "heads/amqp/grants.hpp"
#include "heads/amqp/twin_requests.hpp"
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

// What the session's identity_link does, recorded: pump() hands calls and desired patches to
// the connection afterwards (it is not re-entrant).
struct fake_link final : messaging::device_link {
  void close(std::string reason) override { closed_with = std::move(reason); }
  bool invoke_method(const messaging::method_call& call) override {
    if (!takes_methods) return false;
    calls.push_back(call);
    return true;
  }
  void desired_properties(std::string patch_json) override { desired.push_back(std::move(patch_json)); }
  std::string closed_with;
  bool takes_methods = false;
  std::vector<messaging::method_call> calls;
  std::vector<std::string> desired;
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
    twins_.set_desired_listener([this](const twins::identity& who, const boost::json::object& patch) {
      if (auto link = table_.find({who.device_id, who.module_id})) link->desired_properties(boost::json::serialize(patch));
    });
  }

  // A connection with other options (before any traffic).
  void reopen(const connection_options& opts) {
    conn_ = std::make_unique<connection>(opts, clock_, hub::log::get("amqp"), "connection 1");
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

  bool link_news() const {
    for (const auto& [key, link] : links_)
      if (!link->calls.empty() || !link->desired.empty()) return true;
    return false;
  }

  bool deliver_notifications() {
    bool any = false;
    for (int i = 0; i < 100 && (!device_news_.empty() || !feedback_woken_.empty() || link_news()); ++i) {
      any = true;
      std::vector<std::string> devices;
      devices.swap(device_news_);
      std::vector<amqp::link_id> links;
      links.swap(feedback_woken_);
      std::vector<work> w;
      for (const std::string& d : devices) conn_->c2d_available(d, w);
      for (amqp::link_id l : links) conn_->feedback_available(l, w);
      for (auto& [key, link] : links_) {
        const auto slash = key.find('/');
        const connections::identity who{key.substr(0, slash), key.substr(slash + 1)};
        auto calls = std::move(link->calls);
        link->calls.clear();
        auto desired = std::move(link->desired);
        link->desired.clear();
        for (const auto& c : calls) conn_->invoke_method(who, c, w);
        for (const auto& d : desired) conn_->desired_properties(who, d, w);
      }
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
      } else if (auto* at = std::get_if<attach_identity_work>(&w[i]); at != nullptr && hold_attaches_) {
        held_attaches_.push_back(*at);
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
      } else if (auto* tw = std::get_if<twin_work>(&w[i])) {
        twin_ops_.push_back(tw->op);
        conn_->twin_answered(tw->ticket, answer_twin(twins_, tw->who, tw->op, tw->body, clock_.now()), more);
      } else if (auto* mr = std::get_if<methods_ready_work>(&w[i])) {
        auto& link = links_[mr->who.device_id + "/" + mr->who.module_id];
        ASSERT_TRUE(link) << "methods_ready before the identity's attach";
        link->takes_methods = mr->ready;
        if (mr->ready) methods_.ready({mr->who.device_id, mr->who.module_id});
      } else if (auto* ma = std::get_if<method_response_work>(&w[i])) {
        responds_.push_back(methods_.respond({ma->who.device_id, ma->who.module_id}, ma->response.request_id,
                                             ma->response.status, ma->response.payload));
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
  twins::service twins_{*kv_, registry_, clock_};
  methods::service methods_{registry_,
                            [this](const methods::identity& who) { return table_.find({who.device_id, who.module_id}); },
                            clock_};
  std::vector<twin_operation> twin_ops_;
  std::vector<result<void>> responds_;
  bool hold_attaches_ = false;  // attach_identity work waits in held_attaches_ (release_attaches())
  std::vector<attach_identity_work> held_attaches_;

  void release_attaches() {
    hold_attaches_ = false;
    std::vector<work> w;
    for (auto& a : held_attaches_) w.push_back(a);
    held_attaches_.clear();
    run(w);
    pump();
  }
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

// --- twins and direct methods: a device's twin and methods links (device.md §4.7, §4.8) ---
namespace hub::amqp_head {
namespace {

class amqp_twin_methods : public amqp_connection {
 protected:
  void SetUp() override {
    connection_options opts;
    opts.hub_name = "myhub";
    opts.serve_twins = true;
    opts.serve_methods = true;
    reopen(opts);
    attach_cbs();
  }

  static std::string path_of(const std::string& device, const std::string& module) {
    return module.empty() ? "/devices/" + device : "/devices/" + device + "/modules/" + module;
  }

  void put_identity_token(const std::string& device, const std::string& module = {}) {
    if (module.empty()) {
      ASSERT_EQ(put_token(audience_of(device), device_token(device), "tok-" + device), 200);
      return;
    }
    const std::string token =
        auth::make_sas_token(std::string(host) + "/devices/" + device + "/modules/" + module, device_key, 2'000'000'000);
    ASSERT_EQ(put_token("myhub.example%2Fdevices%2F" + device + "%2Fmodules%2F" + module, token, "tok-" + module), 200);
  }

  static std::map<proton::symbol, proton::value> link_properties(const std::string& channel) {
    return {{proton::symbol("com.microsoft:channel-correlation-id"), proton::value(channel)},
            {proton::symbol("com.microsoft:api-version"), proton::value(std::string("2021-04-12"))}};
  }

  // The SDK's twin links: the sender first, then the receiver, one channel-correlation-id.
  std::pair<amqp::link_id, amqp::link_id> open_twin(const std::string& device, const std::string& module = {},
                                                    const std::string& channel = "twin:5d1b1c1e") {
    const std::string address = path_of(device, module) + "/twin";
    const amqp::link_id tx = client_->open_sender(address, link_properties(channel));
    const amqp::link_id rx = client_->open_receiver(address, 100, link_properties(channel));
    pump();
    EXPECT_EQ(client_got<amqp::link_opened>().size(), 2u);
    EXPECT_TRUE(client_got<amqp::link_closed>().empty());
    return {tx, rx};
  }

  std::pair<amqp::link_id, amqp::link_id> open_methods(const std::string& device, const std::string& module = {},
                                                       std::uint32_t credit = 100) {
    const std::string address = path_of(device, module) + "/methods/devicebound";
    const amqp::link_id tx = client_->open_sender(address, link_properties("methods:0b7e6a52"));
    const amqp::link_id rx = client_->open_receiver(address, credit, link_properties("methods:0b7e6a52"));
    pump();
    EXPECT_EQ(client_got<amqp::link_opened>().size(), 2u);
    EXPECT_TRUE(client_got<amqp::link_closed>().empty());
    return {tx, rx};
  }

  static proton::message twin_msg(const std::string& operation, const std::string& resource, const std::string& cid,
                                  const std::string& body) {
    proton::message m;
    m.correlation_id(proton::message_id(cid));
    m.message_annotations().put(proton::symbol("operation"), proton::value(operation));
    if (!resource.empty()) m.message_annotations().put(proton::symbol("resource"), proton::value(resource));
    m.body(proton::binary(body.begin(), body.end()));
    m.inferred(true);
    return m;
  }

  // Sends a twin request as the SDK does (presettled) and returns what the twin receiver got.
  std::vector<amqp::message_received> twin_request(amqp::link_id sender, const std::string& operation,
                                                   const std::string& resource, const std::string& cid,
                                                   const std::string& body = " ") {
    EXPECT_TRUE(client_->send(sender, twin_msg(operation, resource, cid, body), true));
    pump();
    return client_got<amqp::message_received>();
  }

  static std::string text(const proton::value& v) {
    const auto b = proton::get<proton::binary>(v);
    return std::string(b.begin(), b.end());
  }
  static proton::value annotation(const proton::message& m, const char* key) {
    return m.message_annotations().get(proton::annotation_key(proton::symbol(key)));
  }
  static int status_of(const proton::message& m) { return proton::get<std::int32_t>(annotation(m, "status")); }

  // Invokes a method the way the REST route does and records the outcome.
  std::shared_ptr<std::optional<result<methods::answer>>> invoke(const std::string& device, const std::string& module,
                                                                 const std::string& name, const std::string& payload) {
    auto outcome = std::make_shared<std::optional<result<methods::answer>>>();
    methods::invocation inv;
    inv.name = name;
    inv.payload = payload;
    inv.response_timeout = 5s;
    methods_.invoke({device, module}, inv, [outcome](result<methods::answer> r) { *outcome = std::move(r); });
    pump();
    return outcome;
  }

  static proton::message method_answer(const proton::message_id& request_id, int status, const std::string& payload) {
    proton::message m;
    m.correlation_id(request_id);
    m.properties().put("IoThub-status", static_cast<std::int32_t>(status));
    m.body(proton::binary(payload.begin(), payload.end()));
    m.inferred(true);
    return m;
  }
};

TEST_F(amqp_twin_methods, get_and_reported_patch_answer_on_the_receiver_with_the_requests_correlation_id) {
  put_identity_token("dev1");
  const auto [tx, rx] = open_twin("dev1");
  EXPECT_EQ(state_of("dev1"), registry::connection_state::connected) << "twin links connect the device";

  auto got = twin_request(tx, "GET", "", "c-get");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, rx);
  EXPECT_TRUE(got[0].presettled);
  const proton::message& get = got[0].message;
  ASSERT_EQ(get.correlation_id().type(), proton::STRING) << "echoed with its AMQP type: the SDK compares with ===";
  EXPECT_EQ(proton::get<std::string>(get.correlation_id()), "c-get");
  EXPECT_EQ(status_of(get), 200);
  ASSERT_EQ(get.body().type(), proton::BINARY) << "a Data section: the SDK reads body.content";
  auto view = boost::json::parse(text(get.body())).as_object();
  EXPECT_EQ(view.at("reported").at("$version").as_int64(), 1);
  EXPECT_EQ(view.at("desired").at("$version").as_int64(), 1);
  EXPECT_FALSE(view.contains("tags"));

  got = twin_request(tx, "PATCH", "/properties/reported", "c-patch", R"({"temperature":21,"fw":{"v":"1.2"}})");
  ASSERT_EQ(got.size(), 1u);
  const proton::message& patch = got[0].message;
  EXPECT_EQ(proton::get<std::string>(patch.correlation_id()), "c-patch");
  EXPECT_EQ(status_of(patch), 204);
  EXPECT_EQ(proton::get<std::int64_t>(annotation(patch, "version")), 2) << "the reported section's new $version";
  EXPECT_EQ(patch.body().type(), proton::NULL_TYPE) << "no body";
  auto twin = twins_.get({"dev1", ""}).value();
  const auto& reported = twin.at("properties").at("reported").as_object();
  EXPECT_EQ(reported.at("temperature").as_int64(), 21);
  EXPECT_EQ(reported.at("$version").as_int64(), 2);
  EXPECT_TRUE(reported.at("$metadata").as_object().contains("temperature"));
  EXPECT_EQ((twin_ops_ == std::vector<twin_operation>{twin_operation::get, twin_operation::patch_reported}), true);
}

TEST_F(amqp_twin_methods, broken_requests_are_answered_with_iot_hubs_errors) {
  put_identity_token("dev1");
  const auto [tx, rx] = open_twin("dev1");
  const auto error_of = [&](const std::vector<amqp::message_received>& got, const std::string& cid) {
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) return std::pair<int, std::int64_t>{0, 0};
    EXPECT_EQ(proton::get<std::string>(got[0].message.correlation_id()), cid);
    const auto body = boost::json::parse(text(got[0].message.body())).as_object();
    EXPECT_TRUE(body.contains("message"));
    EXPECT_TRUE(body.contains("trackingId"));
    return std::pair<int, std::int64_t>{status_of(got[0].message), body.at("errorCode").as_int64()};
  };
  EXPECT_EQ(error_of(twin_request(tx, "PATCH", "/properties/reported", "bad-json", "{\"a\":"), "bad-json"),
            (std::pair<int, std::int64_t>{400, 400006}));
  EXPECT_EQ(error_of(twin_request(tx, "PATCH", "/properties/reported", "bad-key", R"({"a.b":1})"), "bad-key"),
            (std::pair<int, std::int64_t>{400, 400004}));
  EXPECT_EQ(error_of(twin_request(tx, "PATCH", "/properties/desired", "not-yours", "{}"), "not-yours"),
            (std::pair<int, std::int64_t>{400, 400004}));
  EXPECT_EQ(error_of(twin_request(tx, "FROB", "", "unknown"), "unknown"), (std::pair<int, std::int64_t>{400, 400004}));
  EXPECT_EQ(twins_.get({"dev1", ""}).value().at("properties").at("reported").at("$version").as_int64(), 1)
      << "nothing was written";
  EXPECT_EQ(client_->credit(tx), 10) << "credit comes back as requests are answered";
}

TEST_F(amqp_twin_methods, desired_patches_follow_put_and_stop_after_delete) {
  put_identity_token("dev1");
  const auto [tx, rx] = open_twin("dev1");
  ASSERT_TRUE(twins_.update({"dev1", ""}, boost::json::parse(R"({"properties":{"desired":{"early":1}}})"), std::nullopt));
  pump();
  EXPECT_TRUE(client_got<amqp::message_received>().empty()) << "not before notifications are on";

  auto got = twin_request(tx, "PUT", "/notifications/twin/properties/desired", "c-put");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(status_of(got[0].message), 200);
  EXPECT_EQ(proton::get<std::string>(got[0].message.correlation_id()), "c-put");

  auto updated = twins_.update({"dev1", ""}, boost::json::parse(R"({"properties":{"desired":{"speed":7}}})"), std::nullopt);
  ASSERT_TRUE(updated);
  pump();
  got = client_got<amqp::message_received>();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, rx);
  EXPECT_TRUE(got[0].message.correlation_id().empty()) << "no correlation-id: the SDK's sign of a desired patch";
  ASSERT_EQ(got[0].message.body().type(), proton::BINARY);
  const auto patch = boost::json::parse(text(got[0].message.body())).as_object();
  EXPECT_EQ(patch.at("speed").as_int64(), 7);
  EXPECT_EQ(patch.at("$version").as_int64(),
            updated->at("properties").at("desired").at("$version").as_int64());
  EXPECT_FALSE(patch.contains("early"));

  got = twin_request(tx, "DELETE", "/notifications/twin/properties/desired", "c-del");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(status_of(got[0].message), 204);
  ASSERT_TRUE(twins_.update({"dev1", ""}, boost::json::parse(R"({"properties":{"desired":{"speed":8}}})"), std::nullopt));
  pump();
  EXPECT_TRUE(client_got<amqp::message_received>().empty()) << "notifications are off";
}

TEST_F(amqp_twin_methods, requests_wait_for_the_identitys_attach) {
  put_identity_token("dev1");
  hold_attaches_ = true;
  const auto [tx, rx] = open_twin("dev1");
  ASSERT_EQ(held_attaches_.size(), 1u);
  EXPECT_TRUE(twin_request(tx, "PUT", "/notifications/twin/properties/desired", "c-put").empty())
      << "unanswered while the attach runs: a desired change could not find the connection yet";
  EXPECT_TRUE(twin_ops_.empty());
  release_attaches();
  auto got = client_got<amqp::message_received>();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(status_of(got[0].message), 200);
  ASSERT_TRUE(twins_.update({"dev1", ""}, boost::json::parse(R"({"properties":{"desired":{"x":1}}})"), std::nullopt));
  pump();
  EXPECT_EQ(client_got<amqp::message_received>().size(), 1u);
}

TEST_F(amqp_twin_methods, twin_links_need_the_identitys_grant_and_modules_have_their_own_twin) {
  put_identity_token("dev1");
  client_->open_sender("/devices/dev2/twin");
  client_->open_receiver("/devices/dev1/modules/mod1/twin", 10);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 2u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  EXPECT_EQ(closed[1].error.name(), "amqp:unauthorized-access");
  client_events_.clear();

  put_identity_token("dev1", "mod1");
  const auto [tx, rx] = open_twin("dev1", "mod1", "twin:module");
  auto got = twin_request(tx, "PATCH", "/properties/reported", "m-patch", R"({"module":true})");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(status_of(got[0].message), 204);
  EXPECT_TRUE(twins_.get({"dev1", "mod1"}).value().at("properties").at("reported").at("module").as_bool());
  EXPECT_FALSE(twins_.get({"dev1", ""}).value().at("properties").at("reported").as_object().contains("module"));
}

TEST_F(amqp_twin_methods, answers_go_to_the_receiver_paired_by_channel) {
  put_identity_token("dev1");
  const auto [tx1, rx1] = open_twin("dev1", "", "twin:one");
  const auto [tx2, rx2] = open_twin("dev1", "", "twin:two");
  auto got = twin_request(tx1, "GET", "", "c1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, rx1);
  got = twin_request(tx2, "GET", "", "c2");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, rx2);
}

TEST_F(amqp_twin_methods, a_method_call_goes_to_the_device_and_its_answer_completes_the_invocation) {
  put_identity_token("dev1");
  auto offline = invoke("dev1", "", "reboot", "{}");
  ASSERT_TRUE(offline->has_value());
  ASSERT_FALSE(**offline);
  EXPECT_EQ((*offline)->error().code, errc::device_not_online) << "no methods links yet";

  const auto [tx, rx] = open_methods("dev1");
  ASSERT_TRUE(links_["dev1/"]->takes_methods);
  auto outcome = invoke("dev1", "", "reboot", R"({"delay":3})");
  EXPECT_FALSE(outcome->has_value()) << "waiting for the device";
  auto calls = client_got<amqp::message_received>();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].link, rx);
  const proton::message& call = calls[0].message;
  EXPECT_EQ(proton::get<std::string>(call.properties().get("IoThub-methodname")), "reboot");
  EXPECT_EQ(call.correlation_id().type(), proton::UUID) << "the hub's request id, a uuid";
  ASSERT_EQ(call.body().type(), proton::BINARY);
  EXPECT_EQ(text(call.body()), R"({"delay":3})");

  // The SDK answers with the id as a string re-encoded as a uuid; either matches.
  auto sent = client_->send(tx, method_answer(call.correlation_id(), 201, R"({"ok":true})"));
  ASSERT_TRUE(sent);
  pump();
  auto updates = client_got<amqp::delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].state, amqp::outcome::accepted);
  ASSERT_TRUE(outcome->has_value());
  ASSERT_TRUE(**outcome) << (*outcome)->error().message;
  EXPECT_EQ((**outcome)->status, 201);
  EXPECT_EQ((**outcome)->payload, R"({"ok":true})");

  // A string correlation-id works as well.
  outcome = invoke("dev1", "", "ping", "null");
  calls = client_got<amqp::message_received>();
  ASSERT_EQ(calls.size(), 1u);
  const std::string id = proton::get<proton::uuid>(calls[0].message.correlation_id()).str();
  ASSERT_TRUE(client_->send(tx, method_answer(proton::message_id(id), 200, "\"pong\"")));
  pump();
  ASSERT_TRUE(outcome->has_value() && **outcome);
  EXPECT_EQ((**outcome)->payload, "\"pong\"");
  EXPECT_EQ(methods_.pending(), 0u);
}

TEST_F(amqp_twin_methods, concurrent_calls_each_get_their_own_answer_past_the_devices_credit) {
  put_identity_token("dev1");
  const auto [tx, rx] = open_methods("dev1", "", 5);
  std::vector<std::shared_ptr<std::optional<result<methods::answer>>>> outcomes;
  for (int i = 0; i < 20; ++i) outcomes.push_back(invoke("dev1", "", "echo", std::to_string(i)));
  std::vector<amqp::message_received> calls = client_got<amqp::message_received>();
  EXPECT_EQ(calls.size(), 5u) << "no more than the device's credit";
  while (calls.size() < 20) {
    client_->grant(rx, 5);
    pump();
    auto more = client_got<amqp::message_received>();
    ASSERT_FALSE(more.empty());
    for (auto& c : more) calls.push_back(std::move(c));
  }
  // Answered in reverse order, each with its request's payload times ten.
  for (auto c = calls.rbegin(); c != calls.rend(); ++c) {
    const int n = std::stoi(text(c->message.body()));
    ASSERT_TRUE(client_->send(tx, method_answer(c->message.correlation_id(), 200, std::to_string(n * 10))));
  }
  pump();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(outcomes[i]->has_value() && **outcomes[i]) << i;
    EXPECT_EQ((**outcomes[i])->payload, std::to_string(i * 10));
  }
}

TEST_F(amqp_twin_methods, a_module_takes_calls_and_a_closed_link_stops_them) {
  put_identity_token("dev1", "mod1");
  const auto [tx, rx] = open_methods("dev1", "mod1");
  auto outcome = invoke("dev1", "mod1", "m", "1");
  auto calls = client_got<amqp::message_received>();
  ASSERT_EQ(calls.size(), 1u);
  ASSERT_TRUE(client_->send(tx, method_answer(calls[0].message.correlation_id(), 200, "2")));
  pump();
  ASSERT_TRUE(outcome->has_value() && **outcome);
  EXPECT_EQ((**outcome)->payload, "2");

  EXPECT_FALSE(**invoke("dev1", "", "m", "1")) << "the module's links are not its device's";
  client_->close_link(tx);
  pump();
  EXPECT_FALSE(links_["dev1/mod1"]->takes_methods);
  outcome = invoke("dev1", "mod1", "m", "1");
  ASSERT_TRUE(outcome->has_value());
  ASSERT_FALSE(**outcome);
  EXPECT_EQ((*outcome)->error().code, errc::device_not_online);
}

TEST_F(amqp_twin_methods, malformed_answers_are_rejected_and_late_ones_accepted) {
  put_identity_token("dev1");
  const auto [tx, rx] = open_methods("dev1");
  proton::message no_status;
  no_status.correlation_id(proton::message_id(std::string("x")));
  ASSERT_TRUE(client_->send(tx, no_status));
  pump();
  auto updates = client_got<amqp::delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].state, amqp::outcome::rejected);
  EXPECT_EQ(updates[0].error.name(), "com.microsoft:argument-error");

  ASSERT_TRUE(client_->send(tx, method_answer(proton::message_id(std::string("no-such-call")), 200, "null")));
  pump();
  updates = client_got<amqp::delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].state, amqp::outcome::accepted) << "the device did its part";
  ASSERT_EQ(responds_.size(), 1u);
  EXPECT_FALSE(responds_[0]) << "the service knows no such call";
}

TEST_F(amqp_twin_methods, methods_are_taken_only_once_the_identity_is_attached) {
  put_identity_token("dev1");
  hold_attaches_ = true;
  open_methods("dev1");
  EXPECT_TRUE(links_.find("dev1/") == links_.end()) << "not attached yet";
  release_attaches();
  EXPECT_TRUE(links_["dev1/"]->takes_methods);
}

}  // namespace
}  // namespace hub::amqp_head
