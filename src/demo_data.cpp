#include "duckpart/demo_data.hpp"

#include <fmt/format.h>

#include <filesystem>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"
#include "duckpart/schema.hpp"
#include "table_sql.hpp"

namespace duckpart {

int64_t generate_well_production(const std::string& database_path, const DemoDataOptions& o) {
  if (o.rows < 0 || o.months < 1 || o.first_year < 1 || o.first_year > 9000) {
    throw Error(ErrorCode::kInvalidArgument, "generate_well_production: invalid options");
  }
  const auto parent = std::filesystem::path(database_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  duck::Database db = duck::Database::open(database_path);
  duck::Connection c = db.connect();
  const Schema layout = Schema::well_production();
  const Schema schema(o.table, layout.columns(), layout.partition_column(), layout.id_column());
  const std::string t = duck::quote_ident(o.table);
  c.exec(fmt::format("DROP TABLE IF EXISTS main.{}", t), database_path);
  c.exec(create_table_sql("", schema, false), database_path);
  // Every value is a hash of (row number, seed, column): deterministic whatever the thread count.
  const uint64_t s = o.seed;
  c.exec(fmt::format(R"(
    INSERT INTO main.{t}
    SELECT
      (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a' ||
       substr(h, 18, 3) || '-' || substr(h, 21, 12))::UUID,
      'API-' || lpad((hash(i, {s}, 1) % 20000)::VARCHAR, 5, '0'),
      (DATE '{y:04d}-01-01' + to_months((hash(i, {s}, 2) % {m})::INTEGER))::DATE,
      round((hash(i, {s}, 3) % 500000) / 100.0, 2),
      round((hash(i, {s}, 4) % 2000000) / 100.0, 2),
      round((hash(i, {s}, 5) % 800000) / 100.0, 2),
      (1 + hash(i, {s}, 6) % 31)::INTEGER,
      ['Apex Energy', 'Basin Oil', 'Cedar Resources', 'Delta Petroleum', 'Eagle Ford Co',
       'Frontier Gas', 'Granite Wells', 'Horizon E&P', 'Iron Creek', 'Juniper Oil',
       'Keystone Energy', 'Lone Star Gas'][(1 + hash(i, {s}, 7) % 12)::INTEGER],
      ['TX', 'ND', 'NM', 'OK', 'CO', 'WY'][(1 + hash(i, {s}, 8) % 6)::INTEGER],
      ((hash(i, {s}, 9) % 6400) / 100.0)::DECIMAL(6,2),
      hash(i, {s}, 10) % 10 <> 0
    FROM (SELECT i, md5(i::VARCHAR || '/' || '{s}') AS h FROM range({n}) r(i))
  )",
                     fmt::arg("t", t), fmt::arg("s", s), fmt::arg("y", o.first_year),
                     fmt::arg("m", o.months), fmt::arg("n", o.rows)),
         database_path);
  c.exec("CHECKPOINT", database_path);
  return c.query_int(fmt::format("SELECT count(*) FROM main.{}", t));
}

}  // namespace duckpart
