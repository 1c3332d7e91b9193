#pragma once

// Data chunks handed to DuckDB by `INSERT INTO t SELECT * FROM __duckpart_feed(<id>)`.
//
// The router's writers used DuckDB's appender, which copies every appended chunk into a
// collection and, at each flush, runs an INSERT that copies the collection into the table's
// storage: two copies of every value, and a statement parsed, bound and planned per flush. A
// feed lets the INSERT read the writer's chunks directly — each output vector references the
// writer's vector (no copy) — so a value is copied once, into storage, as in DuckDB's own CTAS.
// The statement is prepared once per partition and transaction.
//
// Feeds are found by a random 64-bit id in a process-wide registry, and only the thread that
// created a feed (its writer) can bind it: any other query naming an id — live or not — gets an
// error, never a dangling pointer or another load's rows. One scan thread per execution keeps the
// chunks in order.

#include <duckdb.h>

#include <cstdint>
#include <thread>
#include <vector>

namespace duckpart {

class ChunkFeed {
 public:
  static constexpr const char* kFunction = "__duckpart_feed";

  // Registers the table function in the catalog of `conn`'s database; once per database.
  static void register_function(duckdb_connection conn);

  // `types`: the chunks' column types; they must outlive the feed. The calling thread owns it.
  explicit ChunkFeed(std::vector<duckdb_logical_type> types);
  ~ChunkFeed();
  ChunkFeed(const ChunkFeed&) = delete;
  ChunkFeed& operator=(const ChunkFeed&) = delete;

  int64_t id() const noexcept { return id_; }
  std::thread::id owner() const noexcept { return owner_; }
  const std::vector<duckdb_logical_type>& types() const noexcept { return types_; }

  // The chunks the next execution of the INSERT reads, in order. The caller owns them.
  std::vector<duckdb_data_chunk> chunks;

 private:
  int64_t id_ = 0;
  std::thread::id owner_;
  std::vector<duckdb_logical_type> types_;
};

}  // namespace duckpart
