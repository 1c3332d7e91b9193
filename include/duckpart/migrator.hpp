// duckpart — moving an existing single-file DuckDB table into partitions.
//
// analyze_source() reads a source table and reports how it would be partitioned (writes nothing).
// PartitionMigrator copies it into a PartitionedDataRepository: one scan per batch of source rows
// (a rowid range), routed to every period's partition, committed once per partition with a batch id
// (exactly-once), a checkpoint after each batch (resume after Ctrl-C or kill -9), and a
// verification of row count and an order-independent checksum over all columns per period.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "duckpart/partitioned_repository.hpp"
#include "duckpart/period.hpp"
#include "duckpart/schema.hpp"

namespace duckpart {

struct PeriodAnalysis {
  PartitionKey key;
  std::string name;  // partition_2023_01 (partition_null for NULL values)
  int64_t rows = 0;
  uint64_t estimated_bytes = 0;  // share of the source file's size, by rows
  std::optional<Timestamp> min_value;
  std::optional<Timestamp> max_value;
};

struct AnalysisReport {
  std::string source;
  std::string table;
  std::string partition_column;
  PartitionStrategy strategy = PartitionStrategy::kMonthly;
  int partition_size_threshold_mb = 2000;
  int64_t total_rows = 0;
  int64_t null_rows = 0;  // rows whose partition value is NULL
  uint64_t source_bytes = 0;
  std::vector<PeriodAnalysis> periods;  // by time, the null period last
  double skew = 0;                      // largest period / median period (rows)
  std::vector<std::string> oversized;   // periods estimated above partition_size_threshold_mb
  std::vector<std::string> undersized;  // periods estimated under 100 MB
  PartitionStrategy recommended = PartitionStrategy::kMonthly;
  std::string recommendation;  // the reason, one sentence

  std::string to_json() const;
  std::string to_text() const;
};

// Reads `table` of the DuckDB file `source_path` (read-only) and reports per period of `strategy`.
// Throws Error naming the file/table/column when they do not exist or the column is not temporal,
// Error(kLocked) when another process holds the file.
AnalysisReport analyze_source(const std::string& source_path, const std::string& table,
                              const std::string& partition_column, PartitionStrategy strategy,
                              int partition_size_threshold_mb = 2000);

struct MigrationOptions {
  std::string source_path = "data/data.duckdb";
  std::string table = "well_production";
  std::string partition_column = "production_period";
  int64_t batch_size = 1'000'000;  // source rows per batch (bounds memory and work lost on a crash)
  std::optional<Date> from;        // copy only rows with from <= value < to
  std::optional<Date> to;
  bool verify = true;
  bool null_partition = false;  // route NULL partition values to partition_null instead of refusing
  // Batches are streamed into the partitions inside open transactions and committed together this
  // often (and at the end of each window of partitions, and when stopped): the work a kill -9 can
  // lose. Longer groups write fewer partial row groups.
  double commit_interval_s = 30;
  // Periods written at once: the source is scanned once per group of this many periods (at least
  // the configuration's max_partitions_in_memory). Each open partition costs a few MB outside
  // DuckDB's memory limit.
  int open_partitions = 128;
  // A source clustered by time (sorted, or appended period after period) holds each period as
  // long runs of consecutive rows. A run of at least this many rows is copied by one INSERT ...
  // SELECT into its partition, which DuckDB runs on all cores; shorter runs and scattered rows are
  // routed row by row (for shorter runs an INSERT costs more: DuckDB rewrites the small row groups
  // it leaves). 0 routes every row. Found by a probe of the partition column per few batches.
  int64_t direct_copy_rows = 2 * 122'880;
  // The catch-up after verification replaces a period that differs from the source with the
  // source's copy (or drops it when the source has none). A partition that also holds batches
  // written by anything but a migration (the application, an import: rows the source may not
  // have) is left as it is and reported, unless this is set.
  bool replace_written = false;
};

struct MigrationProgress {
  int64_t rows_done = 0;
  int64_t rows_total = 0;
  int64_t batches_done = 0;
  int64_t batches_total = 0;
  double elapsed_s = 0;
  double rows_per_s = 0;
  double eta_s = 0;
  std::string current;  // what is being done now
};

struct PeriodCheck {
  std::string name;
  int64_t source_rows = 0;
  int64_t partition_rows = 0;
  std::string source_checksum;
  std::string partition_checksum;
  bool ok = false;
};

struct PlannedPartition {
  std::string name;
  std::string file;
  bool exists = false;  // update (true) or create
  int64_t rows = 0;
  uint64_t estimated_bytes = 0;
};

struct MigrationPlan {
  std::vector<PlannedPartition> partitions;
  int64_t rows = 0;
  int64_t batches = 0;
  int64_t batches_already_done = 0;  // per the checkpoint
  double sample_rows_per_s = 0;      // measured on a sample copy into a temporary directory
  double estimated_seconds = 0;
  std::string to_text() const;
  std::string to_json() const;
};

struct MigrationResult {
  int64_t rows_copied = 0;
  int64_t rows_skipped = 0;  // already present (replayed batches)
  int64_t batches_done = 0;
  int64_t batches_skipped = 0;  // finished in an earlier run (checkpoint)
  int64_t partitions_created = 0;
  // Rows of clustered runs copied by INSERT ... SELECT (see direct_copy_rows); the others were
  // routed.
  int64_t rows_by_insert = 0;
  bool interrupted = false;
  // Every batch is copied (interrupted = true with it: stopped while verifying or catching up).
  bool copied = false;
  double seconds = 0;
  bool verified = false;
  std::vector<PeriodCheck> checks;
  std::vector<std::string>
      periods_recopied;  // changed in the source since copied: replaced atomically
  // Periods that differ from the source but were not replaced (see replace_written): the
  // partition's name and why.
  std::vector<std::pair<std::string, std::string>> periods_kept;
  int64_t mismatches = 0;
};

class PartitionMigrator {
 public:
  // Attaches the source read-only to `repo` and reads its schema. Throws Error naming the source
  // when it cannot be opened (kLocked: held by another process; the message says what to do).
  PartitionMigrator(PartitionedDataRepository& repo, MigrationOptions options);
  ~PartitionMigrator();
  PartitionMigrator(const PartitionMigrator&) = delete;
  PartitionMigrator& operator=(const PartitionMigrator&) = delete;

  const Schema& schema() const noexcept { return schema_; }
  // The checkpoint file of this table's migration.
  std::string checkpoint_path() const;

  // What migrate() would do; writes nothing in the store (a sample is timed in a temporary
  // directory).
  MigrationPlan plan();
  // Copies (or finishes copying) the source. `stop` is checked between batches: when it becomes
  // true the run ends cleanly with interrupted = true. Throws Error on failure (the checkpoint
  // keeps what is done). With verify, result.mismatches counts periods whose rows or checksum
  // differ.
  MigrationResult migrate(const std::function<void(const MigrationProgress&)>& on_progress = {},
                          const std::atomic<bool>* stop = nullptr);
  // Per period: rows and checksum in the source and in the partitions.
  std::vector<PeriodCheck> verify();

 private:
  std::string range_sql() const;
  // Copies one period again into a new file and swaps it in atomically (drops it if now empty):
  // the source's rows of the period inside --from/--to, and, for a period across the range's edge,
  // the partition's own rows outside the range (read from a consistent copy of the partition,
  // replaced only if unchanged since). The partition is replaced (or dropped) only if it is still
  // in `state` (partition_state, taken before anything looked at it). Returns why it was left as
  // it is instead (another writer came in meanwhile).
  std::optional<std::string> recopy_period(const std::string& name,
                                           const PartitionedDataRepository::PartitionBackup& state);
  // Why partition `name` must not be replaced by the catch-up: batches in it that no migration
  // wrote; nullopt when there are none (or no such partition).
  std::optional<std::string> written_by_others(const std::string& name);
  // The condition (SQL over the partition column) of the rows of period `name` outside
  // --from/--to; nullopt when the range does not cut the period.
  std::optional<std::string> outside_the_range_sql(const std::string& name) const;
  // A new directory for a copy of a partition, outside the partition directory.
  std::string make_copy_dir() const;
  // Deletes the catch-up staging stores (".<table>.catchup_<pid>" in the partition directory) of
  // runs whose process is gone.
  void sweep_dead_staging() const;
  PartitionedDataRepository& repo_;
  MigrationOptions options_;
  Schema schema_;
  std::string alias_;
  const std::atomic<bool>* stop_ = nullptr;  // migrate()'s: verify() checks it between its passes
  bool verify_stopped_ = false;              // the last verify() returned early for stop_
};

}  // namespace duckpart
