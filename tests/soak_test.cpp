// Concurrency soak: 4 reader threads and 2 writer threads on one repository, with clean-up and
// compaction running in between, for DUCKPART_SOAK_SECONDS (default 10; 60 for the full soak).
// Readers must never see part of a batch or of a replaced partition, the count of written rows
// must never go down, and at the end it must equal what the writers committed. A watchdog fails
// the test (instead of hanging CI) if anything deadlocks.
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

#include "test_util.hpp"

namespace duckpart::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kBatchRows = 120;

class SoakTest : public TempDirTest {};

TEST_F(SoakTest, ReadersWritersCleanupAndCompaction) {
  int seconds = 10;
  if (const char* s = std::getenv("DUCKPART_SOAK_SECONDS")) seconds = std::atoi(s);
  const Schema schema = wide_schema();
  PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly, 6);
  PartitionedDataRepository repo(cfg);
  PartitionUtilities util(repo);
  // Old data for the clean-up thread to remove, month by month: 2019-01 .. 2019-12.
  std::mt19937_64 seed_rng(11);
  repo.create_batch(schema, random_wide_rows(seed_rng, 1200, date_from_civil(2019, 1, 1),
                                             date_from_civil(2019, 12, 31)));

  std::atomic<bool> stop{false};
  std::atomic<int64_t> committed_rows{0}, reads{0}, torn{0}, regressions{0}, errors{0}, cleanups{0},
      compactions{0}, conflicts{0};
  std::mutex err_mu;
  std::string first_error;
  auto record_error = [&](const std::string& what) {
    ++errors;
    std::lock_guard lock(err_mu);
    if (first_error.empty()) first_error = what;
  };

  // Writers: every batch goes to one month of 2023 (one partition: one atomic commit) and tags its
  // rows with its own name.
  auto writer = [&](int w) {
    std::mt19937_64 rng(100 + w);
    for (int b = 0; !stop; ++b) {
      const unsigned month = static_cast<unsigned>(rng() % 12 + 1);
      const Date first = date_from_civil(2023, month, 1);
      const Date last{partition_key_of(PartitionStrategy::kMonthly, first).end().days - 1};
      auto rows = random_wide_rows(rng, kBatchRows, first, last);
      const std::string tag = "w" + std::to_string(w) + "-" + std::to_string(b);
      for (auto& r : rows) r.values[8] = Value(tag);
      try {
        repo.create_batch(schema, rows);
        committed_rows += kBatchRows;
      } catch (const Error& e) {
        record_error(std::string("writer: ") + e.what());
      }
    }
  };
  // Readers: whole batches only, in every month they look at; the 2023 total never shrinks.
  auto reader = [&](int id) {
    std::mt19937_64 rng(200 + id);
    int64_t last_total = 0;
    while (!stop) {
      try {
        const int64_t floor = committed_rows.load();
        const unsigned month = static_cast<unsigned>(rng() % 12 + 1);
        RecordStream s = repo.query_sql(fmt::format(
            "SELECT name, count(*) AS n FROM events WHERE ts >= '2023-{:02d}-01' AND ts < "
            "'2023-{:02d}-01'::DATE + INTERVAL 1 MONTH GROUP BY name",
            month, month));
        for (DataRecord r; s.next(r);) {
          if (r.values[1].get<int64_t>() != kBatchRows) ++torn;
        }
        DataQueryRequest q;
        q.filters.push_back({"ts", FilterOperator::kGte, Value("2023-01-01")});
        const int64_t total = repo.count_all(schema, q);
        if (total < last_total || total < floor) ++regressions;
        last_total = total;
        ++reads;
      } catch (const Error& e) {
        record_error(std::string("reader: ") + e.what());
      }
    }
  };
  // Clean-up: one old month more each round (retention moves forward); compaction: a random month
  // of 2023 while writers write to it and readers read it.
  auto maintenance = [&] {
    std::mt19937_64 rng(300);
    int month = 2;
    while (!stop) {
      try {
        if (month <= 13) {
          const Date now = month <= 12 ? date_from_civil(2019, static_cast<unsigned>(month), 1)
                                       : date_from_civil(2020, 1, 1);
          util.cleanup(schema, 0, now, false);
          ++month;
          ++cleanups;
        }
        const std::string name = fmt::format("partition_2023_{:02d}", rng() % 12 + 1);
        repo.compact_partition(schema, name);
        ++compactions;
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kConflict || e.code() == ErrorCode::kNotFound) {
          ++conflicts;  // in use for a minute / not written yet: retried next round
        } else {
          record_error(std::string("maintenance: ") + e.what());
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };

  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) threads.emplace_back(writer, w);
  for (int r = 0; r < 4; ++r) threads.emplace_back(reader, r);
  threads.emplace_back(maintenance);
  // Watchdog: a deadlock fails loudly instead of hanging until CI's time limit.
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    const auto deadline = Clock::now() + std::chrono::seconds(seconds + 120);
    while (!finished && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!finished) {
      std::fprintf(stderr, "soak: no progress 120 s after the end: deadlock\n");
      std::abort();
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  finished = true;
  watchdog.join();

  std::printf(
      "soak %d s: %lld rows committed, %lld reads, %lld clean-ups, %lld compactions, %lld "
      "conflicts retried\n",
      seconds, static_cast<long long>(committed_rows.load()), static_cast<long long>(reads.load()),
      static_cast<long long>(cleanups.load()), static_cast<long long>(compactions.load()),
      static_cast<long long>(conflicts.load()));
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_EQ(torn.load(), 0) << "a reader saw part of a batch";
  EXPECT_EQ(regressions.load(), 0) << "a reader's count went down";
  EXPECT_GT(reads.load(), 0);
  EXPECT_GT(compactions.load(), 0);
  DataQueryRequest q;
  q.filters.push_back({"ts", FilterOperator::kGte, Value("2023-01-01")});
  EXPECT_EQ(repo.count_all(schema, q), committed_rows.load());
  RecordStream s = repo.query_sql(
      "SELECT count(*) FROM (SELECT name FROM events WHERE ts >= '2023-01-01' GROUP BY name HAVING "
      "count(*) <> 120)");
  DataRecord r;
  ASSERT_TRUE(s.next(r));
  EXPECT_EQ(r.values[0].get<int64_t>(), 0);
  if (cleanups.load() >= 12) {
    DataQueryRequest old;
    old.filters.push_back({"ts", FilterOperator::kLt, Value("2020-01-01")});
    EXPECT_EQ(repo.count_all(schema, old), 0) << "clean-up removed every old month";
  }
}

// Bulk loads (several writer threads each, partitions held open across the stream) while readers
// query and an ordinary writer commits elsewhere: per-partition atomicity, a total that never goes
// down, and every row exactly once at the end. Run under ThreadSanitizer by `make tsan`.
TEST_F(SoakTest, BulkLoadsWhileReadingAndWriting) {
  const Schema schema = wide_schema();
  const std::string source = path("source.duckdb");
  constexpr int64_t kSourceRows = 24000;
  {
    DuckDBDataRepository single(source);
    std::mt19937_64 rng(5);
    single.create_batch(schema, random_wide_rows(rng, kSourceRows, date_from_civil(2022, 1, 1),
                                                 date_from_civil(2022, 12, 31)));
  }
  PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly, 6);
  cfg.write_threads = 3;
  cfg.write_buffer_mb = 0;  // the ordinary writer commits directly, racing the bulk loads
  PartitionedDataRepository repo(cfg);
  repo.attach_database(source, "src");
  std::atomic<bool> stop{false};
  std::atomic<int64_t> loaded{0}, written{0}, reads{0}, regressions{0}, errors{0};
  std::mutex err_mu;
  std::string first_error;
  auto record_error = [&](const std::string& what) {
    ++errors;
    std::lock_guard lock(err_mu);
    if (first_error.empty()) first_error = what;
  };
  auto reader = [&](int id) {
    std::mt19937_64 rng(300 + id);
    int64_t last = 0;
    while (!stop) {
      try {
        DataQueryRequest q;
        q.filters.push_back({"ts", FilterOperator::kLt, Value("2023-01-01")});
        const int64_t n = repo.count_all(schema, q);
        if (n < last) ++regressions;
        last = n;
        const unsigned month = static_cast<unsigned>(rng() % 12 + 1);
        RecordStream s = repo.query_sql(
            fmt::format("SELECT count(*) FROM events WHERE ts >= '2022-{:02d}-01' AND ts < "
                        "'2022-{:02d}-01'::DATE + INTERVAL 1 MONTH",
                        month, month));
        for (DataRecord r; s.next(r);) {
        }
        ++reads;
      } catch (const Error& e) {
        record_error(std::string("reader: ") + e.what());
      }
    }
  };
  auto writer = [&] {
    std::mt19937_64 rng(400);
    while (!stop) {
      try {
        repo.create_batch(schema, random_wide_rows(rng, 50, date_from_civil(2024, 1, 1),
                                                   date_from_civil(2024, 6, 30)));
        written += 50;
      } catch (const Error& e) {
        record_error(std::string("writer: ") + e.what());
      }
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(reader, 0);
  threads.emplace_back(reader, 1);
  threads.emplace_back(writer);
  // Six bulk loads of 4,000 source rows each, every one spread over all twelve months; the last
  // one is loaded twice with the same batch id (the replay must skip every partition).
  for (int b = 0; b < 7; ++b) {
    const int64_t from = std::min(b, 5) * int64_t{4000};
    try {
      const BatchResult r = repo.create_batch_from_query(
          schema,
          fmt::format("SELECT * FROM src.main.events WHERE rowid >= {} AND rowid < {}", from,
                      from + 4000),
          {.batch_id = fmt::format("bulk-{}", std::min(b, 5))});
      loaded += r.rows_written;
      if (b == 6) {
        EXPECT_EQ(r.rows_written, 0);
        EXPECT_EQ(r.rows_skipped, 4000);
      }
    } catch (const Error& e) {
      record_error(std::string("bulk: ") + e.what());
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_EQ(regressions.load(), 0) << "a reader's count went down";
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(loaded.load(), kSourceRows);
  DataQueryRequest q;
  q.filters.push_back({"ts", FilterOperator::kLt, Value("2023-01-01")});
  EXPECT_EQ(repo.count_all(schema, q), kSourceRows);
  RecordStream s = repo.query_sql(
      "SELECT count(*) FROM (SELECT id FROM events GROUP BY id HAVING count(*) > 1)");
  DataRecord r;
  ASSERT_TRUE(s.next(r));
  EXPECT_EQ(r.values[0].get<int64_t>(), 0) << "an id appears twice";
  DataQueryRequest later;
  later.filters.push_back({"ts", FilterOperator::kGte, Value("2024-01-01")});
  EXPECT_EQ(repo.count_all(schema, later), written.load());
  repo.detach_database("src");
}

}  // namespace
}  // namespace duckpart::testing
