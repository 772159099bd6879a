#pragma once
// The `hubctl monitor-events` subcommand: its options and what it runs (monitor.hpp).
#include <functional>
#include <string>

namespace CLI {
class App;
}

namespace hub::cli {

// Adds "monitor-events" to `app`. When it is chosen, `action` is set to run it; `data_dir` is
// hubctl's --data value (empty: the default data folder), read when the action runs.
void add_monitor_command(CLI::App& app, const std::string& data_dir, std::function<int()>& action);

}  // namespace hub::cli
