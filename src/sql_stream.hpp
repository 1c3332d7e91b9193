// Read-only SQL statements given by users (`manage_partitions sql`, query_sql()). Private header.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "duck/duck.hpp"
#include "duckpart/repository.hpp"

namespace duckpart {

// Prepares `sql`, which must be exactly one SELECT (WITH ... SELECT, VALUES, FROM-first SELECT and
// set operations included). Anything else — INSERT, UPDATE, DELETE, CREATE, COPY, ATTACH, SET,
// several statements — is refused with Error(kInvalidArgument) naming the statement kind, before
// it runs.
duck::Prepared prepare_read_only(duck::Connection& conn, const std::string& sql);

// `sql` with trailing semicolons and blanks removed (so it can be wrapped in a subquery).
std::string strip_statement_end(const std::string& sql);

// The statement that returns the rows of `sql` with every column ChunkDecoder cannot decode (LIST,
// STRUCT, INTERVAL, ...) cast to VARCHAR, keeping the column names; `sql` itself when all decode.
std::string decodable_sql(const duck::Prepared& prepared, const std::string& sql);

// A RecordStream source over a streaming result; owns the objects the result needs (a connection,
// pinned partitions) through `keep_alive`, destroyed after the result.
class SqlResultSource final : public RecordStream::Source {
 public:
  // `failure_context`: prefixed to damage and I/O errors met while reading ("reading partition
  // ...").
  SqlResultSource(std::shared_ptr<void> keep_alive, duck::Result result,
                  std::string failure_context = "")
      : keep_alive_(std::move(keep_alive)),
        result_(std::move(result)),
        decoder_(result_),
        context_(std::move(failure_context)) {}
  bool fetch(std::vector<DataRecord>& out) override {
    duck::DataChunk c;
    try {
      c = result_.fetch();
    } catch (const Error& err) {
      if (context_.empty() ||
          (err.code() != ErrorCode::kCorruption && err.code() != ErrorCode::kIo)) {
        throw;
      }
      throw Error(err.code(), context_ + ": " + err.what());
    }
    if (!c || c.size() == 0) return false;
    decoder_.decode(c, out);
    return true;
  }
  const std::vector<std::string>& names() const noexcept { return decoder_.names(); }

 private:
  std::shared_ptr<void> keep_alive_;
  duck::Result result_;
  duck::ChunkDecoder decoder_;
  std::string context_;
};

}  // namespace duckpart
