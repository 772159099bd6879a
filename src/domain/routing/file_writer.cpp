#include "domain/routing/file_writer.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "domain/routing/resolver.hpp"
#include "domain/telemetry/message.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <fcntl.h>
#include <unistd.h>

#ifdef HUB_HAVE_AVRO
#include <avro.h>
#endif

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

namespace {

// The system properties a storage file shows, in IoT Hub's names and order.
std::vector<std::pair<std::string, std::string>> storage_system_properties(const telemetry::message& m,
                                                                           const std::string& enqueued) {
  std::vector<std::pair<std::string, std::string>> sys;
  if (m.message_id) sys.emplace_back("messageId", *m.message_id);
  if (m.correlation_id) sys.emplace_back("correlationId", *m.correlation_id);
  sys.emplace_back("connectionDeviceId", m.device_id);
  if (!m.module_id.empty()) sys.emplace_back("connectionModuleId", m.module_id);
  sys.emplace_back("connectionAuthMethod", telemetry::auth_method_json(m));
  if (!m.generation_id.empty()) sys.emplace_back("connectionDeviceGenerationId", m.generation_id);
  if (m.content_type) sys.emplace_back("contentType", *m.content_type);
  if (m.content_encoding) sys.emplace_back("contentEncoding", *m.content_encoding);
  sys.emplace_back("enqueuedTime", enqueued);
  return sys;
}

// Application properties as strings, the first of duplicate names.
std::vector<std::pair<std::string, std::string>> storage_properties(const telemetry::message& m) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [k, v] : m.properties) {
    const std::string& key = k;  // clang 14 (the fuzz preset) cannot capture a structured binding
    const bool seen = std::any_of(out.begin(), out.end(), [&](const auto& p) { return p.first == key; });
    if (!seen) out.emplace_back(k, property_text(v));
  }
  return out;
}

}  // namespace

std::string storage_json_line(const telemetry::message& m, std::int64_t enqueued_ms) {
  const std::string enqueued = iso_from_ms(enqueued_ms);
  bj::object line;
  line["EnqueuedTimeUtc"] = enqueued;
  bj::object props;
  for (auto& [k, v] : storage_properties(m)) props[k] = std::move(v);
  line["Properties"] = std::move(props);
  bj::object sys;
  for (auto& [k, v] : storage_system_properties(m, enqueued)) sys[k] = std::move(v);
  line["SystemProperties"] = std::move(sys);
  std::optional<bj::value> body;
  if (json_body(m, /*utf8_only=*/true)) body = body_json(m);
  line["Body"] = body ? std::move(*body) : bj::value(crypto::base64_encode(m.body));
  return json::serialize(line);
}

std::optional<std::string> storage_json_line(const storage::log_record& record) {
  auto decoded = telemetry::decode(record.data);
  if (!decoded) return std::nullopt;
  return storage_json_line(*decoded, record.enqueued_ms);
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

namespace {

#ifdef HUB_HAVE_AVRO
// IoT Hub's Avro record for storage endpoints.
constexpr std::string_view avro_schema_json =
    R"({"type":"record","name":"Message","namespace":"Microsoft.Azure.Devices","fields":[)"
    R"({"name":"EnqueuedTimeUtc","type":"string"},)"
    R"({"name":"Properties","type":{"type":"map","values":"string"}},)"
    R"({"name":"SystemProperties","type":{"type":"map","values":"string"}},)"
    R"({"name":"Body","type":["null","bytes"]}]})";

error avro_error(const std::string& what) {
  return make_error(errc::server_error, fmt::format("{}: {}", what, avro_strerror()));
}

// Writes `records` as an Avro object container file (codec null or deflate) through a synced
// temporary file and a rename.
result<void> write_avro(const fs::path& target, const std::vector<std::pair<telemetry::message, std::int64_t>>& records,
                        bool deflate) {
  avro_schema_t schema = nullptr;
  if (avro_schema_from_json_length(avro_schema_json.data(), avro_schema_json.size(), &schema) != 0)
    return avro_error("the Avro schema");
  avro_value_iface_t* iface = avro_generic_class_from_schema(schema);
  avro_value_t rec;
  avro_generic_value_new(iface, &rec);
  const fs::path tmp = target.string() + ".tmp";
  std::optional<error> failure;
  FILE* fp = std::fopen(tmp.c_str(), "wb");
  avro_file_writer_t writer = nullptr;
  if (!fp) {
    failure = io_error("cannot create", tmp, errno);
  } else if (avro_file_writer_create_with_codec_fp(fp, tmp.c_str(), 0, schema, &writer, deflate ? "deflate" : "null",
                                                   4 * 1024 * 1024) != 0) {
    failure = avro_error("cannot start " + tmp.string());
    writer = nullptr;
  }
  const auto put_map = [](avro_value_t& map, const std::vector<std::pair<std::string, std::string>>& items) {
    for (const auto& [k, v] : items) {
      avro_value_t element;
      if (avro_value_add(&map, k.c_str(), &element, nullptr, nullptr) != 0) return false;
      if (avro_value_set_string_len(&element, v.c_str(), v.size() + 1) != 0) return false;
    }
    return true;
  };
  for (std::size_t i = 0; !failure && i < records.size(); ++i) {
    const auto& [m, enqueued_ms] = records[i];
    const std::string enqueued = iso_from_ms(enqueued_ms);
    avro_value_reset(&rec);
    avro_value_t field, branch;
    bool ok = avro_value_get_by_name(&rec, "EnqueuedTimeUtc", &field, nullptr) == 0 &&
              avro_value_set_string_len(&field, enqueued.c_str(), enqueued.size() + 1) == 0;
    ok = ok && avro_value_get_by_name(&rec, "Properties", &field, nullptr) == 0 && put_map(field, storage_properties(m));
    ok = ok && avro_value_get_by_name(&rec, "SystemProperties", &field, nullptr) == 0 &&
         put_map(field, storage_system_properties(m, enqueued));
    ok = ok && avro_value_get_by_name(&rec, "Body", &field, nullptr) == 0 &&
         avro_value_set_branch(&field, 1, &branch) == 0 &&
         avro_value_set_bytes(&branch, const_cast<char*>(m.body.data()), m.body.size()) == 0;
    if (!ok || avro_file_writer_append_value(writer, &rec) != 0) failure = avro_error("cannot write " + tmp.string());
  }
  if (writer && avro_file_writer_close(writer) != 0 && !failure) failure = avro_error("cannot finish " + tmp.string());
  if (fp) {
    if (!failure && (std::fflush(fp) != 0 || ::fsync(::fileno(fp)) != 0)) failure = io_error("cannot sync", tmp, errno);
    std::fclose(fp);
  }
  avro_value_decref(&rec);
  avro_value_iface_decref(iface);
  avro_schema_decref(schema);
  if (failure) return *failure;
  if (::rename(tmp.c_str(), target.c_str()) != 0) return io_error("cannot rename to", target, errno);
  return sync_dir(target.parent_path());
}
#endif

}  // namespace

bool avro_supported() noexcept {
#ifdef HUB_HAVE_AVRO
  return true;
#else
  return false;
#endif
}

// The records of one file being built: JSON lines at once, or the messages for Avro.
class file_batch {
 public:
  explicit file_batch(file_encoding e) : encoding_(e) {}

  void add(telemetry::message m, std::int64_t enqueued_ms) {
    if (empty()) first_ms_ = enqueued_ms;
    if (encoding_ == file_encoding::json) {
      text_ += storage_json_line(m, enqueued_ms);
      text_ += '\n';
      ++count_;
      return;
    }
    // Avro: the body, the property maps and the record's overhead.
    bytes_ += m.body.size() + 160;
    for (const auto& [k, v] : m.properties) bytes_ += k.size() + 8 + (std::holds_alternative<std::string>(v) ? std::get<std::string>(v).size() : 8);
    messages_.emplace_back(std::move(m), enqueued_ms);
    ++count_;
  }
  // What adding `m` would make the file.
  std::size_t bytes_with(const telemetry::message& m, std::int64_t enqueued_ms) const {
    if (encoding_ == file_encoding::json) return text_.size() + storage_json_line(m, enqueued_ms).size() + 1;
    return bytes_ + m.body.size() + 160;
  }
  bool empty() const noexcept { return count_ == 0; }
  std::int64_t first_ms() const noexcept { return first_ms_; }
  std::string_view extension() const noexcept { return encoding_ == file_encoding::json ? ".json" : ".avro"; }

  result<void> write(const fs::path& target) const {
    if (encoding_ == file_encoding::json) return write_atomically(target, text_);
#ifdef HUB_HAVE_AVRO
    return write_avro(target, messages_, encoding_ == file_encoding::avro_deflate);
#else
    return make_error(errc::server_error, "this hubd was built without Avro");
#endif
  }
  void clear() {
    text_.clear();
    messages_.clear();
    bytes_ = 0;
    count_ = 0;
  }

 private:
  file_encoding encoding_;
  std::string text_;
  std::vector<std::pair<telemetry::message, std::int64_t>> messages_;
  std::size_t bytes_ = 0;
  std::size_t count_ = 0;
  std::int64_t first_ms_ = 0;
};

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
  file_batch chunk(opt_.endpoint.encoding);
  std::int64_t chunk_next = next_[p];
  const auto emit = [&]() -> result<void> {
    if (chunk.empty()) return {};
    if (auto w = write_file(p, chunk); !w) return w;
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
      if (auto m = telemetry::decode(r.data)) {
        if (!chunk.empty() && chunk.bytes_with(*m, r.enqueued_ms) > opt_.endpoint.max_chunk_bytes) {
          if (auto e = emit(); !e) return e.error();
        }
        chunk.add(std::move(*m), r.enqueued_ms);
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

result<void> file_writer::write_file(std::uint32_t partition, const file_batch& b) {
  const std::string base = expand_file_name(opt_.endpoint.file_name_format, opt_.hub_name, partition, b.first_ms());
  const fs::path stem = opt_.dir / base;
  std::error_code ec;
  fs::create_directories(stem.parent_path(), ec);
  if (ec) return make_error(errc::server_error, fmt::format("cannot create {}: {}", stem.parent_path().string(), ec.message()));
  fs::path target = stem.string() + std::string(b.extension());
  for (int i = 1; fs::exists(target, ec); ++i) target = fmt::format("{}_{}{}", stem.string(), i, b.extension());
  return b.write(target);
}

result<void> file_writer::save_checkpoint() {
  bj::array next;
  for (std::int64_t n : next_) next.emplace_back(n);
  return write_atomically(opt_.checkpoint_file, json::serialize(bj::object{{"next", std::move(next)}}));
}

}  // namespace hub::routing
