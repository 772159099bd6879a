#include "domain/routing/file_writer.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "domain/routing/resolver.hpp"
#include "domain/telemetry/message.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <fcntl.h>
#include <unistd.h>

namespace hub::routing {

namespace fs = std::filesystem;

namespace {

std::string iso_from_ms(std::int64_t ms) { return to_iso8601(sys_time{std::chrono::milliseconds(ms)}); }

error io_error(const std::string& what, const fs::path& p, int err) {
  return make_error(errc::server_error, fmt::format("{} {}: {}", what, p.string(), std::strerror(err)));
}

result<void> sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return io_error("cannot open", dir, errno);
  ::fsync(fd);
  ::close(fd);
  return {};
}

// Writes `content` to `target` through a synced temporary file and a rename.
result<void> write_atomically(const fs::path& target, std::string_view content) {
  const fs::path tmp = target.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create", tmp, errno);
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return io_error("cannot write", tmp, err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return io_error("cannot sync", tmp, err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), target.c_str()) != 0) return io_error("cannot rename to", target, errno);
  return sync_dir(target.parent_path());
}

result<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return io_error("cannot read", p, errno);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string property_text(const telemetry::value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return {};
}

}  // namespace

std::optional<std::string> storage_json_line(const storage::log_record& record) {
  auto decoded = telemetry::decode(record.data);
  if (!decoded) return std::nullopt;
  const telemetry::message& m = *decoded;
  const std::string enqueued = iso_from_ms(record.enqueued_ms);
  bj::object line;
  line["EnqueuedTimeUtc"] = enqueued;
  bj::object props;
  for (const auto& [k, v] : m.properties) {
    if (!props.contains(k)) props[k] = property_text(v);
  }
  line["Properties"] = std::move(props);
  bj::object sys;
  if (m.message_id) sys["messageId"] = *m.message_id;
  if (m.correlation_id) sys["correlationId"] = *m.correlation_id;
  sys["connectionDeviceId"] = m.device_id;
  if (!m.module_id.empty()) sys["connectionModuleId"] = m.module_id;
  sys["connectionAuthMethod"] = telemetry::auth_method_json(m);
  if (!m.generation_id.empty()) sys["connectionDeviceGenerationId"] = m.generation_id;
  if (m.content_type) sys["contentType"] = *m.content_type;
  if (m.content_encoding) sys["contentEncoding"] = *m.content_encoding;
  sys["enqueuedTime"] = enqueued;
  line["SystemProperties"] = std::move(sys);
  std::optional<bj::value> body;
  if (json_body(m, /*utf8_only=*/true)) body = body_json(m);
  line["Body"] = body ? std::move(*body) : bj::value(crypto::base64_encode(m.body));
  return json::serialize(line);
}

std::string expand_file_name(const std::string& format, std::string_view hub_name, std::uint32_t partition,
                             std::int64_t enqueued_ms) {
  const std::time_t secs = static_cast<std::time_t>(enqueued_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  const std::pair<std::string_view, std::string> tokens[] = {
      {"{iothub}", std::string(hub_name)},
      {"{partition}", std::to_string(partition)},
      {"{YYYY}", fmt::format("{:04}", tm.tm_year + 1900)},
      {"{MM}", fmt::format("{:02}", tm.tm_mon + 1)},
      {"{DD}", fmt::format("{:02}", tm.tm_mday)},
      {"{HH}", fmt::format("{:02}", tm.tm_hour)},
      {"{mm}", fmt::format("{:02}", tm.tm_min)},
  };
  std::string out = format;
  for (const auto& [token, value] : tokens) {
    for (auto at = out.find(token); at != std::string::npos; at = out.find(token, at + value.size())) {
      out.replace(at, token.size(), value);
    }
  }
  return out;
}

file_writer::file_writer(storage::event_log& log, file_writer_options opt, const clock& clk)
    : log_(log), opt_(std::move(opt)), clock_(clk), next_(log.partitions(), -1) {}

result<std::unique_ptr<file_writer>> file_writer::open(storage::event_log& log, file_writer_options opt,
                                                       const clock& clk) {
  std::unique_ptr<file_writer> w(new file_writer(log, std::move(opt), clk));
  std::error_code ec;
  if (fs::exists(w->opt_.checkpoint_file, ec)) {
    auto text = read_file(w->opt_.checkpoint_file);
    if (!text) return text.error();
    auto v = json::parse(*text);
    const bj::object* o = v ? v->if_object() : nullptr;
    const bj::value* next = o ? o->if_contains("next") : nullptr;
    if (!next || !next->is_array())
      return make_error(errc::server_error, fmt::format("unreadable checkpoint {}", w->opt_.checkpoint_file.string()));
    const bj::array& a = next->get_array();
    for (std::size_t p = 0; p < a.size() && p < w->next_.size(); ++p) {
      if (a[p].is_int64()) w->next_[p] = a[p].get_int64();
    }
  }
  for (std::uint32_t p = 0; p < w->next_.size(); ++p) {
    if (w->next_[p] < 0) w->next_[p] = log.stats(p).begin_sequence;
  }
  fs::create_directories(w->opt_.dir, ec);
  if (ec) return make_error(errc::server_error, fmt::format("cannot create {}: {}", w->opt_.dir.string(), ec.message()));
  return w;
}

result<std::size_t> file_writer::tick() {
  std::size_t files = 0;
  for (std::uint32_t p = 0; p < next_.size(); ++p) {
    auto n = write_partition(p, false);
    if (!n) return n.error();
    files += *n;
  }
  return files;
}

result<std::size_t> file_writer::flush() {
  std::size_t files = 0;
  for (std::uint32_t p = 0; p < next_.size(); ++p) {
    auto n = write_partition(p, true);
    if (!n) return n.error();
    files += *n;
  }
  return files;
}

result<std::size_t> file_writer::write_partition(std::uint32_t p, bool force) {
  const storage::partition_stats st = log_.stats(p);
  if (st.empty || st.last_sequence < next_[p]) return std::size_t{0};
  if (next_[p] < st.begin_sequence) next_[p] = st.begin_sequence;  // retention went past us
  auto first = log_.read(p, next_[p], 1);
  if (!first) return first.error();
  if (first->empty()) return std::size_t{0};
  const std::int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
  const std::int64_t waited = now_ms - first->front().enqueued_ms;
  const std::int64_t pending = st.last_offset - first->front().offset;
  const bool due = force || waited >= static_cast<std::int64_t>(opt_.endpoint.batch_frequency_seconds) * 1000 ||
                   pending >= static_cast<std::int64_t>(opt_.endpoint.max_chunk_bytes);
  if (!due) return std::size_t{0};

  std::size_t files = 0;
  std::string chunk;
  std::int64_t chunk_first_ms = 0;
  std::int64_t chunk_next = next_[p];
  const auto emit = [&]() -> result<void> {
    if (chunk.empty()) return {};
    if (auto w = write_file(p, chunk_first_ms, chunk); !w) return w;
    ++files;
    next_[p] = chunk_next;
    chunk.clear();
    return save_checkpoint();
  };
  std::int64_t from = next_[p];
  while (from <= st.last_sequence) {
    auto records = log_.read(p, from, 1000, 4 * 1024 * 1024);
    if (!records) return records.error();
    if (records->empty()) break;
    for (const storage::log_record& r : *records) {
      if (r.sequence > st.last_sequence) break;
      std::optional<std::string> line = storage_json_line(r);
      if (line) {
        if (!chunk.empty() && chunk.size() + line->size() + 1 > opt_.endpoint.max_chunk_bytes) {
          if (auto e = emit(); !e) return e.error();
        }
        if (chunk.empty()) chunk_first_ms = r.enqueued_ms;
        chunk += *line;
        chunk += '\n';
      }
      chunk_next = r.sequence + 1;
    }
    from = records->back().sequence + 1;
  }
  if (auto e = emit(); !e) return e.error();
  if (chunk_next > next_[p]) {
    // Only undecodable records were left: skip them.
    next_[p] = chunk_next;
    if (auto c = save_checkpoint(); !c) return c.error();
  }
  return files;
}

result<void> file_writer::write_file(std::uint32_t partition, std::int64_t first_enqueued_ms,
                                     const std::string& content) {
  const std::string base = expand_file_name(opt_.endpoint.file_name_format, opt_.hub_name, partition, first_enqueued_ms);
  const fs::path stem = opt_.dir / base;
  std::error_code ec;
  fs::create_directories(stem.parent_path(), ec);
  if (ec) return make_error(errc::server_error, fmt::format("cannot create {}: {}", stem.parent_path().string(), ec.message()));
  fs::path target = stem.string() + ".json";
  for (int i = 1; fs::exists(target, ec); ++i) target = fmt::format("{}_{}.json", stem.string(), i);
  return write_atomically(target, content);
}

result<void> file_writer::save_checkpoint() {
  bj::array next;
  for (std::int64_t n : next_) next.emplace_back(n);
  return write_atomically(opt_.checkpoint_file, json::serialize(bj::object{{"next", std::move(next)}}));
}

}  // namespace hub::routing
