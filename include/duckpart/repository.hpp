// duckpart — the repository interface of the seed, and what it returns.
//
// Two implementations, interchangeable in user code: DuckDBDataRepository (one DuckDB file: the
// set-up an application has before partitioning) and PartitionedDataRepository (one file per
// period).
//
// Threads: every method may be called from several threads at once on one repository.
// Errors: methods throw duckpart::Error (see error.hpp); a failed write leaves no row of the failed
// partition group behind (each partition commits atomically).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "duckpart/query.hpp"
#include "duckpart/record.hpp"
#include "duckpart/schema.hpp"
#include "duckpart/value.hpp"

namespace duckpart {

// Options of one batch write.
struct BatchOptions {
  // Identifies the batch for exactly-once replay: writing a batch with an id that a partition
  // already committed skips that partition. Empty: a fresh id is generated (no replay protection
  // across calls). Ids starting "migrate:", "migrate-catchup:" or "repartition:" are reserved for
  // the batches of migrate and re-partitioning: a write with one is refused (kInvalidArgument).
  std::string batch_id;
};

// What a batch write did.
struct BatchResult {
  std::string batch_id;
  int64_t rows_written = 0;        // rows committed by this call
  int64_t rows_skipped = 0;        // rows of partitions that had already committed this batch id
  int64_t partitions_written = 0;  // partitions that committed
  int64_t partitions_skipped = 0;  // partitions that already had the batch (replay)
  int64_t partitions_created = 0;  // partition files created by this call
  int64_t ids_generated = 0;       // ids assigned because the id cell was NULL
};

// Rows of a query, pulled in chunks with bounded memory. Move-only; holds the partitions it reads
// open (pinned) until it is exhausted or destroyed. Not thread-safe: one consumer at a time.
class RecordStream {
 public:
  // Produces the next rows; returns false when there are none left. Implementations live in src/.
  class Source {
   public:
    virtual ~Source() = default;
    virtual bool fetch(std::vector<DataRecord>& out) = 0;
  };

  RecordStream(std::vector<std::string> columns, std::unique_ptr<Source> source, QueryStats stats);
  RecordStream(RecordStream&&) noexcept;
  RecordStream& operator=(RecordStream&&) noexcept;
  ~RecordStream();

  const std::vector<std::string>& columns() const noexcept { return columns_; }
  const QueryStats& stats() const noexcept { return stats_; }
  // Moves the next row into `out`; false at the end. Throws Error if reading fails.
  bool next(DataRecord& out);
  // Calls `fn` for every remaining row until it returns false; returns the number of rows visited.
  int64_t for_each(const std::function<bool(const DataRecord&)>& fn);

 private:
  std::vector<std::string> columns_;
  std::unique_ptr<Source> source_;
  QueryStats stats_;
  std::vector<DataRecord> buffer_;
  std::size_t pos_ = 0;
  bool done_ = false;
};

// One partition (for the single-file repository: the whole table).
struct PartitionStatistics {
  std::string name;                  // "partition_2023_01" (single file: the table name)
  std::string file;                  // path of the DuckDB file
  std::optional<Date> period_start;  // [start, end) of the period; empty for the null partition
  std::optional<Date> period_end;
  int64_t rows = 0;
  uint64_t bytes = 0;                  // file + write-ahead log
  std::optional<Timestamp> min_value;  // of the partition column
  std::optional<Timestamp> max_value;
  int64_t modified_unix = 0;  // file mtime, seconds
  bool attached = false;      // currently open in this repository
  std::string problem;        // non-empty when the file cannot be used (damaged, foreign, ...)
  // The problem is only that another process held the file when it had to be read (a writer):
  // not damage; requests that need it try it again.
  bool locked = false;
};

// Counters since the repository was opened.
struct RepositoryCounters {
  int64_t partitions_opened = 0;    // ATTACHes performed
  int64_t partitions_detached = 0;  // DETACHes performed (LRU and close)
  int64_t partitions_attached_now = 0;
  int64_t partitions_attached_peak = 0;
  int64_t partitions_created = 0;
  int64_t queries = 0;
  int64_t partitions_scanned = 0;  // summed over queries
  int64_t partitions_pruned = 0;   // summed over queries
  // partitions whose rows count_all counted from their metadata row count (every row matched the
  // filters, all on the partition column): no file opened for them
  int64_t partitions_counted_from_metadata = 0;
  int64_t batches_committed = 0;  // partition commits of batches
  int64_t batches_skipped = 0;    // partition commits skipped by replay protection
  int64_t rows_written = 0;
  int64_t sql_plans_reused = 0;  // query_sql statements that skipped their EXPLAIN (plan cache)
  // query_sql: WHERE terms on the partition column left out of statements because every partition
  // read satisfies them whole (counted when a statement is prepared for a set of partitions)
  int64_t sql_partition_terms_removed = 0;
  int64_t ids_found_by_rowid = 0;    // get_by_id answers read by rowid through an id map
  int64_t id_map_bytes = 0;          // memory of the id maps now (id_index_memory_mb bounds it)
  int64_t rows_buffered = 0;         // rows acknowledged through the ingest log (write_buffer_mb)
  int64_t buffer_drains = 0;         // drains that committed buffered rows to the partitions
  int64_t timed_buffer_drains = 0;   // drains started by write_buffer_max_delay_ms
  int64_t ingest_logs_replayed = 0;  // ingest logs of an earlier process applied at open
  // partitions whose metadata block a kill tore during a checkpoint, repaired and verified at
  // attach (docs/reliability.md)
  int64_t torn_blocks_repaired = 0;
  // Whether DuckDB's linked extensions (core_functions, icu, json, parquet) are loaded in the
  // repository's instance: a partitioned repository loads them at the first statement that may
  // need them (docs/architecture.md, "Cold opens"); counts and row reads of built-in types do not.
  bool duckdb_extensions_loaded = true;
  // Whether the repository's DuckDB instance is started: a read-only partitioned repository starts
  // it at the first request that needs it, so a count its partitions' metadata answers starts none
  // (docs/architecture.md, "Cold opens").
  bool duckdb_started = true;
};

struct SchemaStatistics {
  std::string schema;
  std::string directory;
  std::vector<PartitionStatistics> partitions;  // ordered by period
  int64_t total_rows = 0;
  uint64_t total_bytes = 0;
  std::vector<std::string> problems;  // files in the directory that are not usable partitions
};

struct StorageStatistics {
  std::string kind;  // "partitioned" or "single_file"
  std::vector<SchemaStatistics> schemas;
  RepositoryCounters counters;
  // Stable JSON rendering (what `manage_partitions stats --json` prints).
  std::string to_json() const;
};

// The seed's repository interface. `schema` names the table; implementations create it on first
// write.
class IDataRepository {
 public:
  virtual ~IDataRepository() = default;

  // Writes one record given as column -> value (missing columns are NULL; unknown columns are an
  // error). Assigns an id when the schema has an id column and none is given. Returns the stored
  // row (all columns, schema order).
  virtual DataRecord create(const Schema& schema, const std::map<std::string, Value>& data) = 0;
  // Writes records (values in schema order), grouped per partition, one commit per partition.
  virtual BatchResult create_batch(const Schema& schema, const std::vector<DataRecord>& records,
                                   const BatchOptions& options = {}) = 0;
  // The columnar bulk path: whole columns per call (see ColumnBatch). Same guarantees as
  // create_batch.
  virtual BatchResult create_batch_columnar(const Schema& schema, ColumnBatch batch,
                                            const BatchOptions& options = {}) = 0;
  // The row whose id column equals `id` (all columns), or nullopt. Throws if the schema has no id.
  virtual std::optional<DataRecord> get_by_id(const Schema& schema, const Value& id) = 0;
  // One page of matching rows, plus the total count.
  virtual PaginatedResponse get_all(const Schema& schema, const DataQueryRequest& request) = 0;
  // All matching rows (honouring sort, limit, offset and projection), pulled in bounded memory.
  virtual RecordStream stream_query_results(const Schema& schema,
                                            const DataQueryRequest& request) = 0;
  // Number of rows matching the request's filters (limit/offset ignored).
  virtual int64_t count_all(const Schema& schema, const DataQueryRequest& request = {}) = 0;
  // Runs one read-only SQL statement (a SELECT; WITH, joins, aggregates and window functions
  // included) in which each table's name means the whole table — for the partitioned repository,
  // the union of its partitions, pruned to those whose stored range can match the statement's
  // predicates on the partition column. Any other statement (or several) is refused with
  // Error(kInvalidArgument) before it runs. Rows stream in bounded memory; columns of types the
  // record model lacks (LIST, STRUCT, INTERVAL, ...) come back as text.
  virtual RecordStream query_sql(const std::string& sql) = 0;
  // Per-partition statistics of every schema the store holds, plus counters.
  virtual StorageStatistics get_partition_statistics() = 0;
};

}  // namespace duckpart
