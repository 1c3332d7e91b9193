// duckpart — errors.
//
// One exception type for the whole library. Every message names what went wrong and where: the
// file, partition, column, record or value involved. Operations throw only when they cannot
// complete; a legitimately absent result is a std::optional.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace duckpart {

// What kind of failure an Error is. The CLI maps each kind to a documented exit code.
enum class ErrorCode {
  kInvalidArgument = 2,  // bad input: a value, a column name, a configuration field
  kNotFound = 3,         // a partition, file, schema or record that must exist does not
  kConflict = 4,         // the operation contradicts the store's state (other schema/strategy, ...)
  kIo = 5,               // the file system refused (permissions, disk full, missing directory)
  kCorruption = 6,       // a file is damaged or not what its name says
  kLocked = 7,           // a file is held by another process (or another repository in this one)
  kDuckDb = 8,           // DuckDB reported an error we do not classify further
  kInterrupted = 9,      // the operation was stopped on request (Ctrl-C) at a safe point
};

// Returns a stable lower-case name for `code` ("invalid argument", "locked", ...).
std::string_view error_code_name(ErrorCode code) noexcept;

// The library's only exception type. what() is a complete, human-readable sentence.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace duckpart
