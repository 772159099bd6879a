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

// Parses a decimal integer that fills the whole string.
std::optional<long long> parse_int(std::string_view s) noexcept;

}  // namespace hub::text
