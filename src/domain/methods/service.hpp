#pragma once
// Direct methods (protocol/semantics.md §6, service.md §4): the service calls a method on a
// connected device or module and waits for its answer.
//
// invoke() finds the identity's connection through the connection table and hands it the call
// (device_link::invoke_method); the head sends it and passes the device's answer to respond().
// The completion runs exactly once: with the device's status and payload, or DeviceNotFound /
// ModuleNotFound, DeviceNotOnline (not connected or not taking method calls, after waiting up to
// connect_timeout for it to come), GatewayTimeout (no answer within response_timeout),
// ArgumentInvalid, MessageTooLarge. Calls are correlated by a request id of the hub's, so many may
// be in flight to one device at once.
//
// Owner: hub (the composition root), which also calls sweep() every ~100 ms (timeouts) and
// ready() when a connection starts taking method calls. Thread safety: every method may be called
// from any thread. invoke() reads the registry (blocks on storage: call it off the I/O threads).
// Completions run on the thread that settles the call (respond's, sweep's, or invoke's own for an
// immediate error), outside the service's lock: post to your executor.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/connections/device_link.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace hub::registry {
class service;
}

namespace hub::methods {

// A device ("d1", "") or one of its modules ("d1", "m1").
struct identity {
  std::string device_id;
  std::string module_id;
};

// What the service asks for (the REST body: methodName, payload, responseTimeoutInSeconds,
// connectTimeoutInSeconds).
struct invocation {
  std::string name;
  std::string payload = "null";  // JSON text
  std::chrono::seconds response_timeout{30};
  std::chrono::seconds connect_timeout{0};
};

// The device's answer: {"status": ..., "payload": ...} in the REST reply.
struct answer {
  int status = 0;
  std::string payload = "null";  // JSON text as the device sent it
};

struct options {
  std::size_t max_payload_bytes = 128 * 1024;  // request and response
  std::chrono::seconds min_response_timeout{5};
  std::chrono::seconds max_response_timeout{300};
  std::chrono::seconds max_connect_timeout{300};
};

// IoT Hub's method name rule: 1..128 printable US-ASCII characters, none of $ ( ) < > @ , ; : \ " / [ ] ? = { } or space.
bool valid_method_name(std::string_view name) noexcept;

class service {
 public:
  using done_fn = std::function<void(result<answer>)>;
  using link_finder = std::function<std::shared_ptr<messaging::device_link>(const identity&)>;

  service(registry::service& registry, link_finder find, const clock& clk, options opt = {});
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  void invoke(const identity& who, invocation inv, done_fn done);
  // The device answered the call `request_id`. NotFound when no such call is waiting for that
  // identity (it timed out, or never was): the head logs it and moves on.
  result<void> respond(const identity& who, std::string_view request_id, int status, std::string payload);
  // The identity's connection now takes method calls: calls waiting for it (connect_timeout) go.
  void ready(const identity& who);
  // Settles the calls whose time is up.
  void sweep();
  // The hub is stopping: settles every call in flight with ServiceUnavailable, and answers later
  // invocations so at once. hubd calls it when its listeners start stopping (so that HTTP sessions
  // waiting for an answer end) and again before their executors are destroyed, because
  // completions post there (an unsettled completion would outlive the executor it holds).
  void shutdown();
  // Calls in flight or waiting for their device.
  std::size_t pending() const;

 private:
  struct call {
    identity who;
    invocation inv;
    done_fn done;
    bool delivered = false;      // sent to a connection; else waiting for one to come
    sys_time deadline{};         // response deadline once delivered, connect deadline before
  };

  // Hands the call to the identity's connection; false when there is none taking calls.
  bool deliver(const std::string& id, const identity& who, const invocation& inv);

  registry::service& registry_;
  link_finder find_;
  const clock& clock_;
  options options_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, call> calls_;  // by request id
  bool stopping_ = false;                          // after shutdown(): no new calls
};

}  // namespace hub::methods
