// manage_partitions — see src/cli/manage_partitions.hpp and README.md.
#include "cli/manage_partitions.hpp"
#include "duckpart/allocator.hpp"

int main(int argc, char** argv) {
  // A short-lived process whose big commands (migrate, import, compact, re-partition) are bulk
  // work: keep freed memory in the process (docs/architecture.md, "Allocator").
  duckpart::tune_allocator_for_bulk_work();
  return duckpart::cli::run_manage_partitions(argc, argv);
}
