#pragma once
// The Event Hubs-compatible built-in endpoint as @azure/event-hubs uses it (protocol/service.md
// §7): partition addresses, the selector filter that gives a receiver its start position, the
// $management READ requests and replies, and a stored telemetry message as an Event Hubs event.
// Proton types, no Asio; unit-tested.
#include "base/error.hpp"
#include "storage/event_log.hpp"

#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/symbol.hpp>
#include <proton/value.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::amqp_head {

// "<entity>/ConsumerGroups/<group>/Partitions/<p>" (no leading slash; case-insensitive names).
struct partition_address {
  std::string entity;
  std::string consumer_group;
  std::uint32_t partition = 0;
};
std::optional<partition_address> parse_partition_address(std::string_view address);

// Where a partition receiver starts, from its "apache.org:selector-filter:string" filter:
//   amqp.annotation.x-opt-offset > '-1'            start of the partition
//   amqp.annotation.x-opt-offset > '@latest'       only events enqueued from now on
//   amqp.annotation.x-opt-offset >[=] '<offset>'
//   amqp.annotation.x-opt-sequence-number >[=] '<n>'
//   amqp.annotation.x-opt-enqueued-time >[=] '<ms since the epoch>'
struct event_position {
  enum class kind { start, latest, offset, sequence, enqueued_time };
  kind what = kind::latest;
  std::int64_t value = 0;
  bool inclusive = false;
};
std::optional<event_position> parse_selector(std::string_view expression);

// The position a receiver's attach asks for: its selector filter, or the end of the partition
// when it has none (the SDK's default is "latest"). Nothing when the filter is there but
// unreadable.
std::optional<event_position> position_from_filters(const std::map<proton::symbol, proton::value>& filters);

// The first sequence number to deliver for `pos` in `partition` of `log`. Reads segment files
// for offsets and times: call it off the I/O threads.
std::int64_t resolve_position(const storage::event_log& log, std::uint32_t partition, const event_position& pos);

// A $management request (operation READ, type com.microsoft:eventhub or com.microsoft:partition).
struct management_request {
  proton::message_id id;
  std::string reply_to;
  std::string operation;
  std::string type;
  std::string name;       // the entity
  std::string partition;  // type partition only
};
management_request read_management_request(const proton::message& m);

// The replies: correlation-id = the request's id, status-code 200 and an AMQP-value map body.
proton::message eventhub_info_reply(const management_request& r, std::uint32_t partitions, std::int64_t created_ms);
proton::message partition_info_reply(const management_request& r, const storage::partition_stats& st);
// An error reply: status-code `status`, status-description, no body.
proton::message management_error_reply(const management_request& r, int status, const std::string& description);

// A stored record (telemetry::encode) as the event the Event Hubs client reads (§7.5): Data
// body; x-opt-sequence-number, x-opt-offset, x-opt-enqueued-time and IoT Hub's system
// properties (iothub-connection-device-id, ...) as message annotations; message-id,
// correlation-id, content-type, ... as properties; application properties with their types.
// Nothing when the record does not decode.
std::optional<proton::message> event_message(const storage::log_record& record);

}  // namespace hub::amqp_head
