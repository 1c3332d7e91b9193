// Deterministic batches for the crash tests: the writer process and the test's oracle generate the
// same rows (ids included), so a replayed batch is recognisable row by row.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <vector>

#include "duckpart/duckpart.hpp"

namespace duckpart::crash {

inline Schema writer_schema() {
  return Schema("events",
                {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"qty", "INTEGER"}, {"name", "VARCHAR"}},
                "ts", "id");
}

// Batch `b`: `rows` rows spread over 18 months of 2022-2023 (so one batch touches many partitions).
inline std::vector<DataRecord> writer_batch(int64_t b, int64_t rows) {
  std::vector<DataRecord> out;
  out.reserve(static_cast<std::size_t>(rows));
  const int64_t first = int64_t{date_from_civil(2022, 1, 1).days} * kMicrosPerDay;
  const int64_t span = int64_t{540} * kMicrosPerDay;
  for (int64_t i = 0; i < rows; ++i) {
    uint64_t h = static_cast<uint64_t>(b) * 1000003ULL + static_cast<uint64_t>(i) * 7919ULL + 17;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    DataRecord r;
    r.values = {Value(fmt::format("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", static_cast<uint32_t>(b),
                                  static_cast<uint32_t>(i >> 24) & 0xffff,
                                  static_cast<uint32_t>(i >> 12) & 0xfff,
                                  static_cast<uint32_t>(i) & 0xfff, h & 0xffffffffffffULL)),
                Value(Timestamp{first + static_cast<int64_t>(h % static_cast<uint64_t>(span))}),
                Value(static_cast<int64_t>(h % 1000)), Value(fmt::format("n{}", h % 97))};
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace duckpart::crash
