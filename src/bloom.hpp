// A Bloom filter over id values, persisted beside a partition as a rebuildable cache. Private
// header.
#pragma once

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace duckpart {

class IdBloom {
 public:
  IdBloom() = default;
  // Sized for `capacity` ids at about 1% false positives (10 bits, 7 probes per id).
  explicit IdBloom(uint64_t capacity) : capacity_(capacity) {
    const uint64_t bits = std::max<uint64_t>(capacity * 10, 1024);
    words_.assign((bits + 63) / 64, 0);
  }

  uint64_t capacity() const noexcept { return capacity_; }
  uint64_t count() const noexcept { return count_; }
  bool full() const noexcept { return count_ > capacity_; }
  void add(std::string_view key) noexcept {
    ++count_;
    probe(key, [&](uint64_t bit) {
      words_[bit >> 6] |= uint64_t{1} << (bit & 63);
      return true;
    });
  }
  bool may_contain(std::string_view key) const noexcept {
    if (words_.empty()) return true;
    return probe(key, [&](uint64_t bit) { return (words_[bit >> 6] >> (bit & 63)) & 1; });
  }

  // File: magic, version stamp, capacity, count, words. `stamp` ties it to the partition's commit.
  bool save(const std::string& path, int64_t stamp) const {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) return false;
      const uint64_t header[5] = {kMagic, static_cast<uint64_t>(stamp), capacity_, count_,
                                  words_.size()};
      out.write(reinterpret_cast<const char*>(header), sizeof(header));
      out.write(reinterpret_cast<const char*>(words_.data()),
                static_cast<std::streamsize>(words_.size() * sizeof(uint64_t)));
      if (!out) return false;
    }
    return std::rename(tmp.c_str(), path.c_str()) == 0;
  }
  // Loads a filter saved for exactly `stamp`; false if missing, damaged or of another stamp.
  bool load(const std::string& path, int64_t stamp) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    uint64_t header[5] = {};
    if (!in.read(reinterpret_cast<char*>(header), sizeof(header))) return false;
    if (header[0] != kMagic || header[1] != static_cast<uint64_t>(stamp) ||
        header[4] > (1ULL << 32)) {
      return false;
    }
    std::vector<uint64_t> words(header[4]);
    if (!in.read(reinterpret_cast<char*>(words.data()),
                 static_cast<std::streamsize>(words.size() * sizeof(uint64_t)))) {
      return false;
    }
    capacity_ = header[2];
    count_ = header[3];
    words_ = std::move(words);
    return true;
  }

 private:
  static constexpr uint64_t kMagic = 0x314d4f4c42504455ULL;  // "UDPBLOM1"
  template <class F>
  bool probe(std::string_view key, F&& f) const noexcept {
    const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
    const uint64_t nbits = words_.size() * 64;
    for (uint64_t i = 0; i < 7; ++i) {
      if (!f((h.low64 + i * h.high64) % nbits)) return false;
    }
    return true;
  }

  uint64_t capacity_ = 0;
  uint64_t count_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace duckpart
