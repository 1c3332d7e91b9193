#include "batch.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "coerce.hpp"
#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "duckpart/period.hpp"
#include "partition_files.hpp"

namespace duckpart {

std::size_t ColumnVector::size() const noexcept {
  return std::visit([](const auto& v) { return v.size(); }, data);
}

namespace {

enum class Slot { kInt64, kInt32, kDouble, kBool, kString };

Slot slot_for(ColumnType t) {
  switch (t) {
    case ColumnType::kBoolean:
      return Slot::kBool;
    case ColumnType::kTinyint:
    case ColumnType::kSmallint:
    case ColumnType::kInteger:
    case ColumnType::kBigint:
    case ColumnType::kUtinyint:
    case ColumnType::kUsmallint:
    case ColumnType::kUinteger:
    case ColumnType::kTimestamp:
    case ColumnType::kTimestampTz:
      return Slot::kInt64;
    case ColumnType::kDate:
      return Slot::kInt32;
    case ColumnType::kFloat:
    case ColumnType::kDouble:
      return Slot::kDouble;
    default:
      return Slot::kString;
  }
}

std::string_view slot_name(Slot s) {
  switch (s) {
    case Slot::kInt64:
      return "std::vector<int64_t>";
    case Slot::kInt32:
      return "std::vector<int32_t>";
    case Slot::kDouble:
      return "std::vector<double>";
    case Slot::kBool:
      return "std::vector<uint8_t>";
    case Slot::kString:
      return "std::vector<std::string>";
  }
  return "?";
}

ColumnVector make_vector(ColumnType t, std::size_t capacity) {
  ColumnVector v;
  switch (slot_for(t)) {
    case Slot::kInt64:
      v.data = std::vector<int64_t>();
      break;
    case Slot::kInt32:
      v.data = std::vector<int32_t>();
      break;
    case Slot::kDouble:
      v.data = std::vector<double>();
      break;
    case Slot::kBool:
      v.data = std::vector<uint8_t>();
      break;
    case Slot::kString:
      v.data = std::vector<std::string>();
      break;
  }
  std::visit([&](auto& vec) { vec.reserve(capacity); }, v.data);
  return v;
}

bool slot_matches(const ColumnVector& v, Slot s) {
  switch (s) {
    case Slot::kInt64:
      return std::holds_alternative<std::vector<int64_t>>(v.data);
    case Slot::kInt32:
      return std::holds_alternative<std::vector<int32_t>>(v.data);
    case Slot::kDouble:
      return std::holds_alternative<std::vector<double>>(v.data);
    case Slot::kBool:
      return std::holds_alternative<std::vector<uint8_t>>(v.data);
    case Slot::kString:
      return std::holds_alternative<std::vector<std::string>>(v.data);
  }
  return false;
}

// Values already in the form coerce_value would produce (the common case): no copy, no check.
bool already_canonical(ColumnType t, const Value& v) {
  switch (t) {
    case ColumnType::kBoolean:
      return v.is<bool>();
    case ColumnType::kBigint:
      return v.is<int64_t>();
    case ColumnType::kInteger:  // the range coerce_value checks
      return v.is<int64_t>() && v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
    case ColumnType::kDouble:
      return v.is<double>();
    case ColumnType::kVarchar:
    case ColumnType::kBlob:
      return v.is<std::string>();
    case ColumnType::kDate:
      return v.is<Date>();
    case ColumnType::kTimestamp:
      return v.is<Timestamp>();
    case ColumnType::kUuid: {
      if (!v.is<std::string>()) return false;
      const std::string& s = v.get<std::string>();
      if (s.size() != 36) return false;
      for (std::size_t i = 0; i < 36; ++i) {
        const char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
          if (ch != '-') return false;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
          return false;
        }
      }
      return true;
    }
    default:
      return false;
  }
}

}  // namespace

ColumnBatch make_column_batch(const Schema& schema, std::size_t capacity) {
  ColumnBatch b;
  for (const auto& c : schema.columns()) b.columns.push_back(make_vector(c.type, capacity));
  return b;
}

DataRecord record_from_map(const Schema& schema, const std::map<std::string, Value>& data) {
  DataRecord r;
  r.values.resize(schema.columns().size());
  for (const auto& [k, v] : data) r.values[schema.index_of(k)] = v;
  return r;
}

ColumnBatch records_to_batch(const Schema& schema, const std::vector<DataRecord>& records) {
  const auto& cols = schema.columns();
  const std::size_t nc = cols.size();
  const std::size_t nr = records.size();
  for (std::size_t ri = 0; ri < nr; ++ri) {
    if (records[ri].values.size() != nc) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("record {}: has {} values, table '{}' has {} columns", ri,
                              records[ri].values.size(), schema.name(), nc));
    }
  }
  ColumnBatch b = make_column_batch(schema, nr);
  b.rows = nr;
  // Row by row (each record's values are one heap block: one pass over them, not one per
  // column) into typed outputs sized up front; a NULL cell keeps the default value. With several
  // bad values, the error names the first in record order (then column order).
  struct Out {
    Slot slot;
    ColumnType type;
    int64_t* i64 = nullptr;
    int32_t* i32 = nullptr;
    double* f64 = nullptr;
    uint8_t* b8 = nullptr;
    std::string* str = nullptr;
  };
  std::vector<Out> outs(nc);
  for (std::size_t ci = 0; ci < nc; ++ci) {
    Out& o = outs[ci];
    o.slot = slot_for(cols[ci].type);
    o.type = cols[ci].type;
    ColumnVector& v = b.columns[ci];
    switch (o.slot) {
      case Slot::kInt64:
        std::get<std::vector<int64_t>>(v.data).resize(nr);
        o.i64 = std::get<std::vector<int64_t>>(v.data).data();
        break;
      case Slot::kInt32:
        std::get<std::vector<int32_t>>(v.data).resize(nr);
        o.i32 = std::get<std::vector<int32_t>>(v.data).data();
        break;
      case Slot::kDouble:
        std::get<std::vector<double>>(v.data).resize(nr);
        o.f64 = std::get<std::vector<double>>(v.data).data();
        break;
      case Slot::kBool:
        std::get<std::vector<uint8_t>>(v.data).resize(nr);
        o.b8 = std::get<std::vector<uint8_t>>(v.data).data();
        break;
      case Slot::kString:
        std::get<std::vector<std::string>>(v.data).resize(nr);
        o.str = std::get<std::vector<std::string>>(v.data).data();
        break;
    }
  }
  // NULL cells: a column's validity is made on its first NULL (under `valid_mu`; `has_valid`
  // tells the other threads it exists).
  std::mutex valid_mu;
  std::vector<std::atomic<bool>> has_valid(nc);
  auto convert = [&](std::size_t from, std::size_t to) {
    for (std::size_t ri = from; ri < to; ++ri) {
      const std::vector<Value>& vals = records[ri].values;
      for (std::size_t ci = 0; ci < nc; ++ci) {
        const Value& raw = vals[ci];
        const Out& o = outs[ci];
        if (raw.is_null()) {
          ColumnVector& out = b.columns[ci];
          if (!has_valid[ci].load(std::memory_order_acquire)) {
            std::lock_guard lock(valid_mu);
            if (!has_valid[ci].load(std::memory_order_relaxed)) {
              out.valid.assign(nr, 1);
              has_valid[ci].store(true, std::memory_order_release);
            }
          }
          out.valid[ri] = 0;
          continue;
        }
        Value coerced;
        const Value* vp = &raw;
        if (!already_canonical(o.type, raw)) {
          try {
            coerced = coerce_value(cols[ci], raw, "");
          } catch (const Error& e) {
            throw Error(e.code(), fmt::format("record {}: {}", ri, e.what()));
          }
          vp = &coerced;
        }
        const Value& v = *vp;
        switch (o.slot) {
          case Slot::kInt64:
            o.i64[ri] = v.is<Timestamp>() ? v.get<Timestamp>().micros : v.get<int64_t>();
            break;
          case Slot::kInt32:
            o.i32[ri] = v.get<Date>().days;
            break;
          case Slot::kDouble:
            o.f64[ri] = v.get<double>();
            break;
          case Slot::kBool:
            o.b8[ri] = v.get<bool>() ? 1 : 0;
            break;
          case Slot::kString:
            o.str[ri] = v.get<std::string>();
            break;
        }
      }
    }
  };
  // Large batches are converted on up to 4 threads, each a contiguous range of records (the
  // copy costs ~0.3 us per 7-value record, a third of a 1M-record create_batch). With several
  // bad values the error still names the first in record order: ranges are in order, and each
  // stops at its own first error.
  constexpr std::size_t kRowsPerThread = 131072;
  const std::size_t threads_n = std::min<std::size_t>(
      {std::max(1u, std::thread::hardware_concurrency()), 4, nr / kRowsPerThread});
  if (threads_n <= 1) {
    convert(0, nr);
    return b;
  }
  std::vector<std::exception_ptr> errors(threads_n);
  {
    std::vector<std::thread> threads;
    threads.reserve(threads_n);  // no reallocation while threads run
    auto range = [&](std::size_t t) {
      try {
        convert(nr * t / threads_n, nr * (t + 1) / threads_n);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    };
    try {
      for (std::size_t t = 1; t < threads_n; ++t) threads.emplace_back(range, t);
    } catch (const std::system_error&) {
      // No more threads: this one converts the ranges that got none.
      for (std::size_t t = threads.size() + 1; t < threads_n; ++t) range(t);
    }
    range(0);
    for (auto& t : threads) t.join();
  }
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return b;
}

namespace {

// The high bit of every byte of `s`, OR-ed into one word: 0 when `s` is ASCII. Branch-light
// (overlapping loads cover the tail), so a column of ASCII text costs little more than touching
// its strings; utf8_error runs only on a block of rows where some byte is not ASCII.
inline uint64_t non_ascii_bits(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  uint64_t acc = 0;
  if (n >= 8) {
    uint64_t w;
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      std::memcpy(&w, p + i, 8);
      acc |= w;
    }
    std::memcpy(&w, p + n - 8, 8);
    acc |= w;
  } else if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    acc = a | b;
  } else if (n > 0) {
    acc = p[0] | p[n / 2] | p[n - 1];
  }
  return acc & 0x8080808080808080ULL;
}

// The values DuckDB accepts in an integer column narrower than BIGINT; INT64_MIN / INT64_MAX for
// the others.
std::pair<int64_t, int64_t> integer_range(ColumnType t) {
  switch (t) {
    case ColumnType::kTinyint:
      return {INT8_MIN, INT8_MAX};
    case ColumnType::kSmallint:
      return {INT16_MIN, INT16_MAX};
    case ColumnType::kInteger:
      return {INT32_MIN, INT32_MAX};
    case ColumnType::kUtinyint:
      return {0, UINT8_MAX};
    case ColumnType::kUsmallint:
      return {0, UINT16_MAX};
    case ColumnType::kUinteger:
      return {0, UINT32_MAX};
    default:
      return {INT64_MIN, INT64_MAX};
  }
}

}  // namespace

std::optional<RefusedRecord> first_refused_record(const Schema& schema, const ColumnBatch& batch) {
  const auto& cols = schema.columns();
  if (batch.columns.size() != cols.size()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("column batch has {} columns, table '{}' has {}", batch.columns.size(),
                            schema.name(), cols.size()));
  }
  for (std::size_t i = 0; i < cols.size(); ++i) {
    const ColumnVector& v = batch.columns[i];
    const Slot s = slot_for(cols[i].type);
    if (!slot_matches(v, s)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("column batch: column '{}' ({}) must be a {}", cols[i].name,
                              cols[i].sql_type, slot_name(s)));
    }
    if (v.size() != batch.rows || (!v.valid.empty() && v.valid.size() != batch.rows)) {
      throw Error(
          ErrorCode::kInvalidArgument,
          fmt::format("column batch: column '{}' has {} values (validity {}), batch has {} rows",
                      cols[i].name, v.size(), v.valid.size(), batch.rows));
    }
  }
  // Each check below looks only at the records before the first refused one found so far, so the
  // record reported is the first in the batch whatever the check that refuses it.
  std::optional<RefusedRecord> first;
  auto limit = [&] { return first ? first->record : batch.rows; };
  auto refuse = [&](std::size_t r, std::string message) {
    if (!first || r < first->record) first = RefusedRecord{r, std::move(message)};
  };
  // Text DuckDB would refuse at the append: refused here, before a buffered write accepts it
  // (a drain that failed on it would fail again at every retry and at every replay of its log).
  for (std::size_t i = 0; i < cols.size(); ++i) {
    if (!is_utf8_text(cols[i])) continue;
    const ColumnVector& v = batch.columns[i];
    const auto& texts = std::get<std::vector<std::string>>(v.data);
    constexpr std::size_t kBlock = 256;  // rows tested for non-ASCII bytes at once
    for (std::size_t from = 0; from < limit(); from += kBlock) {
      const std::size_t to = std::min(limit(), from + kBlock);
      uint64_t high = 0;  // NULL rows' strings too: harmless, utf8_error skips them
      for (std::size_t r = from; r < to; ++r) high |= non_ascii_bits(texts[r]);
      if (high == 0) continue;
      for (std::size_t r = from; r < to; ++r) {
        if (!v.is_valid(r)) continue;
        const std::size_t bad = utf8_error(texts[r]);
        if (bad == std::string_view::npos) continue;
        refuse(r, fmt::format("record {}: column '{}' ({}): the text is not valid UTF-8 (byte "
                              "{} of {} is 0x{:02x})",
                              r, cols[i].name, cols[i].sql_type, bad, texts[r].size(),
                              static_cast<unsigned char>(texts[r][bad])));
        break;
      }
    }
  }
  // Numbers DuckDB would not cast to a narrower column at the append (integers are appended as
  // BIGINT, FLOAT as DOUBLE): refused here for the same reason. Text stored as another type
  // (DECIMAL, HUGEINT, INTERVAL, ...) is tried by DuckDB itself: duck::check_casts.
  for (std::size_t i = 0; i < cols.size(); ++i) {
    const ColumnVector& v = batch.columns[i];
    if (const auto [lo, hi] = integer_range(cols[i].type); lo != INT64_MIN || hi != INT64_MAX) {
      const auto& xs = std::get<std::vector<int64_t>>(v.data);
      int64_t min = INT64_MAX, max = INT64_MIN;  // NULL rows too, then each row if out of range
      for (const int64_t x : xs) {
        min = std::min(min, x);
        max = std::max(max, x);
      }
      if (min >= lo && max <= hi) continue;
      for (std::size_t r = 0; r < limit(); ++r) {
        if (v.is_valid(r) && (xs[r] < lo || xs[r] > hi)) {
          refuse(r, fmt::format("record {}: column '{}' ({}): value {} is out of range [{}, {}]", r,
                                cols[i].name, cols[i].sql_type, xs[r], lo, hi));
        }
      }
    } else if (cols[i].type == ColumnType::kFloat) {
      const auto& xs = std::get<std::vector<double>>(v.data);
      for (std::size_t r = 0; r < limit(); ++r) {
        // Infinities and NaN stay what they are; a finite value past FLOAT's range overflows.
        if (std::isfinite(xs[r]) && !std::isfinite(static_cast<float>(xs[r])) && v.is_valid(r)) {
          refuse(r, fmt::format("record {}: column '{}' ({}): value {} is out of FLOAT's range "
                                "(+-{})",
                                r, cols[i].name, cols[i].sql_type, xs[r],
                                std::numeric_limits<float>::max()));
        }
      }
    }
  }
  // The partition column: a value in every row, and in a year a partition can hold (the stores
  // route and name partitions by it; the single file keeps the same bounds so both accept the
  // same data).
  const std::size_t pc = schema.partition_index();
  const Column& pcol = cols[pc];
  const ColumnVector& p = batch.columns[pc];
  for (std::size_t r = 0; r < limit() && !p.valid.empty(); ++r) {
    if (!p.is_valid(r)) {
      refuse(r, fmt::format("record {}: partition column '{}' is NULL; every row needs a {} value",
                            r, pcol.name, pcol.sql_type));
    }
  }
  // Compared as days for DATE (a day far past year 9999 overflows microseconds), as
  // microseconds for TIMESTAMP.
  const bool is_date = pcol.type == ColumnType::kDate;
  const int64_t per_day = is_date ? 1 : kMicrosPerDay;
  auto value_of = [&](std::size_t r) {
    return is_date ? int64_t{std::get<std::vector<int32_t>>(p.data)[r]}
                   : std::get<std::vector<int64_t>>(p.data)[r];
  };
  const int64_t first_value = date_from_civil(kMinPartitionYear, 1, 1).days * per_day;
  const int64_t end_value = date_from_civil(kMaxPartitionYear + 1, 1, 1).days * per_day;
  int64_t min = INT64_MAX, max = INT64_MIN;  // NULL rows too, then each row if out of range
  for (std::size_t r = 0; r < batch.rows; ++r) {
    const int64_t v = value_of(r);
    min = std::min(min, v);
    max = std::max(max, v);
  }
  if (batch.rows > 0 && (min < first_value || max >= end_value)) {
    for (std::size_t r = 0; r < limit(); ++r) {
      const int64_t v = value_of(r);
      if ((v >= first_value && v < end_value) || !p.is_valid(r)) continue;
      const Date day = is_date ? Date{static_cast<int32_t>(v)} : date_of(Timestamp{v});
      int y = 0;
      unsigned mo = 0, d = 0;
      civil_from_date(day, y, mo, d);
      refuse(r,
             fmt::format("record {}: partition column '{}' value {} falls in year {}, outside "
                         "the supported partition years {}..{}",
                         r, pcol.name, is_date ? format_date(day) : format_timestamp(Timestamp{v}),
                         y, kMinPartitionYear, kMaxPartitionYear));
    }
  }
  return first;
}

void check_batch(const Schema& schema, const ColumnBatch& batch) {
  if (auto refused = first_refused_record(schema, batch)) {
    throw Error(ErrorCode::kInvalidArgument, std::move(refused->message));
  }
}

void check_batch_id(const std::string& batch_id) {
  for (const char* prefix : {kMigrateBatchPrefix, kCatchupBatchPrefix, kRepartitionBatchPrefix}) {
    if (batch_id.starts_with(prefix)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("batch id '{}' starts with '{}', which is reserved for the batches "
                              "of migrate and re-partitioning; choose another id",
                              batch_id, prefix));
    }
  }
}

void check_intake(const Schema& schema, const ColumnBatch& batch) {
  std::optional<RefusedRecord> refused = first_refused_record(schema, batch);
  // DuckDB's own casts for the records before it: the first refused record is reported, whatever
  // refuses it.
  duck::check_casts(schema, batch, refused ? refused->record : batch.rows);
  if (refused) throw Error(ErrorCode::kInvalidArgument, std::move(refused->message));
}

std::string new_uuid_v7() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  static uint64_t last_ms = 0;
  static uint64_t seq = 0;  // 12-bit rand_a used as a counter within one millisecond
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  uint64_t hi = 0, lo = 0;
  {
    std::lock_guard lock(mu);
    if (ms <= last_ms) {
      ms = last_ms;
      if (++seq > 0xFFF) {
        ++ms;
        seq = 0;
      }
    } else {
      seq = rng() & 0x7FF;  // leave head-room for the counter
    }
    last_ms = ms;
    hi = (ms << 16) | (uint64_t{7} << 12) | seq;
    lo = (rng() & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;
  }
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xFFFF,
                     hi & 0xFFFF, lo >> 48, lo & 0xFFFFFFFFFFFFULL);
}

int64_t new_time_ordered_id() {
  static std::atomic<uint64_t> last{0};
  const uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  uint64_t candidate = ms << 20;
  uint64_t prev = last.load();
  while (true) {
    const uint64_t next = candidate > prev ? candidate : prev + 1;
    if (last.compare_exchange_weak(prev, next)) return static_cast<int64_t>(next & INT64_MAX);
  }
}

int64_t assign_missing_ids(const Schema& schema, ColumnBatch& batch) {
  if (!schema.id_index()) return 0;
  ColumnVector& v = batch.columns[*schema.id_index()];
  if (v.valid.empty()) return 0;
  int64_t n = 0;
  const ColumnType t = schema.columns()[*schema.id_index()].type;
  for (std::size_t r = 0; r < batch.rows; ++r) {
    if (v.valid[r]) continue;
    if (t == ColumnType::kBigint) {
      std::get<std::vector<int64_t>>(v.data)[r] = new_time_ordered_id();
    } else {
      std::get<std::vector<std::string>>(v.data)[r] = new_uuid_v7();
    }
    v.valid[r] = 1;
    ++n;
  }
  return n;
}

Value batch_cell(const Schema& schema, const ColumnBatch& batch, std::size_t col, std::size_t row) {
  const ColumnVector& v = batch.columns[col];
  if (!v.is_valid(row)) return Value{};
  const ColumnType t = schema.columns()[col].type;
  switch (slot_for(t)) {
    case Slot::kInt64: {
      const int64_t x = std::get<std::vector<int64_t>>(v.data)[row];
      if (t == ColumnType::kTimestamp || t == ColumnType::kTimestampTz) return Value(Timestamp{x});
      return Value(x);
    }
    case Slot::kInt32:
      return Value(Date{std::get<std::vector<int32_t>>(v.data)[row]});
    case Slot::kDouble:
      return Value(std::get<std::vector<double>>(v.data)[row]);
    case Slot::kBool:
      return Value(std::get<std::vector<uint8_t>>(v.data)[row] != 0);
    case Slot::kString:
      return Value(std::get<std::vector<std::string>>(v.data)[row]);
  }
  return Value{};
}

DataRecord batch_row(const Schema& schema, const ColumnBatch& batch, std::size_t row) {
  DataRecord r;
  for (std::size_t c = 0; c < batch.columns.size(); ++c)
    r.values.push_back(batch_cell(schema, batch, c, row));
  return r;
}

}  // namespace duckpart
