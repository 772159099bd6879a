#include "storage/event_log_reader.hpp"

#include "storage/segment_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace hub::storage {
namespace fs = std::filesystem;
namespace sf = segment_file;

namespace {

constexpr std::int64_t index_every = 64;

struct index_entry {
  std::int64_t sequence;
  std::uint64_t pos;
};

// One segment file as far as the reader has verified it.
struct segment {
  fs::path path;
  int fd = -1;
  std::int64_t base_sequence = 0;
  std::int64_t base_offset = 0;
  std::uint64_t end = sf::header_bytes;   // verified records end here
  std::int64_t count = 0;
  std::int64_t last_ms = 0;
  std::uint64_t last_pos = 0;
  std::vector<index_entry> index;         // every index_every-th record
  // Verified to its final end: a newer segment existed when it was scanned, so the writer had
  // left it for good.
  bool sealed = false;

  segment() = default;
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;
  ~segment() {
    if (fd >= 0) ::close(fd);
  }
  std::int64_t end_sequence() const { return base_sequence + count; }
  std::int64_t offset_at(std::uint64_t pos) const {
    return base_offset + static_cast<std::int64_t>(pos - sf::header_bytes);
  }

  void forget_records() {
    end = sf::header_bytes;
    count = 0;
    last_ms = 0;
    last_pos = 0;
    index.clear();
    sealed = false;
  }

  // Verifies records from `end` up to the file's current size; returns the bytes verified.
  std::uint64_t extend(std::uint64_t file_size) {
    const std::uint64_t from = end;
    end = sf::scan(fd, end, file_size, end_sequence(), [&](const sf::record_info& r) {
      if (count % index_every == 0) index.push_back({r.sequence, r.pos});
      last_ms = r.enqueued_ms;
      last_pos = r.pos;
      ++count;
    });
    return end - from;
  }
};

error io_error(const std::string& what, const fs::path& path) {
  return make_error(errc::server_error, "event log: " + what + " " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

// Verification is lazy for old segments: refresh() verifies the two newest segments of each
// partition (the one being written and, right after a roll, the one before it, which holds the
// newest record), and read() verifies an older one only when it reads from it. So opening a log
// to follow it from its end costs two segments, not the whole retention period. Until then, an
// older segment's range ends where the next segment's header says it starts.
struct event_log_reader::impl {
  struct partition {
    fs::path dir;
    std::vector<std::unique_ptr<segment>> segments;   // oldest first

    // One past the last sequence of segment i: verified for the newest and sealed segments,
    // claimed by the next segment's header for an older one not verified yet.
    std::int64_t end_sequence_of(std::size_t i) const {
      const segment& s = *segments[i];
      if (s.sealed || i + 1 == segments.size()) return s.end_sequence();
      return segments[i + 1]->base_sequence;
    }
  };

  fs::path dir;
  std::vector<partition> parts;
  std::uint64_t bytes_verified = 0;

  // p0, p1, ... as long as they exist; partitions are only ever added (hubd makes them all at
  // its first start).
  void discover_partitions() {
    for (;;) {
      fs::path p = dir / ("p" + std::to_string(parts.size()));
      std::error_code ec;
      if (!fs::is_directory(p, ec)) return;
      parts.push_back(partition{std::move(p), {}});
    }
  }

  // Verifies what was added to segment i since the last look. `newer_exists` must have been
  // seen before this call's fstat: then the writer is done with the segment and its size final.
  result<void> verify(segment& s, bool newer_exists) {
    if (s.sealed) return {};
    struct stat st {};
    if (::fstat(s.fd, &st) != 0) return io_error("cannot stat", s.path);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    // Shorter than what was verified: hubd cut a failed write off. Verify again.
    if (size < s.end) s.forget_records();
    if (size > s.end) bytes_verified += s.extend(size);
    s.sealed = newer_exists;
    return {};
  }

  result<void> refresh(partition& p) {
    std::error_code ec;
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(p.dir, ec)) {
      if (entry.path().extension() == sf::extension) names.push_back(entry.path().filename().string());
    }
    if (ec) return make_error(errc::server_error, "event log: cannot list " + p.dir.string() + ": " + ec.message());
    std::sort(names.begin(), names.end());

    // Retention deleted the oldest segments.
    std::erase_if(p.segments, [&](const std::unique_ptr<segment>& s) {
      return !std::binary_search(names.begin(), names.end(), s->path.filename().string());
    });

    // New segments sort after the newest one known.
    const std::string newest = p.segments.empty() ? std::string() : p.segments.back()->path.filename().string();
    for (std::size_t n = 0; n < names.size(); ++n) {
      const std::string& name = names[n];
      if (!newest.empty() && name <= newest) continue;
      auto seg = std::make_unique<segment>();
      seg->path = p.dir / name;
      seg->fd = ::open(seg->path.c_str(), O_RDONLY | O_CLOEXEC);
      if (seg->fd < 0) {
        if (errno == ENOENT) break;   // deleted since the listing
        return io_error("cannot open", seg->path);
      }
      struct stat st {};
      if (::fstat(seg->fd, &st) != 0) return io_error("cannot stat", seg->path);
      const auto header = sf::read_header(seg->fd, static_cast<std::uint64_t>(st.st_size));
      if (!header) {
        // The newest file may still be being created (the writer writes the header right
        // after creating it); anything else without a header is not a segment of ours.
        if (n + 1 == names.size()) break;
        return make_error(errc::server_error, "event log: " + seg->path.string() + " is not a hubd segment file");
      }
      seg->base_sequence = header->base_sequence;
      seg->base_offset = header->base_offset;
      p.segments.push_back(std::move(seg));
    }

    const std::size_t n = p.segments.size();
    for (std::size_t i = n < 2 ? 0 : n - 2; i < n; ++i) {
      if (auto r = verify(*p.segments[i], i + 1 < n); !r) return r;
    }
    return {};
  }
};

event_log_reader::event_log_reader(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

event_log_reader::~event_log_reader() = default;

result<std::unique_ptr<event_log_reader>> event_log_reader::open(const std::string& dir) {
  auto im = std::make_unique<impl>();
  im->dir = dir;
  std::error_code ec;
  if (!fs::is_directory(im->dir, ec)) return make_error(errc::not_found, "event log: no folder " + dir);
  im->discover_partitions();
  if (im->parts.empty()) return make_error(errc::not_found, "event log: " + dir + " has no partitions (p0, p1, ...)");
  std::unique_ptr<event_log_reader> reader(new event_log_reader(std::move(im)));
  if (auto r = reader->refresh(); !r) return r.error();
  return reader;
}

std::uint32_t event_log_reader::partitions() const noexcept { return static_cast<std::uint32_t>(impl_->parts.size()); }

result<void> event_log_reader::refresh() {
  impl_->discover_partitions();
  for (auto& p : impl_->parts) {
    if (auto r = impl_->refresh(p); !r) return r;
  }
  return {};
}

result<std::vector<log_record>> event_log_reader::read(std::uint32_t partition, std::int64_t from_sequence,
                                                       std::size_t max_records, std::size_t max_bytes) {
  std::vector<log_record> out;
  if (partition >= impl_->parts.size()) return make_error(errc::argument_invalid, "event log: no such partition");
  auto& p = impl_->parts[partition];
  std::size_t bytes = 0;
  std::string scratch;
  for (std::size_t i = 0; i < p.segments.size(); ++i) {
    segment& s = *p.segments[i];
    if (out.size() >= max_records) break;
    if (p.end_sequence_of(i) <= from_sequence) continue;
    if (i + 1 < p.segments.size()) {
      if (auto r = impl_->verify(s, true); !r) return r.error();
    }
    std::uint64_t pos = sf::header_bytes;
    std::int64_t expected = s.base_sequence;
    auto it = std::upper_bound(s.index.begin(), s.index.end(), from_sequence,
                               [](std::int64_t v, const index_entry& e) { return v < e.sequence; });
    if (it != s.index.begin()) {
      pos = std::prev(it)->pos;
      expected = std::prev(it)->sequence;
    }
    while (pos < s.end && out.size() < max_records) {
      sf::record_info info;
      const auto status = sf::read_record(s.fd, pos, s.end, info, scratch);
      if (status != sf::read_status::ok || info.sequence != expected) {
        // The bytes changed since they were verified (hubd cut a failed write off and wrote
        // others): verify the segment again on the next refresh, return what is good so far.
        s.forget_records();
        return out;
      }
      if (info.sequence >= from_sequence) {
        if (!out.empty() && bytes + info.length > max_bytes) return out;
        log_record rec;
        rec.sequence = info.sequence;
        rec.offset = s.offset_at(pos);
        rec.enqueued_ms = info.enqueued_ms;
        rec.data = sf::record_data(scratch);
        bytes += info.length;
        out.push_back(std::move(rec));
      }
      pos = info.end();
      ++expected;
    }
  }
  return out;
}

partition_stats event_log_reader::stats(std::uint32_t partition) const {
  partition_stats st;
  if (partition >= impl_->parts.size()) return st;
  const auto& segs = impl_->parts[partition].segments;
  if (segs.empty()) return st;
  st.begin_sequence = segs.front()->base_sequence;
  st.last_sequence = segs.back()->end_sequence() - 1;
  st.empty = segs.back()->end_sequence() == st.begin_sequence;
  // The newest record is in the newest segment, or in the one before right after a roll; both
  // are verified by refresh().
  for (std::size_t k = 0; k < 2 && k < segs.size(); ++k) {
    const segment& s = *segs[segs.size() - 1 - k];
    if (s.count > 0) {
      st.last_enqueued_ms = s.last_ms;
      st.last_offset = s.offset_at(s.last_pos);
      break;
    }
  }
  return st;
}

std::uint64_t event_log_reader::bytes_verified() const noexcept { return impl_->bytes_verified; }

std::int64_t event_log_reader::end_sequence(std::uint32_t partition) const {
  if (partition >= impl_->parts.size()) return 0;
  const auto& segs = impl_->parts[partition].segments;
  return segs.empty() ? 0 : segs.back()->end_sequence();
}

}  // namespace hub::storage
