#pragma once
// The one error vocabulary of hubd. Each protocol head maps errc to its wire form with an
// exhaustive switch (no default:, built with -Werror=switch), so a new code breaks the build
// exactly where it must be handled.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <string>
#include <string_view>

namespace hub {

enum class errc {
  ok = 0,
  argument_invalid,            // 400004 ArgumentInvalid
  argument_null,               // 400005 ArgumentNull
  iothub_format_error,         // 400006 IotHubFormatError (malformed JSON, bad body)
  invalid_operation,           // 400003 InvalidOperation
  device_defined_multiple_times,  // 400011
  bulk_registry_operation_failure,  // 400013
  unauthorized,                // 401002 IotHubUnauthorizedAccess
  quota_exceeded,              // 403002 IotHubQuotaExceeded
  device_max_queue_depth_exceeded,  // 403004
  device_not_found,            // 404001 DeviceNotFound
  module_not_found,            // 404010 ModuleNotFound
  not_found,                   // 404000 generic (unknown route, unknown policy)
  device_not_online,           // 404103 DeviceNotOnline
  method_not_allowed,          // 405000
  device_already_exists,       // 409001 DeviceAlreadyExists
  module_already_exists,       // 409301 ModuleAlreadyExistsOnDevice
  precondition_failed,         // 412001 PreconditionFailed
  device_message_lock_lost,    // 412002 DeviceMessageLockLost
  message_too_large,           // 413001 MessageTooLarge
  too_many_devices,            // 413002 TooManyDevices
  throttled,                   // 429001 ThrottlingException
  server_error,                // 500001 ServerError
  service_unavailable,         // 503001 ServiceUnavailable
  gateway_timeout,             // 504101 GatewayTimeout
};

// IoT Hub's name for the code, as it appears in "ErrorCode:<name>;..." and iothub-errorcode.
std::string_view error_name(errc e) noexcept;
// IoT Hub's six-digit numeric code (HTTP status * 1000 + detail).
int error_number(errc e) noexcept;

const boost::system::error_category& hub_category() noexcept;
boost::system::error_code make_error_code(errc e) noexcept;

// An error as hubd returns it: the code plus a human-readable text that may reach the client.
// The text never contains keys, signatures or payloads.
struct error {
  errc code = errc::server_error;
  std::string message;
};

[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

template <class T>
using result = boost::system::result<T, error>;

inline error make_error(errc code, std::string message) { return error{code, std::move(message)}; }

}  // namespace hub

namespace boost::system {
template <>
struct is_error_code_enum<hub::errc> : std::true_type {};
}  // namespace boost::system
