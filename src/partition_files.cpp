#include "partition_files.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"

namespace duckpart {

std::string file_checksum_xxh3(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kIo, fmt::format("cannot read '{}'", path));
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) XXH3_128bits_update(st, buf.data(), static_cast<size_t>(in.gcount()));
  }
  const XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

FileStamp stamp_of(const std::string& path) {
  FileStamp s;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    s.size = st.st_size;
    s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  }
  const std::string wal = path + ".wal";
  if (::stat(wal.c_str(), &st) == 0) {
    s.wal_size = st.st_size;
    s.wal_mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  }
  return s;
}

std::vector<std::string> partition_init_sql(const std::string& alias, const Schema& schema,
                                            PartitionStrategy strategy, const PartitionKey& key) {
  const std::string a = duck::quote_ident(alias);
  std::string start = "NULL", end = "NULL";
  if (!key.is_null) {
    start = duck::quote_literal(format_date(key.start())) + "::TIMESTAMP";
    end = duck::quote_literal(format_date(key.end())) + "::TIMESTAMP";
  }
  return {
      fmt::format(
          "CREATE TABLE {}.main.{} (format_version INTEGER, schema_name VARCHAR, "
          "schema_json VARCHAR, strategy VARCHAR, period VARCHAR, range_start TIMESTAMP, "
          "range_end TIMESTAMP, row_count BIGINT, min_value TIMESTAMP, max_value TIMESTAMP, "
          "min_id VARCHAR, max_id VARCHAR, commit_version BIGINT, created_at TIMESTAMP, "
          "updated_at TIMESTAMP)",
          a, kMetaTable),
      fmt::format("CREATE TABLE {}.main.{} (batch_id VARCHAR, row_count BIGINT, committed_at "
                  "TIMESTAMP)",
                  a, kBatchesTable),
      fmt::format("INSERT INTO {}.main.{} VALUES ({}, {}, {}, {}, {}, {}, {}, 0, NULL, NULL, NULL, "
                  "NULL, 0, now()::TIMESTAMP, now()::TIMESTAMP)",
                  a, kMetaTable, kPartitionFormatVersion, duck::quote_literal(schema.name()),
                  duck::quote_literal(schema.to_json()),
                  duck::quote_literal(strategy_name(strategy)), duck::quote_literal(key.label()),
                  start, end),
  };
}

namespace {

nlohmann::json value_json(const Value& v) {
  if (v.is<int64_t>()) return v.get<int64_t>();
  if (v.is<std::string>()) return v.get<std::string>();
  return nullptr;
}
Value json_value(const nlohmann::json& j) {
  if (j.is_number_integer()) return Value(j.get<int64_t>());
  if (j.is_string()) return Value(j.get<std::string>());
  return Value{};
}
nlohmann::json opt_json(const std::optional<int64_t>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json();
}
std::optional<int64_t> json_opt(const nlohmann::json& j) {
  if (j.is_number_integer()) return j.get<int64_t>();
  return std::nullopt;
}

}  // namespace

std::optional<Catalog> read_catalog(const std::string& dir, const Schema*) {
  std::ifstream in(dir + "/" + kCatalogFile, std::ios::binary);
  if (!in) return std::nullopt;
  try {
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str());
    if (j.at("format").get<int>() != kPartitionFormatVersion) return std::nullopt;
    Catalog c;
    c.schema_json = j.at("schema").dump();
    c.strategy = j.at("strategy").get<std::string>();
    for (const auto& e : j.at("partitions")) {
      CatalogEntry ce;
      ce.file_name = e.at("file").get<std::string>();
      ce.meta.row_count = e.at("rows").get<int64_t>();
      ce.meta.min_value = json_opt(e.at("min_value"));
      ce.meta.max_value = json_opt(e.at("max_value"));
      ce.meta.min_id = json_value(e.at("min_id"));
      ce.meta.max_id = json_value(e.at("max_id"));
      ce.meta.commit_version = e.at("commit_version").get<int64_t>();
      const auto& s = e.at("stamp");
      ce.stamp = FileStamp{s.at(0).get<int64_t>(), s.at(1).get<int64_t>(), s.at(2).get<int64_t>(),
                           s.at(3).get<int64_t>()};
      c.entries.push_back(std::move(ce));
    }
    return c;
  } catch (const std::exception&) {
    return std::nullopt;  // damaged cache: rebuilt from the files
  }
}

void write_catalog(const std::string& dir, const Catalog& c, const Schema& schema) {
  nlohmann::ordered_json j;
  j["format"] = kPartitionFormatVersion;
  j["schema"] = nlohmann::ordered_json::parse(schema.to_json());
  j["strategy"] = c.strategy;
  auto parts = nlohmann::ordered_json::array();
  for (const auto& e : c.entries) {
    parts.push_back(
        {{"file", e.file_name},
         {"rows", e.meta.row_count},
         {"min_value", opt_json(e.meta.min_value)},
         {"max_value", opt_json(e.meta.max_value)},
         {"min_id", value_json(e.meta.min_id)},
         {"max_id", value_json(e.meta.max_id)},
         {"commit_version", e.meta.commit_version},
         {"stamp", {e.stamp.size, e.stamp.mtime_ns, e.stamp.wal_size, e.stamp.wal_mtime_ns}}});
  }
  j["partitions"] = std::move(parts);
  const std::string text = j.dump(1);
  const std::string path = dir + "/" + kCatalogFile;
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(ErrorCode::kIo, fmt::format("cannot write catalog '{}'", tmp));
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(ErrorCode::kIo, fmt::format("cannot write catalog '{}' (disk full?)", tmp));
    }
    off += static_cast<std::size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::kIo, fmt::format("cannot replace catalog '{}'", path));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace duckpart
