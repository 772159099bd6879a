// The AMQP driver, tested without sockets: a client driver and a server driver exchange bytes in
// memory, and each test checks the events on both sides.
#include "codec/amqp/driver.hpp"

#include <proton/binary.hpp>
#include <proton/types.hpp>

#include <gtest/gtest.h>

#include <algorithm>

using namespace hub::amqp;
using namespace std::chrono_literals;

namespace {

// Moves bytes both ways until neither side has anything left to say.
struct pair {
  explicit pair(driver_options client_opts = {}, driver_options server_opts = {})
      : client(role::client, client_opts), server(role::server, server_opts) {}

  void pump() {
    for (int i = 0; i < 100; ++i) {
      client.poll(client_events);
      server.poll(server_events);
      std::string c = client.take_output();
      std::string s = server.take_output();
      if (c.empty() && s.empty()) return;
      if (first_client_bytes.empty()) first_client_bytes = c.substr(0, 8);
      server.recv({c.data(), c.size()}, server_events);
      client.recv({s.data(), s.size()}, client_events);
    }
    FAIL() << "the drivers never went quiet";
  }

  template <class E>
  std::vector<E> take(std::vector<event>& events) {
    std::vector<E> out;
    for (auto& e : events) {
      if (auto* p = std::get_if<E>(&e)) out.push_back(std::move(*p));
    }
    std::erase_if(events, [](const event& e) { return std::holds_alternative<E>(e); });
    return out;
  }
  template <class E>
  std::vector<E> server_got() { return take<E>(server_events); }
  template <class E>
  std::vector<E> client_got() { return take<E>(client_events); }

  // The client attaches a sender to `target`; the server accepts it with `credit`.
  std::pair<link_id, link_id> sender_link(const std::string& target, std::uint32_t credit) {
    const link_id c = client.open_sender(target);
    pump();
    auto req = server_got<link_requested>();
    EXPECT_EQ(req.size(), 1u);
    if (req.empty()) return {c, 0};
    server.accept_link(req[0].link, credit);
    pump();
    return {c, req[0].link};
  }

  driver client;
  driver server;
  std::vector<event> client_events;
  std::vector<event> server_events;
  std::string first_client_bytes;
};

driver_options no_sasl() {
  driver_options o;
  o.client_sasl = false;
  o.client_hostname = "hub.example";
  return o;
}

proton::message data_message(std::string body) {
  proton::message m;
  m.body(proton::binary(body.begin(), body.end()));
  m.inferred(true);  // a Data section, as the Azure SDKs send
  return m;
}

std::string body_text(const proton::message& m) {
  if (m.body().type() != proton::BINARY) return {};
  const auto b = proton::get<proton::binary>(m.body());
  return std::string(b.begin(), b.end());
}

}  // namespace

TEST(amqp_driver, client_without_sasl_is_served) {
  // The Azure IoT SDKs (rhea) skip SASL: their first bytes are the plain AMQP header.
  pair p(no_sasl());
  p.pump();
  EXPECT_EQ(p.first_client_bytes, std::string("AMQP\x00\x01\x00\x00", 8));
  auto opened = p.server_got<connection_opened>();
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].hostname, "hub.example");
  EXPECT_FALSE(opened[0].container_id.empty());
  EXPECT_TRUE(opened[0].sasl_mechanism.empty());
  EXPECT_TRUE(p.server_got<transport_closed>().empty());
}

TEST(amqp_driver, client_with_sasl_anonymous_is_served) {
  // The Event Hubs client starts with the SASL header and offers ANONYMOUS.
  driver_options c;
  c.client_mechanisms = "ANONYMOUS";
  c.client_hostname = "hub.example";
  pair p(c);
  p.pump();
  EXPECT_EQ(p.first_client_bytes, std::string("AMQP\x03\x01\x00\x00", 8));
  auto opened = p.server_got<connection_opened>();
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].sasl_mechanism, "ANONYMOUS");
  EXPECT_TRUE(p.server_got<transport_closed>().empty());
}

TEST(amqp_driver, messages_on_a_receiving_link_are_settled_by_the_caller) {
  pair p(no_sasl());
  p.pump();
  const link_id c = p.client.open_sender("/devices/d1/messages/events",
                                         {{proton::symbol("com.microsoft:client-version"), proton::value("sdk/1.0")}});
  p.pump();
  auto req = p.server_got<link_requested>();
  ASSERT_EQ(req.size(), 1u);
  EXPECT_TRUE(req[0].we_receive);
  EXPECT_EQ(req[0].target, "/devices/d1/messages/events");
  ASSERT_EQ(req[0].properties.count(proton::symbol("com.microsoft:client-version")), 1u);
  EXPECT_EQ(proton::get<std::string>(req[0].properties.at(proton::symbol("com.microsoft:client-version"))), "sdk/1.0");

  // Nothing reaches the client before the server answers the attach.
  EXPECT_TRUE(p.client_got<link_opened>().empty());
  p.server.accept_link(req[0].link, 100);
  p.pump();
  EXPECT_EQ(p.client_got<link_opened>().size(), 1u);
  EXPECT_EQ(p.client.credit(c), 100);

  std::vector<delivery_id> sent;
  for (int i = 0; i < 3; ++i) {
    auto id = p.client.send(c, data_message("m" + std::to_string(i)));
    ASSERT_TRUE(id);
    sent.push_back(*id);
  }
  p.pump();
  auto got = p.server_got<message_received>();
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].link, req[0].link);
    EXPECT_FALSE(got[i].presettled);
    EXPECT_EQ(body_text(got[i].message), "m" + std::to_string(i));
  }
  EXPECT_EQ(p.server.unsettled_received(), 3u);
  EXPECT_TRUE(p.client_got<delivery_updated>().empty());  // not settled yet

  p.server.settle(got[0].delivery, outcome::accepted);
  p.server.settle(got[1].delivery, outcome::rejected,
                  condition("amqp:link:message-size-exceeded", "too big"));
  p.server.settle(got[2].delivery, outcome::released);
  p.server.settle(got[2].delivery, outcome::accepted);  // twice: ignored
  p.pump();
  EXPECT_EQ(p.server.unsettled_received(), 0u);
  auto updates = p.client_got<delivery_updated>();
  ASSERT_EQ(updates.size(), 3u);
  // Proton reports dispositions in no particular order.
  std::sort(updates.begin(), updates.end(), [](const auto& a, const auto& b) { return a.delivery < b.delivery; });
  EXPECT_EQ(updates[0].delivery, sent[0]);
  EXPECT_EQ(updates[0].state, outcome::accepted);
  EXPECT_EQ(updates[1].delivery, sent[1]);
  EXPECT_EQ(updates[1].state, outcome::rejected);
  EXPECT_EQ(updates[1].error.name(), "amqp:link:message-size-exceeded");
  EXPECT_EQ(updates[1].error.description(), "too big");
  EXPECT_EQ(updates[2].state, outcome::released);
}

TEST(amqp_driver, credit_is_what_the_server_grants) {
  pair p(no_sasl());
  p.pump();
  auto [c, s] = p.sender_link("/devices/d1/messages/events", 10);
  EXPECT_EQ(p.client.credit(c), 10);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(p.client.send(c, data_message("x")));
  EXPECT_FALSE(p.client.send(c, data_message("x")));  // out of credit
  p.pump();
  EXPECT_EQ(p.server_got<message_received>().size(), 10u);
  p.server.grant(s, 5);
  p.pump();
  auto credit = p.client_got<credit_available>();
  ASSERT_FALSE(credit.empty());
  EXPECT_EQ(credit.back().credit, 5);
  EXPECT_EQ(p.client.credit(c), 5);
}

TEST(amqp_driver, refused_link_detaches_with_the_error) {
  pair p(no_sasl());
  p.pump();
  const link_id c = p.client.open_sender("/devices/d2/messages/events");
  p.pump();
  auto req = p.server_got<link_requested>();
  ASSERT_EQ(req.size(), 1u);
  p.server.refuse_link(req[0].link, condition("amqp:unauthorized-access", "no token for d2"));
  p.pump();
  auto closed = p.client_got<link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].link, c);
  EXPECT_TRUE(closed[0].by_peer);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
  EXPECT_EQ(closed[0].error.description(), "no token for d2");
  // The server closed it first: the client's answering detach is no news to it.
  EXPECT_TRUE(p.server_got<link_closed>().empty());
  EXPECT_EQ(p.server.open_links(), 0u);
  EXPECT_EQ(p.client.open_links(), 0u);
}

TEST(amqp_driver, server_sends_on_a_link_the_client_receives_on) {
  // The CBS reply path: the client attaches a receiver (source "$cbs"), the server sends.
  pair p(no_sasl());
  p.pump();
  const link_id c = p.client.open_receiver("$cbs", 10);
  p.pump();
  auto req = p.server_got<link_requested>();
  ASSERT_EQ(req.size(), 1u);
  EXPECT_FALSE(req[0].we_receive);
  EXPECT_EQ(req[0].source, "$cbs");
  p.server.accept_link(req[0].link);
  p.pump();
  auto credit = p.server_got<credit_available>();
  ASSERT_FALSE(credit.empty());
  EXPECT_EQ(credit.back().credit, 10);

  proton::message reply;
  reply.correlation_id(proton::message_id(std::string("6e6c5fd6-0000-4000-8000-000000000001")));
  reply.properties().put("status-code", std::int32_t{200});
  reply.body(std::string("ok"));
  auto sent = p.server.send(req[0].link, reply);
  ASSERT_TRUE(sent);
  p.pump();
  auto got = p.client_got<message_received>();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, c);
  // The correlation id keeps its AMQP type (a string here), which the SDKs compare with ===.
  EXPECT_EQ(got[0].message.correlation_id().type(), proton::STRING);
  EXPECT_EQ(proton::get<std::int32_t>(got[0].message.properties().get("status-code")), 200);
  p.client.settle(got[0].delivery, outcome::accepted);
  p.pump();
  auto updates = p.server_got<delivery_updated>();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].delivery, *sent);
  EXPECT_EQ(updates[0].state, outcome::accepted);
}

TEST(amqp_driver, a_delivery_past_the_size_limit_closes_its_link) {
  driver_options s;
  s.max_message_size = 4096;
  s.max_frame_size = 1024;  // what the server accepts: the client splits the message
  pair p(no_sasl(), s);
  p.pump();
  auto [cl, sl] = p.sender_link("/devices/d1/messages/events", 10);
  ASSERT_TRUE(p.client.send(cl, data_message(std::string(20000, 'x'))));
  // Fed in small pieces, as a socket would deliver them: the link closes once the partial
  // delivery passes the limit, before the rest of it is buffered.
  const std::string bytes = p.client.take_output();
  for (std::size_t i = 0; i < bytes.size(); i += 512)
    p.server.recv({bytes.data() + i, std::min<std::size_t>(512, bytes.size() - i)}, p.server_events);
  p.pump();
  auto closed = p.server_got<link_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].link, sl);
  EXPECT_FALSE(closed[0].by_peer);
  EXPECT_TRUE(p.server_got<message_received>().empty());
  auto client_closed = p.client_got<link_closed>();
  ASSERT_EQ(client_closed.size(), 1u);
  EXPECT_EQ(client_closed[0].error.name(), "amqp:link:message-size-exceeded");
}

TEST(amqp_driver, silent_peer_is_dropped_after_the_idle_timeout) {
  driver_options s;
  s.idle_timeout = 1000ms;
  pair p(no_sasl(), s);
  p.pump();
  std::vector<event> ev;
  auto next = p.server.tick(0ms, ev);
  ASSERT_TRUE(next);
  EXPECT_LE(next->count(), 1000);
  // The client's heartbeats keep the connection alive: it ticks too.
  for (auto t = 400ms; t <= 3000ms; t += 400ms) {
    p.client.tick(t, p.client_events);
    p.server.tick(t, p.server_events);
    p.pump();
  }
  EXPECT_TRUE(p.server_got<transport_closed>().empty());
  // Then it falls silent.
  p.server.tick(5000ms, ev);
  p.server.tick(6500ms, ev);
  p.server.take_output();  // our close frame
  p.server.poll(ev);
  bool closed = false;
  for (auto& e : ev) {
    if (auto* t = std::get_if<transport_closed>(&e)) {
      closed = true;
      EXPECT_FALSE(t->error.empty());
    }
  }
  EXPECT_TRUE(closed);
}

TEST(amqp_driver, orderly_close_finishes_both_sides) {
  pair p(no_sasl());
  p.pump();
  p.client.close();
  p.pump();
  EXPECT_EQ(p.server_got<connection_closed>().size(), 1u);
  p.client.read_closed(p.client_events);
  p.server.read_closed(p.server_events);
  p.pump();
  EXPECT_TRUE(p.server.finished());
  auto closed = p.server_got<transport_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_TRUE(closed[0].error.empty());
}

TEST(amqp_driver, server_close_carries_its_error_to_the_client) {
  pair p(no_sasl());
  p.pump();
  p.server.close(condition("amqp:unauthorized-access", "token expired"));
  p.pump();
  auto closed = p.client_got<connection_closed>();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].error.name(), "amqp:unauthorized-access");
}

TEST(amqp_driver, garbage_ends_the_transport_with_an_error) {
  driver server(role::server);
  std::vector<event> ev;
  const std::string junk = "GET / HTTP/1.1\r\n\r\n";
  server.recv({junk.data(), junk.size()}, ev);
  server.take_output();
  server.read_closed(ev);
  bool closed = false;
  for (auto& e : ev) {
    if (auto* t = std::get_if<transport_closed>(&e)) {
      closed = true;
      EXPECT_FALSE(t->error.empty());
    }
  }
  EXPECT_TRUE(closed);
  server.take_output();
  EXPECT_TRUE(server.finished());
}

TEST(amqp_driver, byte_by_byte_input_gives_the_same_events) {
  driver client(role::client, no_sasl());
  driver server(role::server);
  std::vector<event> cev, sev;
  const link_id c = client.open_sender("/devices/d1/messages/events");
  (void)c;
  std::string bytes = client.take_output();
  for (char ch : bytes) server.recv({&ch, 1}, sev);
  std::size_t requested = 0;
  for (auto& e : sev) requested += std::holds_alternative<link_requested>(e) ? 1 : 0;
  EXPECT_EQ(requested, 1u);
}

TEST(amqp_driver, a_peer_that_sends_only_the_header_is_dropped_after_the_idle_timeout) {
  driver_options o;
  o.idle_timeout = 1000ms;
  driver server(role::server, o);
  std::vector<event> ev;
  const std::string header("AMQP\x00\x01\x00\x00", 8);
  server.recv({header.data(), header.size()}, ev);
  server.tick(0ms, ev);
  server.take_output();
  server.tick(1500ms, ev);
  server.tick(3000ms, ev);
  server.take_output();
  server.poll(ev);
  bool closed = false;
  for (auto& e : ev) closed = closed || std::holds_alternative<transport_closed>(e);
  EXPECT_TRUE(closed);
}

TEST(amqp_driver, a_peer_that_never_opens_is_cut_off) {
  driver server(role::server);
  std::vector<event> ev;
  std::string junk("AMQP\x03\x01\x00\x00", 8);
  junk += std::string(70 * 1024, '\0');  // empty SASL frames would be 8 bytes each; zeros will do
  server.recv({junk.data(), junk.size()}, ev);
  server.take_output();
  server.poll(ev);
  bool closed = false;
  for (auto& e : ev) closed = closed || std::holds_alternative<transport_closed>(e);
  EXPECT_TRUE(closed);
}
