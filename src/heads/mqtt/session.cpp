// The MQTT session over a transport: the one heavy (Asio) TU of the MQTT head. The decisions live
// in light, unit-tested code (codec/mqtt, connect.cpp, publish.cpp, topics.cpp); this file moves
// bytes, runs timers, and hops to the blocking pool for admission.
//
// Threads: everything here runs on the connection's executor (one io_context thread), except
// the device_link calls (close, c2d_available, invoke_method, desired_properties), which any
// thread may make (they post; invoke_method reads one atomic flag first), the telemetry
// completions, which run on the event log's writer thread and post back, and the c2d::service and
// twins::service calls and methods::service::ready, which run on the blocking pool and post back.
// So the connection needs no lock.
//
// GCC 12 (see src/server/README.md): coroutines here take references from a caller that co_awaits
// them, spawned ones take a shared_ptr by value, no capturing lambda is a coroutine, and no
// co_await sits inside a condition.
#include "heads/mqtt/session.hpp"

#include "domain/throttling/throttle.hpp"
#include "heads/mqtt/topics.hpp"

#include "base/log.hpp"
#include "base/stage_stats.hpp"
#include "codec/mqtt/session.hpp"
#include "domain/c2d/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/methods/service.hpp"
#include "domain/telemetry/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/mqtt/c2d.hpp"
#include "heads/mqtt/publish.hpp"
#include "heads/mqtt/session_store.hpp"
#include "heads/mqtt/twin_methods.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <exception>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace hub::mqtt_head {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr std::size_t read_buffer_min = 2 * 1024;
constexpr std::size_t read_buffer_max = 16 * 1024;
// Small reads in a row before a grown read buffer shrinks back. An idle connection holds none:
// the buffer is allocated when bytes arrive and released once they are drained.
constexpr int small_reads_to_shrink = 16;
// Write buffers above this are released once drained, so a burst does not pin memory.
constexpr std::size_t write_buffer_keep = 16 * 1024;
// How long a refused connection may take to read its CONNACK before we close anyway.
constexpr std::chrono::seconds flush_timeout{5};

std::string_view code_text(mqtt::connack_code c) {
  switch (c) {
    case mqtt::connack_code::accepted: return "0 accepted";
    case mqtt::connack_code::unacceptable_protocol_version: return "1 unacceptable protocol version";
    case mqtt::connack_code::identifier_rejected: return "2 identifier rejected";
    case mqtt::connack_code::server_unavailable: return "3 server unavailable";
    case mqtt::connack_code::bad_username_or_password: return "4 bad username or password";
    case mqtt::connack_code::not_authorized: return "5 not authorized";
  }
  return "?";
}

std::string_view auth_text(telemetry::auth_method m) {
  switch (m) {
    case telemetry::auth_method::sas: return "SAS";
    case telemetry::auth_method::policy: return "SAS policy";
    case telemetry::auth_method::x509_self_signed: return "X.509 self-signed";
    case telemetry::auth_method::x509_ca: return "X.509 CA";
  }
  return "?";
}

bool peer_went_away(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::ssl::error::stream_truncated ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}

// One MQTT connection. Owned by shared_ptrs: the session coroutine's, the connection table's (as
// a device_link, until detached), and those of pending timer handlers, writes and telemetry
// completions. The transport is used only while the session coroutine runs (closed_ is set
// before it returns, and nothing touches the transport once it is).
class connection final : public messaging::device_link, public std::enable_shared_from_this<connection> {
 public:
  connection(transport& t, const session_context& ctx, const connection_info& info, const asio::any_io_executor& ex)
      : t_(t),
        ctx_(ctx),
        info_(info),
        codec_(mqtt::decode_limits{ctx.options.max_packet_bytes}),
        deadline_(ex),
        c2d_(ctx.options.max_c2d_in_flight) {}

  // device_link: any thread.
  void close(std::string reason) override {
    asio::post(ex(), [self = shared_from_this(), reason = std::move(reason)]() mutable { self->end(std::move(reason)); });
  }
  void c2d_available() override {
    asio::post(ex(), [self = shared_from_this()] {
      self->c2d_.notify();
      self->pull_c2d();
    });
  }
  // Taken only while the session subscribes to $iothub/methods/POST/# (set on this executor after
  // the SUBACK, or after the CONNACK of a session that has it); a call accepted here is sent unless
  // the connection ends first, and then times out at the caller (GatewayTimeout).
  bool invoke_method(const messaging::method_call& call) override {
    if (!method_calls_.load(std::memory_order_acquire)) return false;
    asio::post(ex(), [self = shared_from_this(), call]() mutable { self->send_method_call(call); });
    return true;
  }
  void desired_properties(std::string patch_json) override {
    asio::post(ex(), [self = shared_from_this(), patch = std::move(patch_json)]() mutable {
      self->send_desired(std::move(patch));
    });
  }

  // `self` is this connection: the session coroutine's frame owns it.
  asio::awaitable<void> serve(std::shared_ptr<connection> self, std::string& first_bytes);

 private:
  asio::awaitable<void> handle(std::vector<mqtt::event>& events);
  asio::awaitable<void> on_connect(const mqtt::connect& c);
  asio::awaitable<void> finish();
  asio::awaitable<void> wait_wake(std::chrono::steady_clock::duration limit);
  static asio::awaitable<void> write_loop(std::shared_ptr<connection> self);

  void on_packet(mqtt::packet& p);
  void on_publish(mqtt::publish& p);
  asio::awaitable<void> on_subscribe(const mqtt::subscribe& s);
  asio::awaitable<void> on_unsubscribe(const mqtt::unsubscribe& u);
  // The telemetry of one read goes to the log as one batch (one device: one partition, order
  // kept) with one completion, posted back once; its PUBACKs go out in one write.
  struct batch_entry {
    ack_queue::ticket ticket = 0;
    std::size_t bytes = 0;
  };
  void send_telemetry_batch();
  bool shape_telemetry(telemetry::message& m, const batch_entry& entry);
  void arm_shaping();
  void on_durable_batch(const std::vector<batch_entry>& entries, const std::optional<error>& failure);
  // A publish waiting in acks_ is done: its PUBACK (and those it held back) go out, and reading
  // resumes if flow control paused it.
  void complete_publish(ack_queue::ticket ticket, std::size_t bytes);
  void acknowledge_now(std::uint16_t packet_id);

  // Twins and methods (twin_methods.hpp): twin requests are served one at a time, in arrival
  // order, on the pool (so a GET after a PATCH sees it); method answers go straight to
  // methods::service::respond (in memory, no storage).
  struct twin_job {
    twin_request req;
    ack_queue::ticket ticket = 0;
    std::size_t bytes = 0;
  };
  void serve_twin();
  void on_twin_served(twin_job& job, reply& answer);
  void on_method_answer(method_answer& m);
  void send_method_call(const messaging::method_call& call);
  void send_desired(std::string patch_json);
  void update_twin_methods_subscriptions(bool method_calls, bool desired_updates);
  void refuse(mqtt::connack_code code, std::string_view reason);
  void on_codec_close(const mqtt::close_connection& c);

  // Cloud-to-device (c2d.hpp): receive on the pool while the window has room, publish what came,
  // settle on PUBACK (QoS 1) or at once (QoS 0), unlock what is still out when the connection ends.
  void update_c2d_subscription(std::optional<std::uint8_t> qos);
  void pull_c2d();
  void on_c2d_received(std::size_t asked, std::vector<c2d::delivery>& got);
  void on_puback(std::uint16_t packet_id);
  struct c2d_settlement {
    std::vector<std::string> complete;  // PUBACKed, or sent at QoS 0
    std::vector<std::string> reject;    // cannot go over MQTT (topic too long)
    std::vector<std::string> unlock;    // not delivered: back to the queue
    bool empty() const noexcept { return complete.empty() && reject.empty() && unlock.empty(); }
  };
  void settle_c2d(c2d_settlement s);

  void queue(const mqtt::packet& p);
  void kick_writer();
  // The connection's deadlines, all on deadline_: the CONNECT deadline until admitted, then
  // the keep-alive tick and the token or certificate expiry.
  void arm_connect_timeout();
  void arm_keep_alive(std::chrono::milliseconds period);
  void arm_expiry(sys_time at, const char* reason);
  void arm_deadline();
  void on_deadline();
  // Ends the connection now: no more reads or writes, the transport closes. will_due: the
  // connection ends the way MQTT sends a Will for (network failure, keep-alive timeout, protocol
  // error), not by DISCONNECT or by the hub's own decision (replaced, identity deleted or
  // disabled, token expired, shutting down).
  void end(std::string reason, bool will_due = false);
  void send_will();
  // The connection's executor, kept by its timer (no copy of its own: 56 bytes per connection).
  // Never changes, so any thread may read it (device_link's calls post to it).
  asio::any_io_executor ex() { return deadline_.get_executor(); }
  bool paused() const noexcept {
    return acks_.in_flight() >= ctx_.options.max_in_flight || in_flight_bytes_ >= ctx_.options.max_in_flight_bytes ||
           out_.size() + sending_.size() > ctx_.options.max_unwritten_bytes;
  }
  std::string who() const {
    return module_id().empty() ? device_id() : fmt::format("{}/{}", device_id(), module_id());
  }
  const std::string& device_id() const noexcept { return sender_.device_id; }
  const std::string& module_id() const noexcept { return sender_.module_id; }

  transport& t_;
  const session_context& ctx_;
  const connection_info info_;
  mqtt::server_session codec_;
  // One timer, set to the earliest deadline, so that an idle connection holds one timer and
  // one pending wait (see docs/benchmarks.md, "Memory per idle TLS connection").
  asio::steady_timer deadline_;
  std::uint64_t timer_generation_ = 0;  // a handler of an older arming ignores itself
  std::chrono::steady_clock::time_point connect_deadline_{};  // until connected_
  std::chrono::milliseconds keep_alive_period_{0};            // 0: no keep-alive
  std::chrono::steady_clock::time_point next_tick_{};
  std::optional<std::chrono::steady_clock::time_point> expires_at_;  // SAS token / certificate
  const char* expiry_reason_ = "";
  // The session coroutine waits on it (flow control, writer drained); it lives in wait_wake's
  // frame, only while the session waits.
  asio::steady_timer* wake_ = nullptr;
  // Telemetry over the D2C rate waits here for its turn (shape_telemetry). Allocated when first
  // needed: an idle connection, or any connection of a hub without throttles, holds a pointer.
  struct delayed_message {
    std::chrono::steady_clock::time_point due;
    telemetry::message message;
    batch_entry entry;
  };
  struct shaping {
    explicit shaping(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::deque<delayed_message> queue;
  };
  std::unique_ptr<shaping> shaping_;
  std::vector<char> read_buf_;  // empty while idle
  int small_reads_ = 0;
  std::string out_;             // encoded packets waiting for the writer
  std::string sending_;         // what the writer is writing now
  bool writing_ = false;
  std::int64_t kick_ns_ = 0;    // stage_stats: when the writer was started (0 when off)
  std::int64_t read_ns_ = 0;    // stage_stats: when the read being handled returned (0 when off)
  bool stop_reading_ = false;   // refused: flush the CONNACK, then close
  bool closed_ = false;         // ended: the transport is closed or about to be
  bool waiting_for_acks_ = false;
  std::string end_reason_;
  bool will_due_ = false;

  // Set once admitted.
  bool connected_ = false;
  std::string client_id_;
  std::unique_ptr<mqtt::will_message> will_;  // 8 bytes, not 80, on the many connections without one
  bool clean_session_ = false;
  std::uint64_t session_token_ = 0;
  sender sender_;
  std::shared_ptr<registry::presence> presence_;
  ack_queue acks_;
  std::size_t in_flight_bytes_ = 0;
  std::vector<std::uint16_t> ready_;  // scratch for ack_queue::complete
  std::vector<telemetry::message> batch_;      // telemetry of the read being handled
  std::vector<batch_entry> batch_entries_;     // their tickets, same order

  // Cloud-to-device: the QoS of the devicebound subscription (none: not subscribed, or a module),
  // the messages out, and the PUBACKed ones whose completion is not yet on its way (one pool call
  // per batch of packets read).
  std::optional<std::uint8_t> c2d_qos_;
  c2d_window c2d_;
  std::vector<std::string> c2d_acked_;

  // Twins and methods: the twin requests waiting (the front one is on the pool while twin_busy_),
  // and whether the session takes desired updates and method calls (the latter read by
  // invoke_method from any thread).
  std::list<twin_job> twin_queue_;  // not a deque: that allocates 576 bytes up front
  bool twin_busy_ = false;
  bool desired_updates_ = false;
  std::atomic<bool> method_calls_{false};
};

// Runs on the blocking pool; `req` lives in the awaiting caller's frame.
asio::awaitable<admission> admit_on_pool(const session_context* ctx, const admission_request* req) {
  try {
    co_return admit(ctx->svc, *req);
  } catch (const std::exception& e) {
    ctx->log->error("admitting {} failed: {}", req->claim.client_id, e.what());
  }
  admission a;
  a.code = mqtt::connack_code::server_unavailable;
  a.reason = "internal error";
  co_return a;
}

// admit() blocks on storage, so it runs on the pool; the result comes back to the connection's
// executor because the caller co_awaits it with use_awaitable.
asio::awaitable<admission> admit_off_thread(const session_context& ctx, const admission_request& req) {
  asio::awaitable<admission> work = admit_on_pool(&ctx, &req);
  co_return co_await asio::co_spawn(ctx.blocking, std::move(work), asio::use_awaitable);
}

// Runs `work` on the blocking pool; `work` lives in the awaiting caller's frame (GCC 12: a plain
// function object, not a coroutine lambda). An exception is logged and swallowed.
asio::awaitable<void> call_on_pool(const session_context* ctx, std::function<void()>* work) {
  try {
    (*work)();
  } catch (const std::exception& e) {
    ctx->log->error("MQTT storage call failed: {}", e.what());
  }
  co_return;
}

asio::awaitable<void> off_thread(const session_context& ctx, std::function<void()>& work) {
  asio::awaitable<void> call = call_on_pool(&ctx, &work);
  co_await asio::co_spawn(ctx.blocking, std::move(call), asio::use_awaitable);
}

asio::awaitable<void> connection::serve(std::shared_ptr<connection> self, std::string& first_bytes) {
  arm_connect_timeout();
  std::vector<mqtt::event> events;
  codec_.recv({first_bytes.data(), first_bytes.size()}, events);
  std::string().swap(first_bytes);
  co_await handle(events);

  while (!closed_ && !stop_reading_) {
    if (paused()) {
      // Flow control: the device pipelines faster than the log makes its messages durable.
      waiting_for_acks_ = true;
      co_await wait_wake(std::chrono::hours(1));
      waiting_for_acks_ = false;
      continue;
    }
    if (read_buf_.empty()) {
      // Idle: hold neither the packets handled last (the CONNECT, with its SAS token) nor room.
      std::vector<mqtt::event>().swap(events);
      co_await t_.wait_readable();
      if (closed_) break;
      read_buf_.resize(read_buffer_min);
    }
    error_code ec;
    const std::size_t n = co_await t_.read_some(asio::buffer(read_buf_), ec);
    if (ec) {
      if (closed_) break;  // we closed it
      // Aborted without end(): the listener closed the socket, which it does only at shutdown.
      const bool shutdown = !peer_went_away(ec) && ec == asio::error::operation_aborted;
      end(peer_went_away(ec) ? std::string("connection closed by the device")
          : shutdown         ? std::string("hub shutting down")
                             : fmt::format("read failed: {}", ec.message()),
          !shutdown);
      break;
    }
    read_ns_ = stage_stats::stamp();
    events.clear();
    codec_.recv({read_buf_.data(), n}, events);
    // A full buffer means more is waiting: grow. A small buffer not filled: the socket is
    // drained, release it (idle connections hold none). Many small reads: shrink back.
    if (n == read_buf_.size() && read_buf_.size() < read_buffer_max) {
      read_buf_.resize(read_buf_.size() * 2);
      small_reads_ = 0;
    } else if (read_buf_.size() == read_buffer_min) {
      std::vector<char>().swap(read_buf_);
    } else if (n < read_buffer_min / 4 && read_buf_.size() > read_buffer_min && ++small_reads_ >= small_reads_to_shrink) {
      std::vector<char>(read_buffer_min).swap(read_buf_);
      small_reads_ = 0;
    }
    co_await handle(events);
  }
  co_await finish();
}

asio::awaitable<void> connection::handle(std::vector<mqtt::event>& events) {
  for (std::size_t i = 0; i < events.size() && !closed_ && !stop_reading_; ++i) {
    mqtt::event& ev = events[i];
    if (auto* received = std::get_if<mqtt::packet_received>(&ev)) {
      if (const auto* c = std::get_if<mqtt::connect>(&received->pkt)) {
        send_telemetry_batch();  // before anything that waits, in order
        co_await on_connect(*c);
        continue;
      }
      // The session store writes storage: both hop to the blocking pool, and the next packet
      // waits, so the acknowledgements come after the write, in order.
      if (const auto* sub = std::get_if<mqtt::subscribe>(&received->pkt)) {
        send_telemetry_batch();  // before anything that waits, in order
        co_await on_subscribe(*sub);
        continue;
      }
      if (const auto* unsub = std::get_if<mqtt::unsubscribe>(&received->pkt)) {
        send_telemetry_batch();  // before anything that waits, in order
        co_await on_unsubscribe(*unsub);
        continue;
      }
      on_packet(received->pkt);
    } else if (auto* bytes = std::get_if<mqtt::send_bytes>(&ev)) {
      out_ += bytes->bytes;  // PINGRESP
      kick_writer();
    } else if (const auto* arm = std::get_if<mqtt::arm_keep_alive>(&ev)) {
      arm_keep_alive(arm->period);
    } else if (const auto* closing = std::get_if<mqtt::close_connection>(&ev)) {
      on_codec_close(*closing);
    }
  }
  send_telemetry_batch();
  if (!c2d_acked_.empty()) {
    // Every PUBACK of this read in one pool call; the window has room again.
    settle_c2d(c2d_settlement{std::move(c2d_acked_), {}, {}});
    c2d_acked_.clear();
    pull_c2d();
  }
}

asio::awaitable<void> connection::on_connect(const mqtt::connect& c) {
  auto checked = check_connect(c);
  if (const auto* refusal = std::get_if<connect_refusal>(&checked)) {
    refuse(refusal->code, refusal->reason);
    co_return;
  }
  admission_request req;
  req.claim = std::move(std::get<connect_claim>(checked));
  if (!req.claim.sas_token) req.chain = t_.peer_certificates();
  req.link = shared_from_this();
  sender_.device_id = req.claim.id.device_id;
  sender_.module_id = req.claim.id.module_id;

  admission a = co_await admit_off_thread(ctx_, req);
  if (a.code != mqtt::connack_code::accepted) {
    refuse(a.code, a.reason);
    co_return;
  }
  // Attached: from here on finish() detaches, even if the connection ended while admission ran
  // (connect timeout, or already replaced by a newer connection of the identity).
  connected_ = true;
  client_id_ = req.claim.client_id;
  if (req.claim.will) will_ = std::make_unique<mqtt::will_message>(std::move(*req.claim.will));
  clean_session_ = req.claim.clean_session;
  session_token_ = a.session_token;
  presence_ = a.attached.presence;
  sender_.generation_id = presence_->generation_id();
  sender_.auth = a.method;
  sender_.model_id = req.claim.user.model_id;
  if (a.attached.previous) a.attached.previous->close("replaced by a new connection of the same identity");
  if (closed_) co_return;

  queue(mqtt::connack{a.session_present, mqtt::connack_code::accepted});
  if (info_.on_authenticated) info_.on_authenticated();
  const bool sas = a.method == telemetry::auth_method::sas || a.method == telemetry::auth_method::policy;
  if (a.expires != sys_time{}) {
    arm_expiry(a.expires, sas ? "SAS token expired" : "client certificate expired");
  } else {
    arm_deadline();  // the CONNECT deadline no longer applies; keep-alive arms next
  }
  ctx_.log->info("connection {} from {}: {} connected over {} ({}, keep-alive {} s, session present {})", info_.id,
                 info_.peer, who(), t_.name(), auth_text(a.method), c.keep_alive, a.session_present ? 1 : 0);
  // A persistent session subscribed to devicebound: what was queued meanwhile goes out now,
  // after the CONNACK (already queued). Likewise method calls and desired updates: the SDK does
  // not subscribe again after its token-renewal reconnect.
  update_c2d_subscription(a.c2d_qos);
  update_twin_methods_subscriptions(a.method_calls, a.desired_updates);
}

void connection::refuse(mqtt::connack_code code, std::string_view reason) {
  const std::string_view name = device_id().empty() ? std::string_view("client") : std::string_view(device_id());
  ctx_.log->info("connection {} from {}: {}{}{} refused over {} (CONNACK {}): {}", info_.id, info_.peer, name,
                 module_id().empty() ? "" : "/", module_id(), t_.name(), code_text(code), reason);
  queue(mqtt::connack{false, code});
  stop_reading_ = true;
  end_reason_ = "refused";
}

// IoT Hub's D2C throttle with its traffic shaping: within the rate a message goes to the log at
// once; over it, it waits for its turn here (booked ahead at the rate), so its PUBACK comes later
// and the device is slowed down. The waiting messages count as in flight, so flow control bounds
// them. When a message's turn would be more than the backlog away, the connection is closed, as
// IoT Hub does on MQTT when its throttling backlog times out (429002 ThrottlingBacklogTimeout):
// MQTT 3.1.1 cannot refuse one PUBLISH. False when the message must not go to the batch now.
bool connection::shape_telemetry(telemetry::message& m, const batch_entry& entry) {
  auto admitted = ctx_.svc.throttles->admit(throttling::operation::d2c, device_id(), true);
  if (!admitted) {
    end("device-to-cloud throttled: the throttling backlog is full (ThrottlingBacklogTimeout)");
    return false;
  }
  if (admitted->count() == 0 && (!shaping_ || shaping_->queue.empty())) return true;
  if (!shaping_) shaping_ = std::make_unique<shaping>(ex());
  auto& queue = shaping_->queue;
  // Behind those already waiting, whatever its own delay: the log keeps the device's order.
  auto due = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(*admitted);
  if (!queue.empty()) due = std::max(due, queue.back().due);
  queue.push_back(delayed_message{due, std::move(m), entry});
  if (queue.size() == 1) arm_shaping();
  return false;
}

void connection::arm_shaping() {
  shaping_->timer.expires_at(shaping_->queue.front().due);
  shaping_->timer.async_wait([self = shared_from_this()](const error_code& ec) {
    if (ec || self->closed_) return;
    auto& queue = self->shaping_->queue;
    const auto now = std::chrono::steady_clock::now();
    while (!queue.empty() && queue.front().due <= now) {
      self->batch_.push_back(std::move(queue.front().message));
      self->batch_entries_.push_back(queue.front().entry);
      queue.pop_front();
    }
    self->send_telemetry_batch();
    if (!queue.empty()) self->arm_shaping();
  });
}

void connection::on_packet(mqtt::packet& p) {
  if (auto* pub = std::get_if<mqtt::publish>(&p)) {
    on_publish(*pub);
  } else if (const auto* ack = std::get_if<mqtt::puback>(&p)) {
    on_puback(ack->packet_id);
  }
  // PUBREC, PUBREL and PUBCOMP belong to QoS 2, which the hub never sends and closes the
  // connection for.
}

void connection::on_publish(mqtt::publish& p) {
  const sys_time now = ctx_.svc.clk.now();
  presence_->touch(now);
  const std::uint16_t ack_id = p.qos == 1 ? p.packet_id : 0;
  const std::size_t payload_bytes = p.payload.size();
  publish_decision d = decide_publish(std::move(p), sender_, now);
  switch (d.what) {
    case publish_decision::action::telemetry: {
      const ack_queue::ticket ticket = acks_.push(ack_id);
      const std::size_t bytes = d.message.body.size();
      in_flight_bytes_ += bytes;
      if (ctx_.svc.throttles != nullptr && !shape_telemetry(d.message, batch_entry{ticket, bytes})) return;
      // Sent with the rest of this read's telemetry at the end of handle() (send_telemetry_batch);
      // the ack queue keeps PUBACKs in PUBLISH order whatever happens.
      batch_.push_back(std::move(d.message));
      batch_entries_.push_back({ticket, bytes});
      return;
    }
    case publish_decision::action::twin: {
      if (!ctx_.svc.twins) {
        reply r = twin_unavailable_reply(d.twin.rid, now);
        acknowledge_now(ack_id);
        queue(mqtt::publish{std::move(r.topic), std::move(r.payload), 0, false, false, 0});
        return;
      }
      // Its PUBACK (QoS 1) waits in acks_ like telemetry's, so that it keeps its place, and the
      // request counts for flow control: a device that floods twin requests stops being read.
      twin_job job{std::move(d.twin), acks_.push(ack_id), payload_bytes};
      in_flight_bytes_ += payload_bytes;
      twin_queue_.push_back(std::move(job));
      serve_twin();
      return;
    }
    case publish_decision::action::method_response:
      acknowledge_now(ack_id);
      on_method_answer(d.method);
      return;
    case publish_decision::action::answer:
      acknowledge_now(ack_id);
      queue(mqtt::publish{std::move(d.answer.topic), std::move(d.answer.payload), 0, false, false, 0});
      return;
    case publish_decision::action::ignore:
      if (!d.reason.empty() && ctx_.svc.methods) {
        ctx_.log->info("connection {} from {}: {}: ignored: {}", info_.id, info_.peer, who(), d.reason);
      }
      acknowledge_now(ack_id);
      return;
    case publish_decision::action::close:
      end(std::move(d.reason), true);  // the disconnect line gives the reason
      return;
  }
}

void connection::acknowledge_now(std::uint16_t packet_id) {
  // Through the queue all the same: a PUBACK must not overtake one still waiting for the log.
  ready_.clear();
  acks_.complete(acks_.push(packet_id), ready_);
  for (std::uint16_t id : ready_) mqtt::encode(mqtt::puback{id}, out_);
  kick_writer();
}

void connection::send_telemetry_batch() {
  if (batch_.empty()) return;
  // The completion runs on the log's writer thread once the whole batch is durable.
  ctx_.svc.telemetry.send_batch(batch_, [self = shared_from_this(), entries = std::move(batch_entries_),
                                         read_ns = read_ns_](result<void> r) mutable {
    std::optional<error> failure;
    if (!r) failure = r.error();
    const std::int64_t posted_ns = stage_stats::stamp();
    asio::post(self->ex(), [self, entries = std::move(entries), failure = std::move(failure), read_ns, posted_ns] {
      stage_stats::since(stage_stats::stage::completion_post, posted_ns);
      self->on_durable_batch(entries, failure);
      stage_stats::since(stage_stats::stage::server_total, read_ns);
    });
  });
  batch_.clear();
  batch_entries_.clear();
}

void connection::on_durable_batch(const std::vector<batch_entry>& entries, const std::optional<error>& failure) {
  for (const auto& e : entries) in_flight_bytes_ -= e.bytes;
  if (closed_) return;
  if (failure) {
    end(fmt::format("message not stored: {}", failure->message));
    return;
  }
  ready_.clear();
  for (const auto& e : entries) acks_.complete(e.ticket, ready_);
  for (std::uint16_t id : ready_) mqtt::encode(mqtt::puback{id}, out_);
  kick_writer();
}

void connection::complete_publish(ack_queue::ticket ticket, std::size_t bytes) {
  in_flight_bytes_ -= bytes;
  ready_.clear();
  acks_.complete(ticket, ready_);
  for (std::uint16_t id : ready_) mqtt::encode(mqtt::puback{id}, out_);
  kick_writer();
  if (waiting_for_acks_ && acks_.in_flight() <= ctx_.options.max_in_flight / 2 &&
      in_flight_bytes_ <= ctx_.options.max_in_flight_bytes / 2) {
    if (wake_) wake_->cancel();
  }
}

void connection::serve_twin() {
  if (twin_busy_ || twin_queue_.empty() || closed_) return;
  twin_busy_ = true;
  asio::post(ctx_.blocking, [self = shared_from_this(), job = std::move(twin_queue_.front())]() mutable {
    twins::service& svc = *self->ctx_.svc.twins;
    const twins::identity id{self->device_id(), self->module_id()};
    const std::string_view rid = job.req.rid;
    const bool get = job.req.what == twin_request::kind::get;
    reply answer;
    std::optional<error> failure;
    try {
      // IoT Hub's twin throttle: over the rate, the request is answered 429 ThrottlingException.
      if (self->ctx_.svc.throttles != nullptr) {
        auto admitted = self->ctx_.svc.throttles->admit(throttling::operation::twin_device, self->device_id());
        if (!admitted) failure = admitted.error();
      }
      if (!failure && get) {
        auto view = svc.device_view(id);
        if (view) answer = twin_get_reply(rid, *view);
        else failure = view.error();
      } else if (!failure) {
        auto version = svc.patch_reported(id, job.req.patch);
        if (version) answer = twin_patch_reply(rid, *version);
        else failure = version.error();
      }
    } catch (const std::exception& e) {
      self->ctx_.log->error("connection {}: twin {} for {} failed: {}", self->info_.id, get ? "GET" : "PATCH",
                            self->who(), e.what());
      failure = make_error(errc::server_error, "The twin request failed inside the hub");
    }
    if (failure) {
      // Always an answer with errorCode: the SDK fails the call on it, and waits forever without.
      self->ctx_.log->info("connection {}: twin {} for {} refused: {}", self->info_.id, get ? "GET" : "PATCH",
                           self->who(), error_name(failure->code));
      answer = twin_error_reply(rid, *failure, self->ctx_.svc.clk.now());
    }
    job.req.patch = nullptr;  // freed here, not on the connection's thread
    asio::post(self->ex(), [self, job = std::move(job), answer = std::move(answer)]() mutable {
      self->on_twin_served(job, answer);
    });
  });
  twin_queue_.pop_front();
}

void connection::on_twin_served(twin_job& job, reply& answer) {
  twin_busy_ = false;
  if (closed_) {
    in_flight_bytes_ -= job.bytes;
    return;
  }
  // The answer, then the request's PUBACK (if QoS 1) and any held back behind it.
  queue(mqtt::publish{std::move(answer.topic), std::move(answer.payload), 0, false, false, 0});
  complete_publish(job.ticket, job.bytes);
  serve_twin();
}

void connection::on_method_answer(method_answer& m) {
  if (!ctx_.svc.methods) return;  // no methods served: nothing to answer
  // respond() settles the call in memory and runs its completion, which posts to the caller's
  // executor: cheap enough for this thread.
  auto r = ctx_.svc.methods->respond(methods::identity{device_id(), module_id()}, m.rid, m.status,
                                     std::move(m.payload));
  if (!r) {
    // Timed out already, or never ours: IoT Hub drops such answers too.
    ctx_.log->info("connection {} from {}: {}: method answer {} ignored: {}", info_.id, info_.peer, who(), m.rid,
                   r.error().message);
  }
}

void connection::send_method_call(const messaging::method_call& call) {
  if (closed_) {
    ctx_.log->debug("connection {}: method call {} for {} not sent: the connection ended", info_.id,
                    call.request_id, who());
    return;  // the caller gets GatewayTimeout
  }
  reply r = method_request(call.name, call.request_id, call.payload);
  queue(mqtt::publish{std::move(r.topic), std::move(r.payload), 0, false, false, 0});
}

void connection::send_desired(std::string patch_json) {
  if (closed_ || !desired_updates_) return;  // the device fetches the whole twin when it subscribes
  auto r = desired_notification(std::move(patch_json));
  if (!r) {
    ctx_.log->warn("connection {}: a desired-properties patch for {} without $version was not sent", info_.id,
                   who());
    return;
  }
  queue(mqtt::publish{std::move(r->topic), std::move(r->payload), 0, false, false, 0});
}

// The session's subscriptions changed (SUBACK or UNSUBACK queued) or resumed (CONNACK queued).
void connection::update_twin_methods_subscriptions(bool method_calls, bool desired_updates) {
  if (closed_) return;
  desired_updates_ = desired_updates && ctx_.svc.twins;
  if (!ctx_.svc.methods) return;
  const bool before = method_calls_.exchange(method_calls, std::memory_order_acq_rel);
  if (!method_calls || before) return;
  // Calls waiting for this identity to take them (connectTimeoutInSeconds) go now. ready() comes
  // back through the connection table to invoke_method, which posts here: after the SUBACK.
  asio::post(ctx_.blocking, [self = shared_from_this()] {
    try {
      self->ctx_.svc.methods->ready(methods::identity{self->device_id(), self->module_id()});
    } catch (const std::exception& e) {
      self->ctx_.log->error("connection {}: releasing method calls for {} failed: {}", self->info_.id, self->who(),
                            e.what());
    }
  });
}

asio::awaitable<void> connection::on_subscribe(const mqtt::subscribe& s) {
  presence_->touch(ctx_.svc.clk.now());
  mqtt::suback ack;
  ack.packet_id = s.packet_id;
  std::vector<std::string> refused;  // for the log
  std::optional<error> failure;
  bool module_devicebound = false;
  std::optional<std::uint8_t> c2d;
  bool method_calls = false;
  bool desired_updates = false;
  const client_identity id{device_id(), module_id()};
  std::function<void()> work = [&] {
    for (const mqtt::subscription& sub : s.subscriptions) {
      if (!subscription_allowed(sub.filter, id)) {
        refused.push_back(sub.filter.substr(0, 200));
        ack.codes.push_back(mqtt::suback_failure);
        continue;
      }
      // IoT Hub grants at most QoS 1.
      const std::uint8_t granted = std::min<std::uint8_t>(sub.qos, 1);
      if (auto stored = ctx_.svc.sessions.subscribe(client_id_, sub.filter, granted); !stored) {
        failure = stored.error();
        ack.codes.push_back(mqtt::suback_failure);
        continue;
      }
      ack.codes.push_back(granted);
      if (!id.module_id.empty() && sub.filter.find("/messages/devicebound") != std::string::npos) {
        module_devicebound = true;
      }
    }
    const auto subs = ctx_.svc.sessions.subscriptions(client_id_);
    c2d = c2d_qos(subs, id);
    method_calls = takes_method_calls(subs);
    desired_updates = takes_desired_updates(subs);
  };
  co_await off_thread(ctx_, work);
  for (const std::string& filter : refused) {
    ctx_.log->info("connection {} from {}: {}: subscription to {} refused", info_.id, info_.peer, who(), filter);
  }
  if (module_devicebound) {
    // Granted, as before C2D existed, so that a client subscribing to it anyway keeps working.
    ctx_.log->info("connection {} from {}: {}: modules receive no cloud-to-device messages (as in IoT Hub)",
                   info_.id, info_.peer, who());
  }
  if (failure) {
    ctx_.log->warn("connection {} from {}: {}: subscription not stored: {}", info_.id, info_.peer, who(),
                   failure->message);
  }
  queue(ack);
  update_c2d_subscription(c2d);  // after the SUBACK: the first message follows it
  update_twin_methods_subscriptions(method_calls, desired_updates);
}

asio::awaitable<void> connection::on_unsubscribe(const mqtt::unsubscribe& u) {
  std::optional<error> failure;
  std::optional<std::uint8_t> c2d;
  bool method_calls = false;
  bool desired_updates = false;
  std::function<void()> work = [&] {
    for (const std::string& filter : u.filters) {
      if (auto removed = ctx_.svc.sessions.unsubscribe(client_id_, filter); !removed) failure = removed.error();
    }
    const auto subs = ctx_.svc.sessions.subscriptions(client_id_);
    c2d = c2d_qos(subs, client_identity{device_id(), module_id()});
    method_calls = takes_method_calls(subs);
    desired_updates = takes_desired_updates(subs);
  };
  co_await off_thread(ctx_, work);
  if (failure) {
    // MQTT 3.1.1 has no failure code in UNSUBACK: the session keeps the subscription, and the
    // connection ends so the device does not believe otherwise.
    end(fmt::format("unsubscribe not stored: {}", failure->message));
    co_return;
  }
  queue(mqtt::unsuback{u.packet_id});
  update_c2d_subscription(c2d);  // messages already out still settle by PUBACK
  update_twin_methods_subscriptions(method_calls, desired_updates);
}

void connection::on_codec_close(const mqtt::close_connection& c) {
  switch (c.why) {
    case mqtt::close_reason::client_disconnect:
      end("client disconnected");
      return;
    case mqtt::close_reason::keep_alive_timeout:
      end("keep-alive timeout", true);
      return;
    case mqtt::close_reason::protocol_violation: {
      std::string reason = c.detail == mqtt::decode_error::none
                               ? std::string("protocol violation (unexpected packet)")
                               : fmt::format("malformed packet: {}", mqtt::to_string(c.detail));
      // Once connected, the disconnect line gives the reason; before, nothing else would.
      if (!connected_) ctx_.log->info("connection {} from {}: {}; closing", info_.id, info_.peer, reason);
      end(std::move(reason), true);
      return;
    }
  }
}

void connection::queue(const mqtt::packet& p) {
  mqtt::encode(p, out_);
  kick_writer();
}

void connection::kick_writer() {
  if (writing_ || closed_ || out_.empty()) return;
  writing_ = true;
  kick_ns_ = stage_stats::stamp();
  asio::co_spawn(ex(), write_loop(shared_from_this()), [log = ctx_.log, id = info_.id](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log->error("connection {}: MQTT writer failed: {}", id, ex.what());
    }
  });
}

// The one writer of the connection: drains out_ in as few writes as possible (every PUBACK that
// completed while the previous write was in flight goes out in the next one).
asio::awaitable<void> connection::write_loop(std::shared_ptr<connection> self) {
  while (!self->closed_ && !self->out_.empty()) {
    self->sending_.swap(self->out_);
    error_code ec;
    co_await self->t_.write(asio::buffer(self->sending_), ec);
    stage_stats::since(stage_stats::stage::puback_write, std::exchange(self->kick_ns_, 0));
    self->sending_.clear();
    if (ec && !self->closed_) {
      self->end(peer_went_away(ec) ? std::string("connection closed by the device")
                                   : fmt::format("write failed: {}", ec.message()),
                true);
    }
  }
  if (self->sending_.capacity() > write_buffer_keep) std::string().swap(self->sending_);
  if (self->out_.empty() && self->out_.capacity() > write_buffer_keep) std::string().swap(self->out_);
  self->writing_ = false;
  if (self->wake_) self->wake_->cancel();
}

asio::awaitable<void> connection::wait_wake(std::chrono::steady_clock::duration limit) {
  asio::steady_timer wake(ex());
  wake_ = &wake;
  wake.expires_after(limit);
  auto [ec] = co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
  (void)ec;
  wake_ = nullptr;
}

asio::awaitable<void> connection::finish() {
  if (!closed_) {
    // Refused: let the CONNACK reach the device before closing, for a bounded time.
    const auto deadline = std::chrono::steady_clock::now() + flush_timeout;
    while (writing_ && !closed_ && std::chrono::steady_clock::now() < deadline) {
      co_await wait_wake(deadline - std::chrono::steady_clock::now());
    }
    end(end_reason_.empty() ? std::string("closed") : end_reason_);
  }
  // The writer may still be inside a write on the closed transport: it completes with an error
  // at once. Only then may the transport go away.
  while (writing_) co_await wait_wake(std::chrono::seconds(5));

  if (!connected_) {
    ctx_.log->debug("connection {} from {}: MQTT connection ended before CONNECT was accepted ({})", info_.id,
                    info_.peer, end_reason_);
    co_return;
  }
  const bool will = will_due_ && will_ != nullptr;
  ctx_.log->info("connection {} from {}: {} disconnected: {}{}", info_.id, info_.peer, who(), end_reason_,
                 will ? " (sending its Will)" : "");
  if (will) send_will();
  // The table and the session store: detach marks the identity Disconnected in the registry (a
  // storage write), so off this thread. `self` keeps this object, and so its address, alive
  // until then: a new connection can never be mistaken for this one. Then the C2D messages still
  // out go back to the queue (after the detach, so that the service's notification reaches the
  // identity's next connection, if any, and never this one); a receive still running unlocks
  // what it gets when it comes back (on_c2d_received).
  asio::post(ctx_.blocking, [self = shared_from_this(), unlock = c2d_.drain()] {
    const connections::identity id{self->device_id(), self->module_id()};
    self->ctx_.svc.connections.detach(id, self.get(), self->end_reason_);
    self->ctx_.svc.sessions.close(self->client_id_, self->session_token_, self->clean_session_);
    if (self->ctx_.svc.c2d) {
      for (const std::string& token : unlock) self->ctx_.svc.c2d->unlock(self->device_id(), token);
    }
  });
}

// `qos`: c2d_qos() of the session's subscriptions, worked out on the pool (the session store's
// lock is held across storage writes).
void connection::update_c2d_subscription(std::optional<std::uint8_t> qos) {
  if (!ctx_.svc.c2d || closed_) return;
  const auto before = c2d_qos_;
  c2d_qos_ = qos;
  if (c2d_qos_ && !before) {
    c2d_.notify();
    pull_c2d();
  }
}

void connection::pull_c2d() {
  if (!ctx_.svc.c2d || !connected_ || closed_ || !c2d_qos_) return;
  const std::size_t n = c2d_.to_receive();
  if (n == 0) return;
  asio::post(ctx_.blocking, [self = shared_from_this(), n] {
    std::vector<c2d::delivery> got;
    try {
      got = self->ctx_.svc.c2d->receive(self->device_id(), n);
    } catch (const std::exception& e) {
      self->ctx_.log->error("connection {}: receiving C2D messages for {} failed: {}", self->info_.id,
                            self->who(), e.what());
    }
    asio::post(self->ex(), [self, n, got = std::move(got)]() mutable { self->on_c2d_received(n, got); });
  });
}

void connection::on_c2d_received(std::size_t asked, std::vector<c2d::delivery>& got) {
  c2d_.received(asked, got.size());
  c2d_settlement settle;
  if (closed_ || !c2d_qos_) {
    // Gone or unsubscribed while the receive ran: back to the queue, for the next connection.
    for (c2d::delivery& d : got) settle.unlock.push_back(std::move(d.lock_token));
    if (!settle.empty()) settle_c2d(std::move(settle));
    return;
  }
  for (c2d::delivery& d : got) {
    mqtt::publish p;
    p.topic = c2d_topic(d);
    if (p.topic.size() > max_topic_bytes) {
      // Its properties, percent-encoded, do not fit an MQTT topic: no MQTT device can ever take
      // it. Rejected (dead-lettered, Rejected feedback where asked) rather than left to come
      // back here until it expires.
      ctx_.log->warn("connection {} from {}: {}: C2D message {} rejected: its property bag is {} bytes, over MQTT's "
                     "topic limit",
                     info_.id, info_.peer, who(), d.sequence_number, p.topic.size());
      settle.reject.push_back(std::move(d.lock_token));
      continue;
    }
    p.payload = std::move(d.msg.body);
    p.qos = *c2d_qos_;
    if (p.qos == 0) {
      // QoS 0 has no acknowledgement: completed on send, as IoT Hub does (at most once).
      settle.complete.push_back(std::move(d.lock_token));
    } else {
      p.packet_id = c2d_.sent(std::move(d.lock_token));
    }
    mqtt::encode(mqtt::packet{std::move(p)}, out_);
  }
  kick_writer();
  if (!settle.empty()) settle_c2d(std::move(settle));
  pull_c2d();
}

void connection::on_puback(std::uint16_t packet_id) {
  presence_->touch(ctx_.svc.clk.now());
  auto token = c2d_.acked(packet_id);
  // An unknown id (a duplicate PUBACK) is ignored; the completions go out after this read's
  // packets (handle()).
  if (token) c2d_acked_.push_back(std::move(*token));
}

void connection::settle_c2d(c2d_settlement s) {
  asio::post(ctx_.blocking, [self = shared_from_this(), s = std::move(s)] {
    c2d::service& svc = *self->ctx_.svc.c2d;
    const std::string& device = self->device_id();
    const auto report = [&](const result<void>& r, std::string_view what) {
      if (r) return;
      // The lock lapsed before the PUBACK (a slow or stalled device): the message was, or will
      // be, delivered again. Nothing to undo here.
      self->ctx_.log->info("connection {}: C2D {} for {} not settled: {}", self->info_.id, what, self->who(),
                           r.error().message);
    };
    try {
      for (const std::string& token : s.complete) report(svc.complete(device, token), "complete");
      for (const std::string& token : s.reject) report(svc.reject(device, token), "reject");
      for (const std::string& token : s.unlock) svc.unlock(device, token);
    } catch (const std::exception& e) {
      self->ctx_.log->error("connection {}: settling C2D messages for {} failed: {}", self->info_.id, self->who(),
                            e.what());
    }
  });
}

void connection::end(std::string reason, bool will_due) {
  if (closed_) return;
  closed_ = true;
  method_calls_.store(false, std::memory_order_release);  // new calls: DeviceNotOnline at once
  end_reason_ = std::move(reason);
  will_due_ = will_due;
  ++timer_generation_;
  deadline_.cancel();
  if (wake_) wake_->cancel();
  if (shaping_) shaping_->timer.cancel();
  t_.close();
}

// The Will as telemetry, as IoT Hub sends it (iothub-MessageType=Will). Nobody waits for it to be
// durable: the device is gone; a failure goes to the log.
void connection::send_will() {
  auto m = will_telemetry(*will_, sender_, ctx_.svc.clk.now());
  if (!m) return;  // checked at CONNECT
  ctx_.svc.telemetry.send(*m, [log = ctx_.log, id = info_.id, who = who()](result<storage::log_position> r) {
    if (!r) log->info("connection {}: the Will of {} was not stored: {}", id, who, r.error().message);
  });
}

void connection::arm_connect_timeout() {
  connect_deadline_ = std::chrono::steady_clock::now() + ctx_.options.connect_timeout;
  arm_deadline();
}

void connection::arm_keep_alive(std::chrono::milliseconds period) {
  keep_alive_period_ = period;
  next_tick_ = std::chrono::steady_clock::now() + period;
  arm_deadline();
}

void connection::arm_expiry(sys_time at, const char* reason) {
  const auto left = std::chrono::duration_cast<std::chrono::steady_clock::duration>(at - ctx_.svc.clk.now());
  expires_at_ = std::chrono::steady_clock::now() + left;
  expiry_reason_ = reason;
  arm_deadline();
}

void connection::arm_deadline() {
  if (closed_) return;
  std::optional<std::chrono::steady_clock::time_point> due;
  const auto consider = [&due](std::chrono::steady_clock::time_point t) {
    if (!due || t < *due) due = t;
  };
  if (!connected_) {
    consider(connect_deadline_);
  } else {
    if (keep_alive_period_.count() > 0) consider(next_tick_);
    if (expires_at_) consider(*expires_at_);
  }
  const std::uint64_t generation = ++timer_generation_;
  if (!due) {
    deadline_.cancel();
    return;
  }
  deadline_.expires_at(*due);
  deadline_.async_wait([self = shared_from_this(), generation](const error_code& ec) {
    if (ec || generation != self->timer_generation_ || self->closed_) return;
    self->on_deadline();
  });
}

void connection::on_deadline() {
  const auto now = std::chrono::steady_clock::now();
  if (!connected_) {
    if (now >= connect_deadline_) {
      ctx_.log->info("connection {} from {}: no MQTT CONNECT accepted within {} s; closing", info_.id, info_.peer,
                     ctx_.options.connect_timeout.count());
      end("no CONNECT in time");
      return;
    }
  } else {
    if (expires_at_ && now >= *expires_at_) {
      end(expiry_reason_);  // as IoT Hub does: the device reconnects with a new token
      return;
    }
    if (keep_alive_period_.count() > 0 && now >= next_tick_) {
      std::vector<mqtt::event> events;
      codec_.keep_alive_tick(events);
      if (!events.empty()) {
        end("keep-alive timeout", true);
        return;
      }
      next_tick_ = now + keep_alive_period_;
    }
  }
  arm_deadline();
}

}  // namespace

asio::awaitable<void> transport::wait_readable() { co_return; }

// Not a coroutine: the session coroutine is serve(), whose frame owns the connection, so an idle
// connection holds one frame less.
asio::awaitable<void> run_session(transport& t, std::string& first_bytes, const session_context& ctx,
                                  const connection_info& conn) {
  auto c = std::make_shared<connection>(t, ctx, conn, t.executor());
  connection& session = *c;
  return session.serve(std::move(c), first_bytes);
}

}  // namespace hub::mqtt_head
