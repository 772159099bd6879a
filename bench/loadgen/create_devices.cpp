// Creates the load generator's devices through hubd's registry REST API (bulk import, 100 per
// request, as the Azure SDK pages them) with keys chosen here, and writes "id key" lines.
#include "create_devices.hpp"

#include "base/crypto.hpp"
#include "domain/auth/sas.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <stdexcept>

namespace loadgen {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string connection_string_field(const std::string& cs, const std::string& name) {
  const auto key = name + "=";
  auto pos = cs.find(key);
  if (pos == std::string::npos) throw std::runtime_error("connection string lacks " + name);
  pos += key.size();
  const auto end = cs.find(';', pos);
  return cs.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

void create_devices(const create_options& o) {
  const auto host = connection_string_field(o.connection_string, "HostName");
  const auto policy = connection_string_field(o.connection_string, "SharedAccessKeyName");
  const auto key = connection_string_field(o.connection_string, "SharedAccessKey");
  asio::io_context ioc;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.load_verify_file(o.ca_file);
  beast::ssl_stream<beast::tcp_stream> stream(ioc, tls);
  stream.set_verify_mode(asio::ssl::verify_peer);
  asio::ip::tcp::resolver resolver(ioc);
  beast::get_lowest_layer(stream).connect(resolver.resolve(o.address.empty() ? host : o.address, std::to_string(o.port)));
  stream.handshake(asio::ssl::stream_base::client);

  std::ofstream out(o.out_file);
  if (!out) throw std::runtime_error("cannot write " + o.out_file);
  for (std::size_t first = 0; first < o.count; first += 100) {
    const std::size_t n = std::min<std::size_t>(100, o.count - first);
    std::string body = "[";
    std::vector<std::pair<std::string, std::string>> made;
    for (std::size_t i = 0; i < n; ++i) {
      const auto id = fmt::format("{}{}", o.prefix, first + i);
      const auto k = hub::crypto::new_symmetric_key();
      made.emplace_back(id, k);
      body += fmt::format(R"({}{{"id":"{}","importMode":"create","status":"enabled","authentication":{{"type":"sas","symmetricKey":{{"primaryKey":"{}","secondaryKey":"{}"}}}}}})",
                          i ? "," : "", id, k, hub::crypto::new_symmetric_key());
    }
    body += "]";
    const auto expiry =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() +
        3600;
    http::request<http::string_body> req{http::verb::post, "/devices?api-version=2021-04-12", 11};
    req.set(http::field::host, host);
    req.set(http::field::authorization, hub::auth::make_sas_token(host, key, expiry, policy));
    req.set(http::field::content_type, "application/json; charset=utf-8");
    req.keep_alive(true);
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    if (res.result_int() != 200) {
      throw std::runtime_error(fmt::format("bulk create answered {}: {}", res.result_int(), res.body()));
    }
    for (const auto& [id, k] : made) out << id << ' ' << k << '\n';
  }
}

}  // namespace loadgen
