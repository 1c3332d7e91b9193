#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "coerce.hpp"
#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "duckpart/schema.hpp"
#include "duckpart/value.hpp"

namespace duckpart {
namespace {

TEST(ValueTest, ParsesStrictDates) {
  EXPECT_EQ(parse_date("2023-01-31")->days, date_from_civil(2023, 1, 31).days);
  EXPECT_EQ(parse_date("1969-12-31")->days, -1);
  EXPECT_TRUE(parse_date("2024-02-29").has_value());
  for (const char* bad :
       {"2023-02-29", "2023-02-30", "2023-13-01", "2023-00-10", "2023-1-01", "23-01-01",
        "2023/01/01", "", "2023-01-01x", "2023-01-32", "abcd-ef-gh"}) {
    EXPECT_FALSE(parse_date(bad).has_value()) << bad;
  }
}

TEST(ValueTest, ParsesStrictTimestamps) {
  EXPECT_EQ(parse_timestamp("1970-01-01 00:00:01")->micros, 1'000'000);
  EXPECT_EQ(parse_timestamp("1970-01-01T00:00:00.5")->micros, 500'000);
  EXPECT_EQ(parse_timestamp("2023-12-31 23:59:59.999999")->micros,
            to_timestamp(date_from_civil(2024, 1, 1)).micros - 1);
  EXPECT_EQ(parse_timestamp("2023-05-05")->micros,
            to_timestamp(date_from_civil(2023, 5, 5)).micros);
  for (const char* bad : {"2023-01-01 24:00:00", "2023-01-01 12:60:00", "2023-01-01 12:00:00+02:00",
                          "2023-01-01T12:00:00Z", "2023-01-01 12:00", "2023-01-01 12:00:00.1234567",
                          "2023-02-30 00:00:00", "2023-01-01 12:00:00 UTC"}) {
    EXPECT_FALSE(parse_timestamp(bad).has_value()) << bad;
  }
}

TEST(ValueTest, FormatsRoundTrip) {
  for (const char* s : {"2023-01-31", "1600-02-29", "0001-01-01", "9999-12-31", "1969-12-31"}) {
    EXPECT_EQ(format_date(*parse_date(s)), s);
  }
  for (const char* s :
       {"2023-01-31 00:00:00", "1969-12-31 23:59:59.999999", "2000-02-29 12:34:56.000001"}) {
    EXPECT_EQ(format_timestamp(*parse_timestamp(s)), s);
  }
}

TEST(ValueTest, KindsAndRendering) {
  EXPECT_TRUE(Value().is_null());
  EXPECT_TRUE(Value(nullptr).is_null());
  EXPECT_TRUE(Value("x").is<std::string>());
  EXPECT_TRUE(Value(3).is<int64_t>());
  EXPECT_TRUE(Value(true).is<bool>());
  EXPECT_EQ(Value(2.5).to_string(), "2.5");
  EXPECT_EQ(Value(Date{0}).to_string(), "1970-01-01");
  EXPECT_EQ(Value("a"), Value(std::string("a")));
  EXPECT_NE(Value(1), Value(1.0));
}

// Our UUID parser (used by the write path instead of DuckDB's text cast) must accept exactly what
// DuckDB's cast accepts and give the same value: fixed edge cases plus random mutations.
TEST(ValueTest, UuidParsingMatchesDuckDBCast) {
  std::vector<std::string> cases = {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                                    "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                                    "a0eebc999c0b4ef8bb6d6bb9bd380a11",
                                    "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                                    "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
                                    "a0eebc999c0b4ef8bb6d6bb9bd380a11}",
                                    "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
                                    "-a0eebc999c0b4ef8bb6d6bb9bd380a11-",
                                    "--a0eebc999c0b4ef8bb6d6bb9bd380a11",
                                    "{-a0eebc999c0b4ef8bb6d6bb9bd380a11}",
                                    "a0eebc999c0b4ef8bb6d6bb9bd380a1",
                                    "a0eebc999c0b4ef8bb6d6bb9bd380a111",
                                    " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
                                    "00000000-0000-0000-0000-000000000000",
                                    "ffffffff-ffff-ffff-ffff-ffffffffffff",
                                    "80000000-0000-0000-0000-000000000000",
                                    "7fffffff-ffff-ffff-ffff-ffffffffffff",
                                    "{}",
                                    "",
                                    "-",
                                    "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}"};
  std::mt19937_64 rng(42);
  const std::string alphabet = "0123456789abcdefABCDEF-{}g ";
  for (int i = 0; i < 300; ++i) {
    std::string s = cases[rng() % 4];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const std::size_t pos = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          s.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          s.erase(pos, 1);
      }
    }
    cases.push_back(s);
  }
  duck::Database db = duck::Database::open(":memory:");
  duck::Connection conn = db.connect();
  for (const std::string& s : cases) {
    auto st = conn.prepare("SELECT CAST(TRY_CAST(? AS UUID) AS VARCHAR)");
    st.bind(1, Value(s));
    duck::Result r = st.execute();
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> rows;
    while (auto c = r.fetch()) dec.decode(c, rows);
    ASSERT_EQ(rows.size(), 1u);
    const Value& expected = rows[0].values[0];
    std::string canonical;
    duckdb_hugeint h{};
    const bool normalized = duck::uuid_normalize(s, canonical);
    const bool parsed = duck::uuid_parse(s, h);
    ASSERT_EQ(normalized, !expected.is_null()) << "'" << s << "'";
    ASSERT_EQ(parsed, !expected.is_null()) << "'" << s << "'";
    if (parsed) {
      EXPECT_EQ(canonical, expected.get<std::string>()) << "'" << s << "'";
      EXPECT_EQ(duck::uuid_to_string(h), expected.get<std::string>()) << "'" << s << "'";
    }
  }
}

// Filters put values into the SQL text as constants (constant_sql) so that DuckDB pushes them into
// the scans and keeps the plan of a prepared statement. A constant must compare exactly as the
// bound parameter it replaces: same value, same type, same failure, for every column type and edge
// value.
TEST(ValueTest, ConstantsCompareExactlyAsBoundParameters) {
  const Schema schema("t",
                      {{"ts", "TIMESTAMP"},
                       {"b", "BOOLEAN"},
                       {"i", "SMALLINT"},
                       {"n", "BIGINT"},
                       {"h", "HUGEINT"},
                       {"f", "FLOAT"},
                       {"d", "DOUBLE"},
                       {"m", "DECIMAL(12,3)"},
                       {"w", "DECIMAL(38,10)"},
                       {"s", "VARCHAR"},
                       {"u", "UUID"},
                       {"dt", "DATE"},
                       {"tz", "TIMESTAMPTZ"},
                       {"bl", "BLOB"}},
                      "ts");
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  std::vector<Value> values = {
      Value(true),
      Value(false),
      Value(int64_t{0}),
      Value(int64_t{-1}),
      Value(int64_t{32767}),
      Value(kMin),
      Value(kMax),
      Value(int64_t{123456789}),
      Value(0.1),
      Value(-0.0),
      Value(1e300),
      Value(5e-324),
      Value(1.0 / 3),
      Value(123.4565),
      Value(9007199254740993.0),
      Value(-2.5e-7),
      Value(std::numeric_limits<double>::quiet_NaN()),
      Value(std::numeric_limits<double>::infinity()),
      Value("it's"),
      Value("a%_b\\"),
      Value("123.456"),
      Value("-0.0005"),
      Value("1e3"),
      Value("2023-01-31"),
      Value("2023-01-31 12:34:56.789"),
      Value("2023-01-31T23:59:59.999999"),
      Value("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
      Value("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
      Value("\u03a9 omega"),
      Value("tab\there"),
      Value(""),
      Value("true"),
      Value("\\x41\\x00B"),
      Value(Date{0}),
      Value(date_from_civil(1, 1, 1)),
      Value(date_from_civil(9999, 12, 31)),
      Value(date_from_civil(-100, 3, 1)),
      Value(date_from_civil(10000, 1, 1)),
      Value(Date{-1}),
      Value(Timestamp{0}),
      Value(Timestamp{-1}),
      Value(Timestamp{1'700'000'000'123'456}),
      Value(Timestamp{int64_t{date_from_civil(1, 1, 1).days} * kMicrosPerDay + 1}),
      Value(
          Timestamp{int64_t{date_from_civil(9999, 12, 31).days} * kMicrosPerDay + 86'399'999'999})};
  std::mt19937_64 rng(7);
  for (int k = 0; k < 200; ++k) {
    values.emplace_back(static_cast<int64_t>(rng()) >> (rng() % 64));
    values.emplace_back(std::ldexp(static_cast<double>(static_cast<int64_t>(rng())),
                                   static_cast<int>(rng() % 200) - 140));
    values.emplace_back(
        fmt::format("{}.{}", static_cast<int64_t>(rng() % 2'000'000) - 1'000'000, rng() % 100'000));
    values.emplace_back(Timestamp{static_cast<int64_t>(rng() % 4'000'000'000'000'000ULL) -
                                  1'000'000'000'000'000LL});
  }
  duck::Database db = duck::Database::open(":memory:");
  duck::Connection conn = db.connect();
  int constants = 0, parameters = 0;
  for (const Column& c : schema.columns()) {
    for (const Value& raw : values) {
      Value v;
      try {
        v = coerce_value(c, raw, "test", /*allow_time=*/true);
      } catch (const Error&) {
        continue;  // not a value for this column
      }
      const std::optional<std::string> constant = constant_sql(c, v);
      const std::string what = fmt::format("{} {} = {} ({})", c.name, c.sql_type, v.to_string(),
                                           constant.value_or("parameter"));
      if (!constant) {
        ++parameters;
        continue;
      }
      ++constants;
      const std::string param = fmt::format("CAST($1 AS {})", param_sql_type(c, v));
      auto run = [&](const std::string& sql, bool bind) -> std::optional<std::string> {
        try {
          duck::Prepared st = conn.prepare(sql);
          if (bind) st.bind(1, v);
          duck::Result r = st.execute();
          duck::ChunkDecoder dec(r);
          std::vector<DataRecord> rows;
          while (auto chunk = r.fetch()) dec.decode(chunk, rows);
          return rows.at(0).values.at(0).to_string();
        } catch (const Error&) {
          return std::nullopt;  // the cast failed
        }
      };
      // Same text, same type, and equal: the constant is the parameter's value exactly.
      const auto by_param = run(fmt::format("SELECT typeof({0}) || ' ' || CAST({0} AS VARCHAR) || "
                                            "' ' || CAST({0} = {0} AS VARCHAR)",
                                            param),
                                true);
      const auto by_constant = run(fmt::format("SELECT typeof({0}) || ' ' || CAST({0} AS VARCHAR) "
                                               "|| ' ' || CAST({0} = {0} AS VARCHAR)",
                                               *constant),
                                   false);
      EXPECT_EQ(by_param, by_constant) << what;
      if (by_param) {
        const auto same =
            run(fmt::format("SELECT CAST({} IS NOT DISTINCT FROM {} AS VARCHAR)", *constant, param),
                true);
        EXPECT_EQ(same, std::optional<std::string>("true")) << what;
      }
    }
  }
  EXPECT_GT(constants, 1000);
  EXPECT_GT(parameters, 10);  // NaN, infinity, non-ASCII text, years outside 1..9999
}

}  // namespace
}  // namespace duckpart
