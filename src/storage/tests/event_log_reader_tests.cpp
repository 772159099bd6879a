// The read-only reader against logs the real writer made: what it sees, what it leaves alone.
#include "storage/event_log.hpp"
#include "storage/event_log_reader.hpp"
#include "storage/segment_file.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

using namespace hub::storage;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/hubd-logreader-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { fs::remove_all(path); }
};

log_options opts(const temp_dir& d, std::uint32_t partitions = 1) {
  log_options o;
  o.dir = d.path.string();
  o.partitions = partitions;
  o.sync = false;   // durability is the writer's business; these tests are about visibility
  return o;
}

log_position append_sync(event_log& log, std::uint32_t p, std::string data) {
  std::promise<hub::result<log_position>> done;
  log.append(p, std::move(data), [&](hub::result<log_position> r) { done.set_value(std::move(r)); });
  auto r = done.get_future().get();
  EXPECT_TRUE(r.has_value());
  return r.has_value() ? *r : log_position{};
}

std::unique_ptr<event_log_reader> open_reader(const temp_dir& d) {
  auto r = event_log_reader::open(d.path.string());
  EXPECT_TRUE(r.has_value()) << (r.has_value() ? "" : r.error().message);
  return r.has_value() ? std::move(*r) : nullptr;
}

std::vector<log_record> read_all(event_log_reader& reader, std::uint32_t p, std::int64_t from = 0) {
  auto r = reader.read(p, from, 1'000'000, std::size_t{1} << 30);
  EXPECT_TRUE(r.has_value());
  return r.has_value() ? std::move(*r) : std::vector<log_record>{};
}

// Every file below dir with its bytes: proves the reader changed nothing.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) {
      out[e.path().string()] = "<dir>";
      continue;
    }
    std::ifstream in(e.path(), std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    out[e.path().string()] = ss.str();
  }
  return out;
}

fs::path newest_segment(const fs::path& partition_dir) {
  fs::path newest;
  for (const auto& e : fs::directory_iterator(partition_dir)) {
    if (newest.empty() || e.path().filename() > newest.filename()) newest = e.path();
  }
  return newest;
}

void append_bytes(const fs::path& file, std::string_view bytes) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

}  // namespace

TEST(event_log_reader, sees_what_the_writer_wrote_with_the_same_positions) {
  temp_dir d;
  auto log = std::move(*event_log::open(opts(d, 3)));
  std::vector<log_position> pos;
  for (int i = 0; i < 10; ++i) pos.push_back(append_sync(*log, 1, "msg" + std::to_string(i)));
  append_sync(*log, 2, "other");
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  EXPECT_EQ(reader->partitions(), 3u);
  EXPECT_TRUE(read_all(*reader, 0).empty());
  EXPECT_TRUE(reader->stats(0).empty);
  EXPECT_EQ(reader->end_sequence(0), 0);
  const auto recs = read_all(*reader, 1);
  ASSERT_EQ(recs.size(), 10u);
  for (std::size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(recs[i].data, "msg" + std::to_string(i));
    EXPECT_EQ(recs[i].sequence, pos[i].sequence);
    EXPECT_EQ(recs[i].offset, pos[i].offset);
    EXPECT_EQ(recs[i].enqueued_ms, pos[i].enqueued_ms);
  }
  const auto writer_stats = log->stats(1);
  const auto reader_stats = reader->stats(1);
  EXPECT_EQ(reader_stats.empty, writer_stats.empty);
  EXPECT_EQ(reader_stats.begin_sequence, writer_stats.begin_sequence);
  EXPECT_EQ(reader_stats.last_sequence, writer_stats.last_sequence);
  EXPECT_EQ(reader_stats.last_offset, writer_stats.last_offset);
  EXPECT_EQ(reader_stats.last_enqueued_ms, writer_stats.last_enqueued_ms);
  EXPECT_EQ(reader->end_sequence(1), 10);
  EXPECT_EQ(read_all(*reader, 2).at(0).data, "other");
  // Reads from the middle, with limits.
  auto some = reader->read(1, 4, 3);
  ASSERT_TRUE(some.has_value());
  ASSERT_EQ(some->size(), 3u);
  EXPECT_EQ(some->front().sequence, 4);
  EXPECT_EQ(reader->read(1, 0, 100, 8)->size(), 2u);   // "msg0" + "msg1" fill 8 bytes
  EXPECT_TRUE(reader->read(1, 10, 100)->empty());
  EXPECT_FALSE(reader->read(7, 0, 1).has_value());
}

TEST(event_log_reader, sees_new_records_and_segments_only_after_refresh) {
  temp_dir d;
  auto o = opts(d);
  o.segment_bytes = 512;
  auto log = std::move(*event_log::open(o));
  append_sync(*log, 0, "first");
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  EXPECT_EQ(read_all(*reader, 0).size(), 1u);
  for (int i = 0; i < 100; ++i) append_sync(*log, 0, std::string(40, static_cast<char>('a' + i % 26)));
  EXPECT_EQ(read_all(*reader, 0).size(), 1u);   // not refreshed yet
  ASSERT_TRUE(reader->refresh().has_value());
  const auto recs = read_all(*reader, 0);
  ASSERT_EQ(recs.size(), 101u);
  for (std::size_t i = 0; i < recs.size(); ++i) EXPECT_EQ(recs[i].sequence, static_cast<std::int64_t>(i));
  EXPECT_EQ(recs.back().data, std::string(40, static_cast<char>('a' + 99 % 26)));
  // Offsets agree with the writer's across segment boundaries.
  const auto from_writer = log->read(0, 0, 1000, 1 << 30);
  ASSERT_EQ(from_writer->size(), recs.size());
  for (std::size_t i = 0; i < recs.size(); ++i) EXPECT_EQ(recs[i].offset, (*from_writer)[i].offset);
  EXPECT_EQ(read_all(*reader, 0, 57).front().sequence, 57);
}

TEST(event_log_reader, reads_while_a_writer_appends_and_rolls_segments) {
  temp_dir d;
  auto o = opts(d, 2);
  o.segment_bytes = 512;
  auto log = std::move(*event_log::open(o));
  constexpr int total = 3000;
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    std::atomic<int> acked{0};
    // Waves of 50 unsynchronised appends (group-committed in batches of varying size) while the
    // reader looks; each wave outgrows a segment, so the log rolls about once per wave.
    constexpr int wave = 50;
    for (int i = 0; i < total; ++i) {
      log->append(static_cast<std::uint32_t>(i % 2), std::to_string(i), [&](hub::result<log_position> r) {
        if (r) ++acked;
      });
      if ((i + 1) % wave == 0) {
        while (acked.load() < i + 1) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
    while (acked.load() < total) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    writer_done = true;
  });
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  std::vector<std::int64_t> next(2, 0);
  std::vector<int> expected_value{0, 1};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int seen = 0;
  int rounds_with_news = 0;
  while (seen < total && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(reader->refresh().has_value());
    const int seen_before = seen;
    for (std::uint32_t p = 0; p < 2; ++p) {
      auto recs = reader->read(p, next[p], 97);
      ASSERT_TRUE(recs.has_value());
      for (const auto& r : *recs) {
        ASSERT_EQ(r.sequence, next[p]) << "partition " << p;   // no gap, no repeat
        ASSERT_EQ(r.data, std::to_string(expected_value[p])) << "partition " << p;
        ++next[p];
        expected_value[p] += 2;
        ++seen;
      }
    }
    if (seen > seen_before) ++rounds_with_news;
    if (writer_done && seen < total) continue;   // catch up without sleeping
    std::this_thread::yield();
  }
  writer.join();
  EXPECT_EQ(seen, total);
  EXPECT_GT(rounds_with_news, 3);   // it did read while the writer was still writing
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(d.path / "p0")) ++files;
  EXPECT_GT(files, 10u);   // the reader crossed segment rolls
}

TEST(event_log_reader, leaves_a_torn_tail_alone_and_picks_up_the_writers_repair) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d)));
    for (int i = 0; i < 20; ++i) append_sync(*log, 0, "msg" + std::to_string(i));
  }
  const fs::path seg = newest_segment(d.path / "p0");
  // A crash in the middle of a group commit: one complete record and half of another.
  std::string torn;
  segment_file::append_record(torn, 20, 1, "complete");
  std::string half;
  segment_file::append_record(half, 21, 1, "never finished");
  torn += half.substr(0, half.size() / 2);
  append_bytes(seg, torn);
  const auto before = snapshot(d.path);
  const auto size_before = fs::file_size(seg);

  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  auto recs = read_all(*reader, 0);
  ASSERT_EQ(recs.size(), 21u);   // every complete record, none of the torn one
  EXPECT_EQ(recs.back().data, "complete");
  EXPECT_EQ(reader->end_sequence(0), 21);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->refresh().has_value());
  EXPECT_EQ(read_all(*reader, 0).size(), 21u);
  EXPECT_EQ(fs::file_size(seg), size_before);
  EXPECT_EQ(snapshot(d.path), before);   // not a byte changed, nothing created

  // hubd restarts: it cuts the torn half off and continues numbering from there.
  auto log = std::move(*event_log::open(opts(d)));
  EXPECT_EQ(append_sync(*log, 0, "after restart").sequence, 21);
  ASSERT_TRUE(reader->refresh().has_value());
  recs = read_all(*reader, 0, 20);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].data, "complete");
  EXPECT_EQ(recs[1].data, "after restart");
  EXPECT_EQ(recs[1].sequence, 21);
}

TEST(event_log_reader, a_record_being_written_appears_once_complete) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d)));
    append_sync(*log, 0, "zero");
  }
  const fs::path seg = newest_segment(d.path / "p0");
  std::string rec;
  segment_file::append_record(rec, 1, 2, "one, written in pieces");
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  for (std::size_t cut : {std::size_t{3}, segment_file::record_overhead, rec.size() - 1}) {
    append_bytes(seg, rec.substr(0, cut));
    ASSERT_TRUE(reader->refresh().has_value());
    EXPECT_EQ(read_all(*reader, 0).size(), 1u) << "after " << cut << " bytes";
    ASSERT_EQ(::truncate(seg.c_str(), static_cast<off_t>(fs::file_size(seg) - cut)), 0);
  }
  append_bytes(seg, rec);
  ASSERT_TRUE(reader->refresh().has_value());
  const auto recs = read_all(*reader, 0);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].data, "one, written in pieces");
  EXPECT_EQ(recs[1].enqueued_ms, 2);
}

TEST(event_log_reader, stops_at_a_corrupt_record_without_repairing_it) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d)));
    for (int i = 0; i < 10; ++i) append_sync(*log, 0, "msg" + std::to_string(i));
  }
  const fs::path seg = newest_segment(d.path / "p0");
  {
    const int fd = ::open(seg.c_str(), O_WRONLY);
    const char flip = 'X';
    ASSERT_EQ(::pwrite(fd, &flip, 1, static_cast<off_t>(fs::file_size(seg) - 2)), 1);   // in msg9's data
    ::close(fd);
  }
  const auto before = snapshot(d.path);
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  EXPECT_EQ(read_all(*reader, 0).size(), 9u);
  EXPECT_EQ(reader->stats(0).last_sequence, 8);
  EXPECT_EQ(snapshot(d.path), before);
}

TEST(event_log_reader, ignores_a_segment_still_being_created) {
  temp_dir d;
  {
    auto log = std::move(*event_log::open(opts(d)));
    append_sync(*log, 0, "zero");
  }
  // The writer creates the next segment, then writes its header.
  const fs::path next = d.path / "p0" / segment_file::file_name(1);
  { std::ofstream create(next); }
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  EXPECT_EQ(read_all(*reader, 0).size(), 1u);
  std::string seg(segment_file::header_bytes, '\0');
  segment_file::encode_header(seg.data(), {1, 100});
  segment_file::append_record(seg, 1, 5, "one");
  append_bytes(next, seg);
  ASSERT_TRUE(reader->refresh().has_value());
  const auto recs = read_all(*reader, 0);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].data, "one");
  EXPECT_EQ(recs[1].offset, 100);
}

TEST(event_log_reader, follows_retention_and_starts_at_the_oldest_retained_record) {
  temp_dir d;
  auto o = opts(d);
  o.segment_bytes = 256;
  o.retention = std::chrono::milliseconds(1000);
  auto log = std::move(*event_log::open(o));
  log_position last;
  for (int i = 0; i < 40; ++i) last = append_sync(*log, 0, std::string(40, 'x'));
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  EXPECT_EQ(read_all(*reader, 0).size(), 40u);
  ASSERT_GT(log->enforce_retention(last.enqueued_ms + 10'000), 0u);
  ASSERT_TRUE(reader->refresh().has_value());
  const auto st = reader->stats(0);
  EXPECT_EQ(st.begin_sequence, log->stats(0).begin_sequence);
  EXPECT_GT(st.begin_sequence, 0);
  EXPECT_EQ(st.last_sequence, 39);
  const auto recs = read_all(*reader, 0);
  ASSERT_FALSE(recs.empty());
  EXPECT_EQ(recs.front().sequence, st.begin_sequence);
  EXPECT_EQ(recs.back().sequence, 39);
}

TEST(event_log_reader, opening_a_missing_log_fails_and_creates_nothing) {
  temp_dir d;
  EXPECT_FALSE(event_log_reader::open((d.path / "events").string()).has_value());
  EXPECT_FALSE(fs::exists(d.path / "events"));
  EXPECT_FALSE(event_log_reader::open(d.path.string()).has_value());   // a folder without partitions
  EXPECT_TRUE(fs::is_empty(d.path));
}

TEST(event_log_reader, verifies_old_segments_only_when_it_reads_them) {
  temp_dir d;
  auto o = opts(d);
  o.segment_bytes = 1024;
  auto log = std::move(*event_log::open(o));
  for (int i = 0; i < 400; ++i) append_sync(*log, 0, std::string(60, static_cast<char>('a' + i % 26)));
  std::uint64_t total = 0;
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(d.path / "p0")) {
    total += fs::file_size(e.path()) - segment_file::header_bytes;
    ++files;
  }
  ASSERT_GT(files, 10u);
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  // Following from the end needs the newest segments only.
  EXPECT_EQ(reader->end_sequence(0), 400);
  EXPECT_EQ(reader->stats(0).last_sequence, 399);
  EXPECT_LE(reader->bytes_verified(), 3 * o.segment_bytes);
  EXPECT_EQ(reader->read(0, 390, 100)->size(), 10u);
  EXPECT_LE(reader->bytes_verified(), 3 * o.segment_bytes);
  // Reading from the start verifies the rest.
  const auto recs = read_all(*reader, 0);
  ASSERT_EQ(recs.size(), 400u);
  for (std::size_t i = 0; i < recs.size(); ++i) ASSERT_EQ(recs[i].sequence, static_cast<std::int64_t>(i));
  EXPECT_EQ(reader->bytes_verified(), total);
  // A segment rolled twice between refreshes is completed when read.
  for (int i = 400; i < 460; ++i) append_sync(*log, 0, std::string(60, 'z'));
  ASSERT_TRUE(reader->refresh().has_value());
  EXPECT_EQ(read_all(*reader, 0, 390).size(), 70u);
}

TEST(event_log_reader, a_corrupt_old_segment_ends_early_and_the_next_one_follows) {
  temp_dir d;
  auto o = opts(d);
  o.segment_bytes = 512;
  {
    auto log = std::move(*event_log::open(o));
    for (int i = 0; i < 100; ++i) append_sync(*log, 0, "record-" + std::to_string(i) + std::string(30, '.'));
  }
  // Damage the oldest segment's fourth record (hubd itself would refuse to open this log).
  fs::path oldest;
  for (const auto& e : fs::directory_iterator(d.path / "p0")) {
    if (oldest.empty() || e.path().filename() < oldest.filename()) oldest = e.path();
  }
  const std::size_t record = segment_file::record_overhead + 39;   // "record-N" + 30 dots, N < 10
  {
    const int fd = ::open(oldest.c_str(), O_WRONLY);
    const char flip = '#';
    ASSERT_EQ(::pwrite(fd, &flip, 1, static_cast<off_t>(segment_file::header_bytes + 3 * record + 30)), 1);
    ::close(fd);
  }
  const auto before = snapshot(d.path);
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  const auto recs = read_all(*reader, 0);
  ASSERT_GE(recs.size(), 3u);
  EXPECT_EQ(recs[2].sequence, 2);
  EXPECT_GT(recs[3].sequence, 3);   // skipped to the next segment
  EXPECT_EQ(recs.back().sequence, 99);
  for (std::size_t i = 1; i < recs.size(); ++i) EXPECT_GT(recs[i].sequence, recs[i - 1].sequence);
  EXPECT_EQ(snapshot(d.path), before);
}

TEST(event_log_reader, reads_a_synced_writers_preallocated_segments_while_it_appends) {
  temp_dir d;
  auto o = opts(d, 1);
  o.sync = true;               // preallocation is on only with fdatasync
  o.segment_bytes = 4096;
  o.preallocate_bytes = 4096;  // zeros past the newest record, cut on each roll
  auto log = std::move(*event_log::open(o));
  constexpr int total = 600;
  std::thread writer([&] {
    for (int i = 0; i < total; i += 20) {
      std::vector<std::string> wave;
      for (int j = i; j < i + 20; ++j) wave.push_back(std::to_string(j));
      std::promise<void> done;
      log->append(0, std::move(wave), [&](hub::result<std::vector<log_position>>) { done.set_value(); });
      done.get_future().get();
    }
  });
  auto reader = open_reader(d);
  ASSERT_TRUE(reader);
  std::int64_t next = 0;
  bool saw_zeros = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (next < total && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(reader->refresh().has_value());
    auto recs = reader->read(0, next, 1000);
    ASSERT_TRUE(recs.has_value());
    for (const auto& r : *recs) {
      ASSERT_EQ(r.sequence, next);   // no gap, no repeat, never a record made of zeros
      ASSERT_EQ(r.data, std::to_string(next));
      ++next;
    }
    // The file being written is longer than its records: the reader stopped at the zeros.
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(d.path / "p0")) {
      if (e.path().extension() == ".seg") files.push_back(e.path());   // not one being created
    }
    std::sort(files.begin(), files.end());
    // (A segment of only its header also ends in zeros: only a longer one counts.)
    std::ifstream in(files.back(), std::ios::binary);
    in.seekg(-1, std::ios::end);
    if (in && in.get() == 0 && fs::file_size(files.back()) >= 4096) saw_zeros = true;
  }
  writer.join();
  EXPECT_EQ(next, total);
  EXPECT_TRUE(saw_zeros);
}
