#pragma once
// One AMQP 1.0 connection, sans I/O: Qpid Proton's io::connection_driver given the shape of the
// MQTT codec. Bytes go in (recv), events come out, bytes to send are taken out (take_output),
// and time moves only when tick() is called. No sockets, no timers, no threads, no hub state:
// the protocol head decides what an attach or a message means and answers through the calls
// below (accept_link, settle, send, ...). Proton is the codec; we write no AMQP encoding.
//
// Lifecycle: one per connection, owned by the head's connection coroutine. Not thread-safe, and
// neither is anything Proton hands out: every call, and every proton::message an event carries,
// belongs to the connection's thread.
//
// Events: recv(), read_closed(), tick() and poll() append what happened to `out`. The calls that
// act (accept_link, send, settle, close...) emit nothing themselves; call poll() after a batch of
// them to collect the events they caused (a credit grant answered by the peer, a close that
// finished) and take_output() to get the bytes they produced.
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/symbol.hpp>
#include <proton/value.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace hub::amqp {

enum class role : std::uint8_t { server, client };

// Ids the driver gives links and deliveries, unique for the life of the driver (never reused,
// so a late completion for a link that is gone is recognisably stale).
using link_id = std::uint64_t;
using delivery_id = std::uint64_t;

struct driver_options {
  std::string container_id = "hubd";
  // Advertised in our Open: the peer must send something (an empty frame will do) this often,
  // or tick() closes the connection. Proton heartbeats at half the peer's own value. 0 = none.
  std::chrono::milliseconds idle_timeout{240'000};
  std::uint32_t max_frame_size = 64 * 1024;
  std::uint16_t max_sessions = 64;
  // Largest message accepted on a receiving link: advertised in our attach, and a delivery that
  // grows past it closes its link with amqp:link:message-size-exceeded (so a peer cannot make
  // us buffer without bound). 0 = no limit.
  std::uint64_t max_message_size = 1024 * 1024;
  // Bytes a peer may send before its Open frame (protocol headers, SASL): past it the transport
  // closes. Bounds what a peer that never opens can make Proton buffer (and, through Proton
  // 0.37's SASL, leak). 0 = no limit.
  std::uint64_t max_bytes_before_open = 64 * 1024;

  // Server: SASL is optional. A client that starts with "AMQP 3 1 0 0" negotiates SASL (Proton's
  // built-in ANONYMOUS; EXTERNAL with a TLS identity); one that starts with "AMQP 0 1 0 0"
  // skips it (the Azure IoT SDKs do). Authentication happens later, by CBS put-token.
  // Client (tests): whether to use SASL, and the mechanisms and credentials to offer.
  bool client_sasl = true;
  std::string client_mechanisms = "ANONYMOUS";
  std::string client_user;
  std::string client_password;
  std::string client_hostname;  // the Open's hostname field
};

// The peer's Open arrived (our Open answers it at once with driver_options).
struct connection_opened {
  std::string hostname;        // the host the peer asked for (Open's hostname), often without port
  std::string container_id;    // the peer's
  std::string sasl_mechanism;  // empty when the peer skipped SASL
  std::string sasl_user;
};

// The peer attached a link. Answer with accept_link() or refuse_link(); until then the peer
// waits for our attach.
struct link_requested {
  link_id link = 0;
  bool we_receive = true;  // the peer is the sender (target is our node), else we send to it
  std::string name;
  std::string source;      // address of the source terminus (empty when none)
  std::string target;
  std::map<proton::symbol, proton::value> properties;   // the attach's properties
  std::map<proton::symbol, proton::value> filters;      // the source's filter set
};

// A link we opened (open_sender / open_receiver) was attached by the peer.
struct link_opened {
  link_id link = 0;
};

// A link is gone: detached or closed by the peer (by_peer), or its delivery grew too large.
// Unsettled deliveries on it are forgotten; settle() ignores them.
struct link_closed {
  link_id link = 0;
  bool by_peer = true;
  proton::error_condition error;
};

// A whole message arrived on a link we receive on. Settle it with settle() unless presettled.
struct message_received {
  link_id link = 0;
  delivery_id delivery = 0;
  bool presettled = false;
  proton::message message;
};

// The peer gave credit on a link we send on: send() may be called `credit` times.
struct credit_available {
  link_id link = 0;
  int credit = 0;
};

enum class outcome : std::uint8_t { accepted, rejected, released, modified };

// The peer updated (and usually settled) a delivery we sent.
struct delivery_updated {
  link_id link = 0;
  delivery_id delivery = 0;
  outcome state = outcome::accepted;
  bool settled = true;
  proton::error_condition error;  // rejected only, when the peer gave one
};

// The peer closed the connection (with an error, or not). Our close answers it at once.
struct connection_closed {
  proton::error_condition error;
};

// The transport is finished: the connection closed both ways, the peer went away, a protocol
// error, or the idle timeout. Once the output is written, the connection can be dropped.
struct transport_closed {
  proton::error_condition error;  // empty after an orderly close
};

using event = std::variant<connection_opened, link_requested, link_opened, link_closed, message_received,
                           credit_available, delivery_updated, connection_closed, transport_closed>;

class driver {
 public:
  explicit driver(role r, const driver_options& options = {});
  ~driver();
  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;

  // Feeds bytes read from the transport; consumes all of `in`. Bytes that arrive after the
  // transport stopped reading are dropped.
  void recv(std::span<const char> in, std::vector<event>& out);
  // The peer will send nothing more (EOF or a read error).
  void read_closed(std::vector<event>& out);
  // Writing is impossible (the write failed): the transport closes; no more output.
  void write_closed(std::vector<event>& out);
  // Collects the events caused by calls since the last recv/poll.
  void poll(std::vector<event>& out);

  // Bytes to write now, removed from the driver. Empty when there is nothing to send.
  std::string take_output();
  bool has_output() const;
  // Bytes the driver holds for the peer: output encoded and not yet taken, plus message bytes
  // sent on links that Proton has not encoded yet (waiting for the session's window).
  std::size_t buffered_bytes() const;

  // `now` is any monotonic clock in milliseconds, the same on every call. Runs Proton's timers
  // (heartbeats to send, the peer's idle timeout) and returns when to call tick() next, or
  // nothing when no timer is armed.
  std::optional<std::chrono::milliseconds> tick(std::chrono::milliseconds now, std::vector<event>& out);

  // True once the transport is closed and all output has been taken: drop the connection.
  bool finished() const;

  // --- answering the peer's attach (link_requested) ---
  // Attaches our end. On a link we receive on, `credit` is the initial credit (at least 10:
  // Proton grants 10 when the attach arrives; see driver.cpp).
  void accept_link(link_id link, std::uint32_t credit = 0);
  // Attaches our end, then closes it with `error`: how AMQP refuses a link.
  void refuse_link(link_id link, const proton::error_condition& error);

  // --- opening links ourselves (a client; tests) ---
  link_id open_sender(const std::string& target, const std::map<proton::symbol, proton::value>& properties = {});
  // `target` names our end (clients use it as the reply-to of requests); `filters` go in the
  // source (an Event Hubs receiver's selector).
  link_id open_receiver(const std::string& source, std::uint32_t credit,
                        const std::map<proton::symbol, proton::value>& properties = {},
                        const std::string& target = {}, const std::map<proton::symbol, proton::value>& filters = {});

  // --- on open links ---
  void close_link(link_id link, const proton::error_condition& error = {});
  // More credit on a link we receive on.
  void grant(link_id link, std::uint32_t credit);
  // Credit the peer gave us on a link we send on (0 when unknown or closed).
  int credit(link_id link) const;
  // Sends on a link we send on. Nothing when the link is unknown, closed, or has no credit.
  // Presettled messages get no delivery_updated.
  std::optional<delivery_id> send(link_id link, const proton::message& m, bool presettled = false);
  // Settles a delivery we received. `error` is sent with `rejected` (e.g.
  // amqp:link:message-size-exceeded). Unknown or already settled ids are ignored.
  void settle(delivery_id delivery, outcome state, const proton::error_condition& error = {});

  // Closes the connection (with an error for the peer, or none).
  void close(const proton::error_condition& error = {});

  // Counters for tests and logs.
  std::size_t open_links() const;
  std::size_t unsettled_received() const;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// A condition with IoT Hub's names ("amqp:unauthorized-access", ...) and a description.
proton::error_condition condition(std::string name, std::string description);

}  // namespace hub::amqp
