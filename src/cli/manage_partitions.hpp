// manage_partitions — the operator's command-line tool. The commands live here (a library, tested
// end to end through the real binary); tools/manage_partitions.cpp only calls
// run_manage_partitions().
#pragma once

namespace duckpart::cli {

// Parses arguments, runs one command, prints results on stdout and errors on stderr as
// "manage_partitions: <message>". Returns the process exit code (see README: 0 ok, 1 verification
// or health errors found, 2 invalid argument, 3 not found, 4 conflict, 5 I/O, 6 corruption, 7
// locked, 8 DuckDB error, 9 interrupted).
int run_manage_partitions(int argc, char** argv);

}  // namespace duckpart::cli
