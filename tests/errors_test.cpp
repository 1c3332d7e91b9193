// Bad input: every case gets a clear error naming the problem, and nothing is written.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <limits>

#include "batch.hpp"
#include "duck/duck.hpp"
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
  expect_refused(  // INTEGER: an int64 outside its range (the fast path checks it too)
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(4, Value(int64_t{2147483648})));
      },
      "in range [-2147483648, 2147483647]");
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(4, Value(int64_t{-2147483649})));
      },
      "in range [-2147483648, 2147483647]");
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
  expect_refused(  // columnar: UUID text is parsed by the stores themselves, whole batch refused
      [&](IDataRepository& r) {
        ColumnBatch b = records_to_batch(schema_, batch_with(10, Value{}));
        std::get<std::vector<std::string>>(b.columns[10].data)[5] = std::string(100, 'z');
        b.columns[10].valid[5] = 1;
        r.create_batch_columnar(schema_, b);
      },
      "record 5: column 'ref' (UUID): value '" + std::string(80, 'z') + "...' is not a UUID");
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

TEST_F(ErrorsTest, BatchIdsReservedForTheToolsAreRefusedAndOthersAreNot) {
  // migrate's catch-up takes a partition whose batches all carry these prefixes for one only the
  // tools wrote (and may replace it by a fresh copy of the source).
  for (const char* id : {"migrate:t:x", "migrate-catchup:t:2023_01", "repartition:p-0-10"}) {
    SCOPED_TRACE(id);
    expect_refused(
        [&](IDataRepository& r) {
          r.create_batch(schema_, {good_.begin(), good_.begin() + 2}, {.batch_id = id});
        },
        fmt::format("batch id '{}' starts with '", id));
    expect_refused(
        [&](IDataRepository& r) {
          r.create_batch_columnar(schema_, records_to_batch(schema_, {good_[0]}), {.batch_id = id});
        },
        "which is reserved for the batches of migrate and re-partitioning");
    const Outcome o = error_of([&] {
      // Refused before the query is run (which would fail on its columns).
      parts_->create_batch_from_query(schema_, "SELECT 1", {.batch_id = id});
    });
    EXPECT_NE(o.message.find("which is reserved"), std::string::npos) << o.message;
    EXPECT_EQ(o.code, ErrorCode::kInvalidArgument);
  }
  int64_t expected = 20;
  for (const char* id :
       {"migrate", "migrated:x", "repartition-x", "merged: 1 batch id", "import-1"}) {
    SCOPED_TRACE(id);
    std::vector<DataRecord> rows(good_.begin(), good_.begin() + 2);
    for (DataRecord& r : rows) r.values[0] = Value{};
    for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                  static_cast<IDataRepository*>(parts_.get())}) {
      EXPECT_EQ(repo->create_batch(schema_, rows, {.batch_id = id}).rows_written, 2);
    }
    expected += 2;
  }
  EXPECT_EQ(single_->count_all(schema_), expected);
  EXPECT_EQ(parts_->count_all(schema_), expected);
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

TEST_F(ErrorsTest, MoreValuesAndRecords) {
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(1, Value("2023-01-01T10:00:00Z")));
      },
      "no time zone");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value("2023-1-5"))); },
      "value '2023-1-5'");
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(1, Value("2023-01-01 24:00:00")));
      },
      "value '2023-01-01 24:00:00'");
  expect_refused(
      [&](IDataRepository& r) { r.create_batch(schema_, batch_with(1, Value("0000-01-01"))); },
      "outside the supported");
  expect_refused(
      [&](IDataRepository& r) {
        r.create_batch(schema_, batch_with(5, Value("99999999999999999999")));
      },
      "column 'big' (BIGINT)");
  expect_refused(
      [&](IDataRepository& r) {
        r.create(schema_, {{"qty", Value(1)}});
      },
      "partition column 'ts' is NULL");
  expect_refused(
      [&](IDataRepository& r) {
        ColumnBatch b = make_column_batch(schema_);
        for (auto& col : b.columns) std::visit([](auto& v) { v.resize(2); }, col.data);
        std::visit([](auto& v) { v.resize(1); }, b.columns[4].data);
        b.rows = 2;
        r.create_batch_columnar(schema_, b);
      },
      "column 'qty'");
  // A batch written with another layout under the same table name.
  expect_refused(
      [&](IDataRepository& r) {
        Schema other("events", {{"id", "UUID"}, {"ts", "TIMESTAMP"}, {"qty", "VARCHAR"}}, "ts",
                     "id");
        r.create(other, {{"ts", Value("2023-01-05")}, {"qty", Value("x")}});
      },
      "events", ErrorCode::kConflict);
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q;
        q.filters.push_back({"name", FilterOperator::kLike, Value{}});
        r.count_all(schema_, q);
      },
      "value is NULL");
  expect_refused(
      [&](IDataRepository& r) {
        r.get_all(schema_, filter("ts", FilterOperator::kLt, Value(true)));
      },
      "column 'ts' (TIMESTAMP)");
}

TEST_F(ErrorsTest, HugeAndHostileValuesAreStoredVerbatim) {
  const std::string huge(4 << 20, 'x');
  const std::string evil_list = "a', 'b'); DELETE FROM events; --";
  for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                static_cast<IDataRepository*>(parts_.get())}) {
    repo->create(schema_, {{"ts", Value("2023-03-03")}, {"name", Value(huge)}});
    DataQueryRequest q;
    q.filters.push_back(
        {"name", FilterOperator::kIn, std::vector<Value>{Value(evil_list), Value(huge)}});
    const auto page = repo->get_all(schema_, q);
    ASSERT_EQ(page.items.size(), 1u);
    EXPECT_EQ(page.value(0, "name").get<std::string>().size(), huge.size());
    EXPECT_EQ(repo->count_all(schema_), 21);
  }
}

TEST_F(ErrorsTest, SchemasAndConfiguration) {
  auto fails = [](const std::function<void()>& f, const std::string& expected) {
    const Outcome o = error_of(f);
    EXPECT_EQ(o.code, ErrorCode::kInvalidArgument) << o.message;
    EXPECT_NE(o.message.find(expected), std::string::npos) << o.message;
  };
  fails([] { Schema s("t", {{"ts", "VARCHAR"}}, "ts"); }, "ts");
  fails([] { Schema s("t", {{"ts", "DATE"}, {"id", "DOUBLE"}}, "ts", "id"); }, "id");
  fails([] { Schema s("t", {{"ts", "DATE"}, {"TS", "DATE"}}, "ts"); }, "TS");
  fails([] { Schema s("", {{"ts", "DATE"}}, "ts"); }, "name");
  fails([] { Schema s("t", {{"ts", "DATE"}}, "nope"); }, "nope");
  fails([] { parse_strategy("hourly"); }, "hourly");
  fails(
      [] {
        PartitionConfig c;
        c.max_partitions_in_memory = 0;
        c.validate();
      },
      "max_partitions_in_memory");
  fails(
      [] {
        PartitionConfig c;
        c.partition_size_threshold_mb = -5;
        c.validate();
      },
      "partition_size_threshold_mb");
  PartitionUtilities util(*parts_);
  fails([&] { util.cleanup(schema_, -1, date_from_civil(2024, 1, 1), true); }, "-1");
  EXPECT_EQ(parts_->count_all(schema_), 20);
}

// A partition directory that runs out of space (RLIMIT_FSIZE in a child process, like a full
// disk): the write fails with an error, every partition stays readable, and replaying the failed
// batch after space comes back completes it exactly once.
TEST_F(ErrorsTest, FullDiskFailsCleanlyAndReplayCompletes) {
  parts_.reset();
  const std::string dir = path("full");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = 3 << 20;  // 3 MB per file
    ::setrlimit(RLIMIT_FSIZE, &lim);
    int ok_batches = 0;
    std::string failure;
    try {
      PartitionedDataRepository repo(test_config(dir, PartitionStrategy::kYearly));
      std::mt19937_64 rng(9);
      for (int b = 0; b < 200; ++b) {
        auto rows =
            random_wide_rows(rng, 2000, date_from_civil(2023, 1, 1), date_from_civil(2024, 12, 31));
        for (auto& r : rows) r.values[8] = Value(std::string(200, 'p'));
        BatchOptions o;
        o.batch_id = "b" + std::to_string(b);
        repo.create_batch(schema_, rows, o);
        ++ok_batches;
      }
    } catch (const Error& e) {
      failure = e.what();
    } catch (...) {
      failure = "unexpected exception type";
    }
    std::ofstream(dir + "_result.txt") << ok_batches << "\n" << failure << "\n";
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "the writer crashed instead of reporting the full disk";
  std::ifstream in(dir + "_result.txt");
  int ok_batches = 0;
  std::string line, failure;
  in >> ok_batches;
  std::getline(in, line);
  std::getline(in, failure);
  ASSERT_FALSE(failure.empty()) << "3 MB files should have filled up";
  std::printf("full disk after %d batches: %s\n", ok_batches, failure.c_str());
  EXPECT_NE(failure.find("partition_"), std::string::npos) << failure;
  // Space is back: every partition opens, the committed batches are whole, the failed one is
  // replayed by its id and lands exactly once.
  PartitionedDataRepository repo(test_config(dir, PartitionStrategy::kYearly));
  const int64_t after_failure = repo.count_all(schema_);
  EXPECT_GE(after_failure, int64_t{ok_batches} * 2000);
  EXPECT_LE(after_failure, int64_t{ok_batches + 1} * 2000);
  std::mt19937_64 rng(9);
  for (int b = 0; b <= ok_batches; ++b) {
    auto rows =
        random_wide_rows(rng, 2000, date_from_civil(2023, 1, 1), date_from_civil(2024, 12, 31));
    for (auto& r : rows) r.values[8] = Value(std::string(200, 'p'));
    BatchOptions o;
    o.batch_id = "b" + std::to_string(b);
    repo.create_batch(schema_, rows, o);
  }
  EXPECT_EQ(repo.count_all(schema_), int64_t{ok_batches + 1} * 2000);
  PartitionUtilities util(repo);
  EXPECT_EQ(util.health_report(schema_).errors, 0);
}

// The columnar intake tests blocks of rows for non-ASCII bytes before it validates one row at a
// time: a bad row far into a large batch — in a block of valid non-ASCII text or of ASCII only,
// its bad byte at the start, the middle or the end of texts of every length class the fast test
// reads differently — is still found and named, and invalid bytes under a NULL are ignored; the
// same batch without the bad row is stored.
TEST_F(ErrorsTest, TextThatIsNotUtf8IsFoundInAnyBlockOfALargeColumnarBatch) {
  std::mt19937_64 rng(9);
  const std::vector<DataRecord> rows =
      random_wide_rows(rng, 2000, date_from_civil(2023, 1, 1), date_from_civil(2023, 3, 31));
  ColumnBatch base = records_to_batch(schema_, rows);
  const std::string cafe = "caf\xc3\xa9 \xf0\x9d\x84\x9e";
  auto& names = std::get<std::vector<std::string>>(base.columns[8].data);
  for (std::size_t r = 0; r < names.size(); ++r) {  // non-ASCII in rows < 600 only
    names[r] = r < 600 && r % 97 == 0
                   ? cafe
                   : std::string(r % 41, static_cast<char>('a' + static_cast<int>(r % 26)));
  }
  base.columns[8].valid.resize(base.rows, 1);
  names[300] = "null \xff";  // invalid bytes under a NULL: never stored, not refused
  base.columns[8].valid[300] = 0;
  int64_t nulls = 0;  // NULL names: the batch's and the 20 rows written in SetUp
  int64_t cafes = 0;  // rows that hold the four-byte text
  for (std::size_t r = 0; r < base.rows; ++r) {
    nulls += base.columns[8].valid[r] ? 0 : 1;
    cafes += base.columns[8].valid[r] && names[r] == cafe ? 1 : 0;
  }
  for (const DataRecord& r : good_) nulls += r.values[8].is_null() ? 1 : 0;
  struct Bad {
    std::size_t at;
    std::string text;
    std::size_t byte;
  };
  const std::vector<Bad> bads = {
      {0, "0123456789abcdefgh\xe2\x28\xa1", 18},  // a block with valid non-ASCII text
      {255,
       "\xff"
       "abcdefghijklmnopqrstu",
       0},
      {256, "abcdefghijklmnopqrstuvwxyz\xc3", 26},
      {1000, "0123456789abcdefghijklmnopq\x80rstuvwxyz", 27},  // ASCII-only blocks from here
      {1500, "abcdefgh\xf5", 8},
      {1600, "abcd\xc0\xaf", 4},  // 4-7 bytes
      {1700, "abcde\x80", 5},
      {1800, "a\xff", 1},  // 1-3 bytes
      {1900,
       "a\xff"
       "b",
       1},
      {1999, "\xc3", 0},
      {1100,
       "\xff"
       "bcdefghi",
       0},  // caught only by the first word
      {1200,
       "\xff"
       "bcdef",
       0},  // only by the first 4 bytes
      {1300,
       "\xff"
       "bc",
       0}};  // only by the first byte
  for (const Bad& bad : bads) {
    SCOPED_TRACE(bad.at);
    ColumnBatch b = base;
    std::get<std::vector<std::string>>(b.columns[8].data)[bad.at] = bad.text;
    b.columns[8].valid[bad.at] = 1;
    EXPECT_THROW(check_batch(schema_, b), Error);
    expect_refused([&](IDataRepository& r) { r.create_batch_columnar(schema_, b); },
                   fmt::format("record {}: column 'name' (VARCHAR): the text is not valid UTF-8 "
                               "(byte {} of {} is 0x{:02x})",
                               bad.at, bad.byte, bad.text.size(),
                               static_cast<unsigned char>(bad.text[bad.byte])));
  }
  for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                static_cast<IDataRepository*>(parts_.get())}) {
    ColumnBatch b = base;
    repo->create_batch_columnar(schema_, b);
    EXPECT_EQ(repo->count_all(schema_), 2020);
    EXPECT_EQ(repo->count_all(schema_, filter("name", FilterOperator::kEq, Value(cafe))), cafes);
    EXPECT_GT(cafes, 2);
    EXPECT_EQ(repo->count_all(schema_, filter("name", FilterOperator::kIsNull)), nulls);
  }
  parts_->flush();
}

// A filter value or an id that is not valid UTF-8 can match no stored text: refused by both
// repositories with the filter, the column and the byte named (DuckDB said only "bind failed"),
// before any partition is pruned or opened, so the answer does not depend on which are.
TEST_F(ErrorsTest, FilterValuesAndIdsThatAreNotUtf8AreRefusedNamingTheByte) {
  const std::string bad = "ab\xff";
  const std::string named =
      "column 'name' (VARCHAR): the text is not valid UTF-8 (byte 2 of 3 is 0xff)";
  for (const FilterOperator op : {FilterOperator::kEq, FilterOperator::kNe, FilterOperator::kGt,
                                  FilterOperator::kLike, FilterOperator::kIn}) {
    expect_refused([&](IDataRepository& r) { r.get_all(schema_, filter("name", op, Value(bad))); },
                   "filter 1 (name " + std::string(operator_name(op)) + "): " + named);
    expect_refused(
        [&](IDataRepository& r) { r.count_all(schema_, filter("name", op, Value(bad))); }, named);
  }
  expect_refused(
      [&](IDataRepository& r) {
        DataQueryRequest q = filter("ts", FilterOperator::kGte, Value("2023-01-01"));
        QueryFilter in("name", FilterOperator::kIn);
        in.values = {Value("alpha"), Value(bad)};
        q.filters.push_back(in);
        r.stream_query_results(schema_, q);
      },
      "filter 2 (name in): " + named);

  // Ids: a VARCHAR id column, rows in three months of both stores.
  const Schema texts("texts", {{"id", "VARCHAR"}, {"ts", "TIMESTAMP"}, {"v", "BIGINT"}}, "ts",
                     "id");
  std::vector<DataRecord> rows;
  for (int m = 1; m <= 3; ++m) {
    rows.push_back(DataRecord{{Value("id-" + std::to_string(m)),
                               Value(Timestamp{to_timestamp(date_from_civil(2023, m, 2)).micros}),
                               Value(int64_t{m})}});
  }
  for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                static_cast<IDataRepository*>(parts_.get())}) {
    repo->create_batch(texts, rows);
    for (const std::string& id :
         {std::string("id-\xff"), std::string("\xc3"), std::string("id-1\xed\xa0\x80")}) {
      const Outcome o = error_of([&] { repo->get_by_id(texts, Value(id)); });
      EXPECT_EQ(o.code, ErrorCode::kInvalidArgument) << o.message;
      EXPECT_NE(o.message.find("get_by_id: column 'id' (VARCHAR): the text is not valid UTF-8"),
                std::string::npos)
          << o.message;
    }
    ASSERT_TRUE(repo->get_by_id(texts, Value("id-2")).has_value());
    EXPECT_EQ(repo->count_all(texts), 3);
  }
  parts_->flush();
}

// Values the stores append in a wider form (integers as BIGINT, FLOAT as DOUBLE, DECIMAL, HUGEINT
// and INTERVAL as text) that DuckDB would not cast to the column's type are refused at intake,
// naming the record, the column and the value, by the single file, the partitioned store writing
// directly and the partitioned store's write buffer alike. Before, the buffer accepted them and
// every later drain, flush and count failed ("type mismatch in AppendDataChunk"); the direct
// path failed without naming the record. Values at the edges of every range are stored, and read
// back the same from all three.
TEST_F(ErrorsTest, ValuesThatDoNotCastToTheirColumnAreRefusedAtIntakeByEveryWritePath) {
  const Schema schema("casts",
                      {{"id", "BIGINT"},
                       {"ts", "TIMESTAMP"},
                       {"tiny", "TINYINT"},
                       {"small", "SMALLINT"},
                       {"int", "INTEGER"},
                       {"u8", "UTINYINT"},
                       {"u16", "USMALLINT"},
                       {"u32", "UINTEGER"},
                       {"f", "FLOAT"},
                       {"price", "DECIMAL(6,2)"},
                       {"huge", "HUGEINT"},
                       {"span", "INTERVAL"}},
                      "ts", "id");
  PartitionConfig buffered = test_config(path("buffered"), PartitionStrategy::kMonthly);
  buffered.write_buffer_mb = 64;
  PartitionConfig direct = test_config(path("direct"), PartitionStrategy::kMonthly);
  direct.write_buffer_mb = 0;
  DuckDBDataRepository single(path("casts.duckdb"));
  PartitionedDataRepository parts_buffered(buffered), parts_direct(direct);
  const std::vector<IDataRepository*> repos = {&single, &parts_buffered, &parts_direct};

  // 300 good rows over three months, the edges of every range among them.
  const std::size_t n = 300;
  ColumnBatch good = make_column_batch(schema, n);
  good.rows = n;
  for (auto& c : good.columns) {
    std::visit([&](auto& v) { v.resize(n); }, c.data);
    c.valid.assign(n, 1);
  }
  auto ints = [&](std::size_t c) -> std::vector<int64_t>& {
    return std::get<std::vector<int64_t>>(good.columns[c].data);
  };
  auto texts = [&](std::size_t c) -> std::vector<std::string>& {
    return std::get<std::vector<std::string>>(good.columns[c].data);
  };
  auto& floats = std::get<std::vector<double>>(good.columns[8].data);
  const std::vector<std::pair<int64_t, int64_t>> ranges = {
      {INT8_MIN, INT8_MAX}, {INT16_MIN, INT16_MAX}, {INT32_MIN, INT32_MAX},
      {0, UINT8_MAX},       {0, UINT16_MAX},        {0, UINT32_MAX}};
  for (std::size_t r = 0; r < n; ++r) {
    ints(0)[r] = static_cast<int64_t>(r);
    ints(1)[r] = to_timestamp(date_from_civil(2023, 1 + static_cast<int>(r % 3),
                                              1 + static_cast<int>(r % 28)))
                     .micros;
    for (std::size_t k = 0; k < ranges.size(); ++k) {
      ints(2 + k)[r] = r % 3 == 0   ? ranges[k].first
                       : r % 3 == 1 ? ranges[k].second
                                    : static_cast<int64_t>(r % 100);
    }
    floats[r] = r % 4 == 0   ? static_cast<double>(std::numeric_limits<float>::max())
                : r % 4 == 1 ? -static_cast<double>(std::numeric_limits<float>::max())
                : r % 4 == 2 ? std::numeric_limits<double>::infinity()
                             : 1.5;
    texts(9)[r] = r % 3 == 0 ? "9999.99" : r % 3 == 1 ? "-9999.994" : " 12.5 ";
    texts(10)[r] = r % 2 ? "170141183460469231731687303715884105727" : "-42";
    texts(11)[r] = r % 2 ? "1 day 2 hours" : "00:00:01";
  }
  good.columns[9].valid[7] = 0;  // a NULL holding text that does not cast: never looked at
  texts(9)[7] = "not a number";

  struct Bad {
    std::size_t col;
    std::function<void(ColumnBatch&)> spoil;  // at row 250
    std::string message;
  };
  const std::size_t at = 250;
  auto set_int = [&](std::size_t c, int64_t v) {
    return
        [c, v, at](ColumnBatch& b) { std::get<std::vector<int64_t>>(b.columns[c].data)[at] = v; };
  };
  auto set_text = [&](std::size_t c, std::string v) {
    return [c, v, at](ColumnBatch& b) {
      std::get<std::vector<std::string>>(b.columns[c].data)[at] = v;
    };
  };
  const std::vector<Bad> bads = {
      {2, set_int(2, 128), "column 'tiny' (TINYINT): value 128 is out of range [-128, 127]"},
      {3, set_int(3, -32769),
       "column 'small' (SMALLINT): value -32769 is out of range [-32768, 32767]"},
      {4, set_int(4, int64_t{INT32_MAX} + 1),
       "column 'int' (INTEGER): value 2147483648 is out of range"},
      {5, set_int(5, -1), "column 'u8' (UTINYINT): value -1 is out of range [0, 255]"},
      {6, set_int(6, 65536), "column 'u16' (USMALLINT): value 65536 is out of range [0, 65535]"},
      {7, set_int(7, int64_t{UINT32_MAX} + 1),
       "column 'u32' (UINTEGER): value 4294967296 is out of range"},
      {8, [at](ColumnBatch& b) { std::get<std::vector<double>>(b.columns[8].data)[at] = -1e39; },
       "column 'f' (FLOAT): value -1e+39 is out of FLOAT's range"},
      {9, set_text(9, "10000.00"),
       "column 'price' (DECIMAL(6,2)): value '10000.00' does not cast to DECIMAL(6,2)"},
      {9, set_text(9, "1,5"),
       "column 'price' (DECIMAL(6,2)): value '1,5' does not cast to DECIMAL(6,2)"},
      {10, set_text(10, "170141183460469231731687303715884105728"),
       "column 'huge' (HUGEINT): value '170141183460469231731687303715884105728' does not cast to "
       "HUGEINT"},
      {11, set_text(11, "fortnight"),
       "column 'span' (INTERVAL): value 'fortnight' does not cast to INTERVAL: Could not convert "
       "string 'fortnight' to INTERVAL"},
      {11, set_text(11, "1 day\xff"),
       "column 'span' (INTERVAL): the text is not valid UTF-8 (byte 5 of 6 is 0xff)"},
      {9, set_text(9, "1.5\xc3"),
       "column 'price' (DECIMAL(6,2)): the text is not valid UTF-8 (byte 3 of 4 is 0xc3)"},
  };
  for (const Bad& bad : bads) {
    SCOPED_TRACE(bad.message);
    for (IDataRepository* repo : repos) {
      ColumnBatch b = good;
      bad.spoil(b);
      const Outcome o = error_of([&] { repo->create_batch_columnar(schema, b); });
      EXPECT_EQ(o.code, ErrorCode::kInvalidArgument) << o.message;
      EXPECT_NE(o.message.find("record 250: " + bad.message), std::string::npos) << o.message;
      EXPECT_EQ(o.message.find('\n'), std::string::npos) << "one line: " << o.message;
      EXPECT_EQ(repo->count_all(schema), 0) << "nothing may be written";
    }
  }
  // The record API takes the same path.
  {
    std::vector<DataRecord> recs = {batch_row(schema, good, 0)};
    recs[0].values[9] = Value("123456");
    for (IDataRepository* repo : repos) {
      const Outcome o = error_of([&] { repo->create_batch(schema, recs); });
      EXPECT_NE(
          o.message.find("record 0: column 'price' (DECIMAL(6,2)): value '123456' does not cast"),
          std::string::npos)
          << o.message;
      EXPECT_EQ(o.code, ErrorCode::kInvalidArgument) << o.message;
      EXPECT_EQ(repo->count_all(schema), 0);
    }
  }
  // A bad value deep into a batch larger than one trial append (131,072 rows) is found and named.
  {
    const std::size_t big = 140000;
    ColumnBatch b = make_column_batch(schema, big);
    b.rows = big;
    for (std::size_t c = 0; c < schema.columns().size(); ++c) {
      std::visit([&](auto& v) { v.resize(big); }, b.columns[c].data);
    }
    auto& prices = std::get<std::vector<std::string>>(b.columns[9].data);
    auto& hugs = std::get<std::vector<std::string>>(b.columns[10].data);
    auto& spans = std::get<std::vector<std::string>>(b.columns[11].data);
    for (std::size_t r = 0; r < big; ++r) {
      prices[r] = std::to_string(r % 9999) + ".5";
      hugs[r] = std::to_string(r);
      spans[r] = "1 day";
    }
    EXPECT_NO_THROW(duck::check_casts(schema, b));
    prices[139998] = "1e9";
    const Outcome o = error_of([&] { duck::check_casts(schema, b); });
    EXPECT_NE(o.message.find("record 139998: column 'price' (DECIMAL(6,2)): value '1e9' does not "
                             "cast to DECIMAL(6,2)"),
              std::string::npos)
        << o.message;
  }
  for (IDataRepository* repo : repos) repo->create_batch_columnar(schema, good);
  parts_buffered.flush();
  DataQueryRequest all;
  all.sort = {{"id", SortDirection::kAsc}};
  const PaginatedResponse expected = single.get_all(schema, all);
  ASSERT_EQ(expected.items.size(), n);
  EXPECT_TRUE(expected.items[7].values[9].is_null());
  EXPECT_EQ(expected.items[0].values[3].to_string(), "-32768");
  for (PartitionedDataRepository* repo : {&parts_buffered, &parts_direct}) {
    const PaginatedResponse got = repo->get_all(schema, all);
    ASSERT_EQ(got.items.size(), n);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t c = 0; c < schema.columns().size(); ++c) {
        EXPECT_EQ(got.items[r].values[c].to_string(), expected.items[r].values[c].to_string())
            << "row " << r << " column " << schema.columns()[c].name;
      }
    }
  }
}

// A batch with several bad records is refused naming its first one, whichever check refuses
// each (the checks without DuckDB used to run before DuckDB's casts, column by column, so a later
// record could be named), on every write path.
TEST_F(ErrorsTest, TheFirstBadRecordOfABatchIsNamedWhicheverCheckRefusesIt) {
  const Schema schema("first_bad",
                      {{"id", "BIGINT"},
                       {"ts", "TIMESTAMP"},
                       {"tiny", "TINYINT"},
                       {"price", "DECIMAL(6,2)"},
                       {"name", "VARCHAR"},
                       {"f", "FLOAT"}},
                      "ts", "id");
  PartitionConfig buffered = test_config(path("buffered"), PartitionStrategy::kMonthly);
  buffered.write_buffer_mb = 64;
  PartitionConfig direct = test_config(path("direct"), PartitionStrategy::kMonthly);
  direct.write_buffer_mb = 0;
  DuckDBDataRepository single(path("first_bad.duckdb"));
  PartitionedDataRepository parts_buffered(buffered), parts_direct(direct);
  const std::vector<IDataRepository*> repos = {&single, &parts_buffered, &parts_direct};

  const std::size_t n = 200;
  ColumnBatch good = make_column_batch(schema, n);
  good.rows = n;
  for (auto& c : good.columns) {
    std::visit([&](auto& v) { v.resize(n); }, c.data);
    c.valid.assign(n, 1);
  }
  auto ints = [](ColumnBatch& b, std::size_t c) -> std::vector<int64_t>& {
    return std::get<std::vector<int64_t>>(b.columns[c].data);
  };
  auto texts = [](ColumnBatch& b, std::size_t c) -> std::vector<std::string>& {
    return std::get<std::vector<std::string>>(b.columns[c].data);
  };
  for (std::size_t r = 0; r < n; ++r) {
    ints(good, 0)[r] = static_cast<int64_t>(r);
    ints(good, 1)[r] =
        to_timestamp(date_from_civil(2023, 1 + static_cast<unsigned>(r % 3), 1)).micros;
    ints(good, 2)[r] = static_cast<int64_t>(r % 100);
    texts(good, 3)[r] = "12.50";
    texts(good, 4)[r] = "well " + std::to_string(r);
    std::get<std::vector<double>>(good.columns[5].data)[r] = 0.5;
  }
  struct Bad {
    std::function<void(ColumnBatch&, std::size_t)> spoil;
    std::string message;  // after "record N: "
  };
  const std::vector<Bad> bads = {
      {[&](ColumnBatch& b, std::size_t r) { texts(b, 3)[r] = "1e9"; },
       "column 'price' (DECIMAL(6,2)): value '1e9' does not cast"},
      {[&](ColumnBatch& b, std::size_t r) { texts(b, 4)[r] = "w\xffll"; },
       "column 'name' (VARCHAR): the text is not valid UTF-8"},
      {[&](ColumnBatch& b, std::size_t r) { ints(b, 2)[r] = 300; },
       "column 'tiny' (TINYINT): value 300 is out of range"},
      {[&](ColumnBatch& b, std::size_t r) {
         std::get<std::vector<double>>(b.columns[5].data)[r] = 1e300;
       },
       "column 'f' (FLOAT): value 1e+300 is out of FLOAT's range"},
      {[&](ColumnBatch& b, std::size_t r) { b.columns[1].valid[r] = 0; },
       "partition column 'ts' is NULL"},
      {[&](ColumnBatch& b, std::size_t r) {
         ints(b, 1)[r] = to_timestamp(date_from_civil(10000, 2, 3)).micros;
       },
       "partition column 'ts' value"},
      {[&](ColumnBatch& b, std::size_t r) {
         ints(b, 1)[r] = to_timestamp(date_from_civil(0, 12, 31)).micros + 1;
       },
       "partition column 'ts' value"},
  };
  for (std::size_t x = 0; x < bads.size(); ++x) {
    for (std::size_t y = 0; y < bads.size(); ++y) {
      if (x == y) continue;
      SCOPED_TRACE(bads[x].message + " at 40, then " + bads[y].message + " at 120");
      ColumnBatch b = good;
      bads[y].spoil(b, 120);
      bads[x].spoil(b, 40);
      for (IDataRepository* repo : repos) {
        const Outcome o = error_of([&] { repo->create_batch_columnar(schema, b); });
        EXPECT_EQ(o.code, ErrorCode::kInvalidArgument) << o.message;
        EXPECT_EQ(o.message.find("record 40: " + bads[x].message), 0U) << o.message;
        EXPECT_EQ(repo->count_all(schema), 0) << "nothing may be written";
      }
    }
  }
  // The years' edges are kept, and both stores hold the same rows.
  ColumnBatch edges = good;
  ints(edges, 1)[0] = to_timestamp(date_from_civil(1, 1, 1)).micros;
  ints(edges, 1)[1] = to_timestamp(date_from_civil(10000, 1, 1)).micros - 1;
  for (IDataRepository* repo : repos) {
    repo->create_batch_columnar(schema, edges);
    EXPECT_EQ(repo->count_all(schema), static_cast<int64_t>(n));
  }
  parts_buffered.flush();
  DataQueryRequest first_two;
  first_two.sort = {{"id", SortDirection::kAsc}};
  first_two.limit = 2;
  for (IDataRepository* repo : repos) {
    const PaginatedResponse got = repo->get_all(schema, first_two);
    ASSERT_EQ(got.items.size(), 2U);
    EXPECT_EQ(got.items[0].values[1].to_string(), "0001-01-01 00:00:00");
    EXPECT_EQ(got.items[1].values[1].to_string(), "9999-12-31 23:59:59.999999");
  }
}

}  // namespace
}  // namespace duckpart::testing

namespace duckpart::testing {
namespace {

// Text that is not UTF-8 is refused before anything is written or buffered, naming the record and
// the column (the partitioned store used to buffer it, and then every drain, flush and count
// failed on it); valid text of one- to four-byte characters is kept as given.
TEST_F(ErrorsTest, TextThatIsNotUtf8IsRefusedBeforeItIsBufferedAndTheStoreStaysWritable) {
  for (const std::string& bad :
       {std::string("ab\xff"), std::string("\xc0\xaf"), std::string("\xed\xa0\x80"),
        std::string("\xf4\x90\x80\x80"), std::string("caf\xc3"), std::string("\x80"),
        std::string("0123456789abcdef\xe2\x82")}) {
    SCOPED_TRACE(Value(bad).to_string().size());
    expect_refused([&](IDataRepository& r) { r.create_batch(schema_, batch_with(8, Value(bad))); },
                   "record 5: column 'name' (VARCHAR): the text is not valid UTF-8");
  }
  parts_->flush();
  const std::string good = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e 0123456789";
  for (IDataRepository* repo : {static_cast<IDataRepository*>(single_.get()),
                                static_cast<IDataRepository*>(parts_.get())}) {
    repo->create_batch(schema_, batch_with(8, Value(good)));
    EXPECT_EQ(repo->count_all(schema_), 26);
    auto page = repo->get_all(schema_, filter("name", FilterOperator::kEq, Value(good)));
    ASSERT_EQ(page.items.size(), 1U);
  }
  parts_->flush();
}

}  // namespace
}  // namespace duckpart::testing
