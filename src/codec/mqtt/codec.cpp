#include "codec/mqtt/codec.hpp"

#include <cstdint>

namespace hub::mqtt {

std::string_view to_string(decode_error e) noexcept {
  switch (e) {
    case decode_error::none: return "none";
    case decode_error::malformed_remaining_length: return "malformed remaining length";
    case decode_error::packet_too_large: return "packet too large";
    case decode_error::reserved_packet_type: return "reserved packet type";
    case decode_error::bad_fixed_header_flags: return "bad fixed header flags";
    case decode_error::truncated: return "truncated packet";
    case decode_error::trailing_bytes: return "unexpected bytes at the end of the packet";
    case decode_error::bad_utf8: return "ill-formed UTF-8 string";
    case decode_error::bad_protocol_name: return "bad protocol name";
    case decode_error::reserved_connect_flag: return "reserved CONNECT flag set";
    case decode_error::bad_will_flags: return "inconsistent will flags";
    case decode_error::password_without_username: return "password flag without user name flag";
    case decode_error::bad_qos: return "invalid QoS";
    case decode_error::zero_packet_id: return "packet identifier 0";
    case decode_error::wildcard_in_topic_name: return "wildcard in topic name";
    case decode_error::empty_topic: return "empty topic";
    case decode_error::bad_topic_filter: return "invalid topic filter";
    case decode_error::empty_subscription_list: return "SUBSCRIBE/UNSUBSCRIBE without topics";
    case decode_error::bad_requested_qos: return "invalid requested QoS";
  }
  return "unknown";
}

bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      if (c == 0) return false;
      ++p;
      continue;
    }
    int len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p < len) return false;
    for (int i = 1; i < len; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are ill-formed.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    if (cp > 0x10FFFF) return false;
    p += len;
  }
  return true;
}

bool valid_topic_name(std::string_view s) noexcept {
  return !s.empty() && s.find_first_of("+#") == std::string_view::npos;
}

bool valid_topic_filter(std::string_view s) noexcept {
  if (s.empty()) return false;
  std::size_t start = 0;
  for (;;) {
    const auto slash = s.find('/', start);
    const auto level = s.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (level.find('#') != std::string_view::npos) {
      // '#' must be a whole level and the last one.
      if (level != "#" || slash != std::string_view::npos) return false;
    }
    if (level.find('+') != std::string_view::npos && level != "+") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool topic_matches(std::string_view filter, std::string_view name) noexcept {
  // Topics starting with '$' are not matched by a leading wildcard (§4.7.2).
  if (!name.empty() && name.front() == '$' && !filter.empty() && (filter.front() == '+' || filter.front() == '#')) {
    return false;
  }
  std::size_t fi = 0, ni = 0;
  for (;;) {
    const auto fslash = filter.find('/', fi);
    const auto flevel = filter.substr(fi, fslash == std::string_view::npos ? std::string_view::npos : fslash - fi);
    if (flevel == "#") return true;
    if (ni > name.size()) return false;
    const auto nslash = name.find('/', ni);
    const auto nlevel = name.substr(ni, nslash == std::string_view::npos ? std::string_view::npos : nslash - ni);
    if (flevel != "+" && flevel != nlevel) return false;
    const bool fend = fslash == std::string_view::npos;
    const bool nend = nslash == std::string_view::npos;
    if (fend || nend) {
      if (fend && nend) return true;
      // "a/#" matches "a": the filter has one more level, "#".
      return nend && !fend && filter.substr(fslash + 1) == "#";
    }
    fi = fslash + 1;
    ni = nslash + 1;
  }
}

namespace {

// A bounds-checked reader over one packet's variable header and payload.
class reader {
 public:
  explicit reader(std::string_view s) : s_(s) {}
  bool u8(std::uint8_t& v) {
    if (s_.size() - pos_ < 1) return fail(decode_error::truncated);
    v = static_cast<std::uint8_t>(s_[pos_++]);
    return true;
  }
  bool u16(std::uint16_t& v) {
    if (s_.size() - pos_ < 2) return fail(decode_error::truncated);
    v = static_cast<std::uint16_t>((static_cast<std::uint8_t>(s_[pos_]) << 8) | static_cast<std::uint8_t>(s_[pos_ + 1]));
    pos_ += 2;
    return true;
  }
  bool binary(std::string& v) {
    std::uint16_t len = 0;
    if (!u16(len)) return false;
    if (s_.size() - pos_ < len) return fail(decode_error::truncated);
    v.assign(s_.substr(pos_, len));
    pos_ += len;
    return true;
  }
  bool utf8(std::string& v) {
    if (!binary(v)) return false;
    if (!valid_utf8(v)) return fail(decode_error::bad_utf8);
    return true;
  }
  std::string_view rest() {
    auto r = s_.substr(pos_);
    pos_ = s_.size();
    return r;
  }
  bool at_end() const { return pos_ == s_.size(); }
  bool fail(decode_error e) {
    if (err_ == decode_error::none) err_ = e;
    return false;
  }
  decode_error error() const { return err_; }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
  decode_error err_ = decode_error::none;
};

bool decode_connect(reader& r, connect& c) {
  std::string name;
  if (!r.utf8(name)) return false;
  std::uint8_t level = 0, flags = 0;
  if (!r.u8(level) || !r.u8(flags) || !r.u16(c.keep_alive)) return false;
  // The protocol level is checked by the session (it answers CONNACK 1), not here.
  if (name != "MQTT" && !(name == "MQIsdp" && level == 3)) return r.fail(decode_error::bad_protocol_name);
  c.protocol_level = level;
  // Another version cannot be read as 3.1.1 (MQTT 5 puts properties here): stop, so that the
  // session can still answer CONNACK 1, unacceptable protocol version (§3.1.2.2).
  if (level != 4 && !(name == "MQIsdp" && level == 3)) {
    r.rest();
    return true;
  }
  if (flags & 0x01) return r.fail(decode_error::reserved_connect_flag);
  c.clean_session = (flags & 0x02) != 0;
  const bool will = (flags & 0x04) != 0;
  const std::uint8_t will_qos = (flags >> 3) & 0x03;
  const bool will_retain = (flags & 0x20) != 0;
  const bool has_password = (flags & 0x40) != 0;
  const bool has_username = (flags & 0x80) != 0;
  if (!will && (will_qos != 0 || will_retain)) return r.fail(decode_error::bad_will_flags);
  if (will_qos == 3) return r.fail(decode_error::bad_will_flags);
  if (has_password && !has_username) return r.fail(decode_error::password_without_username);
  if (!r.utf8(c.client_id)) return false;
  if (will) {
    will_message w;
    w.qos = will_qos;
    w.retain = will_retain;
    if (!r.utf8(w.topic) || !r.binary(w.payload)) return false;
    if (!valid_topic_name(w.topic)) return r.fail(decode_error::wildcard_in_topic_name);
    c.will = std::move(w);
  }
  if (has_username) {
    std::string u;
    if (!r.utf8(u)) return false;
    c.username = std::move(u);
  }
  if (has_password) {
    std::string p;
    if (!r.binary(p)) return false;
    c.password = std::move(p);
  }
  return true;
}

bool decode_publish(reader& r, std::uint8_t flags, publish& p) {
  p.dup = (flags & 0x08) != 0;
  p.qos = (flags >> 1) & 0x03;
  p.retain = (flags & 0x01) != 0;
  if (p.qos == 3 || (p.qos == 0 && p.dup)) return r.fail(decode_error::bad_qos);
  if (!r.utf8(p.topic)) return false;
  if (p.topic.empty()) return r.fail(decode_error::empty_topic);
  if (!valid_topic_name(p.topic)) return r.fail(decode_error::wildcard_in_topic_name);
  if (p.qos > 0) {
    if (!r.u16(p.packet_id)) return false;
    if (p.packet_id == 0) return r.fail(decode_error::zero_packet_id);
  }
  p.payload.assign(r.rest());
  return true;
}

bool decode_id(reader& r, std::uint16_t& id) {
  if (!r.u16(id)) return false;
  if (id == 0) return r.fail(decode_error::zero_packet_id);
  return true;
}

bool decode_subscribe(reader& r, const decode_limits& limits, subscribe& s) {
  if (!decode_id(r, s.packet_id)) return false;
  while (!r.at_end()) {
    subscription sub;
    std::uint8_t qos = 0;
    if (!r.utf8(sub.filter) || !r.u8(qos)) return false;
    if ((qos & 0xFC) != 0 || qos == 3) return r.fail(decode_error::bad_requested_qos);
    if (!valid_topic_filter(sub.filter)) return r.fail(decode_error::bad_topic_filter);
    sub.qos = qos;
    if (s.subscriptions.size() >= limits.max_subscriptions) return r.fail(decode_error::packet_too_large);
    s.subscriptions.push_back(std::move(sub));
  }
  if (s.subscriptions.empty()) return r.fail(decode_error::empty_subscription_list);
  return true;
}

bool decode_unsubscribe(reader& r, const decode_limits& limits, unsubscribe& u) {
  if (!decode_id(r, u.packet_id)) return false;
  while (!r.at_end()) {
    std::string f;
    if (!r.utf8(f)) return false;
    if (!valid_topic_filter(f)) return r.fail(decode_error::bad_topic_filter);
    if (u.filters.size() >= limits.max_subscriptions) return r.fail(decode_error::packet_too_large);
    u.filters.push_back(std::move(f));
  }
  if (u.filters.empty()) return r.fail(decode_error::empty_subscription_list);
  return true;
}

bool decode_suback(reader& r, suback& s) {
  if (!decode_id(r, s.packet_id)) return false;
  for (char c : r.rest()) s.codes.push_back(static_cast<std::uint8_t>(c));
  if (s.codes.empty()) return r.fail(decode_error::truncated);
  return true;
}

// Required fixed-header flags per type (§2.2.2); PUBLISH carries its own.
bool flags_valid(packet_type t, std::uint8_t flags) {
  switch (t) {
    case packet_type::publish: return true;
    case packet_type::pubrel:
    case packet_type::subscribe:
    case packet_type::unsubscribe: return flags == 0x02;
    case packet_type::connect:
    case packet_type::connack:
    case packet_type::puback:
    case packet_type::pubrec:
    case packet_type::pubcomp:
    case packet_type::suback:
    case packet_type::unsuback:
    case packet_type::pingreq:
    case packet_type::pingresp:
    case packet_type::disconnect: return flags == 0;
  }
  return false;
}

decode_result error_result(decode_error e) {
  decode_result r;
  r.st = decode_result::status::error;
  r.err = e;
  return r;
}

}  // namespace

decode_result decode(std::span<const char> in, const decode_limits& limits) {
  if (in.empty()) return {};
  const auto first = static_cast<std::uint8_t>(in[0]);
  const auto type_num = first >> 4;
  const std::uint8_t flags = first & 0x0F;
  if (type_num == 0 || type_num == 15) return error_result(decode_error::reserved_packet_type);
  const auto type = static_cast<packet_type>(type_num);
  if (!flags_valid(type, flags)) return error_result(decode_error::bad_fixed_header_flags);

  // Remaining length: 1..4 bytes, 7 bits each (§2.2.3).
  std::size_t remaining = 0;
  std::size_t header = 1;
  for (int shift = 0;; shift += 7) {
    if (header >= in.size()) return {};
    if (header > 4) return error_result(decode_error::malformed_remaining_length);
    const auto b = static_cast<std::uint8_t>(in[header++]);
    remaining |= static_cast<std::size_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) break;
    if (header == 5) return error_result(decode_error::malformed_remaining_length);
  }
  if (remaining > limits.max_packet_size) return error_result(decode_error::packet_too_large);
  if (in.size() - header < remaining) return {};

  reader r(std::string_view(in.data() + header, remaining));
  decode_result out;
  bool ok = false;
  switch (type) {
    case packet_type::connect: {
      connect c;
      ok = decode_connect(r, c);
      out.pkt = std::move(c);
      break;
    }
    case packet_type::connack: {
      connack c;
      std::uint8_t ack = 0, code = 0;
      ok = r.u8(ack) && r.u8(code);
      c.session_present = (ack & 0x01) != 0;
      c.code = static_cast<connack_code>(code);
      out.pkt = c;
      break;
    }
    case packet_type::publish: {
      publish p;
      ok = decode_publish(r, flags, p);
      out.pkt = std::move(p);
      break;
    }
    case packet_type::puback: {
      puback p;
      ok = decode_id(r, p.packet_id);
      out.pkt = p;
      break;
    }
    case packet_type::pubrec: {
      pubrec p;
      ok = decode_id(r, p.packet_id);
      out.pkt = p;
      break;
    }
    case packet_type::pubrel: {
      pubrel p;
      ok = decode_id(r, p.packet_id);
      out.pkt = p;
      break;
    }
    case packet_type::pubcomp: {
      pubcomp p;
      ok = decode_id(r, p.packet_id);
      out.pkt = p;
      break;
    }
    case packet_type::subscribe: {
      subscribe s;
      ok = decode_subscribe(r, limits, s);
      out.pkt = std::move(s);
      break;
    }
    case packet_type::suback: {
      suback s;
      ok = decode_suback(r, s);
      out.pkt = std::move(s);
      break;
    }
    case packet_type::unsubscribe: {
      unsubscribe u;
      ok = decode_unsubscribe(r, limits, u);
      out.pkt = std::move(u);
      break;
    }
    case packet_type::unsuback: {
      unsuback u;
      ok = decode_id(r, u.packet_id);
      out.pkt = u;
      break;
    }
    case packet_type::pingreq: out.pkt = pingreq{}; ok = true; break;
    case packet_type::pingresp: out.pkt = pingresp{}; ok = true; break;
    case packet_type::disconnect: out.pkt = disconnect{}; ok = true; break;
  }
  if (!ok) return error_result(r.error() == decode_error::none ? decode_error::truncated : r.error());
  if (!r.at_end()) return error_result(decode_error::trailing_bytes);
  out.st = decode_result::status::ok;
  out.consumed = header + remaining;
  return out;
}

namespace {

void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}

void put_str(std::string& out, std::string_view s) {
  put_u16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}

void put_header(std::string& out, std::uint8_t first, std::size_t remaining) {
  out.push_back(static_cast<char>(first));
  do {
    std::uint8_t b = remaining & 0x7F;
    remaining >>= 7;
    if (remaining > 0) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (remaining > 0);
}

void put_id_only(std::string& out, std::uint8_t first, std::uint16_t id) {
  put_header(out, first, 2);
  put_u16(out, id);
}

struct encoder {
  std::string& out;

  void operator()(const connect& c) const {
    std::size_t len = 2 + 4 + 1 + 1 + 2 + 2 + c.client_id.size();
    std::uint8_t flags = c.clean_session ? 0x02 : 0;
    if (c.will) {
      flags |= 0x04 | static_cast<std::uint8_t>(c.will->qos << 3) | (c.will->retain ? 0x20 : 0);
      len += 2 + c.will->topic.size() + 2 + c.will->payload.size();
    }
    if (c.username) {
      flags |= 0x80;
      len += 2 + c.username->size();
    }
    if (c.password) {
      flags |= 0x40;
      len += 2 + c.password->size();
    }
    put_header(out, 0x10, len);
    put_str(out, "MQTT");
    out.push_back(static_cast<char>(c.protocol_level));
    out.push_back(static_cast<char>(flags));
    put_u16(out, c.keep_alive);
    put_str(out, c.client_id);
    if (c.will) {
      put_str(out, c.will->topic);
      put_str(out, c.will->payload);
    }
    if (c.username) put_str(out, *c.username);
    if (c.password) put_str(out, *c.password);
  }
  void operator()(const connack& c) const {
    put_header(out, 0x20, 2);
    out.push_back(c.session_present ? 1 : 0);
    out.push_back(static_cast<char>(c.code));
  }
  void operator()(const publish& p) const {
    const std::uint8_t first = 0x30 | (p.dup ? 0x08 : 0) | static_cast<std::uint8_t>(p.qos << 1) | (p.retain ? 1 : 0);
    put_header(out, first, 2 + p.topic.size() + (p.qos > 0 ? 2 : 0) + p.payload.size());
    put_str(out, p.topic);
    if (p.qos > 0) put_u16(out, p.packet_id);
    out.append(p.payload);
  }
  void operator()(const puback& p) const { put_id_only(out, 0x40, p.packet_id); }
  void operator()(const pubrec& p) const { put_id_only(out, 0x50, p.packet_id); }
  void operator()(const pubrel& p) const { put_id_only(out, 0x62, p.packet_id); }
  void operator()(const pubcomp& p) const { put_id_only(out, 0x70, p.packet_id); }
  void operator()(const subscribe& s) const {
    std::size_t len = 2;
    for (const auto& sub : s.subscriptions) len += 2 + sub.filter.size() + 1;
    put_header(out, 0x82, len);
    put_u16(out, s.packet_id);
    for (const auto& sub : s.subscriptions) {
      put_str(out, sub.filter);
      out.push_back(static_cast<char>(sub.qos));
    }
  }
  void operator()(const suback& s) const {
    put_header(out, 0x90, 2 + s.codes.size());
    put_u16(out, s.packet_id);
    for (auto c : s.codes) out.push_back(static_cast<char>(c));
  }
  void operator()(const unsubscribe& u) const {
    std::size_t len = 2;
    for (const auto& f : u.filters) len += 2 + f.size();
    put_header(out, 0xA2, len);
    put_u16(out, u.packet_id);
    for (const auto& f : u.filters) put_str(out, f);
  }
  void operator()(const unsuback& u) const { put_id_only(out, 0xB0, u.packet_id); }
  void operator()(const pingreq&) const { put_header(out, 0xC0, 0); }
  void operator()(const pingresp&) const { put_header(out, 0xD0, 0); }
  void operator()(const disconnect&) const { put_header(out, 0xE0, 0); }
};

}  // namespace

void encode(const packet& p, std::string& out) { std::visit(encoder{out}, p); }

}  // namespace hub::mqtt
