// duckpart — the query model of the seed: filters, sort keys, pagination.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "duckpart/record.hpp"
#include "duckpart/value.hpp"

namespace duckpart {

enum class FilterOperator {
  kEq,
  kNe,
  kGt,
  kGte,
  kLt,
  kLte,
  kIn,
  kNotIn,
  kLike,
  kBetween,
  kIsNull,
  kIsNotNull,
};

// "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "like", "between", "is_null",
// "is_not_null".
std::string_view operator_name(FilterOperator op) noexcept;
// Parses the names above; throws Error(kInvalidArgument).
FilterOperator parse_operator(std::string_view name);

// One condition `field <op> value`. `value` is used by the comparison operators and like; `values`
// by in/not_in (any number) and between (exactly two: low, high, both inclusive);
// is_null/is_not_null use neither. Comparisons follow SQL: a NULL cell never matches
// eq/ne/gt/.../in/not_in/like/between.
struct QueryFilter {
  std::string field;
  FilterOperator op = FilterOperator::kEq;
  Value value;
  std::vector<Value> values;

  QueryFilter() = default;
  QueryFilter(std::string f, FilterOperator o, Value v = {})
      : field(std::move(f)), op(o), value(std::move(v)) {}
  QueryFilter(std::string f, FilterOperator o, std::vector<Value> vs)
      : field(std::move(f)), op(o), values(std::move(vs)) {}
};

enum class SortDirection { kAsc, kDesc };

struct SortKey {
  std::string field;
  SortDirection direction = SortDirection::kAsc;
};

// A query: filters joined with AND, sort keys in order (NULLs last in both directions, as
// DuckDB's default ORDER BY; a column is sorted by its own type), pagination and projection
// (empty: all columns, in schema order).
struct DataQueryRequest {
  std::vector<QueryFilter> filters;
  std::vector<SortKey> sort;
  std::optional<int64_t> limit;
  int64_t offset = 0;
  std::vector<std::string> columns;
};

// Which partitions a request touched; filled by both repositories (the single-file one reports 1 of
// 1).
struct QueryStats {
  int64_t partitions_total = 0;     // partitions the schema has
  int64_t partitions_scanned = 0;   // partitions the request read
  int64_t partitions_pruned = 0;    // partitions skipped without opening them
  int64_t partitions_attached = 0;  // partitions that had to be opened (ATTACH) for this request
};

// One page of results. `total` counts every row matching the filters (ignoring limit/offset).
struct PaginatedResponse {
  std::vector<std::string> columns;  // names of the values in each item, in order
  std::vector<DataRecord> items;
  int64_t total = 0;
  std::optional<int64_t> limit;
  int64_t offset = 0;
  bool has_more = false;
  QueryStats stats;

  // Value of `column` in item `row`; throws Error(kInvalidArgument) for an unknown column.
  const Value& value(std::size_t row, std::string_view column) const;
};

}  // namespace duckpart
