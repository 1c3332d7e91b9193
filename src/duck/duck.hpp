// Thin RAII owners over DuckDB's C API. The only place in duckpart that includes duckdb.h.
//
// Every handle is move-only and closed exactly once. Failures throw duckpart::Error with DuckDB's
// message plus the context given by the caller (a file, a partition); lock and corruption failures
// are classified (kLocked, kCorruption, kIo) so callers can tell the user what to do.
#pragma once

#include <duckdb.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "duckpart/error.hpp"
#include "duckpart/record.hpp"
#include "duckpart/schema.hpp"
#include "duckpart/value.hpp"

namespace duckpart {
class IdRowMap;
}

namespace duckpart::duck {

template <auto kClose>
struct CloseWith {
  template <class T>
  void operator()(T* h) const noexcept {
    kClose(&h);
  }
};
template <class Handle, auto kClose>
using Owned = std::unique_ptr<std::remove_pointer_t<Handle>, CloseWith<kClose>>;
// For the few destroy functions that take the handle itself (duckdb_destroy_selection_vector).
template <auto kClose>
struct CloseByValue {
  template <class T>
  void operator()(T* h) const noexcept {
    kClose(h);
  }
};
template <class Handle, auto kClose>
using OwnedByValue = std::unique_ptr<std::remove_pointer_t<Handle>, CloseByValue<kClose>>;

// Classifies a DuckDB error message into an ErrorCode (lock conflicts, damaged files, I/O).
ErrorCode classify(std::string_view duckdb_message) noexcept;
// Throws Error(classify(message)) with "<context>: <message>".
[[noreturn]] void fail(std::string_view context, std::string_view duckdb_message);

// Quotes an identifier for SQL ("a""b"). Identifiers are also validated against the schema
// elsewhere.
std::string quote_ident(std::string_view name);
// Quotes a string literal ('it''s'). Only for values that cannot be bound (ATTACH paths).
std::string quote_literal(std::string_view text);

class DataChunk;
class ExtensionGate;

// A materialised or streaming query result. Always destroyed with duckdb_destroy_result.
//
// A streaming result destroyed before its end would keep its connection's transaction (and the
// locks and versions it holds) until that connection runs another statement: DuckDB ends a
// query's transaction only when its result is read to the end or the next query starts. Until
// then checkpoints of the files it read fail ("other write transactions active") or wait, and
// old row versions are not cleaned up (bench/repro/abandoned_stream_checkpoint.c). So a streaming
// result made by Prepared::execute_streaming remembers its connection and, when it is destroyed
// before its end, runs `SELECT 1` there. The connection must outlive the result (every holder
// declares it first).
class Result {
 public:
  Result() = default;
  explicit Result(duckdb_result r) : r_(r), valid_(true) {}
  Result(Result&& o) noexcept
      : r_(o.r_),
        valid_(o.valid_),
        stream_conn_(o.stream_conn_),
        stream_gate_(std::move(o.stream_gate_)) {
    o.valid_ = false;
    o.stream_conn_ = nullptr;
  }
  Result& operator=(Result&& o) noexcept;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  ~Result() { release(); }

  idx_t column_count();
  std::string column_name(idx_t col);
  // Next chunk, or an empty DataChunk at the end. Throws on a streaming error.
  DataChunk fetch();
  int64_t rows_changed();
  duckdb_result* raw() noexcept { return &r_; }

 private:
  friend class Prepared;
  void release() noexcept;

  duckdb_result r_{};
  bool valid_ = false;
  // Set while a streaming result has rows left: the connection that runs it, and the gate its
  // statement was prepared under (null when the extensions were loaded).
  duckdb_connection stream_conn_ = nullptr;
  std::shared_ptr<ExtensionGate> stream_gate_;
};

class DataChunk {
 public:
  DataChunk() = default;
  explicit DataChunk(duckdb_data_chunk c) : c_(c) {}
  explicit operator bool() const noexcept { return c_ != nullptr; }
  idx_t size() const noexcept { return c_ ? duckdb_data_chunk_get_size(c_.get()) : 0; }
  duckdb_data_chunk get() const noexcept { return c_.get(); }

 private:
  Owned<duckdb_data_chunk, duckdb_destroy_data_chunk> c_;
};

// When DuckDB's linked extensions (core_functions, icu, json, parquet, autocomplete) are loaded
// into an instance. DuckDB loads them when it opens (~13 ms of a fresh process's ~25 ms open);
// kOnFirstUse loads them the first time a statement that may need them runs, so a process that
// only attaches partitions and counts or reads rows of built-in types never pays for them. Falls
// back to kAtOpen when the library is not the release duckpart was compiled against
// (duckdb_internal.hpp) or DUCKPART_DUCKDB_EXTENSIONS=at-open.
enum class Extensions { kAtOpen, kOnFirstUse };

// What a statement may use. kBuiltinsOnly: DuckDB's built-in catalog is enough (ATTACH, DETACH,
// count(*), comparisons, LIKE, IN, casts of types other than TIMESTAMPTZ, whose text form ICU
// changes); anything else loads the extensions first (kAnything, the default).
enum class Uses { kAnything, kBuiltinsOnly };

// Loads an instance's deferred extensions once; shared by its Database, Connections and the
// statements prepared built-ins-only. Loading registers functions, casts and replacement scans in
// structures DuckDB reads without locks while it binds, so it never runs while a built-ins-only
// statement is being prepared or started on another connection: those hold `share()`, the load
// holds the lock exclusively. Statements that arrive while a load waits wait for it to end
// instead (no starvation). The execution of an already bound plan (a streaming result's later
// fetches) is not covered: it looks nothing up.
class ExtensionGate {
 public:
  explicit ExtensionGate(duckdb_database db) : db_(db) {}
  void ensure();  // throws Error when loading fails or the database is closed
  bool loaded() const noexcept { return loaded_.load(std::memory_order_acquire); }
  // Held while a built-ins-only statement is prepared or started; empty once loaded.
  std::shared_lock<std::shared_mutex> share();
  void closed() noexcept;  // the Database closes: later ensure() calls fail instead

 private:
  std::mutex mu_;         // one loader at a time
  std::shared_mutex rw_;  // shared: built-ins-only statements; exclusive: the load
  duckdb_database db_;    // under mu_
  std::atomic<bool> loading_{false};
  std::atomic<bool> loaded_{false};
};

class Prepared {
 public:
  // `gate`: the instance's, when the statement was prepared built-ins-only and its extensions are
  // deferred (its executions then hold ExtensionGate::share()).
  // `conn`: the connection it was prepared on (execute_streaming's results end their
  // transaction there when dropped early).
  Prepared(duckdb_prepared_statement p, std::string sql, duckdb_connection conn,
           std::shared_ptr<ExtensionGate> gate = nullptr)
      : p_(p), sql_(std::move(sql)), conn_(conn), gate_(std::move(gate)) {}
  // Binds parameter `index` (1-based) to `v` with its natural DuckDB type.
  void bind(idx_t index, const Value& v);
  Result execute();
  // What the statement is (SELECT, INSERT, ...) and the type of each result column.
  duckdb_statement_type statement_type() const noexcept;
  std::vector<duckdb_type> column_types() const;
  std::string column_name(idx_t col) const;
  // The logical type of result column `col`; the caller destroys it (duckdb_destroy_logical_type).
  duckdb_logical_type column_logical_type(idx_t col) const;
  // A streaming result: chunks are produced as they are fetched (bounded memory).
  Result execute_streaming();

 private:
  std::shared_lock<std::shared_mutex> share() const {
    return gate_ ? gate_->share() : std::shared_lock<std::shared_mutex>();
  }

  Owned<duckdb_prepared_statement, duckdb_destroy_prepare> p_;
  std::string sql_;
  duckdb_connection conn_ = nullptr;
  std::shared_ptr<ExtensionGate> gate_;
};

class Connection {
 public:
  Connection() = default;
  // A connection to `db`; statements on it load deferred extensions as they need them.
  explicit Connection(duckdb_database db);
  explicit operator bool() const noexcept { return c_ != nullptr; }
  // Runs `sql` (one or more statements); throws with `context` on failure.
  Result query(std::string_view sql, std::string_view context = "", Uses uses = Uses::kAnything);
  void exec(std::string_view sql, std::string_view context = "", Uses uses = Uses::kAnything) {
    query(sql, context, uses);
  }
  Prepared prepare(const std::string& sql, std::string_view context = "",
                   Uses uses = Uses::kAnything);
  // The statement `sql` prepared on this connection once and kept (for statements run at every
  // commit: preparing costs ~0.4 ms). `sql` must name only what stays valid as long as it is used
  // (callers put an attach generation in `key`); the cache is emptied when it reaches 256.
  Prepared& prepared(const std::string& key, const std::string& sql, std::string_view context = "");
  // The same for reads over many partitions (a UNION ALL of one SELECT per partition: preparing it
  // costs ~0.5 ms per partition). Their plans are larger, so at most 32 statements or 4 MB of
  // keys are kept; the cache is emptied when either is reached.
  Prepared& prepared_read(const std::string& key, const std::string& sql,
                          std::string_view context = "", Uses uses = Uses::kAnything);
  // Prepares `sql`, which must hold exactly one statement; throws Error(kInvalidArgument) naming
  // the problem when it holds none or several, or when it does not parse or bind.
  Prepared prepare_single(const std::string& sql, std::string_view context = "");
  // Single value of a single-row result as int64 (count(*) and friends); 0 for NULL.
  int64_t query_int(std::string_view sql, std::string_view context = "",
                    Uses uses = Uses::kAnything);
  void interrupt() noexcept { duckdb_interrupt(c_.get()); }
  // The raw handle, for the C API's appenders and table functions: loads deferred extensions.
  duckdb_connection get() const;

 private:
  void need(Uses uses) const;
  std::shared_lock<std::shared_mutex> share(Uses uses) const;

  std::shared_ptr<ExtensionGate> gate_;  // null: extensions loaded at open
  Owned<duckdb_connection, duckdb_disconnect> c_;
  std::unordered_map<std::string, std::unique_ptr<Prepared>> prepared_;  // destroyed before c_
  std::unordered_map<std::string, std::unique_ptr<Prepared>> reads_;     // destroyed before c_
  std::size_t reads_key_bytes_ = 0;
};

class Database {
 public:
  // Opens `path` (":memory:"/"" for in-memory) with DuckDB's global `settings` (name, value)
  // applied at start (no SET statement, whose first run in a process costs ~1 ms). Throws Error
  // with the path (kLocked if another process holds it) or naming a setting DuckDB refuses.
  static Database open(const std::string& path, bool read_only = false,
                       const std::vector<std::pair<std::string, std::string>>& settings = {},
                       Extensions extensions = Extensions::kAtOpen);
  Database() = default;
  Database(Database&& o) noexcept = default;
  Database& operator=(Database&& o) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database() { close(); }

  Connection connect() const { return Connection(db_.get()); }
  duckdb_database get() const noexcept { return db_.get(); }
  // Whether DuckDB's linked extensions are loaded (always, unless opened kOnFirstUse and no
  // statement has needed them yet).
  bool extensions_loaded() const noexcept { return !gate_ || gate_->loaded(); }
  void load_extensions() {
    if (gate_) gate_->ensure();
  }
  void close() noexcept;

 private:
  std::shared_ptr<ExtensionGate> gate_;  // null: extensions loaded at open
  Owned<duckdb_database, duckdb_close> db_;
};

// Decodes result chunks into DataRecords, one ColumnReader per result column.
class ChunkDecoder {
 public:
  explicit ChunkDecoder(Result& result);
  // Appends every row of `chunk` to `out`.
  void decode(const DataChunk& chunk, std::vector<DataRecord>& out) const;
  const std::vector<std::string>& names() const noexcept { return names_; }
  // Whether decode() handles columns of type `t` (others must be cast to VARCHAR first).
  static bool can_decode(duckdb_type t) noexcept;

 private:
  struct ColumnReader {
    duckdb_type type = DUCKDB_TYPE_INVALID;
    duckdb_type internal = DUCKDB_TYPE_INVALID;  // DECIMAL storage type
    uint8_t scale = 0;
  };
  std::vector<ColumnReader> readers_;
  std::vector<std::string> names_;
};

// Text of a column kept outside its ColumnBatch (the write buffer's arenas): row r is
// bytes[ends[r - 1], ends[r]), with ends[-1] taken as 0.
struct TextColumn {
  const char* bytes = nullptr;
  const uint64_t* ends = nullptr;  // nullptr: the column's text is in the batch

  std::string_view at(std::size_t r) const noexcept {
    const uint64_t b = r == 0 ? 0 : ends[r - 1];
    return std::string_view(bytes + b, ends[r] - b);
  }
};

// Appends rows of a ColumnBatch (selected by index) into a table through DuckDB's chunk appender.
// Columns whose C++ form is text but whose SQL type is not (DECIMAL, UUID, HUGEINT, ...) are
// appended as VARCHAR and cast by DuckDB.
class BatchAppender {
 public:
  BatchAppender(Connection& conn, const std::string& catalog, const std::string& table,
                const Schema& schema, std::string context);
  // Appends batch rows `rows`. `uuids`, when not null, holds per column either nothing or the
  // column's UUIDs already parsed (uuid_parse, one per batch row; null rows hold anything): the
  // rows are then read from there instead of parsing their text here.
  // `text`, when not null, holds per column a TextColumn: where set, that column's text is read
  // from there instead of the batch.
  void append(const ColumnBatch& batch, const std::vector<uint32_t>& rows,
              const std::vector<std::vector<duckdb_hugeint>>* uuids = nullptr,
              const std::vector<TextColumn>* text = nullptr);
  // Flushes and closes (errors surface here).
  void close();

 private:
  Owned<duckdb_appender, duckdb_appender_destroy> app_;
  std::vector<duckdb_type> chunk_types_;
  std::vector<Owned<duckdb_logical_type, duckdb_destroy_logical_type>> logical_;
  std::vector<std::string> names_;
  std::string context_;
};

// Refuses a batch holding a value DuckDB's appender would not cast to its column's type, among
// the columns appended as text but stored as another type (DECIMAL, HUGEINT, and the types
// duckpart keeps as text: INTERVAL, TIME, ...). Those columns are appended, as BatchAppender
// appends them, into a temporary table of the same types in an in-memory database of this
// process, so the check is DuckDB's own cast. Throws Error(kInvalidArgument) "record N: column
// 'x' (T): value 'v' does not cast to T: <DuckDB's reason>". Schemas without such columns cost
// nothing. Only the first `rows` records are tried (all by default).
void check_casts(const Schema& schema, const ColumnBatch& batch, std::size_t rows = SIZE_MAX);

// Canonical text of a UUID stored as DuckDB's hugeint; and back (accepts the forms DuckDB accepts:
// 32 hex digits with optional hyphens and braces). Returns false on invalid text.
std::string uuid_to_string(duckdb_hugeint h);
bool uuid_normalize(std::string_view text, std::string& canonical);
// Parses the same forms into DuckDB's UUID storage (hugeint with the top bit flipped).
bool uuid_parse(std::string_view text, duckdb_hugeint& out);

// The id fingerprint (id_map.hpp) of an id value of a UUID, BIGINT or VARCHAR column given as
// text (the canonical text for UUIDs); nullopt for another type or text that is not of the type.
std::optional<uint32_t> id_value_fingerprint(ColumnType type, const Value& id);
// Adds to `map` every row of a chunk of (id, rowid) whose id is not NULL, and raises `rowid_end`
// past the largest rowid. False (the map is then unusable) when the id column is not UUID, BIGINT
// or VARCHAR or a rowid does not fit 32 bits.
bool add_id_fingerprints(const DataChunk& chunk, IdRowMap& map, uint64_t& rowid_end);

}  // namespace duckpart::duck
