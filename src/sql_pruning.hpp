// Partition pruning for arbitrary read-only SQL. Private header.
//
// DuckDB's optimizer already knows which predicates restrict a table scan: EXPLAIN shows them as
// the scan's "Filters" (constants folded, BETWEEN and casts normalised, pushed through CTEs,
// subqueries and joins). We explain the user's statement against an empty stand-in table, read
// the filters on the partition column of every scan of it and keep the partitions whose stored
// [min, max] can hold a matching row. Any filter text we do not understand widens the range (a
// conjunct ignored can only keep more partitions), so the answer is always that of the full table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace duckpart {

// A set of partition-column values: inclusive microsecond intervals, plus whether NULL is allowed.
struct ValueSet {
  struct Interval {
    int64_t lo;
    int64_t hi;
  };
  std::vector<Interval> intervals;  // sorted, disjoint
  bool null_ok = true;

  static ValueSet all();
  static ValueSet none();
  static ValueSet range(int64_t lo, int64_t hi);  // NULL excluded
  ValueSet intersect(const ValueSet& o) const;
  ValueSet unite(const ValueSet& o) const;
  bool overlaps(int64_t lo, int64_t hi) const noexcept;
  bool is_all() const noexcept;
};

// What one scan's "Filters" text allows for `column` (a DATE or TIMESTAMP column; `column_is_date`
// says which). Unknown conjuncts are ignored.
ValueSet filter_value_set(std::string_view filters, std::string_view column, bool column_is_date);

// Whether the filters DuckDB derives from `sql` are the same every time it runs: false when the
// statement names a function whose value changes between runs (now(), current_date, today(),
// random(), uuid(), nextval(), getvariable(), ...). Conservative: a column or text that merely
// looks like one of those names also gives false.
bool sql_filters_are_stable(std::string_view sql);

// One table scan of an EXPLAIN (FORMAT JSON) plan.
struct ExplainedScan {
  std::string table;
  std::string filters;  // conjuncts joined by " AND "; empty when none
};
// Every table scan in an EXPLAIN (FORMAT JSON) output. Throws Error(kDuckDb) when it does not
// parse. `late_materialized`: leave out the unfiltered scans DuckDB's late materialization joins
// back on rowid (see rowid_fetch_scan in the .cpp); pass it only for a statement that does not
// name `rowid` itself, whose own joins on rowid would look the same.
std::vector<ExplainedScan> explained_scans(std::string_view explain_json,
                                           bool late_materialized = false);

}  // namespace duckpart
