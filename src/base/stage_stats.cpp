#include "base/stage_stats.hpp"

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

namespace hub::stage_stats {
namespace {

constexpr const char* names[] = {"log_queue_wait", "log_write",    "log_fdatasync", "log_records",
                                 "log_callbacks",  "completion_post", "puback_write", "server_total"};
static_assert(std::size(names) == static_cast<std::size_t>(stage::count));

// 10 µs buckets up to 200 ms (counts: 1 per bucket up to 20,000), then a tail bucket.
constexpr std::size_t buckets = 20'001;
constexpr std::int64_t bucket_ns = 10'000;

struct state {
  std::string path;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts =
      std::make_unique<std::atomic<std::uint64_t>[]>(buckets * static_cast<std::size_t>(stage::count));

  void dump() const {
    const std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) return;
    for (std::size_t s = 0; s < static_cast<std::size_t>(stage::count); ++s) {
      const bool is_count = s == static_cast<std::size_t>(stage::log_records);
      for (std::size_t b = 0; b < buckets; ++b) {
        const std::uint64_t n = counts[s * buckets + b].load(std::memory_order_relaxed);
        if (n != 0) std::fprintf(f, "%s %zu %llu\n", names[s], is_count ? b : b * 10, static_cast<unsigned long long>(n));
      }
    }
    std::fclose(f);
    std::rename(tmp.c_str(), path.c_str());
  }
};

state* init() {
  const char* p = std::getenv("HUBD_STAGE_STATS");
  if (p == nullptr || *p == '\0') return nullptr;
  auto* s = new state;  // lives as long as the process, as does its dump thread
  s->path = p;
  std::thread([s] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      s->dump();
    }
  }).detach();
  return s;
}

state* const the_state = init();

}  // namespace

bool enabled() noexcept { return the_state != nullptr; }

void record(stage s, std::int64_t value) noexcept {
  if (the_state == nullptr || value < 0) return;
  std::size_t b = s == stage::log_records ? static_cast<std::size_t>(value) : static_cast<std::size_t>(value / bucket_ns);
  if (b >= buckets) b = buckets - 1;
  the_state->counts[static_cast<std::size_t>(s) * buckets + b].fetch_add(1, std::memory_order_relaxed);
}

}  // namespace hub::stage_stats
