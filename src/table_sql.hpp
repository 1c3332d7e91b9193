// DDL of data tables. Private header.
#pragma once

#include <string>

#include "duck/duck.hpp"
#include "duckpart/schema.hpp"

namespace duckpart {

// CREATE TABLE [IF NOT EXISTS] [<catalog>.]main.<table> (empty catalog: the default database)
// (<columns>): types verbatim, no key or index (they slow bulk loads several-fold; uniqueness of
// ids comes from how ids are made).
inline std::string create_table_sql(const std::string& catalog, const Schema& schema,
                                    bool if_not_exists) {
  std::string sql = "CREATE TABLE ";
  if (if_not_exists) sql += "IF NOT EXISTS ";
  if (!catalog.empty()) sql += duck::quote_ident(catalog) + ".";
  sql += "main." + duck::quote_ident(schema.name()) + " (";
  bool first = true;
  for (const auto& c : schema.columns()) {
    if (!first) sql += ", ";
    first = false;
    sql += duck::quote_ident(c.name) + " " + c.sql_type;
  }
  return sql + ")";
}

}  // namespace duckpart
