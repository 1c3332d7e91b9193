#include "cli/manage_partitions.hpp"

#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>

#include "duckpart/duckpart.hpp"
#include "partition_files.hpp"
#include "text_util.hpp"

namespace fs = std::filesystem;

namespace duckpart::cli {

namespace {

std::atomic<bool> g_stop{false};

// Whole numbers in decimal digits only: CLI11 would also read 0x10, 0o20 and 0b10000 as 16, and
// 010 as 8 (octal), so a mistyped retention period or batch size would be taken as another
// number.
const CLI::Validator kWholeNumber(
    [](std::string& text) -> std::string {
      const std::size_t sign = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
      bool digits = sign < text.size();
      for (std::size_t i = sign; i < text.size(); ++i) {
        digits = digits && text[i] >= '0' && text[i] <= '9';
      }
      if (!digits) return "'" + text + "' is not a whole number in decimal digits";
      if (text.size() > sign + 1 && text[sign] == '0') {
        return "'" + text + "' starts with 0, which would be read as octal; write it without";
      }
      return {};
    },
    "", "whole number");

// The first SIGINT / SIGTERM asks the running operation to stop at its next safe point (a batch
// boundary); a second one quits at once, which leaves what a kill -9 leaves (every write is
// crash-safe). Only async-signal-safe calls here.
extern "C" void on_stop_signal(int sig) {
  if (g_stop.exchange(true)) {
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  static constexpr char kMsg[] =
      "\nmanage_partitions: stopping at the next safe point (press Ctrl-C again to quit at "
      "once)\n";
  const ssize_t n = ::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
  (void)n;
}

// Installed for the rest of the process, not only while the long operation runs: a signal that
// lands after the operation returned (while the result is printed) must not kill the process
// with the default action. SA_RESTART keeps DuckDB's file I/O from seeing EINTR.
void stop_on_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

struct Common {
  std::string database = "data/data.duckdb";
  std::string partitions;
  std::string schema = "well_production";
  std::string strategy;
  std::string partition_column;
  std::string config_file;
};

void add_common(CLI::App* app, Common& c, bool with_database = true) {
  if (with_database) {
    app->add_option("--database", c.database, "source DuckDB file")->capture_default_str();
  }
  app->add_option("--partitions", c.partitions, "partition directory (default: data/partitions)");
  app->add_option("--schema", c.schema, "table name")->capture_default_str();
  app->add_option("--strategy", c.strategy, "yearly, monthly, weekly or daily");
  app->add_option("--partition-column", c.partition_column,
                  "DATE/TIMESTAMP column (default: production_period)");
  app->add_option("--config", c.config_file, "TOML configuration file (applied before the flags)");
}

// The strategy a table was written with, as the store decides it when it opens the table: the one
// most of its partition files are named for, else its catalog's; nullopt when it has neither.
std::optional<PartitionStrategy> detect_strategy(const std::string& dir) {
  std::map<PartitionStrategy, int> named;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (auto k = parse_partition_name(it->path().filename().string()); k && !k->is_null)
      ++named[k->strategy];
  }
  std::optional<PartitionStrategy> most;
  for (const auto& [st, n] : named) {
    if (!most || n > named[*most]) most = st;
  }
  if (most) return most;
  if (auto cat = read_catalog(dir, nullptr)) {
    try {
      return parse_strategy(cat->strategy);
    } catch (const std::exception&) {
    }
  } else if (std::ifstream in(dir + "/_catalog.json"); in) {
    try {  // a catalog with damaged entries (or a newer format) still names its strategy
      auto j = nlohmann::json::parse(in);
      return parse_strategy(j.at("strategy").get<std::string>());
    } catch (const std::exception&) {
    }
  }
  return std::nullopt;
}

// Preset, then --config, then flags. When neither --strategy nor the file names one, an existing
// table's own is used; one that contradicts the table's is refused when the store is opened.
PartitionConfig resolve_config(const Common& c) {
  PartitionConfig cfg = production_partition_config();
  if (!c.config_file.empty()) cfg = load_partition_config(c.config_file, cfg);
  if (!c.partitions.empty()) cfg.base_partition_path = c.partitions;
  if (!c.partition_column.empty()) cfg.partition_column = c.partition_column;
  // A configuration file names a strategy when loading it over two different ones gives the same.
  bool file_names_strategy = false;
  if (!c.config_file.empty()) {
    PartitionConfig a = production_partition_config(), b = a;
    a.strategy = PartitionStrategy::kYearly;
    b.strategy = PartitionStrategy::kDaily;
    file_names_strategy = load_partition_config(c.config_file, a).strategy ==
                          load_partition_config(c.config_file, b).strategy;
  }
  if (!c.strategy.empty()) {
    cfg.strategy = parse_strategy(c.strategy);
  } else if (!file_names_strategy) {
    if (auto s = detect_strategy(cfg.base_partition_path + "/" + c.schema)) cfg.strategy = *s;
  }
  cfg.validate();
  return cfg;
}

// Bulk commands (migrate, import, re-partition) without a memory_limit_mb in the configuration
// get DuckDB's memory bounded to 2 GB (a quarter of RAM on small machines): with DuckDB's default
// (80% of RAM) the buffer pool keeps taking fresh pages and a 100M-row migration spent a third of
// its time in page faults (docs/performance.md, P7).
void bound_bulk_memory(PartitionConfig& cfg) {
  if (cfg.memory_limit_mb > 0) return;
  const int64_t ram_mb = usable_memory_mb();
  cfg.memory_limit_mb = static_cast<int>(std::clamp<int64_t>(ram_mb / 4, 256, 2048));
}

std::optional<Date> parse_date_arg(const std::string& text, std::string_view flag) {
  if (text.empty()) return std::nullopt;
  auto d = parse_date(text);
  if (!d) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{} '{}' is not a valid date (YYYY-MM-DD)", flag, text));
  }
  return d;
}

// Progress on stderr: a rewritten line on a terminal; when stderr is not a terminal, a plain line
// every 2 s for migrations (long jobs run from scripts want a heartbeat) and nothing for the other
// commands.
class ProgressLine {
 public:
  explicit ProgressLine(bool lines_when_not_tty = false) : lines_(lines_when_not_tty) {}
  void show(const std::string& line, bool force = false) {
    if (!tty_ && !lines_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!tty_ && !force && now - last_ < std::chrono::seconds(2)) return;
    last_ = now;
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }
  void finish() const {
    if (tty_) std::fputs("\n", stderr);
  }

 private:
  bool tty_ = ::isatty(STDERR_FILENO) != 0;
  bool lines_;
  std::chrono::steady_clock::time_point last_ =
      std::chrono::steady_clock::now() - std::chrono::seconds(10);
};

// ---- analyze
// --------------------------------------------------------------------------------------

int cmd_analyze(const Common& c, bool json) {
  const PartitionConfig cfg = resolve_config(c);
  const AnalysisReport rep = analyze_source(c.database, c.schema, cfg.partition_column,
                                            cfg.strategy, cfg.partition_size_threshold_mb);
  std::fputs((json ? rep.to_json() + "\n" : rep.to_text()).c_str(), stdout);
  return 0;
}

// ---- migrate
// --------------------------------------------------------------------------------------

struct MigrateArgs {
  int64_t batch_size = 1'000'000;
  bool dry_run = false;
  bool resume = false;
  bool no_verify = false;
  bool null_partition = false;
  int jobs = 0;
  std::string from;
  std::string to;
  bool json = false;
  bool from_partitions = false;
  double commit_interval = 30;
  int open_partitions = 128;
  int64_t direct_copy_rows = MigrationOptions{}.direct_copy_rows;
  bool replace_written = false;
};

int cmd_repartition(const Common& c, const MigrateArgs& a) {
  if (c.strategy.empty()) {
    throw Error(ErrorCode::kInvalidArgument,
                "--from-partitions needs --strategy: the strategy to rewrite the partitions into");
  }
  if (!a.from.empty() || !a.to.empty() || a.null_partition) {
    throw Error(ErrorCode::kInvalidArgument,
                "--from, --to and --null-partition do not apply to --from-partitions (every row "
                "of every partition is rewritten)");
  }
  PartitionConfig cfg = production_partition_config();
  if (!c.config_file.empty()) cfg = load_partition_config(c.config_file, cfg);
  if (!c.partitions.empty()) cfg.base_partition_path = c.partitions;
  if (!c.partition_column.empty()) cfg.partition_column = c.partition_column;
  if (a.jobs > 0) cfg.write_threads = a.jobs;
  bound_bulk_memory(cfg);
  cfg.validate();
  RepartitionOptions o;
  o.table = c.schema;
  o.to = parse_strategy(c.strategy);
  o.batch_size = a.batch_size;
  o.verify = !a.no_verify;
  o.dry_run = a.dry_run;
  ProgressLine line(/*lines_when_not_tty=*/true);
  stop_on_signals();
  const RepartitionResult r = repartition(
      cfg, o,
      [&](const MigrationProgress& p) {
        const double pct = p.rows_total > 0 ? 100.0 * static_cast<double>(p.rows_done) /
                                                  static_cast<double>(p.rows_total)
                                            : 100.0;
        line.show(fmt::format("re-partition: {}/{} rows ({:.1f}%), {:.0f} rows/s, ETA {:.0f}s, {}",
                              p.rows_done, p.rows_total, pct, p.rows_per_s, p.eta_s, p.current),
                  p.current == "verifying");
      },
      &g_stop);
  line.finish();
  std::printf("%s", a.json ? (r.to_json() + "\n").c_str() : r.to_text().c_str());
  for (const auto& ch : r.checks) {
    if (!ch.ok) {
      std::fprintf(stderr,
                   "manage_partitions: verification failed for %s: the old partitions hold %lld "
                   "rows (checksum %s), the new one %lld (checksum %s)\n",
                   ch.name.c_str(), static_cast<long long>(ch.source_rows),
                   ch.source_checksum.c_str(), static_cast<long long>(ch.partition_rows),
                   ch.partition_checksum.c_str());
    }
  }
  if (r.interrupted) return static_cast<int>(ErrorCode::kInterrupted);
  return r.mismatches > 0 ? 1 : 0;
}

int cmd_migrate(const Common& c, const MigrateArgs& a) {
  if (a.from_partitions) return cmd_repartition(c, a);
  PartitionConfig cfg = resolve_config(c);
  bound_bulk_memory(cfg);
  if (a.jobs < 0)
    throw Error(ErrorCode::kInvalidArgument, fmt::format("--jobs {} must be >= 0", a.jobs));
  if (a.jobs > 0) cfg.write_threads = a.jobs;
  MigrationOptions o;
  o.source_path = c.database;
  o.table = c.schema;
  o.partition_column = cfg.partition_column;
  o.batch_size = a.batch_size;
  o.from = parse_date_arg(a.from, "--from");
  o.to = parse_date_arg(a.to, "--to");
  o.verify = !a.no_verify;
  o.null_partition = a.null_partition;
  o.commit_interval_s = a.commit_interval;
  o.open_partitions = a.open_partitions;
  o.direct_copy_rows = a.direct_copy_rows;
  o.replace_written = a.replace_written;
  if (std::error_code ec; !fs::exists(o.source_path, ec)) {  // before the store is created
    throw Error(ErrorCode::kNotFound,
                fmt::format("source database '{}' does not exist (--database)", o.source_path));
  }
  if (a.dry_run) {
    // Read-only: nothing in the partition directory may change.
    const bool exists = fs::exists(cfg.base_partition_path);
    const fs::path tmp = fs::temp_directory_path() / fmt::format("duckpart_dry_{}", ::getpid());
    PartitionConfig view = cfg;
    if (!exists) view.base_partition_path = tmp.string();
    MigrationPlan plan;
    {
      PartitionedDataRepository repo(view, {.read_only = exists});
      PartitionMigrator m(repo, o);
      plan = m.plan();
    }
    std::error_code ec;
    fs::remove_all(tmp, ec);
    std::fputs((a.json ? plan.to_json() + "\n" : plan.to_text()).c_str(), stdout);
    return 0;
  }
  PartitionedDataRepository repo(cfg);
  PartitionMigrator m(repo, o);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  stop_on_signals();
  const MigrationResult r = m.migrate(
      [&](const MigrationProgress& p) {
        const auto now = std::chrono::steady_clock::now();
        if (!tty && now - last < std::chrono::seconds(2) && p.current != "verifying") return;
        last = now;
        const double pct = p.rows_total > 0 ? 100.0 * static_cast<double>(p.rows_done) /
                                                  static_cast<double>(p.rows_total)
                                            : 100.0;
        const std::string line =
            fmt::format("migrate: {}/{} rows ({:.1f}%), {:.0f} rows/s, ETA {:.0f}s, {}",
                        p.rows_done, p.rows_total, pct, p.rows_per_s, p.eta_s, p.current);
        if (tty) {
          std::fprintf(stderr, "\r\033[K%s", line.c_str());
        } else {
          std::fprintf(stderr, "%s\n", line.c_str());
        }
        std::fflush(stderr);
      },
      &g_stop);
  if (tty) std::fputs("\n", stderr);
  if (a.json) {
    nlohmann::ordered_json j;
    j["rows_copied"] = r.rows_copied;
    j["rows_skipped"] = r.rows_skipped;
    j["batches_done"] = r.batches_done;
    j["batches_skipped"] = r.batches_skipped;
    j["partitions_created"] = r.partitions_created;
    j["rows_by_insert"] = r.rows_by_insert;
    j["interrupted"] = r.interrupted;
    j["copied"] = r.copied;
    j["seconds"] = r.seconds;
    j["verified"] = r.verified;
    j["mismatches"] = r.mismatches;
    j["periods_recopied"] = r.periods_recopied;
    auto kept = nlohmann::ordered_json::array();
    for (const auto& [name, why] : r.periods_kept)
      kept.push_back({{"partition", name}, {"why", why}});
    j["periods_kept"] = kept;
    auto checks = nlohmann::ordered_json::array();
    for (const auto& ch : r.checks) {
      checks.push_back({{"partition", ch.name},
                        {"source_rows", ch.source_rows},
                        {"partition_rows", ch.partition_rows},
                        {"ok", ch.ok}});
    }
    j["checks"] = checks;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "migrated %lld rows in %.2f s (%.0f rows/s): %lld batches done, %lld already done before, "
        "%lld rows already present, %lld partitions created\n",
        static_cast<long long>(r.rows_copied), r.seconds,
        r.seconds > 0 ? static_cast<double>(r.rows_copied) / r.seconds : 0.0,
        static_cast<long long>(r.batches_done), static_cast<long long>(r.batches_skipped),
        static_cast<long long>(r.rows_skipped), static_cast<long long>(r.partitions_created));
    if (r.rows_by_insert > 0) {
      std::printf("%lld rows were runs of one period in the source, copied by INSERT ... SELECT\n",
                  static_cast<long long>(r.rows_by_insert));
    }
    for (const auto& p : r.periods_recopied) {
      std::printf("caught up %s: changed in the source, copied again and swapped in\n", p.c_str());
    }
    if (r.verified) {
      std::printf(
          "verified %zu periods (row count and checksum over all columns): %lld mismatch(es)\n",
          r.checks.size(), static_cast<long long>(r.mismatches));
    }
  }
  for (const auto& [name, why] : r.periods_kept) {
    std::fprintf(stderr, "manage_partitions: not caught up %s: %s\n", name.c_str(), why.c_str());
  }
  for (const auto& ch : r.checks) {
    if (!ch.ok) {
      std::fprintf(
          stderr,
          "manage_partitions: verification failed for %s: source has %lld rows (checksum %s), "
          "partition has %lld rows (checksum %s)\n",
          ch.name.c_str(), static_cast<long long>(ch.source_rows), ch.source_checksum.c_str(),
          static_cast<long long>(ch.partition_rows), ch.partition_checksum.c_str());
    }
  }
  if (r.interrupted && r.copied) {
    std::fprintf(stderr,
                 "manage_partitions: interrupted while verifying or catching up (every row is "
                 "copied); run the same migrate command again to verify\n");
    return static_cast<int>(ErrorCode::kInterrupted);
  }
  if (r.interrupted) {
    std::fprintf(
        stderr,
        "manage_partitions: interrupted after %lld batch(es); run the same migrate command "
        "again (or with --resume) to finish\n",
        static_cast<long long>(r.batches_done));
    return static_cast<int>(ErrorCode::kInterrupted);
  }
  return r.mismatches > 0 ? 1 : 0;
}

// ---- stats
// ----------------------------------------------------------------------------------------

int cmd_stats(const Common& c, bool json, bool all) {
  const PartitionConfig cfg = resolve_config(c);
  if (!fs::exists(cfg.base_partition_path)) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("partition directory '{}' does not exist", cfg.base_partition_path));
  }
  auto repo = std::make_unique<PartitionedDataRepository>(
      cfg, PartitionedRepositoryOptions{.read_only = true});
  StorageStatistics stats;
  if (all && c.strategy.empty()) {
    // Each table with its own strategy (tables may differ: one re-partitioned yearly), one
    // repository at a time (a process opens a directory once).
    stats.kind = "partitioned";
    const std::vector<std::string> tables = repo->list_schemas();
    repo.reset();
    for (const std::string& table : tables) {
      PartitionConfig tc = cfg;
      if (auto s = detect_strategy(cfg.base_partition_path + "/" + table)) tc.strategy = *s;
      PartitionedDataRepository r(tc, {.read_only = true});
      try {
        stats.schemas.push_back(r.table_statistics(r.load_schema(table)));
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kConflict) throw;
        SchemaStatistics ss;  // listed with why, as get_partition_statistics does
        ss.schema = table;
        ss.directory = tc.base_partition_path + "/" + table;
        ss.problems.push_back(e.what());
        stats.schemas.push_back(std::move(ss));
      }
    }
  } else if (all) {
    stats = repo->get_partition_statistics();
  } else {
    // The table asked for alone: another table's state (a locked or damaged file) is not its.
    stats.kind = "partitioned";
    stats.schemas.push_back(repo->table_statistics(repo->load_schema(c.schema)));
    stats.counters = repo->counters();
  }
  if (json) {
    std::printf("%s\n", stats.to_json().c_str());
    return 0;
  }
  for (const auto& s : stats.schemas) {
    std::printf("%s (%s)\n", s.schema.c_str(), s.directory.c_str());
    std::printf("%-24s %-23s %12s %10s  %-26s %-26s %s\n", "partition", "period", "rows", "size",
                "min", "max", "modified");
    for (const auto& p : s.partitions) {
      char when[32] = "-";
      const std::time_t t = p.modified_unix;
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
      const std::string period =
          p.period_start ? format_date(*p.period_start) + ".." + format_date(*p.period_end)
                         : "NULL values";
      std::printf("%-24s %-23s %12lld %10s  %-26s %-26s %s%s%s\n", p.name.c_str(), period.c_str(),
                  static_cast<long long>(p.rows), human_bytes(p.bytes).c_str(),
                  p.min_value ? format_timestamp(*p.min_value).c_str() : "-",
                  p.max_value ? format_timestamp(*p.max_value).c_str() : "-", when,
                  p.problem.empty() ? "" : "  PROBLEM: ", p.problem.c_str());
    }
    std::printf("total: %zu partitions, %lld rows, %s\n", s.partitions.size(),
                static_cast<long long>(s.total_rows), human_bytes(s.total_bytes).c_str());
    for (const auto& p : s.problems) std::printf("problem: %s\n", p.c_str());
  }
  return 0;
}

// ---- query
// ----------------------------------------------------------------------------------------

struct QueryArgs {
  std::vector<std::string> filters;
  std::vector<std::string> sorts;
  int64_t limit = -1;
  int64_t offset = 0;
  std::string columns;
  std::string format = "table";
  bool count = false;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

QueryFilter parse_filter(const std::string& spec) {
  // FIELD:OP[:VALUE] — the value may itself contain ':' (timestamps), so split at the first two.
  const auto p1 = spec.find(':');
  if (p1 == std::string::npos) {
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("--filter '{}' must be FIELD:OP[:VALUE], e.g. production_period:gte:2023-01-01",
                    spec));
  }
  const auto p2 = spec.find(':', p1 + 1);
  QueryFilter f;
  f.field = spec.substr(0, p1);
  f.op = parse_operator(
      spec.substr(p1 + 1, p2 == std::string::npos ? std::string::npos : p2 - p1 - 1));
  const std::string value = p2 == std::string::npos ? "" : spec.substr(p2 + 1);
  switch (f.op) {
    case FilterOperator::kIsNull:
    case FilterOperator::kIsNotNull:
      if (!value.empty()) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("--filter '{}': {} takes no value", spec, operator_name(f.op)));
      }
      break;
    case FilterOperator::kIn:
    case FilterOperator::kNotIn:
    case FilterOperator::kBetween:
      for (const auto& v : split(value, ',')) f.values.emplace_back(v);
      break;
    default:
      if (p2 == std::string::npos) {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("--filter '{}' needs a value", spec));
      }
      f.value = Value(value);
  }
  return f;
}

std::string csv_cell(const Value& v) {
  if (v.is_null()) return "";
  std::string s = v.to_string();
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

nlohmann::json json_cell(const Value& v) {
  if (v.is_null()) return nullptr;
  if (v.is<bool>()) return v.get<bool>();
  if (v.is<int64_t>()) return v.get<int64_t>();
  if (v.is<double>()) return v.get<double>();
  return v.to_string();
}

void check_format(const std::string& format) {
  if (format != "table" && format != "csv" && format != "json") {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("--format '{}': expected table, csv or json", format));
  }
}

// Prints every row of `stream` as a table, CSV or JSON (streamed: bounded memory). The table
// format reports rows and partitions scanned on stderr.
int print_stream(RecordStream& stream, const std::string& format) {
  const auto& cols = stream.columns();
  DataRecord r;
  if (format == "csv") {
    std::string line;
    for (std::size_t i = 0; i < cols.size(); ++i) line += (i ? "," : "") + csv_cell(Value(cols[i]));
    std::printf("%s\n", line.c_str());
    while (stream.next(r)) {
      line.clear();
      for (std::size_t i = 0; i < r.values.size(); ++i) {
        if (i) line += ',';
        line += csv_cell(r.values[i]);
      }
      std::fwrite(line.data(), 1, line.size(), stdout);
      std::fputc('\n', stdout);
    }
    return 0;
  }
  if (format == "json") {
    std::fputs("[", stdout);
    bool first = true;
    while (stream.next(r)) {
      nlohmann::ordered_json o;
      for (std::size_t i = 0; i < cols.size(); ++i) o[cols[i]] = json_cell(r.values[i]);
      std::printf("%s\n%s", first ? "" : ",", o.dump().c_str());
      first = false;
    }
    std::fputs("\n]\n", stdout);
    return 0;
  }
  // table: widths from the first 200 rows, then streamed.
  std::vector<DataRecord> head;
  while (head.size() < 200 && stream.next(r)) head.push_back(std::move(r));
  std::vector<std::size_t> w(cols.size());
  for (std::size_t i = 0; i < cols.size(); ++i) w[i] = cols[i].size();
  for (const auto& row : head) {
    for (std::size_t i = 0; i < cols.size(); ++i)
      w[i] = std::max(w[i], row.values[i].to_string().size());
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i) line += "  ";
      line += fmt::format("{:<{}}", cells[i], w[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  };
  print_row(cols);
  int64_t n = 0;
  auto emit = [&](const DataRecord& row) {
    std::vector<std::string> cells;
    for (const auto& v : row.values) cells.push_back(v.to_string());
    print_row(cells);
    ++n;
  };
  for (const auto& row : head) emit(row);
  while (stream.next(r)) emit(r);
  std::fprintf(stderr, "%lld row(s); partitions scanned %lld of %lld\n", static_cast<long long>(n),
               static_cast<long long>(stream.stats().partitions_scanned),
               static_cast<long long>(stream.stats().partitions_total));
  return 0;
}

int cmd_query(const Common& c, const QueryArgs& a) {
  const PartitionConfig cfg = resolve_config(c);
  check_format(a.format);
  if (!fs::exists(cfg.base_partition_path)) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("partition directory '{}' does not exist", cfg.base_partition_path));
  }
  PartitionedDataRepository repo(cfg, {.read_only = true});
  const Schema schema = repo.load_schema(c.schema);
  DataQueryRequest q;
  for (const auto& f : a.filters) q.filters.push_back(parse_filter(f));
  for (const auto& s : a.sorts) {
    const auto p = s.find(':');
    SortKey k{s.substr(0, p), SortDirection::kAsc};
    if (p != std::string::npos) {
      const std::string dir = s.substr(p + 1);
      if (dir == "desc")
        k.direction = SortDirection::kDesc;
      else if (dir != "asc") {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("--sort '{}': direction must be asc or desc", s));
      }
    }
    q.sort.push_back(k);
  }
  if (a.limit >= 0) q.limit = a.limit;
  q.offset = a.offset;
  if (!a.columns.empty()) q.columns = split(a.columns, ',');
  if (a.count) {
    std::printf("%lld\n", static_cast<long long>(repo.count_all(schema, q)));
    return 0;
  }
  RecordStream stream = repo.stream_query_results(schema, q);
  return print_stream(stream, a.format);
}

int cmd_sql(const Common& c, const std::string& sql, const std::string& format) {
  check_format(format);
  const PartitionConfig cfg = resolve_config(c);
  if (!fs::exists(cfg.base_partition_path)) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("partition directory '{}' does not exist", cfg.base_partition_path));
  }
  // Each table with the strategy it is stored with (one statement may join a monthly table and
  // one re-partitioned yearly), unless --strategy names one.
  PartitionedDataRepository repo(
      cfg, {.read_only = true, .tables_keep_their_strategy = c.strategy.empty()});
  RecordStream stream = repo.query_sql(sql);
  return print_stream(stream, format);
}

// ---- operations: cleanup, health-report, backup, restore
// ------------------------------------------

// Opens the store of an existing table for a lifecycle command.
struct OpenStore {
  PartitionedDataRepository repo;
  Schema schema;
  OpenStore(const PartitionConfig& cfg, const std::string& table, bool read_only)
      : repo(cfg, {.read_only = read_only}), schema(repo.load_schema(table)) {
    repo.initialize(schema);
  }
};

void require_store(const PartitionConfig& cfg, const std::string& table) {
  const std::string dir = cfg.base_partition_path + "/" + table;
  if (!fs::exists(dir)) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("no partitions of table '{}' in '{}'", table, dir));
  }
}

int cmd_cleanup(const Common& c, int retention_days, bool dry_run, const std::string& now,
                const std::string& archive, bool json) {
  const PartitionConfig cfg = resolve_config(c);
  require_store(cfg, c.schema);
  Date today;
  if (now.empty()) {
    const std::time_t t = std::time(nullptr);
    today = date_of(Timestamp{static_cast<int64_t>(t) * 1'000'000});
  } else {
    today = *parse_date_arg(now, "--now");
  }
  OpenStore s(cfg, c.schema, dry_run);
  PartitionUtilities u(s.repo);
  const CleanupResult r = u.cleanup(s.schema, retention_days, today, dry_run, archive);
  std::fputs((json ? r.to_json() + "\n" : r.to_text()).c_str(), stdout);
  return 0;
}

int cmd_health(const Common& c, const std::string& output) {
  const PartitionConfig cfg = resolve_config(c);
  require_store(cfg, c.schema);
  OpenStore s(cfg, c.schema, /*read_only=*/true);
  PartitionUtilities u(s.repo);
  const HealthReport r = u.health_report(s.schema);
  if (!output.empty()) {
    std::ofstream out(output, std::ios::trunc);
    out << r.to_json() << "\n";
    if (!out) throw Error(ErrorCode::kIo, fmt::format("cannot write health report '{}'", output));
  }
  std::fputs(r.summary().c_str(), stdout);
  if (!output.empty()) std::printf("report written to %s\n", output.c_str());
  return r.errors > 0 ? 1 : 0;
}

int cmd_backup(const Common& c, const std::string& partition, bool all, const std::string& to) {
  const PartitionConfig cfg = resolve_config(c);
  require_store(cfg, c.schema);
  if (to.empty()) throw Error(ErrorCode::kInvalidArgument, "backup needs --to DIR");
  if (all == !partition.empty()) {
    throw Error(ErrorCode::kInvalidArgument,
                "backup needs exactly one of --partition NAME or --all");
  }
  OpenStore s(cfg, c.schema, /*read_only=*/false);
  PartitionUtilities u(s.repo);
  std::vector<BackupManifestEntry> done;
  if (all) {
    done = u.backup_all(s.schema, to);
  } else {
    done.push_back(u.backup_partition(s.schema, partition, to));
  }
  uint64_t bytes = 0;
  for (const auto& b : done) {
    std::printf("%-28s %12lld rows %10s  xxh3-128 %s\n", b.file.c_str(),
                static_cast<long long>(b.rows), human_bytes(b.bytes).c_str(), b.xxh3_128.c_str());
    bytes += b.bytes;
  }
  std::printf("backed up %zu partition(s), %s, to %s (checksums in %s/manifest.json)\n",
              done.size(), human_bytes(bytes).c_str(), to.c_str(), to.c_str());
  return 0;
}

int cmd_restore(const Common& c, const std::string& from, bool verify_only) {
  if (from.empty()) throw Error(ErrorCode::kInvalidArgument, "restore needs --from PATH");
  const PartitionConfig cfg = resolve_config(c);
  require_store(cfg, c.schema);
  OpenStore s(cfg, c.schema, /*read_only=*/verify_only);
  PartitionUtilities u(s.repo);
  const RestoreResult r = u.restore(s.schema, from, verify_only);
  for (const auto& f : r.verified) std::printf("verified %s\n", f.c_str());
  for (const auto& p : r.restored) std::printf("restored %s\n", p.c_str());
  std::printf("%zu file(s) verified, %zu partition(s) restored\n", r.verified.size(),
              r.restored.size());
  return 0;
}

// ---- test: a self-check on a temporary directory
// ---------------------------------------------------

int cmd_compact(const Common& c, const std::string& partition, int block_size_kb, bool json) {
  const PartitionConfig cfg = resolve_config(c);
  require_store(cfg, c.schema);
  OpenStore st(cfg, c.schema, false);
  PartitionUtilities util(st.repo);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const CompactReport rep = util.compact(
      st.schema, partition,
      [&](const PartitionedDataRepository::CompactResult& r) {
        if (tty) std::fprintf(stderr, "\r\033[Kcompacted %s", r.name.c_str());
      },
      block_size_kb);
  if (tty) std::fprintf(stderr, "\r\033[K");
  std::printf("%s\n", json ? rep.to_json().c_str() : rep.to_text().c_str());
  return 0;
}

int cmd_import(const Common& c, const std::string& csv, const std::string& parquet,
               int64_t batch_size, bool null_partition, bool json) {
  if (csv.empty() == parquet.empty()) {
    throw Error(ErrorCode::kInvalidArgument, "give exactly one of --csv FILE or --parquet FILE");
  }
  PartitionConfig cfg = resolve_config(c);
  bound_bulk_memory(cfg);
  PartitionedDataRepository repo(cfg);
  ImportOptions o;
  o.format = csv.empty() ? "parquet" : "csv";
  o.batch_size = batch_size;
  o.null_partition = null_partition;
  o.stop = &g_stop;
  ProgressLine line;
  o.progress = [&](const ImportProgress& p) {
    const double pct = p.rows_total > 0 ? 100.0 * static_cast<double>(p.rows_done) /
                                              static_cast<double>(p.rows_total)
                                        : 0.0;
    if (p.rows_total == 0) {
      line.show("import: " + p.stage);
      return;
    }
    line.show(fmt::format("import: {}/{} rows ({:.1f}%), {:.0f} rows/s, ETA {:.0f}s, {}",
                          p.rows_done, p.rows_total, pct, p.rows_per_s, p.eta_s, p.stage),
              p.stage == "done");
  };
  stop_on_signals();
  const ImportResult r = import_file(repo, c.schema, csv.empty() ? parquet : csv, o);
  line.finish();
  std::printf("%s", json ? (r.to_json() + "\n").c_str() : r.to_text().c_str());
  if (r.interrupted) {
    std::fprintf(stderr,
                 "manage_partitions: interrupted after %lld batch(es); run the same import "
                 "command again to finish (rows already written are not written twice)\n",
                 static_cast<long long>(r.batches));
    return static_cast<int>(ErrorCode::kInterrupted);
  }
  return 0;
}

int cmd_export(const Common& c, const std::string& to, const std::string& format, bool json) {
  if (format != "parquet") {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("--format '{}': only parquet is supported", format));
  }
  const PartitionConfig cfg = resolve_config(c);
  require_store(cfg, c.schema);
  OpenStore st(cfg, c.schema, true);
  PartitionUtilities util(st.repo);
  ProgressLine line;
  stop_on_signals();
  const ExportResult r = util.export_parquet(
      st.schema, to,
      [&](const std::string& name, int64_t done, int64_t total) {
        line.show(fmt::format("export: {}/{} partitions, {}", done, total, name));
      },
      &g_stop);
  line.finish();
  std::printf("%s", json ? (r.to_json() + "\n").c_str() : r.to_text().c_str());
  return r.interrupted ? static_cast<int>(ErrorCode::kInterrupted) : 0;
}

int cmd_selftest(const Common& c) {
  PartitionConfig base = resolve_config(c);
  const fs::path dir = fs::temp_directory_path() / fmt::format("duckpart_selftest_{}", ::getpid());
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  int passed = 0, failed = 0;
  auto check = [&](const std::string& what, bool ok, const std::string& detail = "") {
    std::printf("%s  %s%s%s\n", ok ? "ok    " : "FAILED", what.c_str(), detail.empty() ? "" : ": ",
                detail.c_str());
    (ok ? passed : failed)++;
  };
  try {
    const Schema schema = Schema::well_production();
    generate_well_production((dir / "source.duckdb").string(),
                             {.rows = 50'000, .seed = 7, .months = 30});
    PartitionConfig cfg = base;
    cfg.base_partition_path = (dir / "partitions").string();
    DuckDBDataRepository single((dir / "source.duckdb").string(), {.read_only = true});
    std::vector<DataRecord> rows;
    {
      RecordStream all = single.stream_query_results(schema, {});
      DataRecord r;
      while (all.next(r)) rows.push_back(std::move(r));
    }
    check("generated and read 50000 source rows", rows.size() == 50'000);
    PartitionedDataRepository repo(cfg);
    const BatchResult w = repo.create_batch(schema, rows, {.batch_id = "selftest"});
    check("create_batch routed every row", w.rows_written == 50'000,
          fmt::format("{} rows into {} partitions", w.rows_written, w.partitions_written));
    const BatchResult again = repo.create_batch(schema, rows, {.batch_id = "selftest"});
    check("replaying the batch writes nothing",
          again.rows_written == 0 && again.rows_skipped == 50'000);
    check("count_all matches the single file", repo.count_all(schema) == single.count_all(schema));
    DataQueryRequest q;
    q.filters = {{"production_period", FilterOperator::kGte, Value("2022-01-01")},
                 {"production_period", FilterOperator::kLt, Value("2022-04-01")},
                 {"state", FilterOperator::kIn, std::vector<Value>{Value("TX"), Value("ND")}}};
    q.sort = {{"oil_bbl", SortDirection::kDesc}, {"id", SortDirection::kAsc}};
    q.limit = 25;
    q.offset = 5;
    const PaginatedResponse a = single.get_all(schema, q);
    const PaginatedResponse b = repo.get_all(schema, q);
    bool same = a.total == b.total && a.items.size() == b.items.size();
    for (std::size_t i = 0; same && i < a.items.size(); ++i) same = a.items[i] == b.items[i];
    check("a filtered, sorted page matches the single file", same,
          fmt::format("{} rows of {}; partitions scanned {} of {}", b.items.size(), b.total,
                      b.stats.partitions_scanned, b.stats.partitions_total));
    // The partitions holding rows of those three months, under the strategy in use.
    std::set<std::string> holding;
    const Date q_from = *parse_date("2022-01-01"), q_to = *parse_date("2022-04-01");
    for (const DataRecord& r : rows) {
      const Value& v = r.values[schema.partition_index()];
      if (v.is_null()) continue;
      const Date d = v.is<Date>() ? v.get<Date>() : date_of(v.get<Timestamp>());
      if (d >= q_from && d < q_to) holding.insert(partition_key_of(cfg.strategy, d).name());
    }
    check("the 3-month query was pruned",
          b.stats.partitions_scanned == static_cast<int64_t>(holding.size()),
          fmt::format("{} partitions scanned, {} hold those months", b.stats.partitions_scanned,
                      holding.size()));
    const Value id = rows[12'345].values[0];
    auto found = repo.get_by_id(schema, id);
    check("get_by_id finds a row", found.has_value() && found->values[0] == id);
    int64_t streamed = 0;
    RecordStream s = repo.stream_query_results(schema, q);
    streamed = s.for_each([](const DataRecord&) { return true; });
    check("stream_query_results yields the page", streamed == static_cast<int64_t>(b.items.size()));
  } catch (const Error& e) {
    check("no error", false, e.what());
  }
  fs::remove_all(dir, ec);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace

int run_manage_partitions(int argc, char** argv) {
  CLI::App app{
      "manage_partitions — time-partitioned DuckDB store: analyze, migrate, inspect, query.\n"
      "Examples:\n"
      "  manage_partitions analyze --schema well_production --strategy monthly\n"
      "  manage_partitions migrate --schema well_production --dry-run\n"
      "  manage_partitions migrate --schema well_production --batch-size 100000\n"
      "  manage_partitions stats\n"
      "  manage_partitions query --filter production_period:between:2023-01-01,2023-03-31 --count",
      "manage_partitions"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");

  Common common;
  bool json = false;

  auto* analyze =
      app.add_subcommand("analyze", "how a source table would be partitioned (writes nothing)");
  add_common(analyze, common);
  analyze->add_flag("--json", json, "machine-readable output");

  MigrateArgs margs;
  auto* migrate =
      app.add_subcommand("migrate", "copy a source table into partitions (resumable, verified)");
  add_common(migrate, common);
  migrate->add_option("--batch-size", margs.batch_size, "source rows per batch")
      ->capture_default_str()
      ->check(kWholeNumber)
      ->check(CLI::PositiveNumber);
  migrate->add_flag("--dry-run", margs.dry_run, "print the plan, write nothing");
  migrate->add_flag("--resume", margs.resume,
                    "finish an interrupted migration (a plain re-run does too)");
  migrate->add_flag("--no-verify", margs.no_verify,
                    "skip the per-period count and checksum verification");
  migrate->add_flag("--null-partition", margs.null_partition,
                    "route NULL partition values to partition_null.duckdb");
  migrate->add_option("--jobs", margs.jobs, "parallel partition writers (default: one per core)")
      ->check(kWholeNumber);
  migrate->add_option("--from", margs.from, "only rows with partition value >= DATE");
  migrate->add_option("--to", margs.to, "only rows with partition value < DATE");
  migrate->add_flag("--json", margs.json, "machine-readable summary");
  migrate
      ->add_option("--commit-interval", margs.commit_interval,
                   "seconds of streamed batches committed together (the most a kill -9 "
                   "loses; Ctrl-C commits what is done)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  migrate
      ->add_option("--open-partitions", margs.open_partitions,
                   "periods written at once (the source is scanned once per group)")
      ->capture_default_str()
      ->check(kWholeNumber)
      ->check(CLI::Range(1, 100000));
  migrate
      ->add_option("--direct-copy-rows", margs.direct_copy_rows,
                   "runs of at least this many consecutive source rows of one period (a source "
                   "sorted by time) are copied by one INSERT ... SELECT on all cores; 0 routes "
                   "every row")
      ->capture_default_str()
      ->check(kWholeNumber)
      ->check(CLI::NonNegativeNumber);
  migrate->add_flag("--replace-written", margs.replace_written,
                    "let the catch-up replace a period that differs from the source even when "
                    "the application or an import wrote to its partition since the migration "
                    "(those rows are lost unless the source has them)");
  migrate->add_flag("--from-partitions", margs.from_partitions,
                    "re-partition the existing partitions into --strategy (e.g. monthly -> "
                    "yearly); verified, then swapped atomically");

  bool stats_all = false;
  auto* stats = app.add_subcommand("stats", "per-partition rows, sizes, ranges");
  add_common(stats, common, false);
  stats->add_flag("--json", json, "machine-readable output");
  stats->add_flag("--all", stats_all, "every table under the partition directory");

  QueryArgs qargs;
  auto* query = app.add_subcommand("query", "rows of the partitioned table (streamed)");
  add_common(query, common, false);
  query->add_option("--filter", qargs.filters,
                    "FIELD:OP:VALUE (repeatable); OP: eq ne gt gte lt lte in not_in like between "
                    "is_null is_not_null; "
                    "lists comma-separated");
  query->add_option("--sort", qargs.sorts, "FIELD[:asc|desc] (repeatable)");
  query->add_option("--limit", qargs.limit, "at most N rows")
      ->check(kWholeNumber)
      ->check(CLI::NonNegativeNumber);
  query->add_option("--offset", qargs.offset, "skip N rows")->check(kWholeNumber);
  query->add_option("--columns", qargs.columns, "a,b,c");
  query->add_option("--format", qargs.format, "table, csv or json")->capture_default_str();
  query->add_flag("--count", qargs.count, "print only the number of matching rows");

  std::string sql_text, sql_format = "table";
  auto* sql = app.add_subcommand(
      "sql",
      "read-only SQL over the partitioned tables (partitions pruned on the partition column)\n"
      "Example: manage_partitions sql \"SELECT date_trunc('month', production_period) AS m, "
      "sum(oil_production) FROM well_production WHERE production_period BETWEEN "
      "'2023-01-01' AND '2023-03-31' GROUP BY m ORDER BY m\"");
  add_common(sql, common, false);
  sql->add_option("statement", sql_text, "one SELECT statement; table names are the schemas")
      ->required();
  sql->add_option("--format", sql_format, "table, csv or json")->capture_default_str();

  int retention_days = -1;
  bool cleanup_dry_run = false;
  std::string now, archive;
  auto* cleanup =
      app.add_subcommand("cleanup", "remove whole partitions older than a retention period");
  add_common(cleanup, common, false);
  cleanup
      ->add_option("--retention-days", retention_days,
                   "keep periods that ended less than N days ago")
      ->check(kWholeNumber)
      ->required();
  cleanup->add_flag("--dry-run", cleanup_dry_run, "list what would be removed, change nothing");
  cleanup->add_option("--now", now,
                      "today's date for the cut-off (default: today in UTC; partition periods are "
                      "the stored timestamps' own dates)");
  cleanup->add_option("--archive", archive, "back each partition up into DIR before removing it");
  cleanup->add_flag("--json", json, "machine-readable output");

  std::string health_output;
  auto* health =
      app.add_subcommand("health-report", "check every partition; exit 1 when an error is found");
  add_common(health, common, false);
  health->add_option("--output", health_output, "write the JSON report to FILE");

  std::string backup_partition_name, backup_to;
  bool backup_all = false;
  auto* backup =
      app.add_subcommand("backup", "consistent copies of partitions with a checksum manifest");
  add_common(backup, common, false);
  backup->add_option("--partition", backup_partition_name,
                     "partition name, e.g. partition_2023_12");
  backup->add_flag("--all", backup_all, "every partition");
  backup->add_option("--to", backup_to, "backup directory")->required();

  std::string restore_from;
  bool verify_only = false;
  auto* restore = app.add_subcommand("restore", "verify and restore partitions from a backup");
  add_common(restore, common, false);
  restore->add_option("--from", restore_from, "a backup file or a backup directory")->required();
  restore->add_flag("--verify-only", verify_only, "only check the checksums");

  std::string compact_partition;
  auto* compact = app.add_subcommand(
      "compact",
      "rewrite partitions sorted by the partition column (atomic; frees space of deleted rows)");
  add_common(compact, common, false);
  compact->add_option("--partition", compact_partition,
                      "one partition, e.g. partition_2023_12 (default: every partition)");
  int compact_block_kb = 0;
  compact
      ->add_option("--block-size-kb", compact_block_kb,
                   "DuckDB block size of the rewritten files: 16, 32, 64, 128 or 256; 0 "
                   "(default): automatic, 16 KB for a small partition when that makes its file "
                   "smaller, else 256 KB")
      ->check(kWholeNumber);
  compact->add_flag("--json", json, "machine-readable output");

  std::string import_csv, import_parquet;
  int64_t import_batch = 1'000'000;
  bool import_null_partition = false;
  auto* import = app.add_subcommand(
      "import",
      "load a CSV or Parquet file into the right partitions (all or nothing per file; a re-run "
      "finishes an interrupted import)\nExample: manage_partitions import --csv wells_2024.csv");
  add_common(import, common, false);
  import->add_option("--csv", import_csv, "CSV file with a header line");
  import->add_option("--parquet", import_parquet, "Parquet file");
  import->add_option("--batch-size", import_batch, "rows per batch")
      ->capture_default_str()
      ->check(kWholeNumber)
      ->check(CLI::PositiveNumber);
  import->add_flag("--null-partition", import_null_partition,
                   "route NULL partition values to partition_null.duckdb");
  import->add_flag("--json", json, "machine-readable summary");

  std::string export_to, export_format = "parquet";
  auto* exp = app.add_subcommand(
      "export",
      "hive-partitioned Parquet (year=2023/month=01/...) for DuckDB, Spark, Trino, ClickHouse; "
      "re-runs export only what changed\nExample: manage_partitions export --to /data/export");
  add_common(exp, common, false);
  exp->add_option("--to", export_to, "export directory")->required();
  exp->add_option("--format", export_format, "parquet")->capture_default_str();
  exp->add_flag("--json", json, "machine-readable summary");

  auto* selftest =
      app.add_subcommand("test", "self-check on a temporary directory (writes, queries, compares)");
  add_common(selftest, common, false);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ErrorCode::kInvalidArgument);
  }
  try {
    if (*analyze) return cmd_analyze(common, json);
    if (*migrate) return cmd_migrate(common, margs);
    if (*stats) return cmd_stats(common, json, stats_all);
    if (*query) return cmd_query(common, qargs);
    if (*sql) return cmd_sql(common, sql_text, sql_format);
    if (*cleanup) return cmd_cleanup(common, retention_days, cleanup_dry_run, now, archive, json);
    if (*health) return cmd_health(common, health_output);
    if (*backup) return cmd_backup(common, backup_partition_name, backup_all, backup_to);
    if (*restore) return cmd_restore(common, restore_from, verify_only);
    if (*compact) return cmd_compact(common, compact_partition, compact_block_kb, json);
    if (*import)
      return cmd_import(common, import_csv, import_parquet, import_batch, import_null_partition,
                        json);
    if (*exp) return cmd_export(common, export_to, export_format, json);
    if (*selftest) return cmd_selftest(common);
  } catch (const Error& e) {
    std::fprintf(stderr, "manage_partitions: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "manage_partitions: unexpected error: %s\n", e.what());
    return static_cast<int>(ErrorCode::kDuckDb);
  }
  return 0;
}

}  // namespace duckpart::cli
