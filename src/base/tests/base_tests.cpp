// Unit tests for src/base: the encodings and digests every other module trusts.
#include "base/clock.hpp"
#include "base/crypto.hpp"
#include "base/error.hpp"
#include "base/json.hpp"
#include "base/text.hpp"

#include <gtest/gtest.h>

#include <charconv>
#include <cstring>
#include <string>

namespace hub {
namespace {

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0xF]);
  }
  return out;
}

// --- base64 -----------------------------------------------------------------------------------

TEST(base64, encodes_rfc4648_vectors) {
  EXPECT_EQ(crypto::base64_encode(std::string_view("")), "");
  EXPECT_EQ(crypto::base64_encode(std::string_view("f")), "Zg==");
  EXPECT_EQ(crypto::base64_encode(std::string_view("fo")), "Zm8=");
  EXPECT_EQ(crypto::base64_encode(std::string_view("foo")), "Zm9v");
  EXPECT_EQ(crypto::base64_encode(std::string_view("foob")), "Zm9vYg==");
  EXPECT_EQ(crypto::base64_encode(std::string_view("fooba")), "Zm9vYmE=");
  EXPECT_EQ(crypto::base64_encode(std::string_view("foobar")), "Zm9vYmFy");
}

TEST(base64, round_trips_every_length_and_byte) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes.push_back(static_cast<char>(i * 37 + 11));
    const auto decoded = crypto::base64_decode(crypto::base64_encode(bytes));
    ASSERT_TRUE(decoded.has_value()) << "length " << bytes.size();
    EXPECT_EQ(*decoded, bytes);
  }
}

TEST(base64, accepts_missing_padding) {
  EXPECT_EQ(crypto::base64_decode("Zg").value(), "f");
  EXPECT_EQ(crypto::base64_decode("Zm8").value(), "fo");
  EXPECT_EQ(crypto::base64_decode("").value(), "");
}

TEST(base64, rejects_malformed_text) {
  EXPECT_FALSE(crypto::base64_decode("Zm9v!"));      // outside the alphabet
  EXPECT_FALSE(crypto::base64_decode("Zm9v YmFy"));  // whitespace is not skipped
  EXPECT_FALSE(crypto::base64_decode("Zm9v\n"));
  EXPECT_FALSE(crypto::base64_decode("Zm9v-_"));     // base64url alphabet is another encoding
  EXPECT_FALSE(crypto::base64_decode("Z"));          // one char cannot hold a byte
  EXPECT_FALSE(crypto::base64_decode("Zm9vY"));
  EXPECT_FALSE(crypto::base64_decode("Zg==Zg=="));  // padding in the middle
  EXPECT_FALSE(crypto::base64_decode("Zg="));        // incomplete padding
  EXPECT_FALSE(crypto::base64_decode("Zg==="));      // too much padding
  EXPECT_FALSE(crypto::base64_decode("Zm9v===="));
  EXPECT_FALSE(crypto::base64_decode("===="));
}

// --- digests, HMAC, randomness ----------------------------------------------------------------

TEST(hmac_sha256, matches_rfc4231_test_case_1) {
  const std::string key(20, '\x0b');
  EXPECT_EQ(hex(crypto::hmac_sha256(key, "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

TEST(hmac_sha256, matches_rfc4231_test_case_2) {
  EXPECT_EQ(hex(crypto::hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(hmac_sha256, matches_rfc4231_test_case_6_long_key) {
  const std::string key(131, '\xaa');  // longer than the block: hashed first
  EXPECT_EQ(hex(crypto::hmac_sha256(key, "Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(digests, are_upper_case_hex) {
  EXPECT_EQ(crypto::sha1_hex("abc"), "A9993E364706816ABA3E25717850C26C9CD0D89D");
  EXPECT_EQ(crypto::sha256_hex("abc"), "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");
}

TEST(crypto, equal_constant_time_compares_contents_and_length) {
  EXPECT_TRUE(crypto::equal_constant_time("abc", "abc"));
  EXPECT_FALSE(crypto::equal_constant_time("abc", "abd"));
  EXPECT_FALSE(crypto::equal_constant_time("abc", "abcd"));
  EXPECT_TRUE(crypto::equal_constant_time("", ""));
}

TEST(crypto, new_symmetric_key_is_32_random_bytes_in_base64) {
  const auto a = crypto::new_symmetric_key();
  const auto b = crypto::new_symmetric_key();
  EXPECT_NE(a, b);
  ASSERT_TRUE(crypto::base64_decode(a));
  EXPECT_EQ(crypto::base64_decode(a)->size(), 32u);
}

TEST(crypto, uuid_v4_has_the_canonical_shape) {
  const auto u = crypto::uuid_v4();
  ASSERT_EQ(u.size(), 36u);
  EXPECT_EQ(u[8], '-');
  EXPECT_EQ(u[13], '-');
  EXPECT_EQ(u[14], '4');
  EXPECT_EQ(u[18], '-');
  EXPECT_NE(std::string_view("89ab").find(u[19]), std::string_view::npos);
  EXPECT_EQ(u[23], '-');
  EXPECT_NE(u, crypto::uuid_v4());
}

// --- text -------------------------------------------------------------------------------------

TEST(url_encode, escapes_like_the_sdks_strict_encoding) {
  EXPECT_EQ(text::url_encode("myhub.example/devices/dev1"), "myhub.example%2Fdevices%2Fdev1");
  EXPECT_EQ(text::url_encode("a b?c=d&e"), "a%20b%3Fc%3Dd%26e");
  EXPECT_EQ(text::url_encode("!'()*"), "%21%27%28%29%2A");  // encodeURIComponent leaves these; the SDKs don't
  EXPECT_EQ(text::url_encode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(text::url_encode("+/="), "%2B%2F%3D");          // base64 signatures
  EXPECT_EQ(text::url_encode("\xC3\xA9"), "%C3%A9");         // UTF-8 byte by byte
}

TEST(url_decode, decodes_and_round_trips) {
  EXPECT_EQ(text::url_decode("myhub.example%2fdevices%2Fdev1").value(), "myhub.example/devices/dev1");
  EXPECT_EQ(text::url_decode("a+b").value(), "a+b");  // path semantics: '+' is not a space
  EXPECT_EQ(text::url_decode("").value(), "");
  const std::string all = "sr=h/x y&sig=ab+/=%";
  EXPECT_EQ(text::url_decode(text::url_encode(all)).value(), all);
}

TEST(url_decode, rejects_malformed_escapes) {
  EXPECT_FALSE(text::url_decode("%"));
  EXPECT_FALSE(text::url_decode("abc%"));
  EXPECT_FALSE(text::url_decode("abc%4"));
  EXPECT_FALSE(text::url_decode("%zz"));
  EXPECT_FALSE(text::url_decode("%4g"));
  EXPECT_FALSE(text::url_decode("%%41"));
}

TEST(text, case_insensitive_helpers) {
  EXPECT_TRUE(text::iequals("SharedAccessSignature", "sharedaccesssignature"));
  EXPECT_FALSE(text::iequals("abc", "abcd"));
  EXPECT_TRUE(text::istarts_with("SHAREDACCESSSIGNATURE sr=x", "SharedAccessSignature "));
  EXPECT_FALSE(text::istarts_with("Shared", "SharedAccessSignature"));
  EXPECT_EQ(text::to_lower("AbC"), "abc");
  EXPECT_EQ(text::trim("  a b \t"), "a b");
}

TEST(text, split_keeps_empty_pieces) {
  const auto parts = text::split("a,,b,", ',');
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_EQ(parts[0], "a");
  EXPECT_EQ(parts[1], "");
  EXPECT_EQ(parts[2], "b");
  EXPECT_EQ(parts[3], "");
  EXPECT_EQ(text::split("", ',').size(), 1u);
}

TEST(text, parse_int_needs_the_whole_string) {
  EXPECT_EQ(text::parse_int("1700000000").value(), 1700000000);
  EXPECT_EQ(text::parse_int("-7").value(), -7);
  EXPECT_FALSE(text::parse_int(""));
  EXPECT_FALSE(text::parse_int("12x"));
  EXPECT_FALSE(text::parse_int(" 12"));
  EXPECT_FALSE(text::parse_int("99999999999999999999"));  // overflow
}

TEST(text, valid_utf8_replaces_what_is_not) {
  EXPECT_EQ(text::valid_utf8("plain ascii"), "plain ascii");
  EXPECT_EQ(text::valid_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xF0\x9F\x98\x80");
  EXPECT_EQ(text::valid_utf8("GM\x8ET"), "GM\xEF\xBF\xBDT");                 // a lone continuation byte
  EXPECT_EQ(text::valid_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");        // overlong '/'
  EXPECT_EQ(text::valid_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(text::valid_utf8("\xE2\x82"), "\xEF\xBF\xBD\xEF\xBF\xBD");        // cut short
  EXPECT_EQ(text::valid_utf8(std::string_view("a\0b", 3)), std::string("a\0b", 3));
}

// --- clock ------------------------------------------------------------------------------------

TEST(clock, to_iso8601_has_seven_fraction_digits_and_z) {
  const sys_time t = sys_time{std::chrono::seconds{1'700'000'000}} + std::chrono::nanoseconds{123'456'789};
  EXPECT_EQ(to_iso8601(t), "2023-11-14T22:13:20.1234567Z");
  EXPECT_EQ(to_iso8601(sys_time{}), "1970-01-01T00:00:00.0000000Z");
  EXPECT_EQ(to_iso8601(sys_time{std::chrono::seconds{951'782'400}}), "2000-02-29T00:00:00.0000000Z");
}

TEST(clock, manual_clock_moves_only_when_told) {
  manual_clock clk;
  EXPECT_EQ(clk.now_seconds(), 1'700'000'000);
  clk.advance(std::chrono::seconds{90});
  EXPECT_EQ(clk.now_seconds(), 1'700'000'090);
  clk.advance(std::chrono::milliseconds{500});
  EXPECT_EQ(clk.now_seconds(), 1'700'000'090);
}

// --- json -------------------------------------------------------------------------------------

TEST(json, parses_well_formed_text) {
  auto v = json::parse(R"({"deviceId":"d1","capabilities":{"iotEdge":true}})");
  ASSERT_TRUE(v.has_value());
  const auto& o = v->as_object();
  EXPECT_EQ(json::get_string(o, "deviceId").value(), "d1");
  EXPECT_FALSE(json::get_string(o, "missing"));
  EXPECT_FALSE(json::get_bool(o, "deviceId"));  // wrong type is absent, not a throw
  ASSERT_NE(json::get_object(o, "capabilities"), nullptr);
  EXPECT_TRUE(json::get_bool(*json::get_object(o, "capabilities"), "iotEdge").value());
}

TEST(json, malformed_text_is_iothub_format_error) {
  for (std::string_view bad : {"", "{", R"({"a":})", "{} x", "[1,]", "nul", R"({"a":"\x"})"}) {
    auto v = json::parse(bad);
    ASSERT_FALSE(v.has_value()) << bad;
    EXPECT_EQ(v.error().code, errc::iothub_format_error) << bad;
  }
}

TEST(json, numbers_past_the_double_range_are_refused) {
  // Boost.JSON would read them as infinity and write "Infinity", which is not JSON.
  for (std::string_view bad : {"1e999", "[-1e400]", R"({"a":{"b":101e30801}})"}) {
    auto v = json::parse(bad);
    ASSERT_FALSE(v.has_value()) << bad;
    EXPECT_EQ(v.error().code, errc::iothub_format_error) << bad;
  }
  EXPECT_TRUE(json::parse("[1e308, -1.7976931348623157e308, 1e-400, 18446744073709551616]").has_value());
}

TEST(json, doubles_are_read_correctly_rounded_and_survive_a_round_trip) {
  // Boost.JSON 1.81's own conversion is one unit in the last place off for these (and for about
  // one double in five as JavaScript writes them).
  for (const char* text : {"-97570.19231092371", "1.3927926388013963e-143", "1.7161392603081718e+277",
                           "-387626.64652508684", "0.30000000000000004", "450359962737503599627370495"}) {
    double want = 0;
    std::from_chars(text, text + std::strlen(text), want);
    auto v = json::parse(text);
    ASSERT_TRUE(v.has_value()) << text;
    ASSERT_TRUE(v->is_double()) << text;
    EXPECT_EQ(v->get_double(), want) << text;
    auto again = json::parse(json::serialize(*v));
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->get_double(), want) << json::serialize(*v);
  }
  auto o = json::parse(R"({"a":[1,-2,18446744073709551615,2.5,{"b":-0.0}],"c":"x"})");
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(json::serialize(*o), R"({"a":[1,-2,18446744073709551615,2.5E0,{"b":-0E0}],"c":"x"})");
}

TEST(json, depth_is_bounded) {
  const auto nested = [](std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_TRUE(json::parse(nested(10)).has_value());
  auto deep = json::parse(nested(33));  // default limit 32
  ASSERT_FALSE(deep.has_value());
  EXPECT_EQ(deep.error().code, errc::iothub_format_error);
  auto custom = json::parse(nested(6), json::parse_limits{.max_depth = 5});
  ASSERT_FALSE(custom.has_value());
  EXPECT_EQ(custom.error().code, errc::iothub_format_error);
  // A pathological input far beyond the limit fails cleanly instead of exhausting the stack.
  EXPECT_FALSE(json::parse(nested(100'000)).has_value());
}

TEST(json, size_is_bounded) {
  auto v = json::parse(R"(["0123456789"])", json::parse_limits{.max_size = 8});
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, errc::message_too_large);
}

// --- error ------------------------------------------------------------------------------------

TEST(error, names_and_numbers_are_iot_hubs) {
  EXPECT_EQ(error_name(errc::device_not_found), "DeviceNotFound");
  EXPECT_EQ(error_number(errc::device_not_found), 404001);
  EXPECT_EQ(error_name(errc::unauthorized), "IotHubUnauthorizedAccess");
  EXPECT_EQ(error_number(errc::precondition_failed), 412001);
  EXPECT_EQ(error_name(errc::module_already_exists), "ModuleAlreadyExistsOnDevice");
  const boost::system::error_code ec = errc::throttled;
  EXPECT_EQ(ec.message(), "ThrottlingException");
}

}  // namespace
}  // namespace hub

TEST(json, pretty_indents_objects_and_arrays_and_keeps_empty_ones_compact) {
  const auto v = hub::json::parse(R"({"a":[1,{"b":"x"}],"e":{},"f":[]})");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(hub::json::pretty(*v, 2),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}");
  EXPECT_EQ(hub::json::pretty(*v, 4).substr(0, 12), "{\n    \"a\": [");
}
