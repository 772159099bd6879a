// The device API of IoT Hub over HTTPS (protocol/device.md §5), as azure-iot-device-http and the
// other SDKs' HTTP transports call it, plus the service's "purge command queue":
//
//   POST   /devices/{id}/messages/events                      telemetry, one message or a batch
//   POST   /devices/{id}/modules/{mid}/messages/events        the same for a module
//   GET    /devices/{id}/messages/devicebound                 C2D receive: 200 + message, 204 empty
//   DELETE /devices/{id}/messages/devicebound/{lock}          complete (reject with ?reject)
//   POST   /devices/{id}/messages/devicebound/{lock}/abandon  abandon
//   DELETE /devices/{id}/commands                             purge the device's C2D queue (service)
//
// The router has authenticated the caller as {id} / {mid} before any device handler runs.
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "domain/c2d/service.hpp"
#include "domain/telemetry/service.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <array>
#include <cctype>
#include <chrono>
#include <memory>
#include <mutex>

namespace hub::http::detail {
namespace {

namespace bj = boost::json;
using namespace std::chrono_literals;

// IoT Hub's limits for a D2C batch over HTTPS (semantics.md §5.1): 256 KB for the whole batch, as
// telemetry::billed_size counts it, and at most 500 messages.
constexpr std::size_t max_batch_bytes = 256 * 1024;
constexpr std::size_t max_batch_messages = 500;
// How long a request waits for its messages to be durable before answering 503 (which the SDKs
// retry). Far beyond any sane fdatasync; it only keeps a stalled disk from holding a route thread
// forever.

constexpr std::string_view batch_content_type = "application/vnd.microsoft.iothub.json";
constexpr std::string_view app_prefix = "iothub-app-";

const std::shared_ptr<spdlog::logger>& logger() {
  static const auto l = log::get("http");
  return l;
}

response unavailable(std::string_view what, const clock& clk) {
  return error_of(errc::service_unavailable, fmt::format("{} is not available on this hub", what), clk);
}

// ---- telemetry ---------------------------------------------------------------------------------

// The system properties a device sets, by the header (or batch property) names the SDKs use:
// Node sends IoTHub-MessageId... (any case), .NET iothub-messageid..., Java iothub-creation-time-utc.
struct system_name {
  std::string_view name;
  std::optional<std::string> telemetry::message::*field;
};
constexpr std::array system_names{
    system_name{"iothub-messageid", &telemetry::message::message_id},
    system_name{"iothub-correlationid", &telemetry::message::correlation_id},
    system_name{"iothub-userid", &telemetry::message::user_id},
    system_name{"iothub-to", &telemetry::message::to},
    system_name{"iothub-expiry", &telemetry::message::expiry_time_utc},
    system_name{"iothub-contenttype", &telemetry::message::content_type},
    system_name{"iothub-contentencoding", &telemetry::message::content_encoding},
    system_name{"iothub-interface-id", &telemetry::message::interface_id},
    system_name{"dt-subject", &telemetry::message::component},
    system_name{"iothub-creation-time-utc", &telemetry::message::creation_time_utc},
    system_name{"iothub-creationtimeutc", &telemetry::message::creation_time_utc},
};

// Applies one header (or batch property) to the message: iothub-app-<k> is the application
// property <k>; the system names above set their field (a later occurrence wins: Node sends
// iothub-to with the path first, then IoTHub-To when the app set `to`); IoTHub-Ack stays an
// application property "iothub-ack", as the AMQP transport carries it. Anything else (User-Agent,
// Host, iothub-operation...) is not part of the message.
void apply_property(telemetry::message& m, std::string_view name, std::string value) {
  if (text::istarts_with(name, app_prefix)) {
    const std::string_view key = name.substr(app_prefix.size());
    if (key.empty()) return;
    // Node writes a user property iothub-creation-time-utc as iothub-app-iothub-creation-time-utc;
    // over AMQP and MQTT it is the creation time, so it is here too.
    if (text::iequals(key, "iothub-creation-time-utc")) {
      m.creation_time_utc = std::move(value);
      return;
    }
    m.properties.emplace_back(std::string(key), std::move(value));
    return;
  }
  for (const auto& s : system_names) {
    if (text::iequals(name, s.name)) {
      m.*(s.field) = std::move(value);
      return;
    }
  }
  if (text::iequals(name, "iothub-ack")) m.properties.emplace_back("iothub-ack", std::move(value));
}

// The identity and connection facts IoT Hub stamps on every message (anti-spoofing: never the
// device's word).
void stamp(telemetry::message& m, const route_context& ctx) {
  m.device_id = std::string(ctx.device_id);
  m.module_id = std::string(ctx.module_id);
  m.generation_id = ctx.caller->generation_id;
  m.auth = ctx.caller->method;
}

// Counts a request's appends down and answers once all are durable: 204, or the first failure.
// Shared with the log's callbacks, which run on its writer threads; no thread waits meanwhile.
class durable_answer {
 public:
  durable_answer(std::size_t n, responder done, const clock& clk) : pending_(n), done_(std::move(done)), clock_(clk) {}

  void completed(const result<storage::log_position>& r) {
    std::optional<error> failure;
    {
      std::lock_guard lock(mutex_);
      if (!r && !failure_) failure_ = r.error();
      if (--pending_ != 0) return;
      failure = failure_;
    }
    done_(failure ? error_response(*failure, clock_) : no_content());
  }

 private:
  std::mutex mutex_;
  std::size_t pending_;
  std::optional<error> failure_;
  responder done_;
  const clock& clock_;
};

// Appends every message to the durable log; the device gets its 204 only once all are on disk
// (DESIGN.md "acknowledged means durable"). The messages of one device share one partition, so a
// batch lands in order. A failure part-way may leave some of a batch stored: the device retries
// and IoT Hub's delivery is at-least-once anyway.
void store(telemetry::service& svc, std::vector<telemetry::message> messages, responder done, const clock& clk) {
  auto answer = std::make_shared<durable_answer>(messages.size(), std::move(done), clk);
  for (const auto& m : messages) {
    svc.send(m, [answer](result<storage::log_position> r) { answer->completed(r); });
  }
}

bool is_batch(const request& req) {
  const auto type = req.header("Content-Type");
  return type && text::istarts_with(text::trim(*type), batch_content_type);
}

// A batch property's value as text: the SDKs send strings; numbers and booleans are taken as
// their JSON text. nullopt for null, arrays and objects.
std::optional<std::string> property_text(const bj::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  if (v.is_bool()) return v.get_bool() ? "true" : "false";
  if (v.is_number()) return json::serialize(v);
  return std::nullopt;
}

// The batch body: [{"body":"<base64>","base64Encoded":true,"properties":{"iothub-app-k":"v",
// "iothub-messageid":"..."}}, ...]. Node omits base64Encoded (its bodies are always base64) and
// sends application properties only; .NET omits it too ("the default is true") and adds the
// system properties under their header names. base64Encoded false: the body is the text itself.
result<std::vector<telemetry::message>> parse_batch(std::string_view body, const route_context& ctx) {
  auto parsed = json::parse(body);
  if (!parsed) return parsed.error();
  const auto format_error = [](std::string text) { return make_error(errc::iothub_format_error, std::move(text)); };
  if (!parsed->is_array()) return format_error("A message batch must be a JSON array of messages");
  const bj::array& items = parsed->get_array();
  if (items.size() > max_batch_messages) {
    return make_error(errc::argument_invalid,
                      fmt::format("A batch holds at most {} messages; this one has {}", max_batch_messages, items.size()));
  }
  std::vector<telemetry::message> out;
  out.reserve(items.size());
  std::size_t total = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_object()) return format_error(fmt::format("Batch item {} is not a JSON object", i));
    const bj::object& item = items[i].get_object();
    const auto text = json::get_string(item, "body");
    if (!text) return format_error(fmt::format("Batch item {} has no \"body\" string", i));
    telemetry::message m;
    if (json::get_bool(item, "base64Encoded").value_or(true)) {
      auto bytes = crypto::base64_decode(*text);
      if (!bytes) return format_error(fmt::format("The body of batch item {} is not valid base64", i));
      m.body = std::move(*bytes);
    } else {
      m.body = *text;
    }
    if (const bj::value* props = json::find(item, "properties"); props != nullptr && !props->is_null()) {
      if (!props->is_object()) return format_error(fmt::format("The properties of batch item {} are not an object", i));
      for (const auto& [key, value] : props->get_object()) {
        auto v = property_text(value);
        if (!v) return format_error(fmt::format("Property '{}' of batch item {} is not a string", key, i));
        apply_property(m, key, std::move(*v));
      }
    }
    stamp(m, ctx);
    total += telemetry::billed_size(m);
    if (total > max_batch_bytes) {
      return make_error(errc::message_too_large,
                        fmt::format("The batch exceeds the maximum of {} bytes for all its messages", max_batch_bytes));
    }
    out.push_back(std::move(m));
  }
  return out;
}

// Asynchronous: the answer comes from the log's writer once the messages are durable, so a
// request waiting for its group commit holds no route-pool thread.
void send_event(const route_context& ctx, responder done) {
  if (ctx.svc.telemetry == nullptr) return done(unavailable("Telemetry", ctx.svc.clk));
  std::vector<telemetry::message> messages;
  if (is_batch(ctx.req)) {
    auto batch = parse_batch(ctx.req.body, ctx);
    if (!batch) return done(error_response(batch.error(), ctx.svc.clk));
    messages = std::move(*batch);
    if (messages.empty()) return done(no_content());  // nothing to store, nothing wrong
  } else {
    telemetry::message m;
    m.body = ctx.req.body;
    for (const auto& [name, value] : ctx.req.headers) apply_property(m, name, value);
    stamp(m, ctx);
    messages.push_back(std::move(m));
  }
  // A single message over 256 KB is refused by telemetry::service (MessageTooLarge, 413).
  store(*ctx.svc.telemetry, std::move(messages), std::move(done), ctx.svc.clk);
}

// ---- cloud-to-device ---------------------------------------------------------------------------

// HTTP field names are tokens (RFC 9110 §5.6.2).
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (const unsigned char c : s) {
    const bool ok = std::isalnum(c) != 0 || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                                                std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// A field value must not carry CR, LF or other control characters: they would split or forge
// the response. IoT Hub refuses such property text when the message is sent, so this is defence.
bool is_field_value(std::string_view s) {
  for (const unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

// The C2D message as azure-iot-http-base's toMessage() and the .NET HttpTransportHandler read it:
// ETag "<lockToken>" (quoted: Node strips the first and last characters), iothub-messageid, -to,
// -expiry, -correlationid, -userid, -ack, -sequencenumber, -enqueuedtime, -deliverycount, and
// iothub-app-<k> per application property. Like IoT Hub (a capture in azure-iot-cli-extension's
// tests), the id headers are sent even when empty; ContentType / ContentEncoding are IoT Hub's
// names for the message's content type and encoding (the CLI reads them). Times are ISO 8601 UTC
// (IoT Hub writes .NET's "12/22/2017 12:14:12 AM"; both SDKs take any parseable text).
response c2d_message(const c2d::delivery& d) {
  response r;
  r.status = 200;
  auto& h = r.headers;
  const auto put = [&h, &d](std::string name, std::string value) {
    if (!is_field_value(value)) {
      logger()->warn("C2D message {} to '{}': header {} not sent (control characters in its value)",
                     d.sequence_number, d.device_id, name);
      return;
    }
    h.emplace_back(std::move(name), std::move(value));
  };
  put("ETag", fmt::format("\"{}\"", d.lock_token));
  put("iothub-messageid", d.msg.message_id);
  put("iothub-correlationid", d.msg.correlation_id);
  put("iothub-userid", d.msg.user_id);
  put("iothub-to", d.to);
  put("iothub-expiry", d.msg.expiry ? to_iso8601(*d.msg.expiry) : std::string{});
  put("iothub-ack", std::string(c2d::to_string(d.msg.ack)));
  put("iothub-sequencenumber", std::to_string(d.sequence_number));
  put("iothub-enqueuedtime", to_iso8601(d.enqueued_time));
  put("iothub-deliverycount", std::to_string(d.delivery_count));
  if (!d.msg.content_type.empty()) put("ContentType", d.msg.content_type);
  if (!d.msg.content_encoding.empty()) put("ContentEncoding", d.msg.content_encoding);
  for (const auto& [key, value] : d.msg.properties) {
    std::string name = std::string(app_prefix) + key;
    if (!is_token(name)) {
      logger()->warn("C2D message {} to '{}': property not sent (its name is not an HTTP token)", d.sequence_number,
                     d.device_id);
      continue;
    }
    put(std::move(name), value);
  }
  r.body = d.msg.body;
  return r;
}

response receive_c2d(const route_context& ctx) {
  if (ctx.svc.c2d == nullptr) return unavailable("Cloud-to-device messaging", ctx.svc.clk);
  auto got = ctx.svc.c2d->receive(ctx.device_id, 1);
  if (got.empty()) return no_content();
  return c2d_message(got.front());
}

// If-Match carries the lock token, unquoted from Node, maybe quoted from others; "*" or absent
// accepts any. A different token is a failed precondition.
std::optional<response> check_if_match(const route_context& ctx) {
  const auto given = ctx.req.header("If-Match");
  if (!given) return std::nullopt;
  std::string_view v = text::trim(*given);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty() || v == "*" || v == ctx.name) return std::nullopt;
  return error_of(errc::precondition_failed, "If-Match does not name the lock token of the request path", ctx.svc.clk);
}

response settled(const result<void>& r, const clock& clk) {
  if (!r) return error_response(r.error(), clk);
  return no_content();
}

// DELETE …/devicebound/{lock}: complete; with the query flag "reject" (Node sends a bare
// "&reject", .NET the same, Python "reject="), reject.
response complete_or_reject_c2d(const route_context& ctx) {
  if (ctx.svc.c2d == nullptr) return unavailable("Cloud-to-device messaging", ctx.svc.clk);
  if (auto refused = check_if_match(ctx)) return std::move(*refused);
  const auto reject = ctx.query_value("reject");
  if (reject && !text::iequals(*reject, "false")) return settled(ctx.svc.c2d->reject(ctx.device_id, ctx.name), ctx.svc.clk);
  return settled(ctx.svc.c2d->complete(ctx.device_id, ctx.name), ctx.svc.clk);
}

response abandon_c2d(const route_context& ctx) {
  if (ctx.svc.c2d == nullptr) return unavailable("Cloud-to-device messaging", ctx.svc.clk);
  if (auto refused = check_if_match(ctx)) return std::move(*refused);
  return settled(ctx.svc.c2d->abandon(ctx.device_id, ctx.name), ctx.svc.clk);
}

// The service's "Purge Command Queue" (autorest CloudToDeviceMessages.purgeCloudToDeviceMessageQueue):
// 200 {"totalMessagesPurged":n,"deviceId":"<id>"}.
response purge_c2d(const route_context& ctx) {
  if (ctx.svc.c2d == nullptr) return unavailable("Cloud-to-device messaging", ctx.svc.clk);
  auto n = ctx.svc.c2d->purge(ctx.device_id);
  if (!n) return error_response(n.error(), ctx.svc.clk);
  bj::object body;
  body["totalMessagesPurged"] = static_cast<std::uint64_t>(*n);
  body["deviceId"] = ctx.device_id;
  return json_response(200, body);
}

constexpr auto device_connect = auth::permission::device_connect;
constexpr auto service_connect = auth::permission::service_connect;

const route table[] = {
    {"POST", "devices/{id}/messages/events", device_connect, nullptr, send_event},
    {"POST", "devices/{id}/modules/{mid}/messages/events", device_connect, nullptr, send_event},
    {"GET", "devices/{id}/messages/devicebound", device_connect, receive_c2d},
    {"DELETE", "devices/{id}/messages/devicebound/{name}", device_connect, complete_or_reject_c2d},
    {"POST", "devices/{id}/messages/devicebound/{name}/abandon", device_connect, abandon_c2d},
    {"DELETE", "devices/{id}/commands", service_connect, purge_c2d},
};

}  // namespace

std::span<const route> device_routes() { return table; }

}  // namespace hub::http::detail
