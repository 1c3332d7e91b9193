#include "duckpart/importer.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "partition_files.hpp"
#include "table_sql.hpp"

namespace fs = std::filesystem;

namespace duckpart {
namespace {

// <table dir>/_imports.json: per import id (the file's content hash), the batch size its batches
// were cut with. A batch's id names its index, so a re-run cut differently would write rows
// again under other ids: a re-run keeps the recorded size.
constexpr const char* kImportsFile = "_imports.json";

nlohmann::json read_imports(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json::object();
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    if (j.is_object()) return j;
  } catch (const std::exception&) {
  }
  throw Error(ErrorCode::kCorruption,
              fmt::format("'{}' is damaged: it records how earlier imports cut their batches; "
                          "move it away only if no import of these files was interrupted",
                          path));
}

void write_imports(const std::string& path, const nlohmann::json& j) {
  // A temporary name of this process and call (two imports into one table never share it), made
  // durable before it replaces the record.
  static std::atomic<uint64_t> seq{0};
  const std::string tmp = fmt::format("{}.{}.{}.tmp", path, ::getpid(), seq++);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    out.flush();
    if (!out) throw Error(ErrorCode::kIo, fmt::format("cannot write '{}' (disk full?)", tmp));
  }
  if (const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}': {}", path, ec.message()));
  }
}

constexpr const char* kDoneTable = "_duckpart_import_done";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string detect_format(const std::string& file, const std::string& given) {
  if (!given.empty()) {
    const std::string f = lower(given);
    if (f != "csv" && f != "parquet") {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("import format '{}': expected csv or parquet", given));
    }
    return f;
  }
  const std::string name = lower(fs::path(file).filename().string());
  if (name.find(".parquet") != std::string::npos) return "parquet";
  return "csv";
}

// (name, type) of the file's columns as DuckDB reads them.
std::vector<std::pair<std::string, std::string>> file_columns(duck::Connection& c,
                                                              const std::string& reader,
                                                              const std::string& file) {
  duck::Result r =
      c.query("DESCRIBE SELECT * FROM " + reader, fmt::format("cannot read '{}'", file));
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& row : rows)
    out.emplace_back(row.values[0].to_string(), row.values[1].to_string());
  return out;
}

// The header line of a CSV file: its delimiter (the most frequent of , ; TAB | outside quotes)
// and its column names (RFC 4180 quoting).
struct CsvHeader {
  char delimiter = ',';
  std::vector<std::string> names;
};

CsvHeader read_csv_header(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::string line;
  if (!in || !std::getline(in, line)) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is empty: a CSV file needs a header line", file));
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.size() >= 3 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);  // BOM
  CsvHeader h;
  std::size_t best = 0;
  for (char d : {',', ';', '\t', '|'}) {
    std::size_t n = 0;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      if (!quoted && c == d) ++n;
    }
    if (n > best) {
      best = n;
      h.delimiter = d;
    }
  }
  std::string cur;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == h.delimiter) {
      h.names.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (quoted) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("'{}' line 1: unterminated quote in the header", file));
  }
  h.names.push_back(cur);
  return h;
}

// DuckDB's message up to its first blank line (the rest repeats the reader's settings).
std::string first_paragraph(const std::string& msg) {
  const auto cut = msg.find("\n\n");
  return cut == std::string::npos ? msg : msg.substr(0, cut);
}

}  // namespace

ImportResult import_file(PartitionedDataRepository& repo, const std::string& table,
                         const std::string& file, const ImportOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.batch_size <= 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("batch size {} must be positive", options.batch_size));
  }
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw Error(ErrorCode::kNotFound, fmt::format("import file '{}' does not exist", file));
  }
  const std::string format = detect_format(file, options.format);
  ImportResult res;
  res.file = file;
  res.import_id = file_checksum_xxh3(file).substr(0, 16);
  // DuckDB's readers take a path with *, ? or [ as a glob pattern: 'wells[2024].csv' would read
  // wells2.csv and wells0.csv, or nothing. Such a file is read through a link of a plain name.
  struct ReadPath {
    std::string path, link;
    ~ReadPath() {
      std::error_code ignored;
      if (!link.empty()) fs::remove(link, ignored);
    }
  } read_path{fs::absolute(file).string(), ""};
  if (read_path.path.find_first_of("*?[]{}") != std::string::npos) {
    // In the store's staging directory (removed with its other staging files), one per call.
    static std::atomic<uint64_t> links{0};
    const std::string link_dir = repo.config().base_partition_path + "/_staging";
    fs::create_directories(link_dir, ec);
    read_path.link = fmt::format("{}/link-{}-{}-{}{}", link_dir, res.import_id, ::getpid(),
                                 links.fetch_add(1), fs::path(file).extension().string());
    fs::remove(read_path.link, ec);
    fs::create_symlink(read_path.path, read_path.link, ec);
    if (ec || read_path.link.find_first_of("*?[]{}") != std::string::npos) {
      throw Error(ErrorCode::kIo,
                  fmt::format("import file '{}' has glob characters in its path and no plain-named "
                              "link to it could be made ({}); rename it",
                              file, ec ? ec.message() : read_path.link));
    }
  }
  const std::string quoted_file =
      duck::quote_literal(read_path.link.empty() ? read_path.path : read_path.link);
  CsvHeader header;
  if (format == "csv") header = read_csv_header(file);
  // The dialect is fixed (RFC 4180 quoting, the header's delimiter) so that a broken quote or a
  // line with the wrong number of fields is an error, not a different guess of the sniffer.
  const std::string csv_reader = fmt::format(
      "read_csv({}, header = true, delim = {}, quote = '\"', escape = '\"', "
      "strict_mode = true, null_padding = false, hive_partitioning = false",
      quoted_file, duck::quote_literal(std::string(1, header.delimiter)));
  // Not hive partitioning either: a file under `key=value/` folders (an `export`) holds its
  // columns itself; DuckDB would add `key` as a column.
  const std::string parquet_reader = "read_parquet(" + quoted_file + ", hive_partitioning = false)";

  // The target schema, when the table already has partitions.
  std::optional<Schema> target;
  try {
    target = repo.load_schema(table);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNotFound) throw;
  }
  const std::string staging_dir = repo.config().base_partition_path + "/_staging";
  const std::string staging = staging_dir + "/" + table + "-" + res.import_id + ".duckdb";
  fs::create_directories(staging_dir, ec);
  if (ec) {
    throw Error(ErrorCode::kIo,
                fmt::format("cannot create staging directory '{}': {}", staging_dir, ec.message()));
  }
  auto report = [&](int64_t done, const std::string& stage) {
    if (!options.progress) return;
    ImportProgress p;
    p.rows_total = res.rows_in_file;
    p.rows_done = done;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p.rows_per_s = el > 0 ? static_cast<double>(done) / el : 0;
    p.eta_s = p.rows_per_s > 0 ? static_cast<double>(res.rows_in_file - done) / p.rows_per_s : 0;
    p.stage = stage;
    options.progress(p);
  };
  const std::string qt = duck::quote_ident(table);

  // 1. Stage: the whole file through DuckDB's reader, or nothing.
  bool staged_before = false;
  if (fs::exists(staging)) {
    try {
      duck::Database db = duck::Database::open(staging);
      duck::Connection c = db.connect();
      staged_before = c.query_int(fmt::format("SELECT count(*) FROM duckdb_tables() WHERE "
                                              "table_name = '{}'",
                                              kDoneTable)) == 1;
    } catch (const Error&) {
      staged_before = false;
    }
    if (!staged_before) {
      fs::remove(staging, ec);
      fs::remove(staging + ".wal", ec);
    }
  }
  if (!staged_before) {
    report(0, "reading " + file);
    duck::Database db = duck::Database::open(staging);
    duck::Connection c = db.connect();
    std::string select;
    if (!target) {
      select = "SELECT * FROM " + (format == "csv" ? csv_reader + ")" : parquet_reader);
    } else {
      std::vector<std::string> cols = header.names;
      if (format != "csv") {
        cols.clear();
        for (const auto& nt : file_columns(c, parquet_reader, file)) cols.push_back(nt.first);
      }
      std::vector<std::string> in_file(target->columns().size());
      std::string csv_types;
      for (const auto& name : cols) {
        const auto idx = target->find(name);
        if (!idx) {
          std::string names;
          for (const auto& col : target->columns()) names += (names.empty() ? "" : ", ") + col.name;
          fs::remove(staging, ec);
          throw Error(ErrorCode::kInvalidArgument,
                      fmt::format("column '{}' of '{}' is not a column of table '{}' (columns: {})",
                                  name, file, table, names));
        }
        if (!in_file[*idx].empty()) {
          fs::remove(staging, ec);
          throw Error(ErrorCode::kInvalidArgument,
                      fmt::format("'{}' has column '{}' twice (as '{}' and '{}')", file,
                                  target->columns()[*idx].name, in_file[*idx], name));
        }
        in_file[*idx] = name;
        csv_types +=
            fmt::format("{}{}: {}", csv_types.empty() ? "" : ", ", duck::quote_literal(name),
                        duck::quote_literal(target->columns()[*idx].sql_type));
      }
      if (in_file[target->partition_index()].empty()) {
        fs::remove(staging, ec);
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("'{}' has no column '{}' (the partition column of table '{}')",
                                file, target->partition_column(), table));
      }
      std::string list;
      for (std::size_t i = 0; i < target->columns().size(); ++i) {
        const Column& col = target->columns()[i];
        std::string expr =
            in_file[i].empty()
                ? "NULL"
                : (format == "csv" ? duck::quote_ident(in_file[i])
                                   : fmt::format("CAST({} AS {})", duck::quote_ident(in_file[i]),
                                                 col.sql_type));
        expr = fmt::format("CAST({} AS {})", expr, col.sql_type);
        if (target->id_index() == i && col.type == ColumnType::kUuid) {
          expr = "coalesce(" + expr + ", uuidv7())";
        }
        list +=
            fmt::format("{}{} AS {}", list.empty() ? "" : ", ", expr, duck::quote_ident(col.name));
      }
      select =
          "SELECT " + list + " FROM " +
          (format == "csv" ? csv_reader + ", auto_detect = false, columns = {" + csv_types + "})"
                           : parquet_reader);
    }
    try {
      c.exec(fmt::format("CREATE TABLE main.{} AS {}", qt, select));
    } catch (const Error& e) {
      c = duck::Connection();
      db = duck::Database();
      fs::remove(staging, ec);
      fs::remove(staging + ".wal", ec);
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("cannot import '{}' ({}): {}\nnothing was imported", file, format,
                              first_paragraph(e.what())));
    }
    c.exec(fmt::format("CREATE TABLE main.{} AS SELECT 1 AS done", kDoneTable));
    c.exec("CHECKPOINT");
  }
  // A new table takes the types DuckDB read: a partition column it could not read as dates (one
  // impossible date makes it text) is named with the file and a value, not the staging file.
  auto new_schema = [&]() -> Schema {
    try {
      return introspect_schema(staging, table, repo.config().partition_column);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument) throw;
      std::string example;
      try {
        duck::Database db = duck::Database::open(staging, /*read_only=*/true);
        duck::Connection c = db.connect();
        const std::string col = duck::quote_ident(repo.config().partition_column);
        duck::Result r = c.query(
            fmt::format("SELECT CAST({0} AS VARCHAR) FROM main.{1} WHERE {0} IS NOT NULL AND "
                        "TRY_CAST(CAST({0} AS VARCHAR) AS TIMESTAMP) IS NULL LIMIT 1",
                        col, qt));
        std::vector<DataRecord> rows;
        duck::ChunkDecoder dec(r);
        while (auto chunk = r.fetch()) dec.decode(chunk, rows);
        if (!rows.empty()) example = rows[0].values.at(0).to_string();
      } catch (const Error&) {  // the message below still names the file and column
      }
      fs::remove(staging, ec);
      fs::remove(staging + ".wal", ec);
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("cannot import '{}' into new table '{}': its column '{}' is not "
                              "read as dates{}; fix the file (nothing was imported)",
                              file, table, repo.config().partition_column,
                              example.empty() ? fmt::format(" ({})", e.what())
                                              : fmt::format(" ('{}' is not a valid date or "
                                                            "timestamp)",
                                                            example)));
    }
  };
  const Schema schema = target ? *target : new_schema();
  {
    duck::Database db = duck::Database::open(staging, /*read_only=*/true);
    duck::Connection c = db.connect();
    res.rows_in_file = c.query_int(fmt::format("SELECT count(*) FROM main.{}", qt));
    const int64_t nulls =
        c.query_int(fmt::format("SELECT count(*) FROM main.{} WHERE {} IS NULL", qt,
                                duck::quote_ident(schema.partition_column())));
    if (nulls > 0 && !options.null_partition) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{} row(s) of '{}' have no {} (NULL); fix the file or import with "
                              "--null-partition to keep them in partition_null; nothing was "
                              "imported",
                              nulls, file, schema.partition_column()));
    }
  }

  // 2. Write: batches of staged rows, each with an id that makes a re-run skip what committed.
  const std::string alias = "import_" + res.import_id;
  repo.attach_database(staging, alias, /*read_only=*/true);
  struct Detach {
    PartitionedDataRepository& repo;
    std::string alias;
    ~Detach() { repo.detach_database(alias); }
  } detach{repo, alias};
  // The batch size this file's batches were cut with before, if any (kept: see kImportsFile).
  int64_t batch_size = options.batch_size;
  const std::string table_dir = repo.config().base_partition_path + "/" + table;
  const std::string imports_path = table_dir + "/" + kImportsFile;
  nlohmann::json imports = read_imports(imports_path);
  if (auto it = imports.find(res.import_id); it != imports.end() && it->contains("batch_size") &&
                                             (*it)["batch_size"].is_number_integer()) {
    const int64_t recorded = (*it)["batch_size"].get<int64_t>();
    if (recorded > 0 && recorded != batch_size) {
      res.batch_size_kept = recorded;
      batch_size = recorded;
    }
  } else {
    fs::create_directories(table_dir, ec);
    imports[res.import_id] = {{"file", fs::absolute(file).string()},
                              {"rows", res.rows_in_file},
                              {"batch_size", batch_size}};
    write_imports(imports_path, imports);
  }
  const int64_t batches = (res.rows_in_file + batch_size - 1) / batch_size;
  int64_t done = 0;
  for (int64_t b = 0; b < batches; ++b) {
    if (options.stop && options.stop->load()) {
      res.interrupted = true;
      break;
    }
    report(done, fmt::format("writing batch {}/{}", b + 1, batches));
    BatchOptions bo;
    bo.batch_id = fmt::format("import-{}-{}", res.import_id, b);
    const BatchResult br = repo.create_batch_from_query(
        schema,
        fmt::format("SELECT * FROM {}.main.{} WHERE rowid >= {} AND rowid < {}",
                    duck::quote_ident(alias), qt, b * batch_size, (b + 1) * batch_size),
        bo, options.null_partition);
    res.rows_written += br.rows_written;
    res.rows_skipped += br.rows_skipped;
    res.partitions_created += br.partitions_created;
    ++res.batches;
    done = std::min(res.rows_in_file, (b + 1) * batch_size);
  }
  report(done, "done");
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res.interrupted) {
    repo.detach_database(alias);
    fs::remove(staging, ec);
    fs::remove(staging + ".wal", ec);
  }
  return res;
}

std::string ImportResult::to_text() const {
  if (rows_written == 0 && rows_skipped == rows_in_file && rows_in_file > 0) {
    return fmt::format(
        "already imported: all {} rows of '{}' were imported before (import id {}); nothing "
        "written\n",
        rows_in_file, file, import_id);
  }
  std::string kept;
  if (batch_size_kept > 0) {
    kept = fmt::format(
        "batches of {} rows, as an earlier import of this file cut them (so that no row is "
        "written twice; --batch-size applies to new files)\n",
        batch_size_kept);
  }
  return kept + fmt::format(
                    "imported {} rows from '{}' in {:.2f} s ({:.0f} rows/s): {} batch(es), {} "
                    "partition(s) created, {} row(s) already present from an earlier run{}\n",
                    rows_written, file, seconds,
                    seconds > 0 ? static_cast<double>(rows_written) / seconds : 0.0, batches,
                    partitions_created, rows_skipped, interrupted ? " — INTERRUPTED" : "");
}

std::string ImportResult::to_json() const {
  nlohmann::ordered_json j;
  j["file"] = file;
  j["import_id"] = import_id;
  j["rows_in_file"] = rows_in_file;
  j["rows_written"] = rows_written;
  j["rows_skipped"] = rows_skipped;
  j["batches"] = batches;
  if (batch_size_kept > 0) j["batch_size_kept"] = batch_size_kept;
  j["partitions_created"] = partitions_created;
  j["interrupted"] = interrupted;
  j["seconds"] = seconds;
  return j.dump(2);
}

}  // namespace duckpart
