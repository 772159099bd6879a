#include "domain/methods/service.hpp"

#include "base/crypto.hpp"
#include "domain/registry/service.hpp"

#include <fmt/format.h>

#include <vector>

namespace hub::methods {

namespace {

bool same(const identity& a, const identity& b) { return a.device_id == b.device_id && a.module_id == b.module_id; }

error not_online(const identity& who) {
  return make_error(errc::device_not_online,
                    who.module_id.empty()
                        ? fmt::format("Timed out waiting for device {} to connect.", who.device_id)
                        : fmt::format("Timed out waiting for module {} of device {} to connect.", who.module_id,
                                      who.device_id));
}

error shutting_down() { return make_error(errc::service_unavailable, "The hub is shutting down"); }

error timed_out() { return make_error(errc::gateway_timeout, "Timed out waiting for the response from device."); }

}  // namespace

bool valid_method_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (c <= ' ' || c > '~') return false;
    if (std::string_view("$()<>@,;:\\\"/[]?={}").find(c) != std::string_view::npos) return false;
  }
  return true;
}

service::service(registry::service& registry, link_finder find, const clock& clk, options opt)
    : registry_(registry), find_(std::move(find)), clock_(clk), options_(opt) {}

bool service::deliver(const std::string& id, const identity& who, const invocation& inv) {
  auto link = find_(who);
  return link && link->invoke_method(messaging::method_call{id, inv.name, inv.payload});
}

void service::invoke(const identity& who, invocation inv, done_fn done) {
  if (!valid_method_name(inv.name)) {
    done(make_error(errc::argument_invalid, "The method name is missing or has characters IoT Hub does not allow"));
    return;
  }
  if (inv.response_timeout < options_.min_response_timeout || inv.response_timeout > options_.max_response_timeout) {
    done(make_error(errc::argument_invalid,
                    fmt::format("responseTimeoutInSeconds must be between {} and {}", options_.min_response_timeout.count(),
                                options_.max_response_timeout.count())));
    return;
  }
  if (inv.connect_timeout.count() < 0 || inv.connect_timeout > options_.max_connect_timeout) {
    done(make_error(errc::argument_invalid, fmt::format("connectTimeoutInSeconds must be between 0 and {}",
                                                        options_.max_connect_timeout.count())));
    return;
  }
  if (inv.payload.empty()) inv.payload = "null";
  if (inv.payload.size() > options_.max_payload_bytes) {
    done(make_error(errc::message_too_large, fmt::format("The method payload is {} bytes; the limit is {}",
                                                         inv.payload.size(), options_.max_payload_bytes)));
    return;
  }
  if (who.module_id.empty()) {
    if (auto d = registry_.get_device(who.device_id); !d) return done(d.error());
  } else {
    if (auto m = registry_.get_module(who.device_id, who.module_id); !m) return done(m.error());
  }

  const std::string id = crypto::uuid_v4();
  const sys_time now = clock_.now();
  bool stopping = false;
  {
    // In the table before the connection sees it: the answer may come back at once.
    std::scoped_lock lock(mutex_);
    stopping = stopping_;
    if (!stopping) calls_.emplace(id, call{who, inv, std::move(done), true, now + inv.response_timeout});
  }
  if (stopping) return done(shutting_down());
  if (deliver(id, who, inv)) return;

  done_fn failed;
  {
    std::scoped_lock lock(mutex_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return;  // settled meanwhile (shutdown)
    if (inv.connect_timeout.count() > 0) {
      it->second.delivered = false;
      it->second.deadline = now + inv.connect_timeout;
      return;
    }
    failed = std::move(it->second.done);
    calls_.erase(it);
  }
  failed(not_online(who));
}

result<void> service::respond(const identity& who, std::string_view request_id, int status, std::string payload) {
  done_fn done;
  {
    std::scoped_lock lock(mutex_);
    auto it = calls_.find(std::string(request_id));
    if (it == calls_.end() || !same(it->second.who, who) || !it->second.delivered) {
      return make_error(errc::not_found, fmt::format("no method call {} is waiting for an answer", request_id));
    }
    done = std::move(it->second.done);
    calls_.erase(it);
  }
  if (payload.size() > options_.max_payload_bytes) {
    done(make_error(errc::message_too_large, "The device's method response is larger than 128 KB"));
    return {};
  }
  if (payload.empty()) payload = "null";
  done(answer{status, std::move(payload)});
  return {};
}

void service::ready(const identity& who) {
  struct waiting_call {
    std::string id;
    invocation inv;
    sys_time connect_deadline;
  };
  std::vector<waiting_call> waiting;
  const sys_time now = clock_.now();
  {
    std::scoped_lock lock(mutex_);
    for (auto& [id, c] : calls_) {
      if (c.delivered || !same(c.who, who)) continue;
      waiting.push_back({id, c.inv, c.deadline});
      c.delivered = true;
      c.deadline = now + c.inv.response_timeout;
    }
  }
  for (const waiting_call& w : waiting) {
    if (deliver(w.id, who, w.inv)) continue;
    // Gone again before the call went out: back to waiting, with what is left of its time.
    std::scoped_lock lock(mutex_);
    if (auto it = calls_.find(w.id); it != calls_.end()) {
      it->second.delivered = false;
      it->second.deadline = w.connect_deadline;
    }
  }
}

void service::sweep() {
  std::vector<std::pair<done_fn, error>> expired;
  {
    std::scoped_lock lock(mutex_);
    const sys_time now = clock_.now();
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      expired.emplace_back(std::move(it->second.done), it->second.delivered ? timed_out() : not_online(it->second.who));
      it = calls_.erase(it);
    }
  }
  for (auto& [done, e] : expired) done(std::move(e));
}

void service::shutdown() {
  std::unordered_map<std::string, call> calls;
  {
    std::scoped_lock lock(mutex_);
    stopping_ = true;
    calls.swap(calls_);
  }
  for (auto& [id, c] : calls) c.done(shutting_down());
}

std::size_t service::pending() const {
  std::scoped_lock lock(mutex_);
  return calls_.size();
}

}  // namespace hub::methods
