// libFuzzer target for the REST request path: http::router over the real registry, auth,
// certificates, connection table, telemetry, C2D, twins, methods and routing services (memory kv,
// manual clock, fixed keys; built fresh for every input, so a finding replays alone). The input
// is one or more requests in HTTP/1.1's shape, separated by a line "=====":
//
//   PATCH /twins/d1?api-version=2021-04-12       method and target
//   Authorization: @policy:iothubowner            headers, one a line, up to an empty line
//   If-Match: *
//
//   {"properties":{"desired":{"x":1}}}           the body: the rest
//
// An Authorization value "@policy:NAME", "@device:ID" or "@module:ID/MID" is replaced by a valid
// SAS token for it (as the SDKs sign them; "@expired:..." the same, expired), so the fuzzer gets
// past authorisation; any other value is used as it is. Telemetry is routed by routing::test
// (evaluated, not written) and completes at once; d1 is connected and answers direct methods.
//
// Checks, per response: route_async's done runs exactly once (a waiting direct method is settled
// by the timeout sweep); no exception escapes; the status is 1xx-5xx; no header carries CR, LF or
// NUL; an error (>= 400) has IoT Hub's body {"Message":"ErrorCode:<iothub-errorcode>;...",...}
// (a failed bulk registry call: its result, {"isSuccessful":false,...});
// a JSON content type has a body that parses; a routed message encodes and decodes to itself.
#include "base/clock.hpp"
#include "base/json.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/c2d/service.hpp"
#include "domain/certificates/service.hpp"
#include "domain/connections/connection_table.hpp"
#include "domain/methods/service.hpp"
#include "domain/registry/service.hpp"
#include "domain/routing/service.hpp"
#include "domain/telemetry/message.hpp"
#include "domain/telemetry/service.hpp"
#include "domain/twins/service.hpp"
#include "heads/http/router.hpp"
#include "storage/event_log.hpp"
#include "storage/kv.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace hub;
using auth::permission;

#define CHECK(cond)            \
  do {                         \
    if (!(cond)) std::abort(); \
  } while (0)

constexpr std::string_view host = "fuzz-hub.azure-devices.net";
constexpr std::string_view owner_key = "ZnV6ei1vd25lci1rZXktMDEyMzQ1Njc4OWFiY2RlZmc=";
constexpr std::string_view service_key = "ZnV6ei1zZXJ2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGU=";
constexpr std::string_view device_policy_key = "ZnV6ei1kZXZpY2UtcG9saWN5LWtleS0wMTIzNDU2Nzg=";
constexpr std::string_view read_key = "ZnV6ei1yZWdpc3RyeS1yZWFkLWtleS0wMTIzNDU2Nzg=";
constexpr std::string_view readwrite_key = "ZnV6ei1yZWdpc3RyeS1ydy1rZXktMDEyMzQ1Njc4OWE=";
constexpr std::string_view d1_key = "ZnV6ei1kZXZpY2Uta2V5LWQxLTAxMjM0NTY3ODlhYmM=";
constexpr std::string_view m1_key = "ZnV6ei1tb2R1bGUta2V5LW0xLTAxMjM0NTY3ODlhYmM=";
constexpr std::string_view other_key = "b3RoZXIta2V5LW5vYm9keS1ob2xkcy0wMTIzNDU2Nzg=";

auth::hub_identity identity() {
  using p = permission;
  return auth::hub_identity{
      std::string(host),
      {
          {"iothubowner", std::string(owner_key), std::string(other_key),
           p::registry_read | p::registry_write | p::service_connect | p::device_connect},
          {"service", std::string(service_key), std::string(other_key), static_cast<auth::permissions>(p::service_connect)},
          {"device", std::string(device_policy_key), std::string(other_key), static_cast<auth::permissions>(p::device_connect)},
          {"registryRead", std::string(read_key), std::string(other_key), static_cast<auth::permissions>(p::registry_read)},
          {"registryReadWrite", std::string(readwrite_key), std::string(other_key), p::registry_read | p::registry_write},
      }};
}

// The event log routing needs to exist; nothing is written to it (telemetry is evaluated only).
storage::event_log& events_log() {
  static const std::filesystem::path dir = [] {
    char tmpl[] = "/tmp/hubd-fuzz-http-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    CHECK(made != nullptr);
    return std::filesystem::path(made);
  }();
  static const std::unique_ptr<storage::event_log> log = [] {
    storage::log_options o;
    o.dir = (dir / "events").string();
    o.partitions = 2;
    o.sync = false;
    auto l = storage::event_log::open(o);
    CHECK(l.has_value());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    return std::move(*l);
  }();
  return *log;
}

routing::options routing_options() {
  routing::options o;
  o.hub_name = "fuzz-hub";
  return o;
}

// d1's connection: takes direct methods and answers them at once.
class fake_device final : public messaging::device_link {
 public:
  explicit fake_device(methods::service*& m) : methods_(m) {}
  void close(std::string) override {}
  bool invoke_method(const messaging::method_call& c) override {
    if (methods_ != nullptr) (void)methods_->respond({"d1", ""}, c.request_id, 200, R"({"answer":42})");
    return true;
  }

 private:
  methods::service*& methods_;
};

// Telemetry goes through routing's evaluation (conditions, enrichments) and completes at once.
class evaluating_router final : public telemetry::router {
 public:
  explicit evaluating_router(routing::service& r) : routing_(r) {}
  void route(const telemetry::message& m, std::uint32_t, std::function<void(result<storage::log_position>)> done) override {
    (void)routing_.test(routing::source::device_messages, m);
    auto back = telemetry::decode(telemetry::encode(m));
    CHECK(back.has_value());
    CHECK(telemetry::encode(*back) == telemetry::encode(m));
    done(storage::log_position{});
  }

 private:
  routing::service& routing_;
};

struct world {
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{identity(), reg, clk};
  certificates::service certs{*kv, reg, clk};
  connections::connection_table table{reg, clk};
  c2d::service c2d{*kv, reg, clk};
  twins::service twins{*kv, reg, clk};
  methods::service* methods_ptr = nullptr;
  methods::service methods{
      reg, [this](const methods::identity& who) { return table.find({who.device_id, who.module_id}); }, clk};
  routing::service routing{clk, events_log(), routing_options(),
                           [this](std::string_view d, std::string_view m) -> std::optional<boost::json::object> {
                             auto t = twins.get({std::string(d), std::string(m)});
                             return t ? std::optional<boost::json::object>(std::move(*t)) : std::nullopt;
                           }};
  evaluating_router sink{routing};
  telemetry::service tel{events_log()};
  http::router rt{http::services{reg, auth, clk, certs, &table, &tel, &c2d, &twins, &methods, &routing}};

  world() {
    methods_ptr = &methods;
    tel.set_router(&sink);
    reg.set_c2d_counter([this](std::string_view id) { return c2d.pending(id); });
    reg.set_change_listener([this](const registry::change& c) {
      table.on_registry_change(c);
      c2d.on_registry_change(c);
      twins.on_registry_change(c);
    });
    add_device("d1", d1_key);
    add_device("d2", d1_key);
    registry::module m;
    m.device_id = "d1";
    m.module_id = "m1";
    m.auth.primary_key = std::string(m1_key);
    m.auth.secondary_key = std::string(m1_key);
    CHECK(reg.create_module(m).has_value());
    CHECK(table.attach({"d1", ""}, std::make_shared<fake_device>(methods_ptr)).has_value());
    // Something to receive on d1's devicebound queue, and a routing table with conditions.
    c2d::outgoing msg;
    msg.body = "hello";
    msg.message_id = "c2d-1";
    msg.ack = c2d::ack_mode::full;
    CHECK(c2d.send("d1", msg).has_value());
    // One with what only AMQP lets a service send: control characters and odd names, which must
    // not reach the HTTP device API's headers.
    c2d::outgoing odd;
    odd.body = std::string("\0\xff\r\n", 4);
    odd.message_id = "id\r\nInjected: 1";
    odd.content_type = "text/plain\r\n";
    odd.properties = {{"bad name\r\n", "v"}, {"ok", "line\r\nInjected: 1"}, {"caf\xC3\xA9", "\xff"}};
    CHECK(c2d.send("d1", odd).has_value());
    auto cfg = routing::parse(std::string_view(
        R"({"routes":[{"name":"hot","source":"DeviceMessages","condition":"level = 'critical' AND $body.t > 20","endpointNames":["events"]},
                      {"name":"twin","source":"DeviceMessages","condition":"$twin.tags.site = 'north'","endpointNames":["events"]}],
            "enrichments":[{"key":"site","value":"$twin.tags.site","endpointNames":["events"]}],
            "fallbackRoute":{"name":"$fallback","source":"DeviceMessages","condition":"true","endpointNames":["events"],"isEnabled":true}})"));
    CHECK(cfg.has_value());
    auto t = routing::table::compile(std::move(*cfg));
    CHECK(t.has_value());
    CHECK(routing.install(std::move(*t), {&events_log()}).has_value());
  }

  ~world() {
    methods.shutdown();
    routing.stop();
  }

  void add_device(std::string id, std::string_view key) {
    registry::device d;
    d.device_id = std::move(id);
    d.auth.primary_key = std::string(key);
    d.auth.secondary_key = std::string(key);
    CHECK(reg.create_device(d).has_value());
  }

  // "@policy:NAME", "@device:ID", "@module:ID/MID", "@expired:<one of those>" -> a token.
  std::string credential(std::string_view value) {
    if (value.starts_with("@expired:")) {
      return credential_at("@" + std::string(value.substr(9)), clk.now_seconds() - 10);
    }
    return credential_at(value, clk.now_seconds() + 3600);
  }

  std::string credential_at(std::string_view value, std::int64_t expiry) {
    if (value.starts_with("@policy:")) {
      const std::string name(value.substr(8));
      const auth::policy* p = auth.identity().find(name);
      return auth::make_sas_token(host, p ? std::string_view(p->primary_key) : other_key, expiry, name);
    }
    if (value.starts_with("@device:")) {
      const std::string id(value.substr(8));
      auto d = reg.get_device(id);
      const std::string key = d ? d->auth.primary_key : std::string(other_key);
      return auth::make_sas_token(std::string(host) + "/devices/" + id, key, expiry);
    }
    if (value.starts_with("@module:")) {
      const auto rest = value.substr(8);
      const auto slash = rest.find('/');
      const std::string id(rest.substr(0, slash));
      const std::string mid(slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1));
      auto m = reg.get_module(id, mid);
      const std::string key = m ? m->auth.primary_key : std::string(other_key);
      return auth::make_sas_token(std::string(host) + "/devices/" + id + "/modules/" + mid, key, expiry);
    }
    return std::string(value);
  }
};

http::request parse_request(std::string_view text, world& w) {
  http::request req;
  auto next_line = [&text]() {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    return line;
  };
  const auto first = next_line();
  const auto sp = first.find(' ');
  req.method = std::string(first.substr(0, sp));
  req.target = sp == std::string_view::npos ? std::string() : std::string(first.substr(sp + 1));
  while (!text.empty()) {
    const auto line = next_line();
    if (line.empty()) break;
    const auto colon = line.find(':');
    std::string name(line.substr(0, colon));
    std::string value(colon == std::string_view::npos ? std::string_view{} : text::trim(line.substr(colon + 1)));
    if (text::iequals(name, "Authorization") && value.starts_with('@')) value = w.credential(value);
    req.headers.emplace_back(std::move(name), std::move(value));
  }
  req.body = std::string(text);
  return req;
}

std::optional<std::string_view> header_of(const http::response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (text::iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

void check_response(const http::response& r) {
  CHECK(r.status >= 100 && r.status <= 599);
  for (const auto& [k, v] : r.headers) {
    CHECK(!k.empty());
    for (const char c : k) CHECK(c != '\r' && c != '\n' && c != '\0' && c != ':');
    for (const char c : v) CHECK(c != '\r' && c != '\n' && c != '\0');
  }
  const auto type = header_of(r, "Content-Type");
  if (type && type->find("json") != std::string_view::npos && !r.body.empty()) {
    CHECK(json::parse(r.body, json::parse_limits{128, 64 * 1024 * 1024}).has_value());
  }
  if (r.status >= 400) {
    const auto code = header_of(r, "iothub-errorcode");
    CHECK(code && !code->empty());
    auto body = json::parse(r.body);
    CHECK(body && body->is_object());
    if (*code == "BulkRegistryOperationFailure") {
      // A bulk registry call answers 400 with the per-device result, as IoT Hub does.
      CHECK(json::get_bool(body->get_object(), "isSuccessful") == false);
      return;
    }
    const auto message = json::get_string(body->get_object(), "Message");
    CHECK(message && message->starts_with("ErrorCode:" + std::string(*code) + ";"));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = (log::init("off"), true);
  (void)quiet;
  // FUZZ_HTTP_VERBOSE=1: every request and response on stderr (to triage a finding).
  static const bool verbose = std::getenv("FUZZ_HTTP_VERBOSE") != nullptr;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  world w;
  for (int i = 0; i < 8 && !in.empty(); ++i) {
    const auto sep = in.find("\n=====\n");
    const std::string_view one = in.substr(0, sep);
    in = sep == std::string_view::npos ? std::string_view{} : in.substr(sep + 7);

    const http::request req = parse_request(one, w);
    auto calls = std::make_shared<int>(0);
    auto got = std::make_shared<std::optional<http::response>>();
    try {
      w.rt.route_async(req, [calls, got](http::response r) {
        ++*calls;
        *got = std::move(r);
      });
    } catch (...) {
      std::abort();  // route_async never throws
    }
    if (*calls == 0) {
      // A direct method waiting for its device (or for one to connect): the sweep times it out.
      w.clk.advance(std::chrono::seconds(400));
      w.methods.sweep();
    }
    CHECK(*calls == 1);
    if (verbose) {
      std::fprintf(stderr, ">>> %s %s\n", req.method.c_str(), req.target.c_str());
      for (const auto& [k, v] : req.headers) std::fprintf(stderr, ">>> %s: %s\n", k.c_str(), v.c_str());
      std::fprintf(stderr, ">>> (%zu body bytes)\n<<< %d\n", req.body.size(), (*got)->status);
      for (const auto& [k, v] : (*got)->headers) std::fprintf(stderr, "<<< %s: %s\n", k.c_str(), v.c_str());
      std::fprintf(stderr, "<<< %s\n", (*got)->body.substr(0, 2000).c_str());
    }
    check_response(**got);
    w.clk.advance(std::chrono::seconds(1));
  }
  return 0;
}
