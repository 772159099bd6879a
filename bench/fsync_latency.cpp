// fdatasync latency of this machine's disk, the floor of any durable acknowledgement.
//
//   g++ -O2 -pthread -o /tmp/fsync_latency bench/fsync_latency.cpp
//   /tmp/fsync_latency DIR threads N      N appends of 300 B + fdatasync per thread, each thread
//                                         on its own file (threads=4: hubd's partition writers)
//   /tmp/fsync_latency DIR rounds N       one thread, 4 files, each round appends to and syncs
//                                         all 4 in turn (one writer for all partitions)
//   /tmp/fsync_latency DIR prealloc N     4 threads, N writes of 300 B + fdatasync each: once
//                                         growing the file, once over zeros written and synced
//                                         beforehand (the event log's preallocation); with the
//                                         process's CPU time per sync
// Prints percentiles of each fdatasync (and of each round) and a 1 ms histogram.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {
using clk = std::chrono::steady_clock;
double us_since(clk::time_point t0) { return std::chrono::duration<double, std::micro>(clk::now() - t0).count(); }

void report(const char* what, std::vector<double> us, bool histogram) {
  std::sort(us.begin(), us.end());
  auto p = [&](double q) { return us[std::min<std::size_t>(us.size() - 1, static_cast<std::size_t>(q * us.size()))]; };
  std::printf("%s (%zu): p10 %.0f  p50 %.0f  p90 %.0f  p99 %.0f  max %.0f µs\n", what, us.size(), p(0.1), p(0.5),
              p(0.9), p(0.99), us.back());
  if (!histogram) return;
  std::map<int, int> h;
  for (double v : us) ++h[static_cast<int>(v / 1000)];
  for (auto [ms, n] : h) std::printf("  %2d-%2d ms: %d\n", ms, ms + 1, n);
}
double cpu_us() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  const auto us = [](timeval t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
  return us(r.ru_utime) + us(r.ru_stime);
}

// 4 threads, each writing n records of `rec` to its own file and syncing after each; with
// zero_filled, over zeros written and synced before the clock starts.
void prealloc_round(const std::string& dir, int n, const std::string& rec, bool zero_filled) {
  constexpr int threads = 4;
  std::vector<std::vector<double>> all(threads);
  std::vector<int> fds(threads);
  for (int i = 0; i < threads; ++i) {
    const std::string path = dir + "/fsync-latency-" + std::to_string(i);
    fds[static_cast<std::size_t>(i)] = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (zero_filled) {
      const std::string zeros(rec.size() * static_cast<std::size_t>(n), '\0');
      if (::pwrite(fds[static_cast<std::size_t>(i)], zeros.data(), zeros.size(), 0) < 0) std::abort();
      ::fdatasync(fds[static_cast<std::size_t>(i)]);
    }
  }
  const double cpu0 = cpu_us();
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) {
    ts.emplace_back([&, i] {
      const int fd = fds[static_cast<std::size_t>(i)];
      for (int k = 0; k < n; ++k) {
        if (::write(fd, rec.data(), rec.size()) < 0) std::abort();
        const auto t0 = clk::now();
        ::fdatasync(fd);
        all[static_cast<std::size_t>(i)].push_back(us_since(t0));
      }
    });
  }
  for (auto& th : ts) th.join();
  const double cpu = cpu_us() - cpu0;
  std::vector<double> us;
  for (auto& v : all) us.insert(us.end(), v.begin(), v.end());
  const std::string label = std::string(zero_filled ? "over zeros" : "growing the file") + ", 4 threads";
  report(label.c_str(), us, false);
  std::printf("  CPU per write + fdatasync: %.1f µs\n", cpu / static_cast<double>(us.size()));
  for (int i = 0; i < threads; ++i) {
    ::close(fds[static_cast<std::size_t>(i)]);
    ::unlink((dir + "/fsync-latency-" + std::to_string(i)).c_str());
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DIR threads|rounds|prealloc N\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string mode = argv[2];
  const int n = std::atoi(argv[3]);
  const std::string rec(300, 'x');
  if (mode == "prealloc") {
    for (bool zero_filled : {false, true, false, true}) prealloc_round(dir, n, rec, zero_filled);
    return 0;
  }
  if (mode == "threads") {
    const int threads = 4;
    for (int t : {1, threads}) {
      std::vector<std::vector<double>> all(static_cast<std::size_t>(t));
      std::vector<std::thread> ts;
      for (int i = 0; i < t; ++i) {
        ts.emplace_back([&, i] {
          const std::string path = dir + "/fsync-latency-" + std::to_string(i);
          const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
          for (int k = 0; k < n; ++k) {
            if (::write(fd, rec.data(), rec.size()) < 0) std::abort();
            const auto t0 = clk::now();
            ::fdatasync(fd);
            all[static_cast<std::size_t>(i)].push_back(us_since(t0));
          }
          ::close(fd);
          ::unlink(path.c_str());
        });
      }
      for (auto& th : ts) th.join();
      std::vector<double> us;
      for (auto& v : all) us.insert(us.end(), v.begin(), v.end());
      const std::string label = std::to_string(t) + " thread(s), each syncing its own file";
      report(label.c_str(), us, true);
    }
    return 0;
  }
  int fds[4];
  for (int i = 0; i < 4; ++i) {
    fds[i] = ::open((dir + "/fsync-latency-" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  std::vector<double> syncs, rounds;
  for (int r = 0; r < n; ++r) {
    const auto r0 = clk::now();
    for (int fd : fds) {
      if (::write(fd, rec.data(), rec.size()) < 0) std::abort();
      const auto t0 = clk::now();
      ::fdatasync(fd);
      syncs.push_back(us_since(t0));
    }
    rounds.push_back(us_since(r0));
  }
  report("one thread, 4 files in turn: each fdatasync", syncs, false);
  report("one thread, 4 files in turn: each round of 4", rounds, false);
  for (int i = 0; i < 4; ++i) {
    ::close(fds[i]);
    ::unlink((dir + "/fsync-latency-" + std::to_string(i)).c_str());
  }
}
