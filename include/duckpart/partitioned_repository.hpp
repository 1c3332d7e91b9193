// duckpart — PartitionedDataRepository: one DuckDB file per period of each schema.
//
// Layout: <base_partition_path>/<schema>/partition_<period>.duckdb, each file self-describing (a
// metadata table with schema, strategy, period, row count, min/max and committed batch ids), plus
// _catalog.json, a cache of that metadata rebuilt from the files when missing or stale.
//
// Reads prune on the catalog before any file is opened, ATTACH the surviving files lazily into one
// in-memory DuckDB instance (least recently used detached beyond max_partitions_in_memory; files in
// use by a running query or stream are pinned) and run one parameterised SQL statement over them.
// Writes group rows per period, append each group through DuckDB's appender in parallel and commit
// once per partition, recording the batch id in the same transaction (exactly-once replay).
//
// A single request that needs more partitions than max_partitions_in_memory attaches them all for
// its duration and trims back afterwards.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "duckpart/config.hpp"
#include "duckpart/error.hpp"
#include "duckpart/repository.hpp"

namespace duckpart {

struct PartitionedRepositoryOptions {
  // Open partition files read-only; every write is then an error.
  bool read_only = false;
  // A table whose partitions were written with another strategy than config.strategy (one
  // re-partitioned yearly, say) is read and written with its own instead of being refused: one
  // repository (one per directory and process) serves tables of different strategies, and one
  // query_sql statement can join them. Writes to such a table route by its strategy, restores
  // take backups of it, its catalog names it. A new table (no partition files yet) gets
  // config.strategy.
  bool tables_keep_their_strategy = false;
};

class PartitionedDataRepository final : public IDataRepository {
 public:
  // Validates `config` and creates base_partition_path if needed. Files are opened lazily.
  // Throws Error(kInvalidArgument) for a bad configuration, Error(kIo) when the directory cannot be
  // created or read, Error(kLocked) when another repository of this process has the same directory.
  explicit PartitionedDataRepository(PartitionConfig config,
                                     PartitionedRepositoryOptions options = {});
  // Detaches every partition (DuckDB checkpoints it) and writes the catalogs. Never throws.
  ~PartitionedDataRepository() override;
  PartitionedDataRepository(const PartitionedDataRepository&) = delete;
  PartitionedDataRepository& operator=(const PartitionedDataRepository&) = delete;

  const PartitionConfig& config() const noexcept;
  // The strategy `schema`'s partitions are stored with: config().strategy, or, with
  // tables_keep_their_strategy, the table's own (loads the table).
  PartitionStrategy strategy_of(const Schema& schema);

  // Loads the catalog of `schema` (the seed's initialize()). Called implicitly on first use;
  // calling it explicitly surfaces damaged or foreign files early. Throws Error(kConflict) if files
  // of the schema's directory were written with another layout or strategy... only when strict;
  // otherwise they are reported as problems and refused when a request needs them.
  void initialize(const Schema& schema);
  // Schemas present under base_partition_path (directories holding partition files), by name.
  std::vector<std::string> list_schemas() const;
  // Reads the schema stored in the partition files of `table` (no schema needed up front).
  Schema load_schema(const std::string& table);

  // Unless config.write_buffer_mb = 0 (the default -1 is an automatic budget), writes without a
  // batch id are buffered (docs/architecture.md,
  // "Write buffering"): the batch is durable in the table's ingest log when the call returns and
  // is committed to the partitions by a later drain; every other operation drains first.
  // BatchResult then reports the rows accepted, the partitions they go to and the id the drain
  // commits them with (partitions_created counts at the drain).
  DataRecord create(const Schema& schema, const std::map<std::string, Value>& data) override;
  BatchResult create_batch(const Schema& schema, const std::vector<DataRecord>& records,
                           const BatchOptions& options = {}) override;
  BatchResult create_batch_columnar(const Schema& schema, ColumnBatch batch,
                                    const BatchOptions& options = {}) override;
  std::optional<DataRecord> get_by_id(const Schema& schema, const Value& id) override;
  PaginatedResponse get_all(const Schema& schema, const DataQueryRequest& request) override;
  RecordStream stream_query_results(const Schema& schema, const DataQueryRequest& request) override;
  int64_t count_all(const Schema& schema, const DataQueryRequest& request = {}) override;
  StorageStatistics get_partition_statistics() override;
  // One table's partitions (loads that table alone; its buffered rows are committed first, as
  // get_partition_statistics does for every table).
  SchemaStatistics table_statistics(const Schema& schema);
  RecordStream query_sql(const std::string& sql) override;
  // The SQL bulk path (migration, import, re-partitioning): one BulkLoad of `select_sql`, committed
  // with options.batch_id (checked for replay when given, like create_batch; the tools' reserved
  // ids are refused the same way).
  BatchResult create_batch_from_query(const Schema& schema, const std::string& select_sql,
                                      const BatchOptions& options = {},
                                      bool null_partition = false);

  struct BulkLoadOptions {
    // When set, partitions that already hold this batch id are skipped (their rows are counted as
    // skipped): a load interrupted between its per-partition commits is finished exactly once by
    // loading the same rows again and committing with this id.
    std::string replay_batch_id;
    // Rows whose partition value is NULL go to partition_null instead of failing.
    bool null_partition = false;
    // DuckDB's worker threads are set to one for the duration of the load (restored by commit or
    // abort): every query of the load's write threads — appends, commits — is a DuckDB task that
    // a worker thread can take over while the thread that issued it spins until it is done. With
    // the write threads already using every core that costs a routed migration 15-25% of its
    // time (measured, docs/architecture.md). Queries of other connections run on one thread
    // meanwhile, and so does load_into()'s INSERT ... SELECT (see set_single_duckdb_thread).
    bool single_duckdb_thread = false;
  };
  // A streaming bulk load. Every row of each load() query — a SELECT whose columns are the
  // schema's, in order — is routed to its partition while the query runs and appended, on
  // write_threads threads, inside one open transaction per partition; DuckDB writes full row
  // groups to the partition files as they fill, so memory stays bounded (about one row group per
  // open partition) however many rows are loaded. commit() makes everything visible, one commit per
  // partition, each recording the batch id; until then readers see nothing of it, and a failure,
  // abort() or destroying the object rolls every partition back. Partitions touched are pinned
  // until commit or abort. One bulk load at a time per repository (a second waits).
  class BulkLoad {
   public:
    ~BulkLoad();
    BulkLoad(const BulkLoad&) = delete;
    BulkLoad& operator=(const BulkLoad&) = delete;
    // Routes and appends every row of `select_sql`; returns the rows routed. Throws Error (bad
    // columns, NULL partition values, a failed append naming its partition); afterwards only
    // abort() (or destruction) is valid.
    int64_t load(const std::string& select_sql);
    // Copies every row of `select_sql` — rows that all belong to the partition `key` — into that
    // partition with one INSERT ... SELECT inside its open transaction, which DuckDB runs on all
    // its threads (no routing, no appender). For clustered sources: a migration from a table
    // sorted by time, or a re-partitioning where one old period falls into one new period. A row
    // outside `key`'s period fails the load (Error kInvalidArgument naming the partition and the
    // count); nothing is copied then. Returns the rows copied.
    int64_t load_into(const PartitionKey& key, const std::string& select_sql);
    // Rows routed so far by all load() and load_into() calls.
    int64_t rows() const noexcept;
    // Commits every partition with `batch_id` (must equal replay_batch_id when that was given).
    // Throws Error naming every partition that failed (the others committed: commit the same rows
    // again with replay_batch_id = batch_id to finish exactly once).
    BatchResult commit(const std::string& batch_id);
    void abort() noexcept;
    // Changes single_duckdb_thread from now on (restored at commit or abort either way): a
    // migration keeps DuckDB's threads while it copies runs of a clustered source by INSERT ...
    // SELECT, and takes them for routing.
    void set_single_duckdb_thread(bool on);

   private:
    friend class PartitionedDataRepository;
    struct Loader;
    explicit BulkLoad(std::unique_ptr<Loader> loader);
    std::unique_ptr<Loader> loader_;
  };
  std::unique_ptr<BulkLoad> begin_bulk_load(const Schema& schema, const BulkLoadOptions& options);
  // Attaches another DuckDB file to this repository's DuckDB instance, so that select_sql can read
  // it as <alias>.main.<table>. Throws Error(kLocked) naming the file when another process holds
  // it.
  void attach_database(const std::string& path, const std::string& alias, bool read_only = true);
  void detach_database(const std::string& alias) noexcept;

  // Rows and an order-independent checksum over all columns (sum of DuckDB row hashes, as text) of
  // one partition; the same expression over a source table gives the same value for the same rows.
  struct PartitionChecksum {
    PartitionKey key;
    std::string name;
    int64_t rows = 0;
    std::string checksum;
    std::string error;  // with keep_going: why this partition could not be read
    ErrorCode error_code = ErrorCode::kDuckDb;  // and its kind (kLocked: another process holds it)
  };
  // Reads every partition. A partition that cannot be read throws Error naming it, or, with
  // `keep_going`, is returned with `error` set and the others are still read.
  std::vector<PartitionChecksum> checksum_partitions(const Schema& schema, bool keep_going = false);
  // The checksum expression over `schema`'s columns (for use on a source table).
  static std::string checksum_sql(const Schema& schema);

  // The batches committed to one partition (each commit records its batch id in the partition's
  // file, in the same transaction as its rows), oldest first: which writer put rows there, and
  // when (a migration's ids start with "migrate", an import's with "import-"). Throws
  // Error(kNotFound) for an unknown partition name.
  struct CommittedBatch {
    std::string batch_id;
    int64_t rows = 0;
    Timestamp committed_at;
  };
  std::vector<CommittedBatch> partition_batches(const Schema& schema,
                                                const std::string& partition_name);
  // Records batch ids as committed in a partition without adding rows (ids it holds already are
  // left): re-partitioning carries the ids of the partitions a new one was made from, so that a
  // retried batch or a re-run import is still skipped. One transaction.
  void record_batch_ids(const Schema& schema, const std::string& partition_name,
                        const std::vector<CommittedBatch>& batches);

  // ---- lifecycle: exclusive per partition (writers to it wait; refused while a query holds it)
  // ----

  // Detaches and deletes one partition file (and its write-ahead log and id index): the disk space
  // comes back at once. Throws Error(kNotFound) for an unknown partition name, Error(kConflict)
  // while a running query or stream uses it. With `unchanged_since` (a backup or partition_state
  // of it), dropped only if nothing changed it since, as restore_partition's; Error(kConflict)
  // otherwise, nothing changed.
  struct PartitionBackup;
  void drop_partition(const Schema& schema, const std::string& partition_name,
                      const PartitionBackup* unchanged_since = nullptr);

  struct PartitionBackup {
    std::string name;
    std::string source_file;
    std::string backup_file;
    uint64_t bytes = 0;
    std::string xxh3_128;  // hex checksum of the copied file
    int64_t rows = 0;
    // The state copied: the partition's commit version, which file of this repository's held it
    // (a restore or compaction replaces the file) and which opening of it (another process may
    // write it while it is closed here). For restore_partition's `unchanged_since`.
    int64_t commit_version = -1;
    uint64_t file_epoch = 0;
    uint64_t attach_generation = 0;
  };
  // Copies a consistent image of one partition to `dir` (the partition is checkpointed first and
  // its writers wait during the copy; readers go on). Returns what was written.
  PartitionBackup backup_partition(const Schema& schema, const std::string& partition_name,
                                   const std::string& dir);
  // The state backup_partition records (commit version, file, opening), without a copy
  // (backup_file empty): a token for restore_partition's or drop_partition's `unchanged_since`,
  // taken before looking at the partition. Opens the partition (it must stay open here for the
  // token to stay valid). For a partition that does not exist: a token with an empty
  // source_file, with which restore_partition refuses if the partition exists by then.
  PartitionBackup partition_state(const Schema& schema, const std::string& partition_name);
  // Replaces (or re-creates) the partition a backup file holds. The file must be a partition of
  // this table layout and strategy whose stored period matches its name; it is copied next to the
  // target and renamed over it, so readers see the old or the new partition, never a mix. Throws
  // Error(kConflict) for another table/strategy, Error(kCorruption) for a file DuckDB cannot open.
  // With `unchanged_since` (a backup this repository made of the same partition), the partition is
  // replaced only if nothing changed it since that backup — no commit, restore, compaction or
  // drop, and it stayed open here (closed, another process could have written it) — and
  // Error(kConflict) is thrown otherwise, nothing changed: a compare-and-swap for a rewrite built
  // from that backup.
  void restore_partition(const Schema& schema, const std::string& backup_file,
                         const PartitionBackup* unchanged_since = nullptr);
  // The checks restore_partition makes of a backup file, without restoring it: returns the
  // partition it would replace. Throws as restore_partition does. Loads the table (in a writable
  // repository that may create its directory and commit its pending ingest logs).
  PartitionKey check_backup(const Schema& schema, const std::string& backup_file);

  struct CompactResult {
    std::string name;
    std::string file;
    int64_t rows = 0;
    uint64_t bytes_before = 0;  // file + write-ahead log
    uint64_t bytes_after = 0;
    int block_size_kb = 0;  // DuckDB block size of the rewritten file
  };
  // Rewrites one partition sorted by the partition column (then the id), into a fresh file that
  // holds no deleted rows or free blocks, verifies that it holds the same rows (count and
  // checksum) and renames it over the old one. Writers to the partition wait; readers go on and
  // see the old or the new file, never a mix. A crash at any moment leaves the old file intact
  // (and at most hidden ".<file>.compact" / ".<file>.compact16" files, and their ".wal", to
  // delete; health-report lists them). Calls for one partition run one at a time. Throws
  // Error(kConflict) when queries keep
  // the partition busy for more than a minute, Error(kCorruption) if the copy does not verify.
  // `block_size_kb`: the DuckDB block size of the new file (16, 32, 64, 128 or 256); 0
  // (automatic): a partition whose file takes at most 4 MB is written with 16 KB and with 256 KB
  // blocks and the smaller file is kept (small partitions take several times less space with
  // small blocks, larger ones more), a larger one gets 256 KB.
  CompactResult compact_partition(const Schema& schema, const std::string& partition_name,
                                  int block_size_kb = 0);
  // Neighbouring rows, in storage order, whose partition value decreases: 0 for a partition
  // sorted by time. Reads the whole partition.
  int64_t unsorted_pairs(const Schema& schema, const std::string& partition_name);

  // Writes one partition as hive-partitioned Parquet under `dir` (year=YYYY[/month=MM[/day=DD]]
  // by the strategy, from each row's partition value; files named <partition>_<n>.parquet) and
  // returns the rows written. Readers and writers go on (a consistent snapshot is exported).
  int64_t export_partition_parquet(const Schema& schema, const std::string& partition_name,
                                   const std::string& dir);

  // Counters only (cheap).
  RepositoryCounters counters() const;
  // Opened read-only (PartitionedRepositoryOptions::read_only).
  bool read_only() const noexcept;
  // Detaches every unpinned partition and writes catalogs (DuckDB checkpoints on detach).
  void flush();

  // Test hook: called after each partition commit of a batch with the partition's name. Lets fault
  // tests kill the process between two partition commits. Not for production use.
  void set_commit_hook(std::function<void(const std::string& partition)> hook);
  // Test hook: called after a record commit, before its ids are added to the partition's id
  // filter, with the partition's name and the commit version. Lets tests order concurrent
  // commits and lookups. Not for production use.
  void set_id_filter_hook(
      std::function<void(const std::string& partition, int64_t commit_version)> hook);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duckpart
