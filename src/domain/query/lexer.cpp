#include "domain/query/lexer.hpp"

#include "base/text.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <utility>

namespace hub::query {
namespace {

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
// Bytes of a UTF-8 sequence count as name characters: twin keys are Unicode.
bool is_ident_start(char c) noexcept { return is_alpha(c) || c == '_' || c == '$' || static_cast<unsigned char>(c) >= 0x80; }
bool is_ident_part(char c) noexcept { return is_ident_start(c) || is_digit(c); }

int hex_value(char c) noexcept {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

constexpr std::array<std::pair<std::string_view, token_kind>, 16> keywords{{
    {"SELECT", token_kind::kw_select}, {"TOP", token_kind::kw_top},       {"FROM", token_kind::kw_from},
    {"WHERE", token_kind::kw_where},   {"GROUP", token_kind::kw_group},   {"BY", token_kind::kw_by},
    {"AS", token_kind::kw_as},         {"AND", token_kind::kw_and},       {"OR", token_kind::kw_or},
    {"NOT", token_kind::kw_not},       {"IN", token_kind::kw_in},         {"NIN", token_kind::kw_nin},
    {"TRUE", token_kind::kw_true},     {"FALSE", token_kind::kw_false},   {"NULL", token_kind::kw_null},
    {"UNDEFINED", token_kind::kw_undefined},
}};

token_kind keyword_kind(std::string_view word) noexcept {
  for (const auto& [name, kind] : keywords) {
    if (text::iequals(word, name)) return kind;
  }
  return token_kind::identifier;
}

class lexer {
 public:
  explicit lexer(std::string_view text) : s_(text) {}

  lex_result run() {
    lex_result out;
    // Names and strings reach results (aliases, projected literals) that are written as JSON,
    // which must be UTF-8 (found by fuzz_query). Texts from JSON bodies always are.
    if (const std::size_t valid = text::valid_utf8_prefix(s_); valid < s_.size()) {
      out.error = fail(valid, "the query text is not valid UTF-8");
      return out;
    }
    while (true) {
      if (auto err = skip_space()) {
        out.error = std::move(err);
        return out;
      }
      if (pos_ >= s_.size()) break;
      token t;
      t.offset = static_cast<std::uint32_t>(pos_);
      if (auto err = next(t, out.tokens)) {
        out.error = std::move(err);
        return out;
      }
      t.length = static_cast<std::uint32_t>(pos_ - t.offset);
      out.tokens.push_back(std::move(t));
    }
    token end;
    end.offset = static_cast<std::uint32_t>(s_.size());
    out.tokens.push_back(end);
    return out;
  }

 private:
  std::optional<lex_error> fail(std::size_t at, std::string detail) const {
    return lex_error{static_cast<std::uint32_t>(at), std::move(detail)};
  }

  char peek(std::size_t ahead = 0) const noexcept { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }

  std::optional<lex_error> skip_space() {
    while (pos_ < s_.size()) {
      if (is_space(s_[pos_])) {
        ++pos_;
      } else if (s_[pos_] == '/' && peek(1) == '*') {
        const std::size_t close = s_.find("*/", pos_ + 2);
        if (close == std::string_view::npos) return fail(pos_, "unterminated comment");
        pos_ = close + 2;
      } else {
        break;
      }
    }
    return std::nullopt;
  }

  std::optional<lex_error> next(token& t, const std::vector<token>& before) {
    const char c = s_[pos_];
    if (c == '[' && peek(1) == '[') return bracketed(t);
    if (is_ident_start(c)) return identifier(t);
    if (is_digit(c)) return number(t);
    if (c == '.' && is_digit(peek(1)) && !follows_operand(before)) return number(t);
    if (c == '\'' || c == '"') return string(t);
    return punctuation(t);
  }

  // `a.5` is not a number: a '.' right after a name or ']' continues a path.
  static bool follows_operand(const std::vector<token>& before) noexcept {
    if (before.empty()) return false;
    const token_kind k = before.back().kind;
    return k == token_kind::identifier || k == token_kind::bracketed || k == token_kind::rbracket ||
           k == token_kind::rparen;
  }

  std::optional<lex_error> bracketed(token& t) {
    const std::size_t close = s_.find("]]", pos_ + 2);
    if (close == std::string_view::npos) return fail(pos_, "'[[' without its closing ']]'");
    if (close == pos_ + 2) return fail(pos_, "empty name in '[[]]'");
    t.kind = token_kind::bracketed;
    t.text = std::string(s_.substr(pos_ + 2, close - pos_ - 2));
    pos_ = close + 2;
    return std::nullopt;
  }

  std::optional<lex_error> identifier(token& t) {
    const std::size_t start = pos_;
    const bool dollar = s_[pos_] == '$';
    ++pos_;
    while (pos_ < s_.size()) {
      if (is_ident_part(s_[pos_])) {
        ++pos_;
      } else if (dollar && s_[pos_] == '-' && is_alpha(peek(1))) {
        pos_ += 2;
      } else {
        break;
      }
    }
    t.text = std::string(s_.substr(start, pos_ - start));
    t.kind = keyword_kind(t.text);
    return std::nullopt;
  }

  std::optional<lex_error> number(token& t) {
    const std::size_t start = pos_;
    t.kind = token_kind::number;
    if (s_[pos_] == '0' && (peek(1) == 'x' || peek(1) == 'X')) {
      pos_ += 2;
      const std::size_t digits = pos_;
      double v = 0;
      while (pos_ < s_.size() && is_hex(s_[pos_])) v = v * 16 + hex_value(s_[pos_++]);
      if (pos_ == digits) return fail(start, "hexadecimal number without digits");
      if (pos_ - digits > 16) return fail(start, "hexadecimal number out of range");
      t.number = v;
    } else {
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      if (peek() == '.') {
        ++pos_;
        while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      }
      if (peek() == 'e' || peek() == 'E') {
        ++pos_;
        if (peek() == '+' || peek() == '-') ++pos_;
        const std::size_t digits = pos_;
        while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
        if (pos_ == digits) return fail(start, "number with an empty exponent");
      }
      const char* first = s_.data() + start;
      const char* last = s_.data() + pos_;
      // from_chars does not take a leading '.'; "0" + ".5" reads the same number.
      std::string buffer;
      if (*first == '.') {
        buffer = "0" + std::string(first, last);
        first = buffer.data();
        last = buffer.data() + buffer.size();
      }
      double v = 0;
      const auto [end, ec] = std::from_chars(first, last, v);
      if (ec != std::errc() || end != last || !std::isfinite(v)) return fail(start, "number out of range");
      t.number = v;
    }
    if (pos_ < s_.size() && (is_ident_part(s_[pos_]) || s_[pos_] == '.')) {
      return fail(start, "malformed number '" + std::string(s_.substr(start, pos_ - start + 1)) + "'");
    }
    t.text = std::string(s_.substr(start, pos_ - start));
    return std::nullopt;
  }

  std::optional<lex_error> string(token& t) {
    const std::size_t start = pos_;
    const char quote = s_[pos_++];
    t.kind = token_kind::string;
    while (true) {
      if (pos_ >= s_.size()) return fail(start, "unterminated string");
      const char c = s_[pos_];
      if (c == quote) {
        ++pos_;
        return std::nullopt;
      }
      if (c != '\\') {
        t.text += c;
        ++pos_;
        continue;
      }
      const std::size_t escape = pos_;
      const char e = peek(1);
      pos_ += 2;
      switch (e) {
        case '\'': t.text += '\''; break;
        case '"': t.text += '"'; break;
        case '\\': t.text += '\\'; break;
        case '/': t.text += '/'; break;
        case 'b': t.text += '\b'; break;
        case 'f': t.text += '\f'; break;
        case 'n': t.text += '\n'; break;
        case 'r': t.text += '\r'; break;
        case 't': t.text += '\t'; break;
        case 'u': {
          auto cp = hex4(pos_);
          if (!cp) return fail(escape, "invalid \\u escape (four hexadecimal digits expected)");
          pos_ += 4;
          if (*cp >= 0xD800 && *cp <= 0xDBFF) {
            // A high surrogate must be followed by its low half: together one code point.
            const auto low = (peek() == '\\' && peek(1) == 'u') ? hex4(pos_ + 2) : std::nullopt;
            if (!low || *low < 0xDC00 || *low > 0xDFFF) return fail(escape, "unpaired surrogate in \\u escape");
            pos_ += 6;
            cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
          } else if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
            return fail(escape, "unpaired surrogate in \\u escape");
          }
          append_utf8(t.text, *cp);
          break;
        }
        default:
          if (escape + 1 >= s_.size()) return fail(start, "unterminated string");
          return fail(escape, "invalid escape sequence '\\" + std::string(1, e) + "'");
      }
    }
  }

  std::optional<std::uint32_t> hex4(std::size_t at) const noexcept {
    if (at + 4 > s_.size()) return std::nullopt;
    std::uint32_t v = 0;
    for (std::size_t i = at; i < at + 4; ++i) {
      if (!is_hex(s_[i])) return std::nullopt;
      v = v * 16 + static_cast<std::uint32_t>(hex_value(s_[i]));
    }
    return v;
  }

  std::optional<lex_error> punctuation(token& t) {
    const char c = s_[pos_];
    const char d = peek(1);
    auto one = [&](token_kind k) {
      t.kind = k;
      t.text = std::string(1, c);
      ++pos_;
      return std::nullopt;
    };
    auto two = [&](token_kind k) {
      t.kind = k;
      t.text = std::string(s_.substr(pos_, 2));
      pos_ += 2;
      return std::nullopt;
    };
    switch (c) {
      case '(': return one(token_kind::lparen);
      case ')': return one(token_kind::rparen);
      case '[': return one(token_kind::lbracket);
      case ']': return one(token_kind::rbracket);
      case ',': return one(token_kind::comma);
      case '.': return one(token_kind::dot);
      case '*': return one(token_kind::star);
      case '+': return one(token_kind::plus);
      case '-': return one(token_kind::minus);
      case '/': return one(token_kind::slash);
      case '%': return one(token_kind::percent);
      case '=': return one(token_kind::eq);
      case '!':
        if (d == '=') return two(token_kind::ne);
        break;
      case '<':
        if (d == '>') return two(token_kind::ne);
        if (d == '=') return two(token_kind::le);
        return one(token_kind::lt);
      case '>':
        if (d == '=') return two(token_kind::ge);
        return one(token_kind::gt);
      default:
        break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return fail(pos_, "unexpected control character");
    return fail(pos_, "unexpected character '" + std::string(1, c) + "'");
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace

lex_result tokenize(std::string_view text) { return lexer(text).run(); }

bool is_keyword(token_kind k) noexcept { return k >= token_kind::kw_select; }

std::string describe(const token& t) {
  constexpr std::size_t max_shown = 32;
  auto shown = [&](std::string_view s) {
    return s.size() <= max_shown ? std::string(s) : std::string(s.substr(0, max_shown)) + "...";
  };
  switch (t.kind) {
    case token_kind::end:
      return "end of query";
    case token_kind::string:
      return "string '" + shown(t.text) + "'";
    case token_kind::bracketed:
      return "'[[" + shown(t.text) + "]]'";
    default:
      return "'" + shown(t.text) + "'";
  }
}

text_position position_of(std::string_view text, std::uint32_t offset) noexcept {
  text_position p;
  const std::size_t end = std::min<std::size_t>(offset, text.size());
  for (std::size_t i = 0; i < end; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++p.line;
      p.column = 1;
    } else if ((c & 0xC0) != 0x80) {  // count characters, not UTF-8 continuation bytes
      ++p.column;
    }
  }
  return p;
}

}  // namespace hub::query
