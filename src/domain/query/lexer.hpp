#pragma once
// Tokens of IoT Hub's query language, with their byte offsets. Used by the parser; public so the
// tests can check tokenisation directly.
//
//   identifiers   [A-Za-z_$][A-Za-z0-9_$]*; a name that starts with '$' may contain '-' before a
//                 letter ($dt-dataschema, $dt-subject: routing's system properties)
//   [[name]]      a bracketed name: any characters up to "]]" (tags.[[group]], names with spaces)
//   numbers       123, 1.5, .5, 1e3, 2.5E-3, 0x1F (hex: integers)
//   strings       '...' or "...", escapes \' \" \\ \uXXXX (IoT Hub's set) plus JSON's \/ \b \f
//                 \n \r \t
//   operators     = != <> < > <= >= + - * / % ( ) [ ] , .
//   keywords      SELECT TOP FROM WHERE GROUP BY AS AND OR NOT IN NIN, literals true false null
//                 undefined: all case-insensitive
//   comments      /* ... */ (edgeHub's grammar has them) count as white space
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hub::query {

enum class token_kind : std::uint8_t {
  end,
  identifier,
  bracketed,  // [[name]]
  number,
  string,
  lparen, rparen, lbracket, rbracket, comma, dot,
  star, plus, minus, slash, percent,
  eq, ne, lt, gt, le, ge,
  kw_select, kw_top, kw_from, kw_where, kw_group, kw_by, kw_as,
  kw_and, kw_or, kw_not, kw_in, kw_nin,
  kw_true, kw_false, kw_null, kw_undefined,
};

struct token {
  token_kind kind = token_kind::end;
  std::uint32_t offset = 0;  // byte offset of its first character
  std::uint32_t length = 0;  // bytes of source text
  std::string text;          // identifier / bracketed name / decoded string; source text otherwise
  double number = 0;         // for numbers
};

// Where the lexer stopped, when it did.
struct lex_error {
  std::uint32_t offset = 0;
  std::string detail;
};

struct lex_result {
  std::vector<token> tokens;  // ends with an `end` token when there is no error
  std::optional<lex_error> error;
};

lex_result tokenize(std::string_view text);

// How a token is named in messages: "'FROM'", "end of query", "string 'abc'".
std::string describe(const token& t);
bool is_keyword(token_kind k) noexcept;

// 1-based line and column (in characters) of a byte offset, as error messages give them.
struct text_position {
  std::uint32_t line = 1;
  std::uint32_t column = 1;
};
text_position position_of(std::string_view text, std::uint32_t offset) noexcept;

}  // namespace hub::query
