#include "duckpart/duckdb_repository.hpp"

#include <fmt/format.h>

#include <sys/stat.h>
#include <filesystem>
#include <mutex>
#include <set>

#include "batch.hpp"
#include "coerce.hpp"
#include "connection_pool.hpp"
#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "duckpart/period.hpp"
#include "query_sql.hpp"
#include "sql_stream.hpp"
#include "table_sql.hpp"

namespace duckpart {

struct DuckDBDataRepository::Impl {
  std::string path;
  DuckDBRepositoryOptions options;
  duck::Database db;
  std::unique_ptr<ConnectionPool> pool;
  std::mutex ddl_mu;
  std::set<std::string> known_tables;
  std::set<std::string> checked_layouts;  // schema JSON of layouts checked against the file
  RepositoryCounters counters;
  std::mutex counters_mu;

  std::string table_ref(const Schema& s) const { return "main." + duck::quote_ident(s.name()); }

  void ensure_table(const Schema& schema, duck::Connection& conn) {
    std::lock_guard lock(ddl_mu);
    if (checked_layouts.count(schema.to_json())) return;
    if (!options.read_only && options.create_tables) {
      conn.exec(create_table_sql("", schema, /*if_not_exists=*/true), path);
      conn.exec(
          "CREATE TABLE IF NOT EXISTS main._duckpart_batches(table_name VARCHAR, batch_id VARCHAR, "
          "row_count BIGINT, committed_at TIMESTAMP)",
          path);
    }
    // A table of that name written with another layout is a conflict, not a DuckDB error later.
    auto st = conn.prepare(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index");
    st.bind(1, Value(schema.name()));
    duck::Result r = st.execute();
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> cols;
    while (auto chunk = r.fetch()) dec.decode(chunk, cols);
    bool same = cols.empty() || cols.size() == schema.columns().size();
    for (std::size_t i = 0; same && i < cols.size(); ++i) {
      const Column& want = schema.columns()[i];
      const std::string name = cols[i].values[0].to_string();
      same = name.size() == want.name.size() &&
             std::equal(name.begin(), name.end(), want.name.begin(),
                        [](char a, char b) { return std::tolower(a) == std::tolower(b); }) &&
             parse_column_type(cols[i].values[1].to_string()) == want.type;
    }
    if (!same) {
      std::string found;
      for (const auto& c : cols) {
        found +=
            (found.empty() ? "" : ", ") + c.values[0].to_string() + " " + c.values[1].to_string();
      }
      throw Error(ErrorCode::kConflict,
                  fmt::format("table '{}' in '{}' has another layout ({}) than the schema given",
                              schema.name(), path, found));
    }
    known_tables.insert(schema.name());
    checked_layouts.insert(schema.to_json());
  }

  bool table_exists(const Schema& schema, duck::Connection& conn) {
    {
      std::lock_guard lock(ddl_mu);
      if (known_tables.count(schema.name())) return true;
    }
    auto st = conn.prepare(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema='main' AND "
        "table_name=?");
    st.bind(1, Value(schema.name()));
    duck::Result r = st.execute();
    std::vector<DataRecord> rows;
    duck::ChunkDecoder dec(r);
    while (auto c = r.fetch()) dec.decode(c, rows);
    return !rows.empty() && rows[0].values[0].get<int64_t>() > 0;
  }

  BatchResult write(const Schema& schema, ColumnBatch& batch, const BatchOptions& opts) {
    if (options.read_only) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("'{}' is open read-only; writes are refused", path));
    }
    check_batch_id(opts.batch_id);
    check_intake(schema, batch);
    BatchResult res;
    res.batch_id = opts.batch_id.empty() ? new_uuid_v7() : opts.batch_id;
    // (check_intake refused partition values outside the partition store's years, so both
    // accept exactly the same data.)
    if (batch.rows == 0) return res;
    res.ids_generated = assign_missing_ids(schema, batch);
    auto conn = pool->take();
    ensure_table(schema, *conn);
    conn->exec("BEGIN TRANSACTION");
    try {
      if (!opts.batch_id.empty()) {
        auto st = conn->prepare(
            "SELECT count(*) FROM main._duckpart_batches WHERE table_name = ? AND batch_id = ?");
        st.bind(1, Value(schema.name()));
        st.bind(2, Value(res.batch_id));
        duck::Result r = st.execute();
        std::vector<DataRecord> rows;
        duck::ChunkDecoder dec(r);
        while (auto c = r.fetch()) dec.decode(c, rows);
        if (rows[0].values[0].get<int64_t>() > 0) {
          conn->exec("ROLLBACK");
          res.rows_skipped = static_cast<int64_t>(batch.rows);
          res.partitions_skipped = 1;
          return res;
        }
      }
      std::vector<uint32_t> all(batch.rows);
      for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
      duck::BatchAppender app(*conn, "", schema.name(), schema,
                              fmt::format("{}: table '{}'", path, schema.name()));
      app.append(batch, all);
      app.close();
      auto ins =
          conn->prepare("INSERT INTO main._duckpart_batches VALUES (?, ?, ?, now()::TIMESTAMP)");
      ins.bind(1, Value(schema.name()));
      ins.bind(2, Value(res.batch_id));
      ins.bind(3, Value(static_cast<int64_t>(batch.rows)));
      ins.execute();
      conn->exec("COMMIT", path);
    } catch (...) {
      try {
        conn->exec("ROLLBACK");
      } catch (...) {
      }
      throw;
    }
    res.rows_written = static_cast<int64_t>(batch.rows);
    res.partitions_written = 1;
    std::lock_guard lock(counters_mu);
    counters.batches_committed++;
    counters.rows_written += res.rows_written;
    return res;
  }
};

DuckDBDataRepository::DuckDBDataRepository(const std::string& database_path,
                                           DuckDBRepositoryOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = database_path.empty() ? ":memory:" : database_path;
  impl_->options = options;
  if (impl_->path != ":memory:") {
    const auto parent = std::filesystem::path(impl_->path).parent_path();
    if (!parent.empty() && !std::filesystem::exists(parent)) {
      throw Error(ErrorCode::kIo, fmt::format("directory '{}' of database '{}' does not exist",
                                              parent.string(), impl_->path));
    }
    if (options.read_only && !std::filesystem::exists(impl_->path)) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("database file '{}' does not exist", impl_->path));
    }
  }
  impl_->db = duck::Database::open(impl_->path, options.read_only);
  impl_->pool = std::make_unique<ConnectionPool>(impl_->db.get());
}

DuckDBDataRepository::~DuckDBDataRepository() = default;

DataRecord DuckDBDataRepository::create(const Schema& schema,
                                        const std::map<std::string, Value>& data) {
  ColumnBatch b = records_to_batch(schema, {record_from_map(schema, data)});
  impl_->write(schema, b, {});
  return batch_row(schema, b, 0);
}

BatchResult DuckDBDataRepository::create_batch(const Schema& schema,
                                               const std::vector<DataRecord>& records,
                                               const BatchOptions& options) {
  ColumnBatch b = records_to_batch(schema, records);
  return impl_->write(schema, b, options);
}

BatchResult DuckDBDataRepository::create_batch_columnar(const Schema& schema, ColumnBatch batch,
                                                        const BatchOptions& options) {
  return impl_->write(schema, batch, options);
}

std::optional<DataRecord> DuckDBDataRepository::get_by_id(const Schema& schema, const Value& id) {
  if (!schema.id_index()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("table '{}' has no id column", schema.name()));
  }
  const Column& c = schema.columns()[*schema.id_index()];
  if (id.is_null()) throw Error(ErrorCode::kInvalidArgument, "get_by_id: id is NULL");
  const Value v = coerce_value(c, id, "get_by_id");
  auto conn = impl_->pool->take();
  if (!impl_->table_exists(schema, *conn)) return std::nullopt;
  // A constant and no LIMIT, as in the partitioned store (see there): half the time in one file.
  const std::optional<std::string> constant = constant_sql(c, v);
  auto st = conn->prepare(
      fmt::format("SELECT {} FROM {} WHERE {} = {}", full_select_list(schema),
                  impl_->table_ref(schema), duck::quote_ident(c.name),
                  constant ? *constant : fmt::format("CAST(? AS {})", param_sql_type(c, v))));
  if (!constant) st.bind(1, v);
  duck::Result r = st.execute();
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  if (rows.empty()) return std::nullopt;
  return std::move(rows[0]);
}

namespace {

std::vector<DataRecord> run_rows(duck::Connection& conn, const std::string& sql,
                                 const std::vector<Value>& params) {
  auto st = conn.prepare(sql);
  for (std::size_t i = 0; i < params.size(); ++i) st.bind(i + 1, params[i]);
  duck::Result r = st.execute();
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  return rows;
}

int64_t run_count(duck::Connection& conn, const std::string& sql,
                  const std::vector<Value>& params) {
  auto rows = run_rows(conn, sql, params);
  return rows.empty() ? 0 : rows[0].values[0].get<int64_t>();
}

class ResultSource final : public RecordStream::Source {
 public:
  ResultSource(ConnectionPool::Lease lease, duck::Result result)
      : lease_(std::move(lease)), result_(std::move(result)), decoder_(result_) {}
  bool fetch(std::vector<DataRecord>& out) override {
    duck::DataChunk c = result_.fetch();
    if (!c || c.size() == 0) return false;
    decoder_.decode(c, out);
    return true;
  }

 private:
  ConnectionPool::Lease lease_;  // destroyed after the result
  duck::Result result_;
  duck::ChunkDecoder decoder_;
};

class EmptySource final : public RecordStream::Source {
 public:
  bool fetch(std::vector<DataRecord>&) override { return false; }
};

}  // namespace

PaginatedResponse DuckDBDataRepository::get_all(const Schema& schema,
                                                const DataQueryRequest& request) {
  const CompiledQuery q = compile_query(schema, request);
  PaginatedResponse resp;
  resp.columns = q.column_names;
  resp.limit = request.limit;
  resp.offset = request.offset;
  resp.stats.partitions_total = 1;
  auto conn = impl_->pool->take();
  if (!impl_->table_exists(schema, *conn)) return resp;
  resp.stats.partitions_scanned = 1;
  std::vector<Value> params;
  const std::string sql = rows_sql(q, impl_->table_ref(schema), true, params);
  resp.items = run_rows(*conn, sql, params);
  params.clear();
  resp.total = run_count(*conn, count_sql(q, impl_->table_ref(schema), params), params);
  resp.has_more = request.offset + static_cast<int64_t>(resp.items.size()) < resp.total;
  return resp;
}

RecordStream DuckDBDataRepository::stream_query_results(const Schema& schema,
                                                        const DataQueryRequest& request) {
  const CompiledQuery q = compile_query(schema, request);
  QueryStats stats;
  stats.partitions_total = 1;
  auto conn = impl_->pool->take();
  if (!impl_->table_exists(schema, *conn)) {
    return RecordStream(q.column_names, std::make_unique<EmptySource>(), stats);
  }
  stats.partitions_scanned = 1;
  std::vector<Value> params;
  auto st = conn->prepare(rows_sql(q, impl_->table_ref(schema), true, params));
  for (std::size_t i = 0; i < params.size(); ++i) st.bind(i + 1, params[i]);
  duck::Result r = st.execute_streaming();
  return RecordStream(q.column_names, std::make_unique<ResultSource>(std::move(conn), std::move(r)),
                      stats);
}

RecordStream DuckDBDataRepository::query_sql(const std::string& sql) {
  auto conn = std::make_shared<duck::Connection>(impl_->db.get());
  duck::Prepared checked = prepare_read_only(*conn, sql);
  const std::string final_sql = decodable_sql(checked, sql);
  duck::Prepared p = final_sql == sql ? std::move(checked) : conn->prepare(final_sql, "SQL");
  duck::Result r = p.execute_streaming();
  auto source = std::make_unique<SqlResultSource>(conn, std::move(r));
  std::vector<std::string> names = source->names();
  QueryStats stats;
  stats.partitions_total = 1;
  stats.partitions_scanned = 1;
  return RecordStream(std::move(names), std::move(source), stats);
}

int64_t DuckDBDataRepository::count_all(const Schema& schema, const DataQueryRequest& request) {
  const CompiledQuery q = compile_query(schema, request);
  auto conn = impl_->pool->take();
  if (!impl_->table_exists(schema, *conn)) return 0;
  std::vector<Value> params;
  const std::string sql = count_sql(q, impl_->table_ref(schema), params);
  return run_count(*conn, sql, params);
}

StorageStatistics DuckDBDataRepository::get_partition_statistics() {
  StorageStatistics s;
  s.kind = "single_file";
  auto conn = impl_->pool->take();
  auto tables =
      run_rows(*conn,
               "SELECT table_name FROM information_schema.tables WHERE table_schema='main' "
               "AND table_name NOT LIKE '\\_duckpart%' ESCAPE '\\' ORDER BY table_name",
               {});
  uint64_t bytes = 0;
  int64_t mtime = 0;
  if (impl_->path != ":memory:") {
    struct stat st {};
    if (::stat(impl_->path.c_str(), &st) == 0) {
      bytes = static_cast<uint64_t>(st.st_size);
      mtime = st.st_mtime;
    }
    if (::stat((impl_->path + ".wal").c_str(), &st) == 0)
      bytes += static_cast<uint64_t>(st.st_size);
  }
  for (const auto& t : tables) {
    SchemaStatistics ss;
    ss.schema = t.values[0].get<std::string>();
    ss.directory = impl_->path;
    PartitionStatistics p;
    p.name = ss.schema;
    p.file = impl_->path;
    p.rows =
        conn->query_int(fmt::format("SELECT count(*) FROM main.{}", duck::quote_ident(ss.schema)));
    p.bytes = bytes;
    p.modified_unix = mtime;
    p.attached = true;
    ss.total_rows = p.rows;
    ss.total_bytes = bytes;
    ss.partitions.push_back(p);
    s.schemas.push_back(std::move(ss));
  }
  std::lock_guard lock(impl_->counters_mu);
  s.counters = impl_->counters;
  return s;
}

void DuckDBDataRepository::flush() {
  if (impl_->options.read_only) return;
  auto conn = impl_->pool->take();
  conn->exec("CHECKPOINT", impl_->path);
}

}  // namespace duckpart
