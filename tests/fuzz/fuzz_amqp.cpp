// libFuzzer target for the AMQP driver (Proton's connection_driver as the hub uses it): arbitrary
// bytes from a client, fed in arbitrary chunks, must never crash, hang or throw. The target plays
// the head's part too: it accepts or refuses links, settles messages and sends replies, so those
// paths see hostile input as well.
#include "codec/amqp/driver.hpp"

#include <cstddef>
#include <cstdint>
#include <variant>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace hub::amqp;
  driver_options opts;
  opts.max_message_size = 64 * 1024;
  driver d(role::server, opts);
  std::vector<event> events;
  // The first byte picks the chunk size, so splits at every boundary get exercised.
  const std::size_t chunk = size > 0 ? 1 + data[0] % 64 : 1;
  const auto* p = reinterpret_cast<const char*>(data);
  std::uint64_t n_links = 0;
  for (std::size_t pos = size > 0 ? 1 : 0; pos < size; pos += chunk) {
    d.recv({p + pos, std::min(chunk, size - pos)}, events);
    for (auto& e : events) {
      if (auto* req = std::get_if<link_requested>(&e)) {
        if (++n_links % 3 == 0) {
          d.refuse_link(req->link, condition("amqp:unauthorized-access", "no"));
        } else {
          d.accept_link(req->link, 10);
        }
      } else if (auto* m = std::get_if<message_received>(&e)) {
        d.settle(m->delivery, m->delivery % 2 ? outcome::accepted : outcome::rejected,
                 condition("amqp:link:message-size-exceeded", "x"));
      } else if (auto* c = std::get_if<credit_available>(&e)) {
        proton::message reply;
        reply.body(std::string("ok"));
        d.send(c->link, reply);
      }
    }
    events.clear();
    d.poll(events);
    d.take_output();
    d.tick(std::chrono::milliseconds(pos), events);
  }
  d.read_closed(events);
  d.take_output();
  return 0;
}
