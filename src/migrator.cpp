#include "duckpart/migrator.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "partition_files.hpp"
#include "text_util.hpp"

namespace fs = std::filesystem;

namespace duckpart {

namespace {

constexpr uint64_t kSmallPartitionBytes = 100ULL << 20;

// "key: recorded X, now Y; ..." for each option of `now` that `recorded` holds otherwise.
[[gnu::noinline]] std::string option_differences(const nlohmann::json& recorded,
                                                 const nlohmann::json& now) {
  std::string out;
  for (auto it = now.begin(); it != now.end(); ++it) {
    const nlohmann::json was = recorded.value(it.key(), nlohmann::json());
    if (was != it.value()) {
      out += fmt::format("{}{}: recorded {}, now {}", out.empty() ? "" : "; ", it.key(), was.dump(),
                         it.value().dump());
    }
  }
  return out;
}
// Batch ids of a migration's commits ("migrate:<table>:<options>:<window>:<rows>") and of its
// catch-up copies: partitions holding only these were written by migrations alone.

std::vector<DataRecord> rows_of(duck::Connection& c, const std::string& sql, std::string_view ctx) {
  duck::Result r = c.query(sql, ctx);
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  return rows;
}

// What copy_batch() needs of a migration.
struct BatchCopy {
  PartitionedDataRepository::BulkLoad& load;
  duck::Connection& src;  // the migrator's own connection to the source
  const MigrationOptions& options;
  PartitionStrategy strategy;
  std::string alias;      // the source in the repository's DuckDB instance
  std::string range_sql;  // --from/--to filter
  std::string code_expr;  // partition code of a source row
  std::string pcol;       // the partition column, quoted
  std::string cols;       // the columns, quoted, in order
};
// Adaptive probing: batches to skip before the next probe, and the next skip.
struct DirectState {
  int wait = 0;
  int backoff = 1;
  bool clustered = false;  // the last probe found runs: copy several batches per probe
  int64_t rows = 0;        // copied by INSERT ... SELECT
};
constexpr std::size_t kClusteredBatches = 4;

// Copies the source rows [a, a + batch_size) of one window. A source that is clustered by time
// (sorted, or appended period after period) gives each period a long run of consecutive rows:
// such a run is copied by one INSERT ... SELECT into its partition, which DuckDB runs on all
// cores, instead of being routed row by row through the appender. A short probe (partition column
// only) finds the runs; the rows left (scattered periods, stragglers) are routed. A probe that
// finds no run makes the next probes rarer (an unsorted source pays for about one probe in 16
// batches).
int64_t copy_batch(const BatchCopy& c, int64_t a, int64_t b, const std::string& dated_window_sql,
                   const std::string& window_sql, DirectState& direct) {
  const std::string from =
      fmt::format("{}.main.{}", duck::quote_ident(c.alias), duck::quote_ident(c.options.table));
  const std::string rows_sql = fmt::format("rowid >= {} AND rowid < {}{}", a, b, c.range_sql);
  std::vector<std::pair<int64_t, std::pair<int64_t, int64_t>>> runs;  // code, [lo, hi)
  bool probed = false;
  int64_t probed_rows = 0, run_rows = 0;
  if (c.options.direct_copy_rows > 0 && !dated_window_sql.empty() && direct.wait-- <= 0) {
    probed = true;
    const int64_t min_run = c.options.direct_copy_rows;
    for (const auto& r :
         rows_of(c.src,
                 fmt::format("SELECT {}, count(*), min(rowid), max(rowid) FROM main.{} WHERE {}{} "
                             "GROUP BY 1",
                             c.code_expr, duck::quote_ident(c.options.table), rows_sql,
                             dated_window_sql),
                 c.options.source_path)) {
      const int64_t n = r.values[1].get<int64_t>();
      const int64_t lo = r.values[2].get<int64_t>(), hi = r.values[3].get<int64_t>() + 1;
      probed_rows += n;
      if (n >= min_run && 2 * n >= hi - lo) {
        runs.push_back({r.values[0].get<int64_t>(), {lo, hi}});
        run_rows += n;
      }
    }
    direct.clustered = !runs.empty();
    // Runs are copied by INSERT ... SELECT on all of DuckDB's threads; routing wants them at one.
    c.load.set_single_duckdb_thread(!direct.clustered);
    if (runs.empty()) {
      direct.wait = direct.backoff;
      direct.backoff = std::min(direct.backoff * 2, 16);
    } else {
      direct.wait = 0;
      direct.backoff = 1;
    }
  }
  int64_t rows = 0;
  const int64_t rows_before = direct.rows;
  std::string rest;
  for (const auto& [code, range] : runs) {
    // The period as a range of the column: the same rows as "code = c", cheaper per row.
    const PartitionKey key = partition_key_from_code(c.strategy, code);
    direct.rows += c.load.load_into(
        key, fmt::format("SELECT {} FROM {} WHERE rowid >= {} AND rowid < {}{} AND {} >= DATE {} "
                         "AND {} < DATE {}",
                         c.cols, from, range.first, range.second, c.range_sql, c.pcol,
                         duck::quote_literal(format_date(key.start())), c.pcol,
                         duck::quote_literal(format_date(key.end()))));
    rest += fmt::format("{}{}", rest.empty() ? "" : ", ", code);
  }
  rows = direct.rows - rows_before;
  if (probed && run_rows == probed_rows) return rows;  // nothing left to route
  if (!rest.empty()) rest = fmt::format(" AND {} NOT IN ({})", c.code_expr, rest);
  rows += c.load.load(
      fmt::format("SELECT {} FROM {} WHERE {}{}{}", c.cols, from, rows_sql, window_sql, rest));
  return rows;
}

std::optional<Timestamp> ts_of(const Value& v) {
  if (v.is<Date>()) return to_timestamp(v.get<Date>());
  if (v.is<Timestamp>()) return v.get<Timestamp>();
  return std::nullopt;
}

struct SourceTable {
  duck::Database db;
  duck::Connection conn;
  Schema schema;
  uint64_t bytes = 0;
};

SourceTable open_source(const std::string& path, const std::string& table,
                        const std::string& column) {
  try {
    SourceTable s{duck::Database{}, duck::Connection{}, introspect_schema(path, table, column), 0};
    s.db = duck::Database::open(path, /*read_only=*/true);
    s.conn = s.db.connect();
    std::error_code ec;
    s.bytes = fs::file_size(path, ec);
    return s;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kLocked) {
      throw Error(
          ErrorCode::kLocked,
          fmt::format("source '{}' is held by another process (DuckDB allows one writing "
                      "process per file): stop it, or run the migration through the library "
                      "inside that process (PartitionMigrator). DuckDB said: {}",
                      path, e.what()));
    }
    throw;
  }
}

// Rows per period code of one strategy.
std::map<int64_t, int64_t> counts_by_code(duck::Connection& c, const std::string& from,
                                          const std::string& column, PartitionStrategy s) {
  std::map<int64_t, int64_t> out;
  for (const auto& r :
       rows_of(c,
               fmt::format("SELECT {} AS code, count(*) FROM {} WHERE {} IS NOT NULL GROUP BY 1",
                           partition_code_sql(s, column), from, column),
               "analyze")) {
    out[r.values[0].get<int64_t>()] = r.values[1].get<int64_t>();
  }
  return out;
}

}  // namespace

AnalysisReport analyze_source(const std::string& source_path, const std::string& table,
                              const std::string& partition_column, PartitionStrategy strategy,
                              int partition_size_threshold_mb) {
  SourceTable src = open_source(source_path, table, partition_column);
  AnalysisReport rep;
  rep.source = source_path;
  rep.table = table;
  rep.partition_column = src.schema.partition_column();
  rep.strategy = strategy;
  rep.partition_size_threshold_mb = partition_size_threshold_mb;
  rep.source_bytes = src.bytes;
  const std::string col = duck::quote_ident(rep.partition_column);
  const std::string from = "main." + duck::quote_ident(table);
  auto totals = rows_of(
      src.conn, fmt::format("SELECT count(*), count(*) FILTER ({} IS NULL) FROM {}", col, from),
      source_path);
  rep.total_rows = totals.at(0).values[0].get<int64_t>();
  rep.null_rows = totals.at(0).values[1].get<int64_t>();
  const double bytes_per_row = rep.total_rows > 0 ? static_cast<double>(rep.source_bytes) /
                                                        static_cast<double>(rep.total_rows)
                                                  : 0;
  const uint64_t threshold = static_cast<uint64_t>(partition_size_threshold_mb) << 20;
  for (const auto& r : rows_of(
           src.conn,
           fmt::format("SELECT {} AS code, count(*), min({}), max({}) FROM {} WHERE {} IS NOT NULL "
                       "GROUP BY 1 ORDER BY 1",
                       partition_code_sql(strategy, col), col, col, from, col),
           source_path)) {
    PeriodAnalysis p;
    p.key = partition_key_from_code(strategy, r.values[0].get<int64_t>());
    p.name = p.key.name();
    p.rows = r.values[1].get<int64_t>();
    p.estimated_bytes = static_cast<uint64_t>(bytes_per_row * static_cast<double>(p.rows));
    p.min_value = ts_of(r.values[2]);
    p.max_value = ts_of(r.values[3]);
    if (p.estimated_bytes > threshold) rep.oversized.push_back(p.name);
    if (p.estimated_bytes < kSmallPartitionBytes) rep.undersized.push_back(p.name);
    rep.periods.push_back(std::move(p));
  }
  if (rep.null_rows > 0) {
    PeriodAnalysis p;
    p.key = null_partition_key(strategy);
    p.name = p.key.name();
    p.rows = rep.null_rows;
    p.estimated_bytes = static_cast<uint64_t>(bytes_per_row * static_cast<double>(p.rows));
    rep.periods.push_back(std::move(p));
  }
  std::vector<int64_t> sizes;
  for (const auto& p : rep.periods) {
    if (!p.key.is_null) sizes.push_back(p.rows);
  }
  if (!sizes.empty()) {
    std::sort(sizes.begin(), sizes.end());
    const double median = static_cast<double>(sizes[sizes.size() / 2]);
    rep.skew = median > 0 ? static_cast<double>(sizes.back()) / median : 0;
  }
  // Recommendation: the finest strategy whose typical partition is at least 100 MB and whose
  // largest stays under the threshold; tiny data gets yearly files, huge data daily ones.
  struct Option {
    PartitionStrategy s;
    uint64_t median_bytes;
    uint64_t max_bytes;
    std::size_t count;
  };
  std::vector<Option> options;
  for (PartitionStrategy s : {PartitionStrategy::kDaily, PartitionStrategy::kWeekly,
                              PartitionStrategy::kMonthly, PartitionStrategy::kYearly}) {
    auto counts = counts_by_code(src.conn, from, col, s);
    std::vector<int64_t> v;
    for (auto& [k, n] : counts) v.push_back(n);
    std::sort(v.begin(), v.end());
    Option o{s, 0, 0, v.size()};
    if (!v.empty()) {
      o.median_bytes = static_cast<uint64_t>(bytes_per_row * static_cast<double>(v[v.size() / 2]));
      o.max_bytes = static_cast<uint64_t>(bytes_per_row * static_cast<double>(v.back()));
    }
    options.push_back(o);
  }
  const Option* pick = nullptr;
  for (const auto& o : options) {
    if (o.count > 0 && o.median_bytes >= kSmallPartitionBytes && o.max_bytes <= threshold) {
      pick = &o;
      break;
    }
  }
  if (pick) {
    rep.recommended = pick->s;
    rep.recommendation = fmt::format(
        "{}: the finest period whose typical partition ({}) is at least 100 MB and whose largest "
        "({}) "
        "stays under {} MB ({} partitions)",
        strategy_name(pick->s), human_bytes(pick->median_bytes), human_bytes(pick->max_bytes),
        partition_size_threshold_mb, pick->count);
  } else if (!options.empty() && options.back().max_bytes > threshold) {
    rep.recommended = PartitionStrategy::kDaily;
    rep.recommendation =
        fmt::format("daily: even yearly partitions would exceed {} MB; daily keeps files smallest",
                    partition_size_threshold_mb);
  } else {
    rep.recommended = PartitionStrategy::kYearly;
    rep.recommendation = fmt::format(
        "yearly: the table is small ({} in all); even yearly partitions stay under 100 MB, and "
        "fewer "
        "files mean less per-file overhead",
        human_bytes(rep.source_bytes));
  }
  return rep;
}

std::string AnalysisReport::to_json() const {
  nlohmann::ordered_json j;
  j["source"] = source;
  j["table"] = table;
  j["partition_column"] = partition_column;
  j["strategy"] = strategy_name(strategy);
  j["total_rows"] = total_rows;
  j["null_rows"] = null_rows;
  j["source_bytes"] = source_bytes;
  j["partition_count"] = periods.size();
  j["skew"] = skew;
  auto ps = nlohmann::ordered_json::array();
  for (const auto& p : periods) {
    ps.push_back({{"partition", p.name},
                  {"rows", p.rows},
                  {"estimated_bytes", p.estimated_bytes},
                  {"min", p.min_value ? nlohmann::ordered_json(format_timestamp(*p.min_value))
                                      : nlohmann::ordered_json()},
                  {"max", p.max_value ? nlohmann::ordered_json(format_timestamp(*p.max_value))
                                      : nlohmann::ordered_json()}});
  }
  j["periods"] = ps;
  j["oversized"] = oversized;
  j["undersized"] = undersized;
  j["recommended_strategy"] = strategy_name(recommended);
  j["recommendation"] = recommendation;
  return j.dump(2);
}

std::string AnalysisReport::to_text() const {
  std::string out = fmt::format("source {} table {}, partition column {}, strategy {}\n", source,
                                table, partition_column, strategy_name(strategy));
  out += fmt::format("{:<24} {:>12} {:>12}  {:<26} {}\n", "partition", "rows", "est. size", "min",
                     "max");
  for (const auto& p : periods) {
    out += fmt::format("{:<24} {:>12} {:>12}  {:<26} {}\n", p.name, p.rows,
                       human_bytes(p.estimated_bytes),
                       p.min_value ? format_timestamp(*p.min_value) : "-",
                       p.max_value ? format_timestamp(*p.max_value) : "-");
  }
  out +=
      fmt::format("total: {} rows in {} partitions, source {}; rows with NULL {}: {}\n", total_rows,
                  periods.size(), human_bytes(source_bytes), partition_column, null_rows);
  out += fmt::format("skew (largest / median period): {:.2f}\n", skew);
  out += fmt::format("partitions above {} MB: {}; under 100 MB: {}\n", partition_size_threshold_mb,
                     oversized.size(), undersized.size());
  out += fmt::format("recommended strategy: {}\n", recommendation);
  if (null_rows > 0) {
    out += fmt::format(
        "note: {} rows have a NULL {}; migrate refuses them unless --null-partition routes "
        "them to partition_null.duckdb\n",
        null_rows, partition_column);
  }
  return out;
}

// ---- PartitionMigrator
// ---------------------------------------------------------------------------

PartitionMigrator::PartitionMigrator(PartitionedDataRepository& repo, MigrationOptions options)
    : repo_(repo), options_(std::move(options)), alias_("dp_migration_source") {
  if (options_.batch_size < 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("batch size must be at least 1 (got {})", options_.batch_size));
  }
  if (options_.from && options_.to && !(*options_.from < *options_.to)) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("--from {} must be before --to {}", format_date(*options_.from),
                            format_date(*options_.to)));
  }
  // Opening the source read-only first gives the clearest messages (missing table, lock held).
  {
    SourceTable src = open_source(options_.source_path, options_.table, options_.partition_column);
    schema_ = src.schema;
  }
  // A table the store already holds with other columns is refused here, dry runs included.
  repo_.initialize(schema_);
  repo_.attach_database(options_.source_path, alias_, /*read_only=*/true);
}

PartitionMigrator::~PartitionMigrator() { repo_.detach_database(alias_); }

std::string PartitionMigrator::checkpoint_path() const {
  return repo_.config().base_partition_path + "/" + options_.table + "/_migration.json";
}

std::string PartitionMigrator::range_sql() const {
  std::string out;
  const std::string col = duck::quote_ident(schema_.partition_column());
  if (options_.from)
    out += fmt::format(" AND {} >= DATE {}", col, duck::quote_literal(format_date(*options_.from)));
  if (options_.to)
    out += fmt::format(" AND {} < DATE {}", col, duck::quote_literal(format_date(*options_.to)));
  return out;
}

namespace {

struct Checkpoint {
  nlohmann::json options;
  nlohmann::json windows;               // [[first code, last code] | null (the NULL period), ...]
  std::map<std::size_t, int64_t> next;  // per window: the first source rowid not yet committed
  // A commit group whose per-partition commits had started: [window, first rowid, end rowid).
  // A resumed run loads exactly these rows again under the same batch id first.
  std::optional<std::array<int64_t, 3>> intent;
  // Every batch of every window copied (the checks that follow may still keep periods): a
  // re-partitioning carries only such a record (restated for its strategy).
  bool copied = false;
  bool completed = false;
};

std::optional<Checkpoint> read_checkpoint(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  try {
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str());
    Checkpoint c;
    c.options = j.at("options");
    if (j.contains("done") && !j.contains("next")) {
      throw std::runtime_error("written by an older duckpart (per-batch format)");
    }
    const nlohmann::json next = j.value("next", nlohmann::json::object());
    for (const auto& [k, v] : next.items()) {
      c.next[std::stoul(k)] = v.get<int64_t>();
    }
    if (j.contains("intent") && !j["intent"].is_null()) {
      c.intent = j["intent"].get<std::array<int64_t, 3>>();
    }
    c.windows = j.value("windows", nlohmann::json::array());
    c.completed = j.value("completed", false);
    return c;
  } catch (const std::exception& e) {
    throw Error(
        ErrorCode::kCorruption,
        fmt::format("migration checkpoint '{}' is damaged ({}); the batch ids stored in the "
                    "partitions make it safe to delete it and run migrate again",
                    path, e.what()));
  }
}

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  nlohmann::json j;
  j["options"] = c.options;
  j["windows"] = c.windows;
  nlohmann::json next = nlohmann::json::object();
  for (const auto& [w, n] : c.next) next[std::to_string(w)] = n;
  j["next"] = next;
  j["intent"] = c.intent ? nlohmann::json(*c.intent) : nlohmann::json(nullptr);
  j["copied"] = c.copied;
  j["completed"] = c.completed;
  const std::string tmp = path + ".tmp";
  const std::string text = j.dump();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error(ErrorCode::kIo, fmt::format("cannot write migration checkpoint '{}'", tmp));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(ErrorCode::kIo,
                fmt::format("cannot write migration checkpoint '{}' (disk full?)", path));
  }
}

}  // namespace

MigrationPlan PartitionMigrator::plan() {
  MigrationPlan plan;
  SourceTable src = open_source(options_.source_path, options_.table, options_.partition_column);
  const std::string col = duck::quote_ident(schema_.partition_column());
  const std::string from = "main." + duck::quote_ident(options_.table);
  const double bytes_per_row = [&] {
    const auto n = src.conn.query_int(fmt::format("SELECT count(*) FROM {}", from));
    return n > 0 ? static_cast<double>(src.bytes) / static_cast<double>(n) : 0.0;
  }();
  std::map<std::string, bool> existing;
  for (const auto& p : repo_.table_statistics(schema_).partitions) existing[p.name] = p.rows > 0;
  const PartitionStrategy strategy = repo_.strategy_of(schema_);
  for (const auto& r : rows_of(
           src.conn,
           fmt::format(
               "SELECT {} AS code, count(*) FROM {} WHERE TRUE{} GROUP BY 1 ORDER BY 1 NULLS LAST",
               partition_code_sql(strategy, col), from, range_sql()),
           options_.source_path)) {
    PlannedPartition p;
    const PartitionKey key = r.values[0].is_null()
                                 ? null_partition_key(strategy)
                                 : partition_key_from_code(strategy, r.values[0].get<int64_t>());
    p.name = key.name();
    p.file = repo_.config().base_partition_path + "/" + options_.table + "/" + key.file_name();
    p.exists = existing.count(p.name) > 0;
    p.rows = r.values[1].get<int64_t>();
    p.estimated_bytes = static_cast<uint64_t>(bytes_per_row * static_cast<double>(p.rows));
    plan.rows += p.rows;
    plan.partitions.push_back(std::move(p));
  }
  auto ids = rows_of(src.conn, fmt::format("SELECT min(rowid), max(rowid) FROM {}", from),
                     options_.source_path);
  if (!ids.at(0).values[0].is_null()) {
    const int64_t lo = ids[0].values[0].get<int64_t>(), hi = ids[0].values[1].get<int64_t>();
    const auto per_window = static_cast<int64_t>(
        std::max(repo_.config().max_partitions_in_memory, options_.open_partitions));
    const auto windows =
        (static_cast<int64_t>(plan.partitions.size()) + per_window - 1) / per_window;
    plan.batches = ((hi - lo) / options_.batch_size + 1) * std::max<int64_t>(windows, 1);
  }
  if (auto cp = read_checkpoint(checkpoint_path()); cp && !ids.at(0).values[0].is_null()) {
    const int64_t lo = ids[0].values[0].get<int64_t>();
    for (const auto& [w, next] : cp->next) {
      plan.batches_already_done += (next - lo + options_.batch_size - 1) / options_.batch_size;
    }
  }
  // Time a sample copy (up to 200,000 rows) into a throw-away store: the real code path, real
  // files.
  const fs::path tmp = fs::temp_directory_path() / fmt::format("duckpart_plan_{}", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    PartitionConfig cfg = repo_.config();
    cfg.base_partition_path = tmp.string();
    cfg.strategy = strategy;
    PartitionedDataRepository sample(cfg);
    sample.attach_database(options_.source_path, "dp_sample_source");
    const int64_t n = std::min<int64_t>(200'000, std::max<int64_t>(plan.rows, 1));
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = sample.create_batch_from_query(
        schema_,
        fmt::format("SELECT * FROM dp_sample_source.main.{} WHERE {} IS NOT NULL{} LIMIT {}",
                    duck::quote_ident(options_.table), col, range_sql(), n),
        {}, options_.null_partition);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    plan.sample_rows_per_s = s > 0 ? static_cast<double>(r.rows_written) / s : 0;
  } catch (const Error&) {
    plan.sample_rows_per_s = 0;
  }
  fs::remove_all(tmp, ec);
  if (plan.sample_rows_per_s > 0)
    plan.estimated_seconds = static_cast<double>(plan.rows) / plan.sample_rows_per_s;
  return plan;
}

std::string MigrationPlan::to_text() const {
  std::string out =
      fmt::format("{:<8} {:<28} {:>12} {:>12}\n", "action", "partition file", "rows", "est. size");
  for (const auto& p : partitions) {
    out +=
        fmt::format("{:<8} {:<28} {:>12} {:>12}\n", p.exists ? "update" : "create",
                    fs::path(p.file).filename().string(), p.rows, human_bytes(p.estimated_bytes));
  }
  out += fmt::format(
      "{} rows into {} partition files in {} batches ({} already done per the checkpoint)\n", rows,
      partitions.size(), batches, batches_already_done);
  if (sample_rows_per_s > 0) {
    out += fmt::format("measured on a sample: {:.0f} rows/s; estimated duration {:.1f} s\n",
                       sample_rows_per_s, estimated_seconds);
  }
  out += "dry run: nothing was written\n";
  return out;
}

std::string MigrationPlan::to_json() const {
  nlohmann::ordered_json j;
  auto ps = nlohmann::ordered_json::array();
  for (const auto& p : partitions) {
    ps.push_back({{"action", p.exists ? "update" : "create"},
                  {"file", p.file},
                  {"rows", p.rows},
                  {"estimated_bytes", p.estimated_bytes}});
  }
  j["partitions"] = ps;
  j["rows"] = rows;
  j["batches"] = batches;
  j["batches_already_done"] = batches_already_done;
  j["sample_rows_per_s"] = sample_rows_per_s;
  j["estimated_seconds"] = estimated_seconds;
  return j.dump(2);
}

MigrationResult PartitionMigrator::migrate(
    const std::function<void(const MigrationProgress&)>& on_progress,
    const std::atomic<bool>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  MigrationResult res;
  SourceTable src = open_source(options_.source_path, options_.table, options_.partition_column);
  const std::string from = "main." + duck::quote_ident(options_.table);
  const std::string col = duck::quote_ident(schema_.partition_column());
  const PartitionStrategy strategy = repo_.strategy_of(schema_);
  auto ids = rows_of(src.conn, fmt::format("SELECT min(rowid), max(rowid) FROM {}", from),
                     options_.source_path);
  // Periods present in the source (one scan), in time order; NULL last.
  std::vector<std::pair<std::optional<int64_t>, int64_t>> periods;  // code (nullopt: NULL), rows
  MigrationProgress progress;
  for (const auto& r : rows_of(
           src.conn,
           fmt::format(
               "SELECT {} AS code, count(*) FROM {} WHERE TRUE{} GROUP BY 1 ORDER BY 1 NULLS LAST",
               partition_code_sql(strategy, col), from, range_sql()),
           options_.source_path)) {
    const int64_t n = r.values[1].get<int64_t>();
    if (r.values[0].is_null()) {
      if (!options_.null_partition) {
        throw Error(
            ErrorCode::kInvalidArgument,
            fmt::format("{} source row(s) have a NULL '{}'; nothing was written. Route them to "
                        "partition_null with --null-partition, or fix the source",
                        n, schema_.partition_column()));
      }
      periods.emplace_back(std::nullopt, n);
    } else {
      partition_key_from_code(strategy, r.values[0].get<int64_t>());  // rejects years out of range
      periods.emplace_back(r.values[0].get<int64_t>(), n);
    }
    progress.rows_total += n;
  }
  repo_.initialize(schema_);
  sweep_dead_staging();  // a catch-up's staging store that a killed run left
  fs::create_directories(fs::path(checkpoint_path()).parent_path());
  Checkpoint cp;
  cp.options = {{"source", fs::absolute(options_.source_path).string()},
                {"table", options_.table},
                {"strategy", strategy_name(strategy)},
                {"batch_size", options_.batch_size},
                {"from", options_.from ? format_date(*options_.from) : ""},
                {"to", options_.to ? format_date(*options_.to) : ""},
                {"null_partition", options_.null_partition}};
  // Work is cut into windows of at most open_partitions periods (outer loop) and source
  // rowid ranges of batch_size rows (inner loop): every partition file is opened once per window
  // however unsorted the source is, at the price of one cheap filtered scan of the source per
  // window.
  const std::size_t per_window = static_cast<std::size_t>(
      std::max(repo_.config().max_partitions_in_memory, options_.open_partitions));
  std::vector<std::pair<std::optional<int64_t>, std::optional<int64_t>>>
      windows;  // [first, last] codes
  for (std::size_t i = 0; i < periods.size(); i += per_window) {
    const std::size_t last = std::min(periods.size(), i + per_window) - 1;
    if (!periods[i].first) {
      windows.emplace_back(std::nullopt, std::nullopt);  // the NULL period alone
      break;
    }
    std::size_t end = last;
    while (end > i && !periods[end].first) --end;  // keep NULL out of a dated window
    windows.emplace_back(periods[i].first, periods[end].first);
    if (end != last) windows.emplace_back(std::nullopt, std::nullopt);
  }
  if (auto old = read_checkpoint(checkpoint_path())) {
    if (old->options != cp.options) {
      const std::string differ = option_differences(old->options, cp.options);
      throw Error(ErrorCode::kConflict,
                  fmt::format("a migration with other options is recorded in '{}' ({}); finish "
                              "it with the same options (a moved source: the recorded path), "
                              "or delete that file to start over (rows already copied are "
                              "then copied again unless the partitions are removed first)",
                              checkpoint_path(), differ.empty() ? old->options.dump() : differ));
    }
    cp.next = old->next;
    cp.intent = old->intent;
    cp.windows = old->windows;  // the windows of the first run keep batch ids stable
  }
  if (cp.windows.is_null() || cp.windows.empty()) {
    cp.windows = nlohmann::json::array();
    for (const auto& [a, b] : windows) {
      cp.windows.push_back(a ? nlohmann::json::array({*a, *b}) : nlohmann::json(nullptr));
    }
  }
  std::vector<int64_t> starts;
  if (!ids.at(0).values[0].is_null()) {
    for (int64_t a = ids[0].values[0].get<int64_t>(); a <= ids[0].values[1].get<int64_t>();
         a += options_.batch_size) {
      starts.push_back(a);
    }
  }
  progress.batches_total = static_cast<int64_t>(starts.size() * cp.windows.size());
  std::string cols;
  for (const auto& c : schema_.columns()) {
    if (!cols.empty()) cols += ", ";
    cols += duck::quote_ident(c.name);
  }
  const std::string code_expr = partition_code_sql(strategy, col);
  auto report = [&](const std::string& what) {
    if (!on_progress) return;
    progress.elapsed_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t copied = res.rows_copied + res.rows_skipped;
    progress.rows_per_s =
        progress.elapsed_s > 0 ? static_cast<double>(copied) / progress.elapsed_s : 0;
    progress.eta_s =
        progress.rows_per_s > 0
            ? static_cast<double>(progress.rows_total - progress.rows_done) / progress.rows_per_s
            : 0;
    progress.current = what;
    on_progress(progress);
  };
  // Batches (batch_size source rows) are loaded one after the other into one BulkLoad — streamed
  // to the partitions, whose transactions stay open — and committed together as a group every
  // commit_interval_s seconds, at the end of a window and on a stop request. Before a group's
  // per-partition commits start, the checkpoint records it as the intent; a run that finds an
  // intent loads exactly those rows again under the same batch id, so partitions that had
  // committed it skip them: every row lands exactly once.
  const int64_t first_id = starts.empty() ? 0 : starts.front();
  DirectState direct;
  for (std::size_t w = 0; w < cp.windows.size() && !res.interrupted; ++w) {
    const auto& win = cp.windows[w];
    std::string window_sql;
    std::string window_name;
    if (win.is_null()) {
      window_sql = fmt::format(" AND {} IS NULL", col);
      window_name = "null";
    } else {
      const int64_t a = win[0].get<int64_t>(), b = win[1].get<int64_t>();
      // The periods a..b as a range of the column: the same rows as "code BETWEEN a AND b" (codes
      // grow with time), without computing a period for every source row (~10% of a routed
      // migration) and prunable by DuckDB's zone maps. A single window holds every period of
      // the source: only NULLs are left out (1.7% of the CPU of an unsorted migration was this
      // filter); rows of periods written to the source since the plan are then copied too.
      window_sql =
          cp.windows.size() == 1
              ? fmt::format(" AND {} IS NOT NULL", col)
              : fmt::format(
                    " AND {0} >= DATE {1} AND {0} < DATE {2}", col,
                    duck::quote_literal(format_date(partition_key_from_code(strategy, a).start())),
                    duck::quote_literal(format_date(partition_key_from_code(strategy, b).end())));
      window_name = fmt::format("{}-{}", partition_key_from_code(strategy, a).label(),
                                partition_key_from_code(strategy, b).label());
    }
    const int64_t done_to = cp.next.count(w) ? cp.next[w] : first_id;
    std::size_t i = 0;
    while (i < starts.size() && starts[i] < done_to) {
      ++res.batches_skipped;
      ++progress.batches_done;
      ++i;
    }
    // The group a killed run was committing (its intent), replayed to the same end: -1 when none
    // (std::optional here made GCC 12 warn "may be used uninitialized").
    int64_t replay_to = -1;
    if (cp.intent && (*cp.intent)[0] == static_cast<int64_t>(w) && (*cp.intent)[1] == done_to) {
      replay_to = (*cp.intent)[2];
    }
    while (i < starts.size()) {
      if (stop && stop->load()) {
        res.interrupted = true;
        break;
      }
      const int64_t group_from = starts[i];
      auto group_id = [&](int64_t to) {
        return fmt::format("migrate:{}:{}:{}:{}-{}", options_.table, cp.options.dump(), window_name,
                           group_from, to);
      };
      auto load = repo_.begin_bulk_load(
          schema_, {.replay_batch_id = replay_to >= 0 ? group_id(replay_to) : std::string(),
                    .null_partition = options_.null_partition,
                    .single_duckdb_thread = !direct.clustered});
      const auto group_start = std::chrono::steady_clock::now();
      int64_t to = group_from;
      while (i < starts.size()) {
        const int64_t a = starts[i];
        if (replay_to >= 0 && a >= replay_to) break;
        // A clustered source is copied several batches at a time (longer runs per INSERT).
        const int64_t end = replay_to >= 0 ? replay_to : std::numeric_limits<int64_t>::max();
        std::size_t k = 1;
        while (direct.clustered && k < kClusteredBatches && i + k < starts.size() &&
               starts[i + k] < end) {
          ++k;
        }
        const int64_t b = a + static_cast<int64_t>(k) * options_.batch_size;
        report(fmt::format("batch {}/{}: periods {}, source rows {}..{}", progress.batches_done + 1,
                           progress.batches_total, window_name, a, b - 1));
        progress.rows_done += copy_batch(
            {*load, src.conn, options_, strategy, alias_, range_sql(), code_expr, col, cols}, a, b,
            win.is_null() ? "" : window_sql, window_sql, direct);
        to = b;
        i += k;
        res.batches_done += static_cast<int64_t>(k);
        progress.batches_done += static_cast<int64_t>(k);
        if (replay_to >= 0) continue;
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - group_start).count();
        if (s >= options_.commit_interval_s || (stop && stop->load())) break;
      }
      if (replay_to >= 0) to = replay_to;
      report(fmt::format("committing source rows {}..{} of periods {}", group_from, to - 1,
                         window_name));
      cp.intent = std::array<int64_t, 3>{static_cast<int64_t>(w), group_from, to};
      write_checkpoint(checkpoint_path(), cp);
      const BatchResult r = load->commit(group_id(to));
      res.rows_copied += r.rows_written;
      res.rows_skipped += r.rows_skipped;
      res.partitions_created += r.partitions_created;
      cp.next[w] = to;
      cp.intent.reset();
      write_checkpoint(checkpoint_path(), cp);
      replay_to = -1;
    }
  }
  res.rows_by_insert = direct.rows;
  repo_.flush();
  auto stopped = [&] { return stop && stop->load(); };
  if (!res.interrupted) {
    // Recorded before the checks (a run killed while it verifies is copied, not unfinished: a
    // re-partitioning would otherwise ask for --resume).
    cp.copied = true;
    res.copied = true;
    write_checkpoint(checkpoint_path(), cp);
    progress.rows_done = progress.rows_total;
    report("verifying");
    if (options_.verify) {
      // verify() looks at the stop between its passes (reset on every path: verify() is public).
      struct StopScope {
        const std::atomic<bool>*& p;
        ~StopScope() { p = nullptr; }
      } stop_scope{stop_};
      stop_ = stop;
      res.checks = verify();
      bool cut_short = verify_stopped_;  // a stop that came after the work is done is not one
      // Incremental catch-up: a period whose rows or checksum differ from the source (the
      // application kept writing to it since the first run) is copied again into a new file and
      // swapped in atomically; a period that vanished from the source is dropped. Then verified
      // again.
      std::vector<std::string> changed;
      for (const auto& c : res.checks) {
        if (!c.ok) changed.push_back(c.name);
      }
      if (!changed.empty() && !cut_short) {
        for (const auto& name : changed) {
          if (stopped()) {  // (each period is caught up whole or not at all)
            cut_short = true;
            break;
          }
          // Its state before anything looks at it: replaced (or dropped) only if still in it.
          const auto state = repo_.partition_state(schema_, name);
          if (!options_.replace_written) {
            if (auto why = written_by_others(name)) {
              res.periods_kept.emplace_back(name, *why);
              continue;
            }
          }
          report(fmt::format("catching up {}", name));
          if (auto why = recopy_period(name, state)) {
            res.periods_kept.emplace_back(name, *why);
            continue;
          }
          res.periods_recopied.push_back(name);
        }
        repo_.flush();
        if (!cut_short) {
          res.checks = verify();
          cut_short = verify_stopped_;
        }
      }
      if (cut_short) {
        // Stopped while verifying or catching up: not verified (the checks may be partial); a
        // re-run verifies again.
        res.interrupted = true;
        res.checks.clear();
      } else {
        res.verified = true;
        for (const auto& c : res.checks) res.mismatches += c.ok ? 0 : 1;
      }
    }
    cp.completed = !res.interrupted && res.mismatches == 0;
    write_checkpoint(checkpoint_path(), cp);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

namespace {

// Deletes what runs that died left in `dir`: entries named prefix + <pid> + suffix whose process
// is gone (a process of this pid namespace; a volume shared by containers is not supported).
void remove_entries_of_dead_runs(const fs::path& dir, const std::string& prefix,
                                 const std::string& suffix) {
  std::error_code it_ec;
  for (fs::directory_iterator it(dir, it_ec), end; !it_ec && it != end; it.increment(it_ec)) {
    const std::string leaf = it->path().filename().string();
    if (leaf.size() <= prefix.size() + suffix.size() || !leaf.starts_with(prefix) ||
        !leaf.ends_with(suffix)) {
      continue;
    }
    const std::string pid = leaf.substr(prefix.size(), leaf.size() - prefix.size() - suffix.size());
    pid_t p = 0;
    const auto [end_ptr, err] = std::from_chars(pid.data(), pid.data() + pid.size(), p);
    if (err != std::errc() || end_ptr != pid.data() + pid.size() || p <= 0) continue;
    if (::kill(p, 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove_all(it->path(), rm);
    }
  }
}

}  // namespace

std::optional<std::string> PartitionMigrator::written_by_others(const std::string& name) {
  std::vector<PartitionedDataRepository::CommittedBatch> batches;
  try {
    batches = repo_.partition_batches(schema_, name);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound) return std::nullopt;  // no partition: nothing to lose
    throw;
  }
  int64_t count = 0, rows = 0;
  const PartitionedDataRepository::CommittedBatch* last = nullptr;
  for (const auto& b : batches) {
    // (A re-partitioning's copy batches hold rows of the ids it carried or marked, "merged: ...";
    // those of versions before session 46, "repartition-...", count: they marked nothing.)
    if (b.batch_id.starts_with(kMigrateBatchPrefix) ||
        b.batch_id.starts_with(kCatchupBatchPrefix) ||
        b.batch_id.starts_with(kRepartitionBatchPrefix)) {
      continue;
    }
    ++count;
    rows += b.rows;
    last = &b;
  }
  if (count == 0) return std::nullopt;
  return fmt::format(
      "it differs from the source, and {} batch(es) of {} row(s) were written to it by something "
      "other than a migration (the latest '{}' at {}): those rows may not be in the source, so "
      "it was left as it is (run migrate with --replace-written to replace it with the source's "
      "rows)",
      count, rows, last->batch_id, format_timestamp(last->committed_at));
}

std::optional<std::string> PartitionMigrator::outside_the_range_sql(const std::string& name) const {
  const auto key = parse_partition_name(name);
  if (!key || (!options_.from && !options_.to)) return std::nullopt;
  if (key->is_null) return std::nullopt;  // (a range leaves NULLs out; not checked)
  const bool before = options_.from && key->start() < *options_.from;
  const bool after = options_.to && key->end() > *options_.to;
  if (!before && !after) return std::nullopt;
  const std::string col = duck::quote_ident(schema_.partition_column());
  std::string where;
  if (before) {
    where = fmt::format("({0} >= DATE {1} AND {0} < DATE {2})", col,
                        duck::quote_literal(format_date(key->start())),
                        duck::quote_literal(format_date(*options_.from)));
  }
  if (after) {
    if (!where.empty()) where += " OR ";
    where += fmt::format("({0} >= DATE {1} AND {0} < DATE {2})", col,
                         duck::quote_literal(format_date(*options_.to)),
                         duck::quote_literal(format_date(key->end())));
  }
  return "(" + where + ")";
}

std::optional<std::string> PartitionMigrator::recopy_period(
    const std::string& name, const PartitionedDataRepository::PartitionBackup& state) {
  auto key = parse_partition_name(name);
  if (!key)
    throw Error(ErrorCode::kInvalidArgument, fmt::format("'{}' is not a partition name", name));
  const PartitionStrategy strategy = repo_.strategy_of(schema_);
  key->strategy = strategy;
  const std::string col = duck::quote_ident(schema_.partition_column());
  std::string where;
  if (key->is_null) {
    where = fmt::format("{} IS NULL", col);
  } else {
    // The period's code, as the routing computes it.
    int64_t code = key->year;
    if (strategy == PartitionStrategy::kMonthly || strategy == PartitionStrategy::kWeekly) {
      code = int64_t{key->year} * 100 + key->number;
    } else if (strategy == PartitionStrategy::kDaily) {
      code = int64_t{key->year} * 10000 + key->number * 100 + key->day;
    }
    where = fmt::format("{} = {}", partition_code_sql(strategy, col), code);
  }
  SourceTable src = open_source(options_.source_path, options_.table, options_.partition_column);
  const int64_t rows =
      src.conn.query_int(fmt::format("SELECT count(*) FROM main.{} WHERE {}{}",
                                     duck::quote_ident(options_.table), where, range_sql()));
  // A period across the edge of --from/--to: the partition's rows outside the range are not the
  // source's to replace (another migration's range, or the application's, brought them); they go
  // into the new file as they are, from a consistent copy of the partition (backup_partition:
  // checkpointed, its writers wait during the copy), and the new file replaces the partition only
  // if nothing changed it since that copy (restore_partition's unchanged_since).
  const std::optional<std::string> outside = outside_the_range_sql(name);
  std::string kept_dir;
  std::optional<PartitionedDataRepository::PartitionBackup> copy;
  struct Cleanup {
    std::vector<std::string> dirs;
    ~Cleanup() {
      std::error_code e;
      for (const auto& d : dirs) fs::remove_all(d, e);
    }
  } cleanup;
  int64_t kept = 0;
  std::vector<PartitionedDataRepository::CommittedBatch> kept_batches;
  if (outside) {
    kept_dir = make_copy_dir();
    cleanup.dirs.push_back(kept_dir);
    try {
      copy = repo_.backup_partition(schema_, name, kept_dir);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kNotFound) throw;  // no partition: nothing outside to keep
    }
  }
  if (copy) {
    duck::Database db = duck::Database::open(copy->backup_file, /*read_only=*/true);
    duck::Connection c = db.connect();
    kept = c.query_int(fmt::format("SELECT count(*) FROM main.{} WHERE {}",
                                   duck::quote_ident(schema_.name()), *outside),
                       copy->backup_file);
    // The batches that wrote to it other than the tools' (none, unless --replace-written or one
    // committed since written_by_others looked): their ids go with the rows kept, so a retried
    // batch is still skipped and a later catch-up still sees that something else wrote there.
    // (Each with all its rows, also those of the range that the source's replace.)
    duck::Result r = c.query(fmt::format("SELECT batch_id, sum(row_count)::BIGINT, "
                                         "max(committed_at) FROM main.{} WHERE batch_id IS NOT "
                                         "NULL GROUP BY 1 ORDER BY 3, 1",
                                         kBatchesTable),
                             copy->backup_file);
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> ids;
    while (auto chunk = r.fetch()) dec.decode(chunk, ids);
    for (const auto& id : ids) {
      const std::string b = id.values[0].get<std::string>();
      if (b.starts_with(kMigrateBatchPrefix) || b.starts_with(kCatchupBatchPrefix) ||
          b.starts_with(kRepartitionBatchPrefix)) {
        continue;
      }
      kept_batches.push_back(
          {b, id.values[1].is_null() ? 0 : id.values[1].get<int64_t>(), Timestamp{}});
    }
  }
  if (!kept_batches.empty() && !options_.replace_written) {
    return fmt::format(
        "it differs from the source, and batch '{}' was written to it by something other than a "
        "migration while it was being caught up: left as it is (run migrate again, or with "
        "--replace-written to replace its rows of the range with the source's)",
        kept_batches.back().batch_id);
  }
  // The compare-and-swap's token: the copy (later than `state`; the batches found in it were
  // checked above), else the state taken before written_by_others looked.
  const PartitionedDataRepository::PartitionBackup& token = copy ? *copy : state;
  const auto changed_meanwhile = [](const Error& e) {
    return fmt::format("not replaced while it was being caught up: {} (run migrate again)",
                       e.what());
  };
  if (rows == 0 && kept == 0) {
    if (token.source_file.empty()) return std::nullopt;  // no partition: nothing to drop
    try {
      repo_.drop_partition(schema_, name, &token);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kConflict) throw;
      return changed_meanwhile(e);
    }
    return std::nullopt;
  }
  // Build the new partition beside the store (same file system), then swap it in.
  const std::string staging = repo_.config().base_partition_path + "/." + options_.table +
                              fmt::format(".catchup_{}", ::getpid());
  std::error_code ec;
  fs::remove_all(staging, ec);
  cleanup.dirs.push_back(staging);
  {
    PartitionConfig cfg = repo_.config();
    cfg.base_partition_path = staging;
    cfg.strategy = strategy;
    PartitionedDataRepository fresh(cfg);
    fresh.attach_database(options_.source_path, "dp_catchup_source");
    // A bulk load of its own (create_batch_from_query refuses the tools' reserved batch ids).
    const std::string batch_id = fmt::format("{}{}:{}", kCatchupBatchPrefix, options_.table, name);
    auto load = fresh.begin_bulk_load(schema_, {.replay_batch_id = batch_id,
                                                .null_partition = options_.null_partition,
                                                .single_duckdb_thread = false});
    load->load(fmt::format("SELECT * FROM dp_catchup_source.main.{} WHERE {}{}",
                           duck::quote_ident(options_.table), where, range_sql()));
    if (kept > 0) {
      fresh.attach_database(copy->backup_file, "dp_catchup_kept");
      load->load(fmt::format("SELECT * FROM dp_catchup_kept.main.{} WHERE {}",
                             duck::quote_ident(schema_.name()), *outside));
    }
    load->commit(batch_id);
    if (!kept_batches.empty()) fresh.record_batch_ids(schema_, key->name(), kept_batches);
    fresh.detach_database("dp_catchup_kept");
  }
  try {
    repo_.restore_partition(schema_, staging + "/" + options_.table + "/" + key->file_name(),
                            &token);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kConflict) throw;
    return changed_meanwhile(e);
  }
  return std::nullopt;
}

void PartitionMigrator::sweep_dead_staging() const {
  remove_entries_of_dead_runs(repo_.config().base_partition_path,
                              "." + options_.table + ".catchup_", "");
}

std::string PartitionMigrator::make_copy_dir() const {
  // Beside the partition directory (backup_partition refuses a directory inside it; the same file
  // system): ".<dir>.<table>.catchup_<pid>_kept". Copies left by runs that died are deleted first
  // (their process is gone). When that directory cannot be written: a fresh private directory in
  // the temporary directory.
  std::error_code ec;
  const fs::path base = fs::weakly_canonical(fs::absolute(repo_.config().base_partition_path), ec);
  if (!ec) {
    const std::string prefix =
        fmt::format(".{}.{}.catchup_", base.filename().string(), options_.table);
    remove_entries_of_dead_runs(base.parent_path(), prefix, "_kept");
    const fs::path dir = base.parent_path() / fmt::format("{}{}_kept", prefix, ::getpid());
    fs::remove_all(dir, ec);
    if (!ec && fs::create_directory(dir, ec) && !ec) return dir.string();
  }
  std::string tmpl = (fs::temp_directory_path(ec) / "duckpart_catchup_XXXXXX").string();
  if (ec || ::mkdtemp(tmpl.data()) == nullptr) {
    throw Error(ErrorCode::kIo,
                fmt::format("cannot create a directory for a copy of a partition beside '{}' or "
                            "in the temporary directory",
                            repo_.config().base_partition_path));
  }
  return tmpl;
}

std::vector<PeriodCheck> PartitionMigrator::verify() {
  verify_stopped_ = false;
  SourceTable src = open_source(options_.source_path, options_.table, options_.partition_column);
  // The checksum pass reads the whole source: keep its buffer pool within the store's bound.
  if (const int limit = repo_.config().effective_memory_limit_mb(); limit > 0) {
    src.conn.exec(fmt::format("SET memory_limit = '{}MiB'", limit), options_.source_path);
  }
  const PartitionStrategy strategy = repo_.strategy_of(schema_);
  const std::string col = duck::quote_ident(schema_.partition_column());
  std::map<std::string, PeriodCheck> checks;
  for (const auto& r :
       rows_of(src.conn,
               fmt::format("SELECT {} AS code, count(*), {} FROM main.{} WHERE TRUE{} GROUP BY 1",
                           partition_code_sql(strategy, col),
                           PartitionedDataRepository::checksum_sql(schema_),
                           duck::quote_ident(options_.table), range_sql()),
               options_.source_path)) {
    const PartitionKey key = r.values[0].is_null()
                                 ? null_partition_key(strategy)
                                 : partition_key_from_code(strategy, r.values[0].get<int64_t>());
    PeriodCheck& c = checks[key.name()];
    c.name = key.name();
    c.source_rows = r.values[1].get<int64_t>();
    c.source_checksum = r.values[2].get<std::string>();
    c.partition_checksum.assign(1, '0');
  }
  if (stop_ && stop_->load()) {  // stopped: migrate() reports it, not these checks
    verify_stopped_ = true;
    return {};
  }
  for (const auto& p : repo_.checksum_partitions(schema_)) {
    if (!checks.count(p.name) && (options_.from || options_.to)) {
      // A period the source has no rows of in the range: checked (so that its partition is
      // dropped or kept, as for a migration without a range) when it overlaps the range.
      // (One across the range's edge is compared on its rows of the range, below; a catch-up
      // keeps its rows outside it.)
      const auto key = parse_partition_name(p.name);
      if (!key || key->is_null) continue;
      if (options_.from && key->end() <= *options_.from) continue;
      if (options_.to && key->start() >= *options_.to) continue;
    }
    PeriodCheck& c = checks[p.name];
    c.name = p.name;
    c.partition_rows = p.rows;
    c.partition_checksum = p.checksum;
    if (c.source_checksum.empty()) c.source_checksum.assign(1, '0');
  }
  // A period across the edge of --from/--to is compared on its rows inside the range (the
  // source's side counts only those): another migration's, or the application's, rows outside it
  // are not a difference.
  if (options_.from || options_.to) {
    for (auto& [name, c] : checks) {
      const auto key = parse_partition_name(name);
      if (!key || key->is_null || c.partition_rows == 0) continue;
      const Date lo = options_.from ? std::max(key->start(), *options_.from) : key->start();
      const Date hi = options_.to ? std::min(key->end(), *options_.to) : key->end();
      if (lo == key->start() && hi == key->end()) continue;
      RecordStream rows = repo_.query_sql(fmt::format(
          "SELECT count(*), {} FROM {} WHERE {} >= DATE {} AND {} < DATE {}",
          PartitionedDataRepository::checksum_sql(schema_), duck::quote_ident(schema_.name()), col,
          duck::quote_literal(format_date(lo)), col, duck::quote_literal(format_date(hi))));
      DataRecord r;
      if (!rows.next(r)) continue;
      c.partition_rows = r.values.at(0).get<int64_t>();
      c.partition_checksum = r.values.at(1).get<std::string>();
    }
  }
  std::vector<PeriodCheck> out;
  for (auto& [name, c] : checks) {
    c.ok = c.source_rows == c.partition_rows && c.source_checksum == c.partition_checksum;
    out.push_back(c);
  }
  return out;
}

}  // namespace duckpart
