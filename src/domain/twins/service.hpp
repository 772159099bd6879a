#pragma once
// Device and module twins (protocol/semantics.md §3, service.md §3.3, device.md §3.4 and §4.7):
// the documents, durable in storage::kv, with IoT Hub's versions, metadata, etags and limits.
//
// Service side (REST /twins/{id}[/modules/{mid}]): get, update (PATCH: merge of tags and desired),
// replace (PUT: tags and desired replaced), each with If-Match on the twin's etag. Device side
// (MQTT $iothub/twin/..., the AMQP twin link): the {desired, reported} view and reported patches.
// A desired change is handed to the desired listener (the composition root pushes it to the
// identity's connection); every change is also a twin change event (routing's twinChangeEvents).
//
// A twin exists while its identity does: it is made on first write and dropped when the device or
// module is deleted (on_registry_change; a stored twin of an older generation is never shown).
// The twin's "version" counts every change; its etag is that version, base64 of 8 big-endian
// bytes, as IoT Hub's look ("AAAAAAAAAAE=").
//
// Owner: hub (the composition root). Thread safety: every method may be called from any thread;
// writes are serialised by one mutex and synced before they return. Listeners run after the write,
// still under that mutex (so a twin's changes reach them in version order), on the calling thread:
// keep them short (post elsewhere) and never call back into the service from them.
#include "base/clock.hpp"
#include "base/error.hpp"
#include "domain/twins/document.hpp"
#include "storage/kv.hpp"

#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::registry {
class service;
struct change;
}  // namespace hub::registry

namespace hub::twins {

// A device ("d1", "") or one of its modules ("d1", "m1").
struct identity {
  std::string device_id;
  std::string module_id;
};

// A change as routing's twinChangeEvents carry it: the operation ("updateTwin" for a merge,
// "replaceTwin" for a replacement) and the body IoT Hub sends, e.g.
// {"version":4,"properties":{"desired":{"x":1,"$version":3}}} or {"version":5,"tags":{...}}.
struct twin_change {
  identity who;
  std::string operation;
  bj::object body;
  sys_time at{};
};

// Which twins a scan or a query reads: device twins (FROM devices) or module twins
// (FROM devices.modules).
enum class scope { devices, modules };

// A twin query as the REST API carries it (POST /devices/query): the text, the page size
// (x-ms-max-item-count) and the continuation token of the previous page (x-ms-continuation).
struct query_request {
  std::string_view text;
  std::size_t page_size = 100;
  std::string_view continuation;  // empty: the first page
};

// IoT Hub's x-ms-item-type: "twin" (SELECT * over devices or devices.modules), "deviceJob"
// (devices.jobs), "jobResponse" (the jobs API's own query), "raw" (projections, aggregates).
enum class item_type { twin, device_job, job_response, raw };
std::string_view to_string(item_type t) noexcept;

struct query_page {
  std::vector<bj::value> items;
  item_type type = item_type::twin;
  std::optional<std::string> continuation;  // set only when another page follows
};

struct identity_info;  // internal: what the registry says about an identity (service.cpp)

struct options {
  limits lim;
  std::size_t recent_changes = 1024;  // how many change events recent_changes() keeps
};

class service {
 public:
  // A desired-properties change for a connected identity: the patch as devices receive it
  // (the changed members, or the whole desired section after a replace, plus "$version").
  using desired_listener = std::function<void(const identity& who, const bj::object& patch)>;
  using change_listener = std::function<void(const twin_change& c)>;

  service(storage::kv& kv, registry::service& registry, const clock& clk, options opt = {});
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // Set before serving; not synchronised.
  void set_desired_listener(desired_listener fn) { desired_listener_ = std::move(fn); }
  void set_change_listener(change_listener fn) { change_listener_ = std::move(fn); }

  // --- service side: the whole document as GET /twins/{id} returns it ---
  // DeviceNotFound / ModuleNotFound for an unknown identity.
  result<bj::object> get(const identity& who);
  // PATCH: `body` may hold "tags" and "properties": {"desired": ...}, each merged (null deletes).
  // ArgumentInvalid for other writable parts (reported properties belong to the device), broken
  // keys or values, or a section over its size; PreconditionFailed when If-Match does not match.
  result<bj::object> update(const identity& who, const bj::value& body, const std::optional<std::string>& if_match);
  // PUT: tags and desired replaced by the body's (absent = emptied), reported kept.
  result<bj::object> replace(const identity& who, const bj::value& body, const std::optional<std::string>& if_match);

  // --- device side ---
  // {"desired": {..., "$version": n}, "reported": {..., "$version": m}}: no tags, no metadata.
  result<bj::object> device_view(const identity& who);
  // Merges a reported patch; returns the reported section's new $version.
  result<std::int64_t> patch_reported(const identity& who, const bj::value& patch);

  // A deleted device (with its modules) or module loses its twin.
  void on_registry_change(const registry::change& c);
  // The stored twin's own part ({deviceId, moduleId, etag, version, tags, properties}), read
  // without asking the registry, so it still answers for an identity just deleted (routing's
  // deleteDeviceIdentity events, read before on_registry_change drops it). A fresh twin's when
  // none is stored; nullopt when storage fails.
  std::optional<bj::object> stored_twin(const identity& who);

  // The last options::recent_changes change events, oldest first.
  std::vector<twin_change> recent_changes() const;

  // --- scans and queries ---
  // A twin as a scan yields it: its position (the device id, or "<deviceId>/<moduleId>") and
  // the document get() returns, which the visitor may take. Return false to stop.
  using visit_fn = std::function<bool(std::string_view position, bj::object& doc)>;
  // Visits every twin of the scope in position order (bytes) after `after` (exclusive; empty:
  // from the first). Reads the registry and the twin records in chunks, a range read of each per
  // chunk rather than a lookup per twin. Not a snapshot: a twin written meanwhile may show either
  // state, an identity created or deleted meanwhile may or may not be visited.
  result<void> scan(scope s, std::string_view after, const visit_fn& fn);

  // One page of a twin query (protocol/semantics.md §1, service.md §3.1): ArgumentInvalid for a
  // syntax error (the query module's text), a page size of 0 or a continuation token that is
  // not this query's. Pages of at most 100 items (IoT Hub's limit; larger sizes are cut to it).
  // A query without GROUP BY or aggregates streams: each page scans on from where the last one
  // stopped (the token holds that position). An aggregating query computes its whole result on
  // every request and pages that (the token holds the offset); nothing is kept between requests.
  // devices.jobs has no rows yet (jobs are not implemented): an empty page of deviceJob.
  result<query_page> query(const query_request& req);

 private:
  struct record {
    std::string generation_id;
    std::int64_t version = 1;
    bj::object tags;
    bj::object desired;
    bj::object reported;
  };
  result<identity_info> lookup(const identity& who);
  // The stored twin, or a fresh one when none is stored (or one of an older generation).
  result<record> load(const identity& who, const std::string& generation_id);
  // A stored record of this generation; nullopt for another generation's or an unreadable one.
  static std::optional<record> decode(const identity& who, std::string_view bytes, const std::string& generation_id);
  record fresh(const std::string& generation_id) const;
  result<void> store(const identity& who, const record& r);
  result<bj::object> write(const identity& who, const bj::value& body, const std::optional<std::string>& if_match,
                           bool replacing);
  bj::object document(const identity_info& info, const record& r) const;
  bj::object document(identity_info&& info, record&& r) const;
  void publish(const identity& who, std::optional<bj::object> desired_patch, twin_change change);

  storage::kv& kv_;
  registry::service& registry_;
  const clock& clock_;
  options options_;
  desired_listener desired_listener_;
  change_listener change_listener_;
  std::mutex write_mutex_;
  mutable std::mutex changes_mutex_;
  std::deque<twin_change> changes_;
};

// The etag of a twin version: base64 of its 8 big-endian bytes.
std::string etag_of(std::int64_t version);

}  // namespace hub::twins
