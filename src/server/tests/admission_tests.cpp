#include "server/admission.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace hub::server {
namespace {

TEST(admission, unlimited_by_default) {
  admission a(admission_limits{});
  std::vector<admission::ticket> held(1000);
  for (auto& t : held) EXPECT_EQ(a.admit("127.0.0.1", t), admission_verdict::admitted);
  EXPECT_EQ(a.unauthenticated(), 1000u);
  EXPECT_EQ(a.connections(), 1000u);
  EXPECT_EQ(a.addresses(), 1u);
  held.clear();
  EXPECT_EQ(a.connections(), 0u);
  EXPECT_EQ(a.addresses(), 0u);  // no entry left behind per address
}

TEST(admission, hub_wide_unauthenticated_cap_frees_on_authentication_and_close) {
  admission a(admission_limits{.max_unauthenticated = 2});
  admission::ticket t1, t2, t3;
  EXPECT_EQ(a.admit("10.0.0.1", t1), admission_verdict::admitted);
  EXPECT_EQ(a.admit("10.0.0.2", t2), admission_verdict::admitted);
  EXPECT_EQ(a.admit("10.0.0.3", t3), admission_verdict::too_many_unauthenticated);
  EXPECT_FALSE(t3.valid());
  EXPECT_EQ(a.connections(), 2u);

  t1.authenticated();
  t1.authenticated();  // idempotent
  EXPECT_EQ(a.unauthenticated(), 1u);
  EXPECT_EQ(a.admit("10.0.0.3", t3), admission_verdict::admitted);
  admission::ticket t4;
  EXPECT_EQ(a.admit("10.0.0.4", t4), admission_verdict::too_many_unauthenticated);
  t2.reset();  // closed before authenticating
  EXPECT_EQ(a.admit("10.0.0.4", t4), admission_verdict::admitted);
  EXPECT_EQ(a.connections(), 3u);
  EXPECT_EQ(a.unauthenticated(), 2u);
  t1.reset();  // an authenticated one leaves: the unauthenticated count is unchanged
  EXPECT_EQ(a.unauthenticated(), 2u);
  EXPECT_EQ(a.connections(), 2u);
}

TEST(admission, per_address_unauthenticated_cap_spares_other_addresses) {
  admission a(admission_limits{.max_unauthenticated = 100, .max_unauthenticated_per_ip = 2});
  admission::ticket a1, a2, a3, b1;
  EXPECT_EQ(a.admit("127.0.0.1", a1), admission_verdict::admitted);
  EXPECT_EQ(a.admit("127.0.0.1", a2), admission_verdict::admitted);
  EXPECT_EQ(a.admit("127.0.0.1", a3), admission_verdict::too_many_unauthenticated_per_ip);
  EXPECT_EQ(a.admit("127.0.0.2", b1), admission_verdict::admitted);
  a1.authenticated();
  EXPECT_EQ(a.admit("127.0.0.1", a3), admission_verdict::admitted);
  EXPECT_EQ(a.connections(), 4u);
}

TEST(admission, per_address_total_cap_counts_authenticated_connections) {
  admission a(admission_limits{.max_connections_per_ip = 2});
  admission::ticket t1, t2, t3, other;
  EXPECT_EQ(a.admit("::1", t1), admission_verdict::admitted);
  EXPECT_EQ(a.admit("::1", t2), admission_verdict::admitted);
  t1.authenticated();
  t2.authenticated();
  EXPECT_EQ(a.admit("::1", t3), admission_verdict::too_many_per_ip);
  EXPECT_EQ(a.admit("127.0.0.1", other), admission_verdict::admitted);
  t2 = admission::ticket{};  // move-assigning releases the old share
  EXPECT_EQ(a.admit("::1", t3), admission_verdict::admitted);
}

TEST(admission, moved_tickets_release_once) {
  admission a(admission_limits{.max_unauthenticated = 1});
  {
    admission::ticket t;
    EXPECT_EQ(a.admit("10.1.1.1", t), admission_verdict::admitted);
    admission::ticket moved(std::move(t));
    EXPECT_FALSE(t.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    EXPECT_TRUE(moved.valid());
    moved.authenticated();
    admission::ticket again = std::move(moved);
    EXPECT_TRUE(again.is_authenticated());
    EXPECT_EQ(a.unauthenticated(), 0u);
    EXPECT_EQ(a.connections(), 1u);
  }
  EXPECT_EQ(a.connections(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
}

}  // namespace
}  // namespace hub::server
