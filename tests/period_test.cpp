// Period arithmetic, checked exhaustively against DuckDB's own calendar functions.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "duckpart/period.hpp"

namespace duckpart {
namespace {

Date ymd(int y, unsigned m, unsigned d) { return date_from_civil(y, m, d); }

std::string error_of_code(int64_t code) {
  try {
    partition_key_from_code(PartitionStrategy::kMonthly, code);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PeriodTest, FileNamesAreTheSeeds) {
  const Date d = ymd(2023, 1, 5);
  EXPECT_EQ(partition_key_of(PartitionStrategy::kYearly, d).file_name(), "partition_2023.duckdb");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kMonthly, d).file_name(),
            "partition_2023_01.duckdb");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kWeekly, d).file_name(),
            "partition_2023_w01.duckdb");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kDaily, d).file_name(),
            "partition_2023_01_05.duckdb");
  EXPECT_EQ(null_partition_key(PartitionStrategy::kMonthly).file_name(), "partition_null.duckdb");
}

// label() is written by hand for speed; it must give fmt's "{:04d}" / "{:02d}" text for every key a
// date can have (years 1-9999), and keep fmt's forms outside that range.
TEST(PeriodTest, LabelsEqualTheirFormatStrings) {
  int checked = 0;
  for (int y : {1, 9, 10, 99, 100, 999, 1000, 1969, 2023, 2024, 9998, 9999}) {
    for (unsigned m = 1; m <= 12; ++m) {
      for (unsigned d = 1; d <= 28; d += 9) {
        const Date date = ymd(y, m, d);
        const PartitionKey year = partition_key_of(PartitionStrategy::kYearly, date);
        const PartitionKey month = partition_key_of(PartitionStrategy::kMonthly, date);
        const PartitionKey week = partition_key_of(PartitionStrategy::kWeekly, date);
        const PartitionKey day = partition_key_of(PartitionStrategy::kDaily, date);
        EXPECT_EQ(year.label(), fmt::format("{:04d}", year.year));
        EXPECT_EQ(month.label(), fmt::format("{:04d}_{:02d}", month.year, month.number));
        EXPECT_EQ(week.label(), fmt::format("{:04d}_w{:02d}", week.year, week.number));
        EXPECT_EQ(day.label(), fmt::format("{:04d}_{:02d}_{:02d}", day.year, day.number, day.day));
        checked += 4;
      }
    }
  }
  EXPECT_EQ(checked, 12 * 12 * 4 * 4);
  PartitionKey odd = partition_key_of(PartitionStrategy::kDaily, ymd(2023, 1, 5));
  odd.year = 12345;  // outside what a date gives: fmt's form
  EXPECT_EQ(odd.label(), "12345_01_05");
  odd.year = -7;
  EXPECT_EQ(odd.label(), "-007_01_05");
}

TEST(PeriodTest, IsoWeekUsesIsoYear) {
  EXPECT_EQ(partition_key_of(PartitionStrategy::kWeekly, ymd(2021, 1, 1)).name(),
            "partition_2020_w53");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kWeekly, ymd(2021, 1, 3)).name(),
            "partition_2020_w53");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kWeekly, ymd(2021, 1, 4)).name(),
            "partition_2021_w01");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kWeekly, ymd(2019, 12, 30)).name(),
            "partition_2020_w01");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kWeekly, ymd(2024, 12, 30)).name(),
            "partition_2025_w01");
  EXPECT_EQ(iso_weeks_in_year(2020), 53);
  EXPECT_EQ(iso_weeks_in_year(2021), 52);
  EXPECT_EQ(iso_weeks_in_year(2026), 53);
}

TEST(PeriodTest, HalfOpenRanges) {
  const auto k = partition_key_of(PartitionStrategy::kMonthly, ymd(2024, 2, 29));
  EXPECT_EQ(k.start(), ymd(2024, 2, 1));
  EXPECT_EQ(k.end(), ymd(2024, 3, 1));
  const auto dec = partition_key_of(PartitionStrategy::kMonthly, ymd(2023, 12, 31));
  EXPECT_EQ(dec.end(), ymd(2024, 1, 1));
  EXPECT_EQ(dec.next().name(), "partition_2024_01");
  const auto w = partition_key_of(PartitionStrategy::kWeekly, ymd(2021, 1, 1));
  EXPECT_EQ(w.start(), ymd(2020, 12, 28));
  EXPECT_EQ(w.end(), ymd(2021, 1, 4));
  EXPECT_EQ(w.next().name(), "partition_2021_w01");
}

TEST(PeriodTest, TimestampsAtBoundaries) {
  const int64_t last_micro_2023 = to_timestamp(ymd(2024, 1, 1)).micros - 1;  // 23:59:59.999999
  EXPECT_EQ(partition_key_of(PartitionStrategy::kYearly, Timestamp{last_micro_2023}).name(),
            "partition_2023");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kDaily, Timestamp{last_micro_2023}).name(),
            "partition_2023_12_31");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kYearly, Timestamp{last_micro_2023 + 1}).name(),
            "partition_2024");
  // Before 1970 the floor matters: one microsecond before the epoch is 1969-12-31.
  EXPECT_EQ(partition_key_of(PartitionStrategy::kDaily, Timestamp{-1}).name(),
            "partition_1969_12_31");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kDaily, Timestamp{0}).name(),
            "partition_1970_01_01");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kMonthly, ymd(1900, 2, 28)).name(),
            "partition_1900_02");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kDaily, ymd(2400, 2, 29)).name(),
            "partition_2400_02_29");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kYearly, ymd(9999, 12, 31)).name(),
            "partition_9999");
  EXPECT_EQ(partition_key_of(PartitionStrategy::kYearly, ymd(1, 1, 1)).name(), "partition_0001");
}

TEST(PeriodTest, YearsOutsideTheSupportedRangeAreErrors) {
  EXPECT_THROW(partition_key_of(PartitionStrategy::kMonthly, ymd(10000, 1, 1)), Error);
  EXPECT_THROW(partition_key_of(PartitionStrategy::kMonthly, ymd(0, 12, 31)), Error);
  try {
    partition_key_of(PartitionStrategy::kYearly, ymd(-5, 3, 1));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("-0005-03-01"), std::string::npos) << e.what();
  }
}

TEST(PeriodTest, ParsingNames) {
  for (const char* good :
       {"partition_2023", "partition_2023_01", "partition_2020_w53", "partition_2024_02_29.duckdb",
        "partition_0001_01_01", "partition_null"}) {
    auto k = parse_partition_name(good);
    ASSERT_TRUE(k.has_value()) << good;
    std::string expect = good;
    if (expect.size() > 7 && expect.substr(expect.size() - 7) == ".duckdb")
      expect.resize(expect.size() - 7);
    EXPECT_EQ(k->name(), expect);
  }
  for (const char* bad :
       {"partition_2023_13", "partition_2023_00", "partition_2021_w53", "partition_2023_w00",
        "partition_2023_02_29", "partition_2023_02_30", "partition_0000", "partition_23",
        "partition_2023_1", "partition_2023-01", "foo_2023_01", "partition_2023_01.db",
        "partition_2023_01_01_01", "partition_", ""}) {
    EXPECT_FALSE(parse_partition_name(bad).has_value()) << bad;
  }
}

TEST(PeriodTest, StrategyNames) {
  EXPECT_EQ(parse_strategy("Monthly"), PartitionStrategy::kMonthly);
  EXPECT_EQ(strategy_name(PartitionStrategy::kWeekly), "weekly");
  EXPECT_THROW(parse_strategy("hourly"), Error);
}

// Every day from 1600 to 2400: our keys agree with DuckDB's isoyear/week/year/month/day, every key
// round-trips through its name, and its half-open range holds the day.
TEST(PeriodTest, ExhaustiveAgainstDuckDB) {
  duck::Database db = duck::Database::open(":memory:");
  duck::Connection c = db.connect();
  duck::Result r = c.query(
      "SELECT d::DATE AS d, isoyear(d), week(d), year(d), month(d), day(d) "
      "FROM range(TIMESTAMP '1600-01-01', TIMESTAMP '2401-01-01', INTERVAL 1 DAY) t(d)");
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  ASSERT_GT(rows.size(), 290000u);
  for (const auto& row : rows) {
    const Date d = row.values[0].get<Date>();
    const auto iso_y = row.values[1].get<int64_t>();
    const auto iso_w = row.values[2].get<int64_t>();
    const auto y = row.values[3].get<int64_t>();
    const auto m = row.values[4].get<int64_t>();
    const auto dd = row.values[5].get<int64_t>();
    const auto w = partition_key_of(PartitionStrategy::kWeekly, d);
    ASSERT_EQ(w.year, iso_y) << format_date(d);
    ASSERT_EQ(w.number, iso_w) << format_date(d);
    const auto day = partition_key_of(PartitionStrategy::kDaily, d);
    ASSERT_EQ(day.year, y);
    ASSERT_EQ(day.number, m);
    ASSERT_EQ(day.day, dd);
    for (auto s : {PartitionStrategy::kYearly, PartitionStrategy::kMonthly,
                   PartitionStrategy::kWeekly, PartitionStrategy::kDaily}) {
      const auto k = partition_key_of(s, d);
      ASSERT_LE(k.start(), d) << k.name();
      ASSERT_LT(d, k.end()) << k.name();
      ASSERT_EQ(partition_key_of(s, k.start()), k);
      ASSERT_EQ(partition_key_of(s, Date{k.end().days - 1}), k);
      ASSERT_EQ(partition_key_of(s, k.end()), k.next());
      auto parsed = parse_partition_name(k.file_name());
      ASSERT_TRUE(parsed.has_value()) << k.file_name();
      ASSERT_EQ(*parsed, k);
    }
  }
}

// The router computes a DATE or TIMESTAMP row's period code itself: it must equal
// partition_code_sql() evaluated by DuckDB, for every day of years 1..9999 (sampled every 3 days,
// plus every day around each new year), timestamps before 1970 included; ±infinity has the
// infinite code, NULL none.
TEST(PeriodTest, CodeOfDaysEqualsTheSqlExpression) {
  duck::Database db = duck::Database::open(":memory:");
  duck::Connection c = db.connect();
  const auto all = {PartitionStrategy::kYearly, PartitionStrategy::kMonthly,
                    PartitionStrategy::kWeekly, PartitionStrategy::kDaily};
  std::string sql = "SELECT d, (d - DATE '1970-01-01')::BIGINT";
  for (auto s : all) sql += ", " + partition_code_sql(s, "d");
  for (auto s : all) sql += ", " + partition_code_sql(s, "(d::TIMESTAMP + INTERVAL 1 HOUR)");
  sql +=
      " FROM (SELECT DATE '0001-01-01' + CAST(i AS INTEGER) AS d FROM range(0, 3652059, 3) r(i) "
      "UNION ALL SELECT make_date(CAST(y AS BIGINT), 1, 1) + CAST(k AS INTEGER) - 5 FROM "
      "range(2, 9999) a(y), range(0, 11) b(k))";
  duck::Result r = c.query(sql);
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  ASSERT_GT(rows.size(), 1300000u);
  for (const auto& row : rows) {
    const auto days = static_cast<int32_t>(row.values[1].get<int64_t>());
    std::size_t col = 2;
    for (int pass = 0; pass < 2; ++pass) {
      for (auto s : all) {
        // A timestamp's day is its floor (date_of); one hour after midnight stays on the day.
        const int32_t day =
            pass == 0 ? days
                      : date_of(Timestamp{int64_t{days} * kMicrosPerDay + 3'600'000'000}).days;
        ASSERT_EQ(partition_code_of_days(s, day), row.values[col].get<int64_t>())
            << format_date(Date{days}) << " " << strategy_name(s) << " pass " << pass;
        ++col;
      }
    }
  }
  EXPECT_EQ(
      c.query_int("SELECT " + partition_code_sql(PartitionStrategy::kMonthly, "DATE 'infinity'")),
      kInfiniteCode);
  EXPECT_EQ(c.query_int("SELECT " +
                        partition_code_sql(PartitionStrategy::kDaily, "TIMESTAMP '-infinity'")),
            kInfiniteCode);
  EXPECT_EQ(c.query_int("SELECT CAST(" +
                        partition_code_sql(PartitionStrategy::kWeekly, "CAST(NULL AS DATE)") +
                        " IS NULL AS INTEGER)"),
            1);
  EXPECT_NE(error_of_code(kInfiniteCode).find("infinity or -infinity"), std::string::npos);
}

}  // namespace
}  // namespace duckpart
