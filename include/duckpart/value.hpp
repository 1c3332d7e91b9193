// duckpart — dates, timestamps and the dynamically typed Value used by records and filters.
#pragma once

#include <compare>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace duckpart {

// A calendar date (proleptic Gregorian), as days since 1970-01-01. Same representation as DuckDB's
// DATE.
struct Date {
  int32_t days = 0;
  friend auto operator<=>(const Date&, const Date&) = default;
};

// A timestamp without time zone, as microseconds since 1970-01-01 00:00:00. Same as DuckDB's
// TIMESTAMP.
struct Timestamp {
  int64_t micros = 0;
  friend auto operator<=>(const Timestamp&, const Timestamp&) = default;
};

inline constexpr int64_t kMicrosPerDay = 86'400'000'000LL;

// Civil calendar conversions (exact for every date DuckDB can store).
Date date_from_civil(int year, unsigned month, unsigned day) noexcept;
void civil_from_date(Date date, int& year, unsigned& month, unsigned& day) noexcept;
// Whether year-month-day is a real calendar day (2023-02-30 is not).
bool is_valid_civil(int year, unsigned month, unsigned day) noexcept;
inline Timestamp to_timestamp(Date d) noexcept { return {int64_t{d.days} * kMicrosPerDay}; }
// The date a timestamp falls on (floor, also before 1970).
Date date_of(Timestamp ts) noexcept;

// Strict parsers. "2023-01-31"; "2023-01-31 12:00:00", "2023-01-31T12:00:00.123456" (a date alone
// means midnight). Offsets/zones ("+02:00", "Z") are rejected: duckdb TIMESTAMP has no zone. Return
// nullopt on anything else, including impossible days such as 2023-02-30 and hours past 23.
std::optional<Date> parse_date(std::string_view text) noexcept;
std::optional<Timestamp> parse_timestamp(std::string_view text) noexcept;
// ISO formats: "2023-01-31" and "2023-01-31 12:00:00[.ffffff]" (fraction only when non-zero).
std::string format_date(Date d);
std::string format_timestamp(Timestamp ts);

// A value of one cell: NULL, BOOLEAN, an integer, a floating-point number, text, a DATE or a
// TIMESTAMP. DECIMAL, UUID and other types without a native C++ form are carried as text in
// DuckDB's canonical spelling ("12.50", "0191a2b3-...") so that no precision is lost. Cheap to
// move; copies strings.
class Value {
 public:
  using Storage = std::variant<std::monostate, bool, int64_t, double, std::string, Date, Timestamp>;

  Value() = default;
  Value(std::nullptr_t) {}  // NOLINT(google-explicit-constructor): Value v = nullptr reads well
  Value(bool v) : v_(v) {}  // NOLINT(google-explicit-constructor)
  template <std::integral T>
  requires(!std::same_as<T, bool>) Value(T v)
      : v_(static_cast<int64_t>(v)) {}               // NOLINT(google-explicit-constructor)
  Value(double v) : v_(v) {}                         // NOLINT(google-explicit-constructor)
  Value(std::string v) : v_(std::move(v)) {}         // NOLINT(google-explicit-constructor)
  Value(std::string_view v) : v_(std::string(v)) {}  // NOLINT(google-explicit-constructor)
  Value(const char* v) : v_(std::string(v)) {}       // NOLINT(google-explicit-constructor)
  Value(Date v) : v_(v) {}                           // NOLINT(google-explicit-constructor)
  Value(Timestamp v) : v_(v) {}                      // NOLINT(google-explicit-constructor)

  bool is_null() const noexcept { return std::holds_alternative<std::monostate>(v_); }
  template <class T>
  bool is() const noexcept {
    return std::holds_alternative<T>(v_);
  }
  // Throws std::bad_variant_access when the value holds another type.
  template <class T>
  const T& get() const {
    return std::get<T>(v_);
  }
  const Storage& storage() const noexcept { return v_; }

  // Name of the held type: "NULL", "BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR", "DATE", "TIMESTAMP".
  std::string_view type_name() const noexcept;
  // Human/SQL-literal-free rendering, for messages and text output (NULL renders as "NULL").
  std::string to_string() const;

  friend bool operator==(const Value& a, const Value& b) = default;

 private:
  Storage v_;
};

}  // namespace duckpart
