// The one place that uses DuckDB's C++ headers (third_party/duckdb/internal/include, the same
// release as libduckdb.so): opening an instance without its linked extensions and loading them
// later. See duckdb_internal.hpp and docs/architecture.md, "Cold opens".
#include "duck/duckdb_internal.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

#include "duckdb/main/capi/capi_internal.hpp"
#include "duckdb/main/config.hpp"
#include "duckdb/main/database.hpp"
#include "duckdb/main/extension_helper.hpp"

namespace duckpart::duck::internal {

namespace {

// The release whose headers are compiled in (tools/duckdb: `PRAGMA version` of libduckdb.so from
// @duckdb/node-bindings-linux-x64 1.4.4-r.4 and src/function/table/version/pragma_version.cpp of
// the duckdb 1.4.4 package both say v1.4.4, 6ddac802ff).
constexpr const char* kVersion = "v1.4.4";
constexpr const char* kSourceId = "6ddac802ff";

// A bool field read without assuming it holds 0 or 1.
unsigned char byte_of(const bool& field) noexcept {
  unsigned char b = 0;
  std::memcpy(&b, &field, 1);
  return b;
}

}  // namespace

bool library_matches_headers() noexcept {
  try {
    return std::strcmp(duckdb_library_version(), kVersion) == 0 &&
           std::strcmp(duckdb::DuckDB::SourceID(), kSourceId) == 0;
  } catch (...) {
    return false;
  }
}

bool defer_linked_extensions(duckdb_config cfg) noexcept {
  if (cfg == nullptr || !library_matches_headers()) return false;
  const char* env = std::getenv("DUCKPART_DUCKDB_EXTENSIONS");
  if (env != nullptr && std::strcmp(env, "at-open") == 0) return false;
  auto* config = reinterpret_cast<duckdb::DBConfig*>(cfg);
  auto& o = config->options;
  // The fields around `load_extensions` must read as the C API set them; a layout that differs
  // from the headers' would not, and then nothing is written.
  if (duckdb_set_config(cfg, "checkpoint_threshold", "7MiB") != DuckDBSuccess) return false;
  const bool layout_ok = o.checkpoint_wal_size == (idx_t{7} << 20) &&
                         byte_of(o.use_direct_io) == 0 && byte_of(o.load_extensions) == 1 &&
                         byte_of(o.autoload_known_extensions) == 0 &&
                         byte_of(o.autoinstall_known_extensions) == 0;
  if (duckdb_set_config(cfg, "checkpoint_threshold", "16MiB") != DuckDBSuccess ||
      o.checkpoint_wal_size != (idx_t{1} << 24) || !layout_ok) {
    return false;
  }
  o.load_extensions = false;
  return true;
}

void load_linked_extensions(duckdb_database db) {
  auto* wrapper = reinterpret_cast<duckdb::DatabaseWrapper*>(db);
  duckdb::ExtensionHelper::LoadAllExtensions(*wrapper->database);
}

}  // namespace duckpart::duck::internal
