// Unit tests for direct methods: a fake connection per identity, the real registry on memory_kv,
// a manual clock.
#include "domain/methods/service.hpp"
#include "domain/registry/service.hpp"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <thread>

namespace hub::methods {
namespace {

using namespace std::chrono_literals;

class fake_link final : public messaging::device_link {
 public:
  void close(std::string) override {}
  bool invoke_method(const messaging::method_call& c) override {
    if (!takes_calls) return false;
    calls.push_back(c);
    return true;
  }
  bool takes_calls = true;
  std::vector<messaging::method_call> calls;
};

class methods_test : public ::testing::Test {
 protected:
  methods_test() {
    registry::device d;
    d.device_id = "d1";
    EXPECT_TRUE(registry_.create_device(d).has_value());
    registry::module m;
    m.device_id = "d1";
    m.module_id = "m1";
    EXPECT_TRUE(registry_.create_module(m).has_value());
  }

  std::shared_ptr<messaging::device_link> find(const identity& who) {
    auto it = links_.find(who.device_id + "/" + who.module_id);
    return it == links_.end() ? nullptr : it->second;
  }

  std::shared_ptr<fake_link> connect(const std::string& key) {
    auto link = std::make_shared<fake_link>();
    links_[key] = link;
    return link;
  }

  // Invokes and keeps the outcome.
  std::shared_ptr<std::optional<result<answer>>> call(const identity& who, invocation inv) {
    auto out = std::make_shared<std::optional<result<answer>>>();
    svc_.invoke(who, std::move(inv), [out](result<answer> r) {
      EXPECT_FALSE(out->has_value()) << "completed twice";
      *out = std::move(r);
    });
    return out;
  }

  static invocation inv(std::string name, std::string payload = R"({"x":1})") {
    invocation i;
    i.name = std::move(name);
    i.payload = std::move(payload);
    return i;
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  std::map<std::string, std::shared_ptr<fake_link>> links_;
  service svc_{registry_, [this](const identity& who) { return find(who); }, clock_};
};

TEST_F(methods_test, round_trip) {
  auto link = connect("d1/");
  auto out = call({"d1", ""}, inv("reboot"));
  ASSERT_EQ(link->calls.size(), 1u);
  EXPECT_EQ(link->calls[0].name, "reboot");
  EXPECT_EQ(link->calls[0].payload, R"({"x":1})");
  EXPECT_FALSE(out->has_value());
  EXPECT_EQ(svc_.pending(), 1u);
  ASSERT_TRUE(svc_.respond({"d1", ""}, link->calls[0].request_id, 201, R"({"done":true})").has_value());
  ASSERT_TRUE(out->has_value());
  ASSERT_TRUE((*out)->has_value());
  EXPECT_EQ((**out)->status, 201);
  EXPECT_EQ((**out)->payload, R"({"done":true})");
  EXPECT_EQ(svc_.pending(), 0u);
  // A second answer to the same call finds nothing.
  EXPECT_EQ(svc_.respond({"d1", ""}, link->calls[0].request_id, 200, "").error().code, errc::not_found);
}

TEST_F(methods_test, shutdown_settles_every_call) {
  auto link = connect("d1/");
  auto delivered = call({"d1", ""}, inv("reboot"));
  auto waiting = call({"d1", "m1"}, [] {
    auto i = inv("later");
    i.connect_timeout = 60s;
    return i;
  }());
  EXPECT_EQ(svc_.pending(), 2u);
  svc_.shutdown();
  EXPECT_EQ(svc_.pending(), 0u);
  for (const auto& out : {delivered, waiting}) {
    ASSERT_TRUE(out->has_value());
    ASSERT_FALSE((*out)->has_value());
    EXPECT_EQ((*out)->error().code, errc::service_unavailable);
  }
  // The device's late answer finds nothing.
  EXPECT_EQ(svc_.respond({"d1", ""}, link->calls[0].request_id, 200, "").error().code, errc::not_found);
  // Later calls are refused at once and never reach the device.
  auto late = call({"d1", ""}, inv("again"));
  ASSERT_TRUE(late->has_value());
  EXPECT_EQ((*late)->error().code, errc::service_unavailable);
  EXPECT_EQ(link->calls.size(), 1u);
  EXPECT_EQ(svc_.pending(), 0u);
}

TEST_F(methods_test, many_calls_in_flight_get_their_own_answers) {
  auto link = connect("d1/");
  std::vector<std::shared_ptr<std::optional<result<answer>>>> outs;
  for (int i = 0; i < 100; ++i) outs.push_back(call({"d1", ""}, inv("m", std::to_string(i))));
  ASSERT_EQ(link->calls.size(), 100u);
  // Answered in reverse order, each echoing its payload.
  for (int i = 99; i >= 0; --i) {
    const auto& c = link->calls[static_cast<std::size_t>(i)];
    ASSERT_TRUE(svc_.respond({"d1", ""}, c.request_id, 200, c.payload).has_value());
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(outs[static_cast<std::size_t>(i)]->has_value());
    EXPECT_EQ((**outs[static_cast<std::size_t>(i)])->payload, std::to_string(i));
  }
}

TEST_F(methods_test, module_calls_and_wrong_identity_answers) {
  auto dev = connect("d1/");
  auto mod = connect("d1/m1");
  auto out = call({"d1", "m1"}, inv("ping"));
  ASSERT_TRUE(dev->calls.empty());
  ASSERT_EQ(mod->calls.size(), 1u);
  // The device may not answer its module's call.
  EXPECT_EQ(svc_.respond({"d1", ""}, mod->calls[0].request_id, 200, "1").error().code, errc::not_found);
  EXPECT_TRUE(svc_.respond({"d1", "m1"}, mod->calls[0].request_id, 200, "1").has_value());
  EXPECT_EQ((**out)->payload, "1");
}

TEST_F(methods_test, offline_unknown_and_not_subscribed) {
  auto offline = call({"d1", ""}, inv("m"));
  ASSERT_TRUE(offline->has_value());
  EXPECT_EQ((*offline)->error().code, errc::device_not_online);
  EXPECT_EQ((*call({"nobody", ""}, inv("m")))->error().code, errc::device_not_found);
  EXPECT_EQ((*call({"d1", "nomod"}, inv("m")))->error().code, errc::module_not_found);
  auto link = connect("d1/");
  link->takes_calls = false;
  EXPECT_EQ((*call({"d1", ""}, inv("m")))->error().code, errc::device_not_online);
  EXPECT_EQ(svc_.pending(), 0u);
}

TEST_F(methods_test, arguments) {
  connect("d1/");
  for (const char* bad : {"", "a b", "a/b", "a$", "x{"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ((*call({"d1", ""}, inv(bad)))->error().code, errc::argument_invalid);
  }
  invocation i = inv("m");
  i.response_timeout = 4s;
  EXPECT_EQ((*call({"d1", ""}, i))->error().code, errc::argument_invalid);
  i.response_timeout = 301s;
  EXPECT_EQ((*call({"d1", ""}, i))->error().code, errc::argument_invalid);
  i.response_timeout = 30s;
  i.connect_timeout = 301s;
  EXPECT_EQ((*call({"d1", ""}, i))->error().code, errc::argument_invalid);
  EXPECT_EQ((*call({"d1", ""}, inv("m", std::string(128 * 1024 + 1, '1'))))->error().code, errc::message_too_large);
  auto empty = connect("d1/");
  (void)call({"d1", ""}, inv("m", ""));
  ASSERT_EQ(empty->calls.size(), 1u);
  EXPECT_EQ(empty->calls[0].payload, "null") << "devices get a JSON body always";
}

TEST_F(methods_test, no_answer_in_time_is_a_gateway_timeout) {
  auto link = connect("d1/");
  invocation i = inv("slow");
  i.response_timeout = 5s;
  auto out = call({"d1", ""}, i);
  clock_.advance(4s);
  svc_.sweep();
  EXPECT_FALSE(out->has_value());
  clock_.advance(1s);
  svc_.sweep();
  ASSERT_TRUE(out->has_value());
  EXPECT_EQ((*out)->error().code, errc::gateway_timeout);
  // The late answer is refused, not delivered twice.
  EXPECT_EQ(svc_.respond({"d1", ""}, link->calls[0].request_id, 200, "1").error().code, errc::not_found);
}

TEST_F(methods_test, connect_timeout_waits_for_the_device) {
  invocation i = inv("later");
  i.connect_timeout = 10s;
  auto out = call({"d1", ""}, i);
  EXPECT_FALSE(out->has_value());
  clock_.advance(3s);
  auto link = connect("d1/");
  svc_.ready({"d1", ""});
  ASSERT_EQ(link->calls.size(), 1u);
  ASSERT_TRUE(svc_.respond({"d1", ""}, link->calls[0].request_id, 200, "2").has_value());
  EXPECT_EQ((**out)->payload, "2");

  auto never = call({"d1", "m1"}, i);
  clock_.advance(10s);
  svc_.sweep();
  ASSERT_TRUE(never->has_value());
  EXPECT_EQ((*never)->error().code, errc::device_not_online);
}

TEST(method_names, iot_hub_rule) {
  EXPECT_TRUE(valid_method_name("reboot"));
  EXPECT_TRUE(valid_method_name("get-Status_2.x"));
  EXPECT_FALSE(valid_method_name(std::string(129, 'a')));
  EXPECT_FALSE(valid_method_name("tab\there"));
  EXPECT_FALSE(valid_method_name("caf\xc3\xa9"));
}

}  // namespace
}  // namespace hub::methods
