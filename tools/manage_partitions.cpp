// manage_partitions — see src/cli/manage_partitions.hpp and README.md.
#include "cli/manage_partitions.hpp"

int main(int argc, char** argv) { return duckpart::cli::run_manage_partitions(argc, argv); }
