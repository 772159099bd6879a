#pragma once
// Small cryptographic helpers over OpenSSL: base64, HMAC-SHA256, digests, randomness.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace hub::crypto {

std::string base64_encode(std::span<const unsigned char> bytes);
inline std::string base64_encode(std::string_view bytes) {
  return base64_encode({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
}
// Strict RFC 4648 decoding: padding optional but, if present, complete; nullopt on any character
// outside the alphabet (whitespace included) or an impossible length.
std::optional<std::string> base64_decode(std::string_view text);

// Raw 32-byte HMAC-SHA256 of data under key.
std::string hmac_sha256(std::string_view key, std::string_view data);

// Upper-case hex digests, as IoT Hub shows X.509 thumbprints.
std::string sha1_hex(std::string_view data);
std::string sha256_hex(std::string_view data);

// Constant-time comparison for signatures.
bool equal_constant_time(std::string_view a, std::string_view b);

std::string random_bytes(std::size_t n);
// A new symmetric key as IoT Hub makes them: 32 random bytes, base64.
std::string new_symmetric_key();
// A random version-4 UUID in lower-case 8-4-4-4-12 form.
std::string uuid_v4();

}  // namespace hub::crypto
