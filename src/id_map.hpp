// An in-memory map from id fingerprints to DuckDB rowids for one partition, so that get_by_id
// reads one row (`WHERE rowid IN (...)`, < 1 ms) instead of scanning the partition's ids (~2 ms
// for 830K UUIDs). Private header.
//
// A fingerprint is 32 bits of XXH3 over the id's stored bytes. Rows wait in a tail of full
// (fingerprint, rowid) pairs (8 bytes) until it outgrows an eighth of the map; then the tail is
// folded into a compact segment: 2^b buckets (~4 rows each, by the fingerprint's top b bits) of
// 32-bit entries that hold the rowid in as few bits as the largest rowid needs and, above it, the
// fingerprint bits that follow the bucket bits — ~4.5-5 bytes per row in all. A segment keeps
// only part of each fingerprint, so segments are never merged: after a few folds the owner
// rebuilds the map from the partition (wants_rebuild()), which happens each time the partition
// has about doubled. A lookup in an 830K-row partition meets a foreign id's kept bits with
// probability ~0.1%: every row found is compared with the id before it is returned.
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
  // Folds the tail into a new segment once it has grown past an eighth of the map (and 4,096
  // rows); call after a run of add().
  void settle() {
    if (tail_.size() > std::max<uint64_t>(4096, size() / 8)) fold();
  }
  // True when the map has so many segments that it should be rebuilt from the partition.
  bool wants_rebuild() const noexcept { return segments_.size() > kMaxSegments; }
  uint64_t size() const noexcept {
    uint64_t n = tail_.size();
    for (const auto& s : segments_) n += s.entries.size();
    return n;
  }
  uint64_t bytes() const noexcept {
    uint64_t b = tail_.capacity() * sizeof(uint64_t);
    for (const auto& s : segments_) {
      b += (s.entries.capacity() + s.offsets.capacity()) * sizeof(uint32_t);
    }
    return b;
  }
  // Calls f(rowid) for every row whose id has this fingerprint (and possibly for a few rows whose
  // fingerprint only shares the bits a segment keeps).
  template <class F>
  void find(uint32_t fingerprint, F&& f) const {
    for (const auto& s : segments_) {
      const uint64_t b = s.bucket(fingerprint);
      const uint32_t want = s.rest(fingerprint);
      for (uint32_t i = s.offsets[b]; i < s.offsets[b + 1]; ++i) {
        const uint32_t v = s.entries[i];
        if (s.fbits == 0 || (v >> s.rbits) == want) f(v & s.rmask());
      }
    }
    for (uint64_t v : tail_) {
      if (static_cast<uint32_t>(v >> 32) == fingerprint) f(static_cast<uint32_t>(v));
    }
  }

 private:
  static constexpr std::size_t kMaxSegments = 6;

  struct Segment {
    unsigned bits = 0;              // bucket bits: the fingerprint's top `bits` bits
    unsigned rbits = 1;             // rowid bits of an entry
    unsigned fbits = 0;             // fingerprint bits kept above them (32 - rbits)
    std::vector<uint32_t> offsets;  // bucket b holds entries[offsets[b], offsets[b + 1])
    std::vector<uint32_t> entries;

    uint64_t bucket(uint32_t fp) const noexcept { return bits == 0 ? 0 : fp >> (32 - bits); }
    // The `fbits` fingerprint bits after the bucket bits.
    uint32_t rest(uint32_t fp) const noexcept {
      if (fbits == 0) return 0;
      const auto shifted = static_cast<uint32_t>((uint64_t{fp} << bits) & 0xFFFFFFFFu);
      return shifted >> (32 - fbits);
    }
    uint32_t rmask() const noexcept {
      return rbits >= 32 ? 0xFFFFFFFFu : (uint32_t{1} << rbits) - 1;
    }
  };

  void fold() {
    Segment s;
    const uint64_t n = tail_.size();
    // ~4 entries per bucket: 2^bits buckets with bits = log2(n / 4), at most 2^28.
    s.bits = n < 8 ? 0 : std::min<unsigned>(28, static_cast<unsigned>(std::bit_width(n / 4)) - 1);
    uint32_t max_rowid = 0;
    for (uint64_t v : tail_) max_rowid = std::max(max_rowid, static_cast<uint32_t>(v));
    s.rbits = std::max<unsigned>(1, static_cast<unsigned>(std::bit_width(max_rowid)));
    s.fbits = 32 - s.rbits;
    const uint64_t buckets = uint64_t{1} << s.bits;
    s.offsets.assign(buckets + 1, 0);
    for (uint64_t v : tail_) ++s.offsets[s.bucket(static_cast<uint32_t>(v >> 32)) + 1];
    for (uint64_t b = 0; b < buckets; ++b) s.offsets[b + 1] += s.offsets[b];
    s.entries.resize(n);
    std::vector<uint32_t> next(s.offsets.begin(), s.offsets.end() - 1);
    for (uint64_t v : tail_) {
      const auto fp = static_cast<uint32_t>(v >> 32);
      const auto rowid = static_cast<uint32_t>(v);
      const uint32_t entry = s.fbits == 0 ? rowid : (s.rest(fp) << s.rbits) | rowid;
      s.entries[next[s.bucket(fp)]++] = entry;
    }
    segments_.push_back(std::move(s));
    tail_.clear();
    tail_.shrink_to_fit();
  }

  std::vector<Segment> segments_;
  std::vector<uint64_t> tail_;
};

}  // namespace duckpart
