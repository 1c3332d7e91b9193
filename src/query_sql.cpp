#include "query_sql.hpp"

#include <fmt/format.h>

#include "coerce.hpp"
#include "duck/duck.hpp"
#include "duckpart/error.hpp"

namespace duckpart {

std::string_view operator_name(FilterOperator op) noexcept {
  switch (op) {
    case FilterOperator::kEq:
      return "eq";
    case FilterOperator::kNe:
      return "ne";
    case FilterOperator::kGt:
      return "gt";
    case FilterOperator::kGte:
      return "gte";
    case FilterOperator::kLt:
      return "lt";
    case FilterOperator::kLte:
      return "lte";
    case FilterOperator::kIn:
      return "in";
    case FilterOperator::kNotIn:
      return "not_in";
    case FilterOperator::kLike:
      return "like";
    case FilterOperator::kBetween:
      return "between";
    case FilterOperator::kIsNull:
      return "is_null";
    case FilterOperator::kIsNotNull:
      return "is_not_null";
  }
  return "?";
}

FilterOperator parse_operator(std::string_view name) {
  static constexpr FilterOperator kAll[] = {
      FilterOperator::kEq,      FilterOperator::kNe,     FilterOperator::kGt,
      FilterOperator::kGte,     FilterOperator::kLt,     FilterOperator::kLte,
      FilterOperator::kIn,      FilterOperator::kNotIn,  FilterOperator::kLike,
      FilterOperator::kBetween, FilterOperator::kIsNull, FilterOperator::kIsNotNull};
  for (FilterOperator op : kAll) {
    if (operator_name(op) == name) return op;
  }
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("unknown filter operator '{}': expected eq, ne, gt, gte, lt, lte, in, "
                          "not_in, like, between, is_null or is_not_null",
                          name));
}

const Value& PaginatedResponse::value(std::size_t row, std::string_view column) const {
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == column) return items.at(row).values.at(i);
  }
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("column '{}' is not part of this result", column));
}

namespace {

bool decoded_natively(ColumnType t) { return t != ColumnType::kOther; }

std::string select_item(const Column& c) {
  const std::string q = duck::quote_ident(c.name);
  if (decoded_natively(c.type)) return q;
  return fmt::format("CAST({} AS VARCHAR) AS {}", q, q);
}

std::string param(const Column& c, const Value& v) {
  return fmt::format("CAST(? AS {})", param_sql_type(c, v));
}

// A filter operand: a constant where SQL text can carry the value exactly (see constant_sql), else
// a parameter added to `params`.
std::string operand(const Column& c, const Value& v, std::vector<Value>& params) {
  if (std::optional<std::string> constant = constant_sql(c, v)) return *constant;
  params.push_back(v);
  return param(c, v);
}

}  // namespace

std::string full_select_list(const Schema& schema) {
  std::string out;
  for (const auto& c : schema.columns()) {
    if (!out.empty()) out += ", ";
    out += select_item(c);
  }
  return out;
}

CompiledQuery compile_query(const Schema& schema, const DataQueryRequest& request) {
  CompiledQuery q;
  // Projection.
  if (request.columns.empty()) {
    for (std::size_t i = 0; i < schema.columns().size(); ++i) q.projection.push_back(i);
  } else {
    for (const auto& name : request.columns) {
      const std::size_t i = schema.index_of(name, "projected column");
      for (std::size_t seen : q.projection) {
        if (seen == i) {
          throw Error(ErrorCode::kInvalidArgument,
                      fmt::format("projected column '{}' is listed twice", name));
        }
      }
      q.projection.push_back(i);
    }
  }
  for (std::size_t i : q.projection) {
    const Column& c = schema.columns()[i];
    if (!q.select_list.empty()) q.select_list += ", ";
    q.select_list += select_item(c);
    q.column_names.push_back(c.name);
  }
  // Filters.
  std::string where;
  for (std::size_t fi = 0; fi < request.filters.size(); ++fi) {
    const QueryFilter& f = request.filters[fi];
    const std::string ctx = fmt::format("filter {} ({} {})", fi + 1, f.field, operator_name(f.op));
    BoundFilter b;
    b.column = schema.index_of(f.field, "filter column");
    b.op = f.op;
    const Column& c = schema.columns()[b.column];
    const std::string col = duck::quote_ident(c.name);
    auto one = [&]() {
      if (!f.values.empty()) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("{}: takes one value, not a list", ctx));
      }
      if (f.value.is_null()) {
        throw Error(
            ErrorCode::kInvalidArgument,
            fmt::format("{}: value is NULL (use is_null / is_not_null to test for NULL)", ctx));
      }
      b.values.push_back(coerce_value(c, f.value, ctx, /*allow_time=*/true));
    };
    auto many = [&]() {
      std::vector<Value> src = f.values;
      if (src.empty() && !f.value.is_null()) src.push_back(f.value);
      for (const Value& v : src) {
        if (v.is_null()) {
          throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: list contains NULL", ctx));
        }
        b.values.push_back(coerce_value(c, v, ctx, /*allow_time=*/true));
      }
    };
    std::string cond;
    switch (f.op) {
      case FilterOperator::kEq:
      case FilterOperator::kNe:
      case FilterOperator::kGt:
      case FilterOperator::kGte:
      case FilterOperator::kLt:
      case FilterOperator::kLte: {
        one();
        static constexpr const char* kSym[] = {"=", "<>", ">", ">=", "<", "<="};
        cond = fmt::format("{} {} {}", col, kSym[static_cast<int>(f.op)],
                           operand(c, b.values[0], q.where_params));
        break;
      }
      case FilterOperator::kLike: {
        if (c.type != ColumnType::kVarchar) {
          throw Error(
              ErrorCode::kInvalidArgument,
              fmt::format("{}: like needs a VARCHAR column, '{}' is {}", ctx, c.name, c.sql_type));
        }
        one();
        cond = fmt::format("{} LIKE {}", col, operand(c, b.values[0], q.where_params));
        break;
      }
      case FilterOperator::kIn:
      case FilterOperator::kNotIn: {
        many();
        if (b.values.empty()) {
          // Empty list: in matches nothing, not_in everything (SQL has no empty IN list).
          cond = f.op == FilterOperator::kIn ? "FALSE" : "TRUE";
          break;
        }
        std::string list;
        for (const Value& v : b.values) {
          if (!list.empty()) list += ", ";
          list += operand(c, v, q.where_params);
        }
        cond = fmt::format("{} {} ({})", col, f.op == FilterOperator::kIn ? "IN" : "NOT IN", list);
        break;
      }
      case FilterOperator::kBetween: {
        many();
        if (b.values.size() != 2) {
          throw Error(ErrorCode::kInvalidArgument,
                      fmt::format("{}: between needs exactly two values (low, high), got {}", ctx,
                                  b.values.size()));
        }
        const std::string low = operand(c, b.values[0], q.where_params);
        cond =
            fmt::format("{} BETWEEN {} AND {}", col, low, operand(c, b.values[1], q.where_params));
        break;
      }
      case FilterOperator::kIsNull:
      case FilterOperator::kIsNotNull:
        if (!f.value.is_null() || !f.values.empty()) {
          throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: takes no value", ctx));
        }
        cond = fmt::format("{} IS {}NULL", col, f.op == FilterOperator::kIsNull ? "" : "NOT ");
        break;
    }
    where += where.empty() ? " WHERE " : " AND ";
    where += "(" + cond + ")";
    q.filters.push_back(std::move(b));
  }
  q.where_sql = std::move(where);
  // Sort.
  for (std::size_t si = 0; si < request.sort.size(); ++si) {
    const SortKey& s = request.sort[si];
    const std::size_t i = schema.index_of(s.field, "sort column");
    q.order_sql += q.order_sql.empty() ? " ORDER BY " : ", ";
    // A column selected as text (select_item) is sorted by its own type: by its bare name
    // DuckDB would sort the text alias (UBIGINT 10 before 9, INTERVALs as text). Inside an
    // expression the name means the table's column.
    const Column& col = schema.columns()[i];
    const std::string key =
        decoded_natively(col.type)
            ? duck::quote_ident(col.name)
            : fmt::format("CAST({} AS {})", duck::quote_ident(col.name), col.sql_type);
    q.order_sql +=
        fmt::format("{} {} NULLS LAST", key, s.direction == SortDirection::kAsc ? "ASC" : "DESC");
  }
  if (request.limit && *request.limit < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("limit must not be negative (got {})", *request.limit));
  }
  if (request.offset < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("offset must not be negative (got {})", request.offset));
  }
  q.limit = request.limit;
  q.offset = request.offset;
  return q;
}

std::string rows_sql(const CompiledQuery& q, const std::string& source, bool paged,
                     std::vector<Value>& params) {
  std::string sql =
      fmt::format("SELECT {} FROM {}{}{}", q.select_list, source, q.where_sql, q.order_sql);
  params.insert(params.end(), q.where_params.begin(), q.where_params.end());
  if (paged) {
    if (q.limit) {
      sql += " LIMIT ?";
      params.emplace_back(*q.limit);
    }
    if (q.offset > 0) {
      sql += " OFFSET ?";
      params.emplace_back(q.offset);
    }
  }
  return sql;
}

std::string count_sql(const CompiledQuery& q, const std::string& source,
                      std::vector<Value>& params) {
  params.insert(params.end(), q.where_params.begin(), q.where_params.end());
  return fmt::format("SELECT count(*) FROM {}{}", source, q.where_sql);
}

}  // namespace duckpart
