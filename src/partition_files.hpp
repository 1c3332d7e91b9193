// Partition files on disk: stamps, the metadata table inside each file, the catalog. Private
// header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "duckpart/period.hpp"
#include "duckpart/schema.hpp"
#include "duckpart/value.hpp"

namespace duckpart {

inline constexpr int kPartitionFormatVersion = 1;
inline constexpr const char* kMetaTable = "_duckpart_meta";
inline constexpr const char* kBatchesTable = "_duckpart_batches";
inline constexpr const char* kCatalogFile = "_catalog.json";
inline constexpr const char* kIdIndexDir = "_ids";
// Suffix of a partition file while it is being created (renamed into place once initialised).
inline constexpr const char* kCreatingSuffix = ".creating";
// An empty partition file of the table, made once per store and process under this name (plus
// kCreatingSuffix) and copied to create partitions; deleted once read.
inline constexpr const char* kTemplateFile = "_template.duckdb";
// Batch ids a re-partitioning (migrate --from-partitions) records in the partitions it writes:
// its own copy batches ("repartition:<old partition>-<first>-<end>"), and in a new partition that
// received rows of batches whose ids it could not carry (held by only some of the merged periods)
// one marker of those rows ("merged: ..."), so that `migrate`'s catch-up still sees that
// something other than a migration wrote there. Copy batches of versions before session 46
// ("repartition-...") came without markers: they stay a sign of others' writes.
inline constexpr const char* kRepartitionBatchPrefix = "repartition:";
inline constexpr const char* kUnmarkedRepartitionBatchPrefix = "repartition-";
inline constexpr const char* kMergedBatchesPrefix = "merged: ";
// A migration's commit groups and catch-up copies (src/migrator.cpp).
inline constexpr const char* kMigrateBatchPrefix = "migrate:";
inline constexpr const char* kCatchupBatchPrefix = "migrate-catchup:";
// Ingest logs of buffered writes: <table dir>/_ingest_<drain id>.log (src/ingest_log.hpp).
inline constexpr const char* kIngestPrefix = "_ingest_";

// Size and modification time of a partition file and its write-ahead log: if both are unchanged
// since the catalog recorded them, the catalog's copy of the file's metadata is current.
struct FileStamp {
  int64_t size = -1;
  int64_t mtime_ns = 0;
  int64_t wal_size = -1;
  int64_t wal_mtime_ns = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};
FileStamp stamp_of(const std::string& path);
// The stamp of file `name` in the directory open as `dir_fd`; the write-ahead log is looked at
// only when `wal_may_exist` (a directory listing just showed whether there is one).
FileStamp stamp_in(int dir_fd, const std::string& name, bool wal_may_exist);
// Names of the regular files (or links to them) in the directory open as `dir_fd` (`dir` names it
// in errors), sorted. Throws Error(kIo).
std::vector<std::string> list_regular_files(int dir_fd, const std::string& dir);

// A partition's metadata, as stored in its file's _duckpart_meta table and cached in the catalog.
struct PartitionMeta {
  int64_t row_count = 0;
  std::optional<int64_t> min_value;  // partition column, microseconds
  std::optional<int64_t> max_value;
  Value min_id;  // id column (text or BIGINT); NULL when no rows or no id column
  Value max_id;
  int64_t commit_version = 0;
};

// DDL creating the metadata tables in catalog `alias` and the INSERT of the initial row
// (parameters: none; values are spliced as validated literals of our own making).
std::vector<std::string> partition_init_sql(const std::string& alias, const Schema& schema,
                                            PartitionStrategy strategy, const PartitionKey& key);

// One catalog entry.
struct CatalogEntry {
  std::string file_name;
  PartitionMeta meta;
  FileStamp stamp;
};
struct Catalog {
  std::string schema_json;
  std::string strategy;
  std::vector<CatalogEntry> entries;
};
// XXH3-128 of a whole file as 32 hex digits (backups and their manifests). Throws Error(kIo).
std::string file_checksum_xxh3(const std::string& path);

// The block size a DuckDB database file was written with, from its newer valid header (bytes 4096
// and 8192: checksum, iteration, meta block, free list, block count, block allocation size);
// nullopt when the file cannot be read or is not a DuckDB file. Reads 96 bytes, opens no database.
std::optional<uint64_t> duckdb_file_block_size(const std::string& path);

// Reads <dir>/_catalog.json; nullopt when missing or unreadable (it is only a cache).
std::optional<Catalog> read_catalog(const std::string& dir, const Schema* schema);
// Writes it atomically (temp file, fsync, rename, fsync directory). Throws Error(kIo).
void write_catalog(const std::string& dir, const Catalog& catalog, const Schema& schema);

}  // namespace duckpart
