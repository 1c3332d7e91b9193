// duckpart — rows: DataRecord (one row of values) and ColumnBatch (whole columns, for bulk loads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "duckpart/value.hpp"

namespace duckpart {

class Schema;

// One row. For writes, `values` holds one Value per schema column in schema order; for results, one
// per returned column (PaginatedResponse::columns / RecordStream::columns name them).
struct DataRecord {
  std::vector<Value> values;

  friend bool operator==(const DataRecord&, const DataRecord&) = default;
};

// One column of a ColumnBatch. The vector type follows the schema column's type:
//   BOOLEAN -> uint8_t (0/1); TINYINT..BIGINT, UTINYINT..UINTEGER -> int64_t; TIMESTAMP(TZ) ->
//   int64_t (microseconds); DATE -> int32_t (days); FLOAT, DOUBLE -> double; everything else
//   (VARCHAR, DECIMAL, UUID, BLOB, HUGEINT) -> std::string.
// `valid` marks non-NULL cells; empty means all valid.
struct ColumnVector {
  std::variant<std::vector<int64_t>, std::vector<int32_t>, std::vector<double>,
               std::vector<uint8_t>, std::vector<std::string>>
      data;
  std::vector<uint8_t> valid;

  std::size_t size() const noexcept;
  bool is_valid(std::size_t row) const noexcept { return valid.empty() || valid[row] != 0; }
};

// Whole columns, one ColumnVector per schema column in schema order, all of `rows` length. The fast
// path for loads: no per-cell Value. Build one with make_column_batch() to get the right vector
// types.
struct ColumnBatch {
  std::vector<ColumnVector> columns;
  std::size_t rows = 0;
};

// An empty batch with the vector types `schema` needs, each reserved for `capacity` rows.
ColumnBatch make_column_batch(const Schema& schema, std::size_t capacity = 0);

}  // namespace duckpart
