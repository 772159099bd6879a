// Unit tests for the query language: tokens, grammar and error positions, evaluation with
// IoT Hub's undefined semantics, functions, and query execution (projections, GROUP BY with
// aggregates, TOP, the three collections). Most cases are tables: input -> expected.
#include "domain/query/lexer.hpp"
#include "domain/query/query.hpp"

#include "base/json.hpp"
#include "base/text.hpp"

#include <gtest/gtest.h>

#include <map>

namespace hub::query {
namespace {

bj::value parse_json(std::string_view text) {
  auto v = json::parse(text);
  EXPECT_TRUE(v.has_value()) << text;
  return v ? *v : bj::value{};
}

// The twin of the IoT Hub docs' query examples (query-twins.md), trimmed.
const bj::object& twin() {
  static const bj::value doc = parse_json(R"({
    "deviceId": "myDeviceId",
    "etag": "AAAAAAAAAAc=",
    "status": "enabled",
    "connectionState": "Disconnected",
    "lastActivityTime": "2021-05-07T00:50:38.0543092Z",
    "cloudToDeviceMessageCount": 0,
    "authenticationType": "sas",
    "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
    "version": 2,
    "tags": {
      "location": {"region": "US", "plant": "Redmond43"},
      "group": {"name": "north"},
      "odd name": 7,
      "list": [1, "two", {"three": 3}],
      "flag": true,
      "nothing": null,
      "Case": "upper",
      "case": "lower"
    },
    "properties": {
      "desired": {
        "telemetryConfig": {"configId": "db00ebf5", "sendFrequencyInSecs": 300},
        "$metadata": {"$lastUpdated": "2017-05-08T18:55:31.8514657Z"},
        "$version": 4
      },
      "reported": {
        "connectivity": {"type": "cellular"},
        "telemetryConfig": {"configId": "db00ebf5", "sendFrequencyInSecs": 300, "status": "Success"},
        "temperature": 21.5,
        "$version": 7
      }
    }
  })");
  return doc.get_object();
}

// Evaluates a condition against the twin: "undefined" or the value's JSON text.
std::string eval(std::string_view condition, const bj::object& doc = twin()) {
  auto e = parse_condition(condition);
  if (!e) return "error: " + e.error().message;
  const value v = e->evaluate(document_resolver(doc));
  if (!v.is_defined()) return "undefined";
  return json::serialize(v.to_json());
}

std::string error_of(std::string_view text) {
  auto q = parse_query(text);
  if (q) return "no error";
  EXPECT_EQ(q.error().code, errc::argument_invalid);
  return q.error().message;
}

std::vector<bj::value> docs(std::string_view array_json) {
  const bj::value v = parse_json(array_json);
  return std::vector<bj::value>(v.get_array().begin(), v.get_array().end());
}

// Runs a query over documents and returns the rows as one JSON array text.
std::string run_text(std::string_view text, const std::vector<bj::value>& rows) {
  auto q = parse_query(text);
  if (!q) return "error: " + q.error().message;
  std::size_t i = 0;
  const auto out = run(*q, [&]() -> const bj::object* { return i < rows.size() ? &rows[i++].get_object() : nullptr; });
  bj::array a(out.begin(), out.end());
  return json::serialize(a);
}

// --- lexer -------------------------------------------------------------------------------------

TEST(lexer, token_kinds) {
  const auto r = tokenize("SELECT top 5 * FrOm devices.jobs WHERE a.[[b c]][2] <> 0x1F AND x >= .5e1 OR NOT y IN ['q',\"r\"] nin % / - +");
  ASSERT_FALSE(r.error);
  std::vector<token_kind> kinds;
  for (const auto& t : r.tokens) kinds.push_back(t.kind);
  using k = token_kind;
  const std::vector<token_kind> expected{
      k::kw_select, k::kw_top, k::number, k::star, k::kw_from, k::identifier, k::dot, k::identifier,
      k::kw_where, k::identifier, k::dot, k::bracketed, k::lbracket, k::number, k::rbracket, k::ne, k::number,
      k::kw_and, k::identifier, k::ge, k::number, k::kw_or, k::kw_not, k::identifier, k::kw_in, k::lbracket,
      k::string, k::comma, k::string, k::rbracket, k::kw_nin, k::percent, k::slash, k::minus, k::plus, k::end};
  EXPECT_EQ(kinds, expected);
  EXPECT_EQ(r.tokens[11].text, "b c");
  EXPECT_EQ(r.tokens[16].number, 31);
  EXPECT_EQ(r.tokens[20].number, 5);
}

TEST(lexer, literals_and_keywords_are_case_insensitive) {
  const auto r = tokenize("True FALSE Null UnDeFiNeD and Or nOt iN NIN gRoUp bY aS");
  ASSERT_FALSE(r.error);
  using k = token_kind;
  const std::vector<token_kind> expected{k::kw_true, k::kw_false, k::kw_null, k::kw_undefined, k::kw_and, k::kw_or,
                                         k::kw_not, k::kw_in, k::kw_nin, k::kw_group, k::kw_by, k::kw_as, k::end};
  std::vector<token_kind> kinds;
  for (const auto& t : r.tokens) kinds.push_back(t.kind);
  EXPECT_EQ(kinds, expected);
}

TEST(lexer, strings_and_escapes) {
  struct row {
    std::string_view in;
    std::string_view decoded;
  };
  const row rows[] = {
      {R"('plain')", "plain"},
      {R"("double")", "double"},
      {R"('it\'s')", "it's"},
      {R"("say \"hi\"")", "say \"hi\""},
      {R"('back\\slash')", "back\\slash"},
      {R"('\u00e9t\u00E9')", "\xC3\xA9t\xC3\xA9"},
      {R"('\ud83d\ude00')", "\xF0\x9F\x98\x80"},
      {R"('a"b')", "a\"b"},
      {R"("a'b")", "a'b"},
      {R"('\n\t\/')", "\n\t/"},
      {R"('')", ""},
  };
  for (const auto& r : rows) {
    const auto t = tokenize(r.in);
    ASSERT_FALSE(t.error) << r.in << ": " << t.error->detail;
    ASSERT_EQ(t.tokens[0].kind, token_kind::string) << r.in;
    EXPECT_EQ(t.tokens[0].text, r.decoded) << r.in;
  }
}

TEST(lexer, names) {
  const auto r = tokenize("$dt-dataschema $body.x-$twin $a-1 _x9 [[group]] [[with space]]");
  ASSERT_FALSE(r.error);
  std::vector<std::string> texts;
  for (const auto& t : r.tokens) texts.push_back(t.text);
  const std::vector<std::string> expected{"$dt-dataschema", "$body", ".", "x", "-", "$twin", "$a", "-", "1",
                                          "_x9", "group", "with space", ""};
  EXPECT_EQ(texts, expected);
}

TEST(lexer, comments_are_space) {
  const auto r = tokenize("a /* a comment */ = /**/ 1");
  ASSERT_FALSE(r.error);
  EXPECT_EQ(r.tokens.size(), 4u);
}

TEST(lexer, errors_have_offsets) {
  struct row {
    std::string_view in;
    std::uint32_t offset;
    std::string_view detail;
  };
  const row rows[] = {
      {"a = 'open", 4, "unterminated string"},
      {"a = 'bad \\q'", 9, "invalid escape sequence '\\q'"},
      {"a = '\\u12'", 5, "invalid \\u escape"},
      {"a = '\\ud800'", 5, "unpaired surrogate"},
      {"a = '\\udc00x'", 5, "unpaired surrogate"},
      {"a = 0x", 4, "hexadecimal number without digits"},
      {"a = 0x11112222333344445", 4, "hexadecimal number out of range"},
      {"a = 1e", 4, "empty exponent"},
      {"a = 1e999", 4, "number out of range"},
      {"a = 12ab", 4, "malformed number"},
      {"a = 1.2.3", 4, "malformed number"},
      {"a ! b", 2, "unexpected character '!'"},
      {"a = #", 4, "unexpected character '#'"},
      {"a = \x01", 4, "control character"},
      {"[[open", 0, "without its closing"},
      {"[[]]", 0, "empty name"},
      {"a /* open", 2, "unterminated comment"},
      {"SELECT COUNT() AS to\x8etal FROM devices", 20, "not valid UTF-8"},  // found by fuzz_query
      {"a = 'caf\xc3'", 8, "not valid UTF-8"},
  };
  for (const auto& r : rows) {
    const auto t = tokenize(r.in);
    ASSERT_TRUE(t.error) << r.in;
    EXPECT_EQ(t.error->offset, r.offset) << r.in;
    EXPECT_NE(t.error->detail.find(r.detail), std::string::npos) << r.in << ": " << t.error->detail;
  }
}

TEST(lexer, positions_count_lines_and_characters) {
  EXPECT_EQ(position_of("abc", 0).column, 1u);
  EXPECT_EQ(position_of("abc", 2).column, 3u);
  const auto p = position_of("SELECT *\nFROM x\n  WHERE", 18);
  EXPECT_EQ(p.line, 3u);
  EXPECT_EQ(p.column, 3u);
  EXPECT_EQ(position_of("'\xC3\xA9' x", 5).column, 5u);  // é is one character
}

// --- grammar and errors ------------------------------------------------------------------------

TEST(parser, accepts_the_documented_queries) {
  const char* queries[] = {
      "SELECT * FROM devices",
      "SELECT COUNT() as totalNumberOfDevices FROM devices",
      "SELECT * FROM devices WHERE tags.location.region = 'US'",
      "SELECT * FROM devices\n  WHERE tags.location.region = 'US'\n    AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
      "SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'wifi']",
      "SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)",
      "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices "
      "GROUP BY properties.reported.telemetryConfig.status",
      "SELECT DeviceId, LastActivityTime FROM devices WHERE status = 'enabled' AND connectionState = 'Disconnected'",
      "SELECT * FROM devices.modules",
      "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' AND deviceId IN ['device1', 'device2']",
      "Select * from devices.modules where properties.reported.status = 'scanning'",
      "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId'",
      "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId' AND devices.jobs.jobType = 'scheduleUpdateTwin' "
      "AND devices.jobs.status = 'completed' AND devices.jobs.createdTimeUtc > '2016-09-01'",
      "SELECT * FROM devices WHERE tags.[[group]].name = 'north'",
      "SELECT * FROM devices WHERE configurations.[[myconfig]].status = 'Applied'",
      "SELECT TOP 10 * FROM devices",
      "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'test')",
      "select avg(properties.reported.temperature) as t, min(version), max(version), sum(version) from devices",
      "SELECT * FROM devices WHERE tags.x NIN [1, 2.5, -3, 0x10, \"s\", true, null]",
  };
  for (const char* q : queries) EXPECT_EQ(error_of(q), "no error") << q;
}

TEST(parser, errors_name_the_position) {
  struct row {
    std::string_view query;
    std::string_view where;   // "Line l:c"
    std::string_view detail;  // part of the message after it
  };
  const row rows[] = {
      {"", "Line 1:1", "unexpected end of query, expected SELECT"},
      {"SELEC * FROM devices", "Line 1:1", "unexpected 'SELEC', expected SELECT"},
      {"SELECT * FORM devices", "Line 1:10", "unexpected 'FORM', expected FROM"},
      {"SELECT * FROM devices WHERE", "Line 1:28", "unexpected end of query, expected an expression"},
      {"SELECT * FROM devices WHERE tags.x = ", "Line 1:38", "expected an expression"},
      {"SELECT * FROM devices WHERE tags.x == 1", "Line 1:37", "unexpected '='"},
      {"SELECT * FROM devices WHERE (a = 1", "Line 1:35", "expected ')'"},
      {"SELECT * FROM devices WHERE a IN ['x', ", "Line 1:40", "expected an expression"},
      {"SELECT * FROM devices WHERE a IN ['x' 'y']", "Line 1:39", "expected ',' or ']'"},
      {"SELECT * FROM devices WHERE tags. = 1", "Line 1:35", "expected a property name after '.'"},
      {"SELECT * FROM devices\nWHERE tags.x = 1\n  AND AND", "Line 3:7", "unexpected 'AND'"},
      {"SELECT * FROM devices WHERE tags.x = 'open", "Line 1:38", "unterminated string"},
      {"SELECT * FROM devices WHERE tags.x = 1 tags.y", "Line 1:40", "unexpected 'tags'"},
      {"SELECT * FROM twins", "Line 1:15", "unknown collection 'twins'"},
      {"SELECT * FROM devices.foo", "Line 1:15", "unknown collection 'devices.foo'"},
      {"SELECT * FROM", "Line 1:14", "expected devices, devices.modules or devices.jobs"},
      {"SELECT TOP x * FROM devices", "Line 1:12", "TOP needs a non-negative integer"},
      {"SELECT TOP 1.5 * FROM devices", "Line 1:12", "TOP needs a non-negative integer"},
      {"SELECT * FROM devices WHERE NOSUCH(deviceId)", "Line 1:29", "unknown function 'NOSUCH'"},
      {"SELECT * FROM devices WHERE IS_DEFINED(a, b)", "Line 1:29", "function IS_DEFINED takes 1 argument, given 2"},
      {"SELECT * FROM devices WHERE SUBSTRING('a')", "Line 1:29", "function SUBSTRING takes 2 to 3 arguments, given 1"},
      {"SELECT * FROM devices WHERE CONCAT('a')", "Line 1:29", "function CONCAT takes at least 2 arguments, given 1"},
      {"SELECT * FROM devices WHERE COUNT() > 1", "Line 1:29", "aggregate function 'COUNT' is allowed only as a select item"},
      {"SELECT COUNT(deviceId) FROM devices", "Line 1:14", "COUNT() takes no argument"},
      {"SELECT SUM() FROM devices", "Line 1:12", "sum() needs an argument"},
      {"SELECT COUNT() + 1 FROM devices", "Line 1:16", "unexpected '+'"},
      {"SELECT deviceId AS FROM devices", "Line 1:20", "expected a name after AS"},
      {"SELECT deviceId FROM devices.jobs", "Line 1:8", "devices.jobs queries support only SELECT *"},
      {"SELECT * FROM devices.jobs GROUP BY status", "Line 1:28", "GROUP BY is not supported on devices.jobs"},
      {"SELECT * FROM devices GROUP BY status", "Line 1:8", "SELECT * cannot be combined with aggregates or GROUP BY"},
      {"SELECT status, COUNT() FROM devices", "Line 1:8", "'status' must be an aggregate or appear in GROUP BY"},
      {"SELECT tags.x, COUNT() FROM devices GROUP BY tags.y", "Line 1:8", "'tags.x' must be an aggregate or appear in GROUP BY"},
      {"SELECT COUNT() FROM devices GROUP BY 1 + 1", "Line 1:38", "GROUP BY takes property paths"},
      {"SELECT COUNT() FROM devices GROUP tags.x", "Line 1:35", "expected BY"},
      {"SELECT * FROM devices WHERE a[1.5] = 1", "Line 1:31", "array index must be a non-negative integer"},
      {"SELECT * FROM devices WHERE a = 1 GROUP BY", "Line 1:43", "expected an expression"},
  };
  for (const auto& r : rows) {
    const std::string message = error_of(r.query);
    EXPECT_EQ(message.rfind("SQL query parse failed due to following errors: ", 0), 0u) << message;
    EXPECT_NE(message.find(std::string(r.where) + " "), std::string::npos) << r.query << "\n  got: " << message;
    EXPECT_NE(message.find(r.detail), std::string::npos) << r.query << "\n  got: " << message;
  }
}

TEST(parser, the_query_length_is_limited_to_8192_characters) {
  std::string q = "SELECT * FROM devices WHERE tags.x = '";
  q += std::string(8192 - q.size() - 1, 'a');
  q += "'";
  EXPECT_EQ(q.size(), 8192u);
  EXPECT_EQ(error_of(q), "no error");
  q.insert(q.size() - 1, "a");
  EXPECT_NE(error_of(q).find("longer than the maximum of 8192 characters"), std::string::npos);
  // Characters, not bytes: 8000 two-byte characters are within the limit.
  std::string wide = "SELECT * FROM devices WHERE tags.x = '";
  for (int i = 0; i < 8000; ++i) wide += "\xC3\xA9";
  wide += "'";
  EXPECT_EQ(error_of(wide), "no error");
}

TEST(parser, nesting_and_size_are_bounded) {
  std::string deep = "SELECT * FROM devices WHERE ";
  deep += std::string(100, '(') + "1" + std::string(100, ')') + " = 1";
  EXPECT_NE(error_of(deep).find("nested too deeply"), std::string::npos);
  std::string nots = "SELECT * FROM devices WHERE ";
  for (int i = 0; i < 100; ++i) nots += "NOT ";
  nots += "true";
  EXPECT_NE(error_of(nots).find("nested too deeply"), std::string::npos);
  std::string chain = "SELECT * FROM devices WHERE 1";
  for (int i = 0; i < 300; ++i) chain += "+1";
  EXPECT_NE(error_of(chain).find("too complex"), std::string::npos);
  // OR chains are flat: long IN-like lists of alternatives are fine.
  std::string ors = "SELECT * FROM devices WHERE deviceId = 'd0'";
  for (int i = 1; i < 300; ++i) ors += " OR deviceId = 'd" + std::to_string(i) + "'";
  EXPECT_EQ(error_of(ors), "no error");
}

TEST(parser, keywords_after_a_dot_are_names) {
  EXPECT_EQ(eval("tags.group.name"), "\"north\"");
  EXPECT_EQ(eval("tags.[[group]].name"), "\"north\"");
  EXPECT_EQ(eval("tags[[group]].name"), "\"north\"");
  EXPECT_EQ(eval("tags.[[odd name]]"), "7");
}

// --- evaluation --------------------------------------------------------------------------------

struct eval_case {
  std::string_view condition;
  std::string_view expected;  // JSON text of the value, or "undefined"
};

void check(std::span<const eval_case> cases) {
  for (const auto& c : cases) EXPECT_EQ(eval(c.condition), c.expected) << c.condition;
}

TEST(evaluate, literals_and_paths) {
  const eval_case cases[] = {
      {"1", "1"},
      {"2.5", "2.5E0"},
      {"0x10", "16"},
      {"-3", "-3"},
      {"'s'", "\"s\""},
      {"true", "true"},
      {"FALSE", "false"},
      {"null", "null"},
      {"undefined", "undefined"},
      {"[1, 'a', null]", "[1,\"a\",null]"},
      {"[]", "[]"},
      {"deviceId", "\"myDeviceId\""},
      {"tags.location.region", "\"US\""},
      {"tags.nothing", "null"},
      {"tags.missing", "undefined"},
      {"tags.location.region.deeper", "undefined"},
      {"tags.list[0]", "1"},
      {"tags.list[2].three", "3"},
      {"tags.list[3]", "undefined"},
      {"tags.location[0]", "undefined"},
      {"x509Thumbprint.primaryThumbprint", "null"},
      {"properties.desired.$version", "4"},
      {"properties.desired.$metadata.$lastUpdated", "\"2017-05-08T18:55:31.8514657Z\""},
      {"[tags.location.region, tags.missing, 1]", "[\"US\",1]"},
  };
  check(cases);
}

TEST(evaluate, root_names_are_case_insensitive_nested_names_are_not) {
  const eval_case cases[] = {
      {"DeviceId", "\"myDeviceId\""},
      {"DEVICEID = 'myDeviceId'", "true"},
      {"Tags.location.region", "\"US\""},
      {"tags.Location.region", "undefined"},
      {"tags.Case", "\"upper\""},
      {"tags.case", "\"lower\""},
      {"tags.CASE", "undefined"},
  };
  check(cases);
}

TEST(evaluate, comparisons) {
  const eval_case cases[] = {
      {"tags.location.region = 'US'", "true"},
      {"tags.location.region = 'us'", "false"},  // strings compare exactly
      {"tags.location.region != 'EU'", "true"},
      {"tags.location.region <> 'US'", "false"},
      {"properties.reported.telemetryConfig.sendFrequencyInSecs >= 60", "true"},
      {"properties.reported.telemetryConfig.sendFrequencyInSecs < 300", "false"},
      {"properties.reported.telemetryConfig.sendFrequencyInSecs <= 300", "true"},
      {"properties.reported.temperature > 21", "true"},
      {"300 = 300.0", "true"},
      {"'abc' < 'abd'", "true"},
      {"'B' < 'a'", "true"},  // ordinal
      {"lastActivityTime > '2021-01-01'", "true"},
      {"true = true", "true"},
      {"false < true", "true"},
      {"null = null", "true"},
      {"tags.nothing = null", "true"},
      {"null != null", "false"},
      // Different types, objects, arrays and undefined give undefined, never false.
      {"null < null", "undefined"},
      {"1 = '1'", "undefined"},
      {"1 != '1'", "undefined"},
      {"tags.flag = 1", "undefined"},
      {"tags.missing = 1", "undefined"},
      {"tags.missing != 1", "undefined"},
      {"tags.missing = undefined", "undefined"},
      {"tags.location = tags.location", "undefined"},
      {"tags.list = tags.list", "undefined"},
      {"properties.desired.telemetryConfig = properties.reported.telemetryConfig", "undefined"},
      {"properties.desired.telemetryConfig.configId = properties.reported.telemetryConfig.configId", "true"},
  };
  check(cases);
}

TEST(evaluate, three_valued_logic) {
  // AND / OR / NOT over true, false and undefined (u = a missing property; a string counts as
  // undefined too).
  const eval_case cases[] = {
      {"true AND true", "true"},
      {"true AND false", "false"},
      {"false AND tags.u", "false"},
      {"tags.u AND false", "false"},
      {"true AND tags.u", "undefined"},
      {"tags.u AND tags.u", "undefined"},
      {"true OR tags.u", "true"},
      {"tags.u OR true", "true"},
      {"false OR tags.u", "undefined"},
      {"false OR false", "false"},
      {"tags.u OR tags.u", "undefined"},
      {"NOT true", "false"},
      {"NOT false", "true"},
      {"NOT tags.u", "undefined"},
      {"NOT 'text'", "undefined"},
      {"NOT null", "undefined"},
      {"'text' AND true", "undefined"},
      {"'text' AND false", "false"},
      {"1 OR true", "true"},
      {"true AND true AND true AND false", "false"},
      {"false OR false OR tags.u OR true", "true"},
      {"NOT (tags.missing = 1)", "undefined"},
  };
  check(cases);
}

TEST(evaluate, precedence) {
  const eval_case cases[] = {
      {"1 + 2 * 3", "7"},
      {"(1 + 2) * 3", "9"},
      {"10 - 4 - 3", "3"},      // left-associative
      {"100 / 10 / 5", "2"},
      {"7 % 4 * 2", "6"},
      {"-2 * 3", "-6"},
      {"- (2 + 3)", "-5"},
      {"--2", "2"},
      {"+2", "2"},
      {"1 + 2 = 3", "true"},    // arithmetic binds tighter than comparison
      {"1 < 2 = true", "true"}, // comparisons chain left to right
      {"true OR true AND false", "true"},    // AND binds tighter than OR
      {"(true OR true) AND false", "false"},
      {"NOT false AND false", "false"},      // NOT binds tighter than AND
      {"NOT 1 = 2", "true"},                 // ...but looser than comparison
      {"NOT 1 = 2 AND 2 = 2", "true"},
      {"1 + 1 IN [2, 3]", "true"},
      {"false AND 1 IN [1]", "false"},
  };
  check(cases);
}

TEST(evaluate, arithmetic) {
  const eval_case cases[] = {
      {"properties.reported.telemetryConfig.sendFrequencyInSecs / 60", "5"},
      {"7 / 2", "3.5E0"},
      {"7 % 3", "1"},
      {"-7 % 3", "-1"},
      {"1 / 0", "undefined"},
      {"1 % 0", "undefined"},
      {"'a' + 'b'", "undefined"},  // no string concatenation with +
      {"1 + '1'", "undefined"},
      {"1 + tags.missing", "undefined"},
      {"1 + null", "undefined"},
      {"-'a'", "undefined"},
      {"-tags.missing", "undefined"},
      {"1e308 * 10", "undefined"},  // no infinities in JSON
      {"0x7fffffff + 1", "2147483648"},
  };
  check(cases);
}

TEST(evaluate, in_and_nin) {
  const eval_case cases[] = {
      {"properties.reported.connectivity.type IN ['wired', 'cellular']", "true"},
      {"properties.reported.connectivity.type IN ['wired', 'wifi']", "false"},
      {"properties.reported.connectivity.type NIN ['wired', 'wifi']", "true"},
      {"properties.reported.connectivity.type NIN ['cellular']", "false"},
      {"version IN [1, 2, 3]", "true"},
      {"version IN ['2']", "false"},  // other types never match
      {"tags.nothing IN [null]", "true"},
      {"tags.flag IN [false]", "false"},
      {"deviceId IN []", "false"},
      {"deviceId NIN []", "true"},
      {"tags.missing IN ['a']", "undefined"},
      {"tags.missing NIN ['a']", "undefined"},
      {"tags.location IN ['a']", "undefined"},  // objects are not primitives
      {"'two' IN tags.list", "true"},           // an array-valued property works too
      {"3 IN tags.list", "false"},
      {"1 IN tags.location", "undefined"},
      {"'US' IN [tags.location.region, 'EU']", "true"},  // computed items
      {"'x' IN [tags.missing, 'y']", "false"},
      {"version IN [-2, 2]", "true"},
  };
  check(cases);
}

TEST(evaluate, functions) {
  const eval_case cases[] = {
      {"IS_DEFINED(tags.location)", "true"},
      {"is_defined(tags.nothing)", "true"},  // null is defined
      {"IS_DEFINED(tags.missing)", "false"},
      {"IS_DEFINED(undefined)", "false"},
      {"IS_ARRAY(tags.list)", "true"},
      {"IS_ARRAY(tags.location)", "false"},
      {"IS_BOOL(tags.flag)", "true"},
      {"IS_NULL(tags.nothing)", "true"},
      {"IS_NULL(tags.missing)", "false"},
      {"IS_NUMBER(version)", "true"},
      {"IS_OBJECT(tags.location)", "true"},
      {"IS_STRING(deviceId)", "true"},
      {"IS_PRIMITIVE(tags.nothing)", "true"},
      {"IS_PRIMITIVE(tags.list)", "false"},
      {"IS_PRIMITIVE(tags.missing)", "false"},
      {"AS_NUMBER('12.5')", "1.25E1"},
      {"AS_NUMBER(' 7 ')", "7"},
      {"AS_NUMBER(7)", "7"},
      {"AS_NUMBER('7x')", "undefined"},
      {"AS_NUMBER('')", "undefined"},
      {"AS_NUMBER(true)", "undefined"},
      {"as_number('2') <= 2", "true"},
      {"ABS(-3)", "3"},
      {"ABS('x')", "undefined"},
      {"EXP(0)", "1"},
      {"POWER(2, 10)", "1024"},
      {"POWER(2, 'a')", "undefined"},
      {"SQUARE(4)", "16"},
      {"CEILING(1.2)", "2"},
      {"FLOOR(-1.2)", "-2"},
      {"SIGN(-5)", "-1"},
      {"SIGN(0)", "0"},
      {"SQRT(16)", "4"},
      {"SQRT(-1)", "undefined"},
      {"CONCAT('a', 'b', deviceId)", "\"abmyDeviceId\""},
      {"CONCAT('a', 1)", "undefined"},
      {"LENGTH('h\u00e9llo')", "5"},
      {"LENGTH(1)", "undefined"},
      {"LOWER('MiXeD')", "\"mixed\""},
      {"UPPER('MiXeD')", "\"MIXED\""},
      {"SUBSTRING('abcdef', 2)", "\"cdef\""},
      {"SUBSTRING('abcdef', 2, 3)", "\"cde\""},
      {"SUBSTRING('abcdef', 10)", "\"\""},
      {"SUBSTRING('abcdef', -1, 2)", "\"ab\""},
      {"SUBSTRING('h\u00e9llo', 1, 2)", "\"\u00e9l\""},
      {"SUBSTRING('abc', 'x')", "undefined"},
      {"INDEX_OF('abcabc', 'ca')", "2"},
      {"INDEX_OF('h\u00e9llo', 'l')", "2"},
      {"INDEX_OF('abc', 'z')", "-1"},
      {"STARTSWITH(deviceId, 'my')", "true"},
      {"STARTS_WITH(deviceId, 'your')", "false"},
      {"startswith(deviceId, 1)", "undefined"},
      {"ENDSWITH(deviceId, 'Id')", "true"},
      {"ENDS_WITH(deviceId, 'x')", "false"},
      {"CONTAINS(deviceId, 'Dev')", "true"},
      {"CONTAINS(tags.missing, 'x')", "undefined"},
      {"ABS(ABS(ABS(-1)))", "1"},
      {"CONCAT('a', 'b', 'c', 'd', 'e', 'f')", "\"abcdef\""},  // more arguments than the inline buffer
  };
  check(cases);
}

// --- resolvers and routing hooks ---------------------------------------------------------------

// A routing-like resolver: `$name` system properties and bare application property names from
// maps, `$body.x` into a JSON body; paths are classified once by the binder.
class message_resolver final : public resolver {
 public:
  enum slot : std::int32_t { app_property = 0, system_property = 1, body = 2 };
  value resolve(const path& p) const override {
    switch (p.binding) {
      case app_property: {
        if (p.segments.size() != 1) return {};
        for (const auto& [k, v] : app) {
          if (text::iequals(k, p.segments[0].name)) return value::string_ref(v);
        }
        return {};
      }
      case system_property: {
        auto it = sys.find(p.segments[0].name);
        return it == sys.end() ? value{} : value::string_ref(it->second);
      }
      case body: {
        const bj::value* v = find(body_json, std::span(p.segments).subspan(1), false);
        return v ? value::json(*v) : value{};
      }
      default:
        return {};
    }
  }
  static result<std::int32_t> bind(const path& p) {
    const std::string& first = p.segments[0].name;
    if (text::iequals(first, "$body")) {
      if (p.segments.size() == 1) return make_error(errc::argument_invalid, "$body needs a path");
      return static_cast<std::int32_t>(body);
    }
    if (first.starts_with('$')) return static_cast<std::int32_t>(system_property);
    return static_cast<std::int32_t>(app_property);
  }
  std::map<std::string, std::string> app;
  std::map<std::string, std::string> sys;
  bj::value body_json;
};

TEST(resolver, routing_conditions_reuse_the_evaluator) {
  options opts;
  int bound = 0;
  opts.bind = [&](const path& p) {
    ++bound;
    return message_resolver::bind(p);
  };
  auto cond = parse_condition(
      "processingPath = 'hot' AND $connectionDeviceId = 'dev1' AND $body.readings[1].t > 20 "
      "AND as_number(Severity) <= 2 AND $dt-subject = 'x'",
      opts);
  ASSERT_TRUE(cond.has_value()) << cond.error().message;
  EXPECT_EQ(bound, 5);  // once per path, at compile time
  message_resolver m;
  m.app = {{"processingpath", "hot"}, {"severity", "1"}};
  m.sys = {{"$connectionDeviceId", "dev1"}, {"$dt-subject", "x"}};
  m.body_json = parse_json(R"({"readings":[{"t":10},{"t":25}]})");
  EXPECT_TRUE(cond->matches(m));
  m.app["severity"] = "3";
  EXPECT_FALSE(cond->matches(m));
  m.app.erase("severity");
  EXPECT_FALSE(cond->matches(m));
  EXPECT_FALSE(cond->evaluate(m).is_defined());

  auto bad = parse_condition("$body = 1", opts);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("Line 1:1 $body needs a path"), std::string::npos) << bad.error().message;
}

value twice(std::span<const value> a) {
  if (a[0].type() != value_type::number) return {};
  return value::number(a[0].get_number() * 2);
}

TEST(resolver, the_function_table_is_extensible) {
  function_table t = function_table::builtin();
  t.add(function{"TWICE", 1, 1, twice});
  options opts;
  opts.functions = &t;
  auto e = parse_condition("twice(version) = 4 AND is_defined(deviceId)", opts);
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_TRUE(e->matches(document_resolver(twin())));
  EXPECT_FALSE(parse_condition("twice(version) = 4").has_value());  // not in the builtin table
  options none;
  none.functions = nullptr;
  EXPECT_FALSE(parse_condition("is_defined(deviceId)", none).has_value());
}

TEST(resolver, find_reports_the_stored_name) {
  const bj::value doc = parse_json(R"({"deviceId":"d","tags":{"a":{"B":1}}})");
  std::string_view key;
  path p;
  p.segments = {segment{"DEVICEID", std::nullopt}};
  ASSERT_NE(find(doc, p.segments, true, &key), nullptr);
  EXPECT_EQ(key, "deviceId");
  p.segments = {segment{"tags", std::nullopt}, segment{"a", std::nullopt}, segment{"B", std::nullopt}};
  ASSERT_NE(find(doc, p.segments, true, &key), nullptr);
  EXPECT_EQ(key, "B");
  EXPECT_EQ(find(doc, p.segments, false, &key) != nullptr, true);
  p.segments[0].name = "TAGS";
  EXPECT_EQ(find(doc, p.segments, false), nullptr);
  EXPECT_EQ(p.text(), "TAGS.a.B");
}

// --- execution ---------------------------------------------------------------------------------

const std::vector<bj::value>& fleet() {
  static const std::vector<bj::value> rows = docs(R"([
    {"deviceId":"d1","status":"enabled","connectionState":"Connected","version":3,
     "tags":{"location":{"region":"US"},"floor":1},
     "properties":{"reported":{"telemetryConfig":{"status":"Success"},"temperature":20}}},
    {"deviceId":"d2","status":"enabled","connectionState":"Disconnected","version":5,
     "tags":{"location":{"region":"EU"},"floor":2},
     "properties":{"reported":{"telemetryConfig":{"status":"Pending"},"temperature":30.5}}},
    {"deviceId":"d3","status":"disabled","connectionState":"Disconnected","version":1,
     "tags":{"location":{"region":"US"},"floor":2},
     "properties":{"reported":{"telemetryConfig":{"status":"Success"},"temperature":"hot"}}},
    {"deviceId":"d4","status":"enabled","connectionState":"Disconnected","version":2,
     "tags":{"location":{"region":"US"}},
     "properties":{"reported":{}}}
  ])");
  return rows;
}

TEST(execute, where_keeps_only_rows_that_are_true) {
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE tags.location.region = 'US'", fleet()),
            R"([{"deviceId":"d1"},{"deviceId":"d3"},{"deviceId":"d4"}])");
  // d4 has no floor: undefined, so neither = 2 nor != 2 keeps it.
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE tags.floor != 2", fleet()), R"([{"deviceId":"d1"}])");
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE NOT (tags.floor = 2)", fleet()), R"([{"deviceId":"d1"}])");
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE NOT IS_DEFINED(tags.floor)", fleet()), R"([{"deviceId":"d4"}])");
  // A string, a number or null is not true.
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE deviceId", fleet()), "[]");
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE 1", fleet()), "[]");
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE null", fleet()), "[]");
  EXPECT_EQ(run_text("SELECT deviceId FROM devices WHERE properties.reported.temperature > 25", fleet()),
            R"([{"deviceId":"d2"}])");
}

TEST(execute, select_star_returns_the_documents) {
  const std::string out = run_text("SELECT * FROM devices WHERE deviceId = 'd4'", fleet());
  EXPECT_EQ(out, "[" + json::serialize(fleet()[3]) + "]");
}

TEST(execute, projections) {
  // Without alias: the last name, as the document stores it; a missing value leaves the member out.
  EXPECT_EQ(run_text("SELECT DeviceId, LastActivityTime, tags.location.region FROM devices WHERE version > 2", fleet()),
            R"([{"deviceId":"d1","region":"US"},{"deviceId":"d2","region":"EU"}])");
  EXPECT_EQ(run_text("SELECT deviceId AS id, properties.reported.temperature AS [[the temp]] FROM devices "
                     "WHERE deviceId IN ['d2', 'd4']",
                     fleet()),
            R"([{"id":"d2","the temp":3.05E1},{"id":"d4"}])");
  // Computed items need an alias or get $1, $2, ... ; objects project whole.
  EXPECT_EQ(run_text("SELECT deviceId, version * 10, version + 1 AS next, tags.location, UPPER(deviceId) FROM devices "
                     "WHERE deviceId = 'd1'",
                     fleet()),
            R"([{"deviceId":"d1","$1":30,"next":4,"location":{"region":"US"},"$2":"D1"}])");
  EXPECT_EQ(run_text("SELECT tags.floor FROM devices WHERE deviceId = 'd4'", fleet()), "[{}]");
}

TEST(execute, top_stops_early) {
  auto q = parse_query("SELECT TOP 2 deviceId FROM devices WHERE status = 'enabled'");
  ASSERT_TRUE(q.has_value());
  std::size_t read = 0;
  const auto& rows = fleet();
  const auto out = run(*q, [&]() -> const bj::object* { return read < rows.size() ? &rows[read++].get_object() : nullptr; });
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(json::serialize(out[1]), R"({"deviceId":"d2"})");
  EXPECT_EQ(read, 2u);  // the third and fourth rows were never read

  EXPECT_EQ(run_text("SELECT TOP 0 * FROM devices", fleet()), "[]");
  EXPECT_EQ(run_text("SELECT TOP 100 deviceId FROM devices WHERE version < 3", fleet()),
            R"([{"deviceId":"d3"},{"deviceId":"d4"}])");

  execution ex(*q);
  EXPECT_TRUE(ex.add(rows[0].get_object()));
  EXPECT_TRUE(ex.add(rows[2].get_object()));  // filtered out: no row produced
  EXPECT_EQ(ex.take_rows().size(), 1u);
  EXPECT_FALSE(ex.add(rows[1].get_object()));  // the second row: done
  EXPECT_TRUE(ex.done());
  EXPECT_FALSE(ex.add(rows[3].get_object()));
  EXPECT_EQ(ex.finish().size(), 1u);
}

TEST(execute, aggregates_without_group_by) {
  EXPECT_EQ(run_text("SELECT COUNT() AS total FROM devices", fleet()), R"([{"total":4}])");
  EXPECT_EQ(run_text("SELECT COUNT() AS n FROM devices WHERE status = 'enabled'", fleet()), R"([{"n":3}])");
  EXPECT_EQ(run_text("SELECT COUNT() AS n FROM devices", {}), R"([{"n":0}])");
  // SUM / AVG over numbers only (d3's "hot" and d4's missing value are ignored).
  EXPECT_EQ(run_text("SELECT SUM(properties.reported.temperature) AS s, AVG(properties.reported.temperature) AS a, "
                     "MIN(version) AS lo, MAX(version) AS hi FROM devices",
                     fleet()),
            R"([{"s":5.05E1,"a":2.525E1,"lo":1,"hi":5}])");
  EXPECT_EQ(run_text("SELECT SUM(version) AS s, AVG(version) AS a FROM devices", fleet()), R"([{"s":11,"a":2.75E0}])");
  // Over nothing: COUNT 0, SUM 0, AVG / MIN / MAX left out.
  EXPECT_EQ(run_text("SELECT COUNT() AS c, SUM(version) AS s, AVG(version) AS a, MIN(version) AS lo FROM devices "
                     "WHERE deviceId = 'none'",
                     fleet()),
            R"([{"c":0,"s":0}])");
  // MIN / MAX over strings compare ordinally; numbers sort before strings.
  EXPECT_EQ(run_text("SELECT MIN(deviceId) AS first, MAX(deviceId) AS last, MAX(properties.reported.temperature) AS t "
                     "FROM devices",
                     fleet()),
            R"([{"first":"d1","last":"d4","t":"hot"}])");
  // Unnamed aggregates are $1, $2, ...
  EXPECT_EQ(run_text("SELECT COUNT(), max(version) FROM devices", fleet()), R"([{"$1":4,"$2":5}])");
}

TEST(execute, group_by) {
  // The docs' example: one row per status, in order of first appearance.
  EXPECT_EQ(run_text("SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices "
                     "FROM devices GROUP BY properties.reported.telemetryConfig.status",
                     fleet()),
            R"([{"status":"Success","numberOfDevices":2},{"status":"Pending","numberOfDevices":1},)"
            R"({"numberOfDevices":1}])");  // d4 has no status: its group has no status member
  EXPECT_EQ(run_text("SELECT tags.location.region, tags.floor, COUNT() AS n, MAX(version) AS v FROM devices "
                     "GROUP BY tags.location.region, tags.floor",
                     fleet()),
            R"([{"region":"US","floor":1,"n":1,"v":3},{"region":"EU","floor":2,"n":1,"v":5},)"
            R"({"region":"US","floor":2,"n":1,"v":1},{"region":"US","n":1,"v":2}])");
  // The GROUP BY path may differ in the root's case from the select item's.
  EXPECT_EQ(run_text("SELECT Status, COUNT() AS n FROM devices GROUP BY status", fleet()),
            R"([{"status":"enabled","n":3},{"status":"disabled","n":1}])");
  // GROUP BY without aggregates: distinct values.
  EXPECT_EQ(run_text("SELECT tags.location.region AS r FROM devices GROUP BY tags.location.region", fleet()),
            R"([{"r":"US"},{"r":"EU"}])");
  EXPECT_EQ(run_text("SELECT TOP 1 status, COUNT() AS n FROM devices GROUP BY status", fleet()),
            R"([{"status":"enabled","n":3}])");
  EXPECT_EQ(run_text("SELECT status, COUNT() AS n FROM devices WHERE version > 100 GROUP BY status", fleet()), "[]");
  // 1 and 1.0 are one group; "1" is another.
  const auto mixed = docs(R"([{"v":1},{"v":1.0},{"v":"1"},{"v":null},{},{"v":[1]},{"v":[1]}])");
  EXPECT_EQ(run_text("SELECT v, COUNT() AS n FROM devices GROUP BY v", mixed),
            R"([{"v":1,"n":2},{"v":"1","n":1},{"v":null,"n":1},{"n":1},{"v":[1],"n":2}])");
}

TEST(execute, modules_and_jobs) {
  const auto modules = docs(R"([
    {"deviceId":"device1","moduleId":"m1","properties":{"reported":{"status":"scanning"}}},
    {"deviceId":"device2","moduleId":"m1","properties":{"reported":{"status":"idle"}}},
    {"deviceId":"device3","moduleId":"m2","properties":{"reported":{"status":"scanning"}}}
  ])");
  EXPECT_EQ(run_text("SELECT deviceId, moduleId FROM devices.modules WHERE properties.reported.status = 'scanning' "
                     "AND deviceId IN ['device1', 'device2']",
                     modules),
            R"([{"deviceId":"device1","moduleId":"m1"}])");
  const auto jobs = docs(R"([
    {"deviceId":"myDeviceId","jobId":"j1","jobType":"scheduleUpdateTwin","status":"completed","createdDateTimeUtc":"2016-09-29T18:18:56Z"},
    {"deviceId":"myDeviceId","jobId":"j2","jobType":"scheduleDeviceMethod","status":"completed","createdDateTimeUtc":"2016-10-01T00:00:00Z"},
    {"deviceId":"other","jobId":"j1","jobType":"scheduleUpdateTwin","status":"failed","createdDateTimeUtc":"2016-09-29T18:18:56Z"}
  ])");
  const std::string out = run_text(
      "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId' AND devices.jobs.jobType = "
      "'scheduleUpdateTwin' AND devices.jobs.status = 'completed' AND devices.jobs.createdDateTimeUtc > '2016-09-01'",
      jobs);
  EXPECT_EQ(out, "[" + json::serialize(jobs[0]) + "]");
  // Plain field names work as well.
  EXPECT_EQ(run_text("SELECT * FROM devices.jobs WHERE jobId = 'j2'", jobs), "[" + json::serialize(jobs[1]) + "]");
}

TEST(execute, query_metadata) {
  auto q = parse_query("select top 3 deviceId as id, count() from DEVICES.Modules where a = 1 group by deviceId");
  ASSERT_TRUE(q.has_value()) << q.error().message;
  EXPECT_EQ(q->from, collection::modules);
  EXPECT_EQ(collection_name(q->from), "devices.modules");
  EXPECT_EQ(q->top, 3u);
  EXPECT_TRUE(q->grouped());
  ASSERT_EQ(q->items.size(), 2u);
  EXPECT_EQ(q->items[0].alias, "id");
  EXPECT_EQ(q->items[1].agg, aggregate::count);
  EXPECT_EQ(q->items[1].fallback_name, "$1");
  ASSERT_TRUE(q->where.has_value());
  EXPECT_EQ(q->where->text(), "a = 1");
  ASSERT_EQ(q->group_by.size(), 1u);
  EXPECT_EQ(q->group_by[0].as_path()->text(), "deviceId");
}

}  // namespace
}  // namespace hub::query
