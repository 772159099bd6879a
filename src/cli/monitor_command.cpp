#include "cli/monitor_command.hpp"

#include "cli/monitor.hpp"
#include "server/files.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <filesystem>
#include <memory>

namespace hub::cli {
namespace {

namespace fs = std::filesystem;

struct monitor_options {
  std::string endpoint;
  std::string device;
  std::string module;
  std::string from = "now";
  bool json = false;
  double timeout_seconds = 0;
  bool stop_at_end = false;
  std::uint64_t count = 0;
  bool count_set = false;
};

std::atomic<bool> stop_requested{false};

extern "C" void on_stop_signal(int) { stop_requested.store(true); }

int run_monitor(const std::string& data_dir, const monitor_options& o) {
  const fs::path dir = data_dir.empty() ? server::default_data_dir() : fs::path(data_dir);
  // hubd keeps the event log in DIR/events (p0, p1, ... of segment files), a custom routing
  // endpoint's in DIR/endpoints/<name>.
  if (!o.endpoint.empty() && (o.endpoint.find('/') != std::string::npos || o.endpoint == "." || o.endpoint == "..")) {
    fmt::print(stderr, "hubctl: --endpoint: '{}' is not an endpoint name\n", o.endpoint);
    return 2;
  }
  const bool builtin = o.endpoint.empty() || o.endpoint == "events";
  const fs::path events = builtin ? dir / "events" : dir / "endpoints" / o.endpoint;
  std::error_code ec;
  if (!builtin && !fs::is_directory(events, ec)) {
    fmt::print(stderr, "hubctl: no endpoint '{}' in {} (no folder {})\n", o.endpoint, dir.string(), events.string());
    return 1;
  }
  const auto from = o.from == "start" ? monitor::start_at::earliest : monitor::start_at::latest;
  auto src = monitor::open_log_source(events.string(), from, std::chrono::milliseconds(50), o.stop_at_end);
  if (!src) {
    fmt::print(stderr, "hubctl: no telemetry to read in {}: {}\n", dir.string(), src.error().message);
    return 1;
  }
  monitor::run_options run;
  run.match = {o.device, o.module};
  run.json = o.json;
  run.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(o.timeout_seconds * 1000));
  if (o.count_set) run.count = o.count;
  // Ctrl-C ends the monitor cleanly: what was read is printed and flushed. A closed pipe is a
  // write error, not a signal.
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGPIPE, SIG_IGN);
  // On stderr, also with --json: stdout carries only events. Printed once the starting point is
  // fixed, so a script may start sending when it sees this line.
  fmt::print(stderr, "Starting event monitor on {}{}, use ctrl-c to stop...\n", events.string(),
             o.from == "start" ? " from the oldest retained event" : "");
  std::fflush(stderr);
  return monitor::run(**src, run, stdout, stop_requested);
}

}  // namespace

void add_monitor_command(CLI::App& app, const std::string& data_dir, std::function<int()>& action) {
  auto o = std::make_shared<monitor_options>();
  auto* cmd = app.add_subcommand(
      "monitor-events",
      "Show device-to-cloud messages as hubd stored them (like `az iot hub monitor-events`).\n"
      "Reads the event log in DIR/events (--endpoint: DIR/endpoints/NAME) without changing it; works while hubd runs.");
  cmd->add_option("--endpoint,-e", o->endpoint,
                  "A custom routing endpoint's log (DIR/endpoints/NAME) instead of the built-in events")
      ->type_name("NAME");
  cmd->add_option("--device,-d", o->device, "Only messages of this device ('*' and '?' match any)")->type_name("ID");
  cmd->add_option("--module,-m", o->module, "Only messages of this module ('*' and '?' match any)")->type_name("ID");
  cmd->add_option("--from", o->from, "now: only new messages; start: every retained message first")
      ->check(CLI::IsMember({"now", "start"}))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object per line instead of az's indented blocks");
  cmd->add_option("--timeout,-t", o->timeout_seconds, "Stop after this many seconds (0: run until interrupted)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  auto* count = cmd->add_option("--count,-n", o->count, "Stop after this many messages")->check(CLI::PositiveNumber);
  cmd->add_flag("--stop-at-end", o->stop_at_end,
                "Stop once every message stored when the monitor started has been shown (with --from\n"
                "start: a snapshot of the log, however long it takes to read; --timeout still applies)");
  cmd->callback([o, count, &data_dir, &action] {
    o->count_set = count->count() > 0;
    action = [o, &data_dir] { return run_monitor(data_dir, *o); };
  });
}

}  // namespace hub::cli
