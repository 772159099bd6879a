#include "storage/event_log.hpp"

#include "storage/segment_file.hpp"

#include "base/log.hpp"
#include "base/stage_stats.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

namespace hub::storage {
namespace fs = std::filesystem;

namespace {

// The file format (header, records, CRC) lives in segment_file.hpp, shared with the read-only
// event_log_reader.
using segment_file::get_i64;
using segment_file::get_u32;
using segment_file::header_bytes;
using segment_file::pread_all;
using segment_file::record_overhead;
// One sparse index entry per this many records of a segment.
constexpr std::int64_t index_every = 64;

error io_error(const std::string& what, const std::string& path) {
  return make_error(errc::server_error, "event log: " + what + " " + path + ": " + std::strerror(errno));
}

bool write_all(int fd, const char* buf, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::write(fd, buf, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    buf += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

struct index_entry {
  std::int64_t sequence;
  std::uint64_t pos;
  std::int64_t ms;
};

void sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// One segment file. Metadata is guarded by the partition's mutex; the fd stays valid as long as
// a reader holds the shared_ptr, so retention can drop a segment while a read is in flight.
struct segment {
  fs::path path;
  int fd = -1;
  std::int64_t base_sequence = 0;
  std::int64_t base_offset = 0;
  std::int64_t count = 0;
  std::uint64_t size = header_bytes;   // bytes in the file that hold valid records
  std::int64_t first_ms = 0;
  std::int64_t last_ms = 0;
  std::uint64_t last_pos = 0;          // file position of the newest record
  std::uint64_t allocated = header_bytes;  // file bytes written (records or preallocated zeros); writer only
  bool preallocation_failed = false;       // no room for zeros: not tried again in this segment
  std::vector<index_entry> index;      // every index_every-th record

  ~segment() {
    if (fd >= 0) ::close(fd);
  }
  std::int64_t end_sequence() const { return base_sequence + count; }
  std::int64_t end_offset() const { return base_offset + static_cast<std::int64_t>(size - header_bytes); }
  std::int64_t offset_at(std::uint64_t pos) const { return base_offset + static_cast<std::int64_t>(pos - header_bytes); }
};

result<std::shared_ptr<segment>> create_segment(const fs::path& dir, std::int64_t base_sequence,
                                                std::int64_t base_offset) {
  auto seg = std::make_shared<segment>();
  seg->path = dir / segment_file::file_name(base_sequence);
  seg->base_sequence = base_sequence;
  seg->base_offset = base_offset;
  // Written under a temporary name and renamed once its header is on disk, so a crash can never
  // leave a headerless segment behind (open() would refuse it); leftovers are removed on open.
  const fs::path tmp = seg->path.string() + ".tmp";
  seg->fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (seg->fd < 0) return io_error("cannot create", tmp.string());
  char header[header_bytes];
  segment_file::encode_header(header, {base_sequence, base_offset});
  if (!write_all(seg->fd, header, header_bytes) || ::fdatasync(seg->fd) != 0) {
    return io_error("cannot write", tmp.string());
  }
  if (::rename(tmp.c_str(), seg->path.c_str()) != 0) return io_error("cannot rename", tmp.string());
  sync_dir(dir);
  return seg;
}

// Whether the file holds only zero bytes in [pos, end): preallocated space (log_options::
// preallocate_bytes) rather than a torn write. False on a read error.
bool zeros_in(int fd, std::uint64_t pos, std::uint64_t end) {
  char buf[64 * 1024];
  while (pos < end) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(sizeof buf, end - pos));
    if (!pread_all(fd, buf, n, static_cast<off_t>(pos))) return false;
    if (std::any_of(buf, buf + n, [](char c) { return c != 0; })) return false;
    pos += n;
  }
  return true;
}

// Writes zeros over [from, to) of the file, without moving its offset.
bool write_zeros(int fd, std::uint64_t from, std::uint64_t to) {
  static const char zeros[64 * 1024] = {};
  while (from < to) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(sizeof zeros, to - from));
    const ssize_t r = ::pwrite(fd, zeros, n, static_cast<off_t>(from));
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    from += static_cast<std::uint64_t>(r);
  }
  return true;
}

// Opens an existing segment and scans its records, cutting off what follows the last valid one:
// a torn or corrupt tail, or preallocated zeros.
result<std::shared_ptr<segment>> load_segment(const fs::path& path, bool is_last) {
  auto seg = std::make_shared<segment>();
  seg->path = path;
  seg->fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (seg->fd < 0) return io_error("cannot open", path.string());
  struct stat st {};
  if (::fstat(seg->fd, &st) != 0) return io_error("cannot stat", path.string());
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  const auto header = segment_file::read_header(seg->fd, file_size);
  if (!header) return make_error(errc::server_error, "event log: " + path.string() + " is not a hubd segment file");
  seg->base_sequence = header->base_sequence;
  seg->base_offset = header->base_offset;
  const std::uint64_t pos =
      segment_file::scan(seg->fd, header_bytes, file_size, seg->base_sequence, [&](const segment_file::record_info& r) {
        if (seg->count % index_every == 0) seg->index.push_back({r.sequence, r.pos, r.enqueued_ms});
        if (seg->count == 0) seg->first_ms = r.enqueued_ms;
        seg->last_ms = r.enqueued_ms;
        seg->last_pos = r.pos;
        ++seg->count;
      });
  if (pos != file_size) {
    // Zeros after the last record are preallocated space; a roll cuts them off before the next
    // segment exists, so only the newest segment should have them, but they are harmless anywhere.
    const bool preallocated = zeros_in(seg->fd, pos, file_size);
    if (!is_last && !preallocated) {
      return make_error(errc::server_error, "event log: " + path.string() + " is corrupt at byte " +
                                                std::to_string(pos) + " (not the newest segment)");
    }
    // A crash during a group commit leaves a partial batch: none of it was acknowledged. It is
    // cut off (not just written over later), so that no record of it can ever be read back.
    if (!preallocated) {
      log::get("storage")->warn("event log: cutting {} bytes of an unfinished write off {}", file_size - pos,
                                path.string());
    }
    if (::ftruncate(seg->fd, static_cast<off_t>(pos)) != 0 || ::fdatasync(seg->fd) != 0) {
      return io_error("cannot truncate", path.string());
    }
  }
  seg->size = pos;
  seg->allocated = pos;
  if (::lseek(seg->fd, static_cast<off_t>(pos), SEEK_SET) < 0) return io_error("cannot seek", path.string());
  return seg;
}

// One append: a single record (`data`, `done`) or a batch (`batch`, `batch_done`).
struct pending_append {
  std::string data;
  event_log::append_callback done;
  std::vector<std::string> batch;
  event_log::batch_callback batch_done;
  bool is_batch = false;
  std::int64_t enqueued_ns = 0;  // stage_stats only (0 when off)
};

}  // namespace

struct event_log::impl {
  struct partition {
    std::uint32_t id = 0;
    fs::path dir;
    mutable std::mutex mutex;            // segments and their metadata
    std::deque<std::shared_ptr<segment>> segments;
    std::mutex queue_mutex;              // pending appends
    std::condition_variable queue_cv;
    std::vector<pending_append> queue;
    bool stopping = false;
    std::thread writer;
    std::int64_t last_ms = 0;            // newest enqueued time (guarded by mutex)
  };

  log_options options;
  std::vector<std::unique_ptr<partition>> parts;
  std::mutex listener_mutex;
  durable_listener listener;
  // Scratch of commit(); thread_local because each partition's writer commits on its own thread.
  static thread_local std::vector<log_position> positions_;

  result<void> load(partition& p) {
    std::error_code ec;
    fs::create_directories(p.dir, ec);
    if (ec) return make_error(errc::server_error, "event log: cannot create " + p.dir.string() + ": " + ec.message());
    std::vector<fs::path> files;
    std::vector<fs::path> unfinished;
    for (const auto& entry : fs::directory_iterator(p.dir, ec)) {
      if (entry.path().extension() == ".seg") files.push_back(entry.path());
      if (entry.path().extension() == ".tmp") unfinished.push_back(entry.path());
    }
    if (ec) return make_error(errc::server_error, "event log: cannot list " + p.dir.string() + ": " + ec.message());
    // A segment whose creation a crash interrupted: it never held a record.
    for (const auto& f : unfinished) fs::remove(f, ec);
    std::sort(files.begin(), files.end());
    for (std::size_t i = 0; i < files.size(); ++i) {
      auto seg = load_segment(files[i], i + 1 == files.size());
      if (!seg) return seg.error();
      p.segments.push_back(std::move(*seg));
    }
    if (p.segments.empty()) {
      auto seg = create_segment(p.dir, 0, 0);
      if (!seg) return seg.error();
      p.segments.push_back(std::move(*seg));
    }
    for (const auto& s : p.segments) p.last_ms = std::max(p.last_ms, s->last_ms);
    return {};
  }

  void run_writer(partition& p) {
    std::vector<pending_append> batch;
    std::string buf;
    std::vector<index_entry> new_index;
    // When the last commit ended: a group that forms sooner than commit_delay after it waits
    // until then (log_options::commit_delay), so a stream of appends is synced at most once per
    // delay, in larger groups; a record after a quiet spell is synced at once.
    auto last_end = std::chrono::steady_clock::time_point::min();
    for (;;) {
      {
        std::unique_lock lock(p.queue_mutex);
        p.queue_cv.wait(lock, [&] { return p.stopping || !p.queue.empty(); });
        if (p.queue.empty()) return;  // stopping and drained
        if (options.commit_delay.count() > 0 && !p.stopping) {
          const auto due = last_end + options.commit_delay;
          if (std::chrono::steady_clock::now() < due) {
            // Appends do not wake the writer while its queue is not empty, so the wait costs
            // no extra wake-ups; stop() is held up at most by the delay.
            lock.unlock();
            std::this_thread::sleep_until(due);
            lock.lock();
          }
        }
        batch.swap(p.queue);
      }
      commit(p, batch, buf, new_index);
      batch.clear();
      last_end = std::chrono::steady_clock::now();
    }
  }

  void commit(partition& p, std::vector<pending_append>& batch, std::string& buf, std::vector<index_entry>& new_index) {
    std::shared_ptr<segment> seg;
    {
      std::scoped_lock lock(p.mutex);
      seg = p.segments.back();
    }
    // Roll to a new segment when this one is full (the writer is the only one that changes the
    // segment list's tail, so no lock is held across the file operations).
    if (seg->size >= options.segment_bytes && seg->count > 0) {
      // The full segment's preallocated zeros go first, durably, so that every segment but the
      // newest ends at its last record.
      if (seg->allocated > seg->size) {
        if (::ftruncate(seg->fd, static_cast<off_t>(seg->size)) != 0 || ::fdatasync(seg->fd) != 0) {
          fail_all(batch, io_error("cannot truncate", seg->path.string()));
          return;
        }
        seg->allocated = seg->size;
      }
      auto next = create_segment(p.dir, seg->end_sequence(), seg->end_offset());
      if (!next) {
        fail_all(batch, next.error());
        return;
      }
      seg = *next;
      std::scoped_lock lock(p.mutex);
      p.segments.push_back(seg);
    }
    buf.clear();
    new_index.clear();
    std::int64_t seq = seg->end_sequence();
    std::int64_t count = seg->count;
    std::uint64_t pos = seg->size;
    std::uint64_t last_pos = seg->last_pos;
    const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch()).count();
    const std::int64_t ms = std::max(now_ms, p.last_ms);
    std::vector<log_position>& positions = positions_;
    positions.clear();
    auto add = [&](const std::string& data) {
      segment_file::append_record(buf, seq, ms, data);
      if (count % index_every == 0) new_index.push_back({seq, pos, ms});
      positions.push_back({seq, seg->offset_at(pos), ms});
      last_pos = pos;
      pos += record_overhead + data.size();
      ++seq;
      ++count;
    };
    for (const auto& a : batch) {
      stage_stats::since(stage_stats::stage::log_queue_wait, a.enqueued_ns);
      if (a.is_batch) {
        for (const auto& r : a.batch) add(r);
      } else {
        add(a.data);
      }
    }
    const std::int64_t write_ns = stage_stats::stamp();
    bool written = write_all(seg->fd, buf.data(), buf.size());
    // Past the preallocated space: zeros for the next preallocate_bytes, made durable by this
    // commit's fdatasync along with the records (the one sync per step that flushes metadata).
    // Only an optimisation: when the disk has no room for them, the records go without.
    std::uint64_t allocated = seg->allocated;
    if (written && options.sync && options.preallocate_bytes > 0 && pos > allocated && !seg->preallocation_failed) {
      constexpr std::uint64_t page = 4096;
      allocated = (pos + options.preallocate_bytes + page - 1) / page * page;
      if (!write_zeros(seg->fd, pos, allocated)) {
        const int why = errno;
        written = ::ftruncate(seg->fd, static_cast<off_t>(pos)) == 0;
        allocated = pos;
        seg->preallocation_failed = true;
        log::get("storage")->warn("event log: no room to preallocate {} bytes in {}: {}; appending without",
                                  options.preallocate_bytes, seg->path.string(), std::strerror(why));
      }
    }
    const std::int64_t sync_ns = stage_stats::stamp();
    if (written && options.sync) written = ::fdatasync(seg->fd) == 0;
    if (stage_stats::enabled()) {
      const std::int64_t end_ns = stage_stats::now_ns();
      stage_stats::record(stage_stats::stage::log_write, sync_ns - write_ns);
      stage_stats::record(stage_stats::stage::log_fdatasync, end_ns - sync_ns);
      stage_stats::record(stage_stats::stage::log_records, static_cast<std::int64_t>(positions.size()));
    }
    if (!written) {
      auto err = io_error("cannot write", seg->path.string());
      log::get("storage")->error("{}", err.message);
      // Cut the partial batch so the file stays a clean sequence of records.
      if (::ftruncate(seg->fd, static_cast<off_t>(seg->size)) == 0) {
        ::lseek(seg->fd, static_cast<off_t>(seg->size), SEEK_SET);
      }
      seg->allocated = seg->size;
      fail_all(batch, err);
      return;
    }
    seg->allocated = std::max(pos, allocated);
    const std::int64_t last_seq = seq - 1;
    {
      std::scoped_lock lock(p.mutex);
      if (seg->count == 0) seg->first_ms = ms;
      seg->last_ms = ms;
      seg->last_pos = last_pos;
      seg->count = count;
      seg->size = pos;
      seg->index.insert(seg->index.end(), new_index.begin(), new_index.end());
      p.last_ms = ms;
    }
    const std::int64_t callbacks_ns = stage_stats::stamp();
    std::size_t at = 0;
    for (auto& a : batch) {
      if (a.is_batch) {
        const std::size_t n = a.batch.size();
        if (a.batch_done) {
          a.batch_done(std::vector<log_position>(positions.begin() + static_cast<std::ptrdiff_t>(at),
                                                 positions.begin() + static_cast<std::ptrdiff_t>(at + n)));
        }
        at += n;
      } else {
        if (a.done) a.done(positions[at]);
        ++at;
      }
    }
    stage_stats::since(stage_stats::stage::log_callbacks, callbacks_ns);
    std::scoped_lock lock(listener_mutex);
    if (listener) listener(p.id, last_seq);
  }

  static void fail_all(std::vector<pending_append>& batch, const error& e) {
    for (auto& a : batch) {
      if (a.is_batch) {
        if (a.batch_done) a.batch_done(e);
      } else if (a.done) {
        a.done(e);
      }
    }
  }

  // Copy of the segment list, so reads run without the lock.
  std::vector<std::shared_ptr<segment>> snapshot(const partition& p) const {
    std::scoped_lock lock(p.mutex);
    return {p.segments.begin(), p.segments.end()};
  }
};

thread_local std::vector<log_position> event_log::impl::positions_;

event_log::event_log(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

event_log::~event_log() { close(); }

result<std::unique_ptr<event_log>> event_log::open(const log_options& options) {
  if (options.partitions == 0 || options.partitions > 128) {
    return make_error(errc::argument_invalid, "event log: partitions must be between 1 and 128");
  }
  auto im = std::make_unique<impl>();
  im->options = options;
  for (std::uint32_t i = 0; i < options.partitions; ++i) {
    auto p = std::make_unique<impl::partition>();
    p->id = i;
    p->dir = fs::path(options.dir) / ("p" + std::to_string(i));
    if (auto r = im->load(*p); !r) return r.error();
    im->parts.push_back(std::move(p));
  }
  auto* raw = im.get();
  for (auto& p : raw->parts) {
    auto* part = p.get();
    part->writer = std::thread([raw, part] { raw->run_writer(*part); });
  }
  return std::unique_ptr<event_log>(new event_log(std::move(im)));
}

std::uint32_t event_log::partitions() const noexcept { return static_cast<std::uint32_t>(impl_->parts.size()); }

void event_log::append(std::uint32_t partition, std::string data, append_callback done) {
  if (partition >= impl_->parts.size()) {
    if (done) done(make_error(errc::argument_invalid, "event log: no such partition"));
    return;
  }
  if (data.size() > impl_->options.max_record_bytes) {
    if (done) done(make_error(errc::message_too_large, "event log: record larger than allowed"));
    return;
  }
  auto& p = *impl_->parts[partition];
  bool wake = false;
  {
    std::scoped_lock lock(p.queue_mutex);
    if (p.stopping) {
      if (done) done(make_error(errc::service_unavailable, "event log: closed"));
      return;
    }
    pending_append a;
    a.enqueued_ns = stage_stats::stamp();
    a.data = std::move(data);
    a.done = std::move(done);
    wake = p.queue.empty();
    p.queue.push_back(std::move(a));
  }
  // The writer waits only on an empty queue; a non-empty one it takes on its next round.
  if (wake) p.queue_cv.notify_one();
}

void event_log::append(std::uint32_t partition, std::vector<std::string> records, batch_callback done) {
  if (partition >= impl_->parts.size()) {
    if (done) done(make_error(errc::argument_invalid, "event log: no such partition"));
    return;
  }
  if (records.empty()) {
    if (done) done(std::vector<log_position>{});
    return;
  }
  for (const auto& r : records) {
    if (r.size() > impl_->options.max_record_bytes) {
      if (done) done(make_error(errc::message_too_large, "event log: record larger than allowed"));
      return;
    }
  }
  auto& p = *impl_->parts[partition];
  bool wake = false;
  {
    std::scoped_lock lock(p.queue_mutex);
    if (p.stopping) {
      if (done) done(make_error(errc::service_unavailable, "event log: closed"));
      return;
    }
    pending_append a;
    a.enqueued_ns = stage_stats::stamp();
    a.batch = std::move(records);
    a.batch_done = std::move(done);
    a.is_batch = true;
    wake = p.queue.empty();
    p.queue.push_back(std::move(a));
  }
  // The writer waits only on an empty queue; a non-empty one it takes on its next round.
  if (wake) p.queue_cv.notify_one();
}

result<std::vector<log_record>> event_log::read(std::uint32_t partition, std::int64_t from_sequence,
                                                std::size_t max_records, std::size_t max_bytes) const {
  std::vector<log_record> out;
  if (partition >= impl_->parts.size()) return make_error(errc::argument_invalid, "event log: no such partition");
  const auto& p = *impl_->parts[partition];
  std::vector<std::shared_ptr<segment>> segs;
  std::vector<std::pair<std::int64_t, std::int64_t>> limits;  // (end sequence, size) per segment, consistent
  std::uint64_t start_pos = header_bytes;
  {
    std::scoped_lock lock(p.mutex);
    for (const auto& s : p.segments) {
      if (s->end_sequence() <= from_sequence) continue;
      segs.push_back(s);
      limits.emplace_back(s->end_sequence(), static_cast<std::int64_t>(s->size));
      if (segs.size() == 1) {
        // Start at the last index entry at or before from_sequence.
        auto it = std::upper_bound(s->index.begin(), s->index.end(), from_sequence,
                                   [](std::int64_t v, const index_entry& e) { return v < e.sequence; });
        if (it != s->index.begin()) start_pos = std::prev(it)->pos;
      }
    }
  }
  std::size_t bytes = 0;
  char head[record_overhead];
  for (std::size_t i = 0; i < segs.size() && out.size() < max_records; ++i) {
    const auto& s = segs[i];
    std::uint64_t pos = i == 0 ? start_pos : header_bytes;
    const auto end = static_cast<std::uint64_t>(limits[i].second);
    while (pos + record_overhead <= end && out.size() < max_records) {
      if (!pread_all(s->fd, head, record_overhead, static_cast<off_t>(pos))) {
        return make_error(errc::server_error, "event log: read failed in " + s->path.string());
      }
      const std::uint32_t len = get_u32(head);
      const std::int64_t seq = get_i64(head + 8);
      if (seq >= from_sequence) {
        if (!out.empty() && bytes + len > max_bytes) return out;
        log_record rec;
        rec.sequence = seq;
        rec.offset = s->offset_at(pos);
        rec.enqueued_ms = get_i64(head + 16);
        rec.data.resize(len);
        if (!pread_all(s->fd, rec.data.data(), len, static_cast<off_t>(pos + record_overhead))) {
          return make_error(errc::server_error, "event log: read failed in " + s->path.string());
        }
        bytes += len;
        out.push_back(std::move(rec));
      }
      pos += record_overhead + len;
    }
  }
  return out;
}

partition_stats event_log::stats(std::uint32_t partition) const {
  partition_stats st;
  if (partition >= impl_->parts.size()) return st;
  const auto& p = *impl_->parts[partition];
  std::scoped_lock lock(p.mutex);
  const auto& first = p.segments.front();
  const auto& last = p.segments.back();
  st.begin_sequence = first->base_sequence;
  st.empty = last->end_sequence() == first->base_sequence;
  st.last_sequence = last->end_sequence() - 1;
  // The newest segment is empty right after a roll: the newest record is in the one before.
  const segment* newest = last->count > 0 ? last.get() : nullptr;
  if (newest == nullptr && p.segments.size() > 1) newest = p.segments[p.segments.size() - 2].get();
  if (newest != nullptr && newest->count > 0) {
    st.last_enqueued_ms = newest->last_ms;
    st.last_offset = newest->offset_at(newest->last_pos);
  }
  return st;
}

namespace {
// Walks a segment's records from an index entry until pred(offset, ms) holds; returns that
// record's sequence, or nullopt past the end.
template <class Pred>
std::optional<std::int64_t> walk(const segment& s, std::uint64_t from_pos, std::uint64_t end, Pred pred) {
  char head[record_overhead];
  for (std::uint64_t pos = from_pos; pos + record_overhead <= end;) {
    if (!pread_all(s.fd, head, record_overhead, static_cast<off_t>(pos))) return std::nullopt;
    if (pred(s.offset_at(pos), get_i64(head + 16))) return get_i64(head + 8);
    pos += record_overhead + get_u32(head);
  }
  return std::nullopt;
}
}  // namespace

namespace {
// The first record of a partition for which pred(offset, ms) holds, given that pred is
// monotonic along the log. Uses each segment's newest record and sparse index to skip, then
// walks at most index_every records.
template <class Pred>
std::int64_t find_first(const event_log::impl& im, std::uint32_t partition, Pred pred);
}  // namespace

std::int64_t event_log::sequence_after_offset(std::uint32_t partition, std::int64_t offset, bool inclusive) const {
  return find_first(*impl_, partition, [&](std::int64_t rec_offset, std::int64_t) {
    return inclusive ? rec_offset >= offset : rec_offset > offset;
  });
}

std::int64_t event_log::sequence_at_time(std::uint32_t partition, std::int64_t ms, bool inclusive) const {
  return find_first(*impl_, partition,
                    [&](std::int64_t, std::int64_t rec_ms) { return inclusive ? rec_ms >= ms : rec_ms > ms; });
}

namespace {
template <class Pred>
std::int64_t find_first(const event_log::impl& im, std::uint32_t partition, Pred pred) {
  const auto& p = *im.parts.at(partition);
  const auto segs = im.snapshot(p);
  for (const auto& s : segs) {
    std::uint64_t from = header_bytes;
    std::uint64_t end = 0;
    {
      std::scoped_lock lock(p.mutex);
      if (s->count == 0 || !pred(s->offset_at(s->last_pos), s->last_ms)) continue;
      // Start from the last index entry that does not qualify yet.
      auto it = std::partition_point(s->index.begin(), s->index.end(),
                                     [&](const index_entry& e) { return !pred(s->offset_at(e.pos), e.ms); });
      if (it != s->index.begin()) from = std::prev(it)->pos;
      end = s->size;
    }
    char head[record_overhead];
    for (std::uint64_t pos = from; pos + record_overhead <= end;) {
      if (!pread_all(s->fd, head, record_overhead, static_cast<off_t>(pos))) break;
      if (pred(s->offset_at(pos), get_i64(head + 16))) return get_i64(head + 8);
      pos += record_overhead + get_u32(head);
    }
  }
  std::scoped_lock lock(p.mutex);
  return p.segments.back()->end_sequence();
}
}  // namespace

void event_log::set_durable_listener(durable_listener listener) {
  std::scoped_lock lock(impl_->listener_mutex);
  impl_->listener = std::move(listener);
}

std::size_t event_log::enforce_retention(std::int64_t now_ms) {
  const std::int64_t cutoff = now_ms - impl_->options.retention.count();
  std::size_t deleted = 0;
  for (auto& p : impl_->parts) {
    std::vector<std::shared_ptr<segment>> doomed;
    {
      std::scoped_lock lock(p->mutex);
      // Never the newest segment: it carries the next sequence number across restarts.
      while (p->segments.size() > 1 && p->segments.front()->count > 0 && p->segments.front()->last_ms < cutoff) {
        doomed.push_back(p->segments.front());
        p->segments.pop_front();
      }
    }
    for (const auto& s : doomed) {
      std::error_code ec;
      fs::remove(s->path, ec);
      if (ec) log::get("storage")->warn("event log: cannot delete {}: {}", s->path.string(), ec.message());
      ++deleted;
    }
    if (!doomed.empty()) sync_dir(p->dir);
  }
  return deleted;
}

void event_log::close() {
  if (!impl_) return;
  for (auto& p : impl_->parts) {
    {
      std::scoped_lock lock(p->queue_mutex);
      p->stopping = true;
    }
    p->queue_cv.notify_all();
  }
  for (auto& p : impl_->parts) {
    if (p->writer.joinable()) p->writer.join();
    // Leave the files holding records only (open() would cut the zeros off anyway).
    std::scoped_lock lock(p->mutex);
    const auto& last = p->segments.back();
    if (last->allocated > last->size && ::ftruncate(last->fd, static_cast<off_t>(last->size)) == 0) {
      last->allocated = last->size;
    }
  }
}

}  // namespace hub::storage
