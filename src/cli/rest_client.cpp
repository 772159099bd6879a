// hubctl's HTTPS client: the only TU of hubctl that includes Asio/Beast.
#include "cli/rest_client.hpp"

#include "base/text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <fmt/format.h>
#include <openssl/ssl.h>

namespace hub::cli {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

std::string where(const rest_endpoint& ep) {
  const bool v6 = ep.host.find(':') != std::string::npos;
  return v6 ? fmt::format("[{}]:{}", ep.host, ep.port) : fmt::format("{}:{}", ep.host, ep.port);
}

std::string lower_first(std::string s) {
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z') s[0] = static_cast<char>(s[0] - 'A' + 'a');
  return s;
}

ssl::context make_client_context(const rest_endpoint& ep) {
  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  error_code ec;
  if (ep.ca_file.empty()) {
    ctx.set_default_verify_paths(ec);
  } else {
    ctx.load_verify_file(ep.ca_file, ec);
  }
  if (ec) throw cli_error(fmt::format("cannot load CA certificates {}: {}", ep.ca_file.empty() ? "(system store)" : ep.ca_file, ec.message()));
  ctx.set_verify_mode(ssl::verify_peer);
  ctx.set_verify_callback(ssl::host_name_verification(ep.host));
  return ctx;
}

asio::awaitable<rest_reply> exchange(const rest_endpoint& ep, ssl::context& tls, bhttp::request<bhttp::string_body> req,
                                     std::chrono::seconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), asio::as_tuple(asio::use_awaitable));
  if (rec) throw cli_error(fmt::format("cannot resolve {}: {}", ep.host, lower_first(rec.message())));

  beast::ssl_stream<beast::tcp_stream> stream(executor, tls);
  error_code not_ip;
  asio::ip::make_address(ep.host, not_ip);
  // SNI carries DNS names only; an IP literal is matched against the certificate's IP SANs.
  if (not_ip) SSL_set_tlsext_host_name(stream.native_handle(), ep.host.c_str());
  auto& tcp_layer = beast::get_lowest_layer(stream);
  tcp_layer.expires_after(timeout);
  auto [cec, connected] = co_await tcp_layer.async_connect(results, asio::as_tuple(asio::use_awaitable));
  if (cec) {
    std::string hint = cec == asio::error::connection_refused ? " (is hubd running? see --port)" : "";
    throw cli_error(fmt::format("cannot connect to {}: {}{}", where(ep), lower_first(cec.message()), hint));
  }
  auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
  if (hec) {
    std::string reason = hec.message();
    const long verify = SSL_get_verify_result(stream.native_handle());
    if (verify != X509_V_OK) reason = X509_verify_cert_error_string(verify);
    throw cli_error(fmt::format("TLS handshake with {} failed: {} (trust the hub's CA with --ca FILE or --data DIR)",
                                where(ep), reason));
  }

  auto [wec, wn] = co_await bhttp::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
  if (wec) throw cli_error(fmt::format("sending the request to {} failed: {}", where(ep), lower_first(wec.message())));

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);  // device lists can be long
  auto [rdec, rdn] = co_await bhttp::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
  if (rdec) throw cli_error(fmt::format("reading the reply from {} failed: {}", where(ep), lower_first(rdec.message())));

  rest_reply reply;
  auto res = parser.release();
  reply.status = static_cast<int>(res.result_int());
  for (const auto& field : res) reply.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  reply.body = std::move(res.body());

  tcp_layer.expires_after(std::chrono::seconds(2));
  co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));  // best effort
  co_return reply;
}

}  // namespace

std::optional<std::string_view> rest_reply::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (text::iequals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

rest_reply send_request(const rest_endpoint& ep, std::string_view method, std::string_view target,
                        const header_list& headers, std::string_view body, std::chrono::seconds timeout) {
  ssl::context tls = make_client_context(ep);

  bhttp::request<bhttp::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  // Host carries no port for 443, like the Azure SDKs send it.
  req.set(bhttp::field::host, ep.port == 443 ? ep.host : where(ep));
  req.set(bhttp::field::user_agent, "hubctl/0.1.0");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = std::string(body);
  req.keep_alive(false);
  req.prepare_payload();

  asio::io_context ioc;
  auto future = asio::co_spawn(ioc, exchange(ep, tls, std::move(req), timeout), asio::use_future);
  ioc.run();
  try {
    return future.get();
  } catch (const cli_error&) {
    throw;
  } catch (const boost::system::system_error& e) {
    throw cli_error(fmt::format("request to {} failed: {}", where(ep), e.code().message()));
  }
}

}  // namespace hub::cli
