#include "pruning.hpp"

#include <algorithm>
#include <limits>

#include "coerce.hpp"

namespace duckpart {

PartitionPredicate::PartitionPredicate(const CompiledQuery& q, std::size_t partition_index)
    : lo_(std::numeric_limits<int64_t>::min()), hi_(std::numeric_limits<int64_t>::max()) {
  auto narrow_points = [&](std::vector<int64_t> pts) {
    std::sort(pts.begin(), pts.end());
    pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
    if (!points_) {
      points_ = std::move(pts);
      return;
    }
    std::vector<int64_t> both;
    std::set_intersection(points_->begin(), points_->end(), pts.begin(), pts.end(),
                          std::back_inserter(both));
    points_ = std::move(both);
  };
  for (const BoundFilter& f : q.filters) {
    if (f.column != partition_index) continue;
    std::vector<int64_t> v;
    for (const Value& x : f.values) v.push_back(temporal_micros(x));
    switch (f.op) {
      case FilterOperator::kEq:
        non_null_ = true;
        narrow_points({v[0]});
        break;
      case FilterOperator::kNe:
        non_null_ = true;
        excluded_.push_back(v[0]);
        break;
      case FilterOperator::kGt:
        non_null_ = true;
        if (v[0] == std::numeric_limits<int64_t>::max())
          impossible_ = true;
        else
          lo_ = std::max(lo_, v[0] + 1);
        break;
      case FilterOperator::kGte:
        non_null_ = true;
        lo_ = std::max(lo_, v[0]);
        break;
      case FilterOperator::kLt:
        non_null_ = true;
        if (v[0] == std::numeric_limits<int64_t>::min())
          impossible_ = true;
        else
          hi_ = std::min(hi_, v[0] - 1);
        break;
      case FilterOperator::kLte:
        non_null_ = true;
        hi_ = std::min(hi_, v[0]);
        break;
      case FilterOperator::kBetween:
        non_null_ = true;
        lo_ = std::max(lo_, v[0]);
        hi_ = std::min(hi_, v[1]);
        break;
      case FilterOperator::kIn:
        non_null_ = true;
        if (v.empty()) impossible_ = true;
        narrow_points(std::move(v));
        break;
      case FilterOperator::kNotIn:
        if (!v.empty()) non_null_ = true;  // NOT IN () is TRUE, also for NULL
        excluded_.insert(excluded_.end(), v.begin(), v.end());
        break;
      case FilterOperator::kIsNull:
        null_only_ = true;
        break;
      case FilterOperator::kIsNotNull:
        non_null_ = true;
        break;
      case FilterOperator::kLike:
        non_null_ = true;
        undecidable_ = true;
        break;
    }
  }
  if (null_only_ && non_null_) impossible_ = true;
  std::sort(excluded_.begin(), excluded_.end());
}

bool PartitionPredicate::may_match(int64_t min, int64_t max) const noexcept {
  if (impossible_ || null_only_) return false;
  const int64_t a = std::max(min, lo_);
  const int64_t b = std::min(max, hi_);
  if (a > b) return false;
  auto excluded = [&](int64_t x) {
    return std::binary_search(excluded_.begin(), excluded_.end(), x);
  };
  if (points_) {
    auto it = std::lower_bound(points_->begin(), points_->end(), a);
    for (; it != points_->end() && *it <= b; ++it) {
      if (!excluded(*it)) return true;
    }
    return false;
  }
  if (a == b && excluded(a)) return false;
  return true;
}

bool PartitionPredicate::covers(int64_t min, int64_t max) const noexcept {
  if (impossible_ || null_only_ || undecidable_ || min > max) return false;
  if (min < lo_ || max > hi_) return false;
  // eq / in: only a partition holding a single value, one of the points.
  if (points_ && (min != max || !std::binary_search(points_->begin(), points_->end(), min))) {
    return false;
  }
  auto it = std::lower_bound(excluded_.begin(), excluded_.end(), min);
  return it == excluded_.end() || *it > max;  // ne / not in: no excluded value in [min, max]
}

}  // namespace duckpart
