#include "domain/twins/document.hpp"

#include "base/json.hpp"

#include <fmt/format.h>

namespace hub::twins {

namespace {

constexpr std::string_view metadata_key = "$metadata";
constexpr std::string_view version_key = "$version";

error invalid(std::string text) { return make_error(errc::argument_invalid, std::move(text)); }

// A key for the error text: long keys cut, so a 1 KB key does not fill the reply.
std::string shown(std::string_view key) {
  return key.size() > 40 ? fmt::format("{}...", key.substr(0, 40)) : std::string(key);
}

result<void> check_key(std::string_view key, const limits& lim) {
  if (key.empty()) return invalid("Property names cannot be empty");
  if (key.size() > lim.key_bytes)
    return invalid(fmt::format("Length of property name {} exceeds maximum length of {}", shown(key), lim.key_bytes));
  for (unsigned char c : key) {
    // C0 and DEL here; C1 controls arrive as UTF-8 (0xC2 0x80-0x9F) and are checked below.
    if (c < 0x20 || c == 0x7f || c == '.' || c == '$' || c == '#' || c == ' ')
      return invalid(fmt::format("Property name {} contains an invalid character", shown(key)));
  }
  for (std::size_t i = 0; i + 1 < key.size(); ++i) {
    const auto a = static_cast<unsigned char>(key[i]);
    const auto b = static_cast<unsigned char>(key[i + 1]);
    if (a == 0xc2 && b >= 0x80 && b <= 0x9f)
      return invalid(fmt::format("Property name {} contains an invalid character", shown(key)));
  }
  return {};
}

result<void> check_value(std::string_view name, const bj::value& v, std::size_t depth, bool in_array,
                         const limits& lim) {
  switch (v.kind()) {
    case bj::kind::null:
      if (in_array) return invalid(fmt::format("Arrays cannot contain 'null' as value (property {})", shown(name)));
      return {};
    case bj::kind::bool_:
    case bj::kind::double_:
      return {};
    case bj::kind::int64:
      if (v.get_int64() > lim.max_integer || v.get_int64() < lim.min_integer)
        return invalid(fmt::format("Property {} has an out of bound value. Valid values are between {} and {}",
                                   shown(name), lim.min_integer, lim.max_integer));
      return {};
    case bj::kind::uint64:
      if (v.get_uint64() > static_cast<std::uint64_t>(lim.max_integer))
        return invalid(fmt::format("Property {} has an out of bound value. Valid values are between {} and {}",
                                   shown(name), lim.min_integer, lim.max_integer));
      return {};
    case bj::kind::string:
      if (v.get_string().size() > lim.string_bytes)
        return invalid(fmt::format("Value associated with property name {} has length {} that exceeds maximum length of {}",
                                   shown(name), v.get_string().size(), lim.string_bytes));
      return {};
    case bj::kind::array:
      if (depth > lim.depth) return invalid(fmt::format("Nested depth of twin property exceeds {}", lim.depth));
      for (const bj::value& item : v.get_array()) {
        if (auto r = check_value(name, item, depth + 1, true, lim); !r) return r;
      }
      return {};
    case bj::kind::object:
      if (depth > lim.depth) return invalid(fmt::format("Nested depth of twin property exceeds {}", lim.depth));
      for (const auto& member : v.get_object()) {
        if (auto r = check_key(member.key(), lim); !r) return r;
        if (auto r = check_value(member.key(), member.value(), depth + 1, in_array, lim); !r) return r;
      }
      return {};
  }
  return {};
}

// Removes members set to null, recursively: a new subtree in a merge patch has nothing to delete.
bj::value without_nulls(const bj::value& v) {
  if (!v.is_object()) return v;
  bj::object out;
  for (const auto& member : v.get_object()) {
    if (member.value().is_null()) continue;
    out.emplace(member.key(), without_nulls(member.value()));
  }
  return out;
}

// The metadata of a value: the stamp at its node and, for objects, at every member.
bj::object metadata_of(const bj::value& v, const bj::object& stamp) {
  bj::object meta = stamp;
  if (v.is_object()) {
    for (const auto& member : v.get_object()) meta[member.key()] = metadata_of(member.value(), stamp);
  }
  return meta;
}

void stamp_node(bj::object& meta, const bj::object& stamp) {
  for (const auto& member : stamp) meta[member.key()] = member.value();
}

bj::object& child_object(bj::object& parent, std::string_view key) {
  bj::value& v = parent[key];
  if (!v.is_object()) v = bj::object{};
  return v.as_object();
}

void merge_level(bj::object& target, bj::object* meta, const bj::object& patch, const bj::object& stamp) {
  for (const auto& member : patch) {
    const std::string_view key = member.key();
    const bj::value& v = member.value();
    if (v.is_null()) {
      target.erase(key);
      if (meta) meta->erase(key);
      continue;
    }
    bj::value* existing = target.if_contains(key);
    if (v.is_object() && existing && existing->is_object()) {
      bj::object* child_meta = meta ? &child_object(*meta, key) : nullptr;
      merge_level(existing->as_object(), child_meta, v.get_object(), stamp);
      if (child_meta) stamp_node(*child_meta, stamp);
      continue;
    }
    target[key] = without_nulls(v);
    if (meta) (*meta)[key] = metadata_of(target[key], stamp);
  }
}

bj::object stamp_for(sys_time at, bool desired, std::int64_t version) {
  bj::object stamp{{"$lastUpdated", to_iso8601(at)}};
  if (desired) stamp["$lastUpdatedVersion"] = version;
  return stamp;
}

}  // namespace

std::string_view section_name(section s) noexcept {
  switch (s) {
    case section::tags: return "'Tags'";
    case section::desired: return "'Properties.Desired'";
    case section::reported: return "'Properties.Reported'";
  }
  return "'Tags'";
}

result<void> validate_patch(const bj::value& patch, section s, const limits& lim) {
  if (!patch.is_object())
    return invalid(fmt::format("{} must be a JSON object", section_name(s)));
  return check_value({}, patch, 0, false, lim);
}

result<void> check_size(const bj::object& props, section s, const limits& lim) {
  const std::size_t limit = s == section::tags ? lim.tags_bytes : lim.properties_bytes;
  bj::object counted = without_metadata(props);
  counted.erase(version_key);
  const std::size_t size = json::serialize(counted).size();
  if (size > limit) return invalid(fmt::format("{} size should be less than {} bytes.", section_name(s), limit));
  return {};
}

bj::object empty_properties(sys_time at, bool desired) {
  bj::object meta{{"$lastUpdated", to_iso8601(at)}};
  if (desired) meta["$lastUpdatedVersion"] = 1;
  return bj::object{{metadata_key, std::move(meta)}, {version_key, 1}};
}

void merge(bj::object& props, const bj::object& patch, sys_time at, bool versioned, bool desired) {
  const std::int64_t next = version_of(props) + 1;
  const bj::object stamp = stamp_for(at, desired, next);
  // The metadata tree is taken out while the properties change: inserting into `props` may move
  // its members, so no pointer into it may be held across the merge.
  bj::object meta;
  if (versioned) {
    if (bj::value* m = props.if_contains(metadata_key); m && m->is_object()) meta = std::move(m->as_object());
    props.erase(metadata_key);
  }
  merge_level(props, versioned ? &meta : nullptr, patch, stamp);
  if (versioned) {
    stamp_node(meta, stamp);
    props[metadata_key] = std::move(meta);
    props[version_key] = next;
  }
}

void replace(bj::object& props, const bj::object& with, sys_time at, bool versioned, bool desired) {
  const std::int64_t next = version_of(props) + 1;
  bj::object fresh;
  for (const auto& member : with) {
    if (member.key() == metadata_key || member.key() == version_key || member.value().is_null()) continue;
    fresh.emplace(member.key(), without_nulls(member.value()));
  }
  if (versioned) {
    const bj::object stamp = stamp_for(at, desired, next);
    fresh[metadata_key] = metadata_of(without_metadata(fresh), stamp);
    fresh[version_key] = next;
  }
  props = std::move(fresh);
}

bj::object without_metadata(const bj::object& props) {
  bj::object out = props;
  out.erase(metadata_key);
  return out;
}

std::int64_t version_of(const bj::object& props) noexcept {
  const bj::value* v = props.if_contains(version_key);
  if (v && v->is_int64()) return v->get_int64();
  if (v && v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return 0;
}

}  // namespace hub::twins
