#include "storage/event_log.hpp"
#include "storage/segment_file.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

using namespace hub::storage;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/hubd-log-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { fs::remove_all(path); }
};

log_options opts(const temp_dir& d, std::uint32_t partitions = 2) {
  log_options o;
  o.dir = d.path.string();
  o.partitions = partitions;
  return o;
}

// Appends and waits until durable.
log_position append_sync(event_log& log, std::uint32_t p, std::string data) {
  std::promise<hub::result<log_position>> done;
  log.append(p, std::move(data), [&](hub::result<log_position> r) { done.set_value(std::move(r)); });
  auto r = done.get_future().get();
  EXPECT_TRUE(r.has_value());
  return r.has_value() ? *r : log_position{};
}

}  // namespace

TEST(event_log, sequences_and_offsets_grow_per_partition) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d)));
  const auto a = append_sync(*log, 0, "alpha");
  const auto b = append_sync(*log, 0, "beta");
  const auto c = append_sync(*log, 1, "gamma");
  EXPECT_EQ(a.sequence, 0);
  EXPECT_EQ(b.sequence, 1);
  EXPECT_EQ(c.sequence, 0);
  EXPECT_EQ(a.offset, 0);
  EXPECT_GT(b.offset, a.offset);
  EXPECT_LE(a.enqueued_ms, b.enqueued_ms);
  auto recs = log->read(0, 0, 10);
  ASSERT_TRUE(recs.has_value());
  ASSERT_EQ(recs->size(), 2u);
  EXPECT_EQ((*recs)[0].data, "alpha");
  EXPECT_EQ((*recs)[1].data, "beta");
  EXPECT_EQ((*recs)[1].offset, b.offset);
  const auto st = log->stats(0);
  EXPECT_FALSE(st.empty);
  EXPECT_EQ(st.begin_sequence, 0);
  EXPECT_EQ(st.last_sequence, 1);
  EXPECT_EQ(st.last_offset, b.offset);
  EXPECT_EQ(st.last_enqueued_ms, b.enqueued_ms);
}

TEST(event_log, empty_partition_stats) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d)));
  const auto st = log->stats(1);
  EXPECT_TRUE(st.empty);
  EXPECT_EQ(st.last_sequence, -1);
  EXPECT_EQ(st.last_offset, -1);
}

TEST(event_log, many_concurrent_appends_are_group_committed_in_order) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d, 1)));
  constexpr int threads = 4, per_thread = 500;
  std::atomic<int> acked{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        log->append(0, std::to_string(t) + ":" + std::to_string(i), [&](hub::result<log_position> r) {
          if (r) ++acked;
        });
      }
    });
  }
  for (auto& t : ts) t.join();
  log->close();
  EXPECT_EQ(acked.load(), threads * per_thread);
  auto recs = log->read(0, 0, 100000, 1 << 30);
  ASSERT_TRUE(recs.has_value());
  ASSERT_EQ(recs->size(), static_cast<std::size_t>(threads * per_thread));
  std::vector<int> next(threads, 0);
  for (std::size_t i = 0; i < recs->size(); ++i) {
    const auto& r = (*recs)[i];
    EXPECT_EQ(r.sequence, static_cast<std::int64_t>(i));
    const int t = std::stoi(r.data.substr(0, r.data.find(':')));
    EXPECT_EQ(std::stoi(r.data.substr(r.data.find(':') + 1)), next[t]++);  // per-producer order kept
  }
}

TEST(event_log, survives_reopen_and_cuts_a_torn_tail) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d, 1)));
    for (int i = 0; i < 100; ++i) append_sync(*log, 0, "msg" + std::to_string(i));
  }
  // Simulate a crash in the middle of a group commit: half a record at the end of the file.
  fs::path seg;
  for (const auto& e : fs::directory_iterator(d.path / "p0")) seg = e.path();
  {
    const int fd = ::open(seg.c_str(), O_WRONLY | O_APPEND);
    const char junk[] = {40, 0, 0, 0, 1, 2, 3, 4, 5};
    ASSERT_EQ(::write(fd, junk, sizeof junk), static_cast<ssize_t>(sizeof junk));
    ::close(fd);
  }
  auto log = std::move(*event_log::open(opts(d, 1)));
  auto recs = log->read(0, 0, 1000);
  ASSERT_EQ(recs->size(), 100u);
  EXPECT_EQ(recs->back().data, "msg99");
  const auto next = append_sync(*log, 0, "after");
  EXPECT_EQ(next.sequence, 100);
  EXPECT_EQ(log->read(0, 100, 10)->front().data, "after");
}

TEST(event_log, a_corrupt_record_in_the_tail_is_cut_with_everything_after_it) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d, 1)));
    for (int i = 0; i < 10; ++i) append_sync(*log, 0, "msg" + std::to_string(i));
  }
  fs::path seg;
  for (const auto& e : fs::directory_iterator(d.path / "p0")) seg = e.path();
  const auto size = fs::file_size(seg);
  {
    const int fd = ::open(seg.c_str(), O_WRONLY);
    const char flip = 'X';
    ASSERT_EQ(::pwrite(fd, &flip, 1, static_cast<off_t>(size - 2)), 1);  // inside the last record's data
    ::close(fd);
  }
  auto log = std::move(*event_log::open(opts(d, 1)));
  EXPECT_EQ(log->read(0, 0, 100)->size(), 9u);
}

TEST(event_log, segments_roll_and_reads_cross_them) {
  temp_dir d;
  auto o = opts(d, 1);
  o.segment_bytes = 1024;
  auto log = std::move(*event_log::open(o));
  for (int i = 0; i < 200; ++i) append_sync(*log, 0, std::string(50, static_cast<char>('a' + i % 26)));
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(d.path / "p0")) ++files;
  EXPECT_GT(files, 5u);
  auto recs = log->read(0, 150, 1000);
  ASSERT_EQ(recs->size(), 50u);
  EXPECT_EQ(recs->front().sequence, 150);
  EXPECT_EQ(recs->front().data, std::string(50, static_cast<char>('a' + 150 % 26)));
  // Offsets keep growing across segments.
  auto all = log->read(0, 0, 1000, 1 << 30);
  for (std::size_t i = 1; i < all->size(); ++i) EXPECT_GT((*all)[i].offset, (*all)[i - 1].offset);
  // Offset lookups agree with the records.
  const auto& r = (*all)[120];
  EXPECT_EQ(log->sequence_after_offset(0, r.offset, true), 120);
  EXPECT_EQ(log->sequence_after_offset(0, r.offset, false), 121);
  EXPECT_EQ(log->sequence_after_offset(0, all->back().offset, false), 200);
  EXPECT_EQ(log->sequence_after_offset(0, -1, false), 0);
}

TEST(event_log, read_limits_and_start_inside_a_segment) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d, 1)));
  for (int i = 0; i < 300; ++i) append_sync(*log, 0, std::to_string(i));
  auto recs = log->read(0, 130, 5);
  ASSERT_EQ(recs->size(), 5u);
  EXPECT_EQ(recs->front().data, "130");
  // "0".."9" fill the 10-byte budget exactly; "10" would pass it.
  EXPECT_EQ(log->read(0, 0, 1000, 10)->size(), 10u);
  // The first record is returned even when it alone is over the budget.
  EXPECT_EQ(log->read(0, 100, 1000, 1)->size(), 1u);
  EXPECT_TRUE(log->read(0, 300, 10)->empty());
}

TEST(event_log, time_lookup_and_retention) {
  temp_dir d;
  auto o = opts(d, 1);
  o.segment_bytes = 256;
  o.retention = std::chrono::milliseconds(1000);
  auto log = std::move(*event_log::open(o));
  std::vector<log_position> pos;
  for (int i = 0; i < 40; ++i) pos.push_back(append_sync(*log, 0, std::string(40, 'x')));
  EXPECT_EQ(log->sequence_at_time(0, pos[0].enqueued_ms, true), 0);
  EXPECT_EQ(log->sequence_at_time(0, pos.back().enqueued_ms + 1, true), 40);
  const auto first_after = log->sequence_at_time(0, pos[20].enqueued_ms, false);
  EXPECT_GT(first_after, 20);
  if (first_after < 40) {
    EXPECT_GT(pos[first_after].enqueued_ms, pos[20].enqueued_ms);
  }
  EXPECT_EQ(pos[first_after - 1].enqueued_ms, pos[20].enqueued_ms);
  // Nothing is old enough yet.
  EXPECT_EQ(log->enforce_retention(pos.back().enqueued_ms), 0u);
  // Far in the future everything but the newest segment goes; numbering continues.
  EXPECT_GT(log->enforce_retention(pos.back().enqueued_ms + 10'000), 0u);
  const auto st = log->stats(0);
  EXPECT_GT(st.begin_sequence, 0);
  EXPECT_EQ(st.last_sequence, 39);
  EXPECT_EQ(append_sync(*log, 0, "new").sequence, 40);
  auto recs = log->read(0, 0, 100);
  EXPECT_EQ(recs->front().sequence, st.begin_sequence);
}

TEST(event_log, a_segment_whose_creation_was_interrupted_is_ignored) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d, 1)));
    append_sync(*log, 0, "kept");
  }
  // A crash between creating the next segment and writing its header leaves only a .tmp file.
  { std::ofstream(d.path / "p0" / "00000000000000000001.seg.tmp") << ""; }
  auto log = event_log::open(opts(d, 1));
  ASSERT_TRUE(log.has_value()) << log.error().message;
  EXPECT_EQ((*log)->read(0, 0, 10)->front().data, "kept");
  EXPECT_EQ(append_sync(**log, 0, "next").sequence, 1);
  EXPECT_FALSE(fs::exists(d.path / "p0" / "00000000000000000001.seg.tmp"));
}

namespace {
hub::result<std::vector<log_position>> append_batch_sync(event_log& log, std::uint32_t p, std::vector<std::string> rs) {
  std::promise<hub::result<std::vector<log_position>>> done;
  log.append(p, std::move(rs), [&](hub::result<std::vector<log_position>> r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}
}  // namespace

TEST(event_log, a_batch_gets_consecutive_positions_in_order) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d)));
  append_sync(*log, 0, "before");
  auto r = append_batch_sync(*log, 0, {"a", "bb", "ccc"});
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->size(), 3u);
  const auto after = append_sync(*log, 0, "after");
  auto recs = log->read(0, 0, 10);
  ASSERT_TRUE(recs.has_value());
  ASSERT_EQ(recs->size(), 5u);
  const std::vector<std::string> want{"before", "a", "bb", "ccc", "after"};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*r)[i].sequence, static_cast<std::int64_t>(i + 1));
    EXPECT_EQ((*r)[i].offset, (*recs)[i + 1].offset);
    EXPECT_EQ((*r)[i].enqueued_ms, (*recs)[i + 1].enqueued_ms);
  }
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ((*recs)[i].data, want[i]);
  EXPECT_EQ(after.sequence, 4);
  EXPECT_TRUE(append_batch_sync(*log, 1, {})->empty());  // empty batch: done at once
  EXPECT_TRUE(log->stats(1).empty);
}

TEST(event_log, batches_from_many_threads_stay_whole_and_in_order) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d, 1)));
  constexpr int threads = 4, batches = 100, per_batch = 7;
  std::atomic<int> acked{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int b = 0; b < batches; ++b) {
        std::vector<std::string> rs;
        for (int i = 0; i < per_batch; ++i) rs.push_back(std::to_string(t) + ":" + std::to_string(b * per_batch + i));
        log->append(0, std::move(rs), [&](hub::result<std::vector<log_position>> r) {
          if (r && r->size() == per_batch && (*r)[per_batch - 1].sequence == (*r)[0].sequence + per_batch - 1) ++acked;
        });
      }
    });
  }
  for (auto& t : ts) t.join();
  log->close();
  EXPECT_EQ(acked.load(), threads * batches);
  auto recs = log->read(0, 0, 100000, 1 << 30);
  ASSERT_TRUE(recs.has_value());
  ASSERT_EQ(recs->size(), static_cast<std::size_t>(threads * batches * per_batch));
  std::vector<int> next(threads, 0);
  for (std::size_t i = 0; i < recs->size(); ++i) {
    const auto& r = (*recs)[i];
    const int t = std::stoi(r.data.substr(0, r.data.find(':')));
    const int n = std::stoi(r.data.substr(r.data.find(':') + 1));
    EXPECT_EQ(n, next[t]++);
    // A batch is never interleaved with another: its records are adjacent.
    if (n % per_batch != 0) {
      EXPECT_EQ(std::stoi((*recs)[i - 1].data.substr(0, (*recs)[i - 1].data.find(':'))), t);
    }
  }
}

// commit_delay: a group formed right after a commit waits until the delay has passed since it;
// a record after a quiet spell is committed at once. Bounds are generous (the delay is 200 ms) so
// that a busy machine cannot fail them.
TEST(event_log, commit_delay_spaces_a_stream_of_commits_but_not_a_lone_record) {
  using namespace std::chrono;
  temp_dir d;
  auto o = opts(d, 1);
  o.commit_delay = milliseconds(200);
  auto log = std::move(event_log::open(o).value());
  append_sync(*log, 0, "first");  // the partition was idle: committed at once
  const auto first_done = steady_clock::now();
  // Two more right after: one group, committed no sooner than 200 ms after the first commit.
  std::promise<void> both;
  std::atomic<int> left{2};
  std::vector<std::int64_t> seqs(2, -1);
  for (int i = 0; i < 2; ++i) {
    log->append(0, "next" + std::to_string(i), [&, i](hub::result<log_position> r) {
      ASSERT_TRUE(r.has_value());
      seqs[static_cast<std::size_t>(i)] = r->sequence;
      if (--left == 0) both.set_value();
    });
  }
  both.get_future().wait();
  EXPECT_GE(steady_clock::now() - first_done, milliseconds(150));
  EXPECT_EQ(seqs, (std::vector<std::int64_t>{1, 2}));
  // After a quiet spell longer than the delay: no wait.
  std::this_thread::sleep_for(milliseconds(300));
  const auto t0 = steady_clock::now();
  EXPECT_EQ(append_sync(*log, 0, "after a pause").sequence, 3);
  EXPECT_LT(steady_clock::now() - t0, milliseconds(150));
  log->close();
}

TEST(event_log, one_bad_record_fails_the_whole_batch_and_nothing_is_written) {
  temp_dir d;
  auto o = opts(d);
  o.max_record_bytes = 8;
  auto log = std::move(*event_log::open(o));
  auto r = append_batch_sync(*log, 0, {"ok", "far too long", "ok"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, hub::errc::message_too_large);
  EXPECT_TRUE(log->stats(0).empty);
  EXPECT_FALSE(append_batch_sync(*log, 7, {"x"}).has_value());  // no such partition
  log->close();
  auto closed = append_batch_sync(*log, 0, {"x"});
  ASSERT_FALSE(closed.has_value());
  EXPECT_EQ(closed.error().code, hub::errc::service_unavailable);
}

TEST(event_log, a_batch_is_done_only_once_written_and_survives_reopen) {
  temp_dir d;
  std::vector<std::int64_t> seen_at_done;
  {
    auto log = std::move(*event_log::open(opts(d)));
    std::promise<void> done;
    log->append(1, std::vector<std::string>{"x", "y"}, [&](hub::result<std::vector<log_position>> r) {
      ASSERT_TRUE(r.has_value());
      // By the time done runs the batch is committed: readable, and in the partition's stats.
      seen_at_done.push_back(log->stats(1).last_sequence);
      auto recs = log->read(1, 0, 10);
      seen_at_done.push_back(recs ? static_cast<std::int64_t>(recs->size()) : -1);
      done.set_value();
    });
    done.get_future().get();
  }
  EXPECT_EQ(seen_at_done, (std::vector<std::int64_t>{1, 2}));
  auto log = std::move(*event_log::open(opts(d)));
  auto recs = log->read(1, 0, 10);
  ASSERT_TRUE(recs.has_value());
  ASSERT_EQ(recs->size(), 2u);
  EXPECT_EQ((*recs)[1].data, "y");
}

namespace {
// The segment files of a partition, oldest first.
std::vector<fs::path> segment_files(const temp_dir& d, int partition) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(d.path / ("p" + std::to_string(partition)))) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

char last_byte(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  in.seekg(-1, std::ios::end);
  return static_cast<char>(in.get());
}

constexpr std::size_t record_bytes(std::size_t data) { return segment_file::record_overhead + data; }
}  // namespace

TEST(event_log, preallocated_zeros_follow_the_newest_record_and_are_cut_on_roll_and_close) {
  temp_dir d;
  auto o = opts(d, 1);
  o.segment_bytes = 4096;
  o.preallocate_bytes = 8192;
  {
    auto log = std::move(*event_log::open(o));
    for (int i = 0; i < 100; ++i) append_sync(*log, 0, std::string(100, 'y'));
    const auto files = segment_files(d, 0);
    ASSERT_GT(files.size(), 2u);
    // Every full segment ends at its last record; the newest one has zeros after its records,
    // whole pages of them, at least preallocate_bytes past the data when it was last extended.
    for (std::size_t i = 0; i + 1 < files.size(); ++i) EXPECT_EQ(last_byte(files[i]), 'y') << files[i];
    const auto newest = fs::file_size(files.back());
    EXPECT_EQ(newest % 4096, 0u);
    const auto recs = log->read(0, 0, 1000, 1 << 30);
    ASSERT_EQ(recs->size(), 100u);
    const auto in_newest = static_cast<std::size_t>(std::count_if(recs->begin(), recs->end(), [&](const log_record& r) {
      return r.sequence >= std::stoll(files.back().stem().string());
    }));
    EXPECT_GE(newest, segment_file::header_bytes + in_newest * record_bytes(100) + 4096);
    EXPECT_EQ(last_byte(files.back()), 0);
  }
  // Closed: the newest segment ends at its last record too.
  EXPECT_EQ(last_byte(segment_files(d, 0).back()), 'y');
  auto log = std::move(*event_log::open(o));
  EXPECT_EQ(log->read(0, 0, 1000, 1 << 30)->size(), 100u);
  EXPECT_EQ(append_sync(*log, 0, "next").sequence, 100);
}

TEST(event_log, after_a_crash_no_record_past_a_torn_one_ever_comes_back) {
  temp_dir d;
  auto o = opts(d, 1);
  {
    auto log = std::move(*event_log::open(o));
    for (int i = 0; i < 10; ++i) append_sync(*log, 0, "msg" + std::to_string(i));
  }
  // What a crash in a preallocated segment can leave: a record whose first page did not reach
  // the disk (its bytes wrong), a later one of the same unacknowledged group that did (valid,
  // numbered 11), then the zeros.
  const fs::path seg = segment_files(d, 0).back();
  {
    std::string tail;
    segment_file::append_record(tail, 10, 1, "torn!");
    tail[segment_file::record_overhead] ^= 0x55;  // breaks its CRC
    segment_file::append_record(tail, 11, 1, "stale, never acknowledged");
    tail.append(8192, '\0');
    const int fd = ::open(seg.c_str(), O_WRONLY | O_APPEND);
    ASSERT_EQ(::write(fd, tail.data(), tail.size()), static_cast<ssize_t>(tail.size()));
    ::close(fd);
  }
  {
    auto log = std::move(*event_log::open(o));
    ASSERT_EQ(log->read(0, 0, 100)->size(), 10u);
    // A new record of the torn one's size lands exactly where it was: record 11 after it must
    // be the new one, not the stale one, now and after another reopen.
    EXPECT_EQ(append_sync(*log, 0, "new10").sequence, 10);
  }
  auto log = std::move(*event_log::open(o));
  auto recs = log->read(0, 10, 100);
  ASSERT_EQ(recs->size(), 1u);
  EXPECT_EQ(recs->front().data, "new10");
  EXPECT_EQ(append_sync(*log, 0, "new11").sequence, 11);
  EXPECT_EQ(log->read(0, 11, 100)->front().data, "new11");
}

TEST(event_log, zeros_after_an_older_segments_last_record_are_not_corruption) {
  temp_dir d;
  auto o = opts(d, 1);
  o.segment_bytes = 1024;
  {
    auto log = std::move(*event_log::open(o));
    for (int i = 0; i < 40; ++i) append_sync(*log, 0, std::string(60, 'z'));
  }
  const auto files = segment_files(d, 0);
  ASSERT_GT(files.size(), 2u);
  {
    std::ofstream out(files.front(), std::ios::binary | std::ios::app);
    out << std::string(5000, '\0');
  }
  auto log = std::move(*event_log::open(o));
  EXPECT_EQ(log->read(0, 0, 1000, 1 << 30)->size(), 40u);
  // Anything else there still is.
  log.reset();
  {
    std::ofstream out(files.front(), std::ios::binary | std::ios::app);
    out << "junk";
  }
  EXPECT_FALSE(event_log::open(o).has_value());
}

TEST(event_log, appends_go_on_without_preallocation_when_the_zeros_do_not_fit) {
  temp_dir d;
  auto o = opts(d, 1);
  o.preallocate_bytes = 16 << 20;
  // A file size limit stands in for a full disk: zeros past 8 MiB fail (EFBIG, SIGXFSZ ignored).
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  const rlimit small{8 << 20, old_limit.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  {
    auto log = std::move(*event_log::open(o));
    for (int i = 0; i < 50; ++i) EXPECT_EQ(append_sync(*log, 0, std::string(100, 'w')).sequence, i);
    // The partial zeros were cut off again.
    EXPECT_LT(fs::file_size(segment_files(d, 0).back()), std::uintmax_t{1} << 20);
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  auto log = std::move(*event_log::open(o));
  EXPECT_EQ(log->read(0, 0, 100)->size(), 50u);
}
