// The only TU of the server that speaks HTTP as a client (Beast).
#include "server/webhook_client.hpp"

#include "server/files.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>

namespace hub::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr std::chrono::seconds exchange_timeout{30};

class https_client final : public routing::webhook_transport {
 public:
  https_client(const routing::webhook_endpoint& ep, const std::filesystem::path& base)
      : ep_(ep), tls_(ssl::context::tls_client) {
    SSL_CTX_set_min_proto_version(tls_.native_handle(), TLS1_2_VERSION);
    error_code ec;
    std::string ca;
    if (ep.ca_file.empty()) {
      tls_.set_default_verify_paths(ec);
    } else {
      const std::filesystem::path p = std::filesystem::path(ep.ca_file).is_absolute() ? std::filesystem::path(ep.ca_file)
                                                                                      : base / ep.ca_file;
      ca = p.string();
      tls_.load_verify_file(ca, ec);
    }
    if (ec)
      throw startup_error(fmt::format("webhook endpoint '{}': cannot load CA certificates {}: {}", ep.name,
                                      ca.empty() ? "(system store)" : ca, ec.message()));
    tls_.set_verify_mode(ssl::verify_peer);
    tls_.set_verify_callback(ssl::host_name_verification(ep.host));
    host_header_ = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
    if (ep.port != 443) host_header_ += ":" + std::to_string(ep.port);
  }

  routing::webhook_reply post(const routing::webhook_request& request) override {
    bhttp::request<bhttp::string_body> req;
    req.method(bhttp::verb::post);
    req.target(ep_.target);
    req.version(11);
    req.set(bhttp::field::host, host_header_);
    req.set(bhttp::field::user_agent, "hubd-webhook/0.1");
    for (const auto& [k, v] : ep_.headers) req.set(k, v);
    for (const auto& [k, v] : request.headers) req.set(k, v);
    req.set(bhttp::field::content_type, "application/json; charset=utf-8");
    req.body() = request.body;
    req.keep_alive(false);
    req.prepare_payload();

    routing::webhook_reply reply{0, "cancelled"};
    ioc_.restart();
    if (cancelled_.load()) return reply;
    asio::co_spawn(ioc_, exchange(std::move(req), reply), asio::detached);
    ioc_.run();
    return reply;
  }

  void cancel() override {
    cancelled_.store(true);
    ioc_.stop();
  }

 private:
  asio::awaitable<void> exchange(bhttp::request<bhttp::string_body> req, routing::webhook_reply& reply) {
    try {
      co_await exchange_inner(req, reply);
    } catch (const std::exception& e) {
      reply = {0, e.what()};
    }
  }

  asio::awaitable<void> exchange_inner(bhttp::request<bhttp::string_body>& req, routing::webhook_reply& reply) {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    auto [rec, results] =
        co_await resolver.async_resolve(ep_.host, std::to_string(ep_.port), asio::as_tuple(asio::use_awaitable));
    if (rec) {
      reply = {0, fmt::format("cannot resolve {}: {}", ep_.host, rec.message())};
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(executor, tls_);
    error_code not_ip;
    asio::ip::make_address(ep_.host, not_ip);
    if (not_ip) SSL_set_tlsext_host_name(stream.native_handle(), ep_.host.c_str());
    auto& tcp_layer = beast::get_lowest_layer(stream);
    tcp_layer.expires_after(exchange_timeout);
    auto [cec, connected] = co_await tcp_layer.async_connect(results, asio::as_tuple(asio::use_awaitable));
    if (cec) {
      reply = {0, fmt::format("cannot connect: {}", cec.message())};
      co_return;
    }
    auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) {
      std::string reason = hec.message();
      const long verify = SSL_get_verify_result(stream.native_handle());
      if (verify != X509_V_OK) reason = X509_verify_cert_error_string(verify);
      reply = {0, fmt::format("TLS handshake failed: {}", reason)};
      co_return;
    }
    auto [wec, wn] = co_await bhttp::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (wec) {
      reply = {0, fmt::format("sending failed: {}", wec.message())};
      co_return;
    }
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024);
    auto [rdec, rdn] = co_await bhttp::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rdec) {
      reply = {0, fmt::format("reading the answer failed: {}", rdec.message())};
      co_return;
    }
    reply.status = static_cast<int>(parser.get().result_int());
    reply.error = parser.get().body().substr(0, 200);
    tcp_layer.expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));  // best effort
  }

  routing::webhook_endpoint ep_;
  ssl::context tls_;
  std::string host_header_;
  asio::io_context ioc_{1};
  std::atomic<bool> cancelled_{false};
};

}  // namespace

std::unique_ptr<routing::webhook_transport> make_webhook_client(const routing::webhook_endpoint& ep,
                                                                const std::filesystem::path& base) {
  return std::make_unique<https_client>(ep, base);
}

}  // namespace hub::server
