#include "domain/auth/sas.hpp"

#include "base/crypto.hpp"
#include "base/text.hpp"

#include <fmt/format.h>

#include <optional>
#include <vector>

namespace hub::auth {
namespace {

constexpr std::string_view token_prefix = "SharedAccessSignature";

error malformed(std::string_view problem) {
  return make_error(errc::unauthorized, fmt::format("Malformed SAS token: {}", problem));
}

// Removes "SharedAccessSignature" and the whitespace after it, when present.
std::string_view strip_prefix(std::string_view text) {
  text = text::trim(text);
  if (!text::istarts_with(text, token_prefix)) return text;
  const auto rest = text.substr(token_prefix.size());
  // "SharedAccessSignaturesr=..." is not the prefix followed by fields.
  if (rest.empty() || (rest.front() != ' ' && rest.front() != '\t')) return text;
  return text::trim(rest);
}

// Schemes a granted scope may carry: service SDKs over HTTPS and AMQP, and the Event Hubs style.
std::string_view strip_scheme(std::string_view s) {
  for (std::string_view scheme : {"https://", "amqps://", "sb://"}) {
    if (text::istarts_with(s, scheme)) return s.substr(scheme.size());
  }
  return s;
}

// "host:443" -> "host"; "[::1]:443" -> "[::1]"; a bare IPv6 literal keeps its colons.
std::string_view strip_port(std::string_view host) {
  const auto colon = host.rfind(':');
  if (colon == std::string_view::npos) return host;
  const auto port = host.substr(colon + 1);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) return host;
  const auto name = host.substr(0, colon);
  const bool bracketed = name.starts_with('[') && name.ends_with(']');
  if (name.find(':') != std::string_view::npos && !bracketed) return host;
  return name;
}

// Path segments of a resource, host first, with trailing slashes dropped.
std::vector<std::string_view> segments(std::string_view resource) {
  auto parts = text::split(strip_scheme(resource), '/');
  while (parts.size() > 1 && parts.back().empty()) parts.pop_back();
  return parts;
}

}  // namespace

result<sas_token> parse_sas_token(std::string_view text) {
  const std::string_view fields = strip_prefix(text);
  if (fields.empty()) return malformed("empty");

  std::optional<std::string_view> sr, sig, se, skn;
  for (const auto field : text::split(fields, '&')) {
    const auto eq = field.find('=');
    if (eq == std::string_view::npos) return malformed("a field has no '='");
    const auto name = field.substr(0, eq);
    std::optional<std::string_view>* slot = name == "sr"    ? &sr
                                            : name == "sig" ? &sig
                                            : name == "se"  ? &se
                                            : name == "skn" ? &skn
                                                            : nullptr;
    if (slot == nullptr) continue;  // unknown fields are ignored, as the SDKs' parsers do
    if (*slot) return malformed(fmt::format("'{}' appears more than once", name));
    *slot = field.substr(eq + 1);
  }
  if (!sr || sr->empty()) return malformed("'sr' is missing or empty");
  if (!sig || sig->empty()) return malformed("'sig' is missing or empty");
  if (!se || se->empty()) return malformed("'se' is missing or empty");

  sas_token token;
  const auto expiry = text::parse_int(*se);
  if (!expiry) return malformed("'se' is not an integer");
  token.expiry = *expiry;
  // The signature covers sr exactly as transmitted, so keep both forms.
  token.resource_raw = std::string(*sr);
  auto resource = text::url_decode(*sr);
  if (!resource) return malformed("'sr' has a bad percent-escape");
  token.resource = std::move(*resource);
  auto signature = text::url_decode(*sig);
  if (!signature) return malformed("'sig' has a bad percent-escape");
  token.signature = std::move(*signature);
  if (skn) {
    auto key_name = text::url_decode(*skn);
    if (!key_name) return malformed("'skn' has a bad percent-escape");
    token.key_name = std::move(*key_name);
  }
  return token;
}

std::string sign(std::string_view key_text, std::string_view resource_raw, std::int64_t expiry, key_encoding encoding) {
  const auto key = encoding == key_encoding::base64 ? crypto::base64_decode(key_text)
                                                    : std::optional<std::string>(std::string(key_text));
  // An empty key would make every HMAC computable by anyone: treat it as no key at all.
  if (!key || key->empty()) return {};
  return crypto::base64_encode(crypto::hmac_sha256(*key, fmt::format("{}\n{}", resource_raw, expiry)));
}

bool signature_matches(const sas_token& token, std::string_view key, key_encoding encoding) {
  const auto expected = sign(key, token.resource_raw, token.expiry, encoding);
  return !expected.empty() && crypto::equal_constant_time(expected, token.signature);
}

std::string make_sas_token(std::string_view resource, std::string_view key_base64, std::int64_t expiry,
                           std::string_view key_name) {
  // Field order sr, sig, skn, se: what the Node SDK's SharedAccessSignature.toString() writes.
  const auto sr = text::url_encode(resource);
  auto token = fmt::format("SharedAccessSignature sr={}&sig={}", sr, text::url_encode(sign(key_base64, sr, expiry)));
  if (!key_name.empty()) token += fmt::format("&skn={}", text::url_encode(key_name));
  token += fmt::format("&se={}", expiry);
  return token;
}

bool scope_covers(std::string_view granted, std::string_view target) {
  const auto g = segments(granted);
  const auto t = segments(target);
  if (g.front().empty() || g.size() > t.size()) return false;
  if (!text::iequals(strip_port(g.front()), strip_port(t.front()))) return false;
  // Whole segments, so ".../devices/d1" never covers ".../devices/d10". Case-insensitive like
  // IoT Hub's own audience check: some SDKs and the docs' samples lower-case sr.
  for (std::size_t i = 1; i < g.size(); ++i) {
    if (!text::iequals(g[i], t[i])) return false;
  }
  return true;
}

}  // namespace hub::auth
