#include "test_util.hpp"

namespace duckpart::testing {
namespace {

class SmokeTest : public TempDirTest {};

TEST_F(SmokeTest, WriteQueryBothRepositories) {
  const Schema schema = wide_schema();
  std::mt19937_64 rng(1);
  auto rows =
      random_wide_rows(rng, 1000, date_from_civil(2022, 11, 1), date_from_civil(2023, 3, 31));
  DuckDBDataRepository single(path("single.duckdb"));
  PartitionedDataRepository parts(test_config(path("parts"), PartitionStrategy::kMonthly));
  single.create_batch(schema, rows);
  auto res = parts.create_batch(schema, rows);
  EXPECT_EQ(res.rows_written, 1000);
  EXPECT_EQ(res.partitions_written, 5);
  EXPECT_EQ(single.count_all(schema), 1000);
  EXPECT_EQ(parts.count_all(schema), 1000);
  DataQueryRequest q;
  q.filters.push_back({"ts", FilterOperator::kGte, Value("2023-01-01")});
  q.filters.push_back({"ts", FilterOperator::kLt, Value("2023-02-01")});
  auto a = single.get_all(schema, q);
  auto b = parts.get_all(schema, q);
  EXPECT_EQ(a.total, b.total);
  EXPECT_EQ(b.stats.partitions_scanned, 1);
  EXPECT_EQ(sorted_texts(a.items), sorted_texts(b.items));
  auto rec = parts.get_by_id(schema, rows[17].values[0]);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(row_text(*rec), row_text(*single.get_by_id(schema, rows[17].values[0])));
}

}  // namespace
}  // namespace duckpart::testing
