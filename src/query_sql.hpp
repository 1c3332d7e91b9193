// Turns a DataQueryRequest into parameterised SQL over any row source. Private header, shared by
// both repositories so that they have the same semantics by construction; the differential tests
// then check what differs between them: routing, pruning, attaching and unions.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "duckpart/query.hpp"
#include "duckpart/schema.hpp"

namespace duckpart {

// One validated filter: values coerced to the column's type.
struct BoundFilter {
  std::size_t column = 0;
  FilterOperator op = FilterOperator::kEq;
  std::vector<Value> values;  // 0 (is_null...), 1 (comparisons, like) or n (in, not_in, between: 2)
};

struct CompiledQuery {
  std::vector<BoundFilter> filters;
  std::vector<std::size_t> projection;  // schema column indices, in output order
  std::vector<std::string> column_names;
  std::string select_list;  // quoted, with casts for types decoded as text
  std::string where_sql;    // "" or " WHERE ..." with ? placeholders
  std::vector<Value> where_params;
  std::string order_sql;  // "" or " ORDER BY ..."
  std::optional<int64_t> limit;
  int64_t offset = 0;
};

// Validates every field, operator and value against `schema`; throws Error(kInvalidArgument) naming
// the filter/sort/projection entry, the column and the value.
CompiledQuery compile_query(const Schema& schema, const DataQueryRequest& request);

// SELECT <projection> FROM <source> <where> <order> [LIMIT/OFFSET]; appends parameters to `params`.
std::string rows_sql(const CompiledQuery& q, const std::string& source, bool paged,
                     std::vector<Value>& params);
// SELECT count(*) FROM <source> <where>.
std::string count_sql(const CompiledQuery& q, const std::string& source,
                      std::vector<Value>& params);
// Select list of every schema column (casts included) — for get_by_id.
std::string full_select_list(const Schema& schema);

}  // namespace duckpart
