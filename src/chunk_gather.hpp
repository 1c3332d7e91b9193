#pragma once

// Row gathers between DuckDB data chunks without DuckDB's per-call overhead.
//
// A routed bulk load scatters every source chunk of 2,048 rows over the partitions it touches: with
// 120 monthly partitions that is ~17 rows per partition and column. duckdb_vector_copy_sel costs
// ~190 ns per call whatever the row count (type dispatch, validity set-up), which made the
// scatter the largest single cost of the router thread (0.77 s of CPU for 10M rows). A typed loop
// copies the same rows for a few ns each.

#include <duckdb.h>

#include <cstddef>
#include <cstdint>

namespace duckpart {

// A flat vector with its data and validity pointers, read once per chunk: a router calls gather
// ~120 times per source column and chunk, and each C API call costs a few ns.
struct GatherVector {
  duckdb_vector vec = nullptr;
  void* data = nullptr;
  const uint64_t* validity = nullptr;  // nullptr: no NULL (unused for destinations)

  static GatherVector of(duckdb_data_chunk chunk, idx_t col) {
    GatherVector v;
    v.vec = duckdb_data_chunk_get_vector(chunk, col);
    v.data = duckdb_vector_get_data(v.vec);
    v.validity = duckdb_vector_get_validity(v.vec);
    return v;
  }
};

class ColumnGather {
 public:
  // `type` is the column's type; source and destination vectors must both be of it.
  explicit ColumnGather(duckdb_logical_type type);

  // Copies source rows rows[0..n) of the flat vector `src` to rows at..at+n of `dst` (a vector of
  // a chunk created by duckdb_create_data_chunk), NULLs included. Strings longer than the inline
  // size are copied into `dst`'s own string heap. `scratch` is a selection vector of at least
  // `n` entries, used for the types copied by DuckDB itself (nested, enum, bit ...). Returns the
  // bytes of the strings copied into `dst`'s heap.
  std::size_t gather(const GatherVector& src, const GatherVector& dst, const sel_t* rows, idx_t n,
                     idx_t at, duckdb_selection_vector scratch) const;

  // Bytes a row of this column takes in a chunk, without a string's heap (counted by gather);
  // 0 for the types copied by DuckDB, whose size is not known here (nested, enum, bit).
  std::size_t row_bytes() const noexcept {
    return kind_ == Kind::kFixed ? width_ : kind_ == Kind::kString ? sizeof(duckdb_string_t) : 0;
  }

  // Whether the column is copied by the typed loop (false: duckdb_vector_copy_sel).
  bool typed() const noexcept { return kind_ != Kind::kOther; }

 private:
  enum class Kind { kFixed, kString, kOther };
  Kind kind_ = Kind::kOther;
  std::size_t width_ = 0;
};

}  // namespace duckpart
