// The HTTP/1.1 session: Beast's parser is the codec, hub::http::router the logic. This TU only
// converts between the two and moves the blocking router call off the I/O thread.
// One of the two heavy TUs of the server (the other is listener.cpp).
#include "base/text.hpp"
#include "heads/http/router.hpp"
#include "heads/amqp/session.hpp"
#include "heads/mqtt/session.hpp"
#include "domain/certificates/peer_chain.hpp"
#include "server/session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>

namespace hub::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace websocket = boost::beast::websocket;
using boost::system::error_code;

namespace {

using beast_request = bhttp::request<bhttp::string_body>;
using beast_response = bhttp::response<bhttp::string_body>;

// The path without the query: log lines show where a request went, not its parameters.
std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

http::request to_hub_request(beast_request&& req) {
  http::request out;
  out.method = std::string(req.method_string());
  out.target = std::string(req.target());
  out.headers.reserve(std::distance(req.begin(), req.end()));
  for (const auto& field : req) out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  out.body = std::move(req.body());
  return out;
}

beast_response to_beast_response(http::response&& res, unsigned version, bool keep_alive, std::chrono::seconds idle) {
  beast_response out{static_cast<bhttp::status>(res.status), version};
  for (auto& [name, value] : res.headers) out.insert(name, value);
  out.body() = std::move(res.body);
  out.keep_alive(keep_alive);
  // Lets clients that honour the hint (Node >= 19) retire an idle pooled socket before we close it.
  if (keep_alive) out.set(bhttp::field::keep_alive, fmt::format("timeout={}", idle.count()));
  out.prepare_payload();
  return out;
}

bool is_websocket_upgrade(const bhttp::request_parser<bhttp::string_body>& parser) {
  const auto& req = parser.get();
  return req.method() == bhttp::verb::get && text::iequals(req[bhttp::field::upgrade], "websocket");
}

// GCC 12 miscompiles some coroutine shapes here: a co_spawned capturing lambda freed a corrupted
// capture, and a by-value message parameter moved inside `if (co_await ...)` was garbage. So the
// coroutines of this file take big objects by reference from a caller that co_awaits them (or,
// for the pool, by pointer), keep temporaries out of co_await expressions, and never co_await in
// a condition.

// One request's way to the router and back. The router runs on the route pool (authorisation and
// the domain calls block on storage); its answer is posted to the connection's executor, where
// the awaiting coroutine resumes. Most routes answer before route_async returns; a direct method
// answers when its device does (or times out), from whichever thread settles the call, and no
// thread waits for it meanwhile: 100 concurrent invocations hold no pool thread.
//
// Lifetime: the completion handler (it owns the suspended coroutine) is kept in `pending` until
// the answer comes. At shutdown, a call still waiting is settled by hubd main
// (methods::service::shutdown) before the io_contexts go, so the post finds its executor alive.
template <class Handler>
class pending_route {
 public:
  explicit pending_route(Handler h) : handler_(std::move(h)) {}

  // Hands `res` to the coroutine on its own executor; later calls are ignored.
  static void complete(const std::shared_ptr<pending_route>& self, http::response res) {
    if (self->done_.exchange(true)) return;
    auto ex = asio::get_associated_executor(self->handler_);
    asio::post(ex, [self, res = std::move(res)]() mutable { self->handler_(std::move(res)); });
  }

 private:
  Handler handler_;
  std::atomic<bool> done_{false};
};

struct route_initiation {
  template <class Handler>
  void operator()(Handler&& handler, const session_context* ctx, const http::request* req) const {
    using pending = pending_route<std::decay_t<Handler>>;
    auto p = std::make_shared<pending>(std::forward<Handler>(handler));
    asio::post(ctx->route_executor, [p, ctx, req] {
      try {
        ctx->router.route_async(*req, [p](http::response res) { pending::complete(p, std::move(res)); });
        return;
      } catch (const std::exception& e) {
        // The router promises not to throw; if it does, it is a bug: answer 500, keep serving.
        ctx->log->error("router threw on {} {}: {}", req->method, path_of(req->target), e.what());
      } catch (...) {
        ctx->log->error("router threw on {} {}", req->method, path_of(req->target));
      }
      pending::complete(p, http::error_response(make_error(errc::server_error, "internal error"), ctx->clk));
    });
  }
};

// `req` lives in the caller's frame, which waits here until the response is back on the
// connection's executor (the GCC 12 rule above: big objects by reference, nothing captured).
asio::awaitable<http::response> route_off_thread(const session_context& ctx, const http::request& req) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(http::response)>(route_initiation{},
                                                                                   asio::use_awaitable, &ctx, &req);
}

// Writes one response with the request timeout. False when the connection is no longer usable.
asio::awaitable<bool> write_response(tls_stream& stream, beast_response& res, const session_context& ctx) {
  beast::get_lowest_layer(stream).expires_after(ctx.limits.request_timeout);
  auto [ec, n] = co_await bhttp::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
  co_return !ec;
}

// An error answer for a request we could not read whole; the connection closes after it because
// the rest of the request is still on the wire.
beast_response rejection(unsigned version, const error& e, const session_context& ctx) {
  return to_beast_response(http::error_response(e, ctx.clk), version ? version : 11, false, {});
}

// "Lingering close", as nginx does it: after refusing a request whose body is still arriving,
// read and drop what comes (bounded in bytes and time) before closing. Closing with unread
// bytes makes the kernel send a reset, and a client still writing its body (Node does) then
// sees ECONNRESET instead of our answer. For at most 5 s, or the request timeout if shorter.
asio::awaitable<void> drain(tls_stream& stream, beast::flat_buffer& buffer, std::chrono::seconds limit) {
  constexpr std::size_t max_bytes = 16 * 1024 * 1024;
  beast::get_lowest_layer(stream).expires_after(std::min<std::chrono::seconds>(limit, std::chrono::seconds(5)));
  buffer.consume(buffer.size());
  for (std::size_t total = 0; total < max_bytes;) {
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(64 * 1024), asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    total += n;
    buffer.consume(buffer.size());
  }
}

// Answers a request we could not read whole, then drains the rest of it.
asio::awaitable<void> refuse(tls_stream& stream, beast::flat_buffer& buffer, beast_response& res,
                             const session_context& ctx) {
  const bool written = co_await write_response(stream, res, ctx);
  if (written) co_await drain(stream, buffer, ctx.limits.request_timeout);
}

// The path IoT Hub serves WebSockets on, for MQTT (subprotocol "mqtt") and AMQP ("AMQPWSB10").
constexpr std::string_view websocket_path = "/$iothub/websocket";

// True if the comma-separated Sec-WebSocket-Protocol list offers `protocol`.
bool offers_subprotocol(std::string_view offered, std::string_view protocol) {
  for (std::string_view item : text::split(offered, ',')) {
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (text::iequals(item, protocol)) return true;
  }
  return false;
}

using ws_stream = websocket::stream<tls_stream&>;

// MQTT over WebSockets (MqttWs) and AMQP over WebSockets (AmqpWs): the protocol's bytes in
// binary messages, split anywhere. One adapter for both heads (their transports have one shape).
class ws_transport final : public mqtt_head::transport, public amqp_head::transport {
 public:
  explicit ws_transport(ws_stream& ws) : ws_(ws) {}

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    auto [e, n] = co_await ws_.async_read_some(buf, asio::as_tuple(asio::use_awaitable));
    // A WebSocket close frame is the device hanging up, as EOF is on TLS.
    ec = e == websocket::error::closed ? error_code(asio::error::eof) : e;
    co_return n;
  }
  asio::awaitable<void> write(asio::const_buffer buf, error_code& ec) override {
    auto [e, n] = co_await ws_.async_write(buf, asio::as_tuple(asio::use_awaitable));
    ec = e;
  }
  void close() noexcept override {
    auto& tcp = beast::get_lowest_layer(ws_);
    error_code ec;
    tcp.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    tcp.close();
  }
  certificates::client_chain peer_certificates() const override {
    return certificates::client_chain_of(ws_.next_layer().native_handle());
  }
  std::string_view name() const noexcept override { return "mqtt-ws"; }
  asio::any_io_executor executor() override { return ws_.get_executor(); }

 private:
  ws_stream& ws_;
};

// Completes the upgrade (101 with the chosen Sec-WebSocket-Protocol, which the ws client insists
// on). False (logged) when it fails.
asio::awaitable<bool> accept_upgrade(ws_stream& ws, const bhttp::request<bhttp::string_body>& req,
                                     std::string_view subprotocol, const session_context& ctx, const connection_info& conn) {
  ws.set_option(websocket::stream_base::decorator([subprotocol](websocket::response_type& res) {
    res.set(bhttp::field::sec_websocket_protocol, subprotocol);
  }));
  ws.binary(true);
  // A message holds one or a few packets or frames; each head bounds their size itself.
  ws.read_message_max(4 * 1024 * 1024);
  auto& tcp_layer = beast::get_lowest_layer(ws);
  tcp_layer.expires_after(ctx.limits.request_timeout);
  auto [ec] = co_await ws.async_accept(req, asio::as_tuple(asio::use_awaitable));
  tcp_layer.expires_never();
  if (ec) {
    ctx.log->info("connection {} from {}: WebSocket upgrade failed: {}", conn.id, conn.peer, ec.message());
    co_return false;
  }
  co_return true;
}

// MqttWs: the MQTT session over the WebSocket. The caller owns `stream` and co_awaits this.
asio::awaitable<session_end> serve_mqtt_over_websocket(tls_stream& stream, const bhttp::request<bhttp::string_body>& req,
                                                       const session_context& ctx, const connection_info& conn) {
  ws_stream ws(stream);
  const bool upgraded = co_await accept_upgrade(ws, req, "mqtt", ctx, conn);
  if (!upgraded) co_return session_end::peer_closed;
  ws_transport transport(ws);
  const mqtt_head::connection_info info{conn.id, conn.peer, conn.on_authenticated};
  std::string first;  // nothing read ahead: the WebSocket stream starts with the CONNECT
  co_await mqtt_head::run_session(transport, first, *ctx.mqtt, info);
  co_return session_end::peer_closed;  // the MQTT session closed the socket
}

// AmqpWs: the AMQP session over the WebSocket. The caller owns `stream` and co_awaits this.
asio::awaitable<session_end> serve_amqp_over_websocket(tls_stream& stream, const bhttp::request<bhttp::string_body>& req,
                                                       const session_context& ctx, const connection_info& conn) {
  ws_stream ws(stream);
  const bool upgraded = co_await accept_upgrade(ws, req, "AMQPWSB10", ctx, conn);
  if (!upgraded) co_return session_end::peer_closed;
  ws_transport transport(ws);
  const amqp_head::connection_info info{conn.id, conn.peer, "amqp-ws", conn.on_authenticated};
  co_await amqp_head::run_session(transport, {}, *ctx.amqp, info);
  co_return session_end::peer_closed;  // the AMQP session closed the socket
}

beast_response too_large(unsigned version, const session_context& ctx) {
  const std::string text = fmt::format("Request body exceeds the limit of {} bytes", ctx.limits.max_body_bytes);
  return rejection(version, make_error(errc::message_too_large, text), ctx);
}

}  // namespace

asio::awaitable<session_end> run_http_session(tls_stream& stream, beast::flat_buffer& buffer, const session_context& ctx,
                                              const connection_info& conn) {
  auto& tcp_layer = beast::get_lowest_layer(stream);
  // What the client presented in the handshake, for X.509 devices on the device API. Read once:
  // the connection's certificates cannot change (no renegotiation, no session resumption).
  std::optional<certificates::client_chain> peer_chain;
  for (std::uint64_t n_requests = 0;; ++n_requests) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(ctx.limits.max_header_bytes));
    parser.body_limit(ctx.limits.max_body_bytes);

    // The first request starts within the handshake budget (bytes are already buffered); later
    // ones may wait for the idle timeout.
    tcp_layer.expires_after(ctx.limits.idle_timeout);
    auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      co_return session_end::peer_closed;
    }
    if (ec == beast::error::timeout) {
      ctx.log->debug("connection {}: idle for {} s after {} requests; closing", conn.id,
                     ctx.limits.idle_timeout.count(), n_requests);
      co_return session_end::peer_closed;  // the socket is already closed by the timeout
    }
    if (ec == bhttp::error::body_limit) {
      ctx.log->info("connection {}: request body over {} bytes", conn.id, ctx.limits.max_body_bytes);
      beast_response rejected = too_large(parser.get().version(), ctx);
      co_await refuse(stream, buffer, rejected, ctx);
      co_return session_end::we_close;
    }
    if (ec == bhttp::error::header_limit) {
      ctx.log->info("connection {}: request header over {} bytes", conn.id, ctx.limits.max_header_bytes);
      beast_response rejected = rejection(11, make_error(errc::argument_invalid, "Request header too large"), ctx);
      co_await refuse(stream, buffer, rejected, ctx);
      co_return session_end::we_close;
    }
    if (ec) {
      if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {  // any HTTP parse error
        ctx.log->info("connection {} from {}: malformed HTTP request: {}", conn.id, conn.peer, ec.message());
        beast_response rejected = rejection(11, make_error(errc::argument_invalid, "Malformed HTTP request"), ctx);
        co_await refuse(stream, buffer, rejected, ctx);
        co_return session_end::we_close;
      }
      ctx.log->info("connection {} from {}: read failed: {}", conn.id, conn.peer, ec.message());
      co_return session_end::peer_closed;
    }

    if (is_websocket_upgrade(parser)) {
      const std::string_view offered = parser.get()[bhttp::field::sec_websocket_protocol];
      const bool iothub_path = path_of(parser.get().target()) == websocket_path;
      // The client waits for 101 before it sends a frame; bytes already here would be lost.
      if (iothub_path && ctx.mqtt && offers_subprotocol(offered, "mqtt") && buffer.size() == 0) {
        co_return co_await serve_mqtt_over_websocket(stream, parser.get(), ctx, conn);
      }
      if (iothub_path && ctx.amqp && offers_subprotocol(offered, "AMQPWSB10") && buffer.size() == 0) {
        co_return co_await serve_amqp_over_websocket(stream, parser.get(), ctx, conn);
      }
      ctx.log->info("connection {}: WebSocket upgrade to {} ({}) is not served", conn.id, path_of(parser.get().target()),
                    offered);
      beast_response rejected = rejection(
          parser.get().version(), make_error(errc::invalid_operation, "WebSocket connections are not supported yet"), ctx);
      co_await refuse(stream, buffer, rejected, ctx);
      co_return session_end::we_close;
    }

    // A client that waits for "100 Continue" before sending the body (curl does, for large
    // bodies) would otherwise stall until its own timeout.
    if (text::iequals(parser.get()[bhttp::field::expect], "100-continue")) {
      bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, parser.get().version()};
      tcp_layer.expires_after(ctx.limits.request_timeout);
      auto [cec, cn] = co_await bhttp::async_write(stream, cont, asio::as_tuple(asio::use_awaitable));
      if (cec) co_return session_end::peer_closed;
    }

    tcp_layer.expires_after(ctx.limits.request_timeout);
    auto [bec, bn] = co_await bhttp::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (bec == bhttp::error::body_limit) {
      ctx.log->info("connection {}: request body over {} bytes", conn.id, ctx.limits.max_body_bytes);
      beast_response rejected = too_large(parser.get().version(), ctx);
      co_await refuse(stream, buffer, rejected, ctx);
      co_return session_end::we_close;
    }
    if (bec && bec.category() == bhttp::make_error_code(bhttp::error::bad_chunk).category() &&
        bec != bhttp::error::end_of_stream && bec != bhttp::error::partial_message) {
      // A malformed body (a bad chunk size): IoT Hub's 400, as for malformed headers, instead of
      // a close without an answer (found by tests/compat/bad_input_http).
      ctx.log->info("connection {} from {}: malformed HTTP request body: {}", conn.id, conn.peer, bec.message());
      beast_response rejected = rejection(parser.get().version(), make_error(errc::argument_invalid, "Malformed HTTP request"), ctx);
      co_await refuse(stream, buffer, rejected, ctx);
      co_return session_end::we_close;
    }
    if (bec) {
      ctx.log->info("connection {} from {}: reading the request body failed: {}", conn.id, conn.peer, bec.message());
      co_return session_end::peer_closed;
    }
    tcp_layer.expires_never();

    beast_request req = parser.release();
    const unsigned version = req.version();
    const bool keep_alive = req.keep_alive();
    const std::string method(req.method_string());
    const std::string path(path_of(req.target()));
    const auto started = std::chrono::steady_clock::now();

    http::request hub_req = to_hub_request(std::move(req));
    if (!peer_chain) peer_chain = certificates::client_chain_of(stream.native_handle());
    hub_req.client_certificates = &*peer_chain;
    http::response res = co_await route_off_thread(ctx, hub_req);

    const int status = res.status;
    if (res.authenticated && conn.on_authenticated) conn.on_authenticated();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    ctx.log->debug("connection {}: {} {} -> {} ({} ms)", conn.id, method, path, status, ms.count());

    beast_response out = to_beast_response(std::move(res), version, keep_alive, ctx.limits.idle_timeout);
    const bool written = co_await write_response(stream, out, ctx);
    if (!written) co_return session_end::peer_closed;
    if (!keep_alive) co_return session_end::we_close;
  }
}

}  // namespace hub::server
