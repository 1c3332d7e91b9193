#include "duck/duck.hpp"

#include "duck/duckdb_internal.hpp"

#include "id_map.hpp"

#include <fmt/format.h>

#include <array>
#include <cstring>

namespace duckpart::duck {

ErrorCode classify(std::string_view m) noexcept {
  auto has = [&](std::string_view s) { return m.find(s) != std::string_view::npos; };
  if (has("Could not set lock") || has("Conflicting lock") || has("lock on file")) {
    return ErrorCode::kLocked;
  }
  if (has("not a valid DuckDB database") || has("Corrupt") || has("corrupt") || has("checksum") ||
      has("Checksum") || has("INTERNAL Error") || has("Serialization") ||
      has("unsupported version") || has("not a DuckDB") || has("too small") ||
      has("Failed to read") || has("database file with version") ||
      has("Could not read enough bytes")) {
    return ErrorCode::kCorruption;
  }
  if (has("IO Error") || has("No space left") || has("Permission denied") ||
      has("Read-only file system")) {
    return ErrorCode::kIo;
  }
  if (has("Conversion Error") || has("Invalid Input Error") || has("Constraint Error") ||
      has("Binder Error") || has("Parser Error") || has("Out of Range")) {
    return ErrorCode::kInvalidArgument;
  }
  if (has("INTERRUPT") || has("Interrupted")) return ErrorCode::kInterrupted;
  return ErrorCode::kDuckDb;
}

void fail(std::string_view context, std::string_view message) {
  std::string text =
      context.empty() ? std::string(message) : fmt::format("{}: {}", context, message);
  throw Error(classify(message), text);
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string quote_literal(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

Result& Result::operator=(Result&& o) noexcept {
  if (this != &o) {
    release();
    r_ = o.r_;
    valid_ = o.valid_;
    stream_conn_ = o.stream_conn_;
    stream_gate_ = std::move(o.stream_gate_);
    o.valid_ = false;
    o.stream_conn_ = nullptr;
  }
  return *this;
}

void Result::release() noexcept {
  if (!valid_) return;
  duckdb_destroy_result(&r_);
  valid_ = false;
  if (stream_conn_ == nullptr) return;
  // A streaming result dropped before its end: the next statement on its connection ends the
  // query and its transaction. Its failure changes nothing for the caller (the result is gone).
  try {
    std::shared_lock<std::shared_mutex> shared;
    if (stream_gate_ && !stream_gate_->loaded()) shared = stream_gate_->share();
    duckdb_result done;
    duckdb_query(stream_conn_, "SELECT 1", &done);
    duckdb_destroy_result(&done);
  } catch (...) {  // NOLINT(bugprone-empty-catch): the gate's load failed; nothing to undo
  }
  stream_conn_ = nullptr;
  stream_gate_.reset();
}

idx_t Result::column_count() { return valid_ ? duckdb_column_count(&r_) : 0; }

std::string Result::column_name(idx_t col) {
  const char* n = duckdb_column_name(&r_, col);
  return n ? n : "";
}

DataChunk Result::fetch() {
  if (!valid_) return DataChunk{};
  duckdb_data_chunk c = duckdb_fetch_chunk(r_);
  if (!c) {
    const char* err = duckdb_result_error(&r_);
    if (err && *err) fail("reading query result", err);
    stream_conn_ = nullptr;  // read to its end: DuckDB ended its transaction
    stream_gate_.reset();
  }
  return DataChunk(c);
}

int64_t Result::rows_changed() { return static_cast<int64_t>(duckdb_rows_changed(&r_)); }

void Prepared::bind(idx_t index, const Value& v) {
  duckdb_state st = DuckDBSuccess;
  duckdb_prepared_statement p = p_.get();
  struct Binder {
    duckdb_prepared_statement p;
    idx_t i;
    duckdb_state operator()(std::monostate) const { return duckdb_bind_null(p, i); }
    duckdb_state operator()(bool b) const { return duckdb_bind_boolean(p, i, b); }
    duckdb_state operator()(int64_t x) const { return duckdb_bind_int64(p, i, x); }
    duckdb_state operator()(double x) const { return duckdb_bind_double(p, i, x); }
    duckdb_state operator()(const std::string& s) const {
      return duckdb_bind_varchar_length(p, i, s.data(), s.size());
    }
    duckdb_state operator()(Date d) const { return duckdb_bind_date(p, i, duckdb_date{d.days}); }
    duckdb_state operator()(Timestamp t) const {
      return duckdb_bind_timestamp(p, i, duckdb_timestamp{t.micros});
    }
  };
  st = std::visit(Binder{p, index}, v.storage());
  if (st != DuckDBSuccess) {
    const char* err = duckdb_prepare_error(p);
    fail(fmt::format("binding parameter {} ({})", index, v.to_string()), err ? err : "bind failed");
  }
}

Result Prepared::execute() {
  const auto shared = share();
  duckdb_result r;
  if (duckdb_execute_prepared(p_.get(), &r) != DuckDBSuccess) {
    Result guard(r);
    const char* err = duckdb_result_error(&r);
    fail("", err ? err : "query failed");
  }
  return Result(r);
}

Result Prepared::execute_streaming() {
  const auto shared = share();
  duckdb_pending_result pending;
  if (duckdb_pending_prepared_streaming(p_.get(), &pending) != DuckDBSuccess) {
    std::string err =
        duckdb_pending_error(pending) ? duckdb_pending_error(pending) : "query failed";
    duckdb_destroy_pending(&pending);
    fail("", err);
  }
  duckdb_result r;
  duckdb_state st = duckdb_execute_pending(pending, &r);
  duckdb_destroy_pending(&pending);
  if (st != DuckDBSuccess) {
    Result guard(r);
    const char* err = duckdb_result_error(&r);
    fail("", err ? err : "query failed");
  }
  Result out(r);
  out.stream_conn_ = conn_;
  out.stream_gate_ = gate_;
  return out;
}

// ---- deferred extensions ------------------------------------------------------------------------

namespace {

// The gate of every open instance whose extensions are deferred, so that a Connection made from
// the raw handle (connection pools, sessions) finds it.
std::mutex g_gates_mu;
std::unordered_map<duckdb_database, std::shared_ptr<ExtensionGate>>& gates() {
  static auto* m = new std::unordered_map<duckdb_database, std::shared_ptr<ExtensionGate>>();
  return *m;
}

std::shared_ptr<ExtensionGate> gate_of(duckdb_database db) {
  std::lock_guard lock(g_gates_mu);
  auto it = gates().find(db);
  return it == gates().end() ? nullptr : it->second;
}

}  // namespace

void ExtensionGate::ensure() {
  if (loaded_.load(std::memory_order_acquire)) return;
  std::lock_guard lock(mu_);
  if (loaded_.load(std::memory_order_relaxed)) return;
  if (db_ == nullptr) fail("loading DuckDB's extensions", "the database is closed");
  loading_.store(true, std::memory_order_release);
  std::unique_lock exclusive(rw_);  // no built-ins-only statement is binding now
  try {
    internal::load_linked_extensions(db_);
  } catch (const std::exception& e) {
    loading_.store(false, std::memory_order_release);
    fail(
        "loading DuckDB's linked extensions (set DUCKPART_DUCKDB_EXTENSIONS=at-open to load "
        "them when DuckDB opens)",
        e.what());
  }
  loaded_.store(true, std::memory_order_release);
  loading_.store(false, std::memory_order_release);
}

std::shared_lock<std::shared_mutex> ExtensionGate::share() {
  if (loaded_.load(std::memory_order_acquire)) return {};
  if (loading_.load(std::memory_order_acquire)) {
    ensure();  // a load is waiting or running: wait for it rather than delay it
    return {};
  }
  std::shared_lock lock(rw_);
  if (loaded_.load(std::memory_order_acquire)) return {};
  return lock;
}

void ExtensionGate::closed() noexcept {
  std::lock_guard lock(mu_);
  db_ = nullptr;
}

Database& Database::operator=(Database&& o) noexcept {
  if (this != &o) {
    close();
    gate_ = std::move(o.gate_);
    db_ = std::move(o.db_);
  }
  return *this;
}

void Database::close() noexcept {
  if (gate_) {
    {
      std::lock_guard lock(g_gates_mu);
      gates().erase(db_.get());
    }
    gate_->closed();
    gate_.reset();
  }
  db_.reset();
}

Connection::Connection(duckdb_database db) : gate_(gate_of(db)) {
  duckdb_connection c = nullptr;
  if (duckdb_connect(db, &c) != DuckDBSuccess) fail("", "cannot connect to DuckDB");
  c_.reset(c);
}

void Connection::need(Uses uses) const {
  if (gate_ && uses == Uses::kAnything) gate_->ensure();
}

std::shared_lock<std::shared_mutex> Connection::share(Uses uses) const {
  if (!gate_ || uses != Uses::kBuiltinsOnly) return {};
  return gate_->share();
}

duckdb_connection Connection::get() const {
  need(Uses::kAnything);
  return c_.get();
}

Result Connection::query(std::string_view sql, std::string_view context, Uses uses) {
  need(uses);
  const auto shared = share(uses);
  duckdb_result r;
  const std::string s(sql);
  if (duckdb_query(c_.get(), s.c_str(), &r) != DuckDBSuccess) {
    Result guard(r);
    const char* err = duckdb_result_error(&r);
    fail(context, err ? err : "query failed");
  }
  return Result(r);
}

Prepared Connection::prepare(const std::string& sql, std::string_view context, Uses uses) {
  need(uses);
  const auto shared = share(uses);
  duckdb_prepared_statement p = nullptr;
  if (duckdb_prepare(c_.get(), sql.c_str(), &p) != DuckDBSuccess) {
    std::string err = duckdb_prepare_error(p) ? duckdb_prepare_error(p) : "prepare failed";
    duckdb_destroy_prepare(&p);
    fail(context, err);
  }
  return Prepared(p, sql, c_.get(),
                  gate_ && uses == Uses::kBuiltinsOnly && !gate_->loaded() ? gate_ : nullptr);
}

Prepared& Connection::prepared(const std::string& key, const std::string& sql,
                               std::string_view context) {
  if (auto it = prepared_.find(key); it != prepared_.end()) return *it->second;
  if (prepared_.size() >= 256) prepared_.clear();
  auto p = std::make_unique<Prepared>(prepare(sql, context));
  Prepared& ref = *p;
  prepared_.emplace(key, std::move(p));
  return ref;
}

Prepared& Connection::prepared_read(const std::string& key, const std::string& sql,
                                    std::string_view context, Uses uses) {
  if (auto it = reads_.find(key); it != reads_.end()) return *it->second;
  constexpr std::size_t kMaxStatements = 32;
  constexpr std::size_t kMaxKeyBytes = 4u << 20;
  if (reads_.size() >= kMaxStatements || reads_key_bytes_ + key.size() > kMaxKeyBytes) {
    reads_.clear();
    reads_key_bytes_ = 0;
  }
  auto p = std::make_unique<Prepared>(prepare(sql, context, uses));
  Prepared& ref = *p;
  reads_.emplace(key, std::move(p));
  reads_key_bytes_ += key.size();
  return ref;
}

Prepared Connection::prepare_single(const std::string& sql, std::string_view context) {
  need(Uses::kAnything);
  duckdb_extracted_statements extracted = nullptr;
  const idx_t n = duckdb_extract_statements(c_.get(), sql.c_str(), &extracted);
  Owned<duckdb_extracted_statements, duckdb_destroy_extracted> owner(extracted);
  if (n == 0) {
    const char* err = extracted ? duckdb_extract_statements_error(extracted) : nullptr;
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}{}{}", context, context.empty() ? "" : ": ",
                            err && *err ? err : "no SQL statement given"));
  }
  if (n > 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}{}{} statements given; run one statement at a time", context,
                            context.empty() ? "" : ": ", n));
  }
  duckdb_prepared_statement p = nullptr;
  if (duckdb_prepare_extracted_statement(c_.get(), extracted, 0, &p) != DuckDBSuccess) {
    std::string err = duckdb_prepare_error(p) ? duckdb_prepare_error(p) : "prepare failed";
    duckdb_destroy_prepare(&p);
    const ErrorCode code = classify(err);
    throw Error(code == ErrorCode::kDuckDb ? ErrorCode::kInvalidArgument : code,
                fmt::format("{}{}{}", context, context.empty() ? "" : ": ", err));
  }
  return Prepared(p, sql, c_.get());
}

int64_t Connection::query_int(std::string_view sql, std::string_view context, Uses uses) {
  Result r = query(sql, context, uses);
  DataChunk c = r.fetch();
  if (!c || c.size() == 0) return 0;
  duckdb_vector v = duckdb_data_chunk_get_vector(c.get(), 0);
  uint64_t* validity = duckdb_vector_get_validity(v);
  if (validity && !duckdb_validity_row_is_valid(validity, 0)) return 0;
  Owned<duckdb_logical_type, duckdb_destroy_logical_type> t(duckdb_vector_get_column_type(v));
  void* data = duckdb_vector_get_data(v);
  switch (duckdb_get_type_id(t.get())) {
    case DUCKDB_TYPE_BIGINT:
      return static_cast<int64_t*>(data)[0];
    case DUCKDB_TYPE_INTEGER:
      return static_cast<int32_t*>(data)[0];
    case DUCKDB_TYPE_UBIGINT:
      return static_cast<int64_t>(static_cast<uint64_t*>(data)[0]);
    case DUCKDB_TYPE_HUGEINT:
      return static_cast<int64_t>(static_cast<duckdb_hugeint*>(data)[0].lower);
    case DUCKDB_TYPE_BOOLEAN:
      return static_cast<bool*>(data)[0] ? 1 : 0;
    default:
      fail(context, "query_int: result is not an integer");
  }
}

Database Database::open(const std::string& path, bool read_only,
                        const std::vector<std::pair<std::string, std::string>>& settings,
                        Extensions extensions) {
  duckdb_config cfg = nullptr;
  duckdb_create_config(&cfg);
  if (read_only) duckdb_set_config(cfg, "access_mode", "READ_ONLY");
  // Nothing can be downloaded here; never try.
  duckdb_set_config(cfg, "autoinstall_known_extensions", "false");
  duckdb_set_config(cfg, "autoload_known_extensions", "false");
  const bool deferred =
      extensions == Extensions::kOnFirstUse && internal::defer_linked_extensions(cfg);
  for (const auto& [name, value] : settings) {
    if (duckdb_set_config(cfg, name.c_str(), value.c_str()) != DuckDBSuccess) {
      duckdb_destroy_config(&cfg);
      fail(fmt::format("opening DuckDB file '{}'", path),
           fmt::format("DuckDB refused the setting {} = '{}'", name, value));
    }
  }
  duckdb_database db = nullptr;
  char* err = nullptr;
  const std::string p = (path.empty() || path == ":memory:") ? std::string() : path;
  duckdb_state st = duckdb_open_ext(p.empty() ? nullptr : p.c_str(), &db, cfg, &err);
  duckdb_destroy_config(&cfg);
  if (st != DuckDBSuccess) {
    std::string msg = err ? err : "cannot open database";
    if (err) duckdb_free(err);
    fail(fmt::format("opening DuckDB file '{}'", path), msg);
  }
  Database d;
  d.db_.reset(db);
  if (deferred) {
    d.gate_ = std::make_shared<ExtensionGate>(db);
    std::lock_guard lock(g_gates_mu);
    gates()[db] = d.gate_;
  }
  return d;
}

// ---- UUID ---------------------------------------------------------------------------------------

std::string uuid_to_string(duckdb_hugeint h) {
  const uint64_t upper = static_cast<uint64_t>(h.upper) ^ (uint64_t{1} << 63);
  const uint64_t lower = h.lower;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(36, '-');
  int pos = 0;
  for (int i = 0; i < 32; ++i) {
    if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
    const uint64_t word = i < 16 ? upper : lower;
    const int shift = 60 - 4 * (i % 16);
    out[static_cast<std::size_t>(pos++)] = kHex[(word >> shift) & 0xF];
  }
  return out;
}

namespace {

// Hex digit value by byte; 0xFF for anything else.
constexpr std::array<uint8_t, 256> kHexValue = [] {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = 0xFF;
  for (int c = 0; c < 10; ++c) t[static_cast<std::size_t>('0' + c)] = static_cast<uint8_t>(c);
  for (int c = 0; c < 6; ++c) {
    t[static_cast<std::size_t>('a' + c)] = static_cast<uint8_t>(10 + c);
    t[static_cast<std::size_t>('A' + c)] = static_cast<uint8_t>(10 + c);
  }
  return t;
}();

// The 16 hex digits at p[offsets[0..15]] as one word; `bad` gets the high bits of invalid ones.
inline uint64_t hex_word(const char* p, const int* offsets, uint8_t& bad) {
  uint64_t w = 0;
  for (int i = 0; i < 16; ++i) {
    const uint8_t v = kHexValue[static_cast<unsigned char>(p[offsets[i]])];
    bad |= v;
    w = (w << 4) | (v & 0xF);
  }
  return w;
}

}  // namespace

bool uuid_parse(std::string_view text, duckdb_hugeint& out) {
  // Fast path: the canonical 8-4-4-4-12 form (what uuid_to_string and every UUID library print).
  if (text.size() == 36 && text[8] == '-' && text[13] == '-' && text[18] == '-' &&
      text[23] == '-') {
    static constexpr int kHi[16] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17};
    static constexpr int kLo[16] = {19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35};
    uint8_t bad = 0;
    const uint64_t hi = hex_word(text.data(), kHi, bad);
    const uint64_t lo = hex_word(text.data(), kLo, bad);
    if ((bad & 0xF0) == 0) {
      out.upper = static_cast<int64_t>(hi ^ (uint64_t{1} << 63));
      out.lower = lo;
      return true;
    }
    return false;
  }
  uint64_t words[2] = {0, 0};
  int digits = 0;
  std::size_t start = 0, end = text.size();
  if (end >= 2 && text.front() == '{' && text.back() == '}') {
    ++start;
    --end;
  }
  for (std::size_t i = start; i < end; ++i) {
    const char c = text[i];
    uint64_t v = 0;
    if (c >= '0' && c <= '9') {
      v = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = static_cast<uint64_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v = static_cast<uint64_t>(c - 'A' + 10);
    } else if (c == '-') {
      continue;  // DuckDB accepts hyphens anywhere
    } else {
      return false;
    }
    if (digits >= 32) return false;
    uint64_t& w = words[digits / 16];
    w = (w << 4) | v;
    ++digits;
  }
  if (digits != 32) return false;
  out.upper = static_cast<int64_t>(words[0] ^ (uint64_t{1} << 63));
  out.lower = words[1];
  return true;
}

bool uuid_normalize(std::string_view text, std::string& canonical) {
  if (text.size() >= 2 && text.front() == '{' && text.back() == '}') {
    text = text.substr(1, text.size() - 2);
  }
  std::string hex;
  hex.reserve(32);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '-') continue;  // DuckDB accepts hyphens anywhere
    if (c >= '0' && c <= '9') {
      hex += c;
    } else if (c >= 'a' && c <= 'f') {
      hex += c;
    } else if (c >= 'A' && c <= 'F') {
      hex += static_cast<char>(c - 'A' + 'a');
    } else {
      return false;
    }
  }
  if (hex.size() != 32) return false;
  canonical = hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
              hex.substr(16, 4) + "-" + hex.substr(20);
  return true;
}

// ---- decoding -----------------------------------------------------------------------------------

namespace {

__extension__ using int128 = __int128;
__extension__ using uint128 = unsigned __int128;

std::string decimal_to_string(int128 v, uint8_t scale) {
  const bool neg = v < 0;
  uint128 u = neg ? static_cast<uint128>(-(v + 1)) + 1 : static_cast<uint128>(v);
  std::string digits;
  do {
    digits += static_cast<char>('0' + static_cast<int>(u % 10));
    u /= 10;
  } while (u != 0);
  while (digits.size() <= scale) digits += '0';
  std::string out;
  if (neg) out += '-';
  for (std::size_t i = digits.size(); i-- > 0;) {
    out += digits[i];
    if (i == scale && scale > 0) out += '.';
  }
  return out;
}

std::string hugeint_to_string(duckdb_hugeint h) {
  const int128 v = (static_cast<int128>(h.upper) << 64) | static_cast<int128>(h.lower);
  return decimal_to_string(v, 0);
}

std::string read_string(duckdb_string_t* s) {
  return std::string(duckdb_string_t_data(s), duckdb_string_t_length(*s));
}

}  // namespace

duckdb_statement_type Prepared::statement_type() const noexcept {
  return duckdb_prepared_statement_type(p_.get());
}

std::vector<duckdb_type> Prepared::column_types() const {
  std::vector<duckdb_type> types;
  const idx_t n = duckdb_prepared_statement_column_count(p_.get());
  for (idx_t i = 0; i < n; ++i) types.push_back(duckdb_prepared_statement_column_type(p_.get(), i));
  return types;
}

duckdb_logical_type Prepared::column_logical_type(idx_t col) const {
  return duckdb_prepared_statement_column_logical_type(p_.get(), col);
}

std::string Prepared::column_name(idx_t col) const {
  const char* name = duckdb_prepared_statement_column_name(p_.get(), col);
  std::string out = name ? name : "";
  duckdb_free(const_cast<char*>(name));
  return out;
}

bool ChunkDecoder::can_decode(duckdb_type t) noexcept {
  switch (t) {
    case DUCKDB_TYPE_BOOLEAN:
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_DATE:
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_TZ:
    case DUCKDB_TYPE_VARCHAR:
    case DUCKDB_TYPE_BLOB:
    case DUCKDB_TYPE_UUID:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_DECIMAL:
      return true;
    default:
      return false;
  }
}

ChunkDecoder::ChunkDecoder(Result& result) {
  const idx_t n = result.column_count();
  readers_.resize(n);
  names_.reserve(n);
  for (idx_t i = 0; i < n; ++i) {
    names_.push_back(result.column_name(i));
    Owned<duckdb_logical_type, duckdb_destroy_logical_type> t(
        duckdb_column_logical_type(result.raw(), i));
    ColumnReader& r = readers_[i];
    r.type = duckdb_get_type_id(t.get());
    if (r.type == DUCKDB_TYPE_DECIMAL) {
      r.internal = duckdb_decimal_internal_type(t.get());
      r.scale = duckdb_decimal_scale(t.get());
    }
  }
}

void ChunkDecoder::decode(const DataChunk& chunk, std::vector<DataRecord>& out) const {
  const idx_t rows = chunk.size();
  const std::size_t first = out.size();
  out.resize(first + rows);
  for (std::size_t row = first; row < out.size(); ++row) out[row].values.resize(readers_.size());
  for (idx_t col = 0; col < readers_.size(); ++col) {
    duckdb_vector v = duckdb_data_chunk_get_vector(chunk.get(), col);
    uint64_t* validity = duckdb_vector_get_validity(v);
    void* data = duckdb_vector_get_data(v);
    const ColumnReader& r = readers_[col];
    for (idx_t i = 0; i < rows; ++i) {
      Value& cell = out[first + i].values[col];
      if (validity && !duckdb_validity_row_is_valid(validity, i)) {
        cell = Value{};
        continue;
      }
      switch (r.type) {
        case DUCKDB_TYPE_BOOLEAN:
          cell = Value(static_cast<bool*>(data)[i]);
          break;
        case DUCKDB_TYPE_TINYINT:
          cell = Value(static_cast<int8_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_SMALLINT:
          cell = Value(static_cast<int16_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_INTEGER:
          cell = Value(static_cast<int32_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_BIGINT:
          cell = Value(static_cast<int64_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_UTINYINT:
          cell = Value(static_cast<uint8_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_USMALLINT:
          cell = Value(static_cast<uint16_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_UINTEGER:
          cell = Value(static_cast<uint32_t*>(data)[i]);
          break;
        case DUCKDB_TYPE_UBIGINT: {
          const uint64_t u = static_cast<uint64_t*>(data)[i];
          cell = u <= static_cast<uint64_t>(INT64_MAX) ? Value(static_cast<int64_t>(u))
                                                       : Value(std::to_string(u));
          break;
        }
        case DUCKDB_TYPE_FLOAT:
          cell = Value(static_cast<double>(static_cast<float*>(data)[i]));
          break;
        case DUCKDB_TYPE_DOUBLE:
          cell = Value(static_cast<double*>(data)[i]);
          break;
        case DUCKDB_TYPE_DATE:
          cell = Value(Date{static_cast<duckdb_date*>(data)[i].days});
          break;
        case DUCKDB_TYPE_TIMESTAMP:
        case DUCKDB_TYPE_TIMESTAMP_TZ:
          cell = Value(Timestamp{static_cast<duckdb_timestamp*>(data)[i].micros});
          break;
        case DUCKDB_TYPE_VARCHAR:
        case DUCKDB_TYPE_BLOB:
          cell = Value(read_string(&static_cast<duckdb_string_t*>(data)[i]));
          break;
        case DUCKDB_TYPE_UUID:
          cell = Value(uuid_to_string(static_cast<duckdb_hugeint*>(data)[i]));
          break;
        case DUCKDB_TYPE_HUGEINT:
          cell = Value(hugeint_to_string(static_cast<duckdb_hugeint*>(data)[i]));
          break;
        case DUCKDB_TYPE_DECIMAL: {
          int128 raw = 0;
          switch (r.internal) {
            case DUCKDB_TYPE_SMALLINT:
              raw = static_cast<int16_t*>(data)[i];
              break;
            case DUCKDB_TYPE_INTEGER:
              raw = static_cast<int32_t*>(data)[i];
              break;
            case DUCKDB_TYPE_BIGINT:
              raw = static_cast<int64_t*>(data)[i];
              break;
            default: {
              const duckdb_hugeint h = static_cast<duckdb_hugeint*>(data)[i];
              raw = (static_cast<int128>(h.upper) << 64) | static_cast<int128>(h.lower);
            }
          }
          cell = Value(decimal_to_string(raw, r.scale));
          break;
        }
        default:
          // Query builders cast every other type to VARCHAR; reaching here is a programming error.
          throw Error(ErrorCode::kDuckDb,
                      fmt::format("column '{}' has a type duckpart cannot decode (type id {})",
                                  names_[col], static_cast<int>(r.type)));
      }
    }
  }
}

// ---- appending ----------------------------------------------------------------------------------

namespace {

duckdb_type chunk_type_for(const Column& c) {
  switch (c.type) {
    case ColumnType::kBoolean:
      return DUCKDB_TYPE_BOOLEAN;
    case ColumnType::kUuid:
      return DUCKDB_TYPE_UUID;  // parsed by uuid_parse, not cast from text by the appender
    case ColumnType::kTinyint:
    case ColumnType::kSmallint:
    case ColumnType::kInteger:
    case ColumnType::kBigint:
    case ColumnType::kUtinyint:
    case ColumnType::kUsmallint:
    case ColumnType::kUinteger:
      return DUCKDB_TYPE_BIGINT;
    case ColumnType::kFloat:
    case ColumnType::kDouble:
      return DUCKDB_TYPE_DOUBLE;
    case ColumnType::kDate:
      return DUCKDB_TYPE_DATE;
    case ColumnType::kTimestamp:
      return DUCKDB_TYPE_TIMESTAMP;
    case ColumnType::kTimestampTz:
      return DUCKDB_TYPE_TIMESTAMP_TZ;
    case ColumnType::kBlob:
      return DUCKDB_TYPE_BLOB;
    default:
      return DUCKDB_TYPE_VARCHAR;
  }
}

}  // namespace

BatchAppender::BatchAppender(Connection& conn, const std::string& catalog, const std::string& table,
                             const Schema& schema, std::string context)
    : context_(std::move(context)) {
  duckdb_appender a = nullptr;
  if (duckdb_appender_create_ext(conn.get(), catalog.empty() ? nullptr : catalog.c_str(), "main",
                                 table.c_str(), &a) != DuckDBSuccess) {
    std::string err = a && duckdb_appender_error(a) ? duckdb_appender_error(a) : "cannot append";
    duckdb_appender_destroy(&a);
    fail(context_, err);
  }
  app_.reset(a);
  for (const Column& c : schema.columns()) {
    names_.push_back(c.name);
    chunk_types_.push_back(chunk_type_for(c));
    logical_.emplace_back(duckdb_create_logical_type(chunk_types_.back()));
  }
}

void BatchAppender::append(const ColumnBatch& batch, const std::vector<uint32_t>& rows,
                           const std::vector<std::vector<duckdb_hugeint>>* uuids,
                           const std::vector<TextColumn>* text) {
  std::vector<duckdb_logical_type> types;
  types.reserve(logical_.size());
  for (auto& t : logical_) types.push_back(t.get());
  const idx_t capacity = duckdb_vector_size();
  Owned<duckdb_data_chunk, duckdb_destroy_data_chunk> chunk(
      duckdb_create_data_chunk(types.data(), types.size()));
  for (std::size_t begin = 0; begin < rows.size(); begin += capacity) {
    const std::size_t n = std::min<std::size_t>(capacity, rows.size() - begin);
    duckdb_data_chunk_reset(chunk.get());
    for (std::size_t col = 0; col < chunk_types_.size(); ++col) {
      duckdb_vector v = duckdb_data_chunk_get_vector(chunk.get(), col);
      const ColumnVector& src = batch.columns[col];
      if (!src.valid.empty()) {
        duckdb_vector_ensure_validity_writable(v);
        uint64_t* validity = duckdb_vector_get_validity(v);
        for (std::size_t i = 0; i < n; ++i) {
          duckdb_validity_set_row_validity(validity, i, src.valid[rows[begin + i]] != 0);
        }
      }
      void* data = duckdb_vector_get_data(v);
      switch (chunk_types_[col]) {
        case DUCKDB_TYPE_BOOLEAN: {
          const auto& s = std::get<std::vector<uint8_t>>(src.data);
          auto* d = static_cast<bool*>(data);
          for (std::size_t i = 0; i < n; ++i) d[i] = s[rows[begin + i]] != 0;
          break;
        }
        case DUCKDB_TYPE_BIGINT:
        case DUCKDB_TYPE_TIMESTAMP:
        case DUCKDB_TYPE_TIMESTAMP_TZ: {
          const auto& s = std::get<std::vector<int64_t>>(src.data);
          auto* d = static_cast<int64_t*>(data);
          for (std::size_t i = 0; i < n; ++i) d[i] = s[rows[begin + i]];
          break;
        }
        case DUCKDB_TYPE_DATE: {
          const auto& s = std::get<std::vector<int32_t>>(src.data);
          auto* d = static_cast<int32_t*>(data);
          for (std::size_t i = 0; i < n; ++i) d[i] = s[rows[begin + i]];
          break;
        }
        case DUCKDB_TYPE_DOUBLE: {
          const auto& s = std::get<std::vector<double>>(src.data);
          auto* d = static_cast<double*>(data);
          for (std::size_t i = 0; i < n; ++i) d[i] = s[rows[begin + i]];
          break;
        }
        case DUCKDB_TYPE_UUID: {
          auto* d = static_cast<duckdb_hugeint*>(data);
          if (uuids && !(*uuids)[col].empty()) {
            const duckdb_hugeint* parsed = (*uuids)[col].data();
            for (std::size_t i = 0; i < n; ++i) d[i] = parsed[rows[begin + i]];
            break;
          }
          const auto& s = std::get<std::vector<std::string>>(src.data);
          for (std::size_t i = 0; i < n; ++i) {
            const uint32_t row = rows[begin + i];
            if (!src.is_valid(row)) continue;
            if (!uuid_parse(s[row], d[i])) {
              throw Error(
                  ErrorCode::kInvalidArgument,
                  fmt::format("{}: record {}: column '{}' (UUID): value '{}{}' is not a UUID",
                              context_, row, names_[col], s[row].substr(0, 80),
                              s[row].size() > 80 ? "..." : ""));
            }
          }
          break;
        }
        default: {
          if (text && col < text->size() && (*text)[col].ends) {
            const TextColumn& t = (*text)[col];
            for (std::size_t i = 0; i < n; ++i) {
              const std::string_view str = t.at(rows[begin + i]);
              duckdb_vector_assign_string_element_len(v, i, str.data(), str.size());
            }
            break;
          }
          const auto& s = std::get<std::vector<std::string>>(src.data);
          for (std::size_t i = 0; i < n; ++i) {
            const std::string& str = s[rows[begin + i]];
            duckdb_vector_assign_string_element_len(v, i, str.data(), str.size());
          }
        }
      }
    }
    duckdb_data_chunk_set_size(chunk.get(), n);
    if (duckdb_append_data_chunk(app_.get(), chunk.get()) != DuckDBSuccess) {
      const char* err = duckdb_appender_error(app_.get());
      fail(context_, err ? err : "append failed");
    }
  }
}

void BatchAppender::close() {
  if (duckdb_appender_close(app_.get()) != DuckDBSuccess) {
    const char* err = duckdb_appender_error(app_.get());
    fail(context_, err ? err : "append failed");
  }
}

namespace {

// The in-memory database check_casts appends into: one per process, opened on first use with the
// stores' extensions (a JSON column needs its extension to be created).
const Database& cast_database() {
  static const Database* db = new Database(Database::open(":memory:", false, {{"threads", "1"}}));
  return *db;
}

// Appends rows [from, to) of the text columns `cols` as VARCHAR vectors, as BatchAppender does,
// into temporary table `table`, whose columns have those columns' types (emptied first); returns
// DuckDB's error, or "" when every value cast. Nothing is stored but the cast values.
std::string append_texts(Connection& conn, const std::string& table, const ColumnBatch& batch,
                         const std::vector<std::size_t>& cols, std::size_t from, std::size_t to) {
  // Appended inside a transaction that is rolled back however this returns: the cast values stay
  // in the transaction's local storage and are dropped, never stored (a DELETE afterwards doubled
  // the cost).
  conn.exec("BEGIN TRANSACTION", "check_casts");
  struct Rollback {
    Connection& conn;
    ~Rollback() {
      try {
        conn.exec("ROLLBACK", "check_casts");
      } catch (...) {  // NOLINT(bugprone-empty-catch): a failed append may have ended it already
      }
    }
  } rollback{conn};
  duckdb_appender raw = nullptr;
  if (duckdb_appender_create_ext(conn.get(), "temp", "main", table.c_str(), &raw) !=
      DuckDBSuccess) {
    std::string err = raw && duckdb_appender_error(raw) ? duckdb_appender_error(raw) : "";
    duckdb_appender_destroy(&raw);
    fail("check_casts: creating the appender", err);
  }
  Owned<duckdb_appender, duckdb_appender_destroy> app(raw);
  Owned<duckdb_logical_type, duckdb_destroy_logical_type> text(
      duckdb_create_logical_type(DUCKDB_TYPE_VARCHAR));
  std::vector<duckdb_logical_type> types(cols.size(), text.get());
  Owned<duckdb_data_chunk, duckdb_destroy_data_chunk> chunk(
      duckdb_create_data_chunk(types.data(), types.size()));
  const idx_t capacity = duckdb_vector_size();
  for (std::size_t begin = from; begin < to; begin += capacity) {
    const std::size_t n = std::min<std::size_t>(capacity, to - begin);
    duckdb_data_chunk_reset(chunk.get());
    for (std::size_t k = 0; k < cols.size(); ++k) {
      duckdb_vector v = duckdb_data_chunk_get_vector(chunk.get(), k);
      const ColumnVector& src = batch.columns[cols[k]];
      const auto& texts = std::get<std::vector<std::string>>(src.data);
      if (!src.valid.empty()) {
        duckdb_vector_ensure_validity_writable(v);
        uint64_t* validity = duckdb_vector_get_validity(v);
        for (std::size_t i = 0; i < n; ++i) {
          duckdb_validity_set_row_validity(validity, i, src.valid[begin + i] != 0);
        }
      }
      for (std::size_t i = 0; i < n; ++i) {
        const std::string& str = texts[begin + i];
        duckdb_vector_assign_string_element_len(v, i, str.data(), str.size());
      }
    }
    duckdb_data_chunk_set_size(chunk.get(), n);
    if (duckdb_append_data_chunk(app.get(), chunk.get()) != DuckDBSuccess) {
      const char* err = duckdb_appender_error(app.get());
      return err && *err ? err : "append failed";
    }
  }
  if (duckdb_appender_close(app.get()) != DuckDBSuccess) {
    const char* err = duckdb_appender_error(app.get());
    return err && *err ? err : "append failed";
  }
  return "";
}

// The first `max` bytes of UTF-8 text `s`, cut at a character's start, with "..." when cut.
std::string text_head(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n) + "...";
}

}  // namespace

void check_casts(const Schema& schema, const ColumnBatch& batch, std::size_t rows) {
  rows = std::min(rows, batch.rows);
  std::vector<std::size_t> cols;
  for (std::size_t c = 0; c < schema.columns().size(); ++c) {
    const ColumnType t = schema.columns()[c].type;
    if (chunk_type_for(schema.columns()[c]) == DUCKDB_TYPE_VARCHAR && t != ColumnType::kVarchar) {
      cols.push_back(c);
    }
  }
  if (cols.empty() || rows == 0) return;
  // Per thread: a connection and its table "casts" with the columns `cols` in order, made again
  // when the columns' types change (a connection and CREATE TABLE cost ~0.4 ms a call).
  struct Session {
    Connection conn;
    std::string ddl;  // of "casts"
  };
  thread_local Session session{cast_database().connect(), ""};
  Connection& conn = session.conn;
  auto create = [&](const std::string& table, const std::vector<std::size_t>& which) {
    std::string ddl = fmt::format("CREATE OR REPLACE TEMP TABLE {} (", table);
    for (std::size_t k = 0; k < which.size(); ++k) {
      ddl += fmt::format("{}c{} {}", k ? ", " : "", k, schema.columns()[which[k]].sql_type);
    }
    ddl += ")";
    if (table == "casts" && ddl == session.ddl) return;
    if (table == "casts") session.ddl.clear();  // until made
    conn.exec(ddl, "check_casts");
    if (table == "casts") session.ddl = ddl;
  };
  // "cast_<c>": column c alone (made on a failure).
  create("casts", cols);
  const std::size_t step = 64 * duckdb_vector_size();  // rows per appender
  for (std::size_t from = 0; from < rows; from += step) {
    const std::size_t to = std::min(rows, from + step);
    const std::string err = append_texts(conn, "casts", batch, cols, from, to);
    if (err.empty()) continue;
    // Some value in [from, to) does not cast: the first row that fails (halving the range: ~17
    // appends), then its first column that fails alone.
    std::size_t lo = from, hi = to;
    while (hi - lo > 1) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (append_texts(conn, "casts", batch, cols, lo, mid).empty()) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const std::size_t r = lo;
    for (const std::size_t c : cols) {
      const std::string table = fmt::format("cast_{}", c);
      create(table, {c});
      const std::string why = append_texts(conn, table, batch, {c}, r, r + 1);
      if (why.empty()) continue;
      const Column& col = schema.columns()[c];
      const std::string& value = std::get<std::vector<std::string>>(batch.columns[c].data)[r];
      // The appender says only "type mismatch"; the cast itself says why (DuckDB's message quotes
      // the value: kept short).
      std::string reason = why;
      if (value.find('\0') == std::string::npos) {
        try {
          conn.exec(fmt::format("SELECT CAST({} AS {})", quote_literal(value), col.sql_type),
                    "check_casts");
        } catch (const Error& e) {
          reason = e.what();
          const std::size_t at = reason.find("Conversion Error: ");
          if (at != std::string::npos) reason = reason.substr(at + 18);
          reason = reason.substr(0, reason.find('\n'));  // not DuckDB's "LINE 1: SELECT ..."
        }
      }
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("record {}: column '{}' ({}): value '{}' does not cast to {}: {}", r,
                              col.name, col.sql_type, text_head(value, 80), col.sql_type,
                              text_head(reason, 240)));
    }
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("records {} to {}: a value does not cast to its column's type: {}",
                            from, to - 1, err));
  }
}

std::optional<uint32_t> id_value_fingerprint(ColumnType type, const Value& id) {
  if (id.is_null()) return std::nullopt;
  switch (type) {
    case ColumnType::kUuid: {
      duckdb_hugeint h{};
      if (!uuid_parse(id.to_string(), h)) return std::nullopt;
      return id_fingerprint(&h, sizeof(h));
    }
    case ColumnType::kBigint: {
      if (!id.is<int64_t>()) return std::nullopt;
      const int64_t v = id.get<int64_t>();
      return id_fingerprint(&v, sizeof(v));
    }
    case ColumnType::kVarchar: {
      const std::string text = id.to_string();
      return id_fingerprint(text.data(), text.size());
    }
    default:
      return std::nullopt;
  }
}

namespace {

// Reads a result chunk of (id, rowid): the fingerprint of each row's id (0 where it is NULL, with
// `valid` false), its rowid, and the largest rowid + 1. Touches nothing but the chunk's
// DuckDB-owned vectors and the output arrays; kept out of line so that the ThreadSanitizer
// suppression for chunk memory (tests/tsan.supp) names exactly this reading. False on an
// unsupported id type or a rowid outside 32 bits.
[[gnu::noinline]] bool read_id_chunk(const DataChunk& chunk, uint32_t* fps, uint32_t* rows_out,
                                     uint8_t* valid, uint64_t& rowid_end) {
  const idx_t n = chunk.size();
  duckdb_vector ids = duckdb_data_chunk_get_vector(chunk.get(), 0);
  duckdb_vector rows = duckdb_data_chunk_get_vector(chunk.get(), 1);
  duckdb_logical_type lt = duckdb_vector_get_column_type(ids);
  const duckdb_type type = duckdb_get_type_id(lt);
  duckdb_destroy_logical_type(&lt);
  uint64_t* validity = duckdb_vector_get_validity(ids);
  const auto* rowids = static_cast<const int64_t*>(duckdb_vector_get_data(rows));
  const void* data = duckdb_vector_get_data(ids);
  for (idx_t i = 0; i < n; ++i) {
    const int64_t r = rowids[i];
    if (r < 0 || r >= (int64_t{1} << 32) - 1) return false;
    rowid_end = std::max<uint64_t>(rowid_end, static_cast<uint64_t>(r) + 1);
    rows_out[i] = static_cast<uint32_t>(r);
    valid[i] = !validity || duckdb_validity_row_is_valid(validity, i);
    fps[i] = 0;
    if (!valid[i]) continue;
    switch (type) {
      case DUCKDB_TYPE_UUID:
        fps[i] =
            id_fingerprint(&static_cast<const duckdb_hugeint*>(data)[i], sizeof(duckdb_hugeint));
        break;
      case DUCKDB_TYPE_BIGINT:
        fps[i] = id_fingerprint(&static_cast<const int64_t*>(data)[i], sizeof(int64_t));
        break;
      case DUCKDB_TYPE_VARCHAR: {
        auto* s = const_cast<duckdb_string_t*>(&static_cast<const duckdb_string_t*>(data)[i]);
        fps[i] = id_fingerprint(duckdb_string_t_data(s), duckdb_string_t_length(*s));
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

bool add_id_fingerprints(const DataChunk& chunk, IdRowMap& map, uint64_t& rowid_end) {
  const idx_t n = chunk.size();
  if (n == 0) return true;
  std::vector<uint32_t> fps(n), rows(n);
  std::vector<uint8_t> valid(n);
  if (!read_id_chunk(chunk, fps.data(), rows.data(), valid.data(), rowid_end)) return false;
  for (idx_t i = 0; i < n; ++i) {
    if (valid[i]) map.add(fps[i], rows[i]);
  }
  return true;
}

}  // namespace duckpart::duck
