// hubd-micro: micro benchmarks of what each device-to-cloud message costs in CPU, piece by piece.
// Run with `make bench-micro` (release preset); figures in docs/benchmarks.md ("Micro benchmarks").
//
// The query language: parsing a twin query, and evaluating its WHERE over one twin document (the
// per-twin cost of a registry scan; routing conditions use the same evaluator).
#include "codec/mqtt/codec.hpp"
#include "codec/mqtt/session.hpp"
#include "base/json.hpp"
#include "domain/auth/sas.hpp"
#include "domain/query/query.hpp"
#include "domain/routing/service.hpp"
#include "domain/telemetry/message.hpp"
#include "domain/telemetry/service.hpp"
#include "heads/mqtt/topics.hpp"
#include "storage/event_log.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <semaphore>
#include <string>
#include <vector>

namespace {

constexpr std::string_view device_id = "bench-device-0001";
constexpr std::string_view hub_host = "myhub.example";

// The topic the Azure IoT device SDKs send telemetry to: the system properties they set
// ($.mid, $.ct, $.ce) plus two application properties, url-encoded.
std::string azure_topic() {
  return "devices/" + std::string(device_id) +
         "/messages/events/%24.mid=6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d&%24.ct=application%2Fjson"
         "&%24.ce=utf-8&temperatureAlert=false&site=plant%207";
}

std::string payload_256() {
  std::string p = R"({"temperature":21.5,"humidity":48.25,"pad":")";
  p.resize(254, 'x');
  p += "\"}";
  return p;
}

hub::mqtt::publish azure_publish(std::uint16_t id) {
  hub::mqtt::publish p;
  p.topic = azure_topic();
  p.payload = payload_256();
  p.qos = 1;
  p.packet_id = id;
  return p;
}

std::string wire(const hub::mqtt::packet& p) {
  std::string out;
  hub::mqtt::encode(p, out);
  return out;
}

// --- MQTT codec ---------------------------------------------------------------------------------

void mqtt_decode_publish_qos1(benchmark::State& state) {
  const std::string bytes = wire(azure_publish(42));
  for (auto _ : state) {
    auto r = hub::mqtt::decode(bytes);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
}
BENCHMARK(mqtt_decode_publish_qos1);

void mqtt_encode_puback(benchmark::State& state) {
  std::string out;
  const hub::mqtt::packet ack = hub::mqtt::puback{42};
  for (auto _ : state) {
    out.clear();
    hub::mqtt::encode(ack, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(mqtt_encode_puback);

// One read's worth of input: 64 QoS 1 publishes in one buffer, through a connected session.
void mqtt_session_recv_64_publishes(benchmark::State& state) {
  hub::mqtt::server_session session;
  std::vector<hub::mqtt::event> events;
  hub::mqtt::connect c;
  c.client_id = device_id;
  c.keep_alive = 60;
  session.recv(wire(c), events);
  std::string buf;
  for (std::uint16_t i = 1; i <= 64; ++i) hub::mqtt::encode(azure_publish(i), buf);
  for (auto _ : state) {
    events.clear();
    session.recv(buf, events);
    benchmark::DoNotOptimize(events.data());
  }
  if (session.closed() || events.size() != 64) state.SkipWithError("session did not yield 64 publishes");
  state.SetItemsProcessed(state.iterations() * 64);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(buf.size()));
}
BENCHMARK(mqtt_session_recv_64_publishes);

// --- MQTT head: topic and property bag ----------------------------------------------------------

void mqtt_topic_to_telemetry(benchmark::State& state) {
  const std::string topic = azure_topic();
  for (auto _ : state) {
    auto target = hub::mqtt_head::classify_publish(topic);
    auto props = hub::mqtt_head::parse_property_bag(target.property_bag);
    hub::telemetry::message m;
    hub::mqtt_head::apply_properties(*props, m);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(mqtt_topic_to_telemetry);

// --- SAS ----------------------------------------------------------------------------------------

void sas_validate_device_token(benchmark::State& state) {
  const std::string key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";  // 32 bytes, base64
  const std::string resource = std::string(hub_host) + "/devices/" + std::string(device_id);
  const std::string token = hub::auth::make_sas_token(resource, key, 4102444800);  // 2100-01-01
  for (auto _ : state) {
    auto t = hub::auth::parse_sas_token(token);
    bool ok = t && hub::auth::signature_matches(*t, key);
    benchmark::DoNotOptimize(ok);
    if (!ok) state.SkipWithError("token did not validate");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(sas_validate_device_token);

// --- Telemetry message --------------------------------------------------------------------------

hub::telemetry::message sample_message() {
  hub::telemetry::message m;
  auto target = hub::mqtt_head::classify_publish(azure_topic());
  hub::mqtt_head::apply_properties(*hub::mqtt_head::parse_property_bag(target.property_bag), m);
  m.body = payload_256();
  m.device_id = device_id;
  m.generation_id = "638123456789012345";
  return m;
}

void telemetry_encode(benchmark::State& state) {
  const auto m = sample_message();
  for (auto _ : state) {
    auto bytes = hub::telemetry::encode(m);
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(telemetry_encode);

void telemetry_decode(benchmark::State& state) {
  const std::string bytes = hub::telemetry::encode(sample_message());
  for (auto _ : state) {
    auto m = hub::telemetry::decode(bytes);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
}
BENCHMARK(telemetry_decode);

// --- Query language -----------------------------------------------------------------------------

constexpr std::string_view twin_query =
    "SELECT * FROM devices WHERE tags.location.region = 'US' AND "
    "properties.reported.telemetryConfig.sendFrequencyInSecs >= 60 AND "
    "properties.reported.connectivity.type IN ['wired', 'wifi', 'cellular'] AND is_defined(tags.[[group]])";

// A twin as the registry serves it: identity fields, tags, desired and reported with metadata.
boost::json::value typical_twin() {
  return *hub::json::parse(R"({
    "deviceId":"bench-device-0001","etag":"AAAAAAAAAAc=","deviceEtag":"NTQ1OTg4NzYz","status":"enabled",
    "statusUpdateTime":"0001-01-01T00:00:00Z","connectionState":"Connected",
    "lastActivityTime":"2024-05-07T00:50:38.0543092Z","cloudToDeviceMessageCount":0,"authenticationType":"sas",
    "x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"modelId":"","version":42,
    "capabilities":{"iotEdge":false},
    "tags":{"location":{"region":"US","plant":"Redmond43","building":7},"group":"north","owner":"ops"},
    "properties":{
      "desired":{"telemetryConfig":{"configId":"db00ebf5-eeeb-42be-86a1-458cccb69e57","sendFrequencyInSecs":300},
        "$metadata":{"$lastUpdated":"2024-05-08T18:55:31.8514657Z","$lastUpdatedVersion":4,
          "telemetryConfig":{"$lastUpdated":"2024-05-08T18:55:31.8514657Z","$lastUpdatedVersion":4,
            "configId":{"$lastUpdated":"2024-05-08T18:55:31.8514657Z","$lastUpdatedVersion":4},
            "sendFrequencyInSecs":{"$lastUpdated":"2024-05-08T18:55:31.8514657Z","$lastUpdatedVersion":4}}},
        "$version":4},
      "reported":{"connectivity":{"type":"cellular","signal":-71},
        "telemetryConfig":{"configId":"db00ebf5-eeeb-42be-86a1-458cccb69e57","sendFrequencyInSecs":300,"status":"Success"},
        "firmware":{"version":"1.4.2","updatedAt":"2024-04-01T10:00:00Z"},"temperature":21.5,
        "$metadata":{"$lastUpdated":"2024-05-08T18:54:31.8539679Z"},
        "$version":7}}})");
}

void query_parse(benchmark::State& state) {
  for (auto _ : state) {
    auto q = hub::query::parse_query(twin_query);
    benchmark::DoNotOptimize(q);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(query_parse);

// The WHERE of twin_query over one matching twin (every condition is read, none short-circuits).
void query_where_one_twin(benchmark::State& state) {
  const auto q = hub::query::parse_query(twin_query);
  if (!q) {
    state.SkipWithError("query does not parse");
    return;
  }
  const boost::json::value twin = typical_twin();
  const hub::query::document_resolver doc(twin.get_object());
  for (auto _ : state) {
    const bool hit = q->where->matches(doc);
    benchmark::DoNotOptimize(hit);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(query_where_one_twin);

// The same twin through a whole run (WHERE, then SELECT * copies the twin as the result row).
void query_run_one_twin(benchmark::State& state) {
  const auto q = hub::query::parse_query(twin_query);
  const boost::json::value twin = typical_twin();
  for (auto _ : state) {
    hub::query::execution ex(*q);
    ex.add(twin.get_object());
    auto rows = ex.finish();
    benchmark::DoNotOptimize(rows);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(query_run_one_twin);

// --- Event log append ---------------------------------------------------------------------------
// Shared by the producer threads of one run: thread 0 opens it before the loop and closes it after
// (the start and the end of the benchmark loop are barriers for all threads).

struct log_fixture {
  std::filesystem::path dir;
  std::unique_ptr<hub::storage::event_log> log;
};
log_fixture* g_log = nullptr;

bool open_log(benchmark::State& state, bool sync) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "hubd-micro-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    state.SkipWithError("mkdtemp failed");
    return false;
  }
  hub::storage::log_options o;
  o.dir = tmpl;
  o.sync = sync;
  auto log = hub::storage::event_log::open(o);
  if (!log) {
    std::filesystem::remove_all(tmpl);
    state.SkipWithError("event_log::open failed");
    return false;
  }
  g_log = new log_fixture{tmpl, std::move(*log)};
  return true;
}

void close_log() {
  if (!g_log) return;
  g_log->log->close();
  g_log->log.reset();
  std::error_code ec;
  std::filesystem::remove_all(g_log->dir, ec);
  delete g_log;
  g_log = nullptr;
}

// Each producer keeps up to `window` appends in flight (as a device keeps publishes in flight
// until their PUBACK) and waits for all of its completions before the timer stops.
void append_loop(benchmark::State& state, std::ptrdiff_t window) {
  const std::string record(256, 'r');
  std::counting_semaphore<> slots(window);
  std::atomic<std::int64_t> failed{0};
  for (auto _ : state) {
    // Read after the start barrier; null only when thread 0 failed to open the log (skipped run).
    auto* log = g_log ? g_log->log.get() : nullptr;
    if (!log) continue;
    const auto partition = static_cast<std::uint32_t>(state.thread_index()) % log->partitions();
    slots.acquire();
    log->append(partition, record, [&](hub::result<hub::storage::log_position> r) {
      if (!r) failed.fetch_add(1, std::memory_order_relaxed);
      slots.release();
    });
  }
  for (std::ptrdiff_t i = 0; i < window; ++i) slots.acquire();  // every completion has run
  if (failed.load() != 0) state.SkipWithError("append failed");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(record.size()));
}

// (a) The CPU path: no fdatasync; one producer, 64 in flight.
void event_log_append_nosync(benchmark::State& state) {
  if (state.thread_index() == 0) open_log(state, false);
  append_loop(state, 64);
  if (state.thread_index() == 0) close_log();
}
BENCHMARK(event_log_append_nosync)->UseRealTime()->Threads(1)->Threads(4);

// (b) Durable: group commit with fdatasync, several producers, 64 in flight each.
void event_log_append_sync(benchmark::State& state) {
  if (state.thread_index() == 0) open_log(state, true);
  append_loop(state, 64);
  if (state.thread_index() == 0) close_log();
}
BENCHMARK(event_log_append_sync)->UseRealTime()->Threads(1)->Threads(4)->Threads(8)->MinTime(2.0);

// --- Routing on the hot path -------------------------------------------------------------------
// telemetry::service::send into a no-sync log, 64 in flight: without a router (what hubd did
// before routing), through routing::service with the default configuration (no routes: the
// pass-through), and with 10 routes (property and $body conditions, one match per message).

constexpr std::string_view ten_routes = R"j({
  "endpoints": {"eventHubs": [{"name": "e1"}, {"name": "e2"}]},
  "routes": [
    {"name": "r0", "source": "DeviceMessages", "condition": "level = 'critical'", "endpointNames": ["e1"]},
    {"name": "r1", "source": "DeviceMessages", "condition": "$body.temperature > 100", "endpointNames": ["e1"]},
    {"name": "r2", "source": "DeviceMessages", "condition": "STARTS_WITH($connectionDeviceId, 'plant-')", "endpointNames": ["e2"]},
    {"name": "r3", "source": "DeviceMessages", "condition": "zone IN ['a', 'b', 'c']", "endpointNames": ["e2"]},
    {"name": "r4", "source": "DeviceMessages", "condition": "as_number(severity) >= 4", "endpointNames": ["e1"]},
    {"name": "r5", "source": "DeviceMessages", "condition": "$contentType = 'text/plain'", "endpointNames": ["e2"]},
    {"name": "r6", "source": "DeviceMessages", "condition": "$body.status = 'failed'", "endpointNames": ["e1"]},
    {"name": "r7", "source": "DeviceMessages", "condition": "NOT is_defined(prop2) AND kind = 'x'", "endpointNames": ["e2"]},
    {"name": "r8", "source": "DeviceMessages", "condition": "$messageId = 'never'", "endpointNames": ["e1"]},
    {"name": "r9", "source": "DeviceMessages", "condition": "site = 'plant 7'", "endpointNames": ["events"]}
  ]
})j";

struct routed_fixture {
  std::filesystem::path dir;
  std::vector<std::unique_ptr<hub::storage::event_log>> logs;
  std::unique_ptr<hub::telemetry::service> telemetry;
  std::unique_ptr<hub::routing::service> routing;
};

enum class routed_mode { direct, default_config, ten_routes };

void telemetry_send(benchmark::State& state, routed_mode mode) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "hubd-micro-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  hub::system_clock clk;
  routed_fixture f{tmpl, {}, nullptr, nullptr};
  for (const char* name : {"events", "e1", "e2"}) {
    hub::storage::log_options o;
    o.dir = (f.dir / name).string();
    o.sync = false;
    f.logs.push_back(std::move(hub::storage::event_log::open(o).value()));
  }
  f.telemetry = std::make_unique<hub::telemetry::service>(*f.logs[0]);
  if (mode != routed_mode::direct) {
    f.routing = std::make_unique<hub::routing::service>(clk, *f.logs[0], hub::routing::options{"myhub"},
                                                        hub::routing::twin_source{});
    if (mode == routed_mode::ten_routes) {
      auto t = hub::routing::table::compile(hub::routing::parse(ten_routes).value());
      (void)f.routing->install(std::move(t.value()), {f.logs[0].get(), f.logs[1].get(), f.logs[2].get()});
    }
    f.telemetry->set_router(f.routing.get());
  }
  auto m = sample_message();  // site = 'plant 7': r9 takes it to events
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.body = R"({"temperature": 21.5, "status": "ok", "pad": ")" + std::string(200, 'x') + R"("})";
  std::counting_semaphore<> slots(64);
  std::atomic<std::int64_t> failed{0};
  for (auto _ : state) {
    slots.acquire();
    f.telemetry->send(m, [&](hub::result<hub::storage::log_position> r) {
      if (!r) failed.fetch_add(1, std::memory_order_relaxed);
      slots.release();
    });
  }
  for (int i = 0; i < 64; ++i) slots.acquire();
  if (failed.load() != 0) state.SkipWithError("send failed");
  state.SetItemsProcessed(state.iterations());
  if (f.routing) f.routing->stop();
  for (auto& l : f.logs) l->close();
  std::error_code ec;
  std::filesystem::remove_all(f.dir, ec);
}
BENCHMARK_CAPTURE(telemetry_send, direct, routed_mode::direct)->UseRealTime();
BENCHMARK_CAPTURE(telemetry_send, routed_no_routes, routed_mode::default_config)->UseRealTime();
BENCHMARK_CAPTURE(telemetry_send, routed_10_routes, routed_mode::ten_routes)->UseRealTime();

// The evaluation alone: one message against 10 compiled routes (the $body parsed once).
void routing_select_10_routes(benchmark::State& state) {
  auto t = hub::routing::table::compile(hub::routing::parse(ten_routes).value()).value();
  auto m = sample_message();
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.body = R"({"temperature": 21.5, "status": "ok"})";
  for (auto _ : state) {
    hub::routing::message_view v(m, "2024-05-01T10:00:00.0000000Z", nullptr);
    auto s = t->select(hub::routing::source::device_messages, v);
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(routing_select_10_routes);

}  // namespace

BENCHMARK_MAIN();
