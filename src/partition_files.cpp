#include "partition_files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "duck/duck.hpp"
#include "duckpart/error.hpp"

namespace duckpart {

std::optional<uint64_t> duckdb_file_block_size(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char magic[4];
  std::optional<uint64_t> size;
  uint64_t best_iteration = 0;
  if (::pread(fd, magic, sizeof magic, 8) == static_cast<ssize_t>(sizeof magic) &&
      std::memcmp(magic, "DUCK", 4) == 0) {
    for (const off_t at : {off_t{4096}, off_t{8192}}) {
      uint64_t w[6];
      if (::pread(fd, w, sizeof w, at) != static_cast<ssize_t>(sizeof w)) continue;
      // A power of two between DuckDB's smallest and largest block sizes; 0 in files written
      // before DuckDB recorded it, which DuckDB reads as its default, 256 KB.
      const uint64_t alloc = w[5] == 0 ? 262144 : w[5];
      if (alloc < 4096 || alloc > (uint64_t{1} << 30) || (alloc & (alloc - 1)) != 0) continue;
      if (!size || w[1] > best_iteration) {
        size = alloc;
        best_iteration = w[1];
      }
    }
  }
  ::close(fd);
  return size;
}

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

namespace {

FileStamp stamp_at(int dfd, const std::string& path, bool wal_may_exist) {
  FileStamp s;
  struct stat st {};
  if (::fstatat(dfd, path.c_str(), &st, 0) == 0) {
    s.size = st.st_size;
    s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  }
  if (!wal_may_exist) return s;
  const std::string wal = path + ".wal";
  if (::fstatat(dfd, wal.c_str(), &st, 0) == 0) {
    s.wal_size = st.st_size;
    s.wal_mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  }
  return s;
}

}  // namespace

FileStamp stamp_of(const std::string& path) { return stamp_at(AT_FDCWD, path, true); }

FileStamp stamp_in(int dir_fd, const std::string& name, bool wal_may_exist) {
  return stamp_at(dir_fd, name, wal_may_exist);
}

std::vector<std::string> list_regular_files(int dir_fd, const std::string& dir) {
  const int fd = ::dup(dir_fd);  // closedir closes it; the caller keeps its own
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (!d) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    throw Error(ErrorCode::kIo,
                fmt::format("cannot list partition directory '{}': {}", dir, std::strerror(err)));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
  ::rewinddir(d);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* ent = ::readdir(d)) {
    const std::string_view name(ent->d_name);
    if (name == "." || name == "..") continue;
    bool regular = ent->d_type == DT_REG;
    if (ent->d_type == DT_UNKNOWN || ent->d_type == DT_LNK) {  // what it is (or points to)
      struct stat st {};
      regular = ::fstatat(dir_fd, ent->d_name, &st, 0) == 0 && S_ISREG(st.st_mode);
    }
    if (regular) names.emplace_back(name);
    errno = 0;
  }
  if (errno != 0) {
    throw Error(ErrorCode::kIo,
                fmt::format("cannot list partition directory '{}': {}", dir, std::strerror(errno)));
  }
  std::sort(names.begin(), names.end());
  return names;
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

namespace {

// Catalog format 2: valid JSON whose partitions are arrays, one per line, in this field order.
// Format 1 (an object per partition) is still read.
constexpr int kCatalogFormat = 2;
constexpr const char* kCatalogFields[] = {"file",     "rows",     "min_value",      "max_value",
                                          "min_id",   "max_id",   "commit_version", "size",
                                          "mtime_ns", "wal_size", "wal_mtime_ns"};
constexpr std::size_t kCatalogFieldCount = std::size(kCatalogFields);

CatalogEntry entry_from_object(const nlohmann::json& e) {
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
  return ce;
}

CatalogEntry entry_from_array(const nlohmann::json& e) {
  if (!e.is_array() || e.size() != kCatalogFieldCount) {
    throw std::runtime_error("catalog entry of the wrong shape");
  }
  CatalogEntry ce;
  ce.file_name = e.at(0).get<std::string>();
  ce.meta.row_count = e.at(1).get<int64_t>();
  ce.meta.min_value = json_opt(e.at(2));
  ce.meta.max_value = json_opt(e.at(3));
  ce.meta.min_id = json_value(e.at(4));
  ce.meta.max_id = json_value(e.at(5));
  ce.meta.commit_version = e.at(6).get<int64_t>();
  ce.stamp = FileStamp{e.at(7).get<int64_t>(), e.at(8).get<int64_t>(), e.at(9).get<int64_t>(),
                       e.at(10).get<int64_t>()};
  return ce;
}

// Any catalog, through the general JSON parser (slow: ~7 ms for 1,100 partitions).
Catalog parse_catalog_slow(const std::string& text) {
  auto j = nlohmann::json::parse(text);
  const int format = j.at("format").get<int>();
  if (format != 1 && format != kCatalogFormat) throw std::runtime_error("unknown catalog format");
  Catalog c;
  c.schema_json = j.at("schema").dump();
  c.strategy = j.at("strategy").get<std::string>();
  for (const auto& e : j.at("partitions")) {
    c.entries.push_back(format == 1 ? entry_from_object(e) : entry_from_array(e));
  }
  return c;
}

// The lines write_catalog produces, read without building a JSON document: one partition per line
// of integers, nulls and strings without escapes. nullopt when the text is anything else (the
// caller then uses the general parser, so a hand-edited catalog still reads).
class FastLine {
 public:
  explicit FastLine(std::string_view s) : s_(s) {}
  bool open() { return eat('['); }
  bool sep() { return eat(','); }
  bool close() { return eat(']'); }
  bool at_end() const { return i_ == s_.size(); }
  // A string (no escapes), an integer, or null, as a Value (text / BIGINT / NULL).
  bool value(Value& out) {
    if (i_ >= s_.size()) return false;
    if (s_[i_] == '"') {
      const std::size_t end = s_.find('"', i_ + 1);
      if (end == std::string_view::npos) return false;
      const std::string_view body = s_.substr(i_ + 1, end - i_ - 1);
      // Escapes, control characters and non-ASCII (whose UTF-8 the general parser checks) are
      // left to the general parser.
      for (char ch : body) {
        const auto u = static_cast<unsigned char>(ch);
        if (u < 0x20 || u >= 0x80 || ch == '\\') return false;
      }
      out = Value(std::string(body));
      i_ = end + 1;
      return true;
    }
    if (s_.compare(i_, 4, "null") == 0) {
      out = Value{};
      i_ += 4;
      return true;
    }
    int64_t v = 0;
    if (!integer(v)) return false;
    out = Value(v);
    return true;
  }
  bool integer(int64_t& out) {
    const char* b = s_.data() + i_;
    const char* e = s_.data() + s_.size();
    // JSON has no leading zeros ("007", "-01"): such text goes to the general parser.
    const char* d = (b < e && *b == '-') ? b + 1 : b;
    if (e - d >= 2 && d[0] == '0' && d[1] >= '0' && d[1] <= '9') return false;
    auto [p, ec] = std::from_chars(b, e, out);
    if (ec != std::errc() || p == b) return false;
    i_ += static_cast<std::size_t>(p - b);
    return true;
  }
  bool opt_integer(std::optional<int64_t>& out) {
    if (s_.compare(i_, 4, "null") == 0) {
      out.reset();
      i_ += 4;
      return true;
    }
    int64_t v = 0;
    if (!integer(v)) return false;
    out = v;
    return true;
  }

 private:
  bool eat(char ch) {
    if (i_ < s_.size() && s_[i_] == ch) {
      ++i_;
      return true;
    }
    return false;
  }
  std::string_view s_;
  std::size_t i_ = 0;
};

std::optional<CatalogEntry> fast_entry(std::string_view line) {
  FastLine f(line);
  CatalogEntry ce;
  Value file, min_id, max_id;
  if (!f.open() || !f.value(file) || !file.is<std::string>()) return std::nullopt;
  ce.file_name = file.get<std::string>();
  if (!f.sep() || !f.integer(ce.meta.row_count) || !f.sep() || !f.opt_integer(ce.meta.min_value) ||
      !f.sep() || !f.opt_integer(ce.meta.max_value) || !f.sep() || !f.value(min_id) || !f.sep() ||
      !f.value(max_id) || !f.sep() || !f.integer(ce.meta.commit_version) || !f.sep() ||
      !f.integer(ce.stamp.size) || !f.sep() || !f.integer(ce.stamp.mtime_ns) || !f.sep() ||
      !f.integer(ce.stamp.wal_size) || !f.sep() || !f.integer(ce.stamp.wal_mtime_ns) ||
      !f.close() || !f.at_end()) {
    return std::nullopt;
  }
  ce.meta.min_id = std::move(min_id);
  ce.meta.max_id = std::move(max_id);
  return ce;
}

constexpr std::string_view kPartitionsOpen = "\"partitions\":[\n";
constexpr std::string_view kPartitionsClose = "]}\n";

std::optional<Catalog> parse_catalog_fast(const std::string& text) {
  const std::size_t open = text.find(kPartitionsOpen);
  if (open == std::string::npos || text.find('\n') != open + kPartitionsOpen.size() - 1 ||
      !text.ends_with(kPartitionsClose)) {
    return std::nullopt;
  }
  // The header (format, strategy, schema) is one short line: the general parser reads it.
  auto head = nlohmann::json::parse(text.substr(0, open) + "\"partitions\":[]}");
  if (head.at("format").get<int>() != kCatalogFormat) return std::nullopt;
  Catalog c;
  c.schema_json = head.at("schema").dump();
  c.strategy = head.at("strategy").get<std::string>();
  const std::size_t begin = open + kPartitionsOpen.size();
  std::string_view body(text.data() + begin, text.size() - kPartitionsClose.size() - begin);
  c.entries.reserve(static_cast<std::size_t>(std::count(body.begin(), body.end(), '\n')));
  while (!body.empty()) {
    const std::size_t nl = body.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view line = body.substr(0, nl);
    body.remove_prefix(nl + 1);
    if (!body.empty()) {  // every line but the last ends with a comma
      if (!line.ends_with(',')) return std::nullopt;
      line.remove_suffix(1);
    }
    auto e = fast_entry(line);
    if (!e) return std::nullopt;
    c.entries.push_back(std::move(*e));
  }
  return c;
}

}  // namespace

std::optional<Catalog> read_catalog(const std::string& dir, const Schema*) {
  // One read into a string of the file's size: a stream's buffers would copy the text twice, and
  // every fresh page costs a fault while a cold open's DuckDB starts (docs/architecture.md, "Cold
  // opens").
  std::string text;
  {
    const std::string path = dir + "/" + kCatalogFile;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    struct CloseFd {
      int fd;
      ~CloseFd() { ::close(fd); }
    } close_fd{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < 0) return std::nullopt;
    text.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < text.size()) {
      const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return std::nullopt;
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    char more[4096];  // grown since the fstat (the catalog is replaced by rename, so rarely)
    for (;;) {
      const ssize_t n = ::read(fd, more, sizeof more);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return std::nullopt;
      if (n == 0) break;
      text.append(more, static_cast<std::size_t>(n));
    }
  }
  try {
    if (auto c = parse_catalog_fast(text)) return c;
    return parse_catalog_slow(text);
  } catch (const std::exception&) {
    return std::nullopt;  // damaged cache: rebuilt from the files
  }
}

void write_catalog(const std::string& dir, const Catalog& c, const Schema& schema) {
  nlohmann::ordered_json head;
  head["format"] = kCatalogFormat;
  head["strategy"] = c.strategy;
  head["schema"] = nlohmann::ordered_json::parse(schema.to_json());
  head["fields"] = kCatalogFields;
  std::string text = head.dump();
  text.pop_back();  // the closing brace: the partitions follow, one per line
  text += ",";
  text += kPartitionsOpen;
  for (std::size_t i = 0; i < c.entries.size(); ++i) {
    const CatalogEntry& e = c.entries[i];
    nlohmann::json row = nlohmann::json::array(
        {e.file_name, e.meta.row_count, opt_json(e.meta.min_value), opt_json(e.meta.max_value),
         value_json(e.meta.min_id), value_json(e.meta.max_id), e.meta.commit_version, e.stamp.size,
         e.stamp.mtime_ns, e.stamp.wal_size, e.stamp.wal_mtime_ns});
    text += row.dump();
    if (i + 1 < c.entries.size()) text += ",\n";
  }
  if (!c.entries.empty()) text += "\n";
  text += kPartitionsClose;
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
