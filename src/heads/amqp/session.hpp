#pragma once
// The AMQP head's connection over a byte stream: the TLS stream (AMQP detected after the
// handshake) or a WebSocket stream (AmqpWs: GET /$iothub/websocket, subprotocol "AMQPWSB10").
// One coroutine reads and feeds the connection logic (connection.hpp), one writes what it
// produces and runs its timers; token checks hop to the blocking pool, telemetry completions come
// back from the event log's writer thread. Every Proton call happens on the connection's thread.
//
// Heavy (Asio): include only from the session TU and the server TUs that hand connections over.
#include "heads/amqp/connection.hpp"
#include "domain/certificates/device_auth.hpp"
#include "heads/amqp/services.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace hub::amqp_head {
class partition_watch;
}

namespace hub::amqp_head {

// The byte stream under one AMQP connection. Implemented by the server, which owns the stream.
// Used only on the connection's executor, with at most one read_some and one write in flight at
// a time (TLS and WebSocket streams allow one of each concurrently). The same shape as the MQTT
// head's transport, so one server adapter can serve both.
class transport {
 public:
  virtual ~transport() = default;
  // Some bytes into `buf`. Any error (EOF, reset, closed) ends the connection.
  virtual boost::asio::awaitable<std::size_t> read_some(boost::asio::mutable_buffer buf, boost::system::error_code& ec) = 0;
  // All of `buf`.
  virtual boost::asio::awaitable<void> write(boost::asio::const_buffer buf, boost::system::error_code& ec) = 0;
  // Closes the socket at once; pending operations complete with an error. Idempotent.
  virtual void close() noexcept = 0;
  // What the client presented in the TLS handshake (X.509 devices); empty when nothing.
  virtual certificates::client_chain peer_certificates() const = 0;
};

// The connection options hubd runs with: the defaults, plus the Event Hubs endpoint's partitions
// (those of the telemetry event log) when `svc.watch` is set, created "now".
connection_options default_options(const services& svc);

// Shared by every AMQP connection; owned by the server's listeners, which outlive them.
struct session_context {
  const services& svc;
  boost::asio::any_io_executor blocking;  // the pool for calls that may block on storage
  connection_options options;
  std::shared_ptr<spdlog::logger> log;
};

// For log lines. Never holds credentials.
struct connection_info {
  std::uint64_t id = 0;
  std::string peer;
  std::string_view via = "amqp";  // "amqp" or "amqp-ws"
  // Called once, on the connection's thread while run_session runs, when a CBS token or an X.509
  // device's certificate is first accepted: the server stops counting the connection as
  // unauthenticated. May be empty.
  std::function<void()> on_authenticated;
};

// Serves one AMQP connection until it ends: the client closes it, the idle timeout lapses, a
// protocol error, or the transport fails. `first_bytes` were already read (protocol detection).
// The caller owns `t` (and the stream under it) and co_awaits this directly; when it returns the
// transport is closed and nothing refers to it any more.
boost::asio::awaitable<void> run_session(transport& t, std::string_view first_bytes, const session_context& ctx,
                                         const connection_info& conn);

}  // namespace hub::amqp_head
