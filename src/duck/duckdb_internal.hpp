// What duckpart does through DuckDB's C++ internals, behind plain functions (private header; only
// src/duck/duckdb_internal.cpp includes DuckDB's C++ headers).
//
// DuckDB opens every instance by loading the extensions linked into libduckdb.so (core_functions,
// icu, json, parquet, autocomplete): ~13 ms of the ~25 ms a fresh process spends in duckdb_open on
// 2 cores. The C API has no setting for it; DBConfigOptions::load_extensions is the switch.
#pragma once

#include <duckdb.h>

#include <optional>
#include <string>
#include <vector>

namespace duckpart::duck::internal {

// The loaded libduckdb.so is the release whose headers duckpart was compiled with (version and
// source id).
bool library_matches_headers() noexcept;

// Makes `cfg` open an instance without loading the linked extensions. Does nothing and returns
// false when the library is not the headers' release, when DUCKPART_DUCKDB_EXTENSIONS=at-open, or
// when the fields around the switch do not read back as the C API set them (a different layout).
// Leaves checkpoint_threshold at DuckDB's default; callers apply their own settings after.
bool defer_linked_extensions(duckdb_config cfg) noexcept;

// Loads every linked extension into `db` (what duckdb_open would have done); idempotent, safe
// while other connections run. Throws std::exception on failure.
void load_linked_extensions(duckdb_database db);

// What column_terms finds in a statement.
struct ColumnTerms {
  std::string range_name;          // what the statement calls the table: its alias, else its name
  std::vector<std::string> terms;  // each term, as DuckDB renders it
};

// For `sql` that is one plain SELECT whose FROM is `table` alone (unqualified, no column aliases,
// no AT clause) and that has no WITH clause: the top-level AND terms of its WHERE clause that
// compare `column` with constants: `column OP constant`, `constant OP column` (OP one of =, <, <=,
// >, >=) and `column BETWEEN constant AND constant`, where a constant is a literal or casts of one
// to VARCHAR, DATE or a TIMESTAMP type without time zone (column: unqualified or qualified by the
// range name; names compare case-insensitively, as DuckDB binds them). Each such term keeps exactly
// the rows whose `column` lies in one interval. nullopt for any other statement, one that does not
// parse, or a library that is not the headers' release.
std::optional<ColumnTerms> column_terms(const std::string& sql, const std::string& table,
                                        const std::string& column) noexcept;

// `sql` as DuckDB renders it after taking out of its WHERE clause the terms column_terms lists at
// the positions where `drop` is true (same arguments, same order); nullopt when column_terms gives
// nullopt, `drop` does not match its terms, or the rendered text does not parse back to the same
// statement (constants compared with their types).
std::optional<std::string> without_terms(const std::string& sql, const std::string& table,
                                         const std::string& column,
                                         const std::vector<bool>& drop) noexcept;

}  // namespace duckpart::duck::internal
