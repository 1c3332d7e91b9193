#include "duckpart/utilities.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "partition_files.hpp"
#include "text_util.hpp"

namespace fs = std::filesystem;

namespace duckpart {

namespace {

constexpr uint64_t kSmallBytes = 100ULL << 20;
constexpr uint64_t kLargeBytes = 5ULL << 30;
constexpr const char* kManifest = "manifest.json";

nlohmann::json read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/" + kManifest);
  if (!in) return nlohmann::json{{"format", 1}, {"files", nlohmann::json::object()}};
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kCorruption,
                fmt::format("backup manifest '{}/{}' is damaged: {}", dir, kManifest, e.what()));
  }
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text << "\n";
    if (!out) throw Error(ErrorCode::kIo, fmt::format("cannot write '{}' (disk full?)", tmp));
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(ErrorCode::kIo, fmt::format("cannot replace '{}'", path));
  }
}

void write_manifest(const std::string& dir, const nlohmann::json& j) {
  write_file_atomically(dir + "/" + kManifest, j.dump(2));
}

}  // namespace

// ---- cleanup
// --------------------------------------------------------------------------------------

CleanupResult PartitionUtilities::cleanup(const Schema& schema, int retention_days, Date today,
                                          bool dry_run, const std::string& archive_dir) {
  if (retention_days < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("retention days must not be negative (got {})", retention_days));
  }
  CleanupResult res;
  res.cutoff = Date{today.days - retention_days};
  res.dry_run = dry_run;
  repo_.initialize(schema);
  {
    const SchemaStatistics s = repo_.table_statistics(schema);
    for (const auto& problem : s.problems) {
      if (problem.find("ingest log") == std::string::npos) continue;
      res.notes.push_back(
          dry_run ? problem +
                        "; the real run commits those rows first, so it may keep a "
                        "partition listed here (one that then holds rows past the cut-off)"
                  : problem);
    }
    for (const auto& p : s.partitions) {
      if (!p.period_end) continue;  // partition_null: no period to expire
      if (*p.period_end <= res.cutoff) {
        // Expired by its name; kept when its file says otherwise or cannot say (a file holding
        // another period's rows, a damaged or foreign file, rows past the cut-off): deleting it
        // could delete rows inside the retention window.
        if (!p.problem.empty()) {
          res.kept_problems.push_back(fmt::format("{}: {}", p.name, p.problem));
          continue;
        }
        if (p.max_value && p.max_value->micros >= to_timestamp(res.cutoff).micros) {
          res.kept_problems.push_back(fmt::format("{}: holds rows up to {}, after the cut-off",
                                                  p.name, format_timestamp(*p.max_value)));
          continue;
        }
        res.removed.push_back(CleanupItem{p.name, p.file, p.rows, p.bytes, *p.period_end, ""});
      } else if (*p.period_start < res.cutoff) {
        res.kept_straddling.push_back(p.name);
      }
    }
  }
  for (const auto& item : res.removed) res.bytes_freed += item.bytes;
  if (dry_run) return res;
  // Which partitions were removed when one could not be: the error says, so that the operator
  // knows what is gone and what a second run will do.
  std::vector<char> done(res.removed.size(), 0);
  auto stopped = [&](const std::exception_ptr& failure) {
    ErrorCode code = ErrorCode::kIo;
    std::string what;
    try {
      std::rethrow_exception(failure);
    } catch (const Error& e) {
      code = e.code();
      what = e.what();
    } catch (const std::exception& e) {
      what = e.what();
    }
    std::vector<std::string> gone, left;
    for (std::size_t i = 0; i < res.removed.size(); ++i) {
      (done[i] ? gone : left).push_back(res.removed[i].name);
    }
    auto list = [](const std::vector<std::string>& v) {
      return v.empty() ? std::string("none") : fmt::format("{}", fmt::join(v, ", "));
    };
    return Error(code, fmt::format("{}; clean-up stopped: removed {} of {} expired partition(s) "
                                   "({}); not removed: {}; run it again to remove the rest",
                                   what, gone.size(), res.removed.size(), list(gone), list(left)));
  };
  if (!archive_dir.empty()) {
    // One after another: each archive adds to the same manifest.
    for (std::size_t i = 0; i < res.removed.size(); ++i) {
      auto& item = res.removed[i];
      try {
        item.archived_to = backup_partition(schema, item.name, archive_dir).file;
        repo_.drop_partition(schema, item.name);
      } catch (...) {
        throw stopped(std::current_exception());
      }
      done[i] = 1;
    }
  } else {
    // Deleting a file is the kernel's work (freeing its extents and cached pages; on ext4 without
    // a journal and mounted with `discard`, unlink also waits for the device to discard the
    // freed blocks: 43-64 ms for 12 files of 25 MB on the machine measured, docs/performance.md
    // "Session 23"), and it overlaps: the partitions are dropped on up to 4 threads. The first
    // failure stops the others from starting another partition (drops under way finish) and is
    // thrown.
    const std::size_t n = res.removed.size();
    std::atomic<std::size_t> next{0};
    std::mutex mu;
    std::exception_ptr failure;
    auto work = [&] {
      for (;;) {
        {
          std::lock_guard lock(mu);
          if (failure) return;
        }
        const std::size_t i = next.fetch_add(1);
        if (i >= n) return;
        try {
          repo_.drop_partition(schema, res.removed[i].name);
          done[i] = 1;  // each index is written by one thread, read after the joins
        } catch (...) {
          std::lock_guard lock(mu);
          if (!failure) failure = std::current_exception();
          return;
        }
      }
    };
    std::vector<std::thread> helpers;
    helpers.reserve(3);  // emplace_back then only throws for the thread, never with threads running
    for (std::size_t t = 1; t < std::min<std::size_t>(n, 4); ++t) {
      try {
        helpers.emplace_back(work);
      } catch (const std::system_error&) {
        break;  // no more threads: fewer helpers
      }
    }
    work();
    for (auto& h : helpers) h.join();
    if (failure) throw stopped(failure);
  }
  repo_.flush();
  return res;
}

std::string CleanupResult::to_text() const {
  std::string out =
      fmt::format("cut-off {}: partitions whose period ended on or before it {}\n",
                  format_date(cutoff), dry_run ? "would be removed (dry run)" : "were removed");
  for (const auto& r : removed) {
    out += fmt::format("  {:<26} {:>12} rows {:>10}  {}{}\n", r.name, r.rows, human_bytes(r.bytes),
                       r.file, r.archived_to.empty() ? "" : "  (archived)");
  }
  out += fmt::format("{} partition(s), {} {}\n", removed.size(), human_bytes(bytes_freed),
                     dry_run ? "would be freed; nothing was changed" : "freed");
  for (const auto& k : kept_straddling)
    out += fmt::format("kept {}: its period contains the cut-off\n", k);
  for (const auto& k : kept_problems) {
    out += fmt::format("kept {} (expired by its name; see health-report)\n", k);
  }
  for (const auto& n : notes) out += fmt::format("note: {}\n", n);
  return out;
}

std::string CleanupResult::to_json() const {
  nlohmann::ordered_json j;
  j["cutoff"] = format_date(cutoff);
  j["dry_run"] = dry_run;
  auto arr = nlohmann::ordered_json::array();
  for (const auto& r : removed) {
    arr.push_back({{"partition", r.name},
                   {"file", r.file},
                   {"rows", r.rows},
                   {"bytes", r.bytes},
                   {"period_end", format_date(r.period_end)},
                   {"archived_to", r.archived_to}});
  }
  j["removed"] = arr;
  j["kept_straddling"] = kept_straddling;
  j["kept_problems"] = kept_problems;
  j["notes"] = notes;
  j["bytes_freed"] = bytes_freed;
  return j.dump(2);
}

// ---- backup / restore
// ------------------------------------------------------------------------------

BackupManifestEntry PartitionUtilities::backup_partition(const Schema& schema,
                                                         const std::string& name,
                                                         const std::string& dir) {
  // The manifest first: a directory holding another table's (or strategy's) backups is refused
  // before any file in it is replaced (partition files are named by period alone).
  nlohmann::json j = read_manifest(dir);
  const std::string strategy(strategy_name(repo_.strategy_of(schema)));
  if ((j.contains("schema") && j["schema"] != schema.name()) ||
      (j.contains("strategy") && j["strategy"] != strategy)) {
    throw Error(
        ErrorCode::kConflict,
        fmt::format("backup directory '{}' holds backups of table '{}' ({}) ({}); back up "
                    "table '{}' ({}) to a directory of its own",
                    dir, j.value("schema", std::string("?")), j.value("strategy", std::string("?")),
                    kManifest, schema.name(), strategy));
  }
  const auto b = repo_.backup_partition(schema, name, dir);
  BackupManifestEntry m{fs::path(b.backup_file).filename().string(), b.name, b.bytes, b.xxh3_128,
                        b.rows};
  j["schema"] = schema.name();
  j["strategy"] = strategy;
  j["files"][m.file] = {
      {"partition", m.partition}, {"bytes", m.bytes}, {"xxh3_128", m.xxh3_128}, {"rows", m.rows}};
  write_manifest(dir, j);
  return m;
}

std::vector<BackupManifestEntry> PartitionUtilities::backup_all(const Schema& schema,
                                                                const std::string& dir) {
  std::vector<BackupManifestEntry> out;
  repo_.initialize(schema);
  {
    const SchemaStatistics s = repo_.table_statistics(schema);
    for (const auto& p : s.partitions) {
      // (A partition another process held is tried again: kLocked while it is held.)
      if (!p.problem.empty() && !p.locked) {
        throw Error(
            ErrorCode::kCorruption,
            fmt::format("partition {} ('{}') cannot be backed up: {}", p.name, p.file, p.problem));
      }
      out.push_back(backup_partition(schema, p.name, dir));
    }
  }
  return out;
}

RestoreResult PartitionUtilities::restore(const Schema& schema, const std::string& path,
                                          bool verify_only) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error(ErrorCode::kNotFound, fmt::format("'{}' does not exist", path));
  const bool is_dir = fs::is_directory(path, ec);
  const std::string dir = is_dir ? path : fs::path(path).parent_path().string();
  const nlohmann::json manifest = read_manifest(dir.empty() ? "." : dir);
  std::vector<std::string> files;
  if (is_dir) {
    for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it)
      files.push_back(it.key());
    if (files.empty()) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("backup directory '{}' has no {} entries", dir, kManifest));
    }
  } else {
    files.push_back(fs::path(path).filename().string());
  }
  RestoreResult res;
  // Verify every file first: a damaged backup restores nothing.
  for (const auto& f : files) {
    const std::string full = (fs::path(dir.empty() ? "." : dir) / f).string();
    if (!manifest["files"].contains(f)) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("'{}' is not listed in '{}/{}': no checksum to verify it against",
                              full, dir, kManifest));
    }
    const std::string want = manifest["files"][f]["xxh3_128"].get<std::string>();
    const std::string got = file_checksum_xxh3(full);
    if (got != want) {
      throw Error(
          ErrorCode::kCorruption,
          fmt::format("backup '{}' is damaged: checksum {} does not match the manifest's {}", full,
                      got, want));
    }
    res.verified.push_back(full);
  }
  // Then that each is a partition of this table, layout and strategy: a mismatched file restores
  // nothing (not the files before it).
  if (manifest.contains("schema") && manifest["schema"] != schema.name()) {
    throw Error(ErrorCode::kConflict,
                fmt::format("backup directory '{}' holds backups of table '{}' ({}), not '{}'", dir,
                            manifest.value("schema", std::string("?")), kManifest, schema.name()));
  }
  for (const auto& full : res.verified) repo_.check_backup(schema, full);
  if (verify_only) return res;
  for (const auto& full : res.verified) {
    repo_.restore_partition(schema, full);
    res.restored.push_back(fs::path(full).stem().string());
  }
  repo_.flush();
  return res;
}

// ---- compact
// ----------------------------------------------------------------------------------------

CompactReport PartitionUtilities::compact(
    const Schema& schema, const std::string& name,
    const std::function<void(const PartitionedDataRepository::CompactResult&)>& progress,
    int block_size_kb) {
  check_compact_block_size_kb(block_size_kb);
  repo_.initialize(schema);
  std::vector<std::string> names;
  if (!name.empty()) {
    names.push_back(name);
  } else {
    {
      const SchemaStatistics s = repo_.table_statistics(schema);
      for (const auto& p : s.partitions) {
        if (p.problem.empty()) names.push_back(p.name);
      }
    }
  }
  CompactReport rep;
  for (const auto& n : names) {
    rep.partitions.push_back(repo_.compact_partition(schema, n, block_size_kb));
    rep.bytes_before += rep.partitions.back().bytes_before;
    rep.bytes_after += rep.partitions.back().bytes_after;
    if (progress) progress(rep.partitions.back());
  }
  repo_.flush();
  return rep;
}

std::string CompactReport::to_text() const {
  std::string out;
  for (const auto& p : partitions) {
    out += fmt::format("{:<24} {:>12} rows  {:>10} -> {} ({} KB blocks)\n", p.name, p.rows,
                       human_bytes(p.bytes_before), human_bytes(p.bytes_after), p.block_size_kb);
  }
  out += fmt::format("compacted {} partition(s): {} -> {}\n", partitions.size(),
                     human_bytes(bytes_before), human_bytes(bytes_after));
  return out;
}

std::string CompactReport::to_json() const {
  nlohmann::ordered_json j;
  auto arr = nlohmann::ordered_json::array();
  for (const auto& p : partitions) {
    arr.push_back({{"partition", p.name},
                   {"file", p.file},
                   {"rows", p.rows},
                   {"bytes_before", p.bytes_before},
                   {"bytes_after", p.bytes_after},
                   {"block_size_kb", p.block_size_kb}});
  }
  j["partitions"] = arr;
  j["bytes_before"] = bytes_before;
  j["bytes_after"] = bytes_after;
  return j.dump(2);
}

// ---- export
// -----------------------------------------------------------------------------------------

namespace {

constexpr const char* kExportManifest = "_duckpart_export.json";

// Removes the Parquet files a partition's export wrote (<name>_<n>.parquet); returns their bytes.
void remove_export_files(const std::string& dir, const std::string& name) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    if (f.size() <= name.size() + 9 || f.compare(0, name.size() + 1, name + "_") != 0) continue;
    if (it->path().extension() != ".parquet") continue;
    const std::string n = f.substr(name.size() + 1, f.size() - name.size() - 9);
    if (!n.empty() && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
      doomed.push_back(it->path());
  }
  for (const auto& p : doomed) fs::remove(p, ec);
}

// The Parquet files a partition's export wrote (<name>_<n>.parquet), sorted.
std::vector<std::string> export_files(const std::string& dir, const std::string& name) {
  std::error_code ec;
  std::vector<std::string> out;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    if (f.size() <= name.size() + 9 || f.compare(0, name.size() + 1, name + "_") != 0) continue;
    if (it->path().extension() != ".parquet") continue;
    const std::string n = f.substr(name.size() + 1, f.size() - name.size() - 9);
    if (!n.empty() && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
      out.push_back(it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t export_bytes(const std::string& dir, const std::string& name) {
  std::error_code ec;
  uint64_t n = 0;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    if (f.compare(0, name.size() + 1, name + "_") == 0 && it->path().extension() == ".parquet") {
      n += it->file_size(ec);
    }
  }
  return n;
}

}  // namespace

ExportResult PartitionUtilities::export_parquet(
    const Schema& schema, const std::string& dir,
    const std::function<void(const std::string&, int64_t, int64_t)>& progress,
    const std::atomic<bool>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  ExportResult res;
  res.dir = dir;
  // DuckDB's readers expand these in any path (the export is counted back through one).
  if (dir.find_first_of("[]*?{}") != std::string::npos) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("export directory '{}' has a character DuckDB reads as a file pattern "
                            "([, ], *, ?, {{ or }}); choose a directory without them",
                            dir));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error(ErrorCode::kIo,
                fmt::format("cannot create export directory '{}': {}", dir, ec.message()));
  }
  const std::string manifest_path = dir + "/" + kExportManifest;
  nlohmann::json manifest;
  if (std::ifstream in(manifest_path); in) {
    try {
      manifest = nlohmann::json::parse(in);
    } catch (const std::exception&) {
      manifest = nlohmann::json();
    }
  }
  if (manifest.is_object() && manifest.value("table", "") != schema.name()) {
    throw Error(
        ErrorCode::kConflict,
        fmt::format("'{}' holds an export of table '{}'; export '{}' into another directory", dir,
                    manifest.value("table", ""), schema.name()));
  }
  std::vector<std::string> old_layout;  // partitions of another strategy the export holds
  if (!manifest.is_object() ||
      manifest.value("strategy", "") != strategy_name(repo_.strategy_of(schema))) {
    // Re-partitioned since the last export: the old partitions' files go (they were left next to
    // the new ones, and a read of the export saw every row twice), once the table is read.
    if (manifest.is_object() && manifest.contains("partitions") &&
        manifest["partitions"].is_object()) {
      for (auto it = manifest["partitions"].begin(); it != manifest["partitions"].end(); ++it) {
        old_layout.push_back(it.key());
      }
    }
    manifest = nlohmann::json::object();
  }
  manifest["table"] = schema.name();
  manifest["strategy"] = strategy_name(repo_.strategy_of(schema));
  if (!manifest.contains("partitions")) manifest["partitions"] = nlohmann::json::object();
  auto save = [&] { write_file_atomically(manifest_path, manifest.dump(2)); };

  repo_.initialize(schema);
  std::vector<PartitionStatistics> parts;
  {
    const SchemaStatistics s = repo_.table_statistics(schema);
    for (const auto& p : s.partitions) {
      if (!p.problem.empty() && !p.locked) {  // (a held one is tried again: kLocked)
        throw Error(ErrorCode::kCorruption,
                    fmt::format("partition {} ('{}') cannot be exported: {}; restore it first",
                                p.name, p.file, p.problem));
      }
      parts.push_back(p);
    }
  }
  for (const auto& g : old_layout) remove_export_files(dir, g);
  // Partitions gone from the store: their files go too (the export mirrors the table).
  std::vector<std::string> gone;
  for (auto it = manifest["partitions"].begin(); it != manifest["partitions"].end(); ++it) {
    const bool present = std::any_of(parts.begin(), parts.end(), [&](const PartitionStatistics& p) {
      return p.name == it.key();
    });
    if (!present) gone.push_back(it.key());
  }
  for (const auto& g : gone) {
    remove_export_files(dir, g);
    manifest["partitions"].erase(g);
  }
  save();
  duck::Database reader = duck::Database::open(":memory:");
  duck::Connection rc = reader.connect();
  int64_t done = 0;
  for (const auto& p : parts) {
    if (stop && stop->load()) {
      res.interrupted = true;
      break;
    }
    if (progress) progress(p.name, done, static_cast<int64_t>(parts.size()));
    ++done;
    const auto& known = manifest["partitions"];
    if (known.contains(p.name) && known[p.name].value("rows", int64_t{-1}) == p.rows &&
        known[p.name].value("modified", int64_t{-1}) == p.modified_unix) {
      ++res.partitions_unchanged;
      res.rows += p.rows;
      continue;
    }
    manifest["partitions"].erase(p.name);
    save();
    remove_export_files(dir, p.name);
    const int64_t rows = repo_.export_partition_parquet(schema, p.name, dir);
    // Counted back from exactly this partition's files (a pattern also matched the files of
    // the months of a year named like it).
    int64_t back = 0;
    if (rows != 0) {
      std::string list;
      for (const std::string& f : export_files(dir, p.name)) {
        list += (list.empty() ? "" : ", ") + duck::quote_literal(f);
      }
      back = list.empty()
                 ? 0
                 : rc.query_int(fmt::format(
                       "SELECT count(*) FROM read_parquet([{}], hive_partitioning = false)", list));
    }
    if (back != rows) {
      throw Error(ErrorCode::kCorruption,
                  fmt::format("export of partition {} to '{}' wrote {} rows but {} read back",
                              p.name, dir, rows, back));
    }
    res.bytes += export_bytes(dir, p.name);
    res.rows += rows;
    ++res.partitions_exported;
    manifest["partitions"][p.name] = {{"rows", rows}, {"modified", p.modified_unix}};
    save();
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

std::string ExportResult::to_text() const {
  return fmt::format(
      "exported {} partition(s) ({} unchanged since the last export): {} rows in the export, {} "
      "of Parquet written to '{}' in {:.2f} s{}\n"
      "read it with: SELECT * FROM read_parquet({}, hive_partitioning = true)\n",
      partitions_exported, partitions_unchanged, rows, human_bytes(bytes), dir, seconds,
      interrupted ? " — INTERRUPTED (run again to finish)" : "",
      duck::quote_literal(dir + "/**/*.parquet"));
}

std::string ExportResult::to_json() const {
  nlohmann::ordered_json j;
  j["dir"] = dir;
  j["partitions_exported"] = partitions_exported;
  j["partitions_unchanged"] = partitions_unchanged;
  j["rows"] = rows;
  j["bytes"] = bytes;
  j["interrupted"] = interrupted;
  j["seconds"] = seconds;
  return j.dump(2);
}

// ---- health
// -----------------------------------------------------------------------------------------

HealthReport PartitionUtilities::health_report(const Schema& schema) {
  HealthReport rep;
  rep.schema = schema.name();
  rep.strategy = strategy_name(repo_.strategy_of(schema));
  const uint64_t threshold = static_cast<uint64_t>(repo_.config().partition_size_threshold_mb)
                             << 20;
  auto add = [&](std::string sev, std::string part, std::string file, std::string problem,
                 std::string rec) {
    if (sev == "error") ++rep.errors;
    if (sev == "warning") ++rep.warnings;
    rep.findings.push_back(
        {std::move(sev), std::move(part), std::move(file), std::move(problem), std::move(rec)});
  };
  repo_.initialize(schema);
  // Every partition must open and agree with its metadata: checksum_partitions opens each file and
  // counts its rows. A file that fails is reported, and the others are still checked.
  std::map<std::string, int64_t> counted;
  std::map<std::string, std::string> unreadable;
  std::set<std::string> locked;  // held by another process (a running writer): not damage
  for (const auto& c : repo_.checksum_partitions(schema, /*keep_going=*/true)) {
    if (c.error.empty()) {
      counted[c.name] = c.rows;
    } else if (c.error_code == ErrorCode::kLocked) {
      locked.insert(c.name);
      unreadable[c.name] = c.error;
    } else {
      unreadable[c.name] = c.error;
    }
  }
  const std::vector<SchemaStatistics> stats{repo_.table_statistics(schema)};
  std::vector<int64_t> sizes;
  std::vector<std::string> small, coarse_blocks;
  uint64_t coarse_bytes = 0;
  for (const auto& s : stats) {
    rep.directory = s.directory;
    rep.partitions = static_cast<int64_t>(s.partitions.size());
    rep.rows = s.total_rows;
    rep.bytes = s.total_bytes;
    for (const auto& p : s.problems) {
      // A pending ingest log holds acknowledged rows: moving it away would lose them.
      if (p.find("ingest log") != std::string::npos) {
        add("warning", "", "", p,
            "leave it in place: the writer that made it applies it, or any writable open does "
            "(for example manage_partitions compact); moving or deleting it loses those rows");
      } else {
        add("warning", "", "", p,
            "move files that are not partitions out of the partition directory");
      }
    }
    for (const auto& p : s.partitions) {
      if (locked.count(p.name) || p.locked) {  // (its problem, if any, is that lock)
        add("warning", p.name, p.file,
            "in use by another process (its file is locked), so it was not checked",
            "run health-report again when that process has stopped; this is not damage");
        continue;
      }
      if (!p.problem.empty()) {
        add("error", p.name, p.file, fmt::format("cannot be used: {}", p.problem),
            "restore it from a backup (manage_partitions restore --from DIR) or migrate its period "
            "again");
        continue;
      }
      if (auto it = unreadable.find(p.name); it != unreadable.end()) {
        add("error", p.name, p.file, fmt::format("opens but cannot be read: {}", it->second),
            "restore it from a backup (manage_partitions restore --from DIR) or migrate its period "
            "again");
        continue;
      }
      if (auto it = counted.find(p.name); it != counted.end() && it->second != p.rows) {
        add("error", p.name, p.file,
            fmt::format("metadata says {} rows but the table holds {}", p.rows, it->second),
            "restore it from a backup or migrate its period again");
      }
      if (p.period_start && p.min_value && p.max_value &&
          (p.min_value->micros < to_timestamp(*p.period_start).micros ||
           p.max_value->micros >= to_timestamp(*p.period_end).micros)) {
        add("error", p.name, p.file,
            fmt::format("holds rows outside its period {}..{} (min {}, max {})",
                        format_date(*p.period_start), format_date(*p.period_end),
                        format_timestamp(*p.min_value), format_timestamp(*p.max_value)),
            "re-partition the store (migrate --from-partitions) so that every row is in its "
            "period");
      }
      if (p.bytes > threshold) {
        add("warning", p.name, p.file,
            fmt::format("{} is above partition_size_threshold_mb ({} MB)", human_bytes(p.bytes),
                        repo_.config().partition_size_threshold_mb),
            "use a finer strategy (weekly or daily) for this data");
      } else if (p.bytes > kLargeBytes) {
        add("warning", p.name, p.file,
            fmt::format("{} is above the 5 GB sweet spot", human_bytes(p.bytes)),
            "use a finer strategy");
      }
      if (p.rows > 1 &&
          !(p.min_value && p.max_value && p.min_value->micros == p.max_value->micros)) {
        int64_t unsorted = 0;
        try {
          unsorted = repo_.unsorted_pairs(schema, p.name);
        } catch (const Error&) {
        }
        // Each commit stores its rows in time order, so a partition is a sequence of sorted runs
        // (one per descent + 1). Runs shorter than a row group (122,880 rows) leave row groups
        // whose time ranges overlap: zone maps cannot skip them.
        constexpr int64_t kRowGroupRows = 122880;
        const int64_t runs = unsorted + 1;
        if (unsorted > 0 && p.rows / runs < kRowGroupRows) {
          add("info", p.name, p.file,
              fmt::format("not sorted by {}: its rows are {} runs in time order of {} rows on "
                          "average (less than a row group of {}), so zone maps cannot skip row "
                          "groups for ranges inside the period",
                          schema.partition_column(), runs, p.rows / runs, kRowGroupRows),
              fmt::format("manage_partitions compact --partition {}", p.name));
        }
      }
      if (p.bytes < kSmallBytes) small.push_back(p.name);
      // At most 8 blocks of DuckDB's default 256 KB after the 12 KB of headers and at most
      // 10,000 rows: a partition file takes at least ~4 blocks (its tables and catalog), so these
      // are mostly partly filled or free blocks, which 16 KB blocks would not leave (measured
      // crossover ~20,000 rows: docs/architecture.md, "The block size of a partition file fits
      // its size").
      if (p.bytes <= 12288 + 8 * 262144 && p.rows <= 10000 &&
          duckdb_file_block_size(p.file) == 262144) {
        coarse_blocks.push_back(p.name);
        coarse_bytes += p.bytes;
      }
      sizes.push_back(p.rows);
    }
  }
  if (!small.empty()) {
    add("info", "", "",
        fmt::format("{} of {} partitions are under 100 MB (e.g. {})", small.size(), rep.partitions,
                    small.front()),
        "roll small periods up into a coarser strategy (e.g. monthly to yearly) to cut per-file "
        "overhead");
  }
  if (!coarse_blocks.empty()) {
    add("info", "", "",
        fmt::format("{} partition(s) (e.g. {}) of at most 10,000 rows are files of at most 2 "
                    "MB in DuckDB's 256 KB blocks, {} in all: a partition file takes at least ~4 "
                    "blocks, so such files are mostly partly filled blocks, and each cold open "
                    "reads and checksums 256 KB blocks",
                    coarse_blocks.size(), coarse_blocks.front(), human_bytes(coarse_bytes)),
        "manage_partitions compact rewrites each partition in the block size that makes its file "
        "smaller (16 KB blocks: ~5x smaller at 1,000 rows, larger past ~20,000 rows); set "
        "block_size_kb = 16 in the configuration if most new partitions stay this small");
  }
  if (sizes.size() >= 3) {
    std::sort(sizes.begin(), sizes.end());
    const double median = static_cast<double>(sizes[sizes.size() / 2]);
    if (median > 0 && static_cast<double>(sizes.back()) / median > 3.0) {
      add("warning", "", "",
          fmt::format("skewed: the largest partition has {:.1f}x the rows of the median one",
                      static_cast<double>(sizes.back()) / median),
          "consider a finer strategy for the busy periods, or accept the skew if it is seasonal");
    }
  }
  // Leftovers: write-ahead logs of closed partitions (an interrupted process) and temporary files.
  // A partition open for writing (attached by this writable repository, or held by another
  // process) has a live one; a read-only attach (this report's own checks) does not.
  std::set<std::string> open_files;
  for (const auto& s : stats) {
    for (const auto& p : s.partitions) {
      if ((p.attached && !repo_.read_only()) || locked.count(p.name)) {
        open_files.insert(fs::path(p.file).filename().string());
      }
    }
  }
  std::error_code ec;
  for (fs::directory_iterator it(rep.directory, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const std::string ext = it->path().extension().string();
    const bool temporary =
        name.find(".restore") != std::string::npos || name.find(".compact") != std::string::npos;
    if (ext == ".wal" && !temporary && open_files.count(it->path().stem().string())) {
      continue;  // in use: not left over
    }
    if (ext == ".wal" && !temporary) {
      add("warning", "", it->path().string(),
          "write-ahead log left by a process that did not close the partition cleanly",
          "it is replayed the next time the partition is opened (any query on it); no action "
          "needed unless "
          "it persists");
    } else if (temporary) {
      add("warning", "", it->path().string(),
          "staging file of a restore or compaction that was interrupted (or is running now)",
          "the next writable open of the table deletes it when no restore or compaction runs; "
          "or delete it once no duckpart process is running");
    } else if (ext == ".tmp") {
      add("warning", "", it->path().string(), "temporary file left by an interrupted operation",
          "delete it once no duckpart process is running");
    }
  }
  // Leftovers of migrate's catch-up: its staging store inside the partition directory and its
  // copies of partitions beside it (the next catch-up of the table deletes those of runs whose
  // process is gone).
  {
    const fs::path base = fs::path(rep.directory).parent_path();
    const std::pair<fs::path, std::string> places[] = {
        {base, "." + schema.name() + ".catchup_"},
        {base.parent_path(), "." + base.filename().string() + "." + schema.name() + ".catchup_"}};
    for (const auto& [dir, prefix] : places) {
      std::error_code dec;
      for (fs::directory_iterator it(dir, dec), end; !dec && it != end; it.increment(dec)) {
        if (!it->path().filename().string().starts_with(prefix)) continue;
        add("warning", "", it->path().string(),
            "staging left by a migrate catch-up that was interrupted (or is running now)",
            "the next migrate of this table deletes it once the process that made it is gone; or "
            "delete it once no duckpart process is running");
      }
    }
  }
  // Catalog drift: missing, or entries whose file changed since (or files it does not list).
  const std::string catalog_path = rep.directory + "/" + kCatalogFile;
  if (!fs::exists(catalog_path)) {
    add("info", "", catalog_path, "catalog missing",
        "it is rebuilt from the partition files when the store is opened for writing");
  } else if (auto cat = read_catalog(rep.directory, &schema)) {
    std::vector<std::string> stale;
    std::set<std::string> listed;
    for (const auto& ce : cat->entries) {
      listed.insert(ce.file_name);
      const FileStamp now = stamp_of(rep.directory + "/" + ce.file_name);
      if (now.size != ce.stamp.size || now.mtime_ns != ce.stamp.mtime_ns ||
          now.wal_size != ce.stamp.wal_size) {
        stale.push_back(ce.file_name);
      }
    }
    for (const auto& s : stats) {
      for (const auto& p : s.partitions) {
        const std::string f = fs::path(p.file).filename().string();
        if (!listed.count(f)) stale.push_back(f);
      }
    }
    if (!stale.empty()) {
      add("info", "", catalog_path,
          fmt::format("catalog out of date for {} partition file(s) (e.g. {})", stale.size(),
                      stale.front()),
          "harmless: changed files are re-read when the store is opened; it is rewritten on the "
          "next close of a writing process");
    }
  } else {
    add("warning", "", catalog_path, "catalog unreadable or of another table/strategy",
        "it is rebuilt from the partition files when the store is opened for writing");
  }
  // Most severe first: an operator reads the top of the report.
  auto rank = [](const std::string& sev) { return sev == "error" ? 0 : sev == "warning" ? 1 : 2; };
  std::stable_sort(rep.findings.begin(), rep.findings.end(),
                   [&](const HealthFinding& a, const HealthFinding& b) {
                     return rank(a.severity) < rank(b.severity);
                   });
  return rep;
}

std::string HealthReport::to_json() const {
  nlohmann::ordered_json j;
  j["schema"] = schema;
  j["directory"] = directory;
  j["strategy"] = strategy;
  j["partitions"] = partitions;
  j["rows"] = rows;
  j["bytes"] = bytes;
  j["errors"] = errors;
  j["warnings"] = warnings;
  auto arr = nlohmann::ordered_json::array();
  for (const auto& f : findings) {
    arr.push_back({{"severity", f.severity},
                   {"partition", f.partition},
                   {"file", f.file},
                   {"problem", f.problem},
                   {"recommendation", f.recommendation}});
  }
  j["findings"] = arr;
  return j.dump(2);
}

std::string HealthReport::summary() const {
  std::string out =
      fmt::format("{} ({}, {}): {} partitions, {} rows, {}; {} error(s), {} warning(s)\n", schema,
                  directory, strategy, partitions, rows, human_bytes(bytes), errors, warnings);
  for (const auto& f : findings) {
    out += fmt::format("{:<7} {}{}{}\n        -> {}\n", f.severity,
                       f.partition.empty() ? "" : f.partition + ": ", f.problem,
                       f.file.empty() || !f.partition.empty() ? "" : " (" + f.file + ")",
                       f.recommendation);
  }
  if (findings.empty()) out += "healthy: no findings\n";
  return out;
}

}  // namespace duckpart
