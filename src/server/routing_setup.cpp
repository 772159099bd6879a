#include "server/routing_setup.hpp"

#include "base/text.hpp"
#include "server/webhook_client.hpp"

#include <fmt/format.h>

namespace hub::server {

namespace fs = std::filesystem;

namespace {

// A log's partition count is fixed when it is created (a device's messages go to hash % count).
void check_partitions(const fs::path& dir, std::uint32_t wanted) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::uint32_t existing = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.size() > 1 && name[0] == 'p' &&
        name.find_first_not_of("0123456789", 1) == std::string::npos) {
      ++existing;
    }
  }
  if (existing != 0 && existing != wanted) {
    throw startup_error(fmt::format("the endpoint log {} has {} partitions, the hub {} (start with --partitions {}, "
                                    "or remove the endpoint's folder)",
                                    dir.string(), existing, wanted, existing));
  }
}

std::unique_ptr<storage::event_log> open_endpoint_log(const config& cfg, const fs::path& dir) {
  check_partitions(dir, cfg.partitions);
  storage::log_options o;
  o.dir = dir.string();
  o.partitions = cfg.partitions;
  o.retention = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.retention);
  o.commit_delay = std::chrono::microseconds(cfg.commit_delay_us);
  auto log = storage::event_log::open(o);
  if (!log) throw startup_error(fmt::format("cannot open the endpoint log {}: {}", dir.string(), log.error().message));
  return std::move(*log);
}

}  // namespace

std::string hub_name_of(std::string_view host_name) {
  const bool ip = host_name.find_first_not_of("0123456789.") == std::string_view::npos ||
                  host_name.find(':') != std::string_view::npos;
  return text::to_lower(ip ? host_name : host_name.substr(0, host_name.find('.')));
}

std::vector<storage::event_log*> routing_endpoints::table_logs(storage::event_log& events) const {
  std::vector<storage::event_log*> out{&events};
  for (const auto& l : logs) out.push_back(l.get());
  return out;
}

routing::limits routing_limits(const config& cfg) {
  routing::limits lim;
  lim.avro = routing::avro_supported();
  if (cfg.routing_test_batching) {
    lim.min_batch_frequency_seconds = 1;
    lim.min_chunk_bytes = 1024;
  }
  return lim;
}

fs::path routing_file(const config& cfg, const data_layout& layout) {
  return cfg.routing_file.empty() ? layout.dir / "routing.json" : cfg.routing_file;
}

routing_endpoints open_routing(const config& cfg, const data_layout& layout, const std::string& hub_name,
                               storage::event_log& events, amqp_head::partition_watch& event_watch, const clock& clk,
                               storage::kv& kv) {
  routing_endpoints out;
  out.event_hubs.push_back(amqp_head::event_hub{hub_name, &events, &event_watch});
  const fs::path file = routing_file(cfg, layout);
  std::error_code ec;
  if (!cfg.routing_file.empty() || fs::exists(file, ec)) {
    const std::string text = read_file(file);
    auto parsed = routing::parse(std::string_view(text), routing_limits(cfg));
    if (!parsed) throw startup_error(fmt::format("routing file {}: {}", file.string(), parsed.error().message));
    out.configuration = std::move(*parsed);
  }
  auto table = routing::table::compile(out.configuration);
  if (!table) throw startup_error(fmt::format("routing file {}: {}", file.string(), table.error().message));
  out.table = std::move(*table);

  for (const auto& hub : out.configuration.event_hubs) {
    if (text::iequals(hub.name, hub_name))
      throw startup_error(fmt::format("routing file {}: endpoint '{}': the built-in endpoint's event hub has that name",
                                      file.string(), hub.name));
    auto& log = out.logs.emplace_back(open_endpoint_log(cfg, layout.endpoint(hub.name)));
    auto& watch = out.watches.emplace_back(std::make_unique<amqp_head::partition_watch>(*log));
    watch->set_consumer_groups(cfg.consumer_groups);
    out.event_hubs.push_back(amqp_head::event_hub{hub.name, log.get(), watch.get()});
  }
  for (const auto& st : out.configuration.storage) {
    auto& log = out.logs.emplace_back(open_endpoint_log(cfg, layout.endpoint(st.name)));
    routing::file_writer_options o;
    o.endpoint = st;
    o.hub_name = hub_name;
    if (!st.path.empty()) {
      o.dir = fs::path(st.path).is_absolute() ? fs::path(st.path) : layout.dir / st.path;
    } else {
      o.dir = layout.storage() / (st.container_name.empty() ? st.name : st.container_name);
    }
    o.checkpoint_file = layout.endpoint(st.name) / "files.checkpoint.json";
    auto writer = routing::file_writer::open(*log, std::move(o), clk);
    if (!writer)
      throw startup_error(fmt::format("storage endpoint '{}': {}", st.name, writer.error().message));
    out.writers.push_back(std::move(*writer));
  }
  for (const auto& hook : out.configuration.webhooks) {
    auto& log = out.logs.emplace_back(open_endpoint_log(cfg, layout.endpoint(hook.name)));
    auto worker = routing::webhook_delivery::open(*log, kv, hook, make_webhook_client(hook, fs::absolute(file).parent_path()));
    if (!worker) throw startup_error(fmt::format("webhook endpoint '{}': {}", hook.name, worker.error().message));
    out.webhooks.push_back(std::move(*worker));
  }
  return out;
}

}  // namespace hub::server
