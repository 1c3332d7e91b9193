// A batch interrupted by a process death between two partition commits, replayed with the same
// batch id, ends up applied exactly once in every partition.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "duck/duck.hpp"
#include "test_util.hpp"

namespace duckpart::testing {
namespace {

class ExactlyOnceTest : public TempDirTest {};

std::vector<DataRecord> batch_rows() {
  std::mt19937_64 rng(99);
  return random_wide_rows(rng, 3000, date_from_civil(2023, 1, 1),
                          date_from_civil(2023, 8, 31));  // 8 months
}

TEST_F(ExactlyOnceTest, ReplayAfterCrashBetweenPartitionCommits) {
  const Schema schema = wide_schema();
  const auto rows = batch_rows();
  for (int crash_after : {1, 3, 7}) {
    SCOPED_TRACE("crash after " + std::to_string(crash_after) + " partition commits");
    const std::string base = path("parts" + std::to_string(crash_after));
    const pid_t pid = ::fork();
    if (pid == 0) {
      // Child: a real process that dies (no destructors, no checkpoint) in the middle of the batch.
      // One writer thread: the crash lands exactly after `crash_after` commits (with two, the other
      // thread may finish the last partition first).
      auto cfg = test_config(base, PartitionStrategy::kMonthly);
      cfg.write_threads = 1;
      PartitionedDataRepository repo(cfg);
      int commits = 0;
      repo.set_commit_hook([&](const std::string&) {
        if (++commits == crash_after) ::_exit(42);
      });
      repo.create_batch(schema, rows, {.batch_id = "batch-A"});
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 42) << "the child should have died mid-batch";

    PartitionedDataRepository repo(test_config(base, PartitionStrategy::kMonthly));
    const int64_t after_crash = repo.count_all(schema);
    EXPECT_GT(after_crash, 0);
    EXPECT_LT(after_crash, 3000);
    const BatchResult replay = repo.create_batch(schema, rows, {.batch_id = "batch-A"});
    EXPECT_EQ(replay.partitions_skipped, crash_after);
    EXPECT_EQ(replay.partitions_skipped + replay.partitions_written, 8);
    EXPECT_EQ(replay.rows_written + replay.rows_skipped, 3000);
    EXPECT_EQ(after_crash + replay.rows_written, 3000);
    EXPECT_EQ(repo.count_all(schema), 3000);
    // No id twice, and every id present.
    DataQueryRequest q;
    q.columns = {"id"};
    std::set<std::string> ids;
    for (const auto& r : repo.get_all(schema, q).items) ids.insert(r.values[0].get<std::string>());
    EXPECT_EQ(ids.size(), 3000u);
    for (const auto& r : rows) EXPECT_TRUE(ids.count(r.values[0].get<std::string>()));
    // A third delivery changes nothing.
    const BatchResult again = repo.create_batch(schema, rows, {.batch_id = "batch-A"});
    EXPECT_EQ(again.rows_written, 0);
    EXPECT_EQ(again.partitions_skipped, 8);
    EXPECT_EQ(repo.count_all(schema), 3000);
  }
}

TEST_F(ExactlyOnceTest, SingleFileRepositoryHonoursBatchIdsToo) {
  const Schema schema = wide_schema();
  const auto rows = batch_rows();
  DuckDBDataRepository repo(path("single.duckdb"));
  EXPECT_EQ(repo.create_batch(schema, rows, {.batch_id = "b1"}).rows_written, 3000);
  EXPECT_EQ(repo.create_batch(schema, rows, {.batch_id = "b1"}).rows_skipped, 3000);
  EXPECT_EQ(repo.count_all(schema), 3000);
}

TEST_F(ExactlyOnceTest, CommittedDataSurvivesKillWithoutCheckpoint) {
  const Schema schema = wide_schema();
  const auto rows = batch_rows();
  const pid_t pid = ::fork();
  if (pid == 0) {
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kWeekly));
    repo.create_batch(schema, rows, {.batch_id = "w"});
    ::_exit(7);  // no close, no checkpoint: only the write-ahead logs hold the data
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 7);
  PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kWeekly));
  EXPECT_EQ(repo.count_all(schema), 3000);
  DuckDBDataRepository single(":memory:");
  single.create_batch(schema, rows);
  DataQueryRequest q;
  q.filters = {{"ts", FilterOperator::kGte, Value("2023-03-01")},
               {"qty", FilterOperator::kLt, Value(500)}};
  EXPECT_EQ(sorted_texts(repo.get_all(schema, q).items),
            sorted_texts(single.get_all(schema, q).items));
}

// A skewed stream through the write buffer: January takes most rows, February many, March to
// June a few per batch. Staggered drains hand over only the fullest partitions, so the cold months
// keep their rows across drains and a commit of theirs holds rows of several ingest logs.
std::vector<std::vector<DataRecord>> skewed_batches(int n) {
  std::mt19937_64 rng(31);
  std::vector<std::vector<DataRecord>> out;
  for (int b = 0; b < n; ++b) {
    std::vector<DataRecord> rows;
    const std::pair<int, std::size_t> share[] = {{1, 600}, {2, 400}, {3, 5},
                                                 {4, 5},   {5, 5},   {6, 5}};
    for (const auto& [month, count] : share) {
      auto part = random_wide_rows(rng, count, date_from_civil(2023, month, 1),
                                   date_from_civil(2023, month, 28));
      rows.insert(rows.end(), part.begin(), part.end());
    }
    out.push_back(std::move(rows));
  }
  return out;
}

// The rows per partition file (plain DuckDB), the rows its batch records account for, and how
// many of its commits recorded more than one id.
struct FileCounts {
  int64_t rows = 0, recorded = 0, multi_log_commits = 0;
};
FileCounts count_files(const std::string& dir) {
  FileCounts c;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().extension() != ".duckdb") continue;
    auto conn = duck::Database::open(f.path().string(), true).connect();
    const int64_t rows = conn.query_int("SELECT count(*) FROM events");
    const int64_t recorded =
        conn.query_int("SELECT coalesce(sum(row_count), 0)::BIGINT FROM _duckpart_batches");
    EXPECT_EQ(rows, recorded) << f.path();
    c.rows += rows;
    c.recorded += recorded;
    c.multi_log_commits += conn.query_int(
        "SELECT count(*) FROM (SELECT committed_at FROM _duckpart_batches GROUP BY committed_at "
        "HAVING count(*) > 1)");
  }
  return c;
}

TEST_F(ExactlyOnceTest, StaggeredDrainsLandEveryAcknowledgedRowOnceAfterAKillAtAnyCommit) {
  // A writer process with a 1 MB write buffer and no timed drains dies (no destructors) right
  // after the Nth partition commit of its background drains, while it keeps writing. The next
  // open replays every ingest log left: each acknowledged batch is there exactly once, the call in
  // flight wholly or not at all, and each partition's recorded batches account for its rows.
  const Schema schema = wide_schema();
  const int kBatches = 80;
  const auto batches = skewed_batches(kBatches);
  const std::size_t per_batch = batches[0].size();
  auto config = [&](const std::string& dir) {
    auto cfg = test_config(dir, PartitionStrategy::kMonthly);
    cfg.write_buffer_mb = 1;
    cfg.write_buffer_max_delay_ms = 0;
    cfg.write_threads = 1;  // the crash lands exactly after N commits
    return cfg;
  };
  // Without a crash: how many partition commits the stream makes, and that cold months were
  // committed with rows of several logs.
  std::atomic<int> total_commits{0};
  {
    PartitionedDataRepository repo(config(path("ref")));
    repo.set_commit_hook([&](const std::string&) { ++total_commits; });
    for (const auto& b : batches) repo.create_batch(schema, b);
    EXPECT_GE(repo.counters().buffer_drains, 4);
    std::printf("%d partition commits in %lld drains before close\n", total_commits.load(),
                static_cast<long long>(repo.counters().buffer_drains));
  }
  const FileCounts ref = count_files(path("ref/events"));
  EXPECT_EQ(ref.rows, static_cast<int64_t>(kBatches * per_batch));
  EXPECT_GT(ref.multi_log_commits, 0) << "no commit held rows of two logs";
  ASSERT_GT(total_commits, 20);
  for (int crash_after : {1, 3, 6, 10, 15, 20}) {
    SCOPED_TRACE("crash after " + std::to_string(crash_after) + " partition commits");
    const std::string base = path("parts" + std::to_string(crash_after));
    const std::string acked = base + ".acked";
    const pid_t pid = ::fork();
    if (pid == 0) {
      PartitionedDataRepository repo(config(base));
      int commits = 0;
      repo.set_commit_hook([&](const std::string&) {
        if (++commits == crash_after) ::_exit(42);
      });
      for (int b = 0; b < kBatches; ++b) {
        repo.create_batch(schema, batches[static_cast<std::size_t>(b)]);
        std::ofstream(acked, std::ios::app) << b << "\n";  // this call returned
      }
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 42) << "the writer should have died in a drain";
    int k = 0;  // whole lines: the writer may die while it appends one
    {
      std::ifstream in(acked);
      for (std::string line; std::getline(in, line);) k += in.eof() ? 0 : 1;
    }
    int logs_left = 0;
    for (const auto& f : std::filesystem::directory_iterator(base + "/events")) {
      logs_left += f.path().filename().string().starts_with("_ingest_") ? 1 : 0;
    }
    EXPECT_GE(logs_left, 1);
    std::vector<DataRecord> got;
    {
      PartitionedDataRepository repo(test_config(base, PartitionStrategy::kMonthly));
      DataQueryRequest q;
      q.limit = 10000000;
      got = repo.get_all(schema, q).items;
      EXPECT_GE(repo.counters().ingest_logs_replayed, 1);
    }
    const auto m = static_cast<int>(got.size() / per_batch);
    ASSERT_EQ(got.size() % per_batch, 0u) << "a batch landed in part";
    ASSERT_TRUE(m == k || m == k + 1) << m << " batches stored, " << k << " acknowledged";
    std::vector<DataRecord> want;
    {
      DuckDBDataRepository first_m(":memory:");
      for (int b = 0; b < m; ++b)
        first_m.create_batch(schema, batches[static_cast<std::size_t>(b)]);
      DataQueryRequest all;
      all.limit = 10000000;
      want = first_m.get_all(schema, all).items;
    }
    EXPECT_TRUE(sorted_texts(got) == sorted_texts(want));
    for (const auto& f : std::filesystem::directory_iterator(base + "/events")) {
      EXPECT_FALSE(f.path().filename().string().starts_with("_ingest_")) << f.path();
    }
    const FileCounts c = count_files(base + "/events");
    EXPECT_EQ(c.rows, static_cast<int64_t>(m * per_batch));
  }
}

}  // namespace
}  // namespace duckpart::testing
