// monitor-events without a hub: stored messages in, printed events out.
#include "cli/monitor.hpp"
#include "storage/event_log.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <future>
#include <string>

using namespace hub;
using namespace hub::cli;
namespace bj = boost::json;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/hubd-monitor-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { fs::remove_all(path); }
};

telemetry::message sample(std::string device, std::string body) {
  telemetry::message m;
  m.device_id = std::move(device);
  m.generation_id = "638000000000000001";
  m.body = std::move(body);
  return m;
}

storage::log_record record_at(std::int64_t seq, std::int64_t offset, std::int64_t ms) {
  storage::log_record r;
  r.sequence = seq;
  r.offset = offset;
  r.enqueued_ms = ms;
  return r;
}

bj::object parse_line(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);   // one line
  return bj::parse(line).as_object();
}

void append_sync(storage::event_log& log, std::uint32_t p, const telemetry::message& m) {
  std::promise<void> done;
  log.append(p, telemetry::encode(m), [&](result<storage::log_position> r) {
    EXPECT_TRUE(r.has_value());
    done.set_value();
  });
  done.get_future().wait();
}

std::string read_file(std::FILE* f) {
  std::rewind(f);
  std::string out;
  char buf[4096];
  while (const std::size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  return out;
}

}  // namespace

TEST(monitor, json_line_carries_positions_system_and_application_properties) {
  auto m = sample("dev/1", R"({"temp":21.5})");
  m.module_id = "mod";
  m.message_id = "mid-1";
  m.correlation_id = "cid-1";
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.user_id = "user";
  m.properties = {{"a/b & c", std::string("välue ✓")}, {"n", std::int64_t{7}}, {"flag", true}};
  const auto e = monitor::from_stored(m, 3, record_at(42, 4096, 1'700'000'000'123));
  const auto o = parse_line(monitor::to_json_line(e));
  EXPECT_EQ(o.at("deviceId").as_string(), "dev/1");
  EXPECT_EQ(o.at("moduleId").as_string(), "mod");
  EXPECT_EQ(o.at("partition").to_number<int>(), 3);
  EXPECT_EQ(o.at("sequenceNumber").to_number<std::int64_t>(), 42);
  EXPECT_EQ(o.at("offset").as_string(), "4096");
  EXPECT_EQ(o.at("enqueuedTime").as_string(), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(o.at("body").as_object().at("temp").to_number<double>(), 21.5);
  EXPECT_FALSE(o.contains("bodyEncoding"));
  const auto& sp = o.at("systemProperties").as_object();
  EXPECT_EQ(sp.at("message-id").as_string(), "mid-1");
  EXPECT_EQ(sp.at("correlation-id").as_string(), "cid-1");
  EXPECT_EQ(sp.at("content-type").as_string(), "application/json");
  EXPECT_EQ(sp.at("content-encoding").as_string(), "utf-8");
  EXPECT_EQ(sp.at("user-id").as_string(), "user");
  EXPECT_EQ(sp.at("iothub-connection-device-id").as_string(), "dev/1");
  EXPECT_EQ(sp.at("iothub-connection-module-id").as_string(), "mod");
  EXPECT_EQ(sp.at("iothub-connection-auth-generation-id").as_string(), "638000000000000001");
  EXPECT_EQ(sp.at("iothub-enqueuedtime").as_string(), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(sp.at("iothub-message-source").as_string(), "Telemetry");
  const auto auth = bj::parse(sp.at("iothub-connection-auth-method").as_string()).as_object();
  EXPECT_EQ(auth.at("scope").as_string(), "module");
  EXPECT_EQ(auth.at("type").as_string(), "sas");
  EXPECT_FALSE(sp.contains("to"));   // absent ones are left out
  const auto& props = o.at("properties").as_object();
  EXPECT_EQ(props.at("a/b & c").as_string(), "välue ✓");
  EXPECT_EQ(props.at("n").to_number<int>(), 7);
  EXPECT_EQ(props.at("flag").as_bool(), true);
}

TEST(monitor, a_device_message_has_no_module) {
  auto m = sample("dev1", "hello");
  m.auth = telemetry::auth_method::x509_ca;
  const auto o = parse_line(monitor::to_json_line(monitor::from_stored(m, 0, record_at(0, 0, 0))));
  EXPECT_TRUE(o.at("moduleId").is_null());
  const auto& sp = o.at("systemProperties").as_object();
  EXPECT_FALSE(sp.contains("iothub-connection-module-id"));
  const auto auth = bj::parse(sp.at("iothub-connection-auth-method").as_string()).as_object();
  EXPECT_EQ(auth.at("scope").as_string(), "device");
  EXPECT_EQ(auth.at("type").as_string(), "x509");
}

TEST(monitor, body_is_json_text_or_flagged_base64) {
  const auto body_of = [](telemetry::message m) {
    return parse_line(monitor::to_json_line(monitor::from_stored(m, 0, record_at(0, 0, 0))));
  };
  // Parses as JSON: shown as JSON, whatever the content type.
  auto o = body_of(sample("d", "[1,2]"));
  EXPECT_TRUE(o.at("body").is_array());
  // Text.
  o = body_of(sample("d", "plain text ✓"));
  EXPECT_EQ(o.at("body").as_string(), "plain text ✓");
  // JSON content type with a body that is not JSON: text.
  auto m = sample("d", "{not json");
  m.content_type = "application/json";
  o = body_of(m);
  EXPECT_EQ(o.at("body").as_string(), "{not json");
  // A content type that is not JSON keeps JSON-looking text as text.
  m = sample("d", "12");
  m.content_type = "text/plain";
  o = body_of(m);
  EXPECT_EQ(o.at("body").as_string(), "12");
  // Not UTF-8: base64, flagged.
  o = body_of(sample("d", std::string("\xff\x00\x01", 3)));
  EXPECT_EQ(o.at("body").as_string(), "/wAB");
  EXPECT_EQ(o.at("bodyEncoding").as_string(), "base64");
  EXPECT_EQ(monitor::classify_body(monitor::from_stored(sample("d", "\xc0\xaf"), 0, {})), monitor::body_kind::base64);
  EXPECT_EQ(monitor::classify_body(monitor::from_stored(sample("d", "12"), 0, {})), monitor::body_kind::json);
  EXPECT_EQ(monitor::classify_body(monitor::from_stored(sample("d", "x"), 0, {})), monitor::body_kind::text);
}

TEST(monitor, invalid_utf8_in_properties_still_makes_valid_json) {
  auto m = sample("d", "x");
  m.properties = {{"k", std::string("a\xff" "b")}};
  const auto o = parse_line(monitor::to_json_line(monitor::from_stored(m, 0, {})));
  EXPECT_EQ(o.at("properties").as_object().at("k").as_string(), "a\xEF\xBF\xBD" "b");
}

TEST(monitor, utf8_validation) {
  EXPECT_TRUE(monitor::is_valid_utf8(""));
  EXPECT_TRUE(monitor::is_valid_utf8("a€𝄞"));
  EXPECT_FALSE(monitor::is_valid_utf8("\xc0\x80"));          // overlong
  EXPECT_FALSE(monitor::is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(monitor::is_valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(monitor::is_valid_utf8("\xe2\x82"));          // truncated
}

TEST(monitor, human_format_is_azs_event_block) {
  auto m = sample("dev1", R"({"a":1})");
  m.message_id = "m1";
  m.properties = {{"p", std::string("v")}};
  const std::string text = monitor::to_human(monitor::from_stored(m, 1, record_at(5, 77, 0)));
  const auto o = bj::parse(text).as_object();
  const auto& ev = o.at("event").as_object();
  EXPECT_EQ(ev.at("origin").as_string(), "dev1");
  EXPECT_EQ(ev.at("module").as_string(), "");
  EXPECT_EQ(ev.at("payload").as_object().at("a").to_number<int>(), 1);
  EXPECT_EQ(ev.at("annotations").as_object().at("x-opt-sequence-number").to_number<int>(), 5);
  EXPECT_EQ(ev.at("annotations").as_object().at("iothub-connection-device-id").as_string(), "dev1");
  EXPECT_EQ(ev.at("properties").as_object().at("system").as_object().at("message-id").as_string(), "m1");
  EXPECT_EQ(ev.at("properties").as_object().at("application").as_object().at("p").as_string(), "v");
  EXPECT_NE(text.find("\n    \"event\": {\n        \"origin\": \"dev1\""), std::string::npos) << text;
}

TEST(monitor, filters_match_ids_and_patterns) {
  EXPECT_TRUE(monitor::glob_match("dev*", "dev12"));
  EXPECT_TRUE(monitor::glob_match("d?v", "dev"));
  EXPECT_TRUE(monitor::glob_match("*", ""));
  EXPECT_FALSE(monitor::glob_match("dev", "dev1"));
  EXPECT_TRUE(monitor::glob_match("*a*b", "xxaxxbxb"));
  monitor::event dev;
  dev.device_id = "dev1";
  monitor::event mod = dev;
  mod.module_id = "m1";
  EXPECT_TRUE((monitor::filter{}.matches(dev)));
  EXPECT_TRUE((monitor::filter{"dev1", ""}.matches(mod)));
  EXPECT_FALSE((monitor::filter{"dev2", ""}.matches(dev)));
  EXPECT_FALSE((monitor::filter{"", "m1"}.matches(dev)));
  EXPECT_TRUE((monitor::filter{"", "m1"}.matches(mod)));
  EXPECT_TRUE((monitor::filter{"dev1", "*"}.matches(dev)));
}

TEST(monitor, log_source_from_start_or_only_new_and_run_stops_at_count_or_timeout) {
  temp_dir d;
  storage::log_options o;
  o.dir = (d.path / "events").string();
  o.partitions = 2;
  o.sync = false;
  auto log = std::move(*storage::event_log::open(o));
  append_sync(*log, 0, sample("a", "old-a"));
  append_sync(*log, 1, sample("b", "old-b"));
  log->append(1, "\x09garbage", nullptr);   // not a telemetry record: reported and skipped

  auto from_start = std::move(*monitor::open_log_source(o.dir, monitor::start_at::earliest));
  auto only_new = std::move(*monitor::open_log_source(o.dir, monitor::start_at::latest));
  append_sync(*log, 0, sample("a", "new-a"));

  std::FILE* out = std::tmpfile();
  std::atomic<bool> stop{false};
  monitor::run_options all;
  all.json = true;
  all.count = 3;
  all.timeout = std::chrono::seconds(10);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(monitor::run(*from_start, all, out, stop), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));   // the count ended it
  std::string text = read_file(out);
  EXPECT_NE(text.find("old-a"), std::string::npos);
  EXPECT_NE(text.find("old-b"), std::string::npos);
  EXPECT_NE(text.find("new-a"), std::string::npos);
  std::fclose(out);

  out = std::tmpfile();
  monitor::run_options briefly;
  briefly.json = true;
  briefly.timeout = std::chrono::milliseconds(300);
  briefly.match.device = "a";
  EXPECT_EQ(monitor::run(*only_new, briefly, out, stop), 0);
  text = read_file(out);
  EXPECT_EQ(text.find("old-"), std::string::npos) << text;
  EXPECT_NE(text.find("new-a"), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
  std::fclose(out);
}

// --stop-at-end: a snapshot of what was stored when the source opened, read whole however long
// it takes, and nothing appended after.
TEST(monitor, stop_at_end_reads_what_was_stored_at_the_start_and_stops) {
  temp_dir d;
  storage::log_options o;
  o.dir = (d.path / "events").string();
  o.partitions = 2;
  o.sync = false;
  auto log = std::move(*storage::event_log::open(o));
  // More than one poll's batch (512 records) in partition 0.
  for (int i = 0; i < 1200; ++i) append_sync(*log, static_cast<std::uint32_t>(i % 3 == 0), sample("a", "m" + std::to_string(i)));

  auto src = std::move(*monitor::open_log_source(o.dir, monitor::start_at::earliest, std::chrono::milliseconds(50), true));
  append_sync(*log, 0, sample("a", "after-the-start"));

  std::FILE* out = std::tmpfile();
  std::atomic<bool> stop{false};
  monitor::run_options opts;
  opts.json = true;
  opts.timeout = std::chrono::seconds(30);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(monitor::run(*src, opts, out, stop), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));  // not the timeout
  const std::string text = read_file(out);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1200);
  EXPECT_NE(text.find("\"m1199\""), std::string::npos);
  EXPECT_EQ(text.find("after-the-start"), std::string::npos);
  std::fclose(out);

  // Nothing stored: stops at once.
  temp_dir empty;
  o.dir = (empty.path / "events").string();
  auto empty_log = std::move(*storage::event_log::open(o));
  auto none = std::move(*monitor::open_log_source(o.dir, monitor::start_at::earliest, std::chrono::milliseconds(50), true));
  out = std::tmpfile();
  EXPECT_EQ(monitor::run(*none, opts, out, stop), 0);
  EXPECT_EQ(read_file(out), "");
  std::fclose(out);
}

TEST(monitor, iso8601_with_milliseconds) {
  EXPECT_EQ(monitor::iso8601_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(monitor::iso8601_ms(1'700'000'000'123), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(monitor::iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
}
