// Bad input: every case gets a clear error naming the problem, and nothing is written.
#include "test_util.hpp"

namespace duckpart::testing {
namespace {

struct Outcome {
  ErrorCode code{};
  std::string message;
};

Outcome error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {ErrorCode::kDuckDb, "<no error>"};
}

// Runs every case against both repositories: same refusal, no row written.
class ErrorsTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    single_ = std::make_unique<DuckDBDataRepository>(path("single.duckdb"));
    parts_ = std::make_unique<PartitionedDataRepository>(
        test_config(path("parts"), PartitionStrategy::kMonthly));
    std::mt19937_64 rng(4);
    good_ = random_wide_rows(rng, 20, date_from_civil(2023, 1, 1), date_from_civil(2023, 3, 31));
    single_->create_batch(schema_, good_);
    parts_->create_batch(schema_, good_);
  }
  void TearDown() override {
    parts_.reset();
    single_.reset();
    TempDirTest::TearDown();
  }

  // Asserts that `f` fails on both repositories with `expected` in the message and writes nothing.
  void expect_refused(const std::function<void(IDataRepository&)>& f, const std::string& expected,
                      ErrorCode code = ErrorCode::kInvalidArgument) {
    for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                  static_cast<IDataRepository*>(parts_.get())}) {
      const Outcome o = error_of([&] { f(*repo); });
      EXPECT_NE(o.message.find(expected), std::string::npos) << "got: " << o.message;
      EXPECT_EQ(o.code, code) << o.message;
      EXPECT_EQ(repo->count_all(schema_), 20) << "nothing may be written";
    }
  }
  DataRecord row_with(std::size_t col, Value v) {
    DataRecord r = good_[0];
    r.values[0] = Value{};
    r.values[col] = std::move(v);
    return r;
  }
  std::vector<DataRecord> batch_with(std::size_t col, Value v) {
    std::vector<DataRecord> b(good_.begin(), good_.begin() + 5);
    for (auto& r : b) r.values[0] = Value{};
    b.push_back(row_with(col, std::move(v)));
    return b;
  }
  DataQueryRequest filter(std::string field, FilterOperator op, Value v = {}) {
    DataQueryRequest q;
    q.filters.push_back({std::move(field), op, std::move(v)});
    return q;
  }

  const Schema schema_ = wide_schema();
  std::vector<DataRecord> good_;
  std::unique_ptr<DuckDBDataRepository> single_;
  std::unique_ptr<PartitionedDataRepository> parts_;
};

TEST_F(ErrorsTest, PartitionValues) {
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value{})); },
                 "record 5: partition column 'ts' is NULL");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value("2023-02-30"))); },
      "record 5: column 'ts' (TIMESTAMP): value '2023-02-30'");
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(1, Value("2023-01-01T10:00:00+02:00")));
      },
      "no time zone offset");
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value(""))); },
                 "value ''");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value("yesterday"))); },
      "value 'yesterday'");
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value(12345))); },
                 "is not a valid timestamp");
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(1, Value(Date{date_from_civil(10000, 1, 1)})));
      },
      "outside the supported");
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(1, Value(Timestamp{INT64_MIN / 2})));
      },
      "outside the supported");
}

TEST_F(ErrorsTest, ValueTypes) {
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(4, Value("abc"))); },
                 "record 5: column 'qty' (INTEGER): value 'abc' (VARCHAR) is not an integer");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(4, Value(int64_t{1} << 40))); },
      "is not in range");
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(3, Value(40000))); },
                 "column 'small' (SMALLINT)");
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(8, Value(5))); },
                 "column 'name' (VARCHAR): value '5' (BIGINT) is not text");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(2, Value("maybe"))); },
      "is not a boolean");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(0, Value("not-a-uuid"))); },
      "column 'id' (UUID): value 'not-a-uuid'");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(7, Value("12.3.4"))); },
      "is not a decimal number");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(9, Value("2023-02-29"))); },
      "column 'day' (DATE)");
  expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(6, Value(true))); },
                 "is not a number");
  expect_refused(
      [&](IDataRepository& r) {
        auto b = batch_with(4, Value(1));
        b.back().values.pop_back();
        r.create_batch(schema_, b);
      },
      "record 5: has 10 values, table 'events' has 11 columns");
  expect_refused(
      [&](IDataRepository& r) {
        r.create(schema_, {{"nope", Value(1)}, {"ts", Value("2023-01-01")}});
      },
      "unknown column 'nope' in table 'events'");
  expect_refused(
      [&](IDataRepository& r) {
        ColumnBatch b = make_column_batch(schema_);
        for (auto& col : b.columns) std::visit([](auto& v) { v.resize(1); }, col.data);
        b.columns[4].data = std::vector<double>{1.0};
        b.rows = 1;
        r.create_batch_columnar(schema_, b);
      },
      "column 'qty' (INTEGER) must be a std::vector<int64_t>");
}

TEST_F(ErrorsTest, Queries) {
  expect_refused(
      [&](IDataRepository& r) {
        r.get_all(schema_, filter("nope", FilterOperator::kEq, Value(1)));
      },
      "unknown filter column 'nope' in table 'events' (columns: id, ts,");
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q;
        q.sort = {{"qty; DROP TABLE events", SortDirection::kAsc}};
        r.get_all(schema_, q);
      },
      "unknown sort column 'qty; DROP TABLE events'");
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q;
        q.columns = {"id", "\"name\""};
        r.get_all(schema_, q);
      },
      "unknown projected column '\"name\"'");
  expect_refused(
      [&](IDataRepository& r) {
        r.get_all(schema_, filter("qty", FilterOperator::kEq, Value("many")));
      },
      "filter 1 (qty eq): column 'qty' (INTEGER): value 'many'");
  expect_refused(
      [&](IDataRepository& r) {
        r.get_all(schema_, filter("qty", FilterOperator::kLike, Value("1%")));
      },
      "like needs a VARCHAR column");
  expect_refused(
      [&](IDataRepository& r) { r.get_all(schema_, filter("qty", FilterOperator::kEq)); },
      "value is NULL (use is_null");
  expect_refused(
      [&](IDataRepository& r) {
        r.get_all(schema_, filter("ts", FilterOperator::kGte, Value("2023-13-01")));
      },
      "column 'ts' (TIMESTAMP): value '2023-13-01'");
  expect_refused(
      [&](IDataRepository& r) {
        r.get_all(schema_, filter("qty", FilterOperator::kIsNull, Value(1)));
      },
      "takes no value");
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q;
        q.filters.push_back({"qty", FilterOperator::kBetween, std::vector<Value>{Value(1)}});
        r.count_all(schema_, q);
      },
      "between needs exactly two values");
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q;
        q.limit = -1;
        r.get_all(schema_, q);
      },
      "limit must not be negative");
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q;
        q.offset = -5;
        r.get_all(schema_, q);
      },
      "offset must not be negative");
  expect_refused([&](IDataRepository& r) { r.get_by_id(schema_, Value("zzz")); },
                 "get_by_id: column 'id' (UUID)");
  expect_refused([&](IDataRepository& r) { r.get_by_id(schema_, Value{}); }, "id is NULL");
  Schema no_id("noid", {{"ts", "DATE"}}, "ts");
  expect_refused([&](IDataRepository& r) { r.get_by_id(no_id, Value(1)); }, "has no id column");
}

TEST_F(ErrorsTest, SqlLookingTextIsData) {
  const std::string evil = "'; DROP TABLE events; --";
  for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                static_cast<IDataRepository*>(parts_.get())}) {
    repo->create(schema_, {{"ts", Value("2023-02-02 02:02:02")}, {"name", Value(evil)}});
    EXPECT_EQ(repo->count_all(schema_), 21);
    DataQueryRequest q;
    q.filters.push_back({"name", FilterOperator::kEq, Value(evil)});
    const auto page = repo->get_all(schema_, q);
    ASSERT_EQ(page.items.size(), 1u);
    EXPECT_EQ(page.value(0, "name"), Value(evil));
    q.filters[0] = {"name", FilterOperator::kLike, Value("%DROP TABLE%")};
    EXPECT_EQ(repo->count_all(schema_, q), 1);
  }
}

TEST_F(ErrorsTest, EmptyBatchWritesNothingAndSucceeds) {
  EXPECT_EQ(parts_->create_batch(schema_, {}).rows_written, 0);
  EXPECT_EQ(single_->create_batch(schema_, {}).rows_written, 0);
  EXPECT_EQ(parts_->count_all(schema_), 20);
}

TEST_F(ErrorsTest, BadDirectories) {
  PartitionConfig c = test_config("", PartitionStrategy::kMonthly);
  EXPECT_NE(error_of([&] { PartitionedDataRepository r(c); }).message.find("base_partition_path"),
            std::string::npos);
  { std::ofstream(path("afile")) << "x"; }
  c.base_partition_path = path("afile");
  EXPECT_NE(error_of([&] { PartitionedDataRepository r(c); }).message.find("is not a directory"),
            std::string::npos);
  c.base_partition_path = path("afile/sub");
  const Outcome o = error_of([&] { PartitionedDataRepository r(c); });
  EXPECT_EQ(o.code, ErrorCode::kIo);
  EXPECT_NE(o.message.find("afile/sub"), std::string::npos) << o.message;
  c.base_partition_path = path("missing");
  EXPECT_EQ(error_of([&] { PartitionedDataRepository r(c, {.read_only = true}); }).code,
            ErrorCode::kNotFound);
  EXPECT_NE(error_of([&] {
              DuckDBDataRepository r(path("no/such/dir/x.duckdb"));
            }).message.find("no/such/dir"),
            std::string::npos);
}

}  // namespace
}  // namespace duckpart::testing
