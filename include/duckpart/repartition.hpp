// duckpart — re-partitioning: rewriting a table's partitions into another strategy (monthly ->
// yearly roll-up of old data, daily -> monthly, yearly -> weekly, ...).
//
// The new partitions are built next to the old ones, in <partitions>/_repartition_<strategy>_of_
// <table>/ (one per table, under the lock file <partitions>/_repartition_<table>.lock), by the SQL
// bulk path (one scan per batch of an old partition's rows, committed once per new partition with
// a batch id: a re-run after Ctrl-C or kill -9 finishes with every row once, cutting the batches
// the interrupted run cut). Then every new period's row count and checksum over all columns is
// compared with what the old partitions hold for it, and only then the two directories are
// exchanged in one atomic rename (renameat2 RENAME_EXCHANGE) and the old files removed. A crash
// after the exchange is finished by the next run. Pending ingest logs (rows a stopped writer had
// acknowledged) are committed to the old partitions first. Writers must be stopped while it runs:
// a table whose files changed since they were read is not swapped (Error kConflict).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "duckpart/config.hpp"
#include "duckpart/migrator.hpp"

namespace duckpart {

struct RepartitionOptions {
  std::string table = "well_production";
  PartitionStrategy to = PartitionStrategy::kYearly;
  int64_t batch_size = 1'000'000;  // rows of an old partition per batch
  bool verify = true;              // without it, the swap happens unverified
  bool dry_run = false;            // plan only; writes nothing
};

struct RepartitionResult {
  PartitionStrategy from = PartitionStrategy::kMonthly;
  PartitionStrategy to = PartitionStrategy::kYearly;
  int64_t partitions_before = 0;
  int64_t partitions_after = 0;
  int64_t rows = 0;                 // rows in the old partitions
  int64_t rows_copied = 0;          // by this run
  int64_t rows_skipped = 0;         // copied by an earlier, interrupted run
  std::vector<PeriodCheck> checks;  // one per new partition
  int64_t mismatches = 0;
  bool verified = false;
  bool swapped = false;
  bool interrupted = false;
  bool dry_run = false;
  bool already_done = false;  // the table already uses `to`: nothing to do
  double seconds = 0;
  std::vector<std::pair<std::string, int64_t>> planned;  // new partition -> rows (exact)
  std::vector<std::string> notes;  // buffered rows committed first (or, in a dry run, left out)
  std::string to_text() const;
  std::string to_json() const;
};

// Rewrites table `options.table` of the store at config.base_partition_path (written with any
// strategy; config.strategy is ignored) into `options.to`. `progress` gets rows done/total;
// `stop` is checked between batches. A table that already uses `options.to` is left alone (from ==
// to in the result). Throws Error(kNotFound) when it has no partitions, Error(kCorruption) naming a
// damaged partition.
RepartitionResult repartition(const PartitionConfig& config, const RepartitionOptions& options,
                              const std::function<void(const MigrationProgress&)>& progress = {},
                              const std::atomic<bool>* stop = nullptr);

}  // namespace duckpart
