// duckpart — partition periods: which period a date falls in, its half-open range, its file name.
//
// Periods follow the seed's file names exactly:
//   yearly  partition_2023.duckdb        monthly partition_2023_01.duckdb
//   weekly  partition_2023_w01.duckdb    (ISO-8601 week of the ISO year: 2021-01-01 is 2020_w53)
//   daily   partition_2023_01_01.duckdb
// plus partition_null.duckdb, the period of rows whose partition value is NULL (when allowed).
// Supported years are 1..9999, so that every name has a four-digit year.
#pragma once

#include <compare>
#include <optional>
#include <string>
#include <string_view>

#include "duckpart/value.hpp"

namespace duckpart {

enum class PartitionStrategy { kYearly, kMonthly, kWeekly, kDaily };

// "yearly", "monthly", "weekly", "daily".
std::string_view strategy_name(PartitionStrategy s) noexcept;
// Parses a strategy name (case-insensitive); throws Error(kInvalidArgument) naming the accepted
// values.
PartitionStrategy parse_strategy(std::string_view name);

inline constexpr int kMinPartitionYear = 1;
inline constexpr int kMaxPartitionYear = 9999;

// One period of one strategy. For weekly keys `year` is the ISO year and `number` the ISO week
// (1-53); for monthly `number` is the month; for daily `number` is the month and `day` the day; for
// yearly both are 0. A null key (is_null) is the period of NULL partition values. Ordered by time,
// null first.
struct PartitionKey {
  PartitionStrategy strategy = PartitionStrategy::kMonthly;
  bool is_null = false;
  int year = 0;
  int number = 0;
  int day = 0;

  // "2023", "2023_01", "2023_w01", "2023_01_01" or "null".
  std::string label() const;
  // "partition_" + label().
  std::string name() const;
  // name() + ".duckdb".
  std::string file_name() const { return name() + ".duckdb"; }
  // First day of the period (not for a null key).
  Date start() const;
  // First day after the period: the range is [start, end).
  Date end() const;
  Timestamp start_ts() const { return to_timestamp(start()); }
  Timestamp end_ts() const { return to_timestamp(end()); }
  // The period right after this one.
  PartitionKey next() const;

  friend bool operator==(const PartitionKey&, const PartitionKey&) = default;
  friend std::strong_ordering operator<=>(const PartitionKey& a, const PartitionKey& b) {
    if (auto c = a.strategy <=> b.strategy; c != 0) return c;
    if (auto c = b.is_null <=> a.is_null; c != 0) return c;
    if (auto c = a.year <=> b.year; c != 0) return c;
    if (auto c = a.number <=> b.number; c != 0) return c;
    return a.day <=> b.day;
  }
};

// ISO-8601 week date of `d`: the ISO year (may differ from the calendar year near 1 January) and
// week.
void iso_week_of(Date d, int& iso_year, int& week) noexcept;
// Number of ISO weeks (52 or 53) in an ISO year.
int iso_weeks_in_year(int iso_year) noexcept;

// The period `d` (or `ts`) falls in. Throws Error(kInvalidArgument) for a year outside 1..9999.
PartitionKey partition_key_of(PartitionStrategy s, Date d);
PartitionKey partition_key_of(PartitionStrategy s, Timestamp ts);
// The null period of a strategy.
PartitionKey null_partition_key(PartitionStrategy s) noexcept;

// The code partition_code_sql() gives for the date `days` days after 1970-01-01 (no year check:
// partition_key_from_code() rejects a code outside the supported years).
int64_t partition_code_of_days(PartitionStrategy s, int32_t days) noexcept;

// Parses a partition name ("partition_2023_01") or file name ("partition_2023_01.duckdb") of any
// strategy; nullopt when the text is not exactly one of the seed's formats or names an impossible
// period.
std::optional<PartitionKey> parse_partition_name(std::string_view name);

// The period of a value as one integer, computable in SQL: yearly 2023, monthly 202301, weekly
// 202053 (ISO year and week), daily 20230105. partition_code_sql() returns the DuckDB expression
// (BIGINT) for a quoted column; partition_key_from_code() turns a code back into a key (throws
// Error(kInvalidArgument) for a code outside years 1..9999 or an impossible period). DuckDB's
// infinity and -infinity belong to no period: their code is kInfiniteCode (refused with a message
// that says so), NULL stays NULL.
inline constexpr int64_t kInfiniteCode = -1;
std::string partition_code_sql(PartitionStrategy s, const std::string& quoted_column);
PartitionKey partition_key_from_code(PartitionStrategy s, int64_t code);
// The code of a (non-null) key: the inverse of partition_key_from_code().
int64_t partition_code_of(const PartitionKey& key) noexcept;

}  // namespace duckpart
