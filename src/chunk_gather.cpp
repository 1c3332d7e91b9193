#include "chunk_gather.hpp"

#include <cstring>

namespace duckpart {

namespace {

std::size_t fixed_width(duckdb_logical_type type) {
  switch (duckdb_get_type_id(type)) {
    case DUCKDB_TYPE_BOOLEAN:
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_UTINYINT:
      return 1;
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_USMALLINT:
      return 2;
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DATE:
      return 4;
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_TIME:
    case DUCKDB_TYPE_TIME_TZ:
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_S:
    case DUCKDB_TYPE_TIMESTAMP_MS:
    case DUCKDB_TYPE_TIMESTAMP_NS:
    case DUCKDB_TYPE_TIMESTAMP_TZ:
      return 8;
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT:
    case DUCKDB_TYPE_UUID:
    case DUCKDB_TYPE_INTERVAL:
      return 16;
    case DUCKDB_TYPE_DECIMAL:
      switch (duckdb_decimal_internal_type(type)) {
        case DUCKDB_TYPE_SMALLINT:
          return 2;
        case DUCKDB_TYPE_INTEGER:
          return 4;
        case DUCKDB_TYPE_BIGINT:
          return 8;
        case DUCKDB_TYPE_HUGEINT:
          return 16;
        default:
          return 0;
      }
    default:
      return 0;
  }
}

template <std::size_t W>
struct Cell {
  unsigned char b[W];
};

template <std::size_t W>
void gather_fixed(const void* src, void* dst, const sel_t* rows, idx_t n, idx_t at) {
  const auto* s = static_cast<const Cell<W>*>(src);
  auto* d = static_cast<Cell<W>*>(dst) + at;
  for (idx_t j = 0; j < n; ++j) d[j] = s[rows[j]];
}

}  // namespace

ColumnGather::ColumnGather(duckdb_logical_type type) {
  const duckdb_type id = duckdb_get_type_id(type);
  if (id == DUCKDB_TYPE_VARCHAR || id == DUCKDB_TYPE_BLOB) {
    kind_ = Kind::kString;
    width_ = sizeof(duckdb_string_t);
  } else if (const std::size_t w = fixed_width(type); w != 0) {
    kind_ = Kind::kFixed;
    width_ = w;
  }
}

std::size_t ColumnGather::gather(const GatherVector& src, const GatherVector& dst,
                                 const sel_t* rows, idx_t n, idx_t at,
                                 duckdb_selection_vector scratch) const {
  if (n == 0) return 0;
  if (kind_ == Kind::kOther) {
    std::memcpy(duckdb_selection_vector_get_data_ptr(scratch), rows, n * sizeof(sel_t));
    duckdb_vector_copy_sel(src.vec, dst.vec, scratch, n, 0, at);
    return 0;
  }
  const uint64_t* valid = src.validity;
  uint64_t* dst_valid = nullptr;
  if (valid) {
    for (idx_t j = 0; j < n; ++j) {
      const sel_t r = rows[j];
      if ((valid[r >> 6] >> (r & 63)) & 1) continue;
      if (!dst_valid) {
        duckdb_vector_ensure_validity_writable(dst.vec);
        dst_valid = duckdb_vector_get_validity(dst.vec);
      }
      duckdb_validity_set_row_invalid(dst_valid, at + j);
    }
  }
  const void* s = src.data;
  void* d = dst.data;
  if (kind_ == Kind::kString) {
    const auto* ss = static_cast<const duckdb_string_t*>(s);
    auto* ds = static_cast<duckdb_string_t*>(d) + at;
    std::size_t heap = 0;
    for (idx_t j = 0; j < n; ++j) {
      const duckdb_string_t& v = ss[rows[j]];
      if (dst_valid && !duckdb_validity_row_is_valid(dst_valid, at + j)) {
        ds[j] = duckdb_string_t{};  // a NULL's bytes are not a string: never follow its pointer
      } else if (v.value.inlined.length <= sizeof(v.value.inlined.inlined)) {
        ds[j] = v;
      } else {
        duckdb_vector_assign_string_element_len(dst.vec, at + j, v.value.pointer.ptr,
                                                v.value.pointer.length);
        heap += v.value.pointer.length;
      }
    }
    return heap;
  }
  switch (width_) {
    case 1:
      gather_fixed<1>(s, d, rows, n, at);
      break;
    case 2:
      gather_fixed<2>(s, d, rows, n, at);
      break;
    case 4:
      gather_fixed<4>(s, d, rows, n, at);
      break;
    case 8:
      gather_fixed<8>(s, d, rows, n, at);
      break;
    default:
      gather_fixed<16>(s, d, rows, n, at);
      break;
  }
  return 0;
}

}  // namespace duckpart
