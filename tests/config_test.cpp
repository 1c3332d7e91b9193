#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <string>

#include "duckpart/config.hpp"
#include "duckpart/error.hpp"

namespace duckpart {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, DefaultsAreTheSeeds) {
  const PartitionConfig c;
  EXPECT_EQ(c.strategy, PartitionStrategy::kMonthly);
  EXPECT_EQ(c.partition_column, "production_period");
  EXPECT_EQ(c.base_partition_path, "data/partitions");
  EXPECT_EQ(c.max_partitions_in_memory, 24);
  EXPECT_EQ(c.partition_size_threshold_mb, 2000);
  EXPECT_TRUE(c.auto_partition_enabled);
  EXPECT_TRUE(c.enable_cross_partition_queries);
  EXPECT_NO_THROW(c.validate());
}

TEST(ConfigTest, Presets) {
  EXPECT_EQ(partition_config_preset("high_volume").strategy, PartitionStrategy::kDaily);
  EXPECT_EQ(partition_config_preset("archive").strategy, PartitionStrategy::kYearly);
  EXPECT_EQ(partition_config_preset("development").max_partitions_in_memory, 6);
  EXPECT_EQ(partition_config_preset("production").max_partitions_in_memory, 24);
  EXPECT_EQ(partition_config_preset_names().size(), 4u);
  EXPECT_NE(error_of([] { partition_config_preset("staging"); }).find("staging"),
            std::string::npos);
}

TEST(ConfigTest, TomlOverridesPreset) {
  const auto c = parse_partition_config(
      "preset = \"archive\"\nmax_partitions_in_memory = 48\nbase_partition_path = \"/x\"\n",
      "t.toml");
  EXPECT_EQ(c.strategy, PartitionStrategy::kYearly);
  EXPECT_EQ(c.max_partitions_in_memory, 48);
  EXPECT_EQ(c.base_partition_path, "/x");
  const auto w =
      parse_partition_config("strategy = \"weekly\"\nauto_partition_enabled = false\n", "t.toml");
  EXPECT_EQ(w.strategy, PartitionStrategy::kWeekly);
  EXPECT_FALSE(w.auto_partition_enabled);
  EXPECT_TRUE(w.single_duckdb_thread_while_writing);
  EXPECT_FALSE(parse_partition_config("single_duckdb_thread_while_writing = false\n", "t.toml")
                   .single_duckdb_thread_while_writing);
  EXPECT_EQ(w.id_index_memory_mb, -1);  // automatic: 1/8 of the usable memory, at least 128 MB
  EXPECT_EQ(w.effective_id_index_memory_mb(),
            std::clamp<int64_t>(usable_memory_mb() / 8, 128, 16 * 1024 * 1024));
  EXPECT_EQ(w.effective_id_index_memory_mb(24 * 1024), 3 * 1024);
  EXPECT_EQ(w.effective_id_index_memory_mb(512), 128);
  EXPECT_EQ(parse_partition_config("id_index_memory_mb = 0\n", "t.toml").id_index_memory_mb, 0);
  EXPECT_EQ(
      parse_partition_config("id_index_memory_mb = 0\n", "t.toml").effective_id_index_memory_mb(),
      0);
  EXPECT_EQ(parse_partition_config("id_index_memory_mb = 1024\n", "t.toml")
                .effective_id_index_memory_mb(24 * 1024),
            1024);
  EXPECT_EQ(parse_partition_config("id_index_memory_mb = -1\n", "t.toml").id_index_memory_mb, -1);
  EXPECT_NE(error_of([] {
              parse_partition_config("id_index_memory_mb = -2\n", "cfg.toml");
            }).find("id_index_memory_mb = -2"),
            std::string::npos);
  EXPECT_EQ(w.write_buffer_mb, -1);  // automatic
  EXPECT_GE(w.effective_write_buffer_mb(), 16);
  EXPECT_LE(w.effective_write_buffer_mb(), 4096);
  EXPECT_GE(usable_memory_mb(), 1);
  EXPECT_EQ(parse_partition_config("write_buffer_mb = 0\n", "t.toml").effective_write_buffer_mb(),
            0);
  EXPECT_EQ(parse_partition_config("write_buffer_mb = 64\n", "t.toml").effective_write_buffer_mb(),
            64);
  EXPECT_EQ(parse_partition_config("write_buffer_mb = 2048\n", "t.toml").write_buffer_mb, 2048);
  EXPECT_NE(error_of([] {
              parse_partition_config("write_buffer_mb = -5\n", "cfg.toml");
            }).find("write_buffer_mb = -5"),
            std::string::npos);
  EXPECT_EQ(w.write_buffer_max_delay_ms, 10000);
  EXPECT_EQ(
      parse_partition_config("write_buffer_max_delay_ms = 0\n", "t.toml").write_buffer_max_delay_ms,
      0);
  EXPECT_EQ(parse_partition_config("write_buffer_max_delay_ms = 2500\n", "t.toml")
                .write_buffer_max_delay_ms,
            2500);
  EXPECT_NE(error_of([] {
              parse_partition_config("write_buffer_max_delay_ms = -1\n", "cfg.toml");
            }).find("write_buffer_max_delay_ms = -1"),
            std::string::npos);
  EXPECT_EQ(w.block_size_kb, 256);
  EXPECT_EQ(parse_partition_config("block_size_kb = 16\n", "t.toml").block_size_kb, 16);
  EXPECT_NE(error_of([] {
              parse_partition_config("block_size_kb = 48\n", "cfg.toml");
            }).find("block_size_kb = 48"),
            std::string::npos);
}

TEST(ConfigTest, TomlErrorsNameFileKeyAndValue) {
  EXPECT_NE(error_of([] {
              parse_partition_config("bogus = 1\n", "cfg.toml");
            }).find("cfg.toml: unknown key 'bogus'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_partition_config("max_partitions_in_memory = \"ten\"\n", "cfg.toml");
            }).find("'max_partitions_in_memory' must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_partition_config("max_partitions_in_memory = 0\n", "cfg.toml");
            }).find("max_partitions_in_memory = 0"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_partition_config("strategy = \"hourly\"\n", "cfg.toml");
            }).find("hourly"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse_partition_config("strategy = \n", "cfg.toml"); }).find("cfg.toml:1"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              load_partition_config("/nonexistent/duckpart.toml");
            }).find("/nonexistent/duckpart.toml"),
            std::string::npos);
}

TEST(ConfigTest, ValidationNamesTheField) {
  PartitionConfig c;
  c.partition_size_threshold_mb = -1;
  EXPECT_NE(error_of([&] { c.validate(); }).find("partition_size_threshold_mb = -1"),
            std::string::npos);
  c = PartitionConfig{};
  c.base_partition_path = "";
  EXPECT_NE(error_of([&] { c.validate(); }).find("base_partition_path"), std::string::npos);
  c = PartitionConfig{};
  c.write_threads = -3;
  EXPECT_NE(error_of([&] { c.validate(); }).find("write_threads"), std::string::npos);
}

}  // namespace
}  // namespace duckpart

namespace duckpart {
namespace {

TEST(ConfigTest, MemoryLimit) {
  PartitionConfig c;
  EXPECT_EQ(c.memory_limit_mb, -1);  // automatic: a quarter of the usable memory
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.effective_memory_limit_mb(),
            std::clamp<int64_t>(usable_memory_mb() / 4, 256, 16 * 1024 * 1024));
  c.memory_limit_mb = 10;
  EXPECT_NE(error_of([&] { c.validate(); }).find("memory_limit_mb"), std::string::npos);
  c.memory_limit_mb = -2;
  EXPECT_NE(error_of([&] { c.validate(); }).find("memory_limit_mb"), std::string::npos);
  c.memory_limit_mb = 256;
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.effective_memory_limit_mb(), 256);
  c.memory_limit_mb = 0;  // DuckDB's own default
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.effective_memory_limit_mb(), 0);
}

TEST(ConfigTest, AutomaticSizesFollowTheUsableMemoryGiven) {
  PartitionConfig c;  // both automatic
  EXPECT_EQ(c.effective_memory_limit_mb(int64_t{8192}), 2048);
  EXPECT_EQ(c.effective_write_buffer_mb(int64_t{8192}), 1024);
  EXPECT_EQ(c.effective_memory_limit_mb(int64_t{100}), 256);       // at least 256 MB
  EXPECT_EQ(c.effective_write_buffer_mb(int64_t{100}), 16);        // at least 16 MB
  EXPECT_EQ(c.effective_write_buffer_mb(int64_t{1} << 20), 4096);  // at most 4 GB
  c.memory_limit_mb = 512;
  c.write_buffer_mb = 0;
  EXPECT_EQ(c.effective_memory_limit_mb(int64_t{8192}), 512);  // set values are kept
  EXPECT_EQ(c.effective_write_buffer_mb(int64_t{8192}), 0);
}

// usable_memory_mb reads /proc/self/cgroup and the limit files with POSIX calls; this reads them
// with iostreams, the way it did before, and must find the same limit.
TEST(ConfigTest, UsableMemoryIsTheSmallestOfRamAndEveryCgroupLimit) {
  int64_t expect = int64_t{::sysconf(_SC_PHYS_PAGES)} * ::sysconf(_SC_PAGE_SIZE) / (1 << 20);
  std::ifstream self("/proc/self/cgroup");
  for (std::string line; std::getline(self, line);) {
    const std::size_t a = line.find(':'), b = line.find(':', a + 1);
    const std::string controllers = line.substr(a + 1, b - a - 1);
    std::string base, file;
    if (controllers.empty()) {
      base = "/sys/fs/cgroup", file = "memory.max";
    } else if ((',' + controllers + ',').find(",memory,") != std::string::npos) {
      base = "/sys/fs/cgroup/memory", file = "memory.limit_in_bytes";
    } else {
      continue;
    }
    std::string rel = line.substr(b + 1);
    while (!rel.empty() && rel.back() == '/') rel.pop_back();
    for (;;) {
      std::ifstream in(base + rel + "/" + file);
      std::string text;
      if (in >> text && text != "max") {
        const unsigned long long bytes = std::strtoull(text.c_str(), nullptr, 10);
        if (bytes > 0) {
          expect = std::min<int64_t>(
              expect, static_cast<int64_t>(std::min<unsigned long long>(bytes >> 20, INT64_MAX)));
        }
      }
      const std::size_t slash = rel.find_last_of('/');
      if (rel.empty() || slash == std::string::npos) break;
      rel.resize(slash);
    }
  }
  EXPECT_EQ(usable_memory_mb(), std::max<int64_t>(expect, 1));
}

}  // namespace
}  // namespace duckpart
