#include "duckpart/config.hpp"

#include <fmt/format.h>

#include <toml++/toml.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "duckpart/error.hpp"

namespace duckpart {

bool is_valid_block_size_kb(int kb) {
  return kb == 16 || kb == 32 || kb == 64 || kb == 128 || kb == 256;
}

void check_compact_block_size_kb(int kb) {
  if (kb != 0 && !is_valid_block_size_kb(kb)) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("compact: block size {} KB: must be 0 (automatic), 16, 32, 64, 128 "
                            "or 256",
                            kb));
  }
}

void PartitionConfig::validate() const {
  auto bad = [](std::string_view field, const std::string& value, std::string_view why) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("invalid configuration: {} = {}: {}", field, value, why));
  };
  if (partition_column.empty())
    bad("partition_column", "\"\"", "must name a DATE or TIMESTAMP column");
  if (partition_column.find('\0') != std::string::npos) {
    bad("partition_column", partition_column, "contains a NUL character");
  }
  if (base_partition_path.empty()) bad("base_partition_path", "\"\"", "must be a directory path");
  if (max_partitions_in_memory < 1 || max_partitions_in_memory > 100000) {
    bad("max_partitions_in_memory", std::to_string(max_partitions_in_memory),
        "must be between 1 and 100000");
  }
  if (partition_size_threshold_mb < 1) {
    bad("partition_size_threshold_mb", std::to_string(partition_size_threshold_mb),
        "must be at least 1");
  }
  if (memory_limit_mb != 0 && memory_limit_mb != -1 &&
      (memory_limit_mb < 64 || memory_limit_mb > 16 * 1024 * 1024)) {
    bad("memory_limit_mb", std::to_string(memory_limit_mb),
        "must be -1 (automatic), 0 (DuckDB's default) or at least 64");
  }
  if (id_index_memory_mb < -1 || id_index_memory_mb > 16 * 1024 * 1024) {
    bad("id_index_memory_mb", std::to_string(id_index_memory_mb),
        "must be -1 (automatic), 0 (no id maps) or a size in MB");
  }
  if (write_buffer_mb < -1 || write_buffer_mb > 16 * 1024 * 1024) {
    bad("write_buffer_mb", std::to_string(write_buffer_mb),
        "must be -1 (automatic), 0 (no write buffering) or a size in MB");
  }
  if (write_buffer_max_delay_ms < 0 || write_buffer_max_delay_ms > 86'400'000) {
    bad("write_buffer_max_delay_ms", std::to_string(write_buffer_max_delay_ms),
        "must be 0 (no timed drains) or a delay in milliseconds of at most one day (86400000)");
  }
  if (!is_valid_block_size_kb(block_size_kb)) {
    bad("block_size_kb", std::to_string(block_size_kb),
        "must be 16, 32, 64, 128 or 256 (a DuckDB block size in KB)");
  }
  if (write_threads < 0 || write_threads > 256) {
    bad("write_threads", std::to_string(write_threads), "must be between 0 (auto) and 256");
  }
}

namespace {

// A cgroup memory limit file's value in MB: "max" (v2) or a byte count (v1 writes a huge number
// for "unlimited", which the caller's minimum absorbs); nullopt when unreadable or malformed.
// Read with POSIX calls: the first std::ifstream of a process costs ~0.3 ms of locale set-up, and
// a read-only repository's constructor is on the path of every cold query (docs/architecture.md,
// "Cold opens").
std::optional<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > (1 << 20)) break;  // no limit or cgroup file is this large
  }
  ::close(fd);
  return text;
}

std::optional<int64_t> cgroup_limit_mb(const std::string& file) {
  const std::optional<std::string> content = read_small_file(file);
  if (!content) return std::nullopt;
  // The first word, as `>>` read it.
  const std::size_t from = content->find_first_not_of(" \t\r\n");
  if (from == std::string::npos) return std::nullopt;
  const std::string text = content->substr(from, content->find_first_of(" \t\r\n", from) - from);
  if (text == "max") return std::nullopt;
  char* end = nullptr;
  const unsigned long long bytes = std::strtoull(text.c_str(), &end, 10);
  if (!end || *end != '\0' || bytes == 0) return std::nullopt;
  return static_cast<int64_t>(std::min<unsigned long long>(bytes >> 20, INT64_MAX));
}

}  // namespace

int64_t usable_memory_mb() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  int64_t mb = pages > 0 && page > 0 ? int64_t{pages} * page / (1 << 20) : 8192;
  // This process's cgroup and every parent up to the root (a systemd unit's MemoryMax, a
  // container's limit), from /proc/self/cgroup: "0::/path" for cgroup v2 (memory.max),
  // "N:...memory...:/path" for v1's memory controller (memory.limit_in_bytes).
  std::vector<std::string> files;
  const std::string self = read_small_file("/proc/self/cgroup").value_or(std::string());
  for (std::size_t at = 0; at < self.size();) {
    std::size_t nl = self.find('\n', at);
    if (nl == std::string::npos) nl = self.size();
    const std::string line = self.substr(at, nl - at);
    at = nl + 1;
    const std::size_t a = line.find(':');
    const std::size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    std::string base, file;
    if (controllers.empty()) {
      base = "/sys/fs/cgroup";
      file = "memory.max";
    } else if ((',' + controllers + ',').find(",memory,") != std::string::npos) {
      base = "/sys/fs/cgroup/memory";
      file = "memory.limit_in_bytes";
    } else {
      continue;
    }
    std::string rel = line.substr(b + 1);
    while (!rel.empty() && rel.back() == '/') rel.pop_back();
    while (true) {
      files.push_back(base + rel + "/" + file);
      const std::size_t slash = rel.find_last_of('/');
      if (rel.empty() || slash == std::string::npos) break;
      rel.resize(slash);
    }
  }
  for (const std::string& f : files) {
    if (const auto limit = cgroup_limit_mb(f)) mb = std::min(mb, *limit);
  }
  return std::max<int64_t>(mb, 1);
}

int PartitionConfig::effective_memory_limit_mb() const {
  return memory_limit_mb >= 0 ? memory_limit_mb : effective_memory_limit_mb(usable_memory_mb());
}

int PartitionConfig::effective_memory_limit_mb(int64_t usable_mb) const {
  if (memory_limit_mb >= 0) return memory_limit_mb;
  return static_cast<int>(std::clamp<int64_t>(usable_mb / 4, 256, 16 * 1024 * 1024));
}

int PartitionConfig::effective_id_index_memory_mb() const {
  return id_index_memory_mb >= 0 ? id_index_memory_mb
                                 : effective_id_index_memory_mb(usable_memory_mb());
}

int PartitionConfig::effective_id_index_memory_mb(int64_t usable_mb) const {
  if (id_index_memory_mb >= 0) return id_index_memory_mb;
  return static_cast<int>(std::clamp<int64_t>(usable_mb / 8, 128, 16 * 1024 * 1024));
}

int PartitionConfig::effective_write_buffer_mb() const {
  return write_buffer_mb >= 0 ? write_buffer_mb : effective_write_buffer_mb(usable_memory_mb());
}

int PartitionConfig::effective_write_buffer_mb(int64_t usable_mb) const {
  if (write_buffer_mb >= 0) return write_buffer_mb;
  return static_cast<int>(std::clamp<int64_t>(usable_mb / 8, 16, 4096));
}

PartitionConfig production_partition_config() { return PartitionConfig{}; }

PartitionConfig development_partition_config() {
  PartitionConfig c;
  c.max_partitions_in_memory = 6;
  c.partition_size_threshold_mb = 500;
  return c;
}

PartitionConfig high_volume_partition_config() {
  PartitionConfig c;
  c.strategy = PartitionStrategy::kDaily;
  c.max_partitions_in_memory = 90;
  c.partition_size_threshold_mb = 1000;
  return c;
}

PartitionConfig archive_partition_config() {
  PartitionConfig c;
  c.strategy = PartitionStrategy::kYearly;
  c.max_partitions_in_memory = 4;
  c.partition_size_threshold_mb = 5000;
  return c;
}

std::vector<std::string> partition_config_preset_names() {
  return {"development", "production", "high_volume", "archive"};
}

PartitionConfig partition_config_preset(std::string_view name) {
  if (name == "development") return development_partition_config();
  if (name == "production") return production_partition_config();
  if (name == "high_volume") return high_volume_partition_config();
  if (name == "archive") return archive_partition_config();
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("unknown configuration preset '{}': expected development, production, "
                          "high_volume or archive",
                          name));
}

PartitionConfig parse_partition_config(std::string_view toml_text, std::string_view origin,
                                       const PartitionConfig& base) {
  toml::table table;
  try {
    table = toml::parse(toml_text, std::string(origin));
  } catch (const toml::parse_error& e) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}:{}:{}: invalid TOML: {}", origin, e.source().begin.line,
                            e.source().begin.column, e.description()));
  }
  PartitionConfig c = base;
  auto wrong = [&](std::string_view key, std::string_view expected) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: key '{}' must be {}", origin, key, expected));
  };
  if (auto* node = table.get("preset")) {
    auto v = node->value<std::string>();
    if (!v) wrong("preset", "a string");
    c = partition_config_preset(*v);
  }
  for (auto&& [k, node] : table) {
    const std::string key(k.str());
    if (key == "preset") continue;
    auto get_int = [&]() {
      auto v = node.value<int64_t>();
      if (!v || !node.is_integer()) wrong(key, "an integer");
      if (*v < -2147483647 || *v > 2147483647) wrong(key, "a 32-bit integer");
      return static_cast<int>(*v);
    };
    auto get_bool = [&]() {
      if (!node.is_boolean()) wrong(key, "true or false");
      return *node.value<bool>();
    };
    auto get_string = [&]() {
      if (!node.is_string()) wrong(key, "a string");
      return *node.value<std::string>();
    };
    if (key == "strategy") {
      c.strategy = parse_strategy(get_string());
    } else if (key == "partition_column") {
      c.partition_column = get_string();
    } else if (key == "base_partition_path") {
      c.base_partition_path = get_string();
    } else if (key == "max_partitions_in_memory") {
      c.max_partitions_in_memory = get_int();
    } else if (key == "partition_size_threshold_mb") {
      c.partition_size_threshold_mb = get_int();
    } else if (key == "auto_partition_enabled") {
      c.auto_partition_enabled = get_bool();
    } else if (key == "enable_cross_partition_queries") {
      c.enable_cross_partition_queries = get_bool();
    } else if (key == "write_threads") {
      c.write_threads = get_int();
    } else if (key == "single_duckdb_thread_while_writing") {
      c.single_duckdb_thread_while_writing = get_bool();
    } else if (key == "memory_limit_mb") {
      c.memory_limit_mb = get_int();
    } else if (key == "id_index_memory_mb") {
      c.id_index_memory_mb = get_int();
    } else if (key == "write_buffer_mb") {
      c.write_buffer_mb = get_int();
    } else if (key == "write_buffer_max_delay_ms") {
      c.write_buffer_max_delay_ms = get_int();
    } else if (key == "block_size_kb") {
      c.block_size_kb = get_int();
    } else {
      throw Error(
          ErrorCode::kInvalidArgument,
          fmt::format("{}: unknown key '{}' (known: preset, strategy, partition_column, "
                      "base_partition_path, max_partitions_in_memory, "
                      "partition_size_threshold_mb, auto_partition_enabled, "
                      "enable_cross_partition_queries, write_threads, "
                      "single_duckdb_thread_while_writing, memory_limit_mb, id_index_memory_mb, "
                      "write_buffer_mb, write_buffer_max_delay_ms, block_size_kb)",
                      origin, key));
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: {}", origin, e.what()));
  }
  return c;
}

PartitionConfig load_partition_config(const std::string& toml_path, const PartitionConfig& base) {
  std::ifstream in(toml_path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::kIo, fmt::format("cannot read configuration file '{}'", toml_path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_partition_config(ss.str(), toml_path, base);
}

}  // namespace duckpart
