#pragma once
// Internal to the server module: what the listener hands a protocol session once it has done the
// TLS handshake and looked at the first bytes. Heavy (Asio/Beast): include only from listener.cpp
// and the session .cpp files.
#include "base/clock.hpp"
#include "server/listener.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <spdlog/logger.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace hub::http {
class router;
}
namespace hub::mqtt_head {
struct session_context;
}
namespace hub::amqp_head {
struct session_context;
}

namespace hub::server {

// HTTP's stream: Asio's TLS stream, adopting the SSL object of a connection that the listener's
// tls_socket has already handshaken (protocol detection runs before HTTP is known).
using tls_stream = boost::asio::ssl::stream<boost::beast::tcp_stream>;

// Shared by every session; owned by listeners::impl, which outlives all sessions.
struct session_context {
  const http::router& router;
  const clock& clk;
  boost::asio::any_io_executor route_executor;  // the small pool for blocking domain calls
  http_limits limits;
  std::shared_ptr<spdlog::logger> log;
  const mqtt_head::session_context* mqtt = nullptr;  // MQTT over WebSockets; null: refused
  const amqp_head::session_context* amqp = nullptr;  // AMQP over WebSockets; null: refused
};

// One accepted connection, for log lines. Never holds credentials.
struct connection_info {
  std::uint64_t id = 0;
  std::string peer;   // "127.0.0.1:53712"
  std::string local;  // "127.0.0.2:443"
  // The connection authenticated (a request that proved a credential, or the CONNACK / CBS token
  // of MQTT or AMQP over WebSockets): the listener's admission ticket. Idempotent; on the
  // connection's thread. May be empty.
  std::function<void()> on_authenticated;
};

// How a session ended, so the caller knows whether a TLS close_notify is still worth sending.
enum class session_end { peer_closed, we_close };

// Serves HTTP/1.1 requests on `stream` until the peer closes, an error, or the idle timeout.
// `buffer` holds bytes already read for protocol detection. Runs on the connection's executor;
// each request is routed on ctx.route_executor and its response written back here, so the
// connection has exactly one writer. The caller co_awaits it directly and owns the stream.
boost::asio::awaitable<session_end> run_http_session(tls_stream& stream, boost::beast::flat_buffer& buffer,
                                                     const session_context& ctx, const connection_info& conn);

}  // namespace hub::server
