#pragma once
// A device's twin request that needs the twins service (device.md §4.7): GET (the {desired,
// reported} view) and PATCH /properties/reported, answered as the twin receiver gets it. Blocks on
// storage: the session runs it on the blocking pool; tests call it directly. No Proton, no Asio.
#include "base/clock.hpp"
#include "domain/connections/connection_table.hpp"
#include "heads/amqp/messages.hpp"

#include <string>

namespace hub::twins {
class service;
}

namespace hub::amqp_head {

// GET: 200 with the view's JSON. PATCH: 204, no body, the reported section's new $version
// (IotHubFormatError 400 for a body that is not JSON; the service's ArgumentInvalid 400 for a
// patch it refuses). Errors carry IoT Hub's JSON body (twin_error). Other operations are not
// the service's: 400.
twin_answer answer_twin(twins::service& twins, const connections::identity& who, twin_operation op,
                        const std::string& body, sys_time now);

}  // namespace hub::amqp_head
