// Unit tests for twins: the document rules (document.hpp) and the service over the real registry
// on memory_kv with a manual clock. A restart is a second service on the same kv.
#include "domain/twins/service.hpp"
#include "base/json.hpp"
#include "domain/registry/service.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

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

// ---- scans and queries ------------------------------------------------------------------------

// A registry of many devices (more than one scan chunk), some with tags and reported properties.
class twin_query_test : public twins_test {
 protected:
  void add_device(const std::string& id) {
    registry::device d;
    d.device_id = id;
    ASSERT_TRUE(registry_.create_device(d).has_value()) << id;
  }
  void add_module(const std::string& device_id, const std::string& module_id) {
    registry::module m;
    m.device_id = device_id;
    m.module_id = module_id;
    ASSERT_TRUE(registry_.create_module(m).has_value());
  }
  void tag(const std::string& id, std::string_view tags_json) {
    ASSERT_TRUE(svc_.update({id, ""}, parse(fmt::format(R"({{"tags":{}}})", tags_json)), "*").has_value()) << id;
  }

  // Every page of a query, through the continuation tokens; fails on an error.
  std::vector<query_page> pages(std::string_view text, std::size_t page_size) {
    std::vector<query_page> out;
    std::string token;
    for (int i = 0; i < 1000; ++i) {
      auto page = svc_.query({.text = text, .page_size = page_size, .continuation = token});
      EXPECT_TRUE(page.has_value()) << text << ": " << page.error().message;
      if (!page) break;
      out.push_back(*page);
      if (!page->continuation) break;
      EXPECT_FALSE(page->continuation->empty());
      token = *page->continuation;
    }
    return out;
  }

  static std::vector<std::string> ids_of(const std::vector<query_page>& ps, std::string_view key = "deviceId") {
    std::vector<std::string> ids;
    for (const auto& p : ps)
      for (const auto& item : p.items) ids.emplace_back(item.as_object().at(key).as_string());
    return ids;
  }
};

TEST_F(twin_query_test, a_scan_visits_every_twin_in_id_order_as_get_shows_it) {
  // Ids whose characters sort before '/' interleave device and module twin records in storage.
  std::vector<std::string> ids{"d1"};
  for (int i = 0; i < 600; ++i) ids.push_back(fmt::format("dev-{:04}", i));
  for (std::string id : {"d1-x", "d1.y", "d10", "d1!"}) ids.push_back(id);
  for (std::size_t i = 1; i < ids.size(); ++i) add_device(ids[i]);
  std::sort(ids.begin(), ids.end());
  ASSERT_TRUE(svc_.patch_reported({"d1", "m1"}, parse(R"({"mod":1})")).has_value());
  tag("d1", R"({"a":1})");
  tag("d1-x", R"({"b":2})");
  tag("dev-0300", R"({"c":3})");
  ASSERT_TRUE(svc_.patch_reported({"d10", ""}, parse(R"({"r":4})")).has_value());

  std::vector<std::string> seen;
  auto scanned = svc_.scan(scope::devices, {}, [&](std::string_view position, bj::object& doc) {
    seen.emplace_back(position);
    auto expected = svc_.get({std::string(position), ""});
    EXPECT_TRUE(expected.has_value());
    if (expected) {
      EXPECT_EQ(doc, *expected) << position;
    }
    return true;
  });
  ASSERT_TRUE(scanned.has_value()) << scanned.error().message;
  EXPECT_EQ(seen, ids);

  // From a position on, and stopping early.
  seen.clear();
  ASSERT_TRUE(svc_.scan(scope::devices, "dev-0299", [&](std::string_view position, bj::object&) {
    seen.emplace_back(position);
    return seen.size() < 3;
  }));
  EXPECT_EQ(seen, (std::vector<std::string>{"dev-0300", "dev-0301", "dev-0302"}));
}

TEST_F(twin_query_test, a_module_scan_goes_by_device_then_module) {
  add_device("d1-x");
  add_device("d2");
  add_module("d1-x", "ma");
  add_module("d2", "m1");
  add_module("d1", "m0");
  ASSERT_TRUE(svc_.patch_reported({"d2", "m1"}, parse(R"({"v":2})")).has_value());
  std::vector<std::string> seen;
  ASSERT_TRUE(svc_.scan(scope::modules, {}, [&](std::string_view position, bj::object& doc) {
    seen.emplace_back(position);
    const auto slash = position.find('/');
    auto expected = svc_.get({std::string(position.substr(0, slash)), std::string(position.substr(slash + 1))});
    EXPECT_TRUE(expected.has_value());
    if (expected) {
      EXPECT_EQ(doc, *expected) << position;
    }
    return true;
  }));
  // Byte order of "<device>/<module>": '-' sorts before '/'.
  EXPECT_EQ(seen, (std::vector<std::string>{"d1-x/ma", "d1/m0", "d1/m1", "d2/m1"}));
}

TEST_F(twin_query_test, a_deleted_or_recreated_device_shows_no_old_twin) {
  add_device("d2");
  tag("d2", R"({"x":"y"})");
  tag("d1", R"({"x":"y"})");
  ASSERT_TRUE(registry_.delete_device("d2", std::nullopt).has_value());
  // The twin record stays behind (no change listener here): a scan must not show it.
  EXPECT_EQ(ids_of(pages("SELECT * FROM devices WHERE tags.x = 'y'", 100)), (std::vector<std::string>{"d1"}));
  add_device("d2");
  EXPECT_EQ(ids_of(pages("SELECT * FROM devices WHERE tags.x = 'y'", 100)), (std::vector<std::string>{"d1"}));
  EXPECT_EQ(ids_of(pages("SELECT * FROM devices", 100)), (std::vector<std::string>{"d1", "d2"}));
}

TEST_F(twin_query_test, select_star_pages_through_exactly_the_matching_twins) {
  std::set<std::string> expected;
  for (int i = 0; i < 300; ++i) {
    const std::string id = fmt::format("dev-{:03}", i);
    add_device(id);
    if (i % 10 == 3) {
      tag(id, R"({"x":"y"})");
      expected.insert(id);
    } else if (i % 10 == 4) {
      tag(id, R"({"x":"z"})");
    }
  }
  auto ps = pages("SELECT * FROM devices WHERE tags.x = 'y'", 7);
  ASSERT_EQ(ps.size(), 5u);  // 30 matches: 7 + 7 + 7 + 7 + 2
  for (const auto& p : ps) EXPECT_EQ(p.type, item_type::twin);
  EXPECT_EQ(ps.back().items.size(), 2u);
  const auto ids = ids_of(ps);
  EXPECT_EQ(ids.size(), 30u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), expected);
  // Rows are whole twins, as get() shows them.
  EXPECT_EQ(ps[0].items[0].as_object(), *svc_.get({ids[0], ""}));

  // A last page that is exactly full carries no token (one more match is looked for).
  auto exact = pages("SELECT * FROM devices WHERE tags.x = 'y'", 10);
  ASSERT_EQ(exact.size(), 3u);
  EXPECT_EQ(exact.back().items.size(), 10u);
  // No match: one empty page without a token.
  auto none = pages("SELECT * FROM devices WHERE tags.x = 'nothing'", 10);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_TRUE(none[0].items.empty());
}

TEST_F(twin_query_test, projections_top_and_reported_properties) {
  for (int i = 0; i < 20; ++i) {
    const std::string id = fmt::format("dev-{:02}", i);
    add_device(id);
    tag(id, fmt::format(R"({{"x":"{}"}})", i % 2 ? "odd" : "even"));
    ASSERT_TRUE(svc_.patch_reported({id, ""}, parse(fmt::format(R"({{"temp":{}}})", i))).has_value());
  }
  auto ps = pages("SELECT deviceId, tags.x FROM devices WHERE tags.x = 'odd' AND properties.reported.temp > 10", 3);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].type, item_type::raw);
  EXPECT_EQ(ps[0].items[0], parse(R"({"deviceId":"dev-11","x":"odd"})"));
  EXPECT_EQ(ids_of(ps), (std::vector<std::string>{"dev-11", "dev-13", "dev-15", "dev-17", "dev-19"}));

  // TOP counts across pages.
  auto top = pages("SELECT TOP 7 * FROM devices WHERE properties.reported.temp >= 5", 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[2].items.size(), 1u);
  EXPECT_FALSE(top[2].continuation);
  EXPECT_EQ(ids_of(top).front(), "dev-05");
  EXPECT_EQ(ids_of(top).back(), "dev-11");
  auto top_exact = pages("SELECT TOP 6 deviceId FROM devices", 3);
  ASSERT_EQ(top_exact.size(), 2u);
  EXPECT_FALSE(top_exact[1].continuation);
}

TEST_F(twin_query_test, aggregates_are_computed_whole_then_paged) {
  for (int i = 0; i < 30; ++i) {
    const std::string id = fmt::format("dev-{:02}", i);
    add_device(id);
    if (i % 10 != 9) tag(id, fmt::format(R"({{"site":"s{}","n":{}}})", i % 3, i));
  }
  auto ps = pages("SELECT tags.site AS site, COUNT() AS n, SUM(tags.n) AS total FROM devices GROUP BY tags.site", 2);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].type, item_type::raw);
  std::map<std::string, std::int64_t> counts;
  std::int64_t all = 0;
  for (const auto& p : ps) {
    for (const auto& row : p.items) {
      const auto& o = row.as_object();
      const auto n = o.at("n").as_int64();
      all += n;
      counts[o.contains("site") ? std::string(o.at("site").as_string()) : "(none)"] = n;
    }
  }
  EXPECT_EQ(all, 31);  // d1 and dev-09, -19, -29 have no site
  EXPECT_EQ(counts, (std::map<std::string, std::int64_t>{{"(none)", 4}, {"s0", 9}, {"s1", 9}, {"s2", 9}}));

  auto total = pages("SELECT COUNT() AS total FROM devices WHERE IS_DEFINED(tags.site)", 100);
  ASSERT_EQ(total.size(), 1u);
  EXPECT_EQ(total[0].items, std::vector<bj::value>{parse(R"({"total":27})")});
}

TEST_F(twin_query_test, module_twins_and_jobs) {
  add_device("d2");
  add_module("d2", "m1");
  add_module("d2", "m2");
  ASSERT_TRUE(svc_.update({"d2", "m2"}, parse(R"({"tags":{"role":"sensor"}})"), "*").has_value());
  auto mods = pages("SELECT * FROM devices.modules WHERE moduleId = 'm1'", 100);
  ASSERT_EQ(mods.size(), 1u);
  EXPECT_EQ(mods[0].type, item_type::twin);
  EXPECT_EQ(ids_of(mods), (std::vector<std::string>{"d1", "d2"}));
  EXPECT_EQ(ids_of(mods, "moduleId"), (std::vector<std::string>{"m1", "m1"}));
  EXPECT_EQ(mods[0].items[1].as_object(), *svc_.get({"d2", "m1"}));
  auto tagged = pages("SELECT deviceId, moduleId FROM devices.modules WHERE tags.role = 'sensor'", 100);
  EXPECT_EQ(tagged[0].items, std::vector<bj::value>{parse(R"({"deviceId":"d2","moduleId":"m2"})")});

  auto jobs = pages("SELECT * FROM devices.jobs", 100);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].type, item_type::device_job);
  EXPECT_TRUE(jobs[0].items.empty());
}

TEST_F(twin_query_test, errors_are_argument_invalid) {
  auto syntax = svc_.query({.text = "SELECT * FROM devices WHERE", .page_size = 10, .continuation = {}});
  ASSERT_FALSE(syntax.has_value());
  EXPECT_EQ(syntax.error().code, errc::argument_invalid);
  EXPECT_TRUE(syntax.error().message.starts_with("SQL query parse failed")) << syntax.error().message;

  EXPECT_EQ(svc_.query({.text = "SELECT * FROM devices", .page_size = 0, .continuation = {}}).error().code,
            errc::argument_invalid);
  EXPECT_EQ(svc_.query({.text = "SELECT * FROM devices", .page_size = 10, .continuation = "not a token"}).error().code,
            errc::argument_invalid);

  // A token is good for its own query only.
  for (int i = 0; i < 5; ++i) add_device(fmt::format("dev-{}", i));
  auto first = svc_.query({.text = "SELECT * FROM devices", .page_size = 2, .continuation = {}});
  ASSERT_TRUE(first.has_value() && first->continuation);
  auto other = svc_.query({.text = "SELECT deviceId FROM devices", .page_size = 2, .continuation = *first->continuation});
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code, errc::argument_invalid);
  auto grouped = svc_.query({.text = "SELECT COUNT() AS n FROM devices GROUP BY tags.x", .page_size = 2,
                             .continuation = *first->continuation});
  EXPECT_FALSE(grouped.has_value());
}

TEST_F(twin_query_test, pages_hold_at_most_100_items) {
  for (int i = 0; i < 150; ++i) add_device(fmt::format("dev-{:03}", i));
  auto ps = pages("SELECT deviceId FROM devices", 1000);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].items.size(), 100u);
  EXPECT_EQ(ps[1].items.size(), 51u);
}

TEST(twins_etag, is_the_version_in_base64) {
  EXPECT_EQ(etag_of(1), "AAAAAAAAAAE=");
  EXPECT_EQ(etag_of(256), "AAAAAAAAAQA=");
}

}  // namespace
}  // namespace hub::twins
