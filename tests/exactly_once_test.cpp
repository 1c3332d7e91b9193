// A batch interrupted by a process death between two partition commits, replayed with the same
// batch id, ends up applied exactly once in every partition.
#include <sys/wait.h>
#include <unistd.h>

#include <set>

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

}  // namespace
}  // namespace duckpart::testing
