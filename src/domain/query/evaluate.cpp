// Evaluation of compiled expressions with IoT Hub's (Cosmos DB SQL's) undefined semantics:
//   - a missing property is undefined, and so is every operator applied to the wrong types;
//   - comparisons hold only between primitives of the same type;
//   - AND / OR are three-valued: false AND undefined = false, true OR undefined = true, else
//     undefined wins over true (AND) / false (OR); operands that are not booleans count as
//     undefined;
//   - NOT undefined = undefined; arithmetic needs numbers, and x/0, x%0 are undefined.
#include "base/text.hpp"
#include "domain/query/expression.hpp"

#include <array>
#include <cmath>

namespace hub::query {

namespace {
constexpr std::uint32_t undefined_constant = 0xffffffff;

value arithmetic(binary_op op, const value& a, const value& b) {
  if (a.type() != value_type::number || b.type() != value_type::number) return {};
  const double x = a.get_number();
  const double y = b.get_number();
  double r = 0;
  switch (op) {
    case binary_op::add: r = x + y; break;
    case binary_op::sub: r = x - y; break;
    case binary_op::mul: r = x * y; break;
    case binary_op::div:
      if (y == 0) return {};
      r = x / y;
      break;
    case binary_op::mod:
      if (y == 0) return {};
      r = std::fmod(x, y);
      break;
    case binary_op::eq:
    case binary_op::ne:
    case binary_op::lt:
    case binary_op::le:
    case binary_op::gt:
    case binary_op::ge:
      return {};
  }
  if (!std::isfinite(r)) return {};  // JSON has no infinities
  return value::number(r);
}

value ordered(binary_op op, const value& a, const value& b) {
  const auto c = compare(a, b);
  if (!c) return {};
  switch (op) {
    case binary_op::lt: return value::boolean(*c < 0);
    case binary_op::le: return value::boolean(*c <= 0);
    case binary_op::gt: return value::boolean(*c > 0);
    case binary_op::ge: return value::boolean(*c >= 0);
    default: return {};
  }
}

}  // namespace

std::string path::text() const {
  std::string out;
  for (const segment& s : segments) {
    if (s.index) {
      out += '[';
      out += std::to_string(*s.index);
      out += ']';
      continue;
    }
    if (!out.empty()) out += '.';
    out += s.name;
  }
  return out;
}

bool path::same_as(const path& other) const noexcept {
  if (segments.size() != other.segments.size()) return false;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const segment& a = segments[i];
    const segment& b = other.segments[i];
    if (a.index != b.index) return false;
    if (i == 0 ? !text::iequals(a.name, b.name) : a.name != b.name) return false;
  }
  return true;
}

const bj::value* find(const bj::object& root, std::span<const segment> segs, bool root_case_insensitive,
                      std::string_view* last_key) {
  if (segs.empty() || segs.front().index) return nullptr;
  const std::string_view name = segs.front().name;
  const bj::value* v = nullptr;
  std::string_view key;
  if (auto it = root.find(name); it != root.end()) {
    v = &it->value();
    key = it->key();
  } else if (root_case_insensitive) {
    // An exact match is the common case (hashed); only a miss pays for a scan of the root.
    for (const auto& kv : root) {
      if (text::iequals(kv.key(), name)) {
        v = &kv.value();
        key = kv.key();
        break;
      }
    }
  }
  if (v == nullptr) return nullptr;
  if (segs.size() == 1) {
    if (last_key != nullptr) *last_key = key;
    return v;
  }
  return find(*v, segs.subspan(1), false, last_key);
}

const bj::value* find(const bj::value& root, std::span<const segment> segs, bool root_case_insensitive,
                      std::string_view* last_key) {
  const bj::value* v = &root;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const segment& s = segs[i];
    if (s.index) {
      const bj::array* a = v->if_array();
      if (a == nullptr || *s.index >= a->size()) return nullptr;
      v = &(*a)[*s.index];
      continue;
    }
    const bj::object* o = v->if_object();
    if (o == nullptr) return nullptr;
    if (i == 0 && root_case_insensitive) return find(*o, segs, true, last_key);
    auto it = o->find(s.name);
    if (it == o->end()) return nullptr;
    v = &it->value();
    if (last_key != nullptr) *last_key = it->key();
  }
  return v;
}

value document_resolver::resolve(const path& p) const {
  const bj::value* v = find(doc_, p.segments, true);
  return v != nullptr ? value::json(*v) : value{};
}

const path* expression::as_path() const noexcept {
  if (nodes_.empty()) return nullptr;
  const node& n = nodes_[root_];
  return n.kind == node_kind::property ? &paths_[n.index] : nullptr;
}

value expression::evaluate(const resolver& r) const {
  if (nodes_.empty()) return {};
  return eval(root_, r);
}

value expression::eval(std::uint32_t i, const resolver& r) const {
  const node& n = nodes_[i];
  switch (n.kind) {
    case node_kind::constant:
      return n.index == undefined_constant ? value{} : value::json(constants_[n.index]);
    case node_kind::property:
      return r.resolve(paths_[n.index]);
    case node_kind::array: {
      bj::array a;
      a.reserve(n.count);
      for (std::uint32_t k = 0; k < n.count; ++k) {
        const value item = eval(lists_[n.first + k], r);
        // An undefined item is left out, as Cosmos DB builds arrays.
        if (item.is_defined()) a.push_back(item.to_json());
      }
      return value::owned_json(std::move(a));
    }
    case node_kind::call: {
      constexpr std::uint32_t inline_args = 4;
      if (n.count <= inline_args) {
        std::array<value, inline_args> args;
        for (std::uint32_t k = 0; k < n.count; ++k) args[k] = eval(lists_[n.first + k], r);
        return n.fn->call(std::span<const value>(args.data(), n.count));
      }
      std::vector<value> args;
      args.reserve(n.count);
      for (std::uint32_t k = 0; k < n.count; ++k) args.push_back(eval(lists_[n.first + k], r));
      return n.fn->call(args);
    }
    case node_kind::negate: {
      const value v = eval(n.lhs, r);
      if (v.type() != value_type::number) return {};
      return value::number(-v.get_number());
    }
    case node_kind::logical_not: {
      const value v = eval(n.lhs, r);
      if (v.type() != value_type::boolean) return {};
      return value::boolean(!v.get_bool());
    }
    case node_kind::binary: {
      const value a = eval(n.lhs, r);
      const value b = eval(n.rhs, r);
      switch (n.op) {
        case binary_op::eq:
          return equals(a, b);
        case binary_op::ne: {
          const value e = equals(a, b);
          return e.is_defined() ? value::boolean(!e.get_bool()) : value{};
        }
        case binary_op::lt:
        case binary_op::le:
        case binary_op::gt:
        case binary_op::ge:
          return ordered(n.op, a, b);
        case binary_op::add:
        case binary_op::sub:
        case binary_op::mul:
        case binary_op::div:
        case binary_op::mod:
          return arithmetic(n.op, a, b);
      }
      return {};
    }
    case node_kind::all_of: {
      bool unknown = false;
      for (std::uint32_t k = 0; k < n.count; ++k) {
        const value v = eval(lists_[n.first + k], r);
        if (v.type() == value_type::boolean && !v.get_bool()) return value::boolean(false);
        if (!v.is_true()) unknown = true;
      }
      return unknown ? value{} : value::boolean(true);
    }
    case node_kind::any_of: {
      bool unknown = false;
      for (std::uint32_t k = 0; k < n.count; ++k) {
        const value v = eval(lists_[n.first + k], r);
        if (v.is_true()) return value::boolean(true);
        if (v.type() != value_type::boolean) unknown = true;
      }
      return unknown ? value{} : value::boolean(false);
    }
    case node_kind::in:
    case node_kind::not_in: {
      const value needle = eval(n.lhs, r);
      if (!needle.is_primitive()) return {};
      bool found = false;
      const node& h = nodes_[n.rhs];
      if (h.kind == node_kind::array) {
        // A list with computed items: compare as we go instead of building the array.
        for (std::uint32_t k = 0; k < h.count && !found; ++k) {
          found = equals(needle, eval(lists_[h.first + k], r)).is_true();
        }
      } else {
        const value haystack = eval(n.rhs, r);
        if (haystack.type() != value_type::array) return {};
        for (const bj::value& item : haystack.get_array()) {
          if (equals(needle, value::json(item)).is_true()) {
            found = true;
            break;
          }
        }
      }
      return value::boolean(n.kind == node_kind::in ? found : !found);
    }
  }
  return {};
}

}  // namespace hub::query
