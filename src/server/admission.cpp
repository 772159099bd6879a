#include "server/admission.hpp"

#include <utility>

namespace hub::server {

std::string_view to_string(admission_verdict v) noexcept {
  switch (v) {
    case admission_verdict::admitted: return "admitted";
    case admission_verdict::too_many_unauthenticated: return "too many unauthenticated connections";
    case admission_verdict::too_many_unauthenticated_per_ip: return "too many unauthenticated connections from the address";
    case admission_verdict::too_many_per_ip: return "too many connections from the address";
  }
  return "unknown";
}

admission::ticket::ticket(ticket&& o) noexcept
    : owner_(std::exchange(o.owner_, nullptr)), address_(std::move(o.address_)), authenticated_(o.authenticated_) {}

admission::ticket& admission::ticket::operator=(ticket&& o) noexcept {
  if (this != &o) {
    reset();
    owner_ = std::exchange(o.owner_, nullptr);
    address_ = std::move(o.address_);
    authenticated_ = o.authenticated_;
  }
  return *this;
}

void admission::ticket::authenticated() noexcept {
  if (owner_ == nullptr || authenticated_) return;
  authenticated_ = true;
  owner_->mark_authenticated(address_);
}

void admission::ticket::reset() noexcept {
  if (owner_ == nullptr) return;
  std::exchange(owner_, nullptr)->release(address_, authenticated_);
  authenticated_ = false;
}

admission_verdict admission::admit(std::string_view address, ticket& out) {
  std::string key(address);
  std::scoped_lock lock(mutex_);
  if (limits_.max_unauthenticated != 0 && unauthenticated_ >= limits_.max_unauthenticated)
    return admission_verdict::too_many_unauthenticated;
  auto it = by_address_.find(key);
  if (it != by_address_.end()) {
    if (limits_.max_connections_per_ip != 0 && it->second.total >= limits_.max_connections_per_ip)
      return admission_verdict::too_many_per_ip;
    if (limits_.max_unauthenticated_per_ip != 0 && it->second.unauthenticated >= limits_.max_unauthenticated_per_ip)
      return admission_verdict::too_many_unauthenticated_per_ip;
  } else {
    it = by_address_.emplace(key, per_address{}).first;
  }
  ++it->second.total;
  ++it->second.unauthenticated;
  ++unauthenticated_;
  ++total_;
  out = ticket(this, std::move(key));
  return admission_verdict::admitted;
}

void admission::mark_authenticated(const std::string& address) noexcept {
  std::scoped_lock lock(mutex_);
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;  // cannot happen: the ticket holds its share
  --it->second.unauthenticated;
  --unauthenticated_;
}

void admission::release(const std::string& address, bool was_authenticated) noexcept {
  std::scoped_lock lock(mutex_);
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;
  --it->second.total;
  --total_;
  if (!was_authenticated) {
    --it->second.unauthenticated;
    --unauthenticated_;
  }
  if (it->second.total == 0) by_address_.erase(it);
}

std::size_t admission::unauthenticated() const {
  std::scoped_lock lock(mutex_);
  return unauthenticated_;
}

std::size_t admission::connections() const {
  std::scoped_lock lock(mutex_);
  return total_;
}

std::size_t admission::addresses() const {
  std::scoped_lock lock(mutex_);
  return by_address_.size();
}

}  // namespace hub::server
