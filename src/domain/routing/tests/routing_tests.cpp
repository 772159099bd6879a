// Routing: the configuration's rules, conditions over messages, the table's selection (dedup,
// fallback, orphans), enrichments, the service over real event logs, system events, and the
// storage endpoint's files.
#include "base/json.hpp"
#include "domain/routing/config.hpp"
#include "domain/routing/events.hpp"
#include "domain/routing/file_writer.hpp"
#include "domain/routing/resolver.hpp"
#include "domain/routing/service.hpp"
#include "domain/routing/table.hpp"
#include "domain/routing/webhook.hpp"
#include "domain/telemetry/service.hpp"
#include "storage/event_log.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <fmt/format.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>

using namespace hub;
using namespace hub::routing;
namespace fs = std::filesystem;

namespace {

bj::value parse_json(std::string_view text) {
  auto v = json::parse(text);
  EXPECT_TRUE(v.has_value()) << text;
  return v ? *v : bj::value();
}

config parse_ok(std::string_view text, const limits& lim = {}) {
  auto c = parse(text, lim);
  EXPECT_TRUE(c.has_value()) << (c ? "" : c.error().message);
  return c ? *c : config{};
}

std::string parse_error(std::string_view text, const limits& lim = {}) {
  auto c = parse(text, lim);
  if (c) return "(accepted)";
  return c.error().message;
}

std::unique_ptr<const table> compile_ok(std::string_view text) {
  auto t = table::compile(parse_ok(text));
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().message);
  return t ? std::move(*t) : nullptr;
}

telemetry::message json_message(std::string body, std::string device = "dev1") {
  telemetry::message m;
  m.body = std::move(body);
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.device_id = std::move(device);
  m.generation_id = "638000000000000001";
  return m;
}

std::string names(const table& t, endpoint_set s) {
  std::string out;
  for (std::size_t i = 0; i < t.endpoint_names().size(); ++i) {
    if (s & (endpoint_set{1} << i)) out += (out.empty() ? "" : ",") + t.endpoint_names()[i];
  }
  return out;
}

std::string select_names(const table& t, const telemetry::message& m, source s = source::device_messages,
                         const twin_source* twins = nullptr) {
  message_view v(m, "2024-05-01T10:00:00.0000000Z", twins);
  return names(t, t.select(s, v).endpoints);
}

struct temp_dir {
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("hub_routing_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

std::unique_ptr<storage::event_log> open_log(const fs::path& dir, std::uint32_t partitions = 2) {
  storage::log_options o;
  o.dir = dir.string();
  o.partitions = partitions;
  o.sync = false;
  auto log = storage::event_log::open(o);
  EXPECT_TRUE(log.has_value());
  return log ? std::move(*log) : nullptr;
}

std::vector<telemetry::message> all_messages(storage::event_log& log) {
  std::vector<telemetry::message> out;
  for (std::uint32_t p = 0; p < log.partitions(); ++p) {
    auto records = log.read(p, 0, 10000);
    if (!records) continue;
    for (const auto& r : *records) {
      auto m = telemetry::decode(r.data);
      if (m) out.push_back(std::move(*m));
    }
  }
  return out;
}

std::string property(const telemetry::message& m, std::string_view name) {
  for (const auto& [k, v] : m.properties) {
    if (k == name) {
      if (const auto* s = std::get_if<std::string>(&v)) return *s;
      return "(not a string)";
    }
  }
  return "(absent)";
}

result<storage::log_position> send(routing::service& svc, const telemetry::message& m, std::uint32_t partitions = 2) {
  std::promise<result<storage::log_position>> done;
  auto f = done.get_future();
  svc.route(m, telemetry::partition_of(m.device_id, partitions),
            [&done](result<storage::log_position> r) { done.set_value(std::move(r)); });
  return f.get();
}

// Waits until `pred` holds (the routing thread and the log writers run on their own).
template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

constexpr std::string_view two_hubs = R"j({
  "endpoints": {"eventHubs": [{"name": "hot"}, {"name": "cold"}]},
  "routes": [
    {"name": "r-hot", "source": "DeviceMessages", "condition": "level = 'critical'", "endpointNames": ["hot"], "isEnabled": true},
    {"name": "r-body", "source": "DeviceMessages", "condition": "$body.temperature > 30", "endpointNames": ["hot"], "isEnabled": true},
    {"name": "r-cold", "source": "DeviceMessages", "condition": "$body.temperature < 0", "endpointNames": ["cold"], "isEnabled": true},
    {"name": "r-off", "source": "DeviceMessages", "condition": "true", "endpointNames": ["cold"], "isEnabled": false}
  ],
  "fallbackRoute": {"name": "$fallback", "source": "DeviceMessages", "condition": "true", "endpointNames": ["events"], "isEnabled": true}
})j";

}  // namespace

// --- configuration rules ------------------------------------------------------------------------

TEST(routing_config, reads_the_arm_shape) {
  const config c = parse_ok(R"j({
    "endpoints": {
      "eventHubs": [{"name": "alerts", "connectionString": "ignored"}],
      "storageContainers": [{"name": "archive", "containerName": "c1", "fileNameFormat": "{iothub}/{YYYY}/{MM}/{DD}/{HH}/{mm}/{partition}",
                             "batchFrequencyInSeconds": 100, "maxChunkSizeInBytes": 10485760, "encoding": "JSON"}],
      "serviceBusQueues": []
    },
    "routes": [{"name": "a", "source": "twinchangeevents", "condition": "true", "endpointNames": ["alerts"], "isEnabled": true},
               {"name": "b", "source": "DeviceMessages", "endpointNames": ["archive"]}],
    "fallbackRoute": {"isEnabled": false},
    "enrichments": [{"key": "site", "value": "$twin.tags.site", "endpointNames": ["events", "alerts"]}]
  })j");
  ASSERT_EQ(c.event_hubs.size(), 1u);
  EXPECT_EQ(c.event_hubs[0].name, "alerts");
  ASSERT_EQ(c.storage.size(), 1u);
  EXPECT_EQ(c.storage[0].batch_frequency_seconds, 100u);
  EXPECT_EQ(c.storage[0].container_name, "c1");
  EXPECT_EQ(c.storage[0].encoding, file_encoding::json);
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].from, source::twin_change_events);
  EXPECT_TRUE(c.routes[1].condition.empty());
  EXPECT_TRUE(c.routes[1].enabled);
  EXPECT_FALSE(c.fallback.enabled);
  EXPECT_EQ(c.fallback.endpoint, "events");
  ASSERT_EQ(c.enrichments.size(), 1u);
  EXPECT_EQ(c.enrichments[0].endpoints.size(), 2u);

  // Round trip through the ARM shape.
  auto again = parse(to_json(c));
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(json::serialize(to_json(*again)), json::serialize(to_json(c)));

  const config empty = parse_ok("{}");
  EXPECT_TRUE(empty.routes.empty());
  EXPECT_TRUE(empty.fallback.enabled);  // on by default, to events
  EXPECT_EQ(empty.fallback.endpoint, "events");
}

TEST(routing_config, refuses_what_iot_hub_refuses) {
  struct bad {
    std::string json;
    std::string expected;  // a part of the message
  };
  const std::vector<bad> cases = {
      {R"j({"endpoints":{"eventHubs":[{"name":"events"}]}})j", "endpoint 'events': the names events"},
      {R"j({"endpoints":{"eventHubs":[{"name":"FileNotifications"}]}})j", "reserved"},
      {R"j({"endpoints":{"eventHubs":[{"name":"a b"}]}})j", "endpoint 'a b': a name is 1-64"},
      {R"j({"endpoints":{"eventHubs":[{"name":".."}]}})j", "a name is"},
      {R"j({"endpoints":{"eventHubs":[{"name":"x"}],"storageContainers":[{"name":"X","encoding":"json"}]}})j",
       "endpoint 'X': endpoint names must be unique across endpoint types"},
      {R"j({"endpoints":{"serviceBusQueues":[{"name":"q"}]}})j", "eventHubs, storageContainers and webhooks endpoints only"},
      {R"j({"routes":[{"name":"r","source":"DeviceMessages","endpointNames":["nowhere"]}]})j",
       "route 'r': endpoint 'nowhere' does not exist"},
      {R"j({"routes":[{"name":"r","source":"DeviceMessages","endpointNames":["events","events"]}]})j",
       "route 'r': endpointNames must hold exactly one endpoint"},
      {R"j({"routes":[{"name":"r","source":"DeviceMessages","endpointNames":[]}]})j", "exactly one"},
      {R"j({"routes":[{"name":"r","source":"DeviceJobLifecycleEvents","endpointNames":["events"]}]})j",
       "route 'r': source 'DeviceJobLifecycleEvents' is not one hubd routes"},
      {R"j({"routes":[{"name":"r","endpointNames":["events"]}]})j", "route 'r': source is missing"},
      {R"j({"routes":[{"name":"r!","source":"DeviceMessages","endpointNames":["events"]}]})j", "route 'r!': a route name"},
      {R"j({"routes":[{"name":"r","source":"DeviceMessages","endpointNames":["events"]},
                     {"name":"R","source":"DeviceMessages","endpointNames":["events"]}]})j",
       "route 'R': route names must be unique"},
      {R"j({"routes":[{"name":"r","source":"DeviceMessages","endpointNames":["events"],"isEnabled":"yes"}]})j",
       "isEnabled must be true or false"},
      {R"j({"fallbackRoute":{"source":"TwinChangeEvents","endpointNames":["events"]}})j",
       "fallbackRoute: source must be DeviceMessages"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","fileNameFormat":"{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}","encoding":"JSON"}]}})j",
       "endpoint 's': fileNameFormat must contain {mm}"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","fileNameFormat":"/{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}","encoding":"JSON"}]}})j",
       "relative path"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","fileNameFormat":"../{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}","encoding":"JSON"}]}})j",
       "'..'"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","batchFrequencyInSeconds":59,"encoding":"JSON"}]}})j",
       "endpoint 's': batchFrequencyInSeconds must be between 60 and 720"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","batchFrequencyInSeconds":721,"encoding":"JSON"}]}})j", "60 and 720"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","maxChunkSizeInBytes":1000,"encoding":"JSON"}]}})j",
       "maxChunkSizeInBytes must be between 10485760 and 524288000"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","encoding":"avro"}]}})j", "JSON only"},
      {R"j({"endpoints":{"storageContainers":[{"name":"s","encoding":"csv"}]}})j", "encoding 'csv' is not one of"},
      {R"j({"enrichments":[{"key":"k","value":"$twin.id","endpointNames":["events"]}]})j",
       "enrichment 'k': value '$twin.id' must be static text"},
      {R"j({"enrichments":[{"key":"k","value":"$deviceId","endpointNames":["events"]}]})j", "must be static text"},
      {R"j({"enrichments":[{"key":"k","value":"$twin.tags.","endpointNames":["events"]}]})j", "must be static text"},
      {R"j({"enrichments":[{"key":"k","value":"","endpointNames":["events"]}]})j", "must be static text"},
      {R"j({"enrichments":[{"key":"k k","value":"v","endpointNames":["events"]}]})j", "a key is 1-64"},
      {R"j({"enrichments":[{"key":"k","value":"v","endpointNames":[]}]})j", "at least one endpoint"},
      {R"j({"enrichments":[{"key":"k","value":"v","endpointNames":["x"]}]})j", "enrichment 'k': endpoint 'x' does not exist"},
      {R"j({"enrichments":[{"key":"k","value":"v","endpointNames":["events"]},{"key":"K","value":"w","endpointNames":["events"]}]})j",
       "enrichment keys must be unique"},
      {R"j([1])j", "must be a JSON object"},
      {R"j({"routes":)j", "not valid JSON"},
  };
  for (const bad& b : cases) {
    const std::string message = parse_error(b.json);
    EXPECT_NE(message.find(b.expected), std::string::npos) << b.json << "\n  -> " << message;
  }
}

TEST(routing_config, iot_hubs_limits) {
  std::string routes;
  for (int i = 0; i < 101; ++i)
    routes += fmt::format(R"j({}{{"name":"r{}","source":"DeviceMessages","endpointNames":["events"]}})j", i ? "," : "", i);
  EXPECT_NE(parse_error(R"j({"routes":[)j" + routes + "]}").find("101 routes: at most 100"), std::string::npos);
  std::string hubs;
  for (int i = 0; i < 11; ++i) hubs += fmt::format(R"j({}{{"name":"e{}"}})j", i ? "," : "", i);
  EXPECT_NE(parse_error(R"j({"endpoints":{"eventHubs":[)j" + hubs + "]}}").find("11 custom endpoints: at most 10"),
            std::string::npos);
  std::string enrichments;
  for (int i = 0; i < 11; ++i)
    enrichments += fmt::format(R"j({}{{"key":"k{}","value":"v","endpointNames":["events"]}})j", i ? "," : "", i);
  EXPECT_NE(parse_error(R"j({"enrichments":[)j" + enrichments + "]}").find("11 enrichments: at most 10"),
            std::string::npos);
  // 100 routes and 10 endpoints are fine; a test may allow short batches.
  routes = routes.substr(0, routes.rfind(",{"));
  EXPECT_EQ(parse(std::string_view(R"j({"routes":[)j" + routes + "]}"), limits{}).has_value(), true);
  limits lim;
  lim.min_batch_frequency_seconds = 1;
  lim.min_chunk_bytes = 1024;
  EXPECT_TRUE(
      parse(std::string_view(R"j({"endpoints":{"storageContainers":[{"name":"s","batchFrequencyInSeconds":1,"maxChunkSizeInBytes":2048,"encoding":"JSON"}]}})j"),
            lim)
          .has_value());
}

TEST(routing_config, avro_is_iot_hubs_default_when_this_build_writes_it) {
  limits lim;
  lim.avro = true;
  EXPECT_EQ(parse_ok(R"j({"endpoints":{"storageContainers":[{"name":"s"}]}})j", lim).storage[0].encoding, file_encoding::avro);
  EXPECT_EQ(parse_ok(R"j({"endpoints":{"storageContainers":[{"name":"s","encoding":"avroDeflate"}]}})j", lim).storage[0].encoding,
            file_encoding::avro_deflate);
  EXPECT_EQ(parse_ok(R"j({"endpoints":{"storageContainers":[{"name":"s"}]}})j").storage[0].encoding, file_encoding::json);
}

TEST(routing_table, a_bad_condition_names_the_route_and_the_position) {
  auto t = table::compile(parse_ok(R"j({"routes":[
      {"name":"fine","source":"DeviceMessages","condition":"a = 'b'","endpointNames":["events"]},
      {"name":"broken","source":"DeviceMessages","condition":"level = = 'x'","endpointNames":["events"]}]})j"));
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().message.rfind("route 'broken': condition: Line 1:9", 0), 0u) << t.error().message;
  auto f = table::compile(parse_ok(R"j({"routes":[
      {"name":"fn","source":"DeviceMessages","condition":"no_such_function(x)","endpointNames":["events"]}]})j"));
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message.find("route 'fn': condition: Line 1:1"), std::string::npos) << f.error().message;
  auto fb = table::compile(parse_ok(R"j({"fallbackRoute":{"condition":"(","endpointNames":["events"],"isEnabled":true}})j"));
  ASSERT_FALSE(fb.has_value());
  EXPECT_NE(fb.error().message.find("route '$fallback': condition"), std::string::npos);
}

// --- what a condition reads ---------------------------------------------------------------------

TEST(routing_resolver, application_properties_case_insensitively_as_strings) {
  auto t = compile_ok(R"j({"endpoints":{"eventHubs":[{"name":"a"}]},
    "routes":[{"name":"r","source":"DeviceMessages","condition":"processingPath = 'hot' AND as_number(Severity) <= 2","endpointNames":["a"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  ASSERT_TRUE(t);
  telemetry::message m = json_message("{}");
  m.properties = {{"ProcessingPath", std::string("hot")}, {"severity", std::int64_t{1}}};
  EXPECT_EQ(select_names(*t, m), "a");
  m.properties = {{"processingpath", std::string("hot")}, {"severity", std::string("3")}};
  EXPECT_EQ(select_names(*t, m), "");
  // A name given twice counts once: the first.
  m.properties = {{"processingPath", std::string("hot")}, {"PROCESSINGPATH", std::string("cold")},
                  {"severity", std::string("0")}};
  EXPECT_EQ(select_names(*t, m), "a");
  // Values are strings: a number does not equal a string.
  auto n = compile_ok(R"j({"routes":[{"name":"r","source":"DeviceMessages","condition":"count = 5","endpointNames":["events"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  m.properties = {{"count", std::int64_t{5}}};
  EXPECT_EQ(select_names(*n, m), "");
}

TEST(routing_resolver, system_properties_first_then_application_properties) {
  auto t = compile_ok(R"j({"endpoints":{"eventHubs":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]},
    "routes":[
      {"name":"r1","source":"DeviceMessages","condition":"$connectionDeviceId = 'dev1' AND $contentType = 'application/json' AND $contentEncoding = 'utf-8'","endpointNames":["a"]},
      {"name":"r2","source":"DeviceMessages","condition":"$messageId = 'm1' AND $correlationId = 'c1' AND $userId = 'u1' AND $dt-subject = 'comp' AND $dt-dataschema = 'dtmi:x;1'","endpointNames":["b"]},
      {"name":"r3","source":"DeviceMessages","condition":"$connectionModuleId = 'mod' AND $enqueuedTime > '2024-01-01T00:00:00Z'","endpointNames":["c"]},
      {"name":"r4","source":"DeviceMessages","condition":"$custom = 'x'","endpointNames":["d"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  ASSERT_TRUE(t);
  telemetry::message m = json_message("{}");
  m.message_id = "m1";
  m.correlation_id = "c1";
  m.user_id = "u1";
  m.component = "comp";
  m.model_id = "dtmi:x;1";
  m.properties = {{"$custom", std::string("x")}, {"$messageId", std::string("spoofed")}};
  EXPECT_EQ(select_names(*t, m), "a,b,d");
  m.module_id = "mod";
  EXPECT_EQ(select_names(*t, m), "a,b,c,d");
  // A system property that is not set falls back to an application property of that name.
  m.message_id.reset();
  m.properties.emplace_back("$messageid", std::string("m1"));
  m.properties.erase(m.properties.begin() + 1);  // drop "spoofed"
  EXPECT_EQ(select_names(*t, m), "a,b,c,d");
}

TEST(routing_resolver, the_body_only_when_json_in_utf_8_16_or_32) {
  auto t = compile_ok(R"j({"routes":[{"name":"r","source":"DeviceMessages","condition":"$body.readings[1].t > 20 AND $body.ok = true","endpointNames":["events"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  ASSERT_TRUE(t);
  telemetry::message m = json_message(R"j({"readings":[{"t":10},{"t":25}],"ok":true})j");
  EXPECT_EQ(select_names(*t, m), "events");
  m.content_type = "Application/JSON; charset=utf-8";
  m.content_encoding = "UTF-8";
  EXPECT_EQ(select_names(*t, m), "events");
  m.content_type = "text/plain";
  EXPECT_EQ(select_names(*t, m), "");
  m.content_type = "application/json";
  m.content_encoding.reset();
  EXPECT_EQ(select_names(*t, m), "");
  m.content_encoding = "gzip";
  EXPECT_EQ(select_names(*t, m), "");
  m.content_encoding = "utf-8";
  m.body = "{not json";
  EXPECT_EQ(select_names(*t, m), "");
  // UTF-16 (little-endian without a BOM, as .NET writes) and UTF-32 big-endian with a BOM.
  // Broken UTF-16 (an odd byte count) is not JSON.
  m.body = std::string("{\0}", 3);
  m.content_encoding = "utf-16";
  EXPECT_EQ(select_names(*t, m), "");
  const std::u32string wide = U"{\"readings\":[{\"t\":1},{\"t\":99}],\"ok\":true,\"\u00e9\":\"\u20ac\"}";
  std::string utf32 = std::string("\0\0\xFE\xFF", 4);
  for (char32_t c : wide) {
    utf32.push_back(static_cast<char>((c >> 24) & 0xFF));
    utf32.push_back(static_cast<char>((c >> 16) & 0xFF));
    utf32.push_back(static_cast<char>((c >> 8) & 0xFF));
    utf32.push_back(static_cast<char>(c & 0xFF));
  }
  m.body = utf32;
  m.content_encoding = "utf-32";
  EXPECT_EQ(select_names(*t, m), "events");
  std::u16string w16 = u"{\"readings\":[{\"t\":1},{\"t\":99}],\"ok\":true,\"\u00e9\":\"\U0001F600\"}";
  std::string le;
  for (char16_t c : w16) {
    le.push_back(static_cast<char>(c & 0xFF));
    le.push_back(static_cast<char>(c >> 8));
  }
  m.body = le;
  m.content_encoding = "utf-16";
  EXPECT_EQ(select_names(*t, m), "events");
  auto parsed = body_json(m);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->at("é").as_string(), "\U0001F600");
}

TEST(routing_resolver, the_body_is_parsed_once_and_only_when_needed) {
  // $body alone is undefined (IoT Hub routes on paths into the body only).
  auto t = compile_ok(R"j({"endpoints":{"eventHubs":[{"name":"a"},{"name":"b"}]},
    "routes":[{"name":"r1","source":"DeviceMessages","condition":"$body.x = 1","endpointNames":["a"]},
              {"name":"r2","source":"DeviceMessages","condition":"$body.y = 2 OR is_defined($body)","endpointNames":["b"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  ASSERT_TRUE(t);
  telemetry::message m = json_message(R"j({"x":1,"y":2})j");
  EXPECT_EQ(select_names(*t, m), "a,b");
  m.body = R"j({"x":1,"y":3})j";
  EXPECT_EQ(select_names(*t, m), "a");
}

TEST(routing_resolver, the_twin_is_fetched_once_per_message_and_only_when_needed) {
  int fetches = 0;
  std::string asked;
  const twin_source twins = [&](std::string_view d, std::string_view m) -> std::optional<bj::object> {
    ++fetches;
    asked = std::string(d) + "/" + std::string(m);
    if (m == "mod") return parse_json(R"j({"tags":{"site":"module-site"},"properties":{"reported":{"fw":"2.0"}}})j").as_object();
    return parse_json(R"j({"tags":{"site":"berlin","floor":3},"properties":{"desired":{"mode":"eco"},"reported":{"fw":"1.0"}}})j")
        .as_object();
  };
  auto t = compile_ok(R"j({"endpoints":{"eventHubs":[{"name":"a"},{"name":"b"}]},
    "routes":[{"name":"r1","source":"DeviceMessages","condition":"$twin.tags.site = 'berlin' AND $twin.tags.floor > 2","endpointNames":["a"]},
              {"name":"r2","source":"DeviceMessages","condition":"$twin.properties.desired.mode = 'eco' OR $twin.properties.reported.fw = '2.0'","endpointNames":["b"]},
              {"name":"r3","source":"DeviceMessages","condition":"level = 'x'","endpointNames":["b"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->needs_twin(source::device_messages));
  EXPECT_FALSE(t->needs_twin(source::twin_change_events));
  telemetry::message m = json_message("{}");
  EXPECT_EQ(select_names(*t, m, source::device_messages, &twins), "a,b");
  EXPECT_EQ(fetches, 1);
  EXPECT_EQ(asked, "dev1/");
  // A module's message reads the module's own twin (no tags inherited from the device).
  m.module_id = "mod";
  EXPECT_EQ(select_names(*t, m, source::device_messages, &twins), "b");
  EXPECT_EQ(fetches, 2);
  EXPECT_EQ(asked, "dev1/mod");
  // No condition reads the twin: no fetch.
  auto plain = compile_ok(R"j({"routes":[{"name":"r","source":"DeviceMessages","condition":"level = 'x'","endpointNames":["events"]}]})j");
  EXPECT_FALSE(plain->needs_twin(source::device_messages));
  EXPECT_EQ(select_names(*plain, m, source::device_messages, &twins), "events");
  EXPECT_EQ(fetches, 2);
}

// --- selection ------------------------------------------------------------------------------------

TEST(routing_table, every_matching_route_fires_once_per_endpoint_and_the_fallback_only_when_none_does) {
  auto t = compile_ok(two_hubs);
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->passthrough());
  telemetry::message m = json_message(R"j({"temperature": 35})j");
  m.properties = {{"level", std::string("critical")}};
  message_view v(m, "2024-05-01T10:00:00Z", nullptr);
  selection s = t->select(source::device_messages, v, true);
  EXPECT_EQ(names(*t, s.endpoints), "hot");  // two routes to hot: written once
  EXPECT_EQ(s.matched_routes, (std::vector<std::string>{"r-hot", "r-body"}));
  EXPECT_FALSE(s.fallback);
  m.body = R"j({"temperature": -5})j";
  EXPECT_EQ(select_names(*t, m), "hot,cold");
  m.properties.clear();
  EXPECT_EQ(select_names(*t, m), "cold");
  m.body = R"j({"temperature": 20})j";
  message_view v2(m, "2024-05-01T10:00:00Z", nullptr);
  s = t->select(source::device_messages, v2, true);
  EXPECT_EQ(names(*t, s.endpoints), "events");
  EXPECT_TRUE(s.fallback);
  // Other sources never take the fallback.
  EXPECT_EQ(select_names(*t, m, source::twin_change_events), "");

  // No routes, fallback on: a pass-through. Fallback off: orphaned.
  auto none = compile_ok("{}");
  EXPECT_TRUE(none->passthrough());
  EXPECT_EQ(select_names(*none, m), "events");
  auto off = compile_ok(R"j({"fallbackRoute":{"isEnabled":false}})j");
  EXPECT_FALSE(off->passthrough());
  EXPECT_EQ(select_names(*off, m), "");
  // Routes to events itself: no pass-through (messages that match none are not delivered).
  auto to_events = compile_ok(R"j({"routes":[{"name":"r","source":"DeviceMessages","condition":"a = '1'","endpointNames":["events"]}],
    "fallbackRoute":{"isEnabled":false}})j");
  EXPECT_FALSE(to_events->passthrough());
  EXPECT_EQ(select_names(*to_events, m), "");
  // A disabled route's source stays silent.
  auto disabled = compile_ok(R"j({"routes":[{"name":"r","source":"TwinChangeEvents","endpointNames":["events"],"isEnabled":false}]})j");
  EXPECT_FALSE(disabled->has_routes(source::twin_change_events));
  EXPECT_TRUE(disabled->has_routes(source::device_messages));  // the fallback
}

TEST(routing_table, enrichments_are_stamped_per_endpoint) {
  const twin_source twins = [](std::string_view, std::string_view) -> std::optional<bj::object> {
    return parse_json(R"j({"tags":{"site":"berlin","n":3,"obj":{"a":1}},"properties":{"desired":{"mode":"eco"},"reported":{"on":true}}})j")
        .as_object();
  };
  auto t = compile_ok(R"j({"endpoints":{"eventHubs":[{"name":"a"}]},
    "routes":[{"name":"r","source":"DeviceMessages","endpointNames":["a"]}],
    "enrichments":[
      {"key":"static","value":"v1","endpointNames":["a","events"]},
      {"key":"hub","value":"$iothubname","endpointNames":["a"]},
      {"key":"site","value":"$twin.tags.site","endpointNames":["a"]},
      {"key":"n","value":"$twin.tags.n","endpointNames":["a"]},
      {"key":"obj","value":"$twin.tags.obj","endpointNames":["a"]},
      {"key":"mode","value":"$twin.properties.desired.mode","endpointNames":["a"]},
      {"key":"on","value":"$twin.properties.reported.on","endpointNames":["a"]},
      {"key":"missing","value":"$twin.tags.nothere","endpointNames":["a"]},
      {"key":"Level","value":"overwritten","endpointNames":["a"]}]})j");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->needs_twin(source::device_messages));
  EXPECT_TRUE(t->needs_twin(source::twin_change_events));
  EXPECT_EQ(t->enriched(), 0b11u);
  telemetry::message m = json_message("{}");
  m.properties = {{"level", std::string("device's")}};
  message_view v(m, "2024-05-01T10:00:00Z", &twins);
  telemetry::message a = m;
  t->enrich(1, a, v, "myhub");
  EXPECT_EQ(property(a, "static"), "v1");
  EXPECT_EQ(property(a, "hub"), "myhub");
  EXPECT_EQ(property(a, "site"), "berlin");
  EXPECT_EQ(property(a, "n"), "3");
  EXPECT_EQ(property(a, "obj"), "$twin.tags.obj");  // objects are not enriched with: the literal
  EXPECT_EQ(property(a, "mode"), "eco");
  EXPECT_EQ(property(a, "on"), "true");
  EXPECT_EQ(property(a, "missing"), "$twin.tags.nothere");
  EXPECT_EQ(property(a, "level"), "overwritten");
  EXPECT_EQ(property(a, "Level"), "(absent)");
  telemetry::message e = m;
  t->enrich(0, e, v, "myhub");
  EXPECT_EQ(property(e, "static"), "v1");
  EXPECT_EQ(property(e, "hub"), "(absent)");
  // No twin at all: every twin enrichment stamps its literal text.
  message_view none(m, "2024-05-01T10:00:00Z", nullptr);
  telemetry::message b = m;
  t->enrich(1, b, none, "myhub");
  EXPECT_EQ(property(b, "site"), "$twin.tags.site");
}

// --- the service over event logs ----------------------------------------------------------------

struct hub_logs {
  hub_logs() : events(open_log(dir.path / "events")), hot(open_log(dir.path / "hot")), cold(open_log(dir.path / "cold")) {}
  std::vector<storage::event_log*> all() { return {events.get(), hot.get(), cold.get()}; }
  temp_dir dir;
  std::unique_ptr<storage::event_log> events, hot, cold;
};

TEST(routing_service, appends_to_every_selected_log_before_acknowledging) {
  hub_logs logs;
  manual_clock clk;
  routing::service svc(clk, *logs.events, options{"myhub"}, {});
  // The default: everything to events, as before routing.
  ASSERT_TRUE(send(svc, json_message(R"j({"temperature":1})j")).has_value());
  EXPECT_EQ(all_messages(*logs.events).size(), 1u);

  ASSERT_TRUE(svc.install(*table::compile(parse_ok(two_hubs)), logs.all()).has_value());
  telemetry::message hot = json_message(R"j({"temperature":35})j");
  hot.properties = {{"level", std::string("critical")}};
  hot.message_id = "hot-1";
  ASSERT_TRUE(send(svc, hot).has_value());
  telemetry::message both = json_message(R"j({"temperature":-1})j");
  both.properties = {{"level", std::string("critical")}};
  both.message_id = "both-1";
  ASSERT_TRUE(send(svc, both).has_value());
  telemetry::message plain = json_message(R"j({"temperature":20})j");
  plain.message_id = "plain-1";
  ASSERT_TRUE(send(svc, plain).has_value());
  // Durable before done: the records are readable now.
  const auto ids = [](storage::event_log& l) {
    std::vector<std::string> out;
    for (const auto& m : all_messages(l)) out.push_back(m.message_id.value_or("-"));
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(ids(*logs.hot), (std::vector<std::string>{"both-1", "hot-1"}));
  EXPECT_EQ(ids(*logs.cold), (std::vector<std::string>{"both-1"}));
  EXPECT_EQ(ids(*logs.events), (std::vector<std::string>{"-", "plain-1"}));
  EXPECT_EQ(svc.orphaned(), 0u);
  // The message keeps its device's partition in every log.
  const std::uint32_t p = telemetry::partition_of("dev1", 2);
  EXPECT_EQ(logs.hot->stats(p).last_sequence, 1);
  EXPECT_TRUE(logs.hot->stats(1 - p).empty);

  // Fallback off: unmatched messages are acknowledged and dropped (orphaned).
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(R"j({"endpoints":{"eventHubs":[{"name":"hot"},{"name":"cold"}]},
      "routes":[{"name":"r","source":"DeviceMessages","condition":"level = 'critical'","endpointNames":["hot"]}],
      "fallbackRoute":{"isEnabled":false}})j")),
                          logs.all())
                  .has_value());
  ASSERT_TRUE(send(svc, plain).has_value());
  ASSERT_TRUE(send(svc, plain).has_value());
  EXPECT_EQ(svc.orphaned(), 2u);
  EXPECT_EQ(ids(*logs.events).size(), 2u);

  // A table whose logs do not fit is refused.
  EXPECT_FALSE(svc.install(*table::compile(parse_ok(two_hubs)), {logs.events.get()}).has_value());
}

TEST(routing_service, an_append_failure_reaches_the_device) {
  temp_dir dir;
  auto events = open_log(dir.path / "events");
  auto other = open_log(dir.path / "other");
  manual_clock clk;
  routing::service svc(clk, *events, options{"myhub"}, {});
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(R"j({"endpoints":{"eventHubs":[{"name":"o"}]},
      "routes":[{"name":"a","source":"DeviceMessages","endpointNames":["o"]},{"name":"b","source":"DeviceMessages","endpointNames":["events"]}]})j")),
                          {events.get(), other.get()})
                  .has_value());
  other->close();  // appends to it now fail
  auto r = send(svc, json_message("{}"));
  EXPECT_FALSE(r.has_value());
}

TEST(routing_service, twin_reading_routes_run_on_the_routing_thread_in_order) {
  hub_logs logs;
  manual_clock clk;
  std::atomic<int> fetches{0};
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> on_caller{false};
  routing::service svc(clk, *logs.events, options{"myhub"},
                       [&](std::string_view, std::string_view) -> std::optional<bj::object> {
                         ++fetches;
                         if (std::this_thread::get_id() == caller) on_caller = true;
                         return parse_json(R"j({"tags":{"site":"berlin"}})j").as_object();
                       });
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(R"j({"endpoints":{"eventHubs":[{"name":"hot"},{"name":"cold"}]},
      "routes":[{"name":"r","source":"DeviceMessages","condition":"$twin.tags.site = 'berlin'","endpointNames":["hot"]}],
      "enrichments":[{"key":"site","value":"$twin.tags.site","endpointNames":["hot"]}]})j")),
                          logs.all())
                  .has_value());
  std::vector<std::future<result<storage::log_position>>> pending;
  std::vector<std::promise<result<storage::log_position>>> promises(50);
  for (int i = 0; i < 50; ++i) {
    telemetry::message m = json_message("{}");
    m.message_id = std::to_string(i);
    pending.push_back(promises[i].get_future());
    svc.route(m, telemetry::partition_of(m.device_id, 2),
              [&promises, i](result<storage::log_position> r) { promises[i].set_value(std::move(r)); });
  }
  for (auto& f : pending) ASSERT_TRUE(f.get().has_value());
  EXPECT_FALSE(on_caller);
  EXPECT_EQ(fetches, 50);  // once per message: the condition and the enrichment share it
  const auto got = all_messages(*logs.hot);
  ASSERT_EQ(got.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(got[i].message_id, std::to_string(i));  // the device's order
    EXPECT_EQ(property(got[i], "site"), "berlin");
  }
  svc.stop();
  std::promise<result<storage::log_position>> late;
  svc.route(json_message("{}"), 0, [&](result<storage::log_position> r) { late.set_value(std::move(r)); });
  auto r = late.get_future().get();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::service_unavailable);
}

TEST(routing_service, an_enriched_message_past_256_kb_is_dropped_for_that_endpoint) {
  hub_logs logs;
  manual_clock clk;
  options opt{"myhub"};
  opt.max_message_bytes = 100;
  routing::service svc(clk, *logs.events, opt, {});
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(R"j({"endpoints":{"eventHubs":[{"name":"hot"},{"name":"cold"}]},
      "routes":[{"name":"a","source":"DeviceMessages","endpointNames":["hot"]},{"name":"b","source":"DeviceMessages","endpointNames":["cold"]}],
      "enrichments":[{"key":"big","value":"0123456789012345678901234567890123456789","endpointNames":["hot"]}]})j")),
                          logs.all())
                  .has_value());
  ASSERT_TRUE(send(svc, json_message(std::string(70, ' '))).has_value());
  EXPECT_EQ(all_messages(*logs.hot).size(), 0u);
  EXPECT_EQ(all_messages(*logs.cold).size(), 1u);
  EXPECT_EQ(svc.dropped(), 1u);
}

TEST(routing_service, reconfigure_replaces_routes_but_not_endpoints_and_persists_first) {
  hub_logs logs;
  manual_clock clk;
  routing::service svc(clk, *logs.events, options{"myhub"}, {});
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(two_hubs)), logs.all()).has_value());
  std::vector<std::string> saved;
  bool fail_save = false;
  svc.set_persist([&](const bj::value& v) -> result<void> {
    if (fail_save) return make_error(errc::server_error, "disk full");
    saved.push_back(json::serialize(v));
    return {};
  });
  bj::value next = svc.configuration();
  EXPECT_EQ(next.at("routes").as_array().size(), 4u);
  next.at("routes").as_array().clear();
  next.at("routes").as_array().push_back(parse_json(
      R"j({"name":"all-cold","source":"DeviceMessages","condition":"true","endpointNames":["cold"],"isEnabled":true})j"));
  ASSERT_TRUE(svc.reconfigure(next).has_value());
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_NE(saved[0].find("all-cold"), std::string::npos);
  ASSERT_TRUE(send(svc, json_message(R"({"temperature":35})")).has_value());
  EXPECT_EQ(all_messages(*logs.cold).size(), 1u);
  EXPECT_EQ(all_messages(*logs.hot).size(), 0u);
  EXPECT_EQ(svc.configuration().at("routes").as_array().size(), 1u);

  // Endpoints are fixed while running; broken rules and conditions are refused; nothing changes.
  bj::value more = svc.configuration();
  more.at("endpoints").at("eventHubs").as_array().push_back(bj::object{{"name", "new"}});
  auto r = svc.reconfigure(more);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("endpoints cannot change"), std::string::npos);
  bj::value bad = svc.configuration();
  bad.at("routes").as_array()[0].as_object()["condition"] = "a = ";
  r = svc.reconfigure(bad);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("route 'all-cold': condition: Line 1:5"), std::string::npos) << r.error().message;
  fail_save = true;
  bj::value off = svc.configuration();
  off.at("routes").as_array()[0].as_object()["isEnabled"] = false;
  r = svc.reconfigure(off);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message, "disk full");
  EXPECT_TRUE(svc.configuration().at("routes").as_array()[0].at("isEnabled").as_bool());
  EXPECT_EQ(saved.size(), 1u);
}

TEST(routing_service, test_all_evaluates_a_sample_without_delivering_it) {
  hub_logs logs;
  manual_clock clk;
  routing::service svc(clk, *logs.events, options{"myhub"}, {});
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(R"j({"endpoints":{"eventHubs":[{"name":"hot"},{"name":"cold"}]},
      "routes":[
        {"name":"by-prop","source":"DeviceMessages","condition":"level = 'critical'","endpointNames":["hot"]},
        {"name":"by-body","source":"DeviceMessages","condition":"$body.t > 50","endpointNames":["hot"]},
        {"name":"by-twin","source":"DeviceMessages","condition":"$twin.tags.site = 'berlin'","endpointNames":["cold"]},
        {"name":"twin-changes","source":"TwinChangeEvents","condition":"$body.version > 1","endpointNames":["cold"]}]})j")),
                          logs.all())
                  .has_value());
  auto r = svc.test_all(parse_json(R"j({"routingSource":"DeviceMessages",
      "message":{"body":"{\"t\":70}","appProperties":{"level":"critical"},
                 "systemProperties":{"contentType":"application/json","$contentEncoding":"utf-8","connectionDeviceId":"d1"}},
      "twin":{"tags":{"site":"berlin"}}})j"));
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->at("routes").as_array().size(), 3u);
  EXPECT_EQ(r->at("routes").at(0).at("properties").at("name").as_string(), "by-prop");
  EXPECT_EQ(json::serialize(r->at("endpoints")), R"(["hot","cold"])");
  EXPECT_FALSE(r->at("fallback").as_bool());
  r = svc.test_all(parse_json(R"j({"message":{"body":"{}"}})j"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->at("routes").as_array().size(), 0u);
  EXPECT_EQ(json::serialize(r->at("endpoints")), R"(["events"])");
  EXPECT_TRUE(r->at("fallback").as_bool());
  r = svc.test_all(parse_json(R"j({"routingSource":"TwinChangeEvents","message":{"body":{"version":2},
      "systemProperties":{"contentType":"application/json","contentEncoding":"utf-8"}}})j"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(json::serialize(r->at("endpoints")), R"(["cold"])");
  EXPECT_FALSE(svc.test_all(parse_json(R"j({"routingSource":"Nope"})j")).has_value());
  EXPECT_FALSE(svc.test_all(parse_json(R"j({"message":{"systemProperties":{"iothub-x":"1"}}})j")).has_value());
  // Nothing was delivered.
  EXPECT_EQ(all_messages(*logs.hot).size() + all_messages(*logs.cold).size() + all_messages(*logs.events).size(), 0u);
}

// --- system events --------------------------------------------------------------------------------

TEST(routing_events, system_events_have_iot_hubs_properties_and_bodies) {
  const sys_time at = sys_time{std::chrono::seconds(1'700'000'000)};
  auto tc = twin_change_event({"myhub", "d1", "", at}, "updateTwin",
                              parse_json(R"j({"version":4,"properties":{"desired":{"x":1,"$version":3}}})j").as_object());
  EXPECT_EQ(tc.source, "twinChangeEvents");
  EXPECT_EQ(tc.content_type, "application/json");
  EXPECT_EQ(tc.content_encoding, "utf-8");
  EXPECT_EQ(tc.user_id, "myhub");
  ASSERT_TRUE(tc.correlation_id);
  EXPECT_EQ(tc.correlation_id->size(), 16u);
  EXPECT_EQ(tc.device_id, "d1");
  EXPECT_EQ(property(tc, "hubName"), "myhub");
  EXPECT_EQ(property(tc, "deviceId"), "d1");
  EXPECT_EQ(property(tc, "moduleId"), "(absent)");
  EXPECT_EQ(property(tc, "opType"), "updateTwin");
  EXPECT_EQ(property(tc, "iothub-message-schema"), "twinChangeNotification");
  EXPECT_EQ(property(tc, "operationTimestamp"), "2023-11-14T22:13:20.0000000Z");
  EXPECT_EQ(parse_json(tc.body).at("version").as_int64(), 4);
  auto tc2 = twin_change_event({"myhub", "d1", "", at}, "replaceTwin", bj::object{});
  EXPECT_NE(tc2.correlation_id, tc.correlation_id);

  auto lc = lifecycle_event({"myhub", "d1", "m1", at}, false,
                            parse_json(R"j({"deviceId":"d1","moduleId":"m1","etag":"AAAAAAAAAAE=","version":2,"status":"enabled",
                                          "generationId":"123","tags":{},"properties":{"desired":{"$version":1},"reported":{"$version":1}}})j")
                                .as_object());
  EXPECT_EQ(lc.source, "deviceLifecycleEvents");
  EXPECT_EQ(property(lc, "opType"), "deleteDeviceIdentity");
  EXPECT_EQ(property(lc, "moduleId"), "m1");
  EXPECT_EQ(property(lc, "iothub-message-schema"), "deviceLifecycleNotification");
  EXPECT_EQ(lc.module_id, "m1");
  EXPECT_EQ(lc.generation_id, "123");
  const bj::value body = parse_json(lc.body);
  EXPECT_EQ(body.at("etag").as_string(), "AAAAAAAAAAE=");
  EXPECT_FALSE(body.as_object().contains("status"));  // the twin's part only
  EXPECT_TRUE(body.as_object().contains("properties"));

  auto cs = connection_event({"myhub", "d1", "", at}, true, std::string(64, '0'));
  EXPECT_EQ(cs.source, "deviceConnectionStateEvents");
  EXPECT_EQ(property(cs, "opType"), "deviceConnected");
  EXPECT_EQ(property(cs, "iothub-message-schema"), "deviceConnectionStateNotification");
  EXPECT_EQ(parse_json(cs.body).at("sequenceNumber").as_string(), std::string(64, '0'));
}

TEST(routing_events, sequence_numbers_are_64_hex_digits_strictly_increasing) {
  sequence_numbers seq;
  const sys_time t = sys_time{std::chrono::seconds(1'700'000'000)};
  std::string prev = seq.next(t);
  EXPECT_EQ(prev.size(), 64u);
  EXPECT_EQ(prev.find_first_not_of("0123456789ABCDEF"), std::string::npos);
  for (int i = 0; i < 100; ++i) {
    // The same instant, later, and a clock that went back: always larger.
    const sys_time at = i % 3 == 0 ? t : i % 3 == 1 ? t + std::chrono::seconds(i) : t - std::chrono::hours(1);
    std::string next = seq.next(at);
    EXPECT_GT(next, prev);
    prev = next;
  }
  // A later process (time moved on) still gives larger numbers.
  sequence_numbers restarted;
  EXPECT_GT(restarted.next(t + std::chrono::minutes(10)), prev);
}

TEST(routing_service, system_events_reach_only_the_routes_of_their_source) {
  hub_logs logs;
  manual_clock clk;
  routing::service svc(clk, *logs.events, options{"myhub"},
                       [](std::string_view d, std::string_view m) -> std::optional<bj::object> {
                         bj::object twin{{"deviceId", d}, {"etag", "AAAAAAAAAAE="}, {"version", 1}, {"tags", bj::object{}}};
                         if (!m.empty()) twin["moduleId"] = m;
                         return twin;
                       });
  // No routes for them: nothing is produced.
  svc.twin_changed("d1", "", "updateTwin", bj::object{{"version", 2}}, clk.now());
  svc.connection_changed("d1", "", true, clk.now());
  ASSERT_TRUE(svc.install(*table::compile(parse_ok(R"j({"endpoints":{"eventHubs":[{"name":"hot"},{"name":"cold"}]},
      "routes":[
        {"name":"twins","source":"TwinChangeEvents","condition":"$body.properties.desired.x > 10","endpointNames":["hot"]},
        {"name":"conn","source":"DeviceConnectionStateEvents","condition":"opType = 'deviceDisconnected'","endpointNames":["cold"]},
        {"name":"life","source":"DeviceLifecycleEvents","endpointNames":["cold"]}]})j")),
                          logs.all())
                  .has_value());
  svc.twin_changed("d1", "", "updateTwin", parse_json(R"j({"version":2,"properties":{"desired":{"x":5}}})j").as_object(), clk.now());
  svc.twin_changed("d1", "", "updateTwin", parse_json(R"j({"version":3,"properties":{"desired":{"x":50}}})j").as_object(), clk.now());
  svc.connection_changed("d1", "", true, clk.now());
  svc.connection_changed("d1", "", false, clk.now());
  svc.identity_created("d2", "", clk.now());
  svc.identity_deleted("d2", "m1", parse_json(R"j({"deviceId":"d2","moduleId":"m1","etag":"AAAAAAAAAAI=","version":2})j").as_object(),
                       clk.now());
  ASSERT_TRUE(eventually([&] { return all_messages(*logs.cold).size() == 3 && all_messages(*logs.hot).size() == 1; }));
  const auto hot = all_messages(*logs.hot);
  EXPECT_EQ(parse_json(hot[0].body).at("version").as_int64(), 3);
  EXPECT_EQ(hot[0].source, "twinChangeEvents");
  std::vector<std::string> ops;
  for (const auto& m : all_messages(*logs.cold)) ops.push_back(property(m, "opType") + ":" + m.device_id);
  std::sort(ops.begin(), ops.end());
  EXPECT_EQ(ops, (std::vector<std::string>{"createDeviceIdentity:d2", "deleteDeviceIdentity:d2", "deviceDisconnected:d1"}));
  EXPECT_EQ(all_messages(*logs.events).size(), 0u);  // the fallback is for device messages only
  svc.stop();
}

// --- the storage endpoint's files -----------------------------------------------------------------

TEST(routing_files, a_stored_message_as_iot_hubs_json_line) {
  telemetry::message m = json_message(R"j({"temperature": 21.5})j");
  m.message_id = "m1";
  m.correlation_id = "c1";
  m.properties = {{"alert", std::string("high")}, {"n", std::int64_t{3}}};
  storage::log_record r;
  r.enqueued_ms = 1'700'000'000'123;
  r.data = telemetry::encode(m);
  auto line = storage_json_line(r);
  ASSERT_TRUE(line);
  const bj::value v = parse_json(*line);
  EXPECT_EQ(v.at("EnqueuedTimeUtc").as_string(), "2023-11-14T22:13:20.1230000Z");
  EXPECT_EQ(v.at("Properties").at("alert").as_string(), "high");
  EXPECT_EQ(v.at("Properties").at("n").as_string(), "3");
  const bj::object& sys = v.at("SystemProperties").as_object();
  EXPECT_EQ(sys.at("messageId").as_string(), "m1");
  EXPECT_EQ(sys.at("correlationId").as_string(), "c1");
  EXPECT_EQ(sys.at("connectionDeviceId").as_string(), "dev1");
  EXPECT_EQ(sys.at("connectionDeviceGenerationId").as_string(), "638000000000000001");
  EXPECT_EQ(sys.at("connectionAuthMethod").as_string(),
            R"j({"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null})j");
  EXPECT_EQ(sys.at("contentType").as_string(), "application/json");
  EXPECT_EQ(sys.at("contentEncoding").as_string(), "utf-8");
  EXPECT_EQ(sys.at("enqueuedTime").as_string(), "2023-11-14T22:13:20.1230000Z");
  EXPECT_EQ(v.at("Body").at("temperature").as_double(), 21.5);
  // Not JSON in UTF-8: the body in base64.
  m.content_encoding = "utf-16";
  m.body = "hi";
  r.data = telemetry::encode(m);
  EXPECT_EQ(parse_json(*storage_json_line(r)).at("Body").as_string(), "aGk=");
  m.content_encoding = "utf-8";
  m.body = "{broken";
  r.data = telemetry::encode(m);
  EXPECT_EQ(parse_json(*storage_json_line(r)).at("Body").as_string(), "e2Jyb2tlbg==");
}

TEST(routing_files, file_names_follow_the_format) {
  EXPECT_EQ(expand_file_name("{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}", "myhub", 3, 1'700'000'000'123),
            "myhub/3/2023/11/14/22/13");
  EXPECT_EQ(expand_file_name("{YYYY}-{MM}-{DD}T{HH}{mm}_{iothub}_p{partition}", "h", 0, 0), "1970-01-01T0000_h_p0");
}

namespace {

std::vector<fs::path> files_under(const fs::path& root) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_regular_file()) out.push_back(fs::relative(it->path(), root));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void append_sync(storage::event_log& log, std::uint32_t partition, const telemetry::message& m) {
  std::promise<void> done;
  log.append(partition, telemetry::encode(m), [&](result<storage::log_position>) { done.set_value(); });
  done.get_future().get();
}

}  // namespace

TEST(routing_files, batches_wait_for_their_frequency_split_at_the_chunk_size_and_resume_from_the_checkpoint) {
  temp_dir dir;
  auto staging = open_log(dir.path / "staging", 2);
  // The log stamps real time: the manual clock starts at now.
  manual_clock clk(std::chrono::system_clock::now());
  file_writer_options opt;
  opt.endpoint.name = "archive";
  opt.endpoint.batch_frequency_seconds = 60;
  opt.endpoint.max_chunk_bytes = 1024 * 1024;
  opt.hub_name = "myhub";
  opt.dir = dir.path / "files";
  opt.checkpoint_file = dir.path / "staging" / "checkpoint.json";
  auto w = file_writer::open(*staging, opt, clk);
  ASSERT_TRUE(w.has_value()) << w.error().message;
  for (int i = 0; i < 3; ++i) {
    telemetry::message m = json_message(fmt::format(R"j({{"i":{}}})j", i));
    m.message_id = std::to_string(i);
    append_sync(*staging, 1, m);
  }
  EXPECT_EQ(*(*w)->tick(), 0u);  // not due yet
  EXPECT_TRUE(files_under(opt.dir).empty());
  clk.advance(std::chrono::seconds(61));
  EXPECT_EQ(*(*w)->tick(), 1u);
  auto files = files_under(opt.dir);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].string().rfind("myhub/1/", 0), 0u) << files[0];
  EXPECT_EQ(files[0].extension(), ".json");
  auto lines = lines_of(opt.dir / files[0]);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(parse_json(lines[2]).at("Body").at("i").as_int64(), 2);
  EXPECT_EQ((*w)->next_sequence(1), 3);
  EXPECT_EQ(*(*w)->tick(), 0u);  // nothing new

  // A second batch in the same minute gets its own name; a reopened writer resumes.
  append_sync(*staging, 1, json_message(R"j({"i":3})j"));
  w->reset();
  auto again = file_writer::open(*staging, opt, clk);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)->next_sequence(1), 3);
  EXPECT_EQ(*(*again)->flush(), 1u);
  files = files_under(opt.dir);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_NE(files[1].string().find("_1.json"), std::string::npos) << files[1];
  EXPECT_EQ(lines_of(opt.dir / files[1]).size(), 1u);

  // The chunk size splits a batch (and makes it due at once).
  opt.endpoint.max_chunk_bytes = 1200;
  auto small = file_writer::open(*staging, opt, clk);
  ASSERT_TRUE(small.has_value());
  for (int i = 0; i < 10; ++i) append_sync(*staging, 0, json_message(fmt::format(R"j({{"pad":"{}"}})j", std::string(200, 'x'))));
  const auto written = (*small)->tick();
  ASSERT_TRUE(written.has_value());
  EXPECT_GE(*written, 3u);
  std::size_t total = 0;
  for (const auto& f : files_under(opt.dir)) {
    if (f.string().rfind("myhub/0/", 0) != 0) continue;
    EXPECT_LE(fs::file_size(opt.dir / f), 1200u) << f;
    total += lines_of(opt.dir / f).size();
  }
  EXPECT_EQ(total, 10u);
}

#ifdef HUB_HAVE_AVRO
#include <avro.h>

TEST(routing_files, avro_files_hold_iot_hubs_record) {
  ASSERT_TRUE(avro_supported());
  for (const file_encoding enc : {file_encoding::avro, file_encoding::avro_deflate}) {
    temp_dir dir;
    auto staging = open_log(dir.path / "staging", 1);
    manual_clock clk(std::chrono::system_clock::now());
    file_writer_options opt;
    opt.endpoint.name = "archive";
    opt.endpoint.encoding = enc;
    opt.hub_name = "myhub";
    opt.dir = dir.path / "files";
    opt.checkpoint_file = dir.path / "staging" / "checkpoint.json";
    auto w = file_writer::open(*staging, opt, clk);
    ASSERT_TRUE(w.has_value());
    for (int i = 0; i < 3; ++i) {
      telemetry::message m = json_message(fmt::format(R"({{"i":{}}})", i));
      m.message_id = "m" + std::to_string(i);
      m.properties = {{"alert", std::string("high")}, {"n", std::int64_t{i}}};
      append_sync(*staging, 0, m);
    }
    ASSERT_EQ(*(*w)->flush(), 1u);
    const auto files = files_under(opt.dir);
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0].extension(), ".avro");
    avro_file_reader_t reader = nullptr;
    ASSERT_EQ(avro_file_reader((opt.dir / files[0]).c_str(), &reader), 0) << avro_strerror();
    avro_schema_t schema = avro_file_reader_get_writer_schema(reader);
    EXPECT_STREQ(avro_schema_name(schema), "Message");
    avro_value_iface_t* iface = avro_generic_class_from_schema(schema);
    avro_value_t rec;
    avro_generic_value_new(iface, &rec);
    int n = 0;
    while (avro_file_reader_read_value(reader, &rec) == 0) {
      avro_value_t field, branch, item;
      const char* text = nullptr;
      size_t size = 0;
      ASSERT_EQ(avro_value_get_by_name(&rec, "EnqueuedTimeUtc", &field, nullptr), 0);
      avro_value_get_string(&field, &text, &size);
      EXPECT_EQ(std::string(text).size(), 28u) << text;  // 2024-05-01T10:00:00.1230000Z
      ASSERT_EQ(avro_value_get_by_name(&rec, "Properties", &field, nullptr), 0);
      ASSERT_EQ(avro_value_get_by_name(&field, "n", &item, nullptr), 0);
      avro_value_get_string(&item, &text, &size);
      EXPECT_EQ(std::string(text), std::to_string(n));
      ASSERT_EQ(avro_value_get_by_name(&rec, "SystemProperties", &field, nullptr), 0);
      ASSERT_EQ(avro_value_get_by_name(&field, "messageId", &item, nullptr), 0);
      avro_value_get_string(&item, &text, &size);
      EXPECT_EQ(std::string(text), "m" + std::to_string(n));
      ASSERT_EQ(avro_value_get_by_name(&field, "connectionDeviceId", &item, nullptr), 0);
      avro_value_get_string(&item, &text, &size);
      EXPECT_EQ(std::string(text), "dev1");
      ASSERT_EQ(avro_value_get_by_name(&rec, "Body", &field, nullptr), 0);
      int disc = -1;
      avro_value_get_discriminant(&field, &disc);
      EXPECT_EQ(disc, 1);
      ASSERT_EQ(avro_value_get_current_branch(&field, &branch), 0);
      const void* bytes = nullptr;
      avro_value_get_bytes(&branch, &bytes, &size);
      EXPECT_EQ(std::string(static_cast<const char*>(bytes), size), fmt::format(R"({{"i":{}}})", n));
      avro_value_reset(&rec);
      ++n;
    }
    EXPECT_EQ(n, 3);
    avro_value_decref(&rec);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
    avro_file_reader_close(reader);
  }
}
#endif

// --- webhook endpoints ---------------------------------------------------------------------------

TEST(routing_webhook, config_reads_hubds_webhook_shape) {
  const config c = parse_ok(R"j({
    "endpoints": {"webhooks": [
      {"name": "hook1", "url": "https://example.com:8443/in?code=1", "batchSize": 10,
       "headers": {"Authorization": "Bearer x", "x-team": "a"}, "caFile": "ca.pem"},
      {"name": "hook2", "url": "HTTPS://[::1]"}]},
    "routes": [{"name": "r", "source": "DeviceMessages", "condition": "true", "endpointNames": ["hook1"], "isEnabled": true}]})j");
  ASSERT_EQ(c.webhooks.size(), 2u);
  const webhook_endpoint& w = c.webhooks[0];
  EXPECT_EQ(w.host, "example.com");
  EXPECT_EQ(w.port, 8443);
  EXPECT_EQ(w.target, "/in?code=1");
  EXPECT_EQ(w.batch_size, 10u);
  ASSERT_EQ(w.headers.size(), 2u);
  EXPECT_EQ(w.headers[0].first, "Authorization");
  EXPECT_EQ(w.ca_file, "ca.pem");
  EXPECT_EQ(c.webhooks[1].host, "::1");
  EXPECT_EQ(c.webhooks[1].port, 443);
  EXPECT_EQ(c.webhooks[1].target, "/");
  EXPECT_EQ(c.webhooks[1].batch_size, 1u);
  EXPECT_EQ(custom_endpoint_names(c).back(), "hook2");
  // The admin API's shape round-trips (PUT /routing compares endpoints and saves this).
  const config again = parse_ok(json::serialize(to_json(c)));
  EXPECT_EQ(json::serialize(to_json(again)), json::serialize(to_json(c)));
  // No webhooks: the ARM shape has no webhooks member.
  EXPECT_FALSE(to_json(parse_ok("{}")).at("endpoints").as_object().contains("webhooks"));
}

TEST(routing_webhook, config_refuses_bad_webhooks) {
  const auto hook = [](std::string_view members) {
    return parse_error(fmt::format(R"j({{"endpoints": {{"webhooks": [{{"name": "h", {}}}]}}}})j", members));
  };
  EXPECT_EQ(hook(R"("url": "https://a/")"), "(accepted)");
  EXPECT_NE(hook(R"("url": "http://a/")").find("endpoint 'h': url must be https://"), std::string::npos);
  EXPECT_NE(hook(R"("batchSize": 1)").find("url is missing"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://u:p@a/")").find("user info"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/#x")").find("fragment"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a b/")").find("spaces"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https:///x")").find("no host"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a:0/")").find("invalid port"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a:65536/")").find("invalid port"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a:/")").find("empty port"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://[::1/")").find("unclosed"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "batchSize": 0)").find("batchSize must be between 1 and 100"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "batchSize": 101)").find("batchSize"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "headers": {"Content-Type": "x"})").find("set by hubd"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "headers": {"x-hubd-partition": "x"})").find("set by hubd"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "headers": {"a b": "x"})").find("not a valid header name"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "headers": {"a": "x\ny"})").find("control character"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "headers": {"a": 1})").find("string value"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "headers": [])").find("headers must be an object"), std::string::npos);
  EXPECT_NE(hook(R"("url": "https://a/", "caFile": 1)").find("caFile must be a string"), std::string::npos);
  // Names: IoT Hub's rules, unique across endpoint types.
  EXPECT_NE(parse_error(R"j({"endpoints": {"eventHubs": [{"name": "H"}], "webhooks": [{"name": "h", "url": "https://a"}]}})j")
                .find("unique across endpoint types"),
            std::string::npos);
  EXPECT_NE(parse_error(R"j({"endpoints": {"webhooks": [{"name": "events", "url": "https://a"}]}})j").find("reserved"),
            std::string::npos);
  EXPECT_NE(parse_error(R"j({"endpoints": {"webhooks": [{"name": "a/b", "url": "https://a"}]}})j").find("a name is 1-64"),
            std::string::npos);
  EXPECT_NE(parse_error(R"j({"endpoints": {"webhooks": {}}})j").find("endpoints.webhooks must be an array"),
            std::string::npos);
}

TEST(routing_webhook, retry_policy) {
  EXPECT_EQ(classify(200), delivery_outcome::delivered);
  EXPECT_EQ(classify(204), delivery_outcome::delivered);
  EXPECT_EQ(classify(0), delivery_outcome::retry);
  EXPECT_EQ(classify(408), delivery_outcome::retry);
  EXPECT_EQ(classify(429), delivery_outcome::retry);
  EXPECT_EQ(classify(500), delivery_outcome::retry);
  EXPECT_EQ(classify(503), delivery_outcome::retry);
  EXPECT_EQ(classify(400), delivery_outcome::invalid);
  EXPECT_EQ(classify(401), delivery_outcome::invalid);
  EXPECT_EQ(classify(404), delivery_outcome::invalid);
  EXPECT_EQ(classify(302), delivery_outcome::invalid);
  EXPECT_EQ(retry_delay(0), std::chrono::milliseconds(250));
  EXPECT_EQ(retry_delay(1), std::chrono::milliseconds(500));
  EXPECT_EQ(retry_delay(6), std::chrono::milliseconds(16000));
  EXPECT_EQ(retry_delay(7), std::chrono::milliseconds(30000));
  EXPECT_EQ(retry_delay(1000), std::chrono::milliseconds(30000));
}

namespace {

// Answers from a script (then 200), recording every request.
struct scripted_transport : webhook_transport {
  std::vector<int> answers;
  std::vector<webhook_request>* seen;
  explicit scripted_transport(std::vector<int> a, std::vector<webhook_request>* s) : answers(std::move(a)), seen(s) {}
  webhook_reply post(const webhook_request& r) override {
    seen->push_back(r);
    if (answers.empty()) return {200, ""};
    const int status = answers.front();
    answers.erase(answers.begin());
    return {status, status == 0 ? "connection refused" : ""};
  }
  void cancel() override {}
};

void append_json(storage::event_log& log, std::uint32_t partition, std::string body, std::string level) {
  telemetry::message m = json_message(std::move(body));
  m.properties.emplace_back("level", std::move(level));
  std::promise<void> done;
  log.append(partition, telemetry::encode(m), [&done](result<storage::log_position>) { done.set_value(); });
  done.get_future().get();
}

webhook_endpoint test_hook(std::uint32_t batch) {
  webhook_endpoint ep;
  ep.name = "hook";
  ep.url = "https://127.0.0.1/in";
  ep.batch_size = batch;
  return ep;
}

}  // namespace

TEST(routing_webhook, posts_batches_in_order_retries_transient_failures_and_skips_rejections) {
  temp_dir dir;
  auto log = open_log(dir.path / "hook", 2);
  auto kv = storage::make_memory_kv();
  for (int i = 0; i < 3; ++i) append_json(*log, 0, fmt::format(R"({{"n":{}}})", i), "critical");
  append_json(*log, 1, R"({"n":100})", "info");

  std::vector<webhook_request> seen;
  // Partition 0's first batch: 503, network error, 429, then 200; partition 1's: 400 (skipped).
  auto d = webhook_delivery::open(*log, *kv, test_hook(2), std::make_unique<scripted_transport>(std::vector<int>{503, 0, 429, 200, 400}, &seen));
  ASSERT_TRUE(d.has_value());
  webhook_delivery& w = **d;
  EXPECT_EQ(w.step(), retry_delay(0));
  EXPECT_EQ(w.step(), retry_delay(1));
  EXPECT_EQ(w.step(), retry_delay(2));
  EXPECT_EQ(w.cursor(0), 0);
  EXPECT_EQ(w.step(), std::chrono::milliseconds(0));  // delivered
  EXPECT_EQ(w.cursor(0), 2);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].body, seen[3].body);  // the same batch again
  auto body = json::parse(seen[3].body);
  ASSERT_TRUE(body.has_value());
  ASSERT_EQ(body->as_array().size(), 2u);
  EXPECT_EQ(json::serialize(body->as_array()[0].at("Body")), R"({"n":0})");
  EXPECT_EQ(body->as_array()[1].at("Properties").at("level").as_string(), "critical");
  EXPECT_EQ(body->as_array()[0].at("SystemProperties").at("contentType").as_string(), "application/json");
  EXPECT_EQ(seen[3].headers.at(2).second, "0-1");  // x-hubd-sequence
  // Partitions take turns: partition 1 next (400: skipped as invalid), then partition 0's last.
  EXPECT_EQ(w.step(), std::chrono::milliseconds(0));
  EXPECT_EQ(w.cursor(1), 1);
  EXPECT_EQ(w.stats().invalid, 1u);
  EXPECT_EQ(w.step(), std::chrono::milliseconds(0));
  EXPECT_EQ(w.cursor(0), 3);
  EXPECT_EQ(w.step(), webhook_delivery::idle_poll);
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(w.stats().delivered, 3u);
  EXPECT_EQ(w.stats().failures, 3u);

  // The cursor is in kv: a new worker (a restart) sends only what comes next.
  append_json(*log, 0, R"({"n":3})", "critical");
  std::vector<webhook_request> seen2;
  auto again = webhook_delivery::open(*log, *kv, test_hook(10), std::make_unique<scripted_transport>(std::vector<int>{}, &seen2));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)->cursor(0), 3);
  EXPECT_EQ((*again)->cursor(1), 1);
  EXPECT_EQ((*again)->step(), std::chrono::milliseconds(0));
  EXPECT_EQ((*again)->step(), webhook_delivery::idle_poll);
  ASSERT_EQ(seen2.size(), 1u);
  EXPECT_NE(seen2[0].body.find(R"("Body":{"n":3})"), std::string::npos) << seen2[0].body;
}

TEST(routing_webhook, a_cursor_past_the_log_starts_over_and_the_thread_stops_promptly) {
  temp_dir dir;
  auto log = open_log(dir.path / "hook", 1);
  auto kv = storage::make_memory_kv();
  storage::write_batch b;
  b.put(webhook_delivery::cursor_key("hook", 0), "42");  // an older log's cursor
  ASSERT_TRUE(kv->write(b).has_value());
  append_json(*log, 0, R"({"n":1})", "x");
  std::vector<webhook_request> seen;
  // Always failing: the thread sits in its backoff and must still stop at once.
  auto d = webhook_delivery::open(*log, *kv, test_hook(1),
                                  std::make_unique<scripted_transport>(std::vector<int>(100, 500), &seen));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ((*d)->cursor(0), 0);
  (*d)->start();
  EXPECT_TRUE(eventually([&] { return (*d)->stats().failures >= 2; }));
  const auto t0 = std::chrono::steady_clock::now();
  (*d)->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ((*d)->cursor(0), 0);
}
