// Running a compiled query over rows: filter, then either project each row (stopping at TOP n)
// or fold rows into groups and emit one row per group at the end.
#include "domain/query/query.hpp"

#include "base/json.hpp"

#include <charconv>

namespace hub::query {

namespace {

// The running state of one aggregate in one group.
struct accumulator {
  std::uint64_t count = 0;    // COUNT(): rows
  std::uint64_t numbers = 0;  // SUM/AVG: numeric inputs
  double sum = 0;
  std::optional<bj::value> best;  // MIN/MAX so far
};

// MIN/MAX order: numbers before strings (Cosmos DB's type order), then within the type.
// Other types (booleans, null, objects, arrays) do not take part.
int rank(value_type t) { return t == value_type::number ? 0 : 1; }

bool better(aggregate agg, const value& candidate, const bj::value& best) {
  const value b = value::json(best);
  const int rc = rank(candidate.type());
  const int rb = rank(b.type());
  int c = rc - rb;
  if (c == 0) c = *compare(candidate, b);
  return agg == aggregate::min ? c < 0 : c > 0;
}

void accumulate(aggregate agg, accumulator& acc, const value& v) {
  switch (agg) {
    case aggregate::none:
      return;
    case aggregate::count:
      ++acc.count;
      return;
    case aggregate::sum:
    case aggregate::avg:
      if (v.type() != value_type::number) return;
      ++acc.numbers;
      acc.sum += v.get_number();
      return;
    case aggregate::min:
    case aggregate::max:
      if (v.type() != value_type::number && v.type() != value_type::string) return;
      if (!acc.best || better(agg, v, *acc.best)) acc.best = v.to_json();
      return;
  }
}

// The aggregate's output, or nothing (the member is left out, as undefined is).
std::optional<bj::value> result_of(aggregate agg, const accumulator& acc) {
  switch (agg) {
    case aggregate::none:
      return std::nullopt;
    case aggregate::count:
      return bj::value(static_cast<std::int64_t>(acc.count));
    case aggregate::sum:
      // An empty sum is 0 (so `SELECT SUM(x) AS total` always has `total`).
      return number_to_json(acc.sum);
    case aggregate::avg:
      if (acc.numbers == 0) return std::nullopt;
      return number_to_json(acc.sum / static_cast<double>(acc.numbers));
    case aggregate::min:
    case aggregate::max:
      return acc.best;
  }
  return std::nullopt;
}

// A group key part as text that tells types apart: "u" undefined, "z" null, "b1", "n<number>",
// "s<len>:<text>", "j<json>" for objects and arrays.
void append_key(std::string& key, const bj::value* v) {
  if (v == nullptr) {
    key += 'u';
    return;
  }
  const value x = value::json(*v);
  switch (x.type()) {
    case value_type::undefined:
      key += 'u';
      break;
    case value_type::null:
      key += 'z';
      break;
    case value_type::boolean:
      key += x.get_bool() ? "b1" : "b0";
      break;
    case value_type::number: {
      char buf[32];
      const auto r = std::to_chars(buf, buf + sizeof buf, x.get_number());
      key += 'n';
      key.append(buf, r.ptr);
      break;
    }
    case value_type::string:
      key += 's';
      key += std::to_string(x.get_string().size());
      key += ':';
      key += x.get_string();
      break;
    case value_type::array:
    case value_type::object:
      key += 'j';
      key += json::serialize(*v);
      break;
  }
  key += '\x1f';
}

std::string name_of(const select_item& item, std::string_view stored_key) {
  if (item.alias) return *item.alias;
  if (!item.fallback_name.empty()) return item.fallback_name;
  return std::string(stored_key);
}

}  // namespace

struct execution::group {
  std::vector<std::optional<bj::value>> keys;  // per GROUP BY path; nullopt: undefined
  std::vector<std::string> key_names;          // stored name of each key's last member
  std::vector<accumulator> accs;               // per select item
};

execution::execution(const query& q) : q_(q) {
  if (q_.top && *q_.top == 0) done_ = true;
}

execution::~execution() = default;

bool execution::add(const bj::object& doc) {
  if (done_) return false;
  if (q_.where) {
    const document_resolver r(doc);
    if (!q_.where->matches(r)) return true;
  }
  if (q_.grouped()) {
    add_to_group(doc);
    return true;
  }
  rows_.push_back(project(doc));
  if (q_.top && ++produced_ >= *q_.top) done_ = true;
  return !done_;
}

bj::value execution::project(const bj::object& doc) const {
  if (q_.select_all) return doc;
  bj::object row;
  const document_resolver r(doc);
  for (const select_item& item : q_.items) {
    if (const path* p = item.expr.as_path(); p != nullptr) {
      // A path projects the stored member, under its stored name (`SELECT DeviceId` -> deviceId).
      std::string_view key;
      const bj::value* v = find(doc, p->segments, true, &key);
      if (v == nullptr) continue;  // undefined: the member is left out
      row.insert_or_assign(name_of(item, key), *v);
      continue;
    }
    const value v = item.expr.evaluate(r);
    if (!v.is_defined()) continue;
    row.insert_or_assign(name_of(item, {}), v.to_json());
  }
  return row;
}

void execution::add_to_group(const bj::object& doc) {
  std::string key;
  std::vector<const bj::value*> parts;
  std::vector<std::string_view> names;
  parts.reserve(q_.group_by.size());
  for (const expression& g : q_.group_by) {
    std::string_view name;
    const bj::value* v = find(doc, g.as_path()->segments, true, &name);
    append_key(key, v);
    parts.push_back(v);
    names.push_back(v != nullptr ? name : std::string_view{});
  }
  auto [it, fresh] = group_index_.try_emplace(std::move(key), groups_.size());
  if (fresh) {
    group g;
    g.accs.resize(q_.items.size());
    for (std::size_t i = 0; i < parts.size(); ++i) {
      g.keys.push_back(parts[i] != nullptr ? std::optional<bj::value>(*parts[i]) : std::nullopt);
      g.key_names.emplace_back(names[i]);
    }
    groups_.push_back(std::move(g));
  }
  group& g = groups_[it->second];
  const document_resolver r(doc);
  for (std::size_t i = 0; i < q_.items.size(); ++i) {
    const select_item& item = q_.items[i];
    if (item.agg == aggregate::none) continue;
    accumulate(item.agg, g.accs[i], item.has_expr ? item.expr.evaluate(r) : value{});
  }
}

std::vector<bj::value> execution::take_rows() {
  std::vector<bj::value> out;
  out.swap(rows_);
  return out;
}

std::vector<bj::value> execution::finish() {
  if (!q_.grouped()) {
    done_ = true;
    return take_rows();
  }
  // Aggregates without GROUP BY make one row even over no rows (COUNT() = 0).
  if (groups_.empty() && q_.group_by.empty()) {
    group g;
    g.accs.resize(q_.items.size());
    groups_.push_back(std::move(g));
  }
  std::vector<bj::value> out;
  for (const group& g : groups_) {
    if (q_.top && out.size() >= *q_.top) break;
    bj::object row;
    for (std::size_t i = 0; i < q_.items.size(); ++i) {
      const select_item& item = q_.items[i];
      if (item.agg != aggregate::none) {
        if (auto v = result_of(item.agg, g.accs[i])) row.insert_or_assign(name_of(item, {}), std::move(*v));
        continue;
      }
      // A grouped item is one of the GROUP BY paths (checked at compile time).
      const path* p = item.expr.as_path();
      for (std::size_t k = 0; k < q_.group_by.size(); ++k) {
        if (!q_.group_by[k].as_path()->same_as(*p)) continue;
        if (g.keys[k]) row.insert_or_assign(name_of(item, g.key_names[k]), *g.keys[k]);
        break;
      }
    }
    out.emplace_back(std::move(row));
  }
  groups_.clear();
  group_index_.clear();
  done_ = true;
  return out;
}

std::vector<bj::value> run(const query& q, const source& next) {
  execution ex(q);
  std::vector<bj::value> rows;
  while (const bj::object* doc = next()) {
    const bool more = ex.add(*doc);
    for (auto& row : ex.take_rows()) rows.push_back(std::move(row));
    if (!more) break;
  }
  for (auto& row : ex.finish()) rows.push_back(std::move(row));
  return rows;
}

}  // namespace hub::query
