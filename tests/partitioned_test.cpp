// PartitionedDataRepository: pruning, LRU, lookups by id, the catalog, damaged and foreign files.
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "batch.hpp"
#include "bloom.hpp"
#include "duck/duck.hpp"
#include "duckpart/repartition.hpp"
#include "duckpart/utilities.hpp"
#include "id_map.hpp"
#include "ingest_log.hpp"
#include "parallel_tasks.hpp"
#include "partition_files.hpp"
#include "process_util.hpp"
#include "sql_pruning.hpp"
#include "test_util.hpp"

#ifndef DUCKPART_LOCK_HELPER
#define DUCKPART_LOCK_HELPER ""
#endif

namespace duckpart::testing {
namespace {

std::string error_of(const std::function<void()>& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

DataQueryRequest where(std::vector<QueryFilter> filters) {
  DataQueryRequest q;
  q.filters = std::move(filters);
  return q;
}

class PartitionedTest : public TempDirTest {
 protected:
  const Schema schema_ = wide_schema();

  // 36 monthly partitions (2021-01 .. 2023-12), one batch per month written at different times.
  std::vector<DataRecord> fill_36_months(int max_in_memory = 24) {
    PartitionedDataRepository repo(
        test_config(path("parts"), PartitionStrategy::kMonthly, max_in_memory));
    std::mt19937_64 rng(7);
    std::vector<DataRecord> all;
    for (int m = 0; m < 36; ++m) {
      const int y = 2021 + m / 12;
      const unsigned mo = static_cast<unsigned>(m % 12 + 1);
      const Date first = date_from_civil(y, mo, 1);
      const Date last{partition_key_of(PartitionStrategy::kMonthly, first).end().days - 1};
      auto rows = random_wide_rows(rng, 50, first, last);
      for (auto& r : rows) r.values[0] = Value{};  // ids assigned by the store (time-ordered)
      repo.create_batch(schema_, rows);
      all.insert(all.end(), rows.begin(), rows.end());
    }
    return all;
  }

  PartitionedDataRepository open(int max_in_memory = 24) {
    return PartitionedDataRepository(
        test_config(path("parts"), PartitionStrategy::kMonthly, max_in_memory));
  }
  // With the direct write path: each create_batch commits before it returns.
  PartitionedDataRepository open_direct() {
    PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
    cfg.write_buffer_mb = 0;
    return PartitionedDataRepository(cfg);
  }
};

TEST_F(PartitionedTest, ThreeMonthQueryAttachesExactlyThreeFiles) {
  fill_36_months();
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
  DataQueryRequest q;
  q.filters = {{"ts", FilterOperator::kGte, Value("2022-04-01")},
               {"ts", FilterOperator::kLt, Value("2022-07-01")}};
  const auto page = repo.get_all(schema_, q);
  EXPECT_EQ(page.total, 150);
  EXPECT_EQ(page.stats.partitions_total, 36);
  EXPECT_EQ(page.stats.partitions_scanned, 3);
  EXPECT_EQ(page.stats.partitions_pruned, 33);
  EXPECT_EQ(page.stats.partitions_attached, 3);
  EXPECT_EQ(repo.counters().partitions_opened, 3)
      << "the catalog must answer without opening files";
}

TEST_F(PartitionedTest, EveryOperatorOnThePartitionColumnPrunes) {
  const auto rows = fill_36_months();
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
  auto scanned = [&](std::vector<QueryFilter> f) {
    DataQueryRequest q;
    q.filters = std::move(f);
    return repo.get_all(schema_, q).stats.partitions_scanned;
  };
  // Exact timestamps of stored rows are random; use period boundaries and ranges.
  EXPECT_EQ(scanned({{"ts", FilterOperator::kGte, Value("2023-12-01")}}), 1);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kGt, Value("2023-11-30 23:59:59.999999")}}), 1);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kLt, Value("2021-02-01")}}), 1);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kLte, Value("2021-01-31 23:59:59.999999")}}), 1);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kBetween,
                      std::vector<Value>{Value("2022-01-15"), Value("2022-03-02")}}}),
            3);
  // eq/in on values that exist: exactly their partitions. (Values between a partition's stored
  // min and max may prune further than the period: the catalog keeps the real min/max.)
  const Value a = rows[100].values[1], b = rows[1000].values[1];  // months 3 and 21
  EXPECT_EQ(scanned({{"ts", FilterOperator::kIn, std::vector<Value>{a, b}}}), 2);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kEq, a}}), 1);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kIn, std::vector<Value>{Value("2019-01-01"), a}}}), 1);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kIsNull}}), 0);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kIsNotNull}}), 36);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kNe, Value("2022-06-10")}}), 36);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kIn, std::vector<Value>{}}}), 0);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kGte, Value("2024-01-01")}}), 0);
  EXPECT_EQ(scanned({{"ts", FilterOperator::kGte, Value("2022-01-01")},
                     {"ts", FilterOperator::kLt, Value("2021-06-01")}}),
            0);
  EXPECT_EQ(scanned({{"qty", FilterOperator::kGt, Value(5)}}), 36);
}

TEST_F(PartitionedTest, LruNeverHoldsMoreThanTheLimit) {
  fill_36_months(4);
  PartitionedDataRepository repo = open(4);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 60; ++i) {
    const int m = static_cast<int>(rng() % 33);
    const Date from = date_from_civil(2021 + m / 12, static_cast<unsigned>(m % 12 + 1), 1);
    DataQueryRequest q;
    q.filters = {{"ts", FilterOperator::kGte, Value(from)},
                 {"ts", FilterOperator::kLt, Value(Date{from.days + 85})}};
    repo.count_all(schema_, q);
    ASSERT_LE(repo.counters().partitions_attached_now, 4);
  }
  EXPECT_LE(repo.counters().partitions_attached_peak, 4);
  EXPECT_GT(repo.counters().partitions_detached, 0);
  // A request that needs more than the limit still answers (all pinned), then trims back.
  EXPECT_EQ(repo.count_all(schema_, where({{"qty", FilterOperator::kGte, Value(0)}})) >= 0, true);
  EXPECT_LE(repo.counters().partitions_attached_now, 4);
}

TEST_F(PartitionedTest, GetByIdOpensOnePartition) {
  fill_36_months();
  std::vector<Value> ids;
  {
    PartitionedDataRepository repo = open();
    DataQueryRequest q;
    q.columns = {"id"};
    for (const auto& r : repo.get_all(schema_, q).items) ids.push_back(r.values[0]);
  }
  ASSERT_EQ(ids.size(), 1800u);
  PartitionedDataRepository repo = open();
  for (int i = 0; i < 20; ++i) {
    const auto before = repo.counters();
    auto rec = repo.get_by_id(schema_, ids[static_cast<std::size_t>(i) * 89]);
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->values[0], ids[static_cast<std::size_t>(i) * 89]);
    const auto after = repo.counters();
    EXPECT_EQ(after.partitions_scanned - before.partitions_scanned, 1);
    EXPECT_LE(after.partitions_opened - before.partitions_opened, 1);
  }
  EXPECT_FALSE(repo.get_by_id(schema_, Value("00000000-0000-7000-8000-000000000000")).has_value());
}

TEST_F(PartitionedTest, GetByIdUsesBloomFiltersWhenIdRangesOverlap) {
  // One batch over 24 months: ids interleave across partitions, so only the Bloom filters can
  // prune.
  std::mt19937_64 rng(11);
  auto rows =
      random_wide_rows(rng, 4800, date_from_civil(2022, 1, 1), date_from_civil(2023, 12, 31));
  {
    PartitionedDataRepository repo = open();
    repo.create_batch(schema_, rows);
    ASSERT_TRUE(repo.get_by_id(schema_, rows[0].values[0]).has_value());  // builds the id indexes
  }
  PartitionedDataRepository repo = open();  // the indexes were saved on close
  int64_t scanned = 0, opened = 0;
  for (int i = 0; i < 50; ++i) {
    const auto before = repo.counters();
    const auto& want = rows[static_cast<std::size_t>(i) * 95];
    auto rec = repo.get_by_id(schema_, want.values[0]);
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->values[0], want.values[0]);
    EXPECT_EQ(rec->values[1], want.values[1]);
    scanned += repo.counters().partitions_scanned - before.partitions_scanned;
    opened += repo.counters().partitions_opened - before.partitions_opened;
  }
  EXPECT_LE(scanned, 55) << "about one partition per lookup (1% false positives per partition)";
  EXPECT_LE(opened, 55);
}

TEST_F(PartitionedTest, CatalogIsRebuiltFromTheFiles) {
  const auto rows = fill_36_months();
  std::filesystem::remove(path("parts/events/_catalog.json"));
  {
    PartitionedDataRepository repo = open();
    EXPECT_EQ(repo.count_all(schema_), 1800);
    EXPECT_EQ(repo.get_partition_statistics().schemas.at(0).partitions.size(), 36u);
  }
  ASSERT_TRUE(std::filesystem::exists(path("parts/events/_catalog.json")));
  { std::ofstream(path("parts/events/_catalog.json")) << "{ not json"; }
  PartitionedDataRepository repo = open();
  DataQueryRequest q;
  q.filters = {{"ts", FilterOperator::kGte, Value("2023-01-01")}};
  EXPECT_EQ(repo.count_all(schema_, q), 600);
}

// DuckDB's linked extensions (core_functions, icu, json, parquet) cost ~13 ms of a fresh process's
// open; the hub loads them at the first statement that may need them (docs/architecture.md, "Cold
// opens").
TEST_F(PartitionedTest, DuckDbExtensionsLoadAtTheFirstStatementThatMayNeedThem) {
  const std::string loaded_sql =
      "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name IN "
      "('core_functions', 'icu', 'json', 'parquet')";
  {
    duck::Database db = duck::Database::open(":memory:", false, {}, duck::Extensions::kOnFirstUse);
    duck::Connection c = db.connect();
    EXPECT_FALSE(db.extensions_loaded());
    EXPECT_EQ(c.query_int("SELECT count(*) FROM range(10) WHERE range < 4", "",
                          duck::Uses::kBuiltinsOnly),
              4);
    // The deferral is real: `sum` lives in core_functions.
    EXPECT_NE(error_of([&] {
                c.query("SELECT sum(1)", "", duck::Uses::kBuiltinsOnly);
              }).find("core_functions"),
              std::string::npos);
    EXPECT_FALSE(db.extensions_loaded());
    EXPECT_EQ(c.query_int("SELECT sum(range)::BIGINT FROM range(10)"), 45);
    EXPECT_TRUE(db.extensions_loaded());
    EXPECT_EQ(db.connect().query_int(loaded_sql), 4);
  }
  {
    duck::Database db = duck::Database::open(":memory:");  // DuckDB's own way
    EXPECT_TRUE(db.extensions_loaded());
    EXPECT_EQ(db.connect().query_int(loaded_sql, "", duck::Uses::kBuiltinsOnly), 4);
  }
  {
    ::setenv("DUCKPART_DUCKDB_EXTENSIONS", "at-open", 1);
    duck::Database db;
    try {
      db = duck::Database::open(":memory:", false, {}, duck::Extensions::kOnFirstUse);
    } catch (...) {
      ::unsetenv("DUCKPART_DUCKDB_EXTENSIONS");
      throw;
    }
    ::unsetenv("DUCKPART_DUCKDB_EXTENSIONS");
    EXPECT_TRUE(db.extensions_loaded());
    EXPECT_EQ(db.connect().query_int(loaded_sql, "", duck::Uses::kBuiltinsOnly), 4);
  }

  const auto rows = fill_36_months();
  int64_t qty_sum = 0;
  for (const auto& r : rows) {
    const int64_t ts = r.values[1].get<Timestamp>().micros;
    if (ts >= to_timestamp(date_from_civil(2022, 4, 1)).micros &&
        ts < to_timestamp(date_from_civil(2022, 7, 1)).micros && !r.values[4].is_null()) {
      qty_sum += r.values[4].get<int64_t>();
    }
  }
  const auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  PartitionedDataRepository ro(cfg, {.read_only = true});
  EXPECT_FALSE(ro.counters().duckdb_extensions_loaded);
  DataQueryRequest q;
  q.filters = {{"ts", FilterOperator::kGte, Value("2022-04-01")},
               {"ts", FilterOperator::kLt, Value("2022-07-01")},
               {"name", FilterOperator::kLike, Value("%a%")}};
  EXPECT_GT(ro.count_all(schema_, q), 0);
  EXPECT_EQ(ro.get_all(schema_, q).items.size(),
            static_cast<std::size_t>(ro.count_all(schema_, q)));
  int64_t streamed = 0;
  ro.stream_query_results(schema_, q).for_each([&](const DataRecord&) {
    ++streamed;
    return true;
  });
  EXPECT_EQ(streamed, ro.count_all(schema_, q));
  EXPECT_EQ(ro.counters().partitions_opened, 3);
  EXPECT_FALSE(ro.counters().duckdb_extensions_loaded)
      << "attaching, counting and reading rows of built-in types need none";
  // Any SQL of the user's may need them: loaded first.
  RecordStream s = ro.query_sql(
      "SELECT sum(qty)::BIGINT FROM events WHERE ts >= '2022-04-01' AND ts < '2022-07-01'");
  DataRecord r;
  ASSERT_TRUE(s.next(r));
  EXPECT_EQ(r.values[0].get<int64_t>(), qty_sum);
  EXPECT_TRUE(ro.counters().duckdb_extensions_loaded);
}

// DuckDB ends a streaming query's transaction only when its result is read to the end or its
// connection runs the next statement; until then a checkpoint of the file it read fails after a
// commit with an UPDATE (and waits after one without). duck::Result ends it when dropped early
// (bench/repro/abandoned_stream_checkpoint.c is the same sequence without duckpart).
TEST_F(PartitionedTest, StreamsDroppedBeforeTheirEndEndTheirTransaction) {
  for (const bool read_to_end : {false, true}) {
    SCOPED_TRACE(read_to_end ? "read to the end" : "dropped after one chunk");
    const std::string file = path(read_to_end ? "whole.duckdb" : "dropped.duckdb");
    duck::Database db = duck::Database::open(":memory:", false, {{"max_vacuum_tasks", "0"}},
                                             duck::Extensions::kOnFirstUse);
    duck::Connection writer = db.connect();
    duck::Connection checkpointer = db.connect();
    duck::Connection reader = db.connect();
    writer.exec("ATTACH " + duck::quote_literal(file) + " AS p", "", duck::Uses::kBuiltinsOnly);
    writer.exec("CREATE TABLE p.r AS SELECT range AS x FROM range(100000)");
    writer.exec("CREATE TABLE p.m (n BIGINT, cv BIGINT); INSERT INTO p.m VALUES (0, 0)");
    writer.exec("CHECKPOINT p");
    int64_t rows = 0;
    {
      duck::Prepared st = reader.prepare("SELECT x FROM p.r", "", duck::Uses::kBuiltinsOnly);
      duck::Result r = st.execute_streaming();
      while (duck::DataChunk c = r.fetch()) {
        rows += static_cast<int64_t>(c.size());
        if (!read_to_end) break;
      }
    }
    EXPECT_EQ(rows, read_to_end ? 100000 : static_cast<int64_t>(duckdb_vector_size()));
    writer.exec("BEGIN; INSERT INTO p.r VALUES (1); UPDATE p.m SET n = n + 1, cv = 1; COMMIT");
    EXPECT_NO_THROW(checkpointer.exec("CHECKPOINT p"));
    EXPECT_EQ(reader.query_int("SELECT count(*) FROM p.r"), 100001);
  }
}

// Loading the extensions registers casts and functions in structures DuckDB reads unlocked while it
// binds: the load waits for built-ins-only statements being prepared or started on other
// connections, and those arriving meanwhile wait for it (duck::ExtensionGate). Readers on three
// threads keep counting and reading while a fourth runs SQL that needs the extensions: no
// deadlock, no wrong answer (also under TSan, `make tsan`). The unlocked race itself is too narrow
// to show here: with the gate's lock removed, 12 runs of this test passed too.
TEST_F(PartitionedTest, DuckDbExtensionsLoadWhileOtherConnectionsRead) {
  fill_36_months();
  const auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  for (int round = 0; round < 3; ++round) {
    PartitionedDataRepository ro(cfg, {.read_only = true});
    std::atomic<bool> stop{false};
    std::atomic<int> reads{0}, wrong{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
      readers.emplace_back([&, t] {
        for (int i = 0; !stop.load() || i < 5; ++i) {
          const int m = (t * 7 + i) % 34;  // three months from 2021-01 + m
          const Date from = date_from_civil(2021 + m / 12, static_cast<unsigned>(m % 12 + 1), 1);
          const int m3 = m + 3;
          const Date to = date_from_civil(2021 + m3 / 12, static_cast<unsigned>(m3 % 12 + 1), 1);
          DataQueryRequest q;
          q.filters = {{"ts", FilterOperator::kGte, Value(to_timestamp(from))},
                       {"ts", FilterOperator::kLt, Value(to_timestamp(to))}};
          if (ro.count_all(schema_, q) != 150) ++wrong;
          if (ro.get_all(schema_, q).items.size() != 150u) ++wrong;
          ++reads;
        }
      });
    }
    while (reads.load() < 3) std::this_thread::yield();
    RecordStream s = ro.query_sql("SELECT sum(qty)::BIGINT, count(*) FROM events");
    DataRecord r;
    ASSERT_TRUE(s.next(r));
    EXPECT_EQ(r.values[1].get<int64_t>(), 1800);
    stop = true;
    for (auto& th : readers) th.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_TRUE(ro.counters().duckdb_extensions_loaded);
  }
}

// What a TIMESTAMPTZ compares with depends on ICU: loaded, a value without an offset is in the
// session's time zone; not loaded, in UTC. Reads of a schema with such a column load the extensions
// first, and select what plain DuckDB selects.
TEST_F(PartitionedTest, ReadsOfTimestamptzColumnsLoadTheExtensionsFirst) {
  // ICU takes the process's zone when it first starts: alone in its process (as ctest runs every
  // test), this test makes it New York. With other tests before it in one process the zone is the
  // machine's, and only the comparison with plain DuckDB is checked.
  const bool alone = ::testing::UnitTest::GetInstance()->test_to_run_count() == 1;
  if (alone) ::setenv("TZ", "America/New_York", 1);
  const Schema schema("zoned", {{"id", "BIGINT"}, {"ts", "TIMESTAMP"}, {"tz", "TIMESTAMPTZ"}}, "ts",
                      "id");
  std::vector<DataRecord> rows;
  for (int i = 0; i < 6; ++i) {
    DataRecord rec;
    rec.values = {Value(int64_t{i + 1}), Value(fmt::format("2023-0{}-10 12:00:00", i + 1)),
                  Value(fmt::format("2023-0{}-10 12:34:56", i + 1))};
    rows.push_back(rec);
  }
  {
    PartitionedDataRepository rw(test_config(path("parts"), PartitionStrategy::kMonthly));
    rw.create_batch(schema, rows);
  }
  DuckDBDataRepository single(path("single.duckdb"));
  single.create_batch(schema, rows);
  DataQueryRequest q;
  q.filters = {{"ts", FilterOperator::kGte, Value("2023-02-01")},
               {"tz", FilterOperator::kGte, Value("2023-03-10 12:34:56")}};
  q.sort = {{"id", SortDirection::kAsc}};
  auto ids = [](const std::vector<DataRecord>& items) {
    std::vector<int64_t> out;
    for (const auto& r : items) out.push_back(r.values[0].get<int64_t>());
    return out;
  };
  const auto expected = ids(single.get_all(schema, q).items);
  // In New York the bound is 17:34:56 UTC, after March's row; in UTC it would include it.
  if (alone) {
    EXPECT_EQ(expected, (std::vector<int64_t>{4, 5, 6}));
  }
  PartitionedDataRepository ro(test_config(path("parts"), PartitionStrategy::kMonthly),
                               {.read_only = true});
  EXPECT_FALSE(ro.counters().duckdb_extensions_loaded);
  EXPECT_EQ(ro.count_all(schema, q), static_cast<int64_t>(expected.size()));
  EXPECT_TRUE(ro.counters().duckdb_extensions_loaded);
  EXPECT_EQ(ids(ro.get_all(schema, q).items), expected);
}

// The catalog's metadata is used only for files whose stamp (size and mtime of the file and its
// log) is the one it recorded: a partition changed behind it is read again. A read-only open scans
// its tables while DuckDB starts (Impl::start_prefetch); that scan is used only by a load within
// two seconds of it, so a file changed after the open and before a later first use is seen too.
TEST_F(PartitionedTest, CatalogStampsCatchAPartitionChangedBehindIt) {
  fill_36_months();
  const std::string file = path("parts/events/partition_2022_04.duckdb");
  ASSERT_TRUE(std::filesystem::exists(path("parts/events/_catalog.json")));
  auto set_rows_in_metadata = [&](int64_t n) {
    duck::Database db = duck::Database::open(file);
    db.connect().exec(fmt::format("UPDATE _duckpart_meta SET row_count = {}", n));
  };
  auto rows_of = [](PartitionedDataRepository& repo, const std::string& name) {
    const StorageStatistics st = repo.get_partition_statistics();
    for (const auto& p : st.schemas.at(0).partitions) {
      if (p.name == name) return p.rows;
    }
    return int64_t{-1};
  };
  const auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  {
    PartitionedDataRepository ro(cfg, {.read_only = true});
    EXPECT_EQ(rows_of(ro, "partition_2022_04"), 50);
    EXPECT_EQ(ro.counters().partitions_opened, 0) << "every file matched the catalog";
  }
  set_rows_in_metadata(777);
  {
    PartitionedDataRepository ro(cfg, {.read_only = true});
    EXPECT_EQ(rows_of(ro, "partition_2022_04"), 777);
    EXPECT_EQ(ro.counters().partitions_opened, 1) << "only the changed file is read";
  }
  {
    PartitionedDataRepository rw = open();
    EXPECT_EQ(rows_of(rw, "partition_2022_04"), 777);
  }  // the catalog records the file as it is now
  {
    PartitionedDataRepository ro(cfg, {.read_only = true});
    EXPECT_EQ(rows_of(ro, "partition_2022_04"), 777);
    EXPECT_EQ(ro.counters().partitions_opened, 0);
  }
  {
    // Changed after the open (and its scan), first used later than a scan may be.
    PartitionedDataRepository ro(cfg, {.read_only = true});
    set_rows_in_metadata(888);
    std::this_thread::sleep_for(std::chrono::milliseconds(2200));
    EXPECT_EQ(rows_of(ro, "partition_2022_04"), 888);
  }
  {
    PartitionedDataRepository rw = open();
    EXPECT_EQ(rows_of(rw, "partition_2022_04"), 888);
  }
  set_rows_in_metadata(50);
  // A second table, and a directory that is not one: both tables load from the open's scan.
  {
    auto other_rows = fill_36_months();
    PartitionedDataRepository repo = open();
    const Schema other("others", schema_.columns(), schema_.partition_column(),
                       schema_.id_column());
    repo.create_batch(other, std::vector<DataRecord>(other_rows.begin(), other_rows.begin() + 10));
  }
  std::filesystem::create_directories(path("parts/_staging/partition_2022_04.duckdb"));
  PartitionedDataRepository ro(cfg, {.read_only = true});
  const Schema other("others", schema_.columns(), schema_.partition_column(), schema_.id_column());
  EXPECT_EQ(ro.count_all(other), 10);
  EXPECT_EQ(ro.count_all(schema_), 3600);
  EXPECT_EQ(rows_of(ro, "partition_2022_04"), 100);
}

// A read-only instance counts whole partitions from their metadata, but it is not the writer:
// a partition another process committed to after the instance read its metadata is counted from
// the file again (its stamp changed), with and without filters. What the metadata answers starts
// no DuckDB; the first count that must read a file starts it then.
TEST_F(PartitionedTest, ReadOnlyCountsFromMetadataSeeFilesChangedSinceTheyWereRead) {
  fill_36_months();
  const auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  PartitionedDataRepository ro(cfg, {.read_only = true});
  EXPECT_FALSE(ro.counters().duckdb_started);
  DataQueryRequest april;
  april.filters = {{"ts", FilterOperator::kGte, Value("2022-04-01")},
                   {"ts", FilterOperator::kLt, Value("2022-05-01")}};
  ASSERT_EQ(ro.count_all(schema_, april), 50);
  ASSERT_EQ(ro.count_all(schema_), 1800);
  EXPECT_EQ(ro.counters().partitions_opened, 0) << "both counted from metadata";
  EXPECT_EQ(ro.counters().partitions_counted_from_metadata, 37);
  EXPECT_FALSE(ro.counters().duckdb_started) << "nothing needed DuckDB";
  EXPECT_FALSE(ro.counters().duckdb_extensions_loaded);
  {
    // Another writer (this process, through DuckDB directly: the read-only instance does not hold
    // the file) adds 7 rows to April and its metadata row, as a commit of duckpart would.
    duck::Database db = duck::Database::open(path("parts/events/partition_2022_04.duckdb"));
    duck::Connection c = db.connect();
    c.exec("INSERT INTO events SELECT * REPLACE (uuid() AS id) FROM events LIMIT 7");
    c.exec("UPDATE _duckpart_meta SET row_count = row_count + 7");
  }
  EXPECT_EQ(ro.count_all(schema_, april), 57);
  EXPECT_TRUE(ro.counters().duckdb_started) << "the changed file is read by DuckDB";
  EXPECT_EQ(ro.count_all(schema_), 1807);
  EXPECT_EQ(ro.counters().partitions_opened, 1) << "only the changed file is read";
  DataQueryRequest may;
  may.filters = {{"ts", FilterOperator::kGte, Value("2022-05-01")},
                 {"ts", FilterOperator::kLt, Value("2022-06-01")}};
  EXPECT_EQ(ro.count_all(schema_, may), 50);
  EXPECT_EQ(ro.counters().partitions_opened, 1);
}

// A bulk load whose source types differ from the table's (a TIMESTAMP with a time of day into a
// DATE partition column, converted by the INSERT) records the stored values' bounds: counts
// answered from metadata and pruning agree with the rows.
TEST_F(PartitionedTest, BulkLoadsOfOtherSourceTypesRecordTheStoredBounds) {
  const Schema schema = wide_schema("DATE");
  PartitionedDataRepository repo(test_config(path("parts_date"), PartitionStrategy::kMonthly));
  ASSERT_EQ(repo.create_batch_from_query(
                    schema,
                    "SELECT uuid() AS id, TIMESTAMP '2024-01-15 12:00' AS ts, NULL::BOOLEAN AS "
                    "flag, NULL::SMALLINT AS small, NULL::INTEGER AS qty, NULL::BIGINT AS big, "
                    "NULL::DOUBLE AS ratio, NULL::DECIMAL(12,3) AS price, NULL::VARCHAR AS name, "
                    "NULL::DATE AS day, NULL::UUID AS ref FROM range(3)")
                .rows_written,
            3);
  const Value day(date_from_civil(2024, 1, 15));
  EXPECT_EQ(repo.count_all(schema, where({{"ts", FilterOperator::kGt, day}})), 0);
  EXPECT_EQ(repo.count_all(schema, where({{"ts", FilterOperator::kNe, day}})), 0);
  EXPECT_EQ(repo.count_all(schema, where({{"ts", FilterOperator::kEq, day}})), 3);
  EXPECT_EQ(repo.get_all(schema, where({{"ts", FilterOperator::kEq, day}})).items.size(), 3u);
}

// block_size_kb gives new partition files (made from the template, or one by one) DuckDB blocks of
// that size; each file keeps its block size when the store is reopened with another setting, and
// compact chooses per partition: a small one keeps 16 KB (smaller file), a large one goes back to
// 256 KB, an explicit size is honoured. The rows stay the same throughout.
TEST_F(PartitionedTest, BlockSizeOfNewFilesAndCompactionsPerPartition) {
  const Schema schema = wide_schema();
  auto block_size = [&](const std::string& file) {
    duck::Database db = duck::Database::open(":memory:");
    duck::Connection c = db.connect();
    c.exec(fmt::format("ATTACH {} AS f (READ_ONLY)", duck::quote_literal(file)));
    return c.query_int("SELECT block_size FROM pragma_database_size() WHERE database_name = 'f'");
  };
  auto rows_sql = [](int64_t n, const std::string& month) {
    return fmt::format(
        "SELECT uuid() AS id, TIMESTAMP '{}-01' + to_microseconds(range * 1000) AS ts, range % 2 = "
        "0 AS flag, (range % 100)::SMALLINT AS small, (range % 1000)::INTEGER AS qty, range AS "
        "big, range / 7.0 AS ratio, (range / 3.0)::DECIMAL(12,3) AS price, 'well ' || (range % "
        "50) AS name, DATE '2020-01-01' + (range % 365)::INTEGER AS day, uuid() AS ref FROM "
        "range({})",
        month, n);
  };
  const std::string dir = path("parts/events/");
  {
    auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
    cfg.block_size_kb = 16;
    PartitionedDataRepository repo(cfg);
    // Three new partitions at once (the template), then one alone.
    ASSERT_EQ(repo.create_batch_from_query(schema, rows_sql(1000, "2024-01") + " UNION ALL " +
                                                       rows_sql(1000, "2024-02") + " UNION ALL " +
                                                       rows_sql(60000, "2024-03"))
                  .rows_written,
              62000);
    ASSERT_EQ(repo.create_batch_from_query(schema, rows_sql(500, "2024-04")).rows_written, 500);
    repo.flush();
  }
  for (const char* m : {"2024_01", "2024_02", "2024_03", "2024_04"}) {
    EXPECT_EQ(block_size(dir + "partition_" + m + ".duckdb"), 16384) << m;
  }
  // 1,000 rows in 16 KB blocks: a fraction of the 1 MB a 256 KB-block partition takes.
  EXPECT_LT(std::filesystem::file_size(dir + "partition_2024_01.duckdb"), 400u * 1024);

  // Reopened with the default block size: the files keep theirs, take writes, and a new
  // partition gets 256 KB blocks.
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
  ASSERT_EQ(repo.create_batch_from_query(schema, rows_sql(200, "2024-01")).rows_written, 200);
  ASSERT_EQ(repo.create_batch_from_query(schema, rows_sql(300, "2024-05")).rows_written, 300);
  repo.flush();
  EXPECT_EQ(block_size(dir + "partition_2024_01.duckdb"), 16384);
  EXPECT_EQ(block_size(dir + "partition_2024_05.duckdb"), 262144);
  auto month_count = [&](const char* from, const char* to) {
    return repo.count_all(schema, where({{"ts", FilterOperator::kGte, Value(from)},
                                         {"ts", FilterOperator::kLt, Value(to)},
                                         {"qty", FilterOperator::kGte, Value(0)}}));
  };
  EXPECT_EQ(month_count("2024-01-01", "2024-02-01"), 1200);
  EXPECT_EQ(month_count("2024-03-01", "2024-04-01"), 60000);

  auto checksums = [&] {
    std::map<std::string, std::string> out;
    for (const auto& c : repo.checksum_partitions(schema, false))
      out[c.name] = std::to_string(c.rows) + "/" + c.checksum;
    return out;
  };
  PartitionUtilities util(repo);
  auto block_hint = [&] {
    for (const auto& f : util.health_report(schema).findings) {
      if (f.problem.find("256 KB blocks") != std::string::npos) return f.problem;
    }
    return std::string();
  };
  // Only 2024_05 is a small file in 256 KB blocks.
  EXPECT_NE(block_hint().find("1 partition(s) (e.g. partition_2024_05)"), std::string::npos)
      << block_hint();
  EXPECT_EQ(duckdb_file_block_size(dir + "partition_2024_05.duckdb"), 262144u);
  EXPECT_EQ(duckdb_file_block_size(dir + "partition_2024_01.duckdb"), 16384u);
  EXPECT_EQ(duckdb_file_block_size(path("no_such_file")), std::nullopt);
  const auto before = checksums();
  // Automatic: the small partitions are smaller in 16 KB blocks, the 60,000-row one in 256 KB.
  const auto small = repo.compact_partition(schema, "partition_2024_05");
  EXPECT_EQ(small.block_size_kb, 16);
  EXPECT_LT(small.bytes_after, small.bytes_before);
  EXPECT_EQ(block_size(dir + "partition_2024_05.duckdb"), 16384);
  EXPECT_EQ(repo.compact_partition(schema, "partition_2024_01").block_size_kb, 16);
  const auto large = repo.compact_partition(schema, "partition_2024_03");
  EXPECT_EQ(large.block_size_kb, 256);
  EXPECT_LT(large.bytes_after, large.bytes_before);
  EXPECT_EQ(block_size(dir + "partition_2024_03.duckdb"), 262144);
  // Explicit.
  EXPECT_EQ(repo.compact_partition(schema, "partition_2024_02", 64).block_size_kb, 64);
  EXPECT_EQ(block_size(dir + "partition_2024_02.duckdb"), 65536);
  EXPECT_EQ(checksums(), before);
  EXPECT_EQ(block_hint(), "");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".compact"), std::string::npos) << entry.path();
  }
  ErrorCode code{};
  EXPECT_NE(
      error_of([&] { repo.compact_partition(schema, "partition_2024_02", 48); }, &code).find("48"),
      std::string::npos);
  EXPECT_EQ(code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(block_size(dir + "partition_2024_02.duckdb"), 65536);
  EXPECT_NE(error_of([&] { util.compact(schema, "", {}, 48); }).find("48"), std::string::npos);

  // Two compactions of one partition at once while a writer commits to it: every commit stays.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> written{0};
  std::thread writer([&] {
    while (!stop) {
      written += repo.create_batch_from_query(schema, rows_sql(10, "2024-01")).rows_written;
    }
  });
  std::thread other([&] {
    for (int i = 0; i < 3; ++i) repo.compact_partition(schema, "partition_2024_01");
  });
  for (int i = 0; i < 3; ++i) repo.compact_partition(schema, "partition_2024_01");
  other.join();
  stop = true;
  writer.join();
  EXPECT_GT(written.load(), 0);
  EXPECT_EQ(month_count("2024-01-01", "2024-02-01"), 1200 + written.load());
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".compact"), std::string::npos) << entry.path();
  }
}

// Every commit writes the metadata row whole (a new row, the old one deleted) instead of updating
// some of its columns: DuckDB gives each checkpoint's segments of a table a 256 KB block of their
// own, so an updated row kept its creation-time strings in one block and its later ids in others
// (up to three blocks for one row, 2-7% of a monthly store at 100M rows). Written over several
// sessions (each close checkpoints), the row holds the right values, keeps its creation time and
// uses one block.
TEST_F(PartitionedTest, MetadataRowStaysInOneBlockAcrossCommitsAndCheckpoints) {
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 0;  // the direct write path: each call commits
  std::mt19937_64 rng(32);
  const std::string file = path("parts/events/partition_2023_03.duckdb");
  int64_t total = 0;
  std::string created;
  for (int session = 0; session < 4; ++session) {
    PartitionedDataRepository repo(cfg);
    for (int b = 0; b < 3; ++b) {
      auto rows =
          random_wide_rows(rng, 700, date_from_civil(2023, 3, 1), date_from_civil(2023, 3, 31));
      total += repo.create_batch(schema_, rows, {.batch_id = fmt::format("s{}-b{}", session, b)})
                   .rows_written;
    }
    repo.flush();
    if (session == 0) {
      duck::Database db = duck::Database::open(file, true);
      duck::Result r = db.connect().query("SELECT created_at::VARCHAR FROM _duckpart_meta");
      duck::ChunkDecoder dec(r);
      std::vector<DataRecord> out;
      while (auto c = r.fetch()) dec.decode(c, out);
      ASSERT_EQ(out.size(), 1u);
      created = out[0].values[0].to_string();
    }
  }
  duck::Database db = duck::Database::open(file, true);
  duck::Connection c = db.connect();
  EXPECT_EQ(c.query_int("SELECT count(*) FROM _duckpart_meta"), 1);
  EXPECT_EQ(c.query_int("SELECT row_count FROM _duckpart_meta"), total);
  EXPECT_EQ(c.query_int("SELECT count(*) FROM events"), total);
  EXPECT_EQ(c.query_int("SELECT commit_version FROM _duckpart_meta"), 12);
  EXPECT_EQ(c.query_int("SELECT count(*) FROM _duckpart_batches"), 12);
  EXPECT_EQ(c.query_int(fmt::format(
                "SELECT count(*) FROM _duckpart_meta WHERE created_at::VARCHAR = '{}' AND "
                "period = '2023_03' AND strategy = 'monthly' AND schema_name = 'events' AND "
                "schema_json = {} AND min_value = (SELECT min(ts) FROM events) AND max_value = "
                "(SELECT max(ts) FROM events) AND min_id = (SELECT min(id::VARCHAR) FROM events) "
                "AND max_id = (SELECT max(id::VARCHAR) FROM events) AND updated_at > created_at",
                created, duck::quote_literal(schema_.to_json()))),
            1);
  EXPECT_EQ(
      c.query_int("SELECT count(DISTINCT block_id) FROM pragma_storage_info('_duckpart_meta') "
                  "WHERE block_id >= 0"),
      1);
  // A fresh repository reads the same metadata.
  PartitionedDataRepository ro(cfg, {.read_only = true});
  EXPECT_EQ(ro.count_all(schema_), total);
}

// While a partition's _duckpart_batches is small, the first commit after each checkpoint writes
// it whole: with checkpoint vacuum off, DuckDB started a new row group (in a 256 KB block of its
// own) at every checkpoint that found new batch ids, so a partition written over N checkpoints kept
// N blocks for a few hundred bytes. Written over four sessions (each close checkpoints), the table
// holds every id once, in commit order, with its rows, in one row group and one block; replays are
// still recognised. Past the rewrite limit (256 rows) commits append only, and every id is still
// kept once.
TEST_F(PartitionedTest, BatchIdsStayInOneRowGroupAcrossCommitsAndCheckpoints) {
  // Rows stored in the table's segments, deleted ones included.
  static constexpr const char* kStoredBatchRows =
      "SELECT sum(count) FROM pragma_storage_info('_duckpart_batches') WHERE column_name = "
      "'batch_id' AND segment_type = 'VARCHAR'";
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 0;  // the direct write path: each call commits
  std::mt19937_64 rng(34);
  const std::string file = path("parts/events/partition_2023_03.duckdb");
  std::vector<std::pair<std::string, int64_t>> ids;
  for (int session = 0; session < 4; ++session) {
    PartitionedDataRepository repo(cfg);
    for (int b = 0; b < 3; ++b) {
      auto rows = random_wide_rows(rng, 200 + 10 * (3 * session + b), date_from_civil(2023, 3, 1),
                                   date_from_civil(2023, 3, 31));
      const std::string id = fmt::format("s{}-b{}", session, b);
      ids.emplace_back(id, repo.create_batch(schema_, rows, {.batch_id = id}).rows_written);
      EXPECT_EQ(ids.back().second, static_cast<int64_t>(rows.size()));
    }
    // A replay of an id committed in an earlier session writes nothing.
    if (session > 0) {
      auto again =
          random_wide_rows(rng, 50, date_from_civil(2023, 3, 1), date_from_civil(2023, 3, 31));
      const auto res = repo.create_batch(schema_, again, {.batch_id = "s0-b1"});
      EXPECT_EQ(res.rows_written, 0);
      EXPECT_EQ(res.rows_skipped, 50);
    }
  }
  int64_t total = 0;
  std::string expected;
  for (const auto& [id, rows] : ids) {
    total += rows;
    expected += fmt::format("{}:{};", id, rows);
  }
  {
    duck::Database db = duck::Database::open(file, true);
    duck::Connection c = db.connect();
    duck::Result r = c.query(
        "SELECT string_agg(batch_id || ':' || row_count || ';', '' ORDER BY rowid) FROM "
        "_duckpart_batches");
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> out;
    while (auto ch = r.fetch()) dec.decode(ch, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].values[0].to_string(), expected);
    EXPECT_EQ(c.query_int("SELECT count(*) FROM events"), total);
    EXPECT_EQ(c.query_int("SELECT count(*) FROM _duckpart_batches WHERE committed_at IS NULL"), 0);
    EXPECT_EQ(c.query_int("SELECT count(DISTINCT block_id) FROM "
                          "pragma_storage_info('_duckpart_batches') WHERE block_id >= 0"),
              1);
    EXPECT_EQ(c.query_int("SELECT count(DISTINCT row_group_id) FROM "
                          "pragma_storage_info('_duckpart_batches')"),
              1);
    // Rewritten once per checkpoint, not at every commit: no deleted rows kept in the row group.
    EXPECT_EQ(c.query_int(kStoredBatchRows), 12);
  }
  // Past the limit: 260 more one-row commits in one session append; every id is kept once.
  {
    PartitionedDataRepository repo(cfg);
    for (int i = 0; i < 260; ++i) {
      auto one =
          random_wide_rows(rng, 1, date_from_civil(2023, 3, 1), date_from_civil(2023, 3, 31));
      total += repo.create_batch(schema_, one, {.batch_id = fmt::format("one-{}", i)}).rows_written;
    }
    auto again =
        random_wide_rows(rng, 5, date_from_civil(2023, 3, 1), date_from_civil(2023, 3, 31));
    EXPECT_EQ(repo.create_batch(schema_, again, {.batch_id = "one-3"}).rows_skipped, 5);
    EXPECT_EQ(repo.create_batch(schema_, again, {.batch_id = "s2-b0"}).rows_skipped, 5);
    EXPECT_EQ(repo.count_all(schema_), total);
  }
  duck::Database db = duck::Database::open(file, true);
  duck::Connection c = db.connect();
  EXPECT_EQ(c.query_int("SELECT count(*) FROM _duckpart_batches"), 272);
  // The first of the 260 commits rewrote the 12 rows, the others appended (no checkpoint between
  // them): one row group, no deleted rows stored (rewriting at every commit stored ~33K).
  EXPECT_EQ(c.query_int(kStoredBatchRows), 272);
  EXPECT_EQ(c.query_int("SELECT count(DISTINCT row_group_id) FROM "
                        "pragma_storage_info('_duckpart_batches')"),
            1);
  EXPECT_EQ(c.query_int("SELECT count(DISTINCT batch_id) FROM _duckpart_batches"), 272);
  EXPECT_EQ(c.query_int("SELECT sum(row_count) FROM _duckpart_batches"), total);
  EXPECT_EQ(c.query_int("SELECT count(*) FROM events"), total);
}

// The other ways into a partition commit keep _duckpart_batches in one row group too: drains of
// the write buffer (several ids in one commit), bulk loads (create_batch_from_query), and
// partitions detached and attached again within a session (4 months written, 2 kept attached),
// across three sessions. Every id is kept once per partition its rows reached, and no deleted row
// is stored.
TEST_F(PartitionedTest, BatchIdsStayInOneRowGroupThroughDrainsBulkLoadsAndReattaches) {
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 64;  // drained by flush() only
  cfg.write_buffer_max_delay_ms = 0;
  cfg.max_partitions_in_memory = 2;
  std::mt19937_64 rng(35);
  const Date from = date_from_civil(2023, 1, 1), to = date_from_civil(2023, 4, 30);
  std::map<int, std::vector<std::string>> ids_of_month;  // month -> ids, in commit order
  std::map<int, int64_t> rows_of_month;
  auto month_of = [](const DataRecord& r) {
    int y = 0;
    unsigned m = 0, d = 0;
    civil_from_date(date_of(r.values[1].get<Timestamp>()), y, m, d);
    return static_cast<int>(m);
  };
  int64_t reattached = 0;
  for (int session = 0; session < 3; ++session) {
    PartitionedDataRepository repo(cfg);
    for (int round = 0; round < 3; ++round) {
      for (int b = 0; b < 3; ++b) {
        const std::string id = fmt::format("s{}-r{}-b{}", session, round, b);
        const auto rows = random_wide_rows(rng, 150, from, to);
        std::set<int> months;
        for (const auto& r : rows) {
          months.insert(month_of(r));
          ++rows_of_month[month_of(r)];
        }
        for (const int m : months) ids_of_month[m].push_back(id);
        ASSERT_EQ(repo.create_batch(schema_, rows, {.batch_id = id}).rows_written, 150);
      }
      repo.flush();  // one drain: each partition commits the three ids at once
    }
    // A bulk load of 40 rows into each month.
    const std::string bulk = fmt::format("bulk-s{}", session);
    ASSERT_EQ(repo.create_batch_from_query(
                      schema_,
                      "SELECT uuid() AS id, TIMESTAMP '2023-01-05' + INTERVAL (range % 4) MONTH + "
                      "to_microseconds(range) AS ts, range % 2 = 0 AS flag, NULL::SMALLINT AS "
                      "small, range::INTEGER AS qty, range AS big, NULL::DOUBLE AS ratio, "
                      "NULL::DECIMAL(12,3) AS price, 'bulk' AS name, NULL::DATE AS day, "
                      "NULL::UUID AS ref FROM range(160)",
                      {.batch_id = bulk})
                  .rows_written,
              160);
    for (int m = 1; m <= 4; ++m) {
      ids_of_month[m].push_back(bulk);
      rows_of_month[m] += 40;
    }
    // A replay of a drained id and of a bulk id writes nothing.
    EXPECT_EQ(
        repo.create_batch(schema_, random_wide_rows(rng, 20, from, to), {.batch_id = "s0-r1-b2"})
            .rows_written,
        0);
    repo.flush();
    reattached += repo.counters().partitions_opened - 4;
  }
  EXPECT_GT(reattached, 0) << "partitions must have been detached and attached again";
  int64_t total = 0;
  for (int m = 1; m <= 4; ++m) {
    const std::string file = path(fmt::format("parts/events/partition_2023_{:02d}.duckdb", m));
    duck::Database db = duck::Database::open(file, true);
    duck::Connection c = db.connect();
    duck::Result r = c.query(
        "SELECT string_agg(batch_id, ',' ORDER BY rowid), sum(row_count) FROM _duckpart_batches");
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> out;
    while (auto ch = r.fetch()) dec.decode(ch, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].values[0].to_string(), fmt::format("{}", fmt::join(ids_of_month[m], ",")))
        << file;
    EXPECT_EQ(out[0].values[1].to_string(), std::to_string(rows_of_month[m])) << file;
    EXPECT_EQ(c.query_int("SELECT count(*) FROM events"), rows_of_month[m]) << file;
    EXPECT_EQ(c.query_int("SELECT count(DISTINCT row_group_id) FROM "
                          "pragma_storage_info('_duckpart_batches')"),
              1)
        << file;
    EXPECT_EQ(c.query_int("SELECT count(DISTINCT block_id) FROM "
                          "pragma_storage_info('_duckpart_batches') WHERE block_id >= 0"),
              1)
        << file;
    EXPECT_EQ(c.query_int("SELECT sum(count) FROM pragma_storage_info('_duckpart_batches') WHERE "
                          "column_name = 'batch_id' AND segment_type = 'VARCHAR'"),
              static_cast<int64_t>(ids_of_month[m].size()))
        << file << ": deleted rows stored";
    total += rows_of_month[m];
  }
  PartitionedDataRepository ro(cfg, {.read_only = true});
  EXPECT_EQ(ro.count_all(schema_), total);
}

// A first batch over many periods creates their files in parallel. When one creation fails (here
// a directory squats the temporary name of 2022_05), the batch writes nothing anywhere, the other
// new partitions are kept (empty, usable), and the same batch goes through once the obstacle is
// gone.
TEST_F(PartitionedTest, ParallelCreationOfNewPartitionsFailsCleanlyAndRetries) {
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_threads = 3;
  cfg.write_buffer_mb = 0;  // the direct write path: each call commits
  std::mt19937_64 rng(11);
  auto rows =
      random_wide_rows(rng, 600, date_from_civil(2022, 1, 1), date_from_civil(2022, 12, 31));
  const std::string squat = path("parts/events/partition_2022_05.duckdb.creating");
  std::filesystem::create_directories(squat + "/keep");
  {
    PartitionedDataRepository repo(cfg);
    ErrorCode code{};
    const std::string msg =
        error_of([&] { repo.create_batch(schema_, rows, {.batch_id = "b-1"}); }, &code);
    ASSERT_FALSE(msg.empty()) << "the squatted partition must fail the batch";
    EXPECT_NE(msg.find("partition_2022_05.duckdb.creating"), std::string::npos) << msg;
    EXPECT_EQ(repo.count_all(schema_), 0) << "nothing written while a partition is missing";
    EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2022_05.duckdb")));
    const auto stats = repo.get_partition_statistics();
    ASSERT_EQ(stats.schemas.size(), 1u);
    EXPECT_EQ(stats.schemas[0].partitions.size(), 11u) << "the other months were created";
    for (const auto& p : stats.schemas[0].partitions) EXPECT_EQ(p.rows, 0) << p.name;
  }
  // The 11 files are copies of the template that no commit reached (no metadata row): the clean
  // close above kept them out of the catalog, so a read-only open takes them for the empty
  // partitions of their names, and a writable one writes their metadata row.
  const std::string june =
      path("parts/events/") +
      partition_key_of(PartitionStrategy::kMonthly, date_from_civil(2022, 6, 1)).file_name();
  EXPECT_EQ(
      duck::Database::open(june, true).connect().query_int("SELECT count(*) FROM _duckpart_meta"),
      0);
  {
    PartitionedDataRepository ro(cfg, {.read_only = true});
    EXPECT_EQ(ro.count_all(schema_), 0);
    const auto st = ro.get_partition_statistics();
    ASSERT_EQ(st.schemas.size(), 1u);
    EXPECT_EQ(st.schemas[0].partitions.size(), 11u);
    for (const auto& p : st.schemas[0].partitions) EXPECT_EQ(p.problem, "") << p.name;
  }
  EXPECT_EQ(
      duck::Database::open(june, true).connect().query_int("SELECT count(*) FROM _duckpart_meta"),
      0);
  {
    PartitionedDataRepository idle(cfg);
    EXPECT_EQ(idle.count_all(schema_), 0);
  }
  for (int m = 1; m <= 12; ++m) {
    if (m == 5) continue;
    const PartitionKey key =
        partition_key_of(PartitionStrategy::kMonthly, date_from_civil(2022, m, 1));
    duck::Database db = duck::Database::open(path("parts/events/" + key.file_name()), true);
    EXPECT_EQ(db.connect().query_int(fmt::format(
                  "SELECT count(*) FROM _duckpart_meta WHERE period = '{}' AND range_start = "
                  "TIMESTAMP '{}'",
                  key.label(), format_date(key.start()))),
              1)
        << key.file_name();
  }
  std::filesystem::remove_all(squat);
  PartitionedDataRepository repo(cfg);
  const BatchResult res = repo.create_batch(schema_, rows, {.batch_id = "b-1"});
  EXPECT_EQ(res.rows_written, 600);
  EXPECT_EQ(res.partitions_created, 1) << "only 2022_05 was still missing";
  EXPECT_EQ(repo.count_all(schema_), 600);
  DataQueryRequest may;
  may.filters = {{"ts", FilterOperator::kGte, Value("2022-05-01")},
                 {"ts", FilterOperator::kLt, Value("2022-06-01")}};
  int64_t in_may = 0;
  for (const auto& r : rows) {
    const int64_t t = r.values[1].get<Timestamp>().micros;
    if (t >= to_timestamp(date_from_civil(2022, 5, 1)).micros &&
        t < to_timestamp(date_from_civil(2022, 6, 1)).micros) {
      ++in_may;
    }
  }
  EXPECT_EQ(repo.count_all(schema_, may), in_may);
  // A fresh store: all twelve created by one batch, every row readable from its month.
  PartitionedDataRepository fresh([&] {
    auto c = cfg;
    c.base_partition_path = path("fresh");
    return c;
  }());
  const BatchResult all = fresh.create_batch(schema_, rows);
  EXPECT_EQ(all.partitions_created, 12);
  EXPECT_EQ(all.rows_written, 600);
  EXPECT_EQ(fresh.count_all(schema_, may), in_may);
  EXPECT_EQ(fresh.counters().partitions_created, 12);
}

// The catalog (format 2: one line per partition, read without a JSON document) returns every
// field as written, including ids that need JSON escapes (read through the general parser).
TEST_F(PartitionedTest, CatalogFileRoundTripsEveryKindOfValue) {
  const std::string dir = path("cat");
  std::filesystem::create_directories(dir);
  auto entry = [](std::string file, int64_t rows, std::optional<int64_t> lo,
                  std::optional<int64_t> hi, Value id_lo, Value id_hi, FileStamp st) {
    CatalogEntry e;
    e.file_name = std::move(file);
    e.meta.row_count = rows;
    e.meta.min_value = lo;
    e.meta.max_value = hi;
    e.meta.min_id = std::move(id_lo);
    e.meta.max_id = std::move(id_hi);
    e.meta.commit_version = rows + 7;
    e.stamp = st;
    return e;
  };
  auto same = [](const Catalog& a, const Catalog& b) {
    ASSERT_EQ(a.entries.size(), b.entries.size());
    EXPECT_EQ(a.strategy, b.strategy);
    for (std::size_t i = 0; i < a.entries.size(); ++i) {
      const auto &x = a.entries[i], &y = b.entries[i];
      EXPECT_EQ(x.file_name, y.file_name) << i;
      EXPECT_EQ(x.meta.row_count, y.meta.row_count) << i;
      EXPECT_EQ(x.meta.min_value, y.meta.min_value) << i;
      EXPECT_EQ(x.meta.max_value, y.meta.max_value) << i;
      EXPECT_EQ(x.meta.min_id, y.meta.min_id) << i;
      EXPECT_EQ(x.meta.max_id, y.meta.max_id) << i;
      EXPECT_EQ(x.meta.commit_version, y.meta.commit_version) << i;
      EXPECT_TRUE(x.stamp == y.stamp) << i;
    }
  };
  const Schema schema = wide_schema();
  Catalog plain;  // what stores write: UUID text or BIGINT ids, NULLs for empty partitions
  plain.strategy = "monthly";
  plain.schema_json = schema.to_json();
  plain.entries.push_back(entry("partition_2023_01.duckdb", 5, -86400000000LL, 1700000000000000,
                                Value("00000000-0000-7000-8000-000000000001"),
                                Value("ffffffff-ffff-7fff-bfff-ffffffffffff"),
                                {123456, 1795797004182512032, -1, 0}));
  plain.entries.push_back(entry("partition_2023_02.duckdb", 0, std::nullopt, std::nullopt, Value{},
                                Value{}, {262144, 1, 4096, 2}));
  plain.entries.push_back(entry("partition_null.duckdb", 3, std::nullopt, std::nullopt,
                                Value(int64_t{-9}), Value(INT64_MAX), {1, 2, 3, 4}));
  write_catalog(dir, plain, schema);
  auto back = read_catalog(dir, nullptr);
  ASSERT_TRUE(back.has_value());
  same(plain, *back);
  // Text ids that JSON must escape, and UTF-8.
  Catalog odd = plain;
  odd.entries[0].meta.min_id = Value(std::string("a\"b\\c\td\n"));
  odd.entries[0].meta.max_id = Value(std::string("z\xc3\xa9\xe2\x82\xac"));
  write_catalog(dir, odd, schema);
  back = read_catalog(dir, nullptr);
  ASSERT_TRUE(back.has_value());
  same(odd, *back);
  // No partitions at all.
  Catalog empty = plain;
  empty.entries.clear();
  write_catalog(dir, empty, schema);
  back = read_catalog(dir, nullptr);
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->entries.empty());
  EXPECT_EQ(back->strategy, "monthly");
  // A line cut short is damage: no catalog (it is rebuilt from the files), never a wrong entry.
  write_catalog(dir, plain, schema);
  std::string text;
  {
    std::ifstream in(dir + "/_catalog.json");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::size_t cut = text.find("partition_2023_02");
  ASSERT_NE(cut, std::string::npos);
  std::ofstream(dir + "/_catalog.json") << text.substr(0, cut + 10) << "\n]}\n";
  EXPECT_FALSE(read_catalog(dir, nullptr).has_value());
  // Text JSON does not allow (a number with a leading zero) is damage too, not the number 5.
  std::string zero = text;
  const std::size_t rows_at = zero.find("\"partition_2023_01.duckdb\",5,");
  ASSERT_NE(rows_at, std::string::npos) << zero;
  zero.replace(rows_at, std::string("\"partition_2023_01.duckdb\",5,").size(),
               "\"partition_2023_01.duckdb\",05,");
  std::ofstream(dir + "/_catalog.json") << zero;
  EXPECT_FALSE(read_catalog(dir, nullptr).has_value());
}

// Stores written before catalog format 2 keep opening from their catalog (no file attached).
TEST_F(PartitionedTest, CatalogOfTheFirstFormatIsStillRead) {
  fill_36_months();
  const std::string file = path("parts/events/_catalog.json");
  auto now = read_catalog(path("parts/events"), nullptr);
  ASSERT_TRUE(now.has_value());
  ASSERT_EQ(now->entries.size(), 36u);
  nlohmann::ordered_json j;
  j["format"] = 1;
  j["schema"] = nlohmann::ordered_json::parse(now->schema_json);
  j["strategy"] = now->strategy;
  auto parts = nlohmann::ordered_json::array();
  auto val = [](const Value& v) -> nlohmann::ordered_json {
    if (v.is<int64_t>()) return v.get<int64_t>();
    if (v.is<std::string>()) return v.get<std::string>();
    return nullptr;
  };
  auto opt = [](const std::optional<int64_t>& v) -> nlohmann::ordered_json {
    return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
  };
  for (const auto& e : now->entries) {
    parts.push_back(
        {{"file", e.file_name},
         {"rows", e.meta.row_count},
         {"min_value", opt(e.meta.min_value)},
         {"max_value", opt(e.meta.max_value)},
         {"min_id", val(e.meta.min_id)},
         {"max_id", val(e.meta.max_id)},
         {"commit_version", e.meta.commit_version},
         {"stamp", {e.stamp.size, e.stamp.mtime_ns, e.stamp.wal_size, e.stamp.wal_mtime_ns}}});
  }
  j["partitions"] = std::move(parts);
  std::ofstream(file) << j.dump(1);
  auto old = read_catalog(path("parts/events"), nullptr);
  ASSERT_TRUE(old.has_value());
  ASSERT_EQ(old->entries.size(), 36u);
  EXPECT_EQ(old->entries[5].meta.max_id, now->entries[5].meta.max_id);
  EXPECT_EQ(old->entries[5].meta.min_value, now->entries[5].meta.min_value);
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly),
                                 {.read_only = true});
  const auto stats = repo.get_partition_statistics();
  ASSERT_EQ(stats.schemas.size(), 1u);
  EXPECT_EQ(stats.schemas[0].total_rows, 1800);
  EXPECT_EQ(repo.counters().partitions_opened, 0) << "the old catalog was trusted, not rebuilt";
}

TEST_F(PartitionedTest, AutoPartitionDisabledRefusesNewPeriodsAndWritesNothing) {
  fill_36_months();
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.auto_partition_enabled = false;
  PartitionedDataRepository repo(cfg);
  std::mt19937_64 rng(5);
  auto rows = random_wide_rows(rng, 10, date_from_civil(2023, 12, 1), date_from_civil(2024, 1, 31));
  ErrorCode code{};
  const std::string msg = error_of([&] { repo.create_batch(schema_, rows); }, &code);
  EXPECT_EQ(code, ErrorCode::kNotFound);
  EXPECT_NE(msg.find("no partition for period 2024_01"), std::string::npos) << msg;
  EXPECT_NE(msg.find("auto_partition_enabled"), std::string::npos) << msg;
  EXPECT_EQ(repo.count_all(schema_), 1800);
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2024_01.duckdb")));
  // Existing periods are still writable.
  auto ok = random_wide_rows(rng, 10, date_from_civil(2023, 12, 1), date_from_civil(2023, 12, 31));
  EXPECT_EQ(repo.create_batch(schema_, ok).rows_written, 10);
}

TEST_F(PartitionedTest, CrossPartitionQueriesCanBeDisabled) {
  fill_36_months();
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.enable_cross_partition_queries = false;
  PartitionedDataRepository repo(cfg);
  DataQueryRequest one;
  one.filters = {{"ts", FilterOperator::kBetween,
                  std::vector<Value>{Value("2022-02-01"), Value("2022-02-20")}}};
  EXPECT_EQ(repo.count_all(schema_, one) > 0, true);
  DataQueryRequest two;
  two.filters = {{"ts", FilterOperator::kBetween,
                  std::vector<Value>{Value("2022-02-01"), Value("2022-03-20")}}};
  const std::string msg = error_of([&] { repo.get_all(schema_, two); });
  EXPECT_NE(msg.find("spans 2 partitions"), std::string::npos) << msg;
  EXPECT_NE(msg.find("enable_cross_partition_queries"), std::string::npos) << msg;
  // SQL statements too (they read every partition their filters allowed).
  auto sql_count = [&](const std::string& sql) {
    RecordStream st = repo.query_sql(sql);
    DataRecord r;
    EXPECT_TRUE(st.next(r));
    return r.values.at(0).get<int64_t>();
  };
  EXPECT_EQ(sql_count("SELECT count(*) FROM events WHERE ts >= '2022-02-01' AND ts < '2022-02-20'"),
            repo.count_all(schema_, one));
  const std::string sql_msg = error_of([&] {
    sql_count("SELECT count(*) FROM events WHERE ts >= '2022-02-01' AND ts < '2022-03-20'");
  });
  EXPECT_NE(sql_msg.find("reads 2 partitions"), std::string::npos) << sql_msg;
  EXPECT_NE(sql_msg.find("enable_cross_partition_queries"), std::string::npos) << sql_msg;
}

// A table is opened as it is stored or not at all: with columns none of its partitions has, it is
// refused every time it is asked (the first refusal left its files attached, and the next load
// then failed to attach them and flagged them otherwise, so it was not refused again), leaving
// nothing attached; with another strategy too. A statement that only names such a table in a
// literal still runs; one that reads it says why it is missing. A DATE far past year 9999 is
// refused by name (its microseconds overflowed into a valid year).
TEST_F(PartitionedTest, ATableOfOtherColumnsOrStrategyIsRefusedEveryTimeAndLeavesNothingAttached) {
  fill_36_months();
  const Schema other("other", {{"id", "BIGINT"}, {"d", "DATE"}}, "d", "id");
  {
    PartitionedDataRepository yearly(test_config(path("parts"), PartitionStrategy::kYearly));
    yearly.create_batch(other, {DataRecord{{Value(int64_t{1}), Value(*parse_date("2021-03-04"))}}});
  }
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
  const Schema wrong("events", {{"id", "VARCHAR"}, {"ts", "TIMESTAMP"}, {"x", "INTEGER"}}, "ts",
                     "id");
  for (int attempt = 0; attempt < 3; ++attempt) {
    ErrorCode code = ErrorCode::kDuckDb;
    const std::string msg = error_of([&] { repo.initialize(wrong); }, &code);
    EXPECT_EQ(code, ErrorCode::kConflict) << msg;
    EXPECT_NE(msg.find("is stored with other columns than those given"), std::string::npos) << msg;
    EXPECT_EQ(repo.counters().partitions_attached_now, 0);
  }
  EXPECT_EQ(repo.count_all(schema_), 36 * 50);
  ErrorCode code = ErrorCode::kDuckDb;
  const std::string strategy = error_of([&] { repo.initialize(other); }, &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << strategy;
  EXPECT_NE(strategy.find("is partitioned yearly (1 partition file(s)), but it is opened with the "
                          "monthly strategy"),
            std::string::npos)
      << strategy;
  {
    RecordStream st = repo.query_sql("SELECT count(*) FROM events WHERE name <> 'other'");
    DataRecord r;
    ASSERT_TRUE(st.next(r));
  }
  const std::string reads = error_of([&] { repo.query_sql("SELECT count(*) FROM other"); });
  EXPECT_NE(reads.find("is partitioned yearly"), std::string::npos) << reads;
  // A DATE past int64 microseconds (year ~586,000) is refused, not wrapped into a valid year.
  const Schema dated("dated", {{"id", "BIGINT"}, {"d", "DATE"}}, "d", "id");
  const std::string far = error_of([&] {
    repo.create_batch(dated, {DataRecord{{Value(int64_t{1}), Value(Date{213523706})}}});
  });
  EXPECT_NE(far.find("outside the supported partition years"), std::string::npos) << far;
}

TEST_F(PartitionedTest, ForeignAndDamagedFilesAreNamedAndIsolated) {
  fill_36_months();
  // A DuckDB file of another table, named like a partition of 2022-05.
  std::filesystem::remove(path("parts/events/partition_2022_05.duckdb"));
  {
    duck::Database db = duck::Database::open(path("parts/events/partition_2022_05.duckdb"));
    db.connect().exec("CREATE TABLE other(x INTEGER); INSERT INTO other VALUES (1)");
  }
  // A truncated partition.
  std::filesystem::resize_file(path("parts/events/partition_2023_02.duckdb"), 5000);
  // A file that is not named like a partition at all, and a yearly name in a monthly store.
  { std::ofstream(path("parts/events/notes.duckdb")) << "hello"; }
  std::filesystem::copy_file(path("parts/events/partition_2021_01.duckdb"),
                             path("parts/events/partition_2030.duckdb"));

  PartitionedDataRepository repo = open();
  DataQueryRequest fine;
  fine.filters = {{"ts", FilterOperator::kLt, Value("2022-01-01")}};
  EXPECT_EQ(repo.count_all(schema_, fine), 600) << "periods away from the damage still answer";
  DataQueryRequest may;
  may.filters = {{"ts", FilterOperator::kGte, Value("2022-05-01")},
                 {"ts", FilterOperator::kLt, Value("2022-06-01")}};
  ErrorCode code{};
  std::string msg = error_of([&] { repo.get_all(schema_, may); }, &code);
  EXPECT_EQ(code, ErrorCode::kCorruption);
  EXPECT_NE(msg.find("partition_2022_05.duckdb"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a duckpart partition"), std::string::npos) << msg;
  DataQueryRequest feb;
  feb.filters = {{"ts", FilterOperator::kGte, Value("2023-02-10")},
                 {"ts", FilterOperator::kLt, Value("2023-02-11")}};
  msg = error_of([&] { repo.count_all(schema_, feb); });
  EXPECT_NE(msg.find("partition_2023_02.duckdb"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] {
              repo.count_all(schema_, where({{"ts", FilterOperator::kGte, Value("2025-01-01")}}));
            }).find("named for the yearly strategy"),
            std::string::npos);
  // A full scan must not silently skip damaged partitions.
  EXPECT_NE(error_of([&] {
              repo.count_all(schema_, where({{"qty", FilterOperator::kGte, Value(0)}}));
            }),
            "");
  const auto stats = repo.get_partition_statistics();
  const auto& s = stats.schemas.at(0);
  int problems = 0;
  for (const auto& p : s.partitions) problems += p.problem.empty() ? 0 : 1;
  EXPECT_EQ(problems, 3);  // 2022_05 foreign, 2023_02 truncated, 2030 wrong strategy
  ASSERT_EQ(s.problems.size(), 1u);
  EXPECT_NE(s.problems[0].find("notes.duckdb"), std::string::npos);
  // SQL: the same isolation — pruned statements answer, one that needs the file names it.
  {
    RecordStream ok = repo.query_sql("SELECT count(*) FROM events WHERE ts < '2022-01-01'");
    DataRecord r;
    ASSERT_TRUE(ok.next(r));
    EXPECT_EQ(r.values[0].get<int64_t>(), 600);
  }
  msg = error_of([&] {
    repo.query_sql("SELECT sum(qty) FROM events WHERE ts::DATE = '2023-02-10'")
        .for_each([](const DataRecord&) { return true; });
  });
  EXPECT_NE(msg.find("partition_2023_02.duckdb"), std::string::npos) << msg;
  // Writing into a damaged period is refused with the file's name; other periods take writes.
  std::mt19937_64 rng(1);
  auto bad = random_wide_rows(rng, 3, date_from_civil(2023, 2, 1), date_from_civil(2023, 2, 28));
  EXPECT_NE(error_of([&] { repo.create_batch(schema_, bad); }).find("partition_2023_02.duckdb"),
            std::string::npos);
}

TEST_F(PartitionedTest, FileLockedByAnotherProcessIsNamed) {
  fill_36_months();
  const std::string file = path("parts/events/partition_2022_07.duckdb");
  ChildProcess holder({DUCKPART_LOCK_HELPER, file});
  ASSERT_EQ(holder.line(), "locked");
  PartitionedDataRepository repo = open();
  DataQueryRequest q;
  q.filters = {{"ts", FilterOperator::kGte, Value("2022-07-01")},
               {"ts", FilterOperator::kLt, Value("2022-08-01")}};
  ErrorCode code{};
  const std::string msg = error_of([&] { repo.get_all(schema_, q); }, &code);
  EXPECT_EQ(code, ErrorCode::kLocked) << msg;
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_NE(msg.find("another process"), std::string::npos) << msg;
  holder.kill();
  EXPECT_EQ(repo.count_all(schema_, q), 50) << "usable again once the other process is gone";
}

// A writer in another process holds a partition it changed since the catalog was written: the
// table must still open (it failed with "locked" for every request), requests that do not need
// that partition answer, those that need it fail naming it, and it is read once it is free.
TEST_F(PartitionedTest, APartitionLockedAndChangedSinceTheCatalogFailsOnlyRequestsThatNeedIt) {
  fill_36_months();
  const std::string file = path("parts/events/partition_2022_07.duckdb");
  std::string backup;
  {
    PartitionedDataRepository repo = open_direct();
    backup = repo.backup_partition(schema_, "partition_2022_07", path("bk")).backup_file;
  }
  ChildProcess holder({DUCKPART_LOCK_HELPER, file});
  ASSERT_EQ(holder.line(), "locked");
  std::filesystem::last_write_time(file, std::filesystem::file_time_type::clock::now() +
                                             std::chrono::seconds(5));  // changed since
  const Value absent("018f0000-0000-7000-8000-000000000000");
  auto month = [](const char* from, const char* to) {
    return where(
        {{"ts", FilterOperator::kGte, Value(from)}, {"ts", FilterOperator::kLt, Value(to)}});
  };
  for (const bool read_only : {true, false}) {
    SCOPED_TRACE(read_only ? "read-only" : "writable");
    PartitionedRepositoryOptions o;
    o.read_only = read_only;
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly), o);
    EXPECT_EQ(repo.count_all(schema_, month("2022-06-01", "2022-07-01")), 50);
    EXPECT_EQ(repo.get_all(schema_, month("2023-01-01", "2023-02-01")).total, 50);
    ErrorCode code{};
    const std::string msg =
        error_of([&] { repo.count_all(schema_, month("2022-07-01", "2022-08-01")); }, &code);
    EXPECT_EQ(code, ErrorCode::kLocked) << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    code = {};
    error_of([&] { repo.count_all(schema_); }, &code);
    EXPECT_EQ(code, ErrorCode::kLocked) << "the whole table needs it";
    const SchemaStatistics st = repo.table_statistics(schema_);
    EXPECT_EQ(st.partitions.size(), 36u);
    for (const auto& p : st.partitions)
      EXPECT_EQ(p.locked, p.name == "partition_2022_07") << p.name;
    // An id lookup cannot rule the held partition out: "locked", not "damaged".
    code = {};
    error_of([&] { repo.get_by_id(schema_, absent); }, &code);
    EXPECT_EQ(code, ErrorCode::kLocked);
    {
      // Lookups on several threads at once, while the retry of the held file rewrites its error.
      std::atomic<int> locked{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
          for (int i = 0; i < 20; ++i) {
            ErrorCode c{};
            error_of([&] { repo.get_by_id(schema_, absent); }, &c);
            if (c == ErrorCode::kLocked) ++locked;
            if (i % 5 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(30));
          }
        });
      }
      for (auto& t : threads) t.join();
      EXPECT_EQ(locked.load(), 80);
    }
    if (!read_only) {
      // A bulk load (the SQL path of migrate and import) with rows for the held partition fails
      // naming it and writes nothing; one for another partition is written.
      auto rows_of = [](const char* day, int n) {
        return fmt::format(
            "SELECT uuid() AS id, TIMESTAMP '{0}' AS ts, true AS flag, CAST(1 AS SMALLINT) AS "
            "small, 1 AS qty, CAST(1 AS BIGINT) AS big, 1.5 AS ratio, CAST(2.5 AS DECIMAL(12,3)) "
            "AS price, 'bulk' AS name, DATE '{0}' AS day, NULL::UUID AS ref FROM range({1})",
            day, n);
      };
      code = {};
      const std::string b = error_of(
          [&] {
            repo.create_batch_from_query(
                schema_, rows_of("2022-08-03", 4) + " UNION ALL " + rows_of("2022-07-03", 4));
          },
          &code);
      EXPECT_EQ(code, ErrorCode::kLocked) << b;
      EXPECT_NE(b.find("partition_2022_07"), std::string::npos) << b;
      EXPECT_EQ(repo.count_all(schema_, month("2022-08-01", "2022-09-01")), 50);
      EXPECT_EQ(repo.create_batch_from_query(schema_, rows_of("2022-08-03", 4)).rows_written, 4);
      EXPECT_EQ(repo.count_all(schema_, month("2022-08-01", "2022-09-01")), 54);
      // Nothing replaces or deletes a file another process holds.
      code = {};
      error_of([&] { repo.restore_partition(schema_, backup); }, &code);
      EXPECT_EQ(code, ErrorCode::kLocked);
      code = {};
      error_of([&] { repo.drop_partition(schema_, "partition_2022_07"); }, &code);
      EXPECT_EQ(code, ErrorCode::kLocked);
      EXPECT_TRUE(std::filesystem::exists(file));
      std::mt19937_64 rng(5);
      auto rows =
          random_wide_rows(rng, 3, date_from_civil(2022, 7, 1), date_from_civil(2022, 7, 28));
      code = {};
      const std::string w = error_of(
          [&] {
            repo.create_batch(schema_, rows);
            repo.flush();
          },
          &code);
      EXPECT_EQ(code, ErrorCode::kLocked) << w;
    }
  }
  // One instance that loaded the table while the file was held reads it once it is free.
  PartitionedRepositoryOptions ro;
  ro.read_only = true;
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly), ro);
  ErrorCode code{};
  error_of([&] { repo.get_by_id(schema_, absent); }, &code);
  EXPECT_EQ(code, ErrorCode::kLocked);
  holder.kill();
  // (A held file is tried at most every 100 ms.)
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_FALSE(repo.get_by_id(schema_, absent).has_value());
  EXPECT_EQ(repo.count_all(schema_, month("2022-07-01", "2022-08-01")), 50);
  EXPECT_EQ(repo.count_all(schema_), 36 * 50 + 4);  // and the bulk load's 4 rows of 2022_08
}

TEST_F(PartitionedTest, OneDirectoryOneRepositoryPerProcess) {
  PartitionedDataRepository a = open();
  ErrorCode code{};
  const std::string msg = error_of([&] { open(); }, &code);
  EXPECT_EQ(code, ErrorCode::kLocked);
  EXPECT_NE(msg.find("already open in this process"), std::string::npos);
}

TEST_F(PartitionedTest, SqlIsReadOnlyAndPrunes) {
  const auto all = fill_36_months();
  PartitionedDataRepository repo = open();
  for (const char* bad :
       {"DELETE FROM events", "INSERT INTO events SELECT * FROM events",
        "UPDATE events SET qty = 0", "CREATE TABLE x AS SELECT * FROM events", "DROP TABLE events",
        "COPY events TO '/tmp/duckpart_sql_copy.csv'", "ATTACH ':memory:' AS m",
        "SELECT 1; DELETE FROM events", "", "SELEC 1", "CHECKPOINT", "SET threads = 1"}) {
    ErrorCode code{};
    const std::string msg = error_of([&] { repo.query_sql(bad); }, &code);
    EXPECT_EQ(code, ErrorCode::kInvalidArgument) << bad << ": " << msg;
    EXPECT_FALSE(msg.empty()) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/duckpart_sql_copy.csv"));
  EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(all.size())) << "nothing was changed";
  // A three-month aggregate reads three files; a statement without a time predicate reads all.
  RecordStream q = repo.query_sql(
      "SELECT count(*), sum(qty) FROM events WHERE ts BETWEEN '2022-03-01' AND '2022-05-31 "
      "23:59:59.999999'");
  DataRecord r;
  ASSERT_TRUE(q.next(r));
  EXPECT_EQ(r.values[0].get<int64_t>(), 150);
  EXPECT_EQ(q.stats().partitions_scanned, 3);
  EXPECT_EQ(q.stats().partitions_total, 36);
  RecordStream full = repo.query_sql("SELECT count(*) FROM events WHERE qty >= 0 OR qty IS NULL");
  ASSERT_TRUE(full.next(r));
  EXPECT_EQ(r.values[0].get<int64_t>(), static_cast<int64_t>(all.size()));
  EXPECT_EQ(full.stats().partitions_scanned, 36);
  // Types outside the record model come back as text.
  RecordStream lists = repo.query_sql(
      "SELECT list(qty ORDER BY qty) AS l, INTERVAL 1 DAY AS i FROM events WHERE qty = 5 GROUP BY "
      "ALL;");
  ASSERT_EQ(lists.columns(), (std::vector<std::string>{"l", "i"}));
  int groups = 0;
  for (DataRecord row; lists.next(row); ++groups) {
    EXPECT_EQ(row.values[0].get<std::string>().front(), '[');
    EXPECT_EQ(row.values[1].get<std::string>(), "1 day");
  }
  EXPECT_LE(groups, 1);
}

TEST_F(PartitionedTest, ReadOnlySqlJoinsTablesOfDifferentStrategies) {
  fill_36_months();  // events, monthly, ids assigned by the store
  std::vector<DataRecord> all;
  {
    PartitionedDataRepository repo = open();
    DataQueryRequest q;
    q.limit = 100000;
    all = repo.get_all(schema_, q).items;
  }
  ASSERT_EQ(all.size(), 36u * 50);
  const Schema yearly_schema("yearly_events",
                             {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"qty", "INTEGER"}}, "ts", "id");
  std::vector<DataRecord> yearly_rows;
  for (const auto& r : all) {
    yearly_rows.push_back(DataRecord{{r.values[0], r.values[1], r.values[4]}});
  }
  {
    PartitionedDataRepository y(test_config(path("parts"), PartitionStrategy::kYearly));
    y.create_batch(yearly_schema, yearly_rows);
  }
  const std::string join =
      "SELECT count(*), sum(y.qty) FROM events e JOIN yearly_events y USING (id) WHERE e.ts >= "
      "'2022-01-01' AND y.ts >= '2022-01-01'";
  int64_t want_n = 0, want_q = 0;
  for (const auto& r : all) {
    if (r.values[1].to_string() >= "2022-01-01" && !r.values[4].is_null()) {
      ++want_n;
      want_q += r.values[4].get<int64_t>();
    } else if (r.values[1].to_string() >= "2022-01-01") {
      ++want_n;
    }
  }
  ASSERT_GT(want_n, 100);
  PartitionedRepositoryOptions o;
  o.read_only = true;
  o.tables_keep_their_strategy = true;
  {
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly), o);
    RecordStream q = repo.query_sql(join);
    DataRecord r;
    ASSERT_TRUE(q.next(r));
    EXPECT_EQ(r.values[0].get<int64_t>(), want_n);
    EXPECT_EQ(r.values[1].to_string(), std::to_string(want_q));
    EXPECT_EQ(repo.count_all(yearly_schema), static_cast<int64_t>(all.size()));
    EXPECT_EQ(repo.table_statistics(yearly_schema).partitions.size(), 3u);  // 2021..2023
    EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(all.size()));
  }
  {
    // Without the option the yearly table is refused, and a statement reading it says why.
    PartitionedRepositoryOptions strict;
    strict.read_only = true;
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly), strict);
    ErrorCode code{};
    const std::string msg = error_of([&] { repo.query_sql(join); }, &code);
    EXPECT_EQ(code, ErrorCode::kConflict) << msg;
    EXPECT_NE(msg.find("partitioned yearly"), std::string::npos) << msg;
  }
  // A writable repository with the option writes each table with its own strategy (it used to be
  // refused: writes routed by the configured one), by every write path, and restores its backups.
  o.read_only = false;
  auto at = [](int y, int m, int d) {
    return Value(Timestamp{int64_t{date_from_civil(y, m, d).days} * kMicrosPerDay});
  };
  {
    PartitionedDataRepository w(test_config(path("parts"), PartitionStrategy::kMonthly), o);
    EXPECT_EQ(w.strategy_of(yearly_schema), PartitionStrategy::kYearly);
    EXPECT_EQ(w.strategy_of(schema_), PartitionStrategy::kMonthly);
    w.create_batch(yearly_schema, {DataRecord{{Value{}, at(2024, 2, 10), Value(int64_t{5})}}});
    w.create_batch_from_query(
        yearly_schema,
        "SELECT uuid() AS id, TIMESTAMP '2024-07-01 12:00:00' AS ts, 9 AS qty "
        "UNION ALL SELECT uuid(), TIMESTAMP '2025-01-01 00:00:00', 1");
    std::mt19937_64 rng(5);
    auto more =
        random_wide_rows(rng, 10, date_from_civil(2024, 1, 1), date_from_civil(2024, 1, 31));
    for (auto& r : more) r.values[0] = Value{};
    w.create_batch(schema_, more);
    EXPECT_EQ(w.count_all(yearly_schema), static_cast<int64_t>(all.size()) + 3);
    EXPECT_EQ(w.count_all(schema_), static_cast<int64_t>(all.size()) + 10);
    const auto b = w.backup_partition(yearly_schema, "partition_2024", path("bk"));
    EXPECT_EQ(b.rows, 2);
    w.restore_partition(yearly_schema, b.backup_file);
    EXPECT_EQ(w.count_all(yearly_schema), static_cast<int64_t>(all.size()) + 3);
  }
  EXPECT_TRUE(std::filesystem::exists(path("parts/yearly_events/partition_2024.duckdb")));
  EXPECT_TRUE(std::filesystem::exists(path("parts/yearly_events/partition_2025.duckdb")));
  EXPECT_FALSE(std::filesystem::exists(path("parts/yearly_events/partition_2024_02.duckdb")));
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2024_01.duckdb")));
  {
    // Each table opens as before with its own strategy: its catalog and files agree.
    PartitionedDataRepository y(test_config(path("parts"), PartitionStrategy::kYearly));
    EXPECT_EQ(y.count_all(yearly_schema), static_cast<int64_t>(all.size()) + 3);
    const auto stats = y.table_statistics(yearly_schema);
    EXPECT_EQ(stats.partitions.size(), 5u);  // 2021..2025
    for (const auto& p : stats.partitions) EXPECT_TRUE(p.problem.empty()) << p.name << p.problem;
  }
  PartitionedDataRepository m = open();
  EXPECT_EQ(m.count_all(schema_), static_cast<int64_t>(all.size()) + 10);
}

TEST_F(PartitionedTest, RepeatedSqlReusesItsAnalysisAndSeesNewData) {
  const auto all = fill_36_months();
  PartitionedDataRepository repo = open();
  auto count = [&](const std::string& sql, int64_t* scanned = nullptr) {
    RecordStream q = repo.query_sql(sql);
    DataRecord r;
    EXPECT_TRUE(q.next(r)) << sql;
    if (scanned) *scanned = q.stats().partitions_scanned;
    return r.values.at(0).get<int64_t>();
  };
  const std::string sql =
      "SELECT count(*) FROM events WHERE ts >= '2023-11-01' AND ts < '2024-03-01'";
  int64_t scanned = 0;
  EXPECT_EQ(count(sql, &scanned), 100);
  EXPECT_EQ(scanned, 2);
  EXPECT_EQ(repo.counters().sql_plans_reused, 0);
  EXPECT_EQ(count(sql, &scanned), 100);
  EXPECT_EQ(scanned, 2);
  EXPECT_EQ(repo.counters().sql_plans_reused, 1);
  // A partition created after the statement was analysed is read by the next run of it.
  std::mt19937_64 rng(3);
  auto jan = random_wide_rows(rng, 7, date_from_civil(2024, 1, 1), date_from_civil(2024, 1, 31));
  for (auto& r : jan) r.values[0] = Value{};
  repo.create_batch(schema_, jan);
  EXPECT_EQ(count(sql, &scanned), 107);
  EXPECT_EQ(scanned, 3);
  EXPECT_EQ(repo.counters().sql_plans_reused, 2);
  // Nothing in range: the reused analysis still answers through the empty stand-in.
  const std::string none = "SELECT count(*) FROM events WHERE ts >= '2030-01-01'";
  EXPECT_EQ(count(none, &scanned), 0);
  EXPECT_EQ(count(none, &scanned), 0);
  EXPECT_EQ(scanned, 0);
  EXPECT_EQ(repo.counters().sql_plans_reused, 3);
  // Statements whose filters change with time are analysed every run.
  const std::string moving = "SELECT count(*) FROM events WHERE ts < now()";
  EXPECT_EQ(count(moving), static_cast<int64_t>(all.size()) + 7);
  EXPECT_EQ(count(moving), static_cast<int64_t>(all.size()) + 7);
  EXPECT_EQ(repo.counters().sql_plans_reused, 3);
  EXPECT_TRUE(sql_filters_are_stable(sql));
  for (const char* v : {"SELECT 1 WHERE ts < NOW()", "SELECT 1 WHERE ts::DATE = current_date",
                        "SELECT 1 WHERE ts > CURRENT_TIMESTAMP - INTERVAL 1 DAY", "SELECT random()",
                        "SELECT 1 WHERE ts > today() - 3", "SELECT get_current_timestamp()"}) {
    EXPECT_FALSE(sql_filters_are_stable(v)) << v;
  }
  EXPECT_TRUE(sql_filters_are_stable("SELECT known_random_col FROM events WHERE nowhere = 1"));
}

// Reused query_sql sessions (connection, views, prepared statements) across everything that
// changes which files back a table: LRU detach/re-attach, compaction's file swap, dropped
// partitions, and two open streams of one statement at once.
TEST_F(PartitionedTest, ReusedSqlSessionsFollowDetachCompactionAndDrops) {
  fill_36_months();
  PartitionedDataRepository repo = open(/*max_in_memory=*/4);
  auto count = [&](const std::string& sql) {
    RecordStream q = repo.query_sql(sql);
    DataRecord r;
    EXPECT_TRUE(q.next(r)) << sql;
    return r.values.at(0).get<int64_t>();
  };
  const std::string a =
      "SELECT count(*) FROM events WHERE ts >= '2021-01-01' AND ts < '2021-04-01'";
  const std::string b =
      "SELECT count(*) FROM events WHERE ts >= '2022-01-01' AND ts < '2022-04-01'";
  for (int round = 0; round < 3; ++round) {  // a and b cannot both stay attached (4 files max)
    EXPECT_EQ(count(a), 150);
    EXPECT_EQ(count(b), 150);
    EXPECT_EQ(count(a), 150);
  }
  const int64_t detached = repo.counters().partitions_detached;
  EXPECT_GT(detached, 0);
  // Two streams of the same statement open at once get separate sessions.
  {
    RecordStream s1 = repo.query_sql(a);
    RecordStream s2 = repo.query_sql(a);
    DataRecord r1, r2;
    ASSERT_TRUE(s2.next(r2));
    ASSERT_TRUE(s1.next(r1));
    EXPECT_EQ(r1.values[0].get<int64_t>(), 150);
    EXPECT_EQ(r2.values[0].get<int64_t>(), 150);
  }
  // Compaction swaps the file under the same name; new rows arrive; a month is dropped.
  repo.compact_partition(schema_, "partition_2021_02");
  EXPECT_EQ(count(a), 150);
  std::mt19937_64 rng(5);
  auto more = random_wide_rows(rng, 9, date_from_civil(2021, 3, 1), date_from_civil(2021, 3, 31));
  for (auto& r : more) r.values[0] = Value{};
  repo.create_batch(schema_, more);
  EXPECT_EQ(count(a), 159);
  repo.drop_partition(schema_, "partition_2021_01");
  EXPECT_EQ(count(a), 109);
  EXPECT_EQ(count(b), 150);
  EXPECT_EQ(count(a), 109);
  EXPECT_GT(repo.counters().sql_plans_reused, 10);
}

// count_all, get_all and stream_query_results keep their UNION ALL statements prepared on the
// pooled connections (keyed by the partitions' ATTACH generations): repeated calls must still see
// new rows, swapped files, dropped months and partitions detached and attached again.
TEST_F(PartitionedTest, RepeatedFilteredReadsFollowWritesCompactionDetachAndDrops) {
  std::vector<DataRecord> all = fill_36_months();
  const std::size_t qty = 4, ts = 1;
  auto expected = [&](int from_year) {
    int64_t n = 0;
    for (const auto& r : all) {
      const Value& q = r.values[qty];
      if (q.is_null() || q.get<int64_t>() < 500) continue;
      if (r.values[ts].get<Timestamp>().micros <
          int64_t{date_from_civil(from_year, 1, 1).days} * kMicrosPerDay) {
        continue;
      }
      ++n;
    }
    return n;
  };
  auto request = [&](int from_year) {
    DataQueryRequest q = where(
        {QueryFilter("qty", FilterOperator::kGte, Value(int64_t{500})),
         QueryFilter(
             "ts", FilterOperator::kGte,
             Value(Timestamp{int64_t{date_from_civil(from_year, 1, 1).days} * kMicrosPerDay}))});
    q.limit = 1'000'000;
    return q;
  };
  auto check = [&](PartitionedDataRepository& repo, const std::string& when) {
    SCOPED_TRACE(when);
    for (int year : {2021, 2023, 2021}) {  // 36 and 12 months: more than 4 stay attached
      const DataQueryRequest q = request(year);
      const int64_t want = expected(year);
      EXPECT_EQ(repo.count_all(schema_, q), want) << year;
      PaginatedResponse page = repo.get_all(schema_, q);
      EXPECT_EQ(page.total, want) << year;
      EXPECT_EQ(static_cast<int64_t>(page.items.size()), want) << year;
      RecordStream s = repo.stream_query_results(schema_, q);
      int64_t streamed = 0;
      DataRecord r;
      while (s.next(r)) ++streamed;
      EXPECT_EQ(streamed, want) << year;
    }
  };
  ASSERT_GT(expected(2021), 600);
  // With every partition attached the statements are reused; with 4 they are attached anew.
  for (const int limit : {64, 4}) {
    SCOPED_TRACE(limit);
    PartitionedDataRepository repo = open(limit);
    check(repo, "first reads");
    check(repo, "the same reads again");
    EXPECT_EQ(repo.counters().partitions_detached > 0, limit == 4);

    const unsigned month = limit == 64 ? 5 : 7;
    std::mt19937_64 rng(limit);
    auto more = random_wide_rows(rng, 40, date_from_civil(2023, month, 1),
                                 date_from_civil(2023, month, 28));
    for (auto& r : more) r.values[0] = Value{};
    repo.create_batch(schema_, more);
    all.insert(all.end(), more.begin(), more.end());
    check(repo, "after new rows");

    const std::string name = fmt::format("partition_2023_{:02}", month);
    repo.compact_partition(schema_, name);
    check(repo, "after compacting " + name);

    repo.drop_partition(schema_, name);
    std::erase_if(all, [&](const DataRecord& r) {
      const int64_t us = r.values[ts].get<Timestamp>().micros;
      return us >= int64_t{date_from_civil(2023, month, 1).days} * kMicrosPerDay &&
             us < int64_t{date_from_civil(2023, month + 1, 1).days} * kMicrosPerDay;
    });
    check(repo, "after dropping " + name);
  }
}

// DuckDB plans a statement without parameters once, with the statistics of that moment: a filter
// the partition's min/max rules out becomes an empty result, one it always satisfies is dropped,
// and a later INSERT does not re-plan it (DuckDB issue 23704). Cached statements (count_all,
// get_all, streams, query_sql sessions) must still see rows written outside those statistics.
TEST_F(PartitionedTest, CachedStatementsSeeRowsOutsideThePartitionsStatistics) {
  fill_36_months();  // qty in [0, 1000) or NULL
  for (const bool direct : {false, true}) {
    SCOPED_TRACE(direct ? "direct writes" : "buffered writes");
    PartitionedDataRepository repo = direct ? open_direct() : open(/*max_in_memory=*/64);
    const int64_t big = direct ? 7000 : 5000;   // above every stored qty
    const int64_t negative = direct ? -7 : -5;  // below every stored qty
    auto request = [](FilterOperator op, int64_t v) {
      DataQueryRequest q = where({QueryFilter("qty", op, Value(v))});
      q.limit = 1'000'000;
      return q;
    };
    auto counts = [&](FilterOperator op, int64_t v) {
      const DataQueryRequest q = request(op, v);
      const int64_t n = repo.count_all(schema_, q);
      PaginatedResponse page = repo.get_all(schema_, q);
      EXPECT_EQ(page.total, n);
      EXPECT_EQ(static_cast<int64_t>(page.items.size()), n);
      RecordStream st = repo.stream_query_results(schema_, q);
      int64_t streamed = 0;
      DataRecord r;
      while (st.next(r)) ++streamed;
      EXPECT_EQ(streamed, n);
      RecordStream sql = repo.query_sql(fmt::format("SELECT count(*) FROM events WHERE qty {} {}",
                                                    op == FilterOperator::kGte ? ">=" : "<", v));
      EXPECT_TRUE(sql.next(r));
      EXPECT_EQ(r.values.at(0).get<int64_t>(), n);
      return n;
    };
    // Prepared and run (twice: the second run takes the cached statements) before the write.
    const int64_t above = counts(FilterOperator::kGte, big);
    EXPECT_EQ(counts(FilterOperator::kGte, big), above);
    const int64_t below = counts(FilterOperator::kLt, 0);
    EXPECT_EQ(counts(FilterOperator::kLt, 0), below);
    const int64_t at_least_zero = counts(FilterOperator::kGte, 0);
    EXPECT_EQ(counts(FilterOperator::kGte, 0), at_least_zero);
    // Rows into existing partitions, outside their qty statistics.
    std::mt19937_64 rng(direct ? 3 : 4);
    auto rows = random_wide_rows(rng, 6, date_from_civil(2022, 3, 1), date_from_civil(2022, 3, 31));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      rows[i].values[0] = Value{};
      rows[i].values[4] = Value(i % 2 == 0 ? big : negative);
    }
    repo.create_batch(schema_, rows);
    EXPECT_EQ(counts(FilterOperator::kGte, big), above + 3);
    EXPECT_EQ(counts(FilterOperator::kLt, 0), below + 3);
    EXPECT_EQ(counts(FilterOperator::kGte, 0), at_least_zero + 3);
  }
}

// Cleanup drops expired partitions on several threads (no archive). A partition it cannot drop
// (a running stream pins it) fails the call by name; every partition is then either gone or whole,
// and the next run finishes the job.
TEST_F(PartitionedTest, CleanupOnThreadsStopsAtAPinnedPartitionAndLeavesEveryFileWhole) {
  const std::vector<DataRecord> all = fill_36_months();
  std::map<std::string, int64_t> rows_of;  // partition name -> rows
  for (const auto& r : all) {
    const Date d = date_of(r.values[1].get<Timestamp>());
    ++rows_of[partition_key_of(PartitionStrategy::kMonthly, d).name()];
  }
  PartitionedDataRepository repo = open(/*max_in_memory=*/64);
  PartitionUtilities util(repo);
  const std::string dir = path("parts") + "/events/";
  auto count = [&] { return repo.count_all(schema_); };
  auto expected = [&] {
    int64_t n = 0;
    for (const auto& [name, rows] : rows_of) {
      if (std::filesystem::exists(dir + name + ".duckdb")) n += rows;
    }
    return n;
  };
  {
    DataQueryRequest q = where(
        {QueryFilter("ts", FilterOperator::kGte,
                     Value(Timestamp{int64_t{date_from_civil(2022, 6, 1).days} * kMicrosPerDay})),
         QueryFilter("ts", FilterOperator::kLt,
                     Value(Timestamp{int64_t{date_from_civil(2022, 7, 1).days} * kMicrosPerDay}))});
    RecordStream pinning = repo.stream_query_results(schema_, q);  // pins partition_2022_06
    DataRecord r;
    ASSERT_TRUE(pinning.next(r));
    ErrorCode code{};
    const std::string err =
        error_of([&] { util.cleanup(schema_, 0, date_from_civil(2023, 1, 1), false); }, &code);
    EXPECT_EQ(code, ErrorCode::kConflict) << err;
    EXPECT_NE(err.find("partition_2022_06"), std::string::npos) << err;
    EXPECT_TRUE(std::filesystem::exists(dir + "partition_2022_06.duckdb"));
    // The error says which partitions are gone and which are left.
    EXPECT_NE(err.find(" of 24 expired partition(s) ("), std::string::npos) << err;
    const std::size_t left_at = err.find("not removed: ");
    ASSERT_NE(left_at, std::string::npos) << err;
    for (const auto& [name, rows] : rows_of) {
      if (name >= "partition_2023") continue;
      const std::size_t at = err.rfind(name);
      ASSERT_NE(at, std::string::npos) << name << ": " << err;
      EXPECT_EQ(at > left_at, std::filesystem::exists(dir + name + ".duckdb"))
          << name << ": " << err;
    }
    while (pinning.next(r)) {
    }
  }
  // Whatever was dropped is gone from the store and the disk; the rest reads whole.
  EXPECT_EQ(count(), expected());
  const auto stats =
      repo.get_partition_statistics();  // kept: a range-for over a temporary's member
  for (const auto& p : stats.schemas.at(0).partitions) {
    EXPECT_TRUE(std::filesystem::exists(p.file)) << p.name;
    EXPECT_EQ(p.rows, rows_of.at(p.name)) << p.name;
  }
  const CleanupResult again = util.cleanup(schema_, 0, date_from_civil(2023, 1, 1), false);
  EXPECT_FALSE(again.removed.empty());
  for (const auto& [name, rows] : rows_of) {
    EXPECT_EQ(std::filesystem::exists(dir + name + ".duckdb"), name >= "partition_2023") << name;
  }
  EXPECT_EQ(count(), expected());
  EXPECT_EQ(count(), 12 * 50);
}

TEST_F(PartitionedTest, CompactSortsAtomicallyAndKeepsEveryRow) {
  const auto all = fill_36_months();
  PartitionedDataRepository repo = open_direct();
  // More unsorted rows into one month, written in small batches (many row groups and commits).
  std::mt19937_64 rng(3);
  for (int b = 0; b < 20; ++b) {
    auto rows =
        random_wide_rows(rng, 40, date_from_civil(2022, 7, 1), date_from_civil(2022, 7, 31));
    repo.create_batch(schema_, rows);
  }
  const std::string expect_rows = "850";
  auto checksum_of = [&](const std::string& name) {
    for (const auto& c : repo.checksum_partitions(schema_)) {
      if (c.name == name) return std::to_string(c.rows) + "/" + c.checksum;
    }
    return std::string();
  };
  const std::string before = checksum_of("partition_2022_07");
  ASSERT_EQ(before.substr(0, before.find('/')), expect_rows);
  // Each commit's rows are stored in time order: the 21 commits leave 20 descents at most.
  EXPECT_GE(repo.unsorted_pairs(schema_, "partition_2022_07"), 10);
  EXPECT_LE(repo.unsorted_pairs(schema_, "partition_2022_07"), 20);
  PartitionUtilities util(repo);
  auto finding = [&](const HealthReport& h) {
    for (const auto& f : h.findings) {
      if (f.partition == "partition_2022_07" && f.problem.find("not sorted") != std::string::npos)
        return true;
    }
    return false;
  };
  EXPECT_TRUE(finding(util.health_report(schema_)));

  // Readers keep counting while the partition is rewritten: always the full count, never a mix.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> bad{0}, reads{0};
  std::thread reader([&] {
    while (!stop) {
      const int64_t n =
          repo.count_all(schema_, where({{"ts", FilterOperator::kGte, Value("2022-07-01")},
                                         {"ts", FilterOperator::kLt, Value("2022-08-01")},
                                         {"qty", FilterOperator::kGte, Value(-1000000)}}));
      const int64_t nulls =
          repo.count_all(schema_, where({{"ts", FilterOperator::kGte, Value("2022-07-01")},
                                         {"ts", FilterOperator::kLt, Value("2022-08-01")},
                                         {"qty", FilterOperator::kIsNull}}));
      if (n + nulls != 850) ++bad;
      ++reads;
    }
  });
  const auto res = repo.compact_partition(schema_, "partition_2022_07");
  stop = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0) << reads.load() << " reads";
  EXPECT_EQ(res.rows, 850);
  EXPECT_EQ(checksum_of("partition_2022_07"), before);
  EXPECT_EQ(repo.unsorted_pairs(schema_, "partition_2022_07"), 0);
  EXPECT_FALSE(finding(util.health_report(schema_)));
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/.partition_2022_07.duckdb.compact")));
  // Replay protection survives: the batch ids were copied.
  EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(all.size()) + 800);
  // Everything, again, through the utility.
  const auto rep = util.compact(schema_, "");
  EXPECT_EQ(rep.partitions.size(), 36u);
  EXPECT_EQ(repo.count_all(schema_, where({{"qty", FilterOperator::kIsNotNull}})) +
                repo.count_all(schema_, where({{"qty", FilterOperator::kIsNull}})),
            static_cast<int64_t>(all.size()) + 800);
  ErrorCode code{};
  EXPECT_NE(error_of([&] { repo.compact_partition(schema_, "partition_1999_01"); }, &code)
                .find("partition_1999_01"),
            std::string::npos);
  EXPECT_EQ(code, ErrorCode::kNotFound);
}

// A drop or a restore that comes while a compaction of the same partition waits for its readers
// must not be undone by the compaction's swap: the dropped rows came back on the next open (the
// compacted copy was renamed over the deleted file), the restored rows were replaced by the old.
TEST_F(PartitionedTest, DropAndRestoreAreNotUndoneByACompactionThatWaitedForReaders) {
  fill_36_months();
  const std::string name = "partition_2022_07";
  const std::string file = path("parts/events/" + name + ".duckdb");
  auto month = [] {
    return where({{"ts", FilterOperator::kGte, Value("2022-07-01")},
                  {"ts", FilterOperator::kLt, Value("2022-08-01")}});
  };
  std::string backup;
  {
    PartitionedDataRepository repo = open_direct();
    backup = repo.backup_partition(schema_, name, path("bk")).backup_file;
  }
  for (const bool restore : {false, true}) {
    SCOPED_TRACE(restore ? "restore" : "drop");
    const int64_t want = restore ? 50 : 0;
    const std::string staged = path("parts/events/." + name + ".duckdb.compact");
    {
      PartitionedDataRepository repo = open_direct();
      const int64_t before = repo.count_all(schema_, month());
      std::mt19937_64 rng(11);
      auto more =
          random_wide_rows(rng, 30, date_from_civil(2022, 7, 1), date_from_civil(2022, 7, 31));
      for (auto& r : more) r.values[0] = Value{};
      repo.create_batch(schema_, more);
      ASSERT_EQ(repo.count_all(schema_, month()), before + 30);
      // A stream holds the partition: the compaction copies it, then waits for the stream to end.
      std::optional<RecordStream> s(repo.stream_query_results(schema_, month()));
      DataRecord r;
      ASSERT_TRUE(s->next(r));
      std::atomic<bool> done{false};
      std::string compact_error;
      std::thread compactor([&] {
        compact_error = error_of([&] { repo.compact_partition(schema_, name); });
        done = true;
      });
      for (int i = 0; i < 3000 &&
                      !(std::filesystem::exists(staged) && !std::filesystem::exists(staged + "16"));
           ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // into its wait for readers
      EXPECT_FALSE(done.load());
      // The drop or restore comes while the compaction waits: it waits for the compaction (it
      // was refused at once before, the stream holding the partition, or undone by the swap
      // when it came just after the stream ended).
      std::string change_error;
      std::thread changer([&] {
        change_error = error_of([&] {
          if (restore) {
            repo.restore_partition(schema_, backup);
          } else {
            repo.drop_partition(schema_, name);
          }
        });
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      s.reset();  // the stream ends: the compaction swaps, then the drop or restore runs
      changer.join();
      compactor.join();
      EXPECT_EQ(change_error, "");
      EXPECT_EQ(compact_error, "");
      EXPECT_EQ(repo.count_all(schema_, month()), want) << compact_error;
      EXPECT_EQ(std::filesystem::exists(file), restore);
      EXPECT_FALSE(std::filesystem::exists(staged));
    }
    PartitionedDataRepository again = open_direct();
    EXPECT_EQ(again.count_all(schema_, month()), want) << "after reopening";
  }
}

// The SQL bulk path keeps each partition's metadata (count, min/max of time and id, used for
// pruning and id lookups) equal to what a scan of the partition gives, batch after batch.
TEST_F(PartitionedTest, BulkPathMetadataMatchesAScan) {
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "CREATE TABLE events AS SELECT uuid() AS id, TIMESTAMP '2021-01-01' + "
        "to_microseconds(CAST(hash(i) % (90 * 86400000000) AS BIGINT)) AS ts, "
        "CAST(NULL AS BOOLEAN) AS flag, CAST(i % 100 AS SMALLINT) AS small, CAST(i AS INTEGER) AS "
        "qty, i AS big, i / 3.0 AS ratio, CAST(i AS DECIMAL(12,3)) AS price, 'n' || i AS name, "
        "DATE '2020-01-01' AS day, uuid() AS ref FROM range(30000) r(i)");
  }
  PartitionedDataRepository repo = open();
  repo.attach_database(path("src.duckdb"), "src");
  for (int b = 0; b < 3; ++b) {
    repo.create_batch_from_query(
        schema_, fmt::format("SELECT * FROM src.main.events WHERE rowid >= {} AND rowid < {}",
                             b * 10000, (b + 1) * 10000));
  }
  repo.detach_database("src");
  repo.flush();
  int checked = 0;
  const StorageStatistics stats = repo.get_partition_statistics();
  for (const auto& p : stats.schemas.at(0).partitions) {
    duck::Database db = duck::Database::open(p.file, true);
    duck::Connection c = db.connect();
    EXPECT_EQ(c.query_int("SELECT CAST(m.row_count = (SELECT count(*) FROM events) AND m.min_value "
                          "= (SELECT min(ts) FROM events) AND m.max_value = (SELECT max(ts) FROM "
                          "events) AND m.min_id = (SELECT min(id)::VARCHAR FROM events) AND "
                          "m.max_id = (SELECT max(id)::VARCHAR FROM events) AS INTEGER) FROM "
                          "_duckpart_meta m"),
              1)
        << p.file;
    ++checked;
  }
  EXPECT_EQ(checked, 3);  // 2021-01 .. 2021-03 (90 days from 1 January)
}

// New partitions of a batch are copies of the store's template (docs/architecture.md, "Partition
// files from a template"): after the batch each file holds its own period, range, row count and
// bounds exactly as a partition created on its own does, and its rows are stored in time order.
TEST_F(PartitionedTest, PartitionsMadeFromTheTemplateHoldTheirOwnMetadata) {
  std::mt19937_64 rng(11);
  {
    PartitionedDataRepository repo = open_direct();
    // One month first (created on its own), then a batch over five new months (from the template).
    repo.create_batch(schema_, random_wide_rows(rng, 40, date_from_civil(2022, 1, 3),
                                                date_from_civil(2022, 1, 20)));
    const RepositoryCounters before = repo.counters();
    repo.create_batch(schema_, random_wide_rows(rng, 500, date_from_civil(2022, 2, 1),
                                                date_from_civil(2022, 6, 30)));
    // Through the template: one ATTACH per new file, no temporary ATTACH / DETACH.
    EXPECT_EQ(repo.counters().partitions_created - before.partitions_created, 5);
    EXPECT_EQ(repo.counters().partitions_opened - before.partitions_opened, 5);
    EXPECT_EQ(repo.counters().partitions_detached - before.partitions_detached, 0);
    EXPECT_FALSE(std::filesystem::exists(path("parts/events/_template.duckdb.creating")));
  }
  int checked = 0;
  for (int m = 1; m <= 6; ++m) {
    const PartitionKey key =
        partition_key_of(PartitionStrategy::kMonthly, date_from_civil(2022, m, 1));
    duck::Database db = duck::Database::open(path("parts/events/" + key.file_name()), true);
    duck::Connection c = db.connect();
    EXPECT_EQ(c.query_int(fmt::format(
                  "SELECT CAST(m.period = '{}' AND m.range_start = TIMESTAMP '{}' AND m.range_end "
                  "= TIMESTAMP '{}' AND m.strategy = 'monthly' AND m.row_count = (SELECT count(*) "
                  "FROM events) AND m.row_count > 0 AND m.min_value = (SELECT min(ts) FROM events) "
                  "AND m.max_value = (SELECT max(ts) FROM events) AND m.commit_version = 1 AS "
                  "INTEGER) FROM _duckpart_meta m",
                  key.label(), format_date(key.start()), format_date(key.end()))),
              1)
        << key.file_name();
    // Rows of one commit are stored sorted by the partition column.
    EXPECT_EQ(c.query_int("SELECT count(*) FROM (SELECT ts < lag(ts) OVER (ORDER BY rowid) AS d "
                          "FROM events) WHERE d"),
              0)
        << key.file_name();
    // The metadata row of a file made from the template (every month but the first) sits in one
    // block: the template holds none (a row there would keep the template's block in every file
    // for the columns no commit updates).
    if (m > 1) {
      EXPECT_EQ(
          c.query_int("SELECT count(DISTINCT block_id) FROM pragma_storage_info('_duckpart_meta') "
                      "WHERE block_id >= 0"),
          1)
          << key.file_name();
    }
    ++checked;
  }
  EXPECT_EQ(checked, 6);
  PartitionedDataRepository again = open();
  const StorageStatistics st_again = again.get_partition_statistics();
  for (const auto& p : st_again.schemas.at(0).partitions) {
    EXPECT_EQ(p.problem, "") << p.name;
  }
}

// A partition copied from the template whose first commit never happened (a crash between the
// copy and the commit) holds an empty period: a read-only open takes the period from its name,
// a writable open writes it, and a backup of it restores by its file name. No rows are lost.
TEST_F(PartitionedTest, APartitionWithTheTemplatesEmptyPeriodIsCompletedFromItsName) {
  std::mt19937_64 rng(12);
  const auto rows =
      random_wide_rows(rng, 300, date_from_civil(2022, 3, 1), date_from_civil(2022, 4, 30));
  {
    PartitionedDataRepository repo = open();
    repo.create_batch(schema_, rows);
  }
  const std::string file = path("parts/events/partition_2022_04.duckdb");
  {
    duck::Database db = duck::Database::open(file);
    db.connect().exec(
        "UPDATE _duckpart_meta SET period = '', range_start = NULL, range_end = NULL");
  }
  std::filesystem::remove(
      path("parts/events/_catalog.json"));  // the cached metadata would skip the check
  auto period_in_file = [&] {
    duck::Database db = duck::Database::open(file, true);
    duck::Result r = db.connect().query("SELECT period FROM _duckpart_meta");
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> out;
    while (auto c = r.fetch()) dec.decode(c, out);
    return out.at(0).values.at(0).get<std::string>();
  };
  {
    PartitionedDataRepository ro(test_config(path("parts"), PartitionStrategy::kMonthly),
                                 {.read_only = true});
    const StorageStatistics st_ro = ro.get_partition_statistics();
    for (const auto& p : st_ro.schemas.at(0).partitions) {
      EXPECT_EQ(p.problem, "") << p.name;
    }
    EXPECT_EQ(ro.count_all(schema_), static_cast<int64_t>(rows.size()));
  }
  EXPECT_EQ(period_in_file(), "");
  // Its backup, taken as it is, restores to the period of its name.
  std::filesystem::create_directories(path("bk"));
  std::filesystem::copy_file(file, path("bk/partition_2022_04.duckdb"));
  {
    PartitionedDataRepository repo = open();
    EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(rows.size()));
    const StorageStatistics st_repo = repo.get_partition_statistics();
    for (const auto& p : st_repo.schemas.at(0).partitions) {
      EXPECT_EQ(p.problem, "") << p.name;
    }
  }
  EXPECT_EQ(period_in_file(), "2022_04");
  {
    PartitionedDataRepository repo = open();
    repo.restore_partition(schema_, path("bk/partition_2022_04.duckdb"));
    EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(rows.size()));
    const StorageStatistics st_repo = repo.get_partition_statistics();
    for (const auto& p : st_repo.schemas.at(0).partitions) {
      EXPECT_EQ(p.problem, "") << p.name;
    }
  }
  EXPECT_EQ(period_in_file(), "2022_04");
  // Such a file under the name of another period is not taken for that period: its rows lie
  // outside it. Its backup does not restore there either.
  {
    duck::Database db = duck::Database::open(file);
    db.connect().exec(
        "UPDATE _duckpart_meta SET period = '', range_start = NULL, range_end = NULL");
  }
  std::filesystem::remove(path("parts/events/_catalog.json"));
  std::filesystem::rename(file, path("parts/events/partition_2022_06.duckdb"));
  std::filesystem::copy_file(path("parts/events/partition_2022_06.duckdb"),
                             path("bk/partition_2022_07.duckdb"));
  {
    PartitionedDataRepository repo = open();
    repo.initialize(schema_);
    std::string problem;
    const StorageStatistics st_repo = repo.get_partition_statistics();
    for (const auto& p : st_repo.schemas.at(0).partitions) {
      if (p.name == "partition_2022_06") problem = p.problem;
    }
    EXPECT_NE(problem.find("outside the period 2022_06"), std::string::npos) << problem;
    const std::string err =
        error_of([&] { repo.restore_partition(schema_, path("bk/partition_2022_07.duckdb")); });
    EXPECT_NE(err.find("no period in its metadata"), std::string::npos) << err;
  }
}

// A file without a metadata row that holds rows is not taken for an empty partition and is left
// as it is; a backup without a metadata row restores only as the empty partition of its name.
TEST_F(PartitionedTest, AFileWithoutMetadataRowIsEmptyOrNamedAsAProblem) {
  std::mt19937_64 rng(14);
  const auto rows =
      random_wide_rows(rng, 200, date_from_civil(2022, 3, 1), date_from_civil(2022, 4, 30));
  const int64_t in_april = std::count_if(rows.begin(), rows.end(), [](const DataRecord& r) {
    return r.values[1].get<Timestamp>().micros >= to_timestamp(date_from_civil(2022, 4, 1)).micros;
  });
  {
    PartitionedDataRepository repo = open();
    repo.create_batch(schema_, rows);
  }
  const std::string april = path("parts/events/partition_2022_04.duckdb");
  std::filesystem::create_directories(path("bad"));
  std::filesystem::create_directories(path("empty"));
  std::filesystem::copy_file(april, path("bad/partition_2022_04.duckdb"));
  std::filesystem::copy_file(april, path("empty/partition_2022_04.duckdb"));
  for (const std::string& f : {april, path("bad/partition_2022_04.duckdb")}) {
    duck::Database db = duck::Database::open(f);
    db.connect().exec("DELETE FROM _duckpart_meta");
  }
  {
    duck::Database db = duck::Database::open(path("empty/partition_2022_04.duckdb"));
    duck::Connection c = db.connect();
    c.exec("DELETE FROM _duckpart_meta");
    c.exec("DELETE FROM events");
  }
  std::filesystem::remove(path("parts/events/_catalog.json"));
  auto problem_of_april = [](PartitionedDataRepository& repo) {
    const StorageStatistics st = repo.get_partition_statistics();
    for (const auto& p : st.schemas.at(0).partitions) {
      if (p.name == "partition_2022_04") return p.problem;
    }
    return std::string("(missing)");
  };
  {
    PartitionedDataRepository repo = open();
    repo.initialize(schema_);
    const std::string problem = problem_of_april(repo);
    EXPECT_NE(problem.find("no metadata row but holds"), std::string::npos) << problem;
    const std::string err =
        error_of([&] { repo.restore_partition(schema_, path("bad/partition_2022_04.duckdb")); });
    EXPECT_NE(err.find("has no metadata row, and it is not an empty"), std::string::npos) << err;
  }
  {  // nothing was written to it
    duck::Database db = duck::Database::open(april, true);
    duck::Connection c = db.connect();
    EXPECT_EQ(c.query_int("SELECT count(*) FROM events"), in_april);
    EXPECT_EQ(c.query_int("SELECT count(*) FROM _duckpart_meta"), 0);
  }
  {
    PartitionedDataRepository repo = open();
    repo.restore_partition(schema_, path("empty/partition_2022_04.duckdb"));
    EXPECT_EQ(problem_of_april(repo), "");
    EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(rows.size()) - in_april);
  }
  duck::Database db = duck::Database::open(april, true);
  EXPECT_EQ(db.connect().query_int("SELECT count(*) FROM _duckpart_meta WHERE period = '2022_04' "
                                   "AND row_count = 0"),
            1);
}

// Records are converted on several threads for large calls: every value and NULL lands where
// the one-thread conversion puts it, and with bad values in two threads' ranges the error names
// the first bad record.
TEST_F(PartitionedTest, RecordsConvertedOnThreadsEqualTheOneThreadConversion) {
  std::mt19937_64 rng(13);
  auto rows =
      random_wide_rows(rng, 300000, date_from_civil(2022, 1, 1), date_from_civil(2022, 12, 31));
  const ColumnBatch all = records_to_batch(schema_, rows);
  ASSERT_EQ(all.rows, rows.size());
  for (std::size_t i = 0; i < rows.size(); i += 997) {
    const ColumnBatch one = records_to_batch(schema_, {rows[i]});
    for (std::size_t c = 0; c < schema_.columns().size(); ++c) {
      EXPECT_EQ(all.columns[c].is_valid(i), one.columns[c].is_valid(0)) << i << "/" << c;
      if (!one.columns[c].is_valid(0)) continue;
      std::visit(
          [&](const auto& v) {
            using V = std::decay_t<decltype(v)>;
            EXPECT_EQ(std::get<V>(all.columns[c].data)[i], v[0]) << i << "/" << c;
          },
          one.columns[c].data);
    }
  }
  rows[280000].values[4] = Value("not a number");
  rows[200001].values[4] = Value("neither");
  ErrorCode code{};
  const std::string err = error_of([&] { records_to_batch(schema_, rows); }, &code);
  EXPECT_EQ(code, ErrorCode::kInvalidArgument);
  EXPECT_NE(err.find("record 200001"), std::string::npos) << err;
}

// The router's typed gathers size their copies from the first query's column types: a DECIMAL
// that changes width in a later query of the same load is refused (it would be read with the
// wrong width), and timestamps far outside years 1..9999 are refused by name, whatever the
// calendar arithmetic would make of them. Nothing is written either way.
// The writers' table function (__duckpart_feed) is reachable from SQL once a bulk load
// registered it: an id that is not a live feed is an error, never a read of freed memory; the
// rows written through it equal the source, in every partition.
TEST_F(PartitionedTest, WritersFeedRefusesUnknownIdsAndCopiesEveryRow) {
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "CREATE TABLE events AS SELECT uuid() AS id, TIMESTAMP '2021-01-01' + "
        "to_microseconds(CAST(hash(i) % (90 * 86400000000) AS BIGINT)) AS ts, "
        "CASE WHEN i % 7 = 0 THEN NULL ELSE i % 2 = 0 END AS flag, CAST(i % 100 AS SMALLINT) AS "
        "small, CAST(i AS INTEGER) AS qty, i AS big, i / 3.0 AS ratio, CAST(i AS DECIMAL(12,3)) "
        "AS price, repeat('n', CAST(i % 40 AS INTEGER)) || i AS name, DATE '2020-01-01' + "
        "CAST(i % 1000 AS INTEGER) AS day, uuid() AS ref FROM range(200000) r(i)");
  }
  PartitionedDataRepository repo = open();
  repo.attach_database(path("src.duckdb"), "src");
  EXPECT_EQ(repo.create_batch_from_query(schema_, "SELECT * FROM src.main.events").rows_written,
            200000);
  for (const char* sql :
       {"SELECT * FROM __duckpart_feed(42)", "SELECT * FROM __duckpart_feed(0)"}) {
    const std::string err = error_of([&] {
      RecordStream s = repo.query_sql(sql);
      for (DataRecord r; s.next(r);) {
      }
    });
    EXPECT_NE(err.find("no such feed"), std::string::npos) << sql << ": " << err;
  }
  // Every row arrived: the partitions' rows equal the source's, both ways.
  for (const char* sql :
       {"SELECT count(*) FROM (SELECT * FROM src.main.events EXCEPT ALL SELECT * FROM events)",
        "SELECT count(*) FROM (SELECT * FROM events EXCEPT ALL SELECT * FROM src.main.events)"}) {
    RecordStream s = repo.query_sql(sql);
    DataRecord r;
    ASSERT_TRUE(s.next(r));
    EXPECT_EQ(r.values[0].get<int64_t>(), 0) << sql;
  }
  repo.detach_database("src");
}

TEST_F(PartitionedTest, RoutedLoadRefusesAChangedDecimalAndFarOutDates) {
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "CREATE TABLE events AS SELECT uuid() AS id, TIMESTAMP '2021-01-01' + "
        "to_microseconds(CAST(hash(i) % (90 * 86400000000) AS BIGINT)) AS ts, "
        "CAST(NULL AS BOOLEAN) AS flag, CAST(i % 100 AS SMALLINT) AS small, CAST(i AS INTEGER) AS "
        "qty, i AS big, i / 3.0 AS ratio, CAST(i AS DECIMAL(12,3)) AS price, 'n' || i AS name, "
        "DATE '2020-01-01' AS day, uuid() AS ref FROM range(3000) r(i)");
  }
  PartitionedDataRepository repo = open();
  repo.attach_database(path("src.duckdb"), "src");
  const std::string cols_narrow =
      "id, ts, flag, small, qty, big, ratio, CAST(price % 100 AS DECIMAL(4,1)) AS price, name, "
      "day, ref";
  {
    auto load = repo.begin_bulk_load(schema_, {});
    EXPECT_EQ(load->load("SELECT * FROM src.main.events WHERE rowid < 1000"), 1000);
    ErrorCode code{};
    const std::string err = error_of(
        [&] {
          load->load(
              fmt::format("SELECT {} FROM src.main.events WHERE rowid >= 1000", cols_narrow));
        },
        &code);
    EXPECT_EQ(code, ErrorCode::kInvalidArgument);
    EXPECT_NE(err.find("'price' changed type"), std::string::npos) << err;
    load->abort();
  }
  EXPECT_EQ(repo.count_all(schema_, {}), 0);
  for (const char* far : {"294000-01-01", "20000-06-01", "0100-01-01 (BC)"}) {
    ErrorCode code{};
    const std::string err = error_of(
        [&] {
          repo.create_batch_from_query(
              schema_,
              fmt::format("SELECT id, TIMESTAMP '{}' AS ts, flag, small, qty, big, ratio, price, "
                          "name, day, ref FROM src.main.events",
                          far));
        },
        &code);
    EXPECT_EQ(code, ErrorCode::kInvalidArgument) << far;
    EXPECT_NE(err.find("outside the supported partition years"), std::string::npos) << err;
  }
  EXPECT_EQ(repo.count_all(schema_, {}), 0);
  repo.detach_database("src");
}

// BulkLoad::load_into: one INSERT ... SELECT per partition. Rows outside the named partition fail
// the call and copy nothing; the metadata equals a scan, whether the rows came by INSERT, by
// routing, or both into one partition; lookups by id find rows copied either way.
TEST_F(PartitionedTest, BulkLoadIntoOnePartitionChecksItsRowsAndKeepsExactMetadata) {
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "CREATE TABLE events AS SELECT uuid() AS id, TIMESTAMP '2021-01-01' + "
        "to_microseconds(CAST(hash(i) % (90 * 86400000000) AS BIGINT)) AS ts, "
        "CAST(NULL AS BOOLEAN) AS flag, CAST(i % 100 AS SMALLINT) AS small, CAST(i AS INTEGER) AS "
        "qty, i AS big, i / 3.0 AS ratio, CAST(i AS DECIMAL(12,3)) AS price, 'n' || i AS name, "
        "DATE '2020-01-01' AS day, uuid() AS ref FROM range(30000) r(i) ORDER BY ts");
  }
  PartitionedDataRepository repo = open();
  repo.attach_database(path("src.duckdb"), "src");
  const auto jan = partition_key_of(PartitionStrategy::kMonthly, date_from_civil(2021, 1, 1));
  const auto feb = jan.next();
  const std::string all = "SELECT * FROM src.main.events";
  const std::string in_jan = all + " WHERE ts < TIMESTAMP '2021-02-01'";
  {
    auto load = repo.begin_bulk_load(schema_, {});
    ErrorCode code{};
    const std::string err = error_of([&] { load->load_into(jan, all); }, &code);
    EXPECT_EQ(code, ErrorCode::kInvalidArgument);
    EXPECT_NE(err.find("outside partition partition_2021_01"), std::string::npos) << err;
    EXPECT_EQ(load->rows(), 0);
    // The load goes on: January by INSERT in two pieces and by routing, February by INSERT.
    const int64_t n_jan = load->load_into(jan, in_jan + " AND rowid % 3 = 0") +
                          load->load(in_jan + " AND rowid % 3 = 1") +
                          load->load_into(jan, in_jan + " AND rowid % 3 = 2");
    const int64_t n_feb = load->load_into(
        feb, all + " WHERE ts >= TIMESTAMP '2021-02-01' AND ts < TIMESTAMP '2021-03-01'");
    EXPECT_EQ(load->load_into(feb, all + " WHERE false"), 0);
    const BatchResult r = load->commit("b1");
    EXPECT_EQ(r.rows_written, n_jan + n_feb);
    EXPECT_EQ(r.partitions_written, 2);
  }
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    duck::Connection c = db.connect();
    EXPECT_EQ(repo.count_all(schema_, {}),
              c.query_int("SELECT count(*) FROM events WHERE ts < TIMESTAMP '2021-03-01'"));
  }
  // A row copied by INSERT is found by id (the partition's id range covers it).
  const auto some =
      repo.get_all(schema_, where({{"ts", FilterOperator::kLt, Value("2021-01-02")}}));
  ASSERT_FALSE(some.items.empty());
  const auto found = repo.get_by_id(schema_, some.items[0].values[0].to_string());
  ASSERT_TRUE(found.has_value());
  repo.detach_database("src");
  repo.flush();
  int checked = 0;
  const StorageStatistics stats = repo.get_partition_statistics();
  for (const auto& p : stats.schemas.at(0).partitions) {
    duck::Database db = duck::Database::open(p.file, true);
    duck::Connection c = db.connect();
    EXPECT_EQ(c.query_int("SELECT CAST(m.row_count = (SELECT count(*) FROM events) AND m.min_value "
                          "= (SELECT min(ts) FROM events) AND m.max_value = (SELECT max(ts) FROM "
                          "events) AND m.min_id = (SELECT min(id)::VARCHAR FROM events) AND "
                          "m.max_id = (SELECT max(id)::VARCHAR FROM events) AS INTEGER) FROM "
                          "_duckpart_meta m"),
              1)
        << p.file;
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST_F(PartitionedTest, ReadOnlyRefusesWrites) {
  fill_36_months();
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly),
                                 {.read_only = true});
  EXPECT_EQ(repo.count_all(schema_), 1800);
  std::mt19937_64 rng(1);
  auto rows = random_wide_rows(rng, 3, date_from_civil(2022, 2, 1), date_from_civil(2022, 2, 28));
  EXPECT_NE(error_of([&] { repo.create_batch(schema_, rows); }).find("read-only"),
            std::string::npos);
  EXPECT_EQ(repo.count_all(schema_), 1800);
}

TEST_F(PartitionedTest, StatisticsReportEveryPartition) {
  fill_36_months();
  PartitionedDataRepository repo = open();
  const auto stats = repo.get_partition_statistics();
  ASSERT_EQ(stats.schemas.size(), 1u);
  const auto& s = stats.schemas[0];
  EXPECT_EQ(s.schema, "events");
  EXPECT_EQ(s.total_rows, 1800);
  ASSERT_EQ(s.partitions.size(), 36u);
  EXPECT_EQ(s.partitions.front().name, "partition_2021_01");
  EXPECT_EQ(*s.partitions.front().period_start, date_from_civil(2021, 1, 1));
  EXPECT_EQ(*s.partitions.front().period_end, date_from_civil(2021, 2, 1));
  for (const auto& p : s.partitions) {
    EXPECT_EQ(p.rows, 50);
    EXPECT_GT(p.bytes, 0u);
    ASSERT_TRUE(p.min_value && p.max_value);
    EXPECT_GE(p.min_value->micros, to_timestamp(*p.period_start).micros);
    EXPECT_LT(p.max_value->micros, to_timestamp(*p.period_end).micros);
  }
  EXPECT_NE(stats.to_json().find("\"partition_2023_12\""), std::string::npos);
  EXPECT_EQ(repo.load_schema("events").to_json(), schema_.to_json());
  EXPECT_EQ(repo.list_schemas(), std::vector<std::string>{"events"});
}

TEST_F(PartitionedTest, LayoutConflictIsAnError) {
  fill_36_months();
  PartitionedDataRepository repo = open();
  repo.initialize(schema_);
  Schema other("events", {{"id", "UUID"}, {"ts", "TIMESTAMP"}}, "ts", "id");
  EXPECT_NE(error_of([&] { repo.count_all(other); }).find("another layout"), std::string::npos);
}

TEST_F(PartitionedTest, ColumnarBatchWithUpperCaseUuidsIsFoundByAnySpelling) {
  PartitionedDataRepository repo = open();
  std::mt19937_64 rng(21);
  auto rows = random_wide_rows(rng, 100, date_from_civil(2022, 1, 1), date_from_civil(2022, 4, 30));
  ColumnBatch b = make_column_batch(schema_);
  b.rows = rows.size();
  // Build the columnar batch by hand, ids in upper case.
  for (std::size_t c = 0; c < schema_.columns().size(); ++c) {
    auto& col = b.columns[c];
    col.valid.assign(rows.size(), 1);
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const Value& v = rows[r].values[c];
      if (v.is_null()) col.valid[r] = 0;
      std::visit(
          [&](auto& vec) {
            using T = typename std::decay_t<decltype(vec)>::value_type;
            if constexpr (std::is_same_v<T, std::string>) {
              std::string s = v.is_null() ? "" : v.to_string();
              if (c == 0) std::transform(s.begin(), s.end(), s.begin(), ::toupper);
              if (c == 7 && !v.is_null()) s = v.get<std::string>();
              vec.push_back(s);
            } else if constexpr (std::is_same_v<T, int32_t>) {
              vec.push_back(v.is_null() ? 0 : v.get<Date>().days);
            } else if constexpr (std::is_same_v<T, double>) {
              vec.push_back(v.is_null() ? 0.0 : v.get<double>());
            } else if constexpr (std::is_same_v<T, uint8_t>) {
              vec.push_back(v.is_null() ? 0 : v.get<bool>());
            } else {
              vec.push_back(
                  v.is_null() ? 0
                              : (v.is<Timestamp>() ? v.get<Timestamp>().micros : v.get<int64_t>()));
            }
          },
          col.data);
    }
  }
  ASSERT_EQ(repo.create_batch_columnar(schema_, std::move(b)).rows_written, 100);
  for (std::size_t i = 0; i < rows.size(); i += 7) {
    std::string upper = rows[i].values[0].get<std::string>();
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    auto lower = repo.get_by_id(schema_, rows[i].values[0]);
    auto up = repo.get_by_id(schema_, Value(upper));
    ASSERT_TRUE(lower.has_value());
    ASSERT_TRUE(up.has_value());
    EXPECT_EQ(lower->values[0], rows[i].values[0]);
    EXPECT_EQ(row_text(*lower), row_text(*up));
  }
}

TEST_F(PartitionedTest, UuidColumnsAreParsedInRowOrderAndBadValuesNamed) {
  // Columnar batches (the record API canonicalises UUIDs before write() sees them): UUID columns
  // are parsed before the rows are grouped by partition — upper-case and braced text reads back
  // canonical, NULLs stay NULL, and a bad value anywhere fails the batch untouched, naming the
  // record, the column and the value.
  PartitionedDataRepository repo = open();
  std::mt19937_64 rng(11);
  const auto rows =
      random_wide_rows(rng, 3000, date_from_civil(2023, 1, 1), date_from_civil(2023, 6, 30));
  ColumnBatch batch = records_to_batch(schema_, rows);
  ColumnVector& ref = batch.columns[10];
  ASSERT_EQ(ref.valid.size(), rows.size());
  auto& text = std::get<std::vector<std::string>>(ref.data);
  std::vector<std::string> canonical(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string u = random_uuid(rng);
    canonical[i] = u;
    if (i % 3 == 1) std::transform(u.begin(), u.end(), u.begin(), ::toupper);
    if (i % 3 == 2) u = "{" + u + "}";
    text[i] = u;
    ref.valid[i] = i % 10 == 9 ? 0 : 1;
  }
  ColumnBatch bad = batch;
  std::get<std::vector<std::string>>(bad.columns[10].data)[2500] =
      "12345678-0000-0000-0000-00000000000g";
  bad.columns[10].valid[2500] = 1;
  const std::string msg = error_of([&] { repo.create_batch_columnar(schema_, std::move(bad)); });
  EXPECT_NE(msg.find("record 2500"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'ref'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("00000000000g"), std::string::npos) << msg;
  EXPECT_EQ(repo.count_all(schema_), 0);
  ASSERT_EQ(repo.create_batch_columnar(schema_, std::move(batch)).rows_written, 3000);
  for (std::size_t i = 0; i < rows.size(); i += 37) {
    auto got = repo.get_by_id(schema_, rows[i].values[0]);
    ASSERT_TRUE(got.has_value());
    if (i % 10 == 9) {
      EXPECT_TRUE(got->values[10].is_null());
    } else {
      EXPECT_EQ(got->values[10].get<std::string>(), canonical[i]);
    }
  }
}

TEST_F(PartitionedTest, ARestoreUnchangedSinceABackupIsRefusedOnceThePartitionChanged) {
  // restore_partition's compare-and-swap (migrate's catch-up builds a partition's replacement
  // from a copy of it): refused (kConflict, nothing changed) after a commit, a compaction or a
  // drop since the copy; done when nothing changed.
  fill_36_months();
  const std::string name = "partition_2022_07";
  auto month = [] {
    return where({{"ts", FilterOperator::kGte, Value("2022-07-01")},
                  {"ts", FilterOperator::kLt, Value("2022-08-01")}});
  };
  PartitionedDataRepository repo = open_direct();
  const int64_t rows = repo.count_all(schema_, month());
  std::mt19937_64 rng(12);
  auto more = random_wide_rows(rng, 7, date_from_civil(2022, 7, 1), date_from_civil(2022, 7, 31));
  for (auto& r : more) r.values[0] = Value{};
  auto refused = [&](const std::function<void()>& change, int64_t rows_after) {
    const auto copy = repo.backup_partition(schema_, name, path("bk"));
    EXPECT_GE(copy.commit_version, 1);
    change();
    ErrorCode code{};
    const std::string msg =
        error_of([&] { repo.restore_partition(schema_, copy.backup_file, &copy); }, &code);
    EXPECT_EQ(code, ErrorCode::kConflict) << msg;
    EXPECT_NE(msg.find("partition_2022_07"), std::string::npos) << msg;
    EXPECT_NE(msg.find("since the copy its replacement was built from"), std::string::npos) << msg;
    EXPECT_EQ(repo.count_all(schema_, month()), rows_after) << "nothing was changed";
  };
  refused([&] { repo.create_batch(schema_, more); }, rows + 7);
  refused([&] { repo.compact_partition(schema_, name); }, rows + 7);
  // Unchanged: replaced (by a copy of the same state); then the restore itself is a change.
  const auto copy = repo.backup_partition(schema_, name, path("bk"));
  const auto same = repo.backup_partition(schema_, name, path("bk2"));
  repo.restore_partition(schema_, copy.backup_file, &same);
  EXPECT_EQ(repo.count_all(schema_, month()), rows + 7);
  refused([&] { repo.restore_partition(schema_, copy.backup_file); }, rows + 7);
  refused([&] { repo.drop_partition(schema_, name); }, 0);
  EXPECT_EQ(repo.count_all(schema_, month()), 0) << "the dropped partition stays dropped";
  // Dropped and made again by one commit, as the copied one was: the same commit version, but
  // another partition (its file epoch was 0 again, and the restore went through).
  repo.create_batch(schema_, more);
  refused(
      [&] {
        repo.drop_partition(schema_, name);
        repo.create_batch(schema_, more);
      },
      7);

  // Tokens without a copy (partition_state, what migrate's catch-up of a whole period takes
  // before it looks at the partition): drop and restore refused after a commit since, done when
  // unchanged; a token of an absent partition refuses a restore once the partition was created.
  const auto state = repo.partition_state(schema_, name);
  EXPECT_EQ(state.rows, 7);
  EXPECT_FALSE(state.source_file.empty());
  EXPECT_TRUE(state.backup_file.empty());
  repo.create_batch(schema_, more);
  ErrorCode code{};
  std::string msg = error_of([&] { repo.drop_partition(schema_, name, &state); }, &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << msg;
  EXPECT_NE(msg.find("it was not dropped"), std::string::npos) << msg;
  EXPECT_EQ(repo.count_all(schema_, month()), 14);
  const auto fourteen = repo.backup_partition(schema_, name, path("bk3"));
  code = {};
  msg = error_of([&] { repo.restore_partition(schema_, fourteen.backup_file, &state); }, &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << msg;
  EXPECT_EQ(repo.count_all(schema_, month()), 14);
  const auto now = repo.partition_state(schema_, name);
  repo.drop_partition(schema_, name, &now);
  EXPECT_EQ(repo.count_all(schema_, month()), 0) << "unchanged: dropped";
  const auto absent = repo.partition_state(schema_, name);
  EXPECT_TRUE(absent.source_file.empty());
  repo.create_batch(schema_, more);
  code = {};
  msg = error_of([&] { repo.restore_partition(schema_, fourteen.backup_file, &absent); }, &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << msg;
  EXPECT_NE(msg.find("was created since"), std::string::npos) << msg;
  EXPECT_EQ(repo.count_all(schema_, month()), 7) << "nothing was changed";
  repo.drop_partition(schema_, name);
  code = {};
  msg = error_of([&] { repo.drop_partition(schema_, name, &now); }, &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << "dropped since its token: " << msg;
  // Its file made by another process meanwhile (this repository has not listed it): refused, the
  // file left as it is.
  std::filesystem::copy_file(fourteen.backup_file, state.source_file);
  code = {};
  msg = error_of([&] { repo.restore_partition(schema_, fourteen.backup_file, &absent); }, &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << msg;
  EXPECT_NE(msg.find("appeared"), std::string::npos) << msg;
  EXPECT_EQ(std::filesystem::file_size(state.source_file),
            std::filesystem::file_size(fourteen.backup_file));
  std::filesystem::remove(state.source_file);
  // A log alone (a drop killed between deleting the file and its log) is no partition.
  std::ofstream(state.source_file + ".wal") << "left by a killed drop";
  repo.restore_partition(schema_, fourteen.backup_file, &absent);
  EXPECT_EQ(repo.count_all(schema_, month()), 14) << "still absent: restored";
}

TEST_F(PartitionedTest, LeftoverStagingFilesAreDeletedAtAWritableOpenUnlessSomeoneStages) {
  // Staging files of a restore, a compaction or a creation killed before its rename: a writable
  // open deletes them when no process is staging in the directory (each restore, compaction and
  // creation holds a shared flock on it meanwhile); a read-only open, or one while another
  // process stages, leaves them.
  fill_36_months();
  const std::string dir = path("parts/events");
  const std::vector<std::string> leftovers = {
      ".partition_2022_07.duckdb.restore",   ".partition_2022_07.duckdb.restore.tmp",
      ".partition_2022_08.duckdb.compact",   ".partition_2022_08.duckdb.compact.wal",
      ".partition_2022_08.duckdb.compact16", "partition_2024_01.duckdb.creating",
      "_template.duckdb.creating.wal"};
  for (const auto& f : leftovers) std::ofstream(dir + "/" + f) << "left by a killed run";
  auto present = [&] {
    int n = 0;
    for (const auto& f : leftovers) n += std::filesystem::exists(dir + "/" + f) ? 1 : 0;
    return n;
  };
  const PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  {
    PartitionedDataRepository ro(cfg, {.read_only = true});
    EXPECT_EQ(ro.count_all(schema_), 36 * 50);
  }
  EXPECT_EQ(present(), 7) << "a read-only open deletes nothing";
  {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_SH), 0);  // (another open file description: as another process)
    {
      PartitionedDataRepository repo(cfg);
      EXPECT_EQ(repo.count_all(schema_), 36 * 50);
    }
    ::close(fd);
  }
  EXPECT_EQ(present(), 7) << "someone is staging: nothing deleted";
  PartitionedDataRepository repo(cfg);
  EXPECT_EQ(repo.count_all(schema_), 36 * 50);
  EXPECT_EQ(present(), 0);
  // Restores and compactions stage as before (their locks are shared), and leave nothing.
  repo.compact_partition(schema_, "partition_2022_08");
  const auto copy = repo.backup_partition(schema_, "partition_2022_07", path("bk"));
  repo.restore_partition(schema_, copy.backup_file);
  EXPECT_EQ(repo.count_all(schema_), 36 * 50);
  EXPECT_EQ(present(), 0);
}

TEST_F(PartitionedTest, LargeBatchesHoldDuckDBAtOneThreadAndRestoreIt) {
  // While a batch of 100K+ rows is committed on every core, DuckDB runs one thread; afterwards
  // (also after concurrent batches, a failed batch, and with the setting off) it has its threads
  // back. Seen from the commit hook, which runs on the write threads mid-batch.
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  for (const bool hold : {true, false}) {
    SCOPED_TRACE(hold ? "held" : "setting off");
    std::filesystem::remove_all(path("parts"));
    std::filesystem::remove_all(path("parts_fixed"));
    PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly, 24);
    cfg.single_duckdb_thread_while_writing = hold;
    cfg.write_buffer_mb = 0;  // the direct write path: each call commits
    PartitionedDataRepository repo(cfg);
    auto threads_now = [&] {
      RecordStream s = repo.query_sql("SELECT current_setting('threads')::BIGINT AS t");
      DataRecord r;
      EXPECT_TRUE(s.next(r));
      return r.values.at(0).get<int64_t>();
    };
    const int64_t before = threads_now();
    std::mutex seen_mu;
    std::set<int64_t> seen;
    repo.set_commit_hook([&](const std::string&) {
      const int64_t t = threads_now();
      std::lock_guard lock(seen_mu);
      seen.insert(t);
    });
    std::mt19937_64 rng(3);
    auto big =
        random_wide_rows(rng, 120'000, date_from_civil(2022, 1, 1), date_from_civil(2022, 12, 31));
    std::vector<std::thread> writers;
    for (int w = 0; w < 2; ++w) writers.emplace_back([&] { repo.create_batch(schema_, big); });
    for (auto& t : writers) t.join();
    EXPECT_EQ(threads_now(), before);
    // Held when the write threads cover every core: one per partition, 12 partitions here.
    if (hold && hw > 1 && hw <= 12 && before > 1) {
      EXPECT_EQ(seen, std::set<int64_t>{1});
    } else {
      EXPECT_EQ(seen, std::set<int64_t>{before});
    }
    // A batch that fails after the hold was taken (new periods refused by a store that does not
    // create partitions) and a small batch leave the setting alone.
    {
      PartitionConfig fixed = cfg;
      fixed.base_partition_path = path("parts_fixed");
      fixed.auto_partition_enabled = false;
      PartitionedDataRepository other(fixed);
      auto late = random_wide_rows(rng, 120'000, date_from_civil(2024, 1, 1),
                                   date_from_civil(2024, 12, 31));
      EXPECT_THROW(other.create_batch(schema_, late), Error);
      RecordStream st = other.query_sql("SELECT current_setting('threads')::BIGINT AS t");
      DataRecord r;
      ASSERT_TRUE(st.next(r));
      EXPECT_EQ(r.values.at(0).get<int64_t>(), before);
    }
    EXPECT_EQ(threads_now(), before);
    seen.clear();
    repo.create_batch(schema_, random_wide_rows(rng, 50, date_from_civil(2022, 1, 1),
                                                date_from_civil(2022, 12, 31)));
    EXPECT_EQ(seen, std::set<int64_t>{before});
    EXPECT_EQ(repo.count_all(schema_), 2 * 120'000 + 50);
  }
}

TEST_F(PartitionedTest, ConcurrentReadersAndWritersSeeWholeBatches) {
  // 2 writers (batches of 50 rows spread over 6 months) and 3 readers for ~3 s: every count a
  // reader sees is a multiple of 50 (no half-written batch) and never decreases; the end count is
  // exact.
  PartitionedDataRepository repo = open(4);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> written{0};
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(100 + static_cast<uint64_t>(w));
      while (!stop.load()) {
        auto rows =
            random_wide_rows(rng, 50, date_from_civil(2023, 1, 1), date_from_civil(2023, 6, 30));
        // One partition per batch keeps a batch atomic for readers (cross-partition batches commit
        // per partition, see docs/architecture.md).
        const Date d = date_from_civil(2023, static_cast<unsigned>(1 + rng() % 6), 15);
        for (auto& r : rows) r.values[1] = Value(to_timestamp(d));
        repo.create_batch(schema_, rows);
        written += 50;
      }
    });
  }
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      int64_t last = 0;
      std::mt19937_64 rng(200 + static_cast<uint64_t>(r));
      while (!stop.load()) {
        DataQueryRequest q;
        if (rng() % 2) q.filters = {{"ts", FilterOperator::kGte, Value("2023-03-01")}};
        const int64_t n =
            q.filters.empty() ? repo.count_all(schema_, q) : repo.get_all(schema_, q).total;
        if (n % 50 != 0) ++violations;
        if (q.filters.empty()) {
          if (n < last) ++violations;
          last = n;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(written.load(), 0);
  EXPECT_EQ(repo.count_all(schema_), written.load());
  EXPECT_LE(repo.counters().partitions_attached_now, 4);
}

// The id map's buckets and tail against a multimap, with many shared fingerprints, across folds.
TEST(IdRowMapTest, FindsEveryRowOfAFingerprintAcrossFoldsAndTail) {
  std::mt19937_64 rng(11);
  IdRowMap map;
  std::multimap<uint32_t, uint32_t> oracle;
  uint32_t rowid = 0;
  int rebuilds = 0;
  uint64_t extras = 0, probed = 0;
  std::vector<uint32_t> added;
  std::vector<uint32_t> shared;  // fingerprints many rows share (XXH3 values are uniform)
  for (int i = 0; i < 3000; ++i) shared.push_back(static_cast<uint32_t>(rng()));
  for (int run = 0; run < 24; ++run) {
    const int n = run == 0 ? 3 : static_cast<int>(rng() % 20000);
    for (int i = 0; i < n; ++i) {
      // Half the fingerprints from a small set (many rows each), half spread over 32 bits.
      const uint32_t fp =
          rng() % 2 == 0 ? shared[rng() % shared.size()] : static_cast<uint32_t>(rng());
      map.add(fp, rowid);
      oracle.emplace(fp, rowid);
      added.push_back(fp);
      ++rowid;
    }
    map.settle();
    if (map.wants_rebuild()) {  // as the repository does: from every row again
      map = IdRowMap();
      for (auto [fp, r] : oracle) map.add(fp, r);
      map.settle();
      ++rebuilds;
    }
    ASSERT_EQ(map.size(), oracle.size());
    std::vector<uint32_t> probes;
    for (int i = 0; i < 2000; ++i) probes.push_back(static_cast<uint32_t>(rng()));  // mostly absent
    for (int i = 0; i < 4000; ++i) probes.push_back(added[rng() % added.size()]);   // present
    probes.push_back(0);
    probes.push_back(UINT32_MAX);
    for (uint32_t fp : probes) {
      std::vector<uint32_t> got;
      map.find(fp, [&](uint32_t r) { got.push_back(r); });
      std::vector<uint32_t> want;
      for (auto [a, b] = oracle.equal_range(fp); a != b; ++a) want.push_back(a->second);
      // Segments keep part of each fingerprint: every row of it, and perhaps a few more.
      std::sort(got.begin(), got.end());
      got.erase(std::unique(got.begin(), got.end()), got.end());
      std::vector<uint32_t> missing, extra;
      std::set_difference(want.begin(), want.end(), got.begin(), got.end(),
                          std::back_inserter(missing));
      std::set_difference(got.begin(), got.end(), want.begin(), want.end(),
                          std::back_inserter(extra));
      ASSERT_TRUE(missing.empty()) << "run " << run << ", fingerprint " << fp;
      extras += extra.size();
      ++probed;
    }
  }
  EXPECT_GT(rebuilds, 0);
  EXPECT_LT(static_cast<double>(extras), 0.01 * static_cast<double>(probed));
  // Compact: ~5 bytes per row (the 64-bit pairs of the tail are at most an eighth of the rows).
  EXPECT_LE(map.bytes(), map.size() * 7 + 65536);
}

// Segment encodings at the edges: rowids of 2^31 and more (no fingerprint bits kept beside them),
// rowids of two bits (30 kept), fingerprints 0 and 2^32 - 1.
TEST(IdRowMapTest, EdgeEncodingsFindEveryRow) {
  for (uint32_t base : {0u, 0x80000000u, 0xFFFF0000u}) {
    SCOPED_TRACE(base);
    std::mt19937_64 rng(base + 1);
    IdRowMap map;
    std::vector<std::pair<uint32_t, uint32_t>> added;
    for (uint32_t i = 0; i < 6000; ++i) {
      const uint32_t fp = i % 50 == 0   ? 0u
                          : i % 50 == 1 ? UINT32_MAX
                                        : static_cast<uint32_t>(rng());
      const uint32_t rowid = base == 0 ? i % 4 : base + i;
      map.add(fp, rowid);
      added.emplace_back(fp, rowid);
    }
    map.settle();
    ASSERT_EQ(map.size(), 6000u);
    for (auto [fp, rowid] : added) {
      bool found = false;
      map.find(fp, [&](uint32_t r) { found = found || r == rowid; });
      ASSERT_TRUE(found) << fp << " " << rowid;
    }
  }
}

// The id filters: no false negatives, the false-positive rate they are sized for, and files of
// another format, stamp or shape are not loaded (the filter is rebuilt from the partition then).
// Filters of 2 MB and more live in their own 2 MB-aligned mappings (huge pages where the kernel
// gives them): exactly 2 MB, a whole one plus a tail, built, saved, loaded, moved and freed many
// times over, answer like the small filters.
TEST_F(TempDirTest, LargeIdBloomsInTheirOwnMappingsAnswerLikeSmallOnes) {
  auto id = [](int i) { return fmt::format("{:08x}-0000-7000-8000-{:012x}", i * 2654435761u, i); };
  for (const uint64_t capacity : {uint64_t{1677721}, uint64_t{4000000}}) {
    SCOPED_TRACE(capacity);
    std::vector<IdBloom> blooms;
    for (int round = 0; round < 4; ++round) blooms.emplace_back(capacity);  // moved on growth
    IdBloom& b = blooms.back();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.words()) % (std::uintptr_t{2} << 20), 0U);
    EXPECT_EQ(b.blocks() * 64, (capacity * 10 + 511) / 512 * 64);  // bytes: 2 MB for the first
    constexpr int kIds = 300000;
    for (int i = 0; i < kIds; ++i) b.add(id(i));
    for (int i = 0; i < kIds; ++i) ASSERT_TRUE(b.may_contain(id(i))) << id(i);
    int fp = 0;
    for (int i = kIds; i < 2 * kIds; ++i) fp += b.may_contain(id(i)) ? 1 : 0;
    EXPECT_LT(fp, kIds / 1000);
    // The mapping reaches the last word (the tail past the whole 2 MB stretches).
    IdBloom t(capacity);
    auto* last = const_cast<uint64_t*>(t.words()) + t.blocks() * 8 - 1;
    EXPECT_EQ(*last, 0U);
    *last = 42;
    EXPECT_EQ(t.words()[t.blocks() * 8 - 1], 42U);
    const std::string file = path("large.bloom");
    ASSERT_TRUE(b.save(file, 7));
    for (int round = 0; round < 3; ++round) {
      IdBloom loaded;
      ASSERT_TRUE(loaded.load(file, 7));
      EXPECT_EQ(loaded.blocks(), b.blocks());
      for (int i = 0; i < kIds; i += 3) ASSERT_TRUE(loaded.may_contain(id(i)));
      for (int i = kIds; i < kIds + 20000; ++i) {
        ASSERT_EQ(loaded.may_contain(id(i)), b.may_contain(id(i)));
      }
    }
    blooms.erase(blooms.begin());  // frees one mapping; the others still answer
    for (int i = 0; i < kIds; i += 11) ASSERT_TRUE(blooms.back().may_contain(id(i)));
  }
}

TEST_F(TempDirTest, IdBloomHasNoFalseNegativesFewFalsePositivesAndLoadsOnlyItsOwnFiles) {
  constexpr int kIds = 200000;
  auto id = [](int i) { return fmt::format("{:08x}-0000-7000-8000-{:012x}", i * 2654435761u, i); };
  IdBloom b(uint64_t{kIds} * 2 + 1024);  // as get_by_id sizes it: ~20 bits per id
  for (int i = 0; i < kIds; ++i) b.add(id(i));
  EXPECT_EQ(b.count(), static_cast<uint64_t>(kIds));
  EXPECT_FALSE(b.full());
  for (int i = 0; i < kIds; ++i) ASSERT_TRUE(b.may_contain(id(i))) << id(i);
  int fp = 0;
  for (int i = kIds; i < 3 * kIds; ++i) fp += b.may_contain(id(i)) ? 1 : 0;
  EXPECT_LT(fp, 2 * kIds / 200) << "more than 0.5% false positives at 20 bits per id";
  // The precomputed hash answers like the key.
  for (int i = 0; i < 1000; ++i) {
    const std::string k = id(kIds + i);
    EXPECT_EQ(b.may_contain(IdBloom::hash(k)), b.may_contain(k));
  }
  // A full filter (10 bits per id) still has no false negatives.
  IdBloom small(1000);
  for (int i = 0; i < 1000; ++i) small.add(id(i));
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(small.may_contain(id(i)));
  small.add(id(1000));
  EXPECT_TRUE(small.full());

  const std::string file = path("p.bloom");
  ASSERT_TRUE(b.save(file, 42));
  IdBloom loaded;
  EXPECT_FALSE(loaded.load(file, 41)) << "another commit's filter";
  ASSERT_TRUE(loaded.load(file, 42));
  EXPECT_EQ(loaded.count(), b.count());
  EXPECT_EQ(loaded.capacity(), b.capacity());
  for (int i = 0; i < kIds; i += 7) ASSERT_TRUE(loaded.may_contain(id(i)));
  for (int i = kIds; i < kIds + 20000; ++i) {
    ASSERT_EQ(loaded.may_contain(id(i)), b.may_contain(id(i)));
  }
  auto write = [&](uint64_t magic, uint64_t words) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    const uint64_t header[5] = {magic, 42, 100, 10, words};
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    const std::vector<uint64_t> zeros(words, ~uint64_t{0});
    out.write(reinterpret_cast<const char*>(zeros.data()),
              static_cast<std::streamsize>(zeros.size() * sizeof(uint64_t)));
  };
  write(0x314d4f4c42504455ULL, 16);  // "UDPBLOM1": the format before split blocks
  EXPECT_FALSE(IdBloom().load(file, 42));
  write(0x324d4f4c42504455ULL, 12);  // not whole 512-bit blocks
  EXPECT_FALSE(IdBloom().load(file, 42));
  write(0x324d4f4c42504455ULL, 0);
  EXPECT_FALSE(IdBloom().load(file, 42));
  write(0x324d4f4c42504455ULL, 16);
  EXPECT_TRUE(IdBloom().load(file, 42));
  {  // a header that claims more words than the file holds
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    const uint64_t words = uint64_t{1} << 30;
    f.seekp(4 * sizeof(uint64_t));
    f.write(reinterpret_cast<const char*>(&words), sizeof(words));
  }
  EXPECT_FALSE(IdBloom().load(file, 42));
  { std::ofstream(file, std::ios::binary | std::ios::trunc) << "short"; }
  EXPECT_FALSE(IdBloom().load(file, 42));
}

// get_by_id through the id maps (from a partition's second lookup: one row read by rowid) gives
// exactly what the single file gives, for every id type, while partitions keep growing: a first
// batch large enough that the maps fold into buckets, then appends that wait in their tails, and
// rows with NULL ids (which the maps count but do not hold) from a bulk load.
TEST_F(PartitionedTest, GetByIdThroughIdMapsMatchesTheSingleFile) {
  for (const char* id_type : {"UUID", "VARCHAR", "BIGINT"}) {
    SCOPED_TRACE(id_type);
    const Schema schema("docs", {{"id", id_type}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts",
                        "id");
    DuckDBDataRepository single(path(std::string("single_") + id_type + ".duckdb"));
    PartitionedDataRepository parts(
        test_config(path(std::string("parts_") + id_type), PartitionStrategy::kMonthly));
    std::mt19937_64 rng(5);
    auto make_id = [&](std::size_t i) {
      const std::string t = id_type;
      if (t == "UUID") return Value(random_uuid(rng));
      if (t == "BIGINT") return Value(static_cast<int64_t>(rng() >> 1) - (int64_t{1} << 61));
      static const char* kOdd[] = {"", " ", "it's", "\xe2\x82\xac", "{0}", "a\\b", "NULL"};
      return Value(i < 7 ? std::string(kOdd[i]) : fmt::format("doc-{}-{}", i, rng() % 1000));
    };
    std::vector<Value> ids;
    std::vector<DataRecord> written;
    for (int round = 0; round < 4; ++round) {
      if (round == 2) {  // a bulk load with NULL ids in both months
        const std::string nulls =
            "SELECT CAST(NULL AS " + std::string(id_type) +
            ") AS id, TIMESTAMP '2023-01-10' + INTERVAL (i) HOUR AS ts, CAST(i AS INTEGER) AS v "
            "FROM range(1000) r(i)";
        EXPECT_EQ(parts.create_batch_from_query(schema, nulls).rows_written, 1000);
      }
      // Two monthly partitions: 10,000 rows in the first round (~5,000 each: buckets), then 300.
      const std::size_t n = round == 0 ? 10000 : 300;
      std::vector<DataRecord> rows;
      for (std::size_t i = 0; i < n; ++i) {
        const Value id = make_id(ids.size());
        ids.push_back(id);
        rows.push_back(
            DataRecord{{id,
                        Value(Timestamp{int64_t{date_from_civil(2023, 1, 1).days} * kMicrosPerDay +
                                        static_cast<int64_t>(rng() % (59ull * 86400)) * 1'000'000}),
                        Value(static_cast<int64_t>(ids.size()))}});
      }
      single.create_batch(schema, rows);
      parts.create_batch(schema, rows);
      written.insert(written.end(), rows.begin(), rows.end());
      // The new rows and 300 older ones, twice: the first lookup in a partition scans, every
      // later one uses its map (brought up to date with the rows this round appended).
      std::vector<std::size_t> probe;
      for (std::size_t i = ids.size() - n; i < ids.size(); i += round == 0 ? 4 : 1) {
        probe.push_back(i);
      }
      for (std::size_t k = 0; k < 300 && round > 0; ++k) probe.push_back(rng() % (ids.size() - n));
      const int64_t before = parts.counters().ids_found_by_rowid;
      for (int pass = 0; pass < 2; ++pass) {
        for (std::size_t i : probe) {
          auto b = parts.get_by_id(schema, ids[i]);
          ASSERT_TRUE(b.has_value()) << i;
          ASSERT_EQ(row_text(*b), row_text(written[i])) << i;
          if (pass == 0 && i % 10 == 0) {  // the single file agrees (it returns what was written)
            auto a = single.get_by_id(schema, ids[i]);
            ASSERT_TRUE(a.has_value()) << i;
            ASSERT_EQ(row_text(*b), row_text(*a)) << i;
          }
        }
      }
      // Every lookup of the second pass, and all but one per partition of the first (round 0:
      // the partition's first lookup scans), read one row by rowid.
      const int64_t by_rowid = parts.counters().ids_found_by_rowid - before;
      EXPECT_GE(by_rowid, static_cast<int64_t>(2 * probe.size()) - 2) << "round " << round;
      for (int i = 0; i < 100; ++i) {
        const Value missing = make_id(100000 + static_cast<std::size_t>(i));
        EXPECT_FALSE(single.get_by_id(schema, missing).has_value());
        EXPECT_FALSE(parts.get_by_id(schema, missing).has_value());
      }
    }
    EXPECT_GT(parts.counters().id_map_bytes, 10000 * 4);  // ~5 bytes for each of ~11,900 ids
    EXPECT_LT(parts.counters().id_map_bytes, 11900 * 7);
    EXPECT_EQ(parts.get_partition_statistics().counters.id_map_bytes,
              parts.counters().id_map_bytes);
  }
}

// A partition that keeps growing between lookups: each append folds the map's tail into a new
// segment, and after six the map is rebuilt from the partition; every id stays found.
TEST_F(PartitionedTest, IdMapsFollowManyAppendsAndRebuild) {
  const Schema schema("docs", {{"id", "BIGINT"}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts",
                      "id");
  PartitionedDataRepository parts(test_config(path("parts"), PartitionStrategy::kMonthly));
  const int64_t day0 = int64_t{date_from_civil(2023, 3, 1).days} * kMicrosPerDay;
  std::mt19937_64 rng(9);
  int64_t next = 0;
  for (int round = 0; round < 9; ++round) {
    std::vector<DataRecord> rows;
    for (int i = 0; i < 5000; ++i, ++next) {
      rows.push_back(DataRecord{
          {Value(next * 2), Value(Timestamp{day0 + (next % 86400) * 1'000'000}), Value(next % 7)}});
    }
    parts.create_batch(schema, rows);
    const int64_t before = parts.counters().ids_found_by_rowid;
    for (int i = 0; i < 60; ++i) {
      const int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(next));
      auto got = parts.get_by_id(schema, Value(k * 2));
      ASSERT_TRUE(got.has_value()) << "round " << round << " id " << k * 2;
      ASSERT_EQ(got->values[2].to_string(), std::to_string(k % 7));
      EXPECT_FALSE(parts.get_by_id(schema, Value(k * 2 + 1)).has_value());  // between two ids
    }
    if (round > 0) {
      EXPECT_GE(parts.counters().ids_found_by_rowid - before, 59) << round;
    }
  }
  EXPECT_LT(parts.counters().id_map_bytes, next * 7 + 65536);
}

// A partition replaced by a file with the same commit version and row count but other rows (a
// restore of another store's partition, as the migrator's catch-up does): the map built for the
// old file must not answer for the new one.
TEST_F(PartitionedTest, IdMapsAreNotReusedForAReplacedFileOfTheSameVersion) {
  const Schema schema("docs", {{"id", "BIGINT"}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts",
                      "id");
  const int64_t day0 = int64_t{date_from_civil(2023, 3, 1).days} * kMicrosPerDay;
  auto rows_from = [&](int64_t first) {
    std::vector<DataRecord> rows;
    for (int64_t i = 0; i < 5000; ++i) {
      rows.push_back(
          DataRecord{{Value(first + i * 3), Value(Timestamp{day0 + i * 1'000'000}), Value(i)}});
    }
    return rows;
  };
  PartitionedDataRepository a(test_config(path("a"), PartitionStrategy::kMonthly));
  std::string backup;
  {
    PartitionedDataRepository b(test_config(path("b"), PartitionStrategy::kMonthly));
    b.create_batch(schema, rows_from(1'000'001));  // ids interleave with a's: no range pruning
    backup = b.backup_partition(schema, "partition_2023_03", path("bk")).backup_file;
  }
  a.create_batch(schema, rows_from(1'000'000));
  for (int pass = 0; pass < 3; ++pass) {
    ASSERT_TRUE(a.get_by_id(schema, Value(int64_t{1'000'300})).has_value());
  }
  EXPECT_GT(a.counters().ids_found_by_rowid, 0);
  a.restore_partition(schema, backup);
  for (int pass = 0; pass < 3; ++pass) {
    for (int64_t i = 0; i < 5000; i += 97) {
      auto got = a.get_by_id(schema, Value(1'000'001 + i * 3));
      ASSERT_TRUE(got.has_value()) << i;
      EXPECT_EQ(got->values[2].to_string(), std::to_string(i));
      EXPECT_FALSE(a.get_by_id(schema, Value(1'000'000 + i * 3)).has_value()) << i;
    }
  }
}

// Lookups while a writer appends to the same partitions: every id whose batch has returned is
// found, with its row, whether the lookup used a map, extended it or scanned.
TEST_F(PartitionedTest, ConcurrentLookupsAndWritesThroughIdMaps) {
  const Schema schema("docs", {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts", "id");
  PartitionedDataRepository parts(test_config(path("parts"), PartitionStrategy::kMonthly));
  std::mutex mu;
  std::vector<std::pair<std::string, int64_t>> committed;
  std::atomic<bool> done{false};
  std::atomic<int64_t> lookups{0};
  std::thread writer([&] {
    std::mt19937_64 rng(1);
    int64_t v = 0;
    for (int b = 0; b < 40; ++b) {
      std::vector<DataRecord> rows;
      std::vector<std::pair<std::string, int64_t>> ids;
      for (int i = 0; i < 400; ++i) {
        const std::string id = random_uuid(rng);
        ids.emplace_back(id, ++v);
        rows.push_back(
            DataRecord{{Value(id),
                        Value(Timestamp{int64_t{date_from_civil(2023, 1, 1).days} * kMicrosPerDay +
                                        static_cast<int64_t>(rng() % (59ull * 86400)) * 1'000'000}),
                        Value(v)}});
      }
      parts.create_batch(schema, rows);
      std::lock_guard lock(mu);
      committed.insert(committed.end(), ids.begin(), ids.end());
    }
    done = true;
  });
  std::vector<std::thread> readers;
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(100 + static_cast<uint64_t>(t));
      while (!done || lookups < 400) {
        std::pair<std::string, int64_t> pick;
        {
          std::lock_guard lock(mu);
          if (committed.empty()) continue;
          pick = committed[rng() % committed.size()];
        }
        auto got = parts.get_by_id(schema, Value(pick.first));
        if (!got || got->values[2].to_string() != std::to_string(pick.second)) ++failures;
        if (parts.get_by_id(schema, Value(random_uuid(rng)))) ++failures;
        ++lookups;
      }
    });
  }
  writer.join();
  for (auto& r : readers) r.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(parts.counters().ids_found_by_rowid, 0);
}

// The interleaving that once stamped a filter with a commit whose ids it lacked, forced with the
// id-filter hook: commit A (version 2) is acknowledged but waits before adding its ids; a lookup
// rebuilds the filter from the file (stamped 2); commit B (version 3) waits too; then A adds its
// ids. A must not stamp the filter 3 (it lacks B's ids, and lookups trust a filter of their
// version): B's ids are found before and after B's own update, and after a reopen.
TEST_F(PartitionedTest, IdFilterIsNeverStampedWithACommitWhoseIdsItLacks) {
  const Schema schema("docs", {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts", "id");
  const int64_t jan = int64_t{date_from_civil(2023, 1, 1).days} * kMicrosPerDay;
  std::mt19937_64 rng(5);
  auto batch = [&](int64_t first_v) {
    std::vector<DataRecord> rows;
    for (int64_t i = 0; i < 50; ++i) {
      rows.push_back(DataRecord{
          {Value(random_uuid(rng)),
           Value(Timestamp{jan + static_cast<int64_t>(rng() % (27ull * 86400)) * 1'000'000}),
           Value(first_v + i)}});
    }
    return rows;
  };
  const auto first = batch(0), rows_a = batch(1000), rows_b = batch(2000);
  auto found = [&](PartitionedDataRepository& repo, const std::vector<DataRecord>& rows) {
    int n = 0;
    for (const auto& r : rows) {
      auto got = repo.get_by_id(schema, r.values[0]);
      if (got && got->values[2].to_string() == r.values[2].to_string()) ++n;
    }
    return n;
  };
  PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 0;  // each create_batch commits on its own thread
  {
    PartitionedDataRepository parts(cfg);
    parts.create_batch(schema, first);
    ASSERT_EQ(found(parts, first), 50);  // builds the filter
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int64_t> waiting;  // commit versions, in the order they reached the hook
    std::set<int64_t> released;
    parts.set_id_filter_hook([&](const std::string&, int64_t version) {
      std::unique_lock lock(mu);
      waiting.push_back(version);
      cv.notify_all();
      cv.wait(lock, [&] { return released.count(version) > 0; });
    });
    auto wait_for = [&](std::size_t n) {
      std::unique_lock lock(mu);
      return cv.wait_for(lock, std::chrono::seconds(30), [&] { return waiting.size() >= n; });
    };
    auto release = [&](int64_t version) {
      std::lock_guard lock(mu);
      released.insert(version);
      cv.notify_all();
    };
    std::thread a([&] { parts.create_batch(schema, rows_a); });
    if (!wait_for(1)) {
      release(INT64_MAX);
      a.join();
      FAIL() << "commit A never reached the id-filter hook";
    }
    const int64_t version_a = waiting[0];
    EXPECT_EQ(found(parts, rows_a), 50);  // the filter is rebuilt from the file: stamped A
    std::thread b([&] { parts.create_batch(schema, rows_b); });
    const bool b_waits = wait_for(2);
    EXPECT_TRUE(b_waits) << "commit B never reached the id-filter hook";
    release(version_a);
    a.join();
    // A's ids were already in the filter; B's update has not run: B's ids must still be found.
    EXPECT_EQ(found(parts, rows_b), 50);
    if (b_waits) {
      EXPECT_EQ(waiting[1], version_a + 1);
      release(waiting[1]);
    }
    b.join();
    EXPECT_EQ(found(parts, rows_a), 50);
    EXPECT_EQ(found(parts, rows_b), 50);
    parts.set_id_filter_hook(nullptr);
  }
  PartitionedDataRepository reopened(cfg);
  EXPECT_EQ(found(reopened, first), 50);
  EXPECT_EQ(found(reopened, rows_a), 50);
  EXPECT_EQ(found(reopened, rows_b), 50);
}

// Two writers commit to one partition while lookups rebuild and test its id filter: a commit's
// ids are added to the filter after the commit released the partition, so another commit (and a
// filter rebuilt from the file) can come in between; the filter must never be stamped with a
// commit whose ids it lacks. Every acknowledged id is found at once, and again after a reopen
// (filters saved at close are loaded).
TEST_F(PartitionedTest, ConcurrentWritersToOnePartitionKeepItsIdFilterWhole) {
  const Schema schema("docs", {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts", "id");
  const int64_t jan = int64_t{date_from_civil(2023, 1, 1).days} * kMicrosPerDay;
  std::mutex mu;
  std::vector<std::pair<std::string, int64_t>> committed;
  std::atomic<int> failures{0};
  {
    PartitionedDataRepository parts(test_config(path("parts"), PartitionStrategy::kMonthly));
    std::atomic<int> writing{2};
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w) {
      threads.emplace_back([&, w] {
        std::mt19937_64 rng(10 + static_cast<uint64_t>(w));
        for (int b = 0; b < 60; ++b) {
          std::vector<DataRecord> rows;
          std::vector<std::pair<std::string, int64_t>> ids;
          for (int i = 0; i < 20; ++i) {
            const std::string id = random_uuid(rng);
            const int64_t v = (w + 1) * 100000 + b * 100 + i;
            ids.emplace_back(id, v);
            rows.push_back(DataRecord{
                {Value(id),
                 Value(Timestamp{jan + static_cast<int64_t>(rng() % (27ull * 86400)) * 1'000'000}),
                 Value(v)}});
          }
          parts.create_batch(schema, rows);
          // Right after the acknowledgement, before this writer's next commit.
          for (const auto& [id, v] : ids) {
            auto got = parts.get_by_id(schema, Value(id));
            if (!got || got->values[2].to_string() != std::to_string(v)) ++failures;
          }
          std::lock_guard lock(mu);
          committed.insert(committed.end(), ids.begin(), ids.end());
        }
        --writing;
      });
    }
    threads.emplace_back([&] {  // looks up the newest ids and absent ones
      std::mt19937_64 rng(7);
      while (writing > 0) {
        std::pair<std::string, int64_t> pick;
        {
          std::lock_guard lock(mu);
          if (committed.empty()) continue;
          pick =
              committed[committed.size() - 1 - rng() % std::min<std::size_t>(committed.size(), 40)];
        }
        auto got = parts.get_by_id(schema, Value(pick.first));
        if (!got || got->values[2].to_string() != std::to_string(pick.second)) ++failures;
        if (parts.get_by_id(schema, Value(random_uuid(rng)))) ++failures;
      }
    });
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
    ASSERT_EQ(committed.size(), 2u * 60 * 20);
  }
  PartitionedDataRepository reopened(test_config(path("parts"), PartitionStrategy::kMonthly));
  for (const auto& [id, v] : committed) {
    auto got = reopened.get_by_id(schema, Value(id));
    ASSERT_TRUE(got) << id;
    EXPECT_EQ(got->values[2].to_string(), std::to_string(v));
  }
}

// Rows that moved (compaction rewrites a partition sorted by time under the same commit version),
// a partition restored from an older backup, two ids with the same fingerprint, a memory budget
// too small for every map, and maps turned off: every answer stays exact.
TEST_F(PartitionedTest, IdMapsFollowCompactionRestoreCollisionsAndTheirBudget) {
  const Schema schema("docs", {{"id", "BIGINT"}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts",
                      "id");
  // Two BIGINT ids with the same fingerprint (a birthday search over 32 bits).
  int64_t twin_a = 0, twin_b = 0;
  {
    std::unordered_map<uint32_t, int64_t> seen;
    std::mt19937_64 rng(3);
    while (twin_a == twin_b) {
      const int64_t v = static_cast<int64_t>(rng() >> 2);
      auto [it, fresh] = seen.emplace(id_fingerprint(&v, sizeof(v)), v);
      if (!fresh && it->second != v) {
        twin_a = it->second;
        twin_b = v;
      }
    }
  }
  const int64_t day0 = int64_t{date_from_civil(2023, 3, 1).days} * kMicrosPerDay;
  auto row = [&](int64_t id, int64_t second) {
    return DataRecord{{Value(id), Value(Timestamp{day0 + second * 1'000'000}), Value(id % 1000)}};
  };
  for (int budget_mb : {1024, 1, 0}) {
    SCOPED_TRACE(budget_mb);
    PartitionConfig cfg =
        test_config(path(fmt::format("parts_{}", budget_mb)), PartitionStrategy::kMonthly);
    cfg.id_index_memory_mb = budget_mb;
    PartitionedDataRepository parts(cfg);
    DuckDBDataRepository single(path(fmt::format("single_{}.duckdb", budget_mb)));
    // 2023-03: 60,000 rows written in reverse time order (compaction reverses them); 2023-04
    // and 2023-05: 60,000 rows each (three maps of ~1 MB: a 1 MB budget keeps evicting).
    std::vector<DataRecord> rows;
    for (int64_t i = 0; i < 60000; ++i) rows.push_back(row(1'000'000 + i, 60000 - i));
    rows.push_back(row(twin_a, 5));
    for (int64_t i = 0; i < 120000; ++i) rows.push_back(row(2'000'000 + i, 32 * 86400 + i * 40));
    single.create_batch(schema, rows);
    parts.create_batch(schema, rows);
    auto check = [&](const std::vector<int64_t>& ids) {
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t id : ids) {
          auto a = single.get_by_id(schema, Value(id));
          auto b = parts.get_by_id(schema, Value(id));
          ASSERT_EQ(a.has_value(), b.has_value()) << id;
          if (a) {
            ASSERT_EQ(row_text(*b), row_text(*a)) << id;
          }
        }
      }
    };
    std::vector<int64_t> probe = {twin_a, twin_b, 1'000'000, 1'059'999, 2'000'000, 2'119'999, 7};
    for (int64_t i = 0; i < 200; ++i) probe.push_back(1'000'000 + i * 293);
    for (int64_t i = 0; i < 200; ++i) probe.push_back(2'000'000 + i * 587);
    check(probe);
    ASSERT_FALSE(parts.get_by_id(schema, Value(twin_b)).has_value());  // twin of a stored id
    const auto backup = parts.backup_partition(schema, "partition_2023_03", path("bk"));
    // The twin lands in the same partition as its fingerprint mate; both are found.
    single.create_batch(schema, {row(twin_b, 6), row(3'000'000, 7)});
    parts.create_batch(schema, {row(twin_b, 6), row(3'000'000, 7)});
    probe.push_back(3'000'000);
    check(probe);
    ASSERT_TRUE(parts.get_by_id(schema, Value(twin_b)).has_value());
    parts.compact_partition(schema, "partition_2023_03");
    EXPECT_EQ(parts.unsorted_pairs(schema, "partition_2023_03"), 0);
    check(probe);
    // Back to the backup: the rows written after it are gone from the store.
    parts.restore_partition(schema, backup.backup_file);
    for (int pass = 0; pass < 2; ++pass) {
      EXPECT_FALSE(parts.get_by_id(schema, Value(twin_b)).has_value());
      EXPECT_FALSE(parts.get_by_id(schema, Value(int64_t{3'000'000})).has_value());
      ASSERT_TRUE(parts.get_by_id(schema, Value(twin_a)).has_value());
      ASSERT_TRUE(parts.get_by_id(schema, Value(int64_t{1'030'000})).has_value());
    }
    EXPECT_LE(parts.counters().id_map_bytes, int64_t{budget_mb} << 20);
    if (budget_mb == 0) {
      EXPECT_EQ(parts.counters().ids_found_by_rowid, 0);
      EXPECT_EQ(parts.counters().id_map_bytes, 0);
    } else {
      EXPECT_GT(parts.counters().id_map_bytes, 0);
      EXPECT_GT(parts.counters().ids_found_by_rowid, budget_mb > 1 ? 1500 : 100);
    }
  }
}

// ---- write buffering (write_buffer_mb) -------------------------------------------------------

TEST_F(PartitionedTest, WriteBufferMatchesTheSingleFileAtEveryRead) {
  // Buffered batches (1 MB budget: background drains every few batches) of every column type,
  // NULLs included, through the record, columnar and single-record APIs; reads in between must see
  // every acknowledged row and agree with the single file; nothing is left in ingest logs at
  // close, and a fresh repository reads the same rows from the files.
  auto cfg = test_config(path("buf"), PartitionStrategy::kMonthly, 6);
  cfg.write_buffer_mb = 1;
  DuckDBDataRepository single(path("single.duckdb"));
  std::mt19937_64 rng(11);
  std::vector<DataRecord> all;
  {
    PartitionedDataRepository repo(cfg);
    for (int round = 0; round < 24; ++round) {
      auto rows = random_wide_rows(rng, 200 + rng() % 2500, date_from_civil(2022, 1, 1),
                                   date_from_civil(2023, 12, 31));
      if (round % 3 == 0) {
        EXPECT_EQ(repo.create_batch(schema_, rows).rows_written, static_cast<int64_t>(rows.size()));
      } else {
        const BatchResult r = repo.create_batch_columnar(schema_, records_to_batch(schema_, rows));
        EXPECT_EQ(r.rows_written, static_cast<int64_t>(rows.size()));
      }
      single.create_batch(schema_, rows);
      all.insert(all.end(), rows.begin(), rows.end());
      if (round % 5 == 4) {  // one record through create(): its row is returned as stored
        std::map<std::string, Value> one;
        for (std::size_t c = 0; c < schema_.columns().size(); ++c) {
          one[schema_.columns()[c].name] = rows[0].values[c];
        }
        one["id"] = Value(random_uuid(rng));
        const DataRecord back = repo.create(schema_, one);
        EXPECT_EQ(back.values[0].to_string(), one["id"].to_string());
        DataRecord rec;
        for (const auto& c : schema_.columns()) rec.values.push_back(one[c.name]);
        single.create_batch(schema_, {rec});
        all.push_back(rec);
      }
      if (round % 4 == 1) {
        ASSERT_EQ(repo.count_all(schema_), static_cast<int64_t>(all.size()));
        // A range over a few months, a lookup by id, and SQL over everything.
        auto q = where({{"ts", FilterOperator::kGte, Value("2022-05-01")},
                        {"ts", FilterOperator::kLt, Value("2022-09-01")}});
        q.limit = 1000000;
        EXPECT_TRUE(sorted_texts(repo.get_all(schema_, q).items) ==
                    sorted_texts(single.get_all(schema_, q).items));
        const DataRecord& probe = all[rng() % all.size()];
        auto got = repo.get_by_id(schema_, probe.values[0]);
        ASSERT_TRUE(got.has_value());
        EXPECT_EQ(row_text(*got), row_text(*single.get_by_id(schema_, probe.values[0])));
        const std::string sql =
            "SELECT count(*), count(ref), sum(qty), sum(big), min(name), max(day) FROM events";
        std::vector<DataRecord> a, b;
        auto sa = repo.query_sql(sql);
        for (DataRecord r; sa.next(r);) a.push_back(r);
        auto sb = single.query_sql(sql);
        for (DataRecord r; sb.next(r);) b.push_back(r);
        EXPECT_EQ(sorted_texts(a), sorted_texts(b));
      }
    }
    const RepositoryCounters c = repo.counters();
    EXPECT_EQ(c.rows_buffered, static_cast<int64_t>(all.size()));
    EXPECT_GT(c.buffer_drains, 2);
  }
  for (const auto& f : std::filesystem::directory_iterator(path("buf/events"))) {
    EXPECT_FALSE(f.path().filename().string().starts_with(kIngestPrefix)) << f.path();
  }
  PartitionedDataRepository fresh(test_config(path("buf"), PartitionStrategy::kMonthly));
  DataQueryRequest q;
  q.limit = 10000000;
  const auto got = fresh.get_all(schema_, q).items;
  EXPECT_EQ(got.size(), all.size());
  EXPECT_TRUE(sorted_texts(got) == sorted_texts(single.get_all(schema_, q).items));
}

// The ingest logs left in a table's directory (buffered rows not yet committed).
static int ingest_logs_in(const std::string& dir) {
  int n = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().filename().string().rfind("_ingest_", 0) == 0) ++n;
  }
  return n;
}

// The size of the one ingest log in `dir` (0 when there is none).
static uint64_t ingest_log_bytes(const std::string& dir) {
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().filename().string().rfind("_ingest_", 0) == 0) return f.file_size();
  }
  return 0;
}

TEST_F(PartitionedTest, WriteBufferKeepsNothingOfABatchItsLogCouldNotHold) {
  // The disk refuses a buffered batch's log record (a real file size limit: RLIMIT_FSIZE, EFBIG).
  // The call fails naming the log, and none of its rows stay buffered, whether the record was
  // written while the rows were copied into the buffer (20,000 rows: on a second thread) or
  // before (2,000 rows). Written again afterwards, every row lands exactly once.
  auto cfg = test_config(path("buf"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 256;  // nothing drains on its own
  cfg.write_buffer_max_delay_ms = 0;
  std::mt19937_64 rng(29);
  const Date from = date_from_civil(2023, 1, 1), to = date_from_civil(2023, 3, 31);
  auto first = random_wide_rows(rng, 3000, from, to);
  std::vector<DataRecord> all = first;
  std::vector<std::vector<DataRecord>> refused;
  {
    PartitionedDataRepository repo(cfg);
    repo.create_batch(schema_, first);
    const std::string dir = path("buf/events");
    ASSERT_GT(ingest_log_bytes(dir), 0u);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old_limit{};
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    for (const std::size_t n : {std::size_t{20'000}, std::size_t{2'000}}) {
      refused.push_back(random_wide_rows(rng, n, from, to));
      rlimit lim = old_limit;
      lim.rlim_cur = ingest_log_bytes(dir) + 8192;  // room for part of the record, not all
      ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
      const std::string msg = error_of([&] { repo.create_batch(schema_, refused.back()); });
      ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
      EXPECT_NE(msg.find("cannot write a batch"), std::string::npos) << msg;
      EXPECT_NE(msg.find("_ingest_"), std::string::npos) << msg;
      EXPECT_EQ(repo.counters().rows_buffered, 3000) << n;
    }
    std::signal(SIGXFSZ, old_handler);
    // A batch written next lands in the same buffered partitions, after the rows kept.
    const auto third = random_wide_rows(rng, 500, from, to);
    repo.create_batch(schema_, third);
    all.insert(all.end(), third.begin(), third.end());
    // The buffer and the log hold those two batches only: a read drains exactly their rows (the
    // oracle: the same rows in one DuckDB file).
    DuckDBDataRepository single(path("first.duckdb"));
    single.create_batch(schema_, all);
    DataQueryRequest q;
    q.limit = 10'000'000;
    EXPECT_TRUE(sorted_texts(repo.get_all(schema_, q).items) ==
                sorted_texts(single.get_all(schema_, q).items));
    for (const auto& r : refused) {
      repo.create_batch(schema_, r);
      all.insert(all.end(), r.begin(), r.end());
    }
    EXPECT_EQ(repo.counters().rows_buffered, 25'500);
  }
  PartitionedDataRepository fresh(cfg);
  DuckDBDataRepository single(path("all.duckdb"));
  single.create_batch(schema_, all);
  DataQueryRequest q;
  q.limit = 10'000'000;
  const auto got = fresh.get_all(schema_, q).items;
  EXPECT_EQ(got.size(), 25'500u);
  EXPECT_TRUE(sorted_texts(got) == sorted_texts(single.get_all(schema_, q).items));
}

TEST_F(PartitionedTest, TimedDrainCommitsAnIdleWritersRows) {
  // A writer that stops after a buffered call: without a timed drain its rows stay in the ingest
  // log until its next operation; with write_buffer_max_delay_ms they are committed in the
  // background once the first has waited that long, without any call of the writer (the log is
  // deleted only after the commit), and every later read sees them with no further drain.
  std::mt19937_64 rng(17);
  auto rows =
      random_wide_rows(rng, 3000, date_from_civil(2023, 1, 1), date_from_civil(2023, 4, 30));
  const std::vector<DataRecord> first(rows.begin(), rows.begin() + 1000);
  const std::vector<DataRecord> second(rows.begin() + 1000, rows.end());
  {
    auto cfg = test_config(path("untimed"), PartitionStrategy::kMonthly);
    cfg.write_buffer_mb = 64;
    cfg.write_buffer_max_delay_ms = 0;
    PartitionedDataRepository repo(cfg);
    repo.create_batch(schema_, first);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    EXPECT_EQ(repo.counters().buffer_drains, 0);
    EXPECT_EQ(ingest_logs_in(path("untimed/events")), 1);
  }
  auto cfg = test_config(path("timed"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 64;
  cfg.write_buffer_max_delay_ms = 150;
  {
    PartitionedDataRepository repo(cfg);
    const auto wait_for_drains = [&](int64_t n) {
      for (int i = 0; i < 600 && repo.counters().buffer_drains < n; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      // The drain's log is deleted after its commit: wait for that too.
      for (int i = 0; i < 200 && ingest_logs_in(path("timed/events")) > 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    };
    repo.create_batch(schema_, first);
    wait_for_drains(1);
    RepositoryCounters c = repo.counters();
    EXPECT_EQ(c.buffer_drains, 1);
    EXPECT_EQ(c.timed_buffer_drains, 1);
    EXPECT_EQ(ingest_logs_in(path("timed/events")), 0);
    EXPECT_EQ(repo.count_all(schema_), 1000);
    // The next buffered call starts a new set with its own clock.
    repo.create_batch_columnar(schema_, records_to_batch(schema_, second));
    wait_for_drains(2);
    c = repo.counters();
    EXPECT_EQ(c.buffer_drains, 2);
    EXPECT_EQ(c.timed_buffer_drains, 2);
    EXPECT_EQ(ingest_logs_in(path("timed/events")), 0);
    DuckDBDataRepository single(path("single.duckdb"));
    single.create_batch(schema_, rows);
    DataQueryRequest q;
    q.limit = 10000;
    EXPECT_TRUE(sorted_texts(repo.get_all(schema_, q).items) ==
                sorted_texts(single.get_all(schema_, q).items));
    EXPECT_EQ(repo.counters().buffer_drains, 2);  // the reads found nothing to drain
  }
  // The files hold every row (plain DuckDB, no duckpart).
  int64_t in_files = 0;
  for (const auto& f : std::filesystem::directory_iterator(path("timed/events"))) {
    if (f.path().extension() != ".duckdb") continue;
    in_files += duck::Database::open(f.path().string(), true)
                    .connect()
                    .query_int("SELECT count(*) FROM events");
  }
  EXPECT_EQ(in_files, 3000);
}

// A stream that writes fast enough to fill the buffer within six delays is not cut by the timer
// before the buffer is full (its commits would shrink to what one delay brings), even before its
// first full drain; once it stops, its rows are committed after the delay as usual.
TEST_F(PartitionedTest, TimedDrainsWaitWhileAFastStreamIsWritten) {
  auto cfg = test_config(path("stream"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 256;  // full at ~227 MB (partitions past 491,520 rows drain early)
  cfg.write_buffer_max_delay_ms = 2000;
  std::mt19937_64 rng(35);
  // Over 6 months: no partition reaches the early hand-over during the stream.
  const auto rows =
      random_wide_rows(rng, 20000, date_from_civil(2023, 1, 1), date_from_civil(2023, 6, 30));
  const ColumnBatch batch = records_to_batch(schema_, rows);
  PartitionedDataRepository repo(cfg);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  int calls = 0;
  // 2.5 delays of a call every 50 ms: ~400K rows/s, ~40 MB/s (~100 bytes per row logged), about
  // twice the rate that fills the buffer within six delays (~19 MB/s).
  while (clock::now() - t0 < std::chrono::milliseconds(5000)) {
    repo.create_batch_columnar(schema_, batch);
    ++calls;
    std::this_thread::sleep_until(t0 + calls * std::chrono::milliseconds(50));
  }
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  const double rate = calls * 20000.0 / secs;
  const RepositoryCounters during = repo.counters();
  if (rate < 300'000) {
    GTEST_SKIP() << "this build wrote " << rate << " rows/s, too slow to be a fast stream";
  }
  EXPECT_EQ(during.timed_buffer_drains, 0) << "a fast stream was cut by the timer";
  // Stopped: within a few ticks past the delay its rows are committed by the timer.
  for (int i = 0; i < 400 && repo.counters().timed_buffer_drains == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(repo.counters().timed_buffer_drains, 1);
  EXPECT_EQ(repo.count_all(schema_), int64_t{calls} * 20000);
}

TEST_F(PartitionedTest, ManySmallBufferedCallsAreDrainedByTheirLogsSize) {
  // One-row calls take a 4 KB log record each but almost no buffer memory: a new log is started
  // every quarter of the budget (1 MB: 256 KB, ~64 records), and the partitions holding the oldest
  // log are handed to a drain when the live logs reach twice the budget, so the logs stay bounded;
  // every row is kept, and the logs are gone at close.
  auto cfg = test_config(path("small"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 1;
  std::mt19937_64 rng(5);
  std::vector<DataRecord> all;
  {
    PartitionedDataRepository repo(cfg);
    for (int i = 0; i < 1200; ++i) {
      auto rows =
          random_wide_rows(rng, 1, date_from_civil(2022, 1, 1), date_from_civil(2022, 3, 31));
      repo.create_batch(schema_, rows);
      all.push_back(rows[0]);
      uint64_t log_bytes = 0;
      for (const auto& f : std::filesystem::directory_iterator(path("small/events"))) {
        if (f.path().filename().string().rfind("_ingest_", 0) != 0) continue;
        std::error_code ec;  // a background drain may delete the log meanwhile
        const uint64_t n = std::filesystem::file_size(f.path(), ec);
        if (ec) continue;
        ASSERT_LE(n, 256u * 1024 + 4096) << f.path() << " after call " << i;
        log_bytes += n;
      }
      ASSERT_LE(log_bytes, 2u * 1024 * 1024 + 8192) << "after call " << i;
    }
    EXPECT_GE(repo.counters().buffer_drains, 2);
    EXPECT_EQ(repo.count_all(schema_), 1200);
  }
  PartitionedDataRepository again(cfg);
  EXPECT_EQ(again.count_all(schema_), 1200);
  for (const auto& f : std::filesystem::directory_iterator(path("small/events"))) {
    EXPECT_NE(f.path().filename().string().rfind("_ingest_", 0), 0u) << f.path();
  }
}

// Buffered rows reach each partition file sorted by time, ties in the order they were written,
// every value intact: every call's rows of a partition are buffered as one sorted run and the drain
// merges the runs (one month: 24 runs of 1,000 rows), or sorts when the runs are too short to be
// worth merging (the other month: 300 runs of 2 rows). Timestamps repeat (40 values per month) so
// that most rows tie; text of every length from empty to past DuckDB's 12-byte inline strings.
TEST_F(PartitionedTest, BufferedRowsReachTheirPartitionsInTimeOrderTiesInWriteOrder) {
  const Schema schema(
      "runs", {{"id", "BIGINT"}, {"ts", "TIMESTAMP"}, {"seq", "BIGINT"}, {"note", "VARCHAR"}}, "ts",
      "id");
  auto note_of = [](int64_t seq) {
    return std::string(static_cast<std::size_t>(seq % 23), static_cast<char>('a' + seq % 26));
  };
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 256;  // everything stays buffered until flush()
  std::mt19937_64 rng(5);
  int64_t seq = 0;
  auto add = [&](ColumnBatch& b, int month) {
    const int64_t day0 = date_from_civil(2024, static_cast<unsigned>(month), 1).days;
    std::get<std::vector<int64_t>>(b.columns[0].data).push_back(seq);
    std::get<std::vector<int64_t>>(b.columns[1].data)
        .push_back((day0 + static_cast<int64_t>(rng() % 40) / 2) * kMicrosPerDay +
                   static_cast<int64_t>(rng() % 2) * 3'600'000'000);
    std::get<std::vector<int64_t>>(b.columns[2].data).push_back(seq);
    std::get<std::vector<std::string>>(b.columns[3].data).push_back(note_of(seq));
    ++b.rows;
    ++seq;
  };
  {
    PartitionedDataRepository repo(cfg);
    for (int call = 0; call < 300; ++call) {
      ColumnBatch b = make_column_batch(schema);
      if (call % 12 == 0) {  // 25 calls with 1,000 rows of March among rows of April
        for (int i = 0; i < 1000; ++i) add(b, i % 7 == 3 ? 4 : 3);
      }
      for (int i = 0; i < 2; ++i) add(b, 4);
      repo.create_batch_columnar(schema, std::move(b));
    }
    repo.flush();
    EXPECT_EQ(repo.count_all(schema), seq);
  }
  int64_t rows = 0;
  for (int month : {3, 4}) {
    const PartitionKey key =
        partition_key_of(PartitionStrategy::kMonthly, date_from_civil(2024, month, 1));
    duck::Database db = duck::Database::open(path("parts/runs/" + key.file_name()), true);
    duck::Connection c = db.connect();
    // In time order by rowid; among equal times, in write order.
    EXPECT_EQ(c.query_int("SELECT count(*) FROM (SELECT ts < lag(ts) OVER w OR (ts = lag(ts) OVER "
                          "w AND seq < lag(seq) OVER w) AS bad FROM runs WINDOW w AS (ORDER BY "
                          "rowid)) WHERE bad"),
              0)
        << key.file_name();
    EXPECT_GT(c.query_int("SELECT count(*) - count(DISTINCT ts) FROM runs"), 1000);
    // Every value intact (note_of in SQL).
    EXPECT_EQ(c.query_int("SELECT count(*) FROM runs WHERE note IS DISTINCT FROM "
                          "repeat(chr(CAST(97 + seq % 26 AS INTEGER)), CAST(seq % 23 AS INTEGER)) "
                          "OR id <> seq"),
              0)
        << key.file_name();
    rows += c.query_int("SELECT count(*) FROM runs");
  }
  EXPECT_EQ(rows, seq);
}

// A partition that holds four row groups' worth of buffered rows (491,520) is handed to a
// background drain without waiting for the buffer to fill or for flush(); one with fewer stays
// buffered.
TEST_F(PartitionedTest, WriteBufferDrainsAPartitionPastFourRowGroupsEarly) {
  const Schema schema("early", {{"id", "BIGINT"}, {"ts", "TIMESTAMP"}}, "ts", "id");
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 1024;  // far from full
  cfg.write_buffer_max_delay_ms = 0;
  PartitionedDataRepository repo(cfg);
  auto batch_of = [&](int64_t first_id, int64_t n, int month) {
    ColumnBatch b = make_column_batch(schema);
    const int64_t t0 =
        int64_t{date_from_civil(2024, static_cast<unsigned>(month), 1).days} * kMicrosPerDay;
    for (int64_t i = 0; i < n; ++i) {
      std::get<std::vector<int64_t>>(b.columns[0].data).push_back(first_id + i);
      std::get<std::vector<int64_t>>(b.columns[1].data).push_back(t0 + (i * 7919) % 86'400'000'000);
    }
    b.rows = static_cast<std::size_t>(n);
    return b;
  };
  repo.create_batch_columnar(schema, batch_of(0, 400'000, 1));
  repo.create_batch_columnar(schema, batch_of(400'000, 1000, 2));
  EXPECT_EQ(repo.counters().buffer_drains, 0);
  repo.create_batch_columnar(schema, batch_of(401'000, 91'520, 1));  // January: 491,520 rows
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (repo.counters().buffer_drains == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // January alone was committed (one partition commit); February is still buffered.
  EXPECT_EQ(repo.counters().buffer_drains, 1);
  EXPECT_EQ(repo.counters().batches_committed, 1);
  EXPECT_EQ(repo.counters().rows_buffered, 492'520);
  // A read drains the rest first and sees every row.
  EXPECT_EQ(repo.count_all(schema), 492'520);
  EXPECT_EQ(repo.counters().batches_committed, 2);
}

TEST_F(PartitionedTest, LargeBufferedBatchesTakenOnSeveralThreadsMatchTheSingleFile) {
  // Batches of 65,536+ rows are validated, sorted and copied into the write buffer on several
  // threads (ids and UUIDs in ranges of 32,768 rows, one task per partition's sort, one per
  // column's copy; 3 helper threads forced, whatever the machine). Every column type, NULLs, ids
  // in upper case written straight into the columns: the rows must match the single file's; a
  // batch with bad values in several ranges fails naming the first in record order, with nothing
  // of it buffered.
  struct Helpers {
    Helpers() { intake_helpers_override.store(3); }
    ~Helpers() { intake_helpers_override.store(-1); }
  } helpers;
  auto cfg = test_config(path("buf"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 512;  // nothing drains on its own
  cfg.write_buffer_max_delay_ms = 0;
  DuckDBDataRepository single(path("single.duckdb"));
  std::mt19937_64 rng(36);
  const Date from = date_from_civil(2023, 1, 1), to = date_from_civil(2023, 7, 31);
  auto ids_of = [](ColumnBatch& b) -> std::vector<std::string>& {
    return std::get<std::vector<std::string>>(b.columns[0].data);
  };
  auto refs_of = [](ColumnBatch& b) -> std::vector<std::string>& {
    return std::get<std::vector<std::string>>(b.columns[10].data);
  };
  std::vector<DataRecord> all;
  {
    PartitionedDataRepository repo(cfg);
    for (int round = 0; round < 2; ++round) {
      auto rows = random_wide_rows(rng, 70'000 + 5'000 * static_cast<std::size_t>(round), from, to);
      ColumnBatch b = records_to_batch(schema_, rows);
      for (std::size_t r = 0; r < b.rows; r += 7) {  // upper case: made canonical
        std::string& id = ids_of(b)[r];
        std::transform(id.begin(), id.end(), id.begin(),
                       [](char ch) { return static_cast<char>(std::toupper(ch)); });
      }
      const BatchResult res = repo.create_batch_columnar(schema_, std::move(b));
      EXPECT_EQ(res.rows_written, static_cast<int64_t>(rows.size()));
      EXPECT_EQ(res.partitions_written, 7);
      single.create_batch(schema_, rows);
      all.insert(all.end(), rows.begin(), rows.end());
    }
    EXPECT_EQ(repo.counters().buffer_drains, 0);
    EXPECT_EQ(repo.counters().rows_buffered, static_cast<int64_t>(all.size()));
    // Bad values in two ranges of 32,768 rows; in the first, a UUID column's value 10 rows before
    // a bad id: the error names record 40,000 (record order before column order), then, that
    // one mended, record 40,010.
    ColumnBatch bad = records_to_batch(schema_, random_wide_rows(rng, 100'000, from, to));
    refs_of(bad)[90'000] = "not-a-uuid-90000";
    ids_of(bad)[40'010] = "not-a-uuid-40010";
    refs_of(bad)[40'000] = "not-a-uuid-40000";
    ErrorCode code{};
    std::string msg = error_of([&] { repo.create_batch_columnar(schema_, bad); }, &code);
    EXPECT_EQ(code, ErrorCode::kInvalidArgument) << msg;
    EXPECT_NE(msg.find("record 40000: column 'ref'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not-a-uuid-40000"), std::string::npos) << msg;
    refs_of(bad)[40'000] = ids_of(bad)[1];
    msg = error_of([&] { repo.create_batch_columnar(schema_, bad); });
    EXPECT_NE(msg.find("record 40010: id column 'id'"), std::string::npos) << msg;
    EXPECT_EQ(repo.counters().rows_buffered, static_cast<int64_t>(all.size()));
    DataQueryRequest q;
    q.limit = 10'000'000;
    const auto got = repo.get_all(schema_, q).items;  // drains first
    ASSERT_EQ(got.size(), all.size());
    EXPECT_TRUE(sorted_texts(got) == sorted_texts(single.get_all(schema_, q).items));
    EXPECT_EQ(repo.counters().buffer_drains, 1);
    for (std::size_t r = 0; r < all.size(); r += 9973) {
      const auto found = repo.get_by_id(schema_, all[r].values[0]);
      ASSERT_TRUE(found.has_value()) << r;
      EXPECT_EQ(row_text(*found), row_text(*single.get_by_id(schema_, all[r].values[0]))) << r;
    }
  }
  // Each partition file holds its rows in time order (what the files hold: the drain would sort
  // a run it found out of order).
  for (unsigned month = 1; month <= 7; ++month) {
    const PartitionKey key =
        partition_key_of(PartitionStrategy::kMonthly, date_from_civil(2023, month, 1));
    duck::Database db = duck::Database::open(path("buf/events/" + key.file_name()), true);
    duck::Connection c = db.connect();
    EXPECT_GT(c.query_int("SELECT count(*) FROM events"), 15'000) << key.file_name();
    EXPECT_EQ(c.query_int("SELECT count(*) FROM (SELECT ts < lag(ts) OVER (ORDER BY rowid) AS bad "
                          "FROM events) WHERE bad"),
              0)
        << key.file_name();
  }
}

TEST_F(PartitionedTest, WriteBufferRefusesBadRowsWithoutLosingBufferedOnes) {
  auto cfg = test_config(path("buf"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 64;  // nothing drains on its own
  cfg.write_buffer_max_delay_ms = 0;
  PartitionedDataRepository repo(cfg);
  std::mt19937_64 rng(3);
  auto good = random_wide_rows(rng, 500, date_from_civil(2023, 1, 1), date_from_civil(2023, 3, 31));
  repo.create_batch(schema_, good);
  EXPECT_EQ(repo.counters().buffer_drains, 0);
  // A NULL partition value and a malformed UUID: refused with nothing logged or buffered.
  auto bad = random_wide_rows(rng, 50, date_from_civil(2023, 1, 1), date_from_civil(2023, 3, 31));
  bad[7].values[1] = Value{};
  std::string msg = error_of([&] { repo.create_batch(schema_, bad); });
  EXPECT_NE(msg.find("ts"), std::string::npos) << msg;
  bad[7].values[1] = good[0].values[1];
  bad[9].values[10] = Value("not-a-uuid");
  msg = error_of([&] { repo.create_batch(schema_, bad); });
  EXPECT_NE(msg.find("not-a-uuid"), std::string::npos) << msg;
  // NULL ids are assigned at buffering time: distinct, and found.
  auto no_ids =
      random_wide_rows(rng, 20, date_from_civil(2023, 2, 1), date_from_civil(2023, 2, 28));
  for (auto& r : no_ids) r.values[0] = Value{};
  EXPECT_EQ(repo.create_batch(schema_, no_ids).ids_generated, 20);
  EXPECT_EQ(repo.count_all(schema_), 520);  // the read drains
  EXPECT_EQ(repo.counters().buffer_drains, 1);
  auto q = where({{"ts", FilterOperator::kGte, Value("2023-02-01")},
                  {"ts", FilterOperator::kLt, Value("2023-03-01")}});
  q.limit = 100000;
  std::set<std::string> ids;
  for (const auto& r : repo.get_all(schema_, q).items) {
    ASSERT_FALSE(r.values[0].is_null());
    ids.insert(r.values[0].to_string());
  }
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(repo.get_all(schema_, q).total));
  // A batch id bypasses the buffer (its replay protection needs the id in the partitions).
  BatchOptions o;
  o.batch_id = "explicit-1";
  auto more = random_wide_rows(rng, 30, date_from_civil(2023, 1, 1), date_from_civil(2023, 1, 31));
  EXPECT_EQ(repo.create_batch(schema_, more, o).rows_written, 30);
  EXPECT_EQ(repo.create_batch(schema_, more, o).rows_skipped, 30);
  EXPECT_EQ(repo.count_all(schema_), 550);
}

TEST_F(PartitionedTest, IngestLogIsReplayedExactlyOnceAndItsTornTailIgnored) {
  // What a crash leaves: an ingest log whose drain had committed one partition (with the log's id)
  // and a record cut short at its end. Read-only opens name it; the next writable open applies it
  // once, skipping the committed partition, and deletes it.
  const std::string id = "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0001";
  std::mt19937_64 rng(9);
  auto rows =
      random_wide_rows(rng, 3000, date_from_civil(2023, 1, 1), date_from_civil(2023, 4, 30));
  auto more = random_wide_rows(rng, 700, date_from_civil(2023, 3, 1), date_from_civil(2023, 6, 30));
  std::vector<DataRecord> march;  // every row of the log in 2023_03
  for (const auto* part : {&rows, &more}) {
    for (const auto& r : *part) {
      if (r.values[1].to_string().starts_with("2023-03")) march.push_back(r);
    }
  }
  ASSERT_GT(march.size(), 100u);
  {
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
    BatchOptions o;
    o.batch_id = id;
    repo.create_batch(schema_, march, o);  // the drain's commit of partition 2023_03
  }
  {
    // Two records, UUID columns as text in one and as parsed values in the other.
    IngestLog log = IngestLog::create(path("parts/events/") + kIngestPrefix + id + ".log");
    log.append(records_to_batch(schema_, rows), {});
    ColumnBatch b = records_to_batch(schema_, more);
    std::vector<std::vector<duckdb_hugeint>> uuids(schema_.columns().size());
    for (std::size_t c : {std::size_t{0}, std::size_t{10}}) {
      const ColumnVector& col = b.columns[c];
      const auto& text = std::get<std::vector<std::string>>(col.data);
      uuids[c].resize(b.rows);
      for (std::size_t r = 0; r < b.rows; ++r) {
        if (col.is_valid(r)) {
          ASSERT_TRUE(duck::uuid_parse(text[r], uuids[c][r]));
        }
      }
    }
    log.append(b, uuids);
  }
  {
    std::ofstream torn(path("parts/events/") + kIngestPrefix + id + ".log",
                       std::ios::binary | std::ios::app);
    const char junk[] = "DPPK\x0b\0\0\0partial";
    torn.write(junk, sizeof junk);  // a record whose write was cut off
  }
  {
    PartitionedRepositoryOptions ro;
    ro.read_only = true;
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly), ro);
    const StorageStatistics st = repo.get_partition_statistics();
    ASSERT_EQ(st.schemas.size(), 1u);
    std::string problems = fmt::format("{}", fmt::join(st.schemas[0].problems, "\n"));
    EXPECT_NE(problems.find("ingest log"), std::string::npos) << problems;
    EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(march.size()));
    // A clean-up's dry run (what the CLI opens read-only) says the real run may differ.
    PartitionUtilities util(repo);
    const CleanupResult dry = util.cleanup(schema_, 0, date_from_civil(2024, 1, 1), true);
    EXPECT_EQ(dry.removed.size(), 1u);  // 2023_03, the only partition written
    ASSERT_EQ(dry.notes.size(), 1u);
    EXPECT_NE(dry.notes[0].find(id), std::string::npos) << dry.notes[0];
    EXPECT_NE(dry.to_text().find("the real run commits those rows first"), std::string::npos)
        << dry.to_text();
  }
  DuckDBDataRepository oracle(path("oracle.duckdb"));
  oracle.create_batch(schema_, rows);
  oracle.create_batch(schema_, more);
  DataQueryRequest all;
  all.limit = 1000000;
  const auto want = sorted_texts(oracle.get_all(schema_, all).items);
  ASSERT_EQ(want.size(), rows.size() + more.size());
  for (int open = 0; open < 2; ++open) {
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
    EXPECT_TRUE(sorted_texts(repo.get_all(schema_, all).items) == want);
    EXPECT_EQ(repo.count_all(schema_), static_cast<int64_t>(want.size()));
    EXPECT_EQ(repo.counters().ingest_logs_replayed, open == 0 ? 1 : 0);
    EXPECT_FALSE(std::filesystem::exists(path("parts/events/") + kIngestPrefix + id + ".log"));
  }
}

TEST_F(PartitionedTest, RepartitionCommitsPendingIngestLogsFirstAndADryRunSaysSo) {
  // Acknowledged rows in an ingest log (a writer with write buffering that stopped before its
  // drain) are part of the table: re-partitioning used to refuse the table until someone opened
  // it for writing. A dry run plans without them and says so; a real run commits them to the old
  // partitions first, then copies and verifies every row.
  std::mt19937_64 rng(31);
  auto committed =
      random_wide_rows(rng, 2000, date_from_civil(2022, 11, 1), date_from_civil(2023, 2, 28));
  auto buffered =
      random_wide_rows(rng, 900, date_from_civil(2022, 12, 1), date_from_civil(2023, 5, 31));
  {
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
    repo.create_batch(schema_, committed);
  }
  const std::string log_file =
      path("parts/events/") + kIngestPrefix + "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0031.log";
  IngestLog::create(log_file).append(records_to_batch(schema_, buffered), {});
  RepartitionOptions o;
  o.table = schema_.name();
  o.to = PartitionStrategy::kYearly;
  o.batch_size = 700;
  o.dry_run = true;
  const RepartitionResult dry =
      repartition(test_config(path("parts"), PartitionStrategy::kMonthly), o);
  EXPECT_EQ(dry.rows, static_cast<int64_t>(committed.size()));
  ASSERT_EQ(dry.notes.size(), 1u);
  EXPECT_NE(dry.notes[0].find(log_file), std::string::npos) << dry.notes[0];
  EXPECT_NE(dry.to_text().find("the real run commits them first"), std::string::npos)
      << dry.to_text();
  EXPECT_TRUE(std::filesystem::exists(log_file)) << "a dry run writes nothing";

  o.dry_run = false;
  const RepartitionResult r =
      repartition(test_config(path("parts"), PartitionStrategy::kMonthly), o);
  EXPECT_TRUE(r.swapped) << r.to_text();
  EXPECT_EQ(r.mismatches, 0);
  EXPECT_EQ(r.rows, static_cast<int64_t>(committed.size() + buffered.size()));
  ASSERT_GE(r.notes.size(), 1u);  // (and ids a merge could not carry)
  EXPECT_NE(r.to_text().find("committed the buffered rows of 1 ingest log(s)"), std::string::npos)
      << r.to_text();
  EXPECT_FALSE(std::filesystem::exists(log_file));

  DuckDBDataRepository oracle(path("oracle.duckdb"));
  oracle.create_batch(schema_, committed);
  oracle.create_batch(schema_, buffered);
  DataQueryRequest all;
  all.limit = 1000000;
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kYearly));
  EXPECT_TRUE(sorted_texts(repo.get_all(schema_, all).items) ==
              sorted_texts(oracle.get_all(schema_, all).items));
  const StorageStatistics st = repo.get_partition_statistics();
  ASSERT_EQ(st.schemas.size(), 1u);
  EXPECT_EQ(st.schemas[0].partitions.size(), 2u);  // 2022 and 2023
  EXPECT_TRUE(st.schemas[0].problems.empty())
      << fmt::format("{}", fmt::join(st.schemas[0].problems, "\n"));
}

TEST_F(PartitionedTest, RepartitionCarriesBatchIdsWithTheirRowsAndMarksTheOnesItCannot) {
  // Monthly partitions: batch A spans 2022-11 and 2022-12, D is only in 2022-05, B only in
  // 2023-01. Merged into years, 2022's months do not all hold A or D: those ids are not carried,
  // but a marker with their rows says that something other than a migration wrote 2022 (so that
  // `migrate`'s catch-up keeps it). B is carried with its rows; split into months again, its
  // rows go to one month only, so that the months together still hold B whole.
  std::mt19937_64 rng(47);
  const auto a =
      random_wide_rows(rng, 300, date_from_civil(2022, 11, 1), date_from_civil(2022, 12, 31));
  const auto d =
      random_wide_rows(rng, 200, date_from_civil(2022, 5, 1), date_from_civil(2022, 5, 31));
  const auto b =
      random_wide_rows(rng, 100, date_from_civil(2023, 1, 1), date_from_civil(2023, 1, 31));
  const PartitionConfig monthly = test_config(path("parts"), PartitionStrategy::kMonthly);
  const PartitionConfig yearly = test_config(path("parts"), PartitionStrategy::kYearly);
  {
    PartitionedDataRepository repo(monthly);
    repo.create_batch(schema_, a, {.batch_id = "app-A"});
    repo.create_batch(schema_, d, {.batch_id = "app-D"});
    repo.create_batch(schema_, b, {.batch_id = "app-B"});
  }
  auto batches = [&](const PartitionConfig& cfg, const std::string& name) {
    PartitionedDataRepository repo(cfg);
    std::map<std::string, int64_t> out;
    for (const auto& x : repo.partition_batches(schema_, name)) {
      if (!x.batch_id.starts_with("repartition:")) out[x.batch_id] += x.rows;
    }
    return out;
  };
  RepartitionOptions o;
  o.table = schema_.name();
  o.to = PartitionStrategy::kYearly;
  const RepartitionResult merged = repartition(monthly, o);
  ASSERT_TRUE(merged.swapped) << merged.to_text();
  ASSERT_EQ(merged.notes.size(), 1u) << merged.to_text();
  EXPECT_NE(merged.notes[0].find("2 batch id(s) held by only some"), std::string::npos)
      << merged.notes[0];
  const std::map<std::string, int64_t> y2022 = {{"merged: 2 batch id(s) such as 'app-A'", 500}};
  EXPECT_EQ(batches(yearly, "partition_2022"), y2022);
  const std::map<std::string, int64_t> y2023 = {{"app-B", 100}};
  EXPECT_EQ(batches(yearly, "partition_2023"), y2023);

  o.to = PartitionStrategy::kMonthly;
  const RepartitionResult split = repartition(yearly, o);
  ASSERT_TRUE(split.swapped) << split.to_text();
  EXPECT_TRUE(split.notes.empty()) << split.to_text();
  EXPECT_EQ(batches(monthly, "partition_2023_01"), y2023);
  // Every month of 2022 with rows has the marker; its rows are counted once, in the first.
  const std::map<std::string, int64_t> may = y2022;
  EXPECT_EQ(batches(monthly, "partition_2022_05"), may);
  const std::map<std::string, int64_t> nov = {{"merged: 2 batch id(s) such as 'app-A'", 0}};
  EXPECT_EQ(batches(monthly, "partition_2022_11"), nov);
  // Merged again: B is held whole by its months (rows counted once), and carried again.
  o.to = PartitionStrategy::kYearly;
  ASSERT_TRUE(repartition(monthly, o).swapped);
  EXPECT_EQ(batches(yearly, "partition_2023"), y2023);
  EXPECT_EQ(batches(yearly, "partition_2022"), y2022);
  {
    PartitionedDataRepository repo(yearly);
    const BatchResult again = repo.create_batch(schema_, b, {.batch_id = "app-B"});
    EXPECT_EQ(again.rows_written, 0) << "a retried batch whose id was carried writes nothing";
    EXPECT_EQ(repo.count_all(schema_), 600);
  }
}

TEST_F(PartitionedTest, RepartitionSurvivesOtherTablesRunsABatchSizeChangeAndAWriter) {
  std::mt19937_64 rng(45);
  const auto rows =
      random_wide_rows(rng, 3000, date_from_civil(2022, 11, 1), date_from_civil(2023, 5, 31));
  const Schema others("others", {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"qty", "INTEGER"}}, "ts",
                      "id");
  std::vector<DataRecord> other_rows;
  for (int i = 0; i < 200; ++i) {
    other_rows.push_back(DataRecord{
        {Value{}, rows[static_cast<std::size_t>(i)].values[1], Value(static_cast<int64_t>(i))}});
  }
  const PartitionConfig monthly = test_config(path("parts"), PartitionStrategy::kMonthly);
  const PartitionConfig yearly = test_config(path("parts"), PartitionStrategy::kYearly);
  {
    PartitionedDataRepository repo(monthly);
    repo.create_batch(schema_, rows);
  }
  {
    PartitionedDataRepository repo(yearly);
    repo.create_batch(others, other_rows);
  }
  DuckDBDataRepository oracle(path("oracle.duckdb"));
  oracle.create_batch(schema_, rows);
  DataQueryRequest all;
  all.limit = 1000000;
  auto expect_events = [&](const PartitionConfig& cfg) {
    {
      PartitionedDataRepository repo(cfg);
      EXPECT_TRUE(sorted_texts(repo.get_all(schema_, all).items) ==
                  sorted_texts(oracle.get_all(schema_, all).items));
    }
    PartitionedDataRepository repo(yearly);
    EXPECT_EQ(repo.count_all(others), 200);  // the other table, untouched
  };

  // 1. Another table's runs (a dry run and a real one, both with nothing to do) while this one
  //    copies: they used to delete the staging directory every table shared, and this run then
  //    swapped in what was left of it (rows lost, no error).
  RepartitionOptions o;
  o.table = "events";
  o.to = PartitionStrategy::kYearly;
  o.batch_size = 300;
  int calls = 0;
  auto other_runs = [&](const MigrationProgress&) {
    if (++calls != 2) return;
    RepartitionOptions a;
    a.table = "others";
    a.to = PartitionStrategy::kYearly;
    a.dry_run = true;
    EXPECT_EQ(repartition(monthly, a).from, PartitionStrategy::kYearly);
    a.dry_run = false;
    EXPECT_EQ(repartition(monthly, a).from, PartitionStrategy::kYearly);
  };
  const RepartitionResult r1 = repartition(monthly, o, other_runs);
  EXPECT_TRUE(r1.swapped) << r1.to_text();
  EXPECT_EQ(r1.mismatches, 0);
  expect_events(yearly);

  // 2. Interrupted after three batches of 300 rows, finished with batches of 1,000: the ids used to
  //    name the batch's number alone, so the second run skipped rows the first never copied.
  o.to = PartitionStrategy::kMonthly;
  std::atomic<bool> stop{false};
  calls = 0;
  const RepartitionResult r2 = repartition(
      yearly, o,
      [&](const MigrationProgress&) {
        if (++calls == 3) stop = true;
      },
      &stop);
  EXPECT_TRUE(r2.interrupted) << calls << "\n" << r2.to_text();
  EXPECT_GT(r2.rows_copied, 0);
  EXPECT_LE(r2.rows_copied, 900);
  o.batch_size = 1000;
  const RepartitionResult r3 = repartition(yearly, o);
  EXPECT_TRUE(r3.swapped) << r3.to_text();
  EXPECT_EQ(r3.rows_skipped, r2.rows_copied);
  EXPECT_NE(r3.to_text().find("resumed with the interrupted run's batch size 300 (not 1000)"),
            std::string::npos)
      << r3.to_text();
  EXPECT_EQ(r3.mismatches, 0);
  expect_events(monthly);

  // 3. A writer that was not stopped commits to the old partitions during the copy: its rows would
  //    have been deleted with the old directory. Nothing is swapped; once it stops, a re-run is
  //    whole.
  // (Into a partition already copied and a new one: neither is in what the copy verifies.)
  auto late = random_wide_rows(rng, 5, date_from_civil(2022, 11, 2), date_from_civil(2022, 11, 27));
  for (auto& r :
       random_wide_rows(rng, 5, date_from_civil(2023, 8, 2), date_from_civil(2023, 8, 27)))
    late.push_back(r);
  o.to = PartitionStrategy::kYearly;
  o.batch_size = 500;
  calls = 0;
  ErrorCode code{};
  const std::string msg = error_of(
      [&] {
        repartition(monthly, o, [&](const MigrationProgress&) {
          if (++calls != 2) return;
          PartitionConfig direct = monthly;
          direct.write_buffer_mb = 0;
          PartitionedDataRepository writer(direct);
          writer.create_batch(schema_, late);
        });
      },
      &code);
  EXPECT_EQ(code, ErrorCode::kConflict) << msg;
  EXPECT_NE(msg.find("changed while it was being re-partitioned"), std::string::npos) << msg;
  EXPECT_NE(msg.find("partition_2022_11.duckdb"), std::string::npos) << msg;
  oracle.create_batch(schema_, late);
  expect_events(monthly);
  o.batch_size = 700;
  const RepartitionResult r4 = repartition(monthly, o);
  EXPECT_TRUE(r4.swapped) << r4.to_text();
  expect_events(yearly);

  // 4. Rows committed between an interrupted run and its re-run, into a partition that run had
  //    copied: its batches would be skipped by their ids without those rows. The copy is
  //    discarded and made again.
  o.to = PartitionStrategy::kMonthly;
  o.batch_size = 1000;  // partition_2022 (~860 rows) in one batch, then stopped
  stop = false;
  calls = 0;
  const RepartitionResult r5 = repartition(
      yearly, o,
      [&](const MigrationProgress&) {
        if (++calls == 1) stop = true;
      },
      &stop);
  ASSERT_TRUE(r5.interrupted);
  auto later =
      random_wide_rows(rng, 3, date_from_civil(2022, 11, 3), date_from_civil(2022, 11, 20));
  {
    PartitionedDataRepository writer(yearly);
    writer.create_batch(schema_, later);
  }
  oracle.create_batch(schema_, later);
  const RepartitionResult r6 = repartition(yearly, o);
  EXPECT_TRUE(r6.swapped) << r6.to_text();
  EXPECT_EQ(r6.rows_skipped, 0);
  EXPECT_NE(r6.to_text().find("the table changed since the interrupted run"), std::string::npos)
      << r6.to_text();
  expect_events(monthly);

  // 5. A run while another holds the table's lock is refused (kLocked) and changes nothing; the
  //    next run takes over the lock file and deletes it when it is done.
  {
    const std::string lock_file = path("parts/_repartition_events.lock");
    const int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    o.to = PartitionStrategy::kYearly;
    ErrorCode locked{};
    const std::string refused = error_of([&] { repartition(monthly, o); }, &locked);
    EXPECT_EQ(locked, ErrorCode::kLocked) << refused;
    EXPECT_NE(refused.find("another re-partitioning of table 'events' is running"),
              std::string::npos)
        << refused;
    expect_events(monthly);
    ::close(fd);
    EXPECT_TRUE(repartition(monthly, o).swapped);
    EXPECT_FALSE(std::filesystem::exists(lock_file));
    expect_events(yearly);
  }

  // A table that is not there leaves nothing behind (no lock file).
  o.table = "nope";
  ErrorCode missing{};
  error_of([&] { repartition(monthly, o); }, &missing);
  EXPECT_EQ(missing, ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(path("parts/_repartition_nope.lock")));
  for (const auto& f : std::filesystem::directory_iterator(path("parts"))) {
    const std::string name = f.path().filename().string();
    // (The lock files go too: each run deletes its own before it lets go of the lock.)
    EXPECT_TRUE(name == "events" || name == "others") << "left behind: " << name;
  }
}

TEST_F(PartitionedTest, RepartitionFinishesTheRunItsStateFileNamesWhateverItIsAsked) {
  // A run to yearly killed right after its exchange leaves the state file and the old (monthly)
  // files in its staging directory. The next run, to weekly, finishes that one first (the old
  // files go), then re-partitions yearly -> weekly. It used to read "the exchange never happened"
  // (the table was not weekly), drop the state file and leave the old files behind for good.
  std::mt19937_64 rng(46);
  const auto rows =
      random_wide_rows(rng, 1200, date_from_civil(2022, 12, 1), date_from_civil(2023, 3, 31));
  const PartitionConfig monthly = test_config(path("parts"), PartitionStrategy::kMonthly);
  {
    PartitionedDataRepository repo(monthly);
    repo.create_batch(schema_, rows);
  }
  std::filesystem::copy(path("parts/events"), path("old_events"),
                        std::filesystem::copy_options::recursive);
  RepartitionOptions o;
  o.table = "events";
  o.to = PartitionStrategy::kYearly;
  ASSERT_TRUE(repartition(monthly, o).swapped);
  // What the kill left (as an older version named it: the shared "_repartition_yearly").
  std::filesystem::create_directories(path("parts/_repartition_yearly"));
  std::filesystem::rename(path("old_events"), path("parts/_repartition_yearly/events"));
  {
    std::ofstream(path("parts/_repartition_events.json"))
        << R"({"table": "events", "from": "monthly", "to": "yearly", "phase": "exchanging"})";
  }
  o.to = PartitionStrategy::kWeekly;
  const RepartitionResult r = repartition(monthly, o);
  EXPECT_TRUE(r.swapped) << r.to_text();
  EXPECT_EQ(r.from, PartitionStrategy::kYearly);
  EXPECT_EQ(r.mismatches, 0);
  for (const auto& f : std::filesystem::directory_iterator(path("parts"))) {
    const std::string name = f.path().filename().string();
    EXPECT_EQ(name, "events") << "left behind: " << name;
  }
  DuckDBDataRepository oracle(path("oracle.duckdb"));
  oracle.create_batch(schema_, rows);
  DataQueryRequest all;
  all.limit = 1000000;
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kWeekly));
  EXPECT_TRUE(sorted_texts(repo.get_all(schema_, all).items) ==
              sorted_texts(oracle.get_all(schema_, all).items));
}

TEST_F(PartitionedTest, IngestLogBufferHandedToTheNextLogKeepsEveryRecordWhole) {
  // The write buffer hands a closed log's record buffer to the next log. Records written through
  // a handed-over buffer (smaller and larger than it) and by the log that gave it away (which
  // allocates a new one) must all read back as written.
  std::mt19937_64 rng(12);
  std::filesystem::create_directories(path("logs"));
  auto batch_of = [&](int n) {
    return records_to_batch(schema_, random_wide_rows(rng, n, date_from_civil(2023, 1, 1),
                                                      date_from_civil(2023, 6, 30)));
  };
  const std::vector<ColumnBatch> a_batches = {batch_of(3000), batch_of(50)};
  const std::vector<ColumnBatch> b_batches = {batch_of(200), batch_of(5000), batch_of(10)};
  {
    IngestLog a = IngestLog::create(path("logs/a.log"));
    IngestLog b = IngestLog::create(path("logs/b.log"));
    a.append(a_batches[0], {});
    b.give_buffer(a.take_buffer());
    b.append(b_batches[0], {});          // fits in the handed-over buffer
    a.append(a_batches[1], {});          // a has none left: allocates
    b.append(b_batches[1], {});          // larger than it: reallocated
    b.give_buffer(IngestLog::Buffer{});  // an empty one is ignored
    b.append(b_batches[2], {});
  }
  for (const auto& [file, want] :
       {std::pair{path("logs/a.log"), &a_batches}, std::pair{path("logs/b.log"), &b_batches}}) {
    const IngestLog::Contents got = IngestLog::read(file);
    EXPECT_EQ(got.ignored_bytes, 0u) << file;
    ASSERT_EQ(got.batches.size(), want->size()) << file;
    for (std::size_t i = 0; i < want->size(); ++i) {
      const ColumnBatch& g = got.batches[i];
      const ColumnBatch& w = (*want)[i];
      ASSERT_EQ(g.rows, w.rows) << file << " record " << i;
      ASSERT_EQ(g.columns.size(), w.columns.size());
      for (std::size_t c = 0; c < w.columns.size(); ++c) {
        EXPECT_TRUE(g.columns[c].data == w.columns[c].data)
            << file << " record " << i << " col " << c;
        for (std::size_t r = 0; r < w.rows; ++r) {
          ASSERT_EQ(g.columns[c].is_valid(r), w.columns[c].is_valid(r)) << file << " row " << r;
        }
      }
    }
  }
}

TEST_F(PartitionedTest, IngestLogRetractCutsItsLastRecordAndLaterAppendsFollowIt) {
  // A buffered call whose record was written while room was made for its rows fails if the room
  // cannot be made: its record is cut off the log again (retract), and the next record follows
  // the one before it. A length past the end changes nothing.
  std::mt19937_64 rng(37);
  std::filesystem::create_directories(path("logs"));
  auto batch_of = [&](int n) {
    return records_to_batch(schema_, random_wide_rows(rng, n, date_from_civil(2023, 1, 1),
                                                      date_from_civil(2023, 6, 30)));
  };
  const ColumnBatch a = batch_of(700), b = batch_of(900), c = batch_of(300);
  const std::string file = path("logs/r.log");
  {
    IngestLog log = IngestLog::create(file);
    log.append(a, {});
    const uint64_t after_a = log.bytes();
    log.append(b, {});
    EXPECT_GT(log.bytes(), after_a);
    log.retract(log.bytes() + 4096);  // not shorter: kept
    log.retract(after_a);
    EXPECT_FALSE(log.broken());
    EXPECT_EQ(log.bytes(), after_a);
    EXPECT_EQ(std::filesystem::file_size(file), after_a);
    log.append(c, {});
  }
  const IngestLog::Contents got = IngestLog::read(file);
  EXPECT_EQ(got.ignored_bytes, 0u);
  ASSERT_EQ(got.batches.size(), 2u);
  EXPECT_EQ(got.batches[0].rows, a.rows);
  EXPECT_EQ(got.batches[1].rows, c.rows);
  for (std::size_t col = 0; col < c.columns.size(); ++col) {
    EXPECT_TRUE(got.batches[1].columns[col].data == c.columns[col].data) << col;
  }
}

TEST_F(PartitionedTest, DamagedIngestLogIsKeptAndNamedNotDropped) {
  // Only the last record of a log can be cut short; a damaged record followed by whole ones is
  // damage: the table refuses to open instead of dropping the rows after it.
  std::mt19937_64 rng(4);
  std::filesystem::create_directories(path("parts/events"));
  const std::string file =
      path("parts/events/") + kIngestPrefix + "0190aaaa-0000-7000-8000-0000000000aa.log";
  {
    IngestLog log = IngestLog::create(file);
    for (int i = 0; i < 2; ++i) {
      log.append(records_to_batch(schema_, random_wide_rows(rng, 100, date_from_civil(2023, 1, 1),
                                                            date_from_civil(2023, 2, 28))),
                 {});
    }
  }
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
  ErrorCode code{};
  const std::string msg = error_of([&] { repo.count_all(schema_); }, &code);
  EXPECT_EQ(code, ErrorCode::kCorruption) << msg;
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_TRUE(std::filesystem::exists(file));
}

TEST_F(PartitionedTest, ConcurrentBufferedWritersAndReadersSeeEveryAcknowledgedBatch) {
  // Write buffering with background drains: 2 writers, 2 readers for ~3 s. A reader sees at least
  // every batch acknowledged before its read began, whole batches only, never fewer than before.
  auto cfg = test_config(path("parts"), PartitionStrategy::kMonthly, 4);
  cfg.write_buffer_mb = 1;
  PartitionedDataRepository repo(cfg);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> written{0};
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(300 + static_cast<uint64_t>(w));
      while (!stop.load()) {
        auto rows =
            random_wide_rows(rng, 50, date_from_civil(2023, 1, 1), date_from_civil(2023, 6, 30));
        const Date d = date_from_civil(2023, static_cast<unsigned>(1 + rng() % 6), 15);
        for (auto& r : rows) r.values[1] = Value(to_timestamp(d));
        repo.create_batch(schema_, rows);
        written += 50;
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      int64_t last = 0;
      while (!stop.load()) {
        const int64_t floor = written.load();
        const int64_t n = repo.count_all(schema_);
        if (n % 50 != 0 || n < floor || n < last) ++violations;
        last = n;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(written.load(), 0);
  EXPECT_EQ(repo.count_all(schema_), written.load());
}

}  // namespace
}  // namespace duckpart::testing

namespace duckpart::testing {
namespace {

// DuckDB's memory in the store: a quarter of the usable memory unless configured (DuckDB's own
// default, 80% of RAM, plus the write buffer overcommits memory), a set size, or DuckDB's default.
TEST_F(PartitionedTest, DuckDbMemoryLimitIsAutomaticSetOrDuckDbsOwn) {
  auto limit_of = [&](int memory_limit_mb) {
    PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
    cfg.memory_limit_mb = memory_limit_mb;
    PartitionedDataRepository repo(cfg);
    EXPECT_EQ(repo.config().memory_limit_mb, cfg.effective_memory_limit_mb());
    // The id maps' budget is resolved with it: 1/8 of the usable memory, at least 128 MB.
    EXPECT_EQ(cfg.id_index_memory_mb, -1);
    EXPECT_EQ(repo.config().id_index_memory_mb,
              std::clamp<int64_t>(usable_memory_mb() / 8, 128, 16 * 1024 * 1024));
    RecordStream s = repo.query_sql(
        "SELECT current_setting('memory_limit'), "
        "(SELECT value FROM duckdb_settings() WHERE name = 'memory_limit')");
    DataRecord r;
    EXPECT_TRUE(s.next(r));
    return r.values.at(0).to_string();
  };
  const std::string automatic = limit_of(-1);
  const std::string set = limit_of(300);
  const std::string own = limit_of(0);
  EXPECT_EQ(set, "300.0 MiB");  // MB in the configuration are MiB
  // DuckDB's own rendering of a quarter of the usable memory is the oracle.
  const int64_t quarter = std::max<int64_t>(usable_memory_mb() / 4, 256);
  duck::Connection plain = duck::Database::open(":memory:").connect();
  plain.exec(fmt::format("SET memory_limit = '{}MiB'", quarter));
  EXPECT_EQ(plain.query_int(
                fmt::format("SELECT (current_setting('memory_limit') = '{}')::INTEGER", automatic)),
            1)
      << automatic;
  EXPECT_NE(own, automatic);
  EXPECT_NE(own, set);
  // Given at start with the memory limit: no row-group merging at checkpoints (DuckDB's default
  // is 100 tasks).
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
  RecordStream s = repo.query_sql("SELECT current_setting('max_vacuum_tasks')::BIGINT");
  DataRecord r;
  ASSERT_TRUE(s.next(r));
  EXPECT_EQ(r.values.at(0).get<int64_t>(), 0);
}

}  // namespace
}  // namespace duckpart::testing

namespace duckpart::testing {
namespace {

std::string file_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void put_bytes(const std::string& p, const std::string& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(b.data(), std::streamsize(b.size()));
}

// A kill -9 in the middle of a checkpoint's in-place write of metadata block 0
// (docs/reliability.md): the file as such a kill leaves it (the old headers, block 0 part new and
// part old, the WAL of the last commit) is repaired at attach and holds every committed row; a
// damaged block that is not the active header's metadata is refused and left as it is.
TEST_F(PartitionedTest, MetadataBlockTornByAKillDuringACheckpointIsRepaired) {
  std::mt19937_64 rng(11);
  const Date first = date_from_civil(2023, 1, 1), last = date_from_civil(2023, 1, 31);
  const std::string file = path("parts/events/partition_2023_01.duckdb");
  auto first_rows = random_wide_rows(rng, 50, first, last);
  auto more_rows = random_wide_rows(rng, 30, first, last);
  std::string before, wal, after;
  {
    PartitionedDataRepository repo = open_direct();
    repo.create_batch(schema_, first_rows);
  }  // closed: checkpointed
  before = file_bytes(file);
  {
    PartitionedDataRepository repo = open_direct();
    repo.create_batch(schema_, more_rows);
    wal = file_bytes(file + ".wal");  // the commit, before the checkpoint at close
    ASSERT_FALSE(wal.empty());
  }
  after = file_bytes(file);
  constexpr std::size_t kBlock0 = 12288, kPage = 4096, kBlockSize = 262144;
  ASSERT_GE(before.size(), kBlock0 + kBlockSize);
  ASSERT_GE(after.size(), kBlock0 + kBlockSize);
  std::size_t first_diff = kBlockSize;
  for (std::size_t p = 0; p < kBlockSize / kPage; ++p) {
    if (before.compare(kBlock0 + p * kPage, kPage, after, kBlock0 + p * kPage, kPage) != 0) {
      first_diff = p * kPage;
      break;
    }
  }
  ASSERT_LT(first_diff, kBlockSize) << "the second checkpoint did not rewrite block 0 in place";
  // The kill: the old file, block 0's pages up to the first changed one written anew.
  std::string torn = before;
  if (after.size() > torn.size()) torn.append(after, torn.size(), std::string::npos);
  torn.replace(kBlock0, first_diff + kPage, after, kBlock0, first_diff + kPage);
  put_bytes(file, torn);
  put_bytes(file + ".wal", wal);
  {
    duck::Connection c = duck::Database::open(":memory:").connect();
    const std::string msg = error_of([&] { c.exec("ATTACH '" + file + "' AS p (READ_ONLY)"); });
    ASSERT_NE(msg.find("does not match stored checksum"), std::string::npos) << msg;
  }
  {
    PartitionedDataRepository repo = open_direct();
    DataQueryRequest q;
    q.limit = 1000;
    const auto page =
        repo.get_all(schema_, q);  // every committed row: the checkpointed 50 + the WAL's 30
    EXPECT_EQ(page.total, 80);
    EXPECT_EQ(page.items.size(), 80u);
    EXPECT_EQ(repo.counters().torn_blocks_repaired, 1);
  }
  // Damage in a data block (not the header's metadata): refused, named, and not rewritten.
  int64_t data_block = -1;
  {
    duck::Connection c = duck::Database::open(file, true).connect();
    data_block =
        c.query_int("SELECT max(block_id) FROM pragma_storage_info('events') WHERE block_id > 0");
  }
  ASSERT_GT(data_block, 0);
  std::string now = file_bytes(file);
  const std::size_t at = kBlock0 + static_cast<std::size_t>(data_block) * kBlockSize + 100;
  ASSERT_LT(at, now.size());
  now[at] = static_cast<char>(now[at] ^ 0x5a);
  put_bytes(file, now);
  std::error_code ec;
  std::filesystem::remove(file + ".wal", ec);
  {
    PartitionedDataRepository repo = open_direct();
    DataQueryRequest q;
    q.limit = 1000;
    const std::string msg = error_of([&] { repo.get_all(schema_, q); });
    EXPECT_NE(msg.find("partition_2023_01.duckdb"), std::string::npos) << msg;
    EXPECT_EQ(repo.counters().torn_blocks_repaired, 0);
  }
  EXPECT_EQ(file_bytes(file), now);
}

}  // namespace
}  // namespace duckpart::testing

namespace duckpart::testing {
namespace {

// The DuckDB blocks of table data the repository's instance holds now (bytes).
int64_t table_blocks_loaded(PartitionedDataRepository& repo) {
  RecordStream s = repo.query_sql(
      "SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT FROM duckdb_memory() WHERE tag = "
      "'BASE_TABLE'");
  DataRecord r;
  EXPECT_TRUE(s.next(r));
  return r.values.at(0).get<int64_t>();
}

// count_all and get_all's total over several partitions read only the columns their filters name.
// Over UNION ALL branches that select every column, DuckDB 1.4 also reads each partition's first
// column for a count(*) (its aggregate needs none; the bench's first column is a UUID, over half
// of the bytes): at 300M rows the bench's filtered count loaded 6.0 GB of blocks instead of
// 1.5 GB and ran 2x slower under the memory limit.
TEST_F(TempDirTest, FilteredCountsOverManyPartitionsReadOnlyTheFilteredColumns) {
  // The wide column first: through UNION ALL, a count(*) kept each branch's first column.
  const Schema schema("wide_rows",
                      {{"pad", "VARCHAR"}, {"id", "BIGINT"}, {"ts", "TIMESTAMP"}, {"a", "DOUBLE"}},
                      "ts", "id");
  PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  std::mt19937_64 rng(38);
  int64_t expect = 0, expect_in_march = 0, expect_mid = 0;
  const int64_t mid_from = date_from_civil(2024, 2, 15).days * kMicrosPerDay;
  const int64_t mid_to = date_from_civil(2024, 3, 15).days * kMicrosPerDay;
  {
    PartitionedDataRepository repo(cfg);
    int64_t seq = 0;
    for (int month = 1; month <= 3; ++month) {
      ColumnBatch b = make_column_batch(schema);
      const int64_t day0 = date_from_civil(2024, static_cast<unsigned>(month), 1).days;
      for (int i = 0; i < 100'000; ++i) {
        const double a = static_cast<double>(rng() % 1'000'000) / 1e6;
        std::string pad(48, 'x');
        for (char& ch : pad) ch = static_cast<char>('a' + rng() % 26);
        std::get<std::vector<int64_t>>(b.columns[1].data).push_back(++seq);
        const int64_t ts = (day0 + static_cast<int64_t>(rng() % 28)) * kMicrosPerDay;
        std::get<std::vector<int64_t>>(b.columns[2].data).push_back(ts);
        std::get<std::vector<double>>(b.columns[3].data).push_back(a);
        std::get<std::vector<std::string>>(b.columns[0].data).push_back(std::move(pad));
        ++b.rows;
        if (a >= 0.25) {
          ++expect;
          if (month == 3) ++expect_in_march;
          if (ts >= mid_from && ts < mid_to) ++expect_mid;
        }
      }
      repo.create_batch_columnar(schema, std::move(b));
    }
    repo.flush();
  }
  uint64_t file_bytes = 0;
  for (const auto& f : std::filesystem::directory_iterator(path("parts/wide_rows"))) {
    if (f.path().extension() == ".duckdb") file_bytes += f.file_size();
  }
  DataQueryRequest req;
  req.filters = {{"a", FilterOperator::kGte, Value(0.25)}};
  {
    PartitionedDataRepository repo(cfg, {.read_only = true});
    EXPECT_EQ(repo.count_all(schema, req), expect);
    const int64_t loaded = table_blocks_loaded(repo);
    // Column a is ~0.8 MB of each ~5 MB partition; column pad is most of the rest.
    EXPECT_GT(loaded, 0);
    EXPECT_LT(static_cast<double>(loaded), 0.4 * static_cast<double>(file_bytes))
        << loaded << " of " << file_bytes << " bytes";
  }
  {
    PartitionedDataRepository repo(cfg, {.read_only = true});
    DataQueryRequest page = req;
    page.columns = {"id"};
    page.limit = 1;
    const PaginatedResponse resp = repo.get_all(schema, page);
    EXPECT_EQ(resp.total, expect);
    EXPECT_EQ(resp.items.size(), 1u);
    const int64_t loaded = table_blocks_loaded(repo);
    EXPECT_LT(static_cast<double>(loaded), 0.4 * static_cast<double>(file_bytes))
        << loaded << " of " << file_bytes << " bytes";
  }
  {
    // A filter on the partition column too: both columns' branches, and the answer is exact.
    PartitionedDataRepository repo(cfg, {.read_only = true});
    DataQueryRequest mid = req;
    mid.filters.push_back({"ts", FilterOperator::kGte, Value(std::string("2024-02-15"))});
    mid.filters.push_back({"ts", FilterOperator::kLt, Value(std::string("2024-03-15"))});
    DataQueryRequest all_march = req;
    all_march.filters.push_back({"ts", FilterOperator::kGte, Value(std::string("2024-03-01"))});
    EXPECT_EQ(repo.count_all(schema, all_march), expect_in_march);
    DataQueryRequest none;
    none.filters = {{"a", FilterOperator::kGte, Value(2.0)}};
    EXPECT_EQ(repo.count_all(schema, none), 0);
    EXPECT_EQ(repo.count_all(schema, mid), expect_mid);  // two partitions: branches of a and ts
  }
  // query_sql: the view's branches start with a constant it leaves out, so a count(*) reads only
  // the columns it filters on, and the view still shows the table's columns, in order.
  auto sql_int = [](PartitionedDataRepository& repo, const std::string& sql) {
    RecordStream s = repo.query_sql(sql);
    DataRecord r;
    EXPECT_TRUE(s.next(r)) << sql;
    return r.values.at(0).get<int64_t>();
  };
  {
    PartitionedDataRepository repo(cfg, {.read_only = true});
    EXPECT_EQ(sql_int(repo, "SELECT count(*) FROM wide_rows WHERE a >= 0.25"), expect);
    const int64_t loaded = table_blocks_loaded(repo);
    EXPECT_LT(static_cast<double>(loaded), 0.4 * static_cast<double>(file_bytes))
        << loaded << " of " << file_bytes << " bytes";
    EXPECT_EQ(sql_int(repo, "SELECT count(*) FROM wide_rows"), 300'000);
    RecordStream s = repo.query_sql("SELECT * FROM wide_rows ORDER BY id LIMIT 2");
    EXPECT_EQ(s.columns(), (std::vector<std::string>{"pad", "id", "ts", "a"}));
    DataRecord r;
    ASSERT_TRUE(s.next(r));
    EXPECT_EQ(r.values.at(1).get<int64_t>(), 1);
  }
}

// A table with a column named like the view's hidden branch key keeps the plain view: same
// answers and columns.
TEST_F(TempDirTest, QuerySqlOverATableWithTheViewsBranchKeyAsAColumn) {
  const Schema schema("keyed", {{"ts", "TIMESTAMP"}, {"_DuckPart_Branch", "BIGINT"}}, "ts");
  PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  PartitionedDataRepository repo(cfg);
  ColumnBatch b = make_column_batch(schema);
  int64_t sum = 0;
  for (int i = 0; i < 90; ++i) {
    std::get<std::vector<int64_t>>(b.columns[0].data)
        .push_back((date_from_civil(2024, 1, 1).days + i) * kMicrosPerDay);
    std::get<std::vector<int64_t>>(b.columns[1].data).push_back(i * 7);
    sum += i * 7;
    ++b.rows;
  }
  repo.create_batch_columnar(schema, std::move(b));
  repo.flush();
  RecordStream s = repo.query_sql("SELECT count(*), sum(_duckpart_branch) FROM keyed");
  EXPECT_EQ(s.columns().size(), 2u);
  DataRecord r;
  ASSERT_TRUE(s.next(r));
  EXPECT_EQ(r.values.at(0).get<int64_t>(), 90);
  EXPECT_EQ(r.values.at(1).to_string(), std::to_string(sum));
  RecordStream all = repo.query_sql("SELECT * FROM keyed LIMIT 1");
  EXPECT_EQ(all.columns(), (std::vector<std::string>{"ts", "_DuckPart_Branch"}));
}

}  // namespace
}  // namespace duckpart::testing
