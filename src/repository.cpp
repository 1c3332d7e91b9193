#include "duckpart/repository.hpp"

#include <nlohmann/json.hpp>

namespace duckpart {

RecordStream::RecordStream(std::vector<std::string> columns, std::unique_ptr<Source> source,
                           QueryStats stats)
    : columns_(std::move(columns)), source_(std::move(source)), stats_(stats) {}
RecordStream::RecordStream(RecordStream&&) noexcept = default;
RecordStream& RecordStream::operator=(RecordStream&&) noexcept = default;
RecordStream::~RecordStream() = default;

bool RecordStream::next(DataRecord& out) {
  while (pos_ >= buffer_.size()) {
    if (done_ || !source_) return false;
    buffer_.clear();
    pos_ = 0;
    if (!source_->fetch(buffer_)) {
      done_ = true;
      source_.reset();  // releases pinned partitions and the connection as early as possible
      buffer_.clear();
      return false;
    }
  }
  out = std::move(buffer_[pos_++]);
  return true;
}

int64_t RecordStream::for_each(const std::function<bool(const DataRecord&)>& fn) {
  int64_t n = 0;
  DataRecord r;
  while (next(r)) {
    ++n;
    if (!fn(r)) break;
  }
  return n;
}

namespace {

nlohmann::ordered_json opt_ts(const std::optional<Timestamp>& t) {
  return t ? nlohmann::ordered_json(format_timestamp(*t)) : nlohmann::ordered_json();
}
nlohmann::ordered_json opt_date(const std::optional<Date>& d) {
  return d ? nlohmann::ordered_json(format_date(*d)) : nlohmann::ordered_json();
}

}  // namespace

std::string StorageStatistics::to_json() const {
  nlohmann::ordered_json j;
  j["kind"] = kind;
  auto schemas_json = nlohmann::ordered_json::array();
  for (const auto& s : schemas) {
    nlohmann::ordered_json sj;
    sj["schema"] = s.schema;
    sj["directory"] = s.directory;
    sj["total_rows"] = s.total_rows;
    sj["total_bytes"] = s.total_bytes;
    sj["partition_count"] = s.partitions.size();
    auto parts = nlohmann::ordered_json::array();
    for (const auto& p : s.partitions) {
      nlohmann::ordered_json pj;
      pj["name"] = p.name;
      pj["file"] = p.file;
      pj["period_start"] = opt_date(p.period_start);
      pj["period_end"] = opt_date(p.period_end);
      pj["rows"] = p.rows;
      pj["bytes"] = p.bytes;
      pj["min_value"] = opt_ts(p.min_value);
      pj["max_value"] = opt_ts(p.max_value);
      pj["modified_unix"] = p.modified_unix;
      pj["attached"] = p.attached;
      if (!p.problem.empty()) pj["problem"] = p.problem;
      if (p.locked) pj["locked"] = true;
      parts.push_back(std::move(pj));
    }
    sj["partitions"] = std::move(parts);
    sj["problems"] = s.problems;
    schemas_json.push_back(std::move(sj));
  }
  j["schemas"] = std::move(schemas_json);
  j["counters"] = {
      {"partitions_opened", counters.partitions_opened},
      {"partitions_detached", counters.partitions_detached},
      {"partitions_attached_now", counters.partitions_attached_now},
      {"partitions_attached_peak", counters.partitions_attached_peak},
      {"partitions_created", counters.partitions_created},
      {"queries", counters.queries},
      {"partitions_scanned", counters.partitions_scanned},
      {"partitions_pruned", counters.partitions_pruned},
      {"partitions_counted_from_metadata", counters.partitions_counted_from_metadata},
      {"batches_committed", counters.batches_committed},
      {"batches_skipped", counters.batches_skipped},
      {"rows_written", counters.rows_written},
      {"sql_plans_reused", counters.sql_plans_reused},
      {"sql_partition_terms_removed", counters.sql_partition_terms_removed},
      {"ids_found_by_rowid", counters.ids_found_by_rowid},
      {"id_map_bytes", counters.id_map_bytes},
      {"rows_buffered", counters.rows_buffered},
      {"buffer_drains", counters.buffer_drains},
      {"timed_buffer_drains", counters.timed_buffer_drains},
      {"ingest_logs_replayed", counters.ingest_logs_replayed},
  };
  return j.dump(2);
}

}  // namespace duckpart
