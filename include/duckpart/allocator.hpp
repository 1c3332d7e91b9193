// duckpart — process-wide memory allocator settings for bulk work.
#pragma once

#include <string>

namespace duckpart {

// What tune_allocator_for_bulk_work() did.
struct AllocatorTuning {
  bool applied = false;
  std::string reason;  // why not, when not applied
};

// Keeps glibc's malloc from handing memory back to the kernel between the allocations of a bulk
// load, migration or import (DuckDB's buffers, chunks and appender collections are allocated
// and freed millions of times): large blocks stay in the heap instead of one mmap each, and the
// heap is not trimmed after every free. Each page the kernel takes back is zeroed and faulted in
// again on the next allocation; a 40M-row migration spent ~10% of its time doing that.
//
// Process-wide and irreversible, so the library never calls it by itself: call it once at the
// start of a process that does bulk work (manage_partitions does). The cost is memory freed by
// DuckDB staying with the process (up to 512 MB at the top of each heap) until it exits. Not
// applied when the environment already sets glibc.malloc tunables (GLIBC_TUNABLES): the
// operator's choice stands. A no-op on C libraries other than glibc.
AllocatorTuning tune_allocator_for_bulk_work();

}  // namespace duckpart
