#include "bench/loadgen/consumer.hpp"
#include "bench/loadgen/mqtt_stream.hpp"
#include "bench/loadgen/proc_stat.hpp"

#include "base/text.hpp"
#include "codec/mqtt/codec.hpp"
#include "domain/auth/sas.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <proton/codec/encoder.hpp>
#include <proton/codec/map.hpp>
#include <proton/codec/vector.hpp>
#include <proton/message_id.hpp>
#include <proton/value.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/source_options.hpp>
#include <proton/ssl.hpp>
#include <proton/transport.hpp>

#include <fmt/format.h>

#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace loadgen {

void stamp_send_time(std::string& payload, clock_type::time_point sent) {
  const auto ns = static_cast<std::uint64_t>(sent.time_since_epoch().count());
  for (std::size_t i = 0; i < 8 && i < payload.size(); ++i) payload[i] = static_cast<char>((ns >> (8 * i)) & 0xff);
}

namespace {

std::int64_t read_send_time(std::string_view payload) {
  std::uint64_t ns = 0;
  for (std::size_t i = 0; i < 8; ++i) ns |= static_cast<std::uint64_t>(static_cast<unsigned char>(payload[i])) << (8 * i);
  return static_cast<std::int64_t>(ns);
}

std::map<std::string, std::string> parse_connection_string(const std::string& cs) {
  std::map<std::string, std::string> out;
  std::istringstream in(cs);
  std::string part;
  while (std::getline(in, part, ';')) {
    const auto eq = part.find('=');
    if (eq != std::string::npos) out[part.substr(0, eq)] = part.substr(eq + 1);
  }
  return out;
}

// The built-in endpoint's event hub name: the host name's first label, lower case, or the whole
// address when the host is an IP address (as `hubctl connection-string --eventhub` prints it).
std::string event_hub_name(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  std::string name = !ec ? host : host.substr(0, host.find('.'));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

// ---- hubd: the Event Hubs-compatible endpoint over AMQP -------------------------------------

// A selector filter as @azure/event-hubs sends it: described(0x0000468C00000004, expression).
proton::value selector(const std::string& expression) {
  proton::value v;
  proton::codec::encoder e(v);
  e << proton::codec::start::described() << static_cast<std::uint64_t>(0x0000468C00000004ull) << expression
    << proton::codec::finish();
  return v;
}

class event_hubs_reader : public proton::messaging_handler {
 public:
  event_hubs_reader(consumer& c, const consumer_options& o) : c_(c), o_(o) {
    auto cs = parse_connection_string(o.connection_string);
    host_ = cs["HostName"];
    key_name_ = cs["SharedAccessKeyName"];
    key_ = cs["SharedAccessKey"];
    if (host_.empty() || key_name_.empty() || key_.empty()) {
      throw std::runtime_error("--connection-string needs HostName, SharedAccessKeyName and SharedAccessKey");
    }
    entity_ = event_hub_name(host_);
  }

  void on_container_start(proton::container& ct) override {
    proton::connection_options co;
    // SASL ANONYMOUS as rhea negotiates it for @azure/event-hubs; identity comes by CBS.
    co.sasl_enabled(true).sasl_allowed_mechs("ANONYMOUS");
    co.virtual_host(o_.sni.empty() ? o_.host : o_.sni);
    co.idle_timeout(proton::duration(60'000));
    std::string scheme = "amqp";
    if (o_.tls) {
      scheme = "amqps";
      // Proton's OpenSSL layer matches a peer name only against DNS names: with an IP address
      // as host, the chain is verified but not the name.
      boost::system::error_code ec;
      boost::asio::ip::make_address(o_.sni.empty() ? o_.host : o_.sni, ec);
      const auto mode = ec ? proton::ssl::VERIFY_PEER_NAME : proton::ssl::VERIFY_PEER;
      co.ssl_client_options(proton::ssl_client_options(o_.ca_file, mode));
    }
    ct.connect(fmt::format("{}://{}:{}", scheme, o_.host, o_.amqp_port), co);
  }

  void on_connection_open(proton::connection& conn) override {
    cbs_tx_ = conn.open_sender("$cbs");
    cbs_rx_ = conn.open_receiver("$cbs", proton::receiver_options().name("cbs-reply").credit_window(10));
  }

  void on_sendable(proton::sender& s) override {
    if (s == cbs_tx_ && !token_sent_) {
      token_sent_ = true;
      // A token for the whole event hub covers $management and every partition. As
      // @azure/core-amqp signs it: sr = encodeURIComponent(audience), HMAC keyed by the key's text.
      const std::string audience = fmt::format("sb://{}/{}", host_, entity_);
      const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count() + 3600;
      const std::string sr = hub::text::url_encode(audience);
      const std::string token = "SharedAccessSignature sr=" + sr + "&sig=" +
                                hub::text::url_encode(hub::auth::sign(key_, sr, expiry, hub::auth::key_encoding::raw_text)) +
                                "&se=" + std::to_string(expiry) + "&skn=" + key_name_;
      proton::message m;
      m.id(proton::message_id(std::string("put-token-1")));
      m.to("$cbs");
      m.reply_to("cbs-reply");
      m.properties().put("operation", std::string("put-token"));
      m.properties().put("type", std::string("servicebus.windows.net:sastoken"));
      m.properties().put("name", audience);
      m.body(token);
      s.send(m);
    } else if (s == mgmt_tx_ && authorised_ && !read_sent_) {
      send_read();
    }
  }

  void send_read() {
    read_sent_ = true;
    proton::message m;
    m.id(proton::message_id(std::string("read-1")));
    m.reply_to("mgmt-reply");
    m.properties().put("operation", std::string("READ"));
    m.properties().put("name", entity_);
    m.properties().put("type", std::string("com.microsoft:eventhub"));
    mgmt_tx_.send(m);
  }

  void on_message(proton::delivery& d, proton::message& m) override {
    const auto at = clock_type::now();
    const proton::receiver r = d.receiver();
    if (r == cbs_rx_) {
      const int status = status_of(m);
      if (status != 200) {
        const auto d = m.properties().get("status-description");
        return fail(fmt::format("CBS put-token for sb://{}/{}: status {} {}", host_, entity_, status,
                                d.type() == proton::STRING ? proton::get<std::string>(d) : std::string()));
      }
      // $management links attach once a token covers them (hubd refuses them before, as Event
      // Hubs does); the READ goes when the sender has credit.
      authorised_ = true;
      mgmt_tx_ = r.connection().open_sender("$management");
      mgmt_rx_ = r.connection().open_receiver("$management", proton::receiver_options().name("mgmt-reply").credit_window(10));
      return;
    }
    if (r == mgmt_rx_) {
      const int status = status_of(m);
      if (status != 200) return fail(fmt::format("$management READ {}: status {}", entity_, status));
      std::map<std::string, proton::value> body;
      proton::get(m.body(), body);
      const auto n = proton::get<std::int32_t>(body.at("partition_count"));
      if (n <= 0) return fail("$management READ: no partitions");
      // From now (minus a second of clock slack: nothing is published before the consumer is
      // ready, and the window, not the filter, decides what counts).
      const auto from_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count() - 1000;
      proton::source::filter_map filters;
      filters.put(proton::symbol("apache.org:selector-filter:string"),
                  selector(fmt::format("amqp.annotation.x-opt-enqueued-time > '{}'", from_ms)));
      partitions_ = n;
      for (int p = 0; p < n; ++p) {
        proton::source_options so;
        so.filters(filters);
        const std::string address = fmt::format("{}/ConsumerGroups/{}/Partitions/{}", entity_, o_.consumer_group, p);
        data_.push_back(r.connection().open_receiver(
            address, proton::receiver_options().name(fmt::format("loadgen-{}", p)).source(so).credit_window(1000)));
      }
      return;
    }
    // An event: the payload is a Data section.
    if (m.body().type() != proton::BINARY) {
      c_.arrived({}, at);
      return;
    }
    const auto b = proton::get<proton::binary>(m.body());
    c_.arrived(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), at);
  }

  void on_receiver_open(proton::receiver& r) override {
    if (r == cbs_rx_ || r == mgmt_rx_) return;
    if (++opened_ == partitions_) c_.ready();
  }

  void on_receiver_close(proton::receiver& r) override {
    if (!stopping_) fail(fmt::format("receiver {} closed: {}", r.source().address(), r.error().what()));
  }
  void on_transport_error(proton::transport& t) override {
    if (!stopping_) fail("AMQP transport: " + t.error().what());
  }
  void on_connection_error(proton::connection& c) override {
    if (!stopping_) fail("AMQP connection: " + c.error().what());
  }
  void on_error(const proton::error_condition& e) override {
    if (!stopping_) fail("AMQP: " + e.what());
  }

  std::atomic<bool> stopping_{false};

 private:
  static int status_of(const proton::message& m) {
    const auto v = m.properties().get("status-code");
    switch (v.type()) {
      case proton::INT: return proton::get<std::int32_t>(v);
      case proton::LONG: return static_cast<int>(proton::get<std::int64_t>(v));
      default: return -1;
    }
  }
  void fail(const std::string& what) { c_.fail(what); }

  consumer& c_;
  const consumer_options& o_;
  std::string host_, key_name_, key_, entity_;
  proton::sender cbs_tx_, mgmt_tx_;
  proton::receiver cbs_rx_, mgmt_rx_;
  std::vector<proton::receiver> data_;
  bool token_sent_ = false, authorised_ = false, read_sent_ = false;
  int partitions_ = 0, opened_ = 0;
};

// ---- mosquitto: an MQTT subscriber ----------------------------------------------------------

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// Blocking I/O on the consumer's own thread: read what came, decode every packet, acknowledge
// the batch in one write.
class mqtt_subscriber {
 public:
  mqtt_subscriber(consumer& c, const consumer_options& o)
      : c_(c), o_(o), tls_ctx_(std::move(*client_tls(o.ca_file))) {
    if (o.user.empty()) throw std::runtime_error("the consumer needs an MQTT user (a spare line of --devices-file)");
    socket_ = std::make_unique<tcp::socket>(ioc_);
    if (o.tls) tls_.emplace(*socket_, tls_ctx_);
  }

  void run() {
    try {
      socket_->connect(tcp::endpoint(asio::ip::make_address(o_.host), o_.port));
      socket_->set_option(tcp::no_delay(true));
      if (tls_) {
        tls_->set_verify_mode(ssl::verify_peer);
        tls_->handshake(ssl::stream_base::client);
      }
      std::string out;
      hub::mqtt::connect conn;
      conn.clean_session = true;
      conn.keep_alive = 0;
      conn.client_id = o_.user + "-consumer";
      conn.username = o_.user;
      conn.password = o_.password;
      hub::mqtt::encode(conn, out);
      hub::mqtt::subscribe sub;
      sub.packet_id = 1;
      sub.subscriptions.push_back({"devices/+/messages/events/#", 1});
      hub::mqtt::encode(sub, out);
      write(out);
      std::string buf;
      char tmp[65536];
      for (;;) {
        boost::system::error_code ec;
        const std::size_t n = tls_ ? tls_->read_some(asio::buffer(tmp), ec) : socket_->read_some(asio::buffer(tmp), ec);
        if (ec) {
          if (!stopping_) c_.fail("MQTT consumer read: " + ec.message());
          return;
        }
        const auto at = clock_type::now();
        buf.append(tmp, n);
        out.clear();
        std::size_t used = 0;
        for (;;) {
          auto r = hub::mqtt::decode({buf.data() + used, buf.size() - used});
          if (r.st == hub::mqtt::decode_result::status::error) {
            c_.fail("MQTT consumer: undecodable packet");
            return;
          }
          if (r.st != hub::mqtt::decode_result::status::ok) break;
          used += r.consumed;
          if (auto* p = std::get_if<hub::mqtt::publish>(&r.pkt)) {
            c_.arrived(p->payload, at);
            if (p->qos > 0) hub::mqtt::encode(hub::mqtt::puback{p->packet_id}, out);
          } else if (auto* ack = std::get_if<hub::mqtt::connack>(&r.pkt)) {
            if (ack->code != hub::mqtt::connack_code::accepted) {
              c_.fail(fmt::format("MQTT consumer CONNACK {}", static_cast<int>(ack->code)));
              return;
            }
          } else if (auto* sa = std::get_if<hub::mqtt::suback>(&r.pkt)) {
            if (sa->codes.empty() || sa->codes[0] == hub::mqtt::suback_failure) {
              c_.fail("MQTT consumer: subscription refused");
              return;
            }
            c_.ready();
          }
        }
        buf.erase(0, used);
        if (!out.empty()) write(out);
      }
    } catch (const std::exception& e) {
      if (!stopping_) c_.fail(std::string("MQTT consumer: ") + e.what());
    }
  }

  void stop() {
    stopping_ = true;
    // Wakes the blocking read; the socket is closed by its own thread.
    ::shutdown(socket_->native_handle(), SHUT_RDWR);
  }

 private:
  void write(const std::string& bytes) {
    if (tls_) asio::write(*tls_, asio::buffer(bytes));
    else asio::write(*socket_, asio::buffer(bytes));
  }

  consumer& c_;
  const consumer_options& o_;
  asio::io_context ioc_;
  ssl::context tls_ctx_;
  std::unique_ptr<tcp::socket> socket_;
  std::optional<ssl::stream<tcp::socket&>> tls_;
  std::atomic<bool> stopping_{false};
};

}  // namespace

struct consumer::impl {
  std::unique_ptr<event_hubs_reader> amqp;
  std::unique_ptr<proton::container> container;
  std::unique_ptr<mqtt_subscriber> mqtt;
  std::thread thread;
};

consumer::consumer(consumer_options o) : opt_(std::move(o)), impl_(std::make_unique<impl>()) {}

consumer::~consumer() { stop(); }

void consumer::start(std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  if (opt_.mode == "hubd") {
    i.amqp = std::make_unique<event_hubs_reader>(*this, opt_);
    i.container = std::make_unique<proton::container>(*i.amqp, "hubd-loadgen-consumer");
    i.thread = std::thread([this] {
      tid_ = static_cast<int>(::syscall(SYS_gettid));
      try {
        impl_->container->run();
      } catch (const std::exception& e) {
        fail(std::string("AMQP consumer: ") + e.what());
      }
    });
  } else {
    i.mqtt = std::make_unique<mqtt_subscriber>(*this, opt_);
    i.thread = std::thread([this] {
      tid_ = static_cast<int>(::syscall(SYS_gettid));
      impl_->mqtt->run();
    });
  }
  const auto deadline = clock_type::now() + timeout;
  while (!ready_ && !failed_ && clock_type::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (failed_) throw std::runtime_error(error());
  if (!ready_) throw std::runtime_error(fmt::format("consumer not receiving after {} ms", timeout.count()));
}

void consumer::begin(clock_type::time_point t) { begin_ns_ = t.time_since_epoch().count(); }
void consumer::end(clock_type::time_point t) { end_ns_ = t.time_since_epoch().count(); }

void consumer::drain(std::chrono::milliseconds timeout) {
  // Acknowledgements of the window's last messages come after it ends; wait for them first.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto deadline = clock_type::now() + timeout;
  while (arrived_ < acked_ && !failed_ && clock_type::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void consumer::stop() {
  auto& i = *impl_;
  if (!i.thread.joinable()) return;
  if (i.amqp) {
    i.amqp->stopping_ = true;
    i.container->stop();
  }
  if (i.mqtt) i.mqtt->stop();
  i.thread.join();
}

void consumer::arrived(std::string_view payload, clock_type::time_point at) {
  if (payload.size() < 8) {
    ++foreign_;
    return;
  }
  const clock_type::time_point sent{clock_type::duration(read_send_time(payload))};
  if (!in_window(sent)) return;
  latency_.add(at - sent);
  arrived_.fetch_add(1, std::memory_order_relaxed);
}

void consumer::fail(const std::string& what) {
  {
    std::scoped_lock lock(error_mutex_);
    if (error_.empty()) error_ = what;
  }
  failed_ = true;
}

void consumer::ready() { ready_ = true; }

std::string consumer::error() const {
  std::scoped_lock lock(error_mutex_);
  return error_;
}

double consumer::cpu_seconds() const {
  if (tid_ == 0) return 0;
  return stat_cpu_seconds(fmt::format("/proc/self/task/{}/stat", tid_.load()));
}

}  // namespace loadgen
