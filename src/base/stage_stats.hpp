#pragma once
// Debug latency histograms of the stages of a durable message (event log queue, write,
// fdatasync, completion post, PUBACK write), for docs/benchmarks.md's per-stage breakdown.
//
// Off unless the environment variable HUBD_STAGE_STATS names a file: then every second a thread
// rewrites that file with the cumulative counts (one line per non-empty bucket: "stage bucket_us
// count"); bench/stage_stats.py turns two snapshots into percentiles over the window between
// them. Off, each call site costs one load of a static flag.
//
// Thread safety: record() from any thread (relaxed atomics).
#include <chrono>
#include <cstdint>

namespace hub::stage_stats {

enum class stage : unsigned {
  log_queue_wait,     // append() -> the committer takes it (per append)
  log_write,          // write() of one commit
  log_fdatasync,      // fdatasync() of one commit
  log_records,        // records per commit (a count, not µs)
  log_callbacks,      // the completions of one commit
  completion_post,    // log completion posted -> run on the connection's thread
  puback_write,       // PUBACKs queued -> written to the socket
  server_total,       // the read that brought a publish -> its PUBACK queued
  count
};

bool enabled() noexcept;

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// `value`: nanoseconds, except for log_records (a count).
void record(stage s, std::int64_t value) noexcept;

// Records now - since_ns when enabled; since_ns 0 means "not stamped" and is ignored.
inline void since(stage s, std::int64_t since_ns) noexcept {
  if (since_ns != 0 && enabled()) record(s, now_ns() - since_ns);
}

// now_ns() when enabled, else 0 (no clock read).
inline std::int64_t stamp() noexcept { return enabled() ? now_ns() : 0; }

}  // namespace hub::stage_stats
