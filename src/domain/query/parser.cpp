// Recursive-descent parser for IoT Hub's query language. Precedence, lowest first:
//   OR  <  AND  <  NOT  <  = != <> < > <= >= IN NIN  <  + -  <  * / %  <  unary -  <  primary
// AND and OR chains become one n-ary node each, so `a = 1 OR a = 2 OR ...` stays flat however
// long it is. Nesting (parentheses, NOT, unary minus, calls, arrays) is limited to max_nesting
// and the tree to max_height, so neither parsing nor evaluation can exhaust the stack.
#include "domain/query/lexer.hpp"
#include "domain/query/query.hpp"

#include "base/text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace hub::query {

namespace {
constexpr std::uint32_t max_nesting = 64;
constexpr std::uint32_t max_height = 256;
constexpr std::uint32_t undefined_constant = 0xffffffff;

constexpr std::array<std::pair<std::string_view, aggregate>, 5> aggregates{{
    {"COUNT", aggregate::count},
    {"SUM", aggregate::sum},
    {"AVG", aggregate::avg},
    {"MIN", aggregate::min},
    {"MAX", aggregate::max},
}};

std::optional<aggregate> aggregate_named(std::string_view name) noexcept {
  for (const auto& [n, a] : aggregates) {
    if (text::iequals(name, n)) return a;
  }
  return std::nullopt;
}

std::size_t characters(std::string_view s) noexcept {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// IoT Hub's text for a query it cannot compile, as seen from the service ("SQL query parse failed
// due to following errors: ... Line 1:29 ..."): the same prefix, then line:column and our detail.
error query_error(std::string_view text, std::uint32_t offset, std::string_view detail) {
  const text_position p = position_of(text, offset);
  return make_error(errc::argument_invalid, fmt::format("SQL query parse failed due to following errors: Line {}:{} {}",
                                                        p.line, p.column, detail));
}

}  // namespace

class parser {
 public:
  parser(std::string_view text, std::vector<token> tokens, const options& opts)
      : text_(text), tokens_(std::move(tokens)), opts_(opts) {}

  std::optional<error> failure() const {
    if (!failed_) return std::nullopt;
    return query_error(text_, fail_offset_, fail_detail_);
  }

  // The whole input as one expression.
  std::optional<expression> condition() {
    auto e = parse_expression_into();
    if (failed_) return std::nullopt;
    if (peek().kind != token_kind::end) {
      unexpected("an operator or the end of the condition");
      return std::nullopt;
    }
    return e;
  }

  std::optional<query> whole_query() {
    query q;
    if (!expect(token_kind::kw_select, "SELECT")) return std::nullopt;
    if (accept(token_kind::kw_top)) {
      const token& n = peek();
      if (n.kind != token_kind::number || n.number < 0 || std::trunc(n.number) != n.number || n.number > 9007199254740992.0) {
        fail(n.offset, "TOP needs a non-negative integer, found " + describe(n));
        return std::nullopt;
      }
      q.top = static_cast<std::uint64_t>(n.number);
      ++pos_;
    }
    const std::uint32_t select_offset = peek().offset;
    std::vector<std::uint32_t> item_offsets;
    if (accept(token_kind::star)) {
      q.select_all = true;
    } else {
      do {
        item_offsets.push_back(peek().offset);
        auto item = select_item_();
        if (!item) return std::nullopt;
        q.items.push_back(std::move(*item));
      } while (accept(token_kind::comma));
    }
    if (!expect(token_kind::kw_from, "FROM")) return std::nullopt;
    if (!collection_(q)) return std::nullopt;
    if (accept(token_kind::kw_where)) {
      auto w = parse_expression_into();
      if (!w) return std::nullopt;
      q.where = std::move(*w);
    }
    std::vector<std::uint32_t> group_offsets;
    if (peek().kind == token_kind::kw_group) {
      const std::uint32_t at = peek().offset;
      ++pos_;
      if (!expect(token_kind::kw_by, "BY")) return std::nullopt;
      if (q.from == collection::jobs) {
        fail(at, "GROUP BY is not supported on devices.jobs");
        return std::nullopt;
      }
      do {
        group_offsets.push_back(peek().offset);
        auto g = parse_expression_into();
        if (!g) return std::nullopt;
        if (g->as_path() == nullptr) {
          fail(group_offsets.back(), "GROUP BY takes property paths");
          return std::nullopt;
        }
        q.group_by.push_back(std::move(*g));
      } while (accept(token_kind::comma));
    }
    if (peek().kind != token_kind::end) {
      unexpected(q.group_by.empty() ? "WHERE, GROUP BY or the end of the query" : "',' or the end of the query");
      return std::nullopt;
    }
    if (!validate(q, select_offset, item_offsets)) return std::nullopt;
    return q;
  }

 private:
  // --- tokens ------------------------------------------------------------------------------------
  const token& peek(std::size_t ahead = 0) const noexcept {
    const std::size_t i = std::min(pos_ + ahead, tokens_.size() - 1);
    return tokens_[i];
  }
  bool accept(token_kind k) {
    if (peek().kind != k) return false;
    ++pos_;
    return true;
  }
  bool expect(token_kind k, std::string_view what) {
    if (accept(k)) return true;
    unexpected(what);
    return false;
  }
  void fail(std::uint32_t offset, std::string detail) {
    if (failed_) return;  // keep the first error: it is where things went wrong
    failed_ = true;
    fail_offset_ = offset;
    fail_detail_ = std::move(detail);
  }
  void unexpected(std::string_view expected) {
    const token& t = peek();
    fail(t.offset, fmt::format("unexpected {}, expected {}", describe(t), expected));
  }

  // --- select list, FROM -------------------------------------------------------------------------
  std::optional<select_item> select_item_() {
    select_item item;
    const token& t = peek();
    const auto agg = t.kind == token_kind::identifier && peek(1).kind == token_kind::lparen
                         ? aggregate_named(t.text)
                         : std::nullopt;
    if (agg) {
      item.agg = *agg;
      pos_ += 2;
      if (peek().kind != token_kind::rparen) {
        if (item.agg == aggregate::count) {
          fail(peek().offset, "COUNT() takes no argument");
          return std::nullopt;
        }
        auto arg = parse_expression_into();
        if (!arg) return std::nullopt;
        item.expr = std::move(*arg);
        item.has_expr = true;
      } else if (item.agg != aggregate::count) {
        fail(peek().offset, fmt::format("{}() needs an argument", text::to_lower(t.text)));
        return std::nullopt;
      }
      if (!expect(token_kind::rparen, "')'")) return std::nullopt;
    } else {
      auto e = parse_expression_into();
      if (!e) return std::nullopt;
      item.expr = std::move(*e);
      item.has_expr = true;
    }
    if (accept(token_kind::kw_as)) {
      const token& a = peek();
      if (a.kind != token_kind::identifier && a.kind != token_kind::bracketed) {
        unexpected("a name after AS");
        return std::nullopt;
      }
      item.alias = a.text;
      ++pos_;
    }
    return item;
  }

  bool collection_(query& q) {
    const token& first = peek();
    if (first.kind != token_kind::identifier) {
      unexpected("devices, devices.modules or devices.jobs");
      return false;
    }
    std::string name = first.text;
    ++pos_;
    while (peek().kind == token_kind::dot && peek(1).kind == token_kind::identifier) {
      name += '.';
      name += peek(1).text;
      pos_ += 2;
    }
    if (text::iequals(name, "devices")) {
      q.from = collection::devices;
    } else if (text::iequals(name, "devices.modules")) {
      q.from = collection::modules;
    } else if (text::iequals(name, "devices.jobs")) {
      q.from = collection::jobs;
      strip_jobs_prefix_ = true;
    } else {
      fail(first.offset, fmt::format("unknown collection '{}': expected devices, devices.modules or devices.jobs", name));
      return false;
    }
    return true;
  }

  // Rules that need the whole query: what each collection supports, grouping, default names.
  bool validate(query& q, std::uint32_t select_offset, const std::vector<std::uint32_t>& item_offsets) {
    if (q.from == collection::jobs && !q.select_all) {
      fail(select_offset, "devices.jobs queries support only SELECT *");
      return false;
    }
    if (q.grouped()) {
      if (q.select_all) {
        fail(select_offset, "SELECT * cannot be combined with aggregates or GROUP BY");
        return false;
      }
      for (std::size_t i = 0; i < q.items.size(); ++i) {
        const select_item& item = q.items[i];
        if (item.agg != aggregate::none) continue;
        const path* p = item.expr.as_path();
        const bool grouped = p != nullptr && std::any_of(q.group_by.begin(), q.group_by.end(), [&](const expression& g) {
                               return g.as_path()->same_as(*p);
                             });
        if (!grouped) {
          fail(item_offsets[i], fmt::format("'{}' must be an aggregate or appear in GROUP BY", item.expr.text()));
          return false;
        }
      }
    }
    std::size_t unnamed = 0;
    for (select_item& item : q.items) {
      if (item.alias) continue;
      const path* p = item.agg == aggregate::none ? item.expr.as_path() : nullptr;
      if (p != nullptr && !p->segments.back().index) continue;  // named after its last member
      item.fallback_name = fmt::format("${}", ++unnamed);
    }
    return true;
  }

  // --- expressions -------------------------------------------------------------------------------
  std::optional<expression> parse_expression_into() {
    expression e;
    expression* saved = cur_;
    std::vector<std::uint32_t> saved_heights = std::move(heights_);
    heights_.clear();
    cur_ = &e;
    const std::uint32_t start = peek().offset;
    const std::uint32_t root = or_expr();
    cur_ = saved;
    heights_ = std::move(saved_heights);
    if (failed_) return std::nullopt;
    e.root_ = root;
    const std::uint32_t end = pos_ > 0 ? tokens_[pos_ - 1].offset + tokens_[pos_ - 1].length : start;
    e.text_ = std::string(text_.substr(start, end > start ? end - start : 0));
    return e;
  }

  std::uint32_t add(node n, std::uint32_t height) {
    if (height > max_height) fail(n.offset, "expression too complex");
    cur_->nodes_.push_back(n);
    heights_.push_back(height);
    return static_cast<std::uint32_t>(cur_->nodes_.size() - 1);
  }
  std::uint32_t height(std::uint32_t i) const { return heights_[i]; }

  // Builds an AND / OR node over `items` (two or more).
  std::uint32_t nary(node_kind k, std::uint32_t offset, const std::vector<std::uint32_t>& items) {
    node n;
    n.kind = k;
    n.offset = offset;
    n.first = static_cast<std::uint32_t>(cur_->lists_.size());
    n.count = static_cast<std::uint32_t>(items.size());
    std::uint32_t h = 0;
    for (std::uint32_t i : items) {
      cur_->lists_.push_back(i);
      h = std::max(h, height(i));
    }
    return add(n, h + 1);
  }

  std::uint32_t or_expr() {
    const std::uint32_t offset = peek().offset;
    std::vector<std::uint32_t> items{and_expr()};
    while (!failed_ && accept(token_kind::kw_or)) items.push_back(and_expr());
    if (failed_) return 0;
    return items.size() == 1 ? items[0] : nary(node_kind::any_of, offset, items);
  }

  std::uint32_t and_expr() {
    const std::uint32_t offset = peek().offset;
    std::vector<std::uint32_t> items{not_expr()};
    while (!failed_ && accept(token_kind::kw_and)) items.push_back(not_expr());
    if (failed_) return 0;
    return items.size() == 1 ? items[0] : nary(node_kind::all_of, offset, items);
  }

  std::uint32_t not_expr() {
    if (peek().kind != token_kind::kw_not) return comparison();
    const std::uint32_t offset = peek().offset;
    ++pos_;
    if (!enter(offset)) return 0;
    const std::uint32_t operand = not_expr();
    leave();
    if (failed_) return 0;
    node n;
    n.kind = node_kind::logical_not;
    n.offset = offset;
    n.lhs = operand;
    return add(n, height(operand) + 1);
  }

  static std::optional<binary_op> comparison_op(token_kind k) noexcept {
    switch (k) {
      case token_kind::eq: return binary_op::eq;
      case token_kind::ne: return binary_op::ne;
      case token_kind::lt: return binary_op::lt;
      case token_kind::le: return binary_op::le;
      case token_kind::gt: return binary_op::gt;
      case token_kind::ge: return binary_op::ge;
      default: return std::nullopt;
    }
  }

  std::uint32_t comparison() {
    const std::uint32_t offset = peek().offset;
    std::uint32_t lhs = additive();
    while (!failed_) {
      const token_kind k = peek().kind;
      if (k == token_kind::kw_in || k == token_kind::kw_nin) {
        ++pos_;
        const std::uint32_t rhs = additive();
        if (failed_) return 0;
        node n;
        n.kind = k == token_kind::kw_in ? node_kind::in : node_kind::not_in;
        n.offset = offset;
        n.lhs = lhs;
        n.rhs = rhs;
        lhs = add(n, std::max(height(lhs), height(rhs)) + 1);
        continue;
      }
      const auto op = comparison_op(k);
      if (!op) break;
      ++pos_;
      const std::uint32_t rhs = additive();
      if (failed_) return 0;
      lhs = binary(*op, offset, lhs, rhs);
    }
    return failed_ ? 0 : lhs;
  }

  std::uint32_t binary(binary_op op, std::uint32_t offset, std::uint32_t lhs, std::uint32_t rhs) {
    node n;
    n.kind = node_kind::binary;
    n.op = op;
    n.offset = offset;
    n.lhs = lhs;
    n.rhs = rhs;
    return add(n, std::max(height(lhs), height(rhs)) + 1);
  }

  std::uint32_t additive() {
    const std::uint32_t offset = peek().offset;
    std::uint32_t lhs = multiplicative();
    while (!failed_) {
      const token_kind k = peek().kind;
      if (k != token_kind::plus && k != token_kind::minus) break;
      ++pos_;
      const std::uint32_t rhs = multiplicative();
      if (failed_) return 0;
      lhs = binary(k == token_kind::plus ? binary_op::add : binary_op::sub, offset, lhs, rhs);
    }
    return failed_ ? 0 : lhs;
  }

  std::uint32_t multiplicative() {
    const std::uint32_t offset = peek().offset;
    std::uint32_t lhs = unary();
    while (!failed_) {
      const token_kind k = peek().kind;
      binary_op op;
      if (k == token_kind::star) {
        op = binary_op::mul;
      } else if (k == token_kind::slash) {
        op = binary_op::div;
      } else if (k == token_kind::percent) {
        op = binary_op::mod;
      } else {
        break;
      }
      ++pos_;
      const std::uint32_t rhs = unary();
      if (failed_) return 0;
      lhs = binary(op, offset, lhs, rhs);
    }
    return failed_ ? 0 : lhs;
  }

  bool enter(std::uint32_t offset) {
    if (++depth_ > max_nesting) {
      fail(offset, "expression nested too deeply");
      return false;
    }
    return true;
  }
  void leave() { --depth_; }

  std::uint32_t unary() {
    const token_kind k = peek().kind;
    if (k != token_kind::minus && k != token_kind::plus) return primary();
    const std::uint32_t offset = peek().offset;
    ++pos_;
    if (!enter(offset)) return 0;
    const std::uint32_t operand = unary();
    leave();
    if (failed_) return 0;
    if (k == token_kind::plus) return operand;
    const node& o = cur_->nodes_[operand];
    if (o.kind == node_kind::constant && o.index != undefined_constant && cur_->constants_[o.index].is_number()) {
      // Fold "-5" into a constant so array constants like [-1, 2] stay constants.
      bj::value& c = cur_->constants_[o.index];
      c = number_to_json(-to_double(c));
      return operand;
    }
    node n;
    n.kind = node_kind::negate;
    n.offset = offset;
    n.lhs = operand;
    return add(n, height(operand) + 1);
  }

  std::uint32_t constant(std::uint32_t offset, bj::value v) {
    node n;
    n.kind = node_kind::constant;
    n.offset = offset;
    n.index = static_cast<std::uint32_t>(cur_->constants_.size());
    cur_->constants_.push_back(std::move(v));
    return add(n, 1);
  }

  std::uint32_t primary() {
    const token& t = peek();
    switch (t.kind) {
      case token_kind::number:
        ++pos_;
        return constant(t.offset, number_to_json(t.number));
      case token_kind::string:
        ++pos_;
        return constant(t.offset, bj::string(t.text));
      case token_kind::kw_true:
      case token_kind::kw_false:
        ++pos_;
        return constant(t.offset, t.kind == token_kind::kw_true);
      case token_kind::kw_null:
        ++pos_;
        return constant(t.offset, nullptr);
      case token_kind::kw_undefined: {
        ++pos_;
        node n;
        n.kind = node_kind::constant;
        n.offset = t.offset;
        n.index = undefined_constant;
        return add(n, 1);
      }
      case token_kind::lbracket:
        return array();
      case token_kind::lparen: {
        const std::uint32_t offset = t.offset;
        ++pos_;
        if (!enter(offset)) return 0;
        const std::uint32_t inner = or_expr();
        leave();
        if (failed_) return 0;
        if (!expect(token_kind::rparen, "')'")) return 0;
        return inner;
      }
      case token_kind::identifier:
        if (peek(1).kind == token_kind::lparen) return call();
        return property();
      case token_kind::bracketed:
        return property();
      default:
        unexpected("an expression");
        return 0;
    }
  }

  std::uint32_t array() {
    const std::uint32_t offset = peek().offset;
    ++pos_;
    if (!enter(offset)) return 0;
    std::vector<std::uint32_t> items;
    if (peek().kind != token_kind::rbracket) {
      do {
        items.push_back(or_expr());
        if (failed_) return 0;
      } while (accept(token_kind::comma));
    }
    leave();
    if (!expect(token_kind::rbracket, "',' or ']'")) return 0;
    const bool all_constant = std::all_of(items.begin(), items.end(), [&](std::uint32_t i) {
      const node& n = cur_->nodes_[i];
      return n.kind == node_kind::constant && n.index != undefined_constant;
    });
    if (all_constant) {
      // Fold into one JSON array: IN scans it without evaluating anything. The item constants
      // stay behind unreferenced; they are few and the expression is compiled once.
      bj::array a;
      a.reserve(items.size());
      for (std::uint32_t i : items) a.push_back(cur_->constants_[cur_->nodes_[i].index]);
      return constant(offset, std::move(a));
    }
    node n;
    n.kind = node_kind::array;
    n.offset = offset;
    n.first = static_cast<std::uint32_t>(cur_->lists_.size());
    n.count = static_cast<std::uint32_t>(items.size());
    std::uint32_t h = 0;
    for (std::uint32_t i : items) {
      cur_->lists_.push_back(i);
      h = std::max(h, height(i));
    }
    return add(n, h + 1);
  }

  std::uint32_t call() {
    const token& name = peek();
    const std::uint32_t offset = name.offset;
    const function* fn = opts_.functions != nullptr ? opts_.functions->find(name.text) : nullptr;
    if (fn == nullptr) {
      if (aggregate_named(name.text)) {
        fail(offset, fmt::format("aggregate function '{}' is allowed only as a select item", name.text));
      } else {
        fail(offset, fmt::format("unknown function '{}'", name.text));
      }
      return 0;
    }
    pos_ += 2;
    if (!enter(offset)) return 0;
    std::vector<std::uint32_t> args;
    if (peek().kind != token_kind::rparen) {
      do {
        args.push_back(or_expr());
        if (failed_) return 0;
      } while (accept(token_kind::comma));
    }
    leave();
    if (!expect(token_kind::rparen, "',' or ')'")) return 0;
    if (args.size() < fn->min_args || args.size() > fn->max_args) {
      std::string expected = fn->min_args == fn->max_args ? std::to_string(fn->min_args)
                             : fn->max_args == function::variadic
                                 ? fmt::format("at least {}", fn->min_args)
                                 : fmt::format("{} to {}", fn->min_args, fn->max_args);
      fail(offset, fmt::format("function {} takes {} argument{}, given {}", fn->name, expected,
                               expected == "1" ? "" : "s", args.size()));
      return 0;
    }
    node n;
    n.kind = node_kind::call;
    n.offset = offset;
    n.fn = fn;
    n.first = static_cast<std::uint32_t>(cur_->lists_.size());
    n.count = static_cast<std::uint32_t>(args.size());
    std::uint32_t h = 0;
    for (std::uint32_t i : args) {
      cur_->lists_.push_back(i);
      h = std::max(h, height(i));
    }
    return add(n, h + 1);
  }

  std::uint32_t property() {
    const std::uint32_t offset = peek().offset;
    path p;
    p.segments.push_back(segment{peek().text, std::nullopt});
    ++pos_;
    while (true) {
      const token& t = peek();
      if (t.kind == token_kind::dot) {
        const token& name = peek(1);
        // A keyword after '.' is a name: `tags.group` reads like `tags.[[group]]`.
        if (name.kind != token_kind::identifier && name.kind != token_kind::bracketed && !is_keyword(name.kind)) {
          pos_ += 1;
          unexpected("a property name after '.'");
          return 0;
        }
        p.segments.push_back(segment{name.text, std::nullopt});
        pos_ += 2;
      } else if (t.kind == token_kind::bracketed) {
        p.segments.push_back(segment{t.text, std::nullopt});
        ++pos_;
      } else if (t.kind == token_kind::lbracket && peek(1).kind == token_kind::number &&
                 peek(2).kind == token_kind::rbracket) {
        const double n = peek(1).number;
        if (n < 0 || std::trunc(n) != n || n > 4294967295.0) {
          fail(peek(1).offset, "an array index must be a non-negative integer");
          return 0;
        }
        p.segments.push_back(segment{std::string(), static_cast<std::uint32_t>(n)});
        pos_ += 3;
      } else {
        break;
      }
    }
    // devices.jobs rows are addressed as devices.jobs.<field> (the docs' own examples).
    if (strip_jobs_prefix_ && p.segments.size() > 2 && !p.segments[0].index && !p.segments[1].index &&
        text::iequals(p.segments[0].name, "devices") && text::iequals(p.segments[1].name, "jobs")) {
      p.segments.erase(p.segments.begin(), p.segments.begin() + 2);
    }
    if (opts_.bind) {
      auto b = opts_.bind(p);
      if (!b) {
        fail(offset, b.error().message);
        return 0;
      }
      p.binding = *b;
    }
    node n;
    n.kind = node_kind::property;
    n.offset = offset;
    n.index = static_cast<std::uint32_t>(cur_->paths_.size());
    cur_->paths_.push_back(std::move(p));
    return add(n, 1);
  }

  std::string_view text_;
  std::vector<token> tokens_;
  const options& opts_;
  std::size_t pos_ = 0;
  bool failed_ = false;
  std::uint32_t fail_offset_ = 0;
  std::string fail_detail_;
  expression* cur_ = nullptr;
  std::vector<std::uint32_t> heights_;  // per node of *cur_
  std::uint32_t depth_ = 0;
  bool strip_jobs_prefix_ = false;
};

namespace {

// Shared front: the length limit, then the tokens.
std::optional<error> precheck(std::string_view text, const options& opts, lex_result& lexed) {
  if (characters(text) > opts.max_length) {
    return make_error(errc::argument_invalid,
                      fmt::format("The query is longer than the maximum of {} characters", opts.max_length));
  }
  lexed = tokenize(text);
  if (lexed.error) return query_error(text, lexed.error->offset, lexed.error->detail);
  return std::nullopt;
}

}  // namespace

result<expression> parse_condition(std::string_view text, const options& opts) {
  lex_result lexed;
  if (auto e = precheck(text, opts, lexed)) return *e;
  parser p(text, std::move(lexed.tokens), opts);
  auto e = p.condition();
  if (!e) return *p.failure();
  return std::move(*e);
}

result<query> parse_query(std::string_view text, const options& opts) {
  lex_result lexed;
  if (auto e = precheck(text, opts, lexed)) return *e;
  parser p(text, std::move(lexed.tokens), opts);
  auto q = p.whole_query();
  if (!q) return *p.failure();
  return std::move(*q);
}

bool query::grouped() const noexcept {
  return !group_by.empty() ||
         std::any_of(items.begin(), items.end(), [](const select_item& i) { return i.agg != aggregate::none; });
}

std::string_view collection_name(collection c) noexcept {
  switch (c) {
    case collection::devices: return "devices";
    case collection::modules: return "devices.modules";
    case collection::jobs: return "devices.jobs";
  }
  return "devices";
}

}  // namespace hub::query
