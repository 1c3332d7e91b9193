// duckpart — configuration of a partitioned store (the seed's PartitionConfig and its presets).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "duckpart/period.hpp"

namespace duckpart {

// How a store partitions and how much it keeps open. Plain data: copy freely; call validate() (the
// repositories do) before use.
struct PartitionConfig {
  PartitionStrategy strategy = PartitionStrategy::kMonthly;
  // The DATE or TIMESTAMP column that decides a row's period, used when a schema is read from an
  // existing table (introspection, the CLI). A Schema given in code names its own partition column.
  std::string partition_column = "production_period";
  // Directory of the store; each schema lives in <base_partition_path>/<schema name>/.
  std::string base_partition_path = "data/partitions";
  // Partition files kept ATTACHed at once (least recently used are detached beyond it).
  int max_partitions_in_memory = 24;
  // Size above which health reports flag a partition as too large.
  int partition_size_threshold_mb = 2000;
  // When false, a write to a period without a partition file is an error instead of creating it.
  bool auto_partition_enabled = true;
  // When false, a query that needs more than one partition is an error.
  bool enable_cross_partition_queries = true;
  // Worker threads for parallel partition writes (0: one per hardware thread).
  int write_threads = 0;
  // While a batch of 100K+ rows is written on as many write threads as there are cores (and while
  // flush() checkpoints), DuckDB's own worker threads are set to one, restored after: each small
  // statement of a write thread is a DuckDB task its workers can take over while the write thread
  // spins waiting for it, which cost large create_batch calls 5-10% of their time
  // (docs/performance.md, session 9). Queries running in the same repository meanwhile run on one
  // thread. false: DuckDB keeps its threads.
  bool single_duckdb_thread_while_writing = true;
  // Memory DuckDB may use for this repository (buffer cache of the open partitions, sorts,
  // aggregates), in MB. -1 (default): automatic, a quarter of the memory this process may use
  // (physical memory or a lower cgroup limit), at least 256 MB; 0: DuckDB's default (80% of RAM);
  // otherwise at least 64. Bounds the resident memory of long scans and streams: what DuckDB
  // cannot keep in memory it re-reads (the partition files stay in the page cache) or spills.
  // DuckDB's default plus the write buffer (1/8) overcommits memory: DuckDB keeps every block an
  // ingest writes, and at 300M rows over 360 partitions its growing cache cost 1.2x in ingest
  // speed (fresh pages, reclaim; docs/performance.md, "Session 19").
  int memory_limit_mb = -1;
  // memory_limit_mb with -1 resolved (0: DuckDB's default).
  int effective_memory_limit_mb() const;
  int effective_memory_limit_mb(int64_t usable_mb) const;  // with usable_memory_mb() given
  // Memory for the id -> rowid maps that let get_by_id read one row instead of scanning a
  // partition's ids (~5 bytes per row of each partition looked up at least twice; least recently
  // used maps are dropped beyond it), in MB. -1 (default): automatic, 1/8 of the memory this
  // process may use (physical memory or a lower cgroup limit), at least 128 MB: ~3 GB on a 24 GB
  // machine, where the maps of 300M rows took 1.3 GB (a fixed 1 GB left ~a fifth of lookups spread
  // over 300M rows scanning their partition: p95 2.2 ms instead of 1.0; docs/performance.md,
  // "Session 38"); 0: no maps, every lookup scans its partition.
  int id_index_memory_mb = -1;
  // id_index_memory_mb with -1 resolved (see above).
  int effective_id_index_memory_mb() const;
  int effective_id_index_memory_mb(int64_t usable_mb) const;  // with usable_memory_mb() given
  // Write buffering for bulk ingest, in MB of memory; -1 (default): automatic, 1/8 of the memory
  // this process may use (physical memory or a lower cgroup limit), 16 to 4096 MB; 0: off. When
  // on, create_batch and create_batch_columnar without a batch id append the batch to the table's
  // ingest log (synced before they return: the rows are durable) and keep its rows in memory; a
  // drain commits them all at once, so each partition gets large appends that DuckDB writes
  // compressed, instead of a small append per call (docs/architecture.md, "Write buffering").
  // When the buffered rows reach 8/9 of this size, a background drain commits the fullest
  // partitions holding an eighth of them while the others keep filling (so that at many
  // partitions each commit is larger than an even share of the memory); a partition holding
  // 491,520 rows (four row groups) is handed to a background drain as soon as none is running,
  // so a data set that fits in the buffer is not all written at flush(). Everything is drained
  // before any other operation on the table (reads see every row written before them), on flush(),
  // on close, and per partition after write_buffer_max_delay_ms; a crash is repaired at the next
  // open by replaying the ingest logs exactly once. Ingest logs live until every partition holding
  // rows of them has committed: up to twice this size on disk. Other processes see buffered rows
  // only after a drain.
  int write_buffer_mb = -1;
  // write_buffer_mb with -1 resolved (see above).
  int effective_write_buffer_mb() const;
  int effective_write_buffer_mb(int64_t usable_mb) const;  // with usable_memory_mb() given
  // The longest buffered rows wait for a drain, in milliseconds: a background drain commits a
  // partition's buffered rows once the first of them has waited this long (and no other drain of
  // the table is running), so that an idle or slow writer's acknowledged rows reach the partition
  // files (and other processes) within about this delay. While a stream keeps filling the buffer
  // (it was full within the delay, or it is being written at a rate that would fill it within six
  // delays) a partition is due only after six times the delay, so that the timer does not cut the
  // stream's commits short; once it stops, the delay applies. 0: no timed drains (only the budget,
  // other operations, flush() and close drain).
  int write_buffer_max_delay_ms = 10000;
  // DuckDB block size of the partition files this store creates, in KB: 16, 32, 64, 128 or 256
  // (DuckDB's default). Every file keeps the block size it was written with (DuckDB reads it from
  // the file's header), so a store may mix them; compact_partition chooses per partition. A
  // partition file holds at least ~4 blocks (the table, the metadata and batch tables, the
  // catalog), so with 256 KB blocks a partition of 1,000 rows takes 1 MB, and opening it reads two
  // 256 KB blocks; 16 KB blocks make such partitions ~8x smaller and a cold query ~1 ms per file
  // faster, but partitions past ~20K rows 1.2-1.8x larger (docs/performance.md, "Session 28").
  // For stores of many small partitions (daily or weekly periods of a few thousand rows).
  int block_size_kb = 256;

  // Throws Error(kInvalidArgument) naming the first invalid field and its value.
  void validate() const;
};

// Whether `kb` is a DuckDB block size partition files may have: 16, 32, 64, 128 or 256 (KB).
bool is_valid_block_size_kb(int kb);
// Throws Error(kInvalidArgument) naming `kb` unless it is 0 (automatic) or a valid block size:
// the block size argument of compact.
void check_compact_block_size_kb(int kb);

// The memory this process may use, in MB: physical memory, or the cgroup's limit when lower.
int64_t usable_memory_mb();

// The seed's partition_settings presets.
//   development: monthly, 6 partitions in memory, 500 MB threshold
//   production:  monthly, 24 in memory, 2000 MB (the defaults)
//   high_volume: daily, 90 in memory, 1000 MB
//   archive:     yearly, 4 in memory, 5000 MB
PartitionConfig development_partition_config();
PartitionConfig production_partition_config();
PartitionConfig high_volume_partition_config();
PartitionConfig archive_partition_config();
// Preset by name ("development", "production", "high_volume", "archive"); throws
// Error(kInvalidArgument).
PartitionConfig partition_config_preset(std::string_view name);
std::vector<std::string> partition_config_preset_names();

// Reads a TOML file over `base`: every key present overrides the field of the same name; an
// optional `preset = "..."` key selects the starting preset first. Unknown keys, wrong types and
// invalid values are errors naming the file, key and value. Example:
//   preset = "production"
//   strategy = "weekly"
//   max_partitions_in_memory = 48
PartitionConfig load_partition_config(const std::string& toml_path,
                                      const PartitionConfig& base = PartitionConfig{});
// Same, from TOML text; `origin` names the source in messages.
PartitionConfig parse_partition_config(std::string_view toml_text, std::string_view origin,
                                       const PartitionConfig& base = PartitionConfig{});

}  // namespace duckpart
