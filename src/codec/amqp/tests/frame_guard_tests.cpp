// The frame guard (frame_guard.hpp) on hand-encoded frames, and the driver with it in front of
// Proton: a transfer that starts a delivery with more=true and no delivery-id, which makes
// Proton 0.37 abort the process (found by fuzz_amqp_head), ends the connection instead.
#include "codec/amqp/driver.hpp"
#include "codec/amqp/frame_guard.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace hub::amqp {
namespace {

// ---- a few AMQP encodings, by hand ---------------------------------------------------------
const std::string null_v("\x40", 1);
const std::string uint0("\x43", 1);
const std::string true_v("\x41", 1);
const std::string false_v("\x42", 1);
std::string small_uint(std::uint8_t v) { return std::string("\x52", 1) + static_cast<char>(v); }
std::string str8(const std::string& s) { return std::string("\xa1", 1) + static_cast<char>(s.size()) + s; }
std::string bin8(const std::string& s) { return std::string("\xa0", 1) + static_cast<char>(s.size()) + s; }

// A described list: 0x00, smallulong descriptor, list8.
std::string performative(std::uint8_t code, const std::vector<std::string>& fields) {
  std::string items;
  for (const auto& f : fields) items += f;
  std::string out("\x00\x53", 2);
  out += static_cast<char>(code);
  out += '\xc0';
  out += static_cast<char>(items.size() + 1);
  out += static_cast<char>(fields.size());
  return out + items;
}

std::string frame(std::uint16_t channel, const std::string& body, const std::string& payload = {}) {
  const std::uint32_t size = static_cast<std::uint32_t>(8 + body.size() + payload.size());
  std::string out;
  out += static_cast<char>(size >> 24);
  out += static_cast<char>(size >> 16);
  out += static_cast<char>(size >> 8);
  out += static_cast<char>(size);
  out += '\x02';  // doff
  out += '\x00';  // AMQP
  out += static_cast<char>(channel >> 8);
  out += static_cast<char>(channel);
  return out + body + payload;
}

const std::string header("AMQP\x00\x01\x00\x00", 8);
std::string open_frame() { return frame(0, performative(0x10, {str8("client")})); }
std::string begin_frame() { return frame(0, performative(0x11, {null_v, uint0, small_uint(100), small_uint(100)})); }
// The client's sender link, handle 0, to "t".
std::string attach_frame(std::uint8_t handle = 0) {
  return frame(0, performative(0x12, {str8("link"), small_uint(handle), false_v, null_v, null_v, null_v,
                                      performative(0x29, {str8("t")}), null_v, null_v, uint0}));
}
std::string detach_frame(std::uint8_t handle = 0) { return frame(0, performative(0x16, {small_uint(handle), true_v})); }
// A transfer on handle 0: delivery-id (or none), more, aborted.
std::string transfer(std::optional<std::uint8_t> id, bool more, bool aborted = false, std::uint8_t handle = 0) {
  std::vector<std::string> f{small_uint(handle), id ? small_uint(*id) : null_v, id ? bin8("tag") : null_v, uint0,
                             false_v, more ? true_v : false_v};
  if (aborted) {
    f.insert(f.end(), {null_v, null_v, null_v, true_v});
  }
  return frame(0, performative(0x14, f), "payload");
}

// Feeds `bytes` one call per chunk of `chunk` bytes; returns how many were let through.
std::size_t feed(frame_guard& g, const std::string& bytes, std::size_t chunk) {
  std::size_t passed = 0;
  for (std::size_t at = 0; at < bytes.size(); at += chunk) {
    const std::size_t n = std::min(chunk, bytes.size() - at);
    const std::size_t ok = g.scan({bytes.data() + at, n});
    passed += ok;
    if (ok < n) break;
  }
  return passed;
}

const std::string session = header + open_frame() + begin_frame() + attach_frame();

TEST(frame_guard, lets_a_normal_session_through_in_any_chunks) {
  const std::string bytes = session + transfer(0, false) + transfer(1, true) + transfer(std::nullopt, true) +
                            transfer(std::nullopt, false) + transfer(2, false) + detach_frame();
  for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{7}, bytes.size()}) {
    frame_guard g;
    EXPECT_EQ(feed(g, bytes, chunk), bytes.size()) << chunk;
    EXPECT_FALSE(g.error()) << chunk;
  }
}

TEST(frame_guard, stops_a_first_frame_without_delivery_id_before_its_last_byte) {
  const std::string bad = transfer(std::nullopt, true);
  for (std::size_t chunk : {std::size_t{1}, std::size_t{5}, session.size() + bad.size()}) {
    frame_guard g;
    EXPECT_EQ(feed(g, session + bad, chunk), session.size() + bad.size() - 1) << chunk;
    ASSERT_TRUE(g.error());
    EXPECT_EQ(g.error()->condition, "amqp:invalid-field");
    EXPECT_EQ(g.scan({"x", 1}), 0u) << "nothing passes after";
  }
}

TEST(frame_guard, an_unfinished_delivery_ends_with_its_last_frame_an_abort_or_a_detach) {
  for (const std::string& end : {transfer(std::nullopt, false), transfer(std::nullopt, true, true), detach_frame() + attach_frame()}) {
    frame_guard g;
    const std::string ok = session + transfer(0, true) + end;
    ASSERT_EQ(feed(g, ok, ok.size()), ok.size());
    const std::string bad = transfer(std::nullopt, true);
    EXPECT_EQ(feed(g, bad, bad.size()), bad.size() - 1);
    EXPECT_TRUE(g.error());
  }
}

TEST(frame_guard, links_are_told_apart) {
  frame_guard g;
  const std::string ok = session + attach_frame(1) + transfer(0, true, false, 0);
  ASSERT_EQ(feed(g, ok, ok.size()), ok.size());
  const std::string bad = transfer(std::nullopt, true, false, 1);
  EXPECT_EQ(feed(g, bad, bad.size()), bad.size() - 1);
}

TEST(frame_guard, sasl_frames_empty_frames_and_foreign_performatives_pass) {
  frame_guard g;
  std::string sasl = frame(0, performative(0x41, {str8("ANONYMOUS")}));
  sasl[5] = '\x01';
  const std::string bytes = std::string("AMQP\x03\x01\x00\x00", 8) + sasl + header + open_frame() +
                            frame(0, "") + frame(0, performative(0x13, {null_v}));
  EXPECT_EQ(feed(g, bytes, 2), bytes.size());
  EXPECT_FALSE(g.error());
}

TEST(frame_guard, a_second_sasl_init_is_refused) {
  std::string init = frame(0, performative(0x41, {std::string("\xa3\x09", 2) + "ANONYMOUS"}));
  init[5] = '\x01';
  frame_guard g;
  const std::string ok = std::string("AMQP\x03\x01\x00\x00", 8) + init + header;
  ASSERT_EQ(feed(g, ok, ok.size()), ok.size());
  EXPECT_EQ(feed(g, init, 4), init.size() - 1);
  ASSERT_TRUE(g.error());
  EXPECT_EQ(g.error()->condition, "amqp:connection:framing-error");
}

// Proton 0.37 stops reading at these and leaves the connection open, unanswered.
TEST(frame_guard, a_performative_with_an_unknown_descriptor_is_refused) {
  {
    frame_guard g;
    const std::string unknown = frame(0, performative(0x99, {small_uint(1)}));
    const std::string bytes = header + open_frame() + unknown + begin_frame();
    EXPECT_EQ(feed(g, bytes, 3), header.size() + open_frame().size() + unknown.size() - 1);
    ASSERT_TRUE(g.error());
    EXPECT_EQ(g.error()->condition, "amqp:decode-error");
    EXPECT_EQ(g.error()->description, "unknown performative 0x99");
  }
  {
    frame_guard g;
    std::string sasl = frame(0, performative(0x4f, {null_v}));
    sasl[5] = '\x01';
    const std::string bytes = std::string("AMQP\x03\x01\x00\x00", 8) + sasl;
    EXPECT_EQ(feed(g, bytes, bytes.size()), bytes.size() - 1);
    ASSERT_TRUE(g.error());
    EXPECT_EQ(g.error()->condition, "amqp:decode-error");
  }
}

TEST(frame_guard, an_undecodable_transfer_is_refused) {
  frame_guard g;
  std::string t = transfer(0, true);
  t[8 + 6] = '\x07';  // the first field's constructor: no such type
  const std::string bytes = session + t;
  EXPECT_LT(feed(g, bytes, bytes.size()), bytes.size());
  ASSERT_TRUE(g.error());
  EXPECT_EQ(g.error()->condition, "amqp:decode-error");
}

// The second finding: a transfer list of count 4 whose size covers thirteen booleans. Read by
// the count it has no `more`; Proton reads by the size, sees more=true and no delivery-id, and
// aborts. A list whose size and count disagree is refused whatever it says.
TEST(frame_guard, a_list_whose_size_and_count_disagree_is_refused) {
  std::string fields;
  for (int i = 0; i < 13; ++i) fields += true_v;
  std::string body("\x00\x53\x14\xc0", 4);
  body += static_cast<char>(fields.size() + 1);
  body += '\x04';  // count 4, size for 13
  const std::string bad = frame(0, body + fields, "payload");
  for (std::size_t chunk : {std::size_t{1}, std::size_t{64}}) {
    frame_guard g;
    EXPECT_EQ(feed(g, session + bad, chunk), session.size() + bad.size() - 1) << chunk;
    ASSERT_TRUE(g.error());
    EXPECT_EQ(g.error()->condition, "amqp:decode-error");
  }
  // The same for an attach: which handle it names depends on the reader.
  std::string attach = attach_frame(1);
  attach[8 + 5] = static_cast<char>(attach[8 + 5] - 1);  // count 9 for ten fields
  frame_guard g;
  EXPECT_EQ(feed(g, session + attach, 5), session.size() + attach.size() - 1);
  ASSERT_TRUE(g.error());
  EXPECT_EQ(g.error()->condition, "amqp:decode-error");
}

TEST(frame_guard, a_single_frame_delivery_without_delivery_id_is_refused) {
  frame_guard g;
  const std::string bytes = session + transfer(0, false) + transfer(std::nullopt, false);
  EXPECT_EQ(feed(g, bytes, bytes.size()), bytes.size() - 1);
  ASSERT_TRUE(g.error());
  EXPECT_EQ(g.error()->condition, "amqp:invalid-field");
}

TEST(frame_guard, a_frame_too_short_to_be_one_hands_the_rest_to_proton) {
  frame_guard g;
  const std::string bytes = header + std::string("\x00\x00\x00\x04\x02\x00\x00\x00", 8) + transfer(std::nullopt, true);
  EXPECT_EQ(feed(g, bytes, bytes.size()), bytes.size());  // Proton fails the transport at the bad size
}

// The driver with the guard: the frame that aborted the process closes the transport.
TEST(frame_guard, the_driver_closes_the_connection_instead_of_aborting) {
  driver d(role::server, driver_options{});
  std::vector<event> events;
  // The session first, so that the server's own Begin gives the peer a window.
  d.recv({session.data(), session.size()}, events);
  (void)d.take_output();
  for (const auto& e : events) EXPECT_FALSE(std::holds_alternative<transport_closed>(e));
  events.clear();
  const std::string bad = transfer(std::nullopt, true);
  d.recv({bad.data(), bad.size()}, events);
  bool closed = false;
  for (const auto& e : events) {
    if (const auto* t = std::get_if<transport_closed>(&e)) {
      closed = true;
      EXPECT_EQ(t->error.name(), "amqp:invalid-field");
    }
  }
  EXPECT_TRUE(closed);
}

}  // namespace
}  // namespace hub::amqp
