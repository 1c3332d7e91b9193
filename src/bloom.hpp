// A Bloom filter over id values, persisted beside a partition as a rebuildable cache. Private
// header.
#pragma once

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace duckpart {

// A split-block Bloom filter: every id sets its 7 bits inside one 512-bit block (one cache line),
// so a lookup reads one line per partition, and the caller can prefetch that line for every
// candidate partition before it tests any (get_by_id over hundreds of partitions: one miss each,
// overlapped, instead of up to 7 dependent misses each). The id is hashed once per lookup (Hash),
// not once per partition.
//
// Threads: one writer at a time (add, save; load only before the filter is shared) — the caller's
// lock — while any number of readers test (may_contain, prefetch): the words are read and written
// as relaxed atomics (plain loads and stores on x86), so a reader sees each word before or after
// an add, never torn. Which ids a reader is sure to see is the caller's protocol: get_by_id
// trusts a filter for the commit version it is stamped with, and the stamp is published under a
// lock the reader also takes (PartitionedDataRepository: Store::filters_mu).
class IdBloom {
 public:
  struct Hash {
    uint64_t block;  // picks the block
    uint64_t bits;   // 7 x 9 bits: the bits inside the block
  };
  static Hash hash(std::string_view key) noexcept {
    const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
    return {h.low64, h.high64};
  }

  IdBloom() = default;
  // Sized for `capacity` ids at about 1% false positives when full (10 bits, 7 probes per id;
  // get_by_id sizes it for twice the rows it adds: ~0.03% then, against ~0.02% for a filter
  // that spreads an id's bits over the whole array).
  explicit IdBloom(uint64_t capacity) : capacity_(capacity) {
    const uint64_t bits = std::max<uint64_t>(capacity * 10, 1024);
    words_.assign((bits + kBlockBits - 1) / kBlockBits * kBlockWords, 0);
  }

  uint64_t capacity() const noexcept { return capacity_; }
  uint64_t count() const noexcept { return count_; }
  bool full() const noexcept { return count_ > capacity_; }
  void add(std::string_view key) noexcept { add(hash(key)); }
  void add(const Hash& h) noexcept {
    ++count_;
    if (words_.empty()) return;
    uint64_t* block = words_.data() + block_of(h, blocks()) * kBlockWords;
    for (int i = 0; i < kProbes; ++i) {
      const uint64_t bit = (h.bits >> (9 * i)) & (kBlockBits - 1);
      std::atomic_ref<uint64_t> word(block[bit >> 6]);
      word.store(word.load(std::memory_order_relaxed) | uint64_t{1} << (bit & 63),
                 std::memory_order_relaxed);
    }
  }
  bool may_contain(std::string_view key) const noexcept { return may_contain(hash(key)); }
  bool may_contain(const Hash& h) const noexcept {
    return words_.empty() || may_contain(words_.data(), blocks(), h);
  }
  // Starts loading the cache line may_contain(h) will read.
  void prefetch(const Hash& h) const noexcept {
    if (!words_.empty()) prefetch(words_.data(), blocks(), h);
  }

  // The words and their block count, for a caller that keeps them beside other per-partition
  // state so that testing hundreds of filters reads one line per filter, not the IdBloom object
  // first (get_by_id). The words never move once the filter is shared (add() does not resize).
  const uint64_t* words() const noexcept { return words_.data(); }
  uint64_t blocks() const noexcept { return words_.size() / kBlockWords; }
  static bool may_contain(const uint64_t* words, uint64_t blocks, const Hash& h) noexcept {
    // atomic_ref<const T> is C++26: the words are only loaded.
    auto* block = const_cast<uint64_t*>(words + block_of(h, blocks) * kBlockWords);
    for (int i = 0; i < kProbes; ++i) {
      const uint64_t bit = (h.bits >> (9 * i)) & (kBlockBits - 1);
      const uint64_t word =
          std::atomic_ref<uint64_t>(block[bit >> 6]).load(std::memory_order_relaxed);
      if (!((word >> (bit & 63)) & 1)) return false;
    }
    return true;
  }
  static void prefetch(const uint64_t* words, uint64_t blocks, const Hash& h) noexcept {
    __builtin_prefetch(words + block_of(h, blocks) * kBlockWords);
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
      // Through atomic loads, like the readers that may be testing it meanwhile.
      std::vector<uint64_t> copy(words_.size());
      for (std::size_t i = 0; i < copy.size(); ++i) {
        copy[i] = std::atomic_ref<uint64_t>(const_cast<uint64_t&>(words_[i]))
                      .load(std::memory_order_relaxed);
      }
      out.write(reinterpret_cast<const char*>(copy.data()),
                static_cast<std::streamsize>(copy.size() * sizeof(uint64_t)));
      if (!out) return false;
    }
    return std::rename(tmp.c_str(), path.c_str()) == 0;
  }

  // Loads a filter saved for exactly `stamp`; false if missing, damaged, of another stamp or of
  // the earlier format (magic UDPBLOM1: one probe per line, rebuilt from the partition).
  bool load(const std::string& path, int64_t stamp) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    uint64_t header[5] = {};
    if (!in.read(reinterpret_cast<char*>(header), sizeof(header))) return false;
    if (header[0] != kMagic || header[1] != static_cast<uint64_t>(stamp) ||
        header[4] > (1ULL << 32) || header[4] == 0 || header[4] % kBlockWords != 0) {
      return false;
    }
    // A damaged header must not make it allocate more than the file holds.
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec || size != sizeof(header) + header[4] * sizeof(uint64_t)) return false;
    Words words(header[4]);
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
  static constexpr uint64_t kMagic = 0x324d4f4c42504455ULL;  // "UDPBLOM2"
  static constexpr int kProbes = 7;
  static constexpr uint64_t kBlockBits = 512;
  static constexpr std::size_t kBlockWords = kBlockBits / 64;
  static constexpr std::size_t kLine = 64;

  // Blocks start on a cache line. A filter of 2 MB or more is mapped on its own, 2 MB-aligned,
  // and its whole 2 MB stretches are advised as transparent huge pages: a lookup over hundreds of
  // partitions reads one block of each filter, and with 4 KB pages each read also walked the page
  // tables, whose lines are cold after DuckDB's read of the previous lookup (filter tests over
  // 360 partitions, found ids: 19-21 us -> 10.4 us; absent ids in a hot loop: no difference).
  // The tail past the last whole 2 MB stays in 4 KB pages: no memory is added.
  template <class T>
  struct LineAllocator {
    using value_type = T;
    static constexpr std::size_t kHuge = std::size_t{2} << 20;
    static constexpr std::size_t kPage = 4096;
    LineAllocator() = default;
    template <class U>
    LineAllocator(const LineAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
    T* allocate(std::size_t n) {
      const std::size_t bytes = n * sizeof(T);
      if (bytes < kHuge) {
        return static_cast<T*>(::operator new (bytes, std::align_val_t{kLine}));
      }
      const std::size_t size = (bytes + kPage - 1) / kPage * kPage;
      void* raw =
          ::mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (raw == MAP_FAILED) throw std::bad_alloc();
      // Keep the 2 MB-aligned stretch of `size` bytes; unmap what lies before and after it.
      const auto start = reinterpret_cast<std::uintptr_t>(raw);
      const std::uintptr_t aligned = (start + kHuge - 1) / kHuge * kHuge;
      if (aligned > start) ::munmap(raw, aligned - start);
      const std::uintptr_t end = start + size + kHuge;
      if (end > aligned + size)
        ::munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
      auto* p = reinterpret_cast<void*>(aligned);
      ::madvise(p, size / kHuge * kHuge, MADV_HUGEPAGE);  // advice: ignored where THP is off
      return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t n) noexcept {
      const std::size_t bytes = n * sizeof(T);
      if (bytes < kHuge) {
        ::operator delete (p, std::align_val_t{kLine});
        return;
      }
      ::munmap(p, (bytes + kPage - 1) / kPage * kPage);
    }
    bool operator==(const LineAllocator&) const noexcept { return true; }
  };
  using Words = std::vector<uint64_t, LineAllocator<uint64_t>>;

  // The block: the high half of h.block * blocks (no division).
  static uint64_t block_of(const Hash& h, uint64_t blocks) noexcept {
    __extension__ using U128 = unsigned __int128;
    return static_cast<uint64_t>((static_cast<U128>(h.block) * blocks) >> 64);
  }

  uint64_t capacity_ = 0;
  uint64_t count_ = 0;
  Words words_;
};

}  // namespace duckpart
