#pragma once
// Connection admission: caps on unauthenticated connections (hub-wide and per source address) and
// on connections per source address, checked by the listener right after accept(), before any
// TLS work, so that a flood of connections that never authenticate costs a file descriptor and a
// map entry each, briefly, and cannot starve the devices already connected.
//
// A connection is "unauthenticated" from accept() until its protocol head says it authenticated
// an identity (MQTT: CONNACK 0 sent; AMQP: a CBS token or an X.509 device accepted; HTTPS: a
// request that passed authorisation). The listener holds a ticket per connection: authenticated()
// moves it from the unauthenticated count, its destruction gives everything back.
//
// Light (no Asio): unit-tested in hub_server_tests. Thread-safe: accept loops and sessions on every
// worker thread call it.
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace hub::server {

// 0 = no cap.
struct admission_limits {
  std::size_t max_unauthenticated = 0;         // hub-wide
  std::size_t max_unauthenticated_per_ip = 0;  // per source address
  std::size_t max_connections_per_ip = 0;      // per source address, authenticated or not
};

enum class admission_verdict : std::uint8_t {
  admitted,
  too_many_unauthenticated,         // the hub-wide cap
  too_many_unauthenticated_per_ip,  // this address's unauthenticated cap
  too_many_per_ip,                  // this address's total cap
};
std::string_view to_string(admission_verdict v) noexcept;

class admission {
 public:
  // One admitted connection's share of the counts. Movable; destroying (or reset()) gives it back.
  class ticket {
   public:
    ticket() = default;
    ticket(ticket&& o) noexcept;
    ticket& operator=(ticket&& o) noexcept;
    ticket(const ticket&) = delete;
    ticket& operator=(const ticket&) = delete;
    ~ticket() { reset(); }

    // The connection authenticated an identity: it no longer counts as unauthenticated. Idempotent.
    void authenticated() noexcept;
    bool is_authenticated() const noexcept { return authenticated_; }
    bool valid() const noexcept { return owner_ != nullptr; }
    void reset() noexcept;

   private:
    friend class admission;
    ticket(admission* owner, std::string address) : owner_(owner), address_(std::move(address)) {}
    admission* owner_ = nullptr;
    std::string address_;
    bool authenticated_ = false;
  };

  explicit admission(admission_limits limits) : limits_(limits) {}
  admission(const admission&) = delete;
  admission& operator=(const admission&) = delete;

  // A new connection from `address` (any stable text for the source address, e.g. "127.0.0.1").
  // On admitted, `out` holds its ticket; otherwise `out` is left empty and nothing is counted.
  admission_verdict admit(std::string_view address, ticket& out);

  const admission_limits& limits() const noexcept { return limits_; }
  // For tests and logs.
  std::size_t unauthenticated() const;
  std::size_t connections() const;
  std::size_t addresses() const;  // source addresses with at least one connection

 private:
  struct per_address {
    std::size_t total = 0;
    std::size_t unauthenticated = 0;
  };
  void release(const std::string& address, bool was_authenticated) noexcept;
  void mark_authenticated(const std::string& address) noexcept;

  const admission_limits limits_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, per_address> by_address_;
  std::size_t unauthenticated_ = 0;
  std::size_t total_ = 0;
};

}  // namespace hub::server
