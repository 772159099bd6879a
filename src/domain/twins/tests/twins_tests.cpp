// Unit tests for twins: the document rules (document.hpp) and the service over the real registry
// on memory_kv with a manual clock. A restart is a second service on the same kv.
#include "domain/twins/service.hpp"
#include "base/json.hpp"
#include "domain/registry/service.hpp"

#include <gtest/gtest.h>

namespace hub::twins {
namespace {

using namespace std::chrono_literals;

bj::value parse(std::string_view text) {
  auto v = json::parse(text);
  EXPECT_TRUE(v.has_value()) << text;
  return v ? *v : bj::value{};
}

const bj::object& at(const bj::object& o, std::string_view path) {
  const bj::object* cur = &o;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t dot = path.find('.', start);
    const std::string_view key = path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    const bj::value* v = cur->if_contains(key);
    EXPECT_TRUE(v && v->is_object()) << "no object at " << key << " of " << path;
    if (!v || !v->is_object()) {
      static const bj::object empty;
      return empty;
    }
    cur = &v->get_object();
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return *cur;
}

class twins_test : public ::testing::Test {
 protected:
  twins_test() {
    registry::device d;
    d.device_id = "d1";
    EXPECT_TRUE(registry_.create_device(d).has_value());
    registry::module m;
    m.device_id = "d1";
    m.module_id = "m1";
    EXPECT_TRUE(registry_.create_module(m).has_value());
    svc_.set_desired_listener([this](const identity& who, const bj::object& patch) {
      pushed_.push_back({who.device_id + "/" + who.module_id, json::serialize(patch)});
    });
  }

  std::unique_ptr<storage::kv> kv_ = storage::make_memory_kv();
  manual_clock clock_;
  registry::service registry_{*kv_, clock_};
  service svc_{*kv_, registry_, clock_};
  std::vector<std::pair<std::string, std::string>> pushed_;
};

TEST_F(twins_test, a_new_twin_has_iot_hubs_shape) {
  auto doc = svc_.get({"d1", ""});
  ASSERT_TRUE(doc.has_value()) << doc.error().message;
  EXPECT_EQ(doc->at("deviceId").as_string(), "d1");
  EXPECT_EQ(doc->at("etag").as_string(), "AAAAAAAAAAE=");
  EXPECT_EQ(doc->at("version").as_int64(), 1);
  EXPECT_EQ(doc->at("status").as_string(), "enabled");
  EXPECT_EQ(doc->at("connectionState").as_string(), "Disconnected");
  EXPECT_EQ(doc->at("authenticationType").as_string(), "sas");
  EXPECT_TRUE(doc->at("tags").as_object().empty());
  const bj::object& desired = at(*doc, "properties.desired");
  EXPECT_EQ(desired.at("$version").as_int64(), 1);
  EXPECT_EQ(at(desired, "$metadata").at("$lastUpdatedVersion").as_int64(), 1);
  EXPECT_TRUE(at(*doc, "properties.reported").contains("$metadata"));

  auto mod = svc_.get({"d1", "m1"});
  ASSERT_TRUE(mod.has_value());
  EXPECT_EQ(mod->at("moduleId").as_string(), "m1");
  EXPECT_EQ(svc_.get({"nobody", ""}).error().code, errc::device_not_found);
  EXPECT_EQ(svc_.get({"d1", "nomod"}).error().code, errc::module_not_found);
}

TEST_F(twins_test, desired_patch_merges_with_metadata_versions_and_a_notification) {
  auto first = svc_.update({"d1", ""}, parse(R"({"tags":{"site":"a"},"properties":{"desired":{"cfg":{"rate":5,"mode":"x"},"gone":1}}})"), "*");
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first->at("version").as_int64(), 2);
  EXPECT_EQ(first->at("etag").as_string(), etag_of(2));
  EXPECT_EQ(at(*first, "tags").at("site").as_string(), "a");
  EXPECT_EQ(at(*first, "properties.desired").at("$version").as_int64(), 2);
  ASSERT_EQ(pushed_.size(), 1u);
  EXPECT_EQ(pushed_[0].first, "d1/");
  EXPECT_EQ(parse(pushed_[0].second), parse(R"({"cfg":{"rate":5,"mode":"x"},"gone":1,"$version":2})"));

  clock_.advance(10s);
  auto second = svc_.update({"d1", ""}, parse(R"({"properties":{"desired":{"cfg":{"rate":7},"gone":null}}})"), std::nullopt);
  ASSERT_TRUE(second.has_value());
  const bj::object& desired = at(*second, "properties.desired");
  EXPECT_EQ(desired.at("$version").as_int64(), 3);
  EXPECT_EQ(at(desired, "cfg").at("rate").as_int64(), 7);
  EXPECT_EQ(at(desired, "cfg").at("mode").as_string(), "x") << "merge keeps untouched members";
  EXPECT_FALSE(desired.contains("gone")) << "null deletes";
  const bj::object& meta = at(desired, "$metadata");
  EXPECT_FALSE(meta.contains("gone"));
  EXPECT_EQ(meta.at("$lastUpdated").as_string(), to_iso8601(clock_.now()));
  EXPECT_EQ(at(meta, "cfg").at("$lastUpdatedVersion").as_int64(), 3);
  EXPECT_EQ(at(meta, "cfg.rate").at("$lastUpdatedVersion").as_int64(), 3);
  EXPECT_EQ(at(meta, "cfg.mode").at("$lastUpdatedVersion").as_int64(), 2) << "untouched leaves keep their stamp";
  EXPECT_EQ(at(meta, "cfg.mode").at("$lastUpdated").as_string(), to_iso8601(clock_.now() - 10s));
  EXPECT_EQ(at(*second, "tags").at("site").as_string(), "a");
}

TEST_F(twins_test, etag_mismatch_is_a_precondition_failure) {
  auto stale = svc_.update({"d1", ""}, parse(R"({"tags":{"a":1}})"), etag_of(7));
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, errc::precondition_failed);
  auto ok = svc_.update({"d1", ""}, parse(R"({"tags":{"a":1}})"), etag_of(1));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(svc_.update({"d1", ""}, parse(R"({"tags":{"a":2}})"), etag_of(1)).error().code, errc::precondition_failed);
  EXPECT_TRUE(pushed_.empty()) << "tags alone notify nobody";
}

TEST_F(twins_test, replace_swaps_tags_and_desired_and_pushes_the_whole_section) {
  ASSERT_TRUE(svc_.update({"d1", ""}, parse(R"({"tags":{"old":1},"properties":{"desired":{"old":1}}})"), "*"));
  auto r = svc_.replace({"d1", ""}, parse(R"({"tags":{"new":1},"properties":{"desired":{"new":{"x":true}}}})"), "*");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(at(*r, "tags"), parse(R"({"new":1})").as_object());
  const bj::object& desired = at(*r, "properties.desired");
  EXPECT_FALSE(desired.contains("old"));
  EXPECT_EQ(desired.at("$version").as_int64(), 3);
  EXPECT_EQ(at(desired, "$metadata.new.x").at("$lastUpdatedVersion").as_int64(), 3);
  ASSERT_EQ(pushed_.size(), 2u);
  EXPECT_EQ(parse(pushed_[1].second), parse(R"({"new":{"x":true},"$version":3})"));
}

TEST_F(twins_test, reported_patch_from_the_device) {
  auto v = svc_.patch_reported({"d1", ""}, parse(R"({"fw":"1.0","battery":{"level":80}})"));
  ASSERT_TRUE(v.has_value()) << v.error().message;
  EXPECT_EQ(*v, 2);
  v = svc_.patch_reported({"d1", ""}, parse(R"({"battery":{"level":75},"fw":null})"));
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, 3);
  auto view = svc_.device_view({"d1", ""});
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(*view, parse(R"({"desired":{"$version":1},"reported":{"battery":{"level":75},"$version":3}})").as_object());
  auto doc = svc_.get({"d1", ""});
  const bj::object& meta = at(*doc, "properties.reported.$metadata");
  EXPECT_TRUE(at(meta, "battery.level").contains("$lastUpdated"));
  EXPECT_FALSE(at(meta, "battery.level").contains("$lastUpdatedVersion")) << "reported metadata has no version";
  EXPECT_EQ(doc->at("version").as_int64(), 3);
  EXPECT_TRUE(pushed_.empty());
  // The service may not write reported properties.
  EXPECT_EQ(svc_.update({"d1", ""}, parse(R"({"properties":{"reported":{"x":1}}})"), "*").error().code,
            errc::argument_invalid);
  // A module twin is its own document.
  ASSERT_TRUE(svc_.patch_reported({"d1", "m1"}, parse(R"({"mod":1})")).has_value());
  EXPECT_EQ(at(*svc_.get({"d1", "m1"}), "properties.reported").at("mod").as_int64(), 1);
  EXPECT_FALSE(at(*svc_.get({"d1", ""}), "properties.reported").contains("mod"));
}

TEST_F(twins_test, limits_are_iot_hubs) {
  const identity d1{"d1", ""};
  for (const char* bad : {R"({"a.b":1})", R"({"$x":1})", R"({"a b":1})", R"({"a#":1})", R"({"":1})",
                          R"({"a":[1,null]})", R"({"n":4503599627370496})", R"({"n":-4503599627370497})"}) {
    SCOPED_TRACE(bad);
    auto r = svc_.patch_reported(d1, parse(bad));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, errc::argument_invalid);
  }
  EXPECT_TRUE(svc_.patch_reported(d1, parse(R"({"n":4503599627370495,"arr":[1,"two",{"x":1}]})")).has_value());
  EXPECT_EQ(svc_.patch_reported(d1, parse("[1]")).error().code, errc::argument_invalid);
  EXPECT_EQ(svc_.patch_reported(d1, bj::value(std::string(4097, 'x'))).error().code, errc::argument_invalid);
  EXPECT_EQ(svc_.patch_reported(d1, bj::object{{"s", std::string(4097, 'x')}}).error().code, errc::argument_invalid);
  EXPECT_TRUE(svc_.patch_reported(d1, bj::object{{"s", std::string(4096, 'x')}}).has_value());
  EXPECT_EQ(svc_.patch_reported(d1, bj::object{{std::string(1025, 'k'), 1}}).error().code, errc::argument_invalid);

  // Depth: ten nested objects below the root pass, eleven do not.
  std::string deep = "1";
  for (int i = 0; i < 11; ++i) deep = R"({"k":)" + deep + "}";  // the root and ten levels below it
  EXPECT_TRUE(svc_.patch_reported(d1, parse(deep)).has_value());
  EXPECT_EQ(svc_.patch_reported(d1, parse(R"({"k":)" + deep + "}")).error().code, errc::argument_invalid);

  // Size: 32 KB of reported properties, counted over the result of the merge.
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(svc_.patch_reported(d1, bj::object{{"p" + std::to_string(i), std::string(4000, 'x')}}).has_value());
  }
  auto over = svc_.patch_reported(d1, bj::object{{"p7", std::string(4000, 'x')}, {"p8", std::string(4000, 'x')}});
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, errc::argument_invalid);
  EXPECT_NE(over.error().message.find("'Properties.Reported' size should be less than 32768 bytes"), std::string::npos)
      << over.error().message;
  EXPECT_FALSE(at(*svc_.get(d1), "properties.reported").contains("p7")) << "a refused patch changes nothing";
  // Tags: 8 KB.
  auto tags = svc_.update(d1, bj::object{{"tags", bj::object{{"t", std::string(4000, 'x')}, {"u", std::string(4500, 'x')}}}}, "*");
  ASSERT_FALSE(tags.has_value());
  EXPECT_EQ(tags.error().code, errc::argument_invalid);
}

TEST_F(twins_test, twins_survive_a_restart_and_go_with_their_identity) {
  ASSERT_TRUE(svc_.update({"d1", ""}, parse(R"({"properties":{"desired":{"x":1}}})"), "*"));
  ASSERT_TRUE(svc_.patch_reported({"d1", "m1"}, parse(R"({"y":2})")));
  service again(*kv_, registry_, clock_);
  auto doc = again.get({"d1", ""});
  ASSERT_TRUE(doc.has_value());
  EXPECT_EQ(at(*doc, "properties.desired").at("x").as_int64(), 1);
  EXPECT_EQ(doc->at("version").as_int64(), 2);

  ASSERT_TRUE(registry_.delete_device("d1", std::nullopt).has_value());
  // Routing reads the deleted identity's twin before it goes.
  EXPECT_FALSE(again.get({"d1", ""}).has_value());
  auto last = again.stored_twin({"d1", ""});
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->at("deviceId").as_string(), "d1");
  EXPECT_EQ(last->at("version").as_int64(), 2);
  EXPECT_EQ(last->at("etag").as_string(), etag_of(2));
  EXPECT_EQ(at(*last, "properties.desired").at("x").as_int64(), 1);
  EXPECT_FALSE(last->contains("status"));
  // A create is not a delete: the twin stays.
  again.on_registry_change({registry::change::kind::device_created, "d1", ""});
  again.on_registry_change({registry::change::kind::module_created, "d1", "m1"});
  EXPECT_EQ(again.stored_twin({"d1", ""})->at("version").as_int64(), 2);
  again.on_registry_change({registry::change::kind::device_deleted, "d1", ""});
  registry::device d;
  d.device_id = "d1";
  ASSERT_TRUE(registry_.create_device(d).has_value());
  registry::module m;
  m.device_id = "d1";
  m.module_id = "m1";
  ASSERT_TRUE(registry_.create_module(m).has_value());
  auto fresh = again.get({"d1", ""});
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->at("version").as_int64(), 1);
  EXPECT_FALSE(at(*fresh, "properties.desired").contains("x"));
  EXPECT_FALSE(at(*again.get({"d1", "m1"}), "properties.reported").contains("y"));
}

TEST_F(twins_test, change_events_for_routing) {
  ASSERT_TRUE(svc_.update({"d1", ""}, parse(R"({"properties":{"desired":{"x":1}}})"), "*"));
  ASSERT_TRUE(svc_.patch_reported({"d1", ""}, parse(R"({"y":2})")));
  auto events = svc_.recent_changes();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].operation, "updateTwin");
  EXPECT_EQ(events[0].body, parse(R"({"version":2,"properties":{"desired":{"x":1,"$version":2}}})").as_object());
  EXPECT_EQ(events[1].body, parse(R"({"version":3,"properties":{"reported":{"y":2,"$version":2}}})").as_object());
}

TEST(twins_etag, is_the_version_in_base64) {
  EXPECT_EQ(etag_of(1), "AAAAAAAAAAE=");
  EXPECT_EQ(etag_of(256), "AAAAAAAAAQA=");
}

}  // namespace
}  // namespace hub::twins
