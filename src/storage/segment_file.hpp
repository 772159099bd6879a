#pragma once
// The on-disk format of the event log's segment files, shared by the writer (event_log.cpp) and
// the read-only reader (event_log_reader.cpp). Internal to src/storage: nothing outside it
// should depend on the byte layout.
//
//   segment  = header, record*
//   header   = magic "HUBLOG01" (8), i64 base sequence, i64 base offset, 8 reserved bytes
//   record   = u32 data length, u32 CRC-32 of (sequence, enqueued ms, data),
//              i64 sequence, i64 enqueued ms (since the epoch), data
// All integers little-endian. A record's offset is base offset + (its file position - header).
// Records of a segment carry consecutive sequence numbers starting at the base sequence.
//
// The functions here are plain reads over a file descriptor: no locking, no writes.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

namespace hub::storage::segment_file {

inline constexpr char magic[8] = {'H', 'U', 'B', 'L', 'O', 'G', '0', '1'};
inline constexpr std::size_t header_bytes = 32;
inline constexpr std::size_t record_overhead = 4 + 4 + 8 + 8;
inline constexpr const char* extension = ".seg";

void put_u32(char* p, std::uint32_t v);
void put_i64(char* p, std::int64_t v);
std::uint32_t get_u32(const char* p);
std::int64_t get_i64(const char* p);
std::uint32_t crc_of(const char* p, std::size_t n);

// pread() until n bytes are read; false on an error or end of file.
bool pread_all(int fd, char* buf, std::size_t n, off_t pos);

// "00000000000000000042.seg": zero-padded so that names sort like base sequences.
std::string file_name(std::int64_t base_sequence);

struct header {
  std::int64_t base_sequence = 0;
  std::int64_t base_offset = 0;
};
// Encodes a header into header_bytes bytes at p.
void encode_header(char* p, const header& h);
// The header of a file of file_size bytes; nullopt when it is shorter than a header or does not
// start with the magic.
std::optional<header> read_header(int fd, std::uint64_t file_size);

// Appends one encoded record to buf.
void append_record(std::string& buf, std::int64_t sequence, std::int64_t enqueued_ms, std::string_view data);

struct record_info {
  std::uint64_t pos = 0;        // file position of the record
  std::uint32_t length = 0;     // data bytes
  std::int64_t sequence = 0;
  std::int64_t enqueued_ms = 0;
  std::uint64_t end() const { return pos + record_overhead + length; }
};

enum class read_status {
  ok,
  incomplete,   // the record does not fit before `end`: a torn or still-being-written tail
  corrupt,      // CRC mismatch
  io_error,
};

// Reads the record at pos of a file whose valid bytes end at `end`, checking its CRC. `scratch`
// is reused across calls: on ok it holds the checksummed bytes (16 bytes of sequence and time,
// then the data); record_data(scratch) is the data.
read_status read_record(int fd, std::uint64_t pos, std::uint64_t end, record_info& info, std::string& scratch);
inline std::string_view record_data(const std::string& scratch) { return std::string_view(scratch).substr(16); }

// Walks records from pos while they are complete, CRC-valid and numbered next_sequence,
// next_sequence + 1, ...; calls on_record for each. Returns the position where that run ends:
// `end` for a clean file, else the start of the first incomplete, corrupt or out-of-sequence
// record. Never writes.
std::uint64_t scan(int fd, std::uint64_t pos, std::uint64_t end, std::int64_t next_sequence,
                   const std::function<void(const record_info&)>& on_record);

}  // namespace hub::storage::segment_file
