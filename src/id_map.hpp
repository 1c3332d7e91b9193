// An in-memory map from id fingerprints to DuckDB rowids for one partition, so that get_by_id
// reads one row (`WHERE rowid IN (...)`, < 1 ms) instead of scanning the partition's ids (~2 ms
// for 830K UUIDs). Private header.
//
// Entries are (fingerprint << 32 | rowid), 8 bytes per row. The main part is bucketed by the top
// bits of the fingerprint (a counting sort: O(n) to build, a bucket holds ~4 entries); rows added
// since (a partition's appends) wait in a short tail that is scanned linearly and folded into the
// buckets once it grows past an eighth of them. A fingerprint is 32 bits of XXH3 over the id's
// value, so a lookup in an 830K-row partition meets a foreign id's fingerprint with probability
// ~0.02%: every row found is compared with the id before it is returned.
#pragma once

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

namespace duckpart {

// The fingerprint of an id's value: its bytes as DuckDB stores them (UUID: the 16 bytes of its
// hugeint, lower word first; BIGINT: 8 bytes; VARCHAR: the text).
inline uint32_t id_fingerprint(const void* data, std::size_t size) noexcept {
  return static_cast<uint32_t>(XXH3_64bits(data, size) >> 32);
}

class IdRowMap {
 public:
  // Rowids [0, covered) of the partition have been read; `rows` rows were (NULL ids are counted
  // but not kept).
  uint64_t covered = 0;
  uint64_t rows = 0;

  void add(uint32_t fingerprint, uint32_t rowid) {
    tail_.push_back((uint64_t{fingerprint} << 32) | rowid);
  }
  // Folds the tail into the buckets when it has grown past an eighth of them (amortised O(1) per
  // row); call after a run of add().
  void settle() {
    if (tail_.size() > std::max<std::size_t>(4096, main_.size() / 8)) rebuild();
  }
  uint64_t size() const noexcept { return main_.size() + tail_.size(); }
  uint64_t bytes() const noexcept {
    return (main_.capacity() + tail_.capacity()) * sizeof(uint64_t) +
           offsets_.capacity() * sizeof(uint32_t);
  }
  // Calls f(rowid) for every row whose id has this fingerprint (and for no other row).
  template <class F>
  void find(uint32_t fingerprint, F&& f) const {
    if (!offsets_.empty()) {
      const uint64_t b = bits_ == 0 ? 0 : fingerprint >> (32 - bits_);
      for (uint32_t i = offsets_[b]; i < offsets_[b + 1]; ++i) {
        if (static_cast<uint32_t>(main_[i] >> 32) == fingerprint) {
          f(static_cast<uint32_t>(main_[i]));
        }
      }
    }
    for (uint64_t v : tail_) {
      if (static_cast<uint32_t>(v >> 32) == fingerprint) f(static_cast<uint32_t>(v));
    }
  }

 private:
  void rebuild() {
    std::vector<uint64_t> all;
    all.reserve(main_.size() + tail_.size());
    all.insert(all.end(), main_.begin(), main_.end());
    all.insert(all.end(), tail_.begin(), tail_.end());
    const uint64_t n = all.size();
    // ~4 entries per bucket: 2^bits buckets with bits = log2(n / 4), at most 2^28.
    bits_ = n < 8 ? 0 : std::min<unsigned>(28, static_cast<unsigned>(std::bit_width(n / 4)) - 1);
    const uint64_t buckets = uint64_t{1} << bits_;
    std::vector<uint32_t> offsets(buckets + 1, 0);
    auto bucket = [&](uint64_t v) {
      return bits_ == 0 ? 0 : static_cast<uint64_t>(v >> 32) >> (32 - bits_);
    };
    for (uint64_t v : all) ++offsets[bucket(v) + 1];
    for (uint64_t b = 0; b < buckets; ++b) offsets[b + 1] += offsets[b];
    std::vector<uint64_t> main(n);
    std::vector<uint32_t> next(offsets.begin(), offsets.end() - 1);
    for (uint64_t v : all) main[next[bucket(v)]++] = v;
    main_ = std::move(main);
    offsets_ = std::move(offsets);
    tail_.clear();
    tail_.shrink_to_fit();
  }

  unsigned bits_ = 0;
  std::vector<uint32_t> offsets_;  // bucket b holds main_[offsets_[b], offsets_[b + 1])
  std::vector<uint64_t> main_;
  std::vector<uint64_t> tail_;
};

}  // namespace duckpart
