// Unit tests for the connection table and the connection state it records in the registry: a fake
// device_link, the real registry on memory_kv, a manual clock.
#include "domain/connections/connection_table.hpp"
#include "domain/registry/service.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace hub::connections {
namespace {

using namespace std::chrono_literals;

class fake_link final : public messaging::device_link {
 public:
  void close(std::string reason) override { closed_with.push_back(std::move(reason)); }
  std::vector<std::string> closed_with;
};

class connection_table_test : public ::testing::Test {
 protected:
  connection_table_test() {
    EXPECT_TRUE(registry_.create_device(device("d1")).has_value());
    EXPECT_TRUE(registry_.create_device(device("d2")).has_value());
    registry::module m;
    m.device_id = "d1";
    m.module_id = "m1";
    EXPECT_TRUE(registry_.create_module(m).has_value());
  }

  static registry::device device(std::string id) {
    registry::device d;
    d.device_id = std::move(id);
    return d;
  }

  registry::device get(std::string_view id) {
    auto d = registry_.get_device(id);
    EXPECT_TRUE(d.has_value());
    return d ? *d : registry::device{};
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  connection_table table_{registry_, clock_, options{4}};
};

TEST_F(connection_table_test, attach_registers_and_counts) {
  auto link = std::make_shared<fake_link>();
  auto a = table_.attach({"d1", ""}, link);
  ASSERT_TRUE(a.has_value()) << a.error().message;
  EXPECT_EQ(a->previous, nullptr);
  EXPECT_NE(a->presence, nullptr);
  EXPECT_EQ(table_.find({"d1", ""}), link);
  EXPECT_EQ(table_.find({"d2", ""}), nullptr);
  EXPECT_EQ(table_.connected(), 1u);
  EXPECT_EQ(table_.connected_devices(), 1u);
}

TEST_F(connection_table_test, a_second_connection_replaces_the_first) {
  auto first = std::make_shared<fake_link>();
  auto second = std::make_shared<fake_link>();
  ASSERT_TRUE(table_.attach({"d1", ""}, first).has_value());
  auto a = table_.attach({"d1", ""}, second);
  ASSERT_TRUE(a.has_value());
  // The table hands the old link back; closing it is the caller's job.
  EXPECT_EQ(a->previous, first);
  EXPECT_TRUE(first->closed_with.empty());
  EXPECT_EQ(table_.find({"d1", ""}), second);
  EXPECT_EQ(table_.connected(), 1u);

  // The replaced connection ends later: its detach must not disconnect the new one.
  table_.detach({"d1", ""}, first.get(), "replaced");
  EXPECT_EQ(table_.find({"d1", ""}), second);
  EXPECT_EQ(table_.connected(), 1u);
  EXPECT_EQ(get("d1").conn_state, registry::connection_state::connected);

  table_.detach({"d1", ""}, second.get(), "client disconnected");
  EXPECT_EQ(table_.find({"d1", ""}), nullptr);
  EXPECT_EQ(table_.connected(), 0u);
  EXPECT_EQ(get("d1").conn_state, registry::connection_state::disconnected);
}

TEST_F(connection_table_test, detach_of_an_unknown_link_changes_nothing) {
  auto link = std::make_shared<fake_link>();
  auto other = std::make_shared<fake_link>();
  table_.detach({"d1", ""}, link.get(), "never attached");
  ASSERT_TRUE(table_.attach({"d1", ""}, link).has_value());
  table_.detach({"d1", ""}, other.get(), "not this one");
  table_.detach({"d2", ""}, link.get(), "other identity");
  EXPECT_EQ(table_.connected(), 1u);
}

TEST_F(connection_table_test, modules_are_identities_of_their_own) {
  auto device_link = std::make_shared<fake_link>();
  auto module_link = std::make_shared<fake_link>();
  ASSERT_TRUE(table_.attach({"d1", ""}, device_link).has_value());
  auto a = table_.attach({"d1", "m1"}, module_link);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->previous, nullptr);  // the device's connection is not the module's
  EXPECT_EQ(table_.connected(), 2u);
  EXPECT_EQ(table_.connected_devices(), 1u);  // IoT Hub's connectedDeviceCount counts devices

  auto m = registry_.get_module("d1", "m1");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->conn_state, registry::connection_state::connected);

  table_.detach({"d1", "m1"}, module_link.get(), "gone");
  EXPECT_EQ(table_.connected(), 1u);
  EXPECT_EQ(table_.connected_devices(), 1u);
  EXPECT_EQ(table_.find({"d1", ""}), device_link);
}

TEST_F(connection_table_test, attach_of_an_unknown_identity_fails_and_changes_nothing) {
  auto link = std::make_shared<fake_link>();
  auto a = table_.attach({"nope", ""}, link);
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, errc::device_not_found);
  auto m = table_.attach({"d1", "nope"}, link);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, errc::module_not_found);
  EXPECT_EQ(table_.connected(), 0u);
  EXPECT_TRUE(table_.recent_events().empty());
}

TEST_F(connection_table_test, registry_shows_state_times_and_last_activity) {
  const sys_time t0 = clock_.now();
  EXPECT_EQ(get("d1").conn_state, registry::connection_state::disconnected);

  auto link = std::make_shared<fake_link>();
  auto a = table_.attach({"d1", ""}, link);
  ASSERT_TRUE(a.has_value());
  auto d = get("d1");
  EXPECT_EQ(d.conn_state, registry::connection_state::connected);
  EXPECT_EQ(d.conn_state_updated, t0);
  const std::string etag = d.etag;

  clock_.advance(5s);
  a->presence->touch(clock_.now());  // a message: in memory only
  d = get("d1");
  EXPECT_EQ(d.last_activity, t0 + 5s);
  EXPECT_EQ(d.etag, etag);  // connection state is not a client write
  auto listed = registry_.list_devices();
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ((*listed)[0].conn_state, registry::connection_state::connected);
  EXPECT_EQ((*listed)[0].last_activity, t0 + 5s);
  EXPECT_EQ((*listed)[1].conn_state, registry::connection_state::disconnected);

  clock_.advance(10s);
  table_.detach({"d1", ""}, link.get(), "client disconnected");
  d = get("d1");
  EXPECT_EQ(d.conn_state, registry::connection_state::disconnected);
  EXPECT_EQ(d.conn_state_updated, t0 + 15s);
  EXPECT_EQ(d.last_activity, t0 + 5s);  // persisted at disconnect

  // A fresh registry over the same storage (a restart) still knows the times.
  registry::service reopened(*kv_, clock_);
  auto r = reopened.get_device("d1");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->conn_state, registry::connection_state::disconnected);
  EXPECT_EQ(r->last_activity, t0 + 5s);
}

TEST_F(connection_table_test, a_stored_connected_state_without_a_live_connection_reads_disconnected) {
  auto link = std::make_shared<fake_link>();
  ASSERT_TRUE(table_.attach({"d1", ""}, link).has_value());
  // The process dies here: the record says Connected, but a new process has no connection.
  registry::service after_crash(*kv_, clock_);
  auto d = after_crash.get_device("d1");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->conn_state, registry::connection_state::disconnected);
}

TEST_F(connection_table_test, last_activity_carries_over_to_the_replacing_connection) {
  auto first = std::make_shared<fake_link>();
  auto a = table_.attach({"d1", ""}, first);
  ASSERT_TRUE(a.has_value());
  clock_.advance(3s);
  a->presence->touch(clock_.now());
  const sys_time touched = clock_.now();
  clock_.advance(3s);
  auto second = std::make_shared<fake_link>();
  auto b = table_.attach({"d1", ""}, second);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(get("d1").last_activity, touched);
  EXPECT_EQ(get("d1").conn_state_updated, clock_.now());
}

TEST_F(connection_table_test, a_recreated_device_does_not_show_the_old_connection) {
  auto link = std::make_shared<fake_link>();
  ASSERT_TRUE(table_.attach({"d2", ""}, link).has_value());
  ASSERT_TRUE(registry_.delete_device("d2", std::nullopt).has_value());
  ASSERT_TRUE(registry_.create_device(device("d2")).has_value());
  EXPECT_EQ(get("d2").conn_state, registry::connection_state::disconnected);
  // The old connection's detach must not write into the new device's record.
  clock_.advance(1s);
  table_.detach({"d2", ""}, link.get(), "gone");
  EXPECT_EQ(get("d2").conn_state_updated, sys_time{});
}

TEST_F(connection_table_test, events_are_kept_bounded_and_passed_to_the_listener) {
  std::vector<connection_event> heard;
  table_.set_listener([&](const connection_event& e) { heard.push_back(e); });
  auto link = std::make_shared<fake_link>();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(table_.attach({"d1", ""}, link).has_value());
    table_.detach({"d1", ""}, link.get(), "bye");
  }
  EXPECT_EQ(heard.size(), 6u);
  const auto recent = table_.recent_events();
  ASSERT_EQ(recent.size(), 4u);  // options{4}
  EXPECT_EQ(recent.front().what, connection_event::kind::connected);
  EXPECT_EQ(recent.back().what, connection_event::kind::disconnected);
  EXPECT_EQ(recent.back().reason, "bye");
  EXPECT_EQ(recent.back().who.device_id, "d1");
}

TEST_F(connection_table_test, concurrent_attach_and_detach_keep_the_counts_right) {
  constexpr int threads = 4;
  constexpr int rounds = 200;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const identity who{t % 2 == 0 ? "d1" : "d2", ""};
      for (int i = 0; i < rounds; ++i) {
        auto link = std::make_shared<fake_link>();
        auto a = table_.attach(who, link);
        ASSERT_TRUE(a.has_value());
        table_.detach(who, link.get(), "done");
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(table_.connected(), 0u);
  EXPECT_EQ(table_.connected_devices(), 0u);
  EXPECT_EQ(get("d1").conn_state, registry::connection_state::disconnected);
  EXPECT_EQ(get("d2").conn_state, registry::connection_state::disconnected);
}

// Deleting or disabling an identity closes its connections, whatever path the registry write
// took (REST, bulk import), through the registry's change listener.
class registry_change_test : public connection_table_test {
 protected:
  registry_change_test() {
    registry_.set_change_listener([this](const registry::change& c) { table_.on_registry_change(c); });
  }
  std::shared_ptr<fake_link> attached(std::string device_id, std::string module_id = {}) {
    auto link = std::make_shared<fake_link>();
    EXPECT_TRUE(table_.attach({std::move(device_id), std::move(module_id)}, link).has_value());
    return link;
  }
};

TEST_F(registry_change_test, deleting_a_device_closes_it_and_its_modules) {
  auto d1 = attached("d1");
  auto m1 = attached("d1", "m1");
  auto d2 = attached("d2");
  ASSERT_TRUE(registry_.delete_device("d1", std::nullopt).has_value());
  EXPECT_EQ(d1->closed_with, std::vector<std::string>{"device deleted"});
  EXPECT_EQ(m1->closed_with, std::vector<std::string>{"device deleted"});
  EXPECT_TRUE(d2->closed_with.empty());
}

TEST_F(registry_change_test, deleting_a_module_closes_only_the_module) {
  auto d1 = attached("d1");
  auto m1 = attached("d1", "m1");
  ASSERT_TRUE(registry_.delete_module("d1", "m1", std::nullopt).has_value());
  EXPECT_EQ(m1->closed_with, std::vector<std::string>{"module deleted"});
  EXPECT_TRUE(d1->closed_with.empty());
}

TEST_F(registry_change_test, disabling_a_device_closes_it_and_its_modules_and_keeps_them_out) {
  auto d1 = attached("d1");
  auto m1 = attached("d1", "m1");
  registry::device d = get("d1");
  d.status = registry::device_status::disabled;
  ASSERT_TRUE(registry_.update_device(d, std::nullopt).has_value());
  EXPECT_EQ(d1->closed_with, std::vector<std::string>{"device disabled"});
  EXPECT_EQ(m1->closed_with, std::vector<std::string>{"device disabled"});
  // Updating a disabled device again closes nothing more.
  ASSERT_TRUE(registry_.update_device(get("d1"), std::nullopt).has_value());
  EXPECT_EQ(d1->closed_with.size(), 1u);

  // Authenticated just before the disable, attached just after: refused all the same.
  table_.detach({"d1", ""}, d1.get(), "device disabled");
  auto late = table_.attach({"d1", ""}, std::make_shared<fake_link>());
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(late.error().code, errc::unauthorized);
  EXPECT_FALSE(table_.attach({"d1", "m1"}, std::make_shared<fake_link>()).has_value());
}

TEST_F(registry_change_test, bulk_delete_and_disable_close_connections) {
  auto d1 = attached("d1");
  auto d2 = attached("d2");
  std::vector<registry::bulk_item> items(2);
  items[0].mode = registry::import_mode::remove;
  items[0].dev.device_id = "d1";
  items[1].mode = registry::import_mode::update;
  items[1].dev = get("d2");
  items[1].dev.status = registry::device_status::disabled;
  const auto r = registry_.bulk(std::move(items));
  EXPECT_TRUE(r.is_successful);
  EXPECT_EQ(d1->closed_with, std::vector<std::string>{"device deleted"});
  EXPECT_EQ(d2->closed_with, std::vector<std::string>{"device disabled"});
}

}  // namespace
}  // namespace hub::connections
