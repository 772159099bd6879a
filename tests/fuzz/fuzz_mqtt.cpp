// libFuzzer target for the MQTT codec and server session: arbitrary bytes, fed in arbitrary
// chunks, must never crash, hang or read out of bounds; every decoded packet must re-encode and
// decode to the same packet kind.
#include "codec/mqtt/session.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace hub::mqtt;
  decode_limits limits;
  limits.max_packet_size = 64 * 1024;
  server_session session(limits);
  std::vector<event> events;
  // The first byte picks the chunk size, so splits at every boundary get exercised.
  const std::size_t chunk = size > 0 ? 1 + data[0] % 64 : 1;
  const auto* p = reinterpret_cast<const char*>(data);
  for (std::size_t pos = size > 0 ? 1 : 0; pos < size; pos += chunk) {
    const std::size_t n = std::min(chunk, size - pos);
    session.recv({p + pos, n}, events);
  }
  session.keep_alive_tick(events);
  for (const auto& e : events) {
    const auto* got = std::get_if<packet_received>(&e);
    if (got == nullptr) continue;
    std::string wire;
    encode(got->pkt, wire);
    const auto again = decode({wire.data(), wire.size()}, limits);
    if (again.st != decode_result::status::ok || again.pkt.index() != got->pkt.index()) std::abort();
  }
  return 0;
}
