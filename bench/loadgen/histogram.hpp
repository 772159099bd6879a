#pragma once
// Latency histogram: 1 µs buckets up to 100 ms, then 1 ms buckets up to 60 s, then a tail
// bucket (reported as 60 s). Not thread-safe: one per thread, read after that thread stops
// adding.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace loadgen {

class histogram {
 public:
  void add(std::chrono::nanoseconds d) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
    if (us < fine_us) {
      ++fine_[static_cast<std::size_t>(std::max<long long>(us, 0))];
    } else {
      ++coarse_[static_cast<std::size_t>(std::min<long long>(us / 1000, coarse_ms))];
    }
    ++count_;
  }
  double percentile_ms(double p) const {
    if (count_ == 0) return 0;
    const auto want = static_cast<std::uint64_t>(p * static_cast<double>(count_));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < fine_.size(); ++i) {
      seen += fine_[i];
      if (seen > want) return static_cast<double>(i) / 1000.0;
    }
    for (std::size_t i = 0; i < coarse_.size(); ++i) {
      seen += coarse_[i];
      if (seen > want) return static_cast<double>(i);
    }
    return static_cast<double>(coarse_ms);
  }
  std::uint64_t count() const { return count_; }

 private:
  static constexpr long long fine_us = 100'000;
  static constexpr long long coarse_ms = 60'000;
  std::vector<std::uint64_t> fine_ = std::vector<std::uint64_t>(fine_us);
  std::vector<std::uint64_t> coarse_ = std::vector<std::uint64_t>(coarse_ms + 1);
  std::uint64_t count_ = 0;
};

}  // namespace loadgen
