// DuckDB alone (no duckpart): a streaming result destroyed before its end keeps its connection's
// transaction; a CHECKPOINT after a commit that only inserted and deleted then waits for it, one
// after a commit with an UPDATE fails at once. docs/performance.md, "Session 32". Build and run:
//   gcc -O1 bench/repro/abandoned_stream_checkpoint.c -Ithird_party/duckdb/include \
//       -Lthird_party/duckdb/lib -lduckdb -Wl,-rpath,$PWD/third_party/duckdb/lib -o /tmp/repro
//   timeout 10 /tmp/repro upd      # CHECKPOINT fails at once: "other write transactions active"
//   timeout 10 /tmp/repro delins   # CHECKPOINT waits (timeout, exit 124)
//   timeout 10 /tmp/repro delins next   # the reader runs SELECT 1 first: CHECKPOINT succeeds
#include <duckdb.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void q(duckdb_connection c, const char* sql) {
  duckdb_result r;
  if (duckdb_query(c, sql, &r) != DuckDBSuccess) {
    fprintf(stderr, "ERR %s: %s\n", sql, duckdb_result_error(&r));
  } else {
    fprintf(stderr, "ok  %s\n", sql);
  }
  duckdb_destroy_result(&r);
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "delins";
  const int next = argc > 2 && strcmp(argv[2], "next") == 0;
  const char* file = "/tmp/abandoned_stream_checkpoint.duckdb";
  unlink(file);
  duckdb_database db;
  duckdb_config cfg;
  duckdb_create_config(&cfg);
  duckdb_set_config(cfg, "max_vacuum_tasks", "0");  // as duckpart sets it
  char* err = NULL;
  if (duckdb_open_ext(NULL, &db, cfg, &err) != DuckDBSuccess) return 1;
  duckdb_connection writer, checkpointer, reader;
  duckdb_connect(db, &writer);
  duckdb_connect(db, &checkpointer);
  duckdb_connect(db, &reader);
  char attach[256];
  snprintf(attach, sizeof attach, "ATTACH '%s' AS p", file);
  q(writer, attach);
  q(writer, "CREATE TABLE p.r AS SELECT range AS x FROM range(100000)");
  q(writer, "CREATE TABLE p.m (s VARCHAR, n BIGINT, cv BIGINT)");
  q(writer, "INSERT INTO p.m VALUES ('x', 0, 0)");
  q(writer, "CHECKPOINT p");
  // The reader streams p.r, takes one chunk and drops the result.
  duckdb_prepared_statement ps;
  duckdb_prepare(reader, "SELECT x FROM p.r", &ps);
  duckdb_pending_result pending;
  duckdb_pending_prepared_streaming(ps, &pending);
  duckdb_result rr;
  duckdb_execute_pending(pending, &rr);
  duckdb_data_chunk ch = duckdb_fetch_chunk(rr);
  fprintf(stderr, "reader: one chunk of %llu rows, then the result is destroyed\n",
          (unsigned long long)duckdb_data_chunk_get_size(ch));
  duckdb_destroy_data_chunk(&ch);
  duckdb_destroy_result(&rr);
  duckdb_destroy_pending(&pending);
  duckdb_destroy_prepare(&ps);
  if (next) q(reader, "SELECT 1");
  q(writer, "BEGIN");
  q(writer, "INSERT INTO p.r VALUES (1)");
  if (strcmp(mode, "upd") == 0) {
    q(writer, "UPDATE p.m SET n = n + 1, cv = 1");
  } else {
    q(writer, "INSERT INTO p.m SELECT s, n + 1, 1 FROM p.m");
    q(writer, "DELETE FROM p.m WHERE cv <> 1");
  }
  q(writer, "COMMIT");
  fprintf(stderr, "checkpoint ...\n");
  q(checkpointer, "CHECKPOINT p");
  fprintf(stderr, "done\n");
  return 0;
}
