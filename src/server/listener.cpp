// Acceptors, the TLS context, per-connection handshake and protocol detection, and shutdown.
// One of the two heavy TUs of the server (the other is http_session.cpp).
#include "server/listener.hpp"

#include "base/log.hpp"
#include "heads/amqp/session.hpp"
#include "heads/mqtt/session.hpp"
#include "server/files.hpp"
#include "domain/certificates/peer_chain.hpp"
#include "server/session.hpp"
#include "server/tls_socket.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <fmt/format.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <variant>

namespace hub::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// TLS 1.2 suites with forward secrecy and AEAD only (Mozilla "intermediate" minus DHE); TLS 1.3
// suites are OpenSSL's defaults, all modern.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

constexpr std::uint8_t mqtt_connect_byte = 0x10;  // MQTT CONNECT: packet type 1, flags 0

std::string endpoint_text(const tcp::endpoint& ep) {
  const auto address = ep.address();
  if (address.is_v6()) {
    // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; print it as v4.
    const auto v6 = address.to_v6();
    if (v6.is_v4_mapped()) return fmt::format("{}:{}", asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string(), ep.port());
    return fmt::format("[{}]:{}", address.to_string(), ep.port());
  }
  return fmt::format("{}:{}", address.to_string(), ep.port());
}

// The source address alone, the key of the per-address caps: v4-mapped v6 as v4.
std::string address_text(const tcp::endpoint& ep) {
  const auto address = ep.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  return address.to_string();
}

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// At most one warning per interval for a kind of event that can come thousands of times a second
// (refused connections, accept() out of descriptors): the first one logs, the others are counted
// into the next. Any thread.
class log_throttle {
 public:
  explicit log_throttle(std::chrono::milliseconds interval) : interval_ms_(interval.count()) {}
  // True when the caller should log now; `suppressed` is how many were not logged since the last.
  bool allow(std::uint64_t& suppressed) {
    const std::int64_t now = steady_ms();
    std::int64_t last = last_ms_.load(std::memory_order_relaxed);
    if (last != 0 && now - last < interval_ms_) {
      count_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (!last_ms_.compare_exchange_strong(last, now)) {
      count_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    suppressed = count_.exchange(0, std::memory_order_relaxed);
    return true;
  }

 private:
  const std::int64_t interval_ms_;
  std::atomic<std::int64_t> last_ms_{0};
  std::atomic<std::uint64_t> count_{0};
};

std::string lower_first(std::string s) {
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z') s[0] = static_cast<char>(s[0] - 'A' + 'a');
  return s;
}

ssl::context make_tls_context(const listener_options& opts) {
  ssl::context ctx(ssl::context::tls_server);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_compression | ssl::context::single_dh_use |
                  ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.native_handle(), SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(ctx.native_handle(), tls12_ciphers) != 1)
    throw startup_error("cannot configure TLS ciphers");
  error_code ec;
  ctx.use_certificate_chain_file(opts.cert_chain_file.string(), ec);
  if (ec) throw startup_error(fmt::format("cannot load TLS certificate {}: {}", opts.cert_chain_file.string(), ec.message()));
  ctx.use_private_key_file(opts.key_file.string(), ssl::context::pem, ec);
  if (ec) throw startup_error(fmt::format("cannot load TLS key {}: {}", opts.key_file.string(), ec.message()));
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    throw startup_error(fmt::format("{} does not match {}", opts.key_file.string(), opts.cert_chain_file.string()));
  // X.509 devices: ask every client for a certificate but judge none at handshake time (SAS
  // devices and the service SDKs send none). The MQTT head checks what was presented against the
  // identity the CONNECT claims; the handshake itself proves the client holds the private key.
  SSL_CTX_set_verify(ctx.native_handle(), SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  // No session resumption: a resumed session keeps the client's leaf certificate but not the
  // intermediates it sent, so a CA-signed device would fail on reconnect. Devices reconnect
  // rarely (the SDK's token renewal: every 45 minutes), and HTTP clients keep connections alive.
  SSL_CTX_set_session_cache_mode(ctx.native_handle(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.native_handle(), SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx.native_handle(), 0);
  // Idle connections should hold little memory: OpenSSL frees its read/write buffers between records.
  SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

// MQTT or AMQP straight over TLS (ports 8883 and 5671, or any port where the protocol is
// detected), on the lean tls_socket: no buffers outside OpenSSL. One adapter for both heads:
// their transports have one shape.
class tls_transport final : public mqtt_head::transport, public amqp_head::transport {
 public:
  explicit tls_transport(tls_socket& s) : s_(s) {}

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    return s_.read_some(buf, ec);
  }
  asio::awaitable<void> wait_readable() override { return s_.wait_readable(); }
  asio::awaitable<void> write(asio::const_buffer buf, error_code& ec) override { return s_.write(buf, ec); }
  void close() noexcept override { s_.close(); }
  certificates::client_chain peer_certificates() const override { return certificates::client_chain_of(s_.native_handle()); }
  std::string_view name() const noexcept override { return "mqtt"; }
  asio::any_io_executor executor() override { return s_.socket().get_executor(); }

 private:
  tls_socket& s_;
};

// One io_context with its own thread: a connection lives on one worker for its whole life, so its
// session needs no strand.
struct worker {
  // The live connections of this worker, to close them at shutdown. Touched only on ioc's thread.
  // Declared before ioc: destroying ioc destroys suspended session frames, which unregister here.
  std::unordered_set<tcp::socket*> connections;
  bool closing = false;  // ditto
  std::thread thread;
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{ioc.get_executor()};
};

// Keeps a connection's socket in its worker's set for as long as the session frame lives.
class registration {
 public:
  registration(worker& w, tcp::socket& s) : w_(w), s_(&s) { w_.connections.insert(s_); }
  ~registration() { w_.connections.erase(s_); }
  registration(const registration&) = delete;
  registration& operator=(const registration&) = delete;
  bool closing() const noexcept { return w_.closing; }
  // Closes the connection's socket now (on its thread): pending operations end with an error and
  // the session ends.
  void close() noexcept {
    error_code ec;
    s_->shutdown(tcp::socket::shutdown_both, ec);
    s_->close(ec);
  }
  // The socket moved (HTTP: into a beast::tcp_stream).
  void move_to(tcp::socket& s) {
    w_.connections.erase(s_);
    s_ = &s;
    w_.connections.insert(s_);
  }

 private:
  worker& w_;
  tcp::socket* s_;
};

bool peer_went_away(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == ssl::error::stream_truncated ||
         ec == asio::error::broken_pipe || ec == asio::error::operation_aborted;
}

// True when this host can serve IPv6: "::" then also covers IPv4 (dual-stack).
bool ipv6_available() {
  asio::io_context ioc;
  tcp::acceptor probe(ioc);
  error_code ec;
  probe.open(tcp::v6(), ec);
  if (!ec) probe.bind(tcp::endpoint(tcp::v6(), 0), ec);
  return !ec;
}

}  // namespace

std::string bound_endpoint::to_string() const {
  const bool v6 = address.find(':') != std::string::npos;
  return v6 ? fmt::format("{} [{}]:{}", name, address, port) : fmt::format("{} {}:{}", name, address, port);
}

struct listeners::impl {
  impl(listener_options o, const http::router& r, const clock& c, const mqtt_head::services* mqtt,
       const amqp_head::services* amqp);

  void bind_all();
  bool try_bind(const asio::ip::address& address, const listen_port& port, error_code& ec);
  void start_accepting();
  asio::awaitable<void> accept_loop(tcp::acceptor* acceptor, std::string name);
  asio::awaitable<void> run_connection(worker* w, tcp::socket socket, std::uint64_t id, admission::ticket ticket);
  template <class Socket>
  bool admit(Socket& socket, admission::ticket& ticket);
  asio::awaitable<bool> handshake_and_detect(tls_socket& tls, std::string& first, const connection_info& conn);
  asio::awaitable<bool> detect_in_time(tls_socket& tls, std::string& first, const connection_info& conn);
  asio::awaitable<void> serve_http(tls_socket& tls, registration& reg, const std::string& first,
                                   const connection_info& conn);
  void request_stop();
  void close_everything();

  listener_options opts_;
  std::shared_ptr<spdlog::logger> log_ = hub::log::get("server");
  // Before the workers: session frames (destroyed with their io_context) hold admission tickets.
  admission admission_{admission_limits{opts_.limits.max_unauthenticated, opts_.limits.max_unauthenticated_per_ip,
                                        opts_.limits.max_connections_per_ip}};
  log_throttle refused_log_{std::chrono::seconds(10)};
  log_throttle accept_failed_log_{std::chrono::seconds(10)};
  log_throttle timeout_log_{std::chrono::seconds(10)};
  log_throttle auth_timeout_log_{std::chrono::seconds(10)};
  // Members are destroyed in reverse order: acceptors and signals before the io_contexts they
  // use, and the route pool (joined) before the workers its completions go to.
  std::vector<std::unique_ptr<worker>> workers_;
  asio::thread_pool route_pool_;
  ssl::context tls_;
  std::optional<mqtt_head::session_context> mqtt_ctx_;
  std::optional<amqp_head::session_context> amqp_ctx_;
  session_context session_ctx_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  std::vector<bound_endpoint> endpoints_;
  std::optional<asio::signal_set> signals_;
  std::atomic<std::size_t> next_worker_{0};
  std::atomic<std::uint64_t> next_connection_id_{0};

  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stop_requested_ = false;
  bool ran_ = false;
};

listeners::impl::impl(listener_options o, const http::router& r, const clock& c, const mqtt_head::services* mqtt,
                      const amqp_head::services* amqp)
    : opts_(std::move(o)),
      workers_([&] {
        std::size_t n = opts_.io_threads ? opts_.io_threads : std::thread::hardware_concurrency();
        std::vector<std::unique_ptr<worker>> v;
        for (std::size_t i = 0; i < std::max<std::size_t>(n, 1); ++i) v.push_back(std::make_unique<worker>());
        return v;
      }()),
      route_pool_(std::max<std::size_t>(opts_.route_threads, 1)),
      tls_(make_tls_context(opts_)),
      mqtt_ctx_(mqtt ? std::optional<mqtt_head::session_context>(std::in_place, *mqtt, route_pool_.get_executor(),
                                                                  mqtt_head::session_options{}, hub::log::get("mqtt"))
                     : std::nullopt),
      amqp_ctx_(amqp ? std::optional<amqp_head::session_context>(std::in_place, *amqp, route_pool_.get_executor(),
                                                                  amqp_head::default_options(*amqp), hub::log::get("amqp"))
                     : std::nullopt),
      session_ctx_{r, c, route_pool_.get_executor(), opts_.http, hub::log::get("http"), mqtt_ctx_ ? &*mqtt_ctx_ : nullptr,
                   amqp_ctx_ ? &*amqp_ctx_ : nullptr} {
  // Registered now, before hubd prints "hubd ready": a SIGTERM that arrives before run() starts
  // waiting is queued by the signal_set instead of killing the process.
  signals_.emplace(workers_[0]->ioc, SIGINT, SIGTERM);
  bind_all();
}

bool listeners::impl::try_bind(const asio::ip::address& address, const listen_port& port, error_code& ec) {
  auto& w = *workers_[acceptors_.size() % workers_.size()];
  auto acceptor = std::make_unique<tcp::acceptor>(w.ioc);
  const tcp::endpoint ep(address, port.port);
  acceptor->open(ep.protocol(), ec);
  if (ec) return false;
  acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  // "::" serves IPv4 too (as v4-mapped addresses) unless the system forces v6-only.
  if (address.is_v6()) acceptor->set_option(asio::ip::v6_only(false), ec);
  ec.clear();
  acceptor->bind(ep, ec);
  if (ec) return false;
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return false;
  const tcp::endpoint local = acceptor->local_endpoint(ec);
  if (ec) return false;

  // Two names on one port ("--https-port 8443 --mqtt-port 8443") share one acceptor.
  endpoints_.push_back(bound_endpoint{port.name, address.to_string(), local.port()});
  acceptors_.push_back(std::move(acceptor));
  return true;
}

void listeners::impl::bind_all() {
  // Merge names that share a port: a second bind of the same port would fail.
  std::vector<listen_port> ports;
  for (const listen_port& p : opts_.ports) {
    auto same = std::find_if(ports.begin(), ports.end(), [&](const listen_port& q) { return q.port == p.port && p.port != 0; });
    if (same != ports.end()) {
      same->name += "+" + p.name;
    } else {
      ports.push_back(p);
    }
  }

  std::vector<std::string> addresses = opts_.addresses;
  if (addresses.empty()) {
    if (ipv6_available()) {
      addresses.push_back("::");
    } else {
      log_->info("IPv6 is not available; listening on 0.0.0.0");
      addresses.push_back("0.0.0.0");
    }
  }
  for (const std::string& text : addresses) {
    error_code ec;
    const auto address = asio::ip::make_address(text, ec);
    if (ec) throw startup_error(fmt::format("cannot listen on {}: not an IP address", text));
    for (const listen_port& port : ports) {
      if (try_bind(address, port, ec)) continue;
      std::string reason = lower_first(ec.message());
      if (ec == asio::error::access_denied && port.port < 1024)
        reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
      if (ec == boost::system::errc::address_not_available) reason += " (no interface has this address)";
      throw startup_error(fmt::format("cannot listen on {}: {}", endpoint_text(tcp::endpoint(address, port.port)), reason));
    }
  }
}

void listeners::impl::start_accepting() {
  for (std::size_t i = 0; i < acceptors_.size(); ++i) {
    tcp::acceptor* acceptor = acceptors_[i].get();
    std::string name = endpoints_[i].to_string();
    asio::co_spawn(acceptor->get_executor(), accept_loop(acceptor, name), [log = log_, name](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log->error("listener {} failed: {}", name, ex.what());
      }
    });
  }
}

asio::awaitable<void> listeners::impl::accept_loop(tcp::acceptor* acceptor, std::string name) {
  asio::steady_timer backoff(acceptor->get_executor());
  for (;;) {
    // Accept straight onto the next worker's io_context: the connection stays there.
    worker* w = workers_[next_worker_++ % workers_.size()].get();
    auto [ec, socket] = co_await acceptor->async_accept(w->ioc, asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
    if (ec) {
      // Out of file descriptors (EMFILE/ENFILE) and the like: the pending connection stays in the
      // backlog and accept() would fail again at once, so back off instead of spinning, and keep
      // trying: descriptors come back as connections close.
      std::uint64_t suppressed = 0;
      if (accept_failed_log_.allow(suppressed))
        log_->warn("{}: accept failed: {} (and {} more failures not logged); retrying every 100 ms", name,
                   ec.message(), suppressed);
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    admission::ticket ticket;
    if (!admit(socket, ticket)) continue;
    const std::uint64_t id = ++next_connection_id_;
    auto executor = socket.get_executor();
    asio::co_spawn(executor, run_connection(w, std::move(socket), id, std::move(ticket)), [log = log_, id](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        // A bug, not a peer's doing: the session ends, the server goes on.
        log->error("connection {}: session failed: {}", id, ex.what());
      }
    });
  }
}

// The connection caps, checked before any TLS work: a refused connection is reset (SO_LINGER 0:
// no FIN handshake, no TIME_WAIT here) and costs nothing more. Logged at most every 10 s.
template <class Socket>
bool listeners::impl::admit(Socket& socket, admission::ticket& ticket) {
  error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) {
    socket.close(ec);  // already gone
    return false;
  }
  const std::string address = address_text(peer);
  const admission_verdict verdict = admission_.admit(address, ticket);
  if (verdict == admission_verdict::admitted) return true;
  socket.set_option(asio::socket_base::linger(true, 0), ec);
  socket.close(ec);
  std::uint64_t suppressed = 0;
  if (refused_log_.allow(suppressed)) {
    const admission_limits& l = admission_.limits();
    log_->warn("connection from {} refused: {} (caps: {} unauthenticated, {} unauthenticated per address, {} per "
               "address; 0 = none); {} more refused since the last warning",
               address, to_string(verdict), l.max_unauthenticated, l.max_unauthenticated_per_ip, l.max_connections_per_ip,
               suppressed);
  }
  return false;
}

namespace {

// Outside the coroutine, so that its temporaries (endpoints, strings) are not in its frame.
connection_info describe(tcp::socket& socket, std::uint64_t id) {
  connection_info conn;
  conn.id = id;
  error_code ec;
  conn.peer = endpoint_text(socket.remote_endpoint(ec));
  conn.local = endpoint_text(socket.local_endpoint(ec));
  socket.set_option(tcp::no_delay(true), ec);
  return conn;
}

}  // namespace

asio::awaitable<void> listeners::impl::run_connection(worker* w, tcp::socket socket, std::uint64_t id,
                                                      admission::ticket ticket) {
  connection_info conn = describe(socket, id);
  tls_socket tls(std::move(socket), tls_.native_handle());
  registration reg(*w, tls.socket());
  if (w->closing) co_return;  // accepted while shutting down
  log_->debug("connection {} from {} on {} accepted", conn.id, conn.peer, conn.local);
  // Until it authenticates, the connection lives at most auth_timeout. The timer is on the heap
  // and freed once the connection authenticates (an idle device holds a null pointer here). The
  // handler runs on this thread; while the timer exists, so does this frame.
  std::shared_ptr<asio::steady_timer> auth_deadline;
  if (opts_.limits.auth_timeout.count() > 0) {
    auth_deadline = std::make_shared<asio::steady_timer>(tls.socket().get_executor());
    auth_deadline->expires_after(opts_.limits.auth_timeout);
    auth_deadline->async_wait([this, timer = std::weak_ptr<asio::steady_timer>(auth_deadline), &ticket, &reg,
                               &conn](const error_code& ec) {
      if (ec || timer.expired() || ticket.is_authenticated()) return;
      std::uint64_t suppressed = 0;
      if (auth_timeout_log_.allow(suppressed))
        log_->info("connection {} from {}: not authenticated within {} s; closing ({} more since the last such line)",
                   conn.id, conn.peer, opts_.limits.auth_timeout.count(), suppressed);
      reg.close();
    });
  }
  conn.on_authenticated = [&ticket, &auth_deadline] {
    ticket.authenticated();
    auth_deadline.reset();  // cancels the wait; its handler finds the timer gone
  };

  // Protocol dispatch right here, not in a coroutine of its own: every frame on the way down to
  // the session's idle wait stays allocated for as long as the connection lives (see
  // docs/benchmarks.md, "Memory per idle TLS connection").
  std::string first;
  const bool detected = co_await detect_in_time(tls, first, conn);
  const std::uint8_t kind = detected ? static_cast<std::uint8_t>(first[0]) : 0;
  tls_transport transport(tls);
  if (!detected) {
    // closed (logged where worth it)
  } else if (kind == mqtt_connect_byte && !mqtt_ctx_) {
    log_->info("connection {} from {}: MQTT is not served; closing", conn.id, conn.peer);
    tls.send_close_notify();
  } else if (kind == mqtt_connect_byte) {
    const mqtt_head::connection_info info{conn.id, conn.peer, conn.on_authenticated};
    co_await mqtt_head::run_session(transport, first, *mqtt_ctx_, info);  // takes `first`, frees it
    // the MQTT session closed the socket
  } else if (std::string_view(first).starts_with("AMQP") && !amqp_ctx_) {
    log_->info("connection {} from {}: AMQP is not served; closing", conn.id, conn.peer);
    tls.send_close_notify();
  } else if (std::string_view(first).starts_with("AMQP")) {
    const amqp_head::connection_info info{conn.id, conn.peer, "amqp", conn.on_authenticated};
    co_await amqp_head::run_session(transport, first, *amqp_ctx_, info);
    // the AMQP session closed the socket
  } else {
    co_await serve_http(tls, reg, first, conn);
  }
  log_->debug("connection {} from {} closed", conn.id, conn.peer);
}

// The TLS handshake, then the first bytes (into `first`), which decide the protocol. False (logged
// where worth it) when the connection should just close. Bounded by the caller.
asio::awaitable<bool> listeners::impl::handshake_and_detect(tls_socket& tls, std::string& first,
                                                            const connection_info& conn) {
  const error_code hs_ec = co_await tls.handshake();
  if (hs_ec) {
    if (!peer_went_away(hs_ec)) log_->info("connection {} from {}: TLS handshake failed: {}", conn.id, conn.peer, hs_ec.message());
    co_return false;
  }
  // TLS hides the bytes from MSG_PEEK, so read the first ones into the buffer that the protocol
  // session then starts from.
  char chunk[512];
  for (;;) {
    error_code ec;
    const std::size_t n = co_await tls.read_some(asio::buffer(chunk), ec);
    if (ec) co_return false;
    first.append(chunk, n);
    // "AMQP" is the only protocol header that needs more than one byte to tell apart.
    const std::string_view seen = first;
    if (seen.empty()) continue;
    if (seen[0] != 'A' || seen.size() >= 4 || !std::string_view("AMQP").starts_with(seen)) co_return true;
  }
}

// handshake_and_detect within the handshake budget, which also covers the first bytes of the
// protocol. A coroutine of its own so that the timer and the race's state live only while they
// are needed, not in the frame that then holds the connection for its whole life.
asio::awaitable<bool> listeners::impl::detect_in_time(tls_socket& tls, std::string& first, const connection_info& conn) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(tls.socket().get_executor());
  deadline.expires_after(opts_.handshake_timeout);
  asio::awaitable<bool> detect = handshake_and_detect(tls, first, conn);
  asio::awaitable<void> expiry = deadline.async_wait(asio::use_awaitable);
  // Named, not a temporary inside the co_await (GCC 12, src/server/README.md).
  asio::awaitable<std::variant<bool, std::monostate>> race = std::move(detect) || std::move(expiry);
  const std::variant<bool, std::monostate> outcome = co_await std::move(race);
  if (outcome.index() == 1) {
    // A flood of silent connections would log one line each: at most one per 10 s.
    std::uint64_t suppressed = 0;
    if (timeout_log_.allow(suppressed))
      log_->info("connection {} from {}: no TLS handshake and protocol header within {} s ({} more since the last "
                 "such line)",
                 conn.id, conn.peer, opts_.handshake_timeout.count(), suppressed);
    co_return false;
  }
  co_return std::get<0>(outcome);
}

// HTTP (and WebSockets after an upgrade) run on Beast, so the established TLS connection moves
// into an asio::ssl::stream: the SSL object is adopted as it is, with Asio's buffers. HTTP
// connections are few (the service SDKs); the lean path is for the many device connections.
asio::awaitable<void> listeners::impl::serve_http(tls_socket& tls, registration& reg, const std::string& first,
                                                  const connection_info& conn) {
  tls_stream stream(beast::tcp_stream(std::move(tls.socket())), tls.release());
  auto& tcp_layer = beast::get_lowest_layer(stream);
  reg.move_to(tcp_layer.socket());
  beast::flat_buffer buffer;
  buffer.commit(asio::buffer_copy(buffer.prepare(first.size()), asio::buffer(first)));
  const session_end end = co_await run_http_session(stream, buffer, session_ctx_, conn);
  if (end == session_end::we_close && tcp_layer.socket().is_open() && !reg.closing()) {
    // A polite close_notify, bounded: a peer that never answers must not hold the frame.
    tcp_layer.expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
  }
}

void listeners::impl::request_stop() {
  {
    std::scoped_lock lock(stop_mutex_);
    stop_requested_ = true;
  }
  stop_cv_.notify_all();
}

void listeners::impl::close_everything() {
  // Acceptors first, each on its own executor, so no new connection arrives.
  for (auto& acceptor : acceptors_) {
    asio::post(acceptor->get_executor(), [a = acceptor.get()] {
      error_code ec;
      a->close(ec);
    });
  }
  if (signals_) asio::post(signals_->get_executor(), [s = &*signals_] {
      error_code ec;
      s->cancel(ec);
    });
  // Then every live connection, on its own worker thread (the only thread that touches it).
  for (auto& w : workers_) {
    asio::post(w->ioc, [w = w.get()] {
      w->closing = true;
      for (tcp::socket* s : w->connections) {
        error_code ec;
        s->shutdown(tcp::socket::shutdown_both, ec);
        s->close(ec);
      }
    });
    // Without the guard, run() returns once the last session frame is gone.
    w->work.reset();
  }
}

listeners::listeners(listener_options options, const http::router& router, const clock& clk,
                     const mqtt_head::services* mqtt, const amqp_head::services* amqp)
    : impl_(std::make_unique<impl>(std::move(options), router, clk, mqtt, amqp)) {}

listeners::~listeners() {
  // run() was never called or already returned: nothing runs, the members clean up.
  stop();
}

const std::vector<bound_endpoint>& listeners::endpoints() const noexcept { return impl_->endpoints_; }

void listeners::stop() { impl_->request_stop(); }

void listeners::run() {
  impl& self = *impl_;
  if (std::exchange(self.ran_, true)) return;
  self.signals_->async_wait([&self](const error_code& ec, int sig) {
    if (ec) return;
    self.log_->info("shutting down ({})", sig == SIGINT ? "SIGINT" : "SIGTERM");
    self.request_stop();
  });
  self.start_accepting();

  std::mutex done_mutex;
  std::condition_variable done_cv;
  std::size_t running = self.workers_.size();
  for (auto& w : self.workers_) {
    w->thread = std::thread([&, w = w.get()] {
      for (;;) {
        try {
          w->ioc.run();
          break;
        } catch (const std::exception& e) {
          // Handlers do not throw by design; if one does, keep the worker alive.
          self.log_->error("worker: unexpected exception: {}", e.what());
        }
      }
      std::scoped_lock lock(done_mutex);
      --running;
      done_cv.notify_all();
    });
  }

  {
    std::unique_lock lock(self.stop_mutex_);
    self.stop_cv_.wait(lock, [&] { return self.stop_requested_; });
  }
  self.log_->info("stopping listeners and closing connections");
  self.close_everything();
  if (self.opts_.on_stopping) self.opts_.on_stopping();

  {
    std::unique_lock lock(done_mutex);
    if (!done_cv.wait_for(lock, self.opts_.shutdown_grace, [&] { return running == 0; })) {
      self.log_->warn("sessions still busy after {} s; stopping them", self.opts_.shutdown_grace.count());
      for (auto& w : self.workers_) w->ioc.stop();
    }
  }
  for (auto& w : self.workers_) w->thread.join();
  self.route_pool_.join();
}

}  // namespace hub::server
