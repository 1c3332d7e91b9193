// duckpart — loading CSV and Parquet files into a partitioned table.
//
// The file is read by DuckDB's own readers into a staging database (<partitions>/_staging/), so a
// malformed file fails before anything reaches a partition: the error names the file and DuckDB's
// line. The staged rows then go to their partitions in batches through the SQL bulk path, each
// batch with an id derived from the file's content hash: re-running an interrupted (Ctrl-C, kill
// -9) import finishes it with every row exactly once, and importing the same file again is a
// no-op that says so.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "duckpart/partitioned_repository.hpp"

namespace duckpart {

struct ImportProgress {
  int64_t rows_total = 0;
  int64_t rows_done = 0;
  double rows_per_s = 0;
  double eta_s = 0;
  std::string stage;  // "reading <file>", "writing batch 3/10"
};

struct ImportOptions {
  // "csv" or "parquet"; empty: from the file extension (.csv, .tsv, .txt, .parquet, .gz ...).
  std::string format;
  int64_t batch_size = 1'000'000;  // staged rows per batch (memory is bounded by this)
  bool null_partition = false;     // route NULL partition values to partition_null
  std::function<void(const ImportProgress&)> progress;
  const std::atomic<bool>* stop = nullptr;  // checked between batches
};

struct ImportResult {
  std::string file;
  std::string import_id;  // from the file's content hash
  int64_t rows_in_file = 0;
  int64_t rows_written = 0;
  int64_t rows_skipped = 0;  // already imported by an earlier run of the same file
  int64_t batches = 0;
  int64_t partitions_created = 0;
  // An earlier run of this file cut its batches with this size (not options.batch_size): kept,
  // so that no row is written twice. 0 when options.batch_size was used.
  int64_t batch_size_kept = 0;
  bool interrupted = false;
  double seconds = 0;
  std::string to_text() const;
  std::string to_json() const;
};

// Imports `file` into `table` of `repo`. When the table has no partitions yet, its schema comes
// from the file (names and the types DuckDB detects; the id column is "id" when there is one);
// otherwise the file's columns are matched to the table's by name (case-insensitive; missing
// columns are NULL, a UUID id left NULL gets a UUIDv7) and converted to the table's types.
// Throws Error(kInvalidArgument) for a malformed file (naming file and line), an unknown column
// or a NULL partition value without null_partition; Error(kNotFound) for a missing file.
ImportResult import_file(PartitionedDataRepository& repo, const std::string& table,
                         const std::string& file, const ImportOptions& options = {});

}  // namespace duckpart
