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
#include "duckpart/repository.hpp"

namespace duckpart {

struct PartitionedRepositoryOptions {
  // Open partition files read-only; every write is then an error.
  bool read_only = false;
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

  // Loads the catalog of `schema` (the seed's initialize()). Called implicitly on first use;
  // calling it explicitly surfaces damaged or foreign files early. Throws Error(kConflict) if files
  // of the schema's directory were written with another layout or strategy... only when strict;
  // otherwise they are reported as problems and refused when a request needs them.
  void initialize(const Schema& schema);
  // Schemas present under base_partition_path (directories holding partition files), by name.
  std::vector<std::string> list_schemas() const;
  // Reads the schema stored in the partition files of `table` (no schema needed up front).
  Schema load_schema(const std::string& table);

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
  // Counters only (cheap).
  RepositoryCounters counters() const;
  // Detaches every unpinned partition and writes catalogs (DuckDB checkpoints on detach).
  void flush();

  // Test hook: called after each partition commit of a batch with the partition's name. Lets fault
  // tests kill the process between two partition commits. Not for production use.
  void set_commit_hook(std::function<void(const std::string& partition)> hook);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duckpart
