#include "duck/duck.hpp"
#include "test_util.hpp"

namespace duckpart::testing {
namespace {

class SchemaTest : public TempDirTest {};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(SchemaTest, IntrospectsAnyTableWithATemporalColumn) {
  {
    duck::Database db = duck::Database::open(path("src.duckdb"));
    duck::Connection c = db.connect();
    c.exec(
        "CREATE TABLE readings (sensor_id BIGINT, taken_at TIMESTAMP, value DECIMAL(18,4), "
        "ok BOOLEAN, tag VARCHAR, u UUID, t TINYINT, f FLOAT, h HUGEINT, iv INTERVAL, l "
        "INTEGER[])");
  }
  const Schema s = introspect_schema(path("src.duckdb"), "readings", "taken_at");
  EXPECT_EQ(s.columns().size(), 11u);
  EXPECT_EQ(s.partition_column(), "taken_at");
  EXPECT_FALSE(s.id_column().has_value());
  EXPECT_EQ(s.columns()[2].type, ColumnType::kDecimal);
  EXPECT_EQ(s.columns()[2].sql_type, "DECIMAL(18,4)");
  EXPECT_EQ(s.columns()[5].type, ColumnType::kUuid);
  EXPECT_EQ(s.columns()[9].type, ColumnType::kOther);
  EXPECT_EQ(s.columns()[10].type, ColumnType::kOther);
  const Schema with_id = introspect_schema(path("src.duckdb"), "readings", "taken_at", "sensor_id");
  EXPECT_EQ(with_id.id_column().value(), "sensor_id");
  EXPECT_NE(error_of([&] {
              introspect_schema(path("src.duckdb"), "nope", "taken_at");
            }).find("table 'nope' does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              introspect_schema(path("src.duckdb"), "readings", "tag");
            }).find("must be DATE or TIMESTAMP"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              introspect_schema(path("missing.duckdb"), "readings", "taken_at");
            }).find("missing.duckdb"),
            std::string::npos);
}

TEST_F(SchemaTest, WellProductionDemoSchema) {
  const Schema s = Schema::well_production();
  EXPECT_EQ(s.name(), "well_production");
  EXPECT_EQ(s.partition_column(), "production_period");
  EXPECT_EQ(*s.id_column(), "id");
  EXPECT_TRUE(s.same_layout(Schema::from_json(s.to_json())));
}

TEST_F(SchemaTest, RejectsBadDeclarations) {
  auto make = [](std::vector<Column> cols, std::string p,
                 std::optional<std::string> id = std::nullopt) {
    return error_of([&] { Schema("t", cols, p, id); });
  };
  EXPECT_NE(make({{"a", "DATE"}, {"A", "INTEGER"}}, "a").find("two columns named"),
            std::string::npos);
  EXPECT_NE(make({{"a", "DATE"}}, "b").find("partition column 'b' is not a column"),
            std::string::npos);
  EXPECT_NE(make({{"a", "VARCHAR"}}, "a").find("must be DATE or TIMESTAMP"), std::string::npos);
  EXPECT_NE(make({{"a", "TIMESTAMPTZ"}}, "a").find("must be DATE or TIMESTAMP"), std::string::npos);
  EXPECT_NE(
      make({{"a", "DATE"}, {"b", "DOUBLE"}}, "a", "b").find("must be UUID, VARCHAR or BIGINT"),
      std::string::npos);
  EXPECT_NE(
      make({{"a", "DATE"}, {"b", "INTEGER); DROP TABLE x; --"}}, "a").find("invalid column type"),
      std::string::npos);
  // Quoted text in a type must close; outside quotes the same characters as before.
  for (const char* bad : {"ENUM('a', 'b)", "ENUM('a'); DROP TABLE x; --", "STRUCT(\"a INT)",
                          "ENUM('it''s)", "ENUM(E'\\'')); DROP TABLE x; --')"}) {
    EXPECT_NE(make({{"a", "DATE"}, {"b", bad}}, "a").find("invalid column type"), std::string::npos)
        << bad;
  }
  for (const char* good : {"ENUM('sad', 'ok', 'it''s; fine')", "STRUCT(\"odd name;\" INTEGER)",
                           "DECIMAL(18, 3)", "INTEGER[]", "MAP(VARCHAR, INTEGER)"}) {
    EXPECT_EQ(make({{"a", "DATE"}, {"b", good}}, "a"), "") << good;
  }
  EXPECT_NE(make({{"a", "DATE"}, {"", "INTEGER"}}, "a").find("empty column name"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Schema("../evil", {{"a", "DATE"}}, "a");
            }).find("directory name"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Schema("_x", {{"a", "DATE"}}, "a");
            }).find("directory name"),
            std::string::npos);
  // Odd but legal names are fine: they are quoted, never spliced.
  EXPECT_NO_THROW(
      Schema("weird \"name\"", {{"a b\"; DROP TABLE t; --", "DATE"}}, "a b\"; DROP TABLE t; --"));
}

TEST_F(SchemaTest, TomlDeclaration) {
  const Schema s = parse_schema_toml(R"(
name = "well_production"
partition_column = "production_period"
id_column = "id"
columns = [ { name = "id", type = "UUID" }, { name = "production_period", type = "DATE" },
            { name = "oil", type = "DOUBLE" } ]
)",
                                     "schema.toml");
  EXPECT_EQ(s.columns().size(), 3u);
  EXPECT_EQ(*s.id_column(), "id");
  EXPECT_NE(error_of([] { parse_schema_toml("name = \"x\"\n", "s.toml"); }).find("s.toml"),
            std::string::npos);
}

}  // namespace
}  // namespace duckpart::testing
