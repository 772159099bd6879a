#pragma once
// The network front of hubd: TLS listeners on every (address, port), protocol detection, and the
// sessions behind them. Light header (pimpl): Asio and Beast stay inside listener.cpp and
// http_session.cpp.
//
// Lifecycle: construct (loads the TLS context, binds every port: failures throw startup_error),
// read endpoints(), then run() on the main thread until stop() or SIGINT/SIGTERM. run() returns
// after the sessions are closed and every thread is joined. The router, clock and MQTT services
// must outlive it.
#include "base/clock.hpp"
#include "server/admission.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hub::http {
class router;
}
namespace hub::mqtt_head {
struct services;
}
namespace hub::amqp_head {
struct services;
}

namespace hub::server {

struct listen_port {
  std::string name;     // "https", "mqtt", "amqp": a label only, every port serves every protocol
  std::uint16_t port = 0;  // 0 = any free port (tests)
};

struct http_limits {
  std::size_t max_body_bytes = 1024 * 1024;   // larger bodies get 413 MessageTooLarge
  std::size_t max_header_bytes = 16 * 1024;   // SAS tokens are long, but not this long
  std::chrono::seconds idle_timeout{120};     // between requests on a kept-alive connection
  std::chrono::seconds request_timeout{30};   // to receive one request body, or send one response
};

// Caps on connections (src/server/admission.hpp; docs/limits.md says why these values). A
// connection past a cap is closed right after accept(), before TLS.
struct connection_limits {
  // Generous for a real hub: a reconnect storm of thousands of devices passes in a few rounds of
  // the SDKs' retries; a flood of silent or half-open connections costs at most this many sockets
  // and TLS states (about 2048 x 50 KiB).
  std::size_t max_unauthenticated = 2048;
  // Per source address: one flooding address cannot take the whole hub-wide allowance. NAT and
  // IoT Edge gateways put many devices behind one address, so this is not small either; the
  // benchmarks connect 64 at a time from 127.0.0.1.
  std::size_t max_unauthenticated_per_ip = 256;
  // Off: the benchmarks hold 50,000 connections from 127.0.0.1, and NAT makes per-address totals
  // a poor proxy for abuse. Operators facing the internet can set it.
  std::size_t max_connections_per_ip = 0;
  // From accept() to authentication (CONNACK 0, an accepted CBS token or device certificate, a
  // request that proved a credential); 0 = no limit. The handshake budget bounds TLS and the first
  // bytes only: without this an AMQP peer could stay unauthenticated on heartbeats, and an HTTP
  // peer for as long as it keeps sending requests that are refused.
  std::chrono::seconds auth_timeout{30};
};

struct listener_options {
  std::vector<std::string> addresses;  // IP literals; empty = "::" dual-stack, else 0.0.0.0
  std::vector<listen_port> ports;
  std::filesystem::path cert_chain_file;  // server certificate, then its CA chain
  std::filesystem::path key_file;
  std::size_t io_threads = 0;             // 0 = one per core
  std::size_t route_threads = 2;          // the pool that runs blocking domain calls
  std::chrono::seconds handshake_timeout{10};  // TLS handshake plus the first bytes of the protocol
  std::chrono::seconds shutdown_grace{5};      // how long run() waits for sessions to end
  http_limits http;
  connection_limits limits;
  // Called once on the thread of run() when stopping begins, after every connection was told to
  // close and before the wait for the sessions: a session waiting for a domain completion (a
  // direct method's answer) has no socket event to wake it, so hubd settles those calls here.
  std::function<void()> on_stopping;
};

struct bound_endpoint {
  std::string name;      // "https" (or "https+mqtt" when two names share a port)
  std::string address;   // as bound, e.g. "127.0.0.2" or "::"
  std::uint16_t port = 0;  // the real port, also when 0 was asked
  std::string to_string() const;  // "https 127.0.0.2:443", "https [::]:443"
};

class listeners {
 public:
  // `mqtt` / `amqp` null: MQTT / AMQP connections (direct or over WebSockets) are detected but
  // refused.
  listeners(listener_options options, const http::router& router, const clock& clk,
            const mqtt_head::services* mqtt = nullptr, const amqp_head::services* amqp = nullptr);
  ~listeners();
  listeners(const listeners&) = delete;
  listeners& operator=(const listeners&) = delete;

  const std::vector<bound_endpoint>& endpoints() const noexcept;

  // Serves until stop() or SIGINT/SIGTERM; then stops accepting, closes every session, waits up
  // to shutdown_grace for them to end and joins all threads. Call once.
  void run();
  // Thread-safe, idempotent; also safe before run() (run() then returns at once).
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace hub::server
