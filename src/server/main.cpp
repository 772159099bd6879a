// hubd: the daemon. Parses the configuration, prepares the data folder (identity, certificates,
// database), wires the domain services to the protocol heads and serves until SIGTERM/SIGINT.
#include "base/clock.hpp"
#include "base/json.hpp"
#include "base/log.hpp"
#include "domain/auth/service.hpp"
#include "domain/c2d/service.hpp"
#include "domain/certificates/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/methods/service.hpp"
#include "domain/registry/service.hpp"
#include "domain/routing/service.hpp"
#include "domain/telemetry/service.hpp"
#include "domain/throttling/throttle.hpp"
#include "domain/twins/service.hpp"
#include "heads/amqp/feedback_watch.hpp"
#include "heads/amqp/partition_watch.hpp"
#include "heads/amqp/services.hpp"
#include "heads/http/router.hpp"
#include "heads/mqtt/services.hpp"
#include "heads/mqtt/session_store.hpp"
#include "server/config.hpp"
#include "server/files.hpp"
#include "server/listener.hpp"
#include "server/routing_setup.hpp"
#include "server/tls_material.hpp"
#include "storage/event_log.hpp"
#include "storage/kv.hpp"

#include <fmt/format.h>
#include <sys/resource.h>

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <variant>

namespace {

using namespace hub;
using namespace hub::server;
namespace fs = std::filesystem;

// The connection string the banner shows: iothubowner, as the Azure portal offers first.
std::string owner_connection_string(const auth::hub_identity& identity) {
  const auth::policy* p = identity.find("iothubowner");
  if (!p && !identity.policies.empty()) p = &identity.policies.front();
  return p ? auth::connection_string(identity, *p) : std::string("(hub.json has no shared access policy)");
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

// The partition count is fixed when the event log is created, as an IoT hub's is: a device's
// messages go to partition hash(id) % count, so another count would scatter them.
void check_partitions(const fs::path& events_dir, std::uint32_t wanted) {
  std::error_code ec;
  if (!fs::is_directory(events_dir, ec)) return;
  std::uint32_t existing = 0;
  for (const auto& entry : fs::directory_iterator(events_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.size() > 1 && name[0] == 'p' &&
        name.find_first_not_of("0123456789", 1) == std::string::npos) {
      ++existing;
    }
  }
  if (existing != 0 && existing != wanted) {
    throw startup_error(fmt::format("the event log {} has {} partitions; --partitions {} cannot change that "
                                    "(start with --partitions {}, or a new data folder)",
                                    events_dir.string(), existing, wanted, existing));
  }
}

// Runs `task` every `interval` on its own thread (the tasks block on storage): expired telemetry
// segments once a minute, cloud-to-device expiry and lock timeouts once a second.
class periodic {
 public:
  periodic(std::chrono::milliseconds interval, std::function<void()> task)
      : thread_([this, interval, task = std::move(task)](std::stop_token stop) { run(stop, interval, task); }) {}
  ~periodic() {
    thread_.request_stop();
    cv_.notify_all();
  }

 private:
  void run(std::stop_token stop, std::chrono::milliseconds interval, const std::function<void()>& task) {
    std::unique_lock lock(mutex_);
    while (!stop.stop_requested()) {
      lock.unlock();
      task();
      lock.lock();
      cv_.wait_for(lock, stop, interval, [] { return false; });
    }
  }

  std::mutex mutex_;
  std::condition_variable_any cv_;
  std::jthread thread_;  // last: starts after the members it uses exist, joins before they go
};

// "d2c 100/s (burst 100), registry 1.67/s (burst 1), device.d2c 1/s ...; backlog 10000 ms".
std::string describe(const throttling::limits& l) {
  std::vector<std::string> parts;
  const auto add = [&](const std::string& prefix, const throttling::rate& r, throttling::operation op) {
    if (r.unlimited()) return;
    parts.push_back(fmt::format("{}{} {:.4g}/s (burst {:.4g})", prefix, throttling::key_of(op), r.per_second,
                                r.burst >= 1 ? r.burst : std::max(1.0, r.per_second)));
  };
  for (std::size_t i = 0; i < throttling::operation_count; ++i) add("", l.hub[i], static_cast<throttling::operation>(i));
  for (std::size_t i = 0; i < throttling::operation_count; ++i)
    add("device.", l.device[i], static_cast<throttling::operation>(i));
  return fmt::format("{}; backlog {} ms", join(parts, ", "), l.backlog.count());
}

// Every connection is a file descriptor: raise the soft limit (often 1024) to the hard one, which
// the administrator controls (ulimit -Hn, LimitNOFILE= in systemd).
void raise_open_files_limit(spdlog::logger& log) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  if (lim.rlim_cur == RLIM_INFINITY) {
    log.info("open files limit: unlimited");
  } else {
    log.info("open files limit: {}{}", static_cast<std::uint64_t>(lim.rlim_cur),
             lim.rlim_cur < 4096 ? " (low: each connection takes one; raise the hard limit)" : "");
  }
}

// Printed to stdout, never to the log: the connection string carries a key, and logs must not.
void print_identity(const config& cfg, const data_layout& layout, const auth::hub_identity& identity) {
  fmt::print("  data folder:        {}\n", layout.dir.string());
  fmt::print("  CA certificate:     {}   (trust it: export NODE_EXTRA_CA_CERTS={})\n", layout.ca_cert().string(),
             layout.ca_cert().string());
  fmt::print("  connection string:  {}\n", owner_connection_string(identity));
}

int run(const config& cfg) {
  hub::log::init(cfg.log_level);
  auto log = hub::log::get("hubd");
  raise_open_files_limit(*log);

  data_layout layout{fs::absolute(cfg.data_dir).lexically_normal()};
  ensure_data_dir(layout);

  // The database first: its lock keeps a second hubd off this folder before it rewrites
  // hub.json or the certificates under the running one.
  auto kv = storage::open_rocksdb(layout.db().string());
  if (!kv) throw startup_error(fmt::format("cannot open database {}: {}", layout.db().string(), kv.error().message));

  identity_outcome id = ensure_identity(layout, cfg.host_name);
  if (id.created) log->info("created hub identity {}", layout.hub_json().string());
  if (id.host_name_changed) log->info("host name changed to {}; policies keep their keys", cfg.host_name);

  hub::system_clock clk;
  const tls_report tls = ensure_tls_material(layout, tls_names{cfg.host_name, cfg.listen}, clk.now());
  if (tls.ca_created) log->info("created CA {} ({})", layout.ca_cert().string(), tls.ca_subject);
  for (const std::string& warning : tls.warnings) log->warn("{}", warning);
  if (tls.server_cert_issued)
    log->info("issued server certificate {} ({}): {}", layout.server_cert().string(), tls.reason,
              join(tls.subject_alt_names, ", "));

  if (cfg.init_only) {
    fmt::print("hubd {} — IoT hub \"{}\" initialised\n", hubd_version, id.identity.host_name);
    print_identity(cfg, layout, id.identity);
    fmt::print("  server certificate: {}   ({}, until {})\n", layout.server_cert().string(),
               join(tls.subject_alt_names, ", "), to_iso8601(tls.server_not_after).substr(0, 10));
    std::fflush(stdout);
    return 0;
  }

  check_partitions(layout.events(), cfg.partitions);
  storage::log_options log_opts;
  log_opts.dir = layout.events().string();
  log_opts.partitions = cfg.partitions;
  log_opts.retention = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.retention);
  log_opts.commit_delay = std::chrono::microseconds(cfg.commit_delay_us);
  auto events = storage::event_log::open(log_opts);
  if (!events) throw startup_error(fmt::format("cannot open the event log: {}", events.error().message));

  registry::service registry(**kv, clk);
  auth::service auth(id.identity, registry, clk);
  connections::connection_table connections(registry, clk);
  // MQTT persistent sessions, kept in the database so that they survive a restart.
  mqtt_head::session_store mqtt_sessions(kv->get());
  c2d::options c2d_opts;
  c2d_opts.default_ttl = cfg.c2d_ttl;
  c2d_opts.max_delivery_count = cfg.c2d_max_delivery_count;
  c2d_opts.feedback_ttl = cfg.c2d_feedback_ttl;
  // Feedback records for the service: every AMQP feedback receiver waiting for them wakes.
  amqp_head::feedback_watch feedback_watch;
  c2d::service c2d(**kv, registry, clk, c2d_opts);
  c2d.set_feedback_notifier([&feedback_watch] { feedback_watch.notify(); });
  if (auto loaded = c2d.load(); !loaded)
    throw startup_error(fmt::format("cannot read the cloud-to-device queues: {}", loaded.error().message));
  registry.set_c2d_counter([&c2d](std::string_view device_id) { return c2d.pending(device_id); });
  // A message for a connected device: its connection pulls it (MQTT subscribed to devicebound, an
  // AMQP devicebound receiver); other connections ignore the call.
  c2d.set_device_notifier([&connections](std::string_view device_id) {
    if (auto link = connections.find({std::string(device_id), {}})) link->c2d_available();
  });
  twins::service twins(**kv, registry, clk);
  // A desired change reaches the identity's connection, if it is subscribed to them.
  twins.set_desired_listener([&connections](const twins::identity& who, const boost::json::object& patch) {
    if (auto link = connections.find({who.device_id, who.module_id})) link->desired_properties(json::serialize(patch));
  });
  methods::service methods(
      registry, [&connections](const methods::identity& who) { return connections.find({who.device_id, who.module_id}); },
      clk);
  // Deleting or disabling an identity ends its connections, as IoT Hub does (every registry path,
  // bulk included); a deleted identity's persistent sessions, C2D queue and twin go too.
  // Message routing: device messages and the hub's events to the endpoints their routes name.
  const std::string hub_name = hub_name_of(id.identity.host_name);
  routing::options routing_opts{hub_name};
  routing_opts.lim = routing_limits(cfg);
  routing::service routing(clk, **events, routing_opts,
                           [&twins](std::string_view device_id, std::string_view module_id) -> std::optional<boost::json::object> {
                             auto twin = twins.get({std::string(device_id), std::string(module_id)});
                             return twin ? std::optional<boost::json::object>(std::move(*twin)) : std::nullopt;
                           });
  // The Event Hubs-compatible endpoint reads the same log; its receivers wait on this watch.
  amqp_head::partition_watch event_watch(**events);
  event_watch.set_consumer_groups(cfg.consumer_groups);
  routing_endpoints endpoints = open_routing(cfg, layout, hub_name, **events, event_watch, clk, **kv);
  if (auto installed = routing.install(std::move(endpoints.table), endpoints.table_logs(**events)); !installed)
    throw startup_error("routing: " + installed.error().message);
  // The admin API's replacements go to the routing file first (DIR/routing.json without --routing).
  routing.set_persist([file = routing_file(cfg, layout)](const boost::json::value& arm) -> result<void> {
    try {
      write_file_atomic(file, json::pretty(arm) + "\n", 0644);
      return {};
    } catch (const std::exception& e) {
      return make_error(errc::server_error, e.what());
    }
  });
  twins.set_change_listener([&routing](const twins::twin_change& c) {
    routing.twin_changed(c.who.device_id, c.who.module_id, c.operation, c.body, c.at);
  });
  connections.set_listener([&routing](const connections::connection_event& e) {
    routing.connection_changed(e.who.device_id, e.who.module_id, e.what == connections::connection_event::kind::connected,
                               e.at);
  });
  registry.set_change_listener([&connections, &mqtt_sessions, &c2d, &twins, &routing, &clk](const registry::change& c) {
    using kind = registry::change::kind;
    // Routing first: a deleted identity's twin is read for its lifecycle event before it goes.
    if (c.what == kind::device_created || c.what == kind::module_created) {
      routing.identity_created(c.device_id, c.module_id, clk.now());
      return;
    }
    if (c.what != kind::device_disabled && routing.wants(routing::source::device_lifecycle_events))
      routing.identity_deleted(c.device_id, c.module_id, twins.stored_twin({c.device_id, c.module_id}), clk.now());
    connections.on_registry_change(c);
    if (c.what != kind::device_disabled) mqtt_sessions.forget(c.device_id, c.module_id);
    c2d.on_registry_change(c);
    twins.on_registry_change(c);
  });
  telemetry::service telemetry(**events);
  telemetry.set_router(&routing);
  certificates::service certs(**kv, registry, clk);
  // X.509 devices: what the TLS client presented, checked against the identity's thumbprints or
  // the hub's verified CA certificates.
  const auto x509 = [&certs](const certificates::client_chain& chain, std::string_view device_id,
                             std::string_view module_id) -> result<mqtt_head::x509_verdict> {
    auto proved = certs.authenticate_device(chain, device_id, module_id);
    if (!proved) return proved.error();
    const bool ca = proved->method == registry::auth_type::certificate_authority;
    return mqtt_head::x509_verdict{ca ? telemetry::auth_method::x509_ca : telemetry::auth_method::x509_self_signed,
                                   proved->not_after};
  };
  // Operation throttles: off unless --throttle asked for them (docs/limits.md).
  throttling::throttles throttles(cfg.throttle, clk);
  throttling::throttles* const throttles_in_use = throttles.enabled() ? &throttles : nullptr;
  if (throttles.enabled()) log->info("throttles: {}", describe(cfg.throttle));
  const mqtt_head::services mqtt{auth, connections, telemetry, mqtt_sessions, clk, x509, &c2d, &twins, &methods,
                                 throttles_in_use};
  const amqp_head::services amqp{auth, registry, telemetry, connections, clk, &event_watch, &certs, &c2d,
                                 &feedback_watch, &twins, &methods, &endpoints.event_hubs, throttles_in_use};
  // The REST API: the service side (registry, twins, direct methods...), and the device side
  // (telemetry, C2D over HTTPS).
  http::router router(http::services{registry, auth, clk, certs, &connections, &telemetry, &c2d, &twins, &methods, &routing,
                                     throttles_in_use});
  periodic retention(std::chrono::minutes(1), [&log, &events, &endpoints, &clk] {
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clk.now().time_since_epoch()).count();
    std::size_t deleted = (*events)->enforce_retention(now_ms);
    for (const auto& l : endpoints.logs) deleted += l->enforce_retention(now_ms);
    if (deleted > 0) log->info("retention: deleted {} expired event log segments", deleted);
  });
  // Storage endpoints: due batches become files.
  periodic storage_files(std::chrono::seconds(1), [&log, &endpoints] {
    for (const auto& w : endpoints.writers) {
      if (auto r = w->tick(); !r) log->warn("storage endpoint '{}': {}", w->options().endpoint.name, r.error().message);
    }
  });

  // Webhook endpoints: each worker POSTs its endpoint's log from its cursor on its own thread.
  for (const auto& w : endpoints.webhooks) w->start();

  listener_options opts;
  opts.addresses = cfg.listen;
  opts.ports = {{"https", cfg.https_port}, {"mqtt", cfg.mqtt_port}, {"amqp", cfg.amqp_port}};
  opts.cert_chain_file = layout.server_cert();
  opts.key_file = layout.server_key();
  opts.http.request_timeout = cfg.http_request_timeout;
  opts.http.idle_timeout = cfg.http_idle_timeout;
  opts.limits.max_unauthenticated = cfg.max_unauthenticated;
  opts.limits.max_unauthenticated_per_ip = cfg.max_unauthenticated_per_ip;
  opts.limits.max_connections_per_ip = cfg.max_connections_per_ip;
  opts.limits.auth_timeout = cfg.auth_timeout;
  // Direct methods still waiting (for a device to answer or to connect) end now with 503, so that
  // their HTTP sessions finish instead of holding the shutdown for its whole grace period.
  opts.on_stopping = [&methods] { methods.shutdown(); };
  listeners net(std::move(opts), router, clk, &mqtt, &amqp);
  // After `net`, so it stops first: the sweep's notifications reach connections on net's threads.
  periodic c2d_sweep(std::chrono::seconds(1), [&c2d] { c2d.sweep(); });
  periodic method_timeouts(std::chrono::milliseconds(100), [&methods] { methods.sweep(); });

  std::vector<std::string> bound;
  for (const bound_endpoint& ep : net.endpoints()) bound.push_back(ep.to_string());

  fmt::print("hubd {} — IoT hub \"{}\"\n", hubd_version, id.identity.host_name);
  print_identity(cfg, layout, id.identity);
  fmt::print("  listening:          {}\n", join(bound, ", "));
  fmt::print("hubd ready\n");
  std::fflush(stdout);
  log->info("ready: {}", join(bound, ", "));

  net.run();
  // The sessions are gone, but their io_contexts still exist (until `net` goes): pending
  // telemetry completions post there harmlessly. Drain the log now, while that is still true, and
  // settle any direct method that started after on_stopping (their completions post there too).
  routing.stop();  // its queued events go to the logs first
  for (const auto& w : endpoints.webhooks) w->stop();  // cancels a POST in flight: its batch goes again next start
  (*events)->close();
  for (const auto& l : endpoints.logs) l->close();
  methods.shutdown();
  log->info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A client that vanishes mid-write must cost an error code, not the process.
  std::signal(SIGPIPE, SIG_IGN);

  parse_outcome parsed = parse_config(argc, argv);
  if (auto* exit = std::get_if<parse_exit>(&parsed)) {
    std::fputs(exit->text.c_str(), exit->code == 0 ? stdout : stderr);
    return exit->code;
  }
  try {
    return run(std::get<config>(parsed));
  } catch (const std::exception& e) {
    // startup_error and friends: one line, no stack of context, exit 1.
    std::fflush(stdout);
    fmt::print(stderr, "hubd: {}\n", e.what());
    return 1;
  }
}
