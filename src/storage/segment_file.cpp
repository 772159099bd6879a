#include "storage/segment_file.hpp"

#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace hub::storage::segment_file {

void put_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

void put_i64(char* p, std::int64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i));
}

std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::int64_t get_i64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return static_cast<std::int64_t>(v);
}

std::uint32_t crc_of(const char* p, std::size_t n) {
  return static_cast<std::uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(p), static_cast<uInt>(n)));
}

bool pread_all(int fd, char* buf, std::size_t n, off_t pos) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, buf, n, pos);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    buf += r;
    n -= static_cast<std::size_t>(r);
    pos += r;
  }
  return true;
}

std::string file_name(std::int64_t base_sequence) {
  char name[32];
  std::snprintf(name, sizeof name, "%020lld%s", static_cast<long long>(base_sequence), extension);
  return name;
}

void encode_header(char* p, const header& h) {
  std::memset(p, 0, header_bytes);
  std::memcpy(p, magic, sizeof magic);
  put_i64(p + 8, h.base_sequence);
  put_i64(p + 16, h.base_offset);
}

std::optional<header> read_header(int fd, std::uint64_t file_size) {
  char buf[header_bytes];
  if (file_size < header_bytes || !pread_all(fd, buf, header_bytes, 0) || std::memcmp(buf, magic, sizeof magic) != 0) {
    return std::nullopt;
  }
  return header{get_i64(buf + 8), get_i64(buf + 16)};
}

void append_record(std::string& buf, std::int64_t sequence, std::int64_t enqueued_ms, std::string_view data) {
  const std::size_t start = buf.size();
  buf.resize(start + record_overhead + data.size());
  char* r = buf.data() + start;
  put_u32(r, static_cast<std::uint32_t>(data.size()));
  put_i64(r + 8, sequence);
  put_i64(r + 16, enqueued_ms);
  std::memcpy(r + record_overhead, data.data(), data.size());
  put_u32(r + 4, crc_of(r + 8, 16 + data.size()));
}

read_status read_record(int fd, std::uint64_t pos, std::uint64_t end, record_info& info, std::string& scratch) {
  char head[record_overhead];
  if (pos + record_overhead > end) return read_status::incomplete;
  if (!pread_all(fd, head, record_overhead, static_cast<off_t>(pos))) return read_status::io_error;
  const std::uint32_t len = get_u32(head);
  if (pos + record_overhead + len > end) return read_status::incomplete;
  scratch.resize(16 + static_cast<std::size_t>(len));
  std::memcpy(scratch.data(), head + 8, 16);
  if (!pread_all(fd, scratch.data() + 16, len, static_cast<off_t>(pos + record_overhead))) return read_status::io_error;
  if (crc_of(scratch.data(), scratch.size()) != get_u32(head + 4)) return read_status::corrupt;
  info.pos = pos;
  info.length = len;
  info.sequence = get_i64(head + 8);
  info.enqueued_ms = get_i64(head + 16);
  return read_status::ok;
}

std::uint64_t scan(int fd, std::uint64_t pos, std::uint64_t end, std::int64_t next_sequence,
                   const std::function<void(const record_info&)>& on_record) {
  std::string scratch;
  record_info info;
  while (read_record(fd, pos, end, info, scratch) == read_status::ok && info.sequence == next_sequence) {
    on_record(info);
    ++next_sequence;
    pos = info.end();
  }
  return pos;
}

}  // namespace hub::storage::segment_file
