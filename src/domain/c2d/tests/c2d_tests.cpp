// Unit tests for the cloud-to-device queues and feedback: the real registry on memory_kv, a
// manual clock. A restart is a second service loading the same kv.
#include "domain/c2d/service.hpp"
#include "base/json.hpp"
#include "domain/registry/service.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <gtest/gtest.h>

namespace hub::c2d {
namespace {

using namespace std::chrono_literals;

class c2d_test : public ::testing::Test {
 protected:
  c2d_test() {
    registry::device d;
    d.device_id = "d1";
    auto created = registry_.create_device(d);
    EXPECT_TRUE(created.has_value());
    generation_ = created ? created->generation_id : "";
    d.device_id = "d2";
    EXPECT_TRUE(registry_.create_device(d).has_value());
    registry_.set_c2d_counter([this](std::string_view id) { return svc_.pending(id); });
    svc_.set_device_notifier([this](std::string_view id) { notified_.emplace_back(id); });
    svc_.set_feedback_notifier([this] { ++feedback_notified_; });
    EXPECT_TRUE(svc_.load().has_value());
  }

  static outgoing msg(std::string id, ack_mode ack = ack_mode::none, std::string body = "hello") {
    outgoing m;
    m.message_id = std::move(id);
    m.ack = ack;
    m.body = std::move(body);
    return m;
  }

  // Every record of every receivable batch, completing each batch.
  std::vector<feedback_record> drain_feedback(service& s) {
    std::vector<feedback_record> out;
    while (auto b = s.receive_feedback()) {
      out.insert(out.end(), b->records.begin(), b->records.end());
      EXPECT_TRUE(s.complete_feedback(b->lock_token).has_value());
    }
    return out;
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  options opt_{};
  service svc_{*kv_, registry_, clock_, opt_};
  std::string generation_;
  std::vector<std::string> notified_;
  int feedback_notified_ = 0;
};

TEST_F(c2d_test, send_receive_complete_with_positive_feedback) {
  outgoing m = msg("m1", ack_mode::positive);
  m.correlation_id = "c1";
  m.content_type = "application/json";
  m.properties = {{"k", "v"}, {"a b", "c/d"}};
  auto seq = svc_.send("d1", m);
  ASSERT_TRUE(seq.has_value()) << seq.error().message;
  EXPECT_EQ(notified_, std::vector<std::string>{"d1"});
  EXPECT_EQ(svc_.pending("d1"), 1u);
  EXPECT_EQ(registry_.get_device("d1")->c2d_message_count, 1);

  auto got = svc_.receive("d1", 5);
  ASSERT_EQ(got.size(), 1u);
  const delivery& d = got[0];
  EXPECT_EQ(d.msg.message_id, "m1");
  EXPECT_EQ(d.msg.correlation_id, "c1");
  EXPECT_EQ(d.msg.content_type, "application/json");
  EXPECT_EQ(d.msg.body, "hello");
  EXPECT_EQ(d.msg.properties, m.properties);
  EXPECT_EQ(d.to, "/devices/d1/messages/devicebound");
  EXPECT_EQ(d.sequence_number, *seq);
  EXPECT_EQ(d.delivery_count, 0u);
  EXPECT_EQ(*d.msg.expiry, clock_.now() + 1h);  // the default TTL
  EXPECT_FALSE(d.lock_token.empty());
  // Locked: not delivered twice.
  EXPECT_TRUE(svc_.receive("d1", 5).empty());

  ASSERT_TRUE(svc_.complete("d1", d.lock_token).has_value());
  EXPECT_EQ(svc_.pending("d1"), 0u);
  EXPECT_EQ(registry_.get_device("d1")->c2d_message_count, 0);
  EXPECT_EQ(feedback_notified_, 1);
  // Settling twice: the lock is gone.
  EXPECT_EQ(svc_.complete("d1", d.lock_token).error().code, errc::device_message_lock_lost);

  auto batch = svc_.receive_feedback();
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->records.size(), 1u);
  EXPECT_EQ(batch->records[0].original_message_id, "m1");
  EXPECT_EQ(batch->records[0].status, outcome::success);
  EXPECT_EQ(batch->records[0].device_id, "d1");
  EXPECT_EQ(batch->records[0].device_generation_id, generation_);

  auto body = json::parse(feedback_json(*batch));
  ASSERT_TRUE(body.has_value());
  const auto& rec = body->as_array().at(0).as_object();
  EXPECT_EQ(rec.at("originalMessageId").as_string(), "m1");
  EXPECT_EQ(rec.at("statusCode").as_string(), "Success");
  EXPECT_EQ(rec.at("description").as_string(), "Success");
  EXPECT_EQ(rec.at("deviceId").as_string(), "d1");
  EXPECT_EQ(rec.at("deviceGenerationId").as_string(), generation_);
  EXPECT_EQ(rec.at("enqueuedTimeUtc").as_string(), to_iso8601(clock_.now()));

  EXPECT_FALSE(svc_.receive_feedback().has_value()) << "the batch is locked";
  ASSERT_TRUE(svc_.complete_feedback(batch->lock_token).has_value());
  EXPECT_FALSE(svc_.receive_feedback().has_value());
}

TEST_F(c2d_test, ack_modes_decide_which_outcomes_make_feedback) {
  const struct {
    ack_mode ack;
    bool on_complete;
    bool on_reject;
  } cases[] = {{ack_mode::none, false, false},
               {ack_mode::positive, true, false},
               {ack_mode::negative, false, true},
               {ack_mode::full, true, true}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(to_string(c.ack)));
    ASSERT_TRUE(svc_.send("d1", msg("completed", c.ack)).has_value());
    ASSERT_TRUE(svc_.send("d1", msg("rejected", c.ack)).has_value());
    auto got = svc_.receive("d1", 2);
    ASSERT_EQ(got.size(), 2u);
    ASSERT_TRUE(svc_.complete("d1", got[0].lock_token).has_value());
    ASSERT_TRUE(svc_.reject("d1", got[1].lock_token).has_value());
    auto records = drain_feedback(svc_);
    std::size_t expected = (c.on_complete ? 1 : 0) + (c.on_reject ? 1 : 0);
    ASSERT_EQ(records.size(), expected);
    for (const auto& r : records) {
      EXPECT_EQ(r.status, r.original_message_id == "completed" ? outcome::success : outcome::rejected);
    }
    EXPECT_EQ(svc_.pending("d1"), 0u);
  }
}

TEST_F(c2d_test, abandon_redelivers_until_the_maximum_delivery_count) {
  ASSERT_TRUE(svc_.send("d1", msg("m1", ack_mode::negative)).has_value());
  for (std::uint32_t i = 0; i + 1 < opt_.max_delivery_count; ++i) {
    auto got = svc_.receive("d1");
    ASSERT_EQ(got.size(), 1u) << "delivery " << i;
    EXPECT_EQ(got[0].delivery_count, i);
    notified_.clear();
    ASSERT_TRUE(svc_.abandon("d1", got[0].lock_token).has_value());
    EXPECT_EQ(notified_, std::vector<std::string>{"d1"});
  }
  auto last = svc_.receive("d1");
  ASSERT_EQ(last.size(), 1u);
  ASSERT_TRUE(svc_.abandon("d1", last[0].lock_token).has_value());
  EXPECT_TRUE(svc_.receive("d1").empty()) << "dead-lettered";
  EXPECT_EQ(svc_.pending("d1"), 0u);
  auto records = drain_feedback(svc_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, outcome::delivery_count_exceeded);
  EXPECT_EQ(description(records[0].status), "Message delivery count exceeded");
}

TEST_F(c2d_test, abandon_count_survives_a_restart) {
  ASSERT_TRUE(svc_.send("d1", msg("m1")).has_value());
  auto got = svc_.receive("d1");
  ASSERT_TRUE(svc_.abandon("d1", got[0].lock_token).has_value());
  service again(*kv_, registry_, clock_, opt_);
  ASSERT_TRUE(again.load().has_value());
  auto redelivered = again.receive("d1");
  ASSERT_EQ(redelivered.size(), 1u);
  EXPECT_EQ(redelivered[0].delivery_count, 1u);
}

TEST_F(c2d_test, queue_depth_limit) {
  for (std::size_t i = 0; i < opt_.max_queue_depth; ++i) ASSERT_TRUE(svc_.send("d1", msg("m")).has_value());
  auto full = svc_.send("d1", msg("one too many"));
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, errc::device_max_queue_depth_exceeded);
  // Locked messages still count; another device is unaffected.
  EXPECT_EQ(svc_.receive("d1", 10).size(), 10u);
  EXPECT_FALSE(svc_.send("d1", msg("still full")).has_value());
  EXPECT_TRUE(svc_.send("d2", msg("other device")).has_value());
  EXPECT_EQ(registry_.get_device("d1")->c2d_message_count, static_cast<std::int64_t>(opt_.max_queue_depth));
}

TEST_F(c2d_test, send_errors) {
  EXPECT_EQ(svc_.send("nobody", msg("m")).error().code, errc::device_not_found);
  outgoing big = msg("big", ack_mode::none, std::string(64 * 1024, 'x'));
  EXPECT_EQ(svc_.send("d1", big).error().code, errc::message_too_large);
  big.body.resize(64 * 1024 - 16);
  big.properties = {{"k", std::string(100, 'v')}};
  EXPECT_EQ(svc_.send("d1", big).error().code, errc::message_too_large) << "properties count against the limit";
  EXPECT_EQ(svc_.pending("d1"), 0u);
  EXPECT_EQ(svc_.purge("nobody").error().code, errc::device_not_found);
}

TEST_F(c2d_test, expiry_dead_letters_without_delivery) {
  outgoing m = msg("short", ack_mode::full);
  m.expiry = clock_.now() + 10s;
  ASSERT_TRUE(svc_.send("d1", m).has_value());
  ASSERT_TRUE(svc_.send("d1", msg("default-ttl", ack_mode::full)).has_value());
  clock_.advance(11s);
  auto got = svc_.receive("d1", 5);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].msg.message_id, "default-ttl");
  auto records = drain_feedback(svc_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].original_message_id, "short");
  EXPECT_EQ(records[0].status, outcome::expired);

  // A locked message expires too, through the sweep; its settlement then comes too late.
  clock_.advance(1h);
  svc_.sweep();
  EXPECT_EQ(svc_.pending("d1"), 0u);
  EXPECT_EQ(svc_.complete("d1", got[0].lock_token).error().code, errc::device_message_lock_lost);
  records = drain_feedback(svc_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, outcome::expired);
}

TEST_F(c2d_test, expiry_is_capped_at_the_maximum_ttl) {
  outgoing m = msg("far");
  m.expiry = clock_.now() + 24h * 30;
  ASSERT_TRUE(svc_.send("d1", m).has_value());
  auto got = svc_.receive("d1");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(*got[0].msg.expiry, clock_.now() + 48h);
}

TEST_F(c2d_test, lock_timeout_makes_the_message_receivable_again) {
  ASSERT_TRUE(svc_.send("d1", msg("m1")).has_value());
  auto first = svc_.receive("d1");
  ASSERT_EQ(first.size(), 1u);
  clock_.advance(61s);
  notified_.clear();
  svc_.sweep();
  EXPECT_EQ(notified_, std::vector<std::string>{"d1"});
  auto second = svc_.receive("d1");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_NE(second[0].lock_token, first[0].lock_token);
  EXPECT_EQ(second[0].delivery_count, 0u) << "only an abandon counts";
  EXPECT_EQ(svc_.complete("d1", first[0].lock_token).error().code, errc::device_message_lock_lost);
  EXPECT_TRUE(svc_.complete("d1", second[0].lock_token).has_value());
}

TEST_F(c2d_test, a_lapsed_lock_is_lost_even_before_the_sweep) {
  ASSERT_TRUE(svc_.send("d1", msg("m1")).has_value());
  auto first = svc_.receive("d1");
  clock_.advance(61s);
  EXPECT_EQ(svc_.complete("d1", first[0].lock_token).error().code, errc::device_message_lock_lost);
  EXPECT_EQ(svc_.receive("d1").size(), 1u);
}

TEST_F(c2d_test, unlock_keeps_the_delivery_count) {
  ASSERT_TRUE(svc_.send("d1", msg("m1")).has_value());
  auto first = svc_.receive("d1");
  svc_.unlock("d1", first[0].lock_token);
  svc_.unlock("d1", "no-such-token");
  auto second = svc_.receive("d1");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].delivery_count, 0u);
}

TEST_F(c2d_test, purge_drops_everything_with_purged_feedback) {
  ASSERT_TRUE(svc_.send("d1", msg("a", ack_mode::negative)).has_value());
  ASSERT_TRUE(svc_.send("d1", msg("b", ack_mode::positive)).has_value());
  ASSERT_TRUE(svc_.send("d1", msg("c")).has_value());
  auto locked = svc_.receive("d1");
  auto purged = svc_.purge("d1");
  ASSERT_TRUE(purged.has_value());
  EXPECT_EQ(*purged, 3u);
  EXPECT_EQ(svc_.pending("d1"), 0u);
  EXPECT_EQ(svc_.complete("d1", locked[0].lock_token).error().code, errc::device_message_lock_lost);
  auto records = drain_feedback(svc_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].original_message_id, "a");
  EXPECT_EQ(records[0].status, outcome::purged);
  EXPECT_EQ(*svc_.purge("d1"), 0u);
}

TEST_F(c2d_test, messages_and_feedback_survive_a_restart_in_order) {
  ASSERT_TRUE(svc_.send("d1", msg("first", ack_mode::positive)).has_value());
  ASSERT_TRUE(svc_.send("d1", msg("second")).has_value());
  ASSERT_TRUE(svc_.send("d1", msg("third")).has_value());
  auto got = svc_.receive("d1");
  ASSERT_TRUE(svc_.complete("d1", got[0].lock_token).has_value());
  // Locked when the "crash" happens: enqueued again after it.
  auto locked = svc_.receive("d1");
  ASSERT_EQ(locked[0].msg.message_id, "second");

  service again(*kv_, registry_, clock_, opt_);
  ASSERT_TRUE(again.load().has_value());
  EXPECT_EQ(again.pending("d1"), 2u);
  auto after = again.receive("d1", 5);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].msg.message_id, "second");
  EXPECT_EQ(after[1].msg.message_id, "third");
  EXPECT_LT(after[0].sequence_number, after[1].sequence_number);
  auto records = drain_feedback(again);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].original_message_id, "first");

  // Sequence numbers are never reused, even once every message is gone.
  for (const auto& d : after) ASSERT_TRUE(again.complete("d1", d.lock_token).has_value());
  service third(*kv_, registry_, clock_, opt_);
  ASSERT_TRUE(third.load().has_value());
  auto seq = third.send("d1", msg("fourth"));
  ASSERT_TRUE(seq.has_value());
  EXPECT_GT(*seq, after[1].sequence_number);
}

TEST_F(c2d_test, feedback_batches_lock_expire_and_abandon) {
  options small = opt_;
  small.feedback_batch_records = 2;
  service s(*kv_, registry_, clock_, small);
  s.set_feedback_notifier([this] { ++feedback_notified_; });
  ASSERT_TRUE(s.load().has_value());
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(s.send("d1", msg(id, ack_mode::positive)).has_value());
    auto got = s.receive("d1");
    ASSERT_TRUE(s.complete("d1", got[0].lock_token).has_value());
  }
  auto first = s.receive_feedback();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->records.size(), 2u);
  auto second = s.receive_feedback();
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(second->records.size(), 1u);
  EXPECT_EQ(second->records[0].original_message_id, "c");
  EXPECT_FALSE(s.receive_feedback().has_value());

  s.abandon_feedback(second->lock_token);
  auto again = s.receive_feedback();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->records[0].original_message_id, "c");

  // An unsettled batch comes back after the feedback lock duration.
  clock_.advance(61s);
  const int before = feedback_notified_;
  EXPECT_EQ(s.complete_feedback(first->lock_token).error().code, errc::device_message_lock_lost);
  EXPECT_GT(feedback_notified_, before) << "the released records wake a waiting receiver";
  s.sweep();
  std::size_t total = 0;
  while (auto b = s.receive_feedback()) {
    total += b->records.size();
    ASSERT_TRUE(s.complete_feedback(b->lock_token).has_value());
  }
  EXPECT_EQ(total, 3u);

  // Records nobody takes go after the feedback TTL.
  ASSERT_TRUE(s.send("d1", msg("late", ack_mode::positive)).has_value());
  auto got = s.receive("d1");
  ASSERT_TRUE(s.complete("d1", got[0].lock_token).has_value());
  clock_.advance(small.feedback_ttl + 1s);
  s.sweep();
  EXPECT_FALSE(s.receive_feedback().has_value());
}

TEST_F(c2d_test, deleting_a_device_drops_its_queue_and_feedback) {
  ASSERT_TRUE(svc_.send("d1", msg("q")).has_value());
  ASSERT_TRUE(svc_.send("d1", msg("done", ack_mode::positive)).has_value());
  ASSERT_TRUE(svc_.send("d2", msg("other", ack_mode::positive)).has_value());
  auto got = svc_.receive("d1", 5);
  ASSERT_TRUE(svc_.complete("d1", got[1].lock_token).has_value());
  auto other = svc_.receive("d2");
  ASSERT_TRUE(svc_.complete("d2", other[0].lock_token).has_value());

  svc_.on_registry_change({registry::change::kind::device_deleted, "d1", ""});
  EXPECT_EQ(svc_.pending("d1"), 0u);
  auto records = drain_feedback(svc_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].device_id, "d2");
  service again(*kv_, registry_, clock_, opt_);
  ASSERT_TRUE(again.load().has_value());
  EXPECT_EQ(again.pending("d1"), 0u);
}

TEST(c2d_names, ack_round_trip) {
  for (ack_mode a : {ack_mode::none, ack_mode::positive, ack_mode::negative, ack_mode::full})
    EXPECT_EQ(parse_ack(to_string(a)), a);
  EXPECT_FALSE(parse_ack("Full").has_value());
  EXPECT_FALSE(parse_ack("").has_value());
}

}  // namespace
}  // namespace hub::c2d
