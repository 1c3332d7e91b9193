// What duckpart does through DuckDB's C++ internals, behind plain functions (private header; only
// src/duck/duckdb_internal.cpp includes DuckDB's C++ headers).
//
// DuckDB opens every instance by loading the extensions linked into libduckdb.so (core_functions,
// icu, json, parquet, autocomplete): ~13 ms of the ~25 ms a fresh process spends in duckdb_open on
// 2 cores. The C API has no setting for it; DBConfigOptions::load_extensions is the switch.
#pragma once

#include <duckdb.h>

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

}  // namespace duckpart::duck::internal
