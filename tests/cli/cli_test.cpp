// manage_partitions end to end: the real binary on real files.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "duck/duck.hpp"
#include "process_util.hpp"
#include "test_util.hpp"

#ifndef DUCKPART_CLI
#define DUCKPART_CLI ""
#endif
#ifndef DUCKPART_LOCK_HELPER
#define DUCKPART_LOCK_HELPER ""
#endif

namespace duckpart::testing {
namespace {

struct CliRun {
  int rc = -1;
  std::string out;
  std::string err;
};

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

class CliTest : public TempDirTest {
 protected:
  CliRun run(const std::vector<std::string>& args) {
    std::string cmd = quote(DUCKPART_CLI);
    for (const auto& a : args) cmd += " " + quote(a);
    const std::string err_file = path("stderr.txt");
    cmd += " 2>" + quote(err_file);
    CliRun r;
    FILE* p = ::popen(cmd.c_str(), "r");
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int status = ::pclose(p);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream e(err_file);
    std::stringstream ss;
    ss << e.rdbuf();
    r.err = ss.str();
    return r;
  }

  // Starts the CLI with `args` (output to /dev/null) and kills it with SIGKILL after `fraction` of
  // `full_ms`. When the run finished before the kill (the measured reference run can be slower
  // than the trial: a neighbouring test may have loaded the machine then), `output` is removed and
  // the run is tried again with half the delay, up to 6 times, so that a trial really kills a
  // running migration. True when it did.
  bool kill_mid_run(const std::vector<std::string>& args, double full_ms, double fraction,
                    const std::string& output) {
    double delay_ms = full_ms * fraction;
    for (int attempt = 0; attempt < 6; ++attempt, delay_ms /= 2) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        const int devnull = ::open("/dev/null", O_WRONLY);
        ::dup2(devnull, 1);
        ::dup2(devnull, 2);
        std::vector<char*> argv = {const_cast<char*>(DUCKPART_CLI)};
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(DUCKPART_CLI, argv.data());
        ::_exit(127);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(delay_ms)));
      ::kill(pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return true;
      std::printf("the run ended before its kill at %.0f ms; again with half the delay\n",
                  delay_ms);
      std::filesystem::remove_all(output);
    }
    return false;
  }

  // An unsorted source table with many column types, random timestamps over 2020-12..2023-02.
  void make_source(const std::string& file, int64_t rows, bool with_nulls = false, int days = 800) {
    duck::Database db = duck::Database::open(file);
    duck::Connection c = db.connect();
    c.exec(fmt::format(R"(
      CREATE TABLE events AS
      SELECT
        uuid()::VARCHAR AS id_text,
        TIMESTAMP '2020-12-01' + to_microseconds(CAST(hash(i, 1) % ({} * 86400000000) AS BIGINT)) AS ts,
        CAST(hash(i, 2) % 1000 AS INTEGER) AS qty,
        round(CAST(hash(i, 3) % 100000 AS DOUBLE) / 7, 3) AS ratio,
        CAST(CAST(hash(i, 4) % 100000 AS DOUBLE) / 100 AS DECIMAL(10,2)) AS price,
        ['a', 'b', 'c'][1 + CAST(hash(i, 5) % 3 AS INTEGER)] AS tag,
        [CAST(i AS INTEGER), 2] AS list_col,
        to_days(CAST(hash(i, 6) % 30 AS INTEGER)) AS span,
        hash(i, 7) % 2 = 0 AS flag
      FROM range({}) r(i)
    )",
                       days, rows));
    if (with_nulls) c.exec("UPDATE events SET ts = NULL WHERE qty < 10");
  }

  // Independent check: every partition file, opened directly, holds exactly the source rows of its
  // period (count and checksum over all columns), and together they hold every non-NULL row.
  void expect_partitions_equal_source(const std::string& source, const std::string& dir,
                                      PartitionStrategy s) {
    duck::Database src_db = duck::Database::open(source, true);
    duck::Connection src = src_db.connect();
    const std::string cols = "id_text, ts, qty, ratio, price, tag, list_col, span, flag";
    int64_t total = 0;
    int files = 0;
    for (const auto& f : std::filesystem::directory_iterator(dir)) {
      auto key = parse_partition_name(f.path().filename().string());
      if (!key || key->is_null) continue;
      ASSERT_EQ(key->strategy, s) << f.path();
      ++files;
      duck::Database pdb = duck::Database::open(f.path().string(), true);
      duck::Connection p = pdb.connect();
      const std::string sum = fmt::format("CAST(sum(CAST(hash({}) AS HUGEINT)) AS VARCHAR)", cols);
      duck::Result pr = p.query(fmt::format("SELECT count(*), {} FROM events", sum));
      duck::Result sr = src.query(fmt::format(
          "SELECT count(*), {} FROM events WHERE ts >= TIMESTAMP '{}' AND ts < TIMESTAMP '{}'", sum,
          format_date(key->start()), format_date(key->end())));
      std::vector<DataRecord> a, b;
      duck::ChunkDecoder da(pr), db(sr);
      while (auto c = pr.fetch()) da.decode(c, a);
      while (auto c = sr.fetch()) db.decode(c, b);
      EXPECT_EQ(row_text(a.at(0)), row_text(b.at(0))) << f.path();
      total += a.at(0).values[0].get<int64_t>();
      // The partition's metadata (used for pruning) agrees with its rows.
      EXPECT_EQ(p.query_int("SELECT CAST((SELECT row_count FROM _duckpart_meta) = count(*) AND "
                            "(SELECT min_value FROM _duckpart_meta) IS NOT DISTINCT FROM min(ts) "
                            "AND (SELECT max_value FROM _duckpart_meta) IS NOT DISTINCT FROM "
                            "max(ts) AS INTEGER) FROM events"),
                1)
          << f.path();
    }
    EXPECT_GT(files, 0);
    EXPECT_EQ(total, src.query_int("SELECT count(*) FROM events WHERE ts IS NOT NULL"));
  }
};

TEST_F(CliTest, MigratesEveryStrategyVerbatim) {
  make_source(path("src.duckdb"), 20000);
  make_source(path("src_90days.duckdb"), 20000, false, 90);  // daily: 90 files, not 800
  for (const char* s : {"yearly", "monthly", "weekly", "daily"}) {
    SCOPED_TRACE(s);
    const std::string parts = path(std::string("parts_") + s);
    const std::string src =
        std::string(s) == "daily" ? path("src_90days.duckdb") : path("src.duckdb");
    const CliRun r = run({"migrate", "--database", src, "--partitions", parts, "--schema", "events",
                          "--partition-column", "ts", "--strategy", s, "--batch-size", "7000"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("migrated 20000 rows"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("0 mismatch(es)"), std::string::npos) << r.out;
    expect_partitions_equal_source(src, parts + "/events", parse_strategy(s));
    // A second run has nothing left to copy and verifies again.
    const CliRun again =
        run({"migrate", "--database", src, "--partitions", parts, "--schema", "events",
             "--partition-column", "ts", "--strategy", s, "--batch-size", "7000"});
    ASSERT_EQ(again.rc, 0) << again.err;
    EXPECT_NE(again.out.find("migrated 0 rows"), std::string::npos) << again.out;
  }
}

// The router copies rows column by column with typed loops (fixed widths, inline and heap
// strings) and leaves nested, enum and bit columns to DuckDB; it computes DATE and TIMESTAMP
// periods itself. Every type, NULLs in every column, short and long strings, dates before 1970,
// ISO weeks across new year, more periods than one window of open partitions (weekly DATE,
// daily TIMESTAMP) and ±infinity (NULL periods, as DuckDB's year() has them): each
// partition holds exactly the source rows DuckDB's own period expression puts there.
TEST_F(CliTest, RoutedMigrationCopiesEveryColumnTypeVerbatim) {
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    c.exec(
        "CREATE TABLE base AS SELECT i, DATE '1969-06-01' + CAST(hash(i) % 900 AS INTEGER) AS day, "
        "TIMESTAMP '1969-12-25' + to_microseconds(CAST(hash(i * 7) % (200 * 86400000000) AS "
        "BIGINT)) AS ts FROM range(20000) r(i)");
    c.exec(
        "CREATE TABLE t AS SELECT i AS id, day, ts, CASE WHEN i % 11 = 0 THEN NULL ELSE i % 2 = 0 "
        "END AS b, CAST(i % 127 AS TINYINT) AS ti, CAST(i % 255 AS UTINYINT) AS uti, CAST(i AS "
        "SMALLINT) AS si, CAST(i AS USMALLINT) AS usi, CASE WHEN i % 13 = 0 THEN NULL ELSE CAST(i "
        "AS INTEGER) END AS ii, CAST(i AS UINTEGER) AS ui, CAST(i AS UBIGINT) AS ubi, CAST(i AS "
        "HUGEINT) * 1000000000000000000 AS hi, CAST(i AS UHUGEINT) AS uhi, CAST(i AS FLOAT) / 3 AS "
        "f, CAST(i AS DOUBLE) / 7 AS d, CAST(i % 999 AS DECIMAL(4, 1)) AS d4, CAST(i AS DECIMAL(9, "
        "2)) / 3 AS d9, CAST(i AS DECIMAL(18, 3)) / 7 AS d18, CAST(i AS DECIMAL(38, 5)) * "
        "100000000000 AS d38, TIME '00:00:00' + INTERVAL (i) SECOND AS tm, INTERVAL (i) MINUTE AS "
        "iv, CAST(ts AS TIMESTAMP_NS) AS tns, CAST(ts AS TIMESTAMP_S) AS tsec, CAST(ts AS "
        "TIMESTAMP_MS) AS tms, CAST(ts AS TIMESTAMPTZ) AS ttz, uuid() AS u, CASE WHEN i % 5 = 0 "
        "THEN NULL WHEN i % 5 = 1 THEN 'short' || (i % 10) ELSE repeat('long text ', i % 7 + 2) || "
        "i END AS s, CASE WHEN i % 4 = 0 THEN NULL ELSE encode(repeat('x', i % 30)) END AS bl, "
        "CASE WHEN i % 6 = 0 THEN NULL ELSE [i, i + 1] END AS lst, {'a': i, 'b': 'v' || i} AS st, "
        "CAST(['sad', 'ok', 'happy'][i % 3 + 1] AS ENUM('sad', 'ok', 'happy')) AS m, CAST(CASE "
        "WHEN i % 2 = 0 THEN '0101' ELSE '1' END AS BIT) AS bits FROM base");
    // A row NULL in every column but the two period columns, one NULL in every column but id, and
    // infinite periods.
    c.exec(
        "INSERT INTO t (id, day, ts) VALUES (100000, DATE '1970-01-01', TIMESTAMP '1970-01-01')");
    c.exec("INSERT INTO t (id) VALUES (100003)");
    c.exec(
        "INSERT INTO t (id, day, ts, s) VALUES (100001, 'infinity', '-infinity', 'inf'), (100002, "
        "'-infinity', 'infinity', repeat('z', 40))");
    c.exec("DROP TABLE base");
  }
  // ±infinity belongs to no period (DuckDB's year() makes it NULL): refused with a message that
  // says so, nothing written — never passed off as NULL into partition_null.
  for (const char* column : {"day", "ts"}) {
    const CliRun r = run({"migrate", "--database", path("src.duckdb"), "--partitions",
                          path("parts_inf"), "--schema", "t", "--partition-column", column,
                          "--strategy", "monthly", "--null-partition"});
    EXPECT_NE(r.rc, 0) << column;
    EXPECT_NE(r.err.find("infinity or -infinity"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(path("parts_inf") + "/t/partition_null.duckdb"));
  }
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec("DELETE FROM t WHERE isinf(day) OR isinf(ts)");
  }
  struct Case {
    const char* column;
    const char* strategy;
  };
  for (const Case k :
       {Case{"day", "weekly"}, Case{"day", "monthly"}, Case{"ts", "daily"}, Case{"ts", "yearly"}}) {
    SCOPED_TRACE(fmt::format("{} {}", k.column, k.strategy));
    const std::string parts = path(fmt::format("parts_{}_{}", k.column, k.strategy));
    const std::vector<std::string> args = {"migrate",
                                           "--database",
                                           path("src.duckdb"),
                                           "--partitions",
                                           parts,
                                           "--schema",
                                           "t",
                                           "--partition-column",
                                           k.column,
                                           "--strategy",
                                           k.strategy,
                                           "--batch-size",
                                           "6000",
                                           "--direct-copy-rows",
                                           "0",
                                           "--null-partition",
                                           "--json"};
    const CliRun r = run(args);
    ASSERT_EQ(r.rc, 0) << r.err << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["mismatches"].get<int64_t>(), 0);
    EXPECT_EQ(j["rows_copied"].get<int64_t>(), 20002);
    // Independently of the migrator's own verification: every partition file against the source
    // rows DuckDB's period expression assigns to it, row for row (EXCEPT ALL both ways).
    duck::Database hub = duck::Database::open(":memory:");
    duck::Connection h = hub.connect();
    h.exec(fmt::format("ATTACH {} AS src (READ_ONLY)", duck::quote_literal(path("src.duckdb"))));
    const PartitionStrategy strategy = parse_strategy(k.strategy);
    const std::string code = partition_code_sql(strategy, k.column);
    int64_t total = 0;
    int files = 0;
    for (const auto& f : std::filesystem::directory_iterator(parts + "/t")) {
      auto key = parse_partition_name(f.path().filename().string());
      if (!key || f.path().extension() != ".duckdb") continue;
      ++files;
      h.exec(fmt::format("ATTACH {} AS p (READ_ONLY)", duck::quote_literal(f.path().string())));
      const std::string where = key->is_null ? fmt::format("{} IS NULL", code)
                                             : fmt::format("{} = {}", code, partition_code_of([&] {
                                                             PartitionKey kk = *key;
                                                             kk.strategy = strategy;
                                                             return kk;
                                                           }()));
      const std::string mine = fmt::format("SELECT * FROM src.main.t WHERE {}", where);
      EXPECT_EQ(
          h.query_int(fmt::format("SELECT count(*) FROM ({} EXCEPT ALL SELECT * FROM p.t)", mine)),
          0)
          << f.path();
      EXPECT_EQ(
          h.query_int(fmt::format("SELECT count(*) FROM (SELECT * FROM p.t EXCEPT ALL {})", mine)),
          0)
          << f.path();
      total += h.query_int("SELECT count(*) FROM p.t");
      h.exec("DETACH p");
    }
    EXPECT_GT(files, 2);
    EXPECT_EQ(total, 20002);
  }
}

// A source sorted by time, with 2% of its rows appended out of order at the end (late
// corrections): runs of one period are copied by INSERT ... SELECT, the stragglers are routed, and
// the partitions equal the source — also after a kill -9 in the middle and a resume.
TEST_F(CliTest, SortedSourceIsCopiedByRunsAndEqualsTheSource) {
  make_source(path("src.duckdb"), 60000);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    c.exec("CREATE TABLE s AS SELECT * FROM events WHERE qty >= 20 ORDER BY ts");
    c.exec("INSERT INTO s SELECT * FROM events WHERE qty < 20");
    c.exec("DROP TABLE events");
    c.exec("ALTER TABLE s RENAME TO events");
  }
  const std::vector<std::string> common = {
      "--database", path("src.duckdb"), "--schema",     "events", "--partition-column", "ts",
      "--strategy", "monthly",          "--batch-size", "5000",   "--direct-copy-rows", "1000"};
  auto args = [&](const std::string& parts, std::vector<std::string> more) {
    std::vector<std::string> a = {"migrate", "--partitions", parts};
    a.insert(a.end(), common.begin(), common.end());
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  const auto t_full = std::chrono::steady_clock::now();
  const CliRun r = run(args(path("parts"), {"--json"}));
  // The kills below land within this duration, so that they hit a running migration on a machine
  // of any speed.
  const double full_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_full).count();
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mismatches"].get<int64_t>(), 0);
  EXPECT_EQ(j["rows_copied"].get<int64_t>(), 60000);
  // About 2,200 rows per month: most come as runs; the stragglers cannot.
  EXPECT_GT(j["rows_by_insert"].get<int64_t>(), 40000) << r.out;
  EXPECT_LT(j["rows_by_insert"].get<int64_t>(), 60000) << r.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts") + "/events",
                                 PartitionStrategy::kMonthly);
  // --direct-copy-rows 0 routes every row, to the same partitions.
  std::vector<std::string> routed = args(path("parts_routed"), {"--json"});
  routed[routed.size() - 2] = "0";
  const CliRun r0 = run(routed);
  ASSERT_EQ(r0.rc, 0) << r0.err << r0.out;
  EXPECT_EQ(nlohmann::json::parse(r0.out)["rows_by_insert"].get<int64_t>(), 0);
  expect_partitions_equal_source(path("src.duckdb"), path("parts_routed") + "/events",
                                 PartitionStrategy::kMonthly);

  // kill -9 while runs are being copied, then resume: every row exactly once.
  const unsigned seed =
      static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count() % 100000);
  std::printf("kill -9 trial seed %u\n", seed);
  std::mt19937 rng(seed);
  int killed_mid_run = 0;
  for (int trial = 0; trial < 2; ++trial) {
    const std::string parts = path("parts_killed" + std::to_string(trial));
    if (kill_mid_run(args(parts, {"--commit-interval", "0.05"}), full_ms,
                     0.15 + 0.6 * static_cast<double>(rng() % 1000) / 1000, parts))
      ++killed_mid_run;
    const CliRun resumed = run(args(parts, {"--resume"}));
    ASSERT_EQ(resumed.rc, 0) << resumed.err << resumed.out;
    EXPECT_NE(resumed.out.find("0 mismatch(es)"), std::string::npos) << resumed.out;
    expect_partitions_equal_source(path("src.duckdb"), parts + "/events",
                                   PartitionStrategy::kMonthly);
    const CliRun ids = run({"query", "--partitions", parts, "--schema", "events", "--columns",
                            "id_text", "--format", "csv"});
    ASSERT_EQ(ids.rc, 0) << ids.err;
    std::set<std::string> seen;
    std::istringstream lines(ids.out);
    std::string line;
    int64_t n = -1;  // header
    while (std::getline(lines, line)) {
      ++n;
      seen.insert(line);
    }
    EXPECT_EQ(n, 60000);
    EXPECT_EQ(static_cast<int64_t>(seen.size()) - 1, n) << "an id appears twice";
  }
  EXPECT_GT(killed_mid_run, 0) << "no trial was killed mid-run, even with delays cut to 1/32";
}

TEST_F(CliTest, DryRunWritesNothing) {
  make_source(path("src.duckdb"), 5000);
  const CliRun r = run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                        "--schema", "events", "--partition-column", "ts", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("create   partition_2021_01.duckdb"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dry run: nothing was written"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path("parts")));
  // With an existing store: the listing and every file's size/mtime stay the same.
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts", "--to", "2021-06-01"})
                .rc,
            0);
  auto listing = [&] {
    std::string s;
    for (const auto& f : std::filesystem::recursive_directory_iterator(path("parts"))) {
      s += f.path().string() + ":" + std::to_string(f.is_regular_file() ? f.file_size() : 0) + ":" +
           std::to_string(std::filesystem::last_write_time(f).time_since_epoch().count()) + "\n";
    }
    return s;
  };
  const std::string before = listing();
  const CliRun d = run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                        "--schema", "events", "--partition-column", "ts", "--dry-run", "--json"});
  ASSERT_EQ(d.rc, 0) << d.err;
  auto j = nlohmann::json::parse(d.out);
  EXPECT_EQ(j["rows"].get<int64_t>(), 5000);
  EXPECT_EQ(j["partitions"][0]["action"], "update");
  EXPECT_EQ(listing(), before);
}

TEST_F(CliTest, KillNineThenResumeGivesEveryRowExactlyOnce) {
  make_source(path("src.duckdb"), 60000);
  const unsigned seed =
      static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count() % 100000);
  std::printf("kill -9 trial seed %u\n", seed);
  std::mt19937 rng(seed);
  int killed_mid_run = 0;
  int trials = 3;  // CI's sanitizer run sets fewer: each trial is a full migration
  if (const char* t = std::getenv("DUCKPART_KILL_TRIALS")) trials = std::atoi(t);
  // One uninterrupted run first: the kills land within its duration, so that they hit a running
  // migration on a machine of any speed.
  const auto t_full = std::chrono::steady_clock::now();
  const CliRun full = run({"migrate", "--database", path("src.duckdb"), "--partitions",
                           path("parts_full"), "--schema", "events", "--partition-column", "ts",
                           "--strategy", "weekly", "--batch-size", "5000"});
  ASSERT_EQ(full.rc, 0) << full.err;
  const double full_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_full).count();
  for (int trial = 0; trial < trials; ++trial) {
    const std::string parts = path("parts" + std::to_string(trial));
    if (kill_mid_run(
            {"migrate", "--database", path("src.duckdb"), "--partitions", parts, "--schema",
             "events", "--partition-column", "ts", "--strategy", "weekly", "--batch-size", "5000"},
            full_ms, 0.1 + 0.7 * static_cast<double>(rng() % 1000) / 1000, parts))
      ++killed_mid_run;
    const CliRun r = run({"migrate", "--database", path("src.duckdb"), "--partitions", parts,
                          "--schema", "events", "--partition-column", "ts", "--strategy", "weekly",
                          "--batch-size", "5000", "--resume"});
    ASSERT_EQ(r.rc, 0) << r.err << r.out;
    EXPECT_NE(r.out.find("0 mismatch(es)"), std::string::npos) << r.out;
    expect_partitions_equal_source(path("src.duckdb"), parts + "/events",
                                   PartitionStrategy::kWeekly);
    const CliRun dup = run({"query", "--partitions", parts, "--schema", "events", "--columns",
                            "id_text", "--format", "csv"});
    ASSERT_EQ(dup.rc, 0) << dup.err;
    std::set<std::string> ids;
    std::istringstream lines(dup.out);
    std::string line;
    int64_t n = -1;  // header
    while (std::getline(lines, line)) {
      ++n;
      ids.insert(line);
    }
    EXPECT_EQ(n, 60000);
    EXPECT_EQ(static_cast<int64_t>(ids.size()) - 1, n) << "an id appears twice";
  }
  EXPECT_GT(killed_mid_run, 0) << "no trial was killed mid-run, even with delays cut to 1/32";
}

// Starts `manage_partitions migrate` with its stderr on a pipe and returns once it has reported
// its first batch, so a signal sent next lands mid-run, with the handlers installed.
struct MigrateChild {
  pid_t pid = -1;
  int err_fd = -1;
  std::string err;

  MigrateChild(const std::string& src, const std::string& parts) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid = ::fork();
    if (pid == 0) {
      const int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl(DUCKPART_CLI, DUCKPART_CLI, "migrate", "--database", src.c_str(), "--partitions",
              parts.c_str(), "--schema", "events", "--partition-column", "ts", "--batch-size",
              "500", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    err_fd = fds[0];
    read_until("batch 1/");
  }
  // Reads stderr until it holds `what` (or ends).
  void read_until(const std::string& what) {
    char c;
    while (err.find(what) == std::string::npos && ::read(err_fd, &c, 1) == 1) err += c;
  }
  // Reads the rest of stderr, reaps the child and returns its wait status.
  int wait() {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(err_fd, buf, sizeof buf)) > 0) err.append(buf, static_cast<size_t>(n));
    ::close(err_fd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  }
};

TEST_F(CliTest, CtrlCStopsAtABatchBoundary) {
  make_source(path("src.duckdb"), 60000);
  MigrateChild child(path("src.duckdb"), path("parts"));
  ASSERT_GT(child.pid, 0);
  ASSERT_NE(child.err.find("batch 1/"), std::string::npos) << child.err;
  ::kill(child.pid, SIGINT);
  const int status = child.wait();
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "\n" << child.err;
  EXPECT_EQ(WEXITSTATUS(status), 9) << child.err;  // 120 batches: it was stopped mid-run
  EXPECT_NE(child.err.find("stopping at the next safe point"), std::string::npos) << child.err;
  {
    int64_t copied = 0;
    for (const auto& f : std::filesystem::directory_iterator(path("parts/events"))) {
      if (f.path().extension() != ".duckdb") continue;
      duck::Database p = duck::Database::open(f.path().string(), true);
      copied += p.connect().query_int("SELECT count(*) FROM events");
    }
    EXPECT_LT(copied, 60000) << "the stop request did not stop the run";
  }
  const CliRun r = run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                        "--schema", "events", "--partition-column", "ts", "--batch-size", "500"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("0 mismatch(es)"), std::string::npos);
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);

  // A second Ctrl-C quits at once; what it leaves resumes like a crash.
  MigrateChild again(path("src.duckdb"), path("parts2"));
  ASSERT_GT(again.pid, 0);
  ::kill(again.pid, SIGINT);
  again.read_until("stopping at the next safe point");
  ::kill(again.pid, SIGINT);
  const int st2 = again.wait();
  // Exits 9 only if the first stop request completed before the second signal arrived.
  if (WIFSIGNALED(st2)) {
    EXPECT_EQ(WTERMSIG(st2), SIGINT);
  } else {
    EXPECT_EQ(WEXITSTATUS(st2), 9) << again.err;
  }
  const CliRun r2 =
      run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts2"), "--schema",
           "events", "--partition-column", "ts", "--batch-size", "500", "--resume"});
  ASSERT_EQ(r2.rc, 0) << r2.err;
  EXPECT_NE(r2.out.find("0 mismatch(es)"), std::string::npos);
  expect_partitions_equal_source(path("src.duckdb"), path("parts2/events"),
                                 PartitionStrategy::kMonthly);
}

TEST_F(CliTest, NullPartitionValuesAreRefusedOrRouted) {
  make_source(path("src.duckdb"), 5000, /*with_nulls=*/true);
  const CliRun refused = run({"migrate", "--database", path("src.duckdb"), "--partitions",
                              path("parts"), "--schema", "events", "--partition-column", "ts"});
  EXPECT_EQ(refused.rc, 2) << refused.err;
  EXPECT_NE(refused.err.find("have a NULL 'ts'"), std::string::npos) << refused.err;
  const CliRun routed =
      run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts2"), "--schema",
           "events", "--partition-column", "ts", "--null-partition"});
  ASSERT_EQ(routed.rc, 0) << routed.err;
  EXPECT_NE(routed.out.find("0 mismatch(es)"), std::string::npos) << routed.out;
  EXPECT_TRUE(std::filesystem::exists(path("parts2/events/partition_null.duckdb")));
  duck::Database db = duck::Database::open(path("src.duckdb"), true);
  const int64_t nulls = db.connect().query_int("SELECT count(*) FROM events WHERE ts IS NULL");
  ASSERT_GT(nulls, 0);
  const CliRun count = run({"query", "--partitions", path("parts2"), "--schema", "events",
                            "--filter", "ts:is_null", "--count"});
  EXPECT_EQ(count.out, std::to_string(nulls) + "\n") << count.err;
  const CliRun all =
      run({"query", "--partitions", path("parts2"), "--schema", "events", "--count"});
  EXPECT_EQ(all.out, "5000\n");
}

TEST_F(CliTest, LockedSourceSaysWhatToDo) {
  make_source(path("src.duckdb"), 1000);
  ChildProcess holder({DUCKPART_LOCK_HELPER, path("src.duckdb")});
  ASSERT_EQ(holder.line(), "locked");
  const CliRun r = run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                        "--schema", "events", "--partition-column", "ts"});
  EXPECT_EQ(r.rc, 7) << r.err;
  EXPECT_NE(r.err.find(path("src.duckdb")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("another process"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("PartitionMigrator"), std::string::npos) << r.err;
  // A missing source is named, and no partition directory is made for it.
  const CliRun missing = run({"migrate", "--database", path("nope.duckdb"), "--partitions",
                              path("parts2"), "--schema", "events", "--partition-column", "ts"});
  EXPECT_EQ(missing.rc, 3) << missing.err;
  EXPECT_NE(missing.err.find("source database '" + path("nope.duckdb") + "' does not exist"),
            std::string::npos)
      << missing.err;
  EXPECT_FALSE(std::filesystem::exists(path("parts2")));
  // A negative --limit is refused (it was ignored: every row was printed).
  EXPECT_EQ(run({"query", "--partitions", path("parts"), "--schema", "events", "--limit", "-5"}).rc,
            2);
  // Numbers in decimal digits only (CLI11 reads 0x10 as 16): nothing is removed.
  const CliRun hex = run({"cleanup", "--partitions", path("parts"), "--schema", "events",
                          "--retention-days", "0x10", "--now", "2030-01-01"});
  EXPECT_EQ(hex.rc, 2) << hex.err;
  EXPECT_NE(hex.err.find("'0x10' is not a whole number"), std::string::npos) << hex.err;
  EXPECT_EQ(
      run({"query", "--partitions", path("parts"), "--schema", "events", "--limit", "0x10"}).rc, 2);
}

TEST_F(CliTest, AnalyzeReportsPeriodsAndRecommends) {
  make_source(path("src.duckdb"), 10000, /*with_nulls=*/true);
  const CliRun r = run({"analyze", "--database", path("src.duckdb"), "--schema", "events",
                        "--partition-column", "ts", "--strategy", "monthly", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["total_rows"].get<int64_t>(), 10000);
  EXPECT_GT(j["null_rows"].get<int64_t>(), 0);
  int64_t sum = 0;
  for (const auto& p : j["periods"]) sum += p["rows"].get<int64_t>();
  EXPECT_EQ(sum, 10000);
  EXPECT_EQ(j["periods"][0]["partition"], "partition_2020_12");
  EXPECT_EQ(j["recommended_strategy"], "yearly");
  EXPECT_FALSE(std::filesystem::exists(path("data")));
  const CliRun text = run({"analyze", "--database", path("src.duckdb"), "--schema", "events",
                           "--partition-column", "ts"});
  EXPECT_NE(text.out.find("recommended strategy: yearly"), std::string::npos) << text.out;
  const CliRun bad = run({"analyze", "--database", path("src.duckdb"), "--schema", "nope",
                          "--partition-column", "ts"});
  EXPECT_EQ(bad.rc, 3);
  EXPECT_NE(bad.err.find("manage_partitions: table 'nope' does not exist"), std::string::npos)
      << bad.err;
  const CliRun badcol = run({"analyze", "--database", path("src.duckdb"), "--schema", "events",
                             "--partition-column", "tag"});
  EXPECT_EQ(badcol.rc, 2);
  EXPECT_NE(badcol.err.find("must be DATE or TIMESTAMP"), std::string::npos) << badcol.err;
}

TEST_F(CliTest, QueryAndStatsOutputs) {
  make_source(path("src.duckdb"), 3000);
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  const std::vector<std::string> base = {"query", "--partitions", path("parts"), "--schema",
                                         "events"};
  auto q = [&](std::vector<std::string> extra) {
    auto a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a);
  };
  const CliRun count = q({"--filter", "ts:between:2021-01-01,2021-03-31 23:59:59", "--count"});
  ASSERT_EQ(count.rc, 0) << count.err;
  duck::Database db = duck::Database::open(path("src.duckdb"), true);
  const int64_t expect = db.connect().query_int(
      "SELECT count(*) FROM events WHERE ts BETWEEN TIMESTAMP '2021-01-01' AND TIMESTAMP "
      "'2021-03-31 23:59:59'");
  EXPECT_EQ(count.out, std::to_string(expect) + "\n");
  const CliRun csv = q({"--filter", "qty:lt:5", "--sort", "qty", "--sort", "id_text:desc",
                        "--columns", "qty,tag", "--format", "csv"});
  ASSERT_EQ(csv.rc, 0) << csv.err;
  EXPECT_EQ(csv.out.substr(0, 8), "qty,tag\n");
  const CliRun json = q({"--filter", "tag:in:a,b", "--limit", "5", "--format", "json", "--columns",
                         "id_text,qty,ratio,flag,list_col"});
  ASSERT_EQ(json.rc, 0) << json.err;
  auto arr = nlohmann::json::parse(json.out);
  ASSERT_EQ(arr.size(), 5u);
  EXPECT_TRUE(arr[0]["qty"].is_number_integer());
  EXPECT_TRUE(arr[0]["flag"].is_boolean());
  EXPECT_TRUE(arr[0]["list_col"].is_string());  // non-native types come back as text
  const CliRun table = q({"--limit", "2", "--columns", "qty,tag"});
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), '\n'), 3);
  const CliRun bad = q({"--filter", "qty:near:5"});
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("unknown filter operator 'near'"), std::string::npos) << bad.err;
  const CliRun badcol = q({"--filter", "nope:eq:5"});
  EXPECT_EQ(badcol.rc, 2);
  EXPECT_NE(badcol.err.find("unknown filter column 'nope'"), std::string::npos) << badcol.err;
  const CliRun badval = q({"--filter", "ts:gte:2021-02-30"});
  EXPECT_EQ(badval.rc, 2);
  EXPECT_NE(badval.err.find("'2021-02-30'"), std::string::npos) << badval.err;
  const CliRun stats =
      run({"stats", "--partitions", path("parts"), "--schema", "events", "--json"});
  ASSERT_EQ(stats.rc, 0) << stats.err;
  auto sj = nlohmann::json::parse(stats.out);
  EXPECT_EQ(sj["schemas"][0]["total_rows"].get<int64_t>(), 3000);
  const CliRun text = run({"stats", "--partitions", path("parts"), "--schema", "events"});
  EXPECT_NE(text.out.find("partition_2021_01"), std::string::npos);
  EXPECT_NE(text.out.find("total: "), std::string::npos);
  const CliRun missing = run({"stats", "--partitions", path("nothing")});
  EXPECT_EQ(missing.rc, 3);
  const CliRun self = run({"test"});
  EXPECT_EQ(self.rc, 0) << self.out << self.err;
  EXPECT_NE(self.out.find(" passed, 0 failed"), std::string::npos) << self.out;
  const CliRun help = run({"--help"});
  EXPECT_EQ(help.rc, 0);
  EXPECT_NE(help.out.find("migrate"), std::string::npos);
  const CliRun unknown = run({"frobnicate"});
  EXPECT_EQ(unknown.rc, 2);
}

TEST_F(CliTest, CleanupRemovesWholeExpiredPartitionsAndFreesSpace) {
  make_source(path("src.duckdb"), 6000);
  const std::vector<std::string> store = {"--partitions", path("parts"), "--schema", "events"};
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  // Cut-off 2022-01-15 (now 2022-03-16, 60 days): 2020-12 .. 2021-12 go, 2022-01 straddles and
  // stays.
  const CliRun dry =
      with({"cleanup", "--retention-days", "60", "--now", "2022-03-16", "--dry-run", "--json"});
  ASSERT_EQ(dry.rc, 0) << dry.err;
  auto j = nlohmann::json::parse(dry.out);
  EXPECT_EQ(j["cutoff"], "2022-01-15");
  EXPECT_EQ(j["removed"].size(), 13u);
  EXPECT_EQ(j["kept_straddling"][0], "partition_2022_01");
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2021_06.duckdb")))
      << "dry run changed files";
  duck::Database db = duck::Database::open(path("src.duckdb"), true);
  const int64_t keep =
      db.connect().query_int("SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2022-01-01'");
  const uint64_t before = [&] {
    uint64_t n = 0;
    for (const auto& f : std::filesystem::directory_iterator(path("parts/events")))
      n += f.is_regular_file() ? f.file_size() : 0;
    return n;
  }();
  const CliRun real = with(
      {"cleanup", "--retention-days", "60", "--now", "2022-03-16", "--archive", path("archive")});
  ASSERT_EQ(real.rc, 0) << real.err;
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2021_06.duckdb")));
  EXPECT_TRUE(std::filesystem::exists(path("archive/partition_2021_06.duckdb")));
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2022_01.duckdb")));
  uint64_t after = 0;
  for (const auto& f : std::filesystem::directory_iterator(path("parts/events")))
    after += f.is_regular_file() ? f.file_size() : 0;
  EXPECT_LT(after, before) << "the disk space must come back";
  const CliRun count = with({"query", "--count"});
  EXPECT_EQ(count.out, std::to_string(keep) + "\n") << count.err;
  const CliRun neg = with({"cleanup", "--retention-days", "-5"});
  EXPECT_EQ(neg.rc, 2);
  EXPECT_NE(neg.err.find("must not be negative"), std::string::npos) << neg.err;
  // The archive restores what was removed.
  const CliRun back = with({"restore", "--from", path("archive/partition_2021_06.duckdb")});
  ASSERT_EQ(back.rc, 0) << back.err;
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2021_06.duckdb")));
}

// `cleanup` removes a partition expired by its name only when its file agrees: a file holding
// another (newer) period's rows under an old name was deleted with rows inside the retention
// window. `health-report` calls a partition another process holds "in use", not damaged (it said
// "restore it from a backup", exit 1, about a live writer's files).
TEST_F(CliTest, CleanupKeepsFilesItCannotVouchForAndHealthReportToleratesAWriter) {
  make_source(path("src.duckdb"), 6000);
  const std::vector<std::string> store = {"--partitions", path("parts"), "--schema", "events"};
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  std::filesystem::rename(path("parts/events/partition_2022_06.duckdb"),
                          path("parts/events/partition_2019_06.duckdb"));
  const CliRun r = with({"cleanup", "--retention-days", "60", "--now", "2022-03-16", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["kept_problems"].size(), 1u) << r.out;
  EXPECT_EQ(j["kept_problems"][0].get<std::string>().rfind("partition_2019_06: ", 0), 0u) << r.out;
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2019_06.duckdb")));
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2021_06.duckdb")));
  duck::Database db = duck::Database::open(path("src.duckdb"), true);
  const int64_t june = db.connect().query_int(
      "SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2022-06-01' AND ts < TIMESTAMP "
      "'2022-07-01'");
  ASSERT_GT(june, 0);
  // A query that needs it names it (never a silent partial answer); named right again, it holds
  // every row of its month.
  const std::vector<std::string> june_count = {
      "query", "--filter", "ts:between:2022-06-01,2022-06-30 23:59:59", "--count"};
  const CliRun named = with(june_count);
  EXPECT_NE(named.rc, 0) << named.out;
  EXPECT_NE(named.err.find("partition_2019_06"), std::string::npos) << named.err;
  std::filesystem::rename(path("parts/events/partition_2019_06.duckdb"),
                          path("parts/events/partition_2022_06.duckdb"));
  const CliRun still = with(june_count);
  EXPECT_EQ(still.out, std::to_string(june) + "\n") << still.err;
  // Another process holds a partition: a warning, not an error.
  ChildProcess holder({DUCKPART_LOCK_HELPER, path("parts/events/partition_2022_09.duckdb")});
  ASSERT_EQ(holder.line(), "locked");
  const CliRun h = with({"health-report"});
  EXPECT_EQ(h.rc, 0) << h.out << h.err;
  EXPECT_NE(h.out.find("in use by another process"), std::string::npos) << h.out;
  EXPECT_EQ(h.out.find("restore it from a backup"), std::string::npos) << h.out;
  // The same when the holder changed the file since the catalog was written (a writer does):
  // the table opens; only requests that need that partition fail, naming it.
  std::filesystem::last_write_time(
      path("parts/events/partition_2022_09.duckdb"),
      std::filesystem::file_time_type::clock::now() + std::chrono::seconds(5));
  const CliRun changed = with({"health-report"});
  EXPECT_EQ(changed.rc, 0) << changed.out << changed.err;
  EXPECT_NE(changed.out.find("in use by another process"), std::string::npos) << changed.out;
  EXPECT_EQ(changed.out.find("restore it from a backup"), std::string::npos) << changed.out;
  const CliRun stats = with({"stats"});
  EXPECT_EQ(stats.rc, 0) << stats.err;
  const CliRun other_month = with(june_count);
  EXPECT_EQ(other_month.out, std::to_string(june) + "\n") << other_month.err;
  const CliRun september =
      with({"query", "--filter", "ts:between:2022-09-01,2022-09-30 23:59:59", "--count"});
  EXPECT_EQ(september.rc, 7) << september.out;
  EXPECT_NE(september.err.find("partition_2022_09.duckdb"), std::string::npos) << september.err;
}

// A command on one table neither reads nor changes another: a table another process holds (its
// catalog gone, so its files must be opened to be listed) made every command on this table fail.
TEST_F(CliTest, ACommandOnOneTableIsNotStoppedByAnotherTablesLockedFiles) {
  make_source(path("src.duckdb"), 6000);
  std::filesystem::copy_file(path("src.duckdb"), path("other.duckdb"));
  {
    duck::Database db = duck::Database::open(path("other.duckdb"));
    db.connect().exec("ALTER TABLE events RENAME TO other");
  }
  for (const char* t : {"events", "other"}) {
    const std::string src = std::string(t) == "events" ? "src.duckdb" : "other.duckdb";
    ASSERT_EQ(run({"migrate", "--database", path(src), "--partitions", path("parts"), "--schema", t,
                   "--partition-column", "ts"})
                  .rc,
              0)
        << t;
  }
  std::filesystem::remove(path("parts/other/_catalog.json"));
  ChildProcess holder({DUCKPART_LOCK_HELPER, path("parts/other/partition_2022_09.duckdb")});
  ASSERT_EQ(holder.line(), "locked");
  const std::vector<std::string> store = {"--partitions", path("parts"), "--schema", "events"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  const CliRun stats = with({"stats", "--json"});
  EXPECT_EQ(stats.rc, 0) << stats.err;
  // A leading zero is refused (CLI11 reads 010 as 8, octal); 10 is ten rows.
  const CliRun octal = with({"query", "--limit", "010", "--format", "csv"});
  EXPECT_EQ(octal.rc, 2) << octal.out;
  EXPECT_NE(octal.err.find("'010' starts with 0"), std::string::npos) << octal.err;
  const CliRun ten = with({"query", "--limit", "10", "--format", "csv"});
  ASSERT_EQ(ten.rc, 0) << ten.err;
  EXPECT_EQ(std::count(ten.out.begin(), ten.out.end(), '\n'), 11) << ten.out;
  const CliRun health = with({"health-report"});
  EXPECT_EQ(health.rc, 0) << health.out << health.err;
  EXPECT_EQ(health.out.find("parts/other"), std::string::npos) << health.out;
  const CliRun dry =
      with({"cleanup", "--retention-days", "60", "--now", "2022-03-16", "--dry-run"});
  EXPECT_EQ(dry.rc, 0) << dry.err;
  const CliRun backup = with({"backup", "--all", "--to", path("bk")});
  EXPECT_EQ(backup.rc, 0) << backup.err;
  const CliRun compact = with({"compact"});
  EXPECT_EQ(compact.rc, 0) << compact.err;
  const CliRun cleanup = with({"cleanup", "--retention-days", "60", "--now", "2022-03-16"});
  EXPECT_EQ(cleanup.rc, 0) << cleanup.err;
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2021_06.duckdb")));
  // The other table was left as it was: no catalog written while its file was held.
  EXPECT_FALSE(std::filesystem::exists(path("parts/other/_catalog.json")));
  EXPECT_TRUE(std::filesystem::exists(path("parts/other/partition_2021_06.duckdb")));
}

TEST_F(CliTest, BackupRestoreAndHealthReportRepairADamagedPartition) {
  make_source(path("src.duckdb"), 6000);
  const std::vector<std::string> store = {"--partitions", path("parts"), "--schema", "events"};
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  const CliRun healthy = with({"health-report", "--output", path("health.json")});
  ASSERT_EQ(healthy.rc, 0) << healthy.out << healthy.err;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(path("health.json")))["errors"], 0);
  const CliRun b = with({"backup", "--all", "--to", path("bk")});
  ASSERT_EQ(b.rc, 0) << b.err;
  EXPECT_TRUE(std::filesystem::exists(path("bk/manifest.json")));
  const int64_t total = std::stoll(with({"query", "--count"}).out);
  // Damage one partition: truncate it.
  std::filesystem::resize_file(path("parts/events/partition_2021_07.duckdb"), 8192);
  const CliRun sick = with({"health-report", "--output", path("health2.json")});
  EXPECT_EQ(sick.rc, 1) << sick.out;
  EXPECT_NE(sick.out.find("partition_2021_07"), std::string::npos) << sick.out;
  auto hj = nlohmann::json::parse(std::ifstream(path("health2.json")));
  EXPECT_EQ(hj["errors"], 1);
  EXPECT_NE(hj["findings"][0]["recommendation"].get<std::string>().find("restore"),
            std::string::npos);
  // Queries away from the damage answer; queries that need it name it.
  EXPECT_EQ(with({"query", "--filter", "ts:gte:2022-01-01", "--count"}).rc, 0);
  const CliRun needs = with({"query", "--filter", "ts:between:2021-07-02,2021-07-03", "--count"});
  EXPECT_EQ(needs.rc, 6) << needs.err;
  EXPECT_NE(needs.err.find("partition_2021_07.duckdb"), std::string::npos) << needs.err;
  // A damaged backup is refused by its checksum, and nothing is restored.
  std::filesystem::copy_file(path("bk/partition_2021_08.duckdb"), path("bk/saved_08"));
  {
    std::fstream f(path("bk/partition_2021_08.duckdb"),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('X');
  }
  const CliRun bad = with({"restore", "--from", path("bk"), "--verify-only"});
  EXPECT_EQ(bad.rc, 6) << bad.err;
  EXPECT_NE(bad.err.find("partition_2021_08.duckdb' is damaged: checksum"), std::string::npos)
      << bad.err;
  std::filesystem::rename(path("bk/saved_08"), path("bk/partition_2021_08.duckdb"));
  // Restore repairs it.
  const CliRun fix = with({"restore", "--from", path("bk/partition_2021_07.duckdb")});
  ASSERT_EQ(fix.rc, 0) << fix.err;
  EXPECT_EQ(with({"health-report"}).rc, 0);
  EXPECT_EQ(std::stoll(with({"query", "--count"}).out), total);
  // A backup of another strategy is refused.
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("yearly"),
                 "--schema", "events", "--partition-column", "ts", "--strategy", "yearly"})
                .rc,
            0);
  ASSERT_EQ(run({"backup", "--partitions", path("yearly"), "--schema", "events", "--partition",
                 "partition_2021", "--to", path("bk_yearly")})
                .rc,
            0);
  const CliRun wrong = with({"restore", "--from", path("bk_yearly/partition_2021.duckdb")});
  EXPECT_EQ(wrong.rc, 4) << wrong.err;
  EXPECT_NE(wrong.err.find("yearly strategy"), std::string::npos) << wrong.err;
  const CliRun missing = with({"backup", "--partition", "partition_1999_01", "--to", path("bk")});
  EXPECT_EQ(missing.rc, 3);
  EXPECT_NE(missing.err.find("no partition 'partition_1999_01'"), std::string::npos) << missing.err;
}

// Backups go outside the partition directory and one table per directory: a backup into the
// partition directory replaced another table's partition of the same name (or, into the table's
// own directory, was the partition itself, deleted by the clean-up that "archived" it), and a
// second table's backup overwrote the first's files. A restore checks every file before it
// replaces any partition.
TEST_F(CliTest, BackupsStayOutsideThePartitionsAndApartPerTable) {
  make_source(path("src.duckdb"), 4000);
  for (const char* table : {"events", "other"}) {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    if (std::string(table) == "other") c.exec("CREATE TABLE other AS SELECT * FROM events");
  }
  for (const char* table : {"events", "other"}) {
    ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                   "--schema", table, "--partition-column", "ts"})
                  .rc,
              0);
  }
  auto cmd = [&](const char* table, std::vector<std::string> a) {
    a.insert(a.end(), {"--partitions", path("parts"), "--schema", table});
    return run(a);
  };
  const std::string count_other = cmd("other", {"query", "--count"}).out;
  for (const std::string& inside :
       {path("parts/other"), path("parts/events"), path("parts"), path("parts/events/sub")}) {
    SCOPED_TRACE(inside);
    const CliRun r = cmd("events", {"backup", "--partition", "partition_2021_01", "--to", inside});
    EXPECT_EQ(r.rc, 2) << r.err;
    EXPECT_NE(r.err.find("is inside the partition directory"), std::string::npos) << r.err;
    const CliRun c = cmd(
        "events", {"cleanup", "--retention-days", "0", "--now", "2021-03-01", "--archive", inside});
    EXPECT_EQ(c.rc, 2) << c.err;
  }
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2021_01.duckdb")));
  EXPECT_EQ(cmd("other", {"query", "--count"}).out, count_other);
  EXPECT_EQ(cmd("other", {"health-report"}).rc, 0);
  // One directory per table.
  ASSERT_EQ(cmd("events", {"backup", "--all", "--to", path("bk")}).rc, 0);
  const std::string manifest = [&] {
    std::ifstream in(path("bk/manifest.json"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  const CliRun second = cmd("other", {"backup", "--all", "--to", path("bk")});
  EXPECT_EQ(second.rc, 4) << second.err;
  EXPECT_NE(second.err.find("holds backups of table 'events'"), std::string::npos) << second.err;
  const std::string after = [&] {
    std::ifstream in(path("bk/manifest.json"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  EXPECT_EQ(after, manifest);
  ASSERT_EQ(cmd("events", {"restore", "--from", path("bk"), "--verify-only"}).rc, 0);
  const CliRun wrong_table = cmd("other", {"restore", "--from", path("bk")});
  EXPECT_EQ(wrong_table.rc, 4) << wrong_table.err;
  // A directory where one file is another table's partition (copied in by hand): nothing is
  // restored, not even the files before it.
  ASSERT_EQ(cmd("other", {"backup", "--all", "--to", path("bk_other")}).rc, 0);
  std::filesystem::copy_file(path("bk/partition_2021_05.duckdb"),
                             path("bk_other/partition_2021_05.duckdb"),
                             std::filesystem::copy_options::overwrite_existing);
  {
    // The manifest is made to agree, so only the file's own metadata tells.
    std::ifstream in(path("bk_other/manifest.json"));
    nlohmann::json j = nlohmann::json::parse(in);
    std::ifstream src(path("bk/manifest.json"));
    nlohmann::json k = nlohmann::json::parse(src);
    j["files"]["partition_2021_05.duckdb"] = k["files"]["partition_2021_05.duckdb"];
    std::ofstream(path("bk_other/manifest.json")) << j.dump(2);
  }
  const auto stamp = std::filesystem::last_write_time(path("parts/other/partition_2021_01.duckdb"));
  const CliRun mixed = cmd("other", {"restore", "--from", path("bk_other")});
  EXPECT_EQ(mixed.rc, 4) << mixed.err;
  EXPECT_NE(mixed.err.find("partition_2021_05.duckdb' belongs to another table"), std::string::npos)
      << mixed.err;
  EXPECT_EQ(std::filesystem::last_write_time(path("parts/other/partition_2021_01.duckdb")), stamp);
  EXPECT_EQ(cmd("other", {"query", "--count"}).out, count_other);
}

// A table is opened with its own strategy and layout or not at all: a --strategy (or a
// configuration file's) that contradicts the table's, or a source whose columns differ, used to
// rewrite the table's catalog and leave every partition unreachable (exit 0 for compact and
// cleanup); a configuration file without a strategy turned off detecting the table's own.
TEST_F(CliTest, AStrategyOrLayoutThatContradictsTheTableIsRefusedAndChangesNothing) {
  make_source(path("src.duckdb"), 3000);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    c.exec("CREATE TABLE other AS SELECT * FROM events");
  }
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "other", "--partition-column", "ts", "--strategy", "yearly"})
                .rc,
            0);
  auto cmd = [&](std::vector<std::string> a, const char* table = "events") {
    a.insert(a.end(), {"--partitions", path("parts"), "--schema", table});
    return run(a);
  };
  auto catalog = [&] {
    std::ifstream in(path("parts/events/_catalog.json"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string count = cmd({"query", "--count"}).out;
  ASSERT_EQ(std::stoll(count), 3000);
  const std::string cat = catalog();
  { std::ofstream(path("one.csv")) << "id_text,ts,qty\nz1,2021-05-05 00:00:00,1\n"; }
  { std::ofstream(path("yearly.toml")) << "strategy = \"yearly\"\n"; }
  const std::vector<std::vector<std::string>> wrong = {
      {"compact", "--strategy", "yearly"},
      {"cleanup", "--retention-days", "100000", "--strategy", "yearly"},
      {"import", "--csv", path("one.csv"), "--strategy", "yearly"},
      {"backup", "--all", "--to", path("bk"), "--strategy", "yearly"},
      {"compact", "--config", path("yearly.toml")},
      {"query", "--count", "--strategy", "daily"},
  };
  for (const auto& w : wrong) {
    SCOPED_TRACE(w[0] + " " + w[w.size() - 1]);
    const CliRun r = cmd(w);
    EXPECT_EQ(r.rc, 4) << r.out << r.err;
    EXPECT_NE(r.err.find("table 'events' in '" + path("parts") + "/events' is partitioned monthly"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("nothing was changed"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2021.duckdb")));
  EXPECT_EQ(catalog(), cat);
  EXPECT_EQ(cmd({"query", "--count"}).out, count);
  EXPECT_EQ(cmd({"health-report"}).rc, 0);
  // A configuration file that names no strategy leaves the table's own in force.
  { std::ofstream(path("threads.toml")) << "write_threads = 1\n"; }
  const CliRun yearly = cmd({"query", "--count", "--config", path("threads.toml")}, "other");
  ASSERT_EQ(yearly.rc, 0) << yearly.err;
  EXPECT_EQ(yearly.out, count);
  // Each table with its own strategy in `stats --all`, and `test` prunes by the one in use.
  const CliRun stats = cmd({"stats", "--all"});
  ASSERT_EQ(stats.rc, 0) << stats.err;
  EXPECT_EQ(stats.out.find("PROBLEM"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("partition_2021 "), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("partition_2021_05 "), std::string::npos) << stats.out;
  const CliRun selftest = cmd({"test"}, "other");
  EXPECT_EQ(selftest.rc, 0) << selftest.out;
  // A source whose columns differ from the table's: refused, dry run included.
  {
    duck::Database db = duck::Database::open(path("src2.duckdb"));
    duck::Connection c = db.connect();
    c.exec(
        "CREATE TABLE events AS SELECT id_text, ts, qty * 2 AS doubled FROM "
        "(SELECT 'a' AS id_text, TIMESTAMP '2021-03-03' AS ts, 1 AS qty)");
  }
  for (const bool dry : {true, false}) {
    std::vector<std::string> m = {"migrate", "--database", path("src2.duckdb"),
                                  "--partition-column", "ts"};
    if (dry) m.push_back("--dry-run");
    const CliRun r = cmd(m);
    EXPECT_EQ(r.rc, 4) << r.out << r.err;
    EXPECT_NE(r.err.find("is stored with other columns than those given"), std::string::npos)
        << r.err;
  }
  EXPECT_EQ(catalog(), cat);
  EXPECT_EQ(cmd({"query", "--count"}).out, count);
}

TEST_F(CliTest, ReRunCatchesUpWithSourceChanges) {
  make_source(path("src.duckdb"), 8000);
  const std::vector<std::string> mig = {
      "migrate",  "--database", path("src.duckdb"),   "--partitions", path("parts"),
      "--schema", "events",     "--partition-column", "ts",           "--batch-size",
      "3000"};
  ASSERT_EQ(run(mig).rc, 0);
  {
    // The application keeps writing to the source: inserts (old and new periods), updates, deletes.
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    c.exec(
        "INSERT INTO events SELECT uuid()::VARCHAR, TIMESTAMP '2021-03-10 10:00:00', 1, 1.0, 1.00, "
        "'a', [1], "
        "INTERVAL 1 DAY, true FROM range(25)");
    c.exec(
        "INSERT INTO events SELECT uuid()::VARCHAR, TIMESTAMP '2023-05-05', 2, 2.0, 2.00, 'b', "
        "[2], "
        "INTERVAL 2 DAY, false FROM range(10)");  // a period the first run never saw
    c.exec(
        "UPDATE events SET qty = qty + 1 WHERE ts >= TIMESTAMP '2021-08-01' AND ts < TIMESTAMP "
        "'2021-08-04'");
    c.exec("DELETE FROM events WHERE ts >= TIMESTAMP '2022-02-01' AND ts < TIMESTAMP '2022-03-01'");
  }
  const CliRun r = run(mig);
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("caught up partition_2021_08"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("caught up partition_2022_02"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("caught up partition_2023_05"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 mismatch(es)"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2022_02.duckdb")));
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // Other options than the recorded migration's: refused, saying which.
  std::vector<std::string> other(mig.begin(), mig.end() - 2);  // without --batch-size 3000
  const CliRun differ = run(other);
  EXPECT_EQ(differ.rc, 4) << differ.err;
  EXPECT_NE(differ.err.find("batch_size: recorded 3000, now 1000000"), std::string::npos)
      << differ.err;
}

// The catch-up of a re-run replaces only partitions that migrations alone wrote: a partition the
// application wrote to since the migration (Phase 3 of the seed's plan) keeps its rows and is
// reported, even when it differs from the source or the source has no rows of its period (it used
// to be replaced by the source's copy, or dropped, and the run said "changed in the source").
TEST_F(CliTest, ReRunKeepsPartitionsTheApplicationWroteToAndSaysWhy) {
  make_source(path("src.duckdb"), 6000);
  const std::vector<std::string> mig = {"migrate",      "--database",         path("src.duckdb"),
                                        "--partitions", path("parts"),        "--schema",
                                        "events",       "--partition-column", "ts"};
  ASSERT_EQ(run(mig).rc, 0);
  int64_t app_rows = 0;
  {
    PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
    cfg.partition_column = "ts";
    PartitionedDataRepository repo(cfg);
    const Schema schema = repo.load_schema("events");
    std::vector<DataRecord> recs;
    for (const char* ts : {"2021-03-10 10:00:00", "2024-01-05 00:00:00"}) {  // 2024-01: new period
      DataRecord r = repo.get_all(schema, {}).items.at(0);
      r.values[0] = Value(std::string("app-") + ts);
      r.values[1] = Value(*parse_timestamp(ts));
      recs.push_back(r);
    }
    app_rows = repo.create_batch(schema, recs, {.batch_id = "app-1"}).rows_written;
    repo.flush();
  }
  ASSERT_EQ(app_rows, 2);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    c.exec(
        "UPDATE events SET qty = qty + 1 WHERE ts >= TIMESTAMP '2021-08-01' AND ts < TIMESTAMP "
        "'2021-08-04'");
  }
  const int64_t before = std::stoll(run({"query", "--partitions", path("parts"), "--schema",
                                         "events", "--partition-column", "ts", "--count"})
                                        .out);
  const CliRun r = run(mig);
  EXPECT_EQ(r.rc, 1) << r.err << r.out;  // the kept periods still differ from the source
  EXPECT_NE(r.out.find("caught up partition_2021_08"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("caught up partition_2021_03"), std::string::npos) << r.out;
  for (const char* p : {"partition_2021_03", "partition_2024_01"}) {
    EXPECT_NE(r.err.find(fmt::format("not caught up {}: it differs from the source, and 1 "
                                     "batch(es) of 1 row(s) were written to it by something other "
                                     "than a migration",
                                     p)),
              std::string::npos)
        << r.err;
  }
  EXPECT_NE(r.err.find("--replace-written"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/partition_2024_01.duckdb")));
  EXPECT_EQ(std::stoll(run({"query", "--partitions", path("parts"), "--schema", "events",
                            "--partition-column", "ts", "--count"})
                           .out),
            before);
  // Asked to, the catch-up makes the partitions equal the source.
  std::vector<std::string> replace = mig;
  replace.push_back("--replace-written");
  const CliRun again = run(replace);
  ASSERT_EQ(again.rc, 0) << again.err << again.out;
  EXPECT_NE(again.out.find("caught up partition_2021_03"), std::string::npos) << again.out;
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2024_01.duckdb")));
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // A catch-up's copy counts as a migration's: the next re-run has nothing to keep.
  const CliRun third = run(mig);
  EXPECT_EQ(third.rc, 0) << third.err << third.out;
}

}  // namespace
}  // namespace duckpart::testing

namespace duckpart::testing {
namespace {

// Rows and checksum of the source rows (non-NULL ts) and of what a read of the partitions gives.
std::string source_digest(const std::string& file, const std::string& where = "ts IS NOT NULL") {
  duck::Database db = duck::Database::open(file, true);
  duck::Connection c = db.connect();
  duck::Result r = c.query(
      "SELECT count(*)::VARCHAR || '/' || CAST(sum(CAST(hash(id_text, ts, qty, ratio, price, tag, "
      "list_col, span, flag) AS HUGEINT)) AS VARCHAR) FROM events WHERE " +
      where);
  std::vector<DataRecord> rows;
  duck::ChunkDecoder d(r);
  while (auto ch = r.fetch()) d.decode(ch, rows);
  return rows.at(0).values.at(0).to_string();
}

TEST_F(CliTest, SqlAnswersLikeDuckDBPrunesAndRefusesWrites) {
  make_source(path("src.duckdb"), 20000);
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  const std::string sql =
      "SELECT strftime(date_trunc('month', ts), '%Y-%m') AS m, count(*) AS n, sum(qty) AS q, "
      "sum(price) AS p FROM events WHERE ts BETWEEN '2021-03-01' AND '2021-05-31 23:59:59.999999' "
      "GROUP BY m ORDER BY m";
  const CliRun r = run({"sql", "--partitions", path("parts"), sql, "--format", "csv"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string expected = "m,n,q,p\n";
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    duck::Connection c = db.connect();
    duck::Result res = c.query(sql);
    std::vector<DataRecord> rows;
    duck::ChunkDecoder d(res);
    while (auto ch = res.fetch()) d.decode(ch, rows);
    ASSERT_EQ(rows.size(), 3u);
    for (const auto& row : rows) {
      expected += fmt::format("{},{},{},{}\n", row.values[0].to_string(), row.values[1].to_string(),
                              row.values[2].to_string(), row.values[3].to_string());
    }
  }
  EXPECT_EQ(r.out, expected);
  const CliRun t = run({"sql", "--partitions", path("parts"), sql});
  ASSERT_EQ(t.rc, 0) << t.err;
  EXPECT_NE(t.err.find("partitions scanned 3 of 27"), std::string::npos) << t.err;
  const std::string before = source_digest(path("src.duckdb"));
  for (const char* bad : {"DELETE FROM events", "DROP TABLE events", "UPDATE events SET qty = 1",
                          "SELECT 1; SELECT 2"}) {
    const CliRun w = run({"sql", "--partitions", path("parts"), bad});
    EXPECT_EQ(w.rc, 2) << bad;
    EXPECT_EQ(w.err.rfind("manage_partitions: ", 0), 0u) << w.err;
  }
  const CliRun all = run({"sql", "--partitions", path("parts"), "--format", "json",
                          "SELECT count(*) AS n FROM events"});
  ASSERT_EQ(all.rc, 0) << all.err;
  EXPECT_EQ(nlohmann::json::parse(all.out)[0]["n"].get<int64_t>(), 20000);
  const CliRun typo = run({"sql", "--partitions", path("parts"), "SELECT nope FROM events"});
  EXPECT_EQ(typo.rc, 2);
  EXPECT_NE(typo.err.find("nope"), std::string::npos) << typo.err;

  // One statement over two tables of different strategies: events monthly, readings yearly.
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "CREATE TABLE readings AS SELECT id_text, ts, qty FROM events WHERE qty % 3 = 0");
  }
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "readings", "--partition-column", "ts", "--strategy", "yearly"})
                .rc,
            0);
  const std::string join =
      "SELECT strftime(date_trunc('month', e.ts), '%Y-%m') AS m, count(*) AS n, sum(r.qty) AS q "
      "FROM events e JOIN readings r USING (id_text) WHERE e.ts >= '2022-01-01' AND r.ts >= "
      "'2022-01-01' GROUP BY m ORDER BY m";
  std::string want = "m,n,q\n";
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    duck::Connection c = db.connect();
    duck::Result res = c.query(join);
    std::vector<DataRecord> rows;
    duck::ChunkDecoder d(res);
    while (auto ch = res.fetch()) d.decode(ch, rows);
    ASSERT_GT(rows.size(), 6u);
    for (const auto& row : rows) {
      want += fmt::format("{},{},{}\n", row.values[0].to_string(), row.values[1].to_string(),
                          row.values[2].to_string());
    }
  }
  for (const char* schema : {"events", "readings"}) {
    // (--schema only says which table's strategy a configuration would take.)
    const CliRun mixed =
        run({"sql", "--partitions", path("parts"), "--schema", schema, join, "--format", "csv"});
    ASSERT_EQ(mixed.rc, 0) << schema << ": " << mixed.err;
    EXPECT_EQ(mixed.out, want) << schema;
  }
  // A strategy named on the command line is held to: the yearly table is refused, and says how.
  const CliRun strict =
      run({"sql", "--partitions", path("parts"), "--strategy", "monthly", join, "--format", "csv"});
  EXPECT_EQ(strict.rc, 4) << strict.err;
  EXPECT_NE(strict.err.find("'readings'"), std::string::npos) << strict.err;
  EXPECT_NE(strict.err.find("partitioned yearly"), std::string::npos) << strict.err;
}

TEST_F(CliTest, ImportCsvAndParquetIntoTheRightPartitionsAllOrNothing) {
  make_source(path("src.duckdb"), 30000);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    duck::Connection c = db.connect();
    c.exec(
        fmt::format("COPY (SELECT * FROM events WHERE ts >= '2021-06-01' AND ts < '2022-03-01') "
                    "TO {} (HEADER)",
                    duck::quote_literal(path("b.csv"))));
    c.exec(
        fmt::format("COPY (SELECT * FROM events WHERE ts >= '2022-03-01') TO {} (FORMAT parquet)",
                    duck::quote_literal(path("c.parquet"))));
  }
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts", "--to", "2021-06-01"})
                .rc,
            0);
  const std::vector<std::string> common = {"--partitions", path("parts"),  "--schema",
                                           "events",       "--batch-size", "4000"};
  auto import = [&](const std::string& flag, const std::string& file) {
    std::vector<std::string> a = {"import", flag, file};
    a.insert(a.end(), common.begin(), common.end());
    return run(a);
  };
  const CliRun b = import("--csv", path("b.csv"));
  ASSERT_EQ(b.rc, 0) << b.err;
  EXPECT_NE(b.out.find("imported"), std::string::npos) << b.out;
  const CliRun c = import("--parquet", path("c.parquet"));
  ASSERT_EQ(c.rc, 0) << c.err;
  // A file under hive-style folders (as `export` writes them) holds its columns itself: DuckDB
  // added `region` as a column and the import was refused.
  std::filesystem::create_directories(path("hive/region=tx"));
  std::filesystem::copy_file(path("c.parquet"), path("hive/region=tx/c.parquet"));
  const CliRun hive = import("--parquet", path("hive/region=tx/c.parquet"));
  ASSERT_EQ(hive.rc, 0) << hive.err;
  EXPECT_NE(hive.out.find("already imported"), std::string::npos) << hive.out;
  // A name with glob characters is the file itself: DuckDB read 'b[1].csv' as a pattern, which
  // matches b1.csv (rows of 2030 here) and not the file named.
  std::filesystem::copy_file(path("b.csv"), path("b[1].csv"));
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    db.connect().exec(fmt::format(
        "COPY (SELECT * REPLACE (TIMESTAMP '2030-01-15' AS ts) FROM events LIMIT 3) TO {} (HEADER)",
        duck::quote_literal(path("b1.csv"))));
  }
  const CliRun globbed = import("--csv", path("b[1].csv"));
  ASSERT_EQ(globbed.rc, 0) << globbed.err;
  EXPECT_NE(globbed.out.find("already imported"), std::string::npos) << globbed.out;
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2030_01.duckdb")));
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // The same file again: nothing is written twice.
  const CliRun again = import("--csv", path("b.csv"));
  ASSERT_EQ(again.rc, 0) << again.err;
  EXPECT_NE(again.out.find("already imported"), std::string::npos) << again.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // Again with other batch sizes: cut as the first run cut them (a batch's id names its index,
  // so batches cut otherwise wrote the rows again under other ids).
  for (const char* size : {"7", "2500000"}) {
    SCOPED_TRACE(size);
    const CliRun r = run({"import", "--csv", path("b.csv"), "--batch-size", size, "--json",
                          "--partitions", path("parts"), "--schema", "events"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("\"batch_size_kept\": 4000"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"rows_written\": 0"), std::string::npos) << r.out;
  }
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);

  // Malformed files: an error naming the file and line; nothing of them is kept.
  const std::string good_row = "x1,2022-01-05 10:00:00,5,1.5,2.25,a,\"[1, 2]\",3 days,true";
  struct Bad {
    const char* name;
    std::string body;
    const char* says;
  };
  const std::string hdr = "id_text,ts,qty,ratio,price,tag,list_col,span,flag\n";
  const std::vector<Bad> bad = {
      {"quote.csv", hdr + good_row + "\nx2,2022-01-06,5,1.5,2.25,\"a,\"[1, 2]\",3 days,true\n",
       "Line"},
      {"fields.csv", hdr + good_row + "\nx3,2022-01-06,5,1.5,2.25,a,\"[1]\",3 days,true,extra\n",
       "Line: 3"},
      {"date.csv", hdr + good_row + "\nx4,2022-02-30,5,1.5,2.25,a,\"[1]\",3 days,true\n",
       "Line: 3"},
      {"type.csv", hdr + good_row + "\nx5,2022-01-06,five,1.5,2.25,a,\"[1]\",3 days,true\n",
       "Line: 3"},
      {"column.csv", "id_text,ts,nope\nx6,2022-01-06,1\n", "column 'nope'"},
      {"nots.csv", "id_text,qty\nx7,1\n", "no column 'ts'"},
      {"nullts.csv", hdr + good_row + "\nx8,,5,1.5,2.25,a,\"[1]\",3 days,true\n", "NULL"},
      {"empty.csv", "", "empty"},
  };
  for (const auto& f : bad) {
    SCOPED_TRACE(f.name);
    { std::ofstream(path(f.name)) << f.body; }
    const CliRun r = import("--csv", path(f.name));
    EXPECT_EQ(r.rc, 2) << r.err;
    EXPECT_NE(r.err.find(f.name), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(f.says), std::string::npos) << r.err;
  }
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  EXPECT_EQ(import("--csv", path("missing.csv")).rc, 3);
  // Into a new table: an impossible date makes DuckDB read the column as text; the error names the
  // file and the value (it named the staging file).
  { std::ofstream(path("newbad.csv")) << "id,ts,qty\n1,2021-02-03,1\n2,2021-02-30,2\n"; }
  const CliRun newbad = run({"import", "--csv", path("newbad.csv"), "--partitions", path("parts"),
                             "--schema", "fresh", "--partition-column", "ts"});
  EXPECT_EQ(newbad.rc, 2) << newbad.err;
  EXPECT_NE(newbad.err.find("cannot import '" + path("newbad.csv") + "' into new table 'fresh'"),
            std::string::npos)
      << newbad.err;
  EXPECT_NE(newbad.err.find("'2021-02-30' is not a valid date"), std::string::npos) << newbad.err;
  EXPECT_FALSE(std::filesystem::exists(path("parts/fresh")));
  const CliRun both = run({"import", "--csv", path("b.csv"), "--parquet", path("c.parquet"),
                           "--partitions", path("parts"), "--schema", "events"});
  EXPECT_EQ(both.rc, 2);
}

TEST_F(CliTest, CompactAndExportKeepEveryRow) {
  make_source(path("src.duckdb"), 20000);
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts", "--strategy", "yearly"})
                .rc,
            0);
  const std::vector<std::string> common = {"--partitions", path("parts"), "--schema", "events"};
  auto cmd = [&](std::vector<std::string> a) {
    a.insert(a.end(), common.begin(), common.end());
    return run(a);
  };
  CliRun h = cmd({"health-report"});
  EXPECT_NE(h.out.find("not sorted by ts"), std::string::npos) << h.out;
  CliRun one = cmd({"compact", "--partition", "partition_2021"});
  ASSERT_EQ(one.rc, 0) << one.err;
  EXPECT_NE(one.out.find("compacted 1 partition(s)"), std::string::npos) << one.out;
  CliRun blocks = cmd({"compact", "--partition", "partition_2021", "--block-size-kb", "32"});
  ASSERT_EQ(blocks.rc, 0) << blocks.err;
  EXPECT_NE(blocks.out.find("(32 KB blocks)"), std::string::npos) << blocks.out;
  CliRun bad_blocks = cmd({"compact", "--block-size-kb", "48"});
  EXPECT_NE(bad_blocks.rc, 0);
  EXPECT_NE(bad_blocks.err.find("block size 48 KB"), std::string::npos) << bad_blocks.err;
  CliRun all = cmd({"compact", "--json"});
  ASSERT_EQ(all.rc, 0) << all.err;
  const nlohmann::json compacted = nlohmann::json::parse(all.out);
  EXPECT_EQ(compacted["partitions"].size(), 4u);
  for (const auto& p : compacted["partitions"]) {
    EXPECT_TRUE(p["block_size_kb"] == 16 || p["block_size_kb"] == 256) << all.out;
  }
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kYearly);
  h = cmd({"health-report"});
  EXPECT_EQ(h.out.find("not sorted"), std::string::npos) << h.out;
  EXPECT_EQ(cmd({"compact", "--partition", "partition_1999"}).rc, 3);

  // Export: hive layout that DuckDB reads back to the same rows.
  CliRun e = cmd({"export", "--to", path("out")});
  ASSERT_EQ(e.rc, 0) << e.err;
  EXPECT_TRUE(std::filesystem::exists(path("out/year=2021/partition_2021_0.parquet"))) << e.out;
  auto exported = [&] {
    duck::Database db = duck::Database::open(":memory:");
    duck::Connection c = db.connect();
    duck::Result r = c.query(fmt::format(
        "SELECT count(*)::VARCHAR || '/' || CAST(sum(CAST(hash(id_text, ts, qty, ratio, price, "
        "tag, list_col, span, flag) AS HUGEINT)) AS VARCHAR) FROM read_parquet({}, "
        "hive_partitioning = true) WHERE year = year(ts)",
        duck::quote_literal(path("out") + "/**/*.parquet")));
    std::vector<DataRecord> rows;
    duck::ChunkDecoder d(r);
    while (auto ch = r.fetch()) d.decode(ch, rows);
    return rows.at(0).values.at(0).to_string();
  };
  EXPECT_EQ(exported(), source_digest(path("src.duckdb")));
  CliRun again = cmd({"export", "--to", path("out"), "--json"});
  ASSERT_EQ(again.rc, 0) << again.err;
  auto j = nlohmann::json::parse(again.out);
  EXPECT_EQ(j["partitions_exported"].get<int>(), 0);
  EXPECT_EQ(j["partitions_unchanged"].get<int>(), 4);
  // A partition removed from the store disappears from the export on the next run.
  ASSERT_EQ(cmd({"cleanup", "--retention-days", "0", "--now", "2022-01-01"}).rc, 0);
  ASSERT_EQ(cmd({"export", "--to", path("out")}).rc, 0);
  EXPECT_EQ(exported(), source_digest(path("src.duckdb"), "ts >= '2022-01-01'"));
  EXPECT_EQ(cmd({"export", "--to", path("out"), "--format", "csv"}).rc, 2);
}

// Re-partitioning keeps what makes a retry safe: a file imported before a yearly -> monthly
// re-partition and imported again after it is not written twice (the new partitions held only the
// re-partition's batch ids, so every row of the file was written again).
TEST_F(CliTest, AnImportAgainAfterARepartitionWritesNothingTwice) {
  make_source(path("src.duckdb"), 12000);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    db.connect().exec(
        fmt::format("COPY (SELECT * FROM events WHERE ts >= '2021-06-01') TO {} (HEADER)",
                    duck::quote_literal(path("late.csv"))));
  }
  const std::vector<std::string> store = {"--partitions", path("parts"),        "--schema",
                                          "events",       "--partition-column", "ts"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  ASSERT_EQ(with({"migrate", "--database", path("src.duckdb"), "--strategy", "yearly", "--to",
                  "2021-06-01"})
                .rc,
            0);
  const CliRun first = with({"import", "--csv", path("late.csv"), "--batch-size", "1000"});
  ASSERT_EQ(first.rc, 0) << first.err;
  const CliRun split = with({"migrate", "--from-partitions", "--strategy", "monthly"});
  ASSERT_EQ(split.rc, 0) << split.err;
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/_imports.json")));
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  const CliRun again = with({"import", "--csv", path("late.csv"), "--batch-size", "5000"});
  ASSERT_EQ(again.rc, 0) << again.err;
  EXPECT_NE(again.out.find("already imported"), std::string::npos) << again.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);

  // Merged back (monthly -> yearly): an import batch spans months, so no single month held all
  // of its ids; the ids of batches the old partitions hold whole are carried all the same.
  const CliRun merge = with({"migrate", "--from-partitions", "--strategy", "yearly"});
  ASSERT_EQ(merge.rc, 0) << merge.err;
  const CliRun third = with({"import", "--csv", path("late.csv"), "--batch-size", "5000"});
  ASSERT_EQ(third.rc, 0) << third.err;
  EXPECT_NE(third.out.find("already imported"), std::string::npos) << third.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kYearly);

  // The migration's record went with the table: `migrate` again (yearly, as it ran) does not take
  // the table for a new one (it copied every row a second time). It writes nothing; 2021, which
  // the import added rows to after the range's end, is compared on its rows of the range (it
  // was reported as different, exit 1).
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/_migration.json")));
  const CliRun remigrate = with(
      {"migrate", "--database", path("src.duckdb"), "--strategy", "yearly", "--to", "2021-06-01"});
  EXPECT_EQ(remigrate.rc, 0) << remigrate.out << remigrate.err;
  EXPECT_NE(remigrate.out.find("migrated 0 rows"), std::string::npos) << remigrate.out;
  EXPECT_NE(remigrate.out.find(" 0 mismatch(es)"), std::string::npos) << remigrate.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kYearly);
  // A migration stopped inside a commit group is finished before a re-partitioning, which refuses
  // meanwhile; one that finished with periods it kept ("completed": false) does not stop a
  // re-partitioning.
  nlohmann::json record;
  {
    std::ifstream in(path("parts/events/_migration.json"));
    record = nlohmann::json::parse(in);
  }
  EXPECT_TRUE(record["completed"].get<bool>());
  record["completed"] = false;
  record["intent"] = nlohmann::json::array({0, 0, 1000});
  { std::ofstream(path("parts/events/_migration.json")) << record.dump(); }
  const CliRun in_group = with({"migrate", "--from-partitions", "--strategy", "monthly"});
  EXPECT_EQ(in_group.rc, 4) << in_group.err;
  EXPECT_NE(in_group.err.find("stopped in the middle of a commit"), std::string::npos)
      << in_group.err;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kYearly);
  record["intent"] = nullptr;
  { std::ofstream(path("parts/events/_migration.json")) << record.dump(); }
  const CliRun kept = with({"migrate", "--from-partitions", "--strategy", "monthly"});
  EXPECT_EQ(kept.rc, 0) << kept.err;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  EXPECT_TRUE(std::filesystem::exists(path("parts/events/_migration.json")));

  // The record was restated for the new strategy: `migrate` with it resumes from the record and
  // checks every period (it was refused, and deleting the record, as the refusal said, copied
  // every row again).
  const CliRun monthly = with(
      {"migrate", "--database", path("src.duckdb"), "--strategy", "monthly", "--to", "2021-06-01"});
  EXPECT_EQ(monthly.rc, 0) << monthly.out << monthly.err;
  EXPECT_NE(monthly.out.find("migrated 0 rows"), std::string::npos) << monthly.out;
  EXPECT_NE(monthly.out.find(" 0 mismatch(es)"), std::string::npos) << monthly.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // (The old strategy is refused: the table's files are monthly.)
  EXPECT_NE(with({"migrate", "--database", path("src.duckdb"), "--strategy", "yearly", "--to",
                  "2021-06-01"})
                .rc,
            0);

  // A migration stopped between commit groups is finished before a re-partitioning: its record
  // counts batches per window of the old periods.
  {
    std::ifstream in(path("parts/events/_migration.json"));
    record = nlohmann::json::parse(in);
  }
  EXPECT_TRUE(record["copied"].get<bool>());
  record["copied"] = false;
  { std::ofstream(path("parts/events/_migration.json")) << record.dump(); }
  const CliRun unfinished = with({"migrate", "--from-partitions", "--strategy", "yearly"});
  EXPECT_EQ(unfinished.rc, 4) << unfinished.err;
  EXPECT_NE(unfinished.err.find("--resume to finish it"), std::string::npos) << unfinished.err;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
}

TEST_F(CliTest, AnImportIntoMonthsMergedIntoAYearWritesNothingTwice) {
  // Each import batch spans several months, so no single month holds all of a batch's rows: the
  // ids of batches the old partitions hold whole are carried into the merged year anyway.
  make_source(path("src.duckdb"), 6000);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    db.connect().exec(
        fmt::format("COPY (SELECT * FROM events WHERE ts >= '2021-06-01') TO {} (HEADER)",
                    duck::quote_literal(path("late.csv"))));
  }
  const std::vector<std::string> store = {"--partitions", path("parts"),        "--schema",
                                          "events",       "--partition-column", "ts"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  ASSERT_EQ(with({"migrate", "--database", path("src.duckdb"), "--strategy", "weekly", "--to",
                  "2021-06-01"})
                .rc,
            0);
  ASSERT_EQ(with({"import", "--csv", path("late.csv"), "--batch-size", "700"}).rc, 0);
  // Weeks into months (weeks straddle months), then months into years: the carried ids keep
  // their rows, counted once, so a batch the weeks held whole is still whole in the months.
  auto repartition_then_import = [&](const char* to, PartitionStrategy strategy) {
    const CliRun merge = with({"migrate", "--from-partitions", "--strategy", to});
    ASSERT_EQ(merge.rc, 0) << merge.err;
    EXPECT_EQ(merge.out.find("not carried"), std::string::npos) << merge.out;
    const CliRun again = with({"import", "--csv", path("late.csv")});
    ASSERT_EQ(again.rc, 0) << again.err;
    EXPECT_NE(again.out.find("already imported"), std::string::npos) << to << "\n" << again.out;
    expect_partitions_equal_source(path("src.duckdb"), path("parts/events"), strategy);
  };
  repartition_then_import("monthly", PartitionStrategy::kMonthly);

  // `migrate` with the new strategy resumes from the migration's record (restated for it). A
  // period the source changed in is copied again: a re-partitioning's own batches are not
  // someone else's writes (they were: every period was kept). One the source no longer has rows
  // of in the range is dropped (a range used to leave it unchecked).
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "DELETE FROM events WHERE (ts >= '2021-02-01' AND ts < '2021-03-01' AND qty < 500) OR "
        "(ts >= '2021-03-01' AND ts < '2021-04-01')");
  }
  const CliRun monthly = with(
      {"migrate", "--database", path("src.duckdb"), "--strategy", "monthly", "--to", "2021-06-01"});
  EXPECT_EQ(monthly.rc, 0) << monthly.out << monthly.err;
  EXPECT_NE(monthly.out.find("migrated 0 rows"), std::string::npos) << monthly.out;
  EXPECT_NE(monthly.out.find("caught up partition_2021_02"), std::string::npos) << monthly.out;
  EXPECT_NE(monthly.out.find("caught up partition_2021_03"), std::string::npos) << monthly.out;
  EXPECT_FALSE(std::filesystem::exists(path("parts/events/partition_2021_03.duckdb")));
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);

  repartition_then_import("yearly", PartitionStrategy::kYearly);
}

TEST_F(CliTest, CatchUpNeverReplacesRowsItCannotVouchFor) {
  make_source(path("src.duckdb"), 8000);
  const std::vector<std::string> store = {"--partitions", path("parts"),        "--schema",
                                          "events",       "--partition-column", "ts"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  auto rows_in = [&](const std::string& partition) {
    duck::Database db = duck::Database::open(path("parts/events/" + partition), true);
    return db.connect().query_int("SELECT count(*) FROM events");
  };
  auto delete_from_source = [&](const std::string& where) {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec("DELETE FROM events WHERE " + where);
  };
  // 1. Two migrations cut June 2021 at the 15th (the first one's record deleted, as its refusal
  //    of other options allows): partition_2021_06 holds both halves, all migrate: batches. The
  //    second run compares the period on its rows of the range (it saw a mismatch, found no
  //    others' batches and copied the period again from the range: the first half was lost, exit
  //    0). A change of the source in the second half is caught up exactly: the new file holds the
  //    source's rows of the range and the partition's rows outside it (it used to be kept, exit
  //    1, for good).
  ASSERT_EQ(with({"migrate", "--database", path("src.duckdb"), "--strategy", "monthly", "--to",
                  "2021-06-15"})
                .rc,
            0);
  std::filesystem::remove(path("parts/events/_migration.json"));
  const std::vector<std::string> second = {
      "migrate", "--database", path("src.duckdb"), "--strategy", "monthly", "--from", "2021-06-15"};
  ASSERT_EQ(with(second).rc, 0);
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  const int64_t june = rows_in("partition_2021_06.duckdb");
  delete_from_source("ts >= '2021-06-20' AND ts < '2021-06-25'");
  const int64_t first_half = [&] {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    return db.connect().query_int(
        "SELECT count(*) FROM events WHERE ts >= '2021-06-01' AND ts < '2021-06-15'");
  }();
  ASSERT_GT(first_half, 0);
  ASSERT_LT(first_half, june);
  const CliRun caught = with(second);
  EXPECT_EQ(caught.rc, 0) << caught.out << caught.err;
  EXPECT_NE(caught.out.find("partition_2021_06"), std::string::npos) << caught.out;
  EXPECT_LT(rows_in("partition_2021_06.duckdb"), june);
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // The source without any rows of June's half in the range: the partition keeps its first half
  // (a period across the range's edge that only the partition had was not checked: exit 0; a
  // period the source had no rows of in the range was dropped whole).
  delete_from_source("ts >= '2021-06-15' AND ts < '2021-07-01'");
  const CliRun gone = with(second);
  EXPECT_EQ(gone.rc, 0) << gone.out << gone.err;
  EXPECT_EQ(rows_in("partition_2021_06.duckdb"), first_half);
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
  // An application batch in June's first half (outside the range), then a change of the source
  // inside it: the period is kept (written by others, exit 1); --replace-written replaces its
  // rows of the range and keeps the application's row outside it, with its batch id (a retry of
  // that batch still writes nothing).
  auto app_retry = [&] {
    PartitionedDataRepository repo(test_config(path("parts"), PartitionStrategy::kMonthly));
    const Schema schema = repo.load_schema("events");
    DataQueryRequest q;
    q.filters.push_back({"ts", FilterOperator::kLt,
                         Value(Timestamp{date_from_civil(2021, 6, 15).days * kMicrosPerDay})});
    q.filters.push_back({"ts", FilterOperator::kGte,
                         Value(Timestamp{date_from_civil(2021, 6, 1).days * kMicrosPerDay})});
    q.limit = 1;
    std::vector<DataRecord> one = repo.get_all(schema, q).items;
    EXPECT_EQ(one.size(), 1u);
    one.at(0).values.at(0) = Value(std::string("written-by-the-application"));
    return repo.create_batch(schema, one, {.batch_id = "app-1"}).rows_written;
  };
  EXPECT_EQ(app_retry(), 1);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "INSERT INTO events SELECT * REPLACE (ts + INTERVAL 20 DAY AS ts) FROM events WHERE ts >= "
        "'2021-06-01' AND ts < '2021-06-02' LIMIT 1");
  }
  const CliRun others = with(second);
  EXPECT_EQ(others.rc, 1) << others.out << others.err;
  EXPECT_NE(others.err.find("not caught up partition_2021_06"), std::string::npos) << others.err;
  EXPECT_EQ(rows_in("partition_2021_06.duckdb"), first_half + 1);
  std::vector<std::string> replace = second;
  replace.push_back("--replace-written");
  const CliRun replaced_june = with(replace);
  EXPECT_EQ(replaced_june.rc, 0) << replaced_june.out << replaced_june.err;
  EXPECT_EQ(rows_in("partition_2021_06.duckdb"), first_half + 2);
  EXPECT_EQ(app_retry(), 0) << "the application's batch id went with its row";
  EXPECT_EQ(rows_in("partition_2021_06.duckdb"), first_half + 2);
  {
    duck::Database db = duck::Database::open(path("parts/events/partition_2021_06.duckdb"), true);
    EXPECT_EQ(db.connect().query_int(
                  "SELECT count(*) FROM events WHERE id_text = 'written-by-the-application'"),
              1);
  }
  // (The staging store goes inside the partition directory, the partition's copy beside it.)
  for (const auto& dir :
       {std::filesystem::path(path("parts")), std::filesystem::path(path("parts")).parent_path()}) {
    for (const auto& f : std::filesystem::directory_iterator(dir)) {
      EXPECT_EQ(f.path().filename().string().find("catchup"), std::string::npos)
          << "staging left behind: " << f.path();
    }
  }

  // 2. Re-partitioned by a version that did not mark the ids it could not carry (its copy
  //    batches were "repartition-..."): such a partition counts as written by others, also after
  //    another re-partitioning; a changed period is kept, not replaced.
  delete_from_source("ts >= '2021-06-01'");  // (the source as the first migration saw it)
  std::filesystem::remove(path("parts/events/_migration.json"));
  std::filesystem::remove_all(path("parts"));
  ASSERT_EQ(with({"migrate", "--database", path("src.duckdb"), "--strategy", "monthly"}).rc, 0);
  ASSERT_EQ(with({"migrate", "--from-partitions", "--strategy", "yearly"}).rc, 0);
  {
    duck::Database db = duck::Database::open(path("parts/events/partition_2021.duckdb"));
    db.connect().exec(
        "UPDATE _duckpart_batches SET batch_id = replace(batch_id, 'repartition:', "
        "'repartition-')");
  }
  ASSERT_EQ(with({"migrate", "--from-partitions", "--strategy", "monthly"}).rc, 0);
  const int64_t feb = rows_in("partition_2021_02.duckdb");
  const int64_t mar = rows_in("partition_2021_03.duckdb");
  delete_from_source("ts >= '2021-02-01' AND ts < '2021-04-01' AND qty < 300");
  const CliRun legacy =
      with({"migrate", "--database", path("src.duckdb"), "--strategy", "monthly"});
  EXPECT_EQ(legacy.rc, 1) << legacy.out << legacy.err;
  EXPECT_NE(legacy.err.find("not caught up partition_2021_02"), std::string::npos) << legacy.err;
  EXPECT_NE(legacy.err.find("an earlier re-partitioning's copies"), std::string::npos)
      << legacy.err;
  EXPECT_EQ(rows_in("partition_2021_02.duckdb"), feb);
  EXPECT_EQ(rows_in("partition_2021_03.duckdb"), mar);
  // --replace-written takes the source's rows.
  const CliRun replaced = with(
      {"migrate", "--database", path("src.duckdb"), "--strategy", "monthly", "--replace-written"});
  EXPECT_EQ(replaced.rc, 0) << replaced.out << replaced.err;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
}

TEST_F(CliTest, CatchUpReplacesOnlyWhatItLookedAtAndStopsWhenAsked) {
  // migrate's catch-up through the library (its progress callback runs between the steps):
  // stopped while it verifies or catches up, it reports an interruption (not a failed
  // verification) and leaves the record "copied"; a period committed to after the catch-up looked
  // at it is neither replaced nor dropped; a staging store left by a killed run is reported by
  // health-report and deleted by the next run.
  make_source(path("src.duckdb"), 6000);
  PartitionConfig cfg = test_config(path("parts"), PartitionStrategy::kMonthly);
  cfg.write_buffer_mb = 0;  // an application batch commits before create_batch returns
  MigrationOptions o;
  o.source_path = path("src.duckdb");
  o.table = "events";
  o.partition_column = "ts";
  o.batch_size = 2000;
  using Callback = std::function<void(PartitionedDataRepository&, const MigrationProgress&)>;
  std::atomic<bool> stop{false};
  auto migrate = [&](const Callback& cb) {
    stop = false;
    PartitionedDataRepository repo(cfg);
    PartitionMigrator m(repo, o);
    return m.migrate(
        [&](const MigrationProgress& p) {
          if (cb) cb(repo, p);
        },
        &stop);
  };
  auto rows_in = [&](const std::string& partition) {
    duck::Database db = duck::Database::open(path("parts/events/" + partition + ".duckdb"), true);
    return db.connect().query_int("SELECT count(*) FROM events");
  };
  auto source_rows = [&](const std::string& from, const std::string& to) {
    duck::Database db = duck::Database::open(path("src.duckdb"), true);
    return db.connect().query_int(
        fmt::format("SELECT count(*) FROM events WHERE ts >= '{}' AND ts < '{}'", from, to));
  };
  auto record = [&] {
    std::ifstream in(path("parts/events/_migration.json"));
    return nlohmann::json::parse(in);
  };
  // One application row (an existing row under a new id) in the month starting at `first_day`.
  auto app_row = [&](PartitionedDataRepository& repo, int month, const std::string& id) {
    const Schema schema = repo.load_schema("events");
    DataQueryRequest q;
    q.filters.push_back({"ts", FilterOperator::kGte,
                         Value(Timestamp{date_from_civil(2021, month, 1).days * kMicrosPerDay})});
    q.filters.push_back(
        {"ts", FilterOperator::kLt,
         Value(Timestamp{date_from_civil(2021, month + 1, 1).days * kMicrosPerDay})});
    q.limit = 1;
    std::vector<DataRecord> one = repo.get_all(schema, q).items;
    ASSERT_EQ(one.size(), 1u);
    one.at(0).values.at(0) = Value(id);
    EXPECT_EQ(repo.create_batch(schema, one, {.batch_id = id}).rows_written, 1);
  };
  {
    const MigrationResult first = migrate({});
    ASSERT_TRUE(first.verified);
    ASSERT_EQ(first.mismatches, 0);
  }
  const int64_t march = rows_in("partition_2021_03"), may = rows_in("partition_2021_05");
  ASSERT_GT(may, 0);
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec(
        "DELETE FROM events WHERE (ts >= '2021-03-01' AND ts < '2021-03-10') OR (ts >= "
        "'2021-05-01' AND ts < '2021-06-01')");
  }
  ASSERT_LT(source_rows("2021-03-01", "2021-04-01"), march);

  // 1. Stopped while it verifies: nothing caught up, no checks reported; copied, not completed.
  const MigrationResult verifying =
      migrate([&](PartitionedDataRepository&, const MigrationProgress& p) {
        if (p.current == "verifying") stop = true;
      });
  EXPECT_TRUE(verifying.interrupted);
  EXPECT_TRUE(verifying.copied);
  EXPECT_FALSE(verifying.verified);
  EXPECT_TRUE(verifying.checks.empty());
  EXPECT_EQ(verifying.mismatches, 0);
  EXPECT_TRUE(verifying.periods_recopied.empty());
  EXPECT_EQ(rows_in("partition_2021_03"), march);
  EXPECT_TRUE(record().value("copied", false)) << record().dump();
  EXPECT_FALSE(record().value("completed", true)) << record().dump();

  // 2. Stopped in the catch-up: the period under way is finished, the next one is not touched.
  const MigrationResult catching =
      migrate([&](PartitionedDataRepository&, const MigrationProgress& p) {
        if (p.current.starts_with("catching up")) stop = true;
      });
  EXPECT_TRUE(catching.interrupted);
  EXPECT_FALSE(catching.verified);
  EXPECT_EQ(catching.periods_recopied, std::vector<std::string>{"partition_2021_03"});
  EXPECT_EQ(rows_in("partition_2021_03"), source_rows("2021-03-01", "2021-04-01"));
  EXPECT_EQ(rows_in("partition_2021_05"), may);
  EXPECT_FALSE(record().value("completed", true));

  // 3. The application commits to a period after the catch-up looked at it (its batches: none):
  //    the period is kept, with the application's row, and reported (a replacement, or the drop
  //    of May that the source emptied, used to lose it).
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    db.connect().exec("DELETE FROM events WHERE ts >= '2021-03-10' AND ts < '2021-03-12'");
  }
  const int64_t march_now = rows_in("partition_2021_03");
  const MigrationResult raced =
      migrate([&](PartitionedDataRepository& repo, const MigrationProgress& p) {
        if (p.current == "catching up partition_2021_03") app_row(repo, 3, "app-march");
        if (p.current == "catching up partition_2021_05") app_row(repo, 5, "app-may");
      });
  EXPECT_FALSE(raced.interrupted);
  EXPECT_TRUE(raced.verified);
  EXPECT_TRUE(raced.periods_recopied.empty());
  ASSERT_EQ(raced.periods_kept.size(), 2u);
  for (const auto& [name, why] : raced.periods_kept) {
    EXPECT_NE(why.find("not replaced while it was being caught up"), std::string::npos) << why;
    EXPECT_NE(why.find("changed since"), std::string::npos) << why;
  }
  EXPECT_EQ(raced.mismatches, 2);
  EXPECT_EQ(rows_in("partition_2021_03"), march_now + 1);
  EXPECT_EQ(rows_in("partition_2021_05"), may + 1);
  EXPECT_FALSE(record().value("completed", true));

  // 4. A staging store of a run that died: reported, then deleted by the next run (which, with
  //    --replace-written, takes the source's rows).
  // (A pid above the system's largest: no process has it, nor will while the test runs.)
  int64_t pid_max = 0;
  std::ifstream("/proc/sys/kernel/pid_max") >> pid_max;
  ASSERT_GT(pid_max, 0);
  const int64_t dead = pid_max + 1;
  const std::string left = path(fmt::format("parts/.events.catchup_{}", dead));
  std::filesystem::create_directories(left + "/events");
  std::ofstream(left + "/events/partition_2021_03.duckdb") << "half written";
  const CliRun health = run({"health-report", "--partitions", path("parts"), "--schema", "events",
                             "--partition-column", "ts"});
  EXPECT_NE(health.out.find(left), std::string::npos) << health.out;
  EXPECT_NE(health.out.find("migrate catch-up that was interrupted"), std::string::npos)
      << health.out;
  o.replace_written = true;
  const MigrationResult replaced = migrate({});
  EXPECT_TRUE(replaced.verified);
  EXPECT_EQ(replaced.mismatches, 0);
  EXPECT_EQ(replaced.periods_kept.size(), 0u);
  EXPECT_FALSE(std::filesystem::exists(left));
  EXPECT_TRUE(record().value("completed", false));
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
}

TEST_F(CliTest, RepartitionMonthlyToYearlyAndBackEqualsTheSource) {
  make_source(path("src.duckdb"), 20000);
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts", "--strategy", "monthly"})
                .rc,
            0);
  auto listing = [&] {
    std::string s;
    for (const auto& f : std::filesystem::recursive_directory_iterator(path("parts"))) {
      s += f.path().string() + ":" + std::to_string(f.is_regular_file() ? f.file_size() : 0) + "\n";
    }
    return s;
  };
  const std::vector<std::string> common = {"--partitions",     path("parts"),        "--schema",
                                           "events",           "--partition-column", "ts",
                                           "--from-partitions"};
  auto repart = [&](std::vector<std::string> a) {
    a.insert(a.begin(), "migrate");
    a.insert(a.end(), common.begin(), common.end());
    return run(a);
  };
  // An export made before each re-partition is mirrored again afterwards (the old partitions'
  // files used to stay, every re-export failed "wrote N rows but 2N read back", and a read of the
  // export saw each row twice).
  auto exported_rows = [&] {
    const CliRun e = run({"export", "--to", path("exp"), "--partitions", path("parts"), "--schema",
                          "events", "--partition-column", "ts"});
    EXPECT_EQ(e.rc, 0) << e.err;
    duck::Database mem = duck::Database::open(":memory:");
    return mem.connect().query_int("SELECT count(*) FROM read_parquet(" +
                                   duck::quote_literal(path("exp") + "/**/*.parquet") + ")");
  };
  EXPECT_EQ(exported_rows(), 20000);
  const std::string before = listing();
  const CliRun dry = repart({"--strategy", "yearly", "--dry-run"});
  ASSERT_EQ(dry.rc, 0) << dry.err;
  EXPECT_NE(dry.out.find("create partition_2021"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("27 partitions (monthly) into 4 partitions (yearly), 20000 rows"),
            std::string::npos)
      << dry.out;
  EXPECT_EQ(listing(), before) << "a dry run writes nothing";

  const CliRun y = repart({"--strategy", "yearly", "--batch-size", "3000"});
  ASSERT_EQ(y.rc, 0) << y.err;
  EXPECT_NE(y.out.find("verified 4 periods"), std::string::npos) << y.out;
  EXPECT_NE(y.out.find("0 mismatch(es)"), std::string::npos) << y.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kYearly);
  EXPECT_FALSE(std::filesystem::exists(path("parts/_repartition_yearly_of_events")));
  EXPECT_FALSE(std::filesystem::exists(path("parts/_repartition_yearly")));
  EXPECT_EQ(exported_rows(), 20000);
  // Queries run on the new layout.
  const CliRun q = run({"query", "--partitions", path("parts"), "--schema", "events", "--filter",
                        "ts:between:2021-03-01,2021-03-31 23:59:59", "--count"});
  ASSERT_EQ(q.rc, 0) << q.err;
  duck::Database db = duck::Database::open(path("src.duckdb"), true);
  EXPECT_EQ(std::stoll(q.out),
            db.connect().query_int("SELECT count(*) FROM events WHERE ts BETWEEN "
                                   "'2021-03-01' AND '2021-03-31 23:59:59'"));
  // Finer again: yearly -> weekly.
  const CliRun w = repart({"--strategy", "weekly", "--json"});
  ASSERT_EQ(w.rc, 0) << w.err;
  EXPECT_EQ(nlohmann::json::parse(w.out)["mismatches"].get<int>(), 0);
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kWeekly);
  EXPECT_EQ(exported_rows(), 20000);
  // A directory DuckDB would read as a pattern is refused before anything is written.
  const CliRun glob = run({"export", "--to", path("exp [1]"), "--partitions", path("parts"),
                           "--schema", "events", "--partition-column", "ts"});
  EXPECT_EQ(glob.rc, 2) << glob.err;
  EXPECT_NE(glob.err.find("as a file pattern"), std::string::npos) << glob.err;
  EXPECT_FALSE(std::filesystem::exists(path("exp [1]")));
  // Running it again is harmless; no strategy is an error.
  const CliRun same = repart({"--strategy", "weekly"});
  EXPECT_EQ(same.rc, 0) << same.err;
  EXPECT_NE(same.out.find("nothing to do"), std::string::npos) << same.out;
  const CliRun same_dry = repart({"--strategy", "weekly", "--dry-run"});
  EXPECT_EQ(same_dry.rc, 0) << same_dry.err;
  EXPECT_NE(same_dry.out.find("nothing to do"), std::string::npos) << same_dry.out;
  EXPECT_EQ(repart({}).rc, 2);
}

// The corruption suite: each kind of damage is named by health-report with the file; queries away
// from it answer; queries that need it fail naming it (never a silent partial answer); restore from
// a backup repairs it.
TEST_F(CliTest, CorruptionIsNamedIsolatedAndRepaired) {
  make_source(path("src.duckdb"), 12000);
  const std::vector<std::string> store = {"--partitions", path("parts"), "--schema", "events"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), store.begin(), store.end());
    return run(a);
  };
  ASSERT_EQ(run({"migrate", "--database", path("src.duckdb"), "--partitions", path("parts"),
                 "--schema", "events", "--partition-column", "ts"})
                .rc,
            0);
  ASSERT_EQ(with({"backup", "--all", "--to", path("bk")}).rc, 0);
  const std::string dir = path("parts/events/");
  duck::Database sdb = duck::Database::open(path("src.duckdb"), true);
  duck::Connection src = sdb.connect();
  auto count_between = [&](const std::string& a, const std::string& b) {
    return src.query_int(
        fmt::format("SELECT count(*) FROM events WHERE ts >= '{}' AND ts < '{}'", a, b));
  };
  struct Damage {
    const char* name;
    std::function<void()> apply;
    std::string partition;  // the damaged partition (its month is queried)
    std::string month_start, month_end;
    const char* health_says;
  };
  const std::vector<Damage> cases = {
      {"bytes overwritten in the middle",
       [&] {
         const std::string f = dir + "partition_2021_05.duckdb";
         const auto size = std::filesystem::file_size(f);
         // 8 KB of junk at the start of every 256 KB block after the file headers: whichever
         // blocks hold the data, their checksums no longer match.
         std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
         const std::string junk(8192, '\x5a');
         for (std::uintmax_t off = 12288; off + junk.size() < size; off += 262144) {
           io.seekp(static_cast<std::streamoff>(off + 64));
           io.write(junk.data(), static_cast<std::streamsize>(junk.size()));
         }
       },
       "partition_2021_05", "2021-05-01", "2021-06-01", "partition_2021_05"},
      {"truncated", [&] { std::filesystem::resize_file(dir + "partition_2021_09.duckdb", 6000); },
       "partition_2021_09", "2021-09-01", "2021-10-01", "partition_2021_09"},
      {"renamed to the wrong period",
       [&] {
         std::filesystem::rename(dir + "partition_2022_02.duckdb",
                                 dir + "partition_2024_06.duckdb");
       },
       "partition_2024_06", "2022-02-01", "2022-03-01", "holds period 2022_02"},
  };
  for (const auto& d : cases) {
    SCOPED_TRACE(d.name);
    d.apply();
    const CliRun h = with({"health-report"});
    EXPECT_EQ(h.rc, 1) << h.out;
    EXPECT_NE(h.out.find(d.health_says), std::string::npos) << h.out;
    // Away from the damage: an exact answer.
    const CliRun away =
        with({"query", "--filter", "ts:between:2022-06-01,2022-06-30 23:59:59", "--count"});
    ASSERT_EQ(away.rc, 0) << away.err;
    EXPECT_EQ(std::stoll(away.out), count_between("2022-06-01", "2022-07-01"));
    // The damaged month: an error naming the file, through query and sql alike.
    const CliRun needs = with({"query", "--filter", "ts:gte:" + d.month_start, "--filter",
                               "ts:lt:" + d.month_end, "--format", "csv"});
    EXPECT_NE(needs.rc, 0) << needs.out;
    EXPECT_NE(needs.err.find(d.partition), std::string::npos) << needs.err;
    const CliRun sql = with({"sql", fmt::format("SELECT sum(qty) FROM events WHERE ts >= '{}' "
                                                "AND ts < '{}'",
                                                d.month_start, d.month_end)});
    EXPECT_NE(sql.rc, 0) << sql.out;
    EXPECT_NE(sql.err.find(d.partition), std::string::npos) << sql.err;
  }
  // A catalog that lost an entry and a stale write-ahead log: warnings at most, answers exact.
  {
    auto cat = nlohmann::json::parse(std::ifstream(dir + "_catalog.json"));
    ASSERT_TRUE(cat.contains("partitions"));
    auto& parts = cat["partitions"];
    if (parts.is_array() && !parts.empty()) parts.erase(parts.begin());
    if (parts.is_object() && !parts.empty()) parts.erase(parts.begin());
    std::ofstream(dir + "_catalog.json") << cat.dump();
    std::ofstream(dir + "partition_2022_08.duckdb.wal") << "";
  }
  const CliRun drift = with({"health-report"});
  EXPECT_NE(drift.out.find("catalog out of date"), std::string::npos) << drift.out;
  EXPECT_NE(drift.out.find("write-ahead log left"), std::string::npos) << drift.out;
  const CliRun q = with({"query", "--filter", "ts:lt:2021-02-01", "--count"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_EQ(std::stoll(q.out), count_between("2000-01-01", "2021-02-01"));
  // Restore repairs the damaged files; the misnamed file goes back under its right name.
  std::filesystem::rename(dir + "partition_2024_06.duckdb", path("misnamed.duckdb"));
  const CliRun fix = with({"restore", "--from", path("bk")});
  ASSERT_EQ(fix.rc, 0) << fix.err;
  const CliRun h = with({"health-report"});
  EXPECT_EQ(h.rc, 0) << h.out;
  expect_partitions_equal_source(path("src.duckdb"), path("parts/events"),
                                 PartitionStrategy::kMonthly);
}

}  // namespace
}  // namespace duckpart::testing
