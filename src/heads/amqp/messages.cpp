#include "heads/amqp/messages.hpp"

#include "base/clock.hpp"
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/text.hpp"

#include <boost/json/object.hpp>

#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/codec/vector.hpp>
#include <proton/error.hpp>
#include <proton/scalar.hpp>
#include <proton/symbol.hpp>
#include <proton/timestamp.hpp>
#include <proton/types.hpp>
#include <proton/uuid.hpp>

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>
#include <vector>

namespace hub::amqp_head {
namespace {

// Proton's typed getters throw on a type mismatch, so every read checks the type first.
template <class Scalar>  // proton::scalar or proton::message_id: each has its own get<T>()
std::string scalar_text(const Scalar& s) {
  switch (s.type()) {
    case proton::STRING: return proton::get<std::string>(s);
    case proton::SYMBOL: return proton::to_string(s);  // a message id is never a symbol
    case proton::UUID: return proton::get<proton::uuid>(s).str();
    case proton::BINARY: {
      const auto b = proton::get<proton::binary>(s);
      return std::string(b.begin(), b.end());
    }
    case proton::NULL_TYPE: return {};
    default: return proton::to_string(s);
  }
}

std::string value_text(const proton::value& v) {
  switch (v.type()) {
    case proton::STRING: return proton::get<std::string>(v);
    case proton::SYMBOL: return proton::get<proton::symbol>(v);
    case proton::BINARY: {
      const auto b = proton::get<proton::binary>(v);
      return std::string(b.begin(), b.end());
    }
    default: return {};
  }
}

telemetry::value to_value(const proton::scalar& s) {
  const proton::type_id t = s.type();
  if (t == proton::NULL_TYPE) return std::monostate{};
  if (t == proton::BOOLEAN) return proton::get<bool>(s);
  if (t == proton::ULONG) {
    const auto u = proton::get<std::uint64_t>(s);
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::to_string(u);
    return static_cast<std::int64_t>(u);
  }
  if (t == proton::TIMESTAMP) return static_cast<std::int64_t>(proton::get<proton::timestamp>(s).milliseconds());
  if (proton::type_id_is_signed_int(t) || proton::type_id_is_unsigned_int(t)) return proton::coerce<std::int64_t>(s);
  if (proton::type_id_is_floating_point(t)) return proton::coerce<double>(s);
  return scalar_text(s);
}

std::string iso8601_ms(std::int64_t ms) {
  return to_iso8601(sys_time{std::chrono::milliseconds(ms)});
}

std::optional<std::string> annotation(const proton::message& m, const char* key) {
  const auto& ann = m.message_annotations();
  const proton::annotation_key k{proton::symbol(key)};
  if (!ann.exists(k)) return std::nullopt;
  std::string text = value_text(ann.get(k));
  if (text.empty()) return std::nullopt;
  return text;
}

error bad_message(std::string why) { return make_error(errc::argument_invalid, std::move(why)); }

// The body as the SDKs send it: a Data section (binary), or an AMQP value holding a string.
result<std::string> body_of(const proton::message& m) {
  const proton::value& body = m.body();
  switch (body.type()) {
    case proton::BINARY: {
      const auto b = proton::get<proton::binary>(body);
      return std::string(b.begin(), b.end());
    }
    case proton::STRING: return proton::get<std::string>(body);
    case proton::NULL_TYPE: return std::string();
    default: return bad_message("The message body must be a data section");
  }
}

proton::timestamp timestamp_of(sys_time t) {
  return proton::timestamp(std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
}

// "0f8fad5b-d9cb-469f-a165-70867728950e" (either case) as a uuid; nothing for other text.
std::optional<proton::uuid> parse_uuid(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  char bytes[16];
  std::size_t n = 0;
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    bytes[n++] = static_cast<char>((hi << 4) | lo);
    i += 2;
  }
  return proton::uuid::copy(bytes);
}

void set_data_body(proton::message& m, const std::string& body) {
  m.body(proton::binary(body.begin(), body.end()));
  m.inferred(true);  // a Data section: the SDK reads body.content
}

}  // namespace

std::string id_text(const proton::message_id& id) { return scalar_text(id); }

cbs_request read_cbs_request(const proton::message& m) {
  cbs_request r;
  try {
    r.id = m.id();
    r.reply_to = m.reply_to();
    const auto& props = m.properties();
    const auto text_of = [&](const char* key) -> std::string {
      if (!props.exists(key)) return {};
      return scalar_text(props.get(key));
    };
    r.operation = text_of("operation");
    r.type = text_of("type");
    r.name = text_of("name");
    r.token = value_text(m.body());
  } catch (const proton::error&) {
    // Properties that do not decode as a string-keyed map: check_put_token refuses the request.
    r.operation.clear();
  }
  return r;
}

result<void> check_put_token(const cbs_request& r) {
  if (r.operation != "put-token") return bad_message("Unsupported CBS operation '" + r.operation + "'");
  if (r.type != "servicebus.windows.net:sastoken" && r.type != "azure-devices.net:sastoken")
    return bad_message("Unsupported token type '" + r.type + "'");
  if (r.name.empty()) return bad_message("The put-token request has no name");
  if (r.token.empty()) return bad_message("The put-token request has no token");
  return {};
}

proton::message cbs_reply(const proton::message_id& request_id, int status, const std::string& description) {
  proton::message reply;
  reply.correlation_id(request_id);
  reply.properties().put("status-code", static_cast<std::int32_t>(status));
  reply.properties().put("status-description", description);
  return reply;
}

result<telemetry::message> to_telemetry(const proton::message& m) {
  try {
    telemetry::message out;
    auto body = body_of(m);
    if (!body) return body.error();
    out.body = std::move(*body);

    const auto set = [](std::optional<std::string>& field, std::string text) {
      if (!text.empty()) field = std::move(text);
    };
    set(out.message_id, id_text(m.id()));
    set(out.correlation_id, id_text(m.correlation_id()));
    set(out.user_id, m.user());
    set(out.to, m.to());
    set(out.content_type, m.content_type());
    set(out.content_encoding, m.content_encoding());
    if (const auto ms = m.expiry_time().milliseconds(); ms > 0) out.expiry_time_utc = iso8601_ms(ms);
    if (const auto ms = m.creation_time().milliseconds(); ms > 0) out.creation_time_utc = iso8601_ms(ms);

    if (!m.properties().empty()) {
      std::vector<std::pair<std::string, proton::scalar>> props;
      proton::get(m.properties().value(), props);
      for (auto& [key, v] : props) {
        // IoT Hub's own names travel as application properties over AMQP.
        if (key == "iothub-outputname") {
          set(out.output_name, scalar_text(v));
        } else if (key == "iothub-creation-time-utc") {
          set(out.creation_time_utc, scalar_text(v));
        } else {
          out.properties.emplace_back(std::move(key), to_value(v));
        }
      }
    }
    out.interface_id = annotation(m, "iothub-interface-id");
    out.component = annotation(m, "dt-subject");
    return out;
  } catch (const proton::error& e) {
    return bad_message(std::string("The message does not decode: ") + e.what());
  }
}

std::optional<std::string> devicebound_device(std::string_view to) {
  if (!to.starts_with('/')) return std::nullopt;
  auto s = text::split(to.substr(1), '/');
  if (s.size() != 4 || !text::iequals(s[0], "devices") || !text::iequals(s[2], "messages") ||
      !text::iequals(s[3], "devicebound"))
    return std::nullopt;
  // The SDK encodes the id (encodeURIComponent): "dev%201" is the device "dev 1".
  auto id = text::url_decode(s[1]);
  if (!id || id->empty()) return std::nullopt;
  return id;
}

result<c2d_request> to_c2d(const proton::message& m) {
  try {
    c2d_request out;
    const std::string to = m.to();
    auto device = devicebound_device(to);
    if (!device) {
      return bad_message(to.empty() ? std::string("The message has no 'to' address: set it to /devices/<deviceId>/messages/devicebound")
                                    : "The 'to' address '" + to + "' is not /devices/<deviceId>/messages/devicebound");
    }
    out.device_id = std::move(*device);
    c2d::outgoing& o = out.message;
    auto body = body_of(m);
    if (!body) return body.error();
    o.body = std::move(*body);
    o.message_id = id_text(m.id());
    o.correlation_id = id_text(m.correlation_id());
    o.user_id = m.user();
    o.content_type = m.content_type();
    o.content_encoding = m.content_encoding();
    if (const auto ms = m.expiry_time().milliseconds(); ms > 0) o.expiry = sys_time{std::chrono::milliseconds(ms)};
    if (!m.properties().empty()) {
      std::vector<std::pair<std::string, proton::scalar>> props;
      proton::get(m.properties().value(), props);
      for (auto& [key, v] : props) {
        if (key == "iothub-ack") {
          const std::string text = scalar_text(v);
          const auto ack = c2d::parse_ack(text);
          if (!ack) return bad_message("Unknown iothub-ack '" + text + "': use none, positive, negative or full");
          o.ack = *ack;
        } else {
          o.properties.emplace_back(std::move(key), scalar_text(v));
        }
      }
    }
    return out;
  } catch (const proton::error& e) {
    return bad_message(std::string("The message does not decode: ") + e.what());
  }
}

proton::message c2d_message(const c2d::delivery& d) {
  const c2d::outgoing& o = d.msg;
  proton::message m;
  m.body(proton::binary(o.body.begin(), o.body.end()));
  m.inferred(true);  // a Data section: the SDK reads body.content
  if (!o.message_id.empty()) m.id(proton::message_id(o.message_id));
  m.to(d.to);
  if (!o.correlation_id.empty()) m.correlation_id(proton::message_id(o.correlation_id));
  if (o.expiry) m.expiry_time(timestamp_of(*o.expiry));
  if (!o.content_type.empty()) m.content_type(o.content_type);
  if (!o.content_encoding.empty()) m.content_encoding(o.content_encoding);
  if (!o.user_id.empty()) m.user(o.user_id);
  if (o.ack != c2d::ack_mode::none) m.properties().put("iothub-ack", std::string(c2d::to_string(o.ack)));
  for (const auto& [key, value] : o.properties) m.properties().put(key, value);
  m.delivery_count(d.delivery_count);
  auto& ann = m.message_annotations();
  ann.put(proton::symbol("x-opt-sequence-number"), proton::value(static_cast<std::uint64_t>(d.sequence_number)));
  ann.put(proton::symbol("x-opt-enqueued-time"), proton::value(timestamp_of(d.enqueued_time)));
  ann.put(proton::symbol("iothub-enqueuedtime"), proton::value(timestamp_of(d.enqueued_time)));
  ann.put(proton::symbol("iothub-deliverycount"),
          proton::value(static_cast<std::uint8_t>(std::min<std::uint32_t>(d.delivery_count, 255))));
  ann.put(proton::symbol("x-opt-lock-token"), proton::value(d.lock_token));
  return m;
}

proton::message feedback_message(const c2d::feedback_batch& b, const std::string& hub_name) {
  const std::string json = c2d::feedback_json(b);
  proton::message m;
  m.body(proton::binary(json.begin(), json.end()));
  m.inferred(true);  // a Data section: the SDK reads body.content
  m.id(proton::message_id(proton::uuid::random()));
  m.content_type(std::string(c2d::feedback_content_type));
  m.user(hub_name);
  return m;
}

twin_request read_twin_request(const proton::message& m) {
  twin_request r;
  try {
    r.correlation_id = m.correlation_id();
    r.operation = annotation(m, "operation").value_or("");
    r.resource = annotation(m, "resource").value_or("");
    auto body = body_of(m);
    if (body) r.body = std::move(*body);
  } catch (const proton::error&) {
    // Annotations that do not decode: answered as an unknown operation.
    r.operation.clear();
  }
  constexpr std::string_view desired = "/notifications/twin/properties/desired";
  if (r.operation == "GET") {
    r.op = twin_operation::get;
  } else if (r.operation == "PATCH" && r.resource == "/properties/reported") {
    r.op = twin_operation::patch_reported;
  } else if (r.operation == "PUT" && r.resource == desired) {
    r.op = twin_operation::subscribe_desired;
  } else if (r.operation == "DELETE" && r.resource == desired) {
    r.op = twin_operation::unsubscribe_desired;
  }
  return r;
}

twin_answer twin_error(const error& e, sys_time now) {
  twin_answer a;
  a.status = error_number(e.code) / 1000;
  boost::json::object body{
      {"errorCode", error_number(e.code)},
      {"trackingId", crypto::uuid_v4()},
      {"message", e.message},
      {"timestampUtc", to_iso8601(now)},
  };
  a.body = json::serialize(body);
  return a;
}

proton::message twin_response(const proton::message_id& correlation_id, const twin_answer& a) {
  proton::message m;
  m.correlation_id(correlation_id);
  auto& ann = m.message_annotations();
  ann.put(proton::symbol("status"), proton::value(static_cast<std::int32_t>(a.status)));
  if (a.version) ann.put(proton::symbol("version"), proton::value(static_cast<std::int64_t>(*a.version)));
  if (!a.body.empty()) set_data_body(m, a.body);
  return m;
}

proton::message desired_message(const std::string& patch_json) {
  proton::message m;
  set_data_body(m, patch_json);
  return m;
}

proton::message method_request(const messaging::method_call& call) {
  proton::message m;
  if (auto u = parse_uuid(call.request_id)) {
    m.correlation_id(proton::message_id(*u));
  } else {
    m.correlation_id(proton::message_id(call.request_id));
  }
  m.properties().put("IoThub-methodname", call.name);
  set_data_body(m, call.payload);
  return m;
}

result<method_response> read_method_response(const proton::message& m) {
  try {
    method_response r;
    r.request_id = id_text(m.correlation_id());
    if (r.request_id.empty()) return bad_message("The method response has no correlation-id");
    const auto& props = m.properties();
    if (!props.exists("IoThub-status")) return bad_message("The method response has no IoThub-status");
    const proton::scalar status = props.get("IoThub-status");
    const proton::type_id t = status.type();
    if (!proton::type_id_is_signed_int(t) && !proton::type_id_is_unsigned_int(t))
      return bad_message("IoThub-status must be an integer");
    const auto v = proton::coerce<std::int64_t>(status);
    if (v < std::numeric_limits<std::int32_t>::min() || v > std::numeric_limits<std::int32_t>::max())
      return bad_message("IoThub-status is out of range");
    r.status = static_cast<int>(v);
    auto body = body_of(m);
    if (!body) return body.error();
    r.payload = std::move(*body);
    return r;
  } catch (const proton::error& e) {
    return bad_message(std::string("The message does not decode: ") + e.what());
  }
}

std::string hub_name_of(std::string_view host_name) {
  const bool ip = host_name.find_first_not_of("0123456789.") == std::string_view::npos ||
                  host_name.find(':') != std::string_view::npos;
  return text::to_lower(ip ? host_name : host_name.substr(0, host_name.find('.')));
}

}  // namespace hub::amqp_head
