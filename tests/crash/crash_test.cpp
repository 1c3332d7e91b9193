// Crash safety with real processes and real kill -9: every long operation of manage_partitions
// (migrate, import, cleanup, compact, restore) and a writer process using create_batch is killed at
// a random moment, then run again; the store must then equal the expected data exactly:
// every partition file opens on its own, every period holds exactly its rows (count and checksum
// over all columns), no id appears twice, nothing is lost.
//
// Trials per operation: DUCKPART_CRASH_TRIALS (default 20; `make stress` runs 100). The seed is
// printed; DUCKPART_CRASH_SEED replays it.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>
#include <unordered_set>

#include "crash_data.hpp"
#include "duck/duck.hpp"
#include "test_util.hpp"

#ifndef DUCKPART_CLI
#define DUCKPART_CLI ""
#endif
#ifndef DUCKPART_CRASH_WRITER
#define DUCKPART_CRASH_WRITER ""
#endif

namespace duckpart::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char* kSourceColumns = "id_text, ts, qty, price, tag, flag";

class CrashTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    if (const char* t = std::getenv("DUCKPART_CRASH_TRIALS")) trials_ = std::atoi(t);
    seed_ = static_cast<unsigned>(Clock::now().time_since_epoch().count() % 1000000);
    if (const char* s = std::getenv("DUCKPART_CRASH_SEED"))
      seed_ = static_cast<unsigned>(std::atoi(s));
    std::printf("crash seed %u, %d trials (DUCKPART_CRASH_SEED / DUCKPART_CRASH_TRIALS)\n", seed_,
                trials_);
    rng_.seed(seed_);
  }

  // Starts `argv` with output discarded.
  // Standard error of a spawned command goes to this file (printed when a run fails).
  static std::string stderr_file(pid_t pid) {
    return (fs::temp_directory_path() / ("duckpart_crash_" + std::to_string(pid) + ".err"))
        .string();
  }

  static pid_t spawn(const std::vector<std::string>& argv) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int devnull = ::open("/dev/null", O_WRONLY);
      const int err = ::open(stderr_file(::getpid()).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(devnull, 1);
      ::dup2(err >= 0 ? err : devnull, 2);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    return pid;
  }

  static int wait_rc(pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::error_code ec;
    fs::remove(stderr_file(pid), ec);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Runs to completion; a failure prints the command's standard error.
  static int run(const std::vector<std::string>& argv) {
    const pid_t pid = spawn(argv);
    int status = 0;
    ::waitpid(pid, &status, 0);
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream in(stderr_file(pid));
    if (rc != 0 && in) std::cerr << argv[1] << " exited " << rc << ": " << in.rdbuf() << "\n";
    std::error_code ec;
    fs::remove(stderr_file(pid), ec);
    return rc;
  }

  // Runs `argv` to completion and returns how long it took.
  double timed_run(const std::vector<std::string>& argv) {
    const auto t0 = Clock::now();
    EXPECT_EQ(run(argv), 0) << argv[1];
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }

  // Starts `argv` and kills it with SIGKILL after a random delay within [0, 1.1 * full_ms]; true
  // when the process was still running. When it had already finished, the next trials draw from
  // a shorter window (x0.7): the reference run can be slower than the trials (a busier moment of
  // the machine), and kills after the end test nothing.
  bool run_and_kill(const std::vector<std::string>& argv, double& full_ms) {
    const pid_t pid = spawn(argv);
    const int delay = static_cast<int>(rng_() % static_cast<unsigned>(full_ms * 1.1 + 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    ::kill(pid, SIGKILL);
    const int rc = wait_rc(pid);
    if (rc == 128 + SIGKILL) {
      ++killed_;
      return true;
    }
    full_ms *= 0.7;
    return false;
  }

  static std::vector<std::string> cli(std::vector<std::string> args) {
    args.insert(args.begin(), DUCKPART_CLI);
    return args;
  }

  static void copy_tree(const std::string& from, const std::string& to) {
    fs::remove_all(to);
    fs::copy(from, to, fs::copy_options::recursive);
  }

  // An unsorted source table over 2020-12 .. 2023-02.
  static void make_source(const std::string& file, int64_t rows) {
    duck::Database db = duck::Database::open(file);
    duck::Connection c = db.connect();
    c.exec(fmt::format(R"(
      CREATE TABLE events AS
      SELECT
        md5(i::VARCHAR) AS id_text,
        TIMESTAMP '2020-12-01' + to_microseconds(CAST(hash(i, 1) % (800 * 86400000000) AS BIGINT)) AS ts,
        CAST(hash(i, 2) % 1000 AS INTEGER) AS qty,
        CAST(CAST(hash(i, 4) % 100000 AS DOUBLE) / 100 AS DECIMAL(10,2)) AS price,
        ['a', 'b', 'c'][1 + CAST(hash(i, 5) % 3 AS INTEGER)] AS tag,
        hash(i, 7) % 2 = 0 AS flag
      FROM range({}) r(i)
    )",
                       rows));
  }

  struct Digest {
    int64_t rows = 0;
    std::string sum;
  };
  static Digest digest(duck::Connection& c, const std::string& table, const std::string& cols,
                       const std::string& where) {
    duck::Result r = c.query(fmt::format(
        "SELECT count(*), CAST(coalesce(sum(CAST(hash({}) AS HUGEINT)), 0) AS VARCHAR) FROM {} "
        "WHERE {}",
        cols, table, where));
    std::vector<DataRecord> rows;
    duck::ChunkDecoder d(r);
    while (auto ch = r.fetch()) d.decode(ch, rows);
    return {rows.at(0).values[0].get<int64_t>(), rows.at(0).values[1].to_string()};
  }

  // The store under <dir>/events against the oracle table `events` of `oracle_file`, restricted to
  // `where`. With `whole`, the partitions together must hold every oracle row; without, each
  // partition present must still hold exactly its period's rows (a half-done clean-up).
  void expect_store_equals(const std::string& dir, const std::string& oracle_file,
                           const std::string& cols, const std::string& id_col,
                           const std::string& where, bool whole) {
    duck::Database odb = duck::Database::open(oracle_file, true);
    duck::Connection oracle = odb.connect();
    int64_t total = 0;
    std::unordered_set<std::string> ids;
    for (const auto& f : fs::directory_iterator(dir + "/events")) {
      const auto key = parse_partition_name(f.path().filename().string());
      if (!key || key->is_null) continue;
      SCOPED_TRACE(f.path().string());
      duck::Database pdb;
      ASSERT_NO_THROW(pdb = duck::Database::open(f.path().string(), true)) << "does not open";
      duck::Connection p = pdb.connect();
      const Digest got = digest(p, "events", cols, "TRUE");
      const Digest want =
          digest(oracle, "events", cols,
                 fmt::format("ts >= TIMESTAMP '{}' AND ts < TIMESTAMP '{}' AND ({})",
                             format_date(key->start()), format_date(key->end()), where));
      ASSERT_EQ(got.rows, want.rows);
      ASSERT_EQ(got.sum, want.sum);
      total += got.rows;
      duck::Result r = p.query(fmt::format("SELECT CAST({} AS VARCHAR) FROM events", id_col));
      std::vector<DataRecord> rows;
      duck::ChunkDecoder d(r);
      while (auto ch = r.fetch()) d.decode(ch, rows);
      for (const auto& row : rows) {
        ASSERT_TRUE(ids.insert(row.values[0].to_string()).second)
            << "id " << row.values[0].to_string() << " appears twice";
      }
    }
    if (whole) {
      ASSERT_EQ(total, digest(oracle, "events", cols, where).rows) << "rows lost";
    }
  }

  void expect_killed_often() {
    std::printf("%d of %d trials killed the process mid-run\n", killed_, trials_);
    EXPECT_GE(killed_, trials_ / 2) << "kills mostly landed after the process had finished";
  }

  int trials_ = 20;
  unsigned seed_ = 0;
  std::mt19937 rng_;
  int killed_ = 0;
};

std::vector<std::string> store_args(const std::string& parts) {
  return {"--partitions", parts, "--schema", "events", "--partition-column", "ts"};
}

TEST_F(CrashTest, Migrate) {
  make_source(path("src.duckdb"), 20000);
  auto migrate = [&](const std::string& parts) {
    auto a = cli({"migrate", "--database", path("src.duckdb"), "--strategy", "monthly",
                  "--batch-size", "3000"});
    for (const auto& s : store_args(parts)) a.push_back(s);
    return a;
  };
  double full = timed_run(migrate(path("ref")));
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    run_and_kill(migrate(parts), full);
    ASSERT_EQ(run(migrate(parts)), 0);
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, Import) {
  make_source(path("src.duckdb"), 20000);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    db.connect().exec(
        fmt::format("COPY (SELECT * FROM events WHERE ts >= '2021-06-01') TO {} (HEADER)",
                    duck::quote_literal(path("rest.csv"))));
  }
  auto base = cli({"migrate", "--database", path("src.duckdb"), "--to", "2021-06-01"});
  for (const auto& s : store_args(path("base"))) base.push_back(s);
  ASSERT_EQ(run(base), 0);
  auto import = [&](const std::string& parts) {
    auto a = cli({"import", "--csv", path("rest.csv"), "--batch-size", "2000"});
    for (const auto& s : store_args(parts)) a.push_back(s);
    return a;
  };
  copy_tree(path("base"), path("ref"));
  double full = timed_run(import(path("ref")));
  expect_store_equals(path("ref"), path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    copy_tree(path("base"), parts);
    run_and_kill(import(parts), full);
    ASSERT_EQ(run(import(parts)), 0);
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, Cleanup) {
  make_source(path("src.duckdb"), 20000);
  auto base = cli({"migrate", "--database", path("src.duckdb")});
  for (const auto& s : store_args(path("base"))) base.push_back(s);
  ASSERT_EQ(run(base), 0);
  auto cleanup = [&](const std::string& parts) {
    auto a = cli({"cleanup", "--retention-days", "0", "--now", "2022-06-01"});
    for (const auto& s : store_args(parts)) a.push_back(s);
    return a;
  };
  copy_tree(path("base"), path("ref"));
  double full = timed_run(cleanup(path("ref")));
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    copy_tree(path("base"), parts);
    run_and_kill(cleanup(parts), full);
    // Half-way: each partition still there is whole; periods after the cut-off are all there.
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", false);
    ASSERT_EQ(run(cleanup(parts)), 0);
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "ts >= '2022-06-01'",
                        true);
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, Compact) {
  make_source(path("src.duckdb"), 40000);
  auto base = cli({"migrate", "--database", path("src.duckdb"), "--strategy", "yearly"});
  for (const auto& s : store_args(path("base"))) base.push_back(s);
  ASSERT_EQ(run(base), 0);
  auto compact = [&](const std::string& parts) {
    auto a = cli({"compact"});
    for (const auto& s : store_args(parts)) a.push_back(s);
    return a;
  };
  copy_tree(path("base"), path("ref"));
  double full = timed_run(compact(path("ref")));
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    copy_tree(path("base"), parts);
    run_and_kill(compact(parts), full);
    // Compaction never changes content: whatever the moment, the store is whole.
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    ASSERT_EQ(run(compact(parts)), 0);
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    auto health = cli({"health-report"});
    for (const auto& s : store_args(parts)) health.push_back(s);
    ASSERT_EQ(run(health), 0);
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, Restore) {
  make_source(path("src.duckdb"), 20000);
  auto base = cli({"migrate", "--database", path("src.duckdb")});
  for (const auto& s : store_args(path("base"))) base.push_back(s);
  ASSERT_EQ(run(base), 0);
  auto backup = cli({"backup", "--all", "--to", path("bk")});
  for (const auto& s : store_args(path("base"))) backup.push_back(s);
  ASSERT_EQ(run(backup), 0);
  auto restore = [&](const std::string& parts) {
    auto a = cli({"restore", "--from", path("bk")});
    for (const auto& s : store_args(parts)) a.push_back(s);
    return a;
  };
  auto damage = [&](const std::string& parts) {
    fs::resize_file(parts + "/events/partition_2021_03.duckdb", 4096);
    fs::remove(parts + "/events/partition_2022_07.duckdb");
  };
  copy_tree(path("base"), path("ref"));
  damage(path("ref"));
  double full = timed_run(restore(path("ref")));
  expect_store_equals(path("ref"), path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    copy_tree(path("base"), parts);
    damage(parts);
    run_and_kill(restore(parts), full);
    ASSERT_EQ(run(restore(parts)), 0);
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, Repartition) {
  make_source(path("src.duckdb"), 20000);
  auto base = cli({"migrate", "--database", path("src.duckdb"), "--strategy", "monthly"});
  for (const auto& s : store_args(path("base"))) base.push_back(s);
  ASSERT_EQ(run(base), 0);
  auto repart = [&](const std::string& parts) {
    auto a = cli({"migrate", "--from-partitions", "--strategy", "yearly", "--batch-size", "1500"});
    for (const auto& s : store_args(parts)) a.push_back(s);
    return a;
  };
  copy_tree(path("base"), path("ref"));
  double full = timed_run(repart(path("ref")));
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    copy_tree(path("base"), parts);
    run_and_kill(repart(parts), full);
    // Whatever the moment, the table is whole: the old layout or the new one.
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    ASSERT_EQ(run(repart(parts)), 0);
    expect_store_equals(parts, path("src.duckdb"), kSourceColumns, "id_text", "TRUE", true);
    ASSERT_TRUE(fs::exists(parts + "/events/partition_2021.duckdb"));
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, WriterProcess) {
  const int64_t batches = 12, rows = 1500;
  {
    DuckDBDataRepository oracle(path("oracle.duckdb"));
    for (int64_t b = 0; b < batches; ++b)
      oracle.create_batch(crash::writer_schema(), crash::writer_batch(b, rows));
  }
  auto writer = [&](const std::string& parts) {
    return std::vector<std::string>{DUCKPART_CRASH_WRITER, parts, std::to_string(batches),
                                    std::to_string(rows)};
  };
  // The faster of two runs: the first process of a test can be much slower (cold files), and a
  // writer that creates its partitions from a template finishes in well under a second, so kill
  // delays drawn against a slow first run mostly land after the trial has finished.
  double full = std::min(timed_run(writer(path("ref"))), timed_run(writer(path("ref_again"))));
  expect_store_equals(path("ref"), path("oracle.duckdb"), "id, ts, qty, name", "id", "TRUE", true);
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    run_and_kill(writer(parts), full);
    ASSERT_EQ(run(writer(parts)), 0);  // replays every batch from the start
    expect_store_equals(parts, path("oracle.duckdb"), "id, ts, qty, name", "id", "TRUE", true);
    fs::remove_all(parts);
  }
  expect_killed_often();
}

TEST_F(CrashTest, BufferedWriterProcess) {
  // Write buffering: batches are acknowledged once in the ingest log and drained to the partitions
  // in the background. After a kill -9 the next open replays the log: every acknowledged batch is
  // there exactly once, the batch in flight wholly or not at all, nothing else.
  const int64_t batches = 12, rows = 1500;
  {
    DuckDBDataRepository oracle(path("oracle.duckdb"));
    for (int64_t b = 0; b < batches; ++b)
      oracle.create_batch(crash::writer_schema(), crash::writer_batch(b, rows));
  }
  auto writer = [&](const std::string& parts) {
    return std::vector<std::string>{DUCKPART_CRASH_WRITER, parts,      std::to_string(batches),
                                    std::to_string(rows),  "buffered", parts + ".acked"};
  };
  auto acked = [](const std::string& file) {
    std::ifstream in(file);
    int64_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.empty() ? 0 : 1;
    return n;
  };
  // The batches of the store (ids begin with the batch number) whose rows it holds.
  auto batches_in = [&](const std::string& parts) {
    PartitionConfig cfg;
    cfg.base_partition_path = parts;
    cfg.strategy = PartitionStrategy::kMonthly;
    PartitionedDataRepository repo(cfg);  // replays an ingest log left by the kill
    const int64_t n = repo.count_all(crash::writer_schema());
    EXPECT_EQ(n % rows, 0) << "a batch landed in part";
    return n / rows;
  };
  double full =  // the faster of two runs, as in WriterProcess
      std::min(timed_run(writer(path("ref"))), timed_run(writer(path("ref_again"))));
  EXPECT_EQ(acked(path("ref") + ".acked"), batches);
  EXPECT_EQ(batches_in(path("ref")), batches);
  expect_store_equals(path("ref"), path("oracle.duckdb"), "id, ts, qty, name", "id", "TRUE", true);
  int in_flight_kept = 0;
  for (int t = 0; t < trials_; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string parts = path("p" + std::to_string(t));
    run_and_kill(writer(parts), full);
    const int64_t k = acked(parts + ".acked");
    const int64_t m = batches_in(parts);
    ASSERT_TRUE(m == k || m == k + 1) << m << " batches stored, " << k << " acknowledged";
    in_flight_kept += m == k + 1 ? 1 : 0;
    for (const auto& f : fs::directory_iterator(parts + "/events")) {
      EXPECT_FALSE(f.path().filename().string().starts_with("_ingest_"))
          << f.path() << " was not applied and removed";
    }
    expect_store_equals(parts, path("oracle.duckdb"), "id, ts, qty, name", "id",
                        fmt::format("substr(CAST(id AS VARCHAR), 1, 8) < '{:08x}'", m), true);
    fs::remove_all(parts);
  }
  std::printf("%d trials kept the batch in flight\n", in_flight_kept);
  expect_killed_often();
}

}  // namespace
}  // namespace duckpart::testing
