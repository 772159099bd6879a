#pragma once
// String helpers shared by every module: URL encoding as the SDKs do it, case-insensitive
// comparison, splitting.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::text {

// encodeURIComponent plus !'()* escaped, as the Azure SDKs' strict URL encoding does.
std::string url_encode(std::string_view s);
// Percent-decoding; '+' is kept as '+' (path semantics). nullopt on a malformed escape.
std::optional<std::string> url_decode(std::string_view s);

bool iequals(std::string_view a, std::string_view b) noexcept;
bool istarts_with(std::string_view s, std::string_view prefix) noexcept;
std::string to_lower(std::string_view s);
std::string_view trim(std::string_view s) noexcept;

// Splits on sep; empty pieces are kept.
std::vector<std::string_view> split(std::string_view s, char sep);

// The text with every byte that does not start a valid UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF are invalid) replaced by U+FFFD, so peer-chosen bytes
// can go into JSON, which must be UTF-8.
std::string valid_utf8(std::string_view s);
// Whether every byte of s belongs to a valid UTF-8 sequence (the same rule).
bool is_valid_utf8(std::string_view s) noexcept;
// The length of the longest prefix of `s` that is valid UTF-8 (s.size() when all of it is).
std::size_t valid_utf8_prefix(std::string_view s) noexcept;

// Parses a decimal integer that fills the whole string.
std::optional<long long> parse_int(std::string_view s) noexcept;

}  // namespace hub::text
