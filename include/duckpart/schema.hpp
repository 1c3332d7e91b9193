// duckpart — the description of a table: its columns, the partition column and the id column.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace duckpart {

// Column types with a native path through records and columnar batches. Every other DuckDB type
// (INTERVAL, LIST, STRUCT, ...) is kOther: such tables can be migrated and queried (values come
// back as text), but not written through records.
enum class ColumnType {
  kBoolean,
  kTinyint,
  kSmallint,
  kInteger,
  kBigint,
  kUtinyint,
  kUsmallint,
  kUinteger,
  kHugeint,
  kFloat,
  kDouble,
  kDecimal,
  kVarchar,
  kDate,
  kTimestamp,
  kTimestampTz,
  kUuid,
  kBlob,
  kOther,
};

bool is_integer_type(ColumnType t) noexcept;
bool is_numeric_type(ColumnType t) noexcept;   // integers, FLOAT, DOUBLE, DECIMAL
bool is_temporal_type(ColumnType t) noexcept;  // DATE, TIMESTAMP, TIMESTAMPTZ

struct Column {
  std::string name;
  // DuckDB's spelling, used verbatim in DDL and casts: "DECIMAL(18,3)", "TIMESTAMP", "VARCHAR".
  std::string sql_type;
  ColumnType type = ColumnType::kOther;
  bool nullable = true;
};

// Parses a DuckDB type name ("INTEGER", "DECIMAL(18,3)", "TIMESTAMP WITH TIME ZONE", "INT4", ...)
// into a ColumnType. Throws Error(kInvalidArgument) for an empty or non-type string.
ColumnType parse_column_type(std::string_view sql_type);

// A table: name, ordered columns, the partition column and an optional id column. Plain data.
class Schema {
 public:
  Schema() = default;
  // Validates names (non-empty identifiers without NUL; duplicate names rejected case-insensitively
  // as DuckDB does), that the partition column exists and is DATE or TIMESTAMP, and that the id
  // column (if any) exists and is UUID, VARCHAR or BIGINT. Throws Error(kInvalidArgument) naming
  // the problem.
  Schema(std::string table_name, std::vector<Column> columns, std::string partition_column,
         std::optional<std::string> id_column = std::nullopt);

  const std::string& name() const noexcept { return name_; }
  const std::vector<Column>& columns() const noexcept { return columns_; }
  const std::string& partition_column() const noexcept { return partition_column_; }
  const std::optional<std::string>& id_column() const noexcept { return id_column_; }
  std::size_t partition_index() const noexcept { return partition_index_; }
  std::optional<std::size_t> id_index() const noexcept { return id_index_; }

  // Index of a column (exact name first, then case-insensitively as DuckDB resolves identifiers).
  std::optional<std::size_t> find(std::string_view column) const noexcept;
  // Same; throws Error(kInvalidArgument) "unknown column 'x' in table 'well_production' (columns:
  // ...)".
  std::size_t index_of(std::string_view column, std::string_view what = "column") const;

  // Stable JSON rendering, stored in every partition file to recognise foreign files.
  std::string to_json() const;
  static Schema from_json(std::string_view json);
  // Whether two schemas describe the same table layout (names, types, partition and id columns).
  bool same_layout(const Schema& other) const noexcept;

  // A demo schema: the seed's well_production table (id UUID, well_id, production_period DATE,
  // ...).
  static Schema well_production();

 private:
  std::string name_;
  std::vector<Column> columns_;
  std::string partition_column_;
  std::optional<std::string> id_column_;
  std::size_t partition_index_ = 0;
  std::optional<std::size_t> id_index_;
};

// Reads a table's schema from an existing DuckDB file (opened read-only). `id_column`: the column
// to use as id; when empty, a column named "id" is used if there is one. Throws Error naming the
// file and table when the file cannot be opened, the table does not exist, or the partition column
// is missing or not DATE/TIMESTAMP.
Schema introspect_schema(const std::string& database_path, const std::string& table,
                         const std::string& partition_column,
                         std::optional<std::string> id_column = std::nullopt);

// Reads a schema declared in TOML:
//   name = "well_production"
//   partition_column = "production_period"
//   id_column = "id"                     # optional
//   columns = [ { name = "id", type = "UUID" }, { name = "production_period", type = "DATE" }, ...
//   ]
Schema load_schema_toml(const std::string& path);
Schema parse_schema_toml(std::string_view toml_text, std::string_view origin);

}  // namespace duckpart
