#include "base/error.hpp"

#include <stdexcept>

namespace hub {

std::string_view error_name(errc e) noexcept {
  switch (e) {
    case errc::ok: return "Ok";
    case errc::argument_invalid: return "ArgumentInvalid";
    case errc::argument_null: return "ArgumentNull";
    case errc::iothub_format_error: return "IotHubFormatError";
    case errc::invalid_operation: return "InvalidOperation";
    case errc::device_defined_multiple_times: return "DeviceDefinedMultipleTimes";
    case errc::bulk_registry_operation_failure: return "BulkRegistryOperationFailure";
    case errc::unauthorized: return "IotHubUnauthorizedAccess";
    case errc::quota_exceeded: return "IotHubQuotaExceeded";
    case errc::device_max_queue_depth_exceeded: return "DeviceMaximumQueueDepthExceeded";
    case errc::device_not_found: return "DeviceNotFound";
    case errc::module_not_found: return "ModuleNotFound";
    case errc::not_found: return "NotFound";
    case errc::device_not_online: return "DeviceNotOnline";
    case errc::method_not_allowed: return "MethodNotAllowed";
    case errc::device_already_exists: return "DeviceAlreadyExists";
    case errc::module_already_exists: return "ModuleAlreadyExistsOnDevice";
    case errc::precondition_failed: return "PreconditionFailed";
    case errc::device_message_lock_lost: return "DeviceMessageLockLost";
    case errc::message_too_large: return "MessageTooLarge";
    case errc::too_many_devices: return "TooManyDevices";
    case errc::throttled: return "ThrottlingException";
    case errc::server_error: return "ServerError";
    case errc::service_unavailable: return "ServiceUnavailable";
    case errc::gateway_timeout: return "GatewayTimeout";
  }
  return "Unknown";
}

int error_number(errc e) noexcept {
  switch (e) {
    case errc::ok: return 0;
    case errc::argument_invalid: return 400004;
    case errc::argument_null: return 400005;
    case errc::iothub_format_error: return 400006;
    case errc::invalid_operation: return 400003;
    case errc::device_defined_multiple_times: return 400011;
    case errc::bulk_registry_operation_failure: return 400013;
    case errc::unauthorized: return 401002;
    case errc::quota_exceeded: return 403002;
    case errc::device_max_queue_depth_exceeded: return 403004;
    case errc::device_not_found: return 404001;
    case errc::module_not_found: return 404010;
    case errc::not_found: return 404000;
    case errc::device_not_online: return 404103;
    case errc::method_not_allowed: return 405000;
    case errc::device_already_exists: return 409001;
    case errc::module_already_exists: return 409301;
    case errc::precondition_failed: return 412001;
    case errc::device_message_lock_lost: return 412002;
    case errc::message_too_large: return 413001;
    case errc::too_many_devices: return 413002;
    case errc::throttled: return 429001;
    case errc::server_error: return 500001;
    case errc::service_unavailable: return 503001;
    case errc::gateway_timeout: return 504101;
  }
  return 500000;
}

namespace {
class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "hub"; }
  std::string message(int ev) const override { return std::string(error_name(static_cast<errc>(ev))); }
};
}  // namespace

const boost::system::error_category& hub_category() noexcept {
  static const category c;
  return c;
}

boost::system::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), hub_category()}; }

void throw_exception_from_error(const error& e, const boost::source_location&) {
  throw std::runtime_error(std::string(error_name(e.code)) + ": " + e.message);
}

}  // namespace hub
