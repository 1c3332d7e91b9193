// Test helper: opens a DuckDB file read-write (taking DuckDB's file lock), prints "locked", then
// sleeps until killed. Used to test what duckpart says when another process holds a file.
#include <duckdb.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  duckdb_database db;
  if (duckdb_open(argv[1], &db) != DuckDBSuccess) {
    std::printf("failed\n");
    return 1;
  }
  std::printf("locked\n");
  std::fflush(stdout);
  for (;;) ::pause();
}
