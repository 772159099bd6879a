// The identity registry over REST, as azure-iothub's Registry calls it (service.md §3.1):
// devices, modules, bulk operations and statistics. Each handler translates wire <-> domain
// and leaves every decision to registry::service.
#include "base/json.hpp"
#include "base/text.hpp"
#include "domain/connections/connection_table.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace hub::http::detail {
namespace {

namespace bj = boost::json;

// IoT Hub refuses bulk registry calls with more than 100 identities (the SDKs check it too).
constexpr std::size_t max_bulk_items = 100;
// GET /devices returns at most 1000 devices, as IoT Hub's does; callers page with queries.
constexpr std::size_t max_list_devices = 1000;

response fail(const route_context& c, const error& e) { return error_response(e, c.svc.clk); }
response fail(const route_context& c, errc code, std::string message) {
  return error_of(code, std::move(message), c.svc.clk);
}

// The id inside a body must name the same identity as the path. An absent id is taken from the
// path, so hand-written requests that omit it still work.
result<void> bind_id(bj::object& body, std::string_view key, std::string_view path_id) {
  const auto* v = body.if_contains(key);
  if (v == nullptr || v->is_null()) {
    body[key] = path_id;
    return {};
  }
  if (!v->is_string() || v->get_string() != path_id) {
    return make_error(errc::argument_invalid,
                      fmt::format("The {} in the request body does not match the one in the request path", key));
  }
  return {};
}

// Every device the SDK receives goes through `new Device(json)`, which throws (inside a
// callback: a process crash) without deviceId, so it is guaranteed here whatever to_json does.
bj::object device_json(const registry::device& d) {
  bj::object o = registry::to_json(d);
  if (!o.contains("deviceId")) o["deviceId"] = d.device_id;
  return o;
}

bj::object module_json(const registry::module& m) {
  bj::object o = registry::to_json(m);
  if (!o.contains("deviceId")) o["deviceId"] = m.device_id;
  if (!o.contains("moduleId")) o["moduleId"] = m.module_id;
  return o;
}

// ---- devices ----------------------------------------------------------------------------

response get_device(const route_context& c) {
  auto d = c.svc.registry.get_device(c.device_id);
  if (!d) return fail(c, d.error());
  return json_response(200, device_json(*d), d->etag);
}

// PUT /devices/{id}: without If-Match it creates (409 if the id exists, which is how Registry.create
// reports duplicates); with If-Match it updates, "*" unconditionally (Registry.update always
// sends "*").
response put_device(const route_context& c) {
  auto body = body_object(c.req);
  if (!body) return fail(c, body.error());
  if (auto bound = bind_id(*body, "deviceId", c.device_id); !bound) return fail(c, bound.error());
  auto dev = registry::device_from_json(*body);
  if (!dev) return fail(c, dev.error());

  auto saved = c.svc.registry.put_device(std::move(*dev), if_match_of(c.req));
  if (!saved) return fail(c, saved.error());
  return json_response(200, device_json(*saved), saved->etag);
}

response delete_device(const route_context& c) {
  auto done = c.svc.registry.delete_device(c.device_id, if_match_of(c.req));
  if (!done) return fail(c, done.error());
  return no_content();
}

response list_devices(const route_context& c) {
  std::size_t top = max_list_devices;
  if (const auto text_top = c.query_value("top")) {
    const auto n = text::parse_int(*text_top);
    if (!n || *n < 1) return fail(c, errc::argument_invalid, "top must be a positive integer");
    top = std::min<std::size_t>(static_cast<std::size_t>(*n), max_list_devices);
  }
  auto devices = c.svc.registry.list_devices(top);
  if (!devices) return fail(c, devices.error());
  bj::array out;
  out.reserve(devices->size());
  for (const auto& d : *devices) out.emplace_back(device_json(d));
  return json_response(200, out);
}

// ---- bulk -------------------------------------------------------------------------------

// importMode as Registry sends it ("create", "Update", "UpdateIfMatchETag", "Delete",
// "DeleteIfMatchETag": mixed case), matched case-insensitively like IoT Hub does.
std::optional<registry::import_mode> import_mode_of(std::string_view s) {
  using m = registry::import_mode;
  if (text::iequals(s, "create")) return m::create;
  if (text::iequals(s, "update")) return m::update;
  if (text::iequals(s, "updateIfMatchETag")) return m::update_if_match_etag;
  if (text::iequals(s, "delete")) return m::remove;
  if (text::iequals(s, "deleteIfMatchETag")) return m::remove_if_match_etag;
  return std::nullopt;
}

// One ExportImportDevice item: the device's own fields with "id" for deviceId, plus importMode
// and, for the *IfMatchETag modes, the etag ("eTag" in IoT Hub's schema, "etag" from Node).
result<registry::bulk_item> bulk_item_of(const bj::value& v, std::size_t index) {
  const auto* item = v.if_object();
  if (item == nullptr) return make_error(errc::argument_invalid, fmt::format("Bulk item {} is not an object", index));
  const auto id = json::get_string(*item, "id");
  if (!id || id->empty()) return make_error(errc::argument_null, fmt::format("Bulk item {} has no id", index));
  if (const auto mid = json::get_string(*item, "moduleId"); mid && !mid->empty()) {
    return make_error(errc::argument_invalid, "Bulk operations on modules are not supported");
  }
  const auto mode_text = json::get_string(*item, "importMode");
  const auto mode = mode_text ? import_mode_of(*mode_text) : std::nullopt;
  if (!mode) {
    return make_error(errc::argument_invalid,
                      fmt::format("Bulk item '{}' needs an importMode among create, update, updateIfMatchETag, "
                                  "delete and deleteIfMatchETag",
                                  *id));
  }

  bj::object fields = *item;
  fields.erase("id");
  fields.erase("importMode");
  fields["deviceId"] = *id;
  auto dev = registry::device_from_json(fields);
  if (!dev) return dev.error();
  if (auto etag = json::get_string(*item, "eTag")) {
    dev->etag = std::move(*etag);
  } else if (auto lower = json::get_string(*item, "etag")) {
    dev->etag = std::move(*lower);
  }
  return registry::bulk_item{*mode, std::move(*dev)};
}

bj::object bulk_json(const registry::bulk_result& r) {
  bj::array errors;
  for (const auto& e : r.errors) {
    bj::object o;
    o["deviceId"] = e.device_id;
    o["errorCode"] = error_name(e.code);
    o["errorStatus"] = e.message;
    o["moduleId"] = e.module_id.empty() ? bj::value(nullptr) : bj::value(e.module_id);
    o["operation"] = e.operation;
    errors.emplace_back(std::move(o));
  }
  bj::object out;
  out["isSuccessful"] = r.is_successful;
  out["errors"] = std::move(errors);
  out["warnings"] = bj::array{};
  return out;
}

// POST /devices. Malformed requests fail as a whole with the legacy error body; per-identity
// failures (including an id named twice, DeviceDefinedMultipleTimes) come back as IoT Hub does it: 400,
// iothub-errorcode BulkRegistryOperationFailure and the BulkRegistryOperationResult body (the .NET SDK special-cases
// that header and returns the result; Node surfaces an ArgumentError whose responseBody is the result).
response bulk_devices(const route_context& c) {
  auto v = json::parse(c.req.body);
  if (!v) return fail(c, v.error());
  const auto* items = v->if_array();
  if (items == nullptr) return fail(c, errc::argument_invalid, "The request body must be a JSON array of devices");
  if (items->empty()) return fail(c, errc::argument_invalid, "The device array is empty");
  if (items->size() > max_bulk_items) {
    // 413 TooManyDevices: the .NET SDK maps that status to TooManyDevicesException for bulk calls.
    return fail(c, errc::too_many_devices,
                fmt::format("A bulk operation takes at most {} devices, not {}", max_bulk_items, items->size()));
  }

  std::vector<registry::bulk_item> batch;
  batch.reserve(items->size());
  for (std::size_t i = 0; i < items->size(); ++i) {
    auto item = bulk_item_of((*items)[i], i);
    if (!item) return fail(c, item.error());
    batch.push_back(std::move(*item));
  }

  const auto outcome = c.svc.registry.bulk(std::move(batch));
  if (outcome.is_successful) return json_response(200, bulk_json(outcome));
  response r = json_response(400, bulk_json(outcome));
  r.headers.emplace_back("iothub-errorcode", std::string(error_name(errc::bulk_registry_operation_failure)));
  return r;
}

// ---- modules ----------------------------------------------------------------------------

response list_modules(const route_context& c) {
  auto modules = c.svc.registry.list_modules(c.device_id);
  if (!modules) return fail(c, modules.error());
  bj::array out;
  out.reserve(modules->size());
  for (const auto& m : *modules) out.emplace_back(module_json(m));
  return json_response(200, out);
}

response get_module(const route_context& c) {
  auto m = c.svc.registry.get_module(c.device_id, c.module_id);
  if (!m) return fail(c, m.error());
  return json_response(200, module_json(*m), m->etag);
}

// Same create/update split as devices: Registry.addModule sends no If-Match, updateModule
// sends the module's etag or "*".
response put_module(const route_context& c) {
  auto body = body_object(c.req);
  if (!body) return fail(c, body.error());
  if (auto bound = bind_id(*body, "deviceId", c.device_id); !bound) return fail(c, bound.error());
  if (auto bound = bind_id(*body, "moduleId", c.module_id); !bound) return fail(c, bound.error());
  auto mod = registry::module_from_json(*body);
  if (!mod) return fail(c, mod.error());

  auto saved = c.svc.registry.put_module(std::move(*mod), if_match_of(c.req));
  if (!saved) return fail(c, saved.error());
  return json_response(200, module_json(*saved), saved->etag);
}

response delete_module(const route_context& c) {
  auto done = c.svc.registry.delete_module(c.device_id, c.module_id, if_match_of(c.req));
  if (!done) return fail(c, done.error());
  return no_content();
}

// ---- statistics -------------------------------------------------------------------------

response device_statistics(const route_context& c) {
  auto s = c.svc.registry.stats();
  if (!s) return fail(c, s.error());
  bj::object o;
  o["totalDeviceCount"] = s->total;
  o["enabledDeviceCount"] = s->enabled;
  o["disabledDeviceCount"] = s->disabled;
  return json_response(200, o);
}

// Connected devices (modules not counted), from the connection table.
response service_statistics(const route_context& c) {
  bj::object o;
  o["connectedDeviceCount"] = c.svc.connections ? static_cast<std::int64_t>(c.svc.connections->connected_devices()) : 0;
  return json_response(200, o);
}

using p = auth::permission;

// Literal routes before placeholder ones with the same shape, so a later "devices/query" wins
// over "devices/{id}".
constexpr route table[] = {
    {"GET", "devices", p::registry_read, list_devices},
    {"POST", "devices", p::registry_write, bulk_devices},
    {"GET", "devices/{id}", p::registry_read, get_device},
    {"PUT", "devices/{id}", p::registry_write, put_device},
    {"DELETE", "devices/{id}", p::registry_write, delete_device},
    {"GET", "devices/{id}/modules", p::registry_read, list_modules},
    {"GET", "devices/{id}/modules/{mid}", p::registry_read, get_module},
    {"PUT", "devices/{id}/modules/{mid}", p::registry_write, put_module},
    {"DELETE", "devices/{id}/modules/{mid}", p::registry_write, delete_module},
    {"GET", "statistics/devices", p::registry_read, device_statistics},
    {"GET", "statistics/service", p::service_connect, service_statistics},
};

}  // namespace

std::span<const route> registry_routes() { return table; }

}  // namespace hub::http::detail
