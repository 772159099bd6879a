#pragma once
// The identity registry: devices and their modules, durable in storage::kv.
//
// Owner: hub (the composition root). Thread safety: all methods may be called from any thread;
// read-modify-write operations are serialised per registry, so etag checks are atomic. Calls
// block on storage; heads run them off the I/O threads.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/registry/model.hpp"
#include "domain/registry/presence.hpp"
#include "storage/kv.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace hub::registry {

// If-Match as the REST API carries it, quotes already stripped: "*" or absent = unconditional.
using if_match = std::optional<std::string>;

enum class import_mode { create, update, update_if_match_etag, remove, remove_if_match_etag };

struct bulk_item {
  import_mode mode = import_mode::create;
  device dev;                       // dev.etag carries the etag for *_if_match_etag
};

struct bulk_error {
  std::string device_id;
  std::string module_id;
  errc code = errc::server_error;
  std::string operation;            // "create", "update", "delete"...
  std::string message;
};

struct bulk_result {
  bool is_successful = true;
  std::vector<bulk_error> errors;
};

// A registry write that others react to: a device or module was deleted, or the device was
// disabled (which also shuts out its modules), each ending connections as IoT Hub ends them; or a
// device or module was created (routing's deviceLifecycleEvents).
struct change {
  enum class kind { device_deleted, device_disabled, module_deleted, device_created, module_created };
  kind what = kind::device_deleted;
  std::string device_id;
  std::string module_id;  // module_deleted and module_created only
};

class service {
 public:
  // Called after the write is stored, on the writing thread, outside the registry's locks (the
  // connection table calls into the registry under its own locks, so the listener may call the
  // table). Every path reports: REST, bulk import, and whatever comes later.
  using change_listener = std::function<void(const change&)>;

  service(storage::kv& kv, const clock& clk);

  // Set before serving; not synchronised with the writes.
  void set_change_listener(change_listener fn) { listener_ = std::move(fn); }
  // The device's pending cloud-to-device messages, shown as cloudToDeviceMessageCount on every
  // device read (c2d::service::pending, connected by the composition root). Set before serving.
  using c2d_counter = std::function<std::size_t(std::string_view device_id)>;
  void set_c2d_counter(c2d_counter fn) { c2d_counter_ = std::move(fn); }

  // Devices. create fails with DeviceAlreadyExists; keys are generated when absent.
  result<device> create_device(device d);
  result<device> get_device(std::string_view id);
  // Replaces the writable fields. If-Match mismatch gives PreconditionFailed.
  result<device> update_device(device d, const if_match& etag);
  // PUT semantics of the REST API: create when absent and no If-Match, else update.
  result<device> put_device(device d, const if_match& etag);
  result<void> delete_device(std::string_view id, const if_match& etag);
  // Devices in id order; at most `top` (0 = all).
  result<std::vector<device>> list_devices(std::size_t top = 0);
  // Pages through every device in id order: at most `max` devices whose id comes after `after`
  // (exclusive; empty: from the first). For scans such as twin queries.
  result<std::vector<device>> scan_devices(std::string_view after, std::size_t max);
  bulk_result bulk(std::vector<bulk_item> items);
  result<statistics> stats();

  // Modules of a device.
  result<module> create_module(module m);
  result<module> get_module(std::string_view device_id, std::string_view module_id);
  result<module> update_module(module m, const if_match& etag);
  result<module> put_module(module m, const if_match& etag);
  result<void> delete_module(std::string_view device_id, std::string_view module_id, const if_match& etag);
  result<std::vector<module>> list_modules(std::string_view device_id);
  // Pages through the modules of every device, ordered by "<deviceId>/<moduleId>" as bytes: at
  // most `max` after the key `after` (exclusive; empty: from the first).
  result<std::vector<module>> scan_modules(std::string_view after, std::size_t max);

  // Connection state. The connection table calls these (off the I/O threads) when a head attaches
  // or detaches a connection; every read above then shows it. While connected, the state lives
  // in an in-memory overlay (a `presence`, touched per message without any storage write); the
  // record is written only at disconnect, without sync (connection state, connect time and last
  // activity). Connecting writes nothing: after a restart nothing is connected, so what a
  // connect-time write would leave behind (a record saying "Connected") would be read as
  // "Disconnected" anyway; a crash loses only the connect time of the connections it cut.
  //
  // mark_connected: DeviceNotFound / ModuleNotFound when the identity is gone, Unauthorized when
  // the device is disabled (a disable between authentication and attach: the change listener
  // found nothing to close yet, so the attach must fail instead). A presence still
  // in the overlay for the same identity is replaced (a new connection took over); its last
  // activity carries over.
  result<std::shared_ptr<presence>> mark_connected(std::string_view device_id, std::string_view module_id,
                                                   sys_time at);
  // Only when `p` is still the identity's presence (a replaced connection changes nothing).
  // Persists Disconnected, the time and the last activity, then drops the overlay entry.
  void mark_disconnected(std::string_view device_id, std::string_view module_id, const std::shared_ptr<presence>& p,
                         sys_time at);

 private:
  // Shows the overlay's live state on records read from storage.
  void apply_presence(device& d) const;
  void apply_presence(module& m) const;
  std::shared_ptr<presence> find_presence(const std::string& key) const;

  void notify(change::kind what, std::string_view device_id, std::string_view module_id = {}) const;

  storage::kv& kv_;
  const clock& clock_;
  change_listener listener_;
  c2d_counter c2d_counter_;
  std::mutex write_mutex_;
  // "<deviceId>" or "<deviceId>/<moduleId>" -> presence of the connected identity. Its own
  // mutex, held only for map operations, so reads never wait for a write.
  mutable std::mutex presence_mutex_;
  std::unordered_map<std::string, std::shared_ptr<presence>> presence_;
};

}  // namespace hub::registry
