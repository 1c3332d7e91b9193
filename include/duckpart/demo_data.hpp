// duckpart — the embedded default data set: a synthetic well_production table.
#pragma once

#include <cstdint>
#include <string>

namespace duckpart {

struct DemoDataOptions {
  int64_t rows = 2'000'000;
  uint64_t seed = 42;
  // First month and number of months covered (production_period is the first day of a month).
  int first_year = 2021;
  int months = 48;
  // Rows are stored in random period order (like a table filled by many loaders), not sorted by
  // time.
  std::string table = "well_production";
};

// Creates (or replaces) `table` in the DuckDB file at `database_path` with the schema of
// Schema::well_production(), filled deterministically from `seed` (same seed, same rows). Returns
// the number of rows written. Throws Error naming the file on failure (e.g. locked by another
// process).
int64_t generate_well_production(const std::string& database_path,
                                 const DemoDataOptions& options = {});

}  // namespace duckpart
