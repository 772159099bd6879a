// SAS token parsing, signing and scope matching. The expected tokens were computed outside hubd
// with Node (crypto.createHmac over encodeURIComponent(sr) + "\n" + se, key base64-decoded) and
// match what azure-iot-common's SharedAccessSignature.create() writes.
#include "domain/auth/sas.hpp"

#include <gtest/gtest.h>

namespace hub::auth {
namespace {

// base64("0123456789abcdef0123456789abcdef")
constexpr std::string_view device_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
// base64("iothubowner-key-0123456789abcdef")
constexpr std::string_view policy_key = "aW90aHVib3duZXIta2V5LTAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::int64_t expiry = 2'000'000'000;

constexpr std::string_view node_device_token =
    "SharedAccessSignature sr=myhub.example%2Fdevices%2Fdev1&sig=RcWrUQYGdy6HtMHwZ7IM3j1jWqta2HFviTZiY82fXjc%3D"
    "&se=2000000000";
constexpr std::string_view node_policy_device_token =
    "SharedAccessSignature sr=myhub.example%2Fdevices%2Fdev1&sig=G19nknym8ERhzl2N9kPgQ4XbC7JIZlVlTPGPBrIULGE%3D"
    "&skn=iothubowner&se=2000000000";
// The Node service SDK signs the host name raw.
constexpr std::string_view node_service_token =
    "SharedAccessSignature sr=127.0.0.2&sig=jXflooJ6xJSYh%2F4KvDANwiK%2F9KNim3p1yMrZL%2FWkvEM%3D&skn=iothubowner"
    "&se=2000000000";

sas_token parsed(std::string_view text) {
  auto t = parse_sas_token(text);
  EXPECT_TRUE(t.has_value()) << text << ": " << (t ? "" : t.error().message);
  return t ? *t : sas_token{};
}

// --- parse ------------------------------------------------------------------------------------

TEST(parse_sas_token, reads_a_device_sdk_token) {
  const auto t = parsed(node_device_token);
  EXPECT_EQ(t.resource_raw, "myhub.example%2Fdevices%2Fdev1");
  EXPECT_EQ(t.resource, "myhub.example/devices/dev1");
  EXPECT_EQ(t.signature, "RcWrUQYGdy6HtMHwZ7IM3j1jWqta2HFviTZiY82fXjc=");
  EXPECT_EQ(t.expiry, expiry);
  EXPECT_EQ(t.key_name, "");
}

TEST(parse_sas_token, reads_a_service_sdk_token) {
  const auto t = parsed(node_service_token);
  EXPECT_EQ(t.resource_raw, "127.0.0.2");
  EXPECT_EQ(t.resource, "127.0.0.2");
  EXPECT_EQ(t.key_name, "iothubowner");
  EXPECT_EQ(t.signature, "jXflooJ6xJSYh/4KvDANwiK/9KNim3p1yMrZL/WkvEM=");
}

TEST(parse_sas_token, prefix_is_optional_and_case_insensitive) {
  EXPECT_EQ(parsed("sr=h&sig=s&se=1").resource, "h");
  EXPECT_EQ(parsed("sharedaccesssignature sr=h&sig=s&se=1").resource, "h");
  EXPECT_EQ(parsed("SHAREDACCESSSIGNATURE  sr=h&sig=s&se=1").resource, "h");
  EXPECT_EQ(parsed("  SharedAccessSignature sr=h&sig=s&se=1  ").expiry, 1);
}

TEST(parse_sas_token, fields_come_in_any_order) {
  const auto t = parsed("SharedAccessSignature skn=my%20policy&se=42&sig=a%2Bb&sr=h%2Fx");
  EXPECT_EQ(t.key_name, "my policy");
  EXPECT_EQ(t.expiry, 42);
  EXPECT_EQ(t.signature, "a+b");
  EXPECT_EQ(t.resource_raw, "h%2Fx");
  EXPECT_EQ(t.resource, "h/x");
}

TEST(parse_sas_token, keeps_an_unencoded_signature_intact) {
  // Split at the first '=' only: base64 padding survives, and '+' is not a space.
  EXPECT_EQ(parsed("sr=h&sig=ab+/cd==&se=1").signature, "ab+/cd==");
}

TEST(parse_sas_token, ignores_unknown_fields) { EXPECT_EQ(parsed("sr=h&sig=s&se=1&foo=bar").resource, "h"); }

TEST(parse_sas_token, rejects_malformed_tokens_without_echoing_the_signature) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"", "empty"},
      {"SharedAccessSignature", "no '='"},
      {"SharedAccessSignature ", "no '='"},
      {"sig=SECRETSIG&se=1", "'sr'"},
      {"sr=h&se=1", "'sig'"},
      {"sr=h&sig=SECRETSIG", "'se'"},
      {"sr=&sig=SECRETSIG&se=1", "'sr'"},
      {"sr=h&sig=&se=1", "'sig'"},
      {"sr=h&sig=SECRETSIG&se=", "'se'"},
      {"sr=h&sig=SECRETSIG&se=12a", "integer"},
      {"sr=h&sig=SECRETSIG&se=1.5", "integer"},
      {"sr=h&sig=SECRETSIG&se=99999999999999999999", "integer"},
      {"sr=h&sr=h&sig=SECRETSIG&se=1", "more than once"},
      {"sr=h&sig=SECRETSIG&sig=SECRETSIG&se=1", "more than once"},
      {"sr=h&sig=SECRETSIG&se=1&se=2", "more than once"},
      {"sr=h&sig=SECRETSIG&se=1&skn=a&skn=b", "more than once"},
      {"sr=h%zz&sig=SECRETSIG&se=1", "'sr'"},
      {"sr=h&sig=SECRET%SIG&se=1", "'sig'"},
      {"sr=h&sig=SECRETSIG&se=1&skn=%", "'skn'"},
      {"sr=h&&sig=SECRETSIG&se=1", "no '='"},
      {"sr=h&sig=SECRETSIG&se=1&", "no '='"},
      {"SharedAccessSignaturesr=h&sig=SECRETSIG&se=1", "'sr'"},
  };
  for (const auto& [text, mention] : cases) {
    auto t = parse_sas_token(text);
    ASSERT_FALSE(t.has_value()) << text;
    EXPECT_EQ(t.error().code, errc::unauthorized) << text;
    EXPECT_NE(t.error().message.find(mention), std::string::npos) << text << " -> " << t.error().message;
    EXPECT_EQ(t.error().message.find("SECRET"), std::string::npos) << text << " -> " << t.error().message;
  }
}

// --- sign / verify ----------------------------------------------------------------------------

TEST(sign, matches_the_reference_signature) {
  EXPECT_EQ(sign(device_key, "myhub.example%2Fdevices%2Fdev1", expiry),
            "RcWrUQYGdy6HtMHwZ7IM3j1jWqta2HFviTZiY82fXjc=");
  EXPECT_EQ(sign(policy_key, "127.0.0.2", expiry), "jXflooJ6xJSYh/4KvDANwiK/9KNim3p1yMrZL/WkvEM=");
}

TEST(sign, refuses_unusable_keys) {
  EXPECT_EQ(sign("not base64!", "h", 1), "");
  EXPECT_EQ(sign("", "h", 1), "");  // an empty key would let anyone sign
}

TEST(signature_matches, accepts_the_right_key_only) {
  EXPECT_TRUE(signature_matches(parsed(node_device_token), device_key));
  EXPECT_TRUE(signature_matches(parsed(node_service_token), policy_key));
  EXPECT_FALSE(signature_matches(parsed(node_device_token), policy_key));
  EXPECT_FALSE(signature_matches(parsed(node_device_token), ""));
}

TEST(signature_matches, covers_the_resource_as_transmitted_and_the_expiry) {
  auto t = parsed(node_device_token);
  t.expiry += 1;
  EXPECT_FALSE(signature_matches(t, device_key));
  // Same decoded resource, spelled differently on the wire: a different signed text.
  auto lower = parsed(node_device_token);
  lower.resource_raw = "myhub.example%2fdevices%2fdev1";
  EXPECT_FALSE(signature_matches(lower, device_key));
}

TEST(signature_matches, event_hubs_tokens_are_signed_with_the_key_text) {
  // What @azure/core-amqp 4.4.2's createSasTokenProvider({name, key}) wrote for this audience at
  // se=2000000000: the HMAC key is the UTF-8 text of policy_key, not its base64 decoding.
  const auto t = parsed(
      "SharedAccessSignature sr=sb%3A%2F%2Fmyhub.example%2Fmyhub%2FConsumerGroups%2F%24Default%2FPartitions%2F0"
      "&sig=DHTrSe%2FH6jBlEQFLp%2Bj62vQba6cxYitDsx%2Bx5LAbHMo%3D&se=2000000000&skn=iothubowner");
  EXPECT_TRUE(signature_matches(t, policy_key, key_encoding::raw_text));
  EXPECT_FALSE(signature_matches(t, policy_key));
  EXPECT_FALSE(signature_matches(parsed(node_policy_device_token), policy_key, key_encoding::raw_text));
  EXPECT_TRUE(sign("", "r", 1, key_encoding::raw_text).empty());
}

TEST(make_sas_token, writes_what_the_node_sdk_writes) {
  EXPECT_EQ(make_sas_token("myhub.example/devices/dev1", device_key, expiry), node_device_token);
  EXPECT_EQ(make_sas_token("myhub.example/devices/dev1", policy_key, expiry, "iothubowner"), node_policy_device_token);
}

TEST(make_sas_token, round_trips_through_parse) {
  const auto text = make_sas_token("h.example/devices/d (1)", device_key, 77, "my policy");
  const auto t = parsed(text);
  EXPECT_EQ(t.resource, "h.example/devices/d (1)");
  EXPECT_EQ(t.key_name, "my policy");
  EXPECT_EQ(t.expiry, 77);
  EXPECT_TRUE(signature_matches(t, device_key));
}

// --- scope ------------------------------------------------------------------------------------

TEST(scope_covers, hub_scope_covers_everything_on_the_hub) {
  EXPECT_TRUE(scope_covers("myhub.example", "myhub.example"));
  EXPECT_TRUE(scope_covers("myhub.example", "myhub.example/devices/d1"));
  EXPECT_TRUE(scope_covers("myhub.example/", "myhub.example/devices/d1/modules/m1"));
  EXPECT_FALSE(scope_covers("otherhub.example", "myhub.example/devices/d1"));
  EXPECT_FALSE(scope_covers("myhub.example.evil", "myhub.example/devices/d1"));
  EXPECT_FALSE(scope_covers("myhub", "myhub.example"));
}

TEST(scope_covers, host_is_case_insensitive_and_port_tolerant) {
  EXPECT_TRUE(scope_covers("MyHub.Example", "myhub.example/devices/d1"));
  EXPECT_TRUE(scope_covers("localhost:5676", "localhost/devices/d1"));
  EXPECT_TRUE(scope_covers("localhost", "localhost:8883/devices/d1"));
  EXPECT_TRUE(scope_covers("127.0.0.2:443", "127.0.0.2:5671"));
  EXPECT_TRUE(scope_covers("[::1]:443", "[::1]/devices/d1"));
  EXPECT_FALSE(scope_covers("::1", "::2"));
  EXPECT_FALSE(scope_covers("localhost:abc", "localhost"));
}

TEST(scope_covers, scheme_is_ignored) {
  EXPECT_TRUE(scope_covers("https://myhub.example", "myhub.example/devices/d1"));
  EXPECT_TRUE(scope_covers("amqps://myhub.example/devices/d1", "myhub.example/devices/d1"));
  EXPECT_TRUE(scope_covers("sb://MYHUB.example:5671/devices/d1", "myhub.example/devices/d1/messages/events"));
  EXPECT_FALSE(scope_covers("ftp://myhub.example", "myhub.example"));
}

TEST(scope_covers, matches_whole_path_segments) {
  EXPECT_TRUE(scope_covers("h/devices/d1", "h/devices/d1"));
  EXPECT_TRUE(scope_covers("h/devices/d1", "h/devices/d1/messages/events"));
  EXPECT_TRUE(scope_covers("h/devices/d1/", "h/devices/d1"));
  EXPECT_TRUE(scope_covers("h/devices/D1", "h/devices/d1"));  // IoT Hub compares ignoring case
  EXPECT_FALSE(scope_covers("h/devices/d1", "h/devices/d10"));
  EXPECT_FALSE(scope_covers("h/devices/d10", "h/devices/d1"));
  EXPECT_FALSE(scope_covers("h/devices/d1", "h/devices/d2"));
  EXPECT_FALSE(scope_covers("h/devices/d1/modules/m1", "h/devices/d1"));
  EXPECT_FALSE(scope_covers("h/devices/d1", "h/devices"));
}

TEST(scope_covers, empty_scope_covers_nothing) {
  EXPECT_FALSE(scope_covers("", "h"));
  EXPECT_FALSE(scope_covers("https://", "h"));
  EXPECT_FALSE(scope_covers("/devices/d1", "h/devices/d1"));
}

}  // namespace
}  // namespace hub::auth
