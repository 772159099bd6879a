#include "heads/amqp/event_hubs.hpp"

#include "base/text.hpp"
#include "domain/telemetry/message.hpp"
#include "heads/amqp/messages.hpp"

#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/codec/decoder.hpp>
#include <proton/codec/map.hpp>
#include <proton/codec/vector.hpp>
#include <proton/error.hpp>
#include <proton/message_id.hpp>
#include <proton/scalar.hpp>
#include <proton/timestamp.hpp>
#include <proton/types.hpp>

#include <charconv>
#include <chrono>

namespace hub::amqp_head {
namespace {

std::optional<std::int64_t> to_int(std::string_view s) {
  std::int64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// "2030-01-01T00:00:00.0000000Z" (what telemetry stores) -> ms since the epoch.
std::optional<std::int64_t> iso8601_ms(std::string_view s) {
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s.back() != 'Z')
    return std::nullopt;
  const auto y = to_int(s.substr(0, 4)), mo = to_int(s.substr(5, 2)), d = to_int(s.substr(8, 2));
  const auto h = to_int(s.substr(11, 2)), mi = to_int(s.substr(14, 2)), se = to_int(s.substr(17, 2));
  if (!y || !mo || !d || !h || !mi || !se) return std::nullopt;
  std::int64_t ms = 0;
  if (s.size() > 20 && s[19] == '.') {
    // Fractional seconds: the first three digits are milliseconds.
    std::string_view frac = s.substr(20, s.size() - 21);
    std::string digits(frac.substr(0, 3));
    while (digits.size() < 3) digits += '0';
    const auto f = to_int(digits);
    if (!f) return std::nullopt;
    ms = *f;
  }
  const std::chrono::year_month_day ymd{std::chrono::year(static_cast<int>(*y)), std::chrono::month(static_cast<unsigned>(*mo)),
                                        std::chrono::day(static_cast<unsigned>(*d))};
  if (!ymd.ok()) return std::nullopt;
  const auto days = std::chrono::sys_days(ymd).time_since_epoch();
  return std::chrono::duration_cast<std::chrono::milliseconds>(days).count() + ((*h * 60 + *mi) * 60 + *se) * 1000 + ms;
}

// Application properties keep the AMQP type the device sent them with, where telemetry kept it.
proton::scalar scalar_of(const telemetry::value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return proton::scalar(*s);
  if (const auto* i = std::get_if<std::int64_t>(&v)) return proton::scalar(*i);
  if (const auto* d = std::get_if<double>(&v)) return proton::scalar(*d);
  if (const auto* b = std::get_if<bool>(&v)) return proton::scalar(*b);
  return proton::scalar();
}

std::string text_of(const proton::scalar& s) {
  switch (s.type()) {
    case proton::STRING: return proton::get<std::string>(s);
    case proton::SYMBOL: return proton::get<proton::symbol>(s);
    default: return {};
  }
}

// The filter's value is a described string (descriptor 0x0000468C00000004 or the symbol
// "apache.org:selector-filter:string"); a plain string is read too.
std::optional<std::string> selector_text(const proton::value& v) {
  try {
    if (v.type() == proton::STRING) return proton::get<std::string>(v);
    if (v.type() != proton::DESCRIBED) return std::nullopt;
    proton::codec::decoder d(v);
    proton::codec::start s;
    d >> s;
    proton::value descriptor;
    d >> descriptor;
    std::string expression;
    d >> expression;
    return expression;
  } catch (const proton::error&) {
    return std::nullopt;
  }
}

proton::message reply_to_request(const management_request& r, int status, const std::string& description) {
  proton::message reply;
  reply.correlation_id(r.id);
  if (!r.reply_to.empty()) reply.to(r.reply_to);
  reply.properties().put("status-code", static_cast<std::int32_t>(status));
  reply.properties().put("status-description", description);
  return reply;
}

}  // namespace

std::optional<partition_address> parse_partition_address(std::string_view address) {
  // Some clients send the whole URI ("amqps://host/<entity>/..."); the SDK sends the path.
  for (std::string_view scheme : {"amqps://", "amqp://", "sb://"}) {
    if (!text::istarts_with(address, scheme)) continue;
    address.remove_prefix(scheme.size());
    const auto slash = address.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    address.remove_prefix(slash + 1);
  }
  if (address.starts_with('/')) address.remove_prefix(1);
  const auto s = text::split(address, '/');
  if (s.size() != 5 || s[0].empty() || !text::iequals(s[1], "ConsumerGroups") || s[2].empty() ||
      !text::iequals(s[3], "Partitions"))
    return std::nullopt;
  const auto p = to_int(s[4]);
  if (!p || *p < 0 || *p > 1'000'000) return std::nullopt;
  return partition_address{std::string(s[0]), std::string(s[2]), static_cast<std::uint32_t>(*p)};
}

std::optional<event_position> parse_selector(std::string_view e) {
  e = text::trim(e);
  constexpr std::string_view prefix = "amqp.annotation.x-opt-";
  if (!text::istarts_with(e, prefix)) return std::nullopt;
  e.remove_prefix(prefix.size());
  event_position pos;
  if (text::istarts_with(e, "offset")) {
    pos.what = event_position::kind::offset;
    e.remove_prefix(6);
  } else if (text::istarts_with(e, "sequence-number")) {
    pos.what = event_position::kind::sequence;
    e.remove_prefix(15);
  } else if (text::istarts_with(e, "enqueued-time")) {
    pos.what = event_position::kind::enqueued_time;
    e.remove_prefix(13);
  } else {
    return std::nullopt;
  }
  e = text::trim(e);
  if (e.starts_with(">=")) {
    pos.inclusive = true;
    e.remove_prefix(2);
  } else if (e.starts_with('>')) {
    e.remove_prefix(1);
  } else {
    return std::nullopt;
  }
  e = text::trim(e);
  if (e.size() < 2 || e.front() != '\'' || e.back() != '\'') return std::nullopt;
  const std::string_view v = e.substr(1, e.size() - 2);
  if (pos.what == event_position::kind::offset && v == "@latest") {
    pos.what = event_position::kind::latest;
    return pos;
  }
  const auto n = to_int(v);
  if (!n) return std::nullopt;
  if (pos.what == event_position::kind::offset && *n < 0) {
    pos.what = event_position::kind::start;
    return pos;
  }
  pos.value = *n;
  return pos;
}

std::optional<event_position> position_from_filters(const std::map<proton::symbol, proton::value>& filters) {
  for (const auto& [key, value] : filters) {
    if (key != "apache.org:selector-filter:string") continue;
    const auto text = selector_text(value);
    if (!text) return std::nullopt;
    return parse_selector(*text);
  }
  return event_position{event_position::kind::latest, 0, false};
}

std::int64_t resolve_position(const storage::event_log& log, std::uint32_t partition, const event_position& pos) {
  const storage::partition_stats st = log.stats(partition);
  const std::int64_t next = st.last_sequence + 1;
  std::int64_t seq = next;
  switch (pos.what) {
    case event_position::kind::start: seq = st.begin_sequence; break;
    case event_position::kind::latest: seq = next; break;
    case event_position::kind::offset: seq = log.sequence_after_offset(partition, pos.value, pos.inclusive); break;
    case event_position::kind::sequence: seq = pos.inclusive ? pos.value : pos.value + 1; break;
    case event_position::kind::enqueued_time: seq = log.sequence_at_time(partition, pos.value, pos.inclusive); break;
  }
  // Before the retained records: the oldest one; past the end: the next one to be written.
  return std::clamp(seq, st.begin_sequence, std::max(next, st.begin_sequence));
}

management_request read_management_request(const proton::message& m) {
  management_request r;
  try {
    r.id = m.id();
    r.reply_to = m.reply_to();
    const auto& props = m.properties();
    const auto get = [&](const char* key) { return props.exists(key) ? text_of(props.get(key)) : std::string(); };
    r.operation = get("operation");
    r.type = get("type");
    r.name = get("name");
    r.partition = get("partition");
  } catch (const proton::error&) {
    r.operation.clear();
  }
  return r;
}

proton::message eventhub_info_reply(const management_request& r, std::uint32_t partitions, std::int64_t created_ms) {
  proton::message reply = reply_to_request(r, 200, "OK");
  std::vector<std::string> ids;
  for (std::uint32_t p = 0; p < partitions; ++p) ids.push_back(std::to_string(p));
  std::map<std::string, proton::value> body;
  body["name"] = r.name;
  body["type"] = std::string("com.microsoft:eventhub");
  body["created_at"] = proton::timestamp(created_ms);
  body["partition_count"] = static_cast<std::int32_t>(partitions);
  body["partition_ids"] = ids;
  reply.body(body);
  return reply;
}

proton::message partition_info_reply(const management_request& r, const storage::partition_stats& st) {
  proton::message reply = reply_to_request(r, 200, "OK");
  std::map<std::string, proton::value> body;
  body["name"] = r.name;
  body["type"] = std::string("com.microsoft:partition");
  body["partition"] = r.partition;
  body["begin_sequence_number"] = static_cast<std::int64_t>(st.begin_sequence);
  body["last_enqueued_sequence_number"] = static_cast<std::int64_t>(st.last_sequence);
  body["last_enqueued_offset"] = std::to_string(st.last_offset);
  body["last_enqueued_time_utc"] = proton::timestamp(st.last_enqueued_ms);
  body["is_partition_empty"] = st.empty;
  reply.body(body);
  return reply;
}

proton::message management_error_reply(const management_request& r, int status, const std::string& description) {
  return reply_to_request(r, status, description);
}

std::optional<proton::message> event_message(const storage::log_record& record) {
  auto stored = telemetry::decode(record.data);
  if (!stored) return std::nullopt;
  const telemetry::message& m = *stored;
  proton::message out;
  out.body(proton::binary(m.body.begin(), m.body.end()));
  out.inferred(true);  // a Data section

  if (m.message_id) out.id(proton::message_id(*m.message_id));
  if (m.correlation_id) out.correlation_id(proton::message_id(*m.correlation_id));
  if (m.content_type) out.content_type(*m.content_type);
  if (m.content_encoding) out.content_encoding(*m.content_encoding);
  if (m.user_id) out.user(*m.user_id);
  if (m.to) out.to(*m.to);
  if (m.expiry_time_utc) {
    if (const auto ms = iso8601_ms(*m.expiry_time_utc)) out.expiry_time(proton::timestamp(*ms));
  }

  auto& ann = out.message_annotations();
  const auto put = [&](const char* key, const proton::value& v) { ann.put(proton::annotation_key(proton::symbol(key)), v); };
  put("x-opt-sequence-number", static_cast<std::int64_t>(record.sequence));
  put("x-opt-offset", std::to_string(record.offset));
  put("x-opt-enqueued-time", proton::timestamp(record.enqueued_ms));
  put("iothub-connection-device-id", m.device_id);
  if (!m.module_id.empty()) put("iothub-connection-module-id", m.module_id);
  put("iothub-connection-auth-method", telemetry::auth_method_json(m));
  put("iothub-connection-auth-generation-id", m.generation_id);
  put("iothub-enqueuedtime", proton::timestamp(record.enqueued_ms));
  put("iothub-message-source", m.source);
  if (m.creation_time_utc) put("iothub-creation-time-utc", *m.creation_time_utc);
  if (m.output_name) put("iothub-outputname", *m.output_name);
  if (m.component) put("dt-subject", *m.component);
  if (m.interface_id) put("iothub-interface-id", *m.interface_id);
  if (!m.model_id.empty()) put("dt-dataschema", m.model_id);

  for (const auto& [k, v] : m.properties) out.properties().put(k, scalar_of(v));
  return out;
}

}  // namespace hub::amqp_head
