// duckpart — operations on a partitioned store: retention clean-up, backup and restore, health.
// The seed's PartitionUtilities. Every method works on a live repository (other threads may keep
// reading and writing); each partition it changes is handled exclusively.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "duckpart/partitioned_repository.hpp"

namespace duckpart {

struct CleanupItem {
  std::string name;
  std::string file;
  int64_t rows = 0;
  uint64_t bytes = 0;
  Date period_end;
  std::string archived_to;  // backup file, when archiving
};

struct CleanupResult {
  Date cutoff;  // partitions whose period ended on or before this day are removed
  bool dry_run = false;
  std::vector<CleanupItem> removed;          // (would be) removed, oldest first
  std::vector<std::string> kept_straddling;  // periods that contain the cut-off: kept
  // Expired by their name but kept, "<partition>: why": a file with a problem (another period's
  // rows, damaged, foreign) or rows past the cut-off.
  std::vector<std::string> kept_problems;
  // What a dry run (a read-only open) could not take into account: pending ingest logs, whose
  // rows the real run commits first (a partition listed here may then be kept).
  std::vector<std::string> notes;
  uint64_t bytes_freed = 0;
  std::string to_text() const;
  std::string to_json() const;
};

struct BackupManifestEntry {
  std::string file;  // file name inside the backup directory
  std::string partition;
  uint64_t bytes = 0;
  std::string xxh3_128;
  int64_t rows = 0;
};

struct RestoreResult {
  std::vector<std::string> verified;  // backup files whose checksum matched
  std::vector<std::string> restored;  // partitions replaced (empty with verify_only)
};

struct HealthFinding {
  std::string severity;   // "info", "warning" or "error"
  std::string partition;  // empty for store-wide findings
  std::string file;
  std::string problem;
  std::string recommendation;
};

struct HealthReport {
  std::string schema;
  std::string directory;
  std::string strategy;
  int64_t partitions = 0;
  int64_t rows = 0;
  uint64_t bytes = 0;
  std::vector<HealthFinding> findings;
  int64_t errors = 0;
  int64_t warnings = 0;
  std::string to_json() const;
  std::string summary() const;  // a human summary, one finding per line
};

struct CompactReport {
  std::vector<PartitionedDataRepository::CompactResult> partitions;
  uint64_t bytes_before = 0;
  uint64_t bytes_after = 0;
  std::string to_text() const;
  std::string to_json() const;
};

struct ExportResult {
  std::string dir;
  int64_t partitions_exported = 0;
  int64_t partitions_unchanged = 0;  // exported by an earlier run and not changed since
  int64_t rows = 0;                  // rows in the export (all partitions)
  uint64_t bytes = 0;                // Parquet bytes written by this run
  bool interrupted = false;
  double seconds = 0;
  std::string to_text() const;
  std::string to_json() const;
};

class PartitionUtilities {
 public:
  explicit PartitionUtilities(PartitionedDataRepository& repo) : repo_(repo) {}

  // Removes every partition whose period ended on or before `today - retention_days` (whole files:
  // detach, delete; the space comes back). A period containing the cut-off is kept; so is
  // partition_null. `archive_dir`: back each one up there first (and stop if that fails). Without
  // an archive the partitions are dropped on up to 4 threads; the first failure stops the rest
  // from starting (drops under way finish) and is thrown.
  // Throws Error(kInvalidArgument) for a negative retention.
  CleanupResult cleanup(const Schema& schema, int retention_days, Date today, bool dry_run,
                        const std::string& archive_dir = "");
  // Backs up one partition (by name, "partition_2023_12") or every partition into `dir`, adding
  // each file's checksum to <dir>/manifest.json.
  BackupManifestEntry backup_partition(const Schema& schema, const std::string& name,
                                       const std::string& dir);
  std::vector<BackupManifestEntry> backup_all(const Schema& schema, const std::string& dir);
  // Verifies backup file(s) against their directory's manifest.json and, unless verify_only,
  // restores them. `path`: one backup file, or a backup directory (every file of its manifest).
  // A checksum mismatch is Error(kCorruption) naming the file; nothing is restored then.
  RestoreResult restore(const Schema& schema, const std::string& path, bool verify_only);
  // Rewrites one partition (by name) or, with an empty name, every usable partition sorted by the
  // partition column; see PartitionedDataRepository::compact_partition (`block_size_kb`: 0
  // automatic, or the DuckDB block size of every rewritten file). `progress` is called after
  // each partition.
  CompactReport compact(
      const Schema& schema, const std::string& name,
      const std::function<void(const PartitionedDataRepository::CompactResult&)>& progress = {},
      int block_size_kb = 0);
  // Mirrors the table as hive-partitioned Parquet under `dir` (year=YYYY/month=MM/..., files
  // <partition>_<n>.parquet) that DuckDB, Spark, Trino and ClickHouse read directly. Resumable: a
  // manifest (_duckpart_export.json) records each exported partition and its row count; a re-run
  // skips unchanged partitions, re-exports changed ones (their old files removed first) and removes
  // files of partitions that no longer exist. Each partition's files are counted back after
  // writing (Error(kCorruption) on a mismatch). `stop` is checked between partitions.
  ExportResult export_parquet(const Schema& schema, const std::string& dir,
                              const std::function<void(const std::string& partition, int64_t done,
                                                       int64_t total)>& progress = {},
                              const std::atomic<bool>* stop = nullptr);
  // Opens every partition and checks it; see HealthFinding.
  HealthReport health_report(const Schema& schema);

 private:
  PartitionedDataRepository& repo_;
};

}  // namespace duckpart
