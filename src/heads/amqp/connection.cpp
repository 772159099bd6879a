#include "heads/amqp/connection.hpp"

#include "heads/amqp/messages.hpp"

#include "base/text.hpp"
#include "domain/auth/sas.hpp"

#include <proton/error.hpp>
#include <proton/types.hpp>
#include <proton/value.hpp>

#include <algorithm>
#include <limits>

namespace hub::amqp_head {
namespace {

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};
template <class... F>
overloaded(F...) -> overloaded<F...>;

proton::error_condition condition_for(const error& e) {
  return amqp::condition(std::string(condition_name(e.code)), e.message);
}

std::string identity_text(const std::string& device_id, const std::string& module_id) {
  return module_id.empty() ? "device '" + device_id + "'" : "module '" + module_id + "' of device '" + device_id + "'";
}

std::string key_of(const std::string& device_id, const std::string& module_id) { return device_id + "/" + module_id; }


// The attach's com.microsoft:epoch (an AMQP long; any integer is taken). Nothing when absent;
// false when present but not an integer.
bool read_epoch(const std::map<proton::symbol, proton::value>& props, std::optional<std::int64_t>& epoch) {
  auto it = props.find(proton::symbol("com.microsoft:epoch"));
  if (it == props.end() || it->second.empty()) return true;
  try {
    switch (it->second.type()) {
      case proton::LONG: epoch = proton::get<std::int64_t>(it->second); return true;
      case proton::INT: epoch = proton::get<std::int32_t>(it->second); return true;
      case proton::SHORT: epoch = proton::get<std::int16_t>(it->second); return true;
      case proton::BYTE: epoch = proton::get<std::int8_t>(it->second); return true;
      case proton::ULONG: epoch = static_cast<std::int64_t>(proton::get<std::uint64_t>(it->second)); return true;
      case proton::UINT: epoch = proton::get<std::uint32_t>(it->second); return true;
      default: return false;
    }
  } catch (const proton::error&) {
    return false;
  }
}

// The attach's com.microsoft:channel-correlation-id ("twin:<uuid>", "methods:<uuid>"): pairs a
// device's twin sender with its receiver. Empty when absent or not text.
std::string channel_of(const std::map<proton::symbol, proton::value>& props) {
  auto it = props.find(proton::symbol("com.microsoft:channel-correlation-id"));
  if (it == props.end()) return {};
  switch (it->second.type()) {
    case proton::STRING: return proton::get<std::string>(it->second);
    case proton::SYMBOL: return proton::get<proton::symbol>(it->second);
    default: return {};
  }
}

std::optional<std::uint32_t> text_to_partition(const std::string& text) {
  if (text.empty() || text.size() > 6 || text.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return static_cast<std::uint32_t>(std::stoul(text));
}

}  // namespace

connection::connection(const connection_options& opts, const clock& clk, std::shared_ptr<spdlog::logger> log,
                       std::string log_id)
    : opts_(opts),
      clock_(clk),
      log_(std::move(log)),
      log_id_(std::move(log_id)),
      driver_(amqp::role::server, opts.driver) {}

void connection::recv(std::span<const char> in, std::vector<work>& out) {
  driver_.recv(in, events_);
  handle(events_, out);
}

void connection::read_closed(std::vector<work>& out) {
  driver_.read_closed(events_);
  handle(events_, out);
}

void connection::write_failed(std::vector<work>& out) {
  driver_.write_closed(events_);
  handle(events_, out);
}

std::optional<std::chrono::milliseconds> connection::tick(std::chrono::milliseconds now, std::vector<work>& out) {
  std::optional<std::chrono::milliseconds> next = driver_.tick(now, events_);
  expire_grants(out);
  driver_.poll(events_);
  handle(events_, out);
  if (grants_.empty()) return next;
  // Wake up when the next token expires, to end what it authorised.
  std::int64_t earliest = std::numeric_limits<std::int64_t>::max();
  for (const auto& [name, g] : grants_) earliest = std::min(earliest, g.expiry);
  const std::int64_t wait_s = std::max<std::int64_t>(earliest - clock_.now_seconds(), 1);
  const auto at = now + std::chrono::milliseconds(std::min<std::int64_t>(wait_s, 24 * 3600) * 1000);
  return next ? std::min(*next, at) : at;
}

void connection::close(const std::string& reason, std::vector<work>& out) {
  driver_.close(amqp::condition("amqp:connection:forced", reason));
  driver_.poll(events_);
  handle(events_, out);
}

void connection::handle(std::vector<amqp::event>& events, std::vector<work>& out) {
  // Acting on an event (accepting a link, settling) can cause more; a few rounds settle it.
  for (int round = 0; round < 16 && !events.empty(); ++round) {
    std::vector<amqp::event> batch;
    batch.swap(events);
    for (amqp::event& ev : batch) {
      std::visit(overloaded{
                     [&](amqp::connection_opened& e) {
                       log_->debug("{}: AMQP open, hostname '{}', SASL {}", log_id_, e.hostname,
                                   e.sasl_mechanism.empty() ? "none" : e.sasl_mechanism);
                     },
                     [&](amqp::link_requested& e) { on_link_requested(e, out); },
                     [&](amqp::link_opened&) {},
                     [&](amqp::link_closed& e) {
                       auto it = links_.find(e.link);
                       if (it == links_.end()) return;
                       link_state s = std::move(it->second);
                       links_.erase(it);
                       if (e.error) log_->debug("{}: link closed: {}", log_id_, e.error.what());
                       if (s.kind == link_kind::partition)
                         out.push_back(release_partition_work{e.link, s.partition, s.consumer_group, s.entity});
                       link_gone(s, e.by_peer ? "link closed by the client" : "link closed", out);
                     },
                     [&](amqp::message_received& e) { on_message(e, out); },
                     [&](amqp::credit_available& e) {
                       auto it = links_.find(e.link);
                       if (it == links_.end()) return;
                       switch (it->second.kind) {
                         case link_kind::partition: pump_partition(e.link, out); break;
                         case link_kind::device_c2d: pull_c2d(e.link, out); break;
                         case link_kind::service_feedback: pull_feedback(e.link, out); break;
                         default: flush_replies(e.link); break;
                       }
                     },
                     [&](amqp::delivery_updated& e) { on_delivery_updated(e, out); },
                     [&](amqp::connection_closed& e) {
                       if (e.error) {
                         log_->info("{}: closed by the client: {}", log_id_, e.error.what());
                       } else {
                         log_->debug("{}: closed by the client", log_id_);
                       }
                     },
                     [&](amqp::transport_closed& e) {
                       if (e.error) log_->info("{}: AMQP transport closed: {}", log_id_, e.error.what());
                       // Nothing more can be sent or settled here: what is locked goes back.
                       release_locks(out);
                     },
                 },
                 ev);
    }
    driver_.poll(events);
  }
}

void connection::on_link_requested(amqp::link_requested& e, std::vector<work>& out) {
  const std::string& address = e.we_receive ? e.target : e.source;
  if (links_.size() >= opts_.max_links) {
    log_->info("{}: link to '{}' refused: {} links are open already", log_id_, address, links_.size());
    driver_.refuse_link(e.link, amqp::condition("amqp:resource-limit-exceeded", "Too many links on this connection"));
    return;
  }
  const link_address addr = parse_link_address(address);
  if (addr.what == link_address::kind::cbs) {
    link_state s;
    s.kind = e.we_receive ? link_kind::cbs_requests : link_kind::cbs_replies;
    s.name = e.name;
    s.target = e.target;
    links_.emplace(e.link, std::move(s));
    driver_.accept_link(e.link, e.we_receive ? opts_.cbs_credit : 0);
    return;
  }
  if (addr.what == link_address::kind::c2d && (e.we_receive || !addr.module_id.empty())) {
    // IoT Hub sends cloud-to-device messages to devices only, on a receiver of theirs.
    log_->info("{}: link to '{}' refused: {}", log_id_, address,
               e.we_receive ? "a sender to a devicebound node" : "modules do not receive cloud-to-device messages");
    driver_.refuse_link(e.link, amqp::condition("amqp:not-allowed", e.we_receive ? "Send to '" + address + "'"
                                                                                 : "Modules do not receive cloud-to-device messages"));
    return;
  }
  const bool device_link = (addr.what == link_address::kind::telemetry && e.we_receive) ||
                           addr.what == link_address::kind::c2d ||
                           (addr.what == link_address::kind::twin && opts_.serve_twins) ||
                           (addr.what == link_address::kind::methods && opts_.serve_methods);
  if (device_link) {
    const pending_link p{e.link, e.name, addr, e.we_receive, channel_of(e.properties)};
    const std::string* aud = grant_for(addr.device_id, addr.module_id);
    if (aud != nullptr) {
      accept_device_link(p, *aud, out);
      return;
    }
    if (client_certificate_) {
      // X.509: the certificate from the handshake decides; the link waits for the check.
      const std::string key = key_of(addr.device_id, addr.module_id);
      auto& waiting = x509_pending_[key];
      if (waiting.empty()) {
        const std::uint64_t ticket = ++next_ticket_;
        x509_checks_.emplace(ticket, connections::identity{addr.device_id, addr.module_id});
        out.push_back(check_certificate_work{ticket, connections::identity{addr.device_id, addr.module_id}});
      }
      waiting.push_back(p);
      return;
    }
    log_->info("{}: link to '{}' for {} refused: no valid token for it", log_id_, address,
               identity_text(addr.device_id, addr.module_id));
    driver_.refuse_link(e.link, amqp::condition("amqp:unauthorized-access",
                                                "No valid SAS token for " + identity_text(addr.device_id, addr.module_id) +
                                                    " was put on this connection ($cbs)"));
    return;
  }
  if (opts_.event_hub_partitions > 0 &&
      (address == "$management" || (!e.we_receive && parse_partition_address(e.source)))) {
    on_event_hubs_link(e, out);
    return;
  }
  if (addr.what == link_address::kind::service) {
    on_service_link(e, address);
    return;
  }
  const bool known = addr.what != link_address::kind::unknown;
  log_->info("{}: link to '{}' refused: {}", log_id_, address, known ? "not served yet" : "unknown address");
  driver_.refuse_link(e.link, known ? amqp::condition("amqp:not-implemented", "The link '" + address + "' is not served yet")
                                    : amqp::condition("amqp:not-found", "No node at '" + address + "'"));
}

void connection::on_service_link(amqp::link_requested& e, const std::string& address) {
  const bool devicebound = text::iequals(address, "/messages/devicebound");
  if (devicebound != e.we_receive) {
    driver_.refuse_link(e.link, amqp::condition("amqp:not-allowed", devicebound ? "Send to '" + address + "'"
                                                                                 : "Receive from '" + address + "'"));
    return;
  }
  const std::int64_t now = clock_.now_seconds();
  const std::string* aud = nullptr;
  for (const auto& [name, g] : grants_) {
    if (g.who == grant::kind::hub && g.expiry > now) {
      aud = &name;
      break;
    }
  }
  if (aud == nullptr) {
    log_->info("{}: service link to '{}' refused: no service token on this connection", log_id_, address);
    driver_.refuse_link(e.link, amqp::condition("amqp:unauthorized-access",
                                                "Put a token for the hub with ServiceConnect first ($cbs)"));
    return;
  }
  link_state s;
  s.kind = devicebound ? link_kind::service_c2d
           : text::iequals(address, "/messages/serviceBound/feedback") ? link_kind::service_feedback
                                                                       : link_kind::service_receiver;
  s.name = e.name;
  s.target = e.target;
  s.audience = *aud;
  links_.emplace(e.link, std::move(s));
  log_->debug("{}: service link to '{}' attached", log_id_, address);
  driver_.accept_link(e.link, devicebound ? opts_.telemetry_credit : 0);
}

void connection::accept_device_link(const pending_link& p, const std::string& aud, std::vector<work>& out) {
  const grant& g = grants_.at(aud);
  const link_address& addr = p.addr;
  link_state s;
  // Links we send on (devicebound, the twin and methods receivers) are driven by the device's
  // credit (credit_available); the others get ours.
  std::uint32_t credit = 0;
  const char* what = "telemetry";
  switch (addr.what) {
    case link_address::kind::c2d:
      s.kind = link_kind::device_c2d;
      what = "cloud-to-device";
      break;
    case link_address::kind::twin:
      s.kind = p.we_receive ? link_kind::twin_requests : link_kind::twin_responses;
      credit = p.we_receive ? opts_.twin_credit : 0;
      what = p.we_receive ? "twin sender" : "twin receiver";
      break;
    case link_address::kind::methods:
      s.kind = p.we_receive ? link_kind::method_answers : link_kind::method_calls;
      credit = p.we_receive ? opts_.telemetry_credit : 0;
      what = p.we_receive ? "methods sender" : "methods receiver";
      break;
    default:
      s.kind = link_kind::telemetry;
      credit = opts_.telemetry_credit;
      break;
  }
  s.name = p.name;
  s.audience = aud;
  s.identity_kind = g.who;
  s.device_id = addr.device_id;
  s.module_id = addr.module_id;
  s.channel = p.channel;
  links_.emplace(p.link, std::move(s));
  log_->debug("{}: {} link for {} attached", log_id_, what, identity_text(addr.device_id, addr.module_id));
  driver_.accept_link(p.link, credit);
  const std::string key = key_of(addr.device_id, addr.module_id);
  identity_state& id = identities_[key];
  ++id.links;
  if (!id.attached && !id.attaching) {
    id.who = connections::identity{addr.device_id, addr.module_id};
    id.attaching = true;
    out.push_back(attach_identity_work{id.who});
  }
  update_methods(key, out);
}

void connection::certificate_checked(std::uint64_t ticket, result<grant> r, std::vector<work>& out) {
  auto t = x509_checks_.find(ticket);
  if (t == x509_checks_.end()) return;
  const connections::identity who = t->second;
  x509_checks_.erase(t);
  const std::string key = key_of(who.device_id, who.module_id);
  std::vector<pending_link> waiting = std::move(x509_pending_[key]);
  x509_pending_.erase(key);
  if (!r) {
    log_->info("{}: {} refused: {}", log_id_, identity_text(who.device_id, who.module_id), r.error().message);
    for (const pending_link& p : waiting) driver_.refuse_link(p.link, condition_for(r.error()));
  } else {
    // Held under its own name, so that no put-token can replace it.
    const std::string aud = "x509:" + key;
    grants_[aud] = std::move(*r);
    for (const pending_link& p : waiting) {
      if (links_.size() >= opts_.max_links) {
        driver_.refuse_link(p.link, amqp::condition("amqp:resource-limit-exceeded", "Too many links on this connection"));
        continue;
      }
      accept_device_link(p, aud, out);
    }
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::on_message(amqp::message_received& e, std::vector<work>& out) {
  auto it = links_.find(e.link);
  if (it == links_.end()) {
    driver_.settle(e.delivery, amqp::outcome::rejected, amqp::condition("amqp:not-allowed", "Unexpected message"));
    return;
  }
  switch (it->second.kind) {
    case link_kind::cbs_requests: on_cbs_request(e, out); return;
    case link_kind::mgmt_requests: on_management_request(e, out); return;
    case link_kind::telemetry: on_telemetry(it->second, e, out); return;
    case link_kind::service_c2d: on_c2d_send(it->second, e, out); return;
    case link_kind::twin_requests: on_twin_request(it->second, e, out); return;
    case link_kind::method_answers: on_method_answer(it->second, e, out); return;
    case link_kind::twin_responses:
    case link_kind::method_calls:
    case link_kind::device_c2d:
    case link_kind::service_feedback:
    case link_kind::service_receiver:
    case link_kind::cbs_replies:
    case link_kind::mgmt_replies:
    case link_kind::partition: break;
  }
  driver_.settle(e.delivery, amqp::outcome::rejected, amqp::condition("amqp:not-allowed", "Unexpected message"));
}

void connection::on_cbs_request(amqp::message_received& e, std::vector<work>& out) {
  // The request itself is always accepted; its outcome travels in the reply.
  driver_.settle(e.delivery, amqp::outcome::accepted);
  cbs_request r = read_cbs_request(e.message);
  if (auto ok = check_put_token(r); !ok) {
    log_->info("{}: CBS request refused: {}", log_id_, ok.error().message);
    driver_.grant(e.link, 1);
    reply(link_kind::cbs_replies, r.reply_to, cbs_reply(r.id, 400, ok.error().message));
    return;
  }
  const std::uint64_t ticket = ++next_ticket_;
  tokens_.emplace(ticket, pending_token{r.id, r.reply_to, r.name, e.link});
  // Credit comes back when the check is answered, so a client cannot queue unbounded checks.
  out.push_back(check_token_work{ticket, parse_audience(r.name), std::move(r.token)});
}

void connection::token_checked(std::uint64_t ticket, result<grant> r, std::vector<work>& out) {
  auto it = tokens_.find(ticket);
  if (it == tokens_.end()) return;
  pending_token p = std::move(it->second);
  tokens_.erase(it);
  driver_.grant(p.request_link, 1);
  if (!r) {
    // The reason goes to the log and to the client; the token itself never does.
    log_->info("{}: put-token for '{}' refused: {}", log_id_, p.audience, r.error().message);
    reply(link_kind::cbs_replies, p.reply_to, cbs_reply(p.request_id, 401, r.error().message));
  } else if (grants_.size() >= opts_.max_grants && grants_.find(p.audience) == grants_.end()) {
    log_->info("{}: put-token for '{}' refused: {} tokens are held already", log_id_, p.audience, grants_.size());
    reply(link_kind::cbs_replies, p.reply_to, cbs_reply(p.request_id, 403, "Too many tokens on this connection"));
  } else {
    log_->debug("{}: put-token for '{}' accepted", log_id_, p.audience);
    grants_[p.audience] = std::move(*r);
    reply(link_kind::cbs_replies, p.reply_to, cbs_reply(p.request_id, 200, "OK"));
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::reply(link_kind kind, const std::string& reply_to, proton::message m) {
  // The reply goes on the $cbs (or $management) link the request names in reply-to (the device
  // SDK's target "cbs", the Event Hubs client's link name "cbs-<uuid>" or target "<uuid>");
  // failing that, the newest one.
  amqp::link_id chosen = 0;
  amqp::link_id fallback = 0;
  for (const auto& [id, s] : links_) {
    if (s.kind != kind) continue;
    fallback = std::max(fallback, id);
    if (!reply_to.empty() && (s.name == reply_to || s.target == reply_to)) chosen = std::max(chosen, id);
  }
  if (chosen == 0) chosen = fallback;
  if (chosen == 0) {
    log_->info("{}: reply dropped: the client attached no receiver for it", log_id_);
    return;
  }
  if (!reply_to.empty()) m.to(reply_to);
  link_state& s = links_.at(chosen);
  if (s.replies.size() >= opts_.max_pending_replies) {
    log_->info("{}: the client does not read its replies; closing", log_id_);
    driver_.close(amqp::condition("amqp:resource-limit-exceeded", "Too many unread replies"));
    return;
  }
  s.replies.push_back(std::move(m));
  flush_replies(chosen);
}

void connection::flush_replies(amqp::link_id link) {
  auto it = links_.find(link);
  if (it == links_.end()) return;
  auto& q = it->second.replies;
  // Twin answers, desired patches and method calls go presettled: the SDK's receivers accept
  // everything on arrival (and ask for settled deliveries on the twin link).
  const bool presettled = it->second.kind == link_kind::twin_responses || it->second.kind == link_kind::method_calls;
  while (!q.empty() && driver_.credit(link) > 0) {
    if (!driver_.send(link, q.front(), presettled)) break;
    q.pop_front();
  }
}

bool connection::queue_send(amqp::link_id link, proton::message m) {
  auto it = links_.find(link);
  if (it == links_.end()) return false;
  if (it->second.replies.size() >= opts_.max_waiting_sends) return false;
  it->second.replies.push_back(std::move(m));
  flush_replies(link);
  return true;
}

void connection::on_telemetry(const link_state& link, amqp::message_received& e, std::vector<work>& out) {
  const auto g = grants_.find(link.audience);
  if (g == grants_.end()) {
    // The grant expired and the link is closing: the message cannot be accepted any more.
    driver_.settle(e.delivery, amqp::outcome::rejected,
                   amqp::condition("amqp:unauthorized-access", "The SAS token for this link has expired"));
    return;
  }
  auto m = to_telemetry(e.message);
  if (!m) {
    log_->info("{}: telemetry from {} rejected: {}", log_id_, identity_text(link.device_id, link.module_id),
               m.error().message);
    driver_.settle(e.delivery, amqp::outcome::rejected, condition_for(m.error()));
    driver_.grant(e.link, 1);
    return;
  }
  if (auto id = identities_.find(key_of(link.device_id, link.module_id)); id != identities_.end() && id->second.presence)
    id->second.presence->touch(clock_.now());
  // Stamped by the hub, never taken from the device.
  m->device_id = link.device_id;
  m->module_id = link.module_id;
  m->generation_id = g->second.generation_id;
  m->auth = g->second.auth;
  const std::uint64_t ticket = ++next_ticket_;
  appends_.emplace(ticket, pending_append{e.link, e.delivery});
  out.push_back(append_telemetry_work{ticket, std::move(*m)});
}

void connection::telemetry_appended(std::uint64_t ticket, result<void> r, std::vector<work>& out) {
  auto it = appends_.find(ticket);
  if (it == appends_.end()) return;
  const pending_append p = it->second;
  appends_.erase(it);
  if (r) {
    driver_.settle(p.delivery, amqp::outcome::accepted);
  } else {
    driver_.settle(p.delivery, amqp::outcome::rejected, condition_for(r.error()));
  }
  driver_.grant(p.link, 1);  // ignored when the link has gone
  driver_.poll(events_);
  handle(events_, out);
}

void connection::on_c2d_send(const link_state& link, amqp::message_received& e, std::vector<work>& out) {
  if (grants_.find(link.audience) == grants_.end()) {
    driver_.settle(e.delivery, amqp::outcome::rejected,
                   amqp::condition("amqp:unauthorized-access", "The SAS token for this link has expired"));
    return;
  }
  auto r = to_c2d(e.message);
  if (!r) {
    log_->info("{}: cloud-to-device message rejected: {}", log_id_, r.error().message);
    driver_.settle(e.delivery, amqp::outcome::rejected, condition_for(r.error()));
    driver_.grant(e.link, 1);
    return;
  }
  const std::uint64_t ticket = ++next_ticket_;
  c2d_sends_.emplace(ticket, pending_append{e.link, e.delivery});
  out.push_back(c2d_send_work{ticket, std::move(r->device_id), std::move(r->message)});
}

void connection::c2d_sent(std::uint64_t ticket, result<void> r, std::vector<work>& out) {
  auto it = c2d_sends_.find(ticket);
  if (it == c2d_sends_.end()) return;
  const pending_append p = it->second;
  c2d_sends_.erase(it);
  if (r) {
    driver_.settle(p.delivery, amqp::outcome::accepted);
  } else {
    log_->debug("{}: cloud-to-device message refused: {}", log_id_, r.error().message);
    driver_.settle(p.delivery, amqp::outcome::rejected, condition_for(r.error()));
  }
  driver_.grant(p.link, 1);  // ignored when the link has gone
  driver_.poll(events_);
  handle(events_, out);
}

void connection::pull_c2d(amqp::link_id link, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::device_c2d) return;
  link_state& s = it->second;
  if (s.pulling) {
    s.pull_again = true;  // the answer may predate what made us look
    return;
  }
  const int credit = driver_.credit(link);
  if (credit <= 0) return;  // credit_available pulls again
  s.pulling = true;
  s.pull_again = false;
  s.pull_max = std::min<std::size_t>(static_cast<std::size_t>(credit), opts_.max_c2d_per_receive);
  out.push_back(c2d_receive_work{link, s.device_id, s.pull_max});
}

void connection::c2d_received(amqp::link_id link, std::vector<c2d::delivery> deliveries, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::device_c2d) {
    // The link went away meanwhile: nobody will settle these.
    for (const c2d::delivery& d : deliveries)
      out.push_back(c2d_settle_work{c2d_action::unlock, d.device_id, d.lock_token});
    return;
  }
  link_state& s = it->second;
  s.pulling = false;
  for (const c2d::delivery& d : deliveries) {
    // Unsettled: the device's disposition settles it (complete, reject, abandon).
    const auto id = driver_.send(link, c2d_message(d));
    if (!id) {
      out.push_back(c2d_settle_work{c2d_action::unlock, d.device_id, d.lock_token});
      continue;
    }
    s.locks.emplace(*id, d.lock_token);
  }
  log_->debug("{}: {} cloud-to-device message(s) sent to device '{}'", log_id_, deliveries.size(), s.device_id);
  // A full answer may have left more behind; a notification during the receive may be news.
  if (deliveries.size() >= s.pull_max || s.pull_again) pull_c2d(link, out);
  driver_.poll(events_);
  handle(events_, out);
}

void connection::c2d_available(const std::string& device_id, std::vector<work>& out) {
  for (auto& [id, s] : links_) {
    if (s.kind == link_kind::device_c2d && s.device_id == device_id) pull_c2d(id, out);
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::pull_feedback(amqp::link_id link, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::service_feedback) return;
  link_state& s = it->second;
  if (s.pulling || s.feedback_waiting) return;
  if (driver_.credit(link) <= 0 || s.locks.size() >= opts_.max_feedback_unsettled) return;
  s.pulling = true;
  out.push_back(feedback_receive_work{link});
}

void connection::feedback_received(amqp::link_id link, std::optional<c2d::feedback_batch> b, std::uint64_t generation,
                                   std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::service_feedback) {
    if (b) out.push_back(feedback_settle_work{false, b->lock_token});
    return;
  }
  link_state& s = it->second;
  s.pulling = false;
  if (!b) {
    s.feedback_waiting = true;
    out.push_back(feedback_wait_work{link, generation});
    return;
  }
  // Unsettled: the service SDK accepts it on arrival, which completes the batch.
  const auto id = driver_.send(link, feedback_message(*b, opts_.hub_name));
  if (!id) {
    out.push_back(feedback_settle_work{false, b->lock_token});
  } else {
    log_->debug("{}: feedback batch of {} record(s) sent", log_id_, b->records.size());
    s.locks.emplace(*id, std::move(b->lock_token));
    pull_feedback(link, out);
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::feedback_available(amqp::link_id link, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::service_feedback) return;
  it->second.feedback_waiting = false;
  pull_feedback(link, out);
  driver_.poll(events_);
  handle(events_, out);
}

void connection::on_delivery_updated(const amqp::delivery_updated& e, std::vector<work>& out) {
  auto it = links_.find(e.link);
  if (it == links_.end()) return;
  link_state& s = it->second;
  auto lock = s.locks.find(e.delivery);
  if (lock == s.locks.end()) return;  // settled already (each outcome is final)
  std::string token = std::move(lock->second);
  s.locks.erase(lock);
  if (s.kind == link_kind::device_c2d) {
    // device.md §4.6: complete = accepted, reject = rejected, abandon = released (modified too).
    c2d_action a = c2d_action::abandon;
    if (e.state == amqp::outcome::accepted) a = c2d_action::complete;
    if (e.state == amqp::outcome::rejected) a = c2d_action::reject;
    out.push_back(c2d_settle_work{a, s.device_id, std::move(token)});
    return;
  }
  if (s.kind == link_kind::service_feedback) {
    // Accepted: the records are delivered. Rejected: dead-lettered, as IoT Hub treats a rejected
    // message; the feedback queue has no dead-letter queue, so the records are dropped (giving
    // them back would hand the same batch to a service that refuses it, again and again).
    // Released or modified: given back, receivable again.
    const bool done = e.state == amqp::outcome::accepted || e.state == amqp::outcome::rejected;
    out.push_back(feedback_settle_work{done, std::move(token)});
    pull_feedback(e.link, out);
  }
}

void connection::release_link_locks(link_state& s, std::vector<work>& out) {
  for (auto& [delivery, token] : s.locks) {
    if (s.kind == link_kind::device_c2d) {
      out.push_back(c2d_settle_work{c2d_action::unlock, s.device_id, std::move(token)});
    } else {
      out.push_back(feedback_settle_work{false, std::move(token)});
    }
  }
  s.locks.clear();
}

void connection::release_locks(std::vector<work>& out) {
  for (auto& [id, s] : links_) release_link_locks(s, out);
}

std::optional<std::uint32_t> connection::entity_index(std::string_view name) const {
  if (opts_.event_hub_entities.empty()) return 0u;
  for (std::size_t i = 0; i < opts_.event_hub_entities.size(); ++i) {
    if (text::iequals(opts_.event_hub_entities[i], name)) return static_cast<std::uint32_t>(i);
  }
  return std::nullopt;
}

// The text the Event Hubs client turns into MessagingEntityNotFoundError.
std::string connection::entity_not_found(std::string_view name) const {
  return "The messaging entity '" + std::string(name) + "' could not be found.";
}

bool connection::event_hubs_granted(const std::string& entity_path) const {
  const std::int64_t now = clock_.now_seconds();
  for (const auto& [name, g] : grants_) {
    if (g.who != grant::kind::event_hub || g.expiry <= now) continue;
    // Whole path segments, case-insensitively ("$Default" / "$default"), as IoT Hub compares.
    if (entity_path.empty() || auth::scope_covers("eh/" + g.entity, "eh/" + entity_path)) return true;
  }
  return false;
}

void connection::on_event_hubs_link(amqp::link_requested& e, std::vector<work>& out) {
  const bool management = (e.we_receive ? e.target : e.source) == "$management";
  if (management) {
    if (!event_hubs_granted({})) {
      log_->info("{}: $management link refused: no Event Hubs token on this connection", log_id_);
      driver_.refuse_link(e.link, amqp::condition("amqp:unauthorized-access", "Put a token for the $management node first ($cbs)"));
      return;
    }
    link_state s;
    s.kind = e.we_receive ? link_kind::mgmt_requests : link_kind::mgmt_replies;
    s.name = e.name;
    s.target = e.target;
    links_.emplace(e.link, std::move(s));
    driver_.accept_link(e.link, e.we_receive ? opts_.cbs_credit : 0);
    return;
  }
  const auto addr = parse_partition_address(e.source);
  if (!addr || addr->partition >= opts_.event_hub_partitions) {
    driver_.refuse_link(e.link, amqp::condition("amqp:not-found", "No partition at '" + e.source + "'"));
    return;
  }
  const auto entity = entity_index(addr->entity);
  if (!entity) {
    log_->info("{}: receiver on '{}' refused: no event hub '{}'", log_id_, e.source, addr->entity);
    driver_.refuse_link(e.link, amqp::condition("amqp:not-found", entity_not_found(addr->entity)));
    return;
  }
  if (!event_hubs_granted(addr->entity + "/ConsumerGroups/" + addr->consumer_group + "/Partitions/" +
                          std::to_string(addr->partition))) {
    log_->info("{}: receiver on '{}' refused: no token for it", log_id_, e.source);
    driver_.refuse_link(e.link, amqp::condition("amqp:unauthorized-access", "No valid token for '" + e.source + "'"));
    return;
  }
  const auto pos = position_from_filters(e.filters);
  if (!pos) {
    driver_.refuse_link(e.link, amqp::condition("com.microsoft:argument-error", "The receiver's selector filter is not understood"));
    return;
  }
  std::optional<std::int64_t> epoch;
  if (!read_epoch(e.properties, epoch)) {
    driver_.refuse_link(e.link, amqp::condition("com.microsoft:argument-error", "com.microsoft:epoch must be an AMQP long"));
    return;
  }
  link_state s;
  s.kind = link_kind::partition;
  s.name = e.name;
  s.partition = addr->partition;
  s.entity = *entity;
  s.start = *pos;
  s.consumer_group = addr->consumer_group;
  s.epoch = epoch;
  s.claiming = true;
  links_.emplace(e.link, std::move(s));
  log_->debug("{}: Event Hubs receiver on partition {} ({}{}) attached", log_id_, addr->partition, addr->consumer_group,
              epoch ? ", epoch " + std::to_string(*epoch) : std::string());
  driver_.accept_link(e.link);
  out.push_back(claim_partition_work{e.link, addr->partition, addr->consumer_group, epoch, *entity});
}

void connection::partition_claimed(amqp::link_id link, const std::optional<partition_watch::refusal>& refusal,
                                   std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::partition) return;
  if (refusal) {
    log_->info("{}: receiver on partition {} refused: {}", log_id_, it->second.partition, refusal->description);
    driver_.close_link(link, amqp::condition(refusal->condition, refusal->description));
    links_.erase(it);
  } else {
    it->second.claiming = false;
    pump_partition(link, out);
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::partition_stolen(amqp::link_id link, const std::string& reason, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::partition) return;
  log_->info("{}: receiver on partition {} displaced: {}", log_id_, it->second.partition, reason);
  driver_.close_link(link, amqp::condition("amqp:link:stolen", reason));
  links_.erase(it);
  driver_.poll(events_);
  handle(events_, out);
}

void connection::on_management_request(amqp::message_received& e, std::vector<work>& out) {
  driver_.settle(e.delivery, amqp::outcome::accepted);
  driver_.grant(e.link, 1);
  management_request r = read_management_request(e.message);
  if (r.operation != "READ") {
    reply(link_kind::mgmt_replies, r.reply_to, management_error_reply(r, 400, "Unsupported operation '" + r.operation + "'"));
    return;
  }
  const auto entity = entity_index(r.name);
  if (!entity) {
    reply(link_kind::mgmt_replies, r.reply_to, management_error_reply(r, 404, entity_not_found(r.name)));
    return;
  }
  if (r.type == "com.microsoft:eventhub") {
    reply(link_kind::mgmt_replies, r.reply_to,
          eventhub_info_reply(r, opts_.event_hub_partitions, opts_.event_hub_created_ms));
    return;
  }
  if (r.type == "com.microsoft:partition") {
    const auto p = text_to_partition(r.partition);
    if (!p || *p >= opts_.event_hub_partitions) {
      reply(link_kind::mgmt_replies, r.reply_to, management_error_reply(r, 404, "No partition '" + r.partition + "'"));
      return;
    }
    const std::uint64_t ticket = ++next_ticket_;
    management_.emplace(ticket, pending_management{std::move(r), e.link});
    out.push_back(partition_info_work{ticket, *p, *entity});
    return;
  }
  reply(link_kind::mgmt_replies, r.reply_to, management_error_reply(r, 400, "Unsupported type '" + r.type + "'"));
}

void connection::partition_info_ready(std::uint64_t ticket, result<storage::partition_stats> r, std::vector<work>& out) {
  auto it = management_.find(ticket);
  if (it == management_.end()) return;
  const pending_management p = std::move(it->second);
  management_.erase(it);
  reply(link_kind::mgmt_replies, p.request.reply_to,
        r ? partition_info_reply(p.request, *r) : management_error_reply(p.request, 500, r.error().message));
  driver_.poll(events_);
  handle(events_, out);
}

void connection::pump_partition(amqp::link_id link, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::partition) return;
  link_state& s = it->second;
  if (s.reading || s.waiting || s.claiming) return;
  if (output_full()) return;  // writing() pumps again once written
  const int credit = driver_.credit(link);
  if (credit <= 0) return;
  const std::uint64_t ticket = ++next_ticket_;
  s.reading = true;
  reads_.emplace(ticket, link);
  read_events_work w;
  w.ticket = ticket;
  w.partition = s.partition;
  w.entity = s.entity;
  w.start = s.start;
  w.from_sequence = s.next_sequence;
  w.max_records = std::min<std::size_t>(static_cast<std::size_t>(credit), opts_.max_events_per_read);
  out.push_back(std::move(w));
}

// What waits for the peer: the bytes being written, and what Proton holds. Counting only the
// former let a receiver that stopped reading its socket collect every event its credit allowed
// in Proton's buffers (91 MB for 48 MB of events in a compat test) while one write waited.
bool connection::output_full() const {
  return unwritten_bytes_ + driver_.buffered_bytes() > opts_.max_unwritten_bytes;
}

void connection::writing(std::size_t unwritten_bytes, std::vector<work>& out) {
  unwritten_bytes_ = unwritten_bytes;
  if (output_full()) return;
  std::vector<amqp::link_id> partitions;
  for (const auto& [id, state] : links_) {
    if (state.kind == link_kind::partition) partitions.push_back(id);
  }
  for (amqp::link_id id : partitions) pump_partition(id, out);
  driver_.poll(events_);
  handle(events_, out);
}

void connection::events_ready(std::uint64_t ticket, result<events_read> r, std::vector<work>& out) {
  auto t = reads_.find(ticket);
  if (t == reads_.end()) return;
  const amqp::link_id link = t->second;
  reads_.erase(t);
  auto it = links_.find(link);
  if (it == links_.end()) return;  // the receiver went away meanwhile
  link_state& s = it->second;
  s.reading = false;
  if (!r) {
    log_->info("{}: reading partition {} failed: {}", log_id_, s.partition, r.error().message);
    driver_.close_link(link, condition_for(r.error()));
    out.push_back(release_partition_work{link, s.partition, s.consumer_group, s.entity});
    links_.erase(it);
    return;
  }
  s.start.reset();
  std::int64_t next = r->next_sequence;
  for (const storage::log_record& rec : r->records) {
    auto m = event_message(rec);
    // Presettled, as the receiver would accept each anyway. A record that does not decode is
    // skipped; one that finds no credit left is read again next time.
    if (m && !driver_.send(link, *m, true)) {
      next = rec.sequence;
      break;
    }
  }
  s.next_sequence = next;
  if (r->records.empty()) {
    s.waiting = true;
    out.push_back(wait_events_work{link, s.partition, s.next_sequence, s.entity});
  } else {
    pump_partition(link, out);
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::partition_data(amqp::link_id link, std::vector<work>& out) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.kind != link_kind::partition) return;
  it->second.waiting = false;
  pump_partition(link, out);
  driver_.poll(events_);
  handle(events_, out);
}

void connection::link_gone(link_state& s, const std::string& reason, std::vector<work>& out) {
  release_link_locks(s, out);
  if (!is_identity_link(s.kind)) return;
  const std::string key = key_of(s.device_id, s.module_id);
  auto it = identities_.find(key);
  if (it == identities_.end()) return;
  if (--it->second.links > 0) {
    update_methods(key, out);  // a methods link may have gone
    return;
  }
  // Its last link: the identity disconnects. While its attach is still running the detach waits
  // for the answer (identity_attached), so the table sees them in order.
  if (it->second.attaching) return;
  if (it->second.methods_ready) out.push_back(methods_ready_work{it->second.who, false});
  if (it->second.attached) out.push_back(detach_identity_work{it->second.who, reason});
  identities_.erase(it);
}

void connection::close_identity_links(const std::string& key, const proton::error_condition& error,
                                      std::vector<work>& out) {
  for (auto l = links_.begin(); l != links_.end();) {
    if (is_identity_link(l->second.kind) && key_of(l->second.device_id, l->second.module_id) == key) {
      driver_.close_link(l->first, error);
      link_state s = std::move(l->second);
      l = links_.erase(l);
      link_gone(s, error.description(), out);
    } else {
      ++l;
    }
  }
}

void connection::identity_attached(const connections::identity& who, result<std::shared_ptr<registry::presence>> r,
                                   std::vector<work>& out) {
  const std::string key = key_of(who.device_id, who.module_id);
  auto it = identities_.find(key);
  if (it == identities_.end() || !it->second.attaching) return;
  it->second.attaching = false;
  if (!r) {
    log_->info("{}: {} cannot connect: {}", log_id_, identity_text(who.device_id, who.module_id), r.error().message);
    close_identity_links(key, condition_for(r.error()), out);
    identities_.erase(key);
  } else if (it->second.links == 0) {
    // Its links closed while the attach ran.
    out.push_back(detach_identity_work{it->second.who, "link closed"});
    identities_.erase(it);
  } else {
    it->second.attached = true;
    it->second.presence = std::move(*r);
    update_methods(key, out);
    // Twin requests that waited for the attach: a PUT of desired notifications is answered only
    // now, when desired changes can find this connection.
    auto deferred = std::move(it->second.deferred_twin);
    it->second.deferred_twin.clear();
    for (auto& [link, request] : deferred) handle_twin_request(link, std::move(request), out);
    // Notifications reach this connection through the table only from now on: look again, in
    // case a message came while the attach ran.
    if (who.module_id.empty()) c2d_available(who.device_id, out);
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::drop_identity(const connections::identity& who, const std::string& reason, std::vector<work>& out) {
  const std::string key = key_of(who.device_id, who.module_id);
  if (identities_.find(key) == identities_.end()) return;
  log_->info("{}: {} disconnected: {}", log_id_, identity_text(who.device_id, who.module_id), reason);
  close_identity_links(key, amqp::condition("amqp:connection:forced", reason), out);
  driver_.poll(events_);
  handle(events_, out);
}

std::vector<connections::identity> connection::attached_identities() const {
  std::vector<connections::identity> out;
  for (const auto& [key, st] : identities_) {
    if (st.attached) out.push_back(st.who);
  }
  return out;
}

void connection::expire_grants(std::vector<work>& out) {
  const std::int64_t now = clock_.now_seconds();
  for (auto g = grants_.begin(); g != grants_.end();) {
    if (g->second.expiry > now) {
      ++g;
      continue;
    }
    log_->info("{}: the SAS token for '{}' expired; closing the links it authorised", log_id_, g->first);
    for (auto l = links_.begin(); l != links_.end();) {
      const link_kind k = l->second.kind;
      const bool authorised = is_identity_link(k) || k == link_kind::service_c2d ||
                              k == link_kind::service_feedback || k == link_kind::service_receiver;
      if (authorised && l->second.audience == g->first) {
        driver_.close_link(l->first, amqp::condition("amqp:unauthorized-access", "The SAS token for this link has expired"));
        link_state s = std::move(l->second);
        l = links_.erase(l);
        link_gone(s, "SAS token expired", out);
      } else {
        ++l;
      }
    }
    g = grants_.erase(g);
  }
}

void connection::on_twin_request(const link_state& link, amqp::message_received& e, std::vector<work>& out) {
  // The SDK sends its requests presettled; anything else is accepted here, the outcome travels
  // in the answer.
  if (!e.presettled) driver_.settle(e.delivery, amqp::outcome::accepted);
  twin_request r = read_twin_request(e.message);
  const std::string key = key_of(link.device_id, link.module_id);
  if (grants_.find(link.audience) == grants_.end()) {
    // The grant expired and the link is closing; the SDK waits for an answer all the same.
    answer_twin_request(pending_twin{e.link, key, link.channel, r.correlation_id},
                        twin_error(make_error(errc::unauthorized, "The SAS token for this link has expired"), clock_.now()));
    return;
  }
  if (auto id = identities_.find(key); id != identities_.end() && id->second.attaching) {
    // Bounded by the link's credit, which comes back only as requests are answered.
    id->second.deferred_twin.emplace_back(e.link, std::move(r));
    return;
  }
  handle_twin_request(e.link, std::move(r), out);
}

void connection::handle_twin_request(amqp::link_id request_link, twin_request r, std::vector<work>& out) {
  auto it = links_.find(request_link);
  if (it == links_.end() || it->second.kind != link_kind::twin_requests) return;  // gone: nobody to answer
  const link_state& link = it->second;
  pending_twin p{request_link, key_of(link.device_id, link.module_id), link.channel, r.correlation_id};
  if (id_text(r.correlation_id).empty()) {
    // The SDK matches answers by correlation-id: one without it cannot be answered.
    log_->info("{}: twin request of {} without correlation-id ignored", log_id_,
               identity_text(link.device_id, link.module_id));
    driver_.grant(request_link, 1);
    return;
  }
  switch (r.op) {
    case twin_operation::get:
    case twin_operation::patch_reported: {
      // Credit comes back with the answer (twin_answered).
      const std::uint64_t ticket = ++next_ticket_;
      out.push_back(twin_work{ticket, connections::identity{link.device_id, link.module_id}, r.op, std::move(r.body)});
      twins_.emplace(ticket, std::move(p));
      return;
    }
    case twin_operation::subscribe_desired:
    case twin_operation::unsubscribe_desired: {
      const bool on = r.op == twin_operation::subscribe_desired;
      if (const amqp::link_id rx = twin_receiver(p.key, p.channel); rx != 0) links_.at(rx).desired = on;
      log_->debug("{}: desired notifications {} for {}", log_id_, on ? "on" : "off",
                  identity_text(link.device_id, link.module_id));
      driver_.grant(request_link, 1);
      answer_twin_request(p, twin_answer{on ? 200 : 204, {}, std::nullopt});
      return;
    }
    case twin_operation::unknown: break;
  }
  driver_.grant(request_link, 1);
  answer_twin_request(p, twin_error(make_error(errc::argument_invalid, "Unsupported twin operation '" + r.operation +
                                                                         "' on '" + r.resource + "'"),
                                    clock_.now()));
}

void connection::twin_answered(std::uint64_t ticket, twin_answer a, std::vector<work>& out) {
  auto it = twins_.find(ticket);
  if (it == twins_.end()) return;
  const pending_twin p = std::move(it->second);
  twins_.erase(it);
  driver_.grant(p.request_link, 1);  // ignored when the link has gone
  answer_twin_request(p, a);
  driver_.poll(events_);
  handle(events_, out);
}

void connection::answer_twin_request(const pending_twin& p, const twin_answer& a) {
  const amqp::link_id rx = twin_receiver(p.key, p.channel);
  if (rx == 0) {
    log_->info("{}: twin answer dropped: the device has no twin receiver", log_id_);
    return;
  }
  if (!queue_send(rx, twin_response(p.correlation_id, a))) {
    // Never dropped (the SDK would wait forever): a device that does not read is disconnected.
    log_->info("{}: the device does not read its twin answers; closing", log_id_);
    driver_.close(amqp::condition("amqp:resource-limit-exceeded", "Too many unread twin messages"));
  }
}

amqp::link_id connection::twin_receiver(const std::string& key, const std::string& channel) const {
  amqp::link_id paired = 0;
  amqp::link_id newest = 0;
  for (const auto& [id, s] : links_) {
    if (s.kind != link_kind::twin_responses || key_of(s.device_id, s.module_id) != key) continue;
    newest = std::max(newest, id);
    if (!channel.empty() && s.channel == channel) paired = std::max(paired, id);
  }
  return paired != 0 ? paired : newest;
}

void connection::desired_properties(const connections::identity& who, const std::string& patch_json,
                                    std::vector<work>& out) {
  const std::string key = key_of(who.device_id, who.module_id);
  std::vector<amqp::link_id> receivers;
  for (const auto& [id, s] : links_) {
    if (s.kind == link_kind::twin_responses && s.desired && key_of(s.device_id, s.module_id) == key)
      receivers.push_back(id);
  }
  for (const amqp::link_id rx : receivers) {
    if (!queue_send(rx, desired_message(patch_json))) {
      log_->info("{}: the device does not read its desired patches; closing", log_id_);
      driver_.close(amqp::condition("amqp:resource-limit-exceeded", "Too many unread twin messages"));
      break;
    }
  }
  if (!receivers.empty())
    log_->debug("{}: desired patch sent to {}", log_id_, identity_text(who.device_id, who.module_id));
  driver_.poll(events_);
  handle(events_, out);
}

void connection::on_method_answer(const link_state& link, amqp::message_received& e, std::vector<work>& out) {
  if (grants_.find(link.audience) == grants_.end()) {
    driver_.settle(e.delivery, amqp::outcome::rejected,
                   amqp::condition("amqp:unauthorized-access", "The SAS token for this link has expired"));
    return;
  }
  auto r = read_method_response(e.message);
  driver_.grant(e.link, 1);
  if (!r) {
    log_->info("{}: method response from {} rejected: {}", log_id_, identity_text(link.device_id, link.module_id),
               r.error().message);
    driver_.settle(e.delivery, amqp::outcome::rejected, condition_for(r.error()));
    return;
  }
  // Accepted whatever the service makes of it: a late answer (the call timed out) is the
  // service's to drop, not the device's error.
  driver_.settle(e.delivery, amqp::outcome::accepted);
  out.push_back(method_response_work{connections::identity{link.device_id, link.module_id}, std::move(*r)});
}

void connection::invoke_method(const connections::identity& who, const messaging::method_call& call,
                               std::vector<work>& out) {
  const std::string key = key_of(who.device_id, who.module_id);
  amqp::link_id rx = 0;
  for (const auto& [id, s] : links_) {
    if (s.kind == link_kind::method_calls && key_of(s.device_id, s.module_id) == key) rx = std::max(rx, id);
  }
  if (rx == 0) {
    log_->info("{}: method call '{}' for {} dropped: its methods links are gone", log_id_, call.name,
               identity_text(who.device_id, who.module_id));
  } else if (!queue_send(rx, method_request(call))) {
    log_->info("{}: method call '{}' for {} dropped: {} calls wait for the device's credit", log_id_, call.name,
               identity_text(who.device_id, who.module_id), opts_.max_waiting_sends);
  }
  driver_.poll(events_);
  handle(events_, out);
}

void connection::update_methods(const std::string& key, std::vector<work>& out) {
  auto it = identities_.find(key);
  if (it == identities_.end()) return;
  identity_state& id = it->second;
  bool calls = false;
  bool answers = false;
  for (const auto& [l, s] : links_) {
    if (key_of(s.device_id, s.module_id) != key) continue;
    calls = calls || s.kind == link_kind::method_calls;
    answers = answers || s.kind == link_kind::method_answers;
  }
  const bool ready = id.attached && calls && answers;
  if (ready == id.methods_ready) return;
  id.methods_ready = ready;
  log_->debug("{}: {} {} method calls", log_id_, identity_text(id.who.device_id, id.who.module_id),
              ready ? "takes" : "no longer takes");
  out.push_back(methods_ready_work{id.who, ready});
}

const std::string* connection::grant_for(const std::string& device_id, const std::string& module_id) const {
  const std::int64_t now = clock_.now_seconds();
  for (const auto& [name, g] : grants_) {
    if (g.expiry <= now) continue;
    const bool match = module_id.empty() ? g.who == grant::kind::device && g.device_id == device_id
                                         : g.who == grant::kind::module && g.device_id == device_id &&
                                               g.module_id == module_id;
    if (match) return &name;
  }
  return nullptr;
}

}  // namespace hub::amqp_head
