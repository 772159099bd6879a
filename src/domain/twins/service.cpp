#include "domain/twins/service.hpp"

#include "base/crypto.hpp"
#include "base/json.hpp"
#include "base/log.hpp"
#include "domain/registry/service.hpp"

#include <boost/json/array.hpp>
#include <fmt/format.h>

namespace hub::twins {

namespace {

std::string twin_key(const identity& who) {
  return who.module_id.empty() ? fmt::format("twin/{}", who.device_id)
                               : fmt::format("twin/{}/{}", who.device_id, who.module_id);
}

bj::value nullable(const std::string& s) { return s.empty() ? bj::value(nullptr) : bj::value(s); }
bj::value time_or_min(sys_time t) { return t == sys_time{} ? bj::value(iso8601_min) : bj::value(to_iso8601(t)); }

// The registry fields a twin shows, in IoT Hub's names.
bj::object identity_json(const registry::identity& i) {
  bj::object o{
      {"deviceId", i.device_id},
      {"etag", nullptr},  // filled with the twin's etag
      {"deviceEtag", i.etag},
      {"connectionState", registry::to_string(i.conn_state)},
      {"lastActivityTime", time_or_min(i.last_activity)},
      {"cloudToDeviceMessageCount", i.c2d_message_count},
      {"authenticationType", registry::to_string(i.auth.type)},
      {"x509Thumbprint", bj::object{{"primaryThumbprint", nullable(i.auth.primary_thumbprint)},
                                    {"secondaryThumbprint", nullable(i.auth.secondary_thumbprint)}}},
      {"modelId", ""},
  };
  return o;
}

error not_object(std::string_view what) {
  return make_error(errc::argument_invalid, fmt::format("{} must be a JSON object", what));
}

}  // namespace

std::string etag_of(std::int64_t version) {
  std::string bytes(8, '\0');
  for (int i = 7; i >= 0; --i) {
    bytes[static_cast<std::size_t>(i)] = static_cast<char>(version & 0xff);
    version >>= 8;
  }
  return crypto::base64_encode(bytes);
}

// What the registry says about an identity: its generation and the registry part of the document.
struct identity_info {
  std::string generation_id;
  bj::object fields;
};

service::service(storage::kv& kv, registry::service& registry, const clock& clk, options opt)
    : kv_(kv), registry_(registry), clock_(clk), options_(opt) {}

namespace {

identity_info device_identity(const registry::device& d) {
  identity_info info;
  info.generation_id = d.generation_id;
  info.fields = identity_json(d);
  info.fields["status"] = registry::to_string(d.status);
  info.fields["statusReason"] = nullable(d.status_reason);
  info.fields["statusUpdateTime"] = time_or_min(d.status_updated);
  info.fields["capabilities"] = bj::object{{"iotEdge", d.iot_edge}};
  if (!d.device_scope.empty()) info.fields["deviceScope"] = d.device_scope;
  bj::array parents;
  for (const auto& p : d.parent_scopes) parents.emplace_back(p);
  info.fields["parentScopes"] = std::move(parents);
  return info;
}

identity_info module_identity(const registry::module& m) {
  identity_info info;
  info.generation_id = m.generation_id;
  info.fields = identity_json(m);
  info.fields["moduleId"] = m.module_id;
  return info;
}

}  // namespace

result<identity_info> service::lookup(const identity& who) {
  if (who.module_id.empty()) {
    auto d = registry_.get_device(who.device_id);
    if (!d) return d.error();
    return device_identity(*d);
  }
  auto m = registry_.get_module(who.device_id, who.module_id);
  if (!m) return m.error();
  return module_identity(*m);
}

std::optional<service::record> service::decode(const identity& who, std::string_view bytes,
                                               const std::string& generation_id) {
  auto v = json::parse(bytes);
  bj::object* o = v ? v->if_object() : nullptr;
  if (o == nullptr) {
    hub::log::get("twins")->warn("unreadable twin record for '{}' replaced by an empty twin", who.device_id);
    return std::nullopt;
  }
  if (json::get_string(*o, "g") != generation_id) return std::nullopt;  // an older generation's
  record r;
  r.generation_id = generation_id;
  if (const bj::value* ver = o->if_contains("v"); ver && ver->is_int64()) r.version = ver->get_int64();
  if (bj::value* t = o->if_contains("tags"); t && t->is_object()) r.tags = std::move(t->get_object());
  if (bj::value* d = o->if_contains("desired"); d && d->is_object()) r.desired = std::move(d->get_object());
  if (bj::value* p = o->if_contains("reported"); p && p->is_object()) r.reported = std::move(p->get_object());
  return r;
}

service::record service::fresh(const std::string& generation_id) const {
  record r;
  r.generation_id = generation_id;
  const sys_time now = clock_.now();
  r.desired = empty_properties(now, true);
  r.reported = empty_properties(now, false);
  return r;
}

result<service::record> service::load(const identity& who, const std::string& generation_id) {
  auto bytes = kv_.get(twin_key(who));
  if (!bytes) return bytes.error();
  if (*bytes) {
    if (auto r = decode(who, **bytes, generation_id)) return std::move(*r);
  }
  return fresh(generation_id);
}

result<void> service::store(const identity& who, const record& r) {
  storage::write_batch batch;
  batch.put(twin_key(who), json::serialize(bj::object{
                               {"g", r.generation_id},
                               {"v", r.version},
                               {"tags", r.tags},
                               {"desired", r.desired},
                               {"reported", r.reported},
                           }));
  return kv_.write(batch, true);
}

bj::object service::document(const identity_info& info, const record& r) const {
  bj::object doc = info.fields;
  doc["etag"] = etag_of(r.version);
  doc["version"] = r.version;
  doc["tags"] = r.tags;
  doc["properties"] = bj::object{{"desired", r.desired}, {"reported", r.reported}};
  return doc;
}

bj::object service::document(identity_info&& info, record&& r) const {
  bj::object doc = std::move(info.fields);
  doc["etag"] = etag_of(r.version);
  doc["version"] = r.version;
  doc["tags"] = std::move(r.tags);
  bj::object props;
  props.reserve(2);
  props.emplace("desired", std::move(r.desired));
  props.emplace("reported", std::move(r.reported));
  doc["properties"] = std::move(props);
  return doc;
}

result<bj::object> service::get(const identity& who) {
  auto info = lookup(who);
  if (!info) return info.error();
  auto r = load(who, info->generation_id);
  if (!r) return r.error();
  return document(*info, *r);
}

result<bj::object> service::update(const identity& who, const bj::value& body,
                                   const std::optional<std::string>& if_match) {
  return write(who, body, if_match, false);
}

result<bj::object> service::replace(const identity& who, const bj::value& body,
                                    const std::optional<std::string>& if_match) {
  return write(who, body, if_match, true);
}

result<bj::object> service::write(const identity& who, const bj::value& body,
                                  const std::optional<std::string>& if_match, bool replacing) {
  const bj::object* o = body.if_object();
  if (!o) return not_object("The twin");
  const bj::value* tags = o->if_contains("tags");
  const bj::value* desired = nullptr;
  if (const bj::value* props = o->if_contains("properties"); props && !props->is_null()) {
    if (!props->is_object()) return not_object("'properties'");
    if (props->get_object().contains("reported"))
      return make_error(errc::argument_invalid, "Reported properties can only be updated by the device");
    desired = props->get_object().if_contains("desired");
  }
  if (tags && tags->is_null()) tags = nullptr;
  if (desired && desired->is_null()) desired = nullptr;
  // Read-only members of a document read back ("$metadata", "$version") are ignored at the root.
  bj::object desired_patch;
  if (desired) {
    if (!desired->is_object()) return not_object("'Properties.Desired'");
    desired_patch = desired->get_object();
    desired_patch.erase("$metadata");
    desired_patch.erase("$version");
    if (auto v = validate_patch(desired_patch, section::desired, options_.lim); !v) return v.error();
  }
  if (tags) {
    if (auto v = validate_patch(*tags, section::tags, options_.lim); !v) return v.error();
  }

  auto info = lookup(who);
  if (!info) return info.error();
  std::optional<bj::object> pushed;
  twin_change change{who, replacing ? "replaceTwin" : "updateTwin", {}, clock_.now()};
  bj::object out;
  {
    std::scoped_lock lock(write_mutex_);
    auto r = load(who, info->generation_id);
    if (!r) return r.error();
    if (if_match && *if_match != "*" && *if_match != etag_of(r->version)) {
      return make_error(errc::precondition_failed,
                        fmt::format("The twin's etag is {}, not {}", etag_of(r->version), *if_match));
    }
    const sys_time now = change.at;
    const bool tags_change = replacing || tags;
    const bool desired_change = replacing || desired;
    if (tags_change) {
      bj::object empty;
      const bj::object& with = tags ? tags->get_object() : empty;
      if (replacing) twins::replace(r->tags, with, now, false, false);
      else twins::merge(r->tags, with, now, false, false);
      if (auto s = check_size(r->tags, section::tags, options_.lim); !s) return s.error();
    }
    if (desired_change) {
      if (replacing) twins::replace(r->desired, desired_patch, now, true, true);
      else twins::merge(r->desired, desired_patch, now, true, true);
      if (auto s = check_size(r->desired, section::desired, options_.lim); !s) return s.error();
    }
    if (!tags_change && !desired_change) return document(*info, *r);  // nothing to change
    ++r->version;
    if (auto w = store(who, *r); !w) return w.error();

    change.body["version"] = r->version;
    if (tags_change) change.body["tags"] = r->tags;
    if (desired_change) {
      bj::object patch = replacing ? without_metadata(r->desired) : desired_patch;
      patch["$version"] = version_of(r->desired);
      change.body["properties"] = bj::object{{"desired", patch}};
      pushed = std::move(patch);
    }
    out = document(*info, *r);
    // Under the lock: two changes to one twin reach its device in $version order.
    publish(who, std::move(pushed), std::move(change));
  }
  return out;
}

result<bj::object> service::device_view(const identity& who) {
  auto info = lookup(who);
  if (!info) return info.error();
  auto r = load(who, info->generation_id);
  if (!r) return r.error();
  return bj::object{{"desired", without_metadata(r->desired)}, {"reported", without_metadata(r->reported)}};
}

result<std::int64_t> service::patch_reported(const identity& who, const bj::value& patch) {
  bj::object cleaned;
  if (const bj::object* o = patch.if_object()) {
    cleaned = *o;
    cleaned.erase("$metadata");
    cleaned.erase("$version");
  }
  if (auto v = validate_patch(patch.is_object() ? bj::value(cleaned) : patch, section::reported, options_.lim); !v)
    return v.error();
  auto info = lookup(who);
  if (!info) return info.error();
  twin_change change{who, "updateTwin", {}, clock_.now()};
  std::int64_t version = 0;
  {
    std::scoped_lock lock(write_mutex_);
    auto r = load(who, info->generation_id);
    if (!r) return r.error();
    twins::merge(r->reported, cleaned, change.at, true, false);
    if (auto s = check_size(r->reported, section::reported, options_.lim); !s) return s.error();
    ++r->version;
    if (auto w = store(who, *r); !w) return w.error();
    version = version_of(r->reported);
    bj::object body = cleaned;
    body["$version"] = version;
    change.body = bj::object{{"version", r->version}, {"properties", bj::object{{"reported", std::move(body)}}}};
    publish(who, std::nullopt, std::move(change));
  }
  return version;
}

std::optional<bj::object> service::stored_twin(const identity& who) {
  auto bytes = kv_.get(twin_key(who));
  if (!bytes) return std::nullopt;
  std::string generation;
  if (*bytes) {
    auto v = json::parse(**bytes);
    if (const bj::object* o = v ? v->if_object() : nullptr) generation = json::get_string(*o, "g").value_or("");
  }
  auto r = load(who, generation);
  if (!r) return std::nullopt;
  bj::object doc{{"deviceId", who.device_id}};
  if (!who.module_id.empty()) doc["moduleId"] = who.module_id;
  doc["etag"] = etag_of(r->version);
  doc["version"] = r->version;
  doc["tags"] = r->tags;
  doc["properties"] = bj::object{{"desired", r->desired}, {"reported", r->reported}};
  return doc;
}

void service::on_registry_change(const registry::change& c) {
  if (c.what != registry::change::kind::device_deleted && c.what != registry::change::kind::module_deleted) return;
  storage::write_batch batch;
  if (c.what == registry::change::kind::module_deleted) {
    batch.del(twin_key({c.device_id, c.module_id}));
  } else {
    batch.del(twin_key({c.device_id, {}}));
    // The device's modules went with it.
    auto scanned = kv_.scan(fmt::format("twin/{}/", c.device_id), {}, [&](std::string_view key, std::string_view) {
      batch.del(std::string(key));
      return true;
    });
    if (!scanned) hub::log::get("twins")->warn("cannot list the module twins of '{}'", c.device_id);
  }
  // Not synced: a twin left behind by a crash belongs to an older generation and is never shown.
  if (auto w = kv_.write(batch, false); !w)
    hub::log::get("twins")->warn("cannot delete the twin of '{}': {}", c.device_id, w.error().message);
}

namespace {

constexpr std::string_view twin_prefix = "twin/";
constexpr std::size_t scan_chunk = 256;  // identities per registry read during a scan

// A scan position ("d1" or "d1/m1") to its registry record's identity.
identity identity_at(std::string_view position) {
  const auto slash = position.find('/');
  if (slash == std::string_view::npos) return {std::string(position), {}};
  return {std::string(position.substr(0, slash)), std::string(position.substr(slash + 1))};
}

std::string position_of(const registry::device& d) { return d.device_id; }
std::string position_of(const registry::module& m) { return fmt::format("{}/{}", m.device_id, m.module_id); }

// The stored twin records of the positions in (after, last], as (position, bytes) in order.
// Device twins ("twin/<d>") and module twins ("twin/<d>/<m>") share the prefix and interleave;
// only those of the scope are kept.
result<std::vector<std::pair<std::string, std::string>>> twin_records(storage::kv& kv, scope s, std::string_view after,
                                                                       std::string_view last) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string after_key = after.empty() ? std::string() : fmt::format("{}{}", twin_prefix, after);
  const std::string last_key = fmt::format("{}{}", twin_prefix, last);
  auto scanned = kv.scan(twin_prefix, after_key, [&](std::string_view key, std::string_view value) {
    if (key > last_key) return false;
    const std::string_view position = key.substr(twin_prefix.size());
    const bool is_module = position.find('/') != std::string_view::npos;
    if (is_module == (s == scope::modules)) out.emplace_back(position, value);
    return true;
  });
  if (!scanned) return scanned.error();
  return out;
}

}  // namespace

result<void> service::scan(scope s, std::string_view after, const visit_fn& fn) {
  std::string cursor(after);
  for (;;) {
    // A chunk of identities from the registry, then their twin records in one range read; the
    // two lists are in the same order, so a merge pairs them.
    std::vector<std::string> positions;
    std::vector<identity_info> infos;
    if (s == scope::devices) {
      auto devices = registry_.scan_devices(cursor, scan_chunk);
      if (!devices) return devices.error();
      for (const auto& d : *devices) {
        positions.push_back(position_of(d));
        infos.push_back(device_identity(d));
      }
    } else {
      auto modules = registry_.scan_modules(cursor, scan_chunk);
      if (!modules) return modules.error();
      for (const auto& m : *modules) {
        positions.push_back(position_of(m));
        infos.push_back(module_identity(m));
      }
    }
    if (positions.empty()) return {};
    auto records = twin_records(kv_, s, cursor, positions.back());
    if (!records) return records.error();

    std::size_t next = 0;
    for (std::size_t i = 0; i < positions.size(); ++i) {
      while (next < records->size() && (*records)[next].first < positions[i]) ++next;
      std::optional<record> r;
      if (next < records->size() && (*records)[next].first == positions[i]) {
        r = decode(identity_at(positions[i]), (*records)[next].second, infos[i].generation_id);
      }
      if (!r) r = fresh(infos[i].generation_id);
      bj::object doc = document(std::move(infos[i]), std::move(*r));
      if (!fn(positions[i], doc)) return {};
    }
    if (positions.size() < scan_chunk) return {};
    cursor = std::move(positions.back());
  }
}

std::vector<twin_change> service::recent_changes() const {
  std::scoped_lock lock(changes_mutex_);
  return {changes_.begin(), changes_.end()};
}

void service::publish(const identity& who, std::optional<bj::object> desired_patch, twin_change change) {
  if (desired_patch && desired_listener_) desired_listener_(who, *desired_patch);
  if (change_listener_) change_listener_(change);
  std::scoped_lock lock(changes_mutex_);
  changes_.push_back(std::move(change));
  while (changes_.size() > options_.recent_changes) changes_.pop_front();
}

}  // namespace hub::twins
