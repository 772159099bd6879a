#pragma once
// One AMQP connection as IoT Hub serves it, without sockets: the codec's driver plus IoT Hub's
// meaning of links and messages. CBS ($cbs put-token) grants per audience; device telemetry
// links (/devices/<d>[/modules/<m>]/messages/events) authorised by those grants; each message
// appended durably before it is accepted.
//
// The connection decides; its session executes. Calls take bytes, time and the answers to the
// work the connection asked for, and append new work to `out`:
//   check_token       -> run check_token() (blocking: on the pool), then token_checked()
//   append_telemetry  -> telemetry::service::send(), then telemetry_appended() once durable
//   attach_identity   -> connection_table::attach() (pool), then identity_attached()
//   detach_identity   -> connection_table::detach() (pool); no answer
//   read_events       -> resolve_position() + event_log::read() (pool), then events_ready()
//   wait_events       -> partition_watch::wait(), then partition_data() when new events are durable
//   partition_info    -> event_log::stats(), then partition_info_ready()
//   check_certificate -> certificates::service::authenticate_device() with the TLS client
//                        certificate (pool), then certificate_checked()
//   claim_partition   -> partition_watch::claim() (epoch rules), then partition_claimed(); a
//                        receiver displaced later is ended by partition_stolen()
//   release_partition -> partition_watch::release(); no answer
//   c2d_send          -> c2d::service::send() (pool), then c2d_sent() once durable
//   c2d_receive       -> c2d::service::receive() (pool), then c2d_received()
//   c2d_settle        -> complete / reject / abandon / unlock (pool); no answer
//   feedback_receive  -> feedback_watch::generation(), then c2d::service::receive_feedback()
//                        (pool), then feedback_received()
//   feedback_wait     -> feedback_watch::wait(), then feedback_available()
//   feedback_settle   -> complete_feedback / abandon_feedback (pool); no answer
//   twin              -> answer_twin() (twins::service, pool), then twin_answered()
//   methods_ready     -> the identity takes method calls here (or stops): device_link::invoke_method
//                        says so, and methods::service::ready() (pool) releases calls waiting for it
//   method_response   -> methods::service::respond() (pool); no answer
// Cloud-to-device (service.md §6.3-6.4, device.md §4.3-4.6): the service SDK's sender to
// /messages/devicebound queues each message (settled once durable); its feedback receiver gets
// locked batches of feedback records while it has credit; a device's devicebound receiver gets
// locked messages while it has credit, and its dispositions settle them. Locks held by a link
// that goes away (or by a connection that ends) are given back: release_locks().
// Twins (device.md §4.7): a device's twin sender and receiver (paired by their
// com.microsoft:channel-correlation-id); requests are answered on the receiver, with the request's
// correlation-id; PUT/DELETE of the desired notifications turn desired_properties() pushes on and
// off for that receiver. Requests that come while the identity's attach is running wait for it,
// so that a desired change after an answered PUT always finds this connection in the table.
// Direct methods (device.md §4.8): once an identity's methods receiver and sender are both
// attached (and the identity is), it takes calls: invoke_method() sends them on the receiver,
// and the device's answers on the sender go to methods::service::respond.
// X.509 devices put no token: when the client presented a certificate, a device link for an
// identity without a grant waits, unanswered, for the certificate check, as IoT Hub does.
// The Event Hubs-compatible endpoint (service.md §7) is served on the same connections: CBS
// audiences "sb://<host>/<entity>...", the $management node (READ of the event hub and its
// partitions) and partition receivers, which get the stored telemetry of their partition from
// the position their selector filter names, as far as their credit allows.
// An identity (device or module) is attached to the connection table while it has at least one
// device link open on this connection, as IoT Hub shows a device Connected.
// Every call, and every answer, happens on the connection's thread; the session carries answers
// back there. Lifecycle: one per accepted AMQP connection, owned by its session.
#include "base/clock.hpp"
#include "codec/amqp/driver.hpp"
#include "domain/c2d/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/registry/presence.hpp"
#include "domain/telemetry/message.hpp"
#include "heads/amqp/addresses.hpp"
#include "heads/amqp/event_hubs.hpp"
#include "heads/amqp/grants.hpp"
#include "heads/amqp/messages.hpp"
#include "heads/amqp/partition_watch.hpp"
#include "storage/event_log.hpp"

#include <proton/message_id.hpp>

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace hub::amqp_head {

struct check_token_work {
  std::uint64_t ticket = 0;
  audience aud;
  std::string token;
};
struct append_telemetry_work {
  std::uint64_t ticket = 0;
  telemetry::message message;
};
struct attach_identity_work {
  connections::identity who;
};
struct detach_identity_work {
  connections::identity who;
  std::string reason;
};
struct read_events_work {
  std::uint64_t ticket = 0;
  std::uint32_t partition = 0;
  std::uint32_t entity = 0;             // which event hub (connection_options::event_hub_entities)
  std::optional<event_position> start;  // the receiver's first read: where to start
  std::int64_t from_sequence = 0;       // later reads
  std::size_t max_records = 0;
};
struct wait_events_work {
  amqp::link_id link = 0;
  std::uint32_t partition = 0;
  std::int64_t next_sequence = 0;
  std::uint32_t entity = 0;
};
struct partition_info_work {
  std::uint64_t ticket = 0;
  std::uint32_t partition = 0;
  std::uint32_t entity = 0;
};
struct check_certificate_work {
  std::uint64_t ticket = 0;
  connections::identity who;
};
// An Event Hubs receiver asks to read `partition` for `consumer_group` (with its epoch, if any).
// It reads nothing until partition_claimed() says it may.
struct claim_partition_work {
  amqp::link_id link = 0;
  std::uint32_t partition = 0;
  std::string consumer_group;
  std::optional<std::int64_t> epoch;
  std::uint32_t entity = 0;
};
struct release_partition_work {
  amqp::link_id link = 0;
  std::uint32_t partition = 0;
  std::string consumer_group;
  std::uint32_t entity = 0;
};
// The service SDK sent a C2D message for `device_id`.
struct c2d_send_work {
  std::uint64_t ticket = 0;
  std::string device_id;
  c2d::outgoing message;
};
// A device's devicebound receiver (`link`) has credit: lock up to `max` of its messages.
struct c2d_receive_work {
  amqp::link_id link = 0;
  std::string device_id;
  std::size_t max = 0;
};
enum class c2d_action : std::uint8_t { complete, reject, abandon, unlock };
// A device settled a message (complete, reject, abandon), or the link that held its lock went
// away (unlock).
struct c2d_settle_work {
  c2d_action action = c2d_action::unlock;
  std::string device_id;
  std::string lock_token;
};
// The service's feedback receiver (`link`) has credit: lock a batch of feedback records.
struct feedback_receive_work {
  amqp::link_id link = 0;
};
// There was none: wait for feedback_watch news newer than `generation` (what the receive saw).
struct feedback_wait_work {
  amqp::link_id link = 0;
  std::uint64_t generation = 0;
};
// The service accepted (complete) or gave back (abandon) a batch, or its link went away (abandon).
struct feedback_settle_work {
  bool complete = false;
  std::string lock_token;
};
// A device's twin request for the twins service: GET, or PATCH of its reported properties.
struct twin_work {
  std::uint64_t ticket = 0;
  connections::identity who;
  twin_operation op = twin_operation::get;
  std::string body;  // PATCH: the JSON patch as the device sent it
};
// The identity starts (ready) or stops taking direct method calls on this connection.
struct methods_ready_work {
  connections::identity who;
  bool ready = false;
};
// A device answered the method call `request_id`.
struct method_response_work {
  connections::identity who;
  method_response response;
};
using work = std::variant<check_token_work, append_telemetry_work, attach_identity_work, detach_identity_work,
                          read_events_work, wait_events_work, partition_info_work, check_certificate_work,
                          claim_partition_work, release_partition_work, c2d_send_work, c2d_receive_work,
                          c2d_settle_work, feedback_receive_work, feedback_wait_work, feedback_settle_work, twin_work,
                          methods_ready_work, method_response_work>;

// What a read_events found: the records, and the sequence number to read from next.
struct events_read {
  std::int64_t next_sequence = 0;
  std::vector<storage::log_record> records;
};

struct connection_options {
  amqp::driver_options driver;
  // Telemetry messages in flight per link (received, not yet durable): the link's credit.
  std::uint32_t telemetry_credit = 100;
  // Credit on the $cbs request link: put-tokens are rare (one per identity and renewal).
  std::uint32_t cbs_credit = 10;
  // Replies waiting for credit on a CBS reply link; beyond this the connection is closed.
  std::size_t max_pending_replies = 100;
  // The Event Hubs-compatible endpoint: 0 partitions = not served (its links are refused).
  std::uint32_t event_hub_partitions = 0;
  std::int64_t event_hub_created_ms = 0;  // created_at in the event hub's READ
  // The event hubs (entities) served, by number: 0 is the built-in endpoint (the hub's name),
  // then the custom Event Hubs endpoints of routing; names compare case-insensitively and an
  // unknown one is not found. Empty: any entity name is the built-in endpoint.
  std::vector<std::string> event_hub_entities;
  std::size_t max_events_per_read = 100;  // per read_events, within the receiver's credit
  // Bounds on what one client can make the hub hold (links of all kinds; tokens by audience).
  // IoT Edge multiplexes its modules on one connection; a thousand is far beyond that.
  std::size_t max_links = 1000;
  std::size_t max_grants = 1000;
  // C2D messages one c2d_receive may lock (within the link's credit). A device queue holds at
  // most 50, so one receive usually takes them all.
  std::size_t max_c2d_per_receive = 50;
  // Feedback batches sent on one link and not yet settled; more wait in the feedback queue.
  std::size_t max_feedback_unsettled = 16;
  // The hub's name (user-id of feedback messages).
  std::string hub_name;
  // Twin and methods links are served (else refused with amqp:not-implemented): the server sets
  // them when it has the twins and methods services.
  bool serve_twins = false;
  bool serve_methods = false;
  // Twin requests a device may have unanswered per twin sender: the link's credit.
  std::uint32_t twin_credit = 10;
  // Messages waiting for the device's credit on a twin receiver (answers, desired patches) or a
  // methods receiver (calls). A twin receiver past it closes the connection (its answers cannot
  // be dropped: the SDK waits for them forever); a call past it is dropped (it times out).
  std::size_t max_waiting_sends = 1000;
  // Output a slow reader may leave unwritten before Event Hubs receivers stop reading the log
  // (see connection::writing). A read adds at most max_events_per_read messages beyond it.
  std::size_t max_unwritten_bytes = 256 * 1024;
};

class connection {
 public:
  // `log_id` prefixes log lines ("connection 7"); the logger must outlive the connection.
  connection(const connection_options& opts, const clock& clk, std::shared_ptr<spdlog::logger> log, std::string log_id);

  void recv(std::span<const char> in, std::vector<work>& out);
  void read_closed(std::vector<work>& out);
  void write_failed(std::vector<work>& out);
  // `now`: a monotonic clock in ms. Runs Proton's timers and ends grants whose token expired
  // (closing the links they authorised). Returns when to call again, if ever.
  std::optional<std::chrono::milliseconds> tick(std::chrono::milliseconds now, std::vector<work>& out);

  void token_checked(std::uint64_t ticket, result<grant> r, std::vector<work>& out);
  // The client presented a TLS certificate: device links may be authorised by it (X.509).
  void client_certificate_presented(bool presented) { client_certificate_ = presented; }
  void certificate_checked(std::uint64_t ticket, result<grant> r, std::vector<work>& out);
  void telemetry_appended(std::uint64_t ticket, result<void> r, std::vector<work>& out);
  // The answer to attach_identity: the identity's live presence, or why it cannot connect (it
  // was deleted since its token was checked): its links are then closed.
  void identity_attached(const connections::identity& who, result<std::shared_ptr<registry::presence>> r,
                         std::vector<work>& out);
  void events_ready(std::uint64_t ticket, result<events_read> r, std::vector<work>& out);
  // New events are durable in the partition a receiver on `link` waited on.
  void partition_data(amqp::link_id link, std::vector<work>& out);
  // The answer to claim_partition: nothing = the receiver reads; else it is detached with the
  // refusal's condition (amqp:link:stolen, amqp:not-found).
  void partition_claimed(amqp::link_id link, const std::optional<partition_watch::refusal>& refusal,
                         std::vector<work>& out);
  // A receiver with a higher epoch took the partition: this receiver is detached (amqp:link:stolen).
  void partition_stolen(amqp::link_id link, const std::string& reason, std::vector<work>& out);
  void partition_info_ready(std::uint64_t ticket, result<storage::partition_stats> r, std::vector<work>& out);
  // The answer to c2d_send: the message is queued (durable), or why not.
  void c2d_sent(std::uint64_t ticket, result<void> r, std::vector<work>& out);
  // The answer to c2d_receive: the locked messages, sent on the link as far as its credit goes
  // (the others, or all when the link has gone, are unlocked).
  void c2d_received(amqp::link_id link, std::vector<c2d::delivery> d, std::vector<work>& out);
  // The device's queue has messages (c2d::service's device notifier, through device_link).
  void c2d_available(const std::string& device_id, std::vector<work>& out);
  // The answer to feedback_receive: a locked batch, or none (then the link waits on the watch,
  // from `generation`, as generation() was before the receive).
  void feedback_received(amqp::link_id link, std::optional<c2d::feedback_batch> b, std::uint64_t generation,
                         std::vector<work>& out);
  // New feedback records for a receiver that waited (feedback_wait).
  void feedback_available(amqp::link_id link, std::vector<work>& out);
  // The answer to a twin work item: sent on the twin receiver paired with the request's sender.
  void twin_answered(std::uint64_t ticket, twin_answer a, std::vector<work>& out);
  // A desired-properties patch for `who` (device_link::desired_properties): sent on its twin
  // receivers that enabled desired notifications; ignored by the others.
  void desired_properties(const connections::identity& who, const std::string& patch_json, std::vector<work>& out);
  // A method call for `who` (device_link::invoke_method): sent on its methods receiver. Dropped
  // (the call times out) when the links went away meanwhile.
  void invoke_method(const connections::identity& who, const messaging::method_call& call, std::vector<work>& out);
  // Gives back every lock the connection holds (C2D messages unlocked, feedback batches
  // abandoned). Done when the transport closes; the session calls it again when it ends.
  void release_locks(std::vector<work>& out);

  // The connection table replaced (or dropped) the identity: its links here are closed.
  void drop_identity(const connections::identity& who, const std::string& reason, std::vector<work>& out);
  // Identities attached to the table right now; the session detaches them when the connection
  // ends. (One whose attach is still running is detached by the session when the answer comes.)
  std::vector<connections::identity> attached_identities() const;

  // Closes the connection with amqp:connection:forced (shutdown, replaced by another...).
  void close(const std::string& reason, std::vector<work>& out);

  std::string take_output() { return driver_.take_output(); }
  // Back-pressure to Event Hubs receivers: the session says how many bytes it is writing (0 when
  // the socket took everything). While more than max_unwritten_bytes wait for a slow reader
  // (being written, or still in Proton's buffers), no more events are read from the log for this
  // connection, whatever credit its receivers gave; once written, the receivers that were held
  // back read again.
  void writing(std::size_t unwritten_bytes, std::vector<work>& out);
  bool has_output() const { return driver_.has_output(); }
  bool finished() const { return driver_.finished(); }

  std::size_t grants() const { return grants_.size(); }
  std::size_t telemetry_in_flight() const { return appends_.size(); }

 private:
  enum class link_kind {
    cbs_requests,
    cbs_replies,
    telemetry,
    mgmt_requests,
    mgmt_replies,
    partition,
    device_c2d,         // a device's receiver from /devices/<d>/messages/devicebound
    service_c2d,        // the service SDK's sender to /messages/devicebound
    service_feedback,   // its receiver from /messages/serviceBound/feedback
    service_receiver,   // its file-notification receiver (nothing to send yet)
    twin_requests,      // a device's twin sender (/devices/<d>[/modules/<m>]/twin)
    twin_responses,     // its twin receiver: answers and desired patches
    method_calls,       // a device's methods receiver (/devices/<d>[/modules/<m>]/methods/devicebound)
    method_answers,     // its methods sender
  };
  // Links that belong to a device or module: authorised by its grant, counted for Connected.
  static bool is_identity_link(link_kind k) {
    return k == link_kind::telemetry || k == link_kind::device_c2d || k == link_kind::twin_requests ||
           k == link_kind::twin_responses || k == link_kind::method_calls || k == link_kind::method_answers;
  }
  struct link_state {
    link_kind kind = link_kind::telemetry;
    std::string name;
    std::string target;             // cbs_replies: the reply-to a request may name
    std::string audience;           // telemetry: the grant that authorised it
    grant::kind identity_kind = grant::kind::device;
    std::string device_id;
    std::string module_id;
    std::deque<proton::message> replies;  // cbs_replies / mgmt_replies / twin_responses / method_calls
                                          // waiting for credit
    std::string channel;                  // twin and methods links: com.microsoft:channel-correlation-id
    bool desired = false;                 // twin_responses: desired notifications are on
    // partition: an Event Hubs receiver
    std::uint32_t partition = 0;
    std::uint32_t entity = 0;              // which event hub
    std::optional<event_position> start;   // until the first read resolves it
    std::int64_t next_sequence = 0;
    bool reading = false;                  // a read_events is out
    bool waiting = false;                  // caught up: a wait_events is out
    std::string consumer_group;
    std::optional<std::int64_t> epoch;     // com.microsoft:epoch of the attach
    bool claiming = false;                 // a claim_partition is out: nothing is read yet
    // device_c2d / service_feedback: what was sent and not settled, by delivery: lock tokens
    std::unordered_map<amqp::delivery_id, std::string> locks;
    bool pulling = false;                  // a c2d_receive / feedback_receive is out
    std::size_t pull_max = 0;              // c2d_receive: how many it asked for
    bool pull_again = false;               // c2d_available came while pulling
    bool feedback_waiting = false;         // a feedback_wait is out
  };
  struct pending_token {
    proton::message_id request_id;
    std::string reply_to;
    std::string audience;
    amqp::link_id request_link = 0;
  };
  struct pending_append {
    amqp::link_id link = 0;
    amqp::delivery_id delivery = 0;
  };
  struct pending_management {
    management_request request;
    amqp::link_id request_link = 0;
  };
  struct identity_state {
    connections::identity who;
    std::size_t links = 0;       // device links open for it on this connection
    bool attaching = false;      // attach_identity asked, not answered: a detach waits for it
    bool attached = false;       // the table has it
    bool methods_ready = false;  // methods_ready_work said it takes calls
    std::shared_ptr<registry::presence> presence;
    // Twin requests that came while the attach ran: handled once it is done.
    std::vector<std::pair<amqp::link_id, twin_request>> deferred_twin;
  };
  struct pending_twin {
    amqp::link_id request_link = 0;
    std::string key;      // the identity's
    std::string channel;  // of the request's link: the answer goes to the receiver paired with it
    proton::message_id correlation_id;
  };

  void handle(std::vector<amqp::event>& events, std::vector<work>& out);
  void on_link_requested(amqp::link_requested& e, std::vector<work>& out);
  struct pending_link {
    amqp::link_id link = 0;
    std::string name;
    link_address addr;
    bool we_receive = true;
    std::string channel;
  };
  void accept_device_link(const pending_link& p, const std::string& aud, std::vector<work>& out);
  // The link `s` is gone (closed by either side): its locks go back, and a device link's
  // identity detaches with its last.
  void link_gone(link_state& s, const std::string& reason, std::vector<work>& out);
  void close_identity_links(const std::string& key, const proton::error_condition& error, std::vector<work>& out);
  void on_message(amqp::message_received& e, std::vector<work>& out);
  void on_cbs_request(amqp::message_received& e, std::vector<work>& out);
  void on_telemetry(const link_state& link, amqp::message_received& e, std::vector<work>& out);
  void on_c2d_send(const link_state& link, amqp::message_received& e, std::vector<work>& out);
  void on_twin_request(const link_state& link, amqp::message_received& e, std::vector<work>& out);
  // Answers at once (notifications, errors) or hands the request to the twins service.
  void handle_twin_request(amqp::link_id request_link, twin_request r, std::vector<work>& out);
  void answer_twin_request(const pending_twin& p, const twin_answer& a);
  // The twin receiver of identity `key` paired with `channel` (else its newest one); 0 when none.
  amqp::link_id twin_receiver(const std::string& key, const std::string& channel) const;
  void on_method_answer(const link_state& link, amqp::message_received& e, std::vector<work>& out);
  // Tells the session when the identity starts or stops taking method calls.
  void update_methods(const std::string& key, std::vector<work>& out);
  // Queues `m` on a link we send on and sends what its credit allows. False when the queue is full.
  bool queue_send(amqp::link_id link, proton::message m);
  // The client settled a delivery we sent: a device's C2D message, or a feedback batch.
  void on_delivery_updated(const amqp::delivery_updated& e, std::vector<work>& out);
  // Asks for C2D messages (or feedback) for a receiver with credit, unless a request is out.
  void pull_c2d(amqp::link_id link, std::vector<work>& out);
  void pull_feedback(amqp::link_id link, std::vector<work>& out);
  // Gives back the locks a link holds.
  void release_link_locks(link_state& s, std::vector<work>& out);
  void reply(link_kind kind, const std::string& reply_to, proton::message m);
  void on_management_request(amqp::message_received& e, std::vector<work>& out);
  bool output_full() const;  // more than max_unwritten_bytes wait for the peer
  void pump_partition(amqp::link_id link, std::vector<work>& out);
  void on_event_hubs_link(amqp::link_requested& e, std::vector<work>& out);
  // The service SDK's links, authorised by a live hub grant (ServiceConnect).
  void on_service_link(amqp::link_requested& e, const std::string& address);
  // True when a live Event Hubs grant covers `entity_path` ("<hub>/ConsumerGroups/..."), or any
  // Event Hubs grant when it is empty.
  bool event_hubs_granted(const std::string& entity_path) const;
  // The number of the event hub named `name` (connection_options::event_hub_entities).
  std::optional<std::uint32_t> entity_index(std::string_view name) const;
  std::string entity_not_found(std::string_view name) const;
  void flush_replies(amqp::link_id link);
  void expire_grants(std::vector<work>& out);
  // The live grant that lets `device_id`/`module_id` attach a device link, by its audience.
  const std::string* grant_for(const std::string& device_id, const std::string& module_id) const;

  connection_options opts_;
  const clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  std::string log_id_;
  amqp::driver driver_;
  std::uint64_t next_ticket_ = 0;
  std::map<std::string, grant> grants_;  // by audience, as the put-token named it
  std::unordered_map<amqp::link_id, link_state> links_;
  std::size_t unwritten_bytes_ = 0;  // connection::writing
  std::unordered_map<std::uint64_t, pending_token> tokens_;
  std::unordered_map<std::uint64_t, pending_append> appends_;
  std::unordered_map<std::uint64_t, pending_append> c2d_sends_;  // c2d_send ticket -> the delivery
  std::map<std::string, identity_state> identities_;  // by "<device>/<module>"
  std::unordered_map<std::uint64_t, amqp::link_id> reads_;             // read_events ticket -> link
  std::unordered_map<std::uint64_t, pending_management> management_;   // partition_info ticket
  std::unordered_map<std::uint64_t, pending_twin> twins_;  // twin_work ticket -> whom to answer
  bool client_certificate_ = false;
  std::map<std::string, std::vector<pending_link>> x509_pending_;       // by identity key
  std::unordered_map<std::uint64_t, connections::identity> x509_checks_;  // ticket -> identity
  std::vector<amqp::event> events_;  // scratch, reused
};

}  // namespace hub::amqp_head
