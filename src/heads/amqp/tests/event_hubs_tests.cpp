// The Event Hubs-compatible endpoint: its grammar (partition addresses, selector filters), the
// $management replies, stored records as events, and a whole receiver session driven by a Proton
// client driver as @azure/event-hubs drives it (SASL ANONYMOUS, CBS with raw-key tokens,
// $management READ, a partition receiver with a selector filter), over a real event log.
#include "heads/amqp/event_hubs.hpp"

#include "base/crypto.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/registry/service.hpp"
#include "domain/telemetry/service.hpp"
#include "heads/amqp/connection.hpp"
#include "heads/amqp/partition_watch.hpp"
#include "storage/kv.hpp"

#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/codec/encoder.hpp>
#include <proton/codec/map.hpp>
#include <proton/codec/vector.hpp>
#include <proton/timestamp.hpp>
#include <proton/types.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

namespace hub::amqp_head {
namespace {

using k = event_position::kind;

TEST(event_hubs, partition_addresses) {
  auto a = parse_partition_address("myhub/ConsumerGroups/$Default/Partitions/3");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->entity, "myhub");
  EXPECT_EQ(a->consumer_group, "$Default");
  EXPECT_EQ(a->partition, 3u);
  EXPECT_TRUE(parse_partition_address("amqps://h:5671/myhub/consumergroups/$default/partitions/0"));
  EXPECT_FALSE(parse_partition_address("myhub/ConsumerGroups/$Default/Partitions/x"));
  EXPECT_FALSE(parse_partition_address("myhub/ConsumerGroups/$Default/Partitions/-1"));
  EXPECT_FALSE(parse_partition_address("myhub/ConsumerGroups/$Default"));
  EXPECT_FALSE(parse_partition_address("$management"));
  EXPECT_FALSE(parse_partition_address("myhub/ConsumerGroups//Partitions/0"));
}

TEST(event_hubs, selector_filters) {
  struct row {
    std::string_view expr;
    std::optional<event_position> want;
  };
  const row rows[] = {
      {"amqp.annotation.x-opt-offset > '-1'", event_position{k::start, 0, false}},
      {"amqp.annotation.x-opt-offset > '@latest'", event_position{k::latest, 0, false}},
      {"amqp.annotation.x-opt-offset > '1234'", event_position{k::offset, 1234, false}},
      {"amqp.annotation.x-opt-offset >= '1234'", event_position{k::offset, 1234, true}},
      {"amqp.annotation.x-opt-sequence-number > '7'", event_position{k::sequence, 7, false}},
      {"amqp.annotation.x-opt-sequence-number >= '7'", event_position{k::sequence, 7, true}},
      {"amqp.annotation.x-opt-enqueued-time > '1700000000000'", event_position{k::enqueued_time, 1700000000000, false}},
      {"amqp.annotation.x-opt-offset > 1234", std::nullopt},
      {"amqp.annotation.x-opt-offset < '1'", std::nullopt},
      {"amqp.annotation.x-opt-other > '1'", std::nullopt},
      {"amqp.annotation.x-opt-sequence-number > 'abc'", std::nullopt},
      {"", std::nullopt},
  };
  for (const row& r : rows) {
    const auto got = parse_selector(r.expr);
    ASSERT_EQ(got.has_value(), r.want.has_value()) << r.expr;
    if (!got) continue;
    EXPECT_EQ(got->what, r.want->what) << r.expr;
    EXPECT_EQ(got->value, r.want->value) << r.expr;
    EXPECT_EQ(got->inclusive, r.want->inclusive) << r.expr;
  }
}

// The filter as the SDK sends it: described(ulong 0x0000468C00000004, "<expression>").
proton::value selector(const std::string& expression) {
  proton::value v;
  proton::codec::encoder e(v);
  e << proton::codec::start::described() << static_cast<std::uint64_t>(0x0000468C00000004ull) << expression
    << proton::codec::finish();
  return v;
}

TEST(event_hubs, position_from_the_attach) {
  std::map<proton::symbol, proton::value> filters{
      {proton::symbol("apache.org:selector-filter:string"), selector("amqp.annotation.x-opt-sequence-number >= '5'")}};
  auto pos = position_from_filters(filters);
  ASSERT_TRUE(pos);
  EXPECT_EQ(pos->what, k::sequence);
  EXPECT_EQ(pos->value, 5);
  EXPECT_TRUE(pos->inclusive);
  // No filter: the SDK's default, latest.
  EXPECT_EQ(position_from_filters({})->what, k::latest);
  // A filter we cannot read is refused rather than guessed.
  filters[proton::symbol("apache.org:selector-filter:string")] = proton::value(42);
  EXPECT_FALSE(position_from_filters(filters));
}

TEST(event_hubs, stored_record_as_an_event) {
  telemetry::message m;
  m.body = R"({"t":1})";
  m.message_id = "mid-1";
  m.correlation_id = "cid-1";
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.to = "/devices/dev1/messages/events";
  m.expiry_time_utc = "2030-01-01T00:00:00.0000000Z";
  m.device_id = "dev1";
  m.module_id = "mod1";
  m.generation_id = "g1";
  m.properties = {{"s", std::string("v")}, {"i", std::int64_t{3}}, {"b", true}};
  storage::log_record rec{42, 1000, 1'700'000'000'123, telemetry::encode(m)};
  auto e = event_message(rec);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->body().type(), proton::BINARY);
  EXPECT_EQ(proton::get<std::string>(e->id()), "mid-1");
  EXPECT_EQ(proton::get<std::string>(e->correlation_id()), "cid-1");
  EXPECT_EQ(e->content_type(), "application/json");
  EXPECT_EQ(e->expiry_time().milliseconds(), 1893456000000);
  const auto ann = [&](const char* key) { return e->message_annotations().get(proton::annotation_key(proton::symbol(key))); };
  EXPECT_EQ(ann("x-opt-sequence-number").type(), proton::LONG);
  EXPECT_EQ(proton::get<std::int64_t>(ann("x-opt-sequence-number")), 42);
  EXPECT_EQ(proton::get<std::string>(ann("x-opt-offset")), "1000");
  EXPECT_EQ(proton::get<proton::timestamp>(ann("x-opt-enqueued-time")).milliseconds(), 1'700'000'000'123);
  EXPECT_EQ(proton::get<std::string>(ann("iothub-connection-device-id")), "dev1");
  EXPECT_EQ(proton::get<std::string>(ann("iothub-connection-module-id")), "mod1");
  EXPECT_EQ(proton::get<std::string>(ann("iothub-connection-auth-generation-id")), "g1");
  EXPECT_EQ(proton::get<std::string>(ann("iothub-message-source")), "Telemetry");
  EXPECT_EQ(e->properties().get("i").type(), proton::LONG);
  EXPECT_EQ(e->properties().get("b").type(), proton::BOOLEAN);
  EXPECT_FALSE(event_message(storage::log_record{1, 1, 1, "garbage"}));
}

// --- a receiver session -------------------------------------------------------------------

constexpr std::string_view host = "myhub.example";

class event_hubs_session : public ::testing::Test {
 protected:
  event_hubs_session() {
    dir_ = std::filesystem::temp_directory_path() / ("amqp-eh-" + std::to_string(::getpid()) + "-" +
                                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    storage::log_options o;
    o.dir = dir_.string();
    o.partitions = 2;
    o.sync = false;
    log_ = std::move(storage::event_log::open(o).value());
    telemetry_ = std::make_unique<telemetry::service>(*log_);
    watch_ = std::make_unique<partition_watch>(*log_);

    amqp::driver_options c;
    c.client_mechanisms = "ANONYMOUS";  // as @azure/event-hubs
    c.client_hostname = std::string(host);
    client_ = std::make_unique<amqp::driver>(amqp::role::client, c);
    connection_options opts;
    opts.event_hub_partitions = 2;
    opts.event_hub_created_ms = 1'600'000'000'000;
    conn_ = std::make_unique<connection>(opts, clock_, hub::log::get("amqp"), "connection 1");
  }
  ~event_hubs_session() override {
    conn_.reset();
    watch_.reset();
    log_->close();
    log_.reset();
    std::filesystem::remove_all(dir_);
  }

  void append(const std::string& device, const std::string& body) {
    telemetry::message m;
    m.device_id = device;
    m.body = body;
    std::promise<void> done;
    telemetry_->send(m, [&](result<storage::log_position>) { done.set_value(); });
    done.get_future().wait();
  }

  // Does the connection's work as the session would, synchronously; waits are recorded.
  void run(std::vector<work>& w) {
    for (std::size_t i = 0; i < w.size(); ++i) {
      std::vector<work> more;
      if (auto* t = std::get_if<check_token_work>(&w[i])) {
        conn_->token_checked(t->ticket, check_token(token_services{auth_, registry_}, t->aud, t->token), more);
      } else if (auto* r = std::get_if<read_events_work>(&w[i])) {
        read_entities_.push_back(r->entity);
        const std::int64_t from = r->start ? resolve_position(*log_, r->partition, *r->start) : r->from_sequence;
        auto recs = log_->read(r->partition, from, r->max_records);
        events_read e;
        e.next_sequence = recs->empty() ? from : recs->back().sequence + 1;
        e.records = std::move(*recs);
        conn_->events_ready(r->ticket, std::move(e), more);
      } else if (auto* wt = std::get_if<wait_events_work>(&w[i])) {
        watch_->wait(wt->partition, wt->next_sequence, owner_, [this, link = wt->link] {
          std::scoped_lock lock(woken_mutex_);
          woken_.push_back(link);
        });
      } else if (auto* p = std::get_if<partition_info_work>(&w[i])) {
        conn_->partition_info_ready(p->ticket, log_->stats(p->partition), more);
      } else if (auto* c = std::get_if<claim_partition_work>(&w[i])) {
        partition_watch::holder h;
        h.conn = conn_.get();
        h.link = c->link;
        h.owner = owner_;
        h.epoch = c->epoch;
        h.displace = [this, link = c->link](std::string reason) { stolen_.emplace_back(link, std::move(reason)); };
        conn_->partition_claimed(c->link, watch_->claim(c->partition, c->consumer_group, std::move(h)), more);
      } else if (auto* rl = std::get_if<release_partition_work>(&w[i])) {
        watch_->release(rl->partition, rl->consumer_group, conn_.get(), rl->link);
      }
      for (auto& m : more) w.push_back(std::move(m));
    }
    w.clear();
  }

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

  // Wakes the receivers the watch woke, as the session would. The watch wakes them on the log's
  // writer thread, which may call append()'s completion first: wait for the wake (up to 5 s)
  // rather than race it (this test failed about one run in eight on a busy machine).
  void deliver_wakes() {
    std::vector<amqp::link_id> woken;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (woken.empty() && std::chrono::steady_clock::now() < deadline) {
      {
        std::scoped_lock lock(woken_mutex_);
        woken.swap(woken_);
      }
      if (woken.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    for (auto link : woken) {
      std::vector<work> w;
      conn_->partition_data(link, w);
      run(w);
    }
    pump();
  }

  template <class E>
  std::vector<E> client_got() {
    std::vector<E> out;
    for (auto& e : client_events_)
      if (auto* p = std::get_if<E>(&e)) out.push_back(std::move(*p));
    std::erase_if(client_events_, [](const amqp::event& e) { return std::holds_alternative<E>(e); });
    return out;
  }

  // A token as @azure/core-amqp makes it: sr = encodeURIComponent(audience), HMAC keyed by the
  // key's text, fields sr, sig, se, skn.
  std::string eh_token(const std::string& audience, std::string_view policy = "service",
                       std::int64_t expiry = 2'000'000'000) {
    const auth::policy* p = auth_.identity().find(policy);
    const std::string sr = text::url_encode(audience);
    return "SharedAccessSignature sr=" + sr + "&sig=" +
           text::url_encode(auth::sign(p->primary_key, sr, expiry, auth::key_encoding::raw_text)) +
           "&se=" + std::to_string(expiry) + "&skn=" + std::string(policy);
  }

  int put_token(const std::string& audience, const std::string& token) {
    proton::message m;
    m.id(proton::message_id(std::string("put-") + std::to_string(++n_)));
    m.reply_to("cbs-reply");
    m.properties().put("operation", std::string("put-token"));
    m.properties().put("type", std::string("servicebus.windows.net:sastoken"));
    m.properties().put("name", audience);
    m.body(token);
    EXPECT_TRUE(client_->send(cbs_out_, m));
    pump();
    auto replies = client_got<amqp::message_received>();
    client_got<amqp::delivery_updated>();
    if (replies.size() != 1) return 0;
    return proton::get<std::int32_t>(replies[0].message.properties().get("status-code"));
  }

  void open_cbs() {
    cbs_out_ = client_->open_sender("$cbs");
    client_->open_receiver("$cbs", 10, {}, "cbs-reply");
    pump();
    client_events_.clear();
  }

  // A $management READ; returns the reply.
  proton::message read(const std::string& type, const std::string& partition = {}, const std::string& name = "myhub") {
    proton::message m;
    m.id(proton::message_id(std::string("mgmt-") + std::to_string(++n_)));
    m.reply_to("mgmt-reply");
    m.properties().put("operation", std::string("READ"));
    m.properties().put("name", name);
    m.properties().put("type", type);
    if (!partition.empty()) m.properties().put("partition", partition);
    m.body(proton::binary());
    EXPECT_TRUE(client_->send(mgmt_out_, m));
    pump();
    auto replies = client_got<amqp::message_received>();
    client_got<amqp::delivery_updated>();
    EXPECT_EQ(replies.size(), 1u);
    return replies.empty() ? proton::message() : replies[0].message;
  }

  std::filesystem::path dir_;
  std::unique_ptr<storage::event_log> log_;
  std::unique_ptr<telemetry::service> telemetry_;
  std::unique_ptr<partition_watch> watch_;
  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  auth::service auth_{auth::hub_identity{std::string(host), auth::default_policies()}, registry_, clock_};
  std::unique_ptr<amqp::driver> client_;
  std::unique_ptr<connection> conn_;
  std::vector<amqp::event> client_events_;
  amqp::link_id cbs_out_ = 0, mgmt_out_ = 0;
  std::shared_ptr<int> owner_ = std::make_shared<int>(0);
  std::mutex woken_mutex_;
  std::vector<std::pair<amqp::link_id, std::string>> stolen_;  // displaced receivers
  std::vector<amqp::link_id> woken_;
  std::vector<std::uint32_t> read_entities_;  // read_events_work::entity, in order
  int n_ = 0;
};

TEST_F(event_hubs_session, management_reads_and_a_receiver_from_the_start) {
  append("dev1", "one");
  append("dev1", "two");
  const std::uint32_t p = telemetry_->partition_for("dev1");
  open_cbs();
  // The service SDK's key signed the IoT Hub way does not open the Event Hubs endpoint.
  const std::string mgmt_audience = "sb://myhub.example/myhub/$management";
  EXPECT_EQ(put_token(mgmt_audience, auth::make_sas_token(mgmt_audience, auth_.identity().find("service")->primary_key,
                                                          2'000'000'000, "service")),
            401);
  ASSERT_EQ(put_token(mgmt_audience, eh_token(mgmt_audience)), 200);

  mgmt_out_ = client_->open_sender("$management");
  client_->open_receiver("$management", 10, {}, "mgmt-reply");
  pump();
  client_events_.clear();

  proton::message hub = read("com.microsoft:eventhub");
  EXPECT_EQ(proton::get<std::string>(hub.correlation_id()), "mgmt-" + std::to_string(n_));
  EXPECT_EQ(proton::get<std::int32_t>(hub.properties().get("status-code")), 200);
  std::map<std::string, proton::value> body;
  proton::get(hub.body(), body);
  EXPECT_EQ(proton::get<std::string>(body.at("name")), "myhub");
  std::vector<std::string> ids;
  proton::get(body.at("partition_ids"), ids);
  EXPECT_EQ(ids, (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(proton::get<proton::timestamp>(body.at("created_at")).milliseconds(), 1'600'000'000'000);

  proton::message part = read("com.microsoft:partition", std::to_string(p));
  body.clear();
  proton::get(part.body(), body);
  EXPECT_EQ(proton::get<std::int64_t>(body.at("begin_sequence_number")), 0);
  EXPECT_EQ(proton::get<std::int64_t>(body.at("last_enqueued_sequence_number")), 1);
  EXPECT_EQ(proton::get<bool>(body.at("is_partition_empty")), false);
  EXPECT_EQ(proton::get<std::int32_t>(read("com.microsoft:partition", "9").properties().get("status-code")), 404);

  // A receiver from the start of dev1's partition.
  const std::string source = "myhub/ConsumerGroups/$Default/Partitions/" + std::to_string(p);
  ASSERT_EQ(put_token("sb://myhub.example/" + source, eh_token("sb://myhub.example/" + source)), 200);
  const amqp::link_id rx = client_->open_receiver(
      source, 10, {}, "receiver-1",
      {{proton::symbol("apache.org:selector-filter:string"), selector("amqp.annotation.x-opt-offset > '-1'")}});
  pump();
  auto got = client_got<amqp::message_received>();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].link, rx);
  EXPECT_TRUE(got[0].presettled);
  const auto seq = [](const proton::message& m) {
    return proton::get<std::int64_t>(m.message_annotations().get(proton::annotation_key(proton::symbol("x-opt-sequence-number"))));
  };
  EXPECT_EQ(seq(got[0].message), 0);
  EXPECT_EQ(seq(got[1].message), 1);

  // Caught up: the next event arrives when it is durable.
  append("dev1", "three");
  deliver_wakes();
  got = client_got<amqp::message_received>();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(seq(got[0].message), 2);
  const auto b = proton::get<proton::binary>(got[0].message.body());
  EXPECT_EQ(std::string(b.begin(), b.end()), "three");
}

TEST_F(event_hubs_session, latest_and_credit) {
  append("dev1", "old");
  const std::uint32_t p = telemetry_->partition_for("dev1");
  open_cbs();
  // A token for the whole event hub covers every partition.
  ASSERT_EQ(put_token("sb://myhub.example/myhub", eh_token("sb://myhub.example/myhub")), 200);
  const std::string source = "myhub/ConsumerGroups/$Default/Partitions/" + std::to_string(p);
  client_->open_receiver(source, 2, {}, "r", {{proton::symbol("apache.org:selector-filter:string"),
                                               selector("amqp.annotation.x-opt-offset > '@latest'")}});
  pump();
  EXPECT_TRUE(client_got<amqp::message_received>().empty()) << "latest: nothing old";
  for (int i = 0; i < 5; ++i) append("dev1", "new" + std::to_string(i));
  deliver_wakes();
  EXPECT_EQ(client_got<amqp::message_received>().size(), 2u) << "no more than the credit";
}

TEST_F(event_hubs_session, receivers_need_a_token_for_their_partition) {
  open_cbs();
  ASSERT_EQ(put_token("sb://myhub.example/myhub/$management", eh_token("sb://myhub.example/myhub/$management")), 200);
  client_->open_receiver("myhub/ConsumerGroups/$Default/Partitions/0", 10);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  client_->open_receiver("myhub/ConsumerGroups/$Default/Partitions/7", 10);
  pump();
  closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:not-found");
}

TEST_F(event_hubs_session, entities_by_name_and_an_unknown_one_is_not_found) {
  // The built-in event hub under the hub's name, a routing endpoint's under its own.
  connection_options opts;
  opts.event_hub_partitions = 2;
  opts.event_hub_entities = {"myhub", "alerts"};
  conn_ = std::make_unique<connection>(opts, clock_, hub::log::get("amqp"), "connection 2");
  append("dev1", "one");
  const std::uint32_t p = telemetry_->partition_for("dev1");
  open_cbs();
  for (const char* entity : {"myhub", "alerts", "nosuch"}) {
    const std::string aud = std::string("sb://myhub.example/") + entity;
    ASSERT_EQ(put_token(aud, eh_token(aud)), 200);
  }
  mgmt_out_ = client_->open_sender("$management");
  client_->open_receiver("$management", 10, {}, "mgmt-reply");
  pump();
  client_events_.clear();
  EXPECT_EQ(proton::get<std::int32_t>(read("com.microsoft:eventhub", {}, "MyHub").properties().get("status-code")), 200);
  EXPECT_EQ(proton::get<std::int32_t>(read("com.microsoft:eventhub", {}, "alerts").properties().get("status-code")), 200);
  proton::message missing = read("com.microsoft:eventhub", {}, "nosuch");
  EXPECT_EQ(proton::get<std::int32_t>(missing.properties().get("status-code")), 404);
  EXPECT_EQ(proton::get<std::string>(missing.properties().get("status-description")),
            "The messaging entity 'nosuch' could not be found.");
  EXPECT_EQ(proton::get<std::int32_t>(read("com.microsoft:partition", "0", "nosuch").properties().get("status-code")), 404);

  const auto start = std::map<proton::symbol, proton::value>{
      {proton::symbol("apache.org:selector-filter:string"), selector("amqp.annotation.x-opt-offset > '-1'")}};
  client_->open_receiver("nosuch/ConsumerGroups/$Default/Partitions/0", 10, {}, "r0", start);
  pump();
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:not-found");
  EXPECT_NE(closed[0].error.description().find("could not be found"), std::string::npos);
  client_->open_receiver("ALERTS/ConsumerGroups/$Default/Partitions/" + std::to_string(p), 10, {}, "r1", start);
  client_->open_receiver("myhub/ConsumerGroups/$Default/Partitions/" + std::to_string(p), 10, {}, "r2", start);
  pump();
  EXPECT_TRUE(client_got<amqp::link_closed>().empty());
  ASSERT_FALSE(read_entities_.empty());
  EXPECT_EQ(read_entities_.front(), 1u);  // r1 reads alerts' log, r2 the built-in one
  EXPECT_EQ(std::count(read_entities_.begin(), read_entities_.end(), 0u) > 0, true);
  EXPECT_EQ(client_got<amqp::message_received>().size(), 2u);
}

TEST_F(event_hubs_session, epoch_receivers_displace_and_refuse) {
  append("dev1", "one");
  const std::uint32_t p = telemetry_->partition_for("dev1");
  open_cbs();
  ASSERT_EQ(put_token("sb://myhub.example/myhub", eh_token("sb://myhub.example/myhub")), 200);
  const std::string source = "myhub/ConsumerGroups/$Default/Partitions/" + std::to_string(p);
  const auto epoch = [](std::int64_t e) {
    return std::map<proton::symbol, proton::value>{{proton::symbol("com.microsoft:epoch"), proton::value(e)}};
  };
  const auto start = std::map<proton::symbol, proton::value>{
      {proton::symbol("apache.org:selector-filter:string"), selector("amqp.annotation.x-opt-offset > '-1'")}};
  client_->open_receiver(source, 10, epoch(1), "r1", start);
  pump();
  EXPECT_EQ(client_got<amqp::message_received>().size(), 1u) << "epoch 1 reads";
  EXPECT_EQ(watch_->holders(p, "$default"), 1u);
  // A higher epoch, group named in another case: the first is displaced.
  client_->open_receiver("myhub/ConsumerGroups/$DEFAULT/Partitions/" + std::to_string(p), 10, epoch(2), "r2", start);
  pump();
  ASSERT_EQ(stolen_.size(), 1u);
  EXPECT_NE(stolen_[0].second.find("higher epoch"), std::string::npos);
  {
    std::vector<work> w;
    conn_->partition_stolen(stolen_[0].first, stolen_[0].second, w);
    run(w);
    pump();
  }
  auto closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:link:stolen");
  EXPECT_EQ(client_got<amqp::message_received>().size(), 1u) << "epoch 2 reads";
  // A lower epoch and a receiver without one are refused.
  client_->open_receiver(source, 10, epoch(1), "r3", start);
  pump();
  closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:link:stolen");
  client_->open_receiver(source, 10, {}, "r4", start);
  pump();
  closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:link:stolen");
  EXPECT_TRUE(client_got<amqp::message_received>().empty());
  EXPECT_EQ(watch_->holders(p, "$Default"), 1u);
  // An unknown consumer group is not found; a configured one is another owner.
  client_->open_receiver("myhub/ConsumerGroups/other/Partitions/" + std::to_string(p), 10, {}, "r5", start);
  pump();
  closed = client_got<amqp::link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:not-found");
  watch_->set_consumer_groups({"Other"});
  client_->open_receiver("myhub/ConsumerGroups/other/Partitions/" + std::to_string(p), 10, {}, "r6", start);
  pump();
  EXPECT_TRUE(client_got<amqp::link_closed>().empty());
  EXPECT_EQ(client_got<amqp::message_received>().size(), 1u);
}

TEST(partition_watch_test, epoch_rules) {
  const auto dir = std::filesystem::temp_directory_path() / ("amqp-owners-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  storage::log_options o;
  o.dir = dir.string();
  o.partitions = 2;
  o.sync = false;
  auto log = std::move(storage::event_log::open(o).value());
  {
    partition_watch watch(*log);
    auto a = std::make_shared<int>(0), b = std::make_shared<int>(0), c = std::make_shared<int>(0);
    std::vector<std::string> displaced;
    const auto h = [&](std::shared_ptr<int>& o, std::uint64_t link, std::optional<std::int64_t> e) {
      partition_watch::holder x;
      x.conn = o.get();
      x.link = link;
      x.owner = o;
      x.epoch = e;
      x.displace = [&displaced](std::string r) { displaced.push_back(std::move(r)); };
      return x;
    };
    EXPECT_FALSE(watch.claim(0, "$Default", h(a, 1, std::nullopt)));
    EXPECT_FALSE(watch.claim(0, "$Default", h(b, 1, std::nullopt))) << "non-epoch receivers share";
    EXPECT_FALSE(watch.claim(0, "$default", h(c, 1, 5)));
    EXPECT_EQ(displaced.size(), 2u);
    EXPECT_TRUE(watch.claim(0, "$Default", h(a, 2, 4)));
    EXPECT_TRUE(watch.claim(0, "$Default", h(a, 3, std::nullopt)));
    EXPECT_FALSE(watch.claim(1, "$Default", h(a, 4, std::nullopt))) << "another partition";
    EXPECT_FALSE(watch.claim(0, "$Default", h(b, 2, 5))) << "an equal epoch displaces";
    EXPECT_EQ(displaced.size(), 3u);
    watch.release(0, "$DEFAULT", b.get(), 2);
    EXPECT_EQ(watch.holders(0, "$Default"), 0u);
    EXPECT_FALSE(watch.claim(0, "$Default", h(a, 5, std::nullopt))) << "free again";
    a.reset();
    EXPECT_EQ(watch.holders(0, "$Default"), 0u) << "a gone owner no longer holds";
    EXPECT_EQ(watch.claim(0, "nope", h(b, 9, std::nullopt)).value_or(partition_watch::refusal{}).condition,
              "amqp:not-found");
    watch.set_consumer_groups({"NoPe"});
    EXPECT_FALSE(watch.claim(0, "nope", h(b, 9, std::nullopt)));
  }
  log.reset();
  std::filesystem::remove_all(dir);
}

TEST_F(event_hubs_session, a_token_for_another_host_is_refused) {
  open_cbs();
  EXPECT_EQ(put_token("sb://elsewhere.example/myhub", eh_token("sb://elsewhere.example/myhub")), 401);
}


namespace hub::amqp_head {
namespace {

TEST(partition_watch_test, wakes_waiters_once_their_sequence_is_durable) {
  const auto dir = std::filesystem::temp_directory_path() / ("amqp-watch-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  storage::log_options o;
  o.dir = dir.string();
  o.partitions = 2;
  o.sync = false;
  auto log = std::move(storage::event_log::open(o).value());
  {
    partition_watch watch(*log);
    auto owner = std::make_shared<int>(0);
    std::atomic<int> woken{0};
    watch.wait(0, 0, owner, [&] { ++woken; });
    EXPECT_EQ(woken, 0);
    EXPECT_EQ(watch.waiting(), 1u);
    watch.notify(1, 5);  // another partition
    EXPECT_EQ(woken, 0);
    watch.notify(0, 0);
    EXPECT_EQ(woken, 1);
    EXPECT_EQ(watch.waiting(), 0u);
    watch.wait(0, 0, owner, [&] { ++woken; });  // already durable: at once
    EXPECT_EQ(woken, 2);
    // A waiter whose owner has gone is never called, and is dropped.
    auto gone = std::make_shared<int>(0);
    watch.wait(0, 10, gone, [&] { ++woken; });
    gone.reset();
    watch.wait(0, 11, owner, [&] { ++woken; });
    EXPECT_EQ(watch.waiting(), 1u);
    // Appends wake through the log's durable listener.
    std::promise<void> done;
    log->append(0, "x", [&](result<storage::log_position>) { done.set_value(); });
    done.get_future().wait();
  }
  log->close();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hub::amqp_head

// A receiver whose peer reads slowly: once Proton holds more than max_unwritten_bytes for the
// peer, no more events are read for it, whatever credit it gave; each completed write
// (connection::writing) lets the next read go. (Counting only the bytes being written let a peer
// that stopped reading collect every event its credit allowed in Proton's buffers.)
TEST_F(event_hubs_session, no_more_events_are_read_while_proton_holds_the_output_limit) {
  connection_options opts;
  opts.event_hub_partitions = 2;
  opts.max_unwritten_bytes = 4096;
  conn_ = std::make_unique<connection>(opts, clock_, ::hub::log::get("amqp"), "connection 1");
  const std::string kib(1024, 'k');
  for (int i = 0; i < 300; ++i) append("dev1", kib);
  const std::uint32_t p = telemetry_->partition_for("dev1");
  open_cbs();
  ASSERT_EQ(put_token("sb://myhub.example/myhub", eh_token("sb://myhub.example/myhub")), 200);
  const std::string source = "myhub/ConsumerGroups/$Default/Partitions/" + std::to_string(p);
  client_->open_receiver(source, 1000, {}, "r",
                         {{proton::symbol("apache.org:selector-filter:string"), selector("amqp.annotation.x-opt-offset > '-1'")}});
  pump();
  // One read (max_events_per_read) went into Proton; the next waits for the write.
  std::size_t total = client_got<amqp::message_received>().size();
  EXPECT_EQ(total, opts.max_events_per_read);
  EXPECT_EQ(read_entities_.size(), 1u);
  for (int round = 0; round < 10 && total < 300; ++round) {
    std::vector<work> w;
    conn_->writing(0, w);  // the socket took everything
    run(w);
    pump();
    const std::size_t got = client_got<amqp::message_received>().size();
    EXPECT_LE(got, opts.max_events_per_read);
    total += got;
  }
  EXPECT_EQ(total, 300u);
}

}  // namespace
}  // namespace hub::amqp_head
