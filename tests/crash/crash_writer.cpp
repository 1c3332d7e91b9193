// A writer process for the crash tests: writes batches 0..K-1 of crash_data.hpp through
// PartitionedDataRepository::create_batch, each with batch id "w-<b>". Run again after a kill -9,
// it replays every batch; replay protection must make each row land exactly once.
//   crash_writer <partition dir> <batches> <rows per batch>
// With "buffered ACKFILE": write buffering on (write_buffer_mb = 1, no batch ids); after each
// create_batch returns, a line is appended to ACKFILE and synced. Every acknowledged batch must
// survive a kill (the ingest log is replayed at the next open), the one in flight may or may not.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "crash_data.hpp"

int main(int argc, char** argv) {
  const bool buffered = argc == 6 && std::string(argv[4]) == "buffered";
  if (argc != 4 && !buffered) {
    std::fprintf(stderr, "usage: crash_writer DIR BATCHES ROWS [buffered ACKFILE]\n");
    return 2;
  }
  using namespace duckpart;
  PartitionConfig cfg;
  cfg.base_partition_path = argv[1];
  cfg.strategy = PartitionStrategy::kMonthly;
  cfg.max_partitions_in_memory = 8;
  cfg.write_buffer_mb = buffered ? 1 : 0;  // otherwise the direct write path
  try {
    PartitionedDataRepository repo(cfg);
    const Schema schema = crash::writer_schema();
    const int64_t batches = std::atoll(argv[2]);
    const int64_t rows = std::atoll(argv[3]);
    int ack = -1;
    if (buffered) {
      ack = ::open(argv[5], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (ack < 0) return 2;
    }
    for (int64_t b = 0; b < batches; ++b) {
      BatchOptions o;
      if (!buffered) o.batch_id = "w-" + std::to_string(b);
      repo.create_batch(schema, crash::writer_batch(b, rows), o);
      if (buffered) {
        const std::string line = std::to_string(b) + "\n";
        if (::write(ack, line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
            ::fsync(ack) != 0) {
          return 2;
        }
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "crash_writer: %s\n", e.what());
    return 1;
  }
  return 0;
}
