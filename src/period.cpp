#include "duckpart/period.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "duckpart/error.hpp"

namespace duckpart {

std::string_view strategy_name(PartitionStrategy s) noexcept {
  switch (s) {
    case PartitionStrategy::kYearly:
      return "yearly";
    case PartitionStrategy::kMonthly:
      return "monthly";
    case PartitionStrategy::kWeekly:
      return "weekly";
    case PartitionStrategy::kDaily:
      return "daily";
  }
  return "?";
}

PartitionStrategy parse_strategy(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "yearly") return PartitionStrategy::kYearly;
  if (lower == "monthly") return PartitionStrategy::kMonthly;
  if (lower == "weekly") return PartitionStrategy::kWeekly;
  if (lower == "daily") return PartitionStrategy::kDaily;
  throw Error(
      ErrorCode::kInvalidArgument,
      fmt::format("invalid strategy '{}': expected yearly, monthly, weekly or daily", name));
}

namespace {

// 0 = Monday ... 6 = Sunday. 1970-01-01 was a Thursday (3).
int weekday_of(Date d) noexcept {
  const int64_t r = (int64_t{d.days} + 3) % 7;
  return static_cast<int>(r < 0 ? r + 7 : r);
}

// Monday of ISO week 1 of `iso_year`: the week holding 4 January.
Date iso_year_start(int iso_year) noexcept {
  const Date jan4 = date_from_civil(iso_year, 1, 4);
  return Date{jan4.days - weekday_of(jan4)};
}

void check_year(int year, std::string_view what) {
  if (year < kMinPartitionYear || year > kMaxPartitionYear) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{} falls in year {}, outside the supported partition years {}..{}",
                            what, year, kMinPartitionYear, kMaxPartitionYear));
  }
}

}  // namespace

void iso_week_of(Date d, int& iso_year, int& week) noexcept {
  int y = 0;
  unsigned m = 0, day = 0;
  civil_from_date(d, y, m, day);
  // The ISO year is the calendar year of the Thursday of d's week.
  const Date thursday{d.days - weekday_of(d) + 3};
  unsigned tm = 0, td = 0;
  civil_from_date(thursday, iso_year, tm, td);
  week = (d.days - iso_year_start(iso_year).days) / 7 + 1;
}

int iso_weeks_in_year(int iso_year) noexcept {
  return (iso_year_start(iso_year + 1).days - iso_year_start(iso_year).days) / 7;
}

namespace {

// v as `width` decimal digits, zero-padded (0 <= v < 10^width).
void append_padded(std::string& out, int v, int width) {
  char digits[4];
  for (int i = width - 1; i >= 0; --i) {
    digits[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  out.append(digits, static_cast<std::size_t>(width));
}

}  // namespace

std::string PartitionKey::label() const {
  if (is_null) return "null";
  // Written by hand in the common case: a cold open of 1,100 daily partitions makes two labels per
  // partition, and fmt's format-string parsing cost ~0.5 ms of it. Same text as the fmt forms.
  if (year >= 0 && year <= 9999 && number >= 0 && number <= 99 && day >= 0 && day <= 99) {
    std::string out;
    out.reserve(10);
    append_padded(out, year, 4);
    if (strategy == PartitionStrategy::kYearly) return out;
    out += strategy == PartitionStrategy::kWeekly ? "_w" : "_";
    append_padded(out, number, 2);
    if (strategy == PartitionStrategy::kDaily) {
      out += '_';
      append_padded(out, day, 2);
    }
    return out;
  }
  switch (strategy) {
    case PartitionStrategy::kYearly:
      return fmt::format("{:04d}", year);
    case PartitionStrategy::kMonthly:
      return fmt::format("{:04d}_{:02d}", year, number);
    case PartitionStrategy::kWeekly:
      return fmt::format("{:04d}_w{:02d}", year, number);
    case PartitionStrategy::kDaily:
      return fmt::format("{:04d}_{:02d}_{:02d}", year, number, day);
  }
  return "?";
}

std::string PartitionKey::name() const { return "partition_" + label(); }

Date PartitionKey::start() const {
  switch (strategy) {
    case PartitionStrategy::kYearly:
      return date_from_civil(year, 1, 1);
    case PartitionStrategy::kMonthly:
      return date_from_civil(year, static_cast<unsigned>(number), 1);
    case PartitionStrategy::kWeekly:
      return Date{iso_year_start(year).days + (number - 1) * 7};
    case PartitionStrategy::kDaily:
      return date_from_civil(year, static_cast<unsigned>(number), static_cast<unsigned>(day));
  }
  return Date{};
}

PartitionKey PartitionKey::next() const {
  PartitionKey k = *this;
  switch (strategy) {
    case PartitionStrategy::kYearly:
      ++k.year;
      break;
    case PartitionStrategy::kMonthly:
      if (++k.number > 12) {
        k.number = 1;
        ++k.year;
      }
      break;
    case PartitionStrategy::kWeekly:
      if (++k.number > iso_weeks_in_year(k.year)) {
        k.number = 1;
        ++k.year;
      }
      break;
    case PartitionStrategy::kDaily: {
      const Date d{start().days + 1};
      int y = 0;
      unsigned m = 0, dd = 0;
      civil_from_date(d, y, m, dd);
      k.year = y;
      k.number = static_cast<int>(m);
      k.day = static_cast<int>(dd);
      break;
    }
  }
  return k;
}

Date PartitionKey::end() const {
  switch (strategy) {
    case PartitionStrategy::kYearly:
      return date_from_civil(year + 1, 1, 1);
    case PartitionStrategy::kMonthly:
      return number == 12 ? date_from_civil(year + 1, 1, 1)
                          : date_from_civil(year, static_cast<unsigned>(number + 1), 1);
    case PartitionStrategy::kWeekly:
      return Date{start().days + 7};
    case PartitionStrategy::kDaily:
      return Date{start().days + 1};
  }
  return Date{};
}

PartitionKey partition_key_of(PartitionStrategy s, Date d) {
  PartitionKey k;
  k.strategy = s;
  int y = 0;
  unsigned m = 0, day = 0;
  civil_from_date(d, y, m, day);
  if (s == PartitionStrategy::kWeekly) {
    int iso_year = 0, week = 0;
    iso_week_of(d, iso_year, week);
    check_year(iso_year, fmt::format("date {}", format_date(d)));
    k.year = iso_year;
    k.number = week;
    return k;
  }
  check_year(y, fmt::format("date {}", format_date(d)));
  k.year = y;
  if (s != PartitionStrategy::kYearly) k.number = static_cast<int>(m);
  if (s == PartitionStrategy::kDaily) k.day = static_cast<int>(day);
  return k;
}

PartitionKey partition_key_of(PartitionStrategy s, Timestamp ts) {
  return partition_key_of(s, date_of(ts));
}

PartitionKey null_partition_key(PartitionStrategy s) noexcept {
  PartitionKey k;
  k.strategy = s;
  k.is_null = true;
  return k;
}

namespace {

bool digits(std::string_view s, std::size_t n, int& out) {
  if (s.size() != n) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

}  // namespace

std::optional<PartitionKey> parse_partition_name(std::string_view name) {
  constexpr std::string_view kPrefix = "partition_";
  constexpr std::string_view kSuffix = ".duckdb";
  if (name.size() >= kSuffix.size() && name.substr(name.size() - kSuffix.size()) == kSuffix) {
    name.remove_suffix(kSuffix.size());
  }
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  PartitionKey k;
  if (name == "null") {
    k.is_null = true;
    return k;  // strategy unknown from the name alone; callers set it
  }
  int y = 0;
  if (name.size() < 4 || !digits(name.substr(0, 4), 4, y) || y < kMinPartitionYear) {
    return std::nullopt;
  }
  k.year = y;
  std::string_view rest = name.substr(4);
  if (rest.empty()) {
    k.strategy = PartitionStrategy::kYearly;
    return k;
  }
  if (rest.size() == 4 && rest[0] == '_' && rest[1] == 'w') {
    int w = 0;
    if (!digits(rest.substr(2), 2, w) || w < 1 || w > iso_weeks_in_year(y)) return std::nullopt;
    k.strategy = PartitionStrategy::kWeekly;
    k.number = w;
    return k;
  }
  int m = 0;
  if (rest.size() == 3 && rest[0] == '_' && digits(rest.substr(1), 2, m) && m >= 1 && m <= 12) {
    k.strategy = PartitionStrategy::kMonthly;
    k.number = m;
    return k;
  }
  int d = 0;
  if (rest.size() == 6 && rest[0] == '_' && rest[3] == '_' && digits(rest.substr(1, 2), 2, m) &&
      digits(rest.substr(4), 2, d) &&
      is_valid_civil(y, static_cast<unsigned>(m), static_cast<unsigned>(d))) {
    k.strategy = PartitionStrategy::kDaily;
    k.number = m;
    k.day = d;
    return k;
  }
  return std::nullopt;
}

std::string partition_code_sql(PartitionStrategy s, const std::string& c) {
  std::string code = "NULL";
  switch (s) {
    case PartitionStrategy::kYearly:
      code = fmt::format("CAST(year({0}) AS BIGINT)", c);
      break;
    case PartitionStrategy::kMonthly:
      code = fmt::format("CAST(year({0}) AS BIGINT) * 100 + month({0})", c);
      break;
    case PartitionStrategy::kWeekly:
      code = fmt::format("CAST(isoyear({0}) AS BIGINT) * 100 + week({0})", c);
      break;
    case PartitionStrategy::kDaily:
      code = fmt::format("CAST(year({0}) AS BIGINT) * 10000 + month({0}) * 100 + day({0})", c);
      break;
  }
  // year(infinity) is NULL in DuckDB: without the CASE such rows would pass for NULL values.
  return fmt::format("CASE WHEN isinf({}) THEN {} ELSE {} END", c, kInfiniteCode, code);
}

int64_t partition_code_of_days(PartitionStrategy s, int32_t days) noexcept {
  const Date d{days};
  if (s == PartitionStrategy::kWeekly) {
    int iso_year = 0, week = 0;
    iso_week_of(d, iso_year, week);
    return int64_t{iso_year} * 100 + week;
  }
  int y = 0;
  unsigned m = 0, day = 0;
  civil_from_date(d, y, m, day);
  switch (s) {
    case PartitionStrategy::kYearly:
      return y;
    case PartitionStrategy::kMonthly:
      return int64_t{y} * 100 + m;
    case PartitionStrategy::kDaily:
      return int64_t{y} * 10000 + int64_t{m} * 100 + day;
    case PartitionStrategy::kWeekly:
      break;
  }
  return 0;
}

int64_t partition_code_of(const PartitionKey& key) noexcept {
  switch (key.strategy) {
    case PartitionStrategy::kYearly:
      return key.year;
    case PartitionStrategy::kMonthly:
    case PartitionStrategy::kWeekly:
      return int64_t{key.year} * 100 + key.number;
    case PartitionStrategy::kDaily:
      return int64_t{key.year} * 10000 + int64_t{key.number} * 100 + key.day;
  }
  return 0;
}

PartitionKey partition_key_from_code(PartitionStrategy s, int64_t code) {
  PartitionKey k;
  k.strategy = s;
  int64_t year = code;
  switch (s) {
    case PartitionStrategy::kYearly:
      break;
    case PartitionStrategy::kMonthly:
    case PartitionStrategy::kWeekly:
      year = code / 100;
      k.number = static_cast<int>(code % 100);
      break;
    case PartitionStrategy::kDaily:
      year = code / 10000;
      k.number = static_cast<int>((code / 100) % 100);
      k.day = static_cast<int>(code % 100);
      break;
  }
  if (code == kInfiniteCode) {
    throw Error(ErrorCode::kInvalidArgument,
                "a partition value is infinity or -infinity, which belongs to no period: give "
                "such rows a real date first (or NULL, which the null-partition option routes to "
                "partition_null)");
  }
  const bool ok = code > 0 && year >= kMinPartitionYear && year <= kMaxPartitionYear &&
                  (s == PartitionStrategy::kYearly ||
                   (s == PartitionStrategy::kMonthly && k.number >= 1 && k.number <= 12) ||
                   (s == PartitionStrategy::kWeekly && k.number >= 1 &&
                    k.number <= iso_weeks_in_year(static_cast<int>(year))) ||
                   (s == PartitionStrategy::kDaily &&
                    is_valid_civil(static_cast<int>(year), static_cast<unsigned>(k.number),
                                   static_cast<unsigned>(k.day))));
  if (!ok) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("a value falls in period code {} ({}), outside the supported partition "
                            "years {}..{}",
                            code, strategy_name(s), kMinPartitionYear, kMaxPartitionYear));
  }
  k.year = static_cast<int>(year);
  return k;
}

}  // namespace duckpart
