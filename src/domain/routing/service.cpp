#include "domain/routing/service.hpp"

#include "base/json.hpp"
#include "base/log.hpp"
#include "base/text.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <fmt/format.h>

#include <bit>
#include <stdexcept>

namespace hub::routing {

namespace {

// Joins the appends of one message to several endpoints: `done` once the last is durable, with
// the first failure if any, else the position in the lowest-numbered endpoint (events first).
struct fan_in {
  fan_in(int n, service::done_fn d) : left(n), done(std::move(d)) {}
  void complete(std::uint32_t endpoint, const result<storage::log_position>& r) {
    {
      std::scoped_lock lock(mutex);
      if (!r) {
        if (!failure) failure = r.error();
      } else if (!position || endpoint < position_endpoint) {
        position = *r;
        position_endpoint = endpoint;
      }
    }
    if (left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (!done) return;
    if (failure) {
      done(*failure);
    } else {
      done(position.value_or(storage::log_position{}));
    }
  }

  std::atomic<int> left;
  service::done_fn done;
  std::mutex mutex;
  std::optional<error> failure;
  std::optional<storage::log_position> position;
  std::uint32_t position_endpoint = 0;
};

std::int64_t now_ms(const clock& c) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(c.now().time_since_epoch()).count();
}

}  // namespace

service::service(const clock& clk, storage::event_log& events, options opt, twin_source twins)
    : clock_(clk), options_(std::move(opt)), twins_(std::move(twins)) {
  auto t = table::compile(config{});
  if (!t) throw std::logic_error("the default routing configuration does not compile: " + t.error().message);
  auto st = std::make_unique<state>(state{std::move(*t), {&events}});
  current_.store(st.get(), std::memory_order_release);
  states_.push_back(std::move(st));
  worker_ = std::jthread([this](std::stop_token stop) { run_worker(stop); });
}

service::~service() { stop(); }

result<void> service::install(std::unique_ptr<const table> t, std::vector<storage::event_log*> logs) {
  if (!t || logs.size() != t->endpoint_names().size() || logs.empty())
    return make_error(errc::argument_invalid, "every endpoint of the routing table needs its log");
  for (storage::event_log* l : logs) {
    if (l == nullptr || l->partitions() != logs[0]->partitions())
      return make_error(errc::argument_invalid, "every endpoint's log needs the same partition count");
  }
  auto st = std::make_unique<state>(state{std::move(t), std::move(logs)});
  std::scoped_lock lock(states_mutex_);
  current_.store(st.get(), std::memory_order_release);
  states_.push_back(std::move(st));
  return {};
}

const table& service::current() const noexcept { return *current_.load(std::memory_order_acquire)->routes; }

std::uint32_t service::partition_of(const state& st, std::string_view device_id) const noexcept {
  return telemetry::partition_of(device_id, st.logs[0]->partitions());
}

void service::route(const telemetry::message& m, std::uint32_t partition, done_fn done) {
  const state* st = current_.load(std::memory_order_acquire);
  if (st->routes->passthrough()) {
    // No routes: exactly what telemetry did before routing existed.
    st->logs[0]->append(partition, telemetry::encode(m), std::move(done));
    return;
  }
  if (st->routes->needs_twin(source::device_messages)) {
    // Twin reads block on storage: on the routing thread, in order.
    auto job = [this, st, m, done]() mutable { deliver(*st, source::device_messages, m, std::move(done)); };
    if (!post(std::move(job)))
      done(make_error(errc::service_unavailable, "The hub is stopping or too busy to route the message"));
    return;
  }
  deliver(*st, source::device_messages, m, std::move(done));
}

void service::route_batch(const std::vector<telemetry::message>& ms, std::uint32_t partition,
                          std::function<void(result<void>)> done) {
  const state* st = current_.load(std::memory_order_acquire);
  if (!st->routes->passthrough()) {
    telemetry::router::route_batch(ms, partition, std::move(done));
    return;
  }
  std::vector<std::string> records;
  records.reserve(ms.size());
  for (const auto& m : ms) records.push_back(telemetry::encode(m));
  st->logs[0]->append(partition, std::move(records),
                      [done = std::move(done)](result<std::vector<storage::log_position>> r) {
                        if (!done) return;
                        if (!r) {
                          done(r.error());
                        } else {
                          done(result<void>{});
                        }
                      });
}

void service::deliver(const state& st, source s, const telemetry::message& m, done_fn done) {
  const table& t = *st.routes;
  message_view view(m, to_iso8601(clock_.now()), &twins_);
  const selection sel = t.select(s, view);
  if (sel.endpoints == 0) {
    if (s == source::device_messages) count_orphan();
    if (done) done(storage::log_position{});
    return;
  }
  const std::uint32_t partition = partition_of(st, m.device_id);
  const int n = std::popcount(sel.endpoints);
  std::shared_ptr<fan_in> join = n > 1 ? std::make_shared<fan_in>(n, std::move(done)) : nullptr;
  std::optional<std::string> plain;  // encoded once for every endpoint without enrichments
  for (std::uint32_t i = 0; i < st.logs.size(); ++i) {
    const endpoint_set bit = endpoint_set{1} << i;
    if ((sel.endpoints & bit) == 0) continue;
    std::string data;
    if (t.enriched() & bit) {
      telemetry::message copy = m;
      t.enrich(i, copy, view, options_.hub_name);
      if (telemetry::billed_size(copy) > options_.max_message_bytes) {
        // IoT Hub drops an enriched message past 256 KB (for that endpoint only).
        dropped_.fetch_add(1, std::memory_order_relaxed);
        hub::log::get("routing")->warn("message from '{}' to endpoint '{}' dropped: over {} bytes once enriched",
                                       m.device_id, t.endpoint_names()[i], options_.max_message_bytes);
        if (join) {
          join->complete(i, storage::log_position{});
        } else if (done) {
          done(storage::log_position{});
        }
        continue;
      }
      data = telemetry::encode(copy);
    } else {
      if (!plain) plain = telemetry::encode(m);
      data = *plain;
    }
    if (join) {
      st.logs[i]->append(partition, std::move(data),
                         [join, i](result<storage::log_position> r) { join->complete(i, r); });
    } else if (done) {
      st.logs[i]->append(partition, std::move(data), std::move(done));
    } else {
      st.logs[i]->append(partition, std::move(data), [](result<storage::log_position>) {});
    }
  }
}

void service::count_orphan() {
  const std::uint64_t total = orphaned_.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::int64_t now = now_ms(clock_);
  std::int64_t last = orphan_log_at_.load(std::memory_order_relaxed);
  const std::int64_t interval = std::chrono::milliseconds(options_.orphan_log_interval).count();
  if (now - last < interval) return;
  if (!orphan_log_at_.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  const std::uint64_t before = orphans_logged_.exchange(total, std::memory_order_relaxed);
  hub::log::get("routing")->info(
      "{} device messages orphaned (no route matched and the fallback route is disabled); {} in all",
      total - before, total);
}

bool service::post(std::function<void()> job) {
  {
    std::scoped_lock lock(queue_mutex_);
    if (stopped_ || queue_.size() >= options_.max_queued) return false;
    queue_.push_back(std::move(job));
  }
  queue_cv_.notify_one();
  return true;
}

void service::run_worker(std::stop_token stop) {
  std::unique_lock lock(queue_mutex_);
  while (true) {
    queue_cv_.wait(lock, [&] { return !queue_.empty() || stopped_ || stop.stop_requested(); });
    if (queue_.empty()) return;  // stopping and drained
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
}

void service::stop() {
  {
    std::scoped_lock lock(queue_mutex_);
    if (stopped_ && !worker_.joinable()) return;
    stopped_ = true;
  }
  queue_cv_.notify_all();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

void service::publish(source s, telemetry::message m) {
  const state* st = current_.load(std::memory_order_acquire);
  if (!st->routes->has_routes(s)) return;
  if (!post([this, s, m = std::move(m)] { deliver(*current_.load(std::memory_order_acquire), s, m, nullptr); })) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    hub::log::get("routing")->warn("{} event of '{}' dropped: the routing queue is full or stopped", to_string(s),
                                   m.device_id);
  }
}

void service::twin_changed(std::string_view device_id, std::string_view module_id, std::string_view op_type,
                           const bj::object& body, sys_time at) {
  if (!wants(source::twin_change_events)) return;
  publish(source::twin_change_events,
          twin_change_event(event_origin{options_.hub_name, device_id, module_id, at}, op_type, body));
}

void service::identity_created(std::string_view device_id, std::string_view module_id, sys_time at) {
  if (!wants(source::device_lifecycle_events)) return;
  auto job = [this, device = std::string(device_id), module = std::string(module_id), at] {
    std::optional<bj::object> twin;
    if (twins_) twin = twins_(device, module);
    if (!twin) {
      // Deleted again before we got here, or no twins: the identity's ids only.
      twin = bj::object{{"deviceId", device}};
      if (!module.empty()) (*twin)["moduleId"] = module;
    }
    deliver(*current_.load(std::memory_order_acquire), source::device_lifecycle_events,
            lifecycle_event(event_origin{options_.hub_name, device, module, at}, true, *twin), nullptr);
  };
  if (!post(std::move(job))) dropped_.fetch_add(1, std::memory_order_relaxed);
}

void service::identity_deleted(std::string_view device_id, std::string_view module_id,
                               const std::optional<bj::object>& twin, sys_time at) {
  if (!wants(source::device_lifecycle_events)) return;
  bj::object doc;
  if (twin) {
    doc = *twin;
  } else {
    doc["deviceId"] = device_id;
    if (!module_id.empty()) doc["moduleId"] = module_id;
  }
  publish(source::device_lifecycle_events,
          lifecycle_event(event_origin{options_.hub_name, device_id, module_id, at}, false, doc));
}

void service::connection_changed(std::string_view device_id, std::string_view module_id, bool connected, sys_time at) {
  if (!wants(source::device_connection_state_events)) return;
  publish(source::device_connection_state_events,
          connection_event(event_origin{options_.hub_name, device_id, module_id, at}, connected, sequences_.next(at)));
}

selection service::test(source s, const telemetry::message& m) const {
  const state* st = current_.load(std::memory_order_acquire);
  message_view view(m, to_iso8601(clock_.now()), &twins_);
  return st->routes->select(s, view, /*explain=*/true);
}

// --- the admin API ---------------------------------------------------------------------------

bj::value service::configuration() const { return to_json(current().configuration()); }

result<void> service::reconfigure(const bj::value& arm_routing) {
  auto c = parse(arm_routing, options_.lim);
  if (!c) return c.error();
  std::scoped_lock lock(reconfigure_mutex_);
  const state* st = current_.load(std::memory_order_acquire);
  const bj::value running = to_json(st->routes->configuration()).at("endpoints");
  if (json::serialize(running) != json::serialize(to_json(*c).at("endpoints"))) {
    return make_error(errc::argument_invalid,
                      "endpoints cannot change while hubd runs (their logs open at start): change routes, "
                      "fallbackRoute and enrichments here, endpoints in the routing file and restart hubd");
  }
  auto t = table::compile(*c);
  if (!t) return t.error();
  if (persist_) {
    if (auto saved = persist_(to_json(*c)); !saved) return saved.error();
  }
  if (auto installed = install(std::move(*t), st->logs); !installed) return installed;
  hub::log::get("routing")->info("routing replaced: {} routes, fallback {}, {} enrichments", c->routes.size(),
                                 c->fallback.enabled ? "on" : "off", c->enrichments.size());
  return {};
}

namespace {

std::string text_of(const bj::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  return json::serialize(v);
}

error invalid_test(std::string message) { return make_error(errc::argument_invalid, std::move(message)); }

}  // namespace

result<bj::value> service::test_all(const bj::value& input) const {
  if (!input.is_object()) return invalid_test("the test input must be a JSON object");
  const bj::object& in = input.get_object();
  source s = source::device_messages;
  if (const bj::value* src = in.if_contains("routingSource"); src && !src->is_null()) {
    const auto parsed = src->is_string() ? source_from_string(src->get_string()) : std::nullopt;
    if (!parsed) return invalid_test("routingSource must be DeviceMessages, TwinChangeEvents, DeviceLifecycleEvents or "
                                     "DeviceConnectionStateEvents");
    s = *parsed;
  }
  telemetry::message m;
  if (const bj::value* msg = in.if_contains("message"); msg && !msg->is_null()) {
    if (!msg->is_object()) return invalid_test("message must be an object");
    const bj::object& mo = msg->get_object();
    if (const bj::value* body = mo.if_contains("body"); body && !body->is_null()) m.body = text_of(*body);
    if (const bj::value* app = mo.if_contains("appProperties"); app && !app->is_null()) {
      if (!app->is_object()) return invalid_test("message.appProperties must be an object");
      for (const auto& [k, v] : app->get_object()) m.properties.emplace_back(std::string(k), text_of(v));
    }
    if (const bj::value* sys = mo.if_contains("systemProperties"); sys && !sys->is_null()) {
      if (!sys->is_object()) return invalid_test("message.systemProperties must be an object");
      for (const auto& [key, v] : sys->get_object()) {
        std::string_view k = key;
        if (k.starts_with('$')) k.remove_prefix(1);
        std::string value = text_of(v);
        if (text::iequals(k, "contentType")) {
          m.content_type = value;
        } else if (text::iequals(k, "contentEncoding")) {
          m.content_encoding = value;
        } else if (text::iequals(k, "connectionDeviceId")) {
          m.device_id = value;
        } else if (text::iequals(k, "connectionModuleId")) {
          m.module_id = value;
        } else if (text::iequals(k, "messageId")) {
          m.message_id = value;
        } else if (text::iequals(k, "correlationId")) {
          m.correlation_id = value;
        } else if (text::iequals(k, "userId")) {
          m.user_id = value;
        } else if (text::iequals(k, "dt-dataschema")) {
          m.model_id = value;
        } else if (text::iequals(k, "dt-subject")) {
          m.component = value;
        } else {
          return invalid_test(fmt::format("message.systemProperties: '{}' is not a system property routing reads",
                                          std::string_view(key)));
        }
      }
    }
  }
  // The twin given with the test; without one, the identity's own (when it names one).
  std::optional<bj::object> given;
  if (const bj::value* twin = in.if_contains("twin"); twin && !twin->is_null()) {
    if (!twin->is_object()) return invalid_test("twin must be an object");
    given = twin->get_object();
  }
  const twin_source from_input = [&given](std::string_view, std::string_view) { return given; };
  const twin_source* twins = given ? &from_input : (m.device_id.empty() ? nullptr : &twins_);

  const state* st = current_.load(std::memory_order_acquire);
  const table& t = *st->routes;
  message_view view(m, to_iso8601(clock_.now()), twins);
  const selection sel = t.select(s, view, /*explain=*/true);
  bj::array routes;
  for (const std::string& name : sel.matched_routes) {
    for (const routing::route& r : t.configuration().routes) {
      if (r.name == name) routes.push_back(bj::object{{"properties", to_json(r)}});
    }
  }
  bj::array endpoints;
  for (std::size_t i = 0; i < t.endpoint_names().size(); ++i) {
    if (sel.endpoints & (endpoint_set{1} << i)) endpoints.emplace_back(t.endpoint_names()[i]);
  }
  return bj::value(bj::object{{"routes", std::move(routes)}, {"endpoints", std::move(endpoints)}, {"fallback", sel.fallback}});
}

}  // namespace hub::routing
