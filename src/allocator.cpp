#include "duckpart/allocator.hpp"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace duckpart {

AllocatorTuning tune_allocator_for_bulk_work() {
  AllocatorTuning t;
#if defined(__GLIBC__)
  if (const char* env = std::getenv("GLIBC_TUNABLES"); env && std::strstr(env, "glibc.malloc.")) {
    t.reason = "GLIBC_TUNABLES sets malloc tunables";
    return t;
  }
  // A fixed mmap threshold (glibc moves it up to 32 MB by itself, one freed block at a time),
  // a heap trimmed only when 512 MB are free at its top, and 64 MB more asked of the kernel at
  // each growth (fewer brk/mmap calls). Measured: docs/performance.md, "Session 8".
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1 && mallopt(M_TOP_PAD, 64 << 20) == 1;
  t.applied = ok;
  if (!ok) t.reason = "mallopt refused a setting";
#else
  t.reason = "not glibc";
#endif
  return t;
}

}  // namespace duckpart
