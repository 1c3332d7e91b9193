// Small text helpers shared by reports and the CLI. Private header.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>

namespace duckpart {

// "1.5 GB", "12.0 MB", "3.2 KB" (binary units).
inline std::string human_bytes(uint64_t b) {
  if (b >= (1ULL << 30)) return fmt::format("{:.1f} GB", static_cast<double>(b) / (1ULL << 30));
  if (b >= (1ULL << 20)) return fmt::format("{:.1f} MB", static_cast<double>(b) / (1ULL << 20));
  return fmt::format("{:.1f} KB", static_cast<double>(b) / 1024.0);
}

}  // namespace duckpart
