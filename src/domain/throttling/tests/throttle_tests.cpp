#include "domain/throttling/throttle.hpp"

#include <gtest/gtest.h>

namespace hub::throttling {
namespace {

using namespace std::chrono_literals;
using ns = std::chrono::nanoseconds;

TEST(token_bucket, unlimited_never_waits) {
  token_bucket b(rate{});
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(b.reserve(ns(0), ns(0)), ns(0));
}

TEST(token_bucket, burst_then_the_rate) {
  token_bucket b(rate{10, 3});  // 10/s, 3 at once
  const ns t0 = 1h;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.reserve(t0, ns(0)), ns(0)) << i;
  EXPECT_FALSE(b.reserve(t0, ns(0)));  // refused, nothing booked
  EXPECT_FALSE(b.reserve(t0 + 99ms, ns(0)));
  EXPECT_EQ(b.reserve(t0 + 100ms, ns(0)), ns(0));  // one token back after 1/10 s
  EXPECT_FALSE(b.reserve(t0 + 100ms, ns(0)));
  EXPECT_FALSE(b.idle(t0 + 100ms));
  EXPECT_TRUE(b.idle(t0 + 1s));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.reserve(t0 + 1s, ns(0)), ns(0)) << "refilled " << i;
}

TEST(token_bucket, books_ahead_up_to_the_backlog) {
  token_bucket b(rate{10, 1});
  const ns t0 = 1h;
  EXPECT_EQ(b.reserve(t0, 1s), ns(0));
  EXPECT_EQ(b.reserve(t0, 1s), ns(100ms));  // queued behind the first
  EXPECT_EQ(b.reserve(t0, 1s), ns(200ms));
  for (int i = 3; i <= 10; ++i) EXPECT_EQ(b.reserve(t0, 1s), ns(i * 100ms)) << i;
  EXPECT_FALSE(b.reserve(t0, 1s));  // 1.1 s > the backlog
  EXPECT_EQ(b.reserve(t0 + 500ms, 1s), ns(600ms));  // the queue drains at the rate
}

TEST(token_bucket, a_default_burst_is_one_second) {
  token_bucket b(rate{5, 0});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.reserve(ns(0), ns(0)), ns(0));
  EXPECT_FALSE(b.reserve(ns(0), ns(0)));
}

TEST(throttles, off_by_default) {
  manual_clock clk;
  throttles t(limits{}, clk);
  EXPECT_FALSE(t.enabled());
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(t.admit(operation::d2c, "dev"));
}

TEST(throttles, hub_rate_is_shared_and_refused_with_throttled) {
  manual_clock clk;
  limits l;
  l.of_hub(operation::registry) = rate{2, 2};
  throttles t(l, clk);
  EXPECT_TRUE(t.admit(operation::registry, ""));
  EXPECT_TRUE(t.admit(operation::registry, "a"));
  auto refused = t.admit(operation::registry, "b");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::throttled);
  EXPECT_TRUE(t.admit(operation::d2c, "b"));  // other operations are not limited
  clk.advance(500ms);
  EXPECT_TRUE(t.admit(operation::registry, "b"));
  EXPECT_FALSE(t.admit(operation::registry, "b"));
}

TEST(throttles, device_rate_is_per_device_and_a_refusal_books_nothing) {
  manual_clock clk;
  limits l;
  l.of_device(operation::d2c) = rate{1, 1};
  l.of_hub(operation::d2c) = rate{2, 2};
  throttles t(l, clk);
  EXPECT_TRUE(t.admit(operation::d2c, "a"));
  EXPECT_FALSE(t.admit(operation::d2c, "a"));  // a's own rate
  EXPECT_TRUE(t.admit(operation::d2c, "b"));   // b has its own
  // The hub's 2 are used: c is refused by the hub's rate, and its device bucket stays untouched.
  EXPECT_FALSE(t.admit(operation::d2c, "c"));
  clk.advance(1s);
  EXPECT_TRUE(t.admit(operation::d2c, "c"));
  EXPECT_EQ(t.device_buckets(), 3u);
}

TEST(throttles, shaped_calls_wait_then_are_refused_past_the_backlog) {
  manual_clock clk;
  limits l;
  l.of_hub(operation::d2c) = rate{100, 100};
  l.backlog = 500ms;
  throttles t(l, clk);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(*t.admit(operation::d2c, "a", true), ns(0));
  // Then one every 10 ms, booked ahead up to 500 ms.
  for (int i = 1; i <= 50; ++i) ASSERT_EQ(*t.admit(operation::d2c, "a", true), ns(i * 10ms)) << i;
  auto refused = t.admit(operation::d2c, "a", true);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::throttled);
  EXPECT_FALSE(t.admit(operation::d2c, "a", false));  // a call that cannot wait is refused at once
}

TEST(throttles, idle_device_buckets_are_dropped) {
  manual_clock clk;
  limits l;
  l.of_device(operation::twin_device) = rate{10, 10};
  throttles t(l, clk);
  for (int i = 0; i < 4096; ++i) ASSERT_TRUE(t.admit(operation::twin_device, "dev-" + std::to_string(i)));
  EXPECT_EQ(t.device_buckets(), 4096u);  // the 4096th call pruned, but nothing was idle yet
  clk.advance(10s);
  for (int i = 0; i < 4096; ++i) ASSERT_TRUE(t.admit(operation::twin_device, "later-" + std::to_string(i)));
  EXPECT_EQ(t.device_buckets(), 4096u);  // the first 4096 were idle at the 8192nd call: dropped
}

TEST(parse_throttle, tiers_and_overrides) {
  auto s1 = parse_throttle("tier=S1,units=2", limits{});
  ASSERT_TRUE(s1) << s1.error().message;
  EXPECT_EQ(s1->of_hub(operation::d2c).per_second, 100);   // max(100, 2 * 12)
  EXPECT_NEAR(s1->of_hub(operation::registry).per_second, 200.0 / 60, 1e-9);
  EXPECT_EQ(s1->of_hub(operation::methods).per_second, 80);
  auto s1x9 = parse_throttle("tier=s1, units=9", limits{});
  ASSERT_TRUE(s1x9);
  EXPECT_EQ(s1x9->of_hub(operation::d2c).per_second, 108);
  auto s3 = parse_throttle("tier=S3,d2c=50/s:10,device.twin=2/min,backlog=250ms,c2d=off", limits{});
  ASSERT_TRUE(s3) << s3.error().message;
  EXPECT_EQ(s3->of_hub(operation::d2c), (rate{50, 10}));
  EXPECT_EQ(s3->of_hub(operation::connect).per_second, 6000);
  EXPECT_NEAR(s3->of_device(operation::twin_device).per_second, 2.0 / 60, 1e-9);
  EXPECT_TRUE(s3->of_hub(operation::c2d).unlimited());
  EXPECT_EQ(s3->backlog, 250ms);
  // Applied on top of an earlier --throttle.
  auto more = parse_throttle("registry=5/s", *s3);
  ASSERT_TRUE(more);
  EXPECT_EQ(more->of_hub(operation::registry).per_second, 5);
  EXPECT_EQ(more->of_hub(operation::d2c), (rate{50, 10}));
}

TEST(parse_throttle, rejects_what_it_cannot_read) {
  for (const char* bad : {"tier=S9", "units=0", "d2c", "d2c=fast", "d2c=10/week", "bogus=1/s", "d2c=-1/s", "d2c=1/s:0",
                          "backlog=soon", "device.nope=1/s"}) {
    auto r = parse_throttle(bad, limits{});
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, errc::argument_invalid) << bad;
    }
  }
}

}  // namespace
}  // namespace hub::throttling
