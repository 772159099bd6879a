#pragma once
// Shared access signatures as IoT Hub defines them:
//   SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>[&skn=<policy>]
// sig = url-encode(base64(HMAC-SHA256(base64-decode(key), sr + "\n" + se))), where sr is the text
// exactly as transmitted (the Node service SDK sends the host name raw, device SDKs send it
// url-encoded; each signs what it sends).
#include "base/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace hub::auth {

struct sas_token {
  std::string resource_raw;   // sr as transmitted: the signed text
  std::string resource;       // sr url-decoded, for the scope check
  std::string signature;      // sig url-decoded (base64)
  std::string key_name;       // skn url-decoded; empty for device keys
  std::int64_t expiry = 0;    // se, seconds since the epoch
};

// Parses the token text (with or without the "SharedAccessSignature " prefix). Unauthorized on
// anything malformed; the message names the problem but never echoes the signature.
result<sas_token> parse_sas_token(std::string_view text);

// How a key's text becomes the HMAC key. IoT Hub endpoints base64-decode it; the Event
// Hubs-compatible endpoint takes the UTF-8 bytes of the text as they are, because that is what
// the Event Hubs SDKs sign with (@azure/core-amqp: createHmac('sha256', keyString)), so the same
// policy key is checked both ways, by endpoint (protocol/service.md §1.3).
enum class key_encoding { base64, raw_text };

// The signature (base64, not url-encoded) of resource_raw + "\n" + expiry under a key. Empty if
// the key is unusable (not valid base64, or empty).
std::string sign(std::string_view key, std::string_view resource_raw, std::int64_t expiry,
                 key_encoding encoding = key_encoding::base64);

// True if token.signature matches the key.
bool signature_matches(const sas_token& token, std::string_view key, key_encoding encoding = key_encoding::base64);

// Builds a token the way the Azure device SDKs do: resource url-encoded in sr and in the signed
// text; fields in the Node SDK's order: sr, sig, skn (when a key name is given), se.
std::string make_sas_token(std::string_view resource, std::string_view key_base64, std::int64_t expiry,
                           std::string_view key_name = {});

// True if the scope `granted` (a decoded sr such as "myhub.example/devices/d1") covers the
// resource `target` ("myhub.example/devices/d1/messages/events"). A scheme (https://, amqps://,
// sb://) is ignored, a ":port" on either host is ignored, a trailing slash is tolerated, and the
// match is on whole path segments, compared case-insensitively as IoT Hub does.
bool scope_covers(std::string_view granted, std::string_view target);

}  // namespace hub::auth
