// --scenario method: direct method round trips, measured from the service side.
//
// hubd: D devices on MQTT/TLS subscribe to $iothub/methods/POST/# and answer every call at once
// on $iothub/methods/res/200/?$rid=<rid>; C callers POST /twins/{id}/methods over keep-alive
// HTTPS connections (a service SAS token, checked by hubd on every request), round-robin over the
// devices, one call at a time each, as azure-iothub's Client.invokeDeviceMethod does. The answer
// is the HTTP response {"status":200,"payload":<the device's JSON>}.
//
// mosquitto: the same RPC done the way it is done on a plain MQTT 3.1.1 broker: each device
// subscribes to rpc/<id>/req and answers on rpc/<id>/res; one service connection subscribes to
// rpc/+/res and publishes the requests (QoS 0), a correlation id in the JSON payload; C requests
// outstanding at once. A request unanswered within 10 s is an error (mosquitto may drop QoS 0).
//
// Every answer is checked: the device echoes the request's {"seq":N} with its own id added
// ({"seq":N,"by":"<id>"}), so an answer from the wrong device, a lost call, a 404 (device not
// online) or a 504 (no answer in time) counts as an error. Latency is from the request handed to
// the socket (hubd: the HTTP request written; mosquitto: the PUBLISH queued) to its answer read.
#include "bench/loadgen/methods.hpp"

#include "bench/loadgen/create_devices.hpp"
#include "bench/loadgen/mqtt_stream.hpp"
#include "domain/auth/sas.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <unordered_map>

namespace loadgen {
namespace {
namespace beast = boost::beast;
namespace http = beast::http;
using clock_type = std::chrono::steady_clock;

// hubd: responseTimeoutInSeconds of every call; mosquitto: how long a caller waits for an answer.
constexpr int call_timeout_s = 10;

// A call waiting for its answer (mosquitto): on the caller's frame, found by its correlation id.
struct pending_call {
  explicit pending_call(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  std::size_t device = 0;
  std::string expected;  // the device's answer
  clock_type::time_point sent;
  bool answered = false;
};

// The service's MQTT connection (mosquitto): one reader, writes queued behind one writer.
struct mqtt_service {
  mqtt_service(asio::io_context& ioc, ssl::context* tls) : s(ioc, tls) {}
  loadgen::stream s;
  packet_reader reader;
  std::string out;      // queued PUBLISHes
  std::string writing;  // the batch being written
  bool busy = false;
};

// Everything below runs on the one io thread, except the atomics the main thread reads.
struct run_state {
  run_state(const method_options& o, asio::io_context& ioc, ssl::context* mqtt_tls, ssl::context* https_tls)
      : o(o), ioc(ioc), mqtt_tls(mqtt_tls), https_tls(https_tls), mqtt_ep(asio::ip::make_address(o.host), o.port) {}
  const method_options& o;
  asio::io_context& ioc;
  ssl::context* mqtt_tls;   // null with --plain
  ssl::context* https_tls;  // hubd's service API is HTTPS only
  tcp::endpoint mqtt_ep;
  tcp::endpoint https_ep;
  std::string hub_host;       // hubd: Host header
  std::string service_token;  // hubd: the service SAS token
  std::size_t opening = 0;                   // devices between connect and SUBACK
  std::atomic<std::size_t> devices_done{0};  // connected and subscribed, or failed
  std::atomic<std::size_t> devices_ready{0};
  std::atomic<bool> service_done{false};
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> errors{0};
  std::vector<std::uint32_t> latency_us;  // calls completed in the window; read after the io thread ends
  std::uint64_t next_seq = 0;
  std::size_t next_device = 0;
  std::unordered_map<std::uint64_t, pending_call*> pending;  // mosquitto
  std::mutex error_mutex;
  std::string first_error;

  void error(const std::string& what) {
    if (stop) return;  // connections closing at the end are not failures
    ++errors;
    std::scoped_lock lock(error_mutex);
    if (first_error.empty()) first_error = what;
  }
  void answered(clock_type::time_point sent) {
    if (!measuring) return;
    ++calls;
    latency_us.push_back(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - sent).count()));
  }
};

// The device's answer to a request payload {"seq":N}: {"seq":N,"by":"<id>"}.
std::string answer_of(std::string_view request, const std::string& device_id) {
  if (request.size() < 2 || request.front() != '{' || request.back() != '}') return R"({"bad_request":true})";
  return fmt::format(R"({},"by":"{}"}})", request.substr(0, request.size() - 1), device_id);
}

std::string request_payload(std::uint64_t seq) { return fmt::format(R"({{"seq":{}}})", seq); }

// Connects, authenticates and subscribes to `filter` (QoS 0); false (and an error) on failure. At
// most --connect-concurrency at once, as the other scenarios (hubd refuses more than 256
// unauthenticated connections from one address by default).
asio::awaitable<bool> open_subscribed(run_state& st, const hub::mqtt::connect& c, const std::string& filter,
                                      loadgen::stream& s, packet_reader& reader) {
  while (st.opening >= st.o.connect_concurrency) {
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  ++st.opening;
  struct done_opening {
    std::size_t& n;
    ~done_opening() { --n; }
  } opening{st.opening};
  const auto cec = co_await s.connect(st.mqtt_ep, st.o.sni);
  if (cec) {
    st.error(fmt::format("connect {}: {}", c.client_id, cec.message()));
    co_return false;
  }
  std::string bytes;
  hub::mqtt::encode(c, bytes);
  const auto wec = co_await s.write(bytes);
  if (wec) {
    st.error(fmt::format("write CONNECT {}: {}", c.client_id, wec.message()));
    co_return false;
  }
  auto p = co_await reader.next(s);
  const auto* ack = p ? std::get_if<hub::mqtt::connack>(&*p) : nullptr;
  if (ack == nullptr || ack->code != hub::mqtt::connack_code::accepted) {
    st.error(fmt::format("CONNACK for {}: {}", c.client_id, ack ? static_cast<int>(ack->code) : -1));
    co_return false;
  }
  bytes.clear();
  hub::mqtt::encode(hub::mqtt::subscribe{1, {{filter, 0}}}, bytes);
  const auto sec = co_await s.write(bytes);
  if (sec) {
    st.error(fmt::format("write SUBSCRIBE {}: {}", c.client_id, sec.message()));
    co_return false;
  }
  // Anything the server sends before the SUBACK (a method call cannot come yet) is skipped.
  for (;;) {
    auto q = co_await reader.next(s);
    if (!q) {
      st.error(fmt::format("{}: closed before SUBACK", c.client_id));
      co_return false;
    }
    if (const auto* sub = std::get_if<hub::mqtt::suback>(&*q)) {
      if (sub->codes.size() != 1 || sub->codes[0] == hub::mqtt::suback_failure) {
        st.error(fmt::format("{}: SUBSCRIBE {} refused", c.client_id, filter));
        co_return false;
      }
      co_return true;
    }
  }
}

// A device: answers every call at once with the request's payload and its id.
asio::awaitable<void> device(run_state& st, std::size_t index) {
  const std::string& id = st.o.devices[index].first;
  const bool hubd = st.o.mode == "hubd";
  loadgen::stream s(st.ioc, st.mqtt_tls);
  packet_reader reader;
  const auto c = st.o.make_connect(id, st.o.devices[index].second);
  const std::string filter = hubd ? "$iothub/methods/POST/#" : "rpc/" + id + "/req";
  const bool ok = co_await open_subscribed(st, c, filter, s, reader);
  if (ok) ++st.devices_ready;
  ++st.devices_done;
  if (!ok) co_return;
  const std::string mq_answer_topic = "rpc/" + id + "/res";
  std::string bytes;
  while (!st.stop) {
    auto p = co_await reader.next(s);
    if (!p) {
      st.error(fmt::format("device {}: connection closed", id));
      break;
    }
    auto* call = std::get_if<hub::mqtt::publish>(&*p);
    if (call == nullptr) continue;
    hub::mqtt::publish answer;
    if (hubd) {
      // $iothub/methods/POST/{name}/?$rid={rid}
      const auto rid_at = call->topic.find("?$rid=");
      if (!call->topic.starts_with("$iothub/methods/POST/echo/") || rid_at == std::string::npos) {
        st.error(fmt::format("device {}: unexpected PUBLISH on {}", id, call->topic));
        continue;
      }
      answer.topic = "$iothub/methods/res/200/?$rid=" + call->topic.substr(rid_at + 6);
    } else {
      answer.topic = mq_answer_topic;
    }
    answer.payload = answer_of(call->payload, id);
    bytes.clear();
    hub::mqtt::encode(answer, bytes);
    const auto ec = co_await s.write(bytes);
    if (ec) {
      st.error(fmt::format("device {}: write: {}", id, ec.message()));
      break;
    }
  }
  s.close();
}

// ---- hubd: HTTPS callers ----------------------------------------------------------------

// One keep-alive HTTPS connection, one call at a time (reconnects after an error).
asio::awaitable<void> https_caller(run_state& st) {
  auto ex = co_await asio::this_coro::executor;
  const std::size_t n = st.o.devices.size();
  while (!st.stop) {
    beast::ssl_stream<beast::tcp_stream> s(ex, *st.https_tls);
    if (!st.o.sni.empty() && !std::isdigit(static_cast<unsigned char>(st.o.sni[0]))) {
      SSL_set_tlsext_host_name(s.native_handle(), st.o.sni.c_str());
    }
    s.set_verify_mode(ssl::verify_peer);
    auto [cec] = co_await beast::get_lowest_layer(s).async_connect(st.https_ep, asio::as_tuple(asio::use_awaitable));
    std::string failed;
    if (cec) failed = "connect: " + cec.message();
    if (failed.empty()) {
      beast::get_lowest_layer(s).socket().set_option(tcp::no_delay(true));
      auto [hec] = co_await s.async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
      if (hec) failed = "TLS handshake: " + hec.message();
    }
    if (!failed.empty()) {
      st.error("HTTPS " + failed);
      asio::steady_timer t(ex, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    beast::flat_buffer buf;
    while (!st.stop) {
      const std::string& id = st.o.devices[st.next_device++ % n].first;
      const std::string payload = request_payload(st.next_seq++);
      http::request<http::string_body> req{http::verb::post, fmt::format("/twins/{}/methods?api-version=2021-04-12", id),
                                           11};
      req.set(http::field::host, st.hub_host);
      req.set(http::field::authorization, st.service_token);
      req.set(http::field::content_type, "application/json; charset=utf-8");
      req.keep_alive(true);
      req.body() = fmt::format(
          R"({{"methodName":"echo","responseTimeoutInSeconds":{},"connectTimeoutInSeconds":0,"payload":{}}})",
          call_timeout_s, payload);
      req.prepare_payload();
      const auto sent = clock_type::now();
      auto [wec, wn] = co_await http::async_write(s, req, asio::as_tuple(asio::use_awaitable));
      if (wec) {
        st.error("HTTPS write: " + wec.message());
        break;
      }
      http::response<http::string_body> res;
      auto [rec, rn] = co_await http::async_read(s, buf, res, asio::as_tuple(asio::use_awaitable));
      if (rec) {
        st.error("HTTPS read: " + rec.message());
        break;
      }
      const auto want = fmt::format(R"({{"status":200,"payload":{}}})", answer_of(payload, id));
      if (res.result_int() == 200 && res.body() == want) {
        st.answered(sent);
      } else {
        st.error(fmt::format("call to {}: HTTP {}: {}", id, res.result_int(), res.body().substr(0, 300)));
      }
      if (!res.keep_alive()) break;
    }
    beast::error_code ignored;
    beast::get_lowest_layer(s).socket().close(ignored);
  }
}

// ---- mosquitto: MQTT service connection -----------------------------------------------------

asio::awaitable<void> flush(run_state& st, mqtt_service& svc) {
  svc.busy = true;
  while (!svc.out.empty() && !st.stop) {
    svc.writing.swap(svc.out);
    svc.out.clear();
    const auto ec = co_await svc.s.write(svc.writing);
    if (ec) {
      st.error("service write: " + ec.message());
      break;
    }
  }
  svc.busy = false;
}

// Reads answers and completes the calls they belong to.
asio::awaitable<void> service_reader(run_state& st, mqtt_service& svc) {
  while (!st.stop) {
    auto p = co_await svc.reader.next(svc.s);
    if (!p) {
      st.error("service connection closed");
      break;
    }
    const auto* answer = std::get_if<hub::mqtt::publish>(&*p);
    if (answer == nullptr) continue;
    const auto at = answer->payload.find(R"("seq":)");
    std::uint64_t seq = 0;
    const char* end = answer->payload.data() + answer->payload.size();
    if (at == std::string::npos || std::from_chars(answer->payload.data() + at + 6, end, seq).ec != std::errc{}) {
      st.error("answer without a correlation id: " + answer->payload);
      continue;
    }
    const auto it = st.pending.find(seq);
    if (it == st.pending.end()) continue;  // its caller gave up already (and counted an error)
    pending_call& call = *it->second;
    const std::string& id = st.o.devices[call.device].first;
    if (answer->topic == "rpc/" + id + "/res" && answer->payload == call.expected) {
      st.answered(call.sent);
    } else {
      st.error(fmt::format("call {} to {}: answer {} on {}", seq, id, answer->payload, answer->topic));
    }
    call.answered = true;
    call.timer.cancel();
  }
}

// One request outstanding at a time; C of these run side by side on the one connection.
asio::awaitable<void> mqtt_caller(run_state& st, mqtt_service& svc) {
  auto ex = co_await asio::this_coro::executor;
  const std::size_t n = st.o.devices.size();
  pending_call call(ex);
  std::string bytes;
  while (!st.stop) {
    call.device = st.next_device++ % n;
    const std::uint64_t seq = st.next_seq++;
    const std::string& id = st.o.devices[call.device].first;
    const std::string payload = request_payload(seq);
    call.expected = answer_of(payload, id);
    call.answered = false;
    st.pending[seq] = &call;
    bytes.clear();
    hub::mqtt::encode(hub::mqtt::publish{"rpc/" + id + "/req", payload, 0, false, false, 0}, bytes);
    svc.out += bytes;
    call.sent = clock_type::now();
    if (!svc.busy) asio::co_spawn(ex, flush(st, svc), asio::detached);
    call.timer.expires_after(std::chrono::seconds(call_timeout_s));
    co_await call.timer.async_wait(asio::as_tuple(asio::use_awaitable));
    st.pending.erase(seq);
    if (!call.answered) st.error(fmt::format("call {} to {}: no answer within {} s", seq, id, call_timeout_s));
  }
}

asio::awaitable<void> mqtt_service_start(run_state& st, mqtt_service& svc) {
  // The first device's user, under its own client id (mosquitto's password file has no other).
  auto c = st.o.make_connect(st.o.devices[0].first, st.o.devices[0].second);
  c.client_id += "-rpc-service";
  c.clean_session = true;
  const bool ok = co_await open_subscribed(st, c, "rpc/+/res", svc.s, svc.reader);
  if (ok) {
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, service_reader(st, svc), asio::detached);
    for (std::size_t i = 0; i < st.o.concurrency; ++i) asio::co_spawn(ex, mqtt_caller(st, svc), asio::detached);
  }
  st.service_done = true;
}

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

// Waits (up to `limit` seconds) for `done` to hold.
template <class Pred>
bool wait_for(Pred done, double limit) {
  const auto until = clock_type::now() + std::chrono::duration<double>(limit);
  while (!done()) {
    if (clock_type::now() > until) return false;
    sleep_s(0.02);
  }
  return true;
}

double percentile_ms(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto i = std::min(sorted.size() - 1, static_cast<std::size_t>(p * static_cast<double>(sorted.size())));
  return sorted[i] / 1000.0;
}

}  // namespace

int run_methods(const method_options& o) {
  if (o.devices.empty()) {
    std::cerr << "hubd-loadgen: --scenario method needs at least one device\n";
    return 2;
  }
  std::optional<ssl::context> tls;
  if (o.tls || o.mode == "hubd") tls = client_tls(o.ca_file);  // hubd's service API is HTTPS only
  asio::io_context ioc(1);
  run_state st(o, ioc, o.tls ? &*tls : nullptr, tls ? &*tls : nullptr);
  if (o.mode == "hubd") {
    try {
      st.hub_host = connection_string_field(o.connection_string, "HostName");
      const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count() + 3600;
      st.service_token = hub::auth::make_sas_token(st.hub_host, connection_string_field(o.connection_string, "SharedAccessKey"),
                                                   expiry, connection_string_field(o.connection_string, "SharedAccessKeyName"));
    } catch (const std::exception& e) {
      std::cerr << "hubd-loadgen: --connection-string: " << e.what() << "\n";
      return 2;
    }
    st.https_ep = tcp::endpoint(asio::ip::make_address(o.host), o.https_port);
  }
  mqtt_service svc(ioc, st.mqtt_tls);

  auto guard = asio::make_work_guard(ioc);
  for (std::size_t i = 0; i < o.devices.size(); ++i) asio::co_spawn(ioc, device(st, i), asio::detached);
  std::thread io([&] { ioc.run(); });

  const std::size_t n = o.devices.size();
  wait_for([&] { return st.devices_done.load() == n; }, 120);
  if (o.mode == "hubd") {
    for (std::size_t i = 0; i < o.concurrency; ++i) asio::co_spawn(ioc, https_caller(st), asio::detached);
  } else {
    asio::co_spawn(ioc, mqtt_service_start(st, svc), asio::detached);
    wait_for([&] { return st.service_done.load(); }, 30);
  }

  const int self = static_cast<int>(getpid());
  sleep_s(o.warmup_s);
  const double srv0 = o.server_pid ? o.cpu_seconds(o.server_pid) : 0, gen0 = o.cpu_seconds(self);
  const auto t0 = clock_type::now();
  st.measuring = true;
  sleep_s(o.duration_s);
  st.measuring = false;
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  const double srv = o.server_pid ? o.cpu_seconds(o.server_pid) - srv0 : 0, gen = o.cpu_seconds(self) - gen0;
  st.stop = true;
  guard.reset();
  ioc.stop();
  io.join();

  std::sort(st.latency_us.begin(), st.latency_us.end());
  const auto calls = static_cast<double>(st.latency_us.size());
  const double p50 = percentile_ms(st.latency_us, 0.5), p99 = percentile_ms(st.latency_us, 0.99);
  const double srv_us = calls > 0 ? srv * 1e6 / calls : 0, gen_us = calls > 0 ? gen * 1e6 / calls : 0;
  if (o.json) {
    std::cout << fmt::format(
                     R"({{"scenario":"method","mode":"{}","devices":{},"connected":{},"concurrency":{},"calls":{},"calls_per_s":{:.0f},)"
                     R"("p50_ms":{:.3f},"p99_ms":{:.3f},"server_cpu_us_per_call":{:.2f},"loadgen_cpu_us_per_call":{:.2f},"errors":{}}})",
                     o.mode, n, st.devices_ready.load(), o.concurrency, st.latency_us.size(), calls / secs, p50, p99,
                     srv_us, gen_us, st.errors.load())
              << std::endl;
  } else {
    std::cout << fmt::format("{}: {} devices ({} ready), {} callers: {:.0f} calls/s over {:.1f} s\n", o.mode, n,
                             st.devices_ready.load(), o.concurrency, calls / secs, secs)
              << fmt::format("  round trip p50 {:.3f} ms, p99 {:.3f} ms ({} calls)\n", p50, p99, st.latency_us.size())
              << fmt::format("  server CPU {:.2f} µs/call, loadgen CPU {:.2f} µs/call\n", srv_us, gen_us)
              << fmt::format("  errors: {}{}\n", st.errors.load(),
                             st.first_error.empty() ? "" : " (first: " + st.first_error + ")");
  }
  if (!st.first_error.empty() && o.json) std::cerr << "hubd-loadgen: first error: " << st.first_error << "\n";
  return st.devices_ready == 0 || st.latency_us.empty() ? 1 : 0;
}

}  // namespace loadgen
