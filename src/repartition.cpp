#include "duckpart/repartition.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "duckpart/partitioned_repository.hpp"
#include "duckpart/period.hpp"
#include "partition_files.hpp"

namespace fs = std::filesystem;

namespace duckpart {
namespace {

// The strategy of the partition files in `dir`, from their names; nullopt when there are none.
std::optional<PartitionStrategy> dir_strategy(const std::string& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (auto k = parse_partition_name(it->path().filename().string()); k && !k->is_null) {
      return k->strategy;
    }
  }
  return std::nullopt;
}

// How far the migration a table's record (_migration.json) describes got.
enum class MigrationRecord {
  kUnreadable,  // damaged or of another format: carried as it is, `migrate` names it
  kInGroup,     // stopped inside a commit group (an "intent")
  kUnfinished,  // stopped between groups: some window has batches left
  kCopied,      // every window copied to the same source rowid (checks may have kept periods)
};

MigrationRecord migration_record_state(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("options") || !j.contains("windows") ||
      !j["windows"].is_array()) {
    return MigrationRecord::kUnreadable;
  }
  if (j.contains("intent") && !j["intent"].is_null()) return MigrationRecord::kInGroup;
  if (j.contains("copied") && j["copied"].is_boolean()) {
    return j["copied"].get<bool>() ? MigrationRecord::kCopied : MigrationRecord::kUnfinished;
  }
  // (A record written before "copied": every window copied to the same rowid.)
  const nlohmann::json next = j.value("next", nlohmann::json::object());
  if (!next.is_object()) return MigrationRecord::kUnreadable;
  std::optional<int64_t> to;
  for (std::size_t w = 0; w < j["windows"].size(); ++w) {
    const auto it = next.find(std::to_string(w));
    if (it == next.end() || !it->is_number_integer()) return MigrationRecord::kUnfinished;
    if (to && *to != it->get<int64_t>()) return MigrationRecord::kUnfinished;
    to = it->get<int64_t>();
  }
  return MigrationRecord::kCopied;
}

// A copied migration's record restated for the table re-partitioned from `from` into `to`: its
// windows (period codes of `from`) become one window of `to`'s codes over the same dates (and
// the NULL period's, if it had one), each copied to the same source rowid, and its strategy
// becomes `to`. `migrate` run with the new strategy then resumes from it as from its own: it
// copies the source's rows added since and checks every period (before, it was refused, and
// deleting the record, as the refusal suggested, copied every row a second time).
std::string restated_migration(nlohmann::json j, PartitionStrategy from, PartitionStrategy to) {
  std::optional<int64_t> first, last;
  bool null_window = false;
  for (const auto& w : j["windows"]) {
    if (w.is_null()) {
      null_window = true;
      continue;
    }
    const int64_t a = w.at(0).get<int64_t>(), b = w.at(1).get<int64_t>();
    if (!first || a < *first) first = a;
    if (!last || b > *last) last = b;
  }
  const nlohmann::json next = j.value("next", nlohmann::json::object());
  const nlohmann::json done = next.empty() ? nlohmann::json() : next.begin().value();
  nlohmann::json windows = nlohmann::json::array();
  if (first) {
    const Date start = partition_key_from_code(from, *first).start();
    const Date end{partition_key_from_code(from, *last).end().days - 1};
    windows.push_back(nlohmann::json::array({partition_code_of(partition_key_of(to, start)),
                                             partition_code_of(partition_key_of(to, end))}));
  }
  if (null_window) windows.push_back(nullptr);
  nlohmann::json restated_next = nlohmann::json::object();
  if (!done.is_null()) {
    for (std::size_t w = 0; w < windows.size(); ++w) restated_next[std::to_string(w)] = done;
  }
  j["windows"] = windows;
  j["next"] = restated_next;
  j["options"]["strategy"] = std::string(strategy_name(to));
  return j.dump();
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_state(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) throw Error(ErrorCode::kIo, fmt::format("cannot write '{}' (disk full?)", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}'", path));
  }
  fsync_dir(fs::path(path).parent_path().string());
}

// What a writer changes in a table's directory: every partition file, write-ahead log and
// ingest log, with its size and modification time. Taken before the old partitions are read and
// again just before the exchange: rows written meanwhile (a writer that was not stopped) would be
// left behind with the old directory.
std::map<std::string, std::pair<uintmax_t, int64_t>> table_fingerprint(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, int64_t>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.ends_with(".duckdb") && !name.ends_with(".wal") && !name.starts_with("_ingest_")) {
      continue;
    }
    std::error_code fe;
    const uintmax_t size = fs::file_size(it->path(), fe);
    const auto mtime = fs::last_write_time(it->path(), fe);
    if (fe) continue;  // gone meanwhile: its absence is the difference
    out[name] = {size, static_cast<int64_t>(mtime.time_since_epoch().count())};
  }
  return out;
}

std::string first_difference(const std::map<std::string, std::pair<uintmax_t, int64_t>>& before,
                             const std::map<std::string, std::pair<uintmax_t, int64_t>>& now) {
  for (const auto& [name, st] : now) {
    auto it = before.find(name);
    if (it == before.end()) return fmt::format("'{}' appeared", name);
    if (it->second != st) return fmt::format("'{}' changed", name);
  }
  for (const auto& [name, st] : before) {
    if (!now.count(name)) return fmt::format("'{}' disappeared", name);
  }
  return {};
}

// An exclusive lock for one table's re-partitioning, held until destruction: a second run of the
// same table (two operators, a cron job) is refused instead of deleting the first one's work.
// The holder deletes the lock file before it lets go of the lock, so none stays behind; a run that
// opened the file just before that finds, once it holds the lock, that the path no longer names
// the file it locked, and starts again with a fresh one.
class RunLock {
 public:
  RunLock(const std::string& file, const std::string& table) : file_(file) {
    for (;;) {
      fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd_ < 0) {
        throw Error(ErrorCode::kIo,
                    fmt::format("cannot create lock file '{}': {}", file, std::strerror(errno)));
      }
      if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd_);
        throw Error(ErrorCode::kLocked,
                    fmt::format("another re-partitioning of table '{}' is running (it holds "
                                "'{}'); wait for it to finish",
                                table, file));
      }
      struct stat held {};
      struct stat named {};
      if (::fstat(fd_, &held) == 0 && ::stat(file.c_str(), &named) == 0 &&
          held.st_dev == named.st_dev && held.st_ino == named.st_ino) {
        return;
      }
      ::close(fd_);  // locked a file its holder had just deleted: again
    }
  }
  ~RunLock() {
    ::unlink(file_.c_str());  // (still holding the lock: no other run holds this file)
    ::close(fd_);
  }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  std::string file_;
  int fd_ = -1;
};

}  // namespace

RepartitionResult repartition(const PartitionConfig& config, const RepartitionOptions& options,
                              const std::function<void(const MigrationProgress&)>& progress,
                              const std::atomic<bool>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (options.batch_size <= 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("batch size {} must be positive", options.batch_size));
  }
  RepartitionResult res;
  res.to = options.to;
  res.dry_run = options.dry_run;
  const std::string base = config.base_partition_path;
  const std::string table = options.table;
  const std::string live = base + "/" + table;
  // Each table stages in its own directory (a shared one was deleted by another table's run).
  auto staging_base_for = [&](PartitionStrategy to) {
    return fmt::format("{}/_repartition_{}_of_{}", base, strategy_name(to), table);
  };
  const std::string staging_base = staging_base_for(options.to);
  const std::string staging = staging_base + "/" + table;
  const std::string old_aside = base + "/_repartition_old_" + table;
  const std::string state_file = base + "/_repartition_" + table + ".json";
  std::error_code ec;
  if (!fs::is_directory(base, ec)) {
    throw Error(ErrorCode::kNotFound, fmt::format("partition directory '{}' does not exist", base));
  }
  if (!fs::exists(live, ec) && !fs::exists(state_file, ec)) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("no partitions of table '{}' under '{}'", table, base));
  }
  std::optional<RunLock> run_lock;
  if (!options.dry_run) run_lock.emplace(base + "/_repartition_" + table + ".lock", table);

  // 0. A run that died after the exchange (or between the two renames of the fallback) is
  //    finished first — the run the state file describes, whatever this one asks for.
  if (fs::exists(state_file) && options.dry_run) {
    res.notes.push_back(fmt::format(
        "an interrupted re-partitioning of this table ('{}') is finished first by the real run",
        state_file));
  } else if (fs::exists(state_file)) {
    nlohmann::json st;
    try {
      std::ifstream in(state_file);
      st = nlohmann::json::parse(in);
      if (!st.is_object()) throw std::runtime_error("not a JSON object");
    } catch (const std::exception& e) {
      throw Error(ErrorCode::kCorruption,
                  fmt::format("cannot read '{}' ({}): it records an interrupted re-partitioning of "
                              "table '{}'; look at '{}' and '{}' before removing it",
                              state_file, e.what(), table, live, old_aside));
    }
    std::optional<PartitionStrategy> st_to;
    try {
      st_to = parse_strategy(st.value("to", std::string()));
    } catch (const Error&) {
      throw Error(ErrorCode::kCorruption,
                  fmt::format("'{}' names no strategy to finish re-partitioning into", state_file));
    }
    // Runs before session 45 staged in "_repartition_<strategy>" (shared by every table) and
    // recorded no "staging_base"; later ones record staging_base_for(to). Nothing else is taken
    // from the file (it names what gets deleted).
    const std::string legacy_base = fmt::format("{}/_repartition_{}", base, strategy_name(*st_to));
    // (By name: the base may be spelled differently this time, "parts" or "parts/".)
    const bool legacy = !(st.contains("staging_base") && st["staging_base"].is_string() &&
                          fs::path(st["staging_base"].get<std::string>()).filename() ==
                              fs::path(staging_base_for(*st_to)).filename());
    const std::string st_staging_base = legacy ? legacy_base : staging_base_for(*st_to);
    const std::string st_staging = st_staging_base + "/" + table;
    const bool live_exists = fs::exists(live);
    bool finished = false;
    if (live_exists && dir_strategy(live) == st_to) {
      finished = true;  // exchanged: the staging directory holds the old files
    } else if (!live_exists && fs::exists(st_staging) && dir_strategy(st_staging) == st_to) {
      // The fallback died between its two renames: the new layout goes in.
      if (std::rename(st_staging.c_str(), live.c_str()) != 0) {
        throw Error(ErrorCode::kIo, fmt::format("cannot move '{}' to '{}': {}", st_staging, live,
                                                std::strerror(errno)));
      }
      fsync_dir(base);
      finished = true;
    } else if (!live_exists && fs::exists(old_aside)) {
      // Moved aside and never replaced: the old layout goes back.
      if (std::rename(old_aside.c_str(), live.c_str()) != 0) {
        throw Error(ErrorCode::kIo, fmt::format("cannot move '{}' back to '{}': {}", old_aside,
                                                live, std::strerror(errno)));
      }
      fsync_dir(base);
    } else if (!live_exists) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("table '{}' is in neither '{}', '{}' nor '{}' although '{}' records "
                              "a re-partitioning in progress; nothing was changed",
                              table, live, st_staging, old_aside, state_file));
    }
    if (finished) {
      if (!legacy) {
        fs::remove_all(st_staging_base, ec);
      } else {
        fs::remove_all(st_staging, ec);   // the shared directory of an older version: ours only
        fs::remove(st_staging_base, ec);  // (removed when empty)
      }
      fs::remove_all(old_aside, ec);
    }
    fs::remove(state_file, ec);
    fsync_dir(base);
    if (finished && *st_to == options.to) {
      res.from = options.to;
      res.swapped = true;
      res.seconds = elapsed();
      return res;
    }
  }
  if (!options.dry_run) {
    // Staging this run cannot resume (an interrupted run into another strategy, or an older
    // version's in the shared directory) is a whole copy of the table left on disk: it goes.
    for (PartitionStrategy s : {PartitionStrategy::kYearly, PartitionStrategy::kMonthly,
                                PartitionStrategy::kWeekly, PartitionStrategy::kDaily}) {
      if (s != options.to) fs::remove_all(staging_base_for(s), ec);
      const std::string legacy = fmt::format("{}/_repartition_{}", base, strategy_name(s));
      if (fs::exists(legacy + "/" + table, ec)) {
        fs::remove_all(legacy + "/" + table, ec);
        fs::remove(legacy, ec);  // (when empty)
      }
    }
  }

  // 1. The old partitions.
  const auto from = dir_strategy(live);
  if (!from && options.dry_run && fs::exists(state_file, ec)) {
    res.seconds = elapsed();  // (the note says the real run finishes the interrupted one)
    return res;
  }
  if (!from) {
    throw Error(ErrorCode::kNotFound,
                fmt::format("no partitions of table '{}' under '{}'", table, base));
  }
  res.from = *from;
  if (*from == options.to) {
    // Already done (perhaps by a run that was killed just before reporting): nothing to do.
    if (!options.dry_run) fs::remove_all(staging_base, ec);
    res.already_done = true;
    res.seconds = elapsed();
    return res;
  }
  {
    // A migration into this table stopped inside a commit group (its "intent"): its re-run
    // loads that group again under the same batch id, which partitions that committed it skip
    // — by the old layout's partitions and ids — so it is finished first. (A migration that
    // finished with periods it kept, "completed": false, or that was stopped between groups is
    // not: its record goes with the table, and `migrate` resumes or checks from it.)
    const std::string migration = live + "/_migration.json";
    MigrationRecord state = MigrationRecord::kUnreadable;
    if (fs::exists(migration, ec)) {
      try {
        std::ifstream in(migration);
        state = migration_record_state(nlohmann::json::parse(in));
      } catch (const std::exception&) {
        state = MigrationRecord::kUnreadable;  // damaged: carried as it is; `migrate` names it
      }
    }
    if (state == MigrationRecord::kInGroup) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("a migration into table '{}' stopped in the middle of a commit "
                              "('{}'): run the same migrate command again to finish it, then "
                              "re-partition (nothing was re-partitioned)",
                              table, migration));
    }
    // Its record counts copied rows per window of the old strategy's periods: a migration that
    // has batches left could not be resumed in the new layout (and started over, it would copy
    // the rows already copied a second time).
    if (state == MigrationRecord::kUnfinished) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("a migration into table '{}' was stopped before it copied every "
                              "batch ('{}'): run the same migrate command with --resume to "
                              "finish it, then re-partition (nothing was re-partitioned)",
                              table, migration));
    }
  }
  PartitionConfig old_cfg = config;
  old_cfg.strategy = *from;
  Schema schema;
  std::vector<PartitionStatistics> olds;
  // Acknowledged rows still in ingest logs would be left behind with the old directory (and their
  // batch ids could be carried without their rows): a real run applies them first, by one
  // writable open of the old layout (writers are stopped; a running one holds its log, and that
  // open fails with kLocked naming it). A dry run notes them.
  std::map<std::string, std::pair<uintmax_t, int64_t>> fingerprint;
  for (int attempt = 0;; ++attempt) {
    std::vector<std::string> pending;
    olds.clear();
    fingerprint = table_fingerprint(live);  // before the listing: anything later is a change
    {
      PartitionedDataRepository old_repo(old_cfg, {.read_only = true});
      schema = old_repo.load_schema(table);
      old_repo.initialize(schema);
      const SchemaStatistics s = old_repo.table_statistics(schema);
      for (const std::string& problem : s.problems) {
        if (problem.find("ingest log") != std::string::npos) pending.push_back(problem);
      }
      if (pending.empty() || options.dry_run) {
        for (const auto& p : s.partitions) {
          if (p.locked) {
            throw Error(ErrorCode::kLocked,
                        fmt::format("partition {} ('{}') is held by another process: {}; stop "
                                    "that process, then re-partition",
                                    p.name, p.file, p.problem));
          }
          if (!p.problem.empty()) {
            throw Error(ErrorCode::kCorruption,
                        fmt::format("partition {} ('{}') cannot be read: {}; restore it first",
                                    p.name, p.file, p.problem));
          }
          olds.push_back(p);
        }
      }
    }
    if (pending.empty()) break;
    if (options.dry_run) {
      for (const std::string& p : pending) {
        res.notes.push_back(fmt::format(
            "{} (the plan leaves these rows out; the real run commits them first, or fails "
            "\"locked\" while a running writer holds the log)",
            p));
      }
      break;
    }
    if (attempt > 0) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("table '{}' has new buffered rows not in its partitions after its "
                              "earlier ones were committed (a writer is running?): {}; stop the "
                              "writers, then re-partition (nothing was re-partitioned)",
                              table, pending.front()));
    }
    try {
      PartitionedDataRepository writer(old_cfg);
      writer.initialize(schema);
      writer.table_statistics(schema);  // replays the table's logs, then commits their rows
    } catch (const Error& e) {
      throw Error(e.code(),
                  fmt::format("committing the buffered rows of table '{}' before re-partitioning "
                              "it: {}; nothing was re-partitioned",
                              table, e.what()));
    }
    res.notes.push_back(
        fmt::format("committed the buffered rows of {} ingest log(s) to the old partitions first",
                    pending.size()));
  }
  res.partitions_before = static_cast<int64_t>(olds.size());
  {
    // The partitions listed are the partition files the fingerprint saw (one created between the
    // two would be neither copied nor verified, and deleted with the old directory).
    std::set<std::string> listed, seen;
    for (const auto& p : olds) listed.insert(fs::path(p.file).filename().string());
    for (const auto& [name, st] : fingerprint) {
      if (name.ends_with(".duckdb") && parse_partition_name(name)) seen.insert(name);
    }
    if (listed != seen && !options.dry_run) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("table '{}' changed while it was being listed ({} partition files "
                              "on disk, {} listed): nothing was re-partitioned; stop the writers, "
                              "then run again",
                              table, seen.size(), listed.size()));
    }
  }

  // 2. Exact rows and checksums per new period, and each old file's rowid extent, in one pass.
  std::string cols;
  for (const auto& c : schema.columns())
    cols += (cols.empty() ? "" : ", ") + duck::quote_ident(c.name);
  const std::string qt = duck::quote_ident(table);
  std::map<PartitionKey, std::pair<int64_t, std::string>> expected;
  std::vector<int64_t> rowid_end(olds.size(), 0);
  // Each old partition's batch ids with their rows (not an earlier re-partition's own).
  std::vector<std::map<std::string, int64_t>> old_batches(olds.size());
  {
    duck::Database mem = duck::Database::open(":memory:");
    duck::Connection c = mem.connect();
    c.exec("CREATE TABLE acc(code BIGINT, n BIGINT, s HUGEINT)");
    const std::string code =
        partition_code_sql(options.to, duck::quote_ident(schema.partition_column()));
    for (std::size_t i = 0; i < olds.size(); ++i) {
      const std::string ctx =
          fmt::format("reading partition {} ('{}')", olds[i].name, olds[i].file);
      c.exec(fmt::format("ATTACH {} AS old (READ_ONLY)", duck::quote_literal(olds[i].file)), ctx);
      c.exec(fmt::format("INSERT INTO acc SELECT {}, count(*), sum(CAST(hash({}) AS HUGEINT)) FROM "
                         "old.main.{} GROUP BY 1",
                         code, cols, qt),
             ctx);
      rowid_end[i] =
          c.query_int(fmt::format("SELECT coalesce(max(rowid) + 1, 0) FROM old.main.{}", qt), ctx);
      {
        duck::Result br = c.query(
            fmt::format("SELECT batch_id, sum(row_count)::BIGINT FROM old.main.{} WHERE batch_id "
                        "IS NOT NULL GROUP BY 1",
                        kBatchesTable),
            ctx);
        duck::ChunkDecoder bdec(br);
        std::vector<DataRecord> ids;
        while (auto chunk = br.fetch()) bdec.decode(chunk, ids);
        bool unmarked = false;
        for (const auto& r : ids) {
          const std::string id = r.values[0].get<std::string>();
          if (id.starts_with(kRepartitionBatchPrefix)) continue;  // an earlier one's copies
          if (id.starts_with(kUnmarkedRepartitionBatchPrefix)) {
            unmarked = true;
            continue;
          }
          old_batches[i][id] = r.values[1].is_null() ? 0 : r.values[1].get<int64_t>();
        }
        // Written by a re-partitioning of a version that left ids it could not carry unmarked:
        // its copies may hold others' rows, which the new partitions are marked as holding.
        if (unmarked) {
          old_batches[i][std::string(kMergedBatchesPrefix) +
                         "an earlier re-partitioning's copies (ids it did not carry unknown)"] = 0;
        }
      }
      c.exec("DETACH old", ctx);
    }
    duck::Result r = c.query(
        "SELECT code, sum(n)::BIGINT, CAST(coalesce(sum(s), 0) AS VARCHAR) FROM acc GROUP BY code "
        "ORDER BY code NULLS LAST");
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> rows;
    while (auto chunk = r.fetch()) dec.decode(chunk, rows);
    for (const auto& row : rows) {
      PartitionKey key;
      if (row.values[0].is_null()) {
        key.strategy = options.to;
        key.is_null = true;
      } else {
        key = partition_key_from_code(options.to, row.values[0].get<int64_t>());
      }
      const int64_t n = row.values[1].get<int64_t>();
      expected[key] = {n, row.values[2].to_string()};
      res.planned.emplace_back(key.name(), n);
      res.rows += n;
    }
  }
  res.partitions_after = static_cast<int64_t>(expected.size());
  if (res.rows == 0 && !options.dry_run) {
    fs::remove_all(staging_base, ec);  // an interrupted run's, if any
    // Its partitions' batch ids would go with them, and nothing would take their place.
    res.notes.push_back(fmt::format(
        "the table's {} partition(s) hold no rows: nothing was re-partitioned (drop them, or write "
        "rows first)",
        olds.size()));
    res.seconds = elapsed();
    return res;
  }
  if (options.dry_run) {
    res.seconds = elapsed();
    return res;
  }

  std::set<std::string> left_behind_ids;  // batch ids not carried (merged periods)
  // 3. Copy into the staging store; batch ids make a re-run skip what committed. A re-run cuts
  //    the old partitions' rows into the batches the interrupted run cut (recorded in the staging
  //    directory), whatever --batch-size it is given: other cuts would overlap committed ones.
  int64_t batch_size = options.batch_size;
  const std::string run_file = staging_base + "/_run.json";
  if (fs::exists(staging_base)) {
    int64_t recorded = 0;
    bool same_source = false;
    bool same_ids = true;
    try {
      std::ifstream in(run_file);
      const nlohmann::json j = nlohmann::json::parse(in);
      recorded = j.at("batch_size").get<int64_t>();
      // (A run of a version before session 46 named its batches otherwise: copied afresh.)
      same_ids = j.value("batch_ids", std::string()) == kRepartitionBatchPrefix;
      same_source = j.at("from").get<std::string>() == strategy_name(*from) &&
                    j.at("source") == nlohmann::json(fingerprint) && same_ids;
    } catch (const std::exception&) {
      recorded = 0;
    }
    if (recorded > 0 && !same_source && !same_ids) {
      res.notes.push_back(
          "the interrupted run was made by an older version (other batch ids): its copy was "
          "discarded and the table copied again");
    } else if (recorded > 0 && !same_source) {
      // The old partitions changed since the interrupted run copied them (its batches would be
      // skipped by their ids with rows they never held): copied again from the start.
      res.notes.push_back(
          "the table changed since the interrupted run: its copy was discarded and the table "
          "copied again");
    }
    if (recorded <= 0 || !same_source) {
      fs::remove_all(staging_base, ec);  // not a run this one can resume: start over
    } else if (recorded != batch_size) {
      res.notes.push_back(
          fmt::format("resumed with the interrupted run's batch size {} (not {}): the batches "
                      "it committed are skipped by their ids",
                      recorded, batch_size));
      batch_size = recorded;
    }
  }
  fs::create_directories(staging_base, ec);
  if (ec) {
    throw Error(ErrorCode::kIo, fmt::format("cannot create '{}': {}", staging_base, ec.message()));
  }
  write_state(run_file, {{"table", table},
                         {"from", strategy_name(*from)},
                         {"to", strategy_name(options.to)},
                         {"batch_size", batch_size},
                         {"batch_ids", kRepartitionBatchPrefix},
                         {"source", fingerprint}});
  PartitionConfig new_cfg = config;
  new_cfg.base_partition_path = staging_base;
  new_cfg.strategy = options.to;
  new_cfg.auto_partition_enabled = true;
  {
    PartitionedDataRepository repo(new_cfg);
    int64_t batches_total = 0;
    for (int64_t e : rowid_end) batches_total += (e + batch_size - 1) / batch_size;
    MigrationProgress p;
    p.rows_total = res.rows;
    p.batches_total = batches_total;
    for (std::size_t i = 0; i < olds.size() && !res.interrupted; ++i) {
      const std::string alias = "repartition_old_" + std::to_string(i);
      repo.attach_database(olds[i].file, alias, /*read_only=*/true);
      struct Detach {
        PartitionedDataRepository& repo;
        std::string alias;
        ~Detach() { repo.detach_database(alias); }
      } detach{repo, alias};
      // An old period inside one new period (monthly -> yearly, daily -> monthly, ...) is
      // copied by INSERT ... SELECT on all cores (BulkLoad::load_into, which checks every row
      // belongs there); otherwise its rows are routed.
      std::optional<PartitionKey> target;
      if (!olds[i].period_start) {
        target = null_partition_key(options.to);
      } else {
        const PartitionKey first = partition_key_of(options.to, *olds[i].period_start);
        if (first == partition_key_of(options.to, Date{olds[i].period_end->days - 1})) {
          target = first;
        }
      }
      for (int64_t k = 0; k * batch_size < rowid_end[i]; ++k) {
        if (stop && stop->load()) {
          res.interrupted = true;
          break;
        }
        // The id names the rowid range it copies: a re-run with another --batch-size copies
        // its ranges afresh instead of taking another range's id for its own.
        const std::string batch_id =
            fmt::format("{}{}-{}-{}", kRepartitionBatchPrefix, olds[i].name, k * batch_size,
                        (k + 1) * batch_size);
        const std::string select_sql =
            fmt::format("SELECT * FROM {}.main.{} WHERE rowid >= {} AND rowid < {}",
                        duck::quote_ident(alias), qt, k * batch_size, (k + 1) * batch_size);
        auto load = repo.begin_bulk_load(
            schema,
            {.replay_batch_id = batch_id, .null_partition = true, .single_duckdb_thread = false});
        bool routed = !target;
        if (target) {
          try {
            load->load_into(*target, select_sql);
          } catch (const Error& e) {
            // A row outside its old file's period (written there by hand, or by an old
            // version): nothing was copied; route this batch instead.
            if (e.code() != ErrorCode::kInvalidArgument) throw;
            routed = true;
          }
        }
        if (routed) load->load(select_sql);
        const BatchResult br = load->commit(batch_id);
        res.rows_copied += br.rows_written;
        res.rows_skipped += br.rows_skipped;
        ++p.batches_done;
        p.rows_done = res.rows_copied + res.rows_skipped;
        p.elapsed_s = elapsed();
        p.rows_per_s = p.elapsed_s > 0 ? static_cast<double>(p.rows_done) / p.elapsed_s : 0;
        p.eta_s =
            p.rows_per_s > 0 ? static_cast<double>(p.rows_total - p.rows_done) / p.rows_per_s : 0;
        p.current = olds[i].name;
        if (progress) progress(p);
      }
    }
    if (res.interrupted) {
      res.seconds = elapsed();
      return res;
    }
    // 4. Verify every new period against what the old partitions hold for it.
    if (options.verify) {
      if (progress) {
        p.current = "verifying";
        progress(p);
      }
      std::map<PartitionKey, PartitionedDataRepository::PartitionChecksum> got;
      for (auto& c : repo.checksum_partitions(schema)) got[c.key] = c;
      for (const auto& [key, want] : expected) {
        PeriodCheck ch;
        ch.name = key.name();
        ch.source_rows = want.first;
        ch.source_checksum = want.second;
        if (auto it = got.find(key); it != got.end()) {
          ch.partition_rows = it->second.rows;
          ch.partition_checksum = it->second.checksum;
          got.erase(it);
        }
        ch.ok = ch.source_rows == ch.partition_rows && ch.source_checksum == ch.partition_checksum;
        if (!ch.ok) ++res.mismatches;
        res.checks.push_back(std::move(ch));
      }
      for (const auto& [key, c] : got) {  // periods the old partitions do not have
        if (c.rows == 0) continue;
        PeriodCheck ch;
        ch.name = c.name;
        ch.partition_rows = c.rows;
        ch.partition_checksum = c.checksum;
        ++res.mismatches;
        res.checks.push_back(std::move(ch));
      }
      res.verified = true;
    }
    if (res.mismatches == 0) {
      // 4b. Carry the batch ids (an application's retries, imports, migrations) once the copy is
      //     verified: a new partition records an id when every old partition its period overlaps
      //     holds it, so that a retried batch is skipped there exactly as before. Exact when
      //     periods split (yearly -> monthly: each month had the year's ids); when they merge, an
      //     id some of the merged periods lack stays behind (it may stand for rows of those
      //     periods that were never committed).
      // An import's batch (import-<file id>-<n>) is whole when the old partitions together hold
      // all its rows (the file's row count and batch size are in _imports.json): carried to
      // every new period that overlaps a partition holding it, however the periods merge.
      std::set<std::string> whole;
      {
        nlohmann::json imports;
        try {
          std::ifstream in(live + "/_imports.json");
          if (in) imports = nlohmann::json::parse(in);
        } catch (const std::exception&) {
          imports = nullptr;
        }
        std::map<std::string, int64_t> held;
        for (const auto& b : old_batches) {
          for (const auto& [id, n] : b) held[id] += n;
        }
        for (const auto& [id, n] : held) {
          const std::size_t dash = id.rfind('-');
          if (!id.starts_with("import-") || dash == std::string::npos || dash <= 7 ||
              !imports.is_object()) {
            continue;
          }
          const std::string file_id = id.substr(7, dash - 7);
          const auto it = imports.find(file_id);
          if (it == imports.end() || !it->is_object()) continue;
          try {
            const int64_t rows = it->at("rows").get<int64_t>();
            const int64_t size = it->at("batch_size").get<int64_t>();
            const int64_t b = std::stoll(id.substr(dash + 1));
            if (size > 0 && b >= 0 && n == std::min(size, rows - b * size)) whole.insert(id);
          } catch (const std::exception&) {
          }
        }
      }
      // Each old partition's rows of an id go to one new partition (the first, in time, that
      // records the id), so that the new partitions together hold the same count as the old
      // ones: an import batch held whole stays whole for the next re-partitioning (daily ->
      // monthly -> yearly).
      std::set<std::pair<std::size_t, std::string>> counted;
      for (const auto& [key, want] : expected) {
        std::optional<std::map<std::string, int64_t>> common;
        std::set<std::string> any;  // ids some overlapping old partition holds
        std::vector<std::size_t> overlapping;
        for (std::size_t i = 0; i < olds.size(); ++i) {
          const bool overlaps = key.is_null ? !olds[i].period_start
                                            : olds[i].period_start &&
                                                  olds[i].period_start->days < key.end().days &&
                                                  olds[i].period_end->days > key.start().days;
          if (!overlaps) continue;
          overlapping.push_back(i);
          for (const auto& kv : old_batches[i]) any.insert(kv.first);
          if (!common) {
            common = old_batches[i];
            continue;
          }
          for (auto it = common->begin(); it != common->end();) {
            auto found = old_batches[i].find(it->first);
            if (found == old_batches[i].end()) {
              it = common->erase(it);
            } else {
              ++it;
            }
          }
        }
        std::set<std::string> carried;
        if (common) {
          for (const auto& kv : *common) carried.insert(kv.first);
        }
        std::vector<std::string> left_here;
        for (const std::string& id : any) {
          if (whole.count(id)) carried.insert(id);
          // (A migration's ids, migrate: and migrate-catchup:, are not retried: `migrate`
          // resumes from its record.)
          if (!carried.count(id) && !id.starts_with(kMigrateBatchPrefix) &&
              !id.starts_with(kCatchupBatchPrefix)) {
            if (!id.starts_with(kMergedBatchesPrefix)) left_behind_ids.insert(id);
            left_here.push_back(id);
          }
        }
        auto take_rows = [&](const std::string& id) {
          int64_t rows = 0;
          for (const std::size_t i : overlapping) {
            const auto it = old_batches[i].find(id);
            if (it != old_batches[i].end() && counted.insert({i, id}).second) rows += it->second;
          }
          return rows;
        };
        std::vector<PartitionedDataRepository::CommittedBatch> ids;
        for (const auto& id : carried) ids.push_back({id, take_rows(id), Timestamp{}});
        if (!left_here.empty()) {
          // The rows of ids not carried are in this partition all the same: a marker says that
          // something other than a migration wrote here, so that `migrate`'s catch-up keeps the
          // period instead of replacing it with the source's rows.
          int64_t rows = 0;
          for (const auto& id : left_here) rows += take_rows(id);
          ids.push_back({fmt::format("{}{} batch id(s) such as '{}'", kMergedBatchesPrefix,
                                     left_here.size(), left_here.front()),
                         rows, Timestamp{}});
        }
        if (ids.empty()) continue;
        try {
          repo.record_batch_ids(schema, key.name(), ids);
        } catch (const Error& e) {
          if (e.code() != ErrorCode::kNotFound) throw;  // a period without rows: no partition
        }
      }
    }
    repo.flush();
  }
  if (res.mismatches == 0 && !left_behind_ids.empty()) {
    res.notes.push_back(fmt::format(
        "{} batch id(s) held by only some of the merged periods were not carried (for example "
        "'{}'): a retry of such a batch writes its rows again",
        left_behind_ids.size(), *left_behind_ids.begin()));
  }
  if (res.mismatches > 0) {
    // The old partitions changed during the copy (or the copy is wrong): start over next time.
    fs::remove_all(staging_base, ec);
    res.seconds = elapsed();
    return res;
  }

  // The table's record of imported files (how each file's batches were cut) and of its finished
  // migration go with it, synced before the exchange (the old directory is deleted right after
  // it). (Without the migration's record, `migrate` run again took the table for a new one and
  // copied every row a second time.)
  for (const char* name : {"_imports.json", "_migration.json"}) {
    const std::string source = live + "/" + name;
    if (!fs::exists(source, ec)) continue;
    std::ifstream in(source, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (std::string_view(name) == "_migration.json") {
      try {
        const nlohmann::json j = nlohmann::json::parse(text);
        // (Only a record of the strategy the table had: one carried as it was by an older
        // version names an earlier strategy, and its codes would be read as the wrong periods.)
        if (migration_record_state(j) == MigrationRecord::kCopied &&
            j["options"].value("strategy", std::string()) == strategy_name(*from)) {
          text = restated_migration(j, *from, options.to);
        }
      } catch (const std::exception&) {
        // damaged: carried as it is; `migrate` names it
      }
    }
    const std::string target = staging + "/" + name;
    const std::string tmp = target + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = in.good() || in.eof();
    ok = ok && fd >= 0 &&
         ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
         ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!ok || std::rename(tmp.c_str(), target.c_str()) != 0) {
      fs::remove(tmp, ec);
      throw Error(ErrorCode::kIo,
                  fmt::format("cannot copy '{}' to '{}' (disk full?)", source, target));
    }
    fsync_dir(staging);
  }
  // 5. Nothing may have changed in the old partitions since they were read (a writer that was not
  //    stopped): their new rows would be deleted with the old directory.
  if (const std::string diff = first_difference(fingerprint, table_fingerprint(live));
      !diff.empty()) {
    fs::remove_all(staging_base, ec);
    throw Error(ErrorCode::kConflict,
                fmt::format("table '{}' changed while it was being re-partitioned ({} in '{}'): "
                            "nothing was swapped, the old partitions are unchanged and in use; "
                            "stop the writers (and backups, which checkpoint partitions), then "
                            "run again",
                            table, diff, live));
  }
  if (!fs::is_directory(staging, ec)) {
    throw Error(ErrorCode::kIo, fmt::format("the new partitions of table '{}' are missing from "
                                            "'{}'; nothing was swapped, run again",
                                            table, staging));
  }
  // 6. Exchange the directories in one atomic rename, then remove the old partitions.
  write_state(state_file, {{"table", table},
                           {"from", strategy_name(*from)},
                           {"to", strategy_name(options.to)},
                           {"staging_base", staging_base},
                           {"phase", "exchanging"}});
  if (::renameat2(AT_FDCWD, live.c_str(), AT_FDCWD, staging.c_str(), RENAME_EXCHANGE) != 0) {
    const int err = errno;
    if (err != EINVAL && err != ENOSYS && err != ENOTSUP) {
      fs::remove(state_file, ec);
      throw Error(ErrorCode::kIo,
                  fmt::format("cannot exchange '{}' and '{}': {}; nothing was swapped", live,
                              staging, std::strerror(err)));
    }
    // File systems without RENAME_EXCHANGE: two renames; step 0 above finishes a crash between.
    // (A directory left aside here without a state file is what a finished run had started to
    // delete.)
    fs::remove_all(old_aside, ec);
    if (std::rename(live.c_str(), old_aside.c_str()) != 0) {
      const int e1 = errno;
      fs::remove(state_file, ec);
      throw Error(ErrorCode::kIo, fmt::format("cannot move '{}' to '{}': {}; nothing was swapped",
                                              live, old_aside, std::strerror(e1)));
    }
    if (std::rename(staging.c_str(), live.c_str()) != 0) {
      const int e2 = errno;
      if (std::rename(old_aside.c_str(), live.c_str()) == 0) {
        fs::remove(state_file, ec);
        throw Error(ErrorCode::kIo, fmt::format("cannot move '{}' to '{}': {}; nothing was swapped",
                                                staging, live, std::strerror(e2)));
      }
      throw Error(ErrorCode::kIo,
                  fmt::format("cannot move the new partitions from '{}' to '{}' ({}), and the old "
                              "ones are in '{}'; run the same command again to finish",
                              staging, live, std::strerror(e2), old_aside));
    }
  }
  fsync_dir(base);
  fs::remove_all(staging_base, ec);
  fs::remove_all(old_aside, ec);
  fs::remove(state_file, ec);
  fsync_dir(base);
  res.swapped = true;
  res.seconds = elapsed();
  return res;
}

std::string RepartitionResult::to_text() const {
  std::string out;
  if (already_done) {
    return fmt::format("the table is already partitioned {}: nothing to do\n", strategy_name(to));
  }
  if (dry_run && partitions_before == 0 && planned.empty() && !notes.empty()) {
    for (const auto& n : notes) out += "note: " + n + "\n";
    return out + "dry run: nothing was written\n";
  }
  if (dry_run) {
    out += fmt::format("plan: re-partition {} partitions ({}) into {} partitions ({}), {} rows\n",
                       partitions_before, strategy_name(from), partitions_after, strategy_name(to),
                       rows);
    for (const auto& [name, n] : planned)
      out += fmt::format("  create {:<28} {:>12} rows\n", name, n);
    for (const auto& n : notes) out += "note: " + n + "\n";
    out += "dry run: nothing was written\n";
    return out;
  }
  if (swapped && partitions_before == 0 && rows == 0) {
    return fmt::format("finished an interrupted re-partitioning: the table is now partitioned {}\n",
                       strategy_name(to));
  }
  if (from == to) {
    return fmt::format("the table is already partitioned {}: nothing to do\n", strategy_name(to));
  }
  for (const auto& n : notes) out += "note: " + n + "\n";
  if (rows == 0 && !swapped && !interrupted && mismatches == 0) return out;  // nothing to copy
  out += fmt::format(
      "re-partitioned {} -> {}: {} partitions -> {}, {} rows ({} copied by this run, {} by an "
      "earlier run) in {:.2f} s\n",
      strategy_name(from), strategy_name(to), partitions_before, partitions_after, rows,
      rows_copied, rows_skipped, seconds);
  if (verified) {
    out += fmt::format(
        "verified {} periods (row count and checksum over all columns): {} "
        "mismatch(es)\n",
        checks.size(), mismatches);
  }
  if (swapped) {
    out +=
        "the new partitions replaced the old ones (atomic directory exchange); old files removed\n";
  } else if (interrupted) {
    out += "interrupted: run the same command again to finish\n";
  } else if (mismatches > 0) {
    out += "NOT swapped: the old partitions are unchanged and still in use\n";
  }
  return out;
}

std::string RepartitionResult::to_json() const {
  nlohmann::ordered_json j;
  j["from"] = strategy_name(from);
  j["to"] = strategy_name(to);
  j["partitions_before"] = partitions_before;
  j["partitions_after"] = partitions_after;
  j["rows"] = rows;
  j["rows_copied"] = rows_copied;
  j["rows_skipped"] = rows_skipped;
  j["verified"] = verified;
  j["mismatches"] = mismatches;
  j["swapped"] = swapped;
  j["interrupted"] = interrupted;
  j["dry_run"] = dry_run;
  j["already_done"] = already_done;
  j["seconds"] = seconds;
  auto plan = nlohmann::ordered_json::array();
  for (const auto& [name, n] : planned) plan.push_back({{"partition", name}, {"rows", n}});
  j["partitions"] = plan;
  auto checks_j = nlohmann::ordered_json::array();
  for (const auto& ch : checks) {
    checks_j.push_back({{"partition", ch.name},
                        {"source_rows", ch.source_rows},
                        {"partition_rows", ch.partition_rows},
                        {"ok", ch.ok}});
  }
  j["checks"] = checks_j;
  j["notes"] = notes;
  return j.dump(2);
}

}  // namespace duckpart
