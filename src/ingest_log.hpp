// duckpart — the ingest log of buffered writes (write_buffer_mb, on by default).
//
// A buffered create_batch appends its whole batch to one log file per drain and syncs it before it
// returns: that is what makes the call durable while its rows wait in memory for a drain that
// commits them to the partitions in large groups. The drain commits with the log's id as the batch
// id, so a log replayed after a crash — complete or partly committed — lands exactly once.
//
// File: <store dir>/_ingest_<drain id>.log, a sequence of records, each starting on a 4 KB
// boundary (written with direct I/O, zero padded):
//   u32 magic | u32 columns | u64 rows | u64 payload bytes | u64 XXH3-64 of the payload | payload
// payload: per column u8 vector kind (ColumnVector::data's index), u8 has validity, then the
// validity bytes (rows) if any, then the values: fixed-width types raw, UUIDs (kind 5) as 16-byte
// integers, text as u32 lengths followed by the bytes. A record that is cut short or does not match
// its checksum ends the log (the call that wrote it never returned).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <duckdb.h>

#include "duckpart/record.hpp"

namespace duckpart {

class IngestLog {
 public:
  // Creates `path` (must not exist), locks it (flock) and syncs its directory. Throws Error(kIo).
  static IngestLog create(const std::string& path);
  IngestLog(IngestLog&& o) noexcept;
  IngestLog& operator=(IngestLog&& o) noexcept;
  IngestLog(const IngestLog&) = delete;
  IngestLog& operator=(const IngestLog&) = delete;
  ~IngestLog();

  // Appends one batch and syncs the file. On failure the file is cut back to its previous length
  // (when that fails too, broken() turns true: the caller drains and starts a new log) and
  // Error(kIo) naming the file is thrown.
  // `uuids` holds, per column, nothing or the column's parsed UUIDs (one per row, as
  // write_to parses them): those are stored as 16 bytes instead of 36 characters.
  void append(const ColumnBatch& batch, const std::vector<std::vector<duckdb_hugeint>>& uuids);
  bool broken() const noexcept { return broken_; }
  // Cuts the file back to `size` bytes, a length it had after an earlier append: the last
  // record belongs to a call that failed after it was written. When the cut fails, broken()
  // turns true (the caller drains, which deletes the log, and starts a new one).
  void retract(uint64_t size) noexcept;
  const std::string& path() const noexcept { return path_; }
  uint64_t bytes() const noexcept { return size_; }
  // Closes and deletes the file, then syncs the directory. Throws Error(kIo) when it cannot.
  void remove();

  struct Buffer {
    struct Free {
      void operator()(char* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<char, Free> data;
    std::size_t capacity = 0;
  };

  // The record buffer, handed from a log closed to appends to the next one: a batch of 1M rows
  // needs ~75 MB, and a fresh buffer costs a page fault per 4 KB on first touch (a new log starts
  // at every drain). take_buffer leaves this log without one (it would allocate again on append).
  Buffer take_buffer() noexcept {
    Buffer b;
    b.data = std::move(buf_.data);
    b.capacity = std::exchange(buf_.capacity, 0);
    return b;
  }
  void give_buffer(Buffer&& b) noexcept {
    if (b.capacity <= buf_.capacity) return;
    buf_.data = std::move(b.data);
    buf_.capacity = std::exchange(b.capacity, 0);
  }

  struct Contents {
    std::vector<ColumnBatch> batches;
    uint64_t valid_bytes = 0;    // bytes of whole, matching records
    uint64_t ignored_bytes = 0;  // a cut-short or damaged tail
  };
  // Reads every whole record of `path`. Throws Error(kLocked) when another process holds the log,
  // Error(kIo) when it cannot be read.
  static Contents read(const std::string& path);

 private:
  IngestLog() = default;
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool broken_ = false;
  bool direct_ = false;  // O_DIRECT | O_DSYNC: each write is durable when it returns
  Buffer buf_;           // the record being written, reused (4 KB aligned)
};

// Moves every batch of `parts` (same column kinds, in order) into one batch; `parts` is emptied.
ColumnBatch concat_batches(std::vector<ColumnBatch>& parts);

}  // namespace duckpart
