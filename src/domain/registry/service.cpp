#include "domain/registry/service.hpp"

#include "base/crypto.hpp"
#include "base/text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

namespace hub::registry {
namespace {

// Storage keys. '/' is not a legal id character, so "m/<device>/" never matches another device's
// modules and a scan of "d/" returns devices in id order.
std::string device_key(std::string_view id) { return fmt::format("d/{}", id); }
std::string module_key(std::string_view device_id, std::string_view module_id) {
  return fmt::format("m/{}/{}", device_id, module_id);
}
std::string modules_prefix(std::string_view device_id) { return fmt::format("m/{}/", device_id); }
constexpr std::string_view devices_prefix = "d/";
constexpr std::string_view all_modules_prefix = "m/";  // "m/<device>/<module>", every device's

// An etag is base64 of the record's version number in decimal, the shape IoT Hub's own etags
// have. It changes on every write of the record. A new record starts at a random version, so an
// etag kept from a deleted device never matches the device re-created under the same id.
std::string etag_for(std::int64_t version) { return crypto::base64_encode(std::to_string(version)); }

std::string first_etag() {
  const auto r = crypto::random_bytes(6);
  std::int64_t version = 0;
  for (unsigned char c : r) version = (version << 8) | c;
  return etag_for(version + 1);
}

std::string next_etag(std::string_view etag) {
  const auto text = crypto::base64_decode(etag);
  const auto version = text ? text::parse_int(*text) : std::nullopt;
  return etag_for(version.value_or(0) + 1);
}

bool etag_matches(const if_match& wanted, std::string_view current) {
  return !wanted || *wanted == "*" || *wanted == current;
}

// 18 decimal digits, like IoT Hub's generation ids. Random rather than time-based, so a device
// deleted and re-created within one clock tick (or under a manual clock) still gets a new one.
std::string new_generation_id() {
  const auto bytes = crypto::random_bytes(sizeof(std::uint64_t));
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), sizeof n);
  constexpr std::uint64_t lowest = 100'000'000'000'000'000;  // 10^17: keeps the leading digit non-zero
  return std::to_string(lowest + n % (9 * lowest));
}

// IoT Hub gives every Edge device its own scope, which its children then carry as deviceScope.
std::string edge_scope(const device& d) {
  return fmt::format("ms-azure-iot-edge://{}-{}", d.device_id, d.generation_id);
}

// Empty sas keys are generated, or kept from the stored identity when it already used sas: the
// SDKs send empty keys on create and, after a get, on update.
void fill_keys(authentication& a, const authentication* stored) {
  if (a.type != auth_type::sas) return;
  const bool keep = stored != nullptr && stored->type == auth_type::sas;
  const auto fill = [keep](std::string& key, const std::string* kept) {
    if (!key.empty()) return;
    key = keep && !kept->empty() ? *kept : crypto::new_symmetric_key();
  };
  fill(a.primary_key, keep ? &stored->primary_key : nullptr);
  fill(a.secondary_key, keep ? &stored->secondary_key : nullptr);
}

// The read-only fields a client cannot set: a new identity starts disconnected and unused.
void reset_runtime(identity& i, std::string_view etag) {
  i.generation_id = new_generation_id();
  i.etag = std::string(etag);
  i.conn_state = connection_state::disconnected;
  i.conn_state_updated = {};
  i.last_activity = {};
  i.c2d_message_count = 0;
}

error invalid_id(std::string_view what) {
  return make_error(errc::argument_invalid,
                    fmt::format("The {} id is invalid: it must be 1 to 128 ASCII letters, digits or "
                                "- . + % _ # * ? ! ( ) , = @ $ ' :",
                                what));
}
error device_not_found(std::string_view id) {
  return make_error(errc::device_not_found, fmt::format("Device '{}' not found.", id));
}
error module_not_found(std::string_view device_id, std::string_view module_id) {
  return make_error(errc::module_not_found, fmt::format("Module '{}' not found on device '{}'.", module_id, device_id));
}
error device_disabled(std::string_view id) {
  return make_error(errc::unauthorized, fmt::format("Device '{}' is disabled", id));
}
error etag_mismatch(std::string_view what) {
  return make_error(errc::precondition_failed,
                    fmt::format("The If-Match etag does not match the current version of {}.", what));
}

result<void> put_record(storage::kv& kv, std::string key, std::string value, bool sync = true) {
  storage::write_batch batch;
  batch.put(std::move(key), std::move(value));
  return kv.write(batch, sync);  // acknowledged means durable (except connection state)
}

// The overlay key of an identity; '/' is not a legal id character.
std::string presence_key(std::string_view device_id, std::string_view module_id) {
  return module_id.empty() ? std::string(device_id) : fmt::format("{}/{}", device_id, module_id);
}

// Shows a live connection on a stored record, or Disconnected without one: a stored "Connected"
// with no presence was written before a crash or restart.
void show_presence(identity& i, const presence* p) {
  if (p == nullptr || p->generation_id() != i.generation_id) {
    i.conn_state = connection_state::disconnected;
    return;
  }
  i.conn_state = connection_state::connected;
  i.conn_state_updated = p->connected_at();
  i.last_activity = std::max(i.last_activity, p->last_activity());
}

result<std::optional<device>> load_device(storage::kv& kv, std::string_view id) {
  auto bytes = kv.get(device_key(id));
  if (!bytes) return bytes.error();
  if (!*bytes) return std::optional<device>{};
  auto d = decode_device(**bytes);
  if (!d) return d.error();
  return std::optional<device>{std::move(*d)};
}

result<std::optional<module>> load_module(storage::kv& kv, std::string_view device_id, std::string_view module_id) {
  auto bytes = kv.get(module_key(device_id, module_id));
  if (!bytes) return bytes.error();
  if (!*bytes) return std::optional<module>{};
  auto m = decode_module(**bytes);
  if (!m) return m.error();
  return std::optional<module>{std::move(*m)};
}

// The error for a module that is not there: its device may be missing too, and that is the
// better answer.
error missing_module(storage::kv& kv, std::string_view device_id, std::string_view module_id) {
  auto d = load_device(kv, device_id);
  if (!d) return d.error();
  if (!*d) return device_not_found(device_id);
  return module_not_found(device_id, module_id);
}

// Decodes every record under prefix (after the key prefix + `after` when that is not empty),
// stopping after `top` (0 = all).
template <class T, class Decode>
result<std::vector<T>> load_all(storage::kv& kv, std::string_view prefix, std::size_t top, Decode decode,
                                std::string_view after = {}) {
  std::vector<T> out;
  std::optional<error> failure;
  const std::string after_key = after.empty() ? std::string() : fmt::format("{}{}", prefix, after);
  auto scanned = kv.scan(prefix, after_key, [&](std::string_view, std::string_view value) {
    auto item = decode(value);
    if (!item) {
      failure = item.error();
      return false;
    }
    out.push_back(std::move(*item));
    return top == 0 || out.size() < top;
  });
  if (!scanned) return scanned.error();
  if (failure) return *failure;
  return out;
}

std::string_view operation_name(import_mode mode) {
  switch (mode) {
    case import_mode::create: return "create";
    case import_mode::update: return "update";
    case import_mode::update_if_match_etag: return "updateIfMatchETag";
    case import_mode::remove: return "delete";
    case import_mode::remove_if_match_etag: return "deleteIfMatchETag";
  }
  return "unknown";
}

}  // namespace

service::service(storage::kv& kv, const clock& clk) : kv_(kv), clock_(clk) {}

// --- devices ----------------------------------------------------------------------------------

result<device> service::create_device(device d) {
  if (!valid_id(d.device_id)) return invalid_id("device");
  if (auto v = validate(d.auth); !v) return v.error();
  std::unique_lock lock(write_mutex_);
  auto existing = load_device(kv_, d.device_id);
  if (!existing) return existing.error();
  if (*existing) {
    return make_error(errc::device_already_exists,
                      fmt::format("A device with ID '{}' is already registered.", d.device_id));
  }
  reset_runtime(d, first_etag());
  d.status_updated = {};
  fill_keys(d.auth, nullptr);
  if (d.iot_edge) d.device_scope = edge_scope(d);
  if (auto w = put_record(kv_, device_key(d.device_id), encode(d)); !w) return w.error();
  lock.unlock();
  notify(change::kind::device_created, d.device_id);
  return d;
}

result<device> service::get_device(std::string_view id) {
  auto d = load_device(kv_, id);
  if (!d) return d.error();
  if (!*d) return device_not_found(id);
  apply_presence(**d);
  return std::move(**d);
}

result<device> service::update_device(device d, const if_match& etag) {
  if (auto v = validate(d.auth); !v) return v.error();
  std::unique_lock lock(write_mutex_);
  auto loaded = load_device(kv_, d.device_id);
  if (!loaded) return loaded.error();
  if (!*loaded) return device_not_found(d.device_id);
  const device& current = **loaded;
  if (!etag_matches(etag, current.etag)) return etag_mismatch(fmt::format("device '{}'", d.device_id));

  device next = current;
  if (d.status != current.status) {
    next.status = d.status;
    next.status_updated = clock_.now();
  }
  next.status_reason = std::move(d.status_reason);
  fill_keys(d.auth, &current.auth);
  next.auth = std::move(d.auth);
  next.iot_edge = d.iot_edge;
  next.device_scope = d.iot_edge ? edge_scope(next) : std::move(d.device_scope);
  next.parent_scopes = std::move(d.parent_scopes);
  next.etag = next_etag(current.etag);
  const bool disabled = current.status == device_status::enabled && next.status == device_status::disabled;
  if (auto w = put_record(kv_, device_key(next.device_id), encode(next)); !w) return w.error();
  lock.unlock();
  if (disabled) notify(change::kind::device_disabled, next.device_id);
  apply_presence(next);
  return next;
}

result<device> service::put_device(device d, const if_match& etag) {
  // IoT Hub treats PUT without If-Match as a create, even when the device exists.
  if (!etag) return create_device(std::move(d));
  return update_device(std::move(d), etag);
}

result<void> service::delete_device(std::string_view id, const if_match& etag) {
  std::unique_lock lock(write_mutex_);
  auto loaded = load_device(kv_, id);
  if (!loaded) return loaded.error();
  if (!*loaded) return device_not_found(id);
  if (!etag_matches(etag, (*loaded)->etag)) return etag_mismatch(fmt::format("device '{}'", id));

  // The device and its modules go in one batch: no orphaned modules after a crash.
  storage::write_batch batch;
  batch.del(device_key(id));
  auto scanned = kv_.scan(modules_prefix(id), {}, [&](std::string_view key, std::string_view) {
    batch.del(std::string(key));
    return true;
  });
  if (!scanned) return scanned.error();
  if (auto w = kv_.write(batch, /*sync=*/true); !w) return w;
  lock.unlock();
  notify(change::kind::device_deleted, id);
  return {};
}

result<std::vector<device>> service::list_devices(std::size_t top) {
  auto devices = load_all<device>(kv_, devices_prefix, top, decode_device);
  if (!devices) return devices;
  for (device& d : *devices) apply_presence(d);
  return devices;
}

result<std::vector<device>> service::scan_devices(std::string_view after, std::size_t max) {
  if (max == 0) return std::vector<device>{};
  auto devices = load_all<device>(kv_, devices_prefix, max, decode_device, after);
  if (!devices) return devices;
  for (device& d : *devices) apply_presence(d);
  return devices;
}

bulk_result service::bulk(std::vector<bulk_item> items) {
  std::unordered_map<std::string, int> occurrences;
  for (const auto& item : items) ++occurrences[item.dev.device_id];

  // Items are applied one by one, not atomically, as IoT Hub does; each failure is reported and
  // the rest still run. An id named twice is ambiguous, so none of its items runs.
  bulk_result out;
  const auto report = [&](const bulk_item& item, error e) {
    bulk_error& b = out.errors.emplace_back();
    b.device_id = item.dev.device_id;
    b.code = e.code;
    b.operation = operation_name(item.mode);
    b.message = std::move(e.message);
  };
  for (auto& item : items) {
    const std::string id = item.dev.device_id;
    if (occurrences[id] > 1) {
      report(item, make_error(errc::device_defined_multiple_times,
                              fmt::format("Device '{}' is defined more than once in the request.", id)));
      continue;
    }
    std::optional<error> failure;
    switch (item.mode) {
      case import_mode::create:
        if (auto r = create_device(item.dev); !r) failure = r.error();
        break;
      case import_mode::update:
        if (auto r = update_device(item.dev, std::nullopt); !r) failure = r.error();
        break;
      case import_mode::update_if_match_etag:
        if (auto r = update_device(item.dev, item.dev.etag); !r) failure = r.error();
        break;
      case import_mode::remove:
        if (auto r = delete_device(id, std::nullopt); !r) failure = r.error();
        break;
      case import_mode::remove_if_match_etag:
        if (auto r = delete_device(id, item.dev.etag); !r) failure = r.error();
        break;
    }
    if (failure) report(item, std::move(*failure));
  }
  out.is_successful = out.errors.empty();
  return out;
}

result<statistics> service::stats() {
  statistics s;
  std::optional<error> failure;
  auto scanned = kv_.scan(devices_prefix, {}, [&](std::string_view, std::string_view value) {
    auto d = decode_device(value);
    if (!d) {
      failure = d.error();
      return false;
    }
    ++s.total;
    ++(d->status == device_status::enabled ? s.enabled : s.disabled);
    return true;
  });
  if (!scanned) return scanned.error();
  if (failure) return *failure;
  return s;
}

// --- modules ----------------------------------------------------------------------------------

result<module> service::create_module(module m) {
  if (!valid_id(m.device_id)) return invalid_id("device");
  if (!valid_id(m.module_id)) return invalid_id("module");
  if (auto v = validate(m.auth); !v) return v.error();
  std::unique_lock lock(write_mutex_);
  auto parent = load_device(kv_, m.device_id);
  if (!parent) return parent.error();
  if (!*parent) return device_not_found(m.device_id);
  auto existing = load_module(kv_, m.device_id, m.module_id);
  if (!existing) return existing.error();
  if (*existing) {
    return make_error(errc::module_already_exists,
                      fmt::format("A module with ID '{}' is already registered on device '{}'.", m.module_id,
                                  m.device_id));
  }
  reset_runtime(m, first_etag());
  fill_keys(m.auth, nullptr);
  if (auto w = put_record(kv_, module_key(m.device_id, m.module_id), encode(m)); !w) return w.error();
  lock.unlock();
  notify(change::kind::module_created, m.device_id, m.module_id);
  return m;
}

result<module> service::get_module(std::string_view device_id, std::string_view module_id) {
  auto m = load_module(kv_, device_id, module_id);
  if (!m) return m.error();
  if (!*m) return missing_module(kv_, device_id, module_id);
  apply_presence(**m);
  return std::move(**m);
}

result<module> service::update_module(module m, const if_match& etag) {
  if (auto v = validate(m.auth); !v) return v.error();
  std::scoped_lock lock(write_mutex_);
  auto loaded = load_module(kv_, m.device_id, m.module_id);
  if (!loaded) return loaded.error();
  if (!*loaded) return missing_module(kv_, m.device_id, m.module_id);
  const module& current = **loaded;
  if (!etag_matches(etag, current.etag)) {
    return etag_mismatch(fmt::format("module '{}' on device '{}'", m.module_id, m.device_id));
  }

  module next = current;
  fill_keys(m.auth, &current.auth);
  next.auth = std::move(m.auth);
  next.managed_by = std::move(m.managed_by);
  next.etag = next_etag(current.etag);
  if (auto w = put_record(kv_, module_key(next.device_id, next.module_id), encode(next)); !w) return w.error();
  apply_presence(next);
  return next;
}

result<module> service::put_module(module m, const if_match& etag) {
  if (!etag) return create_module(std::move(m));
  return update_module(std::move(m), etag);
}

result<void> service::delete_module(std::string_view device_id, std::string_view module_id, const if_match& etag) {
  std::unique_lock lock(write_mutex_);
  auto loaded = load_module(kv_, device_id, module_id);
  if (!loaded) return loaded.error();
  if (!*loaded) return missing_module(kv_, device_id, module_id);
  if (!etag_matches(etag, (*loaded)->etag)) {
    return etag_mismatch(fmt::format("module '{}' on device '{}'", module_id, device_id));
  }
  storage::write_batch batch;
  batch.del(module_key(device_id, module_id));
  if (auto w = kv_.write(batch, /*sync=*/true); !w) return w;
  lock.unlock();
  notify(change::kind::module_deleted, device_id, module_id);
  return {};
}

result<std::vector<module>> service::list_modules(std::string_view device_id) {
  auto parent = load_device(kv_, device_id);
  if (!parent) return parent.error();
  if (!*parent) return device_not_found(device_id);
  auto modules = load_all<module>(kv_, modules_prefix(device_id), 0, decode_module);
  if (!modules) return modules;
  for (module& m : *modules) apply_presence(m);
  return modules;
}

result<std::vector<module>> service::scan_modules(std::string_view after, std::size_t max) {
  if (max == 0) return std::vector<module>{};
  auto modules = load_all<module>(kv_, all_modules_prefix, max, decode_module, after);
  if (!modules) return modules;
  for (module& m : *modules) apply_presence(m);
  return modules;
}

// --- connection state -------------------------------------------------------------------------

void service::notify(change::kind what, std::string_view device_id, std::string_view module_id) const {
  if (listener_) listener_(change{what, std::string(device_id), std::string(module_id)});
}

std::shared_ptr<presence> service::find_presence(const std::string& key) const {
  std::scoped_lock lock(presence_mutex_);
  auto it = presence_.find(key);
  return it == presence_.end() ? nullptr : it->second;
}

void service::apply_presence(device& d) const {
  const auto p = find_presence(presence_key(d.device_id, {}));
  show_presence(d, p.get());
  if (c2d_counter_) d.c2d_message_count = static_cast<std::int64_t>(c2d_counter_(d.device_id));
}

void service::apply_presence(module& m) const {
  const auto p = find_presence(presence_key(m.device_id, m.module_id));
  show_presence(m, p.get());
}

result<std::shared_ptr<presence>> service::mark_connected(std::string_view device_id, std::string_view module_id,
                                                          sys_time at) {
  const std::string key = presence_key(device_id, module_id);
  // Reads only, so no write lock: connecting writes nothing (the overlay shows the connection;
  // the record is written at disconnect). A disable or delete racing with this read is still
  // caught: the registry notifies after its write, and the connection table, which calls this
  // under the identity's shard lock, closes whatever it then finds attached.
  std::optional<device> dev;
  std::optional<module> mod;
  identity* record = nullptr;
  if (module_id.empty()) {
    auto loaded = load_device(kv_, device_id);
    if (!loaded) return loaded.error();
    if (!*loaded) return device_not_found(device_id);
    if ((*loaded)->status == device_status::disabled) return device_disabled(device_id);
    dev = std::move(**loaded);
    record = &*dev;
  } else {
    auto loaded = load_module(kv_, device_id, module_id);
    if (!loaded) return loaded.error();
    if (!*loaded) return missing_module(kv_, device_id, module_id);
    auto parent = load_device(kv_, device_id);
    if (!parent) return parent.error();
    if (*parent && (*parent)->status == device_status::disabled) return device_disabled(device_id);
    mod = std::move(**loaded);
    record = &*mod;
  }

  sys_time last_activity = record->last_activity;
  if (const auto previous = find_presence(key); previous && previous->generation_id() == record->generation_id) {
    last_activity = std::max(last_activity, previous->last_activity());
  }
  auto p = std::make_shared<presence>(record->generation_id, at, last_activity);
  std::scoped_lock overlay(presence_mutex_);
  presence_[key] = p;
  return p;
}

void service::mark_disconnected(std::string_view device_id, std::string_view module_id,
                                const std::shared_ptr<presence>& p, sys_time at) {
  const std::string key = presence_key(device_id, module_id);
  std::scoped_lock lock(write_mutex_);
  if (find_presence(key) != p) return;  // replaced by a newer connection, or never marked

  // Persist first, then drop the overlay entry: a reader in between still sees the presence, never
  // the stale "Connected" record. A failed write is not worth an error to anyone: the overlay
  // goes anyway, and the record then reads as Disconnected with the connect time.
  const auto finish = [&](identity& record) {
    record.conn_state = connection_state::disconnected;
    record.conn_state_updated = at;
    record.last_activity = std::max(record.last_activity, p->last_activity());
  };
  if (module_id.empty()) {
    auto loaded = load_device(kv_, device_id);
    if (loaded && *loaded && (*loaded)->generation_id == p->generation_id()) {
      finish(**loaded);
      (void)put_record(kv_, device_key(device_id), encode(**loaded), /*sync=*/false);
    }
  } else {
    auto loaded = load_module(kv_, device_id, module_id);
    if (loaded && *loaded && (*loaded)->generation_id == p->generation_id()) {
      finish(**loaded);
      (void)put_record(kv_, module_key(device_id, module_id), encode(**loaded), /*sync=*/false);
    }
  }
  std::scoped_lock overlay(presence_mutex_);
  if (auto it = presence_.find(key); it != presence_.end() && it->second == p) presence_.erase(it);
}

}  // namespace hub::registry
