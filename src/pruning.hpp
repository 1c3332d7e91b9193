// Partition pruning: decides from catalog metadata alone whether a partition can hold a matching
// row. Private header.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "query_sql.hpp"

namespace duckpart {

// What the filters on the partition column allow, in microseconds since the epoch (inclusive
// bounds).
class PartitionPredicate {
 public:
  // Folds every filter of `q` on column `partition_index` (others are ignored).
  PartitionPredicate(const CompiledQuery& q, std::size_t partition_index);

  // A partition whose partition-column values all lie in [min, max] (inclusive, microseconds).
  bool may_match(int64_t min, int64_t max) const noexcept;
  // The null partition (rows whose partition value is NULL).
  bool may_match_null() const noexcept { return !impossible_ && !non_null_; }

  // Whether every row of a partition whose partition-column values all lie in [min, max] satisfies
  // the filters on the partition column (so that, when every filter of the query is on that column,
  // its metadata row count is the answer of a count). False when undecidable (LIKE).
  bool covers(int64_t min, int64_t max) const noexcept;
  // The same for the null partition: every filter on the column is TRUE for NULL.
  bool covers_null() const noexcept { return may_match_null() && !undecidable_; }

 private:
  int64_t lo_;
  int64_t hi_;
  std::optional<std::vector<int64_t>> points_;  // sorted; eq/in narrow to these
  std::vector<int64_t> excluded_;               // ne/not_in
  bool non_null_ = false;                       // some filter cannot match NULL
  bool null_only_ = false;                      // is_null
  bool impossible_ = false;                     // e.g. in ()
  bool undecidable_ = false;                    // a filter covers cannot decide (LIKE)
};

}  // namespace duckpart
