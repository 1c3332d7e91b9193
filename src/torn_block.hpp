// duckpart — repair of a metadata block torn by a kill during a DuckDB checkpoint.
//
// A checkpoint writes its new metadata into the free 4 KB slots of an existing 256 KB metadata
// block and writes the whole block back in place (DuckDB's MetadataManager). A kill -9 can cut
// that write short between pages: the block on disk is part new, part old, and DuckDB refuses the
// file ("Corrupt database file: computed checksum X does not match stored checksum Y in block at
// location L"). The slots the active header uses hold the same bytes in both versions (the
// checkpoint wrote only free slots), so storing X (the checksum of the block as it is) restores
// the last committed state (docs/reliability.md; tests/probes/torn_metadata_block.c).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace duckpart {

struct TornBlockRepair {
  uint64_t location = 0;  // byte offset of the block in the file
  uint64_t old_checksum = 0;
  uint64_t new_checksum = 0;
};

// When `duckdb_error` is DuckDB's checksum error for `file` and the block it names is a metadata
// block of the file's active header (the catalog's first block or the free list's) whose stored
// checksum is the one the error names, writes the computed checksum there (synced) and returns
// what it changed; std::nullopt otherwise (nothing written). Throws Error(kIo) when the file
// cannot be read or written. The caller opens the file again and verifies its rows, and calls
// undo_torn_block_repair when that fails.
std::optional<TornBlockRepair> repair_torn_metadata_block(const std::string& file,
                                                          const std::string& duckdb_error);

// Writes the old checksum back (synced). Throws Error(kIo).
void undo_torn_block_repair(const std::string& file, const TornBlockRepair& r);

}  // namespace duckpart
