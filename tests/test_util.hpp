// Shared test helpers: a fresh temporary directory per test, random data, comparisons.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "duckpart/duckpart.hpp"

namespace duckpart::testing {

// Each test gets its own directory under the system temp dir, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ = std::filesystem::temp_directory_path() /
           ("duckpart_test_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    // DUCKPART_KEEP_FAILED=1 keeps a failed test's directory for a post-mortem.
    if (HasFailure() && std::getenv("DUCKPART_KEEP_FAILED")) {
      std::fprintf(stderr, "kept %s\n", dir_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& rel) const { return (dir_ / rel).string(); }

  std::filesystem::path dir_;
};

inline PartitionConfig test_config(const std::string& base, PartitionStrategy s,
                                   int max_in_memory = 24) {
  PartitionConfig c;
  c.strategy = s;
  c.base_partition_path = base;
  c.max_partitions_in_memory = max_in_memory;
  // DUCKPART_TEST_WRITE_BUFFER_MB: the write buffer of every test that does not set its own (the
  // differential tests also run with 0, the direct write path; see tests/CMakeLists.txt).
  if (const char* wb = std::getenv("DUCKPART_TEST_WRITE_BUFFER_MB"))
    c.write_buffer_mb = std::atoi(wb);
  return c;
}

// A schema exercising every natively supported type.
inline Schema wide_schema(const std::string& partition_type = "TIMESTAMP") {
  return Schema("events",
                {{"id", "UUID"},
                 {"ts", partition_type},
                 {"flag", "BOOLEAN"},
                 {"small", "SMALLINT"},
                 {"qty", "INTEGER"},
                 {"big", "BIGINT"},
                 {"ratio", "DOUBLE"},
                 {"price", "DECIMAL(12,3)"},
                 {"name", "VARCHAR"},
                 {"day", "DATE"},
                 {"ref", "UUID"}},
                "ts", "id");
}

inline std::string random_uuid(std::mt19937_64& rng) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(36, '-');
  for (int i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) continue;
    s[static_cast<std::size_t>(i)] = kHex[rng() & 15];
  }
  return s;
}

// Random rows for wide_schema: timestamps between `first` and `last` (inclusive days), some NULLs.
inline std::vector<DataRecord> random_wide_rows(std::mt19937_64& rng, std::size_t n, Date first,
                                                Date last, bool date_partition = false) {
  static const char* kNames[] = {
      "alpha", "beta", "gamma, a name past the 15 bytes of a short string",
      "delta", "it's", "Ω-omega",
      "",      "x%y_z"};
  std::vector<DataRecord> rows;
  rows.reserve(n);
  std::uniform_int_distribution<int32_t> day(first.days, last.days);
  auto maybe_null = [&](Value v) { return (rng() % 10 == 0) ? Value{} : v; };
  for (std::size_t i = 0; i < n; ++i) {
    DataRecord r;
    const Date d{day(rng)};
    const int64_t tod = date_partition ? 0
                                       : static_cast<int64_t>(rng() % 86400) * 1'000'000 +
                                             (rng() % 3 == 0 ? 999'999 : 0);
    r.values = {
        Value(random_uuid(rng)),
        date_partition ? Value(d) : Value(Timestamp{int64_t{d.days} * kMicrosPerDay + tod}),
        maybe_null(Value(rng() % 2 == 0)),
        maybe_null(Value(static_cast<int64_t>(rng() % 200) - 100)),
        maybe_null(Value(static_cast<int64_t>(rng() % 1000))),
        maybe_null(Value(static_cast<int64_t>(rng()) >> 8)),
        maybe_null(Value(static_cast<double>(rng() % 100000) / 7.0)),
        maybe_null(Value(std::to_string(rng() % 100000) + "." + std::to_string(rng() % 1000))),
        maybe_null(Value(kNames[rng() % 8])),
        maybe_null(Value(Date{day(rng)})),
        maybe_null(Value(random_uuid(rng))),
    };
    rows.push_back(std::move(r));
  }
  return rows;
}

inline std::string row_text(const DataRecord& r) {
  std::string s;
  for (const auto& v : r.values) {
    s += v.is_null() ? "\\N" : std::string(v.type_name()) + ":" + v.to_string();
    s += '|';
  }
  return s;
}

inline std::vector<std::string> sorted_texts(const std::vector<DataRecord>& rows) {
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(row_text(r));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace duckpart::testing
