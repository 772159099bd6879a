// hubd-query-bench: twin query latency over a large registry in the RocksDB engine.
//
//   hubd-query-bench [--twins N] [--runs R] [--dir PATH]
//
// Loads N devices (default 100,000) into a fresh RocksDB folder through registry::service and
// twins::service (the same calls REST and MQTT make; each device gets tags and reported
// properties), then times the first page (100 items, as Registry.createQuery asks) of a few twin
// queries through twins::service::query, R times each (default 5), and prints the median and the
// worst, then the time to read every page of the result once. Loading writes without fsync (a wrapper over the kv turns sync off): the figures are
// about reading.
//
// Device i (0-based) has tags {"site": "site-<i % 1000>", "tier": <i % 10>, "x": "y" for every
// 1000th device} and reported {"fw": "fw-<i % 500>", "temp": <i % 100>}: each site has N/1000
// devices, each firmware N/500.
#include "domain/registry/service.hpp"
#include "domain/twins/service.hpp"
#include "storage/kv.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace bj = boost::json;
using steady = std::chrono::steady_clock;

// Forwards to the engine with every write unsynced: loading 100k twins with an fsync each
// would time the disk, not the queries.
class unsynced_kv final : public hub::storage::kv {
 public:
  explicit unsynced_kv(hub::storage::kv& inner) : inner_(inner) {}
  hub::result<std::optional<std::string>> get(std::string_view key) override { return inner_.get(key); }
  hub::result<void> write(const hub::storage::write_batch& batch, bool) override { return inner_.write(batch, false); }
  hub::result<void> scan(std::string_view prefix, std::string_view after, const hub::storage::scan_fn& fn) override {
    return inner_.scan(prefix, after, fn);
  }

 private:
  hub::storage::kv& inner_;
};

[[noreturn]] void die(std::string_view what, const hub::error& e) {
  fmt::print(stderr, "{}: {}\n", what, e.message);
  std::exit(1);
}

double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

struct options {
  std::size_t twins = 100'000;
  int runs = 5;
  std::string dir;
};

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--twins") {
      o.twins = std::stoul(next());
    } else if (a == "--runs") {
      o.runs = std::stoi(next());
    } else if (a == "--dir") {
      o.dir = next();
    } else {
      fmt::print(stderr, "usage: hubd-query-bench [--twins N] [--runs R] [--dir PATH]\n");
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse_args(argc, argv);
  const bool own_dir = opt.dir.empty();
  const std::filesystem::path dir =
      own_dir ? std::filesystem::temp_directory_path() / fmt::format("hubd-query-bench-{}", ::getpid())
              : std::filesystem::path(opt.dir);
  std::filesystem::remove_all(dir);

  auto engine = hub::storage::open_rocksdb(dir.string());
  if (!engine) die("open", engine.error());
  unsynced_kv kv(**engine);
  hub::system_clock clk;
  hub::registry::service registry(kv, clk);
  hub::twins::service twins(kv, registry, clk);

  const auto t0 = steady::now();
  for (std::size_t i = 0; i < opt.twins; ++i) {
    hub::registry::device d;
    d.device_id = fmt::format("device-{:06}", i);
    if (auto r = registry.create_device(d); !r) die("create_device", r.error());
    bj::object tags{{"site", fmt::format("site-{}", i % 1000)}, {"tier", i % 10}};
    if (i % 1000 == 0) tags["x"] = "y";
    const hub::twins::identity who{d.device_id, {}};
    if (auto r = twins.update(who, bj::object{{"tags", tags}}, std::nullopt); !r) die("update", r.error());
    bj::object reported{{"fw", fmt::format("fw-{}", i % 500)}, {"temp", i % 100}};
    if (auto r = twins.patch_reported(who, reported); !r) die("patch_reported", r.error());
  }
  fmt::print("loaded {} devices with twins in {:.1f} s ({})\n", opt.twins, ms_since(t0) / 1000, dir.string());

  const std::vector<std::string> queries = {
      "SELECT * FROM devices WHERE tags.site = 'site-7'",
      "SELECT * FROM devices WHERE properties.reported.fw = 'fw-7'",
      "SELECT * FROM devices WHERE tags.x = 'y' AND tags.tier = 0",
      "SELECT deviceId FROM devices WHERE tags.site = 'site-7' AND properties.reported.temp < 50",
      "SELECT * FROM devices WHERE properties.reported.temp > 98",
      "SELECT COUNT() AS n FROM devices",
      "SELECT tags.tier AS tier, COUNT() AS n FROM devices GROUP BY tags.tier",
      "SELECT * FROM devices",
  };
  // The first page R times (what a caller waits for), then every page once (the whole result).
  fmt::print("{:<88} {:>5} {:>9} {:>8} {:>6} {:>10}\n", "query", "rows", "first ms", "max ms", "pages",
             "all ms");
  for (const auto& text : queries) {
    std::vector<double> times;
    std::size_t rows = 0;
    for (int run = 0; run < opt.runs; ++run) {
      const auto start = steady::now();
      auto page = twins.query({.text = text, .page_size = 100, .continuation = {}});
      times.push_back(ms_since(start));
      if (!page) die(text, page.error());
      rows = page->items.size();
    }
    std::sort(times.begin(), times.end());
    std::size_t pages = 0;
    std::string token;
    const auto all_start = steady::now();
    for (;;) {
      auto page = twins.query({.text = text, .page_size = 100, .continuation = token});
      if (!page) die(text, page.error());
      ++pages;
      if (!page->continuation) break;
      token = *page->continuation;
    }
    fmt::print("{:<88} {:>5} {:>9.1f} {:>8.1f} {:>6} {:>10.1f}\n", text, rows, times[times.size() / 2], times.back(),
               pages, ms_since(all_start));
  }

  engine->reset();
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}
