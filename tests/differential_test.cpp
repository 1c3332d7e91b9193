// The same random data through DuckDBDataRepository (one file) and PartitionedDataRepository (every
// strategy), then hundreds of random requests: identical rows, counts, pages and streams.
#include <fmt/format.h>

#include <cstdlib>
#include <limits>
#include <set>

#include "duck/duck.hpp"
#include "test_util.hpp"

namespace duckpart::testing {
namespace {

struct Case {
  PartitionStrategy strategy;
  const char* partition_type;
  Date first;
  Date last;
  int max_in_memory;
};

class DifferentialTest : public TempDirTest, public ::testing::WithParamInterface<Case> {};

uint64_t seed_from_env() {
  if (const char* s = std::getenv("DUCKPART_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261126;
}

Value pick_value(std::mt19937_64& rng, const std::vector<DataRecord>& rows, std::size_t col) {
  for (int tries = 0; tries < 20; ++tries) {
    const Value& v = rows[rng() % rows.size()].values[col];
    if (!v.is_null()) return v;
  }
  return rows[0].values[col].is_null() ? Value(1) : rows[0].values[col];
}

// A random, valid request over wide_schema, with values drawn mostly from the data.
DataQueryRequest random_request(std::mt19937_64& rng, const Schema& schema,
                                const std::vector<DataRecord>& rows) {
  DataQueryRequest q;
  const int nfilters = static_cast<int>(rng() % 4);
  for (int i = 0; i < nfilters; ++i) {
    // Bias towards the partition column so that pruning is exercised hard.
    const std::size_t col =
        rng() % 3 == 0 ? schema.partition_index() : rng() % schema.columns().size();
    const Column& c = schema.columns()[col];
    std::vector<FilterOperator> ops = {
        FilterOperator::kEq,     FilterOperator::kNe,       FilterOperator::kGt,
        FilterOperator::kGte,    FilterOperator::kLt,       FilterOperator::kLte,
        FilterOperator::kIn,     FilterOperator::kNotIn,    FilterOperator::kBetween,
        FilterOperator::kIsNull, FilterOperator::kIsNotNull};
    if (c.type == ColumnType::kVarchar) ops.push_back(FilterOperator::kLike);
    const FilterOperator op = ops[rng() % ops.size()];
    QueryFilter f;
    f.field = rng() % 5 == 0 ? std::string(c.name.size(), 'X') : c.name;  // replaced below
    f.field = c.name;
    f.op = op;
    switch (op) {
      case FilterOperator::kIn:
      case FilterOperator::kNotIn: {
        const std::size_t n = rng() % 4;
        for (std::size_t k = 0; k < n; ++k) f.values.push_back(pick_value(rng, rows, col));
        break;
      }
      case FilterOperator::kBetween: {
        Value a = pick_value(rng, rows, col), b = pick_value(rng, rows, col);
        f.values = {a, b};
        break;
      }
      case FilterOperator::kIsNull:
      case FilterOperator::kIsNotNull:
        break;
      case FilterOperator::kLike: {
        static const char* kPatterns[] = {"a%", "%a", "%e%", "_eta", "x\\%y%", "%", "it's", "Ω%"};
        f.value = Value(kPatterns[rng() % 8]);
        break;
      }
      default: {
        Value v = pick_value(rng, rows, col);
        // Sometimes give dates/timestamps as text, like an application would.
        if ((v.is<Date>() || v.is<Timestamp>()) && rng() % 2 == 0) v = Value(v.to_string());
        if (c.type == ColumnType::kTimestamp && rng() % 3 == 0 && v.is<Timestamp>()) {
          v = Value(Date{date_of(v.get<Timestamp>()).days});  // a DATE bound on a TIMESTAMP column
        }
        f.value = v;
      }
    }
    q.filters.push_back(std::move(f));
  }
  const int nsort = static_cast<int>(rng() % 3);
  for (int i = 0; i < nsort; ++i) {
    q.sort.push_back({schema.columns()[rng() % schema.columns().size()].name,
                      rng() % 2 ? SortDirection::kAsc : SortDirection::kDesc});
  }
  if (rng() % 2) q.limit = static_cast<int64_t>(rng() % 50);
  if (rng() % 3 == 0) q.offset = static_cast<int64_t>(rng() % 100);
  if (!q.sort.empty() || q.limit || q.offset)
    q.sort.push_back({"id", SortDirection::kAsc});  // total order
  if (rng() % 3 == 0) {
    q.columns = {"id"};
    for (const auto& c : schema.columns()) {
      if (c.name != "id" && rng() % 2) q.columns.push_back(c.name);
    }
    // Projection must keep the sort keys meaningful: sorting uses columns, not output.
  }
  return q;
}

std::string describe(const DataQueryRequest& q) {
  std::string s;
  for (const auto& f : q.filters) {
    s += f.field + " " + std::string(operator_name(f.op)) + " " + f.value.to_string();
    for (const auto& v : f.values) {
      s += ',';
      s += v.to_string();
    }
    s += "; ";
  }
  for (const auto& k : q.sort)
    s += "sort " + k.field + (k.direction == SortDirection::kAsc ? " asc; " : " desc; ");
  if (q.limit) s += "limit " + std::to_string(*q.limit) + "; ";
  s += "offset " + std::to_string(q.offset);
  return s;
}

TEST_P(DifferentialTest, RandomRequestsMatchTheSingleFile) {
  const Case& c = GetParam();
  const uint64_t seed = seed_from_env() + static_cast<uint64_t>(c.strategy) * 1000;
  std::printf("differential seed %llu (set DUCKPART_TEST_SEED to replay)\n",
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const Schema schema = wide_schema(c.partition_type);
  const bool date_part = std::string(c.partition_type) == "DATE";
  std::vector<DataRecord> rows;
  DuckDBDataRepository single(path("single.duckdb"));
  {
    PartitionedDataRepository parts(test_config(path("parts"), c.strategy, c.max_in_memory));
    // Several batches, like an application writing over time.
    for (int b = 0; b < 4; ++b) {
      auto batch = random_wide_rows(rng, 800, c.first, c.last, date_part);
      single.create_batch(schema, batch);
      parts.create_batch(schema, batch);
      rows.insert(rows.end(), batch.begin(), batch.end());
    }
  }
  // Reopen: the second half of the test runs from the catalog written on close.
  PartitionedDataRepository parts(test_config(path("parts"), c.strategy, c.max_in_memory));
  ASSERT_EQ(parts.count_all(schema), static_cast<int64_t>(rows.size()));
  int64_t pruned_queries = 0;
  int requests = 500;
  if (const char* n = std::getenv("DUCKPART_DIFF_REQUESTS")) requests = std::atoi(n);
  for (int i = 0; i < requests; ++i) {
    const DataQueryRequest q = random_request(rng, schema, rows);
    SCOPED_TRACE("request " + std::to_string(i) + ": " + describe(q));
    const PaginatedResponse a = single.get_all(schema, q);
    const PaginatedResponse b = parts.get_all(schema, q);
    ASSERT_EQ(a.total, b.total);
    ASSERT_EQ(a.has_more, b.has_more);
    ASSERT_EQ(a.columns, b.columns);
    ASSERT_EQ(a.items.size(), b.items.size());
    if (!q.sort.empty()) {
      for (std::size_t r = 0; r < a.items.size(); ++r)
        ASSERT_EQ(row_text(a.items[r]), row_text(b.items[r]));
    } else {
      ASSERT_EQ(sorted_texts(a.items), sorted_texts(b.items));
    }
    ASSERT_EQ(single.count_all(schema, q), parts.count_all(schema, q));
    if (b.stats.partitions_pruned > 0) ++pruned_queries;
    if (i % 10 == 0) {
      std::vector<DataRecord> streamed;
      RecordStream s = parts.stream_query_results(schema, q);
      DataRecord r;
      while (s.next(r)) streamed.push_back(r);
      ASSERT_EQ(sorted_texts(streamed), sorted_texts(b.items));
    }
    ASSERT_LE(parts.counters().partitions_attached_now, c.max_in_memory);
  }
  EXPECT_GT(pruned_queries, requests / 10)
      << "random filters on the partition column should prune often";
}

// A random predicate on the partition column `col` (qualified by `q`, e.g. "e1."), in the shapes
// people write: ranges, casts, IN, OR, NOT, functions, NULL tests.
std::string random_time_predicate(std::mt19937_64& rng, const Case& c, const std::string& col,
                                  const std::vector<DataRecord>& rows) {
  auto day = [&]() {
    const int32_t span = c.last.days - c.first.days + 20;
    return Date{c.first.days - 10 + static_cast<int32_t>(rng() % static_cast<uint64_t>(span))};
  };
  auto text = [&]() {
    const Date d = day();
    if (rng() % 2) return "'" + Value(d).to_string() + "'";
    const int64_t tod = static_cast<int64_t>(rng() % 86400) * 1'000'000;
    return "'" + Value(Timestamp{int64_t{d.days} * kMicrosPerDay + tod}).to_string() + "'";
  };
  auto a = text(), b = text();
  if (b < a) std::swap(a, b);
  switch (rng() % 14) {
    case 0:
      return col + " BETWEEN " + a + " AND " + b;
    case 1:
      return col + " >= " + a;
    case 2:
      return col + " < " + b;
    case 3:
      return col + " > TIMESTAMP " + a;
    case 4:
      return col + " <= DATE '" + Value(day()).to_string() + "'";
    case 5:
      return col + " = '" + pick_value(rng, rows, 1).to_string() + "'";
    case 6:
      return col + " IN ('" + pick_value(rng, rows, 1).to_string() + "', '" +
             pick_value(rng, rows, 1).to_string() + "', " + a + ")";
    case 7:
      return "(" + col + " < " + a + " OR " + col + " >= " + b + ")";
    case 8:
      return "CAST(" + col + " AS DATE) = '" + Value(day()).to_string() + "'";
    case 9:
      return col + "::DATE BETWEEN " + a + "::DATE AND " + b + "::DATE";
    case 10: {
      int y = 0;
      unsigned m = 0, d = 0;
      civil_from_date(day(), y, m, d);
      return "year(" + col + ") = " + std::to_string(y);
    }
    case 11:
      return "NOT (" + col + " >= " + a + ")";
    case 12:
      return rng() % 2 ? col + " IS NULL" : col + " IS NOT NULL";
    default:
      return "(" + col + " >= " + a + " AND " + col + " < " + b + " AND " +
             col.substr(0, col.size() - 2) + "qty > " + std::to_string(rng() % 1000) + ")";
  }
}

std::string random_sql(std::mt19937_64& rng, const Case& c, const std::vector<DataRecord>& rows) {
  const std::string p1 = random_time_predicate(rng, c, "ts", rows);
  const std::string p2 = random_time_predicate(rng, c, "ts", rows);
  switch (rng() % 10) {
    case 7:  // terms on NULLs of another column next to the range (DuckDB's statistics of an
             // empty table said "no NULLs": the terms were folded and partitions pruned)
      return "SELECT count(*), sum(big) FROM events WHERE qty IS NULL OR " + p1;
    case 8:
      return "SELECT id, name FROM events WHERE name IS NULL AND " + p1 + " ORDER BY id";
    case 9:
      return "SELECT count(*) FROM events WHERE coalesce(small, -1000) < -999 OR (" + p1 +
             " AND price IS NOT NULL)";
    case 0:
      return "SELECT count(*), sum(qty), min(ts), max(ts), sum(price), sum(big) FROM events "
             "WHERE " +
             p1;
    case 1:
      return "SELECT date_trunc('month', ts) AS m, count(*), sum(big), avg(qty) FROM events "
             "WHERE " +
             p1 + " GROUP BY m ORDER BY m";
    case 2:
      return "SELECT id, ts, name, price FROM events WHERE " + p1 + " ORDER BY ts, id LIMIT 25";
    case 3:
      return "WITH r AS (SELECT * FROM events WHERE " + p1 +
             ") SELECT name, count(*), sum(small) FROM r GROUP BY name ORDER BY name";
    case 4:
      return "SELECT count(*) FROM events WHERE " + p1 +
             " AND qty > (SELECT coalesce(avg(qty), 0) FROM events WHERE " + p2 + ")";
    case 5:
      return "SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM events WHERE " + p1 +
             " UNION ALL SELECT id FROM events WHERE " + p2 + ");";
    default:
      return "SELECT count(*), sum(e1.qty) FROM events e1 JOIN events e2 ON e1.id = e2.ref WHERE " +
             random_time_predicate(rng, c, "e1.ts", rows) + " OR " +
             random_time_predicate(rng, c, "e2.ts", rows);
  }
}

// Arbitrary SELECT statements through query_sql(): the same rows as DuckDB on the single file, and
// partitions pruned for predicates on the partition column.
TEST_P(DifferentialTest, RandomSqlMatchesTheSingleFile) {
  const Case& c = GetParam();
  const uint64_t seed = seed_from_env() + static_cast<uint64_t>(c.strategy) * 1000 + 7;
  std::printf("differential SQL seed %llu (set DUCKPART_TEST_SEED to replay)\n",
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const Schema schema = wide_schema(c.partition_type);
  const bool date_part = std::string(c.partition_type) == "DATE";
  std::vector<DataRecord> rows;
  DuckDBDataRepository single(path("single.duckdb"));
  PartitionedDataRepository parts(test_config(path("parts"), c.strategy, c.max_in_memory));
  for (int b = 0; b < 3; ++b) {
    auto batch = random_wide_rows(rng, 700, c.first, c.last, date_part);
    single.create_batch(schema, batch);
    parts.create_batch(schema, batch);
    rows.insert(rows.end(), batch.begin(), batch.end());
  }
  int requests = 150;
  if (const char* n = std::getenv("DUCKPART_DIFF_REQUESTS")) requests = std::atoi(n) / 3 + 1;
  int pruned = 0;
  for (int i = 0; i < requests; ++i) {
    const std::string sql = random_sql(rng, c, rows);
    SCOPED_TRACE("statement " + std::to_string(i) + ": " + sql);
    std::vector<DataRecord> expected, got;
    std::vector<std::string> columns_a, columns_b;
    QueryStats stats;
    {
      RecordStream a = single.query_sql(sql);
      for (DataRecord r; a.next(r);) expected.push_back(r);
      RecordStream b = parts.query_sql(sql);
      for (DataRecord r; b.next(r);) got.push_back(r);
      columns_a = a.columns();
      columns_b = b.columns();
      stats = b.stats();
    }
    ASSERT_EQ(columns_a, columns_b);
    ASSERT_EQ(expected.size(), got.size());
    if (sql.find("ORDER BY") != std::string::npos) {
      for (std::size_t r = 0; r < expected.size(); ++r)
        ASSERT_EQ(row_text(expected[r]), row_text(got[r]));
    } else {
      ASSERT_EQ(sorted_texts(expected), sorted_texts(got));
    }
    if (stats.partitions_pruned > 0) ++pruned;
    ASSERT_LE(parts.counters().partitions_attached_now, std::max<int64_t>(c.max_in_memory, 1));
  }
  EXPECT_GT(pruned, requests / 5) << "range predicates should prune partitions";
  // Daily partitions: a date bound is a partition's edge, so many statements lose terms.
  if (c.strategy == PartitionStrategy::kDaily) {
    EXPECT_GT(parts.counters().sql_partition_terms_removed, 0);
  }
}

// query_sql leaves out of a statement's WHERE clause the terms on the partition column that every
// partition it reads satisfies whole (DuckDB would still read the column for them). Statements
// that may and may not lose terms, on both partition column types: the same answers and column
// names as the single file, and exactly the terms expected gone (the counter).
TEST_F(TempDirTest, SqlTermsEveryPartitionReadSatisfiesAreLeftOutAndAnswersMatchTheSingleFile) {
  struct Statement {
    std::string sql;
    int removed;  // terms expected to go; -1: not checked
  };
  for (const std::string type : {"TIMESTAMP", "DATE"}) {
    SCOPED_TRACE("partition column " + type);
    const bool date_part = type == "DATE";
    const Schema schema = wide_schema(type);
    std::mt19937_64 rng(20261206);
    std::vector<DataRecord> rows = random_wide_rows(rng, 3000, date_from_civil(2021, 1, 1),
                                                    date_from_civil(2021, 12, 31), date_part);
    // Rows on the edges of March.
    for (const char* edge : {"2021-03-01 00:00:00", "2021-03-31 23:59:59.999999",
                             "2021-04-01 00:00:00", "2021-02-28 23:59:59.999999"}) {
      DataRecord r = rows[0];
      r.values[0] = Value(random_uuid(rng));
      const Timestamp t = *parse_timestamp(edge);
      r.values[1] = date_part ? Value(date_of(t)) : Value(t);
      rows.push_back(r);
    }
    const std::string sub = type;
    DuckDBDataRepository single(path("single_" + sub + ".duckdb"));
    PartitionedDataRepository parts(
        test_config(path("parts_" + sub), PartitionStrategy::kMonthly, 40));
    single.create_batch(schema, rows);
    parts.create_batch(schema, rows);
    const std::string agg = "SELECT count(*), sum(qty), min(ts), max(ts) FROM events WHERE ";
    const std::string last_of_may = date_part ? "'2021-05-31'" : "'2021-05-31 23:59:59.999999'";
    std::vector<Statement> statements = {
        {agg + "ts >= '2021-03-01' AND ts < '2021-06-01'", 2},
        {agg + "ts >= '2021-03-15' AND ts < '2021-06-01'", 1},
        {agg + "ts > '2021-03-01' AND ts < '2021-04-01'", 1},
        {agg + "ts = '2021-03-01'", 0},
        {agg + "ts BETWEEN '2021-03-01' AND " + last_of_may, 1},
        {agg + "ts >= DATE '2021-03-01' AND ts < CAST('2021-06-01' AS DATE) AND qty > 10", 2},
        {agg + "ts >= '2021-03-01' AND ts < '2021-05-01' AND ts <> '2021-03-05'", 2},
        {agg + "TS >= '2021-03-01' AND \"Ts\" < '2021-05-01'", 2},
        {agg + "ts >= '2021-03-01 00:00:00'::TIMESTAMP", 1},
        {agg + "ts >= now() - INTERVAL 200 YEAR", 0},
        // DuckDB renders 1e-1 (a DOUBLE) as 0.1, which parses as a DECIMAL: such a statement
        // must run as written (3 * 1e-1 > 0.3, 3 * 0.1 = 0.3). 1_000_000 renders as 1000000,
        // an INTEGER either way.
        {agg + "ts >= '2021-01-01' AND qty * 1e-1 > 0.3", 0},
        {agg + "ts >= '2021-01-01' AND qty * 1_000_000 > 0", 1},
        {agg + "ts >= '2021-01-01' AND qty = 3", 1},
        {agg + "(ts >= '2021-03-01' OR ts IS NULL) AND ts < '2021-06-01'", -1},
        {agg + "ts >= '2021-03-01'::TIMESTAMPTZ AND ts < '2021-05-01'", -1},
        {"SELECT count(*), sum(e.qty) FROM events e WHERE '2021-03-01' <= e.ts AND "
         "e.ts < TIMESTAMP '2021-06-01'",
         2},
        {"SELECT date_trunc('month', ts) AS m, count(*), sum(price) FROM events WHERE ts >= "
         "'2021-02-01' AND ts < '2021-04-01' GROUP BY m ORDER BY m",
         2},
        {"SELECT id, ts, name FROM events WHERE ts >= '2021-02-01' AND ts < '2021-03-01' "
         "ORDER BY id LIMIT 7",
         2},
        {"SELECT 'it''s' AS \"a \"\"quoted\"\" name\", count(*) FROM events WHERE ts >= "
         "'2021-01-01'",
         1},
        {"WITH r AS (SELECT * FROM events) SELECT count(*) FROM r WHERE ts >= '2021-03-01'", 0},
        // The subquery reads January too: the view's partitions do not all satisfy the term.
        {"SELECT count(*) FROM events WHERE ts >= '2021-03-01' AND qty > (SELECT avg(qty) FROM "
         "events WHERE ts < '2021-02-01')",
         0},
    };
    if (date_part) {
      statements.push_back({agg + "ts <= '2021-05-31' AND ts >= '2021-05-01'", 2});
      statements.push_back({agg + "ts <= '2021-05-30' AND ts >= '2021-05-01'", 1});
    }
    for (const Statement& st : statements) {
      SCOPED_TRACE(st.sql);
      const int64_t before = parts.counters().sql_partition_terms_removed;
      std::vector<DataRecord> expected, got;
      std::vector<std::string> columns_a, columns_b;
      for (int run = 0; run < 2; ++run) {  // the second run reuses the prepared statement
        expected.clear();
        got.clear();
        RecordStream a = single.query_sql(st.sql);
        for (DataRecord r; a.next(r);) expected.push_back(r);
        RecordStream b = parts.query_sql(st.sql);
        for (DataRecord r; b.next(r);) got.push_back(r);
        columns_a = a.columns();
        columns_b = b.columns();
        ASSERT_EQ(columns_a, columns_b);
        ASSERT_EQ(sorted_texts(expected), sorted_texts(got));
        ASSERT_FALSE(expected.empty());
      }
      if (st.removed >= 0) {
        EXPECT_EQ(parts.counters().sql_partition_terms_removed - before, st.removed);
      }
    }
    // ORDER BY ... LIMIT reads February only (DuckDB plans the stand-in table with a second,
    // unfiltered scan for late materialization; the pruning must not take it for a full read).
    for (const char* sql :
         {"SELECT id, ts, name FROM events WHERE ts >= '2021-02-01' AND ts < '2021-03-01' ORDER "
          "BY qty DESC, id LIMIT 5",
          "SELECT * FROM events WHERE ts >= '2021-02-01' AND ts < '2021-03-01' ORDER BY name, id "
          "LIMIT 3 OFFSET 2"}) {
      SCOPED_TRACE(sql);
      std::vector<DataRecord> expected, got;
      RecordStream a = single.query_sql(sql);
      for (DataRecord r; a.next(r);) expected.push_back(r);
      RecordStream b = parts.query_sql(sql);
      for (DataRecord r; b.next(r);) got.push_back(r);
      ASSERT_EQ(expected.size(), got.size());
      for (std::size_t r = 0; r < expected.size(); ++r)
        EXPECT_EQ(row_text(expected[r]), row_text(got[r]));
      EXPECT_EQ(b.stats().partitions_scanned, 1);
    }
  }
}

// get_by_id with text and integer ids that look like SQL or format strings: both stores find
// exactly the row with that id (the id is written into the lookup's SQL as a constant).
TEST_F(TempDirTest, GetByIdOfHostileTextAndIntegerIdsMatchesTheSingleFile) {
  const std::vector<std::string> hostile = {"plain",
                                            "it's",
                                            "''",
                                            "{}",
                                            "{0}",
                                            "}{",
                                            "{",
                                            "x'; DROP TABLE docs; --",
                                            "a\\b",
                                            "%s%n",
                                            "\xe2\x82\xac uro",
                                            "",
                                            " ",
                                            "NULL",
                                            "null"};
  for (const char* id_type : {"VARCHAR", "BIGINT"}) {
    SCOPED_TRACE(id_type);
    const Schema schema("docs", {{"id", id_type}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts",
                        "id");
    const std::string dir = path(std::string("parts_") + id_type);
    DuckDBDataRepository single(path(std::string("single_") + id_type + ".duckdb"));
    PartitionedDataRepository parts(test_config(dir, PartitionStrategy::kMonthly));
    std::vector<DataRecord> rows;
    std::vector<Value> ids;
    for (std::size_t i = 0; i < 300; ++i) {
      const Value id = std::string(id_type) == "VARCHAR"
                           ? Value(i < hostile.size() ? hostile[i] : fmt::format("id-{}", i))
                           : Value(static_cast<int64_t>(i * 7919) - 1000000);
      ids.push_back(id);
      rows.push_back(
          DataRecord{{id,
                      Value(to_timestamp(date_from_civil(2023, static_cast<unsigned>(1 + i % 12),
                                                         static_cast<unsigned>(1 + i % 28)))),
                      Value(static_cast<int64_t>(i))}});
    }
    single.create_batch(schema, rows);
    parts.create_batch(schema, rows);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      auto a = single.get_by_id(schema, ids[i]);
      auto b = parts.get_by_id(schema, ids[i]);
      ASSERT_TRUE(a.has_value()) << i;
      ASSERT_TRUE(b.has_value()) << i;
      EXPECT_EQ(row_text(*a), row_text(rows[i])) << i;
      EXPECT_EQ(row_text(*b), row_text(rows[i])) << i;
    }
    const Value missing = std::string(id_type) == "VARCHAR" ? Value(std::string("it''s"))
                                                            : Value(int64_t{424242424242});
    EXPECT_FALSE(single.get_by_id(schema, missing).has_value());
    EXPECT_FALSE(parts.get_by_id(schema, missing).has_value());
  }
}

// get_by_id compares an id with each partition's id range in a compact form (BIGINT exactly, text
// by its first 16 bytes) and falls back to the whole ids when the compact bounds tie. Ids sorted
// and cut into one contiguous run per month, so that neighbouring partitions' ranges meet inside
// shared 16-byte prefixes (and, for BIGINT, around zero and at both ends of the range): every
// stored id is found in the right row and every near miss is absent, as on the single file.
TEST_F(TempDirTest, GetByIdAtTheEdgesOfEveryPartitionsIdRangeMatchesTheSingleFile) {
  std::mt19937_64 rng(seed_from_env());
  for (const char* id_type : {"VARCHAR", "BIGINT"}) {
    SCOPED_TRACE(id_type);
    const bool text = std::string(id_type) == "VARCHAR";
    const Schema schema("docs", {{"id", id_type}, {"ts", "TIMESTAMP"}, {"v", "INTEGER"}}, "ts",
                        "id");
    // Text: three prefixes around the 16-byte cut, tails of 0-6 characters from an alphabet with
    // one- to three-byte UTF-8 characters (bytes above 0x7f must order above ASCII).
    const std::vector<std::string> prefixes = {"well/000000042/", "well/0000000042/",
                                               "well/000000004200/"};
    const std::vector<std::string> alphabet = {"a", "b", " ", "~", "\xc3\xa9", "\xe2\x82\xac"};
    auto random_text = [&] {
      std::string t = prefixes[rng() % prefixes.size()];
      for (std::size_t n = rng() % 7; n > 0; --n) t += alphabet[rng() % alphabet.size()];
      return t;
    };
    std::vector<Value> stored;
    std::set<std::string> seen;
    auto keep = [&](const Value& id) {
      if (seen.insert(id.to_string()).second) stored.push_back(id);
    };
    if (text) {
      for (const auto& p : prefixes) keep(Value(p));
      while (stored.size() < 400) keep(Value(random_text()));
    } else {
      for (int64_t x :
           {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::min() + 2,
            int64_t{-4294967296}, int64_t{-2}, int64_t{0}, int64_t{2}, int64_t{4294967296},
            std::numeric_limits<int64_t>::max() - 2, std::numeric_limits<int64_t>::max()}) {
        keep(Value(x));
      }
      while (stored.size() < 400) {
        keep(Value(static_cast<int64_t>(rng() % 2000) * 2 - 2000));  // even, around zero
      }
    }
    std::sort(stored.begin(), stored.end(), [&](const Value& a, const Value& b) {
      return text ? a.get<std::string>() < b.get<std::string>()
                  : a.get<int64_t>() < b.get<int64_t>();
    });
    std::vector<DataRecord> rows;
    for (std::size_t i = 0; i < stored.size(); ++i) {
      const auto month = static_cast<unsigned>(1 + i * 6 / stored.size());  // a run per month
      rows.push_back(DataRecord{
          {stored[i],
           Value(to_timestamp(date_from_civil(2023, month, static_cast<unsigned>(1 + i % 28)))),
           Value(static_cast<int64_t>(i))}});
    }
    const std::string dir = path(std::string("edges_") + id_type);
    DuckDBDataRepository single(path(std::string("edges_single_") + id_type + ".duckdb"));
    auto parts =
        std::make_unique<PartitionedDataRepository>(test_config(dir, PartitionStrategy::kMonthly));
    single.create_batch(schema, rows);
    parts->create_batch(schema, rows);
    ASSERT_EQ(parts->get_partition_statistics().schemas.at(0).partitions.size(), 6U);
    // Near misses: every stored id's neighbours that are not stored. (A partition wrongly left out
    // shows on the stored ids; the near misses check that what is absent stays absent.)
    std::vector<Value> probes = stored;
    for (const Value& id : stored) {
      if (text) {
        const std::string& t = id.get<std::string>();
        for (const std::string& extra : {std::string("a"), std::string(" "), std::string("\x7f")}) {
          probes.emplace_back(t + extra);
        }
        if (!t.empty()) {  // without its last character (whole: UTF-8 stays valid)
          std::size_t n = t.size() - 1;
          while (n > 0 && (static_cast<unsigned char>(t[n]) & 0xC0) == 0x80) --n;
          probes.emplace_back(t.substr(0, n));
        }
        probes.emplace_back(random_text());
      } else {
        const int64_t x = id.get<int64_t>();
        if (x > std::numeric_limits<int64_t>::min()) probes.emplace_back(x - 1);
        if (x < std::numeric_limits<int64_t>::max()) probes.emplace_back(x + 1);
      }
    }
    auto check = [&](const char* when) {
      SCOPED_TRACE(when);
      std::size_t found = 0;
      for (std::size_t i = 0; i < probes.size(); ++i) {
        const auto a = single.get_by_id(schema, probes[i]);
        const auto b = parts->get_by_id(schema, probes[i]);
        ASSERT_EQ(a.has_value(), b.has_value()) << i << " " << probes[i].to_string();
        if (!a) continue;
        ++found;
        EXPECT_EQ(row_text(*a), row_text(*b)) << probes[i].to_string();
      }
      EXPECT_GE(found, stored.size());
    };
    check("after the first write");
    // A commit widens January's range over every other month's (its probe follows the metadata).
    const Value wide = text ? Value(stored.back().get<std::string>() + "~")
                            : Value(std::numeric_limits<int64_t>::max() - 1);
    const std::vector<DataRecord> more = {
        DataRecord{{wide, Value(to_timestamp(date_from_civil(2023, 1, 2))), Value(int64_t{-1})}}};
    single.create_batch(schema, more);
    parts->create_batch(schema, more);
    probes.push_back(wide);
    stored.push_back(wide);
    check("after widening January");
    // Ranges read back from the catalog and the files.
    parts.reset();
    parts =
        std::make_unique<PartitionedDataRepository>(test_config(dir, PartitionStrategy::kMonthly));
    check("after reopening");
  }
}

// count_all with filters on the partition column only: partitions whose rows all match are
// counted from their metadata row count (no file opened), the others by DuckDB. Bounds on and
// around period boundaries, inside periods, ne / not in / in / eq, NULL tests and rows whose
// partition value is NULL: the same counts as DuckDB on the single file.
TEST_P(DifferentialTest, CountsOnThePartitionColumnMatchTheSingleFile) {
  const Case& c = GetParam();
  const uint64_t seed = seed_from_env() + static_cast<uint64_t>(c.strategy) * 1000 + 11;
  std::printf("differential count seed %llu (set DUCKPART_TEST_SEED to replay)\n",
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const Schema schema = wide_schema(c.partition_type);
  const bool date_part = std::string(c.partition_type) == "DATE";
  const std::size_t pcol = schema.partition_index();
  std::vector<DataRecord> rows;
  {
    DuckDBDataRepository single(path("single.duckdb"));
    PartitionedDataRepository parts(test_config(path("parts"), c.strategy, c.max_in_memory));
    for (int b = 0; b < 3; ++b) {
      auto batch = random_wide_rows(rng, 700, c.first, c.last, date_part);
      single.create_batch(schema, batch);
      parts.create_batch(schema, batch);
      rows.insert(rows.end(), batch.begin(), batch.end());
    }
  }
  // Rows without a period (partition_null, written by the bulk path with null_partition): the
  // same 60 in both.
  {
    duck::Database db = duck::Database::open(path("nulls.duckdb"));
    duck::Connection conn = db.connect();
    conn.exec("ATTACH " + duck::quote_literal(path("single.duckdb")) + " AS s");
    conn.exec(
        fmt::format("CREATE TABLE events AS SELECT * REPLACE (uuid() AS id, CAST(NULL AS {}) "
                    "AS ts) FROM s.main.events ORDER BY id LIMIT 60",
                    c.partition_type));
    conn.exec("INSERT INTO s.main.events SELECT * FROM events");
  }
  {
    PartitionedDataRepository parts(test_config(path("parts"), c.strategy, c.max_in_memory));
    parts.attach_database(path("nulls.duckdb"), "nulls");
    ASSERT_EQ(parts.create_batch_from_query(schema, "SELECT * FROM nulls.main.events", {}, true)
                  .rows_written,
              60);
  }
  DuckDBDataRepository single(path("single.duckdb"));
  DataQueryRequest null_rows;
  null_rows.filters = {{schema.partition_column(), FilterOperator::kIsNull, Value{}}};
  ASSERT_EQ(single.count_all(schema, null_rows), 60);
  // A bound: the first day of a period-ish day (a month's first, a Monday, any day), sometimes a
  // microsecond before or after it or a time of day, sometimes a value of the data, sometimes text.
  // The partitions' own extremes (their metadata's min / max): the edges of what may be counted
  // from metadata.
  std::vector<int64_t> extremes;
  {
    PartitionedDataRepository p(test_config(path("parts"), c.strategy, c.max_in_memory));
    const StorageStatistics stats = p.get_partition_statistics();
    for (const PartitionStatistics& st : stats.schemas.at(0).partitions) {
      if (st.min_value) extremes.push_back(st.min_value->micros);
      if (st.max_value) extremes.push_back(st.max_value->micros);
    }
  }
  ASSERT_FALSE(extremes.empty());
  auto bound = [&]() -> Value {
    if (rng() % 8 == 0) return pick_value(rng, rows, pcol);
    if (rng() % 4 == 0) {
      int64_t us = extremes[rng() % extremes.size()];
      if (date_part) return Value(Date{static_cast<int32_t>(us / kMicrosPerDay)});
      us += static_cast<int64_t>(rng() % 3) - 1;
      return Value(Timestamp{us});
    }
    const int32_t span = c.last.days - c.first.days + 40;
    Date d{c.first.days - 20 + static_cast<int32_t>(rng() % static_cast<uint64_t>(span))};
    int year = 0;
    unsigned month = 0, mday = 0;
    civil_from_date(d, year, month, mday);
    switch (rng() % 4) {
      case 0:
        d = date_from_civil(year, month, 1);
        break;
      case 1:
        d = date_from_civil(year, 1, 1);
        break;
      case 2:
        d = Date{d.days - (d.days + 3) % 7};  // the Monday of its week (1970-01-01 was a Thursday)
        break;
      default:
        break;
    }
    Value v(d);
    if (!date_part) {
      int64_t us = int64_t{d.days} * kMicrosPerDay;
      const int nudge = static_cast<int>(rng() % 5);
      if (nudge == 0) us -= 1;
      if (nudge == 1) us += 1;
      if (nudge == 2) us += static_cast<int64_t>(rng() % 86400) * 1'000'000;
      v = Value(Timestamp{us});
    }
    if (rng() % 3 == 0) v = Value(v.to_string());
    return v;
  };
  auto parts = std::make_unique<PartitionedDataRepository>(
      test_config(path("parts"), c.strategy, c.max_in_memory));
  const std::vector<FilterOperator> ops = {
      FilterOperator::kGte,    FilterOperator::kLt,       FilterOperator::kGt,
      FilterOperator::kLte,    FilterOperator::kBetween,  FilterOperator::kNe,
      FilterOperator::kNotIn,  FilterOperator::kIn,       FilterOperator::kEq,
      FilterOperator::kIsNull, FilterOperator::kIsNotNull};
  int requests = 300;
  if (const char* n = std::getenv("DUCKPART_DIFF_REQUESTS")) requests = std::atoi(n) / 2 + 1;
  int answered_from_metadata = 0, answered_without_files = 0;
  for (int i = 0; i < requests; ++i) {
    DataQueryRequest q;
    const int nfilters = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < nfilters; ++k) {
      QueryFilter f;
      f.field = schema.partition_column();
      // Mostly ranges: the shape of time-range counts.
      f.op = rng() % 2 ? (rng() % 2 ? FilterOperator::kGte : FilterOperator::kLt)
                       : ops[rng() % ops.size()];
      if (f.op == FilterOperator::kBetween) {
        Value a = bound(), b = bound();
        f.values = {a, b};
      } else if (f.op == FilterOperator::kIn || f.op == FilterOperator::kNotIn) {
        const std::size_t n = rng() % 4;
        for (std::size_t j = 0; j < n; ++j) f.values.push_back(bound());
      } else if (f.op != FilterOperator::kIsNull && f.op != FilterOperator::kIsNotNull) {
        f.value = bound();
      }
      q.filters.push_back(std::move(f));
    }
    SCOPED_TRACE("request " + std::to_string(i) + ": " + describe(q));
    const RepositoryCounters before = parts->counters();
    ASSERT_EQ(single.count_all(schema, q), parts->count_all(schema, q));
    const RepositoryCounters after = parts->counters();
    if (after.partitions_counted_from_metadata > before.partitions_counted_from_metadata) {
      ++answered_from_metadata;
      if (after.partitions_opened == before.partitions_opened) ++answered_without_files;
    }
  }
  EXPECT_GT(answered_from_metadata, requests / 5)
      << "ranges over whole periods should be counted from the partitions' metadata";
  // The same through SQL, with terms that hold for NULL partition values (the statement was
  // explained on an empty stand-in, whose statistics let DuckDB fold `ts IS NULL` to false and
  // `coalesce(ts, c)` to `ts`: partition_null was never read).
  for (int i = 0; i < 40; ++i) {
    const std::string b = bound().to_string();
    const std::string lit = "CAST(" + duck::quote_literal(b) + " AS " + c.partition_type + ")";
    const std::vector<std::string> sqls = {
        "SELECT count(*) FROM events WHERE ts IS NULL",
        "SELECT count(*), sum(qty) FROM events WHERE ts IS NULL OR ts >= " + lit,
        "SELECT count(*) FROM events WHERE coalesce(ts, " + lit + ") <= " + lit,
        "SELECT count(*) FROM events WHERE ifnull(ts, " + lit + ") = " + lit + " OR qty IS NULL",
        "SELECT id FROM events WHERE NOT (ts IS NOT NULL) AND qty > 500 ORDER BY id"};
    const std::string& sql = sqls[static_cast<std::size_t>(i) % sqls.size()];
    SCOPED_TRACE(sql);
    std::vector<DataRecord> expected, got;
    {
      RecordStream a = single.query_sql(sql);
      for (DataRecord r; a.next(r);) expected.push_back(r);
      RecordStream g = parts->query_sql(sql);
      for (DataRecord r; g.next(r);) got.push_back(r);
    }
    ASSERT_EQ(sorted_texts(expected), sorted_texts(got));
  }
  EXPECT_GT(answered_without_files, 0);

  parts.reset();
  // A fresh instance counts whole periods without opening a file, and agrees with DuckDB.
  PartitionedDataRepository fresh(test_config(path("parts"), c.strategy, c.max_in_memory));
  DataQueryRequest whole;
  whole.filters = {
      {schema.partition_column(), FilterOperator::kGte, Value(Date{c.first.days - 400})},
      {schema.partition_column(), FilterOperator::kLt, Value(Date{c.last.days + 400})}};
  EXPECT_EQ(fresh.count_all(schema, whole), single.count_all(schema, whole));
  EXPECT_EQ(fresh.counters().partitions_opened, 0);
  EXPECT_GT(fresh.counters().partitions_counted_from_metadata, 0);
  // A filter on another column needs the rows: the files are opened.
  whole.filters.push_back({"qty", FilterOperator::kGte, Value(0)});
  EXPECT_EQ(fresh.count_all(schema, whole), single.count_all(schema, whole));
  EXPECT_GT(fresh.counters().partitions_opened, 0);
}

// get_all against DuckDB's own answer to the same SQL (query_sql on the single file runs the
// statement as written), where both repositories used to share a difference from DuckDB: columns
// read as text (UBIGINT, INTERVAL) sorted as text; DECIMAL filters cast to DECIMAL(38,12) (a finer
// scale rounded, a wider value overflowed); DATE filters past int64 microseconds wrapped around.
TEST_F(TempDirTest, SortsAndFiltersOfWideTypesMatchDuckDBsOwnSql) {
  const Schema schema("ev",
                      {{"id", "BIGINT"},
                       {"d", "DATE"},
                       {"u", "UBIGINT"},
                       {"iv", "INTERVAL"},
                       {"fine", "DECIMAL(38,20)"},
                       {"wide", "DECIMAL(38,0)"}},
                      "d", "id");
  DuckDBDataRepository single(path("single.duckdb"));
  PartitionedDataRepository parts(test_config(path("parts"), PartitionStrategy::kMonthly));
  const std::vector<std::vector<const char*>> data = {
      {"1", "2021-01-05", "9", "1 day", "0", "1"},
      {"2", "2021-02-05", "10", "10:00:00", "0.00000000000000000001",
       "100000000000000000000000000000"},
      {"3", "2021-02-06", "100", "2 hours", "-0.5", "-7"},
      {"4", "2021-03-01", "18446744073709551615", "1 month", "12345678901234567.89", "0"},
      {"5", "2021-03-09", nullptr, nullptr, nullptr, nullptr}};
  std::vector<DataRecord> rows;
  for (const auto& d : data) {
    DataRecord r;
    r.values.emplace_back(static_cast<int64_t>(std::stoll(d[0])));
    r.values.emplace_back(*parse_date(d[1]));
    for (std::size_t i = 2; i < d.size(); ++i) r.values.push_back(d[i] ? Value(d[i]) : Value{});
    rows.push_back(std::move(r));
  }
  single.create_batch(schema, rows);
  parts.create_batch(schema, rows);
  auto ids = [](const std::vector<DataRecord>& items) {
    std::string out;
    for (const DataRecord& r : items) out += r.values.at(0).to_string() + " ";
    return out;
  };
  auto sql_ids = [&](const std::string& sql) {
    std::vector<DataRecord> got;
    RecordStream st = single.query_sql(sql);
    for (DataRecord r; st.next(r);) got.push_back(r);
    return ids(got);
  };
  for (const char* col : {"u", "iv", "fine", "wide"}) {
    for (const bool asc : {true, false}) {
      for (const bool project : {false, true}) {
        SCOPED_TRACE(fmt::format("sort {} {} {}", col, asc ? "asc" : "desc", project));
        DataQueryRequest q;
        q.sort = {{col, asc ? SortDirection::kAsc : SortDirection::kDesc}};
        if (project) q.columns = {"id"};
        const std::string want = sql_ids(
            fmt::format("SELECT id FROM ev ORDER BY {} {} NULLS LAST", col, asc ? "ASC" : "DESC"));
        EXPECT_EQ(ids(single.get_all(schema, q).items), want);
        EXPECT_EQ(ids(parts.get_all(schema, q).items), want);
      }
    }
  }
  struct F {
    QueryFilter filter;
    std::string where;
  };
  const std::vector<F> filters = {
      {{"fine", FilterOperator::kEq, Value("0.00000000000000000001")},
       "fine = 0.00000000000000000001"},
      {{"fine", FilterOperator::kGt, Value("0")}, "fine > 0"},
      {{"fine", FilterOperator::kLt, Value("12345678901234567.89")}, "fine < 12345678901234567.89"},
      {{"wide", FilterOperator::kEq, Value("1")}, "wide = 1"},
      {{"wide", FilterOperator::kEq, Value("100000000000000000000000000000")},
       "wide = 100000000000000000000000000000"},
      {{"wide", FilterOperator::kGte, Value(int64_t{-7})}, "wide >= -7"},
      {{"d", FilterOperator::kLt, Value(Date{200000000})}, "TRUE"},
      {{"d", FilterOperator::kGt, Value(Date{-200000000})}, "TRUE"},
      {{"d", FilterOperator::kLt, Value(Date{-200000000})}, "FALSE"},
  };
  for (const F& f : filters) {
    SCOPED_TRACE(f.where);
    DataQueryRequest q;
    q.filters = {f.filter};
    q.sort = {{"id", SortDirection::kAsc}};
    const std::string want = sql_ids("SELECT id FROM ev WHERE " + f.where + " ORDER BY id");
    for (IDataRepository* repo :
         {static_cast<IDataRepository*>(&single), static_cast<IDataRepository*>(&parts)}) {
      const PaginatedResponse got = repo->get_all(schema, q);
      EXPECT_EQ(ids(got.items), want);
      EXPECT_EQ(got.total, static_cast<int64_t>(got.items.size()));
      EXPECT_EQ(repo->count_all(schema, q), got.total);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, DifferentialTest,
    ::testing::Values(Case{PartitionStrategy::kYearly, "TIMESTAMP", date_from_civil(1965, 1, 1),
                           date_from_civil(1975, 12, 31), 4},
                      Case{PartitionStrategy::kMonthly, "TIMESTAMP", date_from_civil(2021, 1, 1),
                           date_from_civil(2023, 12, 31), 40},
                      Case{PartitionStrategy::kMonthly, "DATE", date_from_civil(2021, 6, 1),
                           date_from_civil(2022, 6, 30), 24},
                      Case{PartitionStrategy::kWeekly, "TIMESTAMP", date_from_civil(2020, 11, 1),
                           date_from_civil(2021, 3, 1), 8},
                      Case{PartitionStrategy::kDaily, "DATE", date_from_civil(2024, 2, 1),
                           date_from_civil(2024, 3, 31), 64}),
    [](const ::testing::TestParamInfo<Case>& param_info) {
      return std::string(strategy_name(param_info.param.strategy)) + "_" +
             param_info.param.partition_type;
    });

}  // namespace
}  // namespace duckpart::testing
