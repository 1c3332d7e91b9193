#include <gtest/gtest.h>

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

}  // namespace
}  // namespace duckpart
