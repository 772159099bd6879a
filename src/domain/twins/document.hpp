#pragma once
// The pure part of twins: one twin's properties as IoT Hub keeps them, and the rules for changing
// them (protocol/semantics.md §3). No storage, no clock of its own: times are passed in.
//
// A section (tags, desired, reported) is a JSON object. desired and reported carry "$version"
// and a "$metadata" tree mirroring their properties, with "$lastUpdated" at every level
// (desired also "$lastUpdatedVersion"), exactly as GET /twins/{id} shows them.
#include "base/clock.hpp"
#include "base/error.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace hub::twins {

namespace bj = boost::json;

enum class section { tags, desired, reported };
// "tags", "'Properties.Desired'", ... as IoT Hub names them in its error texts.
std::string_view section_name(section s) noexcept;

struct limits {
  std::size_t tags_bytes = 8 * 1024;          // serialised size of tags
  std::size_t properties_bytes = 32 * 1024;   // of desired, and of reported (without $metadata/$version)
  std::size_t key_bytes = 1024;
  std::size_t string_bytes = 4 * 1024;
  std::size_t depth = 10;                     // nested objects below the section's root
  std::int64_t max_integer = 4'503'599'627'370'495;   // 2^52 - 1
  std::int64_t min_integer = -4'503'599'627'370'496;  // -2^52
};

// Checks a patch (or a replacement) for a section: an object; keys of at most key_bytes, without
// control characters, '.', '$', '#' or whitespace; values null (delete; not inside arrays),
// booleans, numbers (integers within ±2^52), strings up to string_bytes, objects, arrays; depth.
// ArgumentInvalid with a text that names the offending key.
result<void> validate_patch(const bj::value& patch, section s, const limits& lim = {});
// The section's size as IoT Hub counts it (its JSON text without "$metadata" and "$version"):
// ArgumentInvalid past the section's limit.
result<void> check_size(const bj::object& props, section s, const limits& lim = {});

// A fresh desired or reported section: {"$metadata":{"$lastUpdated":at},"$version":1}.
bj::object empty_properties(sys_time at, bool desired);

// Applies a JSON merge patch to a section in place: members set to null are removed, objects
// merge recursively, everything else replaces. For desired and reported the "$metadata" tree
// follows (every touched level gets "$lastUpdated" = at; desired also "$lastUpdatedVersion") and
// "$version" goes up by one. `patch` must have passed validate_patch.
void merge(bj::object& props, const bj::object& patch, sys_time at, bool versioned, bool desired);
// Replaces a section's properties entirely (PUT twin), with fresh metadata and "$version" + 1.
void replace(bj::object& props, const bj::object& with, sys_time at, bool versioned, bool desired);

// The section without "$metadata" (devices get {desired, reported} with "$version" only).
bj::object without_metadata(const bj::object& props);
std::int64_t version_of(const bj::object& props) noexcept;

}  // namespace hub::twins
