// libFuzzer target for SAS tokens (domain/auth): the input is a token's text, as it arrives in an
// Authorization header, an MQTT password or a CBS put-token. It must never crash the parser or the
// checks, and they must agree with themselves:
//
// - parse_sas_token: a refusal is Unauthorized with a message that does not echo the signature; a
//   token that parses rebuilds (sr as sent, sig and skn encoded again, se) into a text that parses
//   to the same fields;
// - authorize / authenticate_device over a registry and the hub's policies (fixed keys, manual
//   clock): whatever they accept is unexpired, within scope and signed with a key of the hub;
// - a token minted from the parsed fields (resource, skn, se; or the raw input as the resource)
//   with the right key is accepted exactly when the rules say so (policy exists and has the
//   permission, not expired, scope covers the target; the device exists and is enabled), and the
//   same token with one signature character changed is refused;
// - scope_covers: a scope that covers itself also covers anything below it (unless appending
//   "/x" forms a scheme: "https:/" + "/x").
#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "domain/auth/policies.hpp"
#include "domain/auth/sas.hpp"
#include "domain/auth/service.hpp"
#include "domain/registry/service.hpp"
#include "storage/kv.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>

namespace {

using namespace hub;
using auth::permission;

constexpr std::string_view host = "fuzz-hub.azure-devices.net";
// Fixed keys (base64 of 32 bytes), so a finding replays exactly.
constexpr std::string_view owner_key = "ZnV6ei1vd25lci1rZXktMDEyMzQ1Njc4OWFiY2RlZmc=";
constexpr std::string_view service_key = "ZnV6ei1zZXJ2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGU=";
constexpr std::string_view device_policy_key = "ZnV6ei1kZXZpY2UtcG9saWN5LWtleS0wMTIzNDU2Nzg=";
constexpr std::string_view d1_key = "ZnV6ei1kZXZpY2Uta2V5LWQxLTAxMjM0NTY3ODlhYmM=";
constexpr std::string_view m1_key = "ZnV6ei1tb2R1bGUta2V5LW0xLTAxMjM0NTY3ODlhYmM=";
constexpr std::string_view other_key = "b3RoZXIta2V5LW5vYm9keS1ob2xkcy0wMTIzNDU2Nzg=";

struct world {
  manual_clock clk;
  std::unique_ptr<storage::kv> kv = storage::make_memory_kv();
  registry::service reg{*kv, clk};
  auth::service auth{auth::hub_identity{std::string(host),
                                        {
                                            {"iothubowner", std::string(owner_key), std::string(other_key),
                                             permission::registry_read | permission::registry_write |
                                                 permission::service_connect | permission::device_connect},
                                            {"service", std::string(service_key), std::string(other_key),
                                             static_cast<auth::permissions>(permission::service_connect)},
                                            {"device", std::string(device_policy_key), std::string(other_key),
                                             static_cast<auth::permissions>(permission::device_connect)},
                                        }},
                     reg, clk};

  world() {
    log::init("off");
    registry::device d;
    d.device_id = "d1";
    d.auth.type = registry::auth_type::sas;
    d.auth.primary_key = std::string(d1_key);
    d.auth.secondary_key = std::string(d1_key);
    if (!reg.create_device(d)) std::abort();
    registry::device off;
    off.device_id = "off";
    off.status = registry::device_status::disabled;
    off.auth.type = registry::auth_type::sas;
    off.auth.primary_key = std::string(d1_key);
    off.auth.secondary_key = std::string(d1_key);
    if (!reg.create_device(off)) std::abort();
    registry::module m;
    m.device_id = "d1";
    m.module_id = "m1";
    m.auth.type = registry::auth_type::sas;
    m.auth.primary_key = std::string(m1_key);
    m.auth.secondary_key = std::string(m1_key);
    if (!reg.create_module(m)) std::abort();
  }
};

world& the_world() {
  static world w;
  return w;
}

#define CHECK(cond) \
  do {              \
    if (!(cond)) std::abort(); \
  } while (0)

// The raw value of a field as the parser would see it (the first occurrence), for the echo check.
std::string_view raw_field(std::string_view text, std::string_view name) {
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto amp = text.find('&', pos);
    const auto field = text.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    if (field.size() > name.size() && field.substr(0, name.size()) == name && field[name.size()] == '=')
      return field.substr(name.size() + 1);
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  return {};
}

// The schemes a scope may start with (sas.cpp strips them before comparing).
constexpr std::string_view schemes[] = {"https://", "amqps://", "sb://"};

const auth::policy* policy_named(std::string_view name) { return the_world().auth.identity().find(name); }

// A target and the permission an operation there needs.
struct operation {
  std::string target;
  permission needed;
};

void check_minted(world& w, std::string_view resource, std::string_view key_name, std::int64_t expiry) {
  const std::int64_t now = w.clk.now_seconds();
  const operation ops[] = {
      {std::string(host), permission::registry_read},
      {std::string(host), permission::service_connect},
      {std::string(host) + "/devices/d1", permission::registry_write},
  };

  // As a service credential, signed with the named policy's key (or a key nobody holds).
  const auth::policy* p = key_name.empty() ? nullptr : policy_named(key_name);
  const std::string token = auth::make_sas_token(resource, p ? p->primary_key : other_key, expiry, key_name);
  auto parsed = auth::parse_sas_token(token);
  CHECK(parsed.has_value());
  CHECK(parsed->resource == resource);
  CHECK(parsed->key_name == key_name);
  CHECK(parsed->expiry == expiry);
  for (const auto& op : ops) {
    const bool expected = p != nullptr && expiry > now && auth::scope_covers(resource, op.target) && auth::has(p->rights, op.needed);
    auto got = w.auth.authorize(token, op.target, op.needed);
    CHECK(got.has_value() == expected);
    if (got) {
      CHECK(got->name == p->name);
      CHECK(got->expiry == expiry);
    } else {
      CHECK(got.error().code == errc::unauthorized);
    }
  }

  // As a device credential: d1's key (a device token has no skn), or the policy's.
  struct identity_case {
    std::string_view device_id, module_id, key;
    bool enabled;
  };
  const identity_case ids[] = {{"d1", "", d1_key, true}, {"d1", "m1", m1_key, true}, {"off", "", d1_key, false}};
  for (const auto& id : ids) {
    const std::string dtoken = key_name.empty() ? auth::make_sas_token(resource, id.key, expiry)
                                                : token;
    std::string target = std::string(host) + "/devices/" + std::string(id.device_id);
    if (!id.module_id.empty()) target += "/modules/" + std::string(id.module_id);
    const bool signed_right = key_name.empty() || (p != nullptr && auth::has(p->rights, permission::device_connect));
    const bool expected = signed_right && id.enabled && expiry > now && auth::scope_covers(resource, target);
    auto got = w.auth.authenticate_device(dtoken, id.device_id, id.module_id);
    CHECK(got.has_value() == expected);
    if (got) {
      CHECK(got->device_id == id.device_id && got->module_id == id.module_id);
    } else {
      CHECK(got.error().code == errc::unauthorized);
    }
    // One signature character changed: never accepted.
    if (expected) {
      std::string forged = dtoken;
      const auto sig = forged.find("sig=");
      CHECK(sig != std::string::npos);
      char& c = forged[sig + 4];
      c = c == 'A' ? 'B' : 'A';
      CHECK(!w.auth.authenticate_device(forged, id.device_id, id.module_id).has_value());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  world& w = the_world();
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto t = auth::parse_sas_token(text);
  if (!t) {
    CHECK(t.error().code == errc::unauthorized);
    CHECK(!t.error().message.empty());
    const auto sig = raw_field(text, "sig");
    if (sig.size() >= 8) CHECK(t.error().message.find(sig) == std::string::npos);
  } else {
    CHECK(!t->resource_raw.empty() && !t->signature.empty());
    // Rebuilt from its fields, the token parses to the same fields.
    std::string again = "SharedAccessSignature sr=" + t->resource_raw + "&sig=" + text::url_encode(t->signature) +
                        "&se=" + std::to_string(t->expiry);
    if (!t->key_name.empty()) again += "&skn=" + text::url_encode(t->key_name);
    auto u = auth::parse_sas_token(again);
    CHECK(u.has_value());
    CHECK(u->resource_raw == t->resource_raw && u->resource == t->resource && u->signature == t->signature &&
          u->key_name == t->key_name && u->expiry == t->expiry);
    // Reflexive scopes extend downwards, unless the added "/x" makes a scheme of the start
    // ("https:/" + "/x" reads as the host "x" of https://x; hubd's targets never have one).
    const std::string below = t->resource + "/x";
    const bool forms_scheme = std::any_of(std::begin(schemes), std::end(schemes), [&](std::string_view s) {
      return text::istarts_with(below, s) && !text::istarts_with(t->resource, s);
    });
    if (auth::scope_covers(t->resource, t->resource) && !forms_scheme) CHECK(auth::scope_covers(t->resource, below));
  }

  // The checks on the token as it came: whatever is accepted is valid now and in scope.
  const std::int64_t now = w.clk.now_seconds();
  for (const auto& [target, needed] : {std::pair{std::string(host), permission::registry_read},
                                       std::pair{std::string(host) + "/devices/d1", permission::device_connect}}) {
    auto got = w.auth.authorize(text, target, needed);
    if (got) {
      CHECK(t.has_value() && t->expiry > now && got->expiry == t->expiry);
      CHECK(auth::scope_covers(t->resource, target));
      CHECK(auth::has(got->rights, needed));
    } else {
      CHECK(got.error().code == errc::unauthorized);
    }
  }
  for (const auto& [dev, mod] : {std::pair<std::string_view, std::string_view>{"d1", ""}, {"d1", "m1"}, {"off", ""}, {"nobody", ""}}) {
    auto got = w.auth.authenticate_device(text, dev, mod);
    if (got) {
      CHECK(t.has_value() && t->expiry > now);
      CHECK(dev != "off" && dev != "nobody");
    } else {
      CHECK(got.error().code == errc::unauthorized);
    }
  }

  // Tokens minted from what was parsed (or from the raw input as a resource).
  if (t) {
    check_minted(w, t->resource, t->key_name, t->expiry);
  } else if (!text.empty()) {
    check_minted(w, text, "iothubowner", now + 3600);
    check_minted(w, text, "", now + 3600);
  }
  return 0;
}
