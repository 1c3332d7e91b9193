#include "coerce.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"

namespace duckpart {

namespace {

[[noreturn]] void wrong(const Column& c, const Value& v, std::string_view context,
                        std::string_view expected) {
  std::string shown = v.to_string();
  if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
  throw Error(
      ErrorCode::kInvalidArgument,
      fmt::format("{}{}column '{}' ({}): value '{}' ({}) is not {}", context,
                  context.empty() ? "" : ": ", c.name, c.sql_type, shown, v.type_name(), expected));
}

bool parse_int64(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  const char* b = s.data();
  if (*b == '+') ++b;
  auto [p, ec] = std::from_chars(b, s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool parse_double(std::string_view s, double& out) {
  if (s.empty()) return false;
  std::string tmp(s);
  char* end = nullptr;
  errno = 0;
  out = std::strtod(tmp.c_str(), &end);
  return end == tmp.c_str() + tmp.size() && errno != ERANGE;
}

// Decimal text: [+-]digits[.digits] or with exponent — validated, kept as text for exact casting.
bool is_decimal_text(std::string_view s) {
  double d = 0;
  if (!parse_double(s, d) || !std::isfinite(d)) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')) {
      return false;
    }
  }
  return true;
}

void range_check(const Column& c, const Value& v, std::string_view context, int64_t x) {
  int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  switch (c.type) {
    case ColumnType::kTinyint:
      lo = -128;
      hi = 127;
      break;
    case ColumnType::kSmallint:
      lo = -32768;
      hi = 32767;
      break;
    case ColumnType::kInteger:
      lo = std::numeric_limits<int32_t>::min();
      hi = std::numeric_limits<int32_t>::max();
      break;
    case ColumnType::kUtinyint:
      lo = 0;
      hi = 255;
      break;
    case ColumnType::kUsmallint:
      lo = 0;
      hi = 65535;
      break;
    case ColumnType::kUinteger:
      lo = 0;
      hi = 4294967295LL;
      break;
    default:
      break;
  }
  if (x < lo || x > hi) wrong(c, v, context, fmt::format("in range [{}, {}]", lo, hi));
}

}  // namespace

// ASCII is checked 8 bytes at a time.
std::size_t utf8_error(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

bool is_utf8_text(const Column& c) {
  switch (c.type) {
    case ColumnType::kVarchar:
    case ColumnType::kDecimal:
    case ColumnType::kHugeint:
    case ColumnType::kOther:
      return true;
    default:
      return false;
  }
}

void check_utf8(const Column& c, std::string_view s, std::string_view context) {
  const std::size_t bad = utf8_error(s);
  if (bad == std::string_view::npos) return;
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("{}{}column '{}' ({}): the text is not valid UTF-8 (byte {} of {} is "
                          "0x{:02x})",
                          context, context.empty() ? "" : ": ", c.name, c.sql_type, bad, s.size(),
                          static_cast<unsigned char>(s[bad])));
}

Value coerce_value(const Column& c, const Value& v, std::string_view context, bool allow_time) {
  switch (c.type) {
    case ColumnType::kBoolean:
      if (v.is<bool>()) return v;
      if (v.is<std::string>()) {
        const auto& s = v.get<std::string>();
        if (s == "true" || s == "TRUE" || s == "True") return Value(true);
        if (s == "false" || s == "FALSE" || s == "False") return Value(false);
      }
      wrong(c, v, context, "a boolean (true/false)");
    case ColumnType::kTinyint:
    case ColumnType::kSmallint:
    case ColumnType::kInteger:
    case ColumnType::kBigint:
    case ColumnType::kUtinyint:
    case ColumnType::kUsmallint:
    case ColumnType::kUinteger: {
      int64_t x = 0;
      if (v.is<int64_t>()) {
        x = v.get<int64_t>();
      } else if (v.is<double>()) {
        const double d = v.get<double>();
        if (!(std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18)) {
          wrong(c, v, context, "an integer");
        }
        x = static_cast<int64_t>(d);
      } else if (v.is<std::string>()) {
        if (!parse_int64(v.get<std::string>(), x)) wrong(c, v, context, "an integer");
      } else {
        wrong(c, v, context, "an integer");
      }
      range_check(c, v, context, x);
      return Value(x);
    }
    case ColumnType::kHugeint: {
      if (v.is<int64_t>()) return Value(std::to_string(v.get<int64_t>()));
      if (v.is<std::string>()) {
        const auto& s = v.get<std::string>();
        bool ok = !s.empty() && s.size() <= 40;
        for (std::size_t i = 0; i < s.size() && ok; ++i) {
          ok = (s[i] >= '0' && s[i] <= '9') ||
               (i == 0 && (s[i] == '-' || s[i] == '+') && s.size() > 1);
        }
        if (ok) return v;
      }
      wrong(c, v, context, "an integer");
    }
    case ColumnType::kFloat:
    case ColumnType::kDouble: {
      if (v.is<double>()) return v;
      if (v.is<int64_t>()) return Value(static_cast<double>(v.get<int64_t>()));
      double d = 0;
      if (v.is<std::string>() && parse_double(v.get<std::string>(), d)) return Value(d);
      wrong(c, v, context, "a number");
    }
    case ColumnType::kDecimal: {
      if (v.is<int64_t>()) return Value(std::to_string(v.get<int64_t>()));
      if (v.is<double>()) {
        const double d = v.get<double>();
        if (!std::isfinite(d)) wrong(c, v, context, "a finite number");
        return Value(fmt::format("{}", d));
      }
      if (v.is<std::string>() && is_decimal_text(v.get<std::string>())) return v;
      wrong(c, v, context, "a decimal number");
    }
    case ColumnType::kVarchar:
      if (v.is<std::string>()) {
        check_utf8(c, v.get<std::string>(), context);
        return v;
      }
      wrong(c, v, context, "text");
    case ColumnType::kBlob:
      if (v.is<std::string>()) return v;
      wrong(c, v, context, "text");
    case ColumnType::kUuid: {
      std::string canonical;
      if (v.is<std::string>() && duck::uuid_normalize(v.get<std::string>(), canonical)) {
        return Value(canonical);
      }
      wrong(c, v, context, "a UUID");
    }
    case ColumnType::kDate: {
      if (v.is<Date>()) return v;
      if (v.is<Timestamp>()) {
        const Timestamp t = v.get<Timestamp>();
        if (t.micros % kMicrosPerDay == 0) return Value(date_of(t));
        if (allow_time) return v;
        wrong(c, v, context, "a date (it has a time of day)");
      }
      if (v.is<std::string>()) {
        const auto& s = v.get<std::string>();
        if (auto d = parse_date(s)) return Value(*d);
        if (auto t = parse_timestamp(s)) {
          if (t->micros % kMicrosPerDay == 0) return Value(date_of(*t));
          if (allow_time) return Value(*t);
        }
      }
      wrong(c, v, context, "a valid date (YYYY-MM-DD)");
    }
    case ColumnType::kTimestamp:
    case ColumnType::kTimestampTz: {
      if (v.is<Timestamp>()) return v;
      if (v.is<Date>()) return Value(to_timestamp(v.get<Date>()));
      if (v.is<std::string>()) {
        if (auto t = parse_timestamp(v.get<std::string>())) return Value(*t);
      }
      wrong(c, v, context,
            "a valid timestamp (YYYY-MM-DD[ HH:MM:SS[.ffffff]], no time zone offset)");
    }
    case ColumnType::kOther:  // text DuckDB casts (JSON, VARCHAR COLLATE, ENUM, INTERVAL, ...)
      if (v.is<std::string>()) {
        check_utf8(c, v.get<std::string>(), context);
        return v;
      }
      return Value(v.to_string());
  }
  wrong(c, v, context, "supported");
}

std::string param_sql_type(const Column& column, const Value& v) {
  if (v.is<Date>()) return "DATE";
  if (v.is<Timestamp>())
    return column.type == ColumnType::kTimestampTz ? "TIMESTAMPTZ" : "TIMESTAMP";
  switch (column.type) {
    case ColumnType::kBoolean:
      return "BOOLEAN";
    case ColumnType::kTinyint:
    case ColumnType::kSmallint:
    case ColumnType::kInteger:
    case ColumnType::kBigint:
    case ColumnType::kUtinyint:
    case ColumnType::kUsmallint:
    case ColumnType::kUinteger:
      return "BIGINT";
    case ColumnType::kHugeint:
      return "HUGEINT";
    case ColumnType::kFloat:
    case ColumnType::kDouble:
      return "DOUBLE";
    // Wide enough that comparing with a filter value does not round it to the column's scale (12
    // digits, or the column's own scale when larger), and holds every value of the column.
    case ColumnType::kDecimal: {
      int width = 18, scale = 3;  // DuckDB's DECIMAL without a width
      if (const auto open = column.sql_type.find('('); open != std::string::npos) {
        std::sscanf(column.sql_type.c_str() + open, "(%d,%d", &width, &scale);
      }
      const int digits = std::clamp(width - scale, 0, 38);  // before the point
      return fmt::format("DECIMAL(38,{})", std::clamp(std::max(scale, 12), 0, 38 - digits));
    }
    case ColumnType::kVarchar:
      return "VARCHAR";
    case ColumnType::kUuid:
      return "UUID";
    case ColumnType::kBlob:
      return "BLOB";
    default:
      return column.sql_type;
  }
}

std::optional<std::string> constant_sql(const Column& column, const Value& v) {
  // The literal has the type binding `v` would give (BIGINT, DOUBLE, VARCHAR, DATE, TIMESTAMP,
  // BOOLEAN) and is cast like the parameter, so both compare alike.
  std::string literal;
  auto civil_year = [](Date d) {
    int y = 0;
    unsigned m = 0, day = 0;
    civil_from_date(d, y, m, day);
    return y;
  };
  // Printable ASCII only in SQL text (no NUL, no UTF-8 for the parser to judge); anything else
  // stays a bound parameter.
  auto plain = [](const std::string& t) {
    return std::all_of(t.begin(), t.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; });
  };
  if (v.is<int64_t>()) {
    literal = std::to_string(v.get<int64_t>());
  } else if (v.is<bool>()) {
    literal = v.get<bool>() ? "TRUE" : "FALSE";
  } else if (v.is<double>()) {
    const double d = v.get<double>();
    if (!std::isfinite(d)) return std::nullopt;
    literal = fmt::format("CAST('{:.17g}' AS DOUBLE)", d);  // 17 digits read back exactly
  } else if (v.is<std::string>()) {
    if (!plain(v.get<std::string>())) return std::nullopt;
    literal = duck::quote_literal(v.get<std::string>());
  } else if (v.is<Date>()) {
    const int y = civil_year(v.get<Date>());
    if (y < 1 || y > 9999) return std::nullopt;  // no BC or 5-digit years in SQL text
    literal = "DATE " + duck::quote_literal(format_date(v.get<Date>()));
  } else if (v.is<Timestamp>()) {
    const int y = civil_year(date_of(v.get<Timestamp>()));
    if (y < 1 || y > 9999) return std::nullopt;
    literal = "TIMESTAMP " + duck::quote_literal(format_timestamp(v.get<Timestamp>()));
  } else {
    return std::nullopt;
  }
  return fmt::format("CAST({} AS {})", literal, param_sql_type(column, v));
}

int64_t temporal_micros(const Value& v) {
  if (v.is<Date>()) {
    // DuckDB's dates reach +-5.8M years, past int64 microseconds: saturated (no partition holds
    // such a day, so the comparisons pruning makes come out the same).
    const int64_t days = v.get<Date>().days;
    constexpr int64_t kMaxDays = std::numeric_limits<int64_t>::max() / kMicrosPerDay;
    if (days > kMaxDays) return std::numeric_limits<int64_t>::max();
    if (days < -kMaxDays) return std::numeric_limits<int64_t>::min();
    return days * kMicrosPerDay;
  }
  return v.get<Timestamp>().micros;
}

}  // namespace duckpart
