// Building and checking ColumnBatches; ids. Private header.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "duckpart/record.hpp"
#include "duckpart/schema.hpp"

namespace duckpart {

// Converts records (values in schema order) into a ColumnBatch, coercing each value to its column's
// type. Throws Error(kInvalidArgument) naming the record position, column and value.
ColumnBatch records_to_batch(const Schema& schema, const std::vector<DataRecord>& records);
// A record given as column -> value (the seed's dict form) in schema order; unknown columns throw.
DataRecord record_from_map(const Schema& schema, const std::map<std::string, Value>& data);
// A record a store would refuse, and why (the message names the record, column and value).
struct RefusedRecord {
  std::size_t record = 0;
  std::string message;
};
// Checks the batch's shape (column count, vector types and lengths; throws Error(kInvalidArgument))
// and returns the first record (lowest position) holding a value the stores refuse without asking
// DuckDB: text that is not UTF-8, an integer outside its column's range, a FLOAT overflow, a NULL
// partition value or one outside the partition years; nullopt when there is none.
std::optional<RefusedRecord> first_refused_record(const Schema& schema, const ColumnBatch& batch);
// Throws the first refused record's error (first_refused_record).
void check_batch(const Schema& schema, const ColumnBatch& batch);
// Every check of a write's intake: check_batch, and DuckDB's casts (duck::check_casts) of the
// records before the first refused one, so the error names the batch's first bad record.
void check_intake(const Schema& schema, const ColumnBatch& batch);
// Refuses (Error kInvalidArgument naming the id and the prefix) a batch id an application chose
// that starts with a prefix reserved for the tools' own batches: "migrate:" and
// "migrate-catchup:" (a migration's copies) and "repartition:" (a re-partitioning's). `migrate`'s
// catch-up takes a partition whose batches all carry such ids for one only the tools wrote, and
// may replace it by a fresh copy of the source: an application batch under such an id would be
// lost with it.
void check_batch_id(const std::string& batch_id);
// Fills NULL id cells with fresh time-ordered ids; returns how many were generated.
int64_t assign_missing_ids(const Schema& schema, ColumnBatch& batch);
// Row `row` of the batch as Values (for returning created records, messages and tests).
DataRecord batch_row(const Schema& schema, const ColumnBatch& batch, std::size_t row);
// Value of one cell.
Value batch_cell(const Schema& schema, const ColumnBatch& batch, std::size_t col, std::size_t row);
// A new UUIDv7 (RFC 9562): 48-bit millisecond time, then random bits; monotonic within a process.
std::string new_uuid_v7();
// A new time-ordered 63-bit integer id (milliseconds << 20 | sequence).
int64_t new_time_ordered_id();

}  // namespace duckpart
