#include "duckpart/error.hpp"

namespace duckpart {

std::string_view error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid argument";
    case ErrorCode::kNotFound:
      return "not found";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kIo:
      return "i/o error";
    case ErrorCode::kCorruption:
      return "corruption";
    case ErrorCode::kLocked:
      return "locked";
    case ErrorCode::kDuckDb:
      return "duckdb error";
    case ErrorCode::kInterrupted:
      return "interrupted";
  }
  return "error";
}

}  // namespace duckpart
