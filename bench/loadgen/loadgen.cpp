// hubd-loadgen: an MQTT 3.1.1 load generator for IoT hubs and MQTT brokers.
//
// It opens N device connections over TLS (or plain TCP), authenticates each (hubd: its own SAS
// token; mosquitto: user name + password), and then either publishes telemetry (QoS 0/1, fixed
// size, as fast as acknowledgements allow or at a total rate), opens connections as fast as it
// can (connect rate), or holds them idle (memory per connection). It reports throughput, publish
// to PUBACK latency percentiles, errors and, given the server's pid, the server's and its own CPU
// time per message over the measured window (utime + stime from /proc), so that two servers run
// in the same way on the same machine can be compared as ratios. Direct method round trips
// (--scenario method) are in methods.cpp.
//
// One io_context thread: on a 2-core machine the other core is the server's, and the device
// coroutines share state without locks. With --consumer, a consumer on its own thread reads the
// messages back for publish-to-arrival latency (consumer.hpp).
#include "bench/loadgen/consumer.hpp"
#include "bench/loadgen/create_devices.hpp"
#include "bench/loadgen/ec_decode.hpp"
#include "bench/loadgen/methods.hpp"
#include "bench/loadgen/mqtt_stream.hpp"
#include "bench/loadgen/proc_stat.hpp"
#include "codec/mqtt/codec.hpp"
#include "domain/auth/sas.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string host = "127.0.0.1";
  std::string sni;               // TLS server name / IoT hub host name; default = host
  std::uint16_t port = 8883;
  bool tls = true;
  std::string ca_file;
  std::string mode = "hubd";     // hubd | mosquitto
  std::string scenario = "throughput";  // throughput | connect | idle | create
  std::string connection_string;        // create: a hub policy with RegistryWrite
  std::uint16_t https_port = 443;
  std::string devices_file;      // lines "deviceId key" (hubd) or "user password" (mosquitto)
  std::size_t devices = 100;
  int qos = 1;
  std::size_t size = 256;
  std::size_t inflight = 16;
  double rate = 0;               // total msgs/s; 0 = as fast as acks allow
  double warmup_s = 5;
  double duration_s = 20;
  std::size_t connect_concurrency = 64;
  std::size_t method_concurrency = 8;
  int server_pid = 0;
  bool json = false;
  bool fast_ec_decode = false;
  bool consumer = false;         // throughput: also measure publish-to-arrival (consumer.hpp)
  std::uint16_t amqp_port = 5671;
};

struct device_cred {
  std::string id;
  std::string secret;  // hubd: base64 key; mosquitto: password
};

// CPU seconds (utime + stime) of a process, from /proc/PID/stat.
double cpu_seconds(int pid) { return loadgen::stat_cpu_seconds(fmt::format("/proc/{}/stat", pid)); }

// Resident memory of a process in KiB, from /proc/PID/status.
long rss_kib(int pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

using loadgen::histogram;

struct stats {
  std::atomic<std::uint64_t> acked{0};        // PUBACKs (QoS 1) or PINGRESP-confirmed batches (QoS 0)
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> connected{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> dropped{0};      // idle: connections the server closed meanwhile
  std::atomic<bool> measuring{false};
  std::size_t opening = 0;                    // connections between connect and CONNACK (io thread only)
  std::atomic<bool> stop{false};
  std::vector<histogram> latency;  // one per thread
  std::string first_error;
  std::mutex error_mutex;

  void error(const std::string& what) {
    ++errors;
    std::scoped_lock lock(error_mutex);
    if (first_error.empty()) first_error = what;
  }
};

using loadgen::packet_reader;
using loadgen::stream;

struct run_context {
  const options& opt;
  stats& st;
  tcp::endpoint endpoint;
  ssl::context* tls;
  std::string sas_host;   // hubd: the host name in tokens and user names
  loadgen::consumer* consumer = nullptr;  // --consumer
};

hub::mqtt::connect make_connect(const run_context& ctx, const device_cred& d) {
  hub::mqtt::connect c;
  c.clean_session = false;
  c.keep_alive = 180;
  c.client_id = d.id;
  if (ctx.opt.mode == "hubd") {
    c.username = ctx.sas_host + "/" + d.id + "/?api-version=2021-04-12";
    const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count() + 3600;
    c.password = hub::auth::make_sas_token(ctx.sas_host + "/devices/" + d.id, d.secret, expiry);
  } else {
    c.username = d.id;
    c.password = d.secret;
  }
  return c;
}

// Connects and authenticates; true on CONNACK 0. At most --connect-concurrency connections are
// between connect and CONNACK at once, in every scenario: hubd refuses more than 256
// unauthenticated connections from one address by default (docs/limits.md), and a fleet's
// reconnects ramp up rather than arrive in one instant.
asio::awaitable<bool> open(const run_context& ctx, const device_cred& d, stream& s, packet_reader& reader) {
  while (ctx.st.opening >= ctx.opt.connect_concurrency) {
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  ++ctx.st.opening;
  struct done_opening {
    std::size_t& n;
    ~done_opening() { --n; }
  } opening{ctx.st.opening};
  if (auto ec = co_await s.connect(ctx.endpoint, ctx.sas_host); ec) {
    ctx.st.error(fmt::format("connect {}: {}", d.id, ec.message()));
    co_return false;
  }
  std::string bytes;
  hub::mqtt::encode(make_connect(ctx, d), bytes);
  if (auto ec = co_await s.write(bytes); ec) {
    ctx.st.error(fmt::format("write CONNECT {}: {}", d.id, ec.message()));
    co_return false;
  }
  auto p = co_await reader.next(s);
  const auto* ack = p ? std::get_if<hub::mqtt::connack>(&*p) : nullptr;
  if (ack == nullptr || ack->code != hub::mqtt::connack_code::accepted) {
    ctx.st.error(fmt::format("CONNACK for {}: {}", d.id, ack ? static_cast<int>(ack->code) : -1));
    co_return false;
  }
  ++ctx.st.connected;
  co_return true;
}

// One publishing device: keeps up to `inflight` QoS 1 publishes outstanding (or, at a given
// rate, publishes on a schedule), recording publish-to-PUBACK latency during the window.
asio::awaitable<void> publisher(const run_context& ctx, device_cred d, std::size_t index, histogram& lat,
                                double per_device_rate) {
  auto ex = co_await asio::this_coro::executor;
  stream s(static_cast<asio::io_context&>(ex.context()), ctx.tls);
  packet_reader reader;
  if (!co_await open(ctx, d, s, reader)) co_return;
  const std::string topic = "devices/" + d.id + "/messages/events/";
  const std::string payload(ctx.opt.size, 'x');
  const std::size_t window = ctx.opt.qos == 0 ? 1 : ctx.opt.inflight;
  // Packet ids count up and at most `window` are outstanding, so a small ring indexed by id
  // holds every send time still needed.
  std::vector<clock_type::time_point> sent_at(1024);
  std::uint16_t next_id = 0;
  std::size_t outstanding = 0;
  bool reading = true;
  // The reader runs beside the writer; it counts acks and frees window slots.
  asio::steady_timer wake(ex);
  wake.expires_at(clock_type::time_point::max());
  asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
    while (!ctx.st.stop) {
      auto p = co_await reader.next(s);
      if (!p) break;
      if (const auto* ack = std::get_if<hub::mqtt::puback>(&*p)) {
        if (ctx.st.measuring) {
          ++ctx.st.acked;
          lat.add(clock_type::now() - sent_at[ack->packet_id % sent_at.size()]);
        }
        if (ctx.consumer) ctx.consumer->acknowledged(sent_at[ack->packet_id % sent_at.size()]);
        --outstanding;
        wake.cancel();
      } else if (std::holds_alternative<hub::mqtt::pingresp>(*p)) {
        --outstanding;
        wake.cancel();
      }
    }
    reading = false;
    wake.cancel();
  }, asio::detached);

  auto next_send = clock_type::now() + std::chrono::microseconds(static_cast<long>(index % 1000) * 50);
  // QoS 0 sends 64 publishes a turn (below): its turns come 64 times further apart.
  const auto interval = per_device_rate > 0
                            ? std::chrono::nanoseconds(static_cast<long long>(1e9 / per_device_rate)) * (ctx.opt.qos == 0 ? 64 : 1)
                            : std::chrono::nanoseconds(0);
  std::string bytes;
  std::uint64_t qos0_batch = 0;
  while (!ctx.st.stop && reading) {
    if (outstanding >= window) {
      co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
      wake.expires_at(clock_type::time_point::max());
      continue;
    }
    if (ctx.consumer && ctx.consumer->ended()) {
      // --consumer: after the window nothing more is sent, so the consumer can catch up.
      asio::steady_timer t(ex, std::chrono::milliseconds(20));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    if (interval.count() > 0) {
      const auto now = clock_type::now();
      if (now < next_send) {
        asio::steady_timer t(ex, next_send);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      next_send += interval;
    }
    bytes.clear();
    hub::mqtt::publish p{topic, payload, static_cast<std::uint8_t>(ctx.opt.qos), false, false, 0};
    const auto now = clock_type::now();
    if (ctx.consumer) loadgen::stamp_send_time(p.payload, now);
    if (ctx.opt.qos > 0) {
      if (++next_id == 0) next_id = 1;
      p.packet_id = next_id;
      sent_at[next_id % sent_at.size()] = now;
      ++outstanding;
      hub::mqtt::encode(p, bytes);
    } else {
      // QoS 0: count what the server confirmed processing: a PINGREQ after every 64 publishes.
      for (int i = 0; i < 64; ++i) hub::mqtt::encode(p, bytes);
      hub::mqtt::encode(hub::mqtt::pingreq{}, bytes);
      ++outstanding;
      ++qos0_batch;
      if (ctx.consumer) ctx.consumer->acknowledged(now, 64);  // QoS 0: sent counts as acknowledged
    }
    if (auto ec = co_await s.write(bytes); ec) {
      if (!ctx.st.stop) ctx.st.error(fmt::format("write {}: {}", d.id, ec.message()));
      break;
    }
    ctx.st.sent += ctx.opt.qos > 0 ? 1 : 64;
    if (ctx.opt.qos == 0 && ctx.st.measuring) ctx.st.acked += 64;
  }
  s.close();
  // Let the reader coroutine finish before the frame (and `s`) goes away.
  while (reading) {
    asio::steady_timer t(ex, std::chrono::milliseconds(10));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

constexpr auto idle_ping_interval = std::chrono::seconds(60);

// Opens a connection, then holds it (idle) or closes it at once (connect rate).
asio::awaitable<void> connector(const run_context& ctx, device_cred d, bool hold) {
  auto ex = co_await asio::this_coro::executor;
  stream s(static_cast<asio::io_context&>(ex.context()), ctx.tls);
  packet_reader reader;
  const bool ok = co_await open(ctx, d, s, reader);
  if (!ok || !hold) {
    s.close();
    co_return;
  }
  // Held like a device holds it: a PINGREQ well within the keep-alive (180 s), so that a server
  // that is slow to accept every connection does not drop the first ones by keep-alive before
  // the memory is read (mosquitto needs minutes for 10,000 connects). A connection that does not
  // answer counts as dropped, and the figure is per connection still open.
  std::string ping;
  hub::mqtt::encode(hub::mqtt::pingreq{}, ping);
  auto next_ping = clock_type::now() + idle_ping_interval;
  asio::steady_timer t(ex);
  while (!ctx.st.stop) {
    t.expires_after(std::chrono::seconds(1));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ctx.st.stop || clock_type::now() < next_ping) continue;
    next_ping = clock_type::now() + idle_ping_interval;
    const auto ec = co_await s.write(ping);
    std::optional<hub::mqtt::packet> p;
    if (!ec) p = co_await reader.next(s);
    if (!p || !std::holds_alternative<hub::mqtt::pingresp>(*p)) {
      if (!ctx.st.stop) ++ctx.st.dropped;
      break;
    }
  }
  s.close();
}

std::vector<device_cred> load_devices(const options& opt) {
  std::vector<device_cred> out;
  std::ifstream in(opt.devices_file);
  if (!in) throw std::runtime_error("cannot read " + opt.devices_file);
  std::string id, secret;
  while (in >> id >> secret && out.size() < opt.devices) out.push_back({id, secret});
  if (out.size() < opt.devices) {
    throw std::runtime_error(fmt::format("{} holds {} devices, {} wanted", opt.devices_file, out.size(), opt.devices));
  }
  return out;
}

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

}  // namespace

int main(int argc, char** argv) {
  options opt;
  CLI::App app{"hubd-loadgen: MQTT load for hubd and mosquitto, reported per message"};
  app.add_option("--host", opt.host, "server address");
  app.add_option("--sni", opt.sni, "hub host name for TLS and SAS (default: --host)");
  app.add_option("--port", opt.port, "server port");
  app.add_flag("!--plain", opt.tls, "plain TCP instead of TLS");
  app.add_option("--ca", opt.ca_file, "CA certificate to trust");
  app.add_option("--mode", opt.mode, "hubd (SAS tokens) or mosquitto (user name + password)")
      ->check(CLI::IsMember({"hubd", "mosquitto"}));
  app.add_option("--scenario", opt.scenario,
                 "throughput, connect, idle, method (direct method round trips; methods.cpp); or create: make "
                 "--devices devices through the registry API and write them to --devices-file")
      ->check(CLI::IsMember({"throughput", "connect", "idle", "method", "create"}));
  app.add_option("--connection-string", opt.connection_string,
                 "create, method (hubd): the hub's iothubowner connection string");
  app.add_option("--https-port", opt.https_port, "create, method (hubd): the hub's REST port");
  app.add_option("--devices-file", opt.devices_file, "lines 'id secret' (key or password)")->required();
  app.add_option("--devices", opt.devices, "connections");
  app.add_option("--qos", opt.qos, "0 or 1")->check(CLI::Range(0, 1));
  app.add_option("--size", opt.size, "payload bytes");
  app.add_option("--inflight", opt.inflight, "QoS 1 publishes outstanding per connection")->check(CLI::Range(1, 512));
  app.add_option("--rate", opt.rate, "total msgs/s (0 = as fast as acks allow)");
  app.add_option("--warmup", opt.warmup_s, "seconds before measuring");
  app.add_option("--duration", opt.duration_s, "seconds measured (idle: how long to hold)");
  app.add_option("--connect-concurrency", opt.connect_concurrency, "connections between connect and CONNACK at once (every scenario)");
  app.add_option("--method-concurrency", opt.method_concurrency, "method: calls outstanding at once");
  app.add_option("--server-pid", opt.server_pid, "server process, for CPU and memory figures");
  app.add_flag("--json", opt.json, "one JSON line instead of text");
  app.add_flag("--fast-ec-decode", opt.fast_ec_decode,
               "decode EC keys of received certificates with OpenSSL's legacy decoder (OpenSSL 3.0 builds a "
               "provider decoder per certificate); verification is unchanged");
  app.add_flag("--consumer", opt.consumer,
               "throughput: also read the messages back (hubd: its Event Hubs-compatible endpoint over AMQP with "
               "--connection-string, a policy with ServiceConnect; mosquitto: an MQTT subscriber with the line after "
               "the publishers' in --devices-file) and report publish-to-arrival latency; payloads carry their send "
               "time in their first 8 bytes");
  app.add_option("--amqp-port", opt.amqp_port, "--consumer with hubd: the AMQP port");
  CLI11_PARSE(app, argc, argv);
  if (opt.sni.empty()) opt.sni = opt.host;
  if (opt.consumer && opt.size < 8) {
    std::cerr << "hubd-loadgen: --consumer needs --size >= 8 (the send time)\n";
    return 2;
  }

  if (opt.scenario == "create") {
    try {
      loadgen::create_devices({opt.connection_string, opt.host, opt.https_port, opt.ca_file, opt.devices, "bench-",
                               opt.devices_file});
    } catch (const std::exception& e) {
      std::cerr << "hubd-loadgen: " << e.what() << "\n";
      return 1;
    }
    std::cout << "created " << opt.devices << " devices in " << opt.devices_file << "\n";
    return 0;
  }

  std::vector<device_cred> devices;
  std::optional<device_cred> spare;  // --consumer with mosquitto: the subscriber's credential
  try {
    if (opt.consumer && opt.mode == "mosquitto") {
      auto more = opt;
      ++more.devices;
      devices = load_devices(more);
      spare = devices.back();
      devices.pop_back();
    } else {
      devices = load_devices(opt);
    }
  } catch (const std::exception& e) {
    std::cerr << "hubd-loadgen: " << e.what() << "\n";
    return 2;
  }

  if (opt.fast_ec_decode && !loadgen::use_legacy_ec_key_decoding()) {
    std::cerr << "hubd-loadgen: --fast-ec-decode: OpenSSL refused the engine\n";
    return 2;
  }
  std::optional<ssl::context> tls;
  if (opt.tls) tls = loadgen::client_tls(opt.ca_file);
  asio::io_context ioc(1);
  stats st;
  st.latency.resize(1);
  run_context ctx{opt, st, tcp::endpoint(asio::ip::make_address(opt.host), opt.port), tls ? &*tls : nullptr, opt.sni};
  if (opt.scenario == "method") {
    loadgen::method_options mo{opt.mode, opt.host, opt.sni, opt.port, opt.https_port, opt.tls, opt.ca_file,
                               opt.connection_string, {}, opt.method_concurrency, opt.connect_concurrency, opt.warmup_s,
                               opt.duration_s, opt.server_pid, opt.json,
                               [&ctx](const std::string& id, const std::string& secret) {
                                 return make_connect(ctx, {id, secret});
                               },
                               cpu_seconds};
    for (const auto& d : devices) mo.devices.emplace_back(d.id, d.secret);
    return loadgen::run_methods(mo);
  }

  const int self = static_cast<int>(getpid());
  const long rss_before = opt.server_pid ? rss_kib(opt.server_pid) : 0;
  std::vector<std::thread> threads;
  auto run_threads = [&] {
    threads.emplace_back([&] { ioc.run(); });
  };
  auto guard = asio::make_work_guard(ioc);

  std::unique_ptr<loadgen::consumer> consumer;
  if (opt.consumer && opt.scenario == "throughput") {
    consumer = std::make_unique<loadgen::consumer>(loadgen::consumer_options{
        opt.mode, opt.host, opt.sni, opt.tls, opt.ca_file, opt.port, opt.amqp_port, opt.connection_string, "$Default",
        spare ? spare->id : "", spare ? spare->secret : ""});
    try {
      consumer->start(std::chrono::seconds(10));
    } catch (const std::exception& e) {
      std::cerr << "hubd-loadgen: consumer: " << e.what() << "\n";
      return 1;
    }
    ctx.consumer = consumer.get();
  }

  if (opt.scenario == "throughput") {
    const double per_device = opt.rate > 0 ? opt.rate / static_cast<double>(devices.size()) : 0;
    for (std::size_t i = 0; i < devices.size(); ++i) {
      asio::co_spawn(ioc, publisher(ctx, devices[i], i, st.latency[0], per_device), asio::detached);
    }
    run_threads();
    sleep_s(opt.warmup_s);
    const double srv0 = opt.server_pid ? cpu_seconds(opt.server_pid) : 0, gen0 = cpu_seconds(self);
    const double con0 = consumer ? consumer->cpu_seconds() : 0;
    const auto t0 = clock_type::now();
    if (consumer) consumer->begin(t0);
    st.measuring = true;
    // The window is measured in slices of 10 s (one slice when it is shorter): the slowest slice says
    // whether a rate was sustained, not just reached on average.
    const double slice_s = std::min(10.0, opt.duration_s);
    double slowest = -1;
    for (double done = 0; done < opt.duration_s;) {
      const double step = std::min(slice_s, opt.duration_s - done);
      const auto before = st.acked.load();
      const auto s0 = clock_type::now();
      sleep_s(step);
      const double rate = static_cast<double>(st.acked.load() - before) /
                          std::chrono::duration<double>(clock_type::now() - s0).count();
      if (step >= slice_s && (slowest < 0 || rate < slowest)) slowest = rate;
      done += step;
    }
    st.measuring = false;
    const auto t1 = clock_type::now();
    if (consumer) consumer->end(t1);
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    const double srv = opt.server_pid ? cpu_seconds(opt.server_pid) - srv0 : 0, gen = cpu_seconds(self) - gen0;
    // The publishers send no more (consumer->ended()) but still take PUBACKs while the window's
    // last messages are acknowledged and arrive; the consumer's CPU counts until then.
    if (consumer) consumer->drain(std::chrono::seconds(30));
    const double drain_s = std::chrono::duration<double>(clock_type::now() - t1).count();
    const double con = consumer ? consumer->cpu_seconds() - con0 : 0;
    st.stop = true;
    if (consumer) consumer->stop();
    std::string arrival_json, arrival_text;
    if (consumer) {
      const auto& a = consumer->latency();
      const double acked = static_cast<double>(consumer->acked());
      const double fraction = acked > 0 ? static_cast<double>(consumer->arrived()) / acked : 0;
      // A consumer that saw nothing is an error, not a latency of 0.
      std::string trouble;
      if (consumer->arrived() == 0) trouble = "nothing arrived";
      if (!consumer->error().empty()) trouble += (trouble.empty() ? "" : ": ") + consumer->error();
      if (!trouble.empty()) {
        st.error("consumer: " + trouble);
        std::cerr << "hubd-loadgen: consumer: " << trouble << "\n";
      }
      arrival_json = fmt::format(
          R"(,"arrival_p50_ms":{:.3f},"arrival_p99_ms":{:.3f},"arrival_p999_ms":{:.3f},"arrived":{},"acked_in_window":{},"arrived_fraction":{:.4f},"consumer_cpu_us_per_msg":{:.2f},"drain_s":{:.2f})",
          a.percentile_ms(0.5), a.percentile_ms(0.99), a.percentile_ms(0.999), consumer->arrived(), consumer->acked(),
          fraction, consumer->arrived() ? con * 1e6 / static_cast<double>(consumer->arrived()) : 0, drain_s);
      arrival_text = fmt::format(
          "  publish->arrival p50 {:.3f} ms, p99 {:.3f} ms, p99.9 {:.3f} ms; {} of {} acknowledged arrived ({:.4f}); "
          "consumer CPU {:.2f} µs/msg (in loadgen's); caught up {:.2f} s after the window\n",
          a.percentile_ms(0.5), a.percentile_ms(0.99), a.percentile_ms(0.999), consumer->arrived(), consumer->acked(),
          fraction, consumer->arrived() ? con * 1e6 / static_cast<double>(consumer->arrived()) : 0, drain_s);
    }
    const auto msgs = static_cast<double>(st.acked.load());
    const auto& h = st.latency[0];
    if (opt.json) {
      std::cout << fmt::format(
          R"({{"scenario":"throughput","mode":"{}","connections":{},"connected":{},"qos":{},"size":{},"msgs_per_s":{:.0f},)"
          R"("slowest_10s_msgs_per_s":{:.0f},"server_cpu_us_per_msg":{:.2f},"loadgen_cpu_us_per_msg":{:.2f},"p50_ms":{:.3f},"p99_ms":{:.3f},"p999_ms":{:.3f},"errors":{}{}}})",
          opt.mode, devices.size(), st.connected.load(), opt.qos, opt.size, msgs / secs, std::max(slowest, 0.0),
          msgs > 0 ? srv * 1e6 / msgs : 0, msgs > 0 ? gen * 1e6 / msgs : 0, h.percentile_ms(0.5), h.percentile_ms(0.99),
          h.percentile_ms(0.999), st.errors.load(), arrival_json)
                << std::endl;
    } else {
      std::cout << fmt::format("{} {} connections ({} connected), QoS {}, {} B: {:.0f} msgs/s over {:.1f} s\n", opt.mode,
                               devices.size(), st.connected.load(), opt.qos, opt.size, msgs / secs, secs)
                << fmt::format("  slowest {:.0f} s slice: {:.0f} msgs/s\n", slice_s, std::max(slowest, 0.0))
                << fmt::format("  server CPU {:.2f} µs/msg, loadgen CPU {:.2f} µs/msg\n",
                               msgs > 0 ? srv * 1e6 / msgs : 0, msgs > 0 ? gen * 1e6 / msgs : 0)
                << fmt::format("  publish->PUBACK p50 {:.3f} ms, p99 {:.3f} ms, p99.9 {:.3f} ms ({} samples)\n",
                               h.percentile_ms(0.5), h.percentile_ms(0.99), h.percentile_ms(0.999), h.count())
                << arrival_text
                << fmt::format("  errors: {}{}\n", st.errors.load(),
                               st.first_error.empty() ? "" : " (first: " + st.first_error + ")");
    }
  } else {
    // connect / idle: open every connection with bounded concurrency.
    const bool hold = opt.scenario == "idle";
    auto next = std::make_shared<std::atomic<std::size_t>>(0);
    auto worker = [&ctx, &devices, next, hold]() -> asio::awaitable<void> {
      for (std::size_t i = (*next)++; i < devices.size(); i = (*next)++) {
        if (hold) {
          asio::co_spawn(co_await asio::this_coro::executor, connector(ctx, devices[i], true), asio::detached);
          // Wait for this one to finish its CONNECT before starting the next.
          const auto want = i + 1;
          while (ctx.st.connected + ctx.st.errors < want && !ctx.st.stop) {
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::microseconds(200));
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
          }
        } else {
          co_await connector(ctx, devices[i], false);
        }
      }
    };
    const double srv0 = opt.server_pid ? cpu_seconds(opt.server_pid) : 0, gen0 = cpu_seconds(self);
    const auto t0 = clock_type::now();
    const std::size_t workers = hold ? 1 : opt.connect_concurrency;
    for (std::size_t i = 0; i < workers; ++i) asio::co_spawn(ioc, worker(), asio::detached);
    run_threads();
    while (st.connected + st.errors < devices.size()) sleep_s(0.05);
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    const double srv = opt.server_pid ? cpu_seconds(opt.server_pid) - srv0 : 0, gen = cpu_seconds(self) - gen0;
    const double per_connect = st.connected ? 1e3 / static_cast<double>(st.connected) : 0;  // ms
    if (hold) {
      sleep_s(std::min(opt.duration_s, 5.0));  // let the server settle
      const long rss_after = opt.server_pid ? rss_kib(opt.server_pid) : 0;
      const std::uint64_t open_now = st.connected - st.dropped;
      const double per_conn_kb = static_cast<double>(rss_after - rss_before) * 1024.0 / 1000.0 /
                                 static_cast<double>(std::max<std::uint64_t>(1, open_now));
      if (opt.json) {
        std::cout << fmt::format(R"({{"scenario":"idle","mode":"{}","connections":{},"dropped":{},"connect_s":{:.1f},"rss_before_kib":{},"rss_after_kib":{},"kb_per_connection":{:.2f},"errors":{}}})",
                                 opt.mode, open_now, st.dropped.load(), secs, rss_before, rss_after, per_conn_kb,
                                 st.errors.load())
                  << std::endl;
      } else {
        std::cout << fmt::format("{}: {} idle connections ({} dropped meanwhile; connected in {:.0f} s): server RSS {} -> {} KiB, {:.2f} KB per connection, errors {}\n",
                                 opt.mode, open_now, st.dropped.load(), secs, rss_before, rss_after, per_conn_kb,
                                 st.errors.load());
      }
    } else if (opt.json) {
      std::cout << fmt::format(R"({{"scenario":"connect","mode":"{}","connects":{},"connects_per_s":{:.0f},"server_cpu_ms_per_connect":{:.3f},"loadgen_cpu_ms_per_connect":{:.3f},"errors":{}}})",
                               opt.mode, st.connected.load(), static_cast<double>(st.connected) / secs,
                               srv * per_connect, gen * per_connect, st.errors.load())
                << std::endl;
    } else {
      std::cout << fmt::format("{}: {} connects in {:.2f} s = {:.0f}/s, server CPU {:.3f} ms per connect, loadgen CPU {:.3f} ms per connect, errors {}{}\n",
                               opt.mode, st.connected.load(), secs, static_cast<double>(st.connected) / secs,
                               srv * per_connect, gen * per_connect, st.errors.load(),
                               st.first_error.empty() ? "" : " (first: " + st.first_error + ")");
    }
    st.stop = true;
  }
  sleep_s(0.3);
  guard.reset();
  ioc.stop();
  for (auto& t : threads) t.join();
  if (consumer && consumer->arrived() == 0) return 1;
  return st.errors > 0 && st.connected == 0 ? 1 : 0;
}
