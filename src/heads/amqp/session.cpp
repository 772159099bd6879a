// The AMQP session over a transport: the one heavy (Asio) TU of the AMQP head. The decisions live
// in light, unit-tested code (codec/amqp, connection.cpp, messages.cpp, grants.cpp); this file
// moves bytes, runs the timer, and carries work to the blocking pool and answers back.
//
// Threads: everything here runs on the connection's executor (one io_context thread), which is
// also the only thread that touches Proton. Token checks run on the blocking pool and telemetry
// completions on the event log's writer thread; both post back, holding only a weak_ptr, so the
// connection is always destroyed on its own thread.
//
// GCC 12 (see src/server/README.md): coroutines here take references from a caller that co_awaits
// them, the spawned writer takes a shared_ptr by value, no capturing lambda is a coroutine, and no
// co_await sits inside a condition.
#include "heads/amqp/session.hpp"

#include "domain/throttling/throttle.hpp"

#include "domain/auth/service.hpp"
#include "domain/c2d/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/methods/service.hpp"
#include "domain/telemetry/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/amqp/feedback_watch.hpp"
#include "heads/amqp/grants.hpp"
#include "heads/amqp/messages.hpp"
#include "heads/amqp/partition_watch.hpp"
#include "heads/amqp/twin_requests.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <exception>
#include <map>
#include <vector>

namespace hub::amqp_head {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};
template <class... F>
overloaded(F...) -> overloaded<F...>;

// The log and the watch of event hub `entity` (connection_options::event_hub_entities): the
// telemetry log and the server's watch for the built-in one.
const storage::event_log& log_of(const services& svc, std::uint32_t entity) {
  if (svc.event_hubs != nullptr && entity < svc.event_hubs->size() && (*svc.event_hubs)[entity].log != nullptr)
    return *(*svc.event_hubs)[entity].log;
  return svc.telemetry.log();
}
partition_watch* watch_of(const services& svc, std::uint32_t entity) {
  if (svc.event_hubs != nullptr && entity < svc.event_hubs->size() && (*svc.event_hubs)[entity].watch != nullptr)
    return (*svc.event_hubs)[entity].watch;
  return svc.watch;
}

// The read buffer grows while reads fill it and shrinks back after a run of small reads, so an
// idle connection (most devices, most of the time) holds 2 KiB, not 16.
constexpr std::size_t read_buffer_min = 2 * 1024;
constexpr std::size_t read_buffer_max = 16 * 1024;
constexpr int small_reads_to_shrink = 16;
// After the reader ends, how long the writer may take to flush before the transport is closed.
constexpr std::chrono::seconds flush_timeout{5};

std::chrono::milliseconds now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch());
}

class live;

std::string key_of(const connections::identity& who) { return who.device_id + "/" + who.module_id; }

// A device or module connected through this AMQP connection, as the connection table sees it.
// Any thread may close it (another connection of the same identity replaced it), say its C2D
// queue has messages, push a desired patch or call a method: the work goes to the connection's
// thread.
class identity_link final : public messaging::device_link {
 public:
  identity_link(std::weak_ptr<live> conn, asio::any_io_executor ex, connections::identity who)
      : conn_(std::move(conn)), ex_(std::move(ex)), who_(std::move(who)) {}
  void close(std::string reason) override;
  void c2d_available() override;
  bool invoke_method(const messaging::method_call& call) override;
  void desired_properties(std::string patch_json) override;
  const connections::identity& who() const { return who_; }
  // Set on the connection's thread when the identity's methods links are attached (or gone).
  void set_takes_methods(bool yes) { takes_methods_.store(yes, std::memory_order_release); }

 private:
  std::weak_ptr<live> conn_;
  asio::any_io_executor ex_;
  connections::identity who_;
  std::atomic<bool> takes_methods_{false};
};

// One AMQP connection. Owned by shared_ptrs: the session coroutine's and the writer's. Work
// handed to other threads holds a weak_ptr. The transport is used only while the session
// coroutine runs.
class live final : public std::enable_shared_from_this<live> {
 public:
  live(transport& t, const session_context& ctx, const connection_info& info, const asio::any_io_executor& ex)
      : t_(t),
        ctx_(ctx),
        info_(info),
        ex_(ex),
        conn_(ctx.options, ctx.svc.clk, ctx.log, fmt::format("connection {}", info.id)),
        wake_(ex),
        done_(ex) {}

  asio::awaitable<void> serve(std::string_view first_bytes);
  // The connection table dropped `who` (identity_link::close); on the connection's thread.
  void drop(const connections::identity& who, const std::string& reason);
  // The device's C2D queue has messages (identity_link::c2d_available); on the connection's thread.
  void c2d_available(const std::string& device_id);
  // identity_link::invoke_method and desired_properties, on the connection's thread.
  void invoke_method(const connections::identity& who, const messaging::method_call& call);
  void desired_properties(const connections::identity& who, const std::string& patch_json);

 private:
  static asio::awaitable<void> write_loop(std::shared_ptr<live> self);
  asio::awaitable<void> read_loop();

  void run(std::vector<work>& items);
  void kick() { wake_.cancel(); }
  // A token or certificate was accepted: tell the server once (only while serve() runs: the
  // callers check closed_, which is set before it returns).
  void authenticated() {
    if (!info_.on_authenticated) return;
    auto f = std::move(info_.on_authenticated);
    info_.on_authenticated = nullptr;
    f();
  }
  void attach(const connections::identity& who);
  void send_telemetry(append_telemetry_work& a);
  void shape_telemetry(append_telemetry_work& a);
  void release_delayed();
  void detach(const connections::identity& who, const std::string& reason);

  transport& t_;
  const session_context& ctx_;
  connection_info info_;
  asio::any_io_executor ex_;
  connection conn_;
  asio::steady_timer wake_;  // the writer waits on it: new output, or the next timer deadline
  asio::steady_timer done_;  // the session waits on it for the writer to finish
  // The reader waits on it while a slow peer's output waits; it lives in read_loop's frame, only
  // while the reader waits.
  asio::steady_timer* reader_wake_ = nullptr;
  std::string out_;          // the bytes being written
  bool read_ended_ = false;
  bool closed_ = false;       // the transport is closed: nothing touches it any more
  bool writer_done_ = false;
  std::map<std::string, std::shared_ptr<identity_link>> identity_links_;  // by "<device>/<module>"
  certificates::client_chain chain_;  // the TLS client certificate, for X.509 devices
  // Telemetry over the D2C rate waits here for its turn, in arrival order (IoT Hub's traffic
  // shaping): its disposition comes later. The links' credit bounds how many wait.
  struct delayed_append {
    std::chrono::steady_clock::time_point due;
    append_telemetry_work work;
  };
  // Allocated when first needed: connections of a hub without throttles hold a pointer.
  struct shaping {
    explicit shaping(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::deque<delayed_append> queue;
    bool armed = false;
  };
  std::unique_ptr<shaping> shaping_;
};

void identity_link::close(std::string reason) {
  asio::post(ex_, [conn = conn_, who = who_, reason = std::move(reason)] {
    if (auto s = conn.lock()) s->drop(who, reason);
  });
}

void identity_link::c2d_available() {
  if (!who_.module_id.empty()) return;
  asio::post(ex_, [conn = conn_, device = who_.device_id] {
    if (auto s = conn.lock()) s->c2d_available(device);
  });
}

bool identity_link::invoke_method(const messaging::method_call& call) {
  if (!takes_methods_.load(std::memory_order_acquire)) return false;
  asio::post(ex_, [conn = conn_, who = who_, call] {
    if (auto s = conn.lock()) s->invoke_method(who, call);
  });
  return true;
}

void identity_link::desired_properties(std::string patch_json) {
  asio::post(ex_, [conn = conn_, who = who_, patch = std::move(patch_json)] {
    if (auto s = conn.lock()) s->desired_properties(who, patch);
  });
}

void live::invoke_method(const connections::identity& who, const messaging::method_call& call) {
  if (closed_) return;
  std::vector<work> w;
  conn_.invoke_method(who, call, w);
  run(w);
  kick();
}

void live::desired_properties(const connections::identity& who, const std::string& patch_json) {
  if (closed_) return;
  std::vector<work> w;
  conn_.desired_properties(who, patch_json, w);
  run(w);
  kick();
}

void live::c2d_available(const std::string& device_id) {
  if (closed_) return;
  std::vector<work> w;
  conn_.c2d_available(device_id, w);
  run(w);
  kick();
}

void live::drop(const connections::identity& who, const std::string& reason) {
  if (closed_) return;
  std::vector<work> w;
  conn_.drop_identity(who, reason, w);
  run(w);
  kick();
}

void live::attach(const connections::identity& who) {
  auto link = std::make_shared<identity_link>(weak_from_this(), ex_, who);
  identity_links_[key_of(who)] = link;
  // attach() writes the registry: on the pool. The answer comes back here; if the connection
  // has ended by then, the identity is detached again at once.
  asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, blocking = ctx_.blocking, ex = ex_, link, who]() {
    result<std::shared_ptr<registry::presence>> r = make_error(errc::server_error, "");
    // IoT Hub's "new device connections" throttle, as for an MQTT CONNECT: counted when an
    // identity's first link comes (a token renewal is no new connection). Over the rate its links
    // close with com.microsoft:device-container-throttled, which the SDKs raise as ThrottlingError
    // and retry (a refused CBS put-token would be an UnauthorizedError, never retried).
    auto admitted = svc->throttles != nullptr ? svc->throttles->admit(throttling::operation::connect, who.device_id)
                                              : result<std::chrono::nanoseconds>(std::chrono::nanoseconds(0));
    if (!admitted) {
      r = admitted.error();
    } else if (auto attached = svc->connections.attach(who, link); attached) {
      if (attached->previous) attached->previous->close("replaced by a new connection of the same identity");
      r = attached->presence;
    } else {
      r = attached.error();
    }
    asio::post(ex, [self, svc, blocking, link, who, r = std::move(r)]() mutable {
      auto s = self.lock();
      if (!s || s->closed_) {
        if (r) asio::post(blocking, [svc, link, who] { svc->connections.detach(who, link.get(), "connection closed"); });
        return;
      }
      std::vector<work> more;
      s->conn_.identity_attached(who, std::move(r), more);
      s->run(more);
      s->kick();
    });
  });
}

void live::detach(const connections::identity& who, const std::string& reason) {
  auto it = identity_links_.find(key_of(who));
  if (it == identity_links_.end()) return;
  std::shared_ptr<identity_link> link = std::move(it->second);
  identity_links_.erase(it);
  asio::post(ctx_.blocking, [svc = &ctx_.svc, link, who, reason] { svc->connections.detach(who, link.get(), reason); });
}

asio::awaitable<void> live::serve(std::string_view first_bytes) {
  ctx_.log->debug("connection {} from {}: {} session", info_.id, info_.peer, info_.via);
  chain_ = t_.peer_certificates();
  conn_.client_certificate_presented(!chain_.leaf.empty() && ctx_.svc.certs != nullptr);
  {
    std::vector<work> w;
    conn_.recv({first_bytes.data(), first_bytes.size()}, w);
    run(w);
  }
  asio::co_spawn(ex_, write_loop(shared_from_this()), [log = ctx_.log, id = info_.id](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log->error("connection {}: AMQP writer failed: {}", id, ex.what());
    }
  });
  co_await read_loop();

  // The writer flushes what is left (a close frame), then closes the transport.
  kick();
  const auto deadline = std::chrono::steady_clock::now() + flush_timeout;
  while (!writer_done_) {
    if (std::chrono::steady_clock::now() >= deadline) {
      closed_ = true;
      t_.close();  // a peer that does not read: the pending write fails, the writer ends
      break;
    }
    done_.expires_at(deadline);
    co_await done_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  closed_ = true;
  t_.close();
  {
    // Locks still held (normally given back when the transport closed) go back to the queues.
    std::vector<work> w;
    conn_.release_locks(w);
    run(w);
  }
  for (const connections::identity& who : conn_.attached_identities()) detach(who, "connection closed");
  ctx_.log->debug("connection {} from {}: {} session ended", info_.id, info_.peer, info_.via);
}

asio::awaitable<void> live::read_loop() {
  std::vector<char> buf(read_buffer_min);
  int small_reads = 0;
  for (;;) {
    // Back-pressure: a peer that does not read what it asked for (twin answers, method calls,
    // deliveries) is not read either while that much waits for it.
    while (!closed_ && out_.size() > ctx_.options.max_unwritten_bytes) {
      asio::steady_timer wake(ex_);
      wake.expires_after(std::chrono::seconds(1));
      reader_wake_ = &wake;
      auto [wait_ec] = co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
      reader_wake_ = nullptr;
      (void)wait_ec;
    }
    if (closed_) co_return;
    error_code ec;
    const std::size_t n = co_await t_.read_some(asio::buffer(buf), ec);
    if (closed_) co_return;  // the writer closed the transport
    std::vector<work> w;
    if (n > 0) conn_.recv({buf.data(), n}, w);
    // After the bytes are handed over: resizing may drop them.
    if (n == buf.size() && buf.size() < read_buffer_max) {
      buf.resize(buf.size() * 2);
      small_reads = 0;
    } else if (n < read_buffer_min / 4 && buf.size() > read_buffer_min && ++small_reads >= small_reads_to_shrink) {
      std::vector<char>(read_buffer_min).swap(buf);
      small_reads = 0;
    }
    if (ec) {
      conn_.read_closed(w);
      read_ended_ = true;
      run(w);
      co_return;
    }
    run(w);
    kick();
    if (conn_.finished()) co_return;
  }
}

asio::awaitable<void> live::write_loop(std::shared_ptr<live> self) {
  live& s = *self;
  while (!s.closed_) {
    if (s.out_.empty()) s.out_ = s.conn_.take_output();
    if (!s.out_.empty()) {
      {
        std::vector<work> w;
        s.conn_.writing(s.out_.size(), w);
        s.run(w);
      }
      error_code ec;
      co_await s.t_.write(asio::buffer(s.out_), ec);
      s.out_.clear();
      if (!ec && !s.closed_) {
        std::vector<work> w;
        s.conn_.writing(0, w);
        s.run(w);
      }
      if (s.reader_wake_) s.reader_wake_->cancel();  // a reader held back by this write goes on
      if (s.out_.capacity() > read_buffer_max) std::string().swap(s.out_);  // a burst is over
      if (ec) {
        std::vector<work> w;
        s.conn_.write_failed(w);
        s.run(w);
        break;
      }
      continue;
    }
    if (s.conn_.finished()) break;
    if (s.read_ended_) {
      // The peer sent its last byte and we have said ours: nothing more can happen.
      std::vector<work> w;
      s.conn_.write_failed(w);
      s.run(w);
      break;
    }
    std::vector<work> w;
    const std::optional<std::chrono::milliseconds> next = s.conn_.tick(now_ms(), w);
    s.run(w);
    if (s.conn_.has_output() || s.conn_.finished()) continue;
    if (next) {
      s.wake_.expires_at(std::chrono::steady_clock::time_point(std::chrono::duration_cast<std::chrono::steady_clock::duration>(*next)));
    } else {
      s.wake_.expires_at(std::chrono::steady_clock::time_point::max());
    }
    co_await s.wake_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  s.closed_ = true;
  s.t_.close();  // ends the reader's pending read
  s.writer_done_ = true;
  s.done_.cancel();
}

void live::send_telemetry(append_telemetry_work& a) {
  // The completion runs on the event log's writer thread once the message is durable (or at
  // once, when the service refuses it).
  ctx_.svc.telemetry.send(a.message, [self = weak_from_this(), ex = ex_, ticket = a.ticket](result<storage::log_position> r) {
    result<void> outcome = r ? result<void>() : result<void>(r.error());
    asio::post(ex, [self, ticket, outcome = std::move(outcome)]() mutable {
      auto s = self.lock();
      if (!s || s->closed_) return;
      std::vector<work> more;
      s->conn_.telemetry_appended(ticket, std::move(outcome), more);
      s->run(more);
      s->kick();
    });
  });
}

// IoT Hub's D2C throttle with traffic shaping: within the rate a message goes at once; over it,
// it waits its turn (its disposition comes later; the link's credit, 100, bounds how many wait);
// past the backlog it is rejected with com.microsoft:device-container-throttled, which the SDKs
// raise as ThrottlingError and retry with their throttling back-off.
void live::shape_telemetry(append_telemetry_work& a) {
  auto admitted = ctx_.svc.throttles->admit(throttling::operation::d2c, a.message.device_id, true);
  if (!admitted) {
    asio::post(ex_, [self = weak_from_this(), ticket = a.ticket, e = admitted.error()]() mutable {
      auto s = self.lock();
      if (!s || s->closed_) return;
      std::vector<work> more;
      s->conn_.telemetry_appended(ticket, std::move(e), more);
      s->run(more);
      s->kick();
    });
    return;
  }
  if (admitted->count() == 0 && (!shaping_ || shaping_->queue.empty())) {
    send_telemetry(a);
    return;
  }
  if (!shaping_) shaping_ = std::make_unique<shaping>(ex_);
  auto& queue = shaping_->queue;
  // Behind those already waiting, whatever its own delay: the log keeps the device's order.
  auto due = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(*admitted);
  if (!queue.empty()) due = std::max(due, queue.back().due);
  queue.push_back(delayed_append{due, std::move(a)});
  if (shaping_->armed) return;
  shaping_->armed = true;
  shaping_->timer.expires_at(queue.front().due);
  shaping_->timer.async_wait([self = weak_from_this()](const error_code&) {
    if (auto s = self.lock()) s->release_delayed();
  });
}

void live::release_delayed() {
  shaping_->armed = false;
  if (closed_) return;  // never acknowledged: the device sends them again
  auto& queue = shaping_->queue;
  const auto now = std::chrono::steady_clock::now();
  while (!queue.empty() && queue.front().due <= now) {
    send_telemetry(queue.front().work);
    queue.pop_front();
  }
  if (queue.empty()) return;
  shaping_->armed = true;
  shaping_->timer.expires_at(queue.front().due);
  shaping_->timer.async_wait([self = weak_from_this()](const error_code&) {
    if (auto s = self.lock()) s->release_delayed();
  });
}

void live::run(std::vector<work>& items) {
  for (work& item : items) {
    std::visit(overloaded{
                   [&](check_token_work& c) {
                     // Blocks on storage: to the pool, and the answer back to this thread.
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, ex = ex_, c = std::move(c)]() {
                       result<grant> r = check_token(token_services{svc->auth, svc->registry}, c.aud, c.token);
                       asio::post(ex, [self, ticket = c.ticket, r = std::move(r)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         if (r) s->authenticated();
                         std::vector<work> more;
                         s->conn_.token_checked(ticket, std::move(r), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](append_telemetry_work& a) {
                     if (ctx_.svc.throttles != nullptr) {
                       shape_telemetry(a);
                     } else {
                       send_telemetry(a);
                     }
                   },
                   [&](attach_identity_work& a) { attach(a.who); },
                   [&](detach_identity_work& d) { detach(d.who, d.reason); },
                   [&](read_events_work& r) {
                     // Segment files: on the pool.
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, ex = ex_, r]() {
                       const storage::event_log& log = log_of(*svc, r.entity);
                       const std::int64_t from = r.start ? resolve_position(log, r.partition, *r.start) : r.from_sequence;
                       auto records = log.read(r.partition, from, r.max_records);
                       result<events_read> answer = make_error(errc::server_error, "");
                       if (records) {
                         events_read e;
                         e.next_sequence = records->empty() ? from : records->back().sequence + 1;
                         e.records = std::move(*records);
                         answer = std::move(e);
                       } else {
                         answer = records.error();
                       }
                       asio::post(ex, [self, ticket = r.ticket, answer = std::move(answer)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         std::vector<work> more;
                         s->conn_.events_ready(ticket, std::move(answer), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](wait_events_work& w) {
                     partition_watch* watch = watch_of(ctx_.svc, w.entity);
                     if (watch == nullptr) return;
                     watch->wait(w.partition, w.next_sequence, weak_from_this(),
                                          [self = weak_from_this(), ex = ex_, link = w.link] {
                                            asio::post(ex, [self, link] {
                                              auto s = self.lock();
                                              if (!s || s->closed_) return;
                                              std::vector<work> more;
                                              s->conn_.partition_data(link, more);
                                              s->run(more);
                                              s->kick();
                                            });
                                          });
                   },
                   [&](check_certificate_work& c) {
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, ex = ex_, c, chain = chain_]() {
                       result<grant> r =
                           check_certificate(certificate_services{*svc->certs, svc->registry}, chain, c.who.device_id,
                                             c.who.module_id);
                       asio::post(ex, [self, ticket = c.ticket, r = std::move(r)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         if (r) s->authenticated();
                         std::vector<work> more;
                         s->conn_.certificate_checked(ticket, std::move(r), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](claim_partition_work& c) {
                     // A mutex and a few comparisons: on this thread. Receivers it displaces are
                     // ended on their own connections' threads.
                     std::optional<partition_watch::refusal> refusal;
                     if (partition_watch* watch = watch_of(ctx_.svc, c.entity); watch != nullptr) {
                       partition_watch::holder h;
                       h.conn = this;
                       h.link = c.link;
                       h.owner = weak_from_this();
                       h.epoch = c.epoch;
                       h.displace = [self = weak_from_this(), ex = ex_, link = c.link](std::string reason) {
                         asio::post(ex, [self, link, reason = std::move(reason)] {
                           auto s = self.lock();
                           if (!s || s->closed_) return;
                           std::vector<work> more;
                           s->conn_.partition_stolen(link, reason, more);
                           s->run(more);
                           s->kick();
                         });
                       };
                       refusal = watch->claim(c.partition, c.consumer_group, std::move(h));
                     }
                     std::vector<work> more;
                     conn_.partition_claimed(c.link, refusal, more);
                     run(more);
                   },
                   [&](release_partition_work& r) {
                     if (partition_watch* watch = watch_of(ctx_.svc, r.entity); watch != nullptr)
                       watch->release(r.partition, r.consumer_group, this, r.link);
                   },
                   [&](c2d_send_work& c) {
                     // A durable write: on the pool.
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, ex = ex_, c = std::move(c)]() mutable {
                       result<void> r = make_error(errc::invalid_operation, "Cloud-to-device messages are not served");
                       // IoT Hub's C2D send throttle: the message is rejected with
                       // com.microsoft:device-container-throttled (the service SDK's ThrottlingError).
                       auto admitted = svc->throttles != nullptr
                                           ? svc->throttles->admit(throttling::operation::c2d, c.device_id)
                                           : result<std::chrono::nanoseconds>(std::chrono::nanoseconds(0));
                       if (!admitted) {
                         r = admitted.error();
                       } else if (svc->c2d != nullptr) {
                         auto sent = svc->c2d->send(c.device_id, std::move(c.message));
                         r = sent ? result<void>() : result<void>(sent.error());
                       }
                       asio::post(ex, [self, ticket = c.ticket, r = std::move(r)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         std::vector<work> more;
                         s->conn_.c2d_sent(ticket, std::move(r), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](c2d_receive_work& c) {
                     if (ctx_.svc.c2d == nullptr) return;
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, blocking = ctx_.blocking,
                                                ex = ex_, c = std::move(c)]() {
                       std::vector<c2d::delivery> got = svc->c2d->receive(c.device_id, c.max);
                       if (got.empty() && self.expired()) return;
                       asio::post(ex, [self, svc, blocking, link = c.link, got = std::move(got)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) {
                           // The connection ended meanwhile: the messages go back to the queue now,
                           // not when their locks lapse.
                           if (!got.empty())
                             asio::post(blocking, [svc, got = std::move(got)] {
                               for (const c2d::delivery& d : got) svc->c2d->unlock(d.device_id, d.lock_token);
                             });
                           return;
                         }
                         std::vector<work> more;
                         s->conn_.c2d_received(link, std::move(got), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](c2d_settle_work& c) {
                     if (ctx_.svc.c2d == nullptr) return;
                     asio::post(ctx_.blocking, [svc = &ctx_.svc, log = ctx_.log, id = info_.id, c = std::move(c)]() {
                       result<void> r;
                       switch (c.action) {
                         case c2d_action::complete: r = svc->c2d->complete(c.device_id, c.lock_token); break;
                         case c2d_action::reject: r = svc->c2d->reject(c.device_id, c.lock_token); break;
                         case c2d_action::abandon: r = svc->c2d->abandon(c.device_id, c.lock_token); break;
                         case c2d_action::unlock: svc->c2d->unlock(c.device_id, c.lock_token); break;
                       }
                       // The device settled presettled (rhea does): nothing to tell it. A lock that
                       // lapsed means the message was (or will be) delivered again.
                       if (!r) log->info("connection {}: settling a cloud-to-device message of '{}': {}", id, c.device_id,
                                         r.error().message);
                     });
                   },
                   [&](feedback_receive_work& f) {
                     if (ctx_.svc.c2d == nullptr) return;
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, blocking = ctx_.blocking, ex = ex_,
                                                link = f.link]() {
                       // The generation before the receive: news after it wakes the wait at once.
                       const std::uint64_t generation = svc->feedback != nullptr ? svc->feedback->generation() : 0;
                       std::optional<c2d::feedback_batch> b = svc->c2d->receive_feedback();
                       asio::post(ex, [self, svc, blocking, link, generation, b = std::move(b)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) {
                           if (b) asio::post(blocking, [svc, token = b->lock_token] { svc->c2d->abandon_feedback(token); });
                           return;
                         }
                         std::vector<work> more;
                         s->conn_.feedback_received(link, std::move(b), generation, more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](feedback_wait_work& f) {
                     if (ctx_.svc.feedback == nullptr) return;
                     ctx_.svc.feedback->wait(f.generation, weak_from_this(), [self = weak_from_this(), ex = ex_, link = f.link] {
                       asio::post(ex, [self, link] {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         std::vector<work> more;
                         s->conn_.feedback_available(link, more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](feedback_settle_work& f) {
                     if (ctx_.svc.c2d == nullptr) return;
                     asio::post(ctx_.blocking, [svc = &ctx_.svc, log = ctx_.log, id = info_.id, f = std::move(f)]() {
                       if (!f.complete) {
                         svc->c2d->abandon_feedback(f.lock_token);
                         return;
                       }
                       if (auto r = svc->c2d->complete_feedback(f.lock_token); !r)
                         log->info("connection {}: completing a feedback batch: {}", id, r.error().message);
                     });
                   },
                   [&](twin_work& t) {
                     // Reads and synced writes of the twin: on the pool.
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, ex = ex_, t = std::move(t)]() {
                       // IoT Hub's twin throttle: over the rate, status 429 (the SDK's ThrottlingError).
                       auto admitted = svc->throttles != nullptr
                                           ? svc->throttles->admit(throttling::operation::twin_device, t.who.device_id)
                                           : result<std::chrono::nanoseconds>(std::chrono::nanoseconds(0));
                       twin_answer a = !admitted ? twin_error(admitted.error(), svc->clk.now())
                                       : svc->twins != nullptr
                                           ? answer_twin(*svc->twins, t.who, t.op, t.body, svc->clk.now())
                                           : twin_error(make_error(errc::invalid_operation, "Twins are not served"),
                                                        svc->clk.now());
                       asio::post(ex, [self, ticket = t.ticket, a = std::move(a)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         std::vector<work> more;
                         s->conn_.twin_answered(ticket, std::move(a), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
                   [&](methods_ready_work& m) {
                     auto it = identity_links_.find(key_of(m.who));
                     if (it == identity_links_.end()) return;
                     it->second->set_takes_methods(m.ready);
                     // Calls waiting for the identity (connectTimeoutInSeconds) go now; ready()
                     // reaches back through the table and invoke_method, so not on this thread.
                     if (m.ready && ctx_.svc.methods != nullptr)
                       asio::post(ctx_.blocking, [svc = &ctx_.svc, who = m.who] {
                         svc->methods->ready(methods::identity{who.device_id, who.module_id});
                       });
                   },
                   [&](method_response_work& m) {
                     if (ctx_.svc.methods == nullptr) return;
                     // The completion it runs posts the HTTP answer; keep it off the I/O thread.
                     asio::post(ctx_.blocking, [svc = &ctx_.svc, log = ctx_.log, id = info_.id, m = std::move(m)]() mutable {
                       auto r = svc->methods->respond(methods::identity{m.who.device_id, m.who.module_id},
                                                      m.response.request_id, m.response.status,
                                                      std::move(m.response.payload));
                       // A late answer (the call timed out): nobody waits for it any more.
                       if (!r) log->info("connection {}: method response of '{}': {}", id, m.who.device_id, r.error().message);
                     });
                   },
                   [&](partition_info_work& p) {
                     asio::post(ctx_.blocking, [self = weak_from_this(), svc = &ctx_.svc, ex = ex_, p]() {
                       result<storage::partition_stats> st = log_of(*svc, p.entity).stats(p.partition);
                       asio::post(ex, [self, ticket = p.ticket, st = std::move(st)]() mutable {
                         auto s = self.lock();
                         if (!s || s->closed_) return;
                         std::vector<work> more;
                         s->conn_.partition_info_ready(ticket, std::move(st), more);
                         s->run(more);
                         s->kick();
                       });
                     });
                   },
               },
               item);
  }
  items.clear();
}

}  // namespace

connection_options default_options(const services& svc) {
  connection_options o;
  o.hub_name = hub_name_of(svc.auth.identity().host_name);
  o.serve_twins = svc.twins != nullptr;
  o.serve_methods = svc.methods != nullptr;
  if (svc.watch != nullptr) {
    o.event_hub_partitions = svc.telemetry.log().partitions();
    if (svc.event_hubs != nullptr) {
      for (const event_hub& h : *svc.event_hubs) o.event_hub_entities.push_back(h.name);
    }
    o.event_hub_created_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(svc.clk.now().time_since_epoch()).count();
  }
  return o;
}

asio::awaitable<void> run_session(transport& t, std::string_view first_bytes, const session_context& ctx,
                                  const connection_info& conn) {
  auto ex = co_await asio::this_coro::executor;
  auto c = std::make_shared<live>(t, ctx, conn, ex);
  co_await c->serve(first_bytes);
}

}  // namespace hub::amqp_head
