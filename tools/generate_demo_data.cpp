// generate_demo_data — writes the embedded default data set (synthetic well_production table).
//   generate_demo_data [--database data/data.duckdb] [--rows 2000000] [--seed 42]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "duckpart/demo_data.hpp"
#include "duckpart/error.hpp"

int main(int argc, char** argv) {
  std::string database = "data/data.duckdb";
  duckpart::DemoDataOptions o;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--database") == 0)
      database = argv[i + 1];
    else if (std::strcmp(argv[i], "--rows") == 0)
      o.rows = std::atoll(argv[i + 1]);
    else if (std::strcmp(argv[i], "--seed") == 0)
      o.seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (std::strcmp(argv[i], "--months") == 0)
      o.months = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "generate_demo_data: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  try {
    const auto n = duckpart::generate_well_production(database, o);
    std::printf("generate_demo_data: %lld rows of well_production written to %s (seed %llu)\n",
                static_cast<long long>(n), database.c_str(),
                static_cast<unsigned long long>(o.seed));
  } catch (const duckpart::Error& e) {
    std::fprintf(stderr, "generate_demo_data: %s\n", e.what());
    return 1;
  }
  return 0;
}
