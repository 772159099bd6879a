#pragma once
// The durable, partitioned, append-only event log behind device-to-cloud telemetry and the
// Event Hubs-compatible endpoint.
//
// Each partition is a sequence of segment files (DIR/p<N>/<base sequence>.seg) of CRC-checked
// records. Every record has a sequence number (0, 1, 2, ... per partition) and an offset (its
// logical byte position in the partition, as Event Hubs offsets are). A writer thread per
// partition batches appends, writes the batch with one write() and makes it durable with one
// fdatasync() (group commit), then runs the callbacks: a record is acknowledged only once it is
// on disk. Retention deletes whole segments older than the retention period. On open, the last
// segment is scanned and whatever follows its last valid record (a torn tail left by a crash, or
// preallocated zeros) is cut off.
//
// Thread safety: append(), read() and the lookups may be called from any thread concurrently.
// Callbacks run on the partition's writer thread: keep them short (post to your own executor).
#include "base/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hub::storage {

struct log_options {
  std::string dir;
  std::uint32_t partitions = 4;
  std::size_t segment_bytes = 64 * 1024 * 1024;
  std::chrono::milliseconds retention = std::chrono::hours(24);
  std::size_t max_record_bytes = 1024 * 1024;
  bool sync = true;  // false only for tests and benchmarks that measure without fdatasync
  // Group commit delay: a partition's next group is committed no sooner than this after the
  // end of its last commit, so that while appends stream in, each fdatasync and the thread
  // hand-offs around it are shared by more records. A record that comes after a quiet spell
  // (longer than the delay) is committed at once. 0: every group at once.
  std::chrono::microseconds commit_delay{0};
  // Space written with zeros (and synced) ahead of the newest segment's last record, in steps of
  // this many bytes. A commit that writes into such space leaves the file's size and block map
  // as they were, so its fdatasync flushes the data alone; an append that grows the file also
  // has to flush the file's metadata too (20-30% slower on the development machine's ext4
  // without a journal, 2.5-3x slower on ext4 with one: docs/benchmarks.md). The zeros are cut
  // off when the segment is rolled, at close() and at open(). 0: no preallocation (always so
  // when `sync` is false).
  std::size_t preallocate_bytes = 1024 * 1024;
};

struct log_position {
  std::int64_t sequence = 0;
  std::int64_t offset = 0;
  std::int64_t enqueued_ms = 0;
};

struct log_record {
  std::int64_t sequence = 0;
  std::int64_t offset = 0;
  std::int64_t enqueued_ms = 0;  // milliseconds since the epoch
  std::string data;
};

struct partition_stats {
  bool empty = true;
  std::int64_t begin_sequence = 0;     // first retained record (next to be written when empty)
  std::int64_t last_sequence = -1;     // -1 when nothing was ever written
  std::int64_t last_offset = -1;
  std::int64_t last_enqueued_ms = 0;
};

class event_log {
 public:
  using append_callback = std::function<void(result<log_position>)>;
  // The positions of a batch's records, in the order given (consecutive sequence numbers).
  using batch_callback = std::function<void(result<std::vector<log_position>>)>;
  using durable_listener = std::function<void(std::uint32_t partition, std::int64_t last_sequence)>;

  static result<std::unique_ptr<event_log>> open(const log_options& options);
  ~event_log();
  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  std::uint32_t partitions() const noexcept;

  // Queues a record for the next group commit; `done` runs once it is durable (or failed). The
  // writer stamps the enqueued time at commit, never earlier than the partition's previous
  // record, so enqueued times are monotonic along sequence numbers.
  void append(std::uint32_t partition, std::string data, append_callback done);

  // Queues `records` as one unit: they get consecutive sequence numbers in this order (nothing
  // of another append lands between them), are written in the same group commit, and `done`
  // runs once, after they are all durable, with their positions, or with the error that failed
  // the whole batch (none of it is then in the log). An empty batch completes at once.
  void append(std::uint32_t partition, std::vector<std::string> records, batch_callback done);

  // Records with sequence >= from_sequence, at most max_records and (past the first) max_bytes.
  result<std::vector<log_record>> read(std::uint32_t partition, std::int64_t from_sequence, std::size_t max_records,
                                       std::size_t max_bytes = 1024 * 1024) const;

  partition_stats stats(std::uint32_t partition) const;
  // Sequence of the first record whose offset is > offset (or >= with inclusive).
  std::int64_t sequence_after_offset(std::uint32_t partition, std::int64_t offset, bool inclusive) const;
  // Sequence of the first record enqueued at or after ms (or strictly after with !inclusive).
  // Both lookups return the next sequence to be written when no record qualifies.
  std::int64_t sequence_at_time(std::uint32_t partition, std::int64_t ms, bool inclusive = true) const;

  // Called on the writer thread after every durable batch (used to wake waiting consumers).
  void set_durable_listener(durable_listener listener);

  // Deletes whole segments whose newest record is older than now - retention. Returns the
  // number of segments deleted.
  std::size_t enforce_retention(std::int64_t now_ms);

  // Stops the writers after the queued appends are durable.
  void close();

  struct impl;

 private:
  explicit event_log(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace hub::storage
