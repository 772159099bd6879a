// libFuzzer target for the AMQP head's connection logic (heads/amqp/connection): arbitrary bytes
// from a client, through the driver into IoT Hub's meaning of links and messages (CBS requests,
// telemetry, $management requests, partition receivers, twin and methods links). Work items are
// answered at once with fixed results (every token grants what its audience names; appends and
// twin requests succeed; an identity that takes method calls gets one), so the paths past
// authorisation see hostile input too.
#include "base/clock.hpp"
#include "base/log.hpp"
#include "heads/amqp/connection.hpp"

#include <spdlog/sinks/null_sink.h>

#include <cstddef>
#include <cstdint>
#include <variant>
#include <vector>

namespace {

using namespace hub;
using namespace hub::amqp_head;

void answer(connection& c, std::vector<work>& w) {
  for (std::size_t i = 0; i < w.size() && i < 10'000; ++i) {
    std::vector<work> more;
    if (auto* t = std::get_if<check_token_work>(&w[i])) {
      grant g;
      g.who = t->aud.what == audience::kind::module     ? grant::kind::module
              : t->aud.what == audience::kind::event_hub ? grant::kind::event_hub
              : t->aud.what == audience::kind::hub       ? grant::kind::hub
                                                         : grant::kind::device;
      g.device_id = t->aud.device_id;
      g.module_id = t->aud.module_id;
      g.entity = t->aud.entity;
      g.expiry = 2'000'000'000;
      c.token_checked(t->ticket, g, more);
    } else if (auto* a = std::get_if<append_telemetry_work>(&w[i])) {
      c.telemetry_appended(a->ticket, {}, more);
    } else if (auto* at = std::get_if<attach_identity_work>(&w[i])) {
      c.identity_attached(at->who, std::shared_ptr<registry::presence>(), more);
    } else if (auto* r = std::get_if<read_events_work>(&w[i])) {
      c.events_ready(r->ticket, events_read{0, {}}, more);
    } else if (auto* p = std::get_if<partition_info_work>(&w[i])) {
      c.partition_info_ready(p->ticket, storage::partition_stats{}, more);
    } else if (auto* x = std::get_if<check_certificate_work>(&w[i])) {
      c.certificate_checked(x->ticket, make_error(errc::unauthorized, "no"), more);
    } else if (auto* cl = std::get_if<claim_partition_work>(&w[i])) {
      // Every other claim refused, so both paths run.
      std::optional<partition_watch::refusal> no;
      if (cl->link % 2 == 0) no = partition_watch::refusal{"amqp:link:stolen", "a receiver with a higher epoch holds it"};
      c.partition_claimed(cl->link, no, more);
    } else if (auto* t = std::get_if<twin_work>(&w[i])) {
      c.twin_answered(t->ticket, twin_answer{200, R"({"desired":{"$version":1},"reported":{"$version":1}})", 1}, more);
    } else if (auto* m = std::get_if<methods_ready_work>(&w[i]); m != nullptr && m->ready) {
      // A call as soon as the identity takes them, and a desired patch for it.
      c.invoke_method(m->who, messaging::method_call{"0f8fad5b-d9cb-469f-a165-70867728950e", "m", "null"}, more);
      c.desired_properties(m->who, R"({"x":1,"$version":2})", more);
    }
    for (auto& m : more) w.push_back(std::move(m));
  }
  w.clear();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto log = std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  static manual_clock clk;
  connection_options opts;
  opts.driver.max_message_size = 64 * 1024;
  opts.event_hub_partitions = 4;
  opts.serve_twins = true;
  opts.serve_methods = true;
  connection c(opts, clk, log, "fuzz");
  c.client_certificate_presented(size > 0 && data[0] & 0x80);
  const std::size_t chunk = size > 0 ? 1 + data[0] % 64 : 1;
  const auto* p = reinterpret_cast<const char*>(data);
  std::vector<work> w;
  for (std::size_t pos = size > 0 ? 1 : 0; pos < size; pos += chunk) {
    c.recv({p + pos, std::min(chunk, size - pos)}, w);
    answer(c, w);
    c.take_output();
    c.tick(std::chrono::milliseconds(pos), w);
    answer(c, w);
  }
  c.read_closed(w);
  answer(c, w);
  c.take_output();
  return 0;
}
