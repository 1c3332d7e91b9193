#include "chunk_feed.hpp"

#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>

#include "duckpart/error.hpp"

namespace duckpart {

namespace {

std::mutex g_mu;
std::unordered_map<int64_t, ChunkFeed*>& registry() {
  static auto* r = new std::unordered_map<int64_t, ChunkFeed*>();  // never destroyed: no exit race
  return *r;
}

// A fresh random id per feed (the kernel's generator): one id says nothing about another.
int64_t new_id() {
  thread_local std::random_device rd;
  return static_cast<int64_t>((uint64_t{rd()} << 32) ^ rd());
}

void feed_bind(duckdb_bind_info info) {
  duckdb_value v = duckdb_bind_get_parameter(info, 0);
  const int64_t id = duckdb_get_int64(v);
  duckdb_destroy_value(&v);
  ChunkFeed* feed = nullptr;
  {
    std::lock_guard lock(g_mu);
    auto it = registry().find(id);
    // Only the writer that owns a feed may bind it (DuckDB binds on the thread that prepares):
    // its chunks change between executions, and it is destroyed when the writer is done with it.
    // Any other query — whatever id it names — gets this error.
    if (it != registry().end() && it->second->owner() == std::this_thread::get_id()) {
      feed = it->second;
    }
  }
  if (!feed) {
    duckdb_bind_set_error(info, "__duckpart_feed: no such feed (internal to duckpart's writers)");
    return;
  }
  for (std::size_t c = 0; c < feed->types().size(); ++c) {
    duckdb_bind_add_result_column(info, ("c" + std::to_string(c)).c_str(), feed->types()[c]);
  }
  duckdb_bind_set_bind_data(info, feed, nullptr);
}

void feed_init(duckdb_init_info info) {
  duckdb_init_set_max_threads(info, 1);  // one scan thread: the chunks stay in order
  duckdb_init_set_init_data(info, new std::size_t(0),
                            [](void* p) { delete static_cast<std::size_t*>(p); });
}

void feed_function(duckdb_function_info info, duckdb_data_chunk out) {
  auto* feed = static_cast<ChunkFeed*>(duckdb_function_get_bind_data(info));
  auto* next = static_cast<std::size_t*>(duckdb_function_get_init_data(info));
  while (*next < feed->chunks.size() && duckdb_data_chunk_get_size(feed->chunks[*next]) == 0) {
    ++*next;
  }
  if (*next >= feed->chunks.size()) {
    duckdb_data_chunk_set_size(out, 0);
    return;
  }
  duckdb_data_chunk in = feed->chunks[(*next)++];
  const idx_t ncols = duckdb_data_chunk_get_column_count(in);
  for (idx_t c = 0; c < ncols; ++c) {
    duckdb_vector_reference_vector(duckdb_data_chunk_get_vector(out, c),
                                   duckdb_data_chunk_get_vector(in, c));
  }
  duckdb_data_chunk_set_size(out, duckdb_data_chunk_get_size(in));
}

}  // namespace

void ChunkFeed::register_function(duckdb_connection conn) {
  duckdb_table_function f = duckdb_create_table_function();
  duckdb_table_function_set_name(f, kFunction);
  duckdb_logical_type bigint = duckdb_create_logical_type(DUCKDB_TYPE_BIGINT);
  duckdb_table_function_add_parameter(f, bigint);
  duckdb_destroy_logical_type(&bigint);
  duckdb_table_function_set_bind(f, feed_bind);
  duckdb_table_function_set_init(f, feed_init);
  duckdb_table_function_set_function(f, feed_function);
  const duckdb_state st = duckdb_register_table_function(conn, f);
  duckdb_destroy_table_function(&f);
  if (st != DuckDBSuccess) {
    throw Error(ErrorCode::kDuckDb, "cannot register the bulk writers' table function");
  }
}

ChunkFeed::ChunkFeed(std::vector<duckdb_logical_type> types)
    : owner_(std::this_thread::get_id()), types_(std::move(types)) {
  std::lock_guard lock(g_mu);
  do {
    id_ = new_id();
  } while (registry().count(id_) != 0);
  registry()[id_] = this;
}

ChunkFeed::~ChunkFeed() {
  std::lock_guard lock(g_mu);
  registry().erase(id_);
}

}  // namespace duckpart
