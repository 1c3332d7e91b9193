#include "sql_stream.hpp"

#include <fmt/format.h>

namespace duckpart {
namespace {

const char* statement_kind(duckdb_statement_type t) {
  switch (t) {
    case DUCKDB_STATEMENT_TYPE_SELECT:
      return "SELECT";
    case DUCKDB_STATEMENT_TYPE_INSERT:
      return "INSERT";
    case DUCKDB_STATEMENT_TYPE_UPDATE:
      return "UPDATE";
    case DUCKDB_STATEMENT_TYPE_DELETE:
      return "DELETE";
    case DUCKDB_STATEMENT_TYPE_CREATE:
      return "CREATE";
    case DUCKDB_STATEMENT_TYPE_DROP:
      return "DROP";
    case DUCKDB_STATEMENT_TYPE_ALTER:
      return "ALTER";
    case DUCKDB_STATEMENT_TYPE_COPY:
      return "COPY";
    case DUCKDB_STATEMENT_TYPE_EXPLAIN:
      return "EXPLAIN";
    case DUCKDB_STATEMENT_TYPE_ATTACH:
      return "ATTACH";
    case DUCKDB_STATEMENT_TYPE_DETACH:
      return "DETACH";
    case DUCKDB_STATEMENT_TYPE_SET:
      return "SET";
    case DUCKDB_STATEMENT_TYPE_PRAGMA:
      return "PRAGMA";
    case DUCKDB_STATEMENT_TYPE_TRANSACTION:
      return "transaction";
    case DUCKDB_STATEMENT_TYPE_CALL:
      return "CALL";
    case DUCKDB_STATEMENT_TYPE_EXPORT:
      return "EXPORT";
    case DUCKDB_STATEMENT_TYPE_LOAD:
      return "LOAD";
    default:
      return "non-SELECT";
  }
}

}  // namespace

std::string strip_statement_end(const std::string& sql) {
  std::size_t end = sql.size();
  while (end > 0 &&
         (sql[end - 1] == ';' || std::isspace(static_cast<unsigned char>(sql[end - 1])))) {
    --end;
  }
  return sql.substr(0, end);
}

duck::Prepared prepare_read_only(duck::Connection& conn, const std::string& sql) {
  duck::Prepared p = conn.prepare_single(sql, "SQL statement");
  if (p.statement_type() != DUCKDB_STATEMENT_TYPE_SELECT) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("only read-only SELECT statements are accepted, this is a {} "
                            "statement; change data through the repository API or "
                            "manage_partitions commands",
                            statement_kind(p.statement_type())));
  }
  return p;
}

std::string decodable_sql(const duck::Prepared& prepared, const std::string& sql) {
  const std::vector<duckdb_type> types = prepared.column_types();
  bool all = true;
  for (duckdb_type t : types) all = all && duck::ChunkDecoder::can_decode(t);
  if (all) return sql;
  std::string out = "SELECT ";
  for (std::size_t i = 0; i < types.size(); ++i) {
    if (i) out += ", ";
    const std::string name = prepared.column_name(i);
    if (duck::ChunkDecoder::can_decode(types[i])) {
      out += fmt::format("#{} AS {}", i + 1, duck::quote_ident(name));
    } else {
      out += fmt::format("CAST(#{} AS VARCHAR) AS {}", i + 1, duck::quote_ident(name));
    }
  }
  // The newline ends a trailing -- comment of the user's statement.
  return out + " FROM (" + strip_statement_end(sql) + "\n)";
}

}  // namespace duckpart
