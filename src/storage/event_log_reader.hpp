#pragma once
// A read-only view of an event log folder (event_log.hpp) that another process may be writing:
// hubctl monitor-events reads DIR/events while hubd appends to it.
//
// The reader never writes, truncates, creates or deletes anything: it opens segment files
// O_RDONLY and checks every record's CRC and sequence number. It trusts only what it has
// verified, so a torn tail (a crash mid-commit) or a batch still being written is simply the
// end of the log for now; the reader leaves it alone and looks again on the next refresh().
// hubd cuts a torn tail when it restarts and then writes new records from the same position,
// which the reader picks up as the continuation.
//
// refresh() re-lists the partitions' segment files: new records in the newest segment, new
// segments (a roll), and segments deleted by retention. Reads see only what the last refresh()
// found. A segment file that is still shorter than its header (being created) is ignored until
// it has one. Older segments are verified only when read() reaches them, so following a long
// log from its end does not read the whole log first.
//
// What the reader sees is what is in the file system, which is one step ahead of the writer's
// acknowledgement: a record becomes visible once hubd has written it, possibly before its
// fdatasync completed. After a process crash those records are still there (hubd keeps every
// complete record); after a power loss they may not be. A write error makes hubd cut the
// batch off again; if the reader saw it, a later read notices the changed bytes, forgets the
// records from there on and reads the replacement.
//
// Thread safety: none; one thread uses a reader at a time (hubctl has one).
#include "base/error.hpp"
#include "storage/event_log.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace hub::storage {

class event_log_reader {
 public:
  // Opens the log in `dir` (the folder holding p0, p1, ...) and runs a first refresh(). Fails
  // when `dir` has no partition folders.
  static result<std::unique_ptr<event_log_reader>> open(const std::string& dir);
  ~event_log_reader();
  event_log_reader(const event_log_reader&) = delete;
  event_log_reader& operator=(const event_log_reader&) = delete;

  // Partitions found (p0..pN-1 without gaps).
  std::uint32_t partitions() const noexcept;

  // Looks for new records and segments in every partition. Cheap when nothing changed: one
  // directory listing and one fstat() per partition.
  result<void> refresh();

  // Records with sequence >= from_sequence that the last refresh() verified, at most
  // max_records and (past the first) max_bytes of data. Starts at the oldest retained record
  // when from_sequence is older.
  result<std::vector<log_record>> read(std::uint32_t partition, std::int64_t from_sequence, std::size_t max_records,
                                       std::size_t max_bytes = 1024 * 1024);

  // As event_log::stats, for the verified part of the log.
  partition_stats stats(std::uint32_t partition) const;

  // The sequence the next record of the partition will have (one past the verified end).
  std::int64_t end_sequence(std::uint32_t partition) const;

  // Bytes of records verified (CRC-checked) so far, for tests and diagnostics.
  std::uint64_t bytes_verified() const noexcept;

  struct impl;

 private:
  explicit event_log_reader(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace hub::storage
