// libFuzzer target for the pure twin document rules (domain/twins/document.hpp): patches as JSON
// text, applied one after another to a section, as PATCH /twins, the MQTT reported-properties
// PATCH and the AMQP twin link do. Input:
//
//   first line     the section and mode: "desired" (default), "reported" or "tags", and "replace"
//                  for PUT-style replacement instead of a merge
//   then           patches separated by a line "---" (at most 16)
//
// For each patch that parses: validate_patch agrees with an independent reading of IoT Hub's rules
// (keys, values, nulls in arrays, depth, integer range, string length) both ways; an accepted
// patch is merged (or replaces), and then
// - the data (without $metadata, $version) equals an RFC 7386 merge of the data before (or the
//   replacement without nulls);
// - desired/reported: $version went up by exactly one; $metadata mirrors the tree (one node per
//   member at every level, nothing else), every node touched by the patch carries the patch's time
//   (and, for desired, its version), every node it did not touch is unchanged;
// - tags carry neither $version nor $metadata;
// - check_size refuses exactly when the counted text passes the section's limit (the section then
//   stays as it was, as the service does);
// - the document serialises and parses back to itself.
#include "base/clock.hpp"
#include "base/json.hpp"
#include "domain/twins/document.hpp"

#include <boost/json/serialize.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace hub;
namespace bj = boost::json;
using twins::section;

#define CHECK(cond)            \
  do {                         \
    if (!(cond)) std::abort(); \
  } while (0)

const twins::limits lim{};

// ---- IoT Hub's rules, read independently -----------------------------------------------------
bool key_ok(std::string_view k) {
  if (k.empty() || k.size() > lim.key_bytes) return false;
  for (std::size_t i = 0; i < k.size(); ++i) {
    const auto c = static_cast<unsigned char>(k[i]);
    if (c < 0x20 || c == 0x7f || c == '.' || c == '$' || c == '#' || c == ' ') return false;
    // C1 controls, U+0080..U+009F, in UTF-8.
    if (c == 0xc2 && i + 1 < k.size()) {
      const auto n = static_cast<unsigned char>(k[i + 1]);
      if (n >= 0x80 && n <= 0x9f) return false;
    }
  }
  return true;
}

// depth: of `v` below the section's root (the root object is 0).
bool value_ok(const bj::value& v, std::size_t depth, bool in_array) {
  switch (v.kind()) {
    case bj::kind::null: return !in_array;
    case bj::kind::bool_:
    case bj::kind::double_: return true;
    case bj::kind::int64: return v.get_int64() >= lim.min_integer && v.get_int64() <= lim.max_integer;
    case bj::kind::uint64: return v.get_uint64() <= static_cast<std::uint64_t>(lim.max_integer);
    case bj::kind::string: return v.get_string().size() <= lim.string_bytes;
    case bj::kind::array:
      if (depth > lim.depth) return false;
      for (const auto& item : v.get_array())
        if (!value_ok(item, depth + 1, true)) return false;
      return true;
    case bj::kind::object:
      if (depth > lim.depth) return false;
      for (const auto& m : v.get_object())
        if (!key_ok(m.key()) || !value_ok(m.value(), depth + 1, in_array)) return false;
      return true;
  }
  return false;
}

// ---- RFC 7386 --------------------------------------------------------------------------------
bj::value merge_patch(const bj::value& target, const bj::value& patch) {
  if (!patch.is_object()) return patch;
  bj::object out = target.is_object() ? target.get_object() : bj::object{};
  for (const auto& m : patch.get_object()) {
    if (m.value().is_null()) {
      out.erase(m.key());
    } else {
      const bj::value* t = out.if_contains(m.key());
      out[m.key()] = merge_patch(t ? *t : bj::value(nullptr), m.value());
    }
  }
  return out;
}

bj::object data_of(const bj::object& props) {
  bj::object d = twins::without_metadata(props);
  d.erase("$version");
  return d;
}

bool is_stamp_key(std::string_view k) { return k == "$lastUpdated" || k == "$lastUpdatedVersion"; }

// $metadata mirrors the data: every member has a node, and a node has nothing else but stamps.
void check_mirror(const bj::object& data, const bj::object& meta, bool desired) {
  const bj::value* at = meta.if_contains("$lastUpdated");
  CHECK(at && at->is_string());
  const bj::value* ver = meta.if_contains("$lastUpdatedVersion");
  CHECK(desired ? (ver && ver->is_int64()) : ver == nullptr);
  for (const auto& m : meta) {
    if (is_stamp_key(m.key())) continue;
    CHECK(data.contains(m.key()));
  }
  for (const auto& m : data) {
    const bj::value* node = meta.if_contains(m.key());
    CHECK(node && node->is_object());
    if (m.value().is_object()) {
      check_mirror(m.value().get_object(), node->get_object(), desired);
    } else {
      for (const auto& n : node->get_object()) CHECK(is_stamp_key(n.key()));
      check_mirror(bj::object{}, node->get_object(), desired);
    }
  }
}

// Every node of the subtree carries the stamp.
void check_all_stamped(const bj::object& meta, const bj::object& stamp) {
  for (const auto& s : stamp) {
    const bj::value* v = meta.if_contains(s.key());
    CHECK(v && *v == s.value());
  }
  for (const auto& m : meta) {
    if (!is_stamp_key(m.key())) check_all_stamped(m.value().as_object(), stamp);
  }
}

// Touched nodes carry the stamp, untouched ones are what they were. `patch` is the patch's object
// at this level; `before` the data before it at this level (an object, or null when replaced).
void check_stamps(const bj::object& data_after, const bj::object& meta_after, const bj::object* meta_before,
                  const bj::object& patch, const bj::value* data_before, const bj::object& stamp) {
  for (const auto& s : stamp) CHECK(meta_after.at(s.key()) == s.value());
  for (const auto& m : data_after) {
    const bj::value* p = patch.if_contains(m.key());
    const bj::object& node = meta_after.at(m.key()).as_object();
    if (p == nullptr) {
      // Untouched: the node is as it was.
      CHECK(meta_before != nullptr);
      const bj::value* old = meta_before->if_contains(m.key());
      CHECK(old && *old == node);
      continue;
    }
    CHECK(!p->is_null());
    const bj::value* old_data =
        data_before && data_before->is_object() ? data_before->get_object().if_contains(m.key()) : nullptr;
    if (p->is_object() && old_data && old_data->is_object()) {
      const bj::value* old_meta = meta_before ? meta_before->if_contains(m.key()) : nullptr;
      check_stamps(m.value().get_object(), node, old_meta && old_meta->is_object() ? &old_meta->get_object() : nullptr,
                   p->get_object(), old_data, stamp);
    } else {
      check_all_stamped(node, stamp);
    }
  }
}

struct mode {
  section s = section::desired;
  bool replace = false;
};

mode parse_mode(std::string_view line) {
  mode m;
  if (line.find("reported") != std::string_view::npos) m.s = section::reported;
  if (line.find("tags") != std::string_view::npos) m.s = section::tags;
  m.replace = line.find("replace") != std::string_view::npos;
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto nl = in.find('\n');
  const mode md = parse_mode(in.substr(0, nl));
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);

  const bool versioned = md.s != section::tags;
  const bool desired = md.s == section::desired;
  manual_clock clk;
  bj::object props = versioned ? twins::empty_properties(clk.now(), desired) : bj::object{};

  for (int round = 0; round < 16 && !in.empty(); ++round) {
    const auto sep = in.find("\n---\n");
    const std::string_view text = in.substr(0, sep);
    in = sep == std::string_view::npos ? std::string_view{} : in.substr(sep + 5);
    clk.advance(std::chrono::seconds(1));

    auto parsed = json::parse(text);
    if (!parsed) continue;
    const bj::value& patch = *parsed;

    auto valid = twins::validate_patch(patch, md.s, lim);
    const bool expected = patch.is_object() && value_ok(patch, 0, false);
    CHECK(valid.has_value() == expected);
    if (!valid) {
      CHECK(valid.error().code == errc::argument_invalid && !valid.error().message.empty());
      continue;
    }

    const bj::object before = props;
    const std::int64_t version_before = twins::version_of(before);
    if (md.replace) {
      twins::replace(props, patch.get_object(), clk.now(), versioned, desired);
    } else {
      twins::merge(props, patch.get_object(), clk.now(), versioned, desired);
    }

    // The data: an RFC 7386 merge (a replacement is a merge into nothing).
    const bj::value want = merge_patch(md.replace ? bj::value(bj::object{}) : bj::value(data_of(before)), patch);
    CHECK(bj::value(data_of(props)) == want);

    if (versioned) {
      CHECK(twins::version_of(props) == version_before + 1);
      const bj::value* meta = props.if_contains("$metadata");
      CHECK(meta && meta->is_object());
      check_mirror(data_of(props), meta->get_object(), desired);
      bj::object stamp{{"$lastUpdated", to_iso8601(clk.now())}};
      if (desired) stamp["$lastUpdatedVersion"] = version_before + 1;
      const bj::value before_data = md.replace ? bj::value(nullptr) : bj::value(data_of(before));
      const bj::value* meta_before = md.replace ? nullptr : before.if_contains("$metadata");
      check_stamps(data_of(props), meta->get_object(), meta_before ? &meta_before->get_object() : nullptr,
                   patch.get_object(), &before_data, stamp);
    } else {
      CHECK(!props.contains("$version") && !props.contains("$metadata"));
    }

    // Size as IoT Hub counts it; over the limit, the service keeps the section as it was.
    const std::size_t counted = json::serialize(data_of(props)).size();
    const std::size_t limit = md.s == section::tags ? lim.tags_bytes : lim.properties_bytes;
    auto sized = twins::check_size(props, md.s, lim);
    CHECK(sized.has_value() == (counted <= limit));
    if (!sized) {
      props = before;
      continue;
    }

    // Round trip through text.
    auto back = json::parse(json::serialize(props), json::parse_limits{64, 16 * 1024 * 1024});
    CHECK(back.has_value() && *back == bj::value(props));
  }
  return 0;
}
