#include "duckpart/schema.hpp"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"

namespace duckpart {

bool is_integer_type(ColumnType t) noexcept {
  switch (t) {
    case ColumnType::kTinyint:
    case ColumnType::kSmallint:
    case ColumnType::kInteger:
    case ColumnType::kBigint:
    case ColumnType::kUtinyint:
    case ColumnType::kUsmallint:
    case ColumnType::kUinteger:
    case ColumnType::kHugeint:
      return true;
    default:
      return false;
  }
}

bool is_numeric_type(ColumnType t) noexcept {
  return is_integer_type(t) || t == ColumnType::kFloat || t == ColumnType::kDouble ||
         t == ColumnType::kDecimal;
}

bool is_temporal_type(ColumnType t) noexcept {
  return t == ColumnType::kDate || t == ColumnType::kTimestamp || t == ColumnType::kTimestampTz;
}

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

}  // namespace

ColumnType parse_column_type(std::string_view sql_type) {
  std::string t = upper(sql_type);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  if (t.empty()) throw Error(ErrorCode::kInvalidArgument, "empty column type");
  // Types are spliced into DDL and casts: outside quotes only the characters type names use,
  // balanced parentheses; quoted text (ENUM('a', 'b'), STRUCT("field name" INT)) must close — a
  // doubled quote inside is the quote itself.
  int depth = 0;
  char quote = 0;
  for (char c : t) {
    if (quote) {
      if (c == quote) quote = 0;  // '' re-opens at the next character: an escaped quote
      // No backslash: in DuckDB's E'...' strings \' is a quote inside the string, which would
      // end the text elsewhere than this scan thinks.
      if (c == '\0' || c == '\\') {
        depth = -1;
        break;
      }
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      continue;
    }
    if (c == '(') ++depth;
    if (c == ')' && --depth < 0) break;
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ' ' || c == '(' ||
          c == ')' || c == ',' || c == '[' || c == ']' || c == '.')) {
      depth = -1;
      break;
    }
  }
  if (depth != 0 || quote != 0) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("invalid column type '{}'", sql_type));
  }
  std::string base = t.substr(0, t.find('('));
  while (!base.empty() && base.back() == ' ') base.pop_back();
  static const std::pair<const char*, ColumnType> kNames[] = {
      {"BOOLEAN", ColumnType::kBoolean},
      {"BOOL", ColumnType::kBoolean},
      {"LOGICAL", ColumnType::kBoolean},
      {"TINYINT", ColumnType::kTinyint},
      {"INT1", ColumnType::kTinyint},
      {"SMALLINT", ColumnType::kSmallint},
      {"INT2", ColumnType::kSmallint},
      {"SHORT", ColumnType::kSmallint},
      {"INTEGER", ColumnType::kInteger},
      {"INT", ColumnType::kInteger},
      {"INT4", ColumnType::kInteger},
      {"SIGNED", ColumnType::kInteger},
      {"BIGINT", ColumnType::kBigint},
      {"INT8", ColumnType::kBigint},
      {"LONG", ColumnType::kBigint},
      {"UTINYINT", ColumnType::kUtinyint},
      {"USMALLINT", ColumnType::kUsmallint},
      {"UINTEGER", ColumnType::kUinteger},
      {"HUGEINT", ColumnType::kHugeint},
      {"INT128", ColumnType::kHugeint},
      {"FLOAT", ColumnType::kFloat},
      {"REAL", ColumnType::kFloat},
      {"FLOAT4", ColumnType::kFloat},
      {"DOUBLE", ColumnType::kDouble},
      {"FLOAT8", ColumnType::kDouble},
      {"DECIMAL", ColumnType::kDecimal},
      {"NUMERIC", ColumnType::kDecimal},
      {"VARCHAR", ColumnType::kVarchar},
      {"TEXT", ColumnType::kVarchar},
      {"STRING", ColumnType::kVarchar},
      {"CHAR", ColumnType::kVarchar},
      {"BPCHAR", ColumnType::kVarchar},
      {"DATE", ColumnType::kDate},
      {"TIMESTAMP", ColumnType::kTimestamp},
      {"DATETIME", ColumnType::kTimestamp},
      {"TIMESTAMP WITH TIME ZONE", ColumnType::kTimestampTz},
      {"TIMESTAMPTZ", ColumnType::kTimestampTz},
      {"UUID", ColumnType::kUuid},
      {"BLOB", ColumnType::kBlob},
      {"BYTEA", ColumnType::kBlob},
  };
  for (const auto& [name, type] : kNames) {
    if (base == name) return type;
  }
  return ColumnType::kOther;
}

namespace {

void check_identifier(std::string_view name, std::string_view what) {
  if (name.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("empty {} name", what));
  if (name.size() > 255) {
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("{} name '{}...' is longer than 255 characters", what, name.substr(0, 32)));
  }
  for (char c : name) {
    if (c == '\0' || static_cast<unsigned char>(c) < 0x20) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{} name contains a control character", what));
    }
  }
}

}  // namespace

Schema::Schema(std::string table_name, std::vector<Column> columns, std::string partition_column,
               std::optional<std::string> id_column)
    : name_(std::move(table_name)),
      columns_(std::move(columns)),
      partition_column_(std::move(partition_column)),
      id_column_(std::move(id_column)) {
  check_identifier(name_, "table");
  if (name_.find('/') != std::string::npos || name_.find('\\') != std::string::npos ||
      name_ == "." || name_ == ".." || name_[0] == '_') {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("table name '{}' cannot be used as a directory name (no '/', '\\', "
                            "leading '_', '.' or '..')",
                            name_));
  }
  if (columns_.empty()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("table '{}' has no columns", name_));
  }
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    check_identifier(columns_[i].name, "column");
    for (std::size_t j = 0; j < i; ++j) {
      if (iequals(columns_[i].name, columns_[j].name)) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("table '{}' has two columns named '{}'", name_, columns_[i].name));
      }
    }
    if (columns_[i].sql_type.empty()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("column '{}' of table '{}' has no type", columns_[i].name, name_));
    }
    columns_[i].type = parse_column_type(columns_[i].sql_type);
  }
  auto p = find(partition_column_);
  if (!p) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("partition column '{}' is not a column of table '{}'",
                            partition_column_, name_));
  }
  partition_index_ = *p;
  partition_column_ = columns_[*p].name;
  const ColumnType pt = columns_[*p].type;
  if (pt != ColumnType::kDate && pt != ColumnType::kTimestamp) {
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("partition column '{}' of table '{}' is {}, but must be DATE or TIMESTAMP "
                    "(cast TIMESTAMP WITH TIME ZONE to a UTC TIMESTAMP first)",
                    partition_column_, name_, columns_[*p].sql_type));
  }
  if (id_column_) {
    auto i = find(*id_column_);
    if (!i) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("id column '{}' is not a column of table '{}'", *id_column_, name_));
    }
    const ColumnType it = columns_[*i].type;
    if (it != ColumnType::kUuid && it != ColumnType::kVarchar && it != ColumnType::kBigint) {
      throw Error(
          ErrorCode::kInvalidArgument,
          fmt::format("id column '{}' of table '{}' is {}, but must be UUID, VARCHAR or BIGINT",
                      *id_column_, name_, columns_[*i].sql_type));
    }
    if (*i == partition_index_) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("id column '{}' cannot also be the partition column", *id_column_));
    }
    id_index_ = *i;
    id_column_ = columns_[*i].name;
  }
}

std::optional<std::size_t> Schema::find(std::string_view column) const noexcept {
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    if (columns_[i].name == column) return i;
  }
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    if (iequals(columns_[i].name, column)) return i;
  }
  return std::nullopt;
}

std::size_t Schema::index_of(std::string_view column, std::string_view what) const {
  if (auto i = find(column)) return *i;
  std::string names;
  for (const auto& c : columns_) {
    if (!names.empty()) names += ", ";
    names += c.name;
  }
  throw Error(
      ErrorCode::kInvalidArgument,
      fmt::format("unknown {} '{}' in table '{}' (columns: {})", what, column, name_, names));
}

std::string Schema::to_json() const {
  nlohmann::ordered_json j;
  j["name"] = name_;
  j["partition_column"] = partition_column_;
  j["id_column"] = id_column_ ? nlohmann::ordered_json(*id_column_) : nlohmann::ordered_json();
  auto cols = nlohmann::ordered_json::array();
  for (const auto& c : columns_) {
    cols.push_back({{"name", c.name}, {"type", c.sql_type}});
  }
  j["columns"] = cols;
  return j.dump();
}

Schema Schema::from_json(std::string_view json) {
  try {
    auto j = nlohmann::json::parse(json);
    std::vector<Column> cols;
    for (const auto& c : j.at("columns")) {
      cols.push_back(Column{c.at("name").get<std::string>(), c.at("type").get<std::string>(),
                            ColumnType::kOther, true});
    }
    std::optional<std::string> id;
    if (j.contains("id_column") && !j["id_column"].is_null())
      id = j["id_column"].get<std::string>();
    return Schema(j.at("name").get<std::string>(), std::move(cols),
                  j.at("partition_column").get<std::string>(), id);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kCorruption, fmt::format("invalid schema description: {}", e.what()));
  }
}

bool Schema::same_layout(const Schema& o) const noexcept {
  if (name_ != o.name_ || partition_column_ != o.partition_column_ || id_column_ != o.id_column_ ||
      columns_.size() != o.columns_.size()) {
    return false;
  }
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    if (columns_[i].name != o.columns_[i].name ||
        upper(columns_[i].sql_type) != upper(o.columns_[i].sql_type)) {
      return false;
    }
  }
  return true;
}

Schema Schema::well_production() {
  return Schema("well_production",
                {
                    {"id", "UUID"},
                    {"well_id", "VARCHAR"},
                    {"production_period", "DATE"},
                    {"oil_bbl", "DOUBLE"},
                    {"gas_mcf", "DOUBLE"},
                    {"water_bbl", "DOUBLE"},
                    {"days_produced", "INTEGER"},
                    {"operator_name", "VARCHAR"},
                    {"state", "VARCHAR"},
                    {"choke_size", "DECIMAL(6,2)"},
                    {"is_active", "BOOLEAN"},
                },
                "production_period", "id");
}

Schema introspect_schema(const std::string& database_path, const std::string& table,
                         const std::string& partition_column,
                         std::optional<std::string> id_column) {
  if (!std::filesystem::exists(database_path)) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("database file '{}' does not exist", database_path));
  }
  duck::Database db = duck::Database::open(database_path, /*read_only=*/true);
  duck::Connection conn = db.connect();
  auto stmt = conn.prepare(
      "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
      "AND table_schema = 'main' ORDER BY ordinal_position",
      database_path);
  stmt.bind(1, Value(table));
  duck::Result r = stmt.execute();
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  if (rows.empty()) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("table '{}' does not exist in '{}'", table, database_path));
  }
  std::vector<Column> cols;
  for (const auto& row : rows) {
    cols.push_back(Column{row.values[0].get<std::string>(), row.values[1].get<std::string>(),
                          ColumnType::kOther, true});
  }
  if (!id_column) {
    for (const auto& c : cols) {
      const ColumnType t = parse_column_type(c.sql_type);
      if (iequals(c.name, "id") &&
          (t == ColumnType::kUuid || t == ColumnType::kVarchar || t == ColumnType::kBigint)) {
        id_column = c.name;
      }
    }
  }
  try {
    return Schema(table, std::move(cols), partition_column, id_column);
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{}: {}", database_path, e.what()));
  }
}

Schema parse_schema_toml(std::string_view toml_text, std::string_view origin) {
  toml::table t;
  try {
    t = toml::parse(toml_text, std::string(origin));
  } catch (const toml::parse_error& e) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}:{}: invalid TOML: {}", origin,
                                                         e.source().begin.line, e.description()));
  }
  auto str = [&](std::string_view key) -> std::optional<std::string> {
    if (auto* n = t.get(key)) {
      if (!n->is_string()) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("{}: '{}' must be a string", origin, key));
      }
      return *n->value<std::string>();
    }
    return std::nullopt;
  };
  auto name = str("name");
  auto pcol = str("partition_column");
  if (!name || !pcol) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: a schema needs 'name' and 'partition_column'", origin));
  }
  const toml::array* arr = t["columns"].as_array();
  if (!arr) {
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("{}: 'columns' must be an array of {{ name = ..., type = ... }}", origin));
  }
  std::vector<Column> cols;
  for (const auto& node : *arr) {
    const toml::table* c = node.as_table();
    auto n = c ? (*c)["name"].value<std::string>() : std::nullopt;
    auto ty = c ? (*c)["type"].value<std::string>() : std::nullopt;
    if (!n || !ty) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: every column needs a string 'name' and 'type'", origin));
    }
    cols.push_back(Column{*n, *ty, ColumnType::kOther, true});
  }
  try {
    return Schema(*name, std::move(cols), *pcol, str("id_column"));
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{}: {}", origin, e.what()));
  }
}

Schema load_schema_toml(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kIo, fmt::format("cannot read schema file '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_schema_toml(ss.str(), path);
}

}  // namespace duckpart
