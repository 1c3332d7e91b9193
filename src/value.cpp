#include "duckpart/value.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace duckpart {

// Howard Hinnant's days_from_civil / civil_from_days: exact for the whole proleptic Gregorian
// range.
Date date_from_civil(int year, unsigned month, unsigned day) noexcept {
  const int64_t y = static_cast<int64_t>(year) - (month <= 2 ? 1 : 0);
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return Date{static_cast<int32_t>(era * 146097 + static_cast<int64_t>(doe) - 719468)};
}

void civil_from_date(Date date, int& year, unsigned& month, unsigned& day) noexcept {
  const int64_t z = int64_t{date.days} + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  day = doy - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = static_cast<int>(y + (month <= 2 ? 1 : 0));
}

bool is_valid_civil(int year, unsigned month, unsigned day) noexcept {
  if (month < 1 || month > 12 || day < 1) return false;
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const unsigned max_day = (month == 2 && leap) ? 29 : kDays[month - 1];
  return day <= max_day;
}

Date date_of(Timestamp ts) noexcept {
  int64_t d = ts.micros / kMicrosPerDay;
  if (ts.micros % kMicrosPerDay < 0) --d;
  return Date{static_cast<int32_t>(d)};
}

namespace {

bool parse_uint(std::string_view s, std::size_t pos, std::size_t len, unsigned& out) {
  if (pos + len > s.size()) return false;
  unsigned v = 0;
  for (std::size_t i = pos; i < pos + len; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + static_cast<unsigned>(s[i] - '0');
  }
  out = v;
  return true;
}

// "YYYY-MM-DD" (four-digit year, optionally with a leading '-') at the start of `s`; returns the
// length.
std::size_t parse_date_prefix(std::string_view s, Date& out) {
  std::size_t pos = 0;
  bool negative = false;
  if (!s.empty() && s[0] == '-') {
    negative = true;
    pos = 1;
  }
  unsigned y = 0, m = 0, d = 0;
  if (!parse_uint(s, pos, 4, y) || s.size() < pos + 10 || s[pos + 4] != '-' ||
      !parse_uint(s, pos + 5, 2, m) || s[pos + 7] != '-' || !parse_uint(s, pos + 8, 2, d)) {
    return 0;
  }
  const int year = negative ? -static_cast<int>(y) : static_cast<int>(y);
  if (!is_valid_civil(year, m, d)) return 0;
  out = date_from_civil(year, m, d);
  return pos + 10;
}

}  // namespace

std::optional<Date> parse_date(std::string_view text) noexcept {
  Date d;
  const std::size_t n = parse_date_prefix(text, d);
  if (n == 0 || n != text.size()) return std::nullopt;
  return d;
}

std::optional<Timestamp> parse_timestamp(std::string_view text) noexcept {
  Date d;
  std::size_t n = parse_date_prefix(text, d);
  if (n == 0) return std::nullopt;
  int64_t micros = int64_t{d.days} * kMicrosPerDay;
  if (n == text.size()) return Timestamp{micros};
  if (text[n] != ' ' && text[n] != 'T') return std::nullopt;
  unsigned hh = 0, mi = 0, ss = 0;
  if (!parse_uint(text, n + 1, 2, hh) || text.size() < n + 9 || text[n + 3] != ':' ||
      !parse_uint(text, n + 4, 2, mi) || text[n + 6] != ':' || !parse_uint(text, n + 7, 2, ss)) {
    return std::nullopt;
  }
  if (hh > 23 || mi > 59 || ss > 59) return std::nullopt;
  n += 9;
  int64_t frac = 0;
  if (n < text.size() && text[n] == '.') {
    ++n;
    std::size_t digits = 0;
    while (n < text.size() && text[n] >= '0' && text[n] <= '9') {
      if (digits < 6) frac = frac * 10 + (text[n] - '0');
      ++digits;
      ++n;
    }
    if (digits == 0 || digits > 6) return std::nullopt;
    for (std::size_t i = digits; i < 6; ++i) frac *= 10;
  }
  if (n != text.size()) return std::nullopt;  // a zone or offset, or trailing text
  micros += ((int64_t{hh} * 60 + mi) * 60 + ss) * 1'000'000LL + frac;
  return Timestamp{micros};
}

std::string format_date(Date d) {
  int y = 0;
  unsigned m = 0, day = 0;
  civil_from_date(d, y, m, day);
  if (y < 0) return fmt::format("-{:04d}-{:02d}-{:02d}", -y, m, day);
  return fmt::format("{:04d}-{:02d}-{:02d}", y, m, day);
}

std::string format_timestamp(Timestamp ts) {
  const Date d = date_of(ts);
  int64_t rem = ts.micros - int64_t{d.days} * kMicrosPerDay;
  const int64_t frac = rem % 1'000'000;
  rem /= 1'000'000;
  std::string out =
      fmt::format("{} {:02d}:{:02d}:{:02d}", format_date(d), rem / 3600, (rem / 60) % 60, rem % 60);
  if (frac != 0) out += fmt::format(".{:06d}", frac);
  return out;
}

std::string_view Value::type_name() const noexcept {
  switch (v_.index()) {
    case 0:
      return "NULL";
    case 1:
      return "BOOLEAN";
    case 2:
      return "BIGINT";
    case 3:
      return "DOUBLE";
    case 4:
      return "VARCHAR";
    case 5:
      return "DATE";
    case 6:
      return "TIMESTAMP";
  }
  return "?";
}

std::string Value::to_string() const {
  struct Visitor {
    std::string operator()(std::monostate) const { return "NULL"; }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      if (std::isnan(d)) return "nan";
      return fmt::format("{}", d);
    }
    std::string operator()(const std::string& s) const { return s; }
    std::string operator()(Date d) const { return format_date(d); }
    std::string operator()(Timestamp t) const { return format_timestamp(t); }
  };
  return std::visit(Visitor{}, v_);
}

}  // namespace duckpart
