#pragma once
// What a route condition reads from a message (protocol/semantics.md §2.3), as a query::resolver:
//   bare names        application properties, case-insensitively, values as strings
//   $contentType ...  system properties ($contentType, $contentEncoding, $connectionDeviceId,
//                     $connectionModuleId, $enqueuedTime, $messageId, $userId, $correlationId,
//                     $dt-dataschema, $dt-subject); a `$name` that is not one of them, or is not
//                     set on the message, is looked up among the application properties
//   $body.a.b[0]      the body, only when $contentType is application/json and $contentEncoding
//                     utf-8, utf-16 or utf-32; parsed once, the first time a condition needs it
//   $twin.tags.x ...  the sending identity's twin (a module's own for module messages), fetched
//                     once per message, the first time a condition or an enrichment needs it
// Paths are classified once, when a condition compiles (bind()); evaluation only switches on the
// class. One message_view per message and thread.
#include "domain/query/expression.hpp"
#include "domain/telemetry/message.hpp"

#include <boost/json/object.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace hub::routing {

namespace bj = boost::json;

// The twin document of an identity as GET /twins returns it; nullopt when there is none (the
// identity is gone, storage failed).
using twin_source = std::function<std::optional<bj::object>(std::string_view device_id, std::string_view module_id)>;

// The path classes bind() assigns (query::path::binding).
namespace slot {
inline constexpr std::int32_t app_property = 0;
inline constexpr std::int32_t system_first = 1;  // system_first + index into the system names
inline constexpr std::int32_t dollar_app_property = 100;  // `$name` that is no system property
inline constexpr std::int32_t body = 200;
inline constexpr std::int32_t twin = 300;
inline constexpr std::int32_t undefined = 400;  // `$body` alone, `$twin` alone, `$messageId.x`
}  // namespace slot

// query::options::bind for route conditions.
result<std::int32_t> bind(const query::path& p);
// Whether a compiled condition reads the twin / the body.
bool reads_twin(const query::expression& e) noexcept;

// The body as JSON when the message's content type and encoding allow it (UTF-16 and UTF-32
// transcoded); nullopt otherwise or when it does not parse.
std::optional<bj::value> body_json(const telemetry::message& m);
// Whether the content type is application/json and the encoding one IoT Hub routes on
// (`utf8_only`: only UTF-8, as the storage endpoint's JSON encoding needs).
bool json_body(const telemetry::message& m, bool utf8_only = false) noexcept;

class message_view final : public query::resolver {
 public:
  // `enqueued_time`: ISO 8601 (what $enqueuedTime compares against); `twins` may be null (no
  // twin: $twin paths are undefined).
  message_view(const telemetry::message& m, std::string enqueued_time, const twin_source* twins);

  query::value resolve(const query::path& p) const override;

  const telemetry::message& message() const noexcept { return m_; }
  // The identity's twin, fetched the first time it is asked for; null when there is none.
  const bj::object* twin() const;
  const std::string& enqueued_time() const noexcept { return enqueued_time_; }

 private:
  query::value app_property(std::string_view name) const;
  const bj::value* body() const;

  const telemetry::message& m_;
  std::string enqueued_time_;
  const twin_source* twins_;
  mutable bool body_parsed_ = false;
  mutable std::optional<bj::value> body_;
  mutable bool twin_fetched_ = false;
  mutable std::optional<bj::object> twin_;
};

}  // namespace hub::routing
