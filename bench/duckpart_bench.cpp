// duckpart_bench — duckpart against plain DuckDB on one file, side by side in one run.
//
//   duckpart_bench [--rows N] [--months M] [--strategy monthly] [--reps 5] [--ingest-reps N]
//                  [--dir DIR]
//                  [--markdown docs/performance.md]
//
// Data: 7-column rows (id UUID, ts TIMESTAMP over M months, well INTEGER, oil/gas/water DOUBLE,
// status VARCHAR) from a fixed seed, in random period order. Every scenario runs for duckpart and
// for the single-file baseline in the same run, one system open at a time (P1's first pass, P3, P7
// and P8 in child processes); each figure is repeated --reps times and reported as min / median /
// p95, plus one JSON line per figure on stdout. P1's three passes are repeated --ingest-reps times
// (default: --reps), alternating the systems.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "duck/duck.hpp"
#include "duckpart/duckpart.hpp"

namespace fs = std::filesystem;
using namespace duckpart;

namespace {

struct Args {
  int64_t rows = 100'000'000;
  int months = 120;
  std::string strategy = "monthly";
  int reps = 5;
  int ingest_reps = -1;  // repetitions of P1's passes (-1: --reps)
  std::string dir = "build/bench-data";
  std::string markdown;
  int64_t batch = 1'000'000;
  // write_buffer_mb of the store P1 writes and the other scenarios read (-1: the default,
  // automatic). P1 also writes a store with the direct write path (write_buffer_mb = 0).
  int write_buffer_mb = -1;
  // write_buffer_max_delay_ms of that store (-1: the default; 0: no timed drains).
  int write_buffer_max_delay_ms = -1;
  std::string scenarios = "p2,p3,p5,p6,p7,p8";  // P1 and P9 always run
  bool on(const char* id) const { return scenarios.find(id) != std::string::npos; }
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

long peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

uint64_t dir_bytes(const fs::path& p) {
  uint64_t n = 0;
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return fs::file_size(p, ec);
  for (const auto& f : fs::recursive_directory_iterator(p, ec)) {
    if (f.is_regular_file()) n += f.file_size();
  }
  return n;
}

Schema bench_schema() {
  return Schema("readings",
                {{"id", "UUID"},
                 {"ts", "TIMESTAMP"},
                 {"well", "INTEGER"},
                 {"oil", "DOUBLE"},
                 {"gas", "DOUBLE"},
                 {"water", "DOUBLE"},
                 {"status", "VARCHAR"}},
                "ts", "id");
}

std::string uuid_of(std::mt19937_64& rng) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(36, '-');
  uint64_t a = rng(), b = rng();
  for (int i = 0, k = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) continue;
    const uint64_t w = k < 16 ? a : b;
    s[static_cast<std::size_t>(i)] = kHex[(w >> (4 * (k % 16))) & 15];
    ++k;
  }
  return s;
}

// Batch `b` of the data set (deterministic).
ColumnBatch make_batch(const Schema& schema, const Args& a, int64_t b, int64_t n) {
  std::mt19937_64 rng(0x5eed + static_cast<uint64_t>(b));
  ColumnBatch batch = make_column_batch(schema, static_cast<std::size_t>(n));
  batch.rows = static_cast<std::size_t>(n);
  auto& id = std::get<std::vector<std::string>>(batch.columns[0].data);
  auto& ts = std::get<std::vector<int64_t>>(batch.columns[1].data);
  auto& well = std::get<std::vector<int64_t>>(batch.columns[2].data);
  auto& oil = std::get<std::vector<double>>(batch.columns[3].data);
  auto& gas = std::get<std::vector<double>>(batch.columns[4].data);
  auto& water = std::get<std::vector<double>>(batch.columns[5].data);
  auto& status = std::get<std::vector<std::string>>(batch.columns[6].data);
  static const char* kStatus[] = {"producing", "shut-in", "injecting", "abandoned"};
  const int64_t start = to_timestamp(date_from_civil(2015, 1, 1)).micros;
  const int64_t span =
      to_timestamp(date_from_civil(2015 + a.months / 12, 1 + a.months % 12, 1)).micros - start;
  for (int64_t i = 0; i < n; ++i) {
    id.push_back(uuid_of(rng));
    ts.push_back(start + static_cast<int64_t>(rng() % static_cast<uint64_t>(span)));
    well.push_back(static_cast<int64_t>(rng() % 50000));
    oil.push_back(static_cast<double>(rng() % 100000) / 10.0);
    gas.push_back(static_cast<double>(rng() % 500000) / 10.0);
    water.push_back(static_cast<double>(rng() % 80000) / 10.0);
    status.emplace_back(kStatus[rng() % 4]);
  }
  return batch;
}

// The rows of a bench batch as DataRecords (the record API's input).
std::vector<DataRecord> to_records(const ColumnBatch& batch) {
  std::vector<DataRecord> recs(batch.rows);
  for (std::size_t i = 0; i < batch.rows; ++i) {
    recs[i].values = {Value(std::get<std::vector<std::string>>(batch.columns[0].data)[i]),
                      Value(Timestamp{std::get<std::vector<int64_t>>(batch.columns[1].data)[i]}),
                      Value(std::get<std::vector<int64_t>>(batch.columns[2].data)[i]),
                      Value(std::get<std::vector<double>>(batch.columns[3].data)[i]),
                      Value(std::get<std::vector<double>>(batch.columns[4].data)[i]),
                      Value(std::get<std::vector<double>>(batch.columns[5].data)[i]),
                      Value(std::get<std::vector<std::string>>(batch.columns[6].data)[i])};
  }
  return recs;
}

struct Stat {
  double min = 0, median = 0, p95 = 0;
};

Stat stats_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Stat s;
  s.min = v.front();
  s.median = v[v.size() / 2];
  s.p95 = v[std::min(v.size() - 1, static_cast<std::size_t>(static_cast<double>(v.size()) * 0.95))];
  return s;
}

struct Row {
  std::string id, scenario, system, unit;
  Stat value;
  std::string note;
};
std::vector<Row> g_rows;

void record(const std::string& id, const std::string& scenario, const std::string& system,
            const std::string& unit, const Stat& s, const std::string& note = "") {
  g_rows.push_back({id, scenario, system, unit, s, note});
  std::printf(
      "{\"figure\":\"%s\",\"scenario\":\"%s\",\"system\":\"%s\",\"unit\":\"%s\",\"min\":%.4f,"
      "\"median\":%.4f,\"p95\":%.4f,\"peak_rss_mb\":%ld}\n",
      id.c_str(), scenario.c_str(), system.c_str(), unit.c_str(), s.min, s.median, s.p95,
      peak_rss_mb());
  std::fflush(stdout);
}

// Where a store's bytes go, by DuckDB block: blocks that hold segments of the data table, blocks
// that hold only segments of duckpart's two small tables (_duckpart_meta, _duckpart_batches: a
// few hundred bytes of rows, but DuckDB gives each checkpoint's segments of a table a block of its
// own), and the rest (DuckDB's metadata blocks, free blocks). In MB of the files' block size.
struct BlockUse {
  double data_mb = 0, small_tables_mb = 0, other_mb = 0;
  int64_t files = 0;
};
BlockUse block_use(const fs::path& table_dir, const std::string& table) {
  BlockUse u;
  duck::Database db = duck::Database::open("");
  duck::Connection c = db.connect();
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(table_dir, ec)) {
    if (f.path().extension() != ".duckdb") continue;
    c.exec(fmt::format("ATTACH {} AS f (READ_ONLY)", duck::quote_literal(f.path().string())));
    const int64_t block =
        c.query_int("SELECT block_size FROM pragma_database_size() WHERE database_name = 'f'");
    const int64_t total =
        c.query_int("SELECT total_blocks FROM pragma_database_size() WHERE database_name = 'f'");
    const std::string blocks = fmt::format(
        "WITH s AS (SELECT 0 AS k, block_id FROM pragma_storage_info('f.main.{}') UNION ALL "
        "SELECT 1, block_id FROM pragma_storage_info('f.main._duckpart_meta') UNION ALL SELECT 1, "
        "block_id FROM pragma_storage_info('f.main._duckpart_batches')), b AS (SELECT block_id, "
        "min(k) AS k FROM s WHERE block_id >= 0 GROUP BY block_id) ",
        table);
    const int64_t data = c.query_int(blocks + "SELECT count(*) FROM b WHERE k = 0");
    const int64_t small = c.query_int(blocks + "SELECT count(*) FROM b WHERE k = 1");
    c.exec("DETACH f");
    const double mb = static_cast<double>(block) / 1e6;
    u.data_mb += static_cast<double>(data) * mb;
    u.small_tables_mb += static_cast<double>(small) * mb;
    u.other_mb += static_cast<double>(total - data - small) * mb;
    ++u.files;
  }
  return u;
}

// Records the block use of a store's table directory as three P9 figures.
void record_block_use(const fs::path& table_dir, const std::string& table,
                      const std::string& system) {
  const BlockUse u = block_use(table_dir, table);
  const std::string scen =
      fmt::format("bytes on disk by DuckDB block ({} partition files)", u.files);
  record("P9", scen + ": the data table", system, "MB", {u.data_mb, u.data_mb, u.data_mb});
  record("P9", scen + ": blocks holding only the metadata tables", system, "MB",
         {u.small_tables_mb, u.small_tables_mb, u.small_tables_mb});
  record("P9", scen + ": DuckDB metadata and free blocks", system, "MB",
         {u.other_mb, u.other_mb, u.other_mb});
}

Stat time_reps(int reps, const std::function<void()>& f, double scale = 1.0) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_s();
    f();
    v.push_back((now_s() - t0) * scale);
  }
  return stats_of(v);
}

// Runs this binary again with `args` (a fresh process: nothing cached, nothing attached) and
// returns its stdout and wall time in ms, from fork to exit.
//
// `spawn`: start it with posix_spawn (no copy of this process's page tables, which fork() makes:
// with the benchmark at several GB that copy alone adds tens of ms) — for timings of a process's
// start (P3). Not for children that report their own peak RSS: a child started that way shares
// this process's memory until exec and inherits its high-water mark.
std::pair<std::string, double> run_self(const std::vector<std::string>& args, bool spawn = false) {
  int fds[2];
  if (::pipe(fds) != 0) throw Error(ErrorCode::kIo, "pipe failed");
  static const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(self.c_str()));
  for (const auto& x : args) argv.push_back(const_cast<char*>(x.c_str()));
  argv.push_back(nullptr);
  const double t0 = now_s();
  pid_t pid = -1;
  if (spawn) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    const int rc = ::posix_spawn(&pid, self.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      throw Error(ErrorCode::kIo, "posix_spawn failed: " + std::string(std::strerror(rc)));
    }
  } else {
    pid = ::fork();
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::execv(self.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const double ms = (now_s() - t0) * 1e3;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(ErrorCode::kIo, "benchmark child failed: " + args[0] + " " + out);
  }
  return {out, ms};
}

// Child modes (run through run_self).
//   --child-cold part DIR STRATEGY FROM TO [oil]  |  --child-cold single FILE - FROM TO [oil]
//     count rows with FROM <= ts < TO (and oil >= 100 with "oil": a filter the partitions'
//     metadata cannot answer, so that the rows are read); prints "<rows> <files opened>
//     <extensions loaded 0/1> <partitions counted from metadata> <DuckDB started 0/1>"
//   --child-floor  |  --child-floor-deferred
//     in-memory DuckDB, SELECT 42 (its extensions loaded at open / deferred); prints "42 0"
//   --child-stream DIR STRATEGY
//     streams every row; prints "<rows> <peak RSS MB> <seconds>"
int child_main(int argc, char** argv) {
  const std::string mode = argv[1];
  const Schema schema = bench_schema();
  if (mode == "--child-cold" && (argc == 7 || (argc == 8 && std::string(argv[7]) == "oil"))) {
    DataQueryRequest q;
    q.filters = {{"ts", FilterOperator::kGte, Value(argv[5])},
                 {"ts", FilterOperator::kLt, Value(argv[6])}};
    if (argc == 8) q.filters.push_back({"oil", FilterOperator::kGte, Value(100.0)});
    if (std::string(argv[2]) == "single") {
      DuckDBDataRepository single(argv[3], {.read_only = true});
      std::printf("%lld 1\n", static_cast<long long>(single.count_all(schema, q)));
    } else {
      PartitionConfig cfg;
      cfg.base_partition_path = argv[3];
      cfg.strategy = parse_strategy(argv[4]);
      PartitionedDataRepository part(cfg, {.read_only = true});
      const int64_t n = part.count_all(schema, q);
      const RepositoryCounters c = part.counters();
      std::printf("%lld %lld %d %lld %d\n", static_cast<long long>(n),
                  static_cast<long long>(c.partitions_opened), c.duckdb_extensions_loaded ? 1 : 0,
                  static_cast<long long>(c.partitions_counted_from_metadata),
                  c.duckdb_started ? 1 : 0);
    }
    return 0;
  }
  if (mode == "--child-floor" && argc == 2) {
    // What any query in a new process pays before it reads a file: loading libduckdb, starting an
    // in-memory DuckDB (its built-in functions and extensions), one trivial query, exit.
    duck::Database db = duck::Database::open("");
    duck::Connection c = db.connect();
    std::printf("%lld 0\n", static_cast<long long>(c.query_int("SELECT 42")));
    return 0;
  }
  if (mode == "--child-floor-deferred" && argc == 2) {
    // The same with DuckDB's linked extensions deferred, as duckpart's repository opens it: what a
    // query that needs none of them pays (docs/architecture.md, "Cold opens").
    duck::Database db = duck::Database::open("", false, {}, duck::Extensions::kOnFirstUse);
    duck::Connection c = db.connect();
    std::printf("%lld 0\n",
                static_cast<long long>(c.query_int("SELECT 42", "", duck::Uses::kBuiltinsOnly)));
    return 0;
  }
  if (mode == "--child-stream" && argc == 5) {
    PartitionConfig cfg;
    cfg.base_partition_path = argv[2];
    cfg.strategy = parse_strategy(argv[3]);
    cfg.memory_limit_mb = std::atoi(argv[4]);
    PartitionedDataRepository part(cfg, {.read_only = true});
    const double t0 = now_s();
    RecordStream s = part.stream_query_results(schema, {});
    int64_t n = 0;
    double oil = 0;
    for (DataRecord r; s.next(r);) {
      ++n;
      oil += r.values[3].is_null() ? 0.0 : r.values[3].get<double>();
    }
    std::printf("%lld %ld %.3f %.1f\n", static_cast<long long>(n), peak_rss_mb(), now_s() - t0,
                oil);
    return 0;
  }
  if (mode == "--child-ctas" && (argc == 5 || argc == 6)) {
    // CREATE TABLE AS SELECT copy of SRC into the new file DST (memory limit MB, 0: DuckDB's);
    // "tuned": with the allocator settings manage_partitions uses.
    if (argc == 6 && std::string(argv[5]) == "tuned") tune_allocator_for_bulk_work();
    const double t0 = now_s();
    duck::Database db = duck::Database::open(argv[3]);
    duck::Connection c = db.connect();
    if (std::atoi(argv[4]) > 0) c.exec(fmt::format("SET memory_limit = '{}MiB'", argv[4]));
    c.exec(fmt::format("ATTACH {} AS src (READ_ONLY)", duck::quote_literal(argv[2])));
    c.exec("CREATE TABLE readings AS SELECT * FROM src.readings");
    c.exec("CHECKPOINT");
    const int64_t n = c.query_int("SELECT count(*) FROM readings");
    std::printf("%lld %.3f %ld\n", static_cast<long long>(n), now_s() - t0, peak_rss_mb());
    return 0;
  }
  if (mode == "--child-migrate" && argc == 7) {
    // PartitionMigrator SRC -> DIR with STRATEGY, VERIFY (0/1), memory limit MB: the CLI's path,
    // with its allocator settings.
    tune_allocator_for_bulk_work();
    const double t0 = now_s();
    PartitionConfig cfg;
    cfg.base_partition_path = argv[3];
    cfg.strategy = parse_strategy(argv[4]);
    cfg.memory_limit_mb = std::atoi(argv[6]);
    PartitionedDataRepository part(cfg);
    MigrationOptions o;
    o.source_path = argv[2];
    o.table = "readings";
    o.partition_column = "ts";
    o.verify = std::string(argv[5]) == "1";
    PartitionMigrator m(part, o);
    const MigrationResult r = m.migrate();
    if (r.mismatches != 0) {
      std::fprintf(stderr, "duckpart_bench: migration verified with %lld mismatches\n",
                   static_cast<long long>(r.mismatches));
      return 1;
    }
    part.flush();
    std::printf("%lld %.3f %ld\n", static_cast<long long>(r.rows_copied), now_s() - t0,
                peak_rss_mb());
    return 0;
  }
  if (mode == "--child-ingest" && argc == 8) {
    // P1's first pass for one system, alone in this process (each system gets the machine's
    // memory, as a user's process would: at 300M rows two DuckDB instances at their default
    // limits in one process swapped). SYSTEM single: the DuckDB appender into the new file
    // PATH; direct: a store at PATH with write_buffer_mb = 0. Every batch is made (not timed),
    // then written by one timed call; flush() is timed too. Prints "<seconds> <generation
    // seconds> <peak RSS MB>", then (single) sample ids spread over the data set, one per line.
    Args a;
    a.rows = std::atoll(argv[4]);
    a.months = std::atoi(argv[5]);
    a.batch = std::atoll(argv[6]);
    a.strategy = argv[7];
    const bool is_single = std::string(argv[2]) == "single";
    std::optional<DuckDBDataRepository> single;
    std::optional<PartitionedDataRepository> direct;
    if (is_single) {
      single.emplace(argv[3]);
    } else {
      PartitionConfig cfg;
      cfg.strategy = parse_strategy(a.strategy);
      cfg.base_partition_path = argv[3];
      cfg.max_partitions_in_memory = std::max(24, a.months + 1);
      cfg.write_buffer_mb = 0;
      direct.emplace(cfg);
    }
    IDataRepository& repo =
        is_single ? static_cast<IDataRepository&>(*single) : static_cast<IDataRepository&>(*direct);
    std::vector<std::string> sample_ids;
    double t = 0, t_gen = 0;
    const int64_t nbatches = (a.rows + a.batch - 1) / a.batch;
    for (int64_t b = 0; b < nbatches; ++b) {
      const int64_t n = std::min(a.batch, a.rows - b * a.batch);
      const double tg = now_s();
      ColumnBatch batch = make_batch(schema, a, b, n);
      t_gen += now_s() - tg;
      if (is_single && sample_ids.size() < 2000) {
        const auto& ids = std::get<std::vector<std::string>>(batch.columns[0].data);
        for (int64_t i = 0; i < n && sample_ids.size() < 2000; i += std::max<int64_t>(1, n / 50)) {
          sample_ids.push_back(ids[static_cast<std::size_t>(i)]);
        }
      }
      const double t0 = now_s();
      repo.create_batch_columnar(schema, std::move(batch));
      t += now_s() - t0;
    }
    // Checkpoints are part of the ingest cost: the data is in the files, not only in logs.
    const double t0 = now_s();
    if (is_single) {
      single->flush();
    } else {
      direct->flush();
    }
    t += now_s() - t0;
    const int64_t held = repo.count_all(schema);
    if (held != a.rows) {
      std::fprintf(stderr, "duckpart_bench: the %s holds %lld rows, %lld written\n", argv[2],
                   static_cast<long long>(held), static_cast<long long>(a.rows));
      return 1;
    }
    std::printf("%.6f %.6f %ld\n", t, t_gen, peak_rss_mb());
    for (const auto& id : sample_ids) std::printf("%s\n", id.c_str());
    return 0;
  }
  std::fprintf(stderr, "duckpart_bench: bad child arguments\n");
  return 2;
}

// Runs `sql` through query_sql and returns its rows as text: fields end with '|', rows with '\n';
// doubles with all their digits (compare answers with same_answer).
std::string sql_row(IDataRepository& repo, const std::string& sql) {
  RecordStream s = repo.query_sql(sql);
  std::string out;
  DataRecord r;
  while (s.next(r)) {
    for (const auto& v : r.values) {
      out += v.is<double>() ? fmt::format("{:.17g}|", v.get<double>()) : v.to_string() + "|";
    }
    out += "\n";
  }
  return out;
}

// Whether two answers of sql_row are the same: every field equal, except that numbers may differ
// in the last bits (a sum of doubles depends on the order it adds them in; 6 significant digits
// were not enough: 3 of 360 monthly sums differed at the 7th).
bool same_answer(const std::string& x, const std::string& y) {
  std::size_t i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    const std::size_t ie = x.find_first_of("|\n", i), je = y.find_first_of("|\n", j);
    if (ie == std::string::npos || je == std::string::npos || x[ie] != y[je]) return false;
    const std::string a = x.substr(i, ie - i), b = y.substr(j, je - j);
    if (a != b) {
      char *ea = nullptr, *eb = nullptr;
      const double da = std::strtod(a.c_str(), &ea), db = std::strtod(b.c_str(), &eb);
      if (a.empty() || b.empty() || *ea != '\0' || *eb != '\0' ||
          std::abs(da - db) > 1e-9 * std::max(std::abs(da), std::abs(db))) {
        return false;
      }
    }
    i = ie + 1;
    j = je + 1;
  }
  return i == x.size() && j == y.size();
}

// P2's statement: 3 months in the middle of the data's span (the same rows at every size when the
// months grow with the rows).
std::string p2_sql(const Args& a) {
  const Date from =
      date_from_civil(2015 + a.months / 24, 1 + static_cast<unsigned>((a.months / 2) % 12), 1);
  const Date to = partition_key_of(PartitionStrategy::kMonthly, Date{from.days + 80}).end();
  return fmt::format(
      "SELECT count(*), sum(oil), avg(gas) FROM readings WHERE ts >= '{}' AND ts < '{}'",
      format_date(from), format_date(to));
}

// The ids P5 looks up: every (batch / 50)th id of the first batches, up to 2,000 (the bench's
// single-file child collects the same ones while it writes).
std::vector<std::string> p5_sample_ids(const Schema& schema, const Args& a) {
  std::vector<std::string> ids;
  const int64_t nbatches = (a.rows + a.batch - 1) / a.batch;
  for (int64_t b = 0; b < nbatches && ids.size() < 2000; ++b) {
    const int64_t n = std::min(a.batch, a.rows - b * a.batch);
    const ColumnBatch batch = make_batch(schema, a, b, n);
    const auto& v = std::get<std::vector<std::string>>(batch.columns[0].data);
    for (int64_t i = 0; i < n && ids.size() < 2000; i += std::max<int64_t>(1, n / 50)) {
      ids.push_back(v[static_cast<std::size_t>(i)]);
    }
  }
  return ids;
}

// 300000000 -> "300M", 120000 -> "120K".
std::string rows_label(int64_t rows) {
  if (rows >= 1'000'000 && rows % 1'000'000 == 0) return fmt::format("{}M", rows / 1'000'000);
  if (rows >= 1'000 && rows % 1'000 == 0) return fmt::format("{}K", rows / 1'000);
  return std::to_string(rows);
}

// --p10-stores ROWS:MONTHS:DIR,...: P10's query half (P2 and P5) on stores of several sizes,
// compared in one process, in rounds. Each DIR holds the store of an earlier
// `duckpart_bench --rows ROWS --months MONTHS --scenarios p2 --dir DIR` (without P6, which drops
// months). All stores are open read-only at once; each round visits them in turn (the order
// rotating) and runs P2 once untimed and once timed, then `lookups` timed get_by_id calls. Each
// size's figures and, round by round, its ratio to the first store's are recorded. Separate runs
// at each size (minutes or hours apart) compare the machine's state as much as the sizes: the same
// build's P5 moved by 1.7x between two runs of one size. A bench run ends by compacting its
// store (P9), so stores written by it are compacted: compare stores of the same layout.
int p10_main(const Args& base, const std::string& spec) {
  const Schema schema = bench_schema();
  struct Sized {
    Args a;
    std::string dir;
    std::unique_ptr<PartitionedDataRepository> repo;
    std::vector<std::string> ids;
    std::string p2, r2;
    std::vector<double> p2_ms, p5_ms, p5_round;  // p5_round: each round's median
  };
  std::vector<Sized> stores;
  for (std::size_t at = 0; at < spec.size();) {
    std::size_t end = spec.find(',', at);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(at, end - at);
    at = end + 1;
    const std::size_t c1 = item.find(':'), c2 = item.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--p10-stores: '{}' is not ROWS:MONTHS:DIR", item));
    }
    Sized st;
    st.a = base;
    st.a.rows = std::atoll(item.substr(0, c1).c_str());
    st.a.months = std::atoi(item.substr(c1 + 1, c2 - c1 - 1).c_str());
    st.dir = item.substr(c2 + 1);
    if (st.a.rows <= 0 || st.a.months <= 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--p10-stores: '{}': ROWS and MONTHS must be positive", item));
    }
    stores.push_back(std::move(st));
  }
  if (stores.size() < 2) {
    throw Error(ErrorCode::kInvalidArgument, "--p10-stores: give at least two stores");
  }
  const int lookups = 200;
  for (Sized& st : stores) {
    PartitionConfig cfg;
    cfg.strategy = PartitionStrategy::kMonthly;
    cfg.base_partition_path = st.dir + "/partitions";
    cfg.max_partitions_in_memory = std::max(24, st.a.months + 1);
    if (!fs::is_directory(cfg.base_partition_path)) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("--p10-stores: no store at '{}'", cfg.base_partition_path));
    }
    st.repo = std::make_unique<PartitionedDataRepository>(
        cfg, PartitionedRepositoryOptions{.read_only = true});
    const int64_t n = st.repo->count_all(schema);
    if (n != st.a.rows) {
      throw Error(
          ErrorCode::kInvalidArgument,
          fmt::format("--p10-stores: the store in '{}' holds {} rows, not {}: write it with "
                      "duckpart_bench --rows {} --months {} --batch {} --scenarios p2 --dir {}",
                      st.dir, n, st.a.rows, st.a.rows, st.a.months, st.a.batch, st.dir));
    }
    // The ids do not depend on the months: a wrong MONTHS would pass the checks above and P2
    // would time a range outside the data.
    std::size_t parts = 0;
    for (const auto& sch : st.repo->get_partition_statistics().schemas) {
      parts += sch.partitions.size();
    }
    if (parts != static_cast<std::size_t>(st.a.months)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--p10-stores: the store in '{}' has {} monthly partitions, not {}",
                              st.dir, parts, st.a.months));
    }
    st.p2 = p2_sql(st.a);
    st.ids = p5_sample_ids(schema, st.a);
    std::fprintf(stderr, "duckpart_bench: P10 store %s: %lld rows, %d months; warming up\n",
                 st.dir.c_str(), static_cast<long long>(n), st.a.months);
    for (const auto& id : st.ids) {  // builds the id maps, as P5's warm pass does
      if (!st.repo->get_by_id(schema, Value(id))) {
        throw Error(ErrorCode::kCorruption,
                    fmt::format("P10: sample id {} not found in '{}' (the ids are made from "
                                "the batch number and size: was the store written with --batch "
                                "{}?)",
                                id, st.dir, st.a.batch));
      }
    }
  }
  const std::size_t ns = stores.size();
  for (int r = 0; r < base.reps; ++r) {
    for (std::size_t k = 0; k < ns; ++k) {
      Sized& st = stores[(static_cast<std::size_t>(r) + k) % ns];
      std::string got = sql_row(*st.repo, st.p2);
      if (st.r2.empty()) {
        if (got.rfind("0|", 0) == 0) {
          throw Error(ErrorCode::kInvalidArgument,
                      fmt::format("P10: P2's range holds no rows in '{}': {}", st.dir, st.p2));
        }
        st.r2 = got;
      }
      double t0 = now_s();
      got = sql_row(*st.repo, st.p2);
      st.p2_ms.push_back((now_s() - t0) * 1e3);
      if (!same_answer(st.r2, got)) {
        throw Error(ErrorCode::kCorruption,
                    fmt::format("P10: P2 answers differ between runs in '{}'", st.dir));
      }
      std::vector<double> v;
      for (int i = 0; i < lookups; ++i) {
        const std::string& id =
            st.ids[(static_cast<std::size_t>(r) * lookups + static_cast<std::size_t>(i)) %
                   st.ids.size()];
        t0 = now_s();
        if (!st.repo->get_by_id(schema, Value(id))) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("P10: id {} not found in '{}'", id, st.dir));
        }
        v.push_back((now_s() - t0) * 1e3);
      }
      st.p5_ms.insert(st.p5_ms.end(), v.begin(), v.end());
      st.p5_round.push_back(stats_of(v).median);
    }
    std::fprintf(stderr, "duckpart_bench: P10 round %d of %d\n", r + 1, base.reps);
  }
  // P2 answers at the sizes agree where the data does: the same 3 months hold the same rows only
  // when the months grow with the rows (constant density), so they are not compared here.
  auto ratios = [](const std::vector<double>& x, const std::vector<double>& y) {
    std::vector<double> v;
    for (std::size_t i = 0; i < x.size(); ++i) v.push_back(x[i] / y[i]);
    return stats_of(v);
  };
  const Sized& first = stores[0];
  for (const Sized& st : stores) {
    const std::string size =
        fmt::format("{} rows over {} months", rows_label(st.a.rows), st.a.months);
    record("P10", "P2 3-month range aggregate at " + size + " (rounds, one process)", "duckpart",
           "ms", stats_of(st.p2_ms));
    record("P10", fmt::format("P5 get_by_id at {} ({} lookups per round)", size, lookups),
           "duckpart", "ms", stats_of(st.p5_ms));
    if (&st == &first) continue;
    const std::string over =
        fmt::format(" / at {} rows, in the same round", rows_label(first.a.rows));
    record("P10", "P2 at " + size + over, "duckpart", "ratio", ratios(st.p2_ms, first.p2_ms));
    record("P10", "P5 median at " + size + over, "duckpart", "ratio",
           ratios(st.p5_round, first.p5_round));
  }
  return 0;
}

}  // namespace

// Writes the generated table into `path` between the bench markers, keeping the rest of the file
// (docs/performance.md also holds the analysis of earlier runs); a file without the markers gets
// them, after its content, and a missing file is created. Written through a temporary file.
static void write_markdown(const std::string& path, const std::string& table) {
  static constexpr std::string_view kBegin = "<!-- bench:begin (written by duckpart_bench) -->\n";
  static constexpr std::string_view kEnd = "<!-- bench:end -->\n";
  std::string old;
  {
    std::ifstream in(path, std::ios::binary);
    if (in) old.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::string out;
  const std::size_t b = old.find(kBegin);
  const std::size_t e = b == std::string::npos ? std::string::npos : old.find(kEnd, b);
  const std::string block = std::string(kBegin) + table + std::string(kEnd);
  if (e != std::string::npos) {
    out = old.substr(0, b) + block + old.substr(e + kEnd.size());
  } else if (old.empty()) {
    out = "# duckpart performance\n\n" + block;
  } else {
    out = old + (old.back() == '\n' ? "\n" : "\n\n") + block;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << out;
    if (!f) {
      std::fprintf(stderr, "duckpart_bench: cannot write %s\n", tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "duckpart_bench: cannot replace %s\n", path.c_str());
  }
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strncmp(argv[1], "--child-", 8) == 0) {
    try {
      return child_main(argc, argv);
    } catch (const Error& e) {
      std::fprintf(stderr, "duckpart_bench child: %s\n", e.what());
      return 1;
    }
  }
  Args a;
  std::string p10_stores;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h" || i + 1 == argc) {
      std::fprintf(
          k == "--help" || k == "-h" ? stdout : stderr,
          "usage: duckpart_bench [--rows N] [--months N] [--strategy S] [--reps N] "
          "[--ingest-reps N] [--batch N] [--write-buffer-mb N] [--write-buffer-max-delay-ms N]\n"
          "                      [--scenarios p2,p3,p5,p6,p7,p8] [--dir DIR] "
          "[--markdown FILE]\n"
          "       duckpart_bench --p10-stores ROWS:MONTHS:DIR,ROWS:MONTHS:DIR[,...] [--reps N]\n"
          "Writes one JSON line per figure to stdout. P1 and P9 always run. DIR "
          "(default build/bench-data) is deleted first.\n"
          "--p10-stores compares P2 and P5 on the stores of earlier runs (--scenarios p2, so that "
          "no months are dropped; compacted at the end of those runs) in one process, in rounds; "
          "nothing is deleted.\n");
      return k == "--help" || k == "-h" ? 0 : 2;
    }
    const std::string v = argv[i + 1];
    if (k == "--rows")
      a.rows = std::atoll(v.c_str());
    else if (k == "--months")
      a.months = std::atoi(v.c_str());
    else if (k == "--strategy")
      a.strategy = v;
    else if (k == "--reps")
      a.reps = std::atoi(v.c_str());
    else if (k == "--ingest-reps")
      a.ingest_reps = std::atoi(v.c_str());
    else if (k == "--dir")
      a.dir = v;
    else if (k == "--markdown")
      a.markdown = v;
    else if (k == "--batch")
      a.batch = std::atoll(v.c_str());
    else if (k == "--write-buffer-max-delay-ms")
      a.write_buffer_max_delay_ms = std::atoi(v.c_str());
    else if (k == "--write-buffer-mb")
      a.write_buffer_mb = std::atoi(v.c_str());
    else if (k == "--scenarios")
      a.scenarios = v;
    else if (k == "--p10-stores")
      p10_stores = v;
    else {
      std::fprintf(stderr, "duckpart_bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (a.ingest_reps < 0) a.ingest_reps = a.reps;
  if (a.reps < 1 || a.ingest_reps < 1) {
    std::fprintf(stderr, "duckpart_bench: --reps and --ingest-reps must be at least 1\n");
    return 2;
  }
  if (!p10_stores.empty()) {
    try {
      return p10_main(a, p10_stores);
    } catch (const Error& e) {
      std::fprintf(stderr, "duckpart_bench: %s\n", e.what());
      return 1;
    }
  }
  try {
    const Schema schema = bench_schema();
    fs::remove_all(a.dir);
    fs::create_directories(a.dir);
    const std::string single_path = a.dir + "/single.duckdb";
    const std::string sorted_path = a.dir + "/sorted.duckdb";
    PartitionConfig cfg;
    cfg.strategy = parse_strategy(a.strategy);
    cfg.base_partition_path = a.dir + "/partitions";
    cfg.max_partitions_in_memory = std::max(24, a.months + 1);
    const int64_t nbatches = (a.rows + a.batch - 1) / a.batch;
    std::fprintf(stderr, "duckpart_bench: %lld rows, %d months, %s, %d reps, %ld cores\n",
                 static_cast<long long>(a.rows), a.months, a.strategy.c_str(), a.reps,
                 sysconf(_SC_NPROCESSORS_ONLN));

    // P1: bulk ingest, columnar batches of `batch` rows, random period order. Generation is outside
    // the timed region. First pass: the single file and a store with the direct write path
    // (write_buffer_mb = 0), each in its own child process (--child-ingest), each call timed.
    // Second pass, here: the same batches into the store every later scenario reads, with the
    // configured write buffer (the default: automatic); see below for its clock.
    cfg.write_buffer_mb = a.write_buffer_mb;
    if (a.write_buffer_max_delay_ms >= 0)
      cfg.write_buffer_max_delay_ms = a.write_buffer_max_delay_ms;
    const int buffer_mb = cfg.effective_write_buffer_mb();
    // Rates of each pass (rows/s), one per repetition; the other figures of the last one.
    std::vector<double> r_single, r_direct, r_part;
    double t_gen = 0, b_direct = 0, rss_single = 0, rss_direct = 0;
    std::vector<std::string> sample_ids;
    PartitionConfig cfg_direct = cfg;
    cfg_direct.base_partition_path = a.dir + "/partitions_direct";
    cfg_direct.write_buffer_mb = 0;
    const double rows = static_cast<double>(a.rows);
    // The three passes run one after the other in each repetition (single file, direct, write
    // buffer), so that the machine's drift over a long run hits every system alike; the files of a
    // repetition are deleted before the next one writes them again, and the last repetition's stay
    // for the other scenarios.
    for (int rep = 0; rep < a.ingest_reps; ++rep) {
      if (rep > 0) {
        fs::remove(single_path);
        fs::remove(single_path + ".wal");
        fs::remove_all(cfg.base_partition_path);
      }
      for (const bool is_single : {true, false}) {
        ::sync();  // no dirty pages of an earlier step are written back during this one
        const std::string out = run_self({"--child-ingest", is_single ? "single" : "direct",
                                          is_single ? single_path : cfg_direct.base_partition_path,
                                          std::to_string(a.rows), std::to_string(a.months),
                                          std::to_string(a.batch), a.strategy})
                                    .first;
        std::istringstream in(out);
        double t = 0, tg = 0, rss = 0;
        if (!(in >> t >> tg >> rss)) {
          throw Error(ErrorCode::kIo, "P1 child printed no timing: " + out);
        }
        (is_single ? r_single : r_direct).push_back(rows / t);
        (is_single ? rss_single : rss_direct) = rss;
        if (is_single) {
          t_gen = tg;
          sample_ids.clear();
          for (std::string id; in >> id;) sample_ids.push_back(id);
        }
      }
      b_direct = static_cast<double>(dir_bytes(cfg_direct.base_partition_path)) / 1e6;
      if (rep == a.ingest_reps - 1) {
        record_block_use(fs::path(cfg_direct.base_partition_path) / schema.name(), schema.name(),
                         "duckpart (written by P1, direct)");
      }
      fs::remove_all(cfg_direct.base_partition_path);
      // The store of the other scenarios, with the write buffer: timed by the wall clock of the
      // whole pass minus the time the same batches took to generate in this repetition's single
      // file child (where nothing ran in the background): its drains run on a background thread,
      // also while the next batch is generated, so timing only the calls would leave that work
      // out. The generation in this pass is timed too and printed: it is not slower here (11.3 s
      // in the child, 12.1 s here at 100M rows), so the subtraction does not charge duckpart for
      // it. The drain of what is still buffered at the end is part of the cost: the rows end in
      // the partition files.
      sync();  // the first pass's files written back first: they are not this pass's cost
      int64_t drains = 0, timed = 0, commits = 0;
      double t_gen_here = 0;
      const double t0 = now_s();
      {
        PartitionedDataRepository part(cfg);
        for (int64_t b = 0; b < nbatches; ++b) {
          const int64_t n = std::min(a.batch, a.rows - b * a.batch);
          const double tg = now_s();
          ColumnBatch batch = make_batch(schema, a, b, n);
          t_gen_here += now_s() - tg;
          part.create_batch_columnar(schema, std::move(batch));
        }
        part.flush();
        drains = part.counters().buffer_drains;
        timed = part.counters().timed_buffer_drains;
        commits = part.counters().batches_committed;
      }
      const double t_part = now_s() - t0 - t_gen;
      r_part.push_back(rows / t_part);
      std::fprintf(stderr,
                   "duckpart_bench: P1 repetition %d: single file %.0f, direct %.0f, write buffer "
                   "%.0f rows/s (%.3fx the single file); write buffer %d MB: %lld drains (%lld "
                   "timed), %.0f rows per partition commit; batch generation %.1f s (not counted; "
                   "%.1f s in the buffered pass)\n",
                   rep + 1, r_single.back(), r_direct.back(), r_part.back(),
                   r_part.back() / r_single.back(), buffer_mb, static_cast<long long>(drains),
                   static_cast<long long>(timed),
                   rows / static_cast<double>(std::max<int64_t>(1, commits)), t_gen, t_gen_here);
      // Verified: the store holds every row (a fresh repository reads the files).
      PartitionedDataRepository check(cfg);
      const int64_t n = check.count_all(schema);
      if (n != a.rows) {
        throw Error(ErrorCode::kCorruption,
                    fmt::format("the P1 store holds {} rows, {} written", n, a.rows));
      }
    }
    // The ratio of each repetition (same-run pairs), as its own figure: the machine's speed
    // drifts by more than the difference between the systems.
    std::vector<double> ratio;
    for (std::size_t i = 0; i < r_part.size(); ++i) ratio.push_back(r_part[i] / r_single[i]);
    record("P1", "bulk ingest, columnar create_batch", "single file (DuckDB appender)", "rows/s",
           stats_of(r_single));
    record("P1", "bulk ingest, columnar create_batch",
           fmt::format("duckpart (write_buffer_mb = {})", buffer_mb), "rows/s", stats_of(r_part));
    record("P1", "bulk ingest, columnar create_batch", "duckpart, direct (write_buffer_mb = 0)",
           "rows/s", stats_of(r_direct));
    record("P1", "bulk ingest, write buffer / single file in the same repetition",
           fmt::format("duckpart (write_buffer_mb = {})", buffer_mb), "ratio", stats_of(ratio));
    record("P9", "bytes on disk", "duckpart (written by P1, direct)", "MB",
           {b_direct, b_direct, b_direct});
    record("P1", "bulk ingest, peak RSS of the child process", "single file (DuckDB appender)",
           "MB", {rss_single, rss_single, rss_single});
    record("P1", "bulk ingest, peak RSS of the child process",
           "duckpart, direct (write_buffer_mb = 0)", "MB", {rss_direct, rss_direct, rss_direct});

    // P1b: the record API, 1M DataRecords (or fewer), one call into a fresh store with the direct
    // write path (the call returns when the rows are in their partitions).
    {
      sync();  // P1's files written back first: this figure is about this call
      PartitionConfig c2 = cfg;
      c2.base_partition_path = a.dir + "/partitions_records";
      c2.write_buffer_mb = 0;
      PartitionedDataRepository part(c2);
      const int64_t n = std::min<int64_t>(a.rows, 1'000'000);
      std::vector<DataRecord> recs = to_records(make_batch(schema, a, 999, n));
      const double t0 = now_s();
      part.create_batch(schema, recs);
      const double t = now_s() - t0;
      record("P1b", "record API create_batch (1M DataRecords)",
             "duckpart, direct (write_buffer_mb = 0), one call", "records/s",
             {static_cast<double>(n) / t, static_cast<double>(n) / t, static_cast<double>(n) / t});
    }
    // P1b through the write buffer: the first batches of P1 as DataRecords, one call each, into a
    // fresh store, then flush(): the clock runs from the first call to the end of the flush (every
    // row committed to its partition). The records are made before the clock starts, so drains
    // that run in the background between calls (a partition past four row groups is handed over
    // early) are inside it. At most 20 calls, and fewer than fill half the buffer (~160 bytes per
    // row, capacities included).
    const int64_t k_p1b = std::min<int64_t>(
        {nbatches, 20, int64_t{buffer_mb} * 1024 * 1024 / 2 / 160 / std::max<int64_t>(1, a.batch)});
    if (k_p1b == 0) {
      std::fprintf(stderr,
                   "duckpart_bench: P1b through the write buffer skipped: a %d MB buffer holds "
                   "less than one batch of %lld rows\n",
                   buffer_mb, static_cast<long long>(a.batch));
    } else {
      PartitionConfig c3 = cfg;
      c3.base_partition_path = a.dir + "/partitions_records_buffered";
      // No timed drain either: the figure is the buffer's throughput, not a latency bound.
      c3.write_buffer_max_delay_ms = 0;
      const int64_t k = k_p1b;
      int64_t total = 0;
      int64_t drains = 0;
      std::vector<std::vector<DataRecord>> all_recs;
      for (int64_t b = 0; b < k; ++b) {
        const int64_t n = std::min(a.batch, a.rows - b * a.batch);
        all_recs.push_back(to_records(make_batch(schema, a, b, n)));
        total += n;
      }
      sync();  // P1's files written back first: this figure is about these writes
      const double t0 = now_s();
      {
        PartitionedDataRepository part(c3);
        for (auto& recs : all_recs) part.create_batch(schema, recs);
        part.flush();
        drains = part.counters().buffer_drains;
      }
      const double t = now_s() - t0;
      all_recs.clear();
      std::fprintf(stderr, "duckpart_bench: P1b through the write buffer: %lld drains\n",
                   static_cast<long long>(drains));
      {
        PartitionedDataRepository check(c3);
        if (check.count_all(schema) != total) {
          throw Error(ErrorCode::kCorruption, "the buffered record store lost rows");
        }
      }
      const double r = static_cast<double>(total) / t;
      record("P1b", fmt::format("record API create_batch ({} calls of {} DataRecords)", k, a.batch),
             fmt::format("duckpart (write_buffer_mb = {}, incl. flush)", buffer_mb), "records/s",
             {r, r, r});
      fs::remove_all(c3.base_partition_path);
    }

    // A copy of the single file sorted by time: the best case for plain DuckDB range queries.
    if (a.on("p2")) {
      duck::Database db = duck::Database::open(sorted_path);
      duck::Connection c = db.connect();
      c.exec("ATTACH '" + single_path + "' AS src (READ_ONLY)");
      c.exec("CREATE TABLE readings AS SELECT * FROM src.readings ORDER BY ts");
    }

    // P2: 3-month range aggregate (count, sum, avg) through query_sql on both systems; P4: full
    // table aggregate, group-by-month and a filtered count; P5: get_by_id. Warm repetitions. One
    // system is open at a time, with DuckDB's default memory limit, as a user's process would have
    // it (at 300M rows the caches of three instances open together exceeded the machine's memory);
    // the figures are recorded afterwards in the order of the table.
    //
    // P2 and P4 run in rounds, one per repetition: each round opens the single file, the sorted
    // copy and the store in turn (the order rotating) and times one warm run of each statement
    // (after an untimed run that attaches the files and fills DuckDB's cache); every answer must
    // equal the first round's. Measuring one system's repetitions and
    // then the other's let the machine's drift between the two blocks decide the ratio: the same
    // build gave P4's filtered count 1.31x in one run and 1.01x in the next (session 38). Each
    // round's ratios are recorded as well. P5 runs after the rounds, one system at a time (the
    // store's id maps are built by its first lookups).
    if (a.on("p2")) {
      const std::string p2 = p2_sql(a);
      const std::string p4 = "SELECT count(*), sum(oil), avg(water) FROM readings";
      const std::string p4g =
          "SELECT date_trunc('month', ts) AS m, count(*), sum(oil) FROM readings GROUP BY m ORDER "
          "BY m";
      DataQueryRequest filtered;
      filtered.filters = {{"oil", FilterOperator::kGte, Value(500.0)}};
      // The times (ms, one per round) and answers of one system (the sorted file runs P2 only).
      struct Figures {
        std::vector<double> p2, p4, p4g, p4f;
        Stat p5;
        std::string r2, r4, r4g;
        int64_t n4f = -1;
      };
      // One untimed and one timed run of `f`; the time in ms.
      auto warm_ms = [](const std::function<void()>& f) {
        f();
        const double t0 = now_s();
        f();
        return (now_s() - t0) * 1e3;
      };
      // Every answer of every run (the untimed ones too) must equal the first round's.
      auto same_as_first = [&](const char* what, std::string& first, const std::string& got) {
        if (first.empty()) {
          first = got;
        } else if (!same_answer(first, got)) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("{}: answers differ between runs:\n{}{}", what, first, got));
        }
      };
      auto round = [&](IDataRepository& repo, bool all, Figures& f) {
        f.p2.push_back(warm_ms([&] { same_as_first("P2", f.r2, sql_row(repo, p2)); }));
        if (!all) return;
        f.p4.push_back(warm_ms([&] { same_as_first("P4", f.r4, sql_row(repo, p4)); }));
        f.p4g.push_back(warm_ms([&] { same_as_first("P4", f.r4g, sql_row(repo, p4g)); }));
        f.p4f.push_back(warm_ms([&] {
          const int64_t n = repo.count_all(schema, filtered);
          if (f.n4f >= 0 && n != f.n4f) {
            throw Error(
                ErrorCode::kCorruption,
                fmt::format("P4: filtered counts differ between runs: {} and {}", f.n4f, n));
          }
          f.n4f = n;
        }));
      };
      // warm: a first pass over the sample (duckpart: builds the id maps); otherwise one untimed
      // lookup (the first one opens the table).
      auto p5_of = [&](IDataRepository& repo, int p5_reps, bool warm) {
        if (warm) {
          for (const auto& id : sample_ids) repo.get_by_id(schema, Value(id));
        } else {
          repo.get_by_id(schema, Value(sample_ids.back()));
        }
        std::size_t k = 0;
        return time_reps(
            p5_reps,
            [&] {
              if (!repo.get_by_id(schema, Value(sample_ids[k++ % sample_ids.size()]))) {
                throw Error(ErrorCode::kCorruption, "P5: a sample id was not found");
              }
            },
            1e3);
      };
      Figures fs_single, fs_sorted, fs_part;
      // The order of the systems rotates from round to round, so that none always follows the
      // same other one (what the page cache holds when it starts).
      for (int r = 0; r < a.reps; ++r) {
        for (int k = 0; k < 3; ++k) {
          switch ((r + k) % 3) {
            case 0: {
              DuckDBDataRepository single(single_path, {.read_only = true});
              round(single, true, fs_single);
              break;
            }
            case 1: {
              DuckDBDataRepository sorted(sorted_path, {.read_only = true});
              round(sorted, false, fs_sorted);
              break;
            }
            default: {
              PartitionedDataRepository part(cfg, {.read_only = true});
              round(part, true, fs_part);
            }
          }
        }
      }
      {
        DuckDBDataRepository single(single_path, {.read_only = true});
        fs_single.p5 = p5_of(single, std::max(a.reps, 20), false);
      }
      {
        PartitionedDataRepository part(cfg, {.read_only = true});
        fs_part.p5 = p5_of(part, std::max(a.reps, 200), true);
      }
      // duckpart's time over the other system's, round by round.
      auto ratios = [](const std::vector<double>& part, const std::vector<double>& base) {
        std::vector<double> v;
        for (std::size_t i = 0; i < part.size(); ++i) v.push_back(part[i] / base[i]);
        return stats_of(v);
      };
      if (!same_answer(fs_single.r2, fs_sorted.r2) || !same_answer(fs_single.r2, fs_part.r2)) {
        std::fprintf(stderr, "duckpart_bench: P2 answers differ:\n%s%s%s", fs_single.r2.c_str(),
                     fs_sorted.r2.c_str(), fs_part.r2.c_str());
        return 1;
      }
      if (!same_answer(fs_single.r4, fs_part.r4) || !same_answer(fs_single.r4g, fs_part.r4g)) {
        std::fprintf(stderr, "duckpart_bench: P4 answers differ:\n%s%s%s%s", fs_single.r4.c_str(),
                     fs_part.r4.c_str(), fs_single.r4g.c_str(), fs_part.r4g.c_str());
        return 1;
      }
      if (fs_single.n4f != fs_part.n4f) {
        std::fprintf(stderr, "duckpart_bench: P4 counts differ\n");
        return 1;
      }
      const std::string s2 = "3-month range aggregate (count, sum, avg)";
      record("P2", s2, "single file, unsorted", "ms", stats_of(fs_single.p2));
      record("P2", s2, "single file, sorted by time", "ms", stats_of(fs_sorted.p2));
      record("P2", s2, "duckpart", "ms", stats_of(fs_part.p2));
      record("P2", s2 + ", duckpart / sorted file in the same round", "duckpart", "ratio",
             ratios(fs_part.p2, fs_sorted.p2));
      for (const auto& [scen, part_ms, single_ms] :
           {std::tuple{std::string("full-table aggregate (count, sum, avg)"), &fs_part.p4,
                       &fs_single.p4},
            std::tuple{std::string("group by month (count, sum)"), &fs_part.p4g, &fs_single.p4g},
            std::tuple{std::string("full-table filtered count (count_all)"), &fs_part.p4f,
                       &fs_single.p4f}}) {
        record("P4", scen, "single file, unsorted", "ms", stats_of(*single_ms));
        record("P4", scen, "duckpart", "ms", stats_of(*part_ms));
        record("P4", scen + ", duckpart / single file in the same round", "duckpart", "ratio",
               ratios(*part_ms, *single_ms));
      }
      record("P5", "get_by_id", "single file, unsorted", "ms", fs_single.p5);
      record("P5", "get_by_id", "duckpart", "ms", fs_part.p5);
    }

    // P7: migration vs DuckDB's CREATE TABLE AS SELECT copy, each in a fresh process (its own
    // peak RSS), from the unsorted and from the time-sorted single file. The CLI bounds DuckDB's
    // memory to 2 GB for bulk commands; CTAS is measured with DuckDB's default and with that bound.
    if (a.on("p7")) {
      if (!fs::exists(sorted_path)) {
        duck::Database db = duck::Database::open(sorted_path);
        duck::Connection c = db.connect();
        c.exec("ATTACH '" + single_path + "' AS src (READ_ONLY)");
        c.exec("CREATE TABLE readings AS SELECT * FROM src.readings ORDER BY ts");
      }
      auto parse3 = [&](const std::string& out, const std::string& what) {
        long long n = 0;
        double secs = 0;
        long mb = 0;
        std::sscanf(out.c_str(), "%lld %lf %ld", &n, &secs, &mb);
        if (n != a.rows) {
          throw Error(ErrorCode::kIo, fmt::format("P7 {}: {} rows, expected {}", what, n, a.rows));
        }
        return std::make_pair(static_cast<double>(n) / secs, static_cast<double>(mb));
      };
      for (const auto& [src, label] : {std::pair{single_path, std::string("unsorted")},
                                       std::pair{sorted_path, std::string("sorted")}}) {
        const std::string scen = "copy of the " + label + " single file";
        // DuckDB as a user runs it (default memory limit; the CLI's 2 GB bound), and with the
        // allocator settings manage_partitions applies to itself (tune_allocator_for_bulk_work).
        for (const int variant : {0, 1, 2}) {
          const int mem = variant == 0 ? 0 : 2048;
          const std::string dst = a.dir + "/ctas.duckdb";
          fs::remove(dst);
          ::sync();  // no dirty pages of an earlier step are written back during this one
          std::vector<std::string> args{"--child-ctas", src, dst, std::to_string(mem)};
          if (variant == 2) args.emplace_back("tuned");
          const auto [rate, rss] = parse3(run_self(args).first, "ctas");
          fs::remove(dst);
          const std::string sys =
              variant == 0   ? "DuckDB CTAS (default memory limit)"
              : variant == 1 ? "DuckDB CTAS, memory_limit 2 GB"
                             : "DuckDB CTAS, memory_limit 2 GB, duckpart's allocator settings";
          record("P7", scen, sys, "rows/s", {rate, rate, rate});
          record("P7", scen, sys, "peak RSS MB", {rss, rss, rss});
        }
        for (const int verify : {0, 1}) {
          const std::string dir =
              a.dir + "/partitions_migrated_" + label + (verify ? "_verified" : "");
          fs::remove_all(dir);
          ::sync();
          const auto [rate, rss] = parse3(
              run_self({"--child-migrate", src, dir, a.strategy, std::to_string(verify), "2048"})
                  .first,
              "migrate");
          const std::string sys = verify ? "duckpart migrate (CLI defaults, verified)"
                                         : "duckpart migrate (CLI defaults, --no-verify)";
          record("P7", scen, sys, "rows/s", {rate, rate, rate});
          record("P7", scen, sys, "peak RSS MB", {rss, rss, rss});
          if (label == "sorted" || verify == 1) fs::remove_all(dir);
        }
      }
    }

    // P9: bytes on disk.
    const double b_single = static_cast<double>(dir_bytes(single_path)) / 1e6;
    const double b_part = static_cast<double>(dir_bytes(cfg.base_partition_path)) / 1e6;
    record("P9", "bytes on disk", "single file, unsorted", "MB", {b_single, b_single, b_single});
    record("P9", "bytes on disk", "duckpart (written by P1)", "MB", {b_part, b_part, b_part});
    record_block_use(fs::path(cfg.base_partition_path) / schema.name(), schema.name(),
                     "duckpart (written by P1)");
    if (a.on("p7")) {
      const double b_mig =
          static_cast<double>(dir_bytes(a.dir + "/partitions_migrated_unsorted")) / 1e6;
      record("P9", "bytes on disk", "duckpart (written by migrate)", "MB", {b_mig, b_mig, b_mig});
      record_block_use(fs::path(a.dir) / "partitions_migrated_unsorted" / schema.name(),
                       schema.name(), "duckpart (written by migrate)");
    }
    // P8: every row through stream_query_results in a fresh process; its own peak RSS. With
    // DuckDB's default memory limit it keeps what it read cached; the process holds about the limit
    // plus ~50 MB (measured on 90M rows: 256 MB -> 305 MB, 192 -> 242, 128 -> 180, same speed), so
    // 192 MB is the limit that keeps a stream under the 300 MB target.
    if (a.on("p8")) {
      for (const int limit : {0, 192}) {
        std::vector<double> rss, rate;
        for (int i = 0; i < std::min(a.reps, 3); ++i) {
          const auto [out, ms] = run_self(
              {"--child-stream", cfg.base_partition_path, a.strategy, std::to_string(limit)});
          long long n = 0;
          long mb = 0;
          double secs = 0;
          std::sscanf(out.c_str(), "%lld %ld %lf", &n, &mb, &secs);
          if (n != a.rows) {
            std::fprintf(stderr, "duckpart_bench: P8 streamed %lld rows, expected %lld\n", n,
                         static_cast<long long>(a.rows));
            return 1;
          }
          rss.push_back(static_cast<double>(mb));
          rate.push_back(static_cast<double>(n) / secs);
        }
        const std::string sys = limit == 0 ? "duckpart (DuckDB's default memory limit)"
                                           : fmt::format("duckpart, memory_limit_mb = {}", limit);
        record("P8", "stream every row (stream_query_results), fresh process", sys, "peak RSS MB",
               stats_of(rss));
        record("P8", "stream every row (stream_query_results), fresh process", sys, "rows/s",
               stats_of(rate));
      }
    }

    // P3: cold query in a fresh process over 1,000+ daily partitions, touching 3 days.
    if (a.on("p3")) {
      const int days = 1100;
      const int64_t n = std::min<int64_t>(a.rows, 1'100'000);
      PartitionConfig daily = cfg;
      daily.strategy = PartitionStrategy::kDaily;
      daily.base_partition_path = a.dir + "/partitions_daily";
      daily.max_partitions_in_memory = 64;
      const std::string daily_single = a.dir + "/daily_single.duckdb";
      // The same store with 16 KB DuckDB blocks (block_size_kb: what `compact` chooses for
      // partitions this small): smaller files, less read and checksummed per attach.
      PartitionConfig daily16 = daily;
      daily16.base_partition_path = a.dir + "/partitions_daily_16k";
      daily16.block_size_kb = 16;
      {
        Args d = a;
        d.months = days / 30;  // the timestamps of make_batch span this many months
        ColumnBatch batch = make_batch(schema, d, 4242, n);
        auto& ts = std::get<std::vector<int64_t>>(batch.columns[1].data);
        const int64_t start = to_timestamp(date_from_civil(2015, 1, 1)).micros;
        for (std::size_t i = 0; i < ts.size(); ++i) {
          ts[i] = start + static_cast<int64_t>(i % static_cast<std::size_t>(days)) * kMicrosPerDay +
                  static_cast<int64_t>(i % 86400) * 1'000'000;
        }
        ColumnBatch copy = batch;
        ColumnBatch copy16 = batch;
        PartitionedDataRepository part(daily);
        part.create_batch_columnar(schema, std::move(batch));
        PartitionedDataRepository part16(daily16);
        part16.create_batch_columnar(schema, std::move(copy16));
        DuckDBDataRepository single(daily_single);
        single.create_batch_columnar(schema, std::move(copy));
      }
      for (const auto& [sys, bytes] :
           {std::pair<std::string, uint64_t>{"duckpart", dir_bytes(daily.base_partition_path)},
            {"duckpart, block_size_kb = 16", dir_bytes(daily16.base_partition_path)},
            {"single file", dir_bytes(daily_single)}}) {
        const double mb = static_cast<double>(bytes) / 1e6;
        record("P9", fmt::format("bytes on disk, the P3 data ({} rows over {} days)", n, days), sys,
               "MB", {mb, mb, mb});
      }
      record_block_use(fs::path(daily.base_partition_path) / schema.name(), schema.name(),
                       "duckpart, the P3 data (daily)");
      const std::string from = "2016-03-01", to = "2016-03-04";
      // Two queries: the 3-day count, which the partitions' metadata answers (every row of the 3
      // days matches), and the same count of the rows with oil >= 100, which reads the 3 files.
      struct Variant {
        std::vector<std::string> extra;
        std::string dir;
        std::vector<double> t_part, t_single;
        std::string rows_part, rows_single, files, extensions, from_meta, started;
      };
      Variant count{{}, daily.base_partition_path}, reads{{"oil"}, daily.base_partition_path},
          reads16{{"oil"}, daily16.base_partition_path};
      std::vector<double> t_floor, t_floor_deferred;
      for (int i = 0; i < a.reps; ++i) {
        t_floor.push_back(run_self({"--child-floor"}, true).second);
        t_floor_deferred.push_back(run_self({"--child-floor-deferred"}, true).second);
        for (Variant* v : {&count, &reads, &reads16}) {
          std::vector<std::string> args = {"--child-cold", "part", v->dir, "daily", from, to};
          args.insert(args.end(), v->extra.begin(), v->extra.end());
          auto [out, ms] = run_self(args, true);
          v->t_part.push_back(ms);
          std::istringstream fields(out);
          fields >> v->rows_part >> v->files >> v->extensions >> v->from_meta >> v->started;
          if (v == &reads16) continue;  // the same query as `reads` on the single file
          args = {"--child-cold", "single", daily_single, "-", from, to};
          args.insert(args.end(), v->extra.begin(), v->extra.end());
          auto [out2, ms2] = run_self(args, true);
          v->t_single.push_back(ms2);
          v->rows_single = out2.substr(0, out2.find(' '));
        }
      }
      reads16.rows_single = reads.rows_single;
      for (const Variant* v : {&count, &reads, &reads16}) {
        if (v->rows_part != v->rows_single) {
          std::fprintf(stderr, "duckpart_bench: P3 counts differ: %s vs %s\n", v->rows_part.c_str(),
                       v->rows_single.c_str());
          return 1;
        }
      }
      record("P3",
             fmt::format("cold 3-day count in a fresh process, {} daily partitions ({} files "
                         "opened, {} partitions counted from their metadata, {})",
                         days, count.files, count.from_meta,
                         count.started == "0"      ? "DuckDB not started"
                         : count.extensions == "0" ? "DuckDB's extensions not loaded"
                                                   : "DuckDB's extensions loaded"),
             "duckpart", "ms", stats_of(count.t_part));
      record("P3", fmt::format("cold 3-day count in a fresh process, {} days in one file", days),
             "single file", "ms", stats_of(count.t_single));
      record("P3",
             fmt::format("cold 3-day count of rows with oil >= 100 in a fresh process, {} daily "
                         "partitions ({} files opened, DuckDB's extensions {})",
                         days, reads.files, reads.extensions == "0" ? "not loaded" : "loaded"),
             "duckpart", "ms", stats_of(reads.t_part));
      record("P3",
             fmt::format("cold 3-day count of rows with oil >= 100 in a fresh process, {} days "
                         "in one file",
                         days),
             "single file", "ms", stats_of(reads.t_single));
      record("P3",
             fmt::format("cold 3-day count of rows with oil >= 100 in a fresh process, {} daily "
                         "partitions ({} files opened, DuckDB's extensions {})",
                         days, reads16.files, reads16.extensions == "0" ? "not loaded" : "loaded"),
             "duckpart, block_size_kb = 16", "ms", stats_of(reads16.t_part));
      record("P3", "fresh process: in-memory DuckDB, SELECT 42, exit (the floor of both)",
             "plain DuckDB, no file", "ms", stats_of(t_floor));
      record("P3",
             "fresh process: in-memory DuckDB without its linked extensions, SELECT 42, exit "
             "(duckpart's floor)",
             "plain DuckDB, no file", "ms", stats_of(t_floor_deferred));
    }

    // P9 after `manage_partitions compact` (every partition rewritten sorted by time, verified):
    // what an operator gets for the P1 store; its time is reported too. Run after every scenario
    // that reads the P1 store and before P6, which then drops compacted files.
    {
      PartitionedDataRepository part(cfg);
      PartitionUtilities util(part);
      const double t0 = now_s();
      const CompactReport rep = util.compact(schema, "");
      const double t = now_s() - t0;
      int64_t n = 0;
      for (const auto& p : rep.partitions) n += p.rows;
      if (n != a.rows) {
        throw Error(ErrorCode::kCorruption,
                    fmt::format("compaction rewrote {} rows, {} written", n, a.rows));
      }
      const double b_cmp = static_cast<double>(dir_bytes(cfg.base_partition_path)) / 1e6;
      record("P9", "bytes on disk", "duckpart (written by P1, then compact)", "MB",
             {b_cmp, b_cmp, b_cmp});
      record("P9", "compact every partition (sorted rewrite, verified)", "duckpart", "s",
             {t, t, t});
    }

    // P6: retention — drop the 12 oldest months; the bytes must come back.
    if (a.on("p6")) {
      // The disk's floor for freeing those bytes, in this run: copies of the files the clean-up
      // will remove (written, synced), unlinked without DuckDB or duckpart, on 4 threads as
      // cleanup drops partitions, and one after the other. (On ext4 mounted with `discard` and no
      // journal, unlink waits for the discard of every freed block: its time grows with the
      // bytes.)
      double floor_ms = 0, serial_ms = 0;
      int floor_files = 0;
      {
        const fs::path table_dir = fs::path(cfg.base_partition_path) / schema.name();
        const fs::path scratch = fs::path(a.dir) / "p6_floor";
        auto copy_doomed = [&] {
          fs::remove_all(scratch);
          fs::create_directories(scratch);
          std::vector<fs::path> copies;
          for (const auto& f : fs::directory_iterator(table_dir)) {
            const std::string name = f.path().filename().string();
            if (!name.starts_with("partition_2015")) continue;  // what cleanup(before 2016) drops
            const fs::path to = scratch / name;
            fs::copy_file(f.path(), to);
            const int fd = ::open(to.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
              ::fsync(fd);
              ::close(fd);
            }
            copies.push_back(to);
          }
          ::sync();
          return copies;
        };
        std::vector<fs::path> copies = copy_doomed();
        floor_files = static_cast<int>(copies.size());
        double t0 = now_s();
        {
          std::atomic<std::size_t> next{0};
          auto work = [&] {
            for (std::size_t i = next++; i < copies.size(); i = next++) ::unlink(copies[i].c_str());
          };
          std::vector<std::thread> threads;
          for (int t = 1; t < 4; ++t) threads.emplace_back(work);
          work();
          for (auto& t : threads) t.join();
        }
        floor_ms = (now_s() - t0) * 1e3;
        copies = copy_doomed();
        t0 = now_s();
        for (const auto& c : copies) ::unlink(c.c_str());
        serial_ms = (now_s() - t0) * 1e3;
        fs::remove_all(scratch);
      }
      const uint64_t before = dir_bytes(cfg.base_partition_path);
      double ms = 0;
      int64_t removed = 0;
      {
        PartitionedDataRepository part(cfg);
        PartitionUtilities util(part);
        const double t0 = now_s();
        const CleanupResult r = util.cleanup(schema, 0, date_from_civil(2016, 1, 1), false);
        ms = (now_s() - t0) * 1e3;
        removed = static_cast<int64_t>(r.removed.size());
      }
      const uint64_t after = dir_bytes(cfg.base_partition_path);
      record("P6",
             fmt::format("retention: drop the 12 oldest months ({} partitions removed)", removed),
             "duckpart", "ms", {ms, ms, ms});
      const double freed = static_cast<double>(before - after) / 1e6;
      record("P6", "retention: bytes freed", "duckpart", "MB", {freed, freed, freed});
      record("P6",
             fmt::format("retention floor: unlink copies of the same {} files on 4 threads, no "
                         "DuckDB",
                         floor_files),
             "the disk (unlink)", "ms", {floor_ms, floor_ms, floor_ms});
      record("P6",
             fmt::format("retention floor: unlink copies of the same {} files one by one",
                         floor_files),
             "the disk (unlink)", "ms", {serial_ms, serial_ms, serial_ms});
      const uint64_t sb = dir_bytes(single_path);
      double sms = 0;
      {
        duck::Database db = duck::Database::open(single_path);
        duck::Connection c = db.connect();
        const double t0 = now_s();
        c.exec("DELETE FROM readings WHERE ts < TIMESTAMP '2016-01-01'");
        c.exec("CHECKPOINT");
        sms = (now_s() - t0) * 1e3;
      }
      const double sfreed =
          (static_cast<double>(sb) - static_cast<double>(dir_bytes(single_path))) / 1e6;
      record("P6", "retention: DELETE + CHECKPOINT of the same rows", "single file", "ms",
             {sms, sms, sms});
      record("P6", "retention: bytes freed", "single file", "MB", {sfreed, sfreed, sfreed});
    }

    if (!a.markdown.empty()) {
      std::ostringstream md;
      md << "Generated by `duckpart_bench --rows " << a.rows << " --months " << a.months
         << " --strategy " << a.strategy << " --reps " << a.reps << " --ingest-reps "
         << a.ingest_reps << "` (Release build) on a " << sysconf(_SC_NPROCESSORS_ONLN)
         << "-core machine. Both systems run in the same run, one after the other (one open at a "
            "time); compare ratios.\n\n";
      md << "| figure | scenario | system | unit | min | median | p95 "
            "|\n|---|---|---|---|---|---|---|\n";
      for (const auto& r : g_rows) {
        md << "| " << r.id << " | " << r.scenario << " | " << r.system << " | " << r.unit << " | "
           << fmt::format("{:.3f}", r.value.min) << " | " << fmt::format("{:.3f}", r.value.median)
           << " | " << fmt::format("{:.3f}", r.value.p95) << " |\n";
      }
      md << "\nPeak RSS of the benchmark process: " << peak_rss_mb() << " MB.\n";
      write_markdown(a.markdown, md.str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "duckpart_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
