// errc -> HTTP, and IoT Hub's legacy error body.
//
// The body shape is the one the Node service SDK decodes (common-http/http.js parseErrorBody):
//   JSON.parse(body).Message.split(';') -> part[0].split(':')[1] is the code, part[1] the text,
// and it gives up (plain Error('Not found') on 404) unless both are non-empty. So the Message is
// always "ErrorCode:<Name>;<non-empty text>".
#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/text.hpp"
#include "heads/http/router.hpp"

#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <ctime>

namespace hub::http {

int http_status(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return 200;
    case errc::argument_invalid:
    case errc::argument_null:
    case errc::iothub_format_error:
    case errc::invalid_operation:
    case errc::device_defined_multiple_times:
    case errc::bulk_registry_operation_failure:
      return 400;
    case errc::unauthorized:
      return 401;
    case errc::quota_exceeded:
    case errc::device_max_queue_depth_exceeded:
      return 403;
    case errc::device_not_found:
    case errc::module_not_found:
    case errc::not_found:
    case errc::device_not_online:
      return 404;
    case errc::method_not_allowed:
      return 405;
    case errc::device_already_exists:
    case errc::module_already_exists:
      return 409;
    case errc::precondition_failed:
    case errc::device_message_lock_lost:
      return 412;
    case errc::message_too_large:
    case errc::too_many_devices:
      return 413;
    case errc::throttled:
      return 429;
    case errc::server_error:
      return 500;
    case errc::service_unavailable:
      return 503;
    case errc::gateway_timeout:
      return 504;
  }
  // Only reachable with a value outside the enum; -Werror=switch keeps the list above complete.
  return 500;
}

namespace {

// The text after "ErrorCode:<Name>;" is what SDK users read. It must be non-empty (else the
// SDK drops the code) and free of ';' (the SDK keeps only the piece before the next one). It may
// quote what the caller sent (a method, an id from the path), so it is made valid UTF-8: the
// body is JSON (found by fuzz_http).
std::string user_text(const error& e) {
  std::string text = e.message.empty() ? std::string(error_name(e.code)) : text::valid_utf8(e.message);
  for (auto& c : text) {
    if (c == ';') c = ',';
  }
  return text;
}

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xF]);
  }
  return out;
}

// "MM/DD/YYYY hh:mm:ss" in UTC, as IoT Hub stamps ExceptionMessage.
std::string hub_timestamp(sys_time t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:02}/{:02}/{:04} {:02}:{:02}:{:02}", tm.tm_mon + 1, tm.tm_mday, tm.tm_year + 1900, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

}  // namespace

response error_response(const error& e, const clock& clk) {
  const std::string_view name = error_name(e.code);
  boost::json::object body;
  body["Message"] = fmt::format("ErrorCode:{};{}", name, user_text(e));
  body["ExceptionMessage"] =
      fmt::format("Tracking ID:{}-G:0-TimeStamp:{}", hex(crypto::random_bytes(16)), hub_timestamp(clk.now()));
  response r;
  r.status = http_status(e.code);
  r.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  r.headers.emplace_back("iothub-errorcode", std::string(name));
  r.body = json::serialize(body);
  return r;
}

}  // namespace hub::http
