#include "heads/amqp/twin_requests.hpp"

#include "base/json.hpp"
#include "domain/twins/service.hpp"

namespace hub::amqp_head {

twin_answer answer_twin(twins::service& twins, const connections::identity& who, twin_operation op,
                        const std::string& body, sys_time now) {
  const twins::identity id{who.device_id, who.module_id};
  switch (op) {
    case twin_operation::get: {
      auto view = twins.device_view(id);
      if (!view) return twin_error(view.error(), now);
      return twin_answer{200, json::serialize(*view), std::nullopt};
    }
    case twin_operation::patch_reported: {
      auto patch = json::parse(body);
      if (!patch) return twin_error(patch.error(), now);
      auto version = twins.patch_reported(id, *patch);
      if (!version) return twin_error(version.error(), now);
      return twin_answer{204, {}, *version};
    }
    case twin_operation::subscribe_desired:
    case twin_operation::unsubscribe_desired:
    case twin_operation::unknown: break;
  }
  return twin_error(make_error(errc::argument_invalid, "Not a twin operation of the twins service"), now);
}

}  // namespace hub::amqp_head
