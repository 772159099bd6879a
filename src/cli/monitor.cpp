#include "cli/monitor.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/text.hpp"
#include "storage/event_log.hpp"
#include "storage/event_log_reader.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <thread>

namespace hub::cli::monitor {
namespace {

namespace bj = boost::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

void add(property_list& props, std::string name, const std::optional<std::string>& v) {
  if (v) props.emplace_back(std::move(name), *v);
}

void add(property_list& props, std::string name, std::string v) { props.emplace_back(std::move(name), std::move(v)); }

// Valid UTF-8 for JSON output: invalid bytes become U+FFFD.
std::string utf8_text(std::string_view s) { return text::valid_utf8(s); }

bj::value to_json(const telemetry::value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return bj::string(utf8_text(*s));
  if (const auto* i = std::get_if<std::int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* b = std::get_if<bool>(&v)) return *b;
  return nullptr;
}

bj::object to_json(const property_list& props) {
  bj::object o;
  for (const auto& [k, v] : props) o[utf8_text(k)] = to_json(v);
  return o;
}

// A content type that says what the body is not: text/plain, application/octet-stream, ...
// Without one, or with a JSON one, the body is tried as JSON (as az does).
bool content_type_rules_out_json(const event& e) {
  const auto* ct = find(e.system_properties, "content-type");
  const auto* s = ct ? std::get_if<std::string>(ct) : nullptr;
  if (s == nullptr || s->empty()) return false;
  std::string lower(*s);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.find("json") == std::string::npos;
}

std::optional<bj::value> body_as_json(const event& e) {
  if (!is_valid_utf8(e.body) || content_type_rules_out_json(e)) return std::nullopt;
  json::parse_limits limits;
  limits.max_depth = 64;
  limits.max_size = std::max<std::size_t>(e.body.size(), 1);
  auto parsed = json::parse(e.body, limits);
  if (!parsed) return std::nullopt;
  return std::move(*parsed);
}

// The body as shown, and whether it had to be base64.
std::pair<bj::value, bool> body_value(const event& e) {
  if (auto v = body_as_json(e)) return {std::move(*v), false};
  if (is_valid_utf8(e.body)) return {bj::string(e.body), false};
  return {bj::string(crypto::base64_encode(e.body)), true};
}

std::string string_property(const event& e, std::string_view name) {
  const auto* v = find(e.system_properties, name);
  const auto* s = v ? std::get_if<std::string>(v) : nullptr;
  return s ? *s : std::string();
}

// ---- the event log as a source --------------------------------------------------------------

class log_source final : public source {
 public:
  log_source(std::unique_ptr<storage::event_log_reader> reader, start_at from, milliseconds interval, bool snapshot)
      : reader_(std::move(reader)), interval_(interval), snapshot_(snapshot) {
    for (std::uint32_t p = 0; p < reader_->partitions(); ++p) {
      next_.push_back(from == start_at::latest ? reader_->end_sequence(p) : 0);
      opening_end_.push_back(reader_->end_sequence(p));
    }
  }

  bool exhausted() const override {
    if (!snapshot_) return false;
    for (std::size_t p = 0; p < opening_end_.size(); ++p) {
      if (next_[p] < opening_end_[p]) return false;
    }
    return true;
  }

  result<std::vector<event>> poll(milliseconds max_wait) override {
    const auto deadline = steady_clock::now() + max_wait;
    for (;;) {
      auto got = read_available();
      if (!got || !got->empty()) return got;
      const auto now = steady_clock::now();
      if (now >= deadline) return got;
      std::this_thread::sleep_for(std::min<steady_clock::duration>(interval_, deadline - now));
    }
  }

 private:
  static constexpr std::size_t batch_records = 512;
  static constexpr std::size_t batch_bytes = 4 * 1024 * 1024;

  result<std::vector<event>> read_available() {
    if (auto r = reader_->refresh(); !r) return r.error();
    // Partitions that appeared since (hubd made the log after we opened it) start at 0; a
    // snapshot has nothing of theirs.
    while (next_.size() < reader_->partitions()) {
      next_.push_back(0);
      opening_end_.push_back(0);
    }
    std::vector<event> out;
    for (std::uint32_t p = 0; p < next_.size(); ++p) {
      std::size_t want = batch_records;
      if (snapshot_) {
        if (next_[p] >= opening_end_[p]) continue;
        want = std::min<std::size_t>(want, static_cast<std::size_t>(opening_end_[p] - next_[p]));
      }
      auto records = reader_->read(p, next_[p], want, batch_bytes);
      if (!records) return records.error();
      for (const auto& rec : *records) {
        next_[p] = rec.sequence + 1;
        auto m = telemetry::decode(rec.data);
        if (!m) {
          fmt::print(stderr, "hubctl: partition {} sequence {}: {}; skipped\n", p, rec.sequence, m.error().message);
          continue;
        }
        out.push_back(from_stored(*m, p, rec));
      }
    }
    return out;
  }

  std::unique_ptr<storage::event_log_reader> reader_;
  milliseconds interval_;
  std::vector<std::int64_t> next_;   // next sequence to read, per partition
  std::vector<std::int64_t> opening_end_;  // per partition, the end when the source was opened
  bool snapshot_ = false;
};

}  // namespace

bool is_valid_utf8(std::string_view s) { return text::is_valid_utf8(s); }

std::string iso8601_ms(std::int64_t ms) {
  const std::int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  const auto frac = static_cast<int>(ms - secs * 1000);
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

event from_stored(const telemetry::message& m, std::uint32_t partition, const storage::log_record& record) {
  event e;
  e.device_id = m.device_id;
  e.module_id = m.module_id;
  e.partition = partition;
  e.sequence = record.sequence;
  e.offset = std::to_string(record.offset);
  e.enqueued_ms = record.enqueued_ms;
  e.body = m.body;
  // Device-set properties first, in the order the IoT Hub docs list them, then the hub's.
  auto& sp = e.system_properties;
  add(sp, "message-id", m.message_id);
  add(sp, "correlation-id", m.correlation_id);
  add(sp, "content-type", m.content_type);
  add(sp, "content-encoding", m.content_encoding);
  add(sp, "user-id", m.user_id);
  add(sp, "to", m.to);
  add(sp, "absolute-expiry-time", m.expiry_time_utc);
  add(sp, "iothub-creation-time-utc", m.creation_time_utc);
  add(sp, "iothub-outputname", m.output_name);
  add(sp, "dt-subject", m.component);
  add(sp, "iothub-interface-id", m.interface_id);
  if (!m.model_id.empty()) add(sp, "dt-dataschema", m.model_id);
  add(sp, "iothub-connection-device-id", m.device_id);
  if (!m.module_id.empty()) add(sp, "iothub-connection-module-id", m.module_id);
  add(sp, "iothub-connection-auth-method", telemetry::auth_method_json(m));
  add(sp, "iothub-connection-auth-generation-id", m.generation_id);
  add(sp, "iothub-enqueuedtime", iso8601_ms(record.enqueued_ms));
  add(sp, "iothub-message-source", m.source);
  e.properties = m.properties;
  return e;
}

const telemetry::value* find(const property_list& props, std::string_view name) {
  for (const auto& [k, v] : props) {
    if (k == name) return &v;
  }
  return nullptr;
}

bool glob_match(std::string_view pattern, std::string_view text) {
  // Iterative matcher with one backtrack point: linear-ish, no recursion.
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool filter::matches(const event& e) const {
  if (!device.empty() && !glob_match(device, e.device_id)) return false;
  if (module.empty()) return true;
  if (e.module_id.empty()) return module == "*";
  return glob_match(module, e.module_id);
}

body_kind classify_body(const event& e) {
  if (!is_valid_utf8(e.body)) return body_kind::base64;
  if (body_as_json(e)) return body_kind::json;
  return body_kind::text;
}

std::string to_json_line(const event& e) {
  bj::object o;
  o["deviceId"] = bj::string(utf8_text(e.device_id));
  o["moduleId"] = e.module_id.empty() ? bj::value(nullptr) : bj::value(bj::string(utf8_text(e.module_id)));
  o["partition"] = e.partition;
  o["sequenceNumber"] = e.sequence;
  o["offset"] = bj::string(e.offset);
  o["enqueuedTime"] = bj::string(iso8601_ms(e.enqueued_ms));
  auto [body, base64] = body_value(e);
  o["body"] = std::move(body);
  if (base64) o["bodyEncoding"] = "base64";
  o["systemProperties"] = to_json(e.system_properties);
  o["properties"] = to_json(e.properties);
  return bj::serialize(o) + "\n";
}

std::string to_human(const event& e) {
  property_list system;
  property_list annotations{{"x-opt-sequence-number", e.sequence},
                            {"x-opt-offset", e.offset},
                            {"x-opt-enqueued-time", iso8601_ms(e.enqueued_ms)}};
  for (const auto& [k, v] : e.system_properties) {
    // IoT Hub carries what it stamps as message annotations and what the device set as message
    // properties; az shows them apart.
    if (k.rfind("iothub-", 0) == 0 || k.rfind("x-opt-", 0) == 0) {
      annotations.emplace_back(k, v);
    } else {
      system.emplace_back(k, v);
    }
  }
  bj::object ev;
  ev["origin"] = bj::string(utf8_text(e.device_id));
  ev["module"] = bj::string(utf8_text(e.module_id));
  ev["interface"] = bj::string(utf8_text(string_property(e, "iothub-interface-id")));
  ev["component"] = bj::string(utf8_text(string_property(e, "dt-subject")));
  ev["partition"] = e.partition;
  auto [body, base64] = body_value(e);
  ev["payload"] = std::move(body);
  if (base64) ev["payloadEncoding"] = "base64";
  ev["annotations"] = to_json(annotations);
  ev["properties"] = bj::object{{"system", to_json(system)}, {"application", to_json(e.properties)}};
  // Indented like Python's json.dumps(indent=4), which az uses.
  return json::pretty(bj::object{{"event", std::move(ev)}}, 4) + "\n";
}

result<std::unique_ptr<source>> open_log_source(const std::string& events_dir, start_at from,
                                                milliseconds poll_interval, bool snapshot) {
  auto reader = storage::event_log_reader::open(events_dir);
  if (!reader) return reader.error();
  return std::unique_ptr<source>(new log_source(std::move(*reader), from, poll_interval, snapshot));
}

int run(source& src, const run_options& options, std::FILE* out, const std::atomic<bool>& stop) {
  const bool forever = options.timeout.count() <= 0;
  const auto deadline = steady_clock::now() + options.timeout;
  std::uint64_t printed = 0;
  // Short polls, so a signal or the deadline is noticed quickly.
  constexpr milliseconds slice{200};
  while (!stop.load()) {
    if (options.count && printed >= *options.count) break;
    if (src.exhausted()) break;
    milliseconds wait = slice;
    if (!forever) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
      if (left.count() <= 0) break;
      wait = std::min(wait, left);
    }
    auto batch = src.poll(wait);
    if (!batch) {
      fmt::print(stderr, "hubctl: {}\n", batch.error().message);
      return 1;
    }
    for (const event& e : *batch) {
      if (!options.match.matches(e)) continue;
      const std::string text = options.json ? to_json_line(e) : to_human(e);
      std::fwrite(text.data(), 1, text.size(), out);
      if (options.count && ++printed >= *options.count) break;
    }
    // Each batch reaches the reader at once (a pipe would otherwise hold it back).
    if (std::fflush(out) != 0 || std::ferror(out)) return 1;
  }
  return 0;
}

}  // namespace hub::cli::monitor
