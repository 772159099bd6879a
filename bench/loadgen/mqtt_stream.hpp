#pragma once
// The generator's MQTT connection: a TLS or plain TCP stream and a packet reader over it, shared
// by the scenarios in loadgen.cpp and methods.cpp.
#include "codec/mqtt/codec.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <cctype>
#include <optional>
#include <string>
#include <utility>

namespace loadgen {
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// A client TLS context that trusts `ca_file`, or the system's roots without one.
inline std::optional<ssl::context> client_tls(const std::string& ca_file) {
  std::optional<ssl::context> tls(std::in_place, ssl::context::tls_client);
  if (!ca_file.empty()) {
    tls->load_verify_file(ca_file);
  } else {
    tls->set_default_verify_paths();
  }
  return tls;
}

// A stream that is TLS or plain TCP.
class stream {
 public:
  stream(asio::io_context& ioc, ssl::context* tls) : socket_(ioc) {
    if (tls != nullptr) tls_.emplace(socket_, *tls);
  }
  asio::awaitable<boost::system::error_code> connect(const tcp::endpoint& ep, const std::string& sni) {
    auto [ec] = co_await socket_.async_connect(ep, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return ec;
    socket_.set_option(tcp::no_delay(true));
    if (!tls_) co_return ec;
    if (!sni.empty() && !std::isdigit(static_cast<unsigned char>(sni[0]))) {
      SSL_set_tlsext_host_name(tls_->native_handle(), sni.c_str());
    }
    tls_->set_verify_mode(ssl::verify_peer);
    auto [hec] = co_await tls_->async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    co_return hec;
  }
  asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    if (tls_) {
      auto [ec, n] = co_await tls_->async_read_some(b, asio::as_tuple(asio::use_awaitable));
      co_return std::pair{ec, n};
    }
    auto [ec, n] = co_await socket_.async_read_some(b, asio::as_tuple(asio::use_awaitable));
    co_return std::pair{ec, n};
  }
  asio::awaitable<boost::system::error_code> write(const std::string& bytes) {
    if (tls_) {
      auto [ec, n] = co_await asio::async_write(*tls_, asio::buffer(bytes), asio::as_tuple(asio::use_awaitable));
      co_return ec;
    }
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(bytes), asio::as_tuple(asio::use_awaitable));
    co_return ec;
  }
  void close() {
    boost::system::error_code ec;
    socket_.close(ec);
  }

 private:
  tcp::socket socket_;
  std::optional<ssl::stream<tcp::socket&>> tls_;
};

// Reads MQTT packets from a stream.
class packet_reader {
 public:
  asio::awaitable<std::optional<hub::mqtt::packet>> next(stream& s) {
    for (;;) {
      if (!buf_.empty()) {
        auto r = hub::mqtt::decode({buf_.data(), buf_.size()});
        if (r.st == hub::mqtt::decode_result::status::ok) {
          buf_.erase(0, r.consumed);
          co_return std::move(r.pkt);
        }
        if (r.st == hub::mqtt::decode_result::status::error) co_return std::nullopt;
      }
      char tmp[16384];
      auto [ec, n] = co_await s.read_some(asio::buffer(tmp));
      if (ec) co_return std::nullopt;
      buf_.append(tmp, n);
    }
  }

 private:
  std::string buf_;
};

}  // namespace loadgen
