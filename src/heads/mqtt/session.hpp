#pragma once
// The MQTT head's connection: MQTT 3.1.1 as IoT Hub speaks it, over any byte stream. One
// coroutine per connection reads and feeds the pure codec (codec/mqtt) and acts on its events;
// CONNECT is admitted on the blocking pool (connect.hpp), telemetry is appended to the durable log
// and acknowledged once durable, in PUBLISH order (publish.hpp).
//
// Heavy (Asio): include only from the session TU and the server TUs that hand connections over.
#include "heads/mqtt/connect.hpp"
#include "heads/mqtt/services.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace hub::mqtt_head {

// The byte stream under one MQTT connection: the TLS stream (MQTT detected after the handshake)
// or a WebSocket stream (MqttWs: GET /$iothub/websocket, subprotocol "mqtt", binary messages).
// Implemented by the server, which owns the stream. Used only on the connection's executor, with
// at most one read_some and one write in flight at a time (TLS and WebSocket streams allow one of
// each concurrently).
class transport {
 public:
  virtual ~transport() = default;

  // Some bytes into `buf`. Any error (EOF, reset, closed) ends the connection.
  virtual boost::asio::awaitable<std::size_t> read_some(boost::asio::mutable_buffer buf, boost::system::error_code& ec) = 0;
  // Returns once read_some would not wait (data, EOF or an error, which read_some then reports),
  // so that an idle connection holds no read buffer. The default returns at once.
  virtual boost::asio::awaitable<void> wait_readable();
  // All of `buf`.
  virtual boost::asio::awaitable<void> write(boost::asio::const_buffer buf, boost::system::error_code& ec) = 0;
  // Closes the socket at once; pending operations complete with an error. Idempotent.
  virtual void close() noexcept = 0;
  // What the client presented in the TLS handshake (for X.509 devices).
  virtual certificates::client_chain peer_certificates() const = 0;
  // "mqtt" or "mqtt-ws", for the log.
  virtual std::string_view name() const noexcept = 0;
  // The connection's executor (its io_context thread).
  virtual boost::asio::any_io_executor executor() = 0;
};

struct session_options {
  // Largest packet (remaining length): IoT Hub's 256 KiB message plus room for the topic and
  // its property bag. Larger packets close the connection.
  std::size_t max_packet_bytes = 300 * 1024;
  // From protocol detection to a complete, admitted CONNECT.
  std::chrono::seconds connect_timeout{10};
  // Publishes waiting for durability (count and payload bytes) before the connection stops
  // reading until half of them are acknowledged. The SDK pipelines; this bounds the memory.
  std::size_t max_in_flight = 512;
  std::size_t max_in_flight_bytes = 8 * 1024 * 1024;
  // C2D messages out at QoS 1 and not yet PUBACKed (each holds a lock in c2d::service). The SDK
  // PUBACKs on arrival, so a small window keeps the link busy; a stalled device holds at most
  // this many locks, which lapse back to the queue after the lock timeout.
  std::size_t max_c2d_in_flight = 16;
  // Output (twin answers, C2D, method calls, PUBACKs) waiting for a device that does not read:
  // past this the connection stops reading too, so a device cannot make the hub buffer answers
  // it never takes.
  std::size_t max_unwritten_bytes = 1024 * 1024;
};

// Shared by every MQTT connection; owned by the server's listeners, which outlive them.
struct session_context {
  const services& svc;
  boost::asio::any_io_executor blocking;  // the pool for calls that may block on storage
  session_options options;
  std::shared_ptr<spdlog::logger> log;
};

// For log lines. Never holds credentials.
struct connection_info {
  std::uint64_t id = 0;
  std::string peer;
  // Called once, on the connection's thread while run_session runs, when the CONNACK 0 is queued:
  // the server stops counting the connection as unauthenticated. May be empty.
  std::function<void()> on_authenticated;
};

// Serves one MQTT connection until it ends: the device disconnects or breaks a rule, keep-alive
// lapses, its token expires, or another connection of the same identity replaces it.
// `first_bytes` were already read (protocol detection); the session takes them and leaves the
// string empty, its memory released (it holds the CONNECT and its credentials, and an idle
// connection should hold neither). The caller owns `t` (and the stream under
// it) and co_awaits this directly; when it returns the transport is closed and no operation or
// object refers to it any more.
boost::asio::awaitable<void> run_session(transport& t, std::string& first_bytes, const session_context& ctx,
                                         const connection_info& conn);

}  // namespace hub::mqtt_head
