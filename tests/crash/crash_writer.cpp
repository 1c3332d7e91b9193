// A writer process for the crash tests: writes batches 0..K-1 of crash_data.hpp through
// PartitionedDataRepository::create_batch, each with batch id "w-<b>". Run again after a kill -9,
// it replays every batch; replay protection must make each row land exactly once.
//   crash_writer <partition dir> <batches> <rows per batch>
#include <cstdio>
#include <cstdlib>

#include "crash_data.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: crash_writer DIR BATCHES ROWS\n");
    return 2;
  }
  using namespace duckpart;
  PartitionConfig cfg;
  cfg.base_partition_path = argv[1];
  cfg.strategy = PartitionStrategy::kMonthly;
  cfg.max_partitions_in_memory = 8;
  try {
    PartitionedDataRepository repo(cfg);
    const Schema schema = crash::writer_schema();
    const int64_t batches = std::atoll(argv[2]);
    const int64_t rows = std::atoll(argv[3]);
    for (int64_t b = 0; b < batches; ++b) {
      BatchOptions o;
      o.batch_id = "w-" + std::to_string(b);
      repo.create_batch(schema, crash::writer_batch(b, rows), o);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "crash_writer: %s\n", e.what());
    return 1;
  }
  return 0;
}
