#include "codec/mqtt/session.hpp"

namespace hub::mqtt {

namespace {
// The keep-alive timer fires every keep_alive / 2; three idle ticks in a row put the idle time
// in [1.5, 2) x keep-alive, the window the specification allows. One timer per connection that
// is not re-armed per packet (re-arming per packet costs syscalls at 30k msgs/s).
constexpr int idle_ticks_to_close = 3;
}  // namespace

void server_session::recv(std::span<const char> in, std::vector<event>& out) {
  if (state_ == state::closed || in.empty()) return;
  received_since_tick_ = true;
  if (buf_.empty()) {
    // Fast path: decode straight from the caller's buffer, keep only the tail.
    const auto used = drain(in, out);
    if (state_ != state::closed) buf_.assign(in.data() + used, in.size() - used);
    return;
  }
  buf_.append(in.data(), in.size());
  const auto used = drain({buf_.data(), buf_.size()}, out);
  if (state_ == state::closed) {
    buf_.clear();
    return;
  }
  buf_.erase(0, used);
  // A large packet leaves a large capacity behind; an idle connection should not keep it.
  if (buf_.empty() && buf_.capacity() > 4096) std::string().swap(buf_);
}

std::size_t server_session::drain(std::span<const char> data, std::vector<event>& out) {
  std::size_t pos = 0;
  while (pos < data.size() && state_ != state::closed) {
    auto r = decode(data.subspan(pos), limits_);
    if (r.st == decode_result::status::need_more) break;
    if (r.st == decode_result::status::error) {
      fail(close_reason::protocol_violation, r.err, out);
      break;
    }
    pos += r.consumed;
    if (!on_packet(std::move(r.pkt), out)) break;
  }
  return pos;
}

bool server_session::on_packet(packet&& p, std::vector<event>& out) {
  if (state_ == state::awaiting_connect) {
    auto* c = std::get_if<connect>(&p);
    if (c == nullptr) {
      fail(close_reason::protocol_violation, decode_error::none, out);
      return false;
    }
    state_ = state::connected;
    keep_alive_s_ = c->keep_alive;
    out.emplace_back(packet_received{std::move(p)});
    if (keep_alive_s_ > 0) {
      out.emplace_back(arm_keep_alive{std::chrono::milliseconds(keep_alive_s_ * 500)});
    }
    return true;
  }
  // A second CONNECT is a protocol violation (§3.1.0-2); CONNACK, SUBACK, UNSUBACK and PINGRESP
  // only flow from server to client.
  if (std::holds_alternative<connect>(p) || std::holds_alternative<connack>(p) ||
      std::holds_alternative<suback>(p) || std::holds_alternative<unsuback>(p) ||
      std::holds_alternative<pingresp>(p)) {
    fail(close_reason::protocol_violation, decode_error::none, out);
    return false;
  }
  if (std::holds_alternative<pingreq>(p)) {  // answered here; the head never sees it
    std::string bytes;
    encode(pingresp{}, bytes);
    out.emplace_back(send_bytes{std::move(bytes)});
    return true;
  }
  if (std::holds_alternative<disconnect>(p)) {
    state_ = state::closed;
    out.emplace_back(close_connection{close_reason::client_disconnect});
    return false;
  }
  out.emplace_back(packet_received{std::move(p)});
  return true;
}

void server_session::keep_alive_tick(std::vector<event>& out) {
  if (state_ != state::connected || keep_alive_s_ == 0) return;
  if (received_since_tick_) {
    received_since_tick_ = false;
    idle_ticks_ = 0;
    return;
  }
  if (++idle_ticks_ >= idle_ticks_to_close) {
    state_ = state::closed;
    out.emplace_back(close_connection{close_reason::keep_alive_timeout});
  }
}

std::uint16_t server_session::next_packet_id() noexcept {
  if (++last_packet_id_ == 0) last_packet_id_ = 1;
  return last_packet_id_;
}

void server_session::fail(close_reason why, decode_error detail, std::vector<event>& out) {
  state_ = state::closed;
  buf_.clear();
  out.emplace_back(close_connection{why, detail});
}

}  // namespace hub::mqtt
