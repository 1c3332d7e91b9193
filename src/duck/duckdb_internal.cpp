// The one place that uses DuckDB's C++ headers (third_party/duckdb/internal/include, the same
// release as libduckdb.so): opening an instance without its linked extensions and loading them
// later. See duckdb_internal.hpp and docs/architecture.md, "Cold opens".
#include "duck/duckdb_internal.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <string>

#include "duckdb/main/capi/capi_internal.hpp"
#include "duckdb/main/config.hpp"
#include "duckdb/main/database.hpp"
#include "duckdb/main/extension_helper.hpp"
#include "duckdb/parser/expression/between_expression.hpp"
#include "duckdb/parser/expression/cast_expression.hpp"
#include "duckdb/parser/expression/columnref_expression.hpp"
#include "duckdb/parser/expression/comparison_expression.hpp"
#include "duckdb/parser/expression/conjunction_expression.hpp"
#include "duckdb/parser/parser.hpp"
#include "duckdb/parser/query_node/select_node.hpp"
#include "duckdb/parser/statement/select_statement.hpp"
#include "duckdb/parser/tableref/basetableref.hpp"

namespace duckpart::duck::internal {

namespace {

// The release whose headers are compiled in (tools/duckdb: `PRAGMA version` of libduckdb.so from
// @duckdb/node-bindings-linux-x64 1.4.4-r.4 and src/function/table/version/pragma_version.cpp of
// the duckdb 1.4.4 package both say v1.4.4, 6ddac802ff).
constexpr const char* kVersion = "v1.4.4";
constexpr const char* kSourceId = "6ddac802ff";

// A bool field read without assuming it holds 0 or 1.
unsigned char byte_of(const bool& field) noexcept {
  unsigned char b = 0;
  std::memcpy(&b, &field, 1);
  return b;
}

bool same_name(const std::string& a, const std::string& b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// A literal, or casts (not TRY_CAST) of one to text, DATE or a TIMESTAMP without time zone. Not
// TIMESTAMPTZ: the column would be compared in the session's time zone, where a clock change can
// make the values that satisfy a comparison more than one interval.
bool is_constant(const duckdb::ParsedExpression& e) {
  using duckdb::ExpressionClass;
  using duckdb::LogicalTypeId;
  if (e.GetExpressionClass() == ExpressionClass::CONSTANT) return true;
  if (e.GetExpressionClass() != ExpressionClass::CAST) return false;
  const auto& cast = e.Cast<duckdb::CastExpression>();
  switch (cast.cast_type.id()) {
    case LogicalTypeId::VARCHAR:
    case LogicalTypeId::DATE:
    case LogicalTypeId::TIMESTAMP:
    case LogicalTypeId::TIMESTAMP_SEC:
    case LogicalTypeId::TIMESTAMP_MS:
    case LogicalTypeId::TIMESTAMP_NS:
      break;
    default:
      return false;
  }
  return !cast.try_cast && cast.child && is_constant(*cast.child);
}

struct Names {
  const std::string& range;
  const std::string& column;
};

bool is_column(const duckdb::ParsedExpression& e, const Names& n) {
  if (e.GetExpressionClass() != duckdb::ExpressionClass::COLUMN_REF) return false;
  const auto& names = e.Cast<duckdb::ColumnRefExpression>().column_names;
  if (names.size() == 1) return same_name(names[0], n.column);
  return names.size() == 2 && same_name(names[0], n.range) && same_name(names[1], n.column);
}

// Whether `e` is one of the terms column_terms lists.
bool is_column_term(const duckdb::ParsedExpression& e, const Names& n) {
  using duckdb::ExpressionType;
  switch (e.GetExpressionClass()) {
    case duckdb::ExpressionClass::COMPARISON: {
      switch (e.GetExpressionType()) {
        case ExpressionType::COMPARE_EQUAL:
        case ExpressionType::COMPARE_LESSTHAN:
        case ExpressionType::COMPARE_LESSTHANOREQUALTO:
        case ExpressionType::COMPARE_GREATERTHAN:
        case ExpressionType::COMPARE_GREATERTHANOREQUALTO:
          break;
        default:
          return false;
      }
      const auto& c = e.Cast<duckdb::ComparisonExpression>();
      if (!c.left || !c.right) return false;
      return (is_column(*c.left, n) && is_constant(*c.right)) ||
             (is_constant(*c.left) && is_column(*c.right, n));
    }
    case duckdb::ExpressionClass::BETWEEN: {
      const auto& b = e.Cast<duckdb::BetweenExpression>();
      return b.input && b.lower && b.upper && is_column(*b.input, n) && is_constant(*b.lower) &&
             is_constant(*b.upper);
    }
    default:
      return false;
  }
}

// The top-level AND terms of `e`, in order.
void split_and(duckdb::unique_ptr<duckdb::ParsedExpression> e,
               duckdb::vector<duckdb::unique_ptr<duckdb::ParsedExpression>>& out) {
  if (e->GetExpressionType() == duckdb::ExpressionType::CONJUNCTION_AND) {
    auto& c = e->Cast<duckdb::ConjunctionExpression>();
    for (auto& child : c.children) split_and(std::move(child), out);
    return;
  }
  out.push_back(std::move(e));
}

// A parsed statement that column_terms accepts, its WHERE terms split.
struct PlainSelect {
  duckdb::unique_ptr<duckdb::SQLStatement> statement;
  duckdb::SelectNode* node = nullptr;
  std::string range;
  duckdb::vector<duckdb::unique_ptr<duckdb::ParsedExpression>> terms;  // all top-level terms
};

std::optional<PlainSelect> plain_select(const std::string& sql, const std::string& table) {
  if (!library_matches_headers()) return std::nullopt;
  duckdb::Parser parser;
  parser.ParseQuery(sql);
  if (parser.statements.size() != 1 ||
      parser.statements[0]->type != duckdb::StatementType::SELECT_STATEMENT) {
    return std::nullopt;
  }
  PlainSelect p;
  p.statement = std::move(parser.statements[0]);
  auto& select = p.statement->Cast<duckdb::SelectStatement>();
  if (!select.node || select.node->type != duckdb::QueryNodeType::SELECT_NODE ||
      !select.node->cte_map.map.empty()) {
    return std::nullopt;
  }
  p.node = &select.node->Cast<duckdb::SelectNode>();
  if (!p.node->from_table || p.node->from_table->type != duckdb::TableReferenceType::BASE_TABLE) {
    return std::nullopt;
  }
  const auto& ref = p.node->from_table->Cast<duckdb::BaseTableRef>();
  if (!ref.catalog_name.empty() || !ref.schema_name.empty() || ref.at_clause ||
      !ref.column_name_alias.empty() || !same_name(ref.table_name, table)) {
    return std::nullopt;
  }
  p.range = ref.alias.empty() ? ref.table_name : ref.alias;
  if (p.node->where_clause) split_and(std::move(p.node->where_clause), p.terms);
  return p;
}

}  // namespace

std::optional<ColumnTerms> column_terms(const std::string& sql, const std::string& table,
                                        const std::string& column) noexcept {
  try {
    std::optional<PlainSelect> p = plain_select(sql, table);
    if (!p) return std::nullopt;
    ColumnTerms out;
    out.range_name = p->range;
    const Names n{p->range, column};
    for (const auto& t : p->terms) {
      if (is_column_term(*t, n)) out.terms.push_back(t->ToString());
    }
    return out;
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<std::string> without_terms(const std::string& sql, const std::string& table,
                                         const std::string& column,
                                         const std::vector<bool>& drop) noexcept {
  try {
    std::optional<PlainSelect> p = plain_select(sql, table);
    if (!p) return std::nullopt;
    const Names n{p->range, column};
    duckdb::vector<duckdb::unique_ptr<duckdb::ParsedExpression>> kept;
    std::size_t k = 0;
    for (auto& t : p->terms) {
      if (is_column_term(*t, n)) {
        if (k >= drop.size()) return std::nullopt;
        if (drop[k++]) continue;
      }
      kept.push_back(std::move(t));
    }
    if (k != drop.size()) return std::nullopt;
    if (kept.size() == 1) {
      p->node->where_clause = std::move(kept[0]);
    } else if (!kept.empty()) {
      p->node->where_clause = duckdb::make_uniq<duckdb::ConjunctionExpression>(
          duckdb::ExpressionType::CONJUNCTION_AND, std::move(kept));
    }
    // The rendered text must parse back to exactly this tree: rendering can change what the text
    // means (a DOUBLE literal such as 1e-1 prints as 0.1, which parses as a DECIMAL). Constants
    // compare with their types.
    std::string text = p->statement->ToString();
    duckdb::Parser again;
    again.ParseQuery(text);
    if (again.statements.size() != 1 ||
        again.statements[0]->type != duckdb::StatementType::SELECT_STATEMENT ||
        !p->statement->Cast<duckdb::SelectStatement>().Equals(*again.statements[0])) {
      return std::nullopt;
    }
    return text;
  } catch (...) {
    return std::nullopt;
  }
}

bool library_matches_headers() noexcept {
  try {
    return std::strcmp(duckdb_library_version(), kVersion) == 0 &&
           std::strcmp(duckdb::DuckDB::SourceID(), kSourceId) == 0;
  } catch (...) {
    return false;
  }
}

bool defer_linked_extensions(duckdb_config cfg) noexcept {
  if (cfg == nullptr || !library_matches_headers()) return false;
  const char* env = std::getenv("DUCKPART_DUCKDB_EXTENSIONS");
  if (env != nullptr && std::strcmp(env, "at-open") == 0) return false;
  auto* config = reinterpret_cast<duckdb::DBConfig*>(cfg);
  auto& o = config->options;
  // The fields around `load_extensions` must read as the C API set them; a layout that differs
  // from the headers' would not, and then nothing is written.
  if (duckdb_set_config(cfg, "checkpoint_threshold", "7MiB") != DuckDBSuccess) return false;
  const bool layout_ok = o.checkpoint_wal_size == (idx_t{7} << 20) &&
                         byte_of(o.use_direct_io) == 0 && byte_of(o.load_extensions) == 1 &&
                         byte_of(o.autoload_known_extensions) == 0 &&
                         byte_of(o.autoinstall_known_extensions) == 0;
  if (duckdb_set_config(cfg, "checkpoint_threshold", "16MiB") != DuckDBSuccess ||
      o.checkpoint_wal_size != (idx_t{1} << 24) || !layout_ok) {
    return false;
  }
  o.load_extensions = false;
  return true;
}

void load_linked_extensions(duckdb_database db) {
  auto* wrapper = reinterpret_cast<duckdb::DatabaseWrapper*>(db);
  duckdb::ExtensionHelper::LoadAllExtensions(*wrapper->database);
}

}  // namespace duckpart::duck::internal
