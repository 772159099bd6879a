// The AMQP driver: Proton's io::connection_driver with a messaging_handler that only records
// what happened as events. All decisions are the caller's, made after dispatch() returns, so no
// hub logic ever runs inside a Proton callback.
#include "codec/amqp/driver.hpp"

#include "codec/amqp/frame_guard.hpp"

#include <proton/binary.hpp>
#include <proton/codec/map.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/delivery.hpp>
#include <proton/duration.hpp>
#include <proton/io/connection_driver.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sasl.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/session.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/target.hpp>
#include <proton/target_options.hpp>
#include <proton/timestamp.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>

// The C API, for the few things the C++ binding does not expose: an error condition on a
// rejected outcome, the advertised max-message-size, the size of a partial delivery.
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/logger.h>
#include <proton/sasl.h>
#include <proton/sasl_plugin.h>
#include <proton/session.h>
#include <proton/transport.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

namespace hub::amqp {
namespace {

// The pn_*_t behind a C++ wrapper. The binding keeps it protected (pn_object()); naming it
// through a derived class is the standard way to reach a protected member. Used only for the C
// calls listed above, on objects the driver owns.
template <class T>
struct raw_access : proton::internal::object<T> {
  static T* of(const proton::internal::object<T>& o) { return (o.*(&raw_access::pn_object))(); }
};
pn_link_t* raw(const proton::link& l) { return raw_access<pn_link_t>::of(l); }
pn_delivery_t* raw(const proton::transfer& t) { return raw_access<pn_delivery_t>::of(t); }
pn_connection_t* raw(const proton::connection& c) { return raw_access<pn_connection_t>::of(c); }
pn_transport_t* raw(const proton::transport& t) { return raw_access<pn_transport_t>::of(t); }

std::string c_string(const char* s) { return s ? std::string(s) : std::string(); }

// Our delivery tags are the 8 bytes of the delivery id, so a tracker names its delivery.
proton::binary tag_of(delivery_id id) {
  proton::binary tag(8, 0);
  for (int i = 0; i < 8; ++i) tag[i] = static_cast<std::uint8_t>(id >> (8 * (7 - i)));
  return tag;
}
std::optional<delivery_id> id_of(const proton::binary& tag) {
  if (tag.size() != 8) return std::nullopt;
  delivery_id id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | static_cast<std::uint8_t>(tag[i]);
  return id;
}

// Proton's typed getters throw when a peer sends a value of an unexpected AMQP type (attach
// properties that are not a symbol-keyed map, say). Peers are untrusted, so such values are
// read here as "absent" and never escape as exceptions.
std::map<proton::symbol, proton::value> properties_of(const proton::link& l) {
  try {
    return l.properties();
  } catch (const std::exception&) {
    return {};
  }
}
// The filter set of the peer's source, for links we send on (Event Hubs receivers put their
// position there). Receiving links have no use for one.
std::map<proton::symbol, proton::value> filters_of(const proton::receiver&) { return {}; }
std::map<proton::symbol, proton::value> filters_of(const proton::sender& s) {
  std::map<proton::symbol, proton::value> out;
  try {
    const proton::value v = s.source().filters().value();
    if (!v.empty()) proton::get(v, out);
  } catch (const std::exception&) {
    out.clear();
  }
  return out;
}

// The server's SASL. Proton's built-in server (default_sasl.c) passes the client's mechanism to
// strcmp unchecked, and it is NULL when a sasl-init frame carries none: one malformed frame
// crashed the process (found by fuzz_amqp). This is the same policy, ANONYMOUS only (identity
// comes later, from CBS or the TLS certificate), with that case refused.
namespace server_sasl {
void free_context(pn_transport_t*) {}
const char* mechanisms(pn_transport_t*) { return "ANONYMOUS"; }
bool init_server(pn_transport_t* t) {
  pnx_sasl_set_desired_state(t, SASL_POSTED_MECHANISMS);
  return true;
}
bool init_client(pn_transport_t*) { return false; }
void prepare_write(pn_transport_t*) {}
// Marks a transport whose sasl-init was answered. Proton keeps reading sasl-init frames after the
// first and leaks the mechanism string of each (0.37): a second one ends the transport.
char init_seen;

void process_init(pn_transport_t* t, const char* mechanism, const pn_bytes_t*) {
  if (pnx_sasl_get_context(t) == &init_seen) {
    pnx_sasl_error(t, "More than one sasl-init", "amqp:unauthorized-access");
    pnx_sasl_set_failed(t);
    pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
    return;
  }
  pnx_sasl_set_context(t, &init_seen);
  if (mechanism != nullptr && std::strcmp(mechanism, "ANONYMOUS") == 0) {
    pnx_sasl_set_succeeded(t, "anonymous", nullptr);
  } else {
    pnx_sasl_set_failed(t);
  }
  pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}
void process_response(pn_transport_t*, const pn_bytes_t*) {}
bool process_mechanisms(pn_transport_t*, const char*) { return false; }
void process_challenge(pn_transport_t*, const pn_bytes_t*) {}
void process_outcome(pn_transport_t*, const pn_bytes_t*) {}
bool can_encrypt(pn_transport_t*) { return false; }
ssize_t max_encrypt_size(pn_transport_t*) { return 0; }
ssize_t encode(pn_transport_t*, pn_bytes_t, pn_bytes_t*) { return 0; }
ssize_t decode(pn_transport_t*, pn_bytes_t, pn_bytes_t*) { return 0; }

const pnx_sasl_implementation implementation = {
    free_context,    mechanisms,        init_server,       init_client,     prepare_write,
    process_init,    process_response,  process_mechanisms, process_challenge, process_outcome,
    can_encrypt,     max_encrypt_size,  encode,            decode,
};
}  // namespace server_sasl

}  // namespace

proton::error_condition condition(std::string name, std::string description) {
  return proton::error_condition(std::move(name), std::move(description));
}

struct driver::impl final : proton::messaging_handler {
  struct link_entry {
    proton::receiver receiver;  // set when we receive on the link
    proton::sender sender;      // set when we send on it
    bool requested = false;     // the peer attached it and we have not answered yet
    bool we_receive() const { return static_cast<bool>(receiver); }
    const proton::link& link() const {
      if (we_receive()) return receiver;
      return sender;
    }
  };
  struct received_entry {
    proton::delivery delivery;
    link_id link = 0;
  };

  impl(role r, const driver_options& o) : role_(r), opts_(o) {
    proton::connection_options co(*this);
    co.container_id(opts_.container_id);
    co.max_frame_size(opts_.max_frame_size);
    co.max_sessions(opts_.max_sessions);
    if (opts_.idle_timeout.count() > 0) co.idle_timeout(proton::duration(opts_.idle_timeout.count()));
    if (role_ == role::server) {
      // Leaving SASL unconfigured lets Proton's server detect either header: "AMQP 3 1 0 0"
      // gets the SASL layer (ANONYMOUS, or EXTERNAL with a TLS identity), "AMQP 0 1 0 0" goes
      // straight to AMQP (the Azure IoT SDKs skip SASL and authenticate by CBS).
      driver_.accept(co);
      pn_transport_t* t = raw(driver_.transport());
      pn_sasl(t);  // made now (not when a SASL header arrives) so that it gets our implementation
      pnx_sasl_set_implementation(t, &server_sasl::implementation, nullptr);
      // Proton prints errors caused by the peer's bytes to stderr; they reach the head as the
      // transport's condition (transport_closed) instead, which logs them once, with the
      // connection's id. Frame traces (PN_TRACE_FRM=1) still work.
      pn_logger_reset_mask(pn_transport_logger(t), PN_SUBSYSTEM_ALL, PN_LEVEL_ERROR | PN_LEVEL_WARNING | PN_LEVEL_INFO);
    } else {
      co.sasl_enabled(opts_.client_sasl);
      if (opts_.client_sasl) {
        co.sasl_allowed_mechs(opts_.client_mechanisms);
        co.sasl_allow_insecure_mechs(true);  // PLAIN in tests; the head runs under TLS
        if (!opts_.client_user.empty()) co.user(opts_.client_user);
        if (!opts_.client_password.empty()) co.password(opts_.client_password);
      }
      if (!opts_.client_hostname.empty()) co.virtual_host(opts_.client_hostname);
      driver_.connect(co);
    }
  }

  // --- dispatch ---

  void dispatch(std::vector<event>& out) {
    out_ = &out;
    for (int round = 0; round < 4; ++round) {
      active_ = driver_.dispatch();
      if (!enforce_size_limits()) break;
    }
    check_decode_failure();
    active_ = driver_.dispatch();
    out_ = nullptr;
  }

  // Closes every receiving link whose delivery in progress grew past max_message_size. True
  // when something was closed (dispatch again to flush the detach).
  bool enforce_size_limits() {
    if (opts_.max_message_size == 0) return false;
    bool closed = false;
    for (auto it = links_.begin(); it != links_.end();) {
      link_entry& e = it->second;
      pn_delivery_t* current = e.we_receive() ? pn_link_current(raw(e.link())) : nullptr;
      if (current == nullptr || !pn_delivery_partial(current) || pn_delivery_pending(current) <= opts_.max_message_size) {
        ++it;
        continue;
      }
      const auto error = condition("amqp:link:message-size-exceeded",
                                   "The message exceeds the link's maximum message size of " +
                                       std::to_string(opts_.max_message_size) + " bytes");
      proton::link l = e.link();
      l.close(error);
      forget_deliveries(it->first);
      link_ids_.erase(l);
      if (out_) out_->push_back(link_closed{it->first, false, error});
      it = links_.erase(it);
      closed = true;
    }
    return closed;
  }

  // Proton's dispatch() turns an exception inside its adapter (a message that does not decode)
  // into a transport condition named "exception" and carries on with the delivery unread. The
  // connection cannot make progress past it, so it is closed with a decode error.
  void check_decode_failure() {
    pn_condition_t* c = pn_transport_condition(raw(driver_.transport()));
    if (!pn_condition_is_set(c) || c_string(pn_condition_get_name(c)) != "exception" || decode_failed_) return;
    decode_failed_ = true;
    const std::string what = c_string(pn_condition_get_description(c));
    pn_condition_clear(c);
    proton::connection conn = driver_.connection();
    if (!conn.closed()) conn.close(condition("amqp:decode-error", "Malformed message: " + what));
  }

  void emit(event e) {
    if (out_) out_->push_back(std::move(e));
  }

  // --- messaging_handler ---

  void on_connection_open(proton::connection& c) override {
    opened_ = true;
    connection_opened e;
    pn_connection_t* pc = raw(c);
    e.hostname = c_string(pn_connection_remote_hostname(pc));
    e.container_id = c_string(pn_connection_remote_container(pc));
    pn_transport_t* t = raw(driver_.transport());
    // Asking the transport for its SASL object would create one; only ask when SASL ran.
    if (pn_transport_is_authenticated(t)) {
      e.sasl_mechanism = driver_.transport().sasl().mech();
      e.sasl_user = driver_.transport().sasl().user();
    }
    if (c.uninitialized()) c.open();
    emit(std::move(e));
  }

  void on_session_open(proton::session& s) override {
    if (s.uninitialized()) s.open();
  }

  static link_entry entry_for(const proton::receiver& r) { return link_entry{r, {}, false}; }
  static link_entry entry_for(const proton::sender& s) { return link_entry{{}, s, false}; }

  template <class Link>
  void on_link_open(Link& l, bool we_receive) {
    if (!l.uninitialized()) {
      // A link we opened: the peer's attach answers ours.
      auto it = link_ids_.find(l);
      if (it != link_ids_.end()) emit(link_opened{it->second});
      return;
    }
    const link_id id = ++next_link_;
    link_ids_.emplace(l, id);
    link_entry entry = entry_for(l);
    entry.requested = true;
    links_.emplace(id, std::move(entry));
    link_requested e;
    e.link = id;
    e.we_receive = we_receive;
    e.name = l.name();
    pn_link_t* pl = raw(l);
    e.source = c_string(pn_terminus_get_address(pn_link_remote_source(pl)));
    e.target = c_string(pn_terminus_get_address(pn_link_remote_target(pl)));
    e.properties = properties_of(l);
    e.filters = filters_of(l);
    emit(std::move(e));
  }
  void on_receiver_open(proton::receiver& r) override { on_link_open(r, true); }
  void on_sender_open(proton::sender& s) override { on_link_open(s, false); }

  void on_link_gone(const proton::link& l) {
    auto it = link_ids_.find(l);
    if (it == link_ids_.end()) return;  // closed by us first: this is the peer's answer
    const link_id id = it->second;
    link_ids_.erase(it);
    links_.erase(id);
    forget_deliveries(id);
    emit(link_closed{id, true, l.error()});
  }
  void on_receiver_close(proton::receiver& r) override { on_link_gone(r); }
  void on_receiver_detach(proton::receiver& r) override { on_link_gone(r); }
  void on_sender_close(proton::sender& s) override { on_link_gone(s); }
  void on_sender_detach(proton::sender& s) override { on_link_gone(s); }

  void on_message(proton::delivery& d, proton::message& m) override {
    auto it = link_ids_.find(d.receiver());
    if (it == link_ids_.end()) return;
    const delivery_id id = ++next_delivery_;
    const bool presettled = d.settled();
    if (!presettled) received_.emplace(id, received_entry{d, it->second});
    emit(message_received{it->second, id, presettled, m});
  }

  void on_sendable(proton::sender& s) override {
    auto it = link_ids_.find(s);
    if (it != link_ids_.end()) emit(credit_available{it->second, s.credit()});
  }

  void on_tracker_update(proton::tracker& t, outcome state) {
    auto link = link_ids_.find(t.sender());
    auto id = id_of(t.tag());
    if (link == link_ids_.end() || !id) return;
    delivery_updated e{link->second, *id, state, t.settled(), {}};
    if (state == outcome::rejected) {
      pn_condition_t* c = pn_disposition_condition(pn_delivery_remote(raw(t)));
      if (pn_condition_is_set(c))
        e.error = condition(c_string(pn_condition_get_name(c)), c_string(pn_condition_get_description(c)));
    }
    emit(std::move(e));
  }
  void on_tracker_accept(proton::tracker& t) override { on_tracker_update(t, outcome::accepted); }
  void on_tracker_reject(proton::tracker& t) override { on_tracker_update(t, outcome::rejected); }
  void on_tracker_release(proton::tracker& t) override {
    on_tracker_update(t, t.state() == proton::transfer::MODIFIED ? outcome::modified : outcome::released);
  }

  void on_connection_close(proton::connection& c) override { emit(connection_closed{c.error()}); }
  void on_transport_close(proton::transport& t) override {
    if (transport_closed_) return;
    transport_closed_ = true;
    emit(transport_closed{t.error()});
  }
  // The defaults of these throw (messaging_handler::on_error); the events above report errors.
  void on_transport_error(proton::transport&) override {}
  void on_connection_error(proton::connection&) override {}
  void on_session_error(proton::session&) override {}
  void on_receiver_error(proton::receiver&) override {}
  void on_sender_error(proton::sender&) override {}
  void on_error(const proton::error_condition&) override {}

  // --- helpers for the public calls ---

  link_entry* find(link_id id) {
    auto it = links_.find(id);
    return it == links_.end() ? nullptr : &it->second;
  }

  void forget_deliveries(link_id link) {
    std::erase_if(received_, [&](const auto& kv) { return kv.second.link == link; });
  }

  template <class Link>
  link_id track(const Link& l) {
    const link_id id = ++next_link_;
    link_ids_.emplace(l, id);
    links_.emplace(id, entry_for(l));
    return id;
  }

  role role_;
  driver_options opts_;
  proton::io::connection_driver driver_;
  std::vector<event>* out_ = nullptr;  // where callbacks record events, during dispatch only
  bool active_ = true;                 // dispatch() said the driver still has work
  bool transport_closed_ = false;
  bool decode_failed_ = false;
  bool opened_ = false;             // the peer's Open arrived
  std::uint64_t bytes_before_open_ = 0;
  frame_guard guard_;               // stops frames that would abort Proton (frame_guard.hpp)
  link_id next_link_ = 0;
  delivery_id next_delivery_ = 0;
  std::map<proton::link, link_id> link_ids_;  // ordered by the pn_link_t address
  std::unordered_map<link_id, link_entry> links_;
  std::unordered_map<delivery_id, received_entry> received_;  // unsettled, received by us
};

driver::driver(role r, const driver_options& options) : impl_(std::make_unique<impl>(r, options)) {}
driver::~driver() = default;

void driver::recv(std::span<const char> in, std::vector<event>& out) {
  auto& d = impl_->driver_;
  if (!impl_->opened_ && impl_->opts_.max_bytes_before_open > 0) {
    // Headers, SASL and Open are a few hundred bytes; more is a peer that never gets there.
    impl_->bytes_before_open_ += in.size();
    if (impl_->bytes_before_open_ > impl_->opts_.max_bytes_before_open) {
      d.disconnected(condition("amqp:resource-limit-exceeded", "Too many bytes before the Open frame"));
      impl_->dispatch(out);
      return;
    }
  }
  // Only what the guard lets through reaches Proton; a frame it stops ends the connection.
  const std::size_t allowed = impl_->guard_.scan(in);
  const bool stopped = allowed < in.size();
  in = in.first(allowed);
  while (!in.empty()) {
    proton::io::mutable_buffer buf = d.read_buffer();
    if (buf.size == 0) {
      impl_->dispatch(out);
      buf = d.read_buffer();
      if (buf.size == 0) break;  // the transport stopped reading: the rest is dropped
    }
    const std::size_t n = std::min(buf.size, in.size());
    std::memcpy(buf.data, in.data(), n);
    d.read_done(n);
    in = in.subspan(n);
    impl_->dispatch(out);
  }
  if (stopped && !impl_->transport_closed_) {
    const auto& why = *impl_->guard_.error();
    d.disconnected(condition(why.condition, why.description));
  }
  impl_->dispatch(out);
}

void driver::read_closed(std::vector<event>& out) {
  impl_->driver_.read_close();
  impl_->dispatch(out);
}

void driver::write_closed(std::vector<event>& out) {
  impl_->driver_.write_close();
  impl_->dispatch(out);
}

void driver::poll(std::vector<event>& out) { impl_->dispatch(out); }

std::string driver::take_output() {
  std::string bytes;
  auto& d = impl_->driver_;
  for (proton::io::const_buffer buf = d.write_buffer(); buf.size > 0; buf = d.write_buffer()) {
    bytes.append(buf.data, buf.size);
    d.write_done(buf.size);
  }
  return bytes;
}

bool driver::has_output() const { return impl_->driver_.write_buffer().size > 0; }

std::size_t driver::buffered_bytes() const {
  auto& d = impl_->driver_;
  std::size_t n = d.write_buffer().size;
  for (pn_session_t* s = pn_session_head(raw(d.connection()), 0); s != nullptr; s = pn_session_next(s, 0)) {
    n += pn_session_outgoing_bytes(s);
  }
  return n;
}

std::optional<std::chrono::milliseconds> driver::tick(std::chrono::milliseconds now, std::vector<event>& out) {
  const proton::timestamp next = impl_->driver_.tick(proton::timestamp(now.count()));
  impl_->dispatch(out);
  if (next.milliseconds() == 0) return std::nullopt;
  return std::chrono::milliseconds(next.milliseconds());
}

bool driver::finished() const { return !impl_->active_ && !has_output(); }

void driver::accept_link(link_id link, std::uint32_t credit) {
  impl::link_entry* e = impl_->find(link);
  if (e == nullptr || !e->requested) return;
  e->requested = false;
  if (e->we_receive()) {
    proton::receiver& rcv = e->receiver;
    if (impl_->opts_.max_message_size > 0) pn_link_set_max_message_size(raw(rcv), impl_->opts_.max_message_size);
    // Manual credit and manual settlement: the head grants credit and settles each delivery
    // once it is durable.
    rcv.open(proton::receiver_options().credit_window(0).auto_accept(false));
    // Proton's adapter granted its default window (10) when the attach arrived, before our
    // attach; top that up to `credit` (nothing was sent to the peer yet).
    if (const int have = rcv.credit(); static_cast<int>(credit) > have) rcv.add_credit(credit - have);
  } else {
    e->sender.open(proton::sender_options().auto_settle(true));
  }
}

void driver::refuse_link(link_id link, const proton::error_condition& error) {
  impl::link_entry* e = impl_->find(link);
  if (e == nullptr) return;
  pn_link_t* l = raw(e->link());
  // AMQP refuses a link with an attach (with no terminus on our side) followed by a detach
  // carrying the error.
  if (e->we_receive()) {
    pn_terminus_set_type(pn_link_target(l), PN_UNSPECIFIED);
  } else {
    pn_terminus_set_type(pn_link_source(l), PN_UNSPECIFIED);
  }
  pn_link_open(l);
  close_link(link, error);
}

link_id driver::open_sender(const std::string& target, const std::map<proton::symbol, proton::value>& properties) {
  proton::sender s = impl_->driver_.connection().default_session().open_sender(
      target, proton::sender_options().auto_settle(true).properties(properties));
  return impl_->track(s);
}

link_id driver::open_receiver(const std::string& source, std::uint32_t credit,
                              const std::map<proton::symbol, proton::value>& properties, const std::string& target,
                              const std::map<proton::symbol, proton::value>& filters) {
  proton::receiver_options ro;
  ro.credit_window(0).auto_accept(false).properties(properties);
  proton::source_options so;
  so.address(source);
  if (!filters.empty()) so.filters(proton::source::filter_map(filters));
  ro.source(so);
  proton::target_options to;
  if (!target.empty()) {
    to.address(target);
    ro.target(to);
  }
  proton::receiver r = impl_->driver_.connection().default_session().open_receiver(source, ro);
  if (credit > 0) r.add_credit(credit);
  return impl_->track(r);
}

void driver::close_link(link_id link, const proton::error_condition& error) {
  auto it = impl_->links_.find(link);
  if (it == impl_->links_.end()) return;
  proton::link l = it->second.link();
  impl_->link_ids_.erase(l);
  impl_->links_.erase(it);
  impl_->forget_deliveries(link);
  if (error.empty()) {
    l.close();
  } else {
    l.close(error);
  }
}

void driver::grant(link_id link, std::uint32_t credit) {
  impl::link_entry* e = impl_->find(link);
  if (e == nullptr || !e->we_receive() || e->requested || credit == 0) return;
  e->receiver.add_credit(credit);
}

int driver::credit(link_id link) const {
  impl::link_entry* e = impl_->find(link);
  if (e == nullptr || e->we_receive() || e->requested) return 0;
  return e->sender.credit();
}

std::optional<delivery_id> driver::send(link_id link, const proton::message& m, bool presettled) {
  impl::link_entry* e = impl_->find(link);
  if (e == nullptr || e->we_receive() || e->requested || e->sender.credit() <= 0) return std::nullopt;
  const delivery_id id = ++impl_->next_delivery_;
  proton::tracker t = e->sender.send(m, tag_of(id));
  if (presettled) t.settle();
  return id;
}

void driver::settle(delivery_id delivery, outcome state, const proton::error_condition& error) {
  auto it = impl_->received_.find(delivery);
  if (it == impl_->received_.end()) return;
  proton::delivery d = it->second.delivery;
  impl_->received_.erase(it);
  switch (state) {
    case outcome::accepted: d.accept(); break;
    case outcome::released: d.release(); break;
    case outcome::modified: d.modify(); break;
    case outcome::rejected: {
      pn_delivery_t* pd = raw(d);
      if (!error.empty()) {
        pn_condition_t* c = pn_disposition_condition(pn_delivery_local(pd));
        pn_condition_set_name(c, error.name().c_str());
        pn_condition_set_description(c, error.description().c_str());
      }
      pn_delivery_update(pd, PN_REJECTED);
      pn_delivery_settle(pd);
      break;
    }
  }
}

void driver::close(const proton::error_condition& error) {
  proton::connection c = impl_->driver_.connection();
  if (c.closed()) return;
  if (error.empty()) {
    c.close();
  } else {
    c.close(error);
  }
}

std::size_t driver::open_links() const { return impl_->links_.size(); }
std::size_t driver::unsettled_received() const { return impl_->received_.size(); }

}  // namespace hub::amqp
