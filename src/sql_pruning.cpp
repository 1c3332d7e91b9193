#include "sql_pruning.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "duckpart/error.hpp"
#include "duckpart/value.hpp"

namespace duckpart {
namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool starts_with_i(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// Splits at `sep` where it is outside parentheses and quotes.
std::vector<std::string_view> split_top(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> parts;
  int depth = 0;
  bool in_single = false;
  bool in_double = false;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_single) {
      if (c == '\'') in_single = false;
      continue;
    }
    if (in_double) {
      if (c == '"') in_double = false;
      continue;
    }
    if (c == '\'') {
      in_single = true;
    } else if (c == '"') {
      in_double = true;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if (depth == 0 && s.compare(i, sep.size(), sep) == 0) {
      parts.push_back(s.substr(begin, i - begin));
      begin = i + sep.size();
      i = begin - 1;
    }
  }
  parts.push_back(s.substr(begin));
  return parts;
}

// Index of the parenthesis closing the one at `open`, or npos.
std::size_t matching_paren(std::string_view s, std::size_t open) {
  int depth = 0;
  bool in_single = false;
  for (std::size_t i = open; i < s.size(); ++i) {
    const char c = s[i];
    if (in_single) {
      if (c == '\'') in_single = false;
    } else if (c == '\'') {
      in_single = true;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')' && --depth == 0) {
      return i;
    }
  }
  return std::string_view::npos;
}

std::string_view strip_parens(std::string_view s) {
  s = trim(s);
  while (s.size() >= 2 && s.front() == '(' && matching_paren(s, 0) == s.size() - 1) {
    s = trim(s.substr(1, s.size() - 2));
  }
  return s;
}

enum class Lhs { kUnknown, kPlain, kDateOfTimestamp };

bool is_column(std::string_view s, std::string_view column) {
  s = trim(s);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return iequals(s, column);
}

Lhs classify_lhs(std::string_view lhs, std::string_view column, bool column_is_date) {
  lhs = strip_parens(lhs);
  if (is_column(lhs, column)) return Lhs::kPlain;
  if (starts_with_i(lhs, "CAST(") && lhs.back() == ')') {
    std::string_view inner = lhs.substr(5, lhs.size() - 6);
    const auto as = inner.rfind(" AS ");
    if (as == std::string_view::npos || !is_column(inner.substr(0, as), column)) {
      return Lhs::kUnknown;
    }
    const std::string_view type = trim(inner.substr(as + 4));
    if (iequals(type, "TIMESTAMP")) return Lhs::kPlain;  // exact for DATE and TIMESTAMP
    if (iequals(type, "DATE")) return column_is_date ? Lhs::kPlain : Lhs::kDateOfTimestamp;
  }
  return Lhs::kUnknown;
}

// '2023-01-01'::DATE or '2023-01-01 10:00:00'::TIMESTAMP, in microseconds.
std::optional<int64_t> constant_micros(std::string_view c, bool& is_date) {
  c = strip_parens(c);
  const auto cast = c.rfind("::");
  if (cast == std::string_view::npos || cast < 2 || c.front() != '\'' || c[cast - 1] != '\'') {
    return std::nullopt;
  }
  const std::string_view text = c.substr(1, cast - 2);
  const std::string_view type = c.substr(cast + 2);
  if (iequals(type, "DATE")) {
    is_date = true;
    if (auto d = parse_date(text)) return to_timestamp(*d).micros;
  } else if (iequals(type, "TIMESTAMP")) {
    is_date = false;
    if (auto t = parse_timestamp(text)) return t->micros;
  }
  return std::nullopt;
}

std::optional<ValueSet> comparison_set(Lhs lhs, std::string_view op, int64_t c,
                                       bool const_is_date) {
  if (lhs == Lhs::kDateOfTimestamp) {
    if (!const_is_date || c > kMax - kMicrosPerDay) return std::nullopt;
    const int64_t d0 = c;
    const int64_t d1 = c + kMicrosPerDay;
    if (op == "=") return ValueSet::range(d0, d1 - 1);
    if (op == ">=") return ValueSet::range(d0, kMax);
    if (op == ">") return ValueSet::range(d1, kMax);
    if (op == "<=") return ValueSet::range(kMin, d1 - 1);
    if (op == "<") return ValueSet::range(kMin, d0 - 1);
  } else {
    if (op == "=") return ValueSet::range(c, c);
    if (op == ">=") return ValueSet::range(c, kMax);
    if (op == ">") return c == kMax ? ValueSet::none() : ValueSet::range(c + 1, kMax);
    if (op == "<=") return ValueSet::range(kMin, c);
    if (op == "<") return c == kMin ? ValueSet::none() : ValueSet::range(kMin, c - 1);
  }
  if (op == "!=" || op == "<>") return ValueSet::range(kMin, kMax);
  return std::nullopt;
}

std::optional<ValueSet> atom_set(std::string_view s, std::string_view column, bool column_is_date) {
  s = strip_parens(s);
  if (starts_with_i(s, "optional:")) s = strip_parens(s.substr(9));
  if (s.size() > 12 && iequals(s.substr(s.size() - 12), " IS NOT NULL")) {
    if (classify_lhs(s.substr(0, s.size() - 12), column, column_is_date) == Lhs::kUnknown) {
      return std::nullopt;
    }
    return ValueSet::range(kMin, kMax);
  }
  if (s.size() > 8 && iequals(s.substr(s.size() - 8), " IS NULL")) {
    if (classify_lhs(s.substr(0, s.size() - 8), column, column_is_date) == Lhs::kUnknown) {
      return std::nullopt;
    }
    ValueSet only_null = ValueSet::none();
    only_null.null_ok = true;
    return only_null;
  }
  // <lhs> IN (<constant>, ...)
  if (const auto in = split_top(s, " IN "); in.size() == 2) {
    const Lhs lhs = classify_lhs(in[0], column, column_is_date);
    std::string_view list = trim(in[1]);
    if (lhs == Lhs::kUnknown || list.size() < 2 || list.front() != '(' || list.back() != ')') {
      return std::nullopt;
    }
    ValueSet out = ValueSet::none();
    for (std::string_view item : split_top(list.substr(1, list.size() - 2), ",")) {
      bool is_date = false;
      const auto c = constant_micros(item, is_date);
      if (!c) return std::nullopt;
      const auto one = comparison_set(lhs, "=", *c, is_date);
      if (!one) return std::nullopt;
      out = out.unite(*one);
    }
    return out;
  }
  // <lhs> <op> <constant>: the operator is the first comparison character at depth 0.
  int depth = 0;
  bool in_single = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    if (in_single) {
      if (ch == '\'') in_single = false;
      continue;
    }
    if (ch == '\'') in_single = true;
    if (ch == '(') ++depth;
    if (ch == ')') --depth;
    if (depth != 0 || (ch != '<' && ch != '>' && ch != '=' && ch != '!')) continue;
    std::size_t len = 1;
    if (i + 1 < s.size() && (s[i + 1] == '=' || (ch == '<' && s[i + 1] == '>'))) len = 2;
    const std::string_view op = s.substr(i, len);
    const Lhs lhs = classify_lhs(s.substr(0, i), column, column_is_date);
    bool is_date = false;
    const auto c = constant_micros(s.substr(i + len), is_date);
    if (lhs == Lhs::kUnknown || !c) return std::nullopt;
    return comparison_set(lhs, op, *c, is_date);
  }
  return std::nullopt;
}

// nullopt: the expression says nothing we understand about the column.
std::optional<ValueSet> expr_set(std::string_view s, std::string_view column, bool column_is_date) {
  s = strip_parens(s);
  if (starts_with_i(s, "optional:")) s = strip_parens(s.substr(9));
  if (const auto ors = split_top(s, " OR "); ors.size() > 1) {
    ValueSet out = ValueSet::none();
    for (std::string_view part : ors) {
      const auto one = expr_set(part, column, column_is_date);
      if (!one) return std::nullopt;  // one unknown branch may match anything
      out = out.unite(*one);
    }
    return out;
  }
  if (const auto ands = split_top(s, " AND "); ands.size() > 1) {
    std::optional<ValueSet> out;
    for (std::string_view part : ands) {
      if (const auto one = expr_set(part, column, column_is_date)) {
        out = out ? out->intersect(*one) : *one;
      }
    }
    return out;
  }
  return atom_set(s, column, column_is_date);
}

void collect_scans(const nlohmann::json& node, std::vector<ExplainedScan>& out, bool late);

// The child of `node` that only fetches rows another child found, or null. DuckDB's late
// materialization (1.4: ORDER BY ... LIMIT over a base table, such as query_sql's stand-ins) plans
// the filtered scan under a TOP_N and joins its row ids back to a second scan of the same table,
// without filters, that fetches the other columns of the rows it kept: a SEMI join on
// `rowid = rowid`. That scan reads no row the filtered one did not find, and the statement over
// query_sql's views (UNION ALLs, which have no rowid) is never planned that way.
const nlohmann::json* rowid_fetch_scan(const nlohmann::json& node) {
  const auto info = node.find("extra_info");
  const auto children = node.find("children");
  if (info == node.end() || !info->is_object() || children == node.end() || !children->is_array() ||
      children->size() != 2) {
    return nullptr;
  }
  const auto type = info->find("Join Type");
  const auto cond = info->find("Conditions");
  if (type == info->end() || cond == info->end() || *type != "SEMI" || *cond != "rowid = rowid") {
    return nullptr;
  }
  for (std::size_t i = 0; i < 2; ++i) {
    const nlohmann::json& scan = (*children)[i];
    const auto scan_info = scan.find("extra_info");
    if (scan_info == scan.end() || !scan_info->is_object()) continue;
    const auto table = scan_info->find("Table");
    const auto kids = scan.find("children");
    if (table == scan_info->end() || !table->is_string() || scan_info->contains("Filters") ||
        (kids != scan.end() && !kids->empty())) {
      continue;
    }
    std::vector<ExplainedScan> other;
    collect_scans((*children)[1 - i], other, true);
    for (const ExplainedScan& o : other) {
      if (o.table == *table) return &scan;
    }
  }
  return nullptr;
}

void collect_scans(const nlohmann::json& node, std::vector<ExplainedScan>& out, bool late) {
  if (node.is_array()) {
    for (const auto& child : node) collect_scans(child, out, late);
    return;
  }
  if (!node.is_object()) return;
  if (auto info = node.find("extra_info"); info != node.end() && info->is_object()) {
    if (auto table = info->find("Table"); table != info->end() && table->is_string()) {
      ExplainedScan scan;
      scan.table = table->get<std::string>();
      if (auto f = info->find("Filters"); f != info->end()) {
        if (f->is_string()) {
          scan.filters = f->get<std::string>();
        } else if (f->is_array()) {
          for (const auto& part : *f) {
            if (!part.is_string()) continue;
            if (!scan.filters.empty()) scan.filters += " AND ";
            scan.filters += "(" + part.get<std::string>() + ")";
          }
        }
      }
      out.push_back(std::move(scan));
    }
  }
  if (auto children = node.find("children"); children != node.end()) {
    if (const nlohmann::json* fetch = late ? rowid_fetch_scan(node) : nullptr) {
      for (const auto& child : *children) {
        if (&child != fetch) collect_scans(child, out, late);
      }
      return;
    }
    collect_scans(*children, out, late);
  }
}

}  // namespace

ValueSet ValueSet::all() { return ValueSet{{{kMin, kMax}}, true}; }
ValueSet ValueSet::none() { return ValueSet{{}, false}; }
ValueSet ValueSet::range(int64_t lo, int64_t hi) {
  if (lo > hi) return none();
  return ValueSet{{{lo, hi}}, false};
}

ValueSet ValueSet::intersect(const ValueSet& o) const {
  ValueSet out = none();
  out.null_ok = null_ok && o.null_ok;
  for (const Interval& a : intervals) {
    for (const Interval& b : o.intervals) {
      const int64_t lo = std::max(a.lo, b.lo);
      const int64_t hi = std::min(a.hi, b.hi);
      if (lo <= hi) out.intervals.push_back({lo, hi});
    }
  }
  std::sort(out.intervals.begin(), out.intervals.end(),
            [](const Interval& x, const Interval& y) { return x.lo < y.lo; });
  return out;
}

ValueSet ValueSet::unite(const ValueSet& o) const {
  ValueSet out = none();
  out.null_ok = null_ok || o.null_ok;
  std::vector<Interval> all_iv = intervals;
  all_iv.insert(all_iv.end(), o.intervals.begin(), o.intervals.end());
  std::sort(all_iv.begin(), all_iv.end(),
            [](const Interval& x, const Interval& y) { return x.lo < y.lo; });
  for (const Interval& iv : all_iv) {
    if (!out.intervals.empty() &&
        (out.intervals.back().hi == kMax || iv.lo <= out.intervals.back().hi + 1)) {
      out.intervals.back().hi = std::max(out.intervals.back().hi, iv.hi);
    } else {
      out.intervals.push_back(iv);
    }
  }
  return out;
}

bool ValueSet::overlaps(int64_t lo, int64_t hi) const noexcept {
  return std::any_of(intervals.begin(), intervals.end(),
                     [&](const Interval& iv) { return iv.lo <= hi && lo <= iv.hi; });
}

bool ValueSet::is_all() const noexcept {
  return null_ok && intervals.size() == 1 && intervals[0].lo == kMin && intervals[0].hi == kMax;
}

ValueSet filter_value_set(std::string_view filters, std::string_view column, bool column_is_date) {
  if (trim(filters).empty()) return ValueSet::all();
  return expr_set(filters, column, column_is_date).value_or(ValueSet::all());
}

bool sql_filters_are_stable(std::string_view sql) {
  static constexpr std::string_view kVolatile[] = {"now",
                                                   "today",
                                                   "random",
                                                   "setseed",
                                                   "uuid",
                                                   "uuidv4",
                                                   "uuidv7",
                                                   "gen_random_uuid",
                                                   "nextval",
                                                   "currval",
                                                   "getvariable",
                                                   "transaction_timestamp",
                                                   "localtime",
                                                   "localtimestamp",
                                                   "get_current_time",
                                                   "get_current_timestamp",
                                                   "statement_timestamp"};
  std::string word;
  auto volatile_word = [&] {
    if (word.rfind("current_", 0) == 0) return true;  // current_date, current_timestamp, ...
    for (std::string_view v : kVolatile) {
      if (word == v) return true;
    }
    return false;
  };
  for (std::size_t i = 0; i <= sql.size(); ++i) {
    const char c = i < sql.size() ? sql[i] : ' ';
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') {
      word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      if (!word.empty() && volatile_word()) return false;
      word.clear();
    }
  }
  return true;
}

std::vector<ExplainedScan> explained_scans(std::string_view explain_json, bool late_materialized) {
  nlohmann::json plan;
  try {
    plan = nlohmann::json::parse(explain_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kDuckDb, fmt::format("cannot read DuckDB's query plan: {}", e.what()));
  }
  std::vector<ExplainedScan> scans;
  collect_scans(plan, scans, late_materialized);
  return scans;
}

}  // namespace duckpart
