// duckpart — DuckDBDataRepository: every schema is one table in one DuckDB file.
//
// The set-up an application has before it partitions, and the oracle our differential tests compare
// PartitionedDataRepository against. Same interface, same query semantics.
#pragma once

#include <memory>
#include <string>

#include "duckpart/repository.hpp"

namespace duckpart {

struct DuckDBRepositoryOptions {
  bool read_only = false;
  // Create the table on first write when it does not exist.
  bool create_tables = true;
};

class DuckDBDataRepository final : public IDataRepository {
 public:
  // Opens (or creates) the DuckDB file at `database_path`; ":memory:" or "" opens an in-memory
  // database. Throws Error(kLocked) when another process holds the file, Error(kIo) when it cannot
  // be created. Thread-safe.
  explicit DuckDBDataRepository(const std::string& database_path,
                                DuckDBRepositoryOptions options = {});
  ~DuckDBDataRepository() override;
  DuckDBDataRepository(const DuckDBDataRepository&) = delete;
  DuckDBDataRepository& operator=(const DuckDBDataRepository&) = delete;

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
  RecordStream query_sql(const std::string& sql) override;
  // Writes everything in the write-ahead log into the database file (DuckDB CHECKPOINT).
  void flush();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duckpart
