// example_partitioned_usage — the seed's example, in C++.
//
// Loads the well_production table of a single-file DuckDB database into a monthly partitioned store
// through the repository API, then queries it the way an application would.
//
//   example_partitioned_usage [--database data/data.duckdb] [--partitions data/partitions]
//
// Re-running it is safe: every batch carries a batch id, so a batch already committed to a
// partition is skipped there (exactly-once), and nothing is duplicated.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "duckpart/duckpart.hpp"

using namespace duckpart;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string database = "data/data.duckdb";
  std::string partitions = "data/partitions";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--database") == 0) database = argv[i + 1];
    if (std::strcmp(argv[i], "--partitions") == 0) partitions = argv[i + 1];
  }
  try {
    // 1. Configuration preset (the seed's get_production_partition_config) and the source schema.
    PartitionConfig config = production_partition_config();
    config.base_partition_path = partitions;
    if (const char* m = std::getenv("DP_MAXMEM")) config.max_partitions_in_memory = std::atoi(m);
    const Schema schema = introspect_schema(database, "well_production", config.partition_column);
    std::printf("source      %s: table %s, %zu columns, partition column %s, id column %s\n",
                database.c_str(), schema.name().c_str(), schema.columns().size(),
                schema.partition_column().c_str(), schema.id_column().value_or("-").c_str());

    // 2. Both repositories behind the same interface.
    DuckDBDataRepository single(database, {.read_only = true});
    PartitionedDataRepository repo(config);
    repo.initialize(schema);

    // 3. create_batch: rows are routed to their month's partition, created on demand.
    const auto t0 = std::chrono::steady_clock::now();
    // Reading the source in time order keeps each batch within a few partitions, so the files stay
    // open between batches (the table has 48 months, the production preset keeps 24 open).
    DataQueryRequest in_time_order;
    // A total order (period, then id), so that a re-run cuts exactly the same batches: replayed
    // batch ids then skip exactly the rows they committed before.
    in_time_order.sort = {{config.partition_column, SortDirection::kAsc}};
    if (schema.id_column())
      in_time_order.sort.push_back({*schema.id_column(), SortDirection::kAsc});
    RecordStream source = single.stream_query_results(schema, in_time_order);
    std::vector<DataRecord> batch;
    int64_t routed = 0, skipped = 0, created = 0, batches = 0;
    auto flush = [&]() {
      if (batch.empty()) return;
      BatchOptions opts{.batch_id = "example-load-" + std::to_string(batches++)};
      const BatchResult r = repo.create_batch(schema, batch, opts);
      routed += r.rows_written;
      skipped += r.rows_skipped;
      created += r.partitions_created;
      batch.clear();
    };
    DataRecord rec;
    while (source.next(rec)) {
      batch.push_back(std::move(rec));
      if (batch.size() == 250'000) flush();
    }
    flush();
    const double load_s = seconds_since(t0);
    std::printf(
        "create_batch %lld rows routed in %.2f s (%.0f rows/s), %lld partitions created, "
        "%lld rows skipped as already committed (re-run)\n",
        static_cast<long long>(routed), load_s, load_s > 0 ? routed / load_s : 0.0,
        static_cast<long long>(created), static_cast<long long>(skipped));

    // 4. A pruned time-range query: Q4 2023 only touches three monthly partitions.
    DataQueryRequest q4;
    q4.filters = {{"production_period", FilterOperator::kGte, Value("2023-10-01")},
                  {"production_period", FilterOperator::kLt, Value("2024-01-01")}};
    q4.sort = {{"oil_bbl", SortDirection::kDesc}};
    q4.limit = 3;
    q4.columns = {"well_id", "production_period", "oil_bbl", "operator_name"};
    const auto t1 = std::chrono::steady_clock::now();
    const PaginatedResponse page = repo.get_all(schema, q4);
    std::printf(
        "get_all     Q4 2023: %lld matching rows, top %zu by oil in %.1f ms; partitions "
        "scanned %lld of %lld (%lld pruned, %lld opened)\n",
        static_cast<long long>(page.total), page.items.size(), seconds_since(t1) * 1e3,
        static_cast<long long>(page.stats.partitions_scanned),
        static_cast<long long>(page.stats.partitions_total),
        static_cast<long long>(page.stats.partitions_pruned),
        static_cast<long long>(page.stats.partitions_attached));
    for (std::size_t i = 0; i < page.items.size(); ++i) {
      std::printf("              %s  %s  %10s bbl  %s\n",
                  page.value(i, "well_id").to_string().c_str(),
                  page.value(i, "production_period").to_string().c_str(),
                  page.value(i, "oil_bbl").to_string().c_str(),
                  page.value(i, "operator_name").to_string().c_str());
    }

    // 5. Streaming: every row of a quarter, in bounded memory.
    DataQueryRequest stream_q;
    stream_q.filters = q4.filters;
    stream_q.columns = {"oil_bbl"};
    double oil = 0;
    RecordStream stream = repo.stream_query_results(schema, stream_q);
    const int64_t streamed = stream.for_each([&](const DataRecord& r) {
      if (!r.values[0].is_null()) oil += r.values[0].get<double>();
      return true;
    });
    std::printf("stream      Q4 2023: %lld rows streamed, total oil %.2f bbl\n",
                static_cast<long long>(streamed), oil);

    // 6. Counting, on the partitioned store and on the original file: the numbers must match.
    DataQueryRequest tx;
    tx.filters = {{"state", FilterOperator::kEq, Value("TX")},
                  {"production_period", FilterOperator::kBetween,
                   std::vector<Value>{Value("2022-01-01"), Value("2022-12-31")}}};
    const int64_t n_part = repo.count_all(schema, tx);
    const int64_t n_single = single.count_all(schema, tx);
    std::printf("count_all   TX in 2022: %lld partitioned, %lld single file (%s)\n",
                static_cast<long long>(n_part), static_cast<long long>(n_single),
                n_part == n_single ? "match" : "MISMATCH");

    // 7. Lookup by id: pruned by per-partition id ranges and a Bloom filter.
    DataQueryRequest one;
    one.limit = 1;
    one.offset = 123'456 % std::max<int64_t>(1, routed);
    one.columns = {"id"};
    const PaginatedResponse some = single.get_all(schema, one);
    if (!some.items.empty()) {
      const Value id = some.items[0].values[0];
      repo.get_by_id(schema, id);  // first lookup builds the id index of the partitions it checks
      const RepositoryCounters before = repo.counters();
      const auto t2 = std::chrono::steady_clock::now();
      auto found = repo.get_by_id(schema, id);
      const double ms = seconds_since(t2) * 1e3;
      const RepositoryCounters after = repo.counters();
      std::printf("get_by_id   %s: %s in %.2f ms, %lld partition(s) read\n", id.to_string().c_str(),
                  found ? "found" : "NOT FOUND", ms,
                  static_cast<long long>(after.partitions_scanned - before.partitions_scanned));
    }

    // 8. Statistics.
    const StorageStatistics stats = repo.get_partition_statistics();
    for (const auto& s : stats.schemas) {
      if (s.schema != schema.name()) continue;
      std::printf(
          "statistics  %s: %zu partitions, %lld rows, %.1f MB on disk; first %s (%lld rows), "
          "last %s (%lld rows)\n",
          s.schema.c_str(), s.partitions.size(), static_cast<long long>(s.total_rows),
          static_cast<double>(s.total_bytes) / 1e6,
          s.partitions.empty() ? "-" : s.partitions.front().name.c_str(),
          s.partitions.empty() ? 0LL : static_cast<long long>(s.partitions.front().rows),
          s.partitions.empty() ? "-" : s.partitions.back().name.c_str(),
          s.partitions.empty() ? 0LL : static_cast<long long>(s.partitions.back().rows));
    }
    std::printf(
        "counters    partitions opened %lld, attached now %lld (limit %d), queries %lld, "
        "partitions pruned %lld\n",
        static_cast<long long>(stats.counters.partitions_opened),
        static_cast<long long>(stats.counters.partitions_attached_now),
        config.max_partitions_in_memory, static_cast<long long>(stats.counters.queries),
        static_cast<long long>(stats.counters.partitions_pruned));
    return n_part == n_single ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "example_partitioned_usage: %s\n", e.what());
    return 1;
  }
}
