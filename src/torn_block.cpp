#include "torn_block.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <regex>

#include <fmt/format.h>

#include "duckpart/error.hpp"

namespace duckpart {
namespace {

// DuckDB's file layout (storage version 1.x): a 4 KB main header, then two 4 KB database headers
// (the one with the higher iteration is active), then blocks of block_alloc_size bytes from offset
// 12288. A database header block: u64 checksum, u64 iteration, u64 meta_block, u64 free_list,
// u64 block_count, u64 block_alloc_size, ... (MetaBlockPointers: block id in the low 56 bits).
constexpr uint64_t kHeaderSize = 4096;
constexpr uint64_t kBlocksStart = 3 * kHeaderSize;
constexpr uint64_t kBlockIdMask = (uint64_t{1} << 56) - 1;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Error io_error(const std::string& what, const std::string& file) {
  return Error(ErrorCode::kIo, fmt::format("{} '{}': {}", what, file, std::strerror(errno)));
}

bool read_at(int fd, void* buf, std::size_t n, uint64_t off) {
  return ::pread(fd, buf, n, static_cast<off_t>(off)) == static_cast<ssize_t>(n);
}

void write_checksum(const std::string& file, uint64_t location, uint64_t value) {
  Fd f{::open(file.c_str(), O_RDWR | O_CLOEXEC)};
  if (f.fd < 0) throw io_error("cannot open", file);
  if (::pwrite(f.fd, &value, sizeof value, static_cast<off_t>(location)) !=
          static_cast<ssize_t>(sizeof value) ||
      ::fsync(f.fd) != 0) {
    throw io_error("cannot write", file);
  }
}

}  // namespace

std::optional<TornBlockRepair> repair_torn_metadata_block(const std::string& file,
                                                          const std::string& duckdb_error) {
  static const std::regex re(
      R"(computed checksum (\d+) does not match stored checksum (\d+) in block at location (\d+))");
  std::smatch m;
  if (!std::regex_search(duckdb_error, m, re)) return std::nullopt;
  TornBlockRepair r;
  try {
    r.new_checksum = std::stoull(m[1].str());
    r.old_checksum = std::stoull(m[2].str());
    r.location = std::stoull(m[3].str());
  } catch (const std::exception&) {
    return std::nullopt;
  }
  Fd f{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw io_error("cannot open", file);
  uint64_t best_iteration = 0, meta = 0, free_list = 0, alloc = 0;
  bool found = false;
  for (uint64_t h : {kHeaderSize, 2 * kHeaderSize}) {
    uint64_t w[6];
    if (!read_at(f.fd, w, sizeof w, h)) throw io_error("cannot read the headers of", file);
    // w[0] checksum, w[1] iteration, w[2] meta_block, w[3] free_list, w[4] block_count, w[5] size
    if (w[5] == 0 || w[5] % kHeaderSize != 0) continue;
    if (!found || w[1] > best_iteration) {
      found = true;
      best_iteration = w[1];
      meta = w[2] & kBlockIdMask;
      free_list = w[3] & kBlockIdMask;
      alloc = w[5];
    }
  }
  if (!found || r.location < kBlocksStart || (r.location - kBlocksStart) % alloc != 0) {
    return std::nullopt;
  }
  const uint64_t block = (r.location - kBlocksStart) / alloc;
  if (block != meta && block != free_list) return std::nullopt;  // not a metadata block
  uint64_t stored = 0;
  if (!read_at(f.fd, &stored, sizeof stored, r.location)) throw io_error("cannot read", file);
  if (stored != r.old_checksum) return std::nullopt;  // not the block the error describes
  write_checksum(file, r.location, r.new_checksum);
  return r;
}

void undo_torn_block_repair(const std::string& file, const TornBlockRepair& r) {
  write_checksum(file, r.location, r.old_checksum);
}

}  // namespace duckpart
