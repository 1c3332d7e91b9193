#include "duckpart/partitioned_repository.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "batch.hpp"
#include "bloom.hpp"
#include "chunk_feed.hpp"
#include "chunk_gather.hpp"
#include "coerce.hpp"
#include "connection_pool.hpp"
#include "duck/duck.hpp"
#include "duck/duckdb_internal.hpp"
#include "duckpart/error.hpp"
#include "id_map.hpp"
#include "ingest_log.hpp"
#include "parallel_tasks.hpp"
#include "partition_files.hpp"
#include "pruning.hpp"
#include "query_sql.hpp"
#include "sql_pruning.hpp"
#include "sql_stream.hpp"
#include "table_sql.hpp"
#include "torn_block.hpp"

namespace fs = std::filesystem;

namespace duckpart {

namespace {

// Directories held by a repository of this process: DuckDB's file locks are per process, so two
// repositories here on one directory would not exclude each other.
std::mutex g_dirs_mu;
std::set<std::string> g_open_dirs;

// What the statements of get_all, count_all and stream_query_results over `schema` use: built-ins
// only unless a column is TIMESTAMPTZ (ICU changes its text form and casts) or of a type duckpart
// does not model (JSON and the like belong to extensions).
duck::Uses reads_use(const Schema& schema) {
  for (const Column& c : schema.columns()) {
    if (c.type == ColumnType::kTimestampTz || c.type == ColumnType::kOther) {
      return duck::Uses::kAnything;
    }
  }
  return duck::Uses::kBuiltinsOnly;
}

// A partition's id range in a form get_by_id compares without touching the ids themselves (heap
// strings for UUIDs): BIGINT ids exactly (sign bit flipped, so that unsigned order is numeric
// order), text ids by their first 16 bytes read big-endian and padded with zero bytes. For text,
// a bound below another's means the id is below it too (std::string compares bytes unsigned, and
// a zero pad only ties with a zero byte); equal bounds decide nothing: the ids are compared whole.
__extension__ using IdBound = unsigned __int128;
enum class IdForm : uint8_t { kNone, kBigint, kText, kOther };

IdForm id_form(const Value& v) {
  if (v.is<int64_t>()) return IdForm::kBigint;
  if (v.is<std::string>()) return IdForm::kText;
  return IdForm::kOther;
}

IdBound id_bound(const Value& v) {
  if (v.is<int64_t>()) return static_cast<uint64_t>(v.get<int64_t>()) ^ (uint64_t{1} << 63);
  if (!v.is<std::string>()) return 0;
  const std::string& t = v.get<std::string>();
  IdBound b = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    b = b << 8 | (i < t.size() ? static_cast<unsigned char>(t[i]) : 0U);
  }
  return b;
}

// One partition file of one schema. Metadata is written under both write_mu (held for the whole
// commit) and Impl::mu (held briefly); it is read under either.
struct Entry {
  // What get_by_id reads of every partition, in one cache line: the id range in compact form and
  // the commit version (under Impl::mu, kept with the metadata by set_meta), and the id filter's
  // words and version (under the store's filters_mu, kept with `bloom` by set_bloom). Over 360
  // partitions, a lookup read the map node, the entry, the metadata's id values and their heap
  // text, then the filter object and its block: ~80 ns per partition, mostly waiting on memory.
  struct alignas(64) IdProbe {
    IdBound min_id = 0;
    IdBound max_id = 0;
    int64_t commit_version = 0;
    IdForm form = IdForm::kNone;  // kNone: the partition holds no id
    uint32_t filter_blocks = 0;
    const uint64_t* filter_words = nullptr;  // nullptr: no filter
    int64_t filter_version = -1;             // the commit version the filter holds the ids of
  };
  IdProbe probe;
  std::string problem;  // non-empty: the file cannot be used
  PartitionKey key;
  std::string name;
  std::string file;
  std::string alias;
  // Read-only instances: the file's stamp when `meta` was read (from the catalog or the file).
  // Another process may commit to a file this instance does not hold attached; a count answered
  // from `meta` checks first that the file still has this stamp (count_all).
  std::optional<FileStamp> meta_stamp;
  // For a file whose stored period differs from its name: the [min, max] its metadata claims, so
  // that queries over those values still see it (and fail naming it) instead of missing its rows.
  std::optional<std::pair<int64_t, int64_t>> stored_range;
  bool dropped = false;  // removed by drop_partition (kept alive for requests that still hold it)
  // Its file was locked by another process (a writer) when its metadata had to be read: `problem`
  // says so, and the next request that needs it tries again (Impl::retry_locked_locked).
  bool locked_elsewhere = false;
  std::chrono::steady_clock::time_point locked_tried{};  // its last attempt (under Impl::mu)
  // Under write_mu: the file was made from the store's template, whose metadata table is empty;
  // the next commit inserts the metadata row with this statement (record_and_commit).
  bool placeholder_meta = false;
  std::string placeholder_insert;
  // Changes (under Impl::mu) when the file is replaced by another one (restore, compaction), which
  // may keep the commit version but not the rows' order: id maps are keyed by it.
  uint64_t file_epoch = 0;
  uint64_t attach_generation = 0;  // changes at every ATTACH (query_sql sessions are keyed by it)
  // Under write_mu (and reset under Impl::mu at every ATTACH, when no writer holds the entry):
  // what record_and_commit knows of the file's _duckpart_batches (see rewrite_batches). Its rows
  // as last committed here (-1 unknown: counted at the next commit); whether a checkpoint may have
  // written its rows since this process last rewrote it; and the size of the file's write-ahead
  // log after this process's last commit to it (DuckDB empties the log at a checkpoint).
  int64_t batch_rows = -1;
  bool batches_checkpointed = true;
  std::uintmax_t wal_seen = 0;
  // Set while a compaction waits to swap the file: new requests wait (Impl::pins_cv) instead of
  // pinning, so that a stream of overlapping readers cannot starve the swap.
  bool draining = false;
  // Runtime state, under Impl::mu.
  bool attached = false;
  int pins = 0;
  uint64_t last_used = 0;
  std::mutex write_mu;
  // Held for a whole compact_partition (two compactions of one partition share its staged files),
  // and by drop_partition and restore_partition (a swap after them would undo them).
  std::mutex compact_mu;
  // Id index. Valid when bloom && probe.filter_version == meta.commit_version. Changed under
  // bloom_mu (one writer: adding ids, loading, building); `bloom` and the probe's filter fields are
  // replaced under both bloom_mu and the store's filters_mu (exclusive), so get_by_id tests the
  // filters of every partition under filters_mu alone (shared) while ids are added (IdBloom's
  // words are atomic).
  std::mutex bloom_mu;
  std::unique_ptr<IdBloom> bloom;
  bool bloom_dirty = false;
  // Id -> rowid map (id_map.hpp), under idmap_mu: shared to look up in a current map, exclusive
  // (try-locked by lookups: a lookup that finds a build in progress scans instead of waiting) to
  // build or extend it; taken before Impl::mu, never together with write_mu. Current when
  // idmap_version == meta.commit_version and idmap_epoch == file_epoch. Built from the second
  // lookup that scans this partition, so one-off lookups never pay for it.
  std::shared_mutex idmap_mu;
  std::unique_ptr<IdRowMap> idmap;
  int64_t idmap_version = -1;
  uint64_t idmap_epoch = 0;
  // The version and file epoch at which the map did not match the partition's rows (not used).
  int64_t idmap_unusable_version = -1;
  uint64_t idmap_unusable_epoch = 0;
  int idmap_scans = 0;                   // lookups that scanned the partition without a map
  std::atomic<uint64_t> idmap_bytes{0};  // readable under Impl::mu alone (eviction)
  std::atomic<uint64_t> idmap_used{0};   // Impl::idmap_clock at its last lookup

  int64_t range_min() const { return key.is_null ? 0 : key.start_ts().micros; }
  int64_t range_max() const { return key.is_null ? 0 : key.end_ts().micros - 1; }

  const PartitionMeta& meta() const { return meta_; }
  // The only way the metadata changes, so that the probe's copy of the id range cannot go stale.
  void set_meta(PartitionMeta m) {
    meta_ = std::move(m);
    probe.commit_version = meta_.commit_version;
    probe.form = IdForm::kNone;
    if (meta_.row_count > 0 && !meta_.min_id.is_null() && !meta_.max_id.is_null()) {
      const IdForm lo = id_form(meta_.min_id);
      probe.form = lo == id_form(meta_.max_id) ? lo : IdForm::kOther;
      probe.min_id = id_bound(meta_.min_id);
      probe.max_id = id_bound(meta_.max_id);
    }
  }

 private:
  PartitionMeta meta_;
};

// A query_sql connection kept for reuse: temp views over one exact set of attached partitions and
// the statements prepared against them. Never references a detached partition: an idle session is
// dropped whenever a partition is detached, and a session in use pins every partition it reads.
struct SqlSession {
  std::string key;  // the view definitions and attach generations it was built for
  std::shared_ptr<duck::Connection> conn;
  std::unordered_map<std::string, duck::Prepared> prepared;  // statement text -> runnable form
};

// Text of one buffered column: the values' bytes back to back; row r is [ends[r - 1], ends[r]).
// ~8 bytes per row plus the text, instead of a 32-byte std::string (and its heap block past 15
// characters) per value.
struct TextArena {
  std::string bytes;
  std::vector<uint64_t> ends;

  duck::TextColumn column() const noexcept { return {bytes.data(), ends.data()}; }
};

// Rows of one partition waiting in the write buffer. UUID columns are kept parsed (`uuids`) and
// the other text columns in arenas (`text`): their vectors in `rows` stay empty (the appender
// reads the arenas), except a text id column's while a drain commits the partition
// (MaterializedText: the id range and bloom filter read ids as strings).
// The ingest logs a partition's buffered rows came from, oldest first, with its rows in each: the
// commit of those rows records every one of these ids (a replay of a log skips the partitions
// that recorded it).
using LogIds = std::vector<std::pair<std::string, int64_t>>;

struct BufferedRows {
  ColumnBatch rows;
  std::vector<std::vector<duckdb_hugeint>> uuids;  // per column: parsed UUIDs, or nothing
  std::vector<std::optional<TextArena>> text;      // per column: the text, or nothing
  // Where each run of rows ends: every call's rows of this partition, sorted by the partition
  // value (merge_sorted_runs).
  std::vector<uint32_t> run_ends;
  LogIds logs;
  std::chrono::steady_clock::time_point since;  // when its first row was buffered

  // Memory held, capacities included.
  uint64_t held_bytes() const noexcept {
    uint64_t m = run_ends.capacity() * sizeof(uint32_t);
    for (std::size_t c = 0; c < rows.columns.size(); ++c) {
      const ColumnVector& col = rows.columns[c];
      m += col.valid.capacity();
      std::visit(
          [&](const auto& v) {
            m += v.capacity() * sizeof(typename std::decay_t<decltype(v)>::value_type);
          },
          col.data);
      if (c < uuids.size()) m += uuids[c].capacity() * sizeof(duckdb_hugeint);
      if (c < text.size() && text[c]) {
        m += text[c]->bytes.capacity() + text[c]->ends.capacity() * sizeof(uint64_t);
      }
    }
    return m;
  }
};

// A store's entries by key. Counts its changes, so that a flat copy (Store::flat) knows when to
// be rebuilt; the ways of changing a std::map that do not count are deleted.
class EntryMap : public std::map<PartitionKey, std::unique_ptr<Entry>> {
  using Base = std::map<PartitionKey, std::unique_ptr<Entry>>;

 public:
  template <class... A>
  auto emplace(A&&... a) {
    ++changes_;
    return Base::emplace(std::forward<A>(a)...);
  }
  template <class A>
  auto erase(A&& a) {
    ++changes_;
    return Base::erase(std::forward<A>(a));
  }
  void clear() {
    ++changes_;
    Base::clear();
  }
  mapped_type& operator[](const key_type&) = delete;
  template <class... A>
  void insert(A&&...) = delete;
  template <class... A>
  void try_emplace(A&&...) = delete;
  template <class... A>
  void insert_or_assign(A&&...) = delete;
  template <class... A>
  void emplace_hint(A&&...) = delete;
  template <class... A>
  void extract(A&&...) = delete;
  template <class... A>
  void merge(A&&...) = delete;
  void swap(EntryMap&) = delete;
  uint64_t changes() const noexcept { return changes_; }

 private:
  uint64_t changes_ = 0;
};

struct Store {
  Schema schema;
  std::string dir;
  // The strategy its partitions are read and written with: config.strategy, or (with
  // tables_keep_their_strategy) the one the table's files are named for.
  PartitionStrategy strategy = PartitionStrategy::kMonthly;
  EntryMap entries;
  // Under Impl::mu: `entries` in key order as of entries.changes() == flat_changes, for loops
  // over every partition that read only the entries (get_by_id: independent loads instead of a
  // walk from map node to map node, ~2 us of a lookup over 360 partitions).
  std::vector<Entry*> flat;
  uint64_t flat_changes = ~uint64_t{0};
  std::vector<std::string> problems;  // files that are not partitions at all
  // Shared by get_by_id while it tests its candidates' id filters; exclusive (after an entry's
  // bloom_mu, never before; nothing is taken under it) to replace an entry's filter or its
  // version stamp (set_bloom, update_bloom_after_write). Held shared for ~20 us per lookup over
  // 360 partitions (glibc's rwlock prefers readers: a writer waits for a moment when no lookup
  // is testing filters).
  std::shared_mutex filters_mu;
  std::vector<std::unique_ptr<Entry>> graveyard;  // dropped entries (pointers may still be held)
  // Under Impl::mu: the bytes of an empty partition file of this table (tables and a metadata row
  // with an empty period), copied to create new partitions (Impl::make_template_locked).
  std::shared_ptr<const std::string> tmpl;
  bool tmpl_tried = false;
  // Write buffering (config.write_buffer_mb): batches acknowledged through an ingest log but not
  // yet committed to partitions (docs/architecture.md, "Write buffering").
  struct LiveLog {
    IngestLog log;
    int64_t holders = 0;  // buffered partitions (filling or draining) holding rows of it
  };
  struct Ingest {
    std::mutex mu;  // the sets below; buffered writes and synchronous drains of this table
    std::condition_variable cv;    // a background drain ended
    std::atomic<int64_t> rows{0};  // buffered rows of both sets; 0: nothing to drain
    // Filling: rows acknowledged and not yet handed to a drain, per partition (so that a drain
    // reads each partition's rows in sequence), each with the logs its rows came from.
    std::map<PartitionKey, BufferedRows> parts;
    uint64_t bytes = 0;  // memory the filling partitions hold
    // Every ingest log with rows not yet committed, by id (UUIDv7: oldest first). A log lives
    // until every partition holding rows of it has committed them; `current` takes appends
    // ("": none yet) and is closed (a new log is started) whenever a partition holding rows of it
    // is handed to a drain, since that commit records its id.
    std::map<std::string, LiveLog> logs;
    std::string current;
    IngestLog::Buffer spare_buffer;  // the last closed log's record buffer, for the next one
    // The last hand-over made because the buffer was full: while a stream keeps filling it, timed
    // drains wait longer (run_timed_drains).
    std::chrono::steady_clock::time_point last_full_drain{};
    std::chrono::steady_clock::time_point last_append{};  // the last buffered write
    // Since when writes arrive without a pause of two timer ticks, and their logged bytes.
    std::chrono::steady_clock::time_point stream_start{};
    uint64_t stream_bytes = 0;
    // Draining: the partitions handed over, committed by `drainer`; kept after a failure
    // (d_error) and committed again by the next operation.
    std::map<PartitionKey, BufferedRows> d_parts;
    uint64_t d_bytes = 0;
    bool draining = false;
    std::string d_error;
    std::thread drainer;
    // Deletes the logs a background drain emptied, after that drain has ended (reap_logs_locked):
    // on this file system a log's unlink frees its blocks synchronously (~0.5 ms per MB with
    // `discard`), and a writer waiting for the drain to end would wait for it too. Each reaper
    // joins the one before it; joined by every full drain (flush, close) and join_drainers.
    std::thread reaper;
    std::atomic<uint64_t> reaping_bytes{0};  // bytes of the logs reapers have yet to delete
    std::vector<std::string> replay;  // logs found at load: replayed before the table is used
    std::atomic<bool> replay_pending{false};
  } ingest;
};

// The name partition `key` of table `table` is attached as.
std::string partition_alias(const std::string& table, const PartitionKey& key) {
  return fmt::format("dp_{}_{}_{}", table, strategy_name(key.strategy), key.label());
}

// A new entry for partition `key` of table `table` stored in `dir` (not attached, no metadata).
// A file epoch never handed out before in this process: entries start with one and every file
// swap takes a new one, so a partition dropped and made again never repeats an epoch (restore's
// unchanged_since compares them).
// A lock on a partition directory (flock on the directory itself, no file of its own) that marks
// staging files in use: a restore, compaction or partition creation holds it shared from before
// it creates its staging file until that file is renamed or deleted; a writable open deletes
// leftover staging files only when it gets it exclusively (no process is staging there). Best
// effort: where the directory cannot be opened or flock does not work on it (some network file
// systems), staging goes on unlocked and leftovers are not deleted (health-report lists them).
class StagingLock {
 public:
  static StagingLock shared(const std::string& dir) {
    StagingLock l(dir);
    if (l.fd_ >= 0) {
      while (::flock(l.fd_, LOCK_SH) != 0 && errno == EINTR) {
      }
    }
    return l;
  }
  static std::optional<StagingLock> try_exclusive(const std::string& dir) {
    StagingLock l(dir);
    if (l.fd_ < 0 || ::flock(l.fd_, LOCK_EX | LOCK_NB) != 0) return std::nullopt;
    return l;
  }
  StagingLock(StagingLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  StagingLock& operator=(StagingLock&&) = delete;
  ~StagingLock() {
    if (fd_ >= 0) ::close(fd_);  // (releases the lock)
  }

 private:
  explicit StagingLock(const std::string& dir)
      : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {}
  int fd_ = -1;
};

uint64_t next_file_epoch() {
  static std::atomic<uint64_t> serial{0};
  return serial.fetch_add(1, std::memory_order_relaxed) + 1;
}

std::unique_ptr<Entry> make_entry_in(const std::string& dir, const std::string& table,
                                     const PartitionKey& key) {
  auto e = std::make_unique<Entry>();
  e->key = key;
  e->file_epoch = next_file_epoch();
  // One label and one allocation per string: a cold open makes 1,100 of these while it waits.
  const std::string label = key.label();
  constexpr std::string_view kPrefix = "partition_", kSuffix = ".duckdb";
  e->name.reserve(kPrefix.size() + label.size());
  e->name.append(kPrefix).append(label);
  e->file.reserve(dir.size() + 1 + e->name.size() + kSuffix.size());
  e->file.append(dir).append(1, '/').append(e->name).append(kSuffix);
  const std::string_view strategy = strategy_name(key.strategy);
  e->alias.reserve(3 + table.size() + 1 + strategy.size() + 1 + label.size());
  e->alias.append("dp_").append(table).append(1, '_').append(strategy).append(1, '_').append(label);
  return e;
}

// Replaces an entry's id filter (nullptr: none) and its version. The caller holds e.bloom_mu. The
// old filter is freed after filters_mu is released.
void set_bloom(Store& store, Entry& e, std::unique_ptr<IdBloom> bloom, int64_t version) {
  std::unique_ptr<IdBloom> old;
  {
    std::lock_guard lock(store.filters_mu);
    old = std::exchange(e.bloom, std::move(bloom));
    e.probe.filter_words = e.bloom ? e.bloom->words() : nullptr;
    const uint64_t blocks = e.bloom ? e.bloom->blocks() : 0;
    e.probe.filter_blocks = static_cast<uint32_t>(std::min<uint64_t>(blocks, UINT32_MAX));
    // No words, or more blocks than the probe holds (over 10^10 ids): tested under bloom_mu.
    if (blocks == 0 || blocks > UINT32_MAX) e.probe.filter_words = nullptr;
    e.probe.filter_version = version;
  }
}

// What loading a table's store reads from its directory without DuckDB: the listing, the catalog
// and the stamps of the files it lists, and an entry per partition file. Made by scan_table_dir,
// turned into the store by Impl::load_store_locked; a read-only open scans its tables on a thread
// of its own while DuckDB starts (Impl::start_prefetch).
struct TableScan {
  struct File {
    std::string name;
    std::optional<PartitionKey> key;  // nullopt: not named like a partition
    std::unique_ptr<Entry> entry;     // when named like one
    int cached = -1;                  // its line of `catalog`, when listed there
    FileStamp stamp;                  // its stamp now (files named for the store's strategy)
  };
  bool exists = false;
  std::optional<Catalog> catalog;        // nullopt: missing, unreadable, or of another strategy
  std::vector<std::string> ingest_logs;  // file names
  std::vector<std::string> creating;     // unfinished creations (file names)
  std::vector<std::string> staged;       // restores' and compactions' staging files (file names)
  std::vector<File> files;               // "*.duckdb", sorted by name
  std::chrono::steady_clock::time_point started;
};

// Throws Error(kIo) when the directory exists and cannot be read.
TableScan scan_table_dir(const std::string& dir, const std::string& table,
                         PartitionStrategy strategy) {
  TableScan scan;
  scan.started = std::chrono::steady_clock::now();
  std::error_code ec;
  if (!fs::exists(dir, ec)) return scan;
  scan.exists = true;
  // The catalog is read and parsed on a second thread while this one lists the directory, makes
  // the entries and stamps the files (every partition file: the stamps do not depend on what the
  // catalog lists). A cold count that the metadata answers waits for the whole scan (~8 ms for
  // 1,100 partitions on one thread; docs/architecture.md, "Cold opens").
  std::future<std::optional<Catalog>> catalog_read;
  try {
    catalog_read = std::async(std::launch::async, [&dir] { return read_catalog(dir, nullptr); });
  } catch (const std::system_error&) {  // no thread: read below, on this one
  }
  // POSIX listing and stamps relative to the directory: with 1,000+ partitions, std::filesystem
  // paths (component parsing, path sorting) and full-path stats cost several milliseconds of
  // every cold open. One descriptor for the listing and the stamps (both relative to it).
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    throw Error(ErrorCode::kIo, fmt::format("cannot open partition directory '{}'", dir));
  }
  struct CloseFd {
    int fd;
    ~CloseFd() { ::close(fd); }
  } close_dir{dir_fd};
  // Names are moved out of `names` once looked at (fresh memory costs a fault per page while a
  // cold open's DuckDB starts): the search for a name's log looks only at the names after it.
  std::vector<std::string> names = list_regular_files(dir_fd, dir);
  const std::string creating_suffix = std::string(".duckdb") + kCreatingSuffix;
  scan.files.reserve(names.size());
  std::string wal_name;
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::string& fname = names[i];
    if (fname.starts_with(kIngestPrefix) && fname.ends_with(".log")) {
      scan.ingest_logs.push_back(std::move(fname));
      continue;
    }
    if (fname.ends_with(creating_suffix) || fname.ends_with(creating_suffix + ".wal")) {
      scan.creating.push_back(std::move(fname));
      continue;
    }
    if (fname.starts_with('.') && (fname.find(".duckdb.restore") != std::string::npos ||
                                   fname.find(".duckdb.compact") != std::string::npos)) {
      scan.staged.push_back(std::move(fname));
      continue;
    }
    if (!fname.ends_with(".duckdb") || fname.size() <= 7) continue;
    TableScan::File f;
    f.key = parse_partition_name(fname);
    if (f.key) {
      if (f.key->is_null) f.key->strategy = strategy;
      f.entry = make_entry_in(dir, table, *f.key);
      if (f.key->strategy == strategy) {
        // The listing tells whether there is a log: the stamp skips looking for it otherwise.
        wal_name.assign(fname).append(".wal");
        const bool wal = std::binary_search(names.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                                            names.end(), wal_name);
        f.stamp = stamp_in(dir_fd, fname, wal);
      }
    }
    f.name = std::move(fname);
    scan.files.push_back(std::move(f));
  }
  scan.catalog = catalog_read.valid() ? catalog_read.get() : read_catalog(dir, nullptr);
  if (scan.catalog && scan.catalog->strategy != strategy_name(strategy)) scan.catalog.reset();
  if (scan.catalog) {
    std::unordered_map<std::string_view, int> cached;
    cached.reserve(scan.catalog->entries.size());
    for (std::size_t i = 0; i < scan.catalog->entries.size(); ++i) {
      cached.emplace(scan.catalog->entries[i].file_name, static_cast<int>(i));
    }
    for (TableScan::File& f : scan.files) {
      if (!f.key || f.key->strategy != strategy) continue;
      if (auto c = cached.find(f.name); c != cached.end()) f.cached = c->second;
    }
  }
  return scan;
}

struct Group {
  PartitionKey key;
  std::vector<uint32_t> rows;
  int64_t min_v = 0, max_v = 0;
  Value min_id, max_id;
  Entry* entry = nullptr;
  bool created = false;
  // Where the rows are when not in the call's batch (a drain of the write buffer: each partition's
  // rows in their own batch, UUID columns parsed, other text in `buffered`'s arenas).
  const ColumnBatch* src = nullptr;
  const std::vector<std::vector<duckdb_hugeint>>* src_uuids = nullptr;
  BufferedRows* buffered = nullptr;  // src's text is in arenas (write buffer)
  // The ingest logs the rows came from (a drain of the write buffer): the commit records each id
  // instead of the batch's.
  const LogIds* logs = nullptr;
};

bool id_less(const Value& a, const Value& b) {
  if (a.is<int64_t>() && b.is<int64_t>()) return a.get<int64_t>() < b.get<int64_t>();
  // No copies for strings (UUIDs): get_by_id compares the id with every partition's range.
  if (a.is<std::string>() && b.is<std::string>())
    return a.get<std::string>() < b.get<std::string>();
  return a.to_string() < b.to_string();
}

std::string id_key(const Value& v) { return v.to_string(); }

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Orders `rows` by key(row), stably (equal keys keep their order in `rows`): an LSD radix sort
// over the bits in which the keys differ (11 bits per pass: a month of microseconds takes 4
// passes), ~3x faster than std::sort on the drains of the write buffer. Rows already in order
// (time-ordered writes) are left alone.
template <class Key>
void sort_rows_by_key(std::vector<uint32_t>& rows, Key key) {
  const std::size_t n = rows.size();
  bool ordered = true;
  for (std::size_t i = 1; i < n && ordered; ++i) ordered = key(rows[i - 1]) <= key(rows[i]);
  if (ordered) return;
  struct Item {
    uint64_t k;
    uint32_t r;
  };
  std::vector<Item> a(n);
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t v = key(rows[i]);
    a[i] = {static_cast<uint64_t>(v), rows[i]};
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (n < 256) {  // a comparison sort is cheaper than the passes' counters
    std::stable_sort(a.begin(), a.end(), [](const Item& x, const Item& y) {
      return static_cast<int64_t>(x.k) < static_cast<int64_t>(y.k);
    });
  } else {
    for (Item& it : a) it.k -= static_cast<uint64_t>(lo);  // order-preserving, from 0
    const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    const int bits = range == 0 ? 0 : 64 - __builtin_clzll(range);
    constexpr int kDigit = 11;
    constexpr uint64_t kMask = (uint64_t{1} << kDigit) - 1;
    std::vector<Item> b(n);
    std::vector<uint32_t> count(std::size_t{1} << kDigit);
    for (int shift = 0; shift < bits; shift += kDigit) {
      std::fill(count.begin(), count.end(), 0);
      for (const Item& it : a) ++count[(it.k >> shift) & kMask];
      uint32_t sum = 0;
      for (uint32_t& c : count) {
        const uint32_t t = c;
        c = sum;
        sum += t;
      }
      for (const Item& it : a) b[count[(it.k >> shift) & kMask]++] = it;
      a.swap(b);
    }
  }
  for (std::size_t i = 0; i < n; ++i) rows[i] = a[i].r;
}

// Orders `rows` (indices into `batch`) by the partition column's value, ties in their order in
// `rows`, NULL first: each commit's rows reach DuckDB sorted by time, so bit-packing and the row
// groups' min/max cover narrow ranges (3-4% fewer bytes for rows in random order within their
// period, docs/performance.md, session 12; 7% at 10M rows in session 20).
void sort_by_partition_value(const ColumnBatch& batch, std::size_t pcol,
                             std::vector<uint32_t>& rows) {
  const ColumnVector& col = batch.columns[pcol];
  auto sort_with = [&](const auto& values) {
    sort_rows_by_key(rows, [&](uint32_t r) -> int64_t {
      return col.is_valid(r) ? static_cast<int64_t>(values[r]) : INT64_MIN;
    });
  };
  if (const auto* ts = std::get_if<std::vector<int64_t>>(&col.data)) {
    sort_with(*ts);
  } else if (const auto* days = std::get_if<std::vector<int32_t>>(&col.data)) {
    sort_with(*days);
  }
}

// The order sort_by_partition_value gives to all rows 0..n-1 of a partition's buffered rows
// (`rows` holds 0..n-1 on entry), made from the runs they were buffered in: write_buffered
// stores every call's rows of a partition as one run sorted by the partition value, so the drain
// merges the runs instead of sorting the whole partition. The merge reads each run in sequence;
// the order a sort gives makes every later read of the rows (the appender's, one per cell) a
// cache miss, which cost more than the sort itself (session 20). Ties: the earlier run first, as
// the rows' order. False (the caller sorts) when the runs do not cover the rows, one of them is
// not in order, or they are so short that a sort is cheaper.
bool merge_sorted_runs(const ColumnBatch& batch, std::size_t pcol,
                       const std::vector<uint32_t>& run_ends, std::vector<uint32_t>& rows) {
  const std::size_t n = rows.size();
  if (run_ends.empty() || run_ends.back() != n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    if (rows[i] != i) return false;
  }
  const ColumnVector& col = batch.columns[pcol];
  auto merge = [&](const auto& values) -> bool {
    auto key = [&](uint32_t r) -> int64_t {
      return col.is_valid(r) ? static_cast<int64_t>(values[r]) : INT64_MIN;
    };
    uint32_t begin = 0;
    for (uint32_t end : run_ends) {
      if (end < begin) return false;
      for (uint32_t r = begin + 1; r < end; ++r) {
        if (key(r - 1) > key(r)) return false;
      }
      begin = end;
    }
    const std::size_t k = run_ends.size();
    if (k == 1) return true;
    if (k > n / 32) return false;
    // A binary min-heap of the runs' heads by (key, run).
    struct Head {
      int64_t key;
      uint32_t run, pos;
    };
    auto less = [](const Head& x, const Head& y) {
      return x.key < y.key || (x.key == y.key && x.run < y.run);
    };
    std::vector<Head> heap;
    heap.reserve(k);
    begin = 0;
    for (uint32_t i = 0; i < k; ++i) {
      if (run_ends[i] > begin) heap.push_back({key(begin), i, begin});
      begin = run_ends[i];
    }
    auto sift_down = [&](std::size_t i) {
      const std::size_t m = heap.size();
      const Head h = heap[i];
      for (;;) {
        std::size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && less(heap[c + 1], heap[c])) ++c;
        if (!less(heap[c], h)) break;
        heap[i] = heap[c];
        i = c;
      }
      heap[i] = h;
    };
    for (std::size_t i = heap.size() / 2; i-- > 0;) sift_down(i);
    std::vector<uint32_t> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      Head& top = heap.front();
      out[i] = top.pos;
      if (++top.pos < run_ends[top.run]) {
        top.key = key(top.pos);
      } else {
        top = heap.back();
        heap.pop_back();
      }
      if (!heap.empty()) sift_down(0);
    }
    rows.swap(out);
    return true;
  };
  if (const auto* ts = std::get_if<std::vector<int64_t>>(&col.data)) return merge(*ts);
  if (const auto* days = std::get_if<std::vector<int32_t>>(&col.data)) return merge(*days);
  return false;
}

// The whole content of `path`.
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw Error(ErrorCode::kIo, fmt::format("cannot read '{}'", path));
  return bytes;
}

// Writes `bytes` to a new file `path` and syncs it (Error(kIo) naming the file otherwise).
void write_file_synced(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(ErrorCode::kIo, fmt::format("cannot create '{}': {}", path, std::strerror(errno)));
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw Error(ErrorCode::kIo, fmt::format("cannot write '{}': {}", path, std::strerror(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorCode::kIo, fmt::format("cannot sync '{}': {}", path, std::strerror(err)));
  }
  ::close(fd);
}

}  // namespace

struct PartitionedDataRepository::Impl {
  PartitionConfig config;
  PartitionedRepositoryOptions options;
  std::string base_dir;
  // DuckDB (an in-memory instance the partitions are attached to), started by open_duck(): by the
  // constructor of a writer, and by the first request that needs it in a read-only instance, so
  // that what the partitions' metadata answers costs no DuckDB start (docs/architecture.md, "Cold
  // opens"). Reached through hub(), pool() and admin(), which start it when needed.
  std::vector<std::pair<std::string, std::string>> duck_settings;
  std::once_flag duck_once;
  std::atomic<bool> duck_started{false};
  duck::Database hub_;
  std::unique_ptr<ConnectionPool> pool_;
  duck::Connection admin_;         // ATTACH/DETACH/DDL, under mu
  std::once_flag feed_registered;  // ChunkFeed's table function, for the bulk writers

  void open_duck() {
    std::call_once(duck_once, [this] {
      // DuckDB's linked extensions are loaded by the first statement that may need them: a process
      // that only counts or reads rows of built-in types never loads them.
      duck::Database db =
          duck::Database::open(":memory:", false, duck_settings, duck::Extensions::kOnFirstUse);
      duck::Connection admin_conn = db.connect();
      pool_ = std::make_unique<ConnectionPool>(db.get());
      hub_ = std::move(db);
      admin_ = std::move(admin_conn);
      duck_started.store(true, std::memory_order_release);
    });
  }
  duck::Database& hub() {
    open_duck();
    return hub_;
  }
  ConnectionPool& pool() {
    open_duck();
    return *pool_;
  }
  duck::Connection& admin() {  // under mu
    open_duck();
    return admin_;
  }

  mutable std::mutex mu;
  std::condition_variable pins_cv;  // signalled when pins drop or draining ends (with mu)
  std::map<std::string, std::unique_ptr<Store>> stores;
  uint64_t clock = 0;
  int64_t attached_count = 0;
  RepositoryCounters counters;
  std::function<void(const std::string&)> commit_hook;
  std::function<void(const std::string&, int64_t)> id_filter_hook;

  // query_sql: what EXPLAIN said each statement reads of each table's partition column, keyed by
  // the statement text and the DDL of the tables it names (see query_sql).
  std::mutex sql_plans_mu;
  std::unordered_map<std::string, std::vector<ValueSet>> sql_plans;
  static constexpr std::size_t kMaxSqlPlans = 512;
  // Idle query_sql sessions, most recently used first (under sql_plans_mu).
  std::list<std::unique_ptr<SqlSession>> sql_sessions;
  static constexpr std::size_t kMaxSqlSessions = 8;
  static constexpr std::size_t kMaxSqlPrepared = 64;
  uint64_t attach_serial = 0;  // under mu

  std::unique_ptr<SqlSession> take_sql_session(const std::string& key) {
    std::lock_guard lock(sql_plans_mu);
    for (auto it = sql_sessions.begin(); it != sql_sessions.end(); ++it) {
      if ((*it)->key == key) {
        auto s = std::move(*it);
        sql_sessions.erase(it);
        return s;
      }
    }
    return nullptr;
  }
  void give_back_sql_session(std::unique_ptr<SqlSession> s) {
    std::lock_guard lock(sql_plans_mu);
    if (s->prepared.size() > kMaxSqlPrepared) s->prepared.clear();
    sql_sessions.push_front(std::move(s));
    while (sql_sessions.size() > kMaxSqlSessions) sql_sessions.pop_back();
  }
  void drop_sql_sessions() noexcept {
    std::list<std::unique_ptr<SqlSession>> old;
    {
      std::lock_guard lock(sql_plans_mu);
      old.swap(sql_sessions);
    }
  }
  std::mutex catalog_mu;
  std::mutex bulk_mu;  // one BulkLoad at a time (its writers hold several partitions' write_mu)
  // Open BulkLoads: buffered rows are not drained meanwhile (a drain would wait for partition
  // write locks the load holds until its commit; see write_buffered).
  std::atomic<int> bulk_active{0};

  // ---- DuckDB's worker threads while writing ----------------------------------------------------
  //
  // Every statement of a write thread (append, INSERT, COMMIT) is a DuckDB task that one of
  // DuckDB's worker threads can take over while the thread that issued it spins until it is done.
  // When the write threads already use every core those workers only add contention, so writers
  // can hold DuckDB at one thread. Holders are counted: the first one saves DuckDB's setting and
  // sets one thread, the last one restores it, so concurrent batches and bulk loads cannot leave
  // the instance at one thread.
  std::mutex threads_mu;
  int threads_holders = 0;
  int64_t threads_saved = 0;  // 0: nothing to restore

  void hold_single_thread() noexcept {
    std::lock_guard lock(threads_mu);
    if (threads_holders++ > 0) return;
    try {
      auto conn = pool().take();
      const int64_t threads = conn->query_int("SELECT current_setting('threads')::BIGINT");
      if (threads > 1) {
        conn->exec("SET threads = 1");
        threads_saved = threads;
      }
    } catch (...) {  // a slower write, not a failed one
    }
  }

  void release_single_thread() noexcept {
    std::lock_guard lock(threads_mu);
    if (threads_holders == 0 || --threads_holders > 0 || threads_saved == 0) return;
    try {
      pool().take()->exec(fmt::format("SET threads = {}", threads_saved));
    } catch (...) {  // the instance keeps one thread: slower queries, nothing lost
    }
    threads_saved = 0;
  }

  // Holds DuckDB at one thread for a scope when the write threads cover every core.
  struct SingleThreadScope {
    Impl* impl = nullptr;
    explicit SingleThreadScope(Impl& i, unsigned write_threads) {
      const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
      if (i.config.single_duckdb_thread_while_writing && write_threads >= hw) {
        impl = &i;
        impl->hold_single_thread();
      }
    }
    ~SingleThreadScope() {
      if (impl) impl->release_single_thread();
    }
    SingleThreadScope(const SingleThreadScope&) = delete;
    SingleThreadScope& operator=(const SingleThreadScope&) = delete;
  };

  // ---- attach / detach (under mu) -------------------------------------------------------------

  // A file under its creating name (kCreatingSuffix: a new partition or the template) is created
  // with config.block_size_kb; an existing file is opened with the block size it was written with.
  std::string attach_sql(const Entry& e) const {
    std::string sql =
        fmt::format("ATTACH {} AS {}", duck::quote_literal(e.file), duck::quote_ident(e.alias));
    if (options.read_only) {
      sql += " (READ_ONLY)";
    } else if (config.block_size_kb != 256 && e.file.ends_with(kCreatingSuffix)) {
      sql += fmt::format(" (BLOCK_SIZE {})", config.block_size_kb * 1024);
    }
    return sql;
  }

  // The error an ATTACH of `e` failing with `err` becomes (a damaged file also gets e.problem).
  [[noreturn]] static void rethrow_attach(Entry& e, const Error& err) {
    if (err.code() == ErrorCode::kLocked) {
      throw Error(ErrorCode::kLocked,
                  fmt::format("partition file '{}' is locked by another process ({}); stop that "
                              "process or run through it",
                              e.file, err.what()));
    }
    if (err.code() == ErrorCode::kCorruption || err.code() == ErrorCode::kDuckDb) {
      e.problem = fmt::format("cannot be opened: {}", err.what());
      throw Error(ErrorCode::kCorruption,
                  fmt::format("partition file '{}' is damaged or not a DuckDB file: {}", e.file,
                              err.what()));
    }
    throw Error(err.code(), fmt::format("partition file '{}': {}", e.file, err.what()));
  }

  void note_attached_locked(Entry& e) {
    e.attached = true;
    e.attach_generation = ++attach_serial;
    e.batch_rows = -1;
    e.batches_checkpointed = true;
    e.wal_seen = 0;
    ++attached_count;
    ++counters.partitions_opened;
    counters.partitions_attached_now = attached_count;
    counters.partitions_attached_peak = std::max(counters.partitions_attached_peak, attached_count);
  }

  void attach_locked(Entry& e) {
    // Started outside the try: a DuckDB that fails to start is not this partition's fault (an
    // error here would mark the file unusable for the instance's lifetime).
    open_duck();
    try {
      admin().exec(attach_sql(e), "", duck::Uses::kBuiltinsOnly);
    } catch (const Error& err) {
      if (!repair_torn_locked(e, err)) rethrow_attach(e, err);
    }
    note_attached_locked(e);
  }

  // A partition whose metadata block a kill tore during a checkpoint (torn_block.hpp): its
  // checksum is rewritten, the file attached and verified (every column of every table read, so
  // every block's checksum checked; the rows match the metadata row), and the change undone when
  // any of that fails. True: `e` is attached.
  bool repair_torn_locked(Entry& e, const Error& err) {
    if (options.read_only) return false;
    std::optional<TornBlockRepair> r;
    try {
      r = repair_torn_metadata_block(e.file, err.what());
    } catch (const Error&) {
      return false;
    }
    if (!r) return false;
    const std::string a = duck::quote_ident(e.alias);
    const std::string table = duck::quote_ident(fs::path(e.file).parent_path().filename().string());
    bool attached = false, ok = false;
    try {
      admin().exec(attach_sql(e));
      attached = true;
      int64_t bad = 0;
      for (const std::string& t :
           {table, duck::quote_ident(kMetaTable), duck::quote_ident(kBatchesTable)}) {
        bad += admin().query_int(
            fmt::format("SELECT count(*) FROM {}.main.{} WHERE hash(COLUMNS(*)) IS NULL", a, t));
      }
      bad += admin().query_int(fmt::format(
          "SELECT (coalesce((SELECT max(row_count) FROM {0}.main.{1}), (SELECT count(*) FROM "
          "{0}.main.{2})) <> (SELECT count(*) FROM {0}.main.{2}))::BIGINT",
          a, duck::quote_ident(kMetaTable), table));
      ok = bad == 0;
    } catch (const Error&) {
      ok = false;
    }
    if (!ok) {
      try {
        if (attached) admin().exec("DETACH " + a);
        undo_torn_block_repair(e.file, *r);
      } catch (const Error&) {  // the error of the first ATTACH is reported either way
      }
      return false;
    }
    ++counters.torn_blocks_repaired;
    return true;
  }

  void detach_locked(Entry& e) noexcept {
    if (!e.attached || e.pins > 0) return;
    drop_sql_sessions();  // idle sessions may hold views and statements over it
    try {
      admin().exec(fmt::format("DETACH {}", duck::quote_ident(e.alias)), "",
                   duck::Uses::kBuiltinsOnly);
    } catch (const std::exception&) {
      return;  // stays attached; retried at the next trim
    }
    e.attached = false;
    --attached_count;
    ++counters.partitions_detached;
    counters.partitions_attached_now = attached_count;
  }

  void trim_locked() noexcept {
    while (attached_count > config.max_partitions_in_memory) {
      Entry* victim = nullptr;
      for (auto& [name, s] : stores) {
        for (auto& [k, e] : s->entries) {
          if (e->attached && e->pins == 0 && (!victim || e->last_used < victim->last_used)) {
            victim = e.get();
          }
        }
      }
      if (!victim) return;
      const int64_t before = attached_count;
      detach_locked(*victim);
      if (attached_count == before) return;
    }
  }

  // Detaches least recently used unpinned partitions until one more fits under the limit.
  void make_room_locked() noexcept {
    while (attached_count >= config.max_partitions_in_memory) {
      const int64_t before = attached_count;
      Entry* victim = nullptr;
      for (auto& [name, s] : stores) {
        for (auto& [k, e] : s->entries) {
          if (e->attached && e->pins == 0 && (!victim || e->last_used < victim->last_used)) {
            victim = e.get();
          }
        }
      }
      if (!victim) return;
      detach_locked(*victim);
      if (attached_count == before) return;
    }
  }

  // Pins `entries` (attaching as needed) for the lifetime of the returned object.
  class Pins {
   public:
    Pins(Impl* impl, std::vector<Entry*> entries) : impl_(impl), entries_(std::move(entries)) {}
    Pins(Pins&& o) noexcept : impl_(o.impl_), entries_(std::move(o.entries_)) { o.impl_ = nullptr; }
    Pins(const Pins&) = delete;
    Pins& operator=(const Pins&) = delete;
    Pins& operator=(Pins&&) = delete;
    const std::vector<Entry*>& entries() const noexcept { return entries_; }
    ~Pins() {
      if (!impl_) return;
      std::lock_guard lock(impl_->mu);
      for (Entry* e : entries_) --e->pins;
      impl_->trim_locked();
      impl_->pins_cv.notify_all();
    }

   private:
    Impl* impl_;
    std::vector<Entry*> entries_;
  };

  // Entries are pinned in the order given (callers pass them sorted by store and period), so two
  // requests waiting on draining partitions cannot wait on each other.
  // `drainer`: the partition the caller itself keeps drained (it may pin it).
  Pins acquire(const std::vector<Entry*>& entries, QueryStats* stats, Entry* drainer = nullptr) {
    // Pinned partitions are read through DuckDB: a read-only instance starts it here, before `mu`,
    // so that other requests (counts from metadata, statistics) do not wait for its start.
    if (!entries.empty()) open_duck();
    std::unique_lock lock(mu);
    std::vector<Entry*> pinned;
    try {
      for (Entry* e : entries) {
        pins_cv.wait(lock, [&] { return !e->draining || e == drainer; });
        if (e->dropped) continue;  // dropped after the request chose it: it no longer exists
        retry_locked_locked(*e);   // throws kLocked while another process holds the file
        if (!e->problem.empty()) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("partition {} ('{}') is needed by this request but unusable: {}",
                                  e->name, e->file, e->problem));
        }
        if (!e->attached) {
          make_room_locked();
          attach_locked(*e);
          if (stats) ++stats->partitions_attached;
        }
        ++e->pins;
        e->last_used = ++clock;
        pinned.push_back(e);
      }
    } catch (...) {
      for (Entry* e : pinned) --e->pins;
      trim_locked();
      pins_cv.notify_all();
      throw;
    }
    return Pins(this, std::move(pinned));
  }

  class PinnedSource final : public RecordStream::Source {
   public:
    PinnedSource(std::unique_ptr<Pins> pins, ConnectionPool::Lease lease, duck::Result result)
        : pins_(std::move(pins)),
          lease_(std::move(lease)),
          result_(std::move(result)),
          decoder_(result_) {}
    bool fetch(std::vector<DataRecord>& out) override {
      duck::DataChunk c;
      try {
        c = result_.fetch();
      } catch (const Error& err) {
        rethrow_reading(err, pins_->entries());
      }
      if (!c || c.size() == 0) return false;
      decoder_.decode(c, out);
      return true;
    }

   private:
    // Destruction order (reverse): result, then the connection, then the pins.
    std::unique_ptr<Pins> pins_;
    ConnectionPool::Lease lease_;
    duck::Result result_;
    duck::ChunkDecoder decoder_;
  };

  // The live partition called `name` ("partition_2023_12"); throws Error(kNotFound).
  Entry* entry_named(Store& store, const std::string& name) {
    std::lock_guard lock(mu);
    for (auto& [k, entry] : store.entries) {
      if (entry->name == name) return entry.get();
    }
    throw Error(ErrorCode::kNotFound,
                fmt::format("table '{}' has no partition '{}'", store.schema.name(), name));
  }

  // ---- loading a schema's store ---------------------------------------------------------------

  std::string alias_for(const Schema& schema, const PartitionKey& key) const {
    return partition_alias(schema.name(), key);
  }

  std::unique_ptr<Entry> make_entry(const Store& store, const PartitionKey& key) const {
    return make_entry_in(store.dir, store.schema.name(), key);
  }

  // A partition whose file another process held when its metadata was to be read: read it now,
  // or throw kLocked again (the entry stays as it was). Tried at most once per
  // kLockedRetryInterval (a held file fails its ATTACH under mu; lookups would queue on it).
  // Under mu.
  static constexpr std::chrono::milliseconds kLockedRetryInterval{100};
  void retry_locked_locked(Entry& e) {
    if (!e.locked_elsewhere) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - e.locked_tried < kLockedRetryInterval) {
      throw Error(ErrorCode::kLocked, e.problem);
    }
    Store* owner = nullptr;
    for (auto& [name, st] : stores) {
      auto it = st->entries.find(e.key);
      if (it != st->entries.end() && it->second.get() == &e) owner = st.get();
    }
    if (!owner) return;  // dropped: the caller skips it
    const std::string before = e.problem;
    e.problem.clear();
    e.locked_elsewhere = false;
    try {
      verify_entry_locked(*owner, e);
    } catch (const Error& err) {
      e.locked_tried = std::chrono::steady_clock::now();
      if (err.code() == ErrorCode::kLocked || !e.attached) {
        // Still held (or not opened at all): as it was.
        e.problem = err.code() == ErrorCode::kLocked ? err.what() : before;
        e.locked_elsewhere = true;
      } else if (e.problem.empty()) {
        e.problem = err.what();  // it opened, then failed: the file's problem, not a lock
      }
      throw;
    }
    trim_locked();  // verify attached it (the most recently used: not the one trimmed)
  }

  // Reads (and checks) the metadata of an attached or attachable file. Under mu (and write_mu
  // when `e` is already in the store: restore).
  void verify_entry_locked(Store& store, Entry& e) {
    e.placeholder_meta = false;  // whatever the file is, its metadata row is read or written here
    open_duck();                 // its failure is the request's, not the file's (attach_locked)
    try {
      if (!e.attached) attach_locked(e);
    } catch (const Error& err) {
      if (err.code() == ErrorCode::kLocked) throw;
      if (e.problem.empty()) e.problem = err.what();
      return;
    }
    e.last_used = ++clock;
    const std::string a = duck::quote_ident(e.alias);
    const int64_t tables = admin().query_int(
        fmt::format("SELECT count(*) FROM duckdb_tables() WHERE database_name = {}",
                    duck::quote_literal(e.alias)));
    const int64_t has_meta = admin().query_int(fmt::format(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = {} AND table_name = {}",
        duck::quote_literal(e.alias), duck::quote_literal(kMetaTable)));
    if (has_meta == 0) {
      if (tables == 0 && !options.read_only) {
        // A creation interrupted before its first commit: finish it.
        init_partition_locked(store, e);
        return;
      }
      e.problem = fmt::format("not a duckpart partition of '{}' (no {} table)", store.schema.name(),
                              kMetaTable);
      return;
    }
    duck::Result r = admin().query(
        fmt::format("SELECT format_version, schema_json, strategy, period, row_count, min_value, "
                    "max_value, min_id, max_id, commit_version FROM {}.main.{}",
                    a, kMetaTable),
        e.file);
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> rows;
    while (auto c = r.fetch()) dec.decode(c, rows);
    if (rows.empty()) {
      verify_unwritten_copy_locked(store, e);
      return;
    }
    if (rows.size() != 1) {
      e.problem = fmt::format("metadata table has {} rows instead of 1", rows.size());
      return;
    }
    const auto& v = rows[0].values;
    try {
      const Schema stored = Schema::from_json(v[1].get<std::string>());
      if (!stored.same_layout(store.schema)) {
        e.problem = fmt::format("belongs to another table or layout (stored: {}; expected: {})",
                                stored.to_json(), store.schema.to_json());
        return;
      }
      if (!v[5].is_null() && !v[6].is_null()) {
        e.stored_range.emplace(v[5].get<Timestamp>().micros, v[6].get<Timestamp>().micros);
      }
      if (v[2].get<std::string>() != strategy_name(store.strategy)) {
        e.problem = fmt::format("was written with the {} strategy, the store is {}",
                                v[2].get<std::string>(), strategy_name(store.strategy));
        return;
      }
      if (v[3].get<std::string>().empty()) {
        // Made from the template and never committed to (a crash, or its first batch failed):
        // its name gives the period, provided its rows (none, normally) lie inside it. Written
        // now when the store is writable.
        const bool inside =
            v[4].get<int64_t>() == 0 || (!v[5].is_null() && !v[6].is_null() && !e.key.is_null &&
                                         v[5].get<Timestamp>().micros >= e.key.start_ts().micros &&
                                         v[6].get<Timestamp>().micros < e.key.end_ts().micros);
        if (!inside) {
          e.problem = fmt::format(
              "has no period in its metadata and holds {} rows from {} to {}, outside the period "
              "{} of its name",
              v[4].get<int64_t>(), v[5].to_string(), v[6].to_string(), e.key.label());
          return;
        }
        if (!options.read_only) {
          admin().exec(
              fmt::format(
                  "UPDATE {}.main.{} SET period = {}, range_start = {}, "
                  "range_end = {}",
                  a, kMetaTable, duck::quote_literal(e.key.label()),
                  e.key.is_null ? "NULL"
                                : duck::quote_literal(format_date(e.key.start())) + "::TIMESTAMP",
                  e.key.is_null ? "NULL"
                                : duck::quote_literal(format_date(e.key.end())) + "::TIMESTAMP"),
              e.file);
        }
      } else if (v[3].get<std::string>() != e.key.label()) {
        e.problem = fmt::format("holds period {} but is named for {}", v[3].get<std::string>(),
                                e.key.label());
        return;
      }
      e.stored_range.reset();
      PartitionMeta m;
      m.row_count = v[4].get<int64_t>();
      m.min_value = v[5].is_null() ? std::nullopt : std::optional(v[5].get<Timestamp>().micros);
      m.max_value = v[6].is_null() ? std::nullopt : std::optional(v[6].get<Timestamp>().micros);
      m.min_id = decode_id(store.schema, v[7]);
      m.max_id = decode_id(store.schema, v[8]);
      m.commit_version = v[9].get<int64_t>();
      e.set_meta(std::move(m));
      // Attached read-only (a shared lock: no process writes the file meanwhile).
      if (options.read_only) e.meta_stamp = stamp_of(e.file);
    } catch (const std::exception& ex) {
      e.problem = fmt::format("unreadable metadata: {}", ex.what());
    }
  }

  // A file without a metadata row: a copy of the template that no commit reached (a crash
  // between the copy and its first commit, or its first batch failed). It is the empty partition
  // of its name provided it holds no rows and has this table's columns; the row is written now
  // when the store is writable. Under mu.
  void verify_unwritten_copy_locked(Store& store, Entry& e) {
    const Schema& schema = store.schema;
    try {
      duck::Result r = admin().query(
          fmt::format("SELECT column_name FROM duckdb_columns() WHERE database_name = {} AND "
                      "schema_name = 'main' AND table_name = {} ORDER BY column_index",
                      duck::quote_literal(e.alias), duck::quote_literal(schema.name())),
          e.file);
      duck::ChunkDecoder dec(r);
      std::vector<DataRecord> cols;
      while (auto c = r.fetch()) dec.decode(c, cols);
      bool same = cols.size() == schema.columns().size();
      for (std::size_t i = 0; same && i < cols.size(); ++i) {
        same = cols[i].values.at(0).get<std::string>() == schema.columns()[i].name;
      }
      if (!same) {
        e.problem =
            fmt::format("has no metadata row and no table '{}' with its columns", schema.name());
        return;
      }
      const int64_t n = admin().query_int(
          fmt::format("SELECT count(*) FROM {}.main.{}", duck::quote_ident(e.alias),
                      duck::quote_ident(schema.name())),
          e.file);
      if (n != 0) {
        e.problem = fmt::format("has no metadata row but holds {} rows", n);
        return;
      }
      if (!options.read_only) {
        admin().exec(partition_init_sql(e.alias, schema, store.strategy, e.key).back(), e.file);
      }
    } catch (const std::exception& ex) {
      e.problem = fmt::format("unreadable metadata: {}", ex.what());
      return;
    }
    e.stored_range.reset();
    e.set_meta(PartitionMeta{});
  }

  static Value decode_id(const Schema& schema, const Value& stored) {
    if (stored.is_null() || !schema.id_index()) return Value{};
    if (schema.columns()[*schema.id_index()].type == ColumnType::kBigint) {
      return Value(static_cast<int64_t>(std::stoll(stored.get<std::string>())));
    }
    return stored;
  }

  void init_partition_locked(Store& store, Entry& e) { init_partition_on(admin(), store, e); }

  // Creates the tables of the attached, empty partition `e` in one transaction on `conn`.
  void init_partition_on(duck::Connection& conn, const Store& store, Entry& e) const {
    conn.exec("BEGIN TRANSACTION");
    try {
      conn.exec(create_table_sql(e.alias, store.schema, false), e.file);
      for (const auto& sql : partition_init_sql(e.alias, store.schema, store.strategy, e.key)) {
        conn.exec(sql, e.file);
      }
      conn.exec("COMMIT", e.file);
    } catch (...) {
      try {
        conn.exec("ROLLBACK");
      } catch (...) {
      }
      throw;
    }
    e.set_meta(PartitionMeta{});
  }

  // The table's store, loaded on first use. Unless `drain` is false, rows buffered by write
  // buffering are committed first (and ingest logs left by a crash are replayed first in any
  // case): every operation other than a buffered write sees every row acknowledged before it.
  Store& store_for(const Schema& schema, bool drain = true) {
    Store* store;
    {
      std::lock_guard lock(mu);
      store = &store_for_locked(schema);
    }
    if (store->ingest.replay_pending.load()) replay_ingest(*store);
    if (drain && store->ingest.rows.load() > 0 && bulk_active.load() == 0) drain_ingest(*store);
    if (drain) settle_reaper(*store);
    return *store;
  }

  // Waits until the logs a background drain emptied are deleted: a log left on disk is replayed
  // by the next open after a crash, which must not meet a partition dropped or restored since.
  static void settle_reaper(Store& store) {
    if (store.ingest.reaping_bytes.load() == 0) return;
    std::lock_guard g(store.ingest.mu);
    join_reaper_locked(store.ingest);
  }

  // ---- write buffering (config.write_buffer_mb) ------------------------------------------------
  //
  // Acknowledged batches wait in the filling partitions (logged in the current ingest log). When
  // they hold 8/9 of the budget, the fullest partitions holding an eighth of it are handed to a
  // background drain while the others keep filling (staggered drains: a partition commits when it
  // is among the fullest, so at many partitions each commit is larger than an even share of the
  // memory would be). Every other operation first waits for a running drain and commits every
  // buffered row itself (drain_ingest).

  // Commits the draining partitions of `store` (each partition's rows from its own batch, each
  // recording the ids of the logs its rows came from). Throws the write's error; the rows then
  // stay in d_parts and in their logs, and committing them again finishes exactly once.
  void commit_draining(Store& store) {
    Store::Ingest& in = store.ingest;
    if (!in.d_parts.empty()) write_parts(store, in.d_parts);
  }

  // After commit_draining succeeded (with in.mu held): forgets the draining partitions and returns
  // the logs no partition holds rows of any more, for the caller to delete.
  std::vector<IngestLog> finish_draining_locked(Store& store) {
    Store::Ingest& in = store.ingest;
    std::vector<IngestLog> dead;
    int64_t n = 0;
    for (const auto& [key, part] : in.d_parts) {
      n += static_cast<int64_t>(part.rows.rows);
      for (const auto& [id, rows] : part.logs) {
        auto it = in.logs.find(id);
        if (it == in.logs.end() || --it->second.holders > 0 || id == in.current) continue;
        dead.push_back(std::move(it->second.log));
        in.logs.erase(it);
      }
    }
    in.d_parts.clear();
    in.d_bytes = 0;
    in.rows -= n;
    if (n > 0) {
      std::lock_guard lock(mu);
      ++counters.buffer_drains;
    }
    return dead;
  }

  // Deletes ingest logs whose rows are all committed. A log that cannot be deleted stays on disk:
  // the next open replays it, and every partition skips it (each recorded its id).
  static void remove_logs(std::vector<IngestLog>& dead) noexcept {
    for (IngestLog& l : dead) {
      try {
        l.remove();
      } catch (...) {
      }
    }
    dead.clear();
  }

  // Hands logs a background drain emptied to a new reaper thread (with in.mu held), which joins
  // the previous reaper and deletes them. Without a thread they are deleted here. Never throws.
  static void reap_logs_locked(Store::Ingest& in, std::vector<IngestLog>& dead) noexcept {
    if (dead.empty()) return;
    uint64_t bytes = 0;
    for (const IngestLog& l : dead) bytes += l.bytes();
    std::atomic<uint64_t>* reaping = &in.reaping_bytes;  // joined before the store goes
    std::shared_ptr<std::thread> prev;
    std::shared_ptr<std::vector<IngestLog>> logs;
    bool counted = false;
    try {
      prev = std::make_shared<std::thread>(std::move(in.reaper));
      logs = std::make_shared<std::vector<IngestLog>>(std::move(dead));
      *reaping += bytes;
      counted = true;
      in.reaper = std::thread([prev, logs, reaping, bytes] {
        if (prev->joinable()) prev->join();
        remove_logs(*logs);
        *reaping -= bytes;
      });
      return;
    } catch (...) {
      // No thread (or no memory for one): deleted here, after the reapers before them.
    }
    if (prev && prev->joinable()) prev->join();
    if (in.reaper.joinable()) in.reaper.join();
    remove_logs(logs ? *logs : dead);
    if (counted) *reaping -= bytes;
  }

  // Waits until every log a background drain emptied is deleted (with in.mu held).
  static void join_reaper_locked(Store::Ingest& in) noexcept {
    if (in.reaper.joinable()) in.reaper.join();
  }

  // Closes the current log to appends (with in.mu held): a partition handed to a drain records
  // its id, so no later row of that partition may go into it. Deleted when it holds no rows.
  void close_current_log_locked(Store::Ingest& in) {
    if (in.current.empty()) return;
    auto it = in.logs.find(in.current);
    in.current.clear();
    if (it == in.logs.end()) return;
    in.spare_buffer = it->second.log.take_buffer();  // no appends to it after this
    if (it->second.holders > 0) return;
    std::vector<IngestLog> dead;
    dead.push_back(std::move(it->second.log));
    in.logs.erase(it);
    remove_logs(dead);
  }

  // Bytes of every live ingest log (with in.mu held).
  static uint64_t live_log_bytes(const Store::Ingest& in) noexcept {
    uint64_t n = 0;
    for (const auto& [id, l] : in.logs) n += l.log.bytes();
    return n;
  }

  // Moves the filling partitions `keys` to the draining set (empty: no drain is running or
  // failed), with in.mu held. The current log is closed first when one of them holds rows of it.
  void hand_over_locked(Store& store, const std::vector<PartitionKey>& keys) {
    Store::Ingest& in = store.ingest;
    for (const PartitionKey& k : keys) {
      auto it = in.parts.find(k);
      if (it != in.parts.end() && !it->second.logs.empty() &&
          it->second.logs.back().first == in.current) {
        close_current_log_locked(in);
        break;
      }
    }
    uint64_t moved = 0;
    for (const PartitionKey& k : keys) {
      auto node = in.parts.extract(k);
      if (node.empty()) continue;
      moved += node.mapped().held_bytes();
      in.d_parts.insert(std::move(node));
    }
    in.d_bytes += moved;
    in.bytes = in.bytes > moved ? in.bytes - moved : 0;
    if (in.parts.empty()) in.bytes = 0;
  }

  // The fullest filling partitions (most rows first) that together hold at least `bytes`.
  static std::vector<PartitionKey> fullest_parts(const Store::Ingest& in, uint64_t bytes) {
    std::vector<std::pair<uint64_t, PartitionKey>> by_rows;
    for (const auto& [key, part] : in.parts) {
      if (part.rows.rows > 0) by_rows.emplace_back(part.rows.rows, key);
    }
    std::sort(by_rows.begin(), by_rows.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<PartitionKey> keys;
    uint64_t taken = 0;
    for (const auto& [rows, key] : by_rows) {
      if (taken >= bytes) break;
      keys.push_back(key);
      taken += in.parts.at(key).held_bytes();
    }
    return keys;
  }

  // The filling partitions holding rows of the oldest live log (handing them over frees it).
  static std::vector<PartitionKey> parts_of_oldest_log(const Store::Ingest& in) {
    std::vector<PartitionKey> keys;
    if (in.logs.empty()) return keys;
    const std::string& oldest = in.logs.begin()->first;
    for (const auto& [key, part] : in.parts) {
      for (const auto& [id, rows] : part.logs) {
        if (id == oldest) {
          keys.push_back(key);
          break;
        }
      }
    }
    return keys;
  }

  // Where each partition's rows of one batch go in the write buffer (prepare_rows), so that the
  // copy after the batch is logged (scatter_rows) cannot fail half way.
  struct RowSlots {
    std::vector<BufferedRows*> dst;
    std::vector<std::size_t> base;
    std::vector<uint32_t> gid;   // per row of the batch: its index in `groups`
    std::vector<uint32_t> rank;  // per row of the batch: its place among its group's rows
    uint64_t grown = 0;          // memory the room took (capacities included)
    // Per worker of scatter_rows, allocated here so that it allocates nothing: per row, where its
    // text starts in its arena (text columns: 8 bytes per row and worker, for the call only, not
    // counted in the budget); one write cursor per group.
    std::vector<std::vector<uint64_t>> start;
    std::vector<std::vector<std::byte*>> out;
    std::vector<std::size_t> order;  // the columns, costliest copy first
  };

  // Makes room for every row of `batch` in its partition's buffered rows (`groups`: the rows of
  // each partition), text included, and scratch space for `workers` threads of scatter_rows.
  // Throws (bad_alloc) with the buffer as it was.
  RowSlots prepare_rows(const Schema& schema, std::map<PartitionKey, BufferedRows>& parts,
                        const ColumnBatch& batch, const std::vector<Group>& groups,
                        const std::vector<std::vector<duckdb_hugeint>>& uuids, unsigned workers) {
    const std::size_t ncols = schema.columns().size();
    RowSlots s;
    s.gid.resize(batch.rows);
    s.rank.resize(batch.rows);
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      const std::vector<uint32_t>& rows = groups[gi].rows;
      for (std::size_t i = 0; i < rows.size(); ++i) {
        s.gid[rows[i]] = static_cast<uint32_t>(gi);
        s.rank[rows[i]] = static_cast<uint32_t>(i);
      }
    }
    s.dst.reserve(groups.size());
    uint64_t before = 0;
    s.out.assign(std::max(1u, workers), std::vector<std::byte*>(groups.size()));
    s.start.resize(s.out.size());
    for (const Group& g : groups) {
      BufferedRows& part = parts[g.key];
      if (part.rows.columns.empty()) {
        BufferedRows fresh;  // built whole, then moved in: a throw leaves `part` empty
        fresh.rows = make_column_batch(schema);
        fresh.uuids.assign(ncols, {});
        fresh.text.assign(ncols, std::nullopt);
        for (std::size_t c = 0; c < ncols; ++c) {
          const bool uuid = c < uuids.size() && !uuids[c].empty();
          if (!uuid &&
              std::holds_alternative<std::vector<std::string>>(fresh.rows.columns[c].data)) {
            fresh.text[c].emplace();
          }
        }
        part = std::move(fresh);
      }
      part.run_ends.reserve(part.run_ends.size() + 1);  // scatter_rows records the run
      before += part.held_bytes();
      s.dst.push_back(&part);
      s.base.push_back(part.rows.rows);
    }
    // Text bytes each partition gets, per text column.
    std::vector<std::vector<uint64_t>> add(ncols);
    for (std::size_t c = 0; c < ncols; ++c) {
      if (groups.empty() || !s.dst[0]->text[c]) continue;
      for (std::vector<uint64_t>& start : s.start) start.resize(batch.rows);
      add[c].assign(groups.size(), 0);
      const auto& in = std::get<std::vector<std::string>>(batch.columns[c].data);
      for (std::size_t r = 0; r < batch.rows; ++r) add[c][s.gid[r]] += in[r].size();
    }
    // The costliest copies first (text, then UUIDs), so that the workers end together.
    s.order.resize(ncols);
    std::iota(s.order.begin(), s.order.end(), std::size_t{0});
    auto cost_rank = [&](std::size_t c) {
      if (!groups.empty() && s.dst[0]->text[c]) return 0;
      return c < uuids.size() && !uuids[c].empty() ? 1 : 2;
    };
    std::stable_sort(s.order.begin(), s.order.end(),
                     [&](std::size_t x, std::size_t y) { return cost_rank(x) < cost_rank(y); });
    auto resize_all = [&](bool grow) {
      for (std::size_t gi = 0; gi < groups.size(); ++gi) {
        BufferedRows& part = *s.dst[gi];
        const std::size_t size = s.base[gi] + (grow ? groups[gi].rows.size() : 0);
        for (std::size_t c = 0; c < ncols; ++c) {
          ColumnVector& d = part.rows.columns[c];
          const bool valid = !batch.columns[c].valid.empty() || !d.valid.empty();
          if (grow ? valid : d.valid.size() > size) d.valid.resize(size, 1);
          if (c < uuids.size() && !uuids[c].empty()) {
            part.uuids[c].resize(size);  // UUID columns: parsed values only, no text
            continue;
          }
          if (part.text[c]) {
            TextArena& t = *part.text[c];
            t.ends.resize(size);
            const std::size_t need = t.bytes.size() + (grow ? add[c][gi] : 0);
            if (need > t.bytes.capacity()) {
              t.bytes.reserve(std::max(need, t.bytes.capacity() * 2));  // geometric growth
            }
            continue;
          }
          std::visit([&](auto& v) { v.resize(size); }, d.data);
        }
      }
    };
    try {
      resize_all(true);
    } catch (...) {
      resize_all(false);  // shrinking never throws
      throw;
    }
    uint64_t after = 0;
    for (const BufferedRows* part : s.dst) after += part->held_bytes();
    s.grown = after > before ? after - before : 0;
    return s;
  }

  // Gives the room prepare_rows made back (the batch could not be logged).
  void release_rows(const Schema& schema, const RowSlots& s) noexcept {
    for (std::size_t gi = 0; gi < s.dst.size(); ++gi) {
      BufferedRows& part = *s.dst[gi];
      for (std::size_t c = 0; c < schema.columns().size(); ++c) {
        ColumnVector& d = part.rows.columns[c];
        if (d.valid.size() > s.base[gi]) d.valid.resize(s.base[gi]);
        if (part.uuids[c].size() > s.base[gi]) part.uuids[c].resize(s.base[gi]);
        if (part.text[c] && part.text[c]->ends.size() > s.base[gi]) {
          part.text[c]->ends.resize(s.base[gi]);
        }
        std::visit(
            [&](auto& v) {
              if (v.size() > s.base[gi]) v.resize(s.base[gi]);
            },
            d.data);
      }
    }
  }

  // Copies every row of `batch` into the room prepare_rows made, each group's rows in the order
  // of `groups` (write_buffered sorts them by the partition value: one sorted run per partition
  // and call, merged by the drain). One sequential pass per column over the batch, writing each
  // row to its place in its partition's new rows (a counting sort): reading the rows of one
  // partition after another instead costs a cache miss per cell. The columns are independent:
  // prepare_rows' workers copy them in parallel, the costliest first. Never throws: text goes
  // into reserved bytes. The rows count once publish_rows has run (after the batch is logged).
  static void scatter_rows(RowSlots& s, const ColumnBatch& batch, const std::vector<Group>& groups,
                           const std::vector<std::vector<duckdb_hugeint>>& uuids) noexcept {
    run_parallel_tasks(s.order.size(), static_cast<unsigned>(s.out.size() - 1),
                       [&](std::size_t t, std::size_t w) {
                         scatter_column(s, batch, groups, uuids, s.order[t], s.out[w], s.start[w]);
                       });
  }

  // scatter_rows' copy of column `c`, with a worker's write cursors and text starts.
  static void scatter_column(const RowSlots& s, const ColumnBatch& batch,
                             const std::vector<Group>& groups,
                             const std::vector<std::vector<duckdb_hugeint>>& uuids, std::size_t c,
                             std::vector<std::byte*>& out, std::vector<uint64_t>& starts) noexcept {
    const std::size_t n = batch.rows;
    const uint32_t* g = s.gid.data();
    const uint32_t* rank = s.rank.data();
    // One typed pass writing row r to out[its group] + its rank.
    auto copy = [&](const auto* in) {
      constexpr std::size_t w = sizeof(*in);
      for (std::size_t r = 0; r < n; ++r) {
        std::memcpy(out[g[r]] + std::size_t{rank[r]} * w, in + r, w);
      }
    };
    const ColumnVector& src = batch.columns[c];
    if (!src.valid.empty()) {
      for (std::size_t gi = 0; gi < groups.size(); ++gi) {
        out[gi] =
            reinterpret_cast<std::byte*>(s.dst[gi]->rows.columns[c].valid.data() + s.base[gi]);
      }
      copy(src.valid.data());
    }
    if (c < uuids.size() && !uuids[c].empty()) {
      for (std::size_t gi = 0; gi < groups.size(); ++gi) {
        out[gi] = reinterpret_cast<std::byte*>(s.dst[gi]->uuids[c].data() + s.base[gi]);
      }
      copy(uuids[c].data());
      return;
    }
    if (!groups.empty() && s.dst[0]->text[c]) {
      // Each row's bytes start where the rows before it in its group's order end: lengths
      // first (in batch order), then the ends and starts in each group's order, then the bytes.
      const auto& in = std::get<std::vector<std::string>>(src.data);
      uint64_t* start = starts.data();
      for (std::size_t r = 0; r < n; ++r) start[r] = in[r].size();
      for (std::size_t gi = 0; gi < groups.size(); ++gi) {
        TextArena& t = *s.dst[gi]->text[c];
        uint64_t* ends = t.ends.data() + s.base[gi];
        uint64_t at = t.bytes.size();
        const std::vector<uint32_t>& rows = groups[gi].rows;
        for (std::size_t i = 0; i < rows.size(); ++i) {
          const uint64_t len = start[rows[i]];
          start[rows[i]] = at;
          at += len;
          ends[i] = at;
        }
        t.bytes.resize(at);  // within the capacity prepare_rows reserved
        out[gi] = reinterpret_cast<std::byte*>(t.bytes.data());
      }
      for (std::size_t r = 0; r < n; ++r) {
        if (!in[r].empty()) std::memcpy(out[g[r]] + start[r], in[r].data(), in[r].size());
      }
      return;
    }
    std::visit(
        [&](const auto& in) {
          using V = std::decay_t<decltype(in)>;
          using T = typename V::value_type;
          if constexpr (!std::is_same_v<T, std::string>) {
            for (std::size_t gi = 0; gi < groups.size(); ++gi) {
              out[gi] = reinterpret_cast<std::byte*>(
                  std::get<V>(s.dst[gi]->rows.columns[c].data).data() + s.base[gi]);
            }
            copy(in.data());
          }
        },
        src.data);
  }

  // The rows scatter_rows copied become part of their partitions' buffered rows, one more sorted
  // run each. Never throws (run_ends has room: prepare_rows).
  static void publish_rows(const RowSlots& s, const std::vector<Group>& groups) noexcept {
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      BufferedRows& part = *s.dst[gi];
      part.rows.rows = s.base[gi] + groups[gi].rows.size();
      part.run_ends.push_back(static_cast<uint32_t>(part.rows.rows));  // reserved
    }
  }

  // Takes back the text bytes scatter_rows added (the batch could not be logged); release_rows
  // then gives back the rest of the room. Never throws (shrinking).
  static void unscatter_rows(const Schema& schema, const RowSlots& s) noexcept {
    for (std::size_t gi = 0; gi < s.dst.size(); ++gi) {
      BufferedRows& part = *s.dst[gi];
      for (std::size_t c = 0; c < schema.columns().size(); ++c) {
        if (c >= part.text.size() || !part.text[c]) continue;
        TextArena& t = *part.text[c];
        t.bytes.resize(s.base[gi] == 0 ? 0 : t.ends[s.base[gi] - 1]);
      }
    }
  }

  // A text id column of buffered rows as std::strings in `rows`, for as long as a drain commits
  // the partition (its id range and bloom filter read the ids as strings; the appender reads every
  // text column from the arenas). Nothing for UUID or integer ids.
  class MaterializedText {
   public:
    MaterializedText(BufferedRows* part, std::optional<std::size_t> id_col)
        : part_(part && id_col && *id_col < part->text.size() && part->text[*id_col] ? part
                                                                                     : nullptr),
          col_(id_col.value_or(0)) {
      if (!part_) return;
      try {
        auto& v = std::get<std::vector<std::string>>(part_->rows.columns[col_].data);
        v.resize(part_->rows.rows);
        const duck::TextColumn t = part_->text[col_]->column();
        for (std::size_t r = 0; r < v.size(); ++r) v[r].assign(t.at(r));
      } catch (...) {
        release();
        throw;
      }
    }
    ~MaterializedText() { release(); }
    MaterializedText(const MaterializedText&) = delete;
    MaterializedText& operator=(const MaterializedText&) = delete;

   private:
    void release() noexcept {
      if (!part_) return;
      auto& v = std::get<std::vector<std::string>>(part_->rows.columns[col_].data);
      std::vector<std::string>().swap(v);
    }
    BufferedRows* part_;
    std::size_t col_;
  };

  // Waits for a background drain of `store`; a drain that failed is retried here (its error is
  // thrown again if it fails again). With in.mu held (through `lock`).
  void settle_draining(Store& store, std::unique_lock<std::mutex>& lock) {
    Store::Ingest& in = store.ingest;
    in.cv.wait(lock, [&] { return !in.draining; });
    if (in.drainer.joinable()) in.drainer.join();
    if (!in.d_parts.empty()) {
      try {
        commit_draining(store);
      } catch (const std::exception& e) {
        in.d_error = e.what();
        throw;
      }
      std::vector<IngestLog> dead = finish_draining_locked(store);
      remove_logs(dead);
      in.d_error.clear();
    }
  }

  // Commits every buffered row of `store` now (a running background drain is waited for).
  void drain_ingest(Store& store) {
    std::unique_lock lock(store.ingest.mu);
    drain_ingest_locked(store, lock);
  }

  void drain_ingest_locked(Store& store, std::unique_lock<std::mutex>& lock) {
    Store::Ingest& in = store.ingest;
    settle_draining(store, lock);
    std::vector<PartitionKey> all;
    for (const auto& [key, part] : in.parts) all.push_back(key);
    hand_over_locked(store, all);
    close_current_log_locked(in);  // a log that holds no rows (a failed append) is deleted
    settle_draining(store, lock);  // commits them on this thread
    join_reaper_locked(in);        // every committed log is deleted when this returns
  }

  // Hands the draining set (hand_over_locked) to a background thread (none may be running).
  void start_background_drain(Store& store) {
    Store::Ingest& in = store.ingest;
    if (in.drainer.joinable()) in.drainer.join();
    in.draining = true;
    try {
      in.drainer = std::thread([this, &store] {
        Store::Ingest& st = store.ingest;
        std::string error;
        try {
          commit_draining(store);
        } catch (const std::exception& e) {
          error = e.what();
        }
        std::lock_guard g(st.mu);
        if (error.empty()) {
          // The emptied logs are deleted by a reaper: a writer waiting for this drain to end
          // (a full buffer) does not wait for their unlinks.
          std::vector<IngestLog> dead = finish_draining_locked(store);
          reap_logs_locked(st, dead);
        }
        st.d_error = error;
        st.draining = false;
        st.cv.notify_all();
      });
    } catch (const std::exception& e) {
      // No thread: the set stays as the draining set, committed by the next operation.
      in.draining = false;
      in.d_error = e.what();
    }
  }

  // Applies the ingest logs a previous process left (it crashed or could not drain at close):
  // every whole record, committed with the log's id so that partitions which had committed it
  // before the crash are skipped. Runs before the table is used.
  void replay_ingest(Store& store) {
    Store::Ingest& in = store.ingest;
    std::lock_guard g(in.mu);
    if (!in.replay_pending.load()) return;
    std::sort(in.replay.begin(), in.replay.end());
    while (!in.replay.empty()) {
      const std::string path = in.replay.front();
      IngestLog::Contents c = IngestLog::read(path);
      const std::string name = fs::path(path).filename().string();
      const std::string id =
          name.substr(std::string(kIngestPrefix).size(),
                      name.size() - std::string(kIngestPrefix).size() - std::string(".log").size());
      for (ColumnBatch& b : c.batches) {
        try {
          check_batch(store.schema, b);
        } catch (const Error& e) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("ingest log '{}' does not hold rows of table '{}' as stored: {}",
                                  path, store.schema.name(), e.what()));
        }
      }
      if (!c.batches.empty()) {
        ColumnBatch all = concat_batches(c.batches);
        BatchOptions o;
        o.batch_id = id;
        try {
          write_to(store, store.schema, all, o);
        } catch (const Error& e) {
          throw Error(e.code(), fmt::format("replaying ingest log '{}': {}", path, e.what()));
        }
      }
      std::error_code ec;
      fs::remove(path, ec);
      fsync_path(store.dir, true);
      in.replay.erase(in.replay.begin());
      std::lock_guard lock(mu);
      ++counters.ingest_logs_replayed;
    }
    in.replay_pending = false;
  }

  // A filling partition with this many rows is handed to a background drain when none runs: four
  // of DuckDB's row groups (122,880 rows each). Two made 10M rows over 12 months 3% faster than
  // four but their files 2.5% larger: each commit is sorted on its own, and three sorted commits
  // over the same month compress worse than two.
  static constexpr std::size_t kEarlyDrainRows = 4 * 122'880;

  // A buffered batch of at least this many rows is written to its log on a second thread while
  // its rows are copied into the buffer (write_buffered).
  static constexpr std::size_t kAsyncLogRows = 16'384;

  // A buffered batch of at least this many rows is validated, sorted and copied into the buffer
  // on up to four threads (run_parallel_tasks, intake_helpers); its ids and UUIDs in ranges of
  // kIntakeRangeRows rows.
  static constexpr std::size_t kParallelIntakeRows = 65'536;
  static constexpr std::size_t kIntakeRangeRows = 32'768;

  // Threads started beside the caller's for the intake of a buffered batch of `rows` rows.
  static unsigned intake_helpers(std::size_t rows) {
    if (rows < kParallelIntakeRows) return 0;
    if (const int n = intake_helpers_override.load(); n >= 0) return static_cast<unsigned>(n);
    return std::min(std::max(1u, std::thread::hardware_concurrency()), 4u) - 1;
  }

  // A buffered create_batch: validates and routes like write_to (a bad row fails the call with
  // nothing logged), assigns missing ids, appends the batch to the filling set's ingest log
  // (synced), keeps it in memory and hands the set to a background drain when it holds half the
  // budget.

  BatchResult write_buffered(Store& store, const Schema& schema, ColumnBatch& batch,
                             bool keep_batch) {
    BatchResult res;
    if (batch.rows == 0) {
      res.batch_id = new_uuid_v7();
      return res;
    }
    if (batch.rows > UINT32_MAX) {
      throw Error(ErrorCode::kInvalidArgument, "a batch holds at most 4294967295 rows");
    }
    std::vector<Group> groups = route(schema, batch, store.strategy);
    res.ids_generated = assign_missing_ids(schema, batch);
    // Ids made canonical and UUIDs parsed (validates; the log and the buffer hold UUIDs as 16
    // bytes), in ranges of rows; each partition's rows sorted by the partition value (they go
    // into the buffer as one run, merged by the drain: merge_sorted_runs). On up to four threads
    // for a large batch: while the buffer fills, the caller's thread is the only busy one. A bad
    // value fails the call naming the first one in record order, with nothing logged.
    const unsigned helpers = intake_helpers(batch.rows);
    std::vector<std::vector<duckdb_hugeint>> uuids = uuid_room(schema, batch);
    const std::size_t ranges = (batch.rows + kIntakeRangeRows - 1) / kIntakeRangeRows;
    run_parallel_tasks(ranges + groups.size(), helpers, [&](std::size_t t, std::size_t) {
      if (t < ranges) {
        const std::size_t from = t * kIntakeRangeRows;
        const std::size_t to = std::min<std::size_t>(batch.rows, from + kIntakeRangeRows);
        canonical_uuids(schema, batch, uuids, from, to);
      } else {
        sort_by_partition_value(batch, schema.partition_index(), groups[t - ranges].rows);
      }
    });
    {
      std::lock_guard lock(mu);
      for (const Group& g : groups) {
        auto it = store.entries.find(g.key);
        if (it != store.entries.end()) retry_locked_locked(*it->second);
        if (it != store.entries.end() && !it->second->problem.empty()) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("cannot write to partition {} ('{}'): {}", it->second->name,
                                  it->second->file, it->second->problem));
        }
      }
    }
    Store::Ingest& in = store.ingest;
    std::unique_lock lock(in.mu);
    // Everything that can fail for reasons other than this batch happens before it is logged: once
    // it is in the log the call succeeds (an error after that would invite the caller to write
    // rows again that are already durable). A background drain that failed is retried (its error
    // is thrown again if it fails again); a log that could not be cut back after a failed append is
    // committed and replaced; a full filling set is handed to a background drain (at most two sets
    // in memory: the previous drain is waited for). Not while a BulkLoad of this repository is
    // open: its partitions' write locks would hold the drain, and a drain waited for by the
    // BulkLoad's own thread would never end.
    if (!in.draining && !in.d_error.empty()) settle_draining(store, lock);
    if (!in.current.empty() && in.logs.at(in.current).log.broken()) {
      drain_ingest_locked(store, lock);
    }
    const uint64_t budget = static_cast<uint64_t>(config.write_buffer_mb) * 1024 * 1024;
    // The filling partitions may hold 8/9 of the budget: then the fullest holding an eighth of
    // that are handed over (at most 1/9 of the budget drains while the rest fills). The live logs
    // may hold twice the budget on disk (a log lives until its last partition commits, and one
    // 4 KB record per call makes the logs of many small calls much larger than their rows): then
    // the partitions holding the oldest log are handed over, which frees it.
    const uint64_t fill_limit = budget / 9 * 8;
    while (bulk_active.load() == 0) {
      const bool memory_full = in.bytes >= fill_limit;
      if (!memory_full && live_log_bytes(in) < 2 * budget) {
        // Logs a reaper has yet to delete are on disk too: wait for it rather than pass the
        // bound (at full drains they are far below it, so a writer seldom waits here).
        if (live_log_bytes(in) + in.reaping_bytes.load() >= 2 * budget) join_reaper_locked(in);
        break;
      }
      if (in.draining || !in.d_parts.empty()) {
        settle_draining(store, lock);  // releases in.mu while it waits: look again
        continue;
      }
      const std::vector<PartitionKey> keys =
          memory_full ? fullest_parts(in, in.bytes / 8) : parts_of_oldest_log(in);
      if (keys.empty()) break;  // only the current log, with no rows in it
      hand_over_locked(store, keys);
      start_background_drain(store);
      in.last_full_drain = std::chrono::steady_clock::now();
    }
    // A log is replayed whole into memory after a crash: a new one every quarter of the budget.
    if (!in.current.empty() && in.logs.at(in.current).log.bytes() >= budget / 4) {
      close_current_log_locked(in);
    }
    if (in.current.empty()) {
      const std::string id = new_uuid_v7();
      const auto it = in.logs
                          .emplace(id, Store::LiveLog{IngestLog::create(
                                           store.dir + "/" + kIngestPrefix + id + ".log")})
                          .first;
      it->second.log.give_buffer(std::move(in.spare_buffer));
      in.current = id;
      if (config.write_buffer_max_delay_ms > 0) start_timed_drains();
    }
    Store::LiveLog& log = in.logs.at(in.current);
    const uint64_t log_bytes_before = log.log.bytes();
    // The batch is written to the log (direct I/O: the call waits for the disk) on a second thread
    // while room is made for its rows and they are copied into it (at ~1 GB/s the write takes as
    // long as both); the rows count as buffered only once the log holds them (publish_rows). If
    // the room cannot be made (bad_alloc), the call fails and its record is cut off the log
    // again. Large batches only: a thread costs ~50 us. Both only read the batch.
    std::exception_ptr log_error;
    std::thread writer;
    if (batch.rows >= kAsyncLogRows) {
      try {
        writer = std::thread([&] {
          try {
            log.log.append(batch, uuids);
          } catch (...) {
            log_error = std::current_exception();
          }
        });
      } catch (const std::system_error&) {  // no thread: written here, below
      }
    }
    auto retract_record = [&]() noexcept {
      if (!writer.joinable()) return;
      writer.join();
      if (!log_error) log.log.retract(log_bytes_before);  // broken() if it cannot be cut back
    };
    RowSlots slots;
    try {
      slots = prepare_rows(schema, in.parts, batch, groups, uuids, helpers + 1);
    } catch (...) {
      retract_record();
      throw;
    }
    try {
      for (BufferedRows* part : slots.dst) part->logs.reserve(part->logs.size() + 1);
    } catch (...) {
      retract_record();
      release_rows(schema, slots);
      in.bytes += slots.grown;  // the capacity stays allocated
      throw;
    }
    if (writer.joinable()) {
      scatter_rows(slots, batch, groups, uuids);
      writer.join();
    } else {
      try {
        log.log.append(batch, uuids);
      } catch (...) {
        log_error = std::current_exception();
      }
      if (!log_error) scatter_rows(slots, batch, groups, uuids);
    }
    if (log_error) {
      unscatter_rows(schema, slots);
      release_rows(schema, slots);
      in.bytes += slots.grown;  // the capacity stays allocated
      std::rethrow_exception(log_error);
    }
    res.batch_id = in.current;
    res.rows_written = static_cast<int64_t>(batch.rows);
    res.partitions_written = static_cast<int64_t>(groups.size());
    in.bytes += slots.grown;
    publish_rows(slots, groups);
    const auto now = std::chrono::steady_clock::now();
    // The stream's rate for the timed drains: bytes logged since writes last paused for two of
    // the timer's ticks (hand-overs do not lower it, unlike the buffered bytes).
    if (now - in.last_append >= 2 * timer_tick()) {
      in.stream_start = now;
      in.stream_bytes = 0;
    }
    in.stream_bytes += log.log.bytes() - log_bytes_before;
    in.last_append = now;
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      BufferedRows& part = *slots.dst[gi];
      const auto n = static_cast<int64_t>(groups[gi].rows.size());
      if (slots.base[gi] == 0) part.since = now;
      if (part.logs.empty() || part.logs.back().first != in.current) {
        part.logs.emplace_back(in.current, n);  // within the reserved capacity
        ++log.holders;
      } else {
        part.logs.back().second += n;
      }
    }
    in.rows += static_cast<int64_t>(batch.rows);
    // Early hand-over: partitions that hold full row groups' worth of rows go to a background
    // drain as soon as none is running, instead of waiting for the buffer to fill. Their commits
    // are as large as DuckDB writes straight to the file (a row group or more), and the drain
    // works on the core the caller leaves idle rather than all at flush() or close (10M rows over
    // 12 months fit in the default buffer: everything was written at flush). Cannot fail: the
    // batch is logged.
    if (bulk_active.load() == 0 && !in.draining && in.d_parts.empty() && in.d_error.empty()) {
      try {
        std::vector<PartitionKey> keys;
        for (const auto& [key, part] : in.parts) {
          if (part.rows.rows >= kEarlyDrainRows) keys.push_back(key);
        }
        if (!keys.empty()) {
          hand_over_locked(store, keys);
          start_background_drain(store);
        }
      } catch (...) {  // no memory for the list: the rows wait for a later hand-over
      }
    }
    if (!keep_batch) batch = ColumnBatch{};
    {
      std::lock_guard g(mu);
      counters.rows_buffered += res.rows_written;
    }
    return res;
  }

  // Drains every table (flush, statistics).
  void drain_all_ingest() {
    std::vector<Store*> all;
    {
      std::lock_guard lock(mu);
      for (auto& [name, st] : stores) all.push_back(st.get());
    }
    for (Store* st : all) {
      if (st->ingest.replay_pending.load()) replay_ingest(*st);
      if (st->ingest.rows.load() > 0) drain_ingest(*st);
      settle_reaper(*st);
    }
  }

  // ---- timed drains (config.write_buffer_max_delay_ms) ------------------------------------------
  //
  // One thread per repository, started with the first buffered row: a few times per delay it
  // hands every filling partition whose first buffered row has waited the delay to a background
  // drain, as full partitions are handed over (start_background_drain). It only looks (try_lock):
  // a table busy with a write or a drain is looked at again on the next round; so is one with a
  // drain still running or a failed drain (the next operation retries that one, as without timed
  // drains), or while a BulkLoad is open (see write_buffered).
  std::mutex timer_mu;
  std::condition_variable timer_cv;
  bool timer_stop = false;
  std::thread timer;

  void start_timed_drains() {
    std::lock_guard g(timer_mu);
    if (timer.joinable() || timer_stop) return;
    try {
      timer = std::thread([this] { run_timed_drains(); });
    } catch (const std::exception&) {
      // No thread: buffered rows wait for the half-budget, another operation or close, as with
      // write_buffer_max_delay_ms = 0.
    }
  }

  std::chrono::milliseconds timer_tick() const {
    const auto delay = std::chrono::milliseconds(config.write_buffer_max_delay_ms);
    return std::max<std::chrono::milliseconds>(delay / 8, std::chrono::milliseconds(5));
  }

  void run_timed_drains() {
    const auto delay = std::chrono::milliseconds(config.write_buffer_max_delay_ms);
    const auto tick = timer_tick();
    std::unique_lock g(timer_mu);
    while (!timer_cv.wait_for(g, tick, [&] { return timer_stop; })) {
      g.unlock();
      std::vector<Store*> all;
      {
        std::lock_guard lock(mu);
        for (auto& [name, st] : stores) all.push_back(st.get());
      }
      for (Store* st : all) {
        Store::Ingest& in = st->ingest;
        std::unique_lock lock(in.mu, std::try_to_lock);
        if (!lock.owns_lock() || in.parts.empty() || in.draining || !in.d_parts.empty() ||
            !in.d_error.empty() || in.replay_pending.load() || bulk_active.load() != 0) {
          continue;
        }
        // While a stream fills the buffer (it was full within the delay), its partitions are
        // committed by the budget's drains when they are among the fullest; committing them after
        // the delay would cut every commit to what one delay brings (at 1M rows/s over 360
        // partitions, 28K rows per 10 s instead of ~130K). Then only a partition that waited six
        // times the delay is due (one the stream seldom writes). A stream that has not filled the
        // buffer yet counts too while it is written (a buffered write within the last two ticks)
        // at a rate that would fill it within six delays (bytes logged since its writes last paused
        // for two ticks, over that time): a bulk load of 20M rows over 120
        // months was cut at 10 s into two commits of ~83K rows per partition (below a row group:
        // DuckDB writes those through its log) where one drain commits 167K.
        const auto now = std::chrono::steady_clock::now();
        bool streaming = now - in.last_full_drain < delay;
        if (!streaming && now - in.last_append < 2 * tick) {
          const double written_in = std::chrono::duration<double>(now - in.stream_start).count();
          const double fill_limit =
              static_cast<double>(config.write_buffer_mb) * 1024 * 1024 / 9 * 8;
          const double judged_after = std::chrono::duration<double>(tick).count();
          streaming =
              written_in >= judged_after && static_cast<double>(in.stream_bytes) / written_in * 6 *
                                                    std::chrono::duration<double>(delay).count() >=
                                                fill_limit;
        }
        const auto due = streaming ? 6 * delay : delay;
        std::vector<PartitionKey> aged;
        for (const auto& [key, part] : in.parts) {
          if (part.rows.rows > 0 && now - part.since >= due) aged.push_back(key);
        }
        if (aged.empty()) continue;
        hand_over_locked(*st, aged);
        start_background_drain(*st);
        std::lock_guard c(mu);
        ++counters.timed_buffer_drains;
      }
      g.lock();
    }
  }

  // Ends the timed drains (close: before the last flush). Never throws.
  void stop_timed_drains() noexcept {
    {
      std::lock_guard g(timer_mu);
      timer_stop = true;
    }
    timer_cv.notify_all();
    if (timer.joinable()) timer.join();
  }

  // Waits for every background drain (close: before partitions are detached). Never throws.
  void join_drainers() noexcept {
    std::vector<Store*> all;
    {
      std::lock_guard lock(mu);
      for (auto& [name, st] : stores) all.push_back(st.get());
    }
    for (Store* st : all) {
      std::unique_lock lock(st->ingest.mu);
      st->ingest.cv.wait(lock, [&] { return !st->ingest.draining; });
      if (st->ingest.drainer.joinable()) st->ingest.drainer.join();
      join_reaper_locked(st->ingest);
    }
  }

  Store& store_for_locked(const Schema& schema) {
    auto it = stores.find(schema.name());
    if (it != stores.end()) {
      if (!it->second->schema.same_layout(schema)) {
        throw Error(ErrorCode::kConflict,
                    fmt::format("table '{}' is stored with another layout: stored {}, given {}",
                                schema.name(), it->second->schema.to_json(), schema.to_json()));
      }
      return *it->second;
    }
    auto store = std::make_unique<Store>();
    store->schema = schema;
    store->dir = base_dir + "/" + schema.name();
    store->strategy = config.strategy;
    load_store_locked(*store);
    if (!store->ingest.replay.empty()) {
      if (options.read_only) {
        for (const std::string& log : store->ingest.replay) {
          store->problems.push_back(fmt::format(
              "ingest log '{}' holds acknowledged rows that are not in the partitions yet (a "
              "writer with write buffering is running, or stopped before draining): they are "
              "not counted here; a writable open applies them",
              log));
        }
      } else {
        store->ingest.replay_pending = true;
      }
    }
    Store& ref = *store;
    stores.emplace(schema.name(), std::move(store));
    trim_locked();
    return ref;
  }

  // ---- read-only opens: the tables' directories are scanned while DuckDB starts
  // ------------------
  //
  // Starting DuckDB (the in-memory instance every partition is attached to) takes ~10 ms of one
  // core and touches no partition; scanning a table of 1,000+ partitions (listing, catalog, a stamp
  // per file, an entry per partition) takes ~5 ms and needs no DuckDB. A read-only open scans the
  // directory's tables on a thread of its own meanwhile (at most kPrefetchMaxTables of them); the
  // first load of a table takes its scan when it is at most kPrefetchMaxAge old, and any other
  // load reads the directory itself. A scan is what a load at that moment would have read, so a
  // file changed after it is treated like a file changed after the load (docs/architecture.md,
  // "Cold opens").
  std::future<std::map<std::string, TableScan>> prefetch;
  std::map<std::string, TableScan> prefetched;  // under mu, once `prefetch` is taken
  static constexpr auto kPrefetchMaxAge = std::chrono::seconds(2);
  static constexpr std::size_t kPrefetchMaxTables = 8;

  // The tables of the directory (as list_schemas names them), sorted; never throws.
  static std::vector<std::string> table_dirs(const std::string& base) {
    std::vector<std::string> out;
    DIR* d = ::opendir(base.c_str());
    if (!d) return out;
    while (const dirent* ent = ::readdir(d)) {
      const std::string_view name(ent->d_name);
      if (name.empty() || name[0] == '_' || name[0] == '.') continue;
      bool dir = ent->d_type == DT_DIR;
      if (ent->d_type == DT_UNKNOWN || ent->d_type == DT_LNK) {
        struct stat st {};
        dir = ::stat((base + "/" + ent->d_name).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
      }
      if (dir) out.emplace_back(name);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
  }

  void start_prefetch() noexcept {
    try {
      prefetch = std::async(std::launch::async, [base = base_dir, strategy = config.strategy] {
        std::map<std::string, TableScan> out;
        std::vector<std::string> tables = table_dirs(base);
        if (tables.size() > kPrefetchMaxTables) tables.resize(kPrefetchMaxTables);
        for (const std::string& t : tables) {
          try {
            out.emplace(t, scan_table_dir(base + "/" + t, t, strategy));
          } catch (...) {  // the load scans again and reports it
          }
        }
        return out;
      });
    } catch (...) {  // no thread: every load scans its directory itself
    }
  }

  // Under mu: the prefetched scan of `table`; nullopt when there is none or it is too old.
  std::optional<TableScan> take_prefetched(const std::string& table) {
    if (prefetch.valid()) {
      try {
        prefetched = prefetch.get();
      } catch (...) {
        prefetched.clear();
      }
    }
    auto it = prefetched.find(table);
    if (it == prefetched.end()) return std::nullopt;
    std::optional<TableScan> scan(std::move(it->second));
    prefetched.erase(it);
    if (std::chrono::steady_clock::now() - scan->started > kPrefetchMaxAge) return std::nullopt;
    return scan;
  }

  void load_store_locked(Store& store) {
    std::optional<TableScan> prefetched_scan = take_prefetched(store.schema.name());
    TableScan scan = prefetched_scan
                         ? std::move(*prefetched_scan)
                         : scan_table_dir(store.dir, store.schema.name(), store.strategy);
    if (!scan.exists) {
      if (options.read_only) return;
      std::error_code ec;
      fs::create_directories(store.dir, ec);
      if (ec) {
        throw Error(ErrorCode::kIo, fmt::format("cannot create partition directory '{}': {}",
                                                store.dir, ec.message()));
      }
      return;
    }
    // A table partitioned with another strategy is refused before anything is read or written
    // (loading it flagged every partition, and the next catalog written named the configured
    // strategy and none of them: every later open failed). Its strategy is the one most of its
    // partition files are named for.
    {
      std::map<PartitionStrategy, int> named;
      for (const TableScan::File& f : scan.files) {
        if (f.key && !f.key->is_null) ++named[f.key->strategy];
      }
      std::optional<PartitionStrategy> stored;
      int most = 0;
      for (const auto& [st, n] : named) {
        if (n > most) {
          most = n;
          stored = st;
        }
      }
      if (named.count(store.strategy) && named[store.strategy] == most) stored = store.strategy;
      // (Not the catalog's alone: a table without partition files, say a migration stopped
      // before its first commit, may be started again with any strategy.)
      if (stored && *stored != store.strategy && options.tables_keep_their_strategy) {
        store.strategy = *stored;
        scan = scan_table_dir(store.dir, store.schema.name(), store.strategy);
      } else if (stored && *stored != store.strategy) {
        throw Error(
            ErrorCode::kConflict,
            fmt::format("table '{}' in '{}' is partitioned {} ({} partition file(s)), but it is "
                        "opened with the {} strategy: open it with strategy {}, or re-partition it "
                        "(manage_partitions migrate --from-partitions --strategy {}); nothing was "
                        "changed",
                        store.schema.name(), store.dir, strategy_name(*stored), most,
                        strategy_name(config.strategy), strategy_name(*stored),
                        strategy_name(config.strategy)));
      }
    }
    bool catalog_usable = false;  // its entries describe files of this table's layout
    if (scan.catalog) {
      try {
        catalog_usable = Schema::from_json(scan.catalog->schema_json).same_layout(store.schema);
      } catch (const Error&) {
      }
    }
    for (const std::string& log : scan.ingest_logs) {
      store.ingest.replay.push_back(store.dir + "/" + log);
    }
    // Staging files of creations (no rows yet), restores and compactions that were killed:
    // deleted when no process is staging in this directory now (each holds a shared lock on it
    // while it does; another writer process may be creating a partition right now).
    if (!options.read_only && (!scan.creating.empty() || !scan.staged.empty())) {
      if (auto lock = StagingLock::try_exclusive(store.dir)) {
        for (const auto* names : {&scan.creating, &scan.staged}) {
          for (const std::string& fname : *names) {
            std::error_code rm;
            fs::remove(store.dir + "/" + fname, rm);
          }
        }
      }
    }
    for (TableScan::File& f : scan.files) {
      if (!f.key) {
        store.problems.push_back(
            fmt::format("'{}' is not named like a partition file (partition_YYYY[_MM[_DD]|_wWW]"
                        ".duckdb); it is ignored",
                        store.dir + "/" + f.name));
        continue;
      }
      Entry& e = *f.entry;
      if (f.key->strategy != store.strategy) {
        e.problem = fmt::format("is named for the {} strategy, but the store is {}",
                                strategy_name(f.key->strategy), strategy_name(store.strategy));
      } else if (catalog_usable && f.cached >= 0 &&
                 scan.catalog->entries[static_cast<std::size_t>(f.cached)].stamp == f.stamp) {
        e.set_meta(std::move(scan.catalog->entries[static_cast<std::size_t>(f.cached)].meta));
        if (options.read_only) e.meta_stamp = f.stamp;
      } else {
        try {
          verify_entry_locked(store, e);
        } catch (const Error& err) {
          // Another process holds the file (a writer that committed to it since the catalog was
          // written): the table stays usable; requests that need this partition try it again
          // and fail with "locked" while it is held.
          if (err.code() != ErrorCode::kLocked) throw;
          e.problem = err.what();
          e.locked_elsewhere = true;
          e.locked_tried = std::chrono::steady_clock::now();
        }
      }
      store.entries.emplace(*f.key, std::move(f.entry));
    }
    // A table stored with another layout is refused as well, when none of its partitions has the
    // given one (a write would have re-made the catalog for the new layout, leaving every
    // existing partition unreachable).
    std::size_t usable = 0;
    const Entry* other = nullptr;
    for (const auto& [k, e] : store.entries) {
      if (e->problem.empty()) ++usable;
      if (!other && e->problem.starts_with("belongs to another table or layout")) other = e.get();
    }
    if (usable == 0 && other) {
      // Verifying attached the files: the store is not kept, so neither are they.
      for (auto& [k, e] : store.entries) detach_locked(*e);
      throw Error(ErrorCode::kConflict,
                  fmt::format("table '{}' in '{}' is stored with other columns than those given: "
                              "partition {} {}; nothing was changed",
                              store.schema.name(), store.dir, other->name, other->problem));
    }
  }

  // ---- writing ---------------------------------------------------------------------------------

  // Creates the file of the new entry `e` (not in the store yet) through `conn` and leaves it
  // attached there: under a temporary name, initialised, closed, renamed into place, directory
  // synced (the steps and the crash reasoning of ensure_partition_locked). Touches no shared
  // state: several run at once on the write threads while the caller holds mu.
  //
  // With the store's template (`tmpl`, make_template_locked) the file is a copy of it written
  // under the temporary name, synced and renamed: ~2-3 ms instead of ~11 ms of DDL, commit,
  // checkpoint and a second ATTACH; its metadata table stays empty until the first commit inserts
  // the row (placeholder_meta). The template holds no metadata row because a row written there
  // would keep its block (256 KB) in every partition: the columns a commit never updates stay in
  // it, and the updated ones get a block of their own at the next checkpoint.
  void create_partition_file(const Store& store, Entry& e, duck::Connection& conn,
                             std::mutex& attach_mu, const std::string* tmpl) const {
    const std::string final_file = e.file;
    const std::string tmp = final_file + kCreatingSuffix;
    std::error_code rm;
    fs::remove(tmp, rm);
    fs::remove(tmp + ".wal", rm);
    if (tmpl) {
      try {
        write_file_synced(tmp, *tmpl);
        fs::remove(final_file + ".wal", rm);  // a log left by a crashed drop must not replay here
        if (std::rename(tmp.c_str(), final_file.c_str()) != 0) {
          throw Error(ErrorCode::kIo, fmt::format("cannot rename '{}' to '{}': {}", tmp, final_file,
                                                  std::strerror(errno)));
        }
        fsync_path(store.dir, true);
        std::lock_guard lock(attach_mu);
        try {
          conn.exec(attach_sql(e), e.file);
        } catch (const Error& err) {
          rethrow_attach(e, err);
        }
      } catch (...) {
        fs::remove(tmp, rm);
        throw;
      }
      e.set_meta(PartitionMeta{});
      e.placeholder_meta = true;
      e.placeholder_insert =
          partition_init_sql(e.alias, store.schema, store.strategy, e.key).back();
      return;
    }
    bool attached = false;
    // ATTACH and DETACH change the instance's catalog of databases: one at a time (DuckDB reports
    // some concurrent attach/detach as write-write conflicts); the DDL, the commit and the
    // checkpoint, which are the cost, run in parallel.
    auto catalog_change = [&](const std::string& sql) {
      std::lock_guard lock(attach_mu);
      conn.exec(sql, e.file);
    };
    try {
      e.file = tmp;
      try {
        catalog_change(attach_sql(e));
      } catch (const Error& err) {
        rethrow_attach(e, err);
      }
      attached = true;
      init_partition_on(conn, store, e);
      conn.exec(fmt::format("CHECKPOINT {}", duck::quote_ident(e.alias)), tmp);
      catalog_change(fmt::format("DETACH {}", duck::quote_ident(e.alias)));
      attached = false;
      fs::remove(final_file + ".wal", rm);  // a log left by a crashed drop must not replay here
      if (std::rename(tmp.c_str(), final_file.c_str()) != 0) {
        throw Error(ErrorCode::kIo, fmt::format("cannot rename '{}' to '{}'", tmp, final_file));
      }
      fsync_path(store.dir, true);
      e.file = final_file;
      try {
        catalog_change(attach_sql(e));
      } catch (const Error& err) {
        rethrow_attach(e, err);
      }
    } catch (...) {
      if (attached) {
        try {
          catalog_change(fmt::format("DETACH {}", duck::quote_ident(e.alias)));
        } catch (...) {
        }
      }
      e.file = final_file;
      fs::remove(tmp, rm);
      fs::remove(tmp + ".wal", rm);
      throw;
    }
  }

  // The bytes of a new, empty partition file of `store`'s table: created once per store and
  // process like any partition (under a temporary name, through admin), with an empty metadata
  // table, checkpointed, closed, read and deleted. nullptr when that fails (new
  // partitions are then created one by one as before). Under mu.
  std::shared_ptr<const std::string> make_template_locked(const Store& store,
                                                          const PartitionKey& key) {
    Entry t;
    t.key = key;
    t.name = "template";
    t.file = store.dir + "/" + kTemplateFile + kCreatingSuffix;  // removed at open if left
    t.alias = alias_for(store.schema, key) + "_template";
    std::error_code rm;
    auto remove_files = [&] {
      fs::remove(t.file, rm);
      fs::remove(t.file + ".wal", rm);
    };
    remove_files();
    bool attached = false;
    try {
      admin().exec(attach_sql(t), t.file);
      attached = true;
      init_partition_on(admin(), store, t);
      admin().exec(fmt::format("DELETE FROM {}.main.{}", duck::quote_ident(t.alias), kMetaTable),
                   t.file);
      admin().exec(fmt::format("CHECKPOINT {}", duck::quote_ident(t.alias)), t.file);
      admin().exec(fmt::format("DETACH {}", duck::quote_ident(t.alias)), t.file);
      attached = false;
      std::shared_ptr<const std::string> bytes;
      if (!fs::exists(t.file + ".wal", rm)) {
        auto b = std::make_shared<const std::string>(read_file(t.file));
        // A DuckDB file: headers (3 x 4 KB) and the magic bytes "DUCK" after the checksum.
        if (b->size() >= 3 * 4096 && b->compare(8, 4, "DUCK") == 0) bytes = std::move(b);
      }
      remove_files();
      return bytes;
    } catch (const std::exception&) {
      if (attached) {
        try {
          admin().exec(fmt::format("DETACH {}", duck::quote_ident(t.alias)));
        } catch (...) {
          return nullptr;  // still attached: left for the next open to remove
        }
      }
      remove_files();
      return nullptr;
    }
  }

  // Creates the partitions of `keys` whose files do not exist yet, in parallel on up to
  // write_threads connections (a new file costs ~8 ms of DDL, commit, checkpoint and ATTACH; a
  // first batch over 120 months used to create them one by one). Under mu. Returns the keys
  // created; when some fail, the others are kept and the first error is thrown. With fewer than
  // two files to create, does nothing (ensure_partition_locked creates it).
  std::set<PartitionKey> create_missing_locked(Store& store,
                                               const std::vector<PartitionKey>& keys) {
    if (!config.auto_partition_enabled || options.read_only) return {};
    std::vector<std::unique_ptr<Entry>> todo;
    std::error_code ec;
    if (!fs::exists(store.dir, ec)) fs::create_directories(store.dir, ec);
    for (const PartitionKey& key : keys) {
      if (store.entries.count(key)) continue;
      auto e = make_entry(store, key);
      if (fs::exists(e->file, ec)) continue;  // ensure_partition_locked verifies it
      todo.push_back(std::move(e));
    }
    if (todo.size() < 2) return {};
    // (Files under their creating names, the template's too, are staging files.)
    const StagingLock staging_lock = StagingLock::shared(store.dir);
    if (!store.tmpl_tried) {
      store.tmpl_tried = true;
      store.tmpl = make_template_locked(store, todo.front()->key);
    }
    const std::shared_ptr<const std::string> tmpl_hold = store.tmpl;
    const std::string* tmpl = tmpl_hold.get();
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t threads_n = std::min<std::size_t>(
        config.write_threads > 0 ? static_cast<std::size_t>(config.write_threads) : hw,
        todo.size());
    std::vector<std::exception_ptr> errors(todo.size());
    std::atomic<std::size_t> next{0};
    std::mutex attach_mu;
    auto work = [&] {
      std::optional<ConnectionPool::Lease> conn;
      for (std::size_t i = next++; i < todo.size(); i = next++) {
        try {
          if (!conn) conn.emplace(pool().take());
          create_partition_file(store, *todo[i], **conn, attach_mu, tmpl);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
    };
    {
      std::vector<std::thread> threads;
      struct JoinAll {
        std::vector<std::thread>& threads;
        ~JoinAll() {
          for (auto& t : threads) {
            if (t.joinable()) t.join();
          }
        }
      } join_all{threads};
      try {
        for (std::size_t t = 1; t < threads_n; ++t) threads.emplace_back(work);
      } catch (const std::system_error&) {
        // No more threads: the ones started and this one share the work.
      }
      work();
    }
    std::set<PartitionKey> created;
    std::exception_ptr first;
    for (std::size_t i = 0; i < todo.size(); ++i) {
      if (errors[i]) {
        if (!first) first = errors[i];
        continue;
      }
      Entry& e = *todo[i];
      if (!tmpl) {  // the temporary ATTACH and DETACH, counted as the serial path does
        ++counters.partitions_opened;
        ++counters.partitions_detached;
      }
      note_attached_locked(e);
      e.batch_rows = 0;  // a new file holds no batch ids
      e.batches_checkpointed = false;
      e.last_used = ++clock;
      ++counters.partitions_created;
      created.insert(e.key);
      store.entries.emplace(e.key, std::move(todo[i]));
    }
    if (first) {
      trim_locked();  // the new ones stay attached otherwise, beyond max_partitions_in_memory
      std::rethrow_exception(first);
    }
    return created;
  }

  Entry& ensure_partition_locked(Store& store, const PartitionKey& key, bool& created) {
    created = false;
    if (auto it = store.entries.find(key); it != store.entries.end()) return *it->second;
    if (!config.auto_partition_enabled) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("no partition for period {} of table '{}' ('{}') and "
                              "auto_partition_enabled is false; create it first or enable it",
                              key.label(), store.schema.name(), store.dir + "/" + key.file_name()));
    }
    auto e = make_entry(store, key);
    std::error_code ec;
    if (!fs::exists(store.dir, ec)) fs::create_directories(store.dir, ec);
    if (fs::exists(e->file, ec)) {
      verify_entry_locked(store, *e);
    } else {
      // Created under a temporary name, initialised, closed and renamed into place: a crash
      // while DuckDB writes a new file's headers can leave a file it cannot open, and that must
      // never be a partition file. Leftovers are removed when the store is opened.
      const std::string final_file = e->file;
      const std::string tmp = final_file + kCreatingSuffix;
      const StagingLock staging_lock = StagingLock::shared(store.dir);
      std::error_code rm;
      fs::remove(tmp, rm);
      fs::remove(tmp + ".wal", rm);
      e->file = tmp;
      try {
        attach_locked(*e);
        init_partition_locked(store, *e);
        detach_locked(*e);
        if (e->attached) {
          throw Error(ErrorCode::kIo, fmt::format("cannot close new partition file '{}'", tmp));
        }
        if (std::rename(tmp.c_str(), final_file.c_str()) != 0) {
          throw Error(ErrorCode::kIo, fmt::format("cannot rename '{}' to '{}'", tmp, final_file));
        }
        fsync_path(store.dir, true);
        e->file = final_file;
        attach_locked(*e);
        e->batch_rows = 0;  // a new file holds no batch ids
        e->batches_checkpointed = false;
      } catch (...) {
        detach_locked(*e);
        e->file = final_file;
        fs::remove(tmp, rm);
        fs::remove(tmp + ".wal", rm);
        throw;
      }
      created = true;
      ++counters.partitions_created;
    }
    e->last_used = ++clock;
    Entry& ref = *e;
    store.entries.emplace(key, std::move(e));
    return ref;
  }

  using AppendFn = std::function<void(duck::Connection&, const std::string& ctx)>;
  // Metadata after the append, computed inside the transaction from the old metadata.
  using MetaFn = std::function<PartitionMeta(duck::Connection&, const PartitionMeta& old)>;

  // Whether the partition already holds `batch_id` (inside the caller's transaction).
  static bool has_batch(duck::Connection& conn, const Entry& e, const std::string& batch_id,
                        const std::string& ctx) {
    auto st = conn.prepare(fmt::format("SELECT count(*) FROM {}.main.{} WHERE batch_id = ?",
                                       duck::quote_ident(e.alias), kBatchesTable),
                           ctx);
    st.bind(1, Value(batch_id));
    duck::Result r = st.execute();
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> rows;
    while (auto c = r.fetch()) dec.decode(c, rows);
    return rows.at(0).values[0].get<int64_t>() > 0;
  }

  // While a partition's _duckpart_batches is small (kRewriteBatchRows with the rows this commit
  // adds), the first commit after each checkpoint of its file writes it whole again: a copy of its
  // committed rows is appended and the committed rows are deleted, in the caller's transaction.
  // With checkpoint vacuum off (max_vacuum_tasks = 0), every checkpoint that finds new rows in a
  // table starts a new row group for them, in a 256 KB block of its own (a block is never shared
  // between tables or checkpoints), so a partition written across N checkpoints kept N blocks for
  // a few hundred bytes of batch ids (docs/performance.md, "Session 32"). Rewritten, the table is
  // one row group in one block, and the old row group, wholly deleted, is dropped by the next
  // checkpoint (its block freed for the one after). Later commits before the next checkpoint
  // append to the new row group: rewriting again would only leave deleted rows in it, which a
  // checkpoint without vacuum keeps. A checkpoint is seen as the file's write-ahead log shrinking
  // (DuckDB deletes it) between two commits, or gone right after one; a missed one costs a row
  // group, never an id. Costs ~0.4 ms plus ~1 us per row copied, once per checkpoint; larger tables
  // (many small commits into one partition) are appended to only. Returns the log's size before the
  // commit.
  static constexpr int64_t kRewriteBatchRows = 256;
  static std::uintmax_t wal_bytes(const Entry& e) {
    std::error_code ec;
    const std::uintmax_t n = fs::file_size(e.file + ".wal", ec);
    return ec ? 0 : n;
  }
  static std::uintmax_t rewrite_batches(duck::Connection& conn, Entry& e, int64_t adding,
                                        const std::string& gen, const std::string& ctx,
                                        bool& rewrote) {
    rewrote = false;
    const std::uintmax_t wal = wal_bytes(e);
    if (wal < e.wal_seen) e.batches_checkpointed = true;
    if (!e.batches_checkpointed) return wal;
    const std::string a = duck::quote_ident(e.alias);
    if (e.batch_rows < 0) {
      e.batch_rows =
          conn.query_int(fmt::format("SELECT count(*) FROM {}.main.{}", a, kBatchesTable), ctx);
    }
    if (e.batch_rows == 0 || e.batch_rows + adding > kRewriteBatchRows) return wal;
    const std::string copy_sql =
        fmt::format("INSERT INTO {0}.main.{1} SELECT * FROM {0}.main.{1}", a, kBatchesTable);
    // Rows appended in a transaction have row ids from DuckDB's MAX_ROW_ID (36028797018960000)
    // up, committed rows below it: this deletes the committed rows and keeps their copies.
    // Checked by count: a mismatch fails the commit (rolled back by the caller).
    const std::string del_sql =
        fmt::format("DELETE FROM {}.main.{} WHERE rowid < 36028797018960000", a, kBatchesTable);
    const int64_t copied = conn.prepared(copy_sql + gen, copy_sql, ctx).execute().rows_changed();
    const int64_t deleted = conn.prepared(del_sql + gen, del_sql, ctx).execute().rows_changed();
    if (deleted != copied) {
      throw Error(ErrorCode::kDuckDb,
                  fmt::format("rewriting the batch ids of partition file '{}': {} rows copied but "
                              "{} deleted (DuckDB's row ids of new rows changed?); nothing written",
                              e.file, copied, deleted));
    }
    e.batch_rows = copied;
    rewrote = true;
    return wal;
  }

  // Records `batch_id` (or every id of `logs`, each with its rows) and the new metadata `m` in the
  // caller's open transaction (holding e.write_mu), commits, and publishes the metadata.
  // Returns the commit version it made.
  int64_t record_and_commit(duck::Connection& conn, Entry& e, const std::string& batch_id,
                            PartitionMeta m, const std::string& ctx, const LogIds* logs = nullptr) {
    const std::string a = duck::quote_ident(e.alias);
    ++m.commit_version;
    // Prepared once per connection and ATTACH of the partition (the SQL names its alias).
    const std::string gen = fmt::format("#{}", e.attach_generation);
    // The commit time as a parameter: DuckDB binds now() anew at every execution.
    const Timestamp now{std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count()};
    const int64_t adding = logs && !logs->empty() ? static_cast<int64_t>(logs->size()) : 1;
    bool rewrote = false;
    const std::uintmax_t wal_before = rewrite_batches(conn, e, adding, gen, ctx, rewrote);
    const std::string ins_sql =
        fmt::format("INSERT INTO {}.main.{} VALUES (?, ?, ?)", a, kBatchesTable);
    duck::Prepared& ins = conn.prepared(ins_sql + gen, ins_sql, ctx);
    if (logs && !logs->empty()) {
      for (const auto& [id, rows] : *logs) {
        ins.bind(1, Value(id));
        ins.bind(2, Value(rows));
        ins.bind(3, Value(now));
        ins.execute();
      }
    } else {
      ins.bind(1, Value(batch_id));
      ins.bind(2, Value(m.row_count - e.meta().row_count));
      ins.bind(3, Value(now));
      ins.execute();
    }
    // The metadata row is written whole at every commit (a new row from the old one, the old
    // deleted), never updated in place: DuckDB rewrites only the updated columns of a row group at
    // a checkpoint, each checkpoint's segments of a table go to a block of their own, and blocks
    // are never shared between checkpoints, so the strings written at creation (schema, strategy,
    // period) and the ids updated later kept one 256 KB block each, and a partition written in
    // several checkpoints kept up to three for one row (docs/performance.md, "Session 32"). A
    // whole new row puts all of its strings in one block, the old row's block is freed.
    // The first commit into a copy of the template inserts the row instead (placeholder_meta).
    const bool fresh = e.placeholder_meta;
    if (fresh) conn.exec(e.placeholder_insert, ctx);  // a copy of the template
    const std::string upd_sql =
        fresh ? fmt::format(
                    "UPDATE {}.main.{} SET row_count = ?, min_value = ?, max_value = ?, "
                    "min_id = ?, max_id = ?, commit_version = ?, updated_at = ?",
                    a, kMetaTable)
              : fmt::format(
                    "INSERT INTO {0}.main.{1} SELECT format_version, schema_name, schema_json, "
                    "strategy, period, range_start, range_end, ?, ?, ?, ?, ?, ?, created_at, ? "
                    "FROM {0}.main.{1}",
                    a, kMetaTable);
    duck::Prepared& upd = conn.prepared(upd_sql + gen, upd_sql, ctx);
    upd.bind(1, Value(m.row_count));
    upd.bind(2, m.min_value ? Value(Timestamp{*m.min_value}) : Value{});
    upd.bind(3, m.max_value ? Value(Timestamp{*m.max_value}) : Value{});
    upd.bind(4, m.min_id.is_null() ? Value{} : Value(m.min_id.to_string()));
    upd.bind(5, m.max_id.is_null() ? Value{} : Value(m.max_id.to_string()));
    upd.bind(6, Value(m.commit_version));
    upd.bind(7, Value(now));
    upd.execute();
    if (!fresh) {
      // The old row: every row but the one just made (commit versions only grow).
      const std::string del_sql = fmt::format(
          "DELETE FROM {}.main.{} WHERE commit_version IS DISTINCT FROM ?", a, kMetaTable);
      duck::Prepared& del = conn.prepared(del_sql + gen, del_sql, ctx);
      del.bind(1, Value(m.commit_version));
      del.execute();
    }
    conn.exec("COMMIT", ctx);
    e.placeholder_meta = false;
    if (e.batch_rows >= 0) e.batch_rows += adding;
    if (rewrote) e.batches_checkpointed = false;
    e.wal_seen = wal_bytes(e);
    // A commit always adds to the log: one gone or smaller after it was checkpointed at COMMIT
    // (DuckDB's automatic checkpoint; it deletes the log).
    if (e.wal_seen == 0 || e.wal_seen < wal_before) e.batches_checkpointed = true;
    const int64_t added = m.row_count - e.meta().row_count;
    {
      std::lock_guard lock(mu);
      ++counters.batches_committed;
      counters.rows_written += added;
      e.set_meta(m);
    }
    return m.commit_version;
  }

  // One transaction on one partition: replay check, append, batch id, metadata, commit. Returns
  // the commit version it made, or nothing when the partition already has `batch_id` (nothing
  // written). Serialised per partition. `logs`: the ids to record instead of `batch_id` (a drain
  // of the write buffer; `batch_id` is the first of them).
  std::optional<int64_t> commit_partition(Entry& e, const std::string& batch_id, bool check_replay,
                                          duck::Connection& conn, const AppendFn& append,
                                          const MetaFn& new_meta, const LogIds* logs = nullptr) {
    std::lock_guard wlock(e.write_mu);
    if (e.dropped) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} was dropped while this batch was being written; write "
                              "the batch again",
                              e.name));
    }
    const std::string ctx = fmt::format("partition {} ('{}')", e.name, e.file);
    conn.exec("BEGIN TRANSACTION", ctx);
    try {
      if (check_replay && has_batch(conn, e, batch_id, ctx)) {
        conn.exec("ROLLBACK", ctx);
        return std::nullopt;
      }
      append(conn, ctx);
      return record_and_commit(conn, e, batch_id, new_meta(conn, e.meta()), ctx, logs);
    } catch (...) {
      try {
        conn.exec("ROLLBACK");
      } catch (...) {
      }
      throw;
    }
  }

  // Min/max id of one group straight from the column (no Value per row): ids are text (UUID in
  // canonical lower-case form, whose text order is DuckDB's UUID order) or BIGINT. Runs on the
  // writer threads (one group each).
  static void group_id_range(const Schema& schema, const ColumnBatch& batch,
                             const std::vector<std::vector<duckdb_hugeint>>& uuids, Group& g) {
    if (!schema.id_index()) return;
    const ColumnVector& idv = batch.columns[*schema.id_index()];
    if (const auto& bits = uuids[*schema.id_index()]; !bits.empty()) {
      // DuckDB's UUID order is the order of its hugeint (top bit flipped), and of canonical text.
      auto less = [](const duckdb_hugeint& a, const duckdb_hugeint& b) {
        return a.upper < b.upper || (a.upper == b.upper && a.lower < b.lower);
      };
      const duckdb_hugeint* lo = nullptr;
      const duckdb_hugeint* hi = nullptr;
      for (uint32_t r : g.rows) {
        if (!idv.is_valid(r)) continue;
        const duckdb_hugeint& v = bits[r];
        if (!lo || less(v, *lo)) lo = &v;
        if (!hi || less(*hi, v)) hi = &v;
      }
      if (lo) {
        g.min_id = Value(duck::uuid_to_string(*lo));
        g.max_id = Value(duck::uuid_to_string(*hi));
      }
    } else if (const auto* text = std::get_if<std::vector<std::string>>(&idv.data)) {
      const std::string* lo = nullptr;
      const std::string* hi = nullptr;
      for (uint32_t r : g.rows) {
        const std::string& v = (*text)[r];
        if (!lo || v < *lo) lo = &v;
        if (!hi || *hi < v) hi = &v;
      }
      if (lo) {
        g.min_id = Value(*lo);
        g.max_id = Value(*hi);
      }
    } else {
      const auto& ints = std::get<std::vector<int64_t>>(idv.data);
      int64_t lo = INT64_MAX, hi = INT64_MIN;
      for (uint32_t r : g.rows) {
        lo = std::min(lo, ints[r]);
        hi = std::max(hi, ints[r]);
      }
      if (!g.rows.empty()) {
        g.min_id = Value(lo);
        g.max_id = Value(hi);
      }
    }
  }

  // Commits one group of a ColumnBatch into its partition.
  bool commit_group(Store& store, const ColumnBatch& batch,
                    const std::vector<std::vector<duckdb_hugeint>>& uuids, Group& g,
                    const std::string& batch_id, bool check_replay, duck::Connection& conn) {
    Entry& e = *g.entry;
    const std::size_t pcol = store.schema.partition_index();
    if (!g.buffered || !merge_sorted_runs(batch, pcol, g.buffered->run_ends, g.rows)) {
      sort_by_partition_value(batch, pcol, g.rows);
    }
    const std::optional<int64_t> done = commit_partition(
        e, g.logs && !g.logs->empty() ? g.logs->front().first : batch_id, check_replay, conn,
        [&](duck::Connection& c, const std::string& ctx) {
          duck::BatchAppender app(c, e.alias, store.schema.name(), store.schema, ctx);
          std::vector<duck::TextColumn> text;  // a drain's text columns: in the arenas
          if (g.buffered) {
            text.resize(g.buffered->text.size());
            for (std::size_t col = 0; col < text.size(); ++col) {
              if (g.buffered->text[col]) text[col] = g.buffered->text[col]->column();
            }
          }
          app.append(batch, g.rows, &uuids, g.buffered ? &text : nullptr);
          app.close();
        },
        [&](duck::Connection&, const PartitionMeta& old) {
          PartitionMeta m = old;
          m.row_count += static_cast<int64_t>(g.rows.size());
          m.min_value = m.min_value ? std::min(*m.min_value, g.min_v) : g.min_v;
          m.max_value = m.max_value ? std::max(*m.max_value, g.max_v) : g.max_v;
          if (!g.min_id.is_null()) {
            if (m.min_id.is_null() || id_less(g.min_id, m.min_id)) m.min_id = g.min_id;
            if (m.max_id.is_null() || id_less(m.max_id, g.max_id)) m.max_id = g.max_id;
          }
          return m;
        },
        g.logs);
    if (done) update_bloom_after_write(store, batch, uuids, g, *done);
    return done.has_value();
  }

  // Metadata of appended rows, accumulated chunk by chunk and merged with the old metadata
  // (scanning the whole partition after every commit made bulk loads quadratic). `supported` is
  // false for column types not handled here (the caller scans instead).
  struct MetaAcc {
    bool supported = false;
    int64_t rows = 0;

    MetaAcc() = default;
    MetaAcc(const Schema& schema, const std::vector<duckdb_type>& types)
        : pi_(schema.partition_index()), pt_(types[pi_]), ii_(schema.id_index()) {
      if (ii_) it_ = types[*ii_];
      // Only when the source's types are the table's: INSERT converts other types (a TIMESTAMP
      // into a DATE column drops the time of day; TIMESTAMPTZ depends on the session's time
      // zone), so their values are not the stored ones; count_all trusts these bounds.
      const ColumnType want = schema.columns()[pi_].type;
      const bool part_ok = (want == ColumnType::kDate && pt_ == DUCKDB_TYPE_DATE) ||
                           (want == ColumnType::kTimestamp && pt_ == DUCKDB_TYPE_TIMESTAMP);
      bool id_ok = true;
      if (ii_) {
        const ColumnType idt = schema.columns()[*ii_].type;
        id_ok = (idt == ColumnType::kUuid && it_ == DUCKDB_TYPE_UUID) ||
                (idt == ColumnType::kVarchar && it_ == DUCKDB_TYPE_VARCHAR) ||
                (idt == ColumnType::kBigint && it_ == DUCKDB_TYPE_BIGINT);
      }
      supported = part_ok && id_ok;
    }

    void add(duckdb_data_chunk chunk) {
      const idx_t n = duckdb_data_chunk_get_size(chunk);
      rows += static_cast<int64_t>(n);
      duckdb_vector pv = duckdb_data_chunk_get_vector(chunk, pi_);
      uint64_t* pvalid = duckdb_vector_get_validity(pv);
      const void* pdata = duckdb_vector_get_data(pv);
      for (idx_t i = 0; i < n; ++i) {
        if (pvalid && !duckdb_validity_row_is_valid(pvalid, i)) continue;
        const int64_t v =
            pt_ == DUCKDB_TYPE_DATE
                ? int64_t{static_cast<const duckdb_date*>(pdata)[i].days} * kMicrosPerDay
                : static_cast<const duckdb_timestamp*>(pdata)[i].micros;
        if (!has_v_ || v < lo_) lo_ = v;
        if (!has_v_ || v > hi_) hi_ = v;
        has_v_ = true;
      }
      if (!ii_) return;
      duckdb_vector iv = duckdb_data_chunk_get_vector(chunk, *ii_);
      uint64_t* ivalid = duckdb_vector_get_validity(iv);
      void* idata = duckdb_vector_get_data(iv);
      for (idx_t i = 0; i < n; ++i) {
        if (ivalid && !duckdb_validity_row_is_valid(ivalid, i)) continue;
        if (it_ == DUCKDB_TYPE_UUID) {
          const duckdb_hugeint h = static_cast<const duckdb_hugeint*>(idata)[i];
          if (!has_id_ || h_less(h, hlo_)) hlo_ = h;
          if (!has_id_ || h_less(hhi_, h)) hhi_ = h;
        } else if (it_ == DUCKDB_TYPE_BIGINT) {
          const int64_t x = static_cast<const int64_t*>(idata)[i];
          if (!has_id_ || x < ilo_) ilo_ = x;
          if (!has_id_ || x > ihi_) ihi_ = x;
        } else {
          duckdb_string_t* str = &static_cast<duckdb_string_t*>(idata)[i];
          const std::string_view x(duckdb_string_t_data(str), duckdb_string_t_length(*str));
          if (!has_id_ || x < slo_) slo_ = std::string(x);
          if (!has_id_ || x > shi_) shi_ = std::string(x);
        }
        has_id_ = true;
      }
    }

    // Rows summarised elsewhere (a probe query over rows copied by INSERT ... SELECT): their count,
    // partition-column bounds in microseconds, and id bounds (text, or BIGINT).
    void add_bounds(int64_t n, std::optional<int64_t> vlo, std::optional<int64_t> vhi,
                    const Value& idlo, const Value& idhi) {
      rows += n;
      if (vlo && vhi) {
        if (!has_v_ || *vlo < lo_) lo_ = *vlo;
        if (!has_v_ || *vhi > hi_) hi_ = *vhi;
        has_v_ = true;
      }
      if (!idlo.is_null() && (xlo_.is_null() || id_less(idlo, xlo_))) xlo_ = idlo;
      if (!idhi.is_null() && (xhi_.is_null() || id_less(xhi_, idhi))) xhi_ = idhi;
    }

    PartitionMeta merged(const PartitionMeta& old) const {
      PartitionMeta m = old;
      m.row_count = old.row_count + rows;
      if (has_v_) {
        m.min_value = old.min_value ? std::min(*old.min_value, lo_) : lo_;
        m.max_value = old.max_value ? std::max(*old.max_value, hi_) : hi_;
      }
      if (has_id_) {
        Value vmin, vmax;
        if (it_ == DUCKDB_TYPE_UUID) {
          vmin = Value(duck::uuid_to_string(hlo_));
          vmax = Value(duck::uuid_to_string(hhi_));
        } else if (it_ == DUCKDB_TYPE_BIGINT) {
          vmin = Value(ilo_);
          vmax = Value(ihi_);
        } else {
          vmin = Value(slo_);
          vmax = Value(shi_);
        }
        if (old.min_id.is_null() || id_less(vmin, old.min_id)) m.min_id = vmin;
        if (old.max_id.is_null() || id_less(old.max_id, vmax)) m.max_id = vmax;
      }
      if (!xlo_.is_null() && (m.min_id.is_null() || id_less(xlo_, m.min_id))) m.min_id = xlo_;
      if (!xhi_.is_null() && (m.max_id.is_null() || id_less(m.max_id, xhi_))) m.max_id = xhi_;
      return m;
    }

   private:
    static bool h_less(const duckdb_hugeint& a, const duckdb_hugeint& b) {
      return a.upper < b.upper || (a.upper == b.upper && a.lower < b.lower);
    }
    std::size_t pi_ = 0;
    duckdb_type pt_ = DUCKDB_TYPE_INVALID;
    std::optional<std::size_t> ii_;
    duckdb_type it_ = DUCKDB_TYPE_INVALID;
    bool has_v_ = false;
    int64_t lo_ = 0, hi_ = 0;
    bool has_id_ = false;
    duckdb_hugeint hlo_{}, hhi_{};
    std::string slo_, shi_;
    int64_t ilo_ = 0, ihi_ = 0;
    Value xlo_, xhi_;  // from add_bounds()
  };

  PartitionMeta scan_meta(const Store& store, const Entry& e, duck::Connection& conn,
                          const PartitionMeta& old) {
    const Schema& schema = store.schema;
    std::string sql = fmt::format("SELECT count(*), min({0}), max({0})",
                                  duck::quote_ident(schema.partition_column()));
    if (schema.id_index()) {
      sql += fmt::format(", min({0}), max({0})", duck::quote_ident(*schema.id_column()));
    }
    sql += fmt::format(" FROM {}.main.{}", duck::quote_ident(e.alias),
                       duck::quote_ident(schema.name()));
    duck::Result r = conn.query(sql, e.file);
    duck::ChunkDecoder dec(r);
    std::vector<DataRecord> rows;
    while (auto c = r.fetch()) dec.decode(c, rows);
    PartitionMeta m = old;
    const auto& v = rows.at(0).values;
    m.row_count = v[0].get<int64_t>();
    m.min_value = v[1].is_null() ? std::nullopt : std::optional(temporal_micros(v[1]));
    m.max_value = v[2].is_null() ? std::nullopt : std::optional(temporal_micros(v[2]));
    if (schema.id_index()) {
      m.min_id = v[3];
      m.max_id = v[4];
    }
    return m;
  }

  // Adds the ids of the rows commit `version` wrote (g) to the partition's filter. It runs after
  // the commit released write_mu, so later commits (and a filter rebuilt from the file) may have
  // come first: a filter stamped `version` or later already holds these rows (a filter stamped V
  // holds every row of commits up to V); one stamped version - 1 gets them and the stamp; any
  // other is dropped (rebuilt when a lookup needs it). Not the partition's current version: a
  // filter stamped with a later commit's version would lack that commit's ids.
  void update_bloom_after_write(Store& store, const ColumnBatch& batch,
                                const std::vector<std::vector<duckdb_hugeint>>& uuids,
                                const Group& g, int64_t version) {
    if (!store.schema.id_index()) return;
    Entry& e = *g.entry;
    if (id_filter_hook) id_filter_hook(e.name, version);
    std::lock_guard lock(e.bloom_mu);
    if (e.bloom && e.probe.filter_version >= version) return;
    if (!e.bloom || e.probe.filter_version != version - 1) {
      set_bloom(store, e, nullptr, -1);
      return;
    }
    const std::size_t idc = *store.schema.id_index();
    if (idc < uuids.size() && !uuids[idc].empty()) {
      // Parsed UUIDs (a write buffer's rows carry no text): the same canonical text.
      const ColumnVector& idv = batch.columns[idc];
      for (uint32_t r : g.rows) {
        if (idv.is_valid(r)) e.bloom->add(duck::uuid_to_string(uuids[idc][r]));
      }
    } else {
      for (uint32_t r : g.rows) e.bloom->add(id_key(batch_cell(store.schema, batch, idc, r)));
    }
    if (e.bloom->full()) {
      set_bloom(store, e, nullptr, -1);
      return;
    }
    {
      std::lock_guard filters(store.filters_mu);
      e.probe.filter_version = version;
    }
    e.bloom_dirty = true;
  }

  // ---- id -> rowid maps (get_by_id) ------------------------------------------------------------

  std::atomic<uint64_t> idmap_total{0};  // bytes of every entry's id map
  static constexpr int kIdMapEvictAfterScans = 8;
  std::atomic<uint64_t> idmap_clock{0};

  uint64_t idmap_budget() const noexcept {
    return static_cast<uint64_t>(std::max(0, config.id_index_memory_mb)) << 20;
  }

  // Frees e's id map (call without mu: idmap_mu is taken before it).
  void drop_idmap(Entry& e) noexcept {
    std::unique_lock lock(e.idmap_mu);
    drop_idmap_locked(e);
  }
  void drop_idmap_locked(Entry& e) noexcept {
    e.idmap.reset();
    e.idmap_version = -1;
    e.idmap_scans = 0;
    idmap_total -= e.idmap_bytes.exchange(0);
  }

  // Reserves `need` bytes of the budget (added to idmap_total), dropping least recently used maps
  // of other partitions while it does not fit. False (nothing reserved) when it cannot fit: the
  // budget is smaller, or the maps it would drop are in use right now.
  bool idmap_reserve(const Entry& self, uint64_t need) {
    const uint64_t budget = idmap_budget();
    if (need > budget) return false;
    for (;;) {
      uint64_t total = idmap_total.load();
      while (total + need <= budget) {
        if (idmap_total.compare_exchange_weak(total, total + need)) return true;
      }
      Entry* victim = nullptr;
      {
        std::lock_guard lock(mu);
        for (auto& [name, st] : stores) {
          for (auto& [k, other] : st->entries) {
            if (other.get() == &self || other->idmap_bytes.load() == 0) continue;
            if (!victim || other->idmap_used.load() < victim->idmap_used.load()) {
              victim = other.get();
            }
          }
        }
      }
      if (!victim) return false;
      std::unique_lock lock(victim->idmap_mu, std::try_to_lock);
      if (!lock.owns_lock()) return false;
      drop_idmap_locked(*victim);
    }
  }

  // Extends e's map to the partition's first `rows` rows: reads (id, rowid) of rowids
  // [covered, rows). A partition is append-only and DuckDB numbers its rows 0..n-1 in commit
  // order, so those are exactly the rows committed up to the metadata that said `rows` — rows
  // committed meanwhile have larger rowids and wait for the next refresh (no lock on writers).
  // True when the map then holds exactly `rows` rows numbered 0..rows-1.
  bool idmap_refresh(const Store& store, Entry& e, duck::Connection& conn, int64_t rows) {
    if (!e.idmap) e.idmap = std::make_unique<IdRowMap>();
    IdRowMap& m = *e.idmap;
    duck::Result r = conn.query(
        fmt::format("SELECT {}, rowid FROM {}.main.{} WHERE rowid >= {} AND rowid < {}",
                    duck::quote_ident(store.schema.columns()[*store.schema.id_index()].name),
                    duck::quote_ident(e.alias), duck::quote_ident(store.schema.name()), m.covered,
                    rows),
        e.file);
    uint64_t end = m.covered;
    while (auto chunk = r.fetch()) {
      if (!duck::add_id_fingerprints(chunk, m, end)) return false;
      m.rows += chunk.size();
    }
    m.covered = end;
    m.settle();
    if (m.wants_rebuild()) {  // segments keep part of each fingerprint: rebuilt from the rows
      e.idmap = std::make_unique<IdRowMap>();
      return idmap_refresh(store, e, conn, rows);
    }
    return m.rows == static_cast<uint64_t>(rows) && m.covered == static_cast<uint64_t>(rows);
  }

  // The rowids of e's rows whose id has fingerprint `fp`, from e's id map, built or brought up to
  // date first. nullopt: no usable map this time (the caller scans the partition): maps are off,
  // this is the partition's first lookup, another lookup is building its map, or the budget is
  // spent.
  std::optional<std::vector<uint32_t>> idmap_rows(const Store& store, Entry& e,
                                                  duck::Connection& conn, uint32_t fp) {
    if (idmap_budget() == 0) return std::nullopt;
    auto committed = [&] {
      std::lock_guard meta_lock(mu);
      return std::tuple{e.meta().commit_version, e.meta().row_count, e.file_epoch};
    };
    auto lookup = [&] {
      e.idmap_used = ++idmap_clock;
      std::vector<uint32_t> out;
      e.idmap->find(fp, [&](uint32_t r) { out.push_back(r); });
      return out;
    };
    {
      std::shared_lock lock(e.idmap_mu, std::try_to_lock);
      if (!lock.owns_lock()) return std::nullopt;  // being built: scan
      auto [version, rows, epoch] = committed();
      if (e.idmap && e.idmap_version == version && e.idmap_epoch == epoch) return lookup();
    }
    std::unique_lock lock(e.idmap_mu, std::try_to_lock);
    if (!lock.owns_lock()) return std::nullopt;
    auto [version, rows, epoch] = committed();
    if (e.idmap && e.idmap_epoch != epoch) drop_idmap_locked(e);  // another file now
    if (e.idmap && e.idmap_version == version) return lookup();
    if (e.idmap_unusable_version == version && e.idmap_unusable_epoch == epoch) {
      return std::nullopt;
    }
    if (!e.idmap && ++e.idmap_scans < 2) return std::nullopt;
    if (rows < 0 || rows >= (int64_t{1} << 32) - 1) return std::nullopt;
    // The map's growth: ~5 bytes per row once folded (entry + bucket offsets), up to ~6.4 with a
    // tail about to fold (it grows by doubling). A build from the
    // start briefly holds 8 bytes per row in its tail and then folds; that transient is not
    // counted.
    const uint64_t old_bytes = e.idmap_bytes.load();
    const uint64_t full = static_cast<uint64_t>(rows) * 7 + 4096;
    const uint64_t need = full > old_bytes ? full - old_bytes : 0;
    // Over the budget, a new map evicts others only for a partition looked up often: building one
    // costs about as much as a few scans, so lookups spread over more rows than the budget holds
    // scan mostly instead of rebuilding maps in turn.
    if (!e.idmap && idmap_total.load() + need > idmap_budget() &&
        e.idmap_scans < kIdMapEvictAfterScans) {
      return std::nullopt;
    }
    if (!idmap_reserve(e, need)) {
      drop_idmap_locked(e);  // frees what it held; rebuilt when there is room
      return std::nullopt;
    }
    bool ok = false;
    try {
      const uint64_t had = e.idmap ? e.idmap->rows : 0;
      ok = idmap_refresh(store, e, conn, rows);
      if (!ok && had > 0) {  // rebuild once from the start
        e.idmap.reset();
        ok = idmap_refresh(store, e, conn, rows);
      }
    } catch (...) {  // the caller's scan reports what is wrong with the partition
      idmap_total -= need;
      drop_idmap_locked(e);
      return std::nullopt;
    }
    idmap_total -= need;
    if (!ok) {
      drop_idmap_locked(e);
      e.idmap_unusable_version = version;
      e.idmap_unusable_epoch = epoch;
      return std::nullopt;
    }
    e.idmap_version = version;
    e.idmap_epoch = epoch;
    const uint64_t bytes = e.idmap->bytes();
    idmap_total += bytes;
    idmap_total -= e.idmap_bytes.exchange(bytes);
    return lookup();
  }

  // A create_batch: buffered (write_buffer_mb, no batch id) or written now. With `keep_batch` a
  // buffered batch is left as it was (the caller reads it afterwards); otherwise it is freed.
  BatchResult write(const Schema& schema, ColumnBatch& batch, const BatchOptions& opts,
                    bool keep_batch = false) {
    if (options.read_only) {
      throw Error(
          ErrorCode::kInvalidArgument,
          fmt::format("the partition store '{}' is open read-only; writes are refused", base_dir));
    }
    check_batch_id(opts.batch_id);
    check_intake(schema, batch);
    if (config.write_buffer_mb > 0 && config.auto_partition_enabled && opts.batch_id.empty()) {
      return write_buffered(store_for(schema, /*drain=*/false), schema, batch, keep_batch);
    }
    return write_to(store_for(schema), schema, batch, opts);
  }

  // Routes every row to its partition's group (in row order within a group). Throws naming the
  // first row whose partition value has no period.
  std::vector<Group> route(const Schema& schema, const ColumnBatch& batch,
                           PartitionStrategy strategy) const {
    const std::size_t pcol = schema.partition_index();
    const bool is_date = schema.columns()[pcol].type == ColumnType::kDate;
    std::vector<Group> groups;
    std::unordered_map<int64_t, std::size_t> by_day;  // day -> group (keys are whole days)
    int64_t last_day = INT64_MIN;
    std::size_t last_group = 0;
    const int32_t* dates =
        is_date ? std::get<std::vector<int32_t>>(batch.columns[pcol].data).data() : nullptr;
    const int64_t* stamps =
        is_date ? nullptr : std::get<std::vector<int64_t>>(batch.columns[pcol].data).data();
    for (uint32_t r = 0; r < batch.rows; ++r) {
      const int64_t micros = dates ? int64_t{dates[r]} * kMicrosPerDay : stamps[r];
      const int64_t day = date_of(Timestamp{micros}).days;
      std::size_t gi = last_group;
      if (day != last_day) {
        auto it = by_day.find(day);
        if (it == by_day.end()) {
          PartitionKey key;
          try {
            key = partition_key_of(strategy, Date{static_cast<int32_t>(day)});
          } catch (const Error& err) {
            throw Error(ErrorCode::kInvalidArgument,
                        fmt::format("record {}: partition column '{}' value {}: {}", r,
                                    schema.partition_column(),
                                    is_date ? format_date(Date{static_cast<int32_t>(day)})
                                            : format_timestamp(Timestamp{micros}),
                                    err.what()));
          }
          gi = groups.size();
          for (std::size_t j = 0; j < groups.size(); ++j) {
            if (groups[j].key == key) gi = j;
          }
          if (gi == groups.size()) {
            groups.push_back(Group{key, {}, micros, micros, {}, {}, nullptr, false});
          }
          by_day.emplace(day, gi);
        } else {
          gi = it->second;
        }
        last_day = day;
        last_group = gi;
      }
      Group& g = groups[gi];
      g.rows.push_back(r);
      g.min_v = std::min(g.min_v, micros);
      g.max_v = std::max(g.max_v, micros);
    }
    return groups;
  }

  // UUID ids in canonical text (lower case, hyphens), so that text order is UUID order and
  // lookups match, and every UUID column parsed, here, in row order, once: the writers gather
  // rows in partition order, and reading each row's text there costs two cache misses per value
  // (the string and its heap buffer) — it was ~10% of a 1M-row batch's CPU. Throws naming the
  // first value that is not a UUID (record order, then column order); the batch is untouched
  // but for ids made canonical.
  static std::vector<std::vector<duckdb_hugeint>> canonical_uuids(const Schema& schema,
                                                                  ColumnBatch& batch) {
    std::vector<std::vector<duckdb_hugeint>> uuids = uuid_room(schema, batch);
    canonical_uuids(schema, batch, uuids, 0, batch.rows);
    return uuids;
  }

  // Room for canonical_uuids: a value per row for each UUID column, nothing for the others.
  static std::vector<std::vector<duckdb_hugeint>> uuid_room(const Schema& schema,
                                                            const ColumnBatch& batch) {
    std::vector<std::vector<duckdb_hugeint>> uuids(schema.columns().size());
    for (std::size_t c = 0; c < schema.columns().size(); ++c) {
      if (schema.columns()[c].type == ColumnType::kUuid) uuids[c].resize(batch.rows);
    }
    return uuids;
  }

  // The same for rows [from, to), into `uuids` (uuid_room); NULLs stay 0. Tasks on disjoint
  // ranges may run at once (each touches only its rows' strings and values).
  static void canonical_uuids(const Schema& schema, ColumnBatch& batch,
                              std::vector<std::vector<duckdb_hugeint>>& uuids, std::size_t from,
                              std::size_t to) {
    const std::size_t ncols = schema.columns().size();
    const std::optional<std::size_t> id_col =
        schema.id_index() && schema.columns()[*schema.id_index()].type == ColumnType::kUuid
            ? schema.id_index()
            : std::nullopt;
    for (std::size_t r = from; r < to; ++r) {
      for (std::size_t c = 0; c < ncols; ++c) {
        if (uuids[c].empty()) continue;
        const ColumnVector& col = batch.columns[c];
        if (!col.is_valid(r)) continue;
        std::string& v = std::get<std::vector<std::string>>(batch.columns[c].data)[r];
        if (c == id_col) {
          const bool canonical =
              v.size() == 36 && v[8] == '-' && v[13] == '-' && v[18] == '-' && v[23] == '-' &&
              std::none_of(v.begin(), v.end(), [](char ch) { return ch >= 'A' && ch <= 'F'; });
          if (!canonical) {
            std::string fixed;
            if (!duck::uuid_normalize(v, fixed)) {
              throw Error(ErrorCode::kInvalidArgument,
                          fmt::format("record {}: id column '{}' (UUID): value '{}' is not a UUID",
                                      r, *schema.id_column(), v));
            }
            v = std::move(fixed);
          }
        }
        if (!duck::uuid_parse(v, uuids[c][r])) {
          throw Error(
              ErrorCode::kInvalidArgument,
              fmt::format("record {}: column '{}' (UUID): value '{}{}' is not a UUID", r,
                          schema.columns()[c].name, v.substr(0, 80), v.size() > 80 ? "..." : ""));
        }
      }
    }
  }

  // Writes `batch` to its partitions now: one append and commit per partition, on the write
  // threads, each recording the batch id (opts.batch_id: partitions that hold it already are
  // skipped).
  // `preparsed`: the batch's UUIDs parsed already (write buffering), its ids then canonical.
  BatchResult write_to(Store& store, const Schema& schema, ColumnBatch& batch,
                       const BatchOptions& opts,
                       const std::vector<std::vector<duckdb_hugeint>>* preparsed = nullptr) {
    BatchResult res;
    const bool check_replay = !opts.batch_id.empty();
    res.batch_id = check_replay ? opts.batch_id : new_uuid_v7();
    if (batch.rows == 0) return res;
    if (batch.rows > UINT32_MAX) {
      throw Error(ErrorCode::kInvalidArgument, "a batch holds at most 4294967295 rows");
    }
    // Route every row before writing anything: a bad value fails the whole batch untouched.
    std::vector<Group> groups = route(schema, batch, store.strategy);
    res.ids_generated = assign_missing_ids(schema, batch);
    std::vector<std::vector<duckdb_hugeint>> parsed;
    if (!preparsed) parsed = canonical_uuids(schema, batch);
    const std::vector<std::vector<duckdb_hugeint>>& uuids = preparsed ? *preparsed : parsed;
    commit_groups(store, schema, groups, batch.rows, res, check_replay, &batch, &uuids);
    return res;
  }

  // Commits a drain of the write buffer: each partition's rows from its own batch, recording the
  // ids of the logs they came from (a partition that holds them already is skipped: a drain that
  // failed part way and runs again).
  BatchResult write_parts(Store& store, std::map<PartitionKey, BufferedRows>& parts) {
    BatchResult res;
    for (const auto& [key, part] : parts) {
      if (!part.logs.empty() && part.logs.back().first > res.batch_id) {
        res.batch_id = part.logs.back().first;  // the newest log: named by errors
      }
    }
    const Schema& schema = store.schema;
    const std::size_t pcol = schema.partition_index();
    std::vector<Group> groups;
    std::size_t total = 0;
    for (auto& [key, part] : parts) {
      if (part.rows.rows == 0) continue;
      if (part.rows.rows > UINT32_MAX) {
        throw Error(ErrorCode::kInvalidArgument, "a batch holds at most 4294967295 rows");
      }
      Group g;
      g.key = key;
      g.rows.resize(part.rows.rows);
      for (uint32_t r = 0; r < g.rows.size(); ++r) g.rows[r] = r;
      int64_t lo = INT64_MAX, hi = INT64_MIN;
      std::visit(
          [&](const auto& v) {
            using V = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<V, std::vector<int32_t>>) {
              for (int32_t d : v) {
                lo = std::min(lo, int64_t{d} * kMicrosPerDay);
                hi = std::max(hi, int64_t{d} * kMicrosPerDay);
              }
            } else if constexpr (std::is_same_v<V, std::vector<int64_t>>) {
              for (int64_t t : v) {
                lo = std::min(lo, t);
                hi = std::max(hi, t);
              }
            }
          },
          part.rows.columns[pcol].data);
      g.min_v = lo;
      g.max_v = hi;
      g.src = &part.rows;
      g.src_uuids = &part.uuids;
      g.buffered = &part;
      g.logs = &part.logs;
      total += part.rows.rows;
      groups.push_back(std::move(g));
    }
    if (!groups.empty()) commit_groups(store, schema, groups, total, res, true, nullptr, nullptr);
    return res;
  }

  // Creates missing partitions and commits every group (rows of `batch`, or of the group's own
  // src) on the write threads.
  void commit_groups(Store& store, const Schema& schema, std::vector<Group>& groups,
                     std::size_t total_rows, BatchResult& res, bool check_replay,
                     const ColumnBatch* batch,
                     const std::vector<std::vector<duckdb_hugeint>>* batch_uuids) {
    std::sort(groups.begin(), groups.end(),
              [](const Group& a, const Group& b) { return a.key < b.key; });
    // Creating partitions and the commits. Large batches only: SET threads restarts DuckDB's
    // workers, ~1 ms each way.
    const SingleThreadScope single_thread(
        *this, total_rows >= kSingleThreadMinRows ? write_threads_for(groups.size()) : 0);
    {
      std::lock_guard lock(mu);
      if (!config.auto_partition_enabled) {
        for (Group& g : groups) {
          if (!store.entries.count(g.key)) ensure_partition_locked(store, g.key, g.created);
        }
      }
      // A damaged partition fails the batch before any new file is created for it.
      for (const Group& g : groups) {
        auto it = store.entries.find(g.key);
        if (it != store.entries.end()) retry_locked_locked(*it->second);
        if (it != store.entries.end() && !it->second->problem.empty()) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("cannot write to partition {} ('{}'): {}", it->second->name,
                                  it->second->file, it->second->problem));
        }
      }
      std::vector<PartitionKey> keys;
      for (const Group& g : groups) keys.push_back(g.key);
      const std::set<PartitionKey> fresh = create_missing_locked(store, keys);
      for (Group& g : groups) {
        g.entry = &ensure_partition_locked(store, g.key, g.created);
        g.created = g.created || fresh.count(g.key) > 0;
        if (g.created) ++res.partitions_created;
        retry_locked_locked(*g.entry);
        if (!g.entry->problem.empty()) {
          throw Error(ErrorCode::kCorruption,
                      fmt::format("cannot write to partition {} ('{}'): {}", g.entry->name,
                                  g.entry->file, g.entry->problem));
        }
      }
      trim_locked();
      // Partitions already open go first: fewer detach/attach cycles when a batch spans more
      // periods than max_partitions_in_memory.
      std::stable_partition(groups.begin(), groups.end(),
                            [](const Group& g) { return g.entry->attached; });
    }
    run_commits(
        groups.size(), res,
        [&](std::size_t i, duck::Connection& conn) {
          Group& g = groups[i];
          const MaterializedText ids(g.buffered, schema.id_index());
          const ColumnBatch& b = g.src ? *g.src : *batch;
          const auto& u = g.src_uuids ? *g.src_uuids : *batch_uuids;
          group_id_range(schema, b, u, g);
          const bool done = commit_group(store, b, u, g, res.batch_id, check_replay, conn);
          return std::make_pair(done, static_cast<int64_t>(g.rows.size()));
        },
        [&](std::size_t i) { return groups[i].entry; });
  }

  static constexpr std::size_t kSingleThreadMinRows = 100'000;

  // The write threads run_commits uses for `n` partitions (at most one per partition).
  unsigned write_threads_for(std::size_t n) const {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const unsigned t = config.write_threads > 0 ? static_cast<unsigned>(config.write_threads) : hw;
    return static_cast<unsigned>(
        std::min<std::size_t>({t, n, static_cast<std::size_t>(config.max_partitions_in_memory)}));
  }

  // Runs `commit(i, conn)` for i in [0, n) in windows of at most max_partitions_in_memory pinned
  // partitions, on write_threads threads; throws one error naming every failed partition.
  void run_commits(
      std::size_t n, BatchResult& res,
      const std::function<std::pair<bool, int64_t>(std::size_t, duck::Connection&)>& commit,
      const std::function<Entry*(std::size_t)>& entry_of) {
    const std::size_t window = static_cast<std::size_t>(config.max_partitions_in_memory);
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const unsigned max_threads =
        config.write_threads > 0 ? static_cast<unsigned>(config.write_threads) : hw;
    std::vector<std::string> failures;
    std::optional<Error> first_error;
    std::vector<std::string> committed;
    std::mutex result_mu;
    for (std::size_t begin = 0; begin < n; begin += window) {
      const std::size_t end = std::min(n, begin + window);
      std::vector<Entry*> win;
      for (std::size_t i = begin; i < end; ++i) win.push_back(entry_of(i));
      Pins pins = acquire(win, nullptr);
      std::atomic<std::size_t> next{begin};
      auto work = [&]() {
        auto conn = pool().take();
        for (std::size_t i = next++; i < end; i = next++) {
          Entry* e = entry_of(i);
          try {
            const auto [done, rows] = commit(i, *conn);
            std::lock_guard lock(result_mu);
            if (done) {
              res.rows_written += rows;
              ++res.partitions_written;
              committed.push_back(e->name);
            } else {
              res.rows_skipped += rows;
              ++res.partitions_skipped;
            }
          } catch (const Error& err) {
            std::lock_guard lock(result_mu);
            failures.push_back(fmt::format("{}: {}", e->name, err.what()));
            if (!first_error) first_error = err;
            continue;
          } catch (const std::exception& ex) {
            std::lock_guard lock(result_mu);
            failures.push_back(fmt::format("{}: {}", e->name, ex.what()));
            if (!first_error) first_error = Error(ErrorCode::kDuckDb, ex.what());
            continue;
          }
          if (commit_hook) commit_hook(e->name);
        }
      };
      const std::size_t threads_n = std::min<std::size_t>(max_threads, end - begin);
      std::vector<std::thread> threads;
      for (std::size_t t = 1; t < threads_n; ++t) threads.emplace_back(work);
      work();
      for (auto& t : threads) t.join();
    }
    {
      std::lock_guard lock(mu);
      counters.batches_skipped += res.partitions_skipped;
    }
    if (first_error) {
      std::sort(committed.begin(), committed.end());
      throw Error(
          first_error->code(),
          fmt::format("batch {}: {} of {} partitions failed and wrote nothing ({}); {} "
                      "committed{}{}. Write the same batch again with batch_id '{}' to "
                      "finish it exactly once",
                      res.batch_id, failures.size(), n, fmt::join(failures, "; "), committed.size(),
                      committed.empty() ? "" : ": ", fmt::join(committed, ", "), res.batch_id));
    }
  }

  // ---- reading --------------------------------------------------------------------------------

  struct Selection {
    std::vector<Entry*> entries;
    QueryStats stats;
  };

  Selection select_partitions(Store& store, const CompiledQuery& q) {
    Selection sel;
    const PartitionPredicate pred(q, store.schema.partition_index());
    std::lock_guard lock(mu);
    sel.stats.partitions_total = static_cast<int64_t>(store.entries.size());
    for (auto& [key, e] : store.entries) {
      bool keep = false;
      if (key.is_null) {
        keep = pred.may_match_null() && (!e->problem.empty() || e->meta().row_count > 0);
      } else if (!e->problem.empty()) {
        keep = pred.may_match(e->range_min(), e->range_max()) ||
               (e->stored_range && pred.may_match(e->stored_range->first, e->stored_range->second));
      } else if (e->meta().row_count > 0 && e->meta().min_value && e->meta().max_value) {
        keep = pred.may_match(*e->meta().min_value, *e->meta().max_value);
      }
      if (keep) sel.entries.push_back(e.get());
    }
    sel.stats.partitions_scanned = static_cast<int64_t>(sel.entries.size());
    sel.stats.partitions_pruned = sel.stats.partitions_total - sel.stats.partitions_scanned;
    ++counters.queries;
    counters.partitions_scanned += sel.stats.partitions_scanned;
    counters.partitions_pruned += sel.stats.partitions_pruned;
    if (!config.enable_cross_partition_queries && sel.entries.size() > 1) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("this query spans {} partitions of '{}' ({} .. {}) but "
                              "enable_cross_partition_queries is false; narrow the filter on '{}'",
                              sel.entries.size(), store.schema.name(), sel.entries.front()->name,
                              sel.entries.back()->name, store.schema.partition_column()));
    }
    return sel;
  }

  // The partitions of `store` that may hold a partition value in `set` (SQL statements).
  std::vector<Entry*> select_by_values(Store& store, const ValueSet& set, QueryStats& stats) {
    std::vector<Entry*> out;
    std::lock_guard lock(mu);
    for (auto& [key, e] : store.entries) {
      bool keep = false;
      if (key.is_null) {
        keep = set.null_ok && (!e->problem.empty() || e->meta().row_count > 0);
      } else if (!e->problem.empty()) {
        keep = set.overlaps(e->range_min(), e->range_max()) ||
               (e->stored_range && set.overlaps(e->stored_range->first, e->stored_range->second));
      } else if (e->meta().row_count > 0) {
        // Rows without bounds in the metadata (none are written so): read, not guessed.
        keep = !e->meta().min_value || !e->meta().max_value ||
               set.overlaps(*e->meta().min_value, *e->meta().max_value);
      }
      if (keep) out.push_back(e.get());
    }
    if (!config.enable_cross_partition_queries && out.size() > 1) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("this statement reads {} partitions of '{}' ({} .. {}) but "
                              "enable_cross_partition_queries is false; narrow its filter on '{}'",
                              out.size(), store.schema.name(), out.front()->name, out.back()->name,
                              store.schema.partition_column()));
    }
    stats.partitions_total += static_cast<int64_t>(store.entries.size());
    stats.partitions_scanned += static_cast<int64_t>(out.size());
    stats.partitions_pruned = stats.partitions_total - stats.partitions_scanned;
    ++counters.queries;
    counters.partitions_scanned += static_cast<int64_t>(out.size());
    counters.partitions_pruned += static_cast<int64_t>(store.entries.size() - out.size());
    return out;
  }

  // "partition_2021_05 ('<file>')", or several names: DuckDB's read errors do not say which
  // attached file failed, so errors of multi-partition reads name the candidates.
  static std::string describe(const std::vector<Entry*>& entries) {
    if (entries.size() == 1)
      return fmt::format("partition {} ('{}')", entries[0]->name, entries[0]->file);
    std::string names;
    for (std::size_t i = 0; i < entries.size() && i < 6; ++i)
      names += (i ? ", " : "") + entries[i]->name;
    if (entries.size() > 6) names += fmt::format(" and {} more", entries.size() - 6);
    return fmt::format("one of partitions {} (under '{}')", names,
                       fs::path(entries[0]->file).parent_path().string());
  }
  // Failures of the file (damage, I/O) name the partitions read; others pass unchanged.
  [[noreturn]] static void rethrow_reading(const Error& err, const std::vector<Entry*>& entries) {
    if (err.code() == ErrorCode::kCorruption || err.code() == ErrorCode::kIo) {
      throw Error(err.code(), fmt::format("reading {}: {}", describe(entries), err.what()));
    }
    throw err;
  }

  // What a statement prepared over `e` depends on, for the keys of cached statements (callers hold
  // pins on `e`, under mu): the ATTACH and the data. DuckDB 1.4 plans a statement without
  // parameters once, with the table's statistics at that moment: a filter the min/max rules out
  // becomes an empty result and one it always satisfies is dropped, and a later INSERT does not
  // make it plan again (DuckDB issue 23704). A statement planned before a commit to `e` must not
  // be run after it, so every commit (commit_version) and file swap (file_epoch) changes the key.
  static std::string data_version_locked(const Entry& e) {
    return fmt::format("#{}.{}.{}", e.attach_generation, e.meta().commit_version, e.file_epoch);
  }

  // The key of a read over `entries` kept prepared on a pooled connection: its SQL and the data
  // version of every partition it reads.
  std::string read_key(const std::string& sql, const std::vector<Entry*>& entries) {
    std::string key = sql;
    std::lock_guard lock(mu);
    for (Entry* e : entries) key += data_version_locked(*e);
    return key;
  }

  static std::string union_source(const Store& store, const std::vector<Entry*>& entries) {
    const std::string table = duck::quote_ident(store.schema.name());
    if (entries.size() == 1) return duck::quote_ident(entries[0]->alias) + ".main." + table;
    std::string sql = "(";
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (i) sql += " UNION ALL ";
      sql += "SELECT * FROM " + duck::quote_ident(entries[i]->alias) + ".main." + table;
    }
    return sql + ") AS partitions";
  }
  // The source of `SELECT count(*) ... <q's WHERE>` over these partitions: each branch of the
  // UNION ALL selects only the columns q's filters name (a constant when there are none). Over
  // `SELECT *` branches DuckDB 1.4 keeps each branch's first column for a count(*), whose aggregate
  // needs no column (a set operation keeps at least one): the bench's first column is its UUID id,
  // over half of the bytes, and its filtered count loaded 6.0 GB of blocks at 300M rows instead of
  // 1.5 GB, 2x slower once that exceeded DuckDB's memory limit (docs/performance.md, "Session
  // 38"). A single partition is read directly (DuckDB prunes columns there).
  static std::string count_source(const Store& store, const std::vector<Entry*>& entries,
                                  const CompiledQuery& q) {
    const std::string table = duck::quote_ident(store.schema.name());
    if (entries.size() == 1) return duck::quote_ident(entries[0]->alias) + ".main." + table;
    std::vector<std::size_t> cols;
    for (const BoundFilter& f : q.filters) {
      if (std::find(cols.begin(), cols.end(), f.column) == cols.end()) cols.push_back(f.column);
    }
    std::string list;
    for (std::size_t c : cols) {
      list += (list.empty() ? "" : ", ") + duck::quote_ident(store.schema.columns()[c].name);
    }
    if (list.empty()) list = "1 AS _duckpart_row";
    std::string sql = "(";
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (i) sql += " UNION ALL ";
      sql += "SELECT " + list + " FROM " + duck::quote_ident(entries[i]->alias) + ".main." + table;
    }
    return sql + ") AS partitions";
  }
};

// ---- the streaming bulk path --------------------------------------------------------------------
//
// A router (the caller's thread) reads the query as a stream, computes each row's period code (in
// the query) and copies rows into one 2,048-row chunk per partition; full chunks go to the writer
// thread owning that partition, which hands every kChunksPerFlush of them to one INSERT ... SELECT
// FROM __duckpart_feed(id) (src/chunk_feed.hpp: DuckDB reads the chunks without copying them)
// inside the partition's open transaction. Chunks are recycled, and at most kQueueBytes of chunks
// are queued to the writers, so memory is a few chunks per partition plus what DuckDB holds per
// open transaction (it writes full row groups to the file as they fill).
struct PartitionedDataRepository::BulkLoad::Loader {
  // Chunks queued to the writers: up to kQueueBytes (fixed widths and the strings' heap bytes),
  // between 32 and 512 per writer (32 when a column's size is not known: nested, enum, bit). A deep
  // queue keeps both writers busy while one of them compresses a full row group (the router would
  // otherwise wait for that writer while the other idles): 32 -> 512 per writer made an unsorted
  // 40M-row migration 10% faster.
  static constexpr int kMinInflightPerWriter = 32;
  static constexpr int kMaxInflightPerWriter = 512;
  static constexpr std::size_t kQueueBytes = std::size_t{256} << 20;
  static constexpr int kChunksPerFlush = 16;         // appender -> transaction-local storage
  static constexpr int64_t kCheckpointRows = 16384;  // per partition and commit
  // From a full row group on, DuckDB's commit moves the rows it already wrote compressed into the
  // file (its optimistic writes) and logs only their location: no checkpoint is needed then, and
  // one would rewrite the partial row group each commit leaves, merged at every checkpoint with
  // the next one — 29% of each migrated file was such free blocks (measured at 100M rows:
  // 4,371 MB with it, 3,656 MB without).
  static constexpr int64_t kRowGroupRows = 122880;

  struct Slot {
    PartitionKey key;
    Entry* entry = nullptr;
    unsigned owner = 0;
    std::optional<Impl::Pins> pins;
    int64_t rows = 0;  // routed (router side)
    // Router side: the chunk being filled.
    duckdb_data_chunk building = nullptr;
    std::vector<GatherVector> building_vecs;  // its columns
    idx_t fill = 0;
    std::size_t heap_bytes = 0;  // strings copied into its heap
    // Writer side (owner thread only).
    std::unique_lock<std::mutex> wlock;
    std::optional<ConnectionPool::Lease> conn;
    // The chunks of this partition, handed to DuckDB by one prepared INSERT per kChunksPerFlush.
    std::optional<ChunkFeed> feed;
    std::optional<duck::Prepared> insert;
    int64_t pending_rows = 0;
    bool open = false;
    bool skip = false;    // already holds the replayed batch id
    bool failed = false;  // an error was recorded; its rows are dropped, it rolls back
    Impl::MetaAcc acc;
  };

  // One load_into() query, run by the slot's writer on the slot's transaction while the router
  // goes on (at most kDirectPerWriter per writer outstanding).
  static constexpr int kDirectPerWriter = 2;
  struct DirectJob {
    std::string select_sql;
    int64_t rows = 0;  // counted by the probe
    std::optional<int64_t> vlo, vhi;
    Value idlo, idhi;
  };
  struct Msg {
    enum Kind { kChunk, kDirect, kFinish, kAbort } kind = kChunk;
    Slot* slot = nullptr;
    duckdb_data_chunk chunk = nullptr;
    DirectJob* job = nullptr;
    std::size_t bytes = 0;  // of the chunk
  };
  struct Worker {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Msg> q;
    std::thread th;
  };

  Impl& impl;
  Store& store;
  Schema schema;
  BulkLoadOptions options;
  std::unique_lock<std::mutex> bulk_lock;
  struct ActiveLoad {  // counted in impl.bulk_active while the load exists
    std::atomic<int>& n;
    explicit ActiveLoad(std::atomic<int>& c) : n(c) { ++n; }
    ~ActiveLoad() { --n; }
    ActiveLoad(const ActiveLoad&) = delete;
    ActiveLoad& operator=(const ActiveLoad&) = delete;
  } active_load;
  std::vector<std::unique_ptr<Slot>> slots;
  std::unordered_map<int64_t, std::size_t> slot_of;
  std::vector<std::unique_ptr<Worker>> workers;
  // Column types, fixed by the first load().
  std::vector<duck::Owned<duckdb_logical_type, duckdb_destroy_logical_type>> types;
  std::vector<duckdb_logical_type> raw_types;
  std::vector<duckdb_type> col_types;
  std::vector<ColumnGather> gathers;  // one per column, by the router
  bool holds_threads = false;         // single_duckdb_thread: holding impl's single-thread count
  std::vector<std::pair<int32_t, int64_t>> day_codes;  // router: day -> period code
  int64_t routed = 0;
  bool finished = false;
  std::string batch_id;  // set by commit() before the writers finish

  std::mutex flow_mu;
  std::condition_variable flow_cv;
  int inflight = 0;
  std::size_t inflight_bytes = 0;
  // Set with the column types: bytes per row of a chunk without string heaps; the queue's bound
  // in chunks (kMinInflightPerWriter when a column's size is not known).
  std::size_t row_bytes = 0;
  int max_inflight_per_writer = kMinInflightPerWriter;
  std::vector<duckdb_data_chunk> free_chunks;
  int direct_inflight = 0;
  std::deque<DirectJob> direct_jobs;  // router side; stable addresses, freed with the loader

  std::mutex res_mu;
  std::atomic<bool> any_failed{false};
  std::atomic<bool> aborting{false};
  std::vector<std::string> failures;
  std::optional<Error> first_error;
  std::vector<std::string> committed;
  BatchResult res;

  Loader(Impl& i, Store& s, const Schema& sc, BulkLoadOptions o)
      : impl(i),
        store(s),
        schema(sc),
        options(std::move(o)),
        bulk_lock(i.bulk_mu),
        active_load(i.bulk_active) {
    std::call_once(impl.feed_registered, [&] {
      auto conn = impl.pool().take();
      ChunkFeed::register_function(conn->get());
    });
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const unsigned n = impl.config.write_threads > 0
                           ? static_cast<unsigned>(impl.config.write_threads)
                           : std::min(hw, 8u);
    // All workers exist before any thread starts: a thread reads `workers` while the vector grows
    // otherwise (ThreadSanitizer found it).
    for (unsigned t = 0; t < n; ++t) workers.push_back(std::make_unique<Worker>());
    for (unsigned t = 0; t < n; ++t) workers[t]->th = std::thread([this, t] { work(t); });
    // Last: nothing after it can throw, so the destructor always restores the threads.
    if (options.single_duckdb_thread) single_thread();
  }

  ~Loader() {
    abort();
    for (duckdb_data_chunk c : free_chunks) duckdb_destroy_data_chunk(&c);
  }

  // ---- router ----

  duckdb_data_chunk new_chunk() {
    {
      std::lock_guard lock(flow_mu);
      if (!free_chunks.empty()) {
        duckdb_data_chunk c = free_chunks.back();
        free_chunks.pop_back();
        return c;
      }
    }
    return duckdb_create_data_chunk(raw_types.data(), raw_types.size());
  }

  // Queues `chunk` (`bytes` of data) to the slot's writer, once the queue has room.
  void dispatch(std::size_t slot, duckdb_data_chunk chunk, std::size_t bytes) {
    {
      std::unique_lock lock(flow_mu);
      const int w = static_cast<int>(workers.size());
      flow_cv.wait(lock, [&] {
        return any_failed.load() ||
               (inflight < max_inflight_per_writer * w &&
                (inflight < kMinInflightPerWriter * w || inflight_bytes + bytes <= kQueueBytes));
      });
      ++inflight;
      inflight_bytes += bytes;
    }
    Worker& w = *workers[slots[slot]->owner];
    {
      std::lock_guard lock(w.mu);
      w.q.push_back({Msg::kChunk, slots[slot].get(), chunk, nullptr, bytes});
    }
    w.cv.notify_one();
  }

  // Queues the slot's partly filled chunk.
  void dispatch_building(std::size_t s) {
    Slot& slot = *slots[s];
    const std::size_t bytes = row_bytes * slot.fill + slot.heap_bytes;
    slot.fill = 0;
    slot.heap_bytes = 0;
    dispatch(s, std::exchange(slot.building, nullptr), bytes);
  }

  std::size_t new_slot(int64_t code) {
    const PartitionStrategy strategy = store.strategy;
    auto slot = std::make_unique<Slot>();
    slot->key =
        code == INT64_MIN ? null_partition_key(strategy) : partition_key_from_code(strategy, code);
    bool created = false;
    {
      std::lock_guard lock(impl.mu);
      slot->entry = &impl.ensure_partition_locked(store, slot->key, created);
      impl.retry_locked_locked(*slot->entry);  // throws kLocked while another process holds it
      if (!slot->entry->problem.empty()) {
        throw Error(ErrorCode::kCorruption,
                    fmt::format("cannot write to partition {} ('{}'): {}", slot->entry->name,
                                slot->entry->file, slot->entry->problem));
      }
    }
    if (created) {
      std::lock_guard lock(res_mu);
      ++res.partitions_created;
    }
    slot->pins.emplace(impl.acquire({slot->entry}, nullptr));  // pins before write_mu
    const std::size_t index = slots.size();
    slot->owner = static_cast<unsigned>(index % workers.size());
    slots.push_back(std::move(slot));
    slot_of.emplace(code, index);
    return index;
  }

  void throw_if_failed() {
    if (!any_failed.load()) return;
    std::lock_guard lock(res_mu);
    throw Error(first_error->code(),
                fmt::format("{}; nothing of this load was committed", fmt::join(failures, "; ")));
  }

  // Checks a source query's columns (the schema's, by name and in order, then `extra` more) and
  // fixes the column types on the first call; later queries must keep them.
  void bind_columns(const duck::Prepared& st, std::size_t extra) {
    const std::size_t ncols = schema.columns().size();
    const std::vector<duckdb_type> got = st.column_types();
    if (got.size() != ncols + extra) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("the source query returns {} columns, table '{}' has {}",
                              got.size() >= extra ? got.size() - extra : 0, schema.name(), ncols));
    }
    for (idx_t i = 0; i < ncols; ++i) {  // every name first: a failed call changes nothing
      const std::string name = st.column_name(i);
      if (!schema.find(name) || *schema.find(name) != i) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("source column {} is '{}', table '{}' expects '{}' there", i + 1,
                                name, schema.name(), schema.columns()[i].name));
      }
    }
    for (idx_t i = 0; i < ncols; ++i) {
      const std::string name = st.column_name(i);
      if (types.size() < ncols) {
        duck::Owned<duckdb_logical_type, duckdb_destroy_logical_type> t(st.column_logical_type(i));
        col_types.push_back(duckdb_get_type_id(t.get()));
        raw_types.push_back(t.get());
        types.push_back(std::move(t));
      } else if (got[i] != col_types[i] ||
                 (got[i] == DUCKDB_TYPE_DECIMAL && !same_decimal(st, i, types[i].get()))) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("source column '{}' changed type between the queries of one bulk "
                                "load",
                                name));
      }
    }
  }

  // A DECIMAL's width decides its storage (2 to 16 bytes): it must not change between queries.
  static bool same_decimal(const duck::Prepared& st, idx_t col, duckdb_logical_type first) {
    duck::Owned<duckdb_logical_type, duckdb_destroy_logical_type> t(st.column_logical_type(col));
    return duckdb_decimal_width(t.get()) == duckdb_decimal_width(first) &&
           duckdb_decimal_scale(t.get()) == duckdb_decimal_scale(first);
  }

  std::size_t slot_for(int64_t code) {
    auto it = slot_of.find(code);
    return it != slot_of.end() ? it->second : new_slot(code);
  }

  int64_t load_into(const PartitionKey& key, const std::string& select_sql) {
    if (finished) throw Error(ErrorCode::kInvalidArgument, "this bulk load was already finished");
    throw_if_failed();
    const PartitionStrategy strategy = store.strategy;
    if (key.strategy != strategy) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("partition {} is {}, the repository is {}", key.name(),
                              strategy_name(key.strategy), strategy_name(strategy)));
    }
    if (key.is_null && !options.null_partition) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("rows with a NULL '{}' need the null-partition option",
                              schema.partition_column()));
    }
    auto conn = impl.pool().take();
    bind_columns(conn->prepare(fmt::format("SELECT * FROM ({}) AS __dp_source", select_sql),
                               "bulk source query"),
                 0);
    // One pass over the source rows: how many there are, how many fall in `key`, and the bounds
    // the partition's metadata needs (what the appender path gathers from its chunks).
    const std::string pcol = duck::quote_ident(schema.partition_column());
    const int64_t code = key.is_null ? INT64_MIN : partition_code_of(key);
    std::string probe =
        fmt::format("SELECT count(*), count(*) FILTER (WHERE {})",
                    key.is_null ? pcol + " IS NULL"
                                : fmt::format("{0} >= DATE {1} AND {0} < DATE {2}", pcol,
                                              duck::quote_literal(format_date(key.start())),
                                              duck::quote_literal(format_date(key.end()))));
    const bool bounds = Impl::MetaAcc(schema, col_types).supported;
    const auto id = schema.id_index();
    if (bounds) {
      for (const char* agg : {"min", "max"}) {
        probe +=
            col_types[schema.partition_index()] == DUCKDB_TYPE_DATE
                ? fmt::format(", ({}({}) - DATE '1970-01-01')::BIGINT * 86400000000", agg, pcol)
                : fmt::format(", epoch_us({}({}))", agg, pcol);
      }
      if (id) {
        const std::string ic = duck::quote_ident(schema.columns()[*id].name);
        const char* cast = col_types[*id] == DUCKDB_TYPE_UUID ? "::VARCHAR" : "";
        probe += fmt::format(", min({0}){1}, max({0}){1}", ic, cast);
      }
    }
    probe += fmt::format(" FROM ({}) AS __dp_source", select_sql);
    std::vector<DataRecord> got;
    {
      duck::Result r = conn->query(probe, "bulk source query");
      duck::ChunkDecoder dec(r);
      while (auto c = r.fetch()) dec.decode(c, got);
    }
    const auto& v = got.at(0).values;
    const int64_t n = v[0].get<int64_t>();
    const int64_t inside = v[1].get<int64_t>();
    if (inside != n) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{} of the {} rows of the source query are outside partition {}; "
                              "nothing of that query was copied",
                              n - inside, n, key.name()));
    }
    if (n == 0) return 0;
    const std::size_t s = slot_for(code);
    Slot& slot = *slots[s];
    if (slot.building && slot.fill > 0) dispatch_building(s);  // routed rows first, in order
    bool counted = false;
    {
      std::unique_lock lock(flow_mu);
      flow_cv.wait(lock, [&] {
        return direct_inflight < kDirectPerWriter * static_cast<int>(workers.size()) ||
               any_failed.load();
      });
      if (!any_failed.load()) {
        ++direct_inflight;  // given back by direct(), which runs every queued job
        counted = true;
      }
    }
    if (!counted) throw_if_failed();
    DirectJob& job = direct_jobs.emplace_back();
    job.select_sql = select_sql;
    job.rows = n;
    if (bounds) {
      if (!v[2].is_null()) job.vlo = v[2].get<int64_t>();
      if (!v[3].is_null()) job.vhi = v[3].get<int64_t>();
      if (id) {
        job.idlo = v[4];
        job.idhi = v[5];
      }
    }
    Worker& w = *workers[slot.owner];
    {
      std::lock_guard lock(w.mu);
      w.q.push_back({Msg::kDirect, &slot, nullptr, &job});
    }
    w.cv.notify_one();
    slot.rows += n;
    routed += n;
    return n;
  }

  // The partition code of every row of `chunk`: computed here for a DATE or TIMESTAMP partition
  // column (the value partition_code_sql() gives, kInfiniteCode for ±infinity), read from the
  // query's extra __dp_code column for other types. INT64_MIN + 1 marks a NULL code.
  static constexpr int64_t kNullCode = INT64_MIN + 1;
  void codes_of(duckdb_data_chunk chunk, idx_t n, bool sql_codes, std::vector<int64_t>& out) {
    const std::size_t ncols = schema.columns().size();
    const PartitionStrategy strategy = store.strategy;
    out.resize(n);
    duckdb_vector v =
        duckdb_data_chunk_get_vector(chunk, sql_codes ? ncols : schema.partition_index());
    uint64_t* validity = duckdb_vector_get_validity(v);
    const void* data = duckdb_vector_get_data(v);
    const duckdb_type type = sql_codes ? DUCKDB_TYPE_BIGINT : col_types[schema.partition_index()];
    // Codes of recent days, direct-mapped: ten years of days fit, and the calendar arithmetic
    // cost more than the rest of the routing of a row.
    if (day_codes.empty()) day_codes.assign(4096, {INT32_MIN, 0});
    auto code_of_day = [&](int32_t day) -> int64_t {
      // Far outside years 1..9999 (where the calendar arithmetic could overflow an int): a code
      // whose year is out of range for every strategy (below 1 or above 9999 read as yearly,
      // monthly, weekly or daily), refused by partition_key_from_code.
      if (day < -1'000'000 || day > 4'000'000) return (1970 + int64_t{day} / 365) * 10000 + 9999;
      auto& hit = day_codes[static_cast<uint32_t>(day) & 4095u];
      if (hit.first != day) hit = {day, partition_code_of_days(strategy, day)};
      return hit.second;
    };
    for (idx_t i = 0; i < n; ++i) {
      if (validity && !duckdb_validity_row_is_valid(validity, i)) {
        out[i] = kNullCode;
        continue;
      }
      if (type == DUCKDB_TYPE_BIGINT) {
        out[i] = static_cast<const int64_t*>(data)[i];
      } else if (type == DUCKDB_TYPE_DATE) {
        const int32_t d = static_cast<const duckdb_date*>(data)[i].days;
        out[i] = (d == INT32_MAX || d == -INT32_MAX) ? kInfiniteCode : code_of_day(d);
      } else {
        const int64_t us = static_cast<const duckdb_timestamp*>(data)[i].micros;
        out[i] = (us == INT64_MAX || us == -INT64_MAX) ? kInfiniteCode
                                                       : code_of_day(date_of(Timestamp{us}).days);
      }
    }
  }

  int64_t load(const std::string& select_sql) {
    if (finished) throw Error(ErrorCode::kInvalidArgument, "this bulk load was already finished");
    const std::size_t ncols = schema.columns().size();
    auto conn = impl.pool().take();
    // The partition code comes from DuckDB (an extra column) only for types other than DATE and
    // TIMESTAMP; it costs the router ~10% of its time otherwise.
    std::optional<duck::Prepared> st;
    bool sql_codes = false;
    {
      st.emplace(conn->prepare(fmt::format("SELECT * FROM ({}) AS __dp_source", select_sql),
                               "bulk source query"));
      const std::vector<duckdb_type> got = st->column_types();
      const std::size_t pi = schema.partition_index();
      sql_codes =
          got.size() <= pi || (got[pi] != DUCKDB_TYPE_DATE && got[pi] != DUCKDB_TYPE_TIMESTAMP);
      if (sql_codes) {
        st.emplace(conn->prepare(
            fmt::format(
                "SELECT *, {} AS __dp_code FROM ({}) AS __dp_source",
                partition_code_sql(store.strategy, duck::quote_ident(schema.partition_column())),
                select_sql),
            "bulk source query"));
      }
    }
    bind_columns(*st, sql_codes ? 1 : 0);
    if (gathers.empty()) {
      bool sized = true;
      for (duckdb_logical_type t : raw_types) {
        gathers.emplace_back(t);
        row_bytes += gathers.back().row_bytes();
        sized = sized && gathers.back().typed();
      }
      max_inflight_per_writer = sized ? kMaxInflightPerWriter : kMinInflightPerWriter;
    }
    duck::Result r = st->execute_streaming();
    const idx_t capacity = duckdb_vector_size();
    duck::OwnedByValue<duckdb_selection_vector, duckdb_destroy_selection_vector> sel(
        duckdb_create_selection_vector(capacity));
    std::vector<int64_t> codes;
    std::vector<uint32_t> slot_of_row;   // per row of the chunk; UINT32_MAX: not routed
    std::vector<uint32_t> count;         // per slot, this chunk
    std::vector<uint32_t> start;         // per slot: first index into `order`
    std::vector<sel_t> order(capacity);  // the chunk's rows grouped by slot
    std::vector<std::size_t> touched;
    // The copies of one source chunk: rows [first, first + n) of `order` to row `at` of a
    // destination chunk whose columns are dst[seg * ncols ...]. Planned for every slot first,
    // then done column by column (one source column stays in cache while ~120 partitions take
    // their rows of it).
    struct Segment {
      const sel_t* first;
      idx_t n;
      idx_t at;
      std::size_t slot;
      int full;  // index into `full` when this segment completes a chunk, else -1
    };
    std::vector<Segment> segs;
    std::vector<GatherVector> seg_dst;
    std::vector<GatherVector> src_vecs(ncols);
    struct Full {
      std::size_t slot;
      duckdb_data_chunk chunk;
      std::size_t bytes;
    };
    std::vector<Full> full;  // chunks completed by this source chunk, to dispatch
    // code -> slot, direct-mapped (a hash lookup per row cost more than the copy of the row).
    constexpr std::size_t kCache = 256;
    std::array<std::pair<int64_t, uint32_t>, kCache> cache;
    cache.fill({kNullCode, 0});  // never a key: a NULL code is looked up as INT64_MIN
    int64_t null_rows = 0;
    int64_t n_routed = 0;
    while (true) {
      duck::DataChunk chunk = r.fetch();
      if (!chunk || chunk.size() == 0) break;
      throw_if_failed();
      const idx_t n = chunk.size();
      codes_of(chunk.get(), n, sql_codes, codes);
      slot_of_row.resize(n);
      for (idx_t i = 0; i < n; ++i) {
        int64_t c = codes[i];
        if (c == kNullCode) {
          ++null_rows;
          if (!options.null_partition) {
            slot_of_row[i] = UINT32_MAX;
            continue;
          }
          c = INT64_MIN;
        }
        auto& hit = cache[(static_cast<uint64_t>(c) * 0x9E3779B97F4A7C15ULL) >> 56];
        if (hit.first != c) hit = {c, static_cast<uint32_t>(slot_for(c))};
        slot_of_row[i] = hit.second;
      }
      count.assign(slots.size(), 0);
      for (idx_t i = 0; i < n; ++i) {
        if (slot_of_row[i] == UINT32_MAX) continue;
        if (count[slot_of_row[i]]++ == 0) touched.push_back(slot_of_row[i]);
      }
      start.resize(slots.size());
      uint32_t at = 0;
      for (std::size_t s : touched) {
        start[s] = at;
        at += count[s];
      }
      for (idx_t i = 0; i < n; ++i) {
        if (slot_of_row[i] != UINT32_MAX) order[start[slot_of_row[i]]++] = static_cast<sel_t>(i);
      }
      segs.clear();
      seg_dst.clear();
      for (std::size_t s : touched) {
        const idx_t rows = count[s];
        const sel_t* first = order.data() + start[s] - rows;
        Slot& slot = *slots[s];
        idx_t done = 0;
        while (done < rows) {
          if (!slot.building) {
            slot.building = new_chunk();
            slot.fill = 0;
            slot.building_vecs.resize(ncols);
            for (idx_t col = 0; col < ncols; ++col) {
              slot.building_vecs[col] = GatherVector::of(slot.building, col);
            }
          }
          const idx_t take = std::min<idx_t>(rows - done, capacity - slot.fill);
          segs.push_back({first + done, take, slot.fill, s, -1});
          seg_dst.insert(seg_dst.end(), slot.building_vecs.begin(), slot.building_vecs.end());
          slot.fill += take;
          done += take;
          if (slot.fill == capacity) {
            segs.back().full = static_cast<int>(full.size());
            full.push_back({s, std::exchange(slot.building, nullptr),
                            row_bytes * capacity + std::exchange(slot.heap_bytes, 0)});
            slot.fill = 0;
          }
        }
        slot.rows += static_cast<int64_t>(rows);
        n_routed += static_cast<int64_t>(rows);
      }
      for (idx_t col = 0; col < ncols; ++col) {
        src_vecs[col] = GatherVector::of(chunk.get(), col);
      }
      for (idx_t col = 0; col < ncols; ++col) {
        for (std::size_t g = 0; g < segs.size(); ++g) {
          const std::size_t heap =
              gathers[col].gather(src_vecs[col], seg_dst[g * ncols + col], segs[g].first, segs[g].n,
                                  segs[g].at, sel.get());
          if (heap == 0) continue;
          if (segs[g].full >= 0) {
            full[static_cast<std::size_t>(segs[g].full)].bytes += heap;
          } else {
            slots[segs[g].slot]->heap_bytes += heap;
          }
        }
      }
      for (std::size_t s : touched) {
        if (slots[s]->building) duckdb_data_chunk_set_size(slots[s]->building, slots[s]->fill);
      }
      for (const Full& f : full) {
        duckdb_data_chunk_set_size(f.chunk, capacity);
        dispatch(f.slot, f.chunk, f.bytes);
      }
      full.clear();
      touched.clear();
    }
    if (null_rows > 0 && !options.null_partition) {
      throw Error(
          ErrorCode::kInvalidArgument,
          fmt::format("{} source row(s) have a NULL '{}'; nothing was written. Route them to "
                      "partition_null with the null-partition option, or fix the source",
                      null_rows, schema.partition_column()));
    }
    throw_if_failed();
    routed += n_routed;
    return n_routed;
  }

  // ---- writers ----

  void fail(Slot& s, const std::exception& e) {
    s.failed = true;
    std::lock_guard lock(res_mu);
    failures.push_back(fmt::format("{}: {}", s.entry->name, e.what()));
    if (!first_error) {
      const auto* err = dynamic_cast<const Error*>(&e);
      first_error = err ? *err : Error(ErrorCode::kDuckDb, e.what());
    }
    any_failed = true;
    flow_cv.notify_all();
  }

  static std::string ctx_of(const Entry& e) {
    return fmt::format("partition {} ('{}')", e.name, e.file);
  }

  void open_slot(Slot& s) {
    Entry& e = *s.entry;
    const std::string ctx = ctx_of(e);
    s.wlock = std::unique_lock(e.write_mu);
    if (e.dropped) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} was dropped while this batch was being written; write "
                              "the batch again",
                              e.name));
    }
    s.conn.emplace(impl.pool().take());
    duck::Connection& c = **s.conn;
    c.exec("BEGIN TRANSACTION", ctx);
    s.open = true;
    if (!options.replay_batch_id.empty() && Impl::has_batch(c, e, options.replay_batch_id, ctx)) {
      s.skip = true;
      rollback(s);
      return;
    }
    s.acc = Impl::MetaAcc(schema, col_types);
  }

  // Queues `chunk` for the partition's next INSERT; false when the slot does not take it (failed,
  // skipped), and the caller recycles it.
  bool append(Slot& s, duckdb_data_chunk chunk) {
    if (s.failed || s.skip) return false;
    bool queued = false;
    try {
      if (!s.open) open_slot(s);
      if (s.skip) return false;
      if (s.acc.supported) s.acc.add(chunk);
      if (!s.feed) s.feed.emplace(raw_types);  // the types are known once chunks exist
      s.feed->chunks.push_back(chunk);
      queued = true;
      s.pending_rows += static_cast<int64_t>(duckdb_data_chunk_get_size(chunk));
      if (s.feed->chunks.size() >= static_cast<std::size_t>(kChunksPerFlush)) flush_feed(s);
    } catch (const std::exception& e) {
      fail(s, e);
      drop_pending(s);
    }
    return queued;  // a queued chunk is recycled by drop_pending
  }

  // Runs the partition's INSERT over its queued chunks, then recycles them.
  void flush_feed(Slot& s) {
    if (!s.feed || s.feed->chunks.empty()) return;
    struct Recycle {
      Loader& l;
      Slot& s;
      ~Recycle() { l.drop_pending(s); }
    } recycle_after{*this, s};
    if (!s.insert) {
      s.insert.emplace((*s.conn)->prepare(
          fmt::format("INSERT INTO {}.main.{} SELECT * FROM {}({})",
                      duck::quote_ident(s.entry->alias), duck::quote_ident(schema.name()),
                      ChunkFeed::kFunction, s.feed->id()),
          ctx_of(*s.entry)));
    }
    duck::Result r = s.insert->execute();
    const int64_t copied = r.rows_changed();
    if (copied != s.pending_rows) {
      throw Error(ErrorCode::kDuckDb, fmt::format("{}: DuckDB inserted {} of {} routed rows",
                                                  ctx_of(*s.entry), copied, s.pending_rows));
    }
  }

  void drop_pending(Slot& s) noexcept {
    if (!s.feed) return;
    for (duckdb_data_chunk c : s.feed->chunks) to_pool(c);
    s.feed->chunks.clear();
    s.pending_rows = 0;
  }

  void direct(Slot& s, DirectJob& job) {
    if (!s.failed && !s.skip && (any_failed.load() || aborting.load())) {
      // Another partition failed (or the load is aborted) after commit() may already have chosen
      // to finish: this partition must roll back rather than commit without these rows, which a
      // replay would then skip.
      s.failed = true;
    }
    if (!s.failed && !s.skip) {
      try {
        if (!s.open) open_slot(s);
        if (!s.skip) {
          const std::string ctx = ctx_of(*s.entry);
          flush_feed(s);
          duck::Result r = (*s.conn)->query(
              fmt::format("INSERT INTO {}.main.{} SELECT * FROM ({}) AS __dp_source",
                          duck::quote_ident(s.entry->alias), duck::quote_ident(schema.name()),
                          job.select_sql),
              ctx);
          const int64_t copied = r.rows_changed();
          if (copied != job.rows) {
            throw Error(ErrorCode::kConflict,
                        fmt::format("{}: the source query gave {} rows to the copy and {} to "
                                    "its count; did the source change?",
                                    ctx, copied, job.rows));
          }
          s.acc.add_bounds(job.rows, job.vlo, job.vhi, job.idlo, job.idhi);
        }
      } catch (const std::exception& e) {
        fail(s, e);
      }
    }
    {
      std::lock_guard lock(flow_mu);
      --direct_inflight;
    }
    flow_cv.notify_all();
  }

  void rollback(Slot& s) noexcept {
    drop_pending(s);
    s.insert.reset();
    s.feed.reset();
    if (s.open) {
      try {
        (*s.conn)->exec("ROLLBACK");
      } catch (...) {
      }
      s.open = false;
    }
    s.conn.reset();
    if (s.wlock.owns_lock()) s.wlock.unlock();
  }

  void finish(Slot& s) {
    Entry& e = *s.entry;
    if (s.skip) {
      std::lock_guard lock(res_mu);
      res.rows_skipped += s.rows;
      ++res.partitions_skipped;
      return;
    }
    if (!s.open || s.failed) {
      rollback(s);
      return;
    }
    const std::string ctx = ctx_of(e);
    try {
      duck::Connection& c = **s.conn;
      flush_feed(s);
      s.insert.reset();
      s.feed.reset();
      PartitionMeta m =
          s.acc.supported ? s.acc.merged(e.meta()) : impl.scan_meta(store, e, c, e.meta());
      impl.record_and_commit(c, e, batch_id, m, ctx);
      s.open = false;
      s.wlock.unlock();
      // A bulk commit of less than a row group leaves its rows in DuckDB's memory and write-ahead
      // log until a checkpoint writes them compressed into the file; doing that here, on this
      // writer thread, spreads the compression over the writers and bounds memory (otherwise it
      // happens serially at detach). Larger commits are already in the file (kRowGroupRows).
      // Best effort: a concurrent transaction can make it fail; DuckDB checkpoints later.
      if (s.rows >= kCheckpointRows && s.rows < kRowGroupRows) {
        try {
          c.exec(fmt::format("CHECKPOINT {}", duck::quote_ident(e.alias)), ctx);
        } catch (const Error&) {
        }
      }
      s.conn.reset();
      {
        std::lock_guard lock(e.bloom_mu);
        set_bloom(store, e, nullptr, -1);  // rebuilt by the next lookup that needs it
      }
      {
        std::lock_guard lock(res_mu);
        res.rows_written += s.rows;
        ++res.partitions_written;
        committed.push_back(e.name);
      }
      if (impl.commit_hook) impl.commit_hook(e.name);
    } catch (const std::exception& ex) {
      fail(s, ex);
      rollback(s);
    }
  }

  // A chunk taken off a writer's queue: the router may queue another.
  void taken(std::size_t bytes) {
    {
      std::lock_guard lock(flow_mu);
      --inflight;
      inflight_bytes -= bytes;
    }
    flow_cv.notify_one();
  }

  void to_pool(duckdb_data_chunk chunk) noexcept {
    duckdb_data_chunk_reset(chunk);
    std::lock_guard lock(flow_mu);
    free_chunks.push_back(chunk);
  }

  void work(unsigned t) {
    Worker& w = *workers[t];
    while (true) {
      Msg m;
      {
        std::unique_lock lock(w.mu);
        w.cv.wait(lock, [&] { return !w.q.empty(); });
        m = w.q.front();
        w.q.pop_front();
      }
      if (m.kind == Msg::kChunk) {
        taken(m.bytes);
        // After a failure or an abort everything rolls back: no INSERT for queued chunks.
        if (any_failed.load() || aborting.load() || !append(*m.slot, m.chunk)) to_pool(m.chunk);
        continue;
      }
      if (m.kind == Msg::kDirect) {
        direct(*m.slot, *m.job);
        continue;
      }
      // Slots are only added by the router, which is waiting for this thread now.
      for (auto& s : slots) {
        if (s->owner != t) continue;
        if (m.kind == Msg::kFinish) {
          finish(*s);
        } else {
          rollback(*s);
        }
      }
      return;
    }
  }

  void stop_workers(Msg::Kind kind) noexcept {
    for (auto& w : workers) {
      {
        std::lock_guard lock(w->mu);
        w->q.push_back({kind, nullptr, nullptr});
      }
      w->cv.notify_one();
    }
    for (auto& w : workers) {
      if (w->th.joinable()) w->th.join();
    }
  }

  void release() noexcept {
    for (auto& s : slots) {
      if (s->building) duckdb_destroy_data_chunk(&s->building);
      s->building = nullptr;
      s->pins.reset();
    }
  }

  BatchResult commit(const std::string& id) {
    if (finished) throw Error(ErrorCode::kInvalidArgument, "this bulk load was already finished");
    if (!options.replay_batch_id.empty() && id != options.replay_batch_id) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("batch id '{}' differs from the replayed id '{}'", id,
                              options.replay_batch_id));
    }
    batch_id = id;
    res.batch_id = id;
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (slots[i]->building && slots[i]->fill > 0 && !any_failed.load()) dispatch_building(i);
    }
    finished = true;
    // With a failure recorded, every partition rolls back instead: nothing becomes visible.
    stop_workers(any_failed.load() ? Msg::kAbort : Msg::kFinish);
    release();
    restore_threads();
    {
      std::lock_guard lock(impl.mu);
      impl.counters.batches_skipped += res.partitions_skipped;
    }
    if (first_error) {
      std::sort(committed.begin(), committed.end());
      throw Error(
          first_error->code(),
          fmt::format("batch {}: {} of {} partitions failed and wrote nothing ({}); {} "
                      "committed{}{}. Load the same rows again with replay batch id '{}' to "
                      "finish it exactly once",
                      id, failures.size(), slots.size(), fmt::join(failures, "; "),
                      committed.size(), committed.empty() ? "" : ": ", fmt::join(committed, ", "),
                      id));
    }
    return res;
  }

  void abort() noexcept {
    if (finished) return;
    finished = true;
    aborting = true;  // queued INSERTs are skipped: everything rolls back anyway
    stop_workers(Msg::kAbort);
    release();
    restore_threads();
  }

  void set_single_duckdb_thread(bool on) {
    if (finished) return;  // commit() and abort() restored the threads for good
    if (on) {
      single_thread();
    } else {
      restore_threads();
    }
  }

  void single_thread() noexcept {
    if (holds_threads) return;
    impl.hold_single_thread();
    holds_threads = true;
  }

  void restore_threads() noexcept {
    if (!holds_threads) return;
    impl.release_single_thread();
    holds_threads = false;
  }
};

PartitionedDataRepository::BulkLoad::BulkLoad(std::unique_ptr<Loader> loader)
    : loader_(std::move(loader)) {}
PartitionedDataRepository::BulkLoad::~BulkLoad() = default;
int64_t PartitionedDataRepository::BulkLoad::load(const std::string& select_sql) {
  return loader_->load(select_sql);
}
int64_t PartitionedDataRepository::BulkLoad::load_into(const PartitionKey& key,
                                                       const std::string& select_sql) {
  return loader_->load_into(key, select_sql);
}
int64_t PartitionedDataRepository::BulkLoad::rows() const noexcept { return loader_->routed; }
BatchResult PartitionedDataRepository::BulkLoad::commit(const std::string& batch_id) {
  return loader_->commit(batch_id);
}
void PartitionedDataRepository::BulkLoad::abort() noexcept { loader_->abort(); }
void PartitionedDataRepository::BulkLoad::set_single_duckdb_thread(bool on) {
  loader_->set_single_duckdb_thread(on);
}

namespace {

std::vector<DataRecord> run_rows(duck::Prepared& st, const std::vector<Value>& params) {
  for (std::size_t i = 0; i < params.size(); ++i) st.bind(i + 1, params[i]);
  duck::Result r = st.execute();
  duck::ChunkDecoder dec(r);
  std::vector<DataRecord> rows;
  while (auto chunk = r.fetch()) dec.decode(chunk, rows);
  return rows;
}

std::vector<DataRecord> run_rows(duck::Connection& conn, const std::string& sql,
                                 const std::vector<Value>& params) {
  auto st = conn.prepare(sql);
  return run_rows(st, params);
}

class NoRows final : public RecordStream::Source {
 public:
  bool fetch(std::vector<DataRecord>&) override { return false; }
};

}  // namespace

PartitionedDataRepository::PartitionedDataRepository(PartitionConfig config,
                                                     PartitionedRepositoryOptions options)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  // -1 (automatic) resolved once, with one look at the memory this process may use.
  if (config.write_buffer_mb < 0 || config.memory_limit_mb < 0 || config.id_index_memory_mb < 0) {
    const int64_t usable = usable_memory_mb();
    config.write_buffer_mb = config.effective_write_buffer_mb(usable);
    config.memory_limit_mb = config.effective_memory_limit_mb(usable);
    config.id_index_memory_mb = config.effective_id_index_memory_mb(usable);
  }
  impl_->config = std::move(config);
  impl_->options = options;
  std::error_code ec;
  fs::path base(impl_->config.base_partition_path);
  if (!fs::exists(base, ec)) {
    if (options.read_only) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("partition directory '{}' does not exist", base.string()));
    }
    fs::create_directories(base, ec);
    if (ec) {
      throw Error(ErrorCode::kIo, fmt::format("cannot create partition directory '{}': {}",
                                              base.string(), ec.message()));
    }
  } else if (!fs::is_directory(base, ec)) {
    throw Error(ErrorCode::kIo,
                fmt::format("partition path '{}' exists but is not a directory", base.string()));
  }
  impl_->base_dir = fs::weakly_canonical(fs::absolute(base)).string();
  {
    std::lock_guard lock(g_dirs_mu);
    if (!g_open_dirs.insert(impl_->base_dir).second) {
      throw Error(ErrorCode::kLocked,
                  fmt::format("partition directory '{}' is already open in this process; share "
                              "one PartitionedDataRepository instead of opening a second",
                              impl_->base_dir));
    }
  }
  try {
    if (options.read_only) impl_->start_prefetch();
    // No row-group merging at checkpoints: a commit of more than a row group (a drain of the write
    // buffer, a large batch) leaves a partly filled row group before the next one, and DuckDB's
    // checkpoint vacuum rewrites such neighbours into fewer row groups, leaving the old blocks free
    // inside the file: 1.76x the bytes at 117K rows per partition and drain (docs/performance.md,
    // "Session 13"). Deleted rows keep their space until `compact` rewrites the partition.
    // Settings are given at start rather than SET: the first statement of a process costs ~1 ms.
    std::vector<std::pair<std::string, std::string>> settings{{"max_vacuum_tasks", "0"}};
    if (impl_->config.memory_limit_mb > 0) {
      settings.emplace_back("memory_limit", fmt::format("{}MiB", impl_->config.memory_limit_mb));
    }
    impl_->duck_settings = std::move(settings);
    if (!options.read_only) impl_->open_duck();
  } catch (...) {
    std::lock_guard lock(g_dirs_mu);
    g_open_dirs.erase(impl_->base_dir);
    throw;
  }
}

PartitionedDataRepository::~PartitionedDataRepository() {
  impl_->stop_timed_drains();
  try {
    flush();
  } catch (...) {
  }
  impl_->join_drainers();  // a drain that failed in flush() stays in its log for the next open
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [name, s] : impl_->stores) {
      for (auto& [k, e] : s->entries) impl_->detach_locked(*e);
    }
  }
  std::lock_guard lock(g_dirs_mu);
  g_open_dirs.erase(impl_->base_dir);
}

const PartitionConfig& PartitionedDataRepository::config() const noexcept { return impl_->config; }

void PartitionedDataRepository::initialize(const Schema& schema) { impl_->store_for(schema); }

void PartitionedDataRepository::set_id_filter_hook(
    std::function<void(const std::string&, int64_t)> hook) {
  impl_->id_filter_hook = std::move(hook);
}

void PartitionedDataRepository::set_commit_hook(std::function<void(const std::string&)> hook) {
  impl_->commit_hook = std::move(hook);
}

std::vector<std::string> PartitionedDataRepository::list_schemas() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(impl_->base_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory()) continue;
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '_' || name[0] == '.') continue;
    bool has_partition = fs::exists(it->path() / kCatalogFile);
    for (fs::directory_iterator f(it->path(), ec), fend; !ec && !has_partition && f != fend;
         f.increment(ec)) {
      has_partition = parse_partition_name(f->path().filename().string()).has_value();
    }
    if (has_partition) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Schema PartitionedDataRepository::load_schema(const std::string& table) {
  {
    std::lock_guard lock(impl_->mu);
    if (auto it = impl_->stores.find(table); it != impl_->stores.end()) return it->second->schema;
  }
  const std::string dir = impl_->base_dir + "/" + table;
  if (auto c = read_catalog(dir, nullptr)) return Schema::from_json(c->schema_json);
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (parse_partition_name(it->path().filename().string())) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    try {
      duck::Database db = duck::Database::open(f.string(), /*read_only=*/true);
      duck::Connection c = db.connect();
      duck::Result r = c.query(fmt::format("SELECT schema_json FROM main.{}", kMetaTable));
      duck::ChunkDecoder dec(r);
      std::vector<DataRecord> rows;
      while (auto chunk = r.fetch()) dec.decode(chunk, rows);
      if (rows.size() == 1) return Schema::from_json(rows[0].values[0].get<std::string>());
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kLocked) throw;
    }
  }
  throw Error(ErrorCode::kNotFound,
              fmt::format("no partitions of table '{}' under '{}'", table, impl_->base_dir));
}

DataRecord PartitionedDataRepository::create(const Schema& schema,
                                             const std::map<std::string, Value>& data) {
  ColumnBatch b = records_to_batch(schema, {record_from_map(schema, data)});
  impl_->write(schema, b, {}, /*keep_batch=*/true);
  return batch_row(schema, b, 0);
}

BatchResult PartitionedDataRepository::create_batch(const Schema& schema,
                                                    const std::vector<DataRecord>& records,
                                                    const BatchOptions& options) {
  ColumnBatch b = records_to_batch(schema, records);
  return impl_->write(schema, b, options);
}

BatchResult PartitionedDataRepository::create_batch_columnar(const Schema& schema,
                                                             ColumnBatch batch,
                                                             const BatchOptions& options) {
  return impl_->write(schema, batch, options);
}

BatchResult PartitionedDataRepository::create_batch_from_query(const Schema& schema,
                                                               const std::string& select_sql,
                                                               const BatchOptions& options,
                                                               bool null_partition) {
  check_batch_id(options.batch_id);
  auto load = begin_bulk_load(schema, {.replay_batch_id = options.batch_id,
                                       .null_partition = null_partition,
                                       .single_duckdb_thread = false});
  load->load(select_sql);
  return load->commit(options.batch_id.empty() ? new_uuid_v7() : options.batch_id);
}

std::unique_ptr<PartitionedDataRepository::BulkLoad> PartitionedDataRepository::begin_bulk_load(
    const Schema& schema, const BulkLoadOptions& options) {
  if (impl_->options.read_only) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("the partition store '{}' is open read-only; writes are refused",
                            impl_->base_dir));
  }
  Store& store = impl_->store_for(schema);
  return std::unique_ptr<BulkLoad>(
      new BulkLoad(std::make_unique<BulkLoad::Loader>(*impl_, store, schema, options)));
}

void PartitionedDataRepository::attach_database(const std::string& path, const std::string& alias,
                                                bool read_only) {
  if (!fs::exists(path)) {
    throw Error(ErrorCode::kNotFound, fmt::format("database file '{}' does not exist", path));
  }
  std::lock_guard lock(impl_->mu);
  try {
    impl_->admin().exec(fmt::format("ATTACH {} AS {}{}", duck::quote_literal(path),
                                    duck::quote_ident(alias), read_only ? " (READ_ONLY)" : ""));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kLocked) {
      throw Error(ErrorCode::kLocked,
                  fmt::format("'{}' is held by another process (DuckDB allows one writing process "
                              "per file): stop that process, or run the migration through the "
                              "library inside it (PartitionMigrator). DuckDB said: {}",
                              path, e.what()));
    }
    throw Error(e.code(), fmt::format("cannot open '{}': {}", path, e.what()));
  }
}

void PartitionedDataRepository::detach_database(const std::string& alias) noexcept {
  if (!impl_->duck_started.load(std::memory_order_acquire)) return;  // nothing can be attached
  std::lock_guard lock(impl_->mu);
  try {
    impl_->admin().exec(fmt::format("DETACH {}", duck::quote_ident(alias)));
  } catch (...) {
  }
}

std::string PartitionedDataRepository::checksum_sql(const Schema& schema) {
  std::string cols;
  for (const auto& c : schema.columns()) {
    if (!cols.empty()) cols += ", ";
    cols += duck::quote_ident(c.name);
  }
  return fmt::format("CAST(coalesce(sum(CAST(hash({}) AS HUGEINT)), 0) AS VARCHAR)", cols);
}

std::vector<PartitionedDataRepository::PartitionChecksum>
PartitionedDataRepository::checksum_partitions(const Schema& schema, bool keep_going) {
  Store& store = impl_->store_for(schema);
  std::vector<Entry*> entries;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [k, e] : store.entries) entries.push_back(e.get());
  }
  std::vector<PartitionChecksum> out;
  for (Entry* e : entries) {
    try {
      auto pins = impl_->acquire({e}, nullptr);
      if (pins.entries().empty()) continue;
      auto conn = impl_->pool().take();
      auto rows =
          run_rows(*conn,
                   fmt::format("SELECT count(*), {} FROM {}.main.{}", checksum_sql(schema),
                               duck::quote_ident(e->alias), duck::quote_ident(schema.name())),
                   {});
      out.push_back(PartitionChecksum{e->key, e->name, rows.at(0).values[0].get<int64_t>(),
                                      rows.at(0).values[1].get<std::string>(), "",
                                      ErrorCode::kDuckDb});
    } catch (const Error& err) {
      const std::string what =
          std::string(err.what()).find(e->file) != std::string::npos
              ? err.what()
              : fmt::format("partition {} ('{}'): {}", e->name, e->file, err.what());
      if (!keep_going) throw Error(err.code(), what);
      out.push_back(PartitionChecksum{e->key, e->name, 0, "", what, err.code()});
    }
  }
  return out;
}

std::vector<PartitionedDataRepository::CommittedBatch> PartitionedDataRepository::partition_batches(
    const Schema& schema, const std::string& partition_name) {
  Store& store = impl_->store_for(schema);
  Entry* e = impl_->entry_named(store, partition_name);
  std::vector<CommittedBatch> out;
  auto pins = impl_->acquire({e}, nullptr);
  if (pins.entries().empty()) return out;  // dropped meanwhile
  auto conn = impl_->pool().take();
  for (const DataRecord& r :
       run_rows(*conn,
                fmt::format("SELECT batch_id, row_count, committed_at FROM {}.main.{} ORDER BY "
                            "committed_at, batch_id",
                            duck::quote_ident(e->alias), kBatchesTable),
                {})) {
    CommittedBatch b;
    b.batch_id = r.values[0].is_null() ? "" : r.values[0].get<std::string>();
    b.rows = r.values[1].is_null() ? 0 : r.values[1].get<int64_t>();
    if (!r.values[2].is_null()) b.committed_at = r.values[2].get<Timestamp>();
    out.push_back(std::move(b));
  }
  return out;
}

void PartitionedDataRepository::record_batch_ids(const Schema& schema,
                                                 const std::string& partition_name,
                                                 const std::vector<CommittedBatch>& batches) {
  if (impl_->options.read_only) {
    throw Error(ErrorCode::kInvalidArgument,
                "the partition store is open read-only; recording batch ids is refused");
  }
  if (batches.empty()) return;
  Store& store = impl_->store_for(schema);
  Entry* e = impl_->entry_named(store, partition_name);
  auto pins = impl_->acquire({e}, nullptr);
  if (pins.entries().empty()) {
    throw Error(ErrorCode::kNotFound, fmt::format("partition {} was dropped", partition_name));
  }
  auto conn = impl_->pool().take();
  LogIds missing;
  struct NothingNew {};
  try {
    impl_->commit_partition(
        *e, batches.front().batch_id, /*check_replay=*/false, *conn,
        [&](duck::Connection& c, const std::string& ctx) {
          std::set<std::string> held;
          for (const DataRecord& r :
               run_rows(c,
                        fmt::format("SELECT batch_id FROM {}.main.{}", duck::quote_ident(e->alias),
                                    kBatchesTable),
                        {})) {
            if (!r.values[0].is_null()) held.insert(r.values[0].get<std::string>());
          }
          (void)ctx;
          for (const CommittedBatch& b : batches) {
            if (held.insert(b.batch_id).second) missing.emplace_back(b.batch_id, b.rows);
          }
          if (missing.empty()) throw NothingNew{};  // rolled back: nothing to record
        },
        [](duck::Connection&, const PartitionMeta& old) { return old; }, &missing);
  } catch (const NothingNew&) {
  }
}

std::optional<DataRecord> PartitionedDataRepository::get_by_id(const Schema& schema,
                                                               const Value& id) {
  if (!schema.id_index()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("table '{}' has no id column", schema.name()));
  }
  if (id.is_null()) throw Error(ErrorCode::kInvalidArgument, "get_by_id: id is NULL");
  const Column& c = schema.columns()[*schema.id_index()];
  const Value v = coerce_value(c, id, "get_by_id");
  Store& store = impl_->store_for(schema);
  const std::string key = id_key(v);
  // The partitions whose id range holds the id, with their commit version (metadata is read under
  // mu, before bloom_mu).
  std::vector<std::pair<Entry*, int64_t>> candidates;
  std::vector<Entry*> damaged;
  std::string damaged_problem;  // the first one's
  bool damaged_locked = true;   // every one is held by another process
  {
    // Compared in compact form (Entry::IdProbe): the ids themselves only when the bounds tie.
    const IdForm form = id_form(v);
    const IdBound bound = id_bound(v);
    std::lock_guard lock(impl_->mu);
    ++impl_->counters.queries;
    candidates.reserve(store.entries.size());
    if (store.flat_changes != store.entries.changes()) {
      store.flat.clear();
      for (auto& [k, e] : store.entries) store.flat.push_back(e.get());
      store.flat_changes = store.entries.changes();
    }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(NDEBUG)
    // Checked builds: a change of `entries` that EntryMap did not count (an entry replaced through
    // an iterator, say) would leave `flat` stale.
    if (!std::equal(store.flat.begin(), store.flat.end(), store.entries.begin(),
                    store.entries.end(),
                    [](Entry* f, const auto& kv) { return f == kv.second.get(); })) {
      throw std::logic_error(
          fmt::format("get_by_id: the flat list of '{}' is stale", store.schema.name()));
    }
#endif
    for (Entry* e : store.flat) {
      const Entry::IdProbe& p = e->probe;
      if (!e->problem.empty()) {
        if (e->locked_elsewhere) {
          try {
            impl_->retry_locked_locked(*e);  // readable again once the other process let it go
          } catch (const Error&) {
          }
        }
      }
      if (!e->problem.empty()) {
        // What the error says is taken here, under mu (a retry elsewhere may change it).
        if (damaged.empty()) damaged_problem = e->problem;
        damaged_locked = damaged_locked && e->locked_elsewhere;
        damaged.push_back(e);
        continue;
      }
      if (p.form == IdForm::kNone) continue;
      if (p.form == form && form != IdForm::kOther) {
        if (bound < p.min_id || p.max_id < bound) continue;
        if (form == IdForm::kText && ((bound == p.min_id && id_less(v, e->meta().min_id)) ||
                                      (bound == p.max_id && id_less(e->meta().max_id, v)))) {
          continue;
        }
      } else if (id_less(v, e->meta().min_id) || id_less(e->meta().max_id, v)) {
        continue;
      }
      candidates.emplace_back(e, p.commit_version);
    }
  }
  // A constant (not a parameter) so that DuckDB compares in the scan and skips row groups by their
  // zone maps (~5% faster). No LIMIT 1: with it DuckDB 1.4 plans `SELECT * ... LIMIT` through late
  // materialization (a second pass joining on rowid): 4.0-5.3 ms instead of 2.7-3.0 ms per lookup
  // in an 830K-row partition (session 9). Ids are unique; the first row is returned.
  const std::optional<std::string> constant = constant_sql(c, v);
  // "SELECT ... FROM " + alias + select_tail (the constant may hold braces: no format string).
  const std::string select_head = "SELECT " + full_select_list(schema) + " FROM ";
  const std::string select_tail = fmt::format(
      ".main.{} WHERE {} = {}", duck::quote_ident(schema.name()), duck::quote_ident(c.name),
      constant ? *constant : fmt::format("CAST(? AS {})", param_sql_type(c, v)));
  const std::vector<Value> params = constant ? std::vector<Value>{} : std::vector<Value>{v};
  const std::string id_dir = store.dir + "/" + kIdIndexDir;
  const std::optional<uint32_t> fingerprint = duck::id_value_fingerprint(c.type, v);
  // Every candidate's filter block is requested from memory before any is tested: over hundreds
  // of partitions the misses overlap instead of following one another (the lookup's cost would
  // otherwise grow with the partition count: 0.3 us per partition here).
  // The filters are tested under the store's filters_mu (one shared lock, not a lock per
  // partition: those were half of a miss's time over 360 partitions); a partition stays a
  // candidate when its filter may hold the id or is missing or of another version (then tested
  // below under its bloom_mu, loaded or rebuilt).
  const IdBloom::Hash key_hash = IdBloom::hash(key);
  {
    std::shared_lock filters(store.filters_mu);
    for (auto [e, version] : candidates) {
      const Entry::IdProbe& p = e->probe;
      if (p.filter_words) IdBloom::prefetch(p.filter_words, p.filter_blocks, key_hash);
    }
    std::erase_if(candidates, [&](const std::pair<Entry*, int64_t>& cand) {
      const Entry::IdProbe& p = cand.first->probe;
      return p.filter_words && p.filter_version == cand.second &&
             !IdBloom::may_contain(p.filter_words, p.filter_blocks, key_hash);
    });
  }
  for (auto [e, version] : candidates) {
    bool need_build = false;
    {
      std::unique_lock lock(e->bloom_mu);
      if (e->bloom && e->probe.filter_version != version) {
        // A commit since the candidates were read may have moved the filter on: read the version
        // again (mu before bloom_mu) rather than replace a newer filter with an older file's or
        // rebuild it.
        lock.unlock();
        {
          std::lock_guard meta_lock(impl_->mu);
          version = e->meta().commit_version;
        }
        lock.lock();
      }
      if (!e->bloom || e->probe.filter_version != version) {
        auto b = std::make_unique<IdBloom>();
        if (b->load(id_dir + "/" + e->name + ".bloom", version)) {
          set_bloom(store, *e, std::move(b), version);
          e->bloom_dirty = false;
        } else {
          need_build = true;
        }
      }
      if (!need_build && !e->bloom->may_contain(key_hash)) continue;
    }
    auto pins = impl_->acquire({e}, nullptr);
    if (pins.entries().empty()) continue;
    auto conn = impl_->pool().take();
    if (need_build) {
      std::lock_guard wlock(e->write_mu);  // a stable version while the index is built
      std::lock_guard lock(e->bloom_mu);
      auto b = std::make_unique<IdBloom>(static_cast<uint64_t>(e->meta().row_count) * 2 + 1024);
      duck::Result r = conn->query(
          fmt::format("SELECT CAST({} AS VARCHAR) FROM {}.main.{}", duck::quote_ident(c.name),
                      duck::quote_ident(e->alias), duck::quote_ident(schema.name())),
          e->file);
      while (auto chunk = r.fetch()) {
        duckdb_vector vec = duckdb_data_chunk_get_vector(chunk.get(), 0);
        auto* data = static_cast<duckdb_string_t*>(duckdb_vector_get_data(vec));
        uint64_t* validity = duckdb_vector_get_validity(vec);
        for (idx_t i = 0; i < chunk.size(); ++i) {
          if (validity && !duckdb_validity_row_is_valid(validity, i)) continue;
          b->add(std::string_view(duckdb_string_t_data(&data[i]), duckdb_string_t_length(data[i])));
        }
      }
      set_bloom(store, *e, std::move(b), e->meta().commit_version);
      e->bloom_dirty = true;
      if (!e->bloom->may_contain(key_hash)) continue;
    }
    {
      std::lock_guard lock(impl_->mu);
      ++impl_->counters.partitions_scanned;
    }
    // With an id map: read the rows whose id has the same fingerprint by rowid and compare.
    if (fingerprint) {
      if (auto rowids = impl_->idmap_rows(store, *e, *conn, *fingerprint)) {
        if (rowids->empty()) continue;  // the map holds every row of the partition
        std::string in;
        for (uint32_t r : *rowids) in += (in.empty() ? "" : ", ") + std::to_string(r);
        auto rows = run_rows(*conn,
                             select_head + duck::quote_ident(e->alias) + ".main." +
                                 duck::quote_ident(schema.name()) + " WHERE rowid IN (" + in + ")",
                             {});
        for (auto& row : rows) {
          const Value& got = row.values[*schema.id_index()];
          if (!got.is_null() && id_key(got) == key) {
            std::lock_guard lock(impl_->mu);
            ++impl_->counters.ids_found_by_rowid;
            return std::move(row);
          }
        }
        // Rows that only share the fingerprint bits the map keeps (~0.15% of lookups at 833K rows
        // per partition), or rows DuckDB renumbered: the scan below decides.
      }
    }
    auto rows = run_rows(*conn, select_head + duck::quote_ident(e->alias) + select_tail, params);
    if (!rows.empty()) return std::move(rows[0]);
  }
  if (!damaged.empty()) {
    throw Error(damaged_locked ? ErrorCode::kLocked : ErrorCode::kCorruption,
                fmt::format("id {} was not found in the readable partitions of '{}', but {} "
                            "partition(s) cannot be read and may hold it: {} ({})",
                            key, schema.name(), damaged.size(), damaged[0]->file, damaged_problem));
  }
  return std::nullopt;
}

PaginatedResponse PartitionedDataRepository::get_all(const Schema& schema,
                                                     const DataQueryRequest& request) {
  const CompiledQuery q = compile_query(schema, request);
  impl_->open_duck();  // before the store's load, which it overlaps in a fresh read-only instance
  Store& store = impl_->store_for(schema);
  auto sel = impl_->select_partitions(store, q);
  PaginatedResponse resp;
  resp.columns = q.column_names;
  resp.limit = request.limit;
  resp.offset = request.offset;
  if (sel.entries.empty()) {
    resp.stats = sel.stats;
    return resp;
  }
  auto pins = impl_->acquire(sel.entries, &sel.stats);
  resp.stats = sel.stats;
  if (pins.entries().empty()) return resp;
  auto conn = impl_->pool().take();
  const std::string source = Impl::union_source(store, pins.entries());
  std::vector<Value> params;
  try {
    const std::string page = rows_sql(q, source, true, params);
    const duck::Uses uses = reads_use(schema);
    resp.items = run_rows(
        conn->prepared_read(impl_->read_key(page, pins.entries()), page, "", uses), params);
    params.clear();
    const std::string counting = count_sql(q, Impl::count_source(store, pins.entries(), q), params);
    auto count = run_rows(
        conn->prepared_read(impl_->read_key(counting, pins.entries()), counting, "", uses), params);
    resp.total = count.empty() ? 0 : count[0].values[0].get<int64_t>();
  } catch (const Error& err) {
    Impl::rethrow_reading(err, pins.entries());
  }
  resp.has_more = request.offset + static_cast<int64_t>(resp.items.size()) < resp.total;
  return resp;
}

RecordStream PartitionedDataRepository::stream_query_results(const Schema& schema,
                                                             const DataQueryRequest& request) {
  const CompiledQuery q = compile_query(schema, request);
  impl_->open_duck();  // before the store's load (get_all)
  Store& store = impl_->store_for(schema);
  auto sel = impl_->select_partitions(store, q);
  if (sel.entries.empty())
    return RecordStream(q.column_names, std::make_unique<NoRows>(), sel.stats);
  auto pins = std::make_unique<Impl::Pins>(impl_->acquire(sel.entries, &sel.stats));
  if (pins->entries().empty()) {
    return RecordStream(q.column_names, std::make_unique<NoRows>(), sel.stats);
  }
  auto conn = impl_->pool().take();
  std::vector<Value> params;
  const std::string sql = rows_sql(q, Impl::union_source(store, pins->entries()), true, params);
  duck::Prepared& st =
      conn->prepared_read(impl_->read_key(sql, pins->entries()), sql, "", reads_use(schema));
  for (std::size_t i = 0; i < params.size(); ++i) st.bind(i + 1, params[i]);
  duck::Result r;
  try {
    r = st.execute_streaming();
  } catch (const Error& err) {
    Impl::rethrow_reading(err, pins->entries());
  }
  return RecordStream(
      q.column_names,
      std::make_unique<Impl::PinnedSource>(std::move(pins), std::move(conn), std::move(r)),
      sel.stats);
}

namespace {

// The in-memory DuckDB that explains query_sql statements over stand-in tables: one per process,
// without the statistics propagator (query_sql says why).
const duck::Database& explain_database() {
  static const duck::Database* db = new duck::Database(duck::Database::open(
      ":memory:", false, {{"threads", "1"}, {"disabled_optimizers", "statistics_propagation"}}));
  return *db;
}

// Whether `sql` contains `name` as a whole word (case-insensitive). False positives (the name in a
// string literal) only cost a stand-in table.
bool mentions_identifier(std::string_view sql, std::string_view name) {
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  auto lower = [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  for (std::size_t i = 0; i + name.size() <= sql.size(); ++i) {
    bool same = true;
    for (std::size_t j = 0; same && j < name.size(); ++j)
      same = lower(sql[i + j]) == lower(name[j]);
    if (!same) continue;
    const bool left_ok = i == 0 || !word(sql[i - 1]);
    const bool right_ok = i + name.size() == sql.size() || !word(sql[i + name.size()]);
    if (left_ok && right_ok) return true;
  }
  return false;
}

std::string unquote_ident(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// Keeps what a SQL result reads alive: the session (handed back for reuse or closed first: its
// views reference the partitions) and the pinned partitions.
template <class PinsT>
struct SqlKeepAlive {
  std::unique_ptr<PinsT> pins;
  std::unique_ptr<SqlSession> session;
  std::function<void(std::unique_ptr<SqlSession>)> give_back;  // empty: not reusable
  SqlKeepAlive() = default;
  SqlKeepAlive(const SqlKeepAlive&) = delete;
  SqlKeepAlive& operator=(const SqlKeepAlive&) = delete;
  ~SqlKeepAlive() {
    if (session && give_back) {
      try {
        give_back(std::move(session));
      } catch (...) {
      }
    }
    session.reset();
    pins.reset();
  }
};

// The values of the partition column that the partitions a query_sql statement reads can hold:
// each partition's period and its metadata's [min, max] (microseconds; a DATE column's values are
// the first microsecond of their day).
struct ColumnBounds {
  int64_t lo = 0;
  int64_t hi = 0;
};

// A literal of the partition column's type; nullopt outside years 1-9999.
std::optional<std::string> partition_literal(int64_t micros, bool is_date) {
  int year = 0;
  unsigned month = 0, day = 0;
  civil_from_date(date_of(Timestamp{micros}), year, month, day);
  if (year < 1 || year > 9999) return std::nullopt;
  return is_date ? "DATE '" + format_date(date_of(Timestamp{micros})) + "'"
                 : "TIMESTAMP '" + format_timestamp(Timestamp{micros}) + "'";
}

// What query_sql runs instead of a statement over one table.
struct FewerTerms {
  std::string sql;
  duck::Prepared prepared;
  int removed = 0;
};

// `sql` without the WHERE terms on the partition column that every value in `bounds` satisfies,
// such as `ts >= '2020-01-01' AND ts < '2020-04-01'` over the partitions of those three months.
// DuckDB drops such a filter from each partition's scan by the table's statistics, but still reads
// and decompresses the column for it: 2.2 of 11.3 ms of a 3-month aggregate over 2.5M rows
// (docs/performance.md, "Session 37"). Only terms that keep one interval of values are considered
// (duck::internal::column_terms), so a term true at both ends of `bounds` is true for every value
// between them; each is evaluated by DuckDB, on the statement's own connection (same casts, time
// zone and collations), at the two ends. nullopt when no term can go, or when the statement
// DuckDB renders without them does not produce the same columns (names and types) as `checked`.
std::optional<FewerTerms> without_covered_terms(duck::Connection& conn,
                                                const duck::Prepared& checked,
                                                const std::string& sql, const Schema& schema,
                                                const ColumnBounds& bounds) {
  const Column& col = schema.columns()[schema.partition_index()];
  const std::optional<duck::internal::ColumnTerms> terms =
      duck::internal::column_terms(sql, schema.name(), col.name);
  if (!terms || terms->terms.empty() || terms->terms.size() > 62) return std::nullopt;
  const bool is_date = col.type == ColumnType::kDate;
  const std::optional<std::string> lo = partition_literal(bounds.lo, is_date);
  const std::optional<std::string> hi = partition_literal(bounds.hi, is_date);
  if (!lo || !hi) return std::nullopt;
  std::string eval = "SELECT 0";
  for (std::size_t i = 0; i < terms->terms.size(); ++i) {
    eval += fmt::format(" + CASE WHEN count(*) FILTER (WHERE {}) = 2 THEN {} ELSE 0 END",
                        terms->terms[i], int64_t{1} << i);
  }
  eval += fmt::format(" FROM (VALUES ({}), ({})) AS {}({})", *lo, *hi,
                      duck::quote_ident(terms->range_name), duck::quote_ident(col.name));
  int64_t mask = 0;
  try {
    mask = conn.query_int(eval, "SQL statement");
  } catch (const Error&) {
    return std::nullopt;  // the statement itself runs as written
  }
  if (mask == 0) return std::nullopt;
  std::vector<bool> drop(terms->terms.size());
  int removed = 0;
  for (std::size_t i = 0; i < drop.size(); ++i) {
    drop[i] = (mask >> i) & 1;
    removed += drop[i] ? 1 : 0;
  }
  std::optional<std::string> fewer =
      duck::internal::without_terms(sql, schema.name(), col.name, drop);
  if (!fewer) return std::nullopt;
  try {
    duck::Prepared p = prepare_read_only(conn, *fewer);
    const std::vector<duckdb_type> types = checked.column_types();
    if (p.column_types() != types) return std::nullopt;
    for (std::size_t i = 0; i < types.size(); ++i) {
      if (p.column_name(i) != checked.column_name(i)) return std::nullopt;
    }
    return FewerTerms{std::move(*fewer), std::move(p), removed};
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace

RecordStream PartitionedDataRepository::query_sql(const std::string& sql) {
  impl_->open_duck();  // before the stores' loads (get_all)
  // The tables of the store the statement names.
  std::set<std::string> names;
  for (const std::string& t : list_schemas()) names.insert(t);
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [name, store] : impl_->stores) names.insert(name);
  }
  std::vector<Store*> stores;
  std::string not_opened;  // tables named in the text that cannot be opened as configured
  std::vector<std::string> not_opened_names;
  for (const std::string& t : names) {
    if (!mentions_identifier(sql, t)) continue;
    try {
      stores.push_back(&impl_->store_for(load_schema(t)));
    } catch (const Error& e) {
      // Another strategy (kConflict): the name may be a word in a literal or a column; if the
      // statement reads the table, DuckDB's "does not exist" comes with the reason.
      if (e.code() != ErrorCode::kConflict) throw;
      not_opened += fmt::format("{}{}", not_opened.empty() ? "" : "; ", e.what());
      not_opened_names.push_back(t);
    }
  }

  // Stand-in tables (same columns, no rows) let DuckDB check the statement and tell us, through
  // EXPLAIN, which predicates restrict each scan. What EXPLAIN said is kept per statement text and
  // table definitions, so a repeated statement skips the stand-ins and the EXPLAIN (~2-3 ms) —
  // unless its filters can change between runs (now(), current_date, random(), ...): those are
  // analysed every time.
  std::shared_ptr<duck::Connection> conn;  // created when the analysis or a new session needs it
  std::vector<std::string> ddls;
  std::string plan_key = sql;
  for (Store* s : stores) {
    std::string ddl = create_table_sql("", s->schema, false);
    ddl.replace(0, std::string("CREATE TABLE main.").size(), "CREATE TEMP TABLE ");
    plan_key += '\0';
    plan_key += ddl;
    ddls.push_back(std::move(ddl));
  }
  const bool cacheable = sql_filters_are_stable(sql);
  std::optional<std::vector<ValueSet>> sets;
  if (cacheable) {
    std::lock_guard lock(impl_->sql_plans_mu);
    if (auto it = impl_->sql_plans.find(plan_key); it != impl_->sql_plans.end()) sets = it->second;
  }
  if (sets) {
    std::lock_guard lock(impl_->mu);
    ++impl_->counters.sql_plans_reused;
  }
  std::vector<bool> stand_in(stores.size(), false);
  if (!sets) {
    conn = std::make_shared<duck::Connection>(impl_->hub().get());
    for (std::size_t i = 0; i < stores.size(); ++i) {
      conn->exec(ddls[i], "SQL statement");
      stand_in[i] = true;
    }
    try {
      prepare_read_only(*conn, sql);
    } catch (const Error& e) {
      if (not_opened.empty()) throw;
      // A table it reads but could not open: that is the reason (exit 4, like other commands).
      bool missing = false;
      for (const std::string& t : not_opened_names) {
        missing = missing || std::string_view(e.what()).find(fmt::format(
                                 "Table with name {} does not exist", t)) != std::string::npos;
      }
      throw Error(missing ? ErrorCode::kConflict : e.code(),
                  fmt::format("{} ({})", e.what(), not_opened));
    }
    const std::string body = strip_statement_end(sql);
    // Explained on a DuckDB of its own, without the statistics propagator: the stand-ins'
    // statistics (no rows, so "no NULLs") let DuckDB fold `x IS NULL` to false and
    // `coalesce(ts, c)` to `ts`, and the plan then restricted the scans more than the statement
    // does on the real rows (`qty IS NULL OR ts > c` became `ts > c`). Without it, the scans'
    // filters are the statement's own, with constants folded. (The setting is global to an
    // instance, so not the store's.) A statement that needs what only the store's instance has
    // (a database attached to it, ...) does not bind there: every partition is read.
    std::string plan;
    bool explained = false;
    try {
      duck::Connection ex = explain_database().connect();
      for (const std::string& ddl : ddls) ex.exec(ddl, "SQL statement");
      duck::Result explain = ex.query("EXPLAIN (FORMAT JSON) " + body + "\n", "SQL statement");
      duck::ChunkDecoder dec(explain);
      std::vector<DataRecord> plan_rows;
      while (auto chunk = explain.fetch()) dec.decode(chunk, plan_rows);
      for (const DataRecord& r : plan_rows) {
        if (r.values.size() >= 2 && r.values[1].is<std::string>())
          plan += r.values[1].get<std::string>();
      }
      explained = true;
    } catch (const Error&) {
    }
    // A statement that names rowid could join on it itself (a table may have such a column).
    const std::vector<ExplainedScan> scans =
        explained ? explained_scans(plan, !mentions_identifier(sql, "rowid"))
                  : std::vector<ExplainedScan>{};
    sets.emplace();
    for (Store* s : stores) {
      const auto& col = s->schema.columns()[s->schema.partition_index()];
      if (!explained) {
        sets->push_back(ValueSet::all());
        continue;
      }
      ValueSet set = ValueSet::none();
      for (const ExplainedScan& scan : scans) {
        const std::string table = unquote_ident(scan.table);
        if (table.size() != s->schema.name().size() ||
            !mentions_identifier(table, s->schema.name())) {
          continue;
        }
        set = set.unite(filter_value_set(scan.filters, col.name, col.type == ColumnType::kDate));
      }
      sets->push_back(std::move(set));
    }
    if (cacheable) {
      std::lock_guard lock(impl_->sql_plans_mu);
      if (impl_->sql_plans.size() >= Impl::kMaxSqlPlans) impl_->sql_plans.clear();
      impl_->sql_plans.emplace(plan_key, *sets);
    }
  }

  QueryStats stats;
  std::vector<std::vector<Entry*>> chosen;
  std::vector<Entry*> all;
  for (std::size_t i = 0; i < stores.size(); ++i) {
    chosen.push_back(impl_->select_by_values(*stores[i], (*sets)[i], stats));
    all.insert(all.end(), chosen.back().begin(), chosen.back().end());
  }
  auto pins = std::make_unique<Impl::Pins>(impl_->acquire(all, &stats));

  // Each table becomes a view over its pinned partitions (a table with nothing to read keeps its
  // empty stand-in). A session built for exactly these views over exactly these attachments is
  // reused with its prepared statements (cacheable statements only).
  std::vector<std::string> views(stores.size());
  std::string session_key;
  std::vector<std::vector<Entry*>> read_by(stores.size());
  for (std::size_t i = 0; i < stores.size(); ++i) {
    std::vector<Entry*>& mine = read_by[i];
    for (Entry* e : pins->entries()) {
      if (std::find(chosen[i].begin(), chosen[i].end(), e) != chosen[i].end()) mine.push_back(e);
    }
    if (!mine.empty()) {
      const std::string table = duck::quote_ident(stores[i]->schema.name());
      // Over several partitions each branch starts with a constant the view then leaves out: a
      // statement that needs no column of a branch (`count(*)`, with or without a filter) makes
      // DuckDB 1.4 keep each branch's first column (a set operation keeps at least one), which
      // would otherwise be the table's first column — the bench's UUID id, over half of the bytes
      // (docs/performance.md, "Session 38"). Not when the table has a column of that name.
      static constexpr std::string_view kKey = "_duckpart_branch";
      bool keyed = mine.size() > 1;
      for (const Column& c : stores[i]->schema.columns()) {
        if (std::equal(c.name.begin(), c.name.end(), kKey.begin(), kKey.end(), [](char a, char b) {
              return std::tolower(static_cast<unsigned char>(a)) == static_cast<unsigned char>(b);
            })) {
          keyed = false;
        }
      }
      std::string view = "CREATE TEMP VIEW " + table + " AS ";
      if (keyed) view += fmt::format("SELECT * EXCLUDE ({}) FROM (", kKey);
      for (std::size_t k = 0; k < mine.size(); ++k) {
        if (k) view += " UNION ALL ";
        view +=
            keyed ? fmt::format("SELECT 1 AS {}, * FROM ", kKey) : std::string("SELECT * FROM ");
        view += duck::quote_ident(mine[k]->alias) + ".main." + table;
      }
      if (keyed) view += ")";
      views[i] = std::move(view);
    }
    session_key += ddls[i] + '\0' + views[i] + '\0';
  }
  // A statement over one table may run without its WHERE terms on the partition column that every
  // value these partitions can hold satisfies (without_covered_terms).
  std::optional<ColumnBounds> bounds;
  {
    std::lock_guard lock(impl_->mu);
    for (Entry* e : pins->entries()) {
      session_key += e->alias + Impl::data_version_locked(*e) + '\0';
    }
    if (stores.size() == 1 && !read_by[0].empty()) {
      const bool is_date = stores[0]->schema.columns()[stores[0]->schema.partition_index()].type ==
                           ColumnType::kDate;
      bounds.emplace(
          ColumnBounds{std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()});
      for (Entry* e : read_by[0]) {
        if (e->key.is_null || !e->problem.empty() || e->stored_range) {
          bounds.reset();
          break;
        }
        int64_t lo = e->key.start_ts().micros;
        int64_t hi = e->key.end_ts().micros - (is_date ? kMicrosPerDay : 1);
        if (e->meta().min_value) lo = std::min(lo, *e->meta().min_value);
        if (e->meta().max_value) hi = std::max(hi, *e->meta().max_value);
        bounds->lo = std::min(bounds->lo, lo);
        bounds->hi = std::max(bounds->hi, hi);
      }
    }
  }
  std::unique_ptr<SqlSession> session;
  if (cacheable && !conn) session = impl_->take_sql_session(session_key);
  if (!session) {
    session = std::make_unique<SqlSession>();
    session->key = session_key;
    if (!conn) conn = std::make_shared<duck::Connection>(impl_->hub().get());
    session->conn = conn;
    for (std::size_t i = 0; i < stores.size(); ++i) {
      if (views[i].empty()) {
        if (!stand_in[i]) conn->exec(ddls[i], "SQL statement");
        continue;
      }
      if (stand_in[i]) {
        conn->exec("DROP TABLE temp.main." + duck::quote_ident(stores[i]->schema.name()),
                   "SQL statement");
      }
      conn->exec(views[i], "SQL statement");
    }
  }
  conn.reset();
  auto prepared = session->prepared.find(sql);
  if (prepared == session->prepared.end()) {
    duck::Prepared checked = prepare_read_only(*session->conn, sql);
    std::string run_sql = sql;
    if (bounds) {
      if (std::optional<FewerTerms> fewer =
              without_covered_terms(*session->conn, checked, sql, stores[0]->schema, *bounds)) {
        run_sql = std::move(fewer->sql);
        checked = std::move(fewer->prepared);
        std::lock_guard lock(impl_->mu);
        impl_->counters.sql_partition_terms_removed += fewer->removed;
      }
    }
    const std::string final_sql = decodable_sql(checked, run_sql);
    duck::Prepared p =
        final_sql == run_sql ? std::move(checked) : session->conn->prepare(final_sql, "SQL");
    prepared = session->prepared.emplace(sql, std::move(p)).first;
  }
  duck::Result r;
  try {
    r = prepared->second.execute_streaming();
  } catch (const Error& err) {
    Impl::rethrow_reading(err, pins->entries());
  }
  const std::string context =
      pins->entries().empty() ? std::string() : "reading " + Impl::describe(pins->entries());
  auto keep = std::make_shared<SqlKeepAlive<Impl::Pins>>();
  keep->pins = std::move(pins);
  keep->session = std::move(session);
  if (cacheable) {
    Impl* impl = impl_.get();
    keep->give_back = [impl](std::unique_ptr<SqlSession> s) {
      impl->give_back_sql_session(std::move(s));
    };
  }
  auto source = std::make_unique<SqlResultSource>(std::move(keep), std::move(r), context);
  std::vector<std::string> columns = source->names();
  return RecordStream(std::move(columns), std::move(source), stats);
}

int64_t PartitionedDataRepository::count_all(const Schema& schema,
                                             const DataQueryRequest& request) {
  const CompiledQuery q = compile_query(schema, request);
  // A partition every row of which satisfies the filters (all on the partition column, its values'
  // [min, max] inside what they allow) counts its metadata row count, which is exact (committed
  // with the rows): such a count opens no file, and a read-only instance that answers a count
  // this way never starts DuckDB. The others are counted by DuckDB.
  const std::size_t pcol = schema.partition_index();
  const bool partition_filters_only = std::all_of(
      q.filters.begin(), q.filters.end(), [&](const BoundFilter& f) { return f.column == pcol; });
  if (!partition_filters_only) impl_->open_duck();  // before the store's load (get_all)
  Store& store = impl_->store_for(schema);
  auto sel = impl_->select_partitions(store, q);
  if (sel.entries.empty()) return 0;
  int64_t from_meta = 0;
  if (partition_filters_only) {
    const PartitionPredicate pred(q, pcol);
    struct Covered {
      Entry* e;
      int64_t rows;
      std::optional<FileStamp> stamp;
    };
    std::vector<Covered> covered;
    std::vector<Entry*> rest;
    {
      std::lock_guard lock(impl_->mu);
      for (Entry* e : sel.entries) {
        if (e->dropped) continue;  // dropped since the selection: acquire() skips it too
        if (e->problem.empty() &&
            (e->meta().row_count == 0 ||
             (e->key.is_null ? pred.covers_null()
                             : e->meta().min_value && e->meta().max_value &&
                                   pred.covers(*e->meta().min_value, *e->meta().max_value)))) {
          covered.push_back({e, e->meta().row_count, e->meta_stamp});
        } else {
          rest.push_back(e);
        }
      }
    }
    // A read-only instance is not the writer: a file another process changed since its metadata
    // was read is counted by DuckDB (one stat per partition, outside the lock).
    const bool read_only = impl_->options.read_only;
    int64_t answered = 0;
    bool changed = false;
    for (const Covered& c : covered) {
      if (read_only && (!c.stamp || stamp_of(c.e->file) != *c.stamp)) {
        rest.push_back(c.e);
        changed = true;
        continue;
      }
      from_meta += c.rows;
      ++answered;
    }
    if (changed) {  // in period order, like every selection
      std::sort(rest.begin(), rest.end(),
                [](const Entry* a, const Entry* b) { return a->key < b->key; });
    }
    {
      std::lock_guard lock(impl_->mu);
      impl_->counters.partitions_counted_from_metadata += answered;
    }
    if (rest.empty()) return from_meta;
    sel.entries = std::move(rest);
  }
  auto pins = impl_->acquire(sel.entries, &sel.stats);
  if (pins.entries().empty()) return from_meta;
  auto conn = impl_->pool().take();
  std::vector<Value> params;
  try {
    const std::string sql = count_sql(q, Impl::count_source(store, pins.entries(), q), params);
    auto rows = run_rows(
        conn->prepared_read(impl_->read_key(sql, pins.entries()), sql, "", reads_use(schema)),
        params);
    return from_meta + (rows.empty() ? 0 : rows[0].values[0].get<int64_t>());
  } catch (const Error& err) {
    Impl::rethrow_reading(err, pins.entries());
  }
}

namespace {

// XXH3-128 of a file, as 32 hex digits.

// Copies `from` to `to` through a temporary file (fsync, rename, fsync directory).
void copy_file_atomically(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp";
  std::error_code ec;
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(ErrorCode::kIo,
                fmt::format("cannot copy '{}' to '{}': {}", from, tmp, ec.message()));
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced || std::rename(tmp.c_str(), to.c_str()) != 0) {
    fs::remove(tmp, ec);
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}' (disk full?)", to));
  }
  const int dfd = ::open(fs::path(to).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

namespace {

// Whether `e` is no longer the partition state `since` recorded (restore_partition's and
// drop_partition's compare-and-swap; impl_->mu held): a commit, restore, compaction or drop since,
// or it was closed here since (another process could have written it then). A token of an absent
// partition: an entry that is open or was committed to (not the placeholder a restore made).
bool changed_since(const PartitionedDataRepository::PartitionBackup& since, const Entry& e) {
  if (since.source_file.empty()) return e.attached || e.meta().commit_version > 0;
  return since.name != e.name || since.source_file != e.file ||
         since.commit_version != e.meta().commit_version || since.file_epoch != e.file_epoch ||
         !e.attached || since.attach_generation != e.attach_generation;
}

}  // namespace

void PartitionedDataRepository::drop_partition(const Schema& schema,
                                               const std::string& partition_name,
                                               const PartitionBackup* unchanged_since) {
  if (impl_->options.read_only) {
    throw Error(ErrorCode::kInvalidArgument,
                "the partition store is open read-only; drop is refused");
  }
  Store& store = impl_->store_for(schema);
  Entry* e = nullptr;
  try {
    e = impl_->entry_named(store, partition_name);
  } catch (const Error& err) {
    if (err.code() != ErrorCode::kNotFound || !unchanged_since) throw;
    throw Error(ErrorCode::kConflict,
                fmt::format("partition {} was dropped since it was looked at", partition_name));
  }
  // After a compaction of the partition that runs: its swap would bring the file back.
  std::lock_guard compacting(e->compact_mu);
  std::lock_guard wlock(e->write_mu);
  {
    std::lock_guard lock(impl_->mu);
    if (e->dropped) {
      if (unchanged_since) {
        throw Error(ErrorCode::kConflict,
                    fmt::format("partition {} was dropped since it was looked at", e->name));
      }
      return;
    }
    if (unchanged_since && changed_since(*unchanged_since, *e)) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} changed since it was looked at (commit version {} "
                              "then, {} now): it was not dropped",
                              e->name, unchanged_since->commit_version, e->meta().commit_version));
    }
    try {
      impl_->retry_locked_locked(*e);  // another process holds the file: kLocked, nothing deleted
    } catch (const Error& err) {
      if (err.code() == ErrorCode::kLocked) throw;  // (a damaged file may be dropped)
    }
    if (e->pins > 0) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} is in use by a running query or stream; retry when it "
                              "ends",
                              partition_name));
    }
    impl_->detach_locked(*e);
    if (e->attached) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} could not be closed", partition_name));
    }
    e->dropped = true;
    e->file_epoch = next_file_epoch();
    auto it = store.entries.find(e->key);
    store.graveyard.push_back(std::move(it->second));
    store.entries.erase(it);
  }
  impl_->drop_idmap(*e);  // its memory (without mu, taken after idmap_mu by lookups)
  std::error_code ec;
  // The id filter first: left behind by a kill, it could match a partition of the same name made
  // again later up to the same commit version, and hide that partition's ids from get_by_id.
  fs::remove(store.dir + "/" + kIdIndexDir + "/" + e->name + ".bloom", ec);
  fs::remove(e->file, ec);
  if (ec) {
    throw Error(ErrorCode::kIo, fmt::format("cannot delete '{}': {}", e->file, ec.message()));
  }
  fs::remove(e->file + ".wal", ec);
  const int dfd = ::open(store.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

PartitionedDataRepository::PartitionBackup PartitionedDataRepository::backup_partition(
    const Schema& schema, const std::string& partition_name, const std::string& dir) {
  Store& store = impl_->store_for(schema);
  Entry* e = impl_->entry_named(store, partition_name);
  // A backup inside the partition directory would be no copy at all (in the table's own
  // directory it is the partition file itself, deleted with it by a clean-up), or would replace
  // another table's partition of the same name.
  {
    std::error_code ec1, ec2;
    const fs::path base =
        fs::weakly_canonical(fs::absolute(impl_->config.base_partition_path), ec1);
    const fs::path target = fs::weakly_canonical(fs::absolute(dir), ec2);
    if (!ec1 && !ec2) {
      const fs::path rel = (target / "").lexically_relative(base / "");
      if (!rel.empty() && *rel.begin() != "..") {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("backup directory '{}' is inside the partition directory '{}': "
                                "a backup there is not a copy (it can replace a partition file, "
                                "or be deleted with one); choose a directory outside it",
                                dir, impl_->config.base_partition_path));
      }
    }
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw Error(ErrorCode::kIo,
                fmt::format("cannot create backup directory '{}': {}", dir, ec.message()));
  // Pin first, then the write lock (the order writers use; a compaction draining this partition
  // waits for pins while not holding the write lock).
  auto pins = impl_->acquire({e}, nullptr);
  std::lock_guard wlock(e->write_mu);  // no commit to this partition during the copy
  if (pins.entries().empty()) {
    throw Error(ErrorCode::kNotFound, fmt::format("partition {} was dropped", partition_name));
  }
  if (!impl_->options.read_only) {
    // Fold the write-ahead log into the file so that the file alone is the partition. A reader's
    // open transaction can make CHECKPOINT fail for a moment: retry.
    auto conn = impl_->pool().take();
    for (int attempt = 0;; ++attempt) {
      try {
        conn->exec(fmt::format("CHECKPOINT {}", duck::quote_ident(e->alias)), e->file);
        break;
      } catch (const Error&) {
        if (attempt >= 100) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  PartitionBackup b;
  b.name = e->name;
  b.source_file = e->file;
  b.backup_file = (fs::path(dir) / e->key.file_name()).string();
  copy_file_atomically(e->file, b.backup_file);
  b.bytes = fs::file_size(b.backup_file);
  b.xxh3_128 = file_checksum_xxh3(b.backup_file);
  b.rows = e->meta().row_count;
  {
    std::lock_guard lock(impl_->mu);
    b.commit_version = e->meta().commit_version;
    b.file_epoch = e->file_epoch;
    b.attach_generation = e->attach_generation;
  }
  return b;
}

PartitionedDataRepository::PartitionBackup PartitionedDataRepository::partition_state(
    const Schema& schema, const std::string& partition_name) {
  Store& store = impl_->store_for(schema);
  PartitionBackup b;
  b.name = partition_name;
  Entry* e = nullptr;
  try {
    e = impl_->entry_named(store, partition_name);
  } catch (const Error& err) {
    if (err.code() == ErrorCode::kNotFound) return b;  // absent (source_file empty)
    throw;
  }
  auto pins = impl_->acquire({e}, nullptr);  // opened: another process cannot write it now
  if (pins.entries().empty()) return b;      // dropped meanwhile: absent
  std::lock_guard lock(impl_->mu);
  b.name = e->name;
  b.source_file = e->file;
  b.rows = e->meta().row_count;
  b.commit_version = e->meta().commit_version;
  b.file_epoch = e->file_epoch;
  b.attach_generation = e->attach_generation;
  return b;
}

PartitionKey PartitionedDataRepository::check_backup(const Schema& schema,
                                                     const std::string& backup_file) {
  if (!fs::exists(backup_file)) {
    throw Error(ErrorCode::kNotFound, fmt::format("backup file '{}' does not exist", backup_file));
  }
  const PartitionStrategy strategy = strategy_of(schema);
  PartitionKey key;
  std::vector<DataRecord> rows;
  // Without a metadata row (a copy of the template that no commit reached): the table's columns
  // and rows, checked below.
  std::vector<DataRecord> cols;
  int64_t unwritten_rows = 0;
  try {
    duck::Database db = duck::Database::open(backup_file, /*read_only=*/true);
    duck::Connection c = db.connect();
    duck::Result r =
        c.query(fmt::format("SELECT schema_json, strategy, period, row_count, min_value, "
                            "max_value FROM main.{}",
                            kMetaTable),
                backup_file);
    duck::ChunkDecoder dec(r);
    while (auto chunk = r.fetch()) dec.decode(chunk, rows);
    if (rows.empty()) {
      duck::Result cr = c.query(
          fmt::format("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND "
                      "table_name = {} ORDER BY column_index",
                      duck::quote_literal(schema.name())),
          backup_file);
      duck::ChunkDecoder cdec(cr);
      while (auto chunk = cr.fetch()) cdec.decode(chunk, cols);
      if (!cols.empty()) {
        unwritten_rows = c.query_int(
            fmt::format("SELECT count(*) FROM main.{}", duck::quote_ident(schema.name())),
            backup_file);
      }
    }
  } catch (const Error& err) {
    throw Error(ErrorCode::kCorruption,
                fmt::format("backup '{}' is not a readable duckpart partition: {}", backup_file,
                            err.what()));
  }
  if (rows.empty()) {
    // The empty partition of the file's name (its metadata row is written once it is in
    // place), if it is one of this table's and holds no rows.
    bool same = cols.size() == schema.columns().size();
    for (std::size_t i = 0; same && i < cols.size(); ++i) {
      same = cols[i].values.at(0).get<std::string>() == schema.columns()[i].name;
    }
    auto parsed = parse_partition_name(fs::path(backup_file).filename().string());
    if (!same || unwritten_rows != 0 || !parsed || parsed->strategy != strategy) {
      throw Error(ErrorCode::kCorruption,
                  fmt::format("backup '{}' has no metadata row, and it is not an empty {} "
                              "partition of table '{}' named for its period ({} rows, {})",
                              backup_file, strategy_name(strategy), schema.name(), unwritten_rows,
                              same ? "the table's columns" : "other columns"));
    }
    key = *parsed;
  } else {
    if (rows.size() != 1) {
      throw Error(ErrorCode::kCorruption,
                  fmt::format("backup '{}' has no partition metadata", backup_file));
    }
    const Schema stored = Schema::from_json(rows[0].values[0].get<std::string>());
    if (!stored.same_layout(schema)) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("backup '{}' belongs to another table or layout ({}), not '{}'",
                              backup_file, stored.name(), schema.name()));
    }
    if (rows[0].values[1].get<std::string>() != strategy_name(strategy)) {
      throw Error(
          ErrorCode::kConflict,
          fmt::format("backup '{}' was written with the {} strategy; the store is {}", backup_file,
                      rows[0].values[1].get<std::string>(), strategy_name(strategy)));
    }
    // An empty period: a partition made from the template that was never committed to (empty);
    // the backup file's name gives its period.
    const std::string& period = rows[0].values[2].get<std::string>();
    auto parsed = period.empty() ? parse_partition_name(fs::path(backup_file).filename().string())
                                 : parse_partition_name("partition_" + period);
    if (!parsed) {
      throw Error(ErrorCode::kCorruption,
                  period.empty() ? fmt::format("backup '{}' has no period in its metadata and its "
                                               "file name is not a partition's",
                                               backup_file)
                                 : fmt::format("backup '{}' names an invalid period", backup_file));
    }
    if (period.empty()) {
      const auto& v = rows[0].values;
      const bool inside =
          v[3].get<int64_t>() == 0 || (!v[4].is_null() && !v[5].is_null() && !parsed->is_null &&
                                       v[4].get<Timestamp>().micros >= parsed->start_ts().micros &&
                                       v[5].get<Timestamp>().micros < parsed->end_ts().micros);
      if (parsed->strategy != strategy || !inside) {
        throw Error(ErrorCode::kCorruption,
                    fmt::format("backup '{}' has no period in its metadata, and its name is not "
                                "a {} partition's or its rows lie outside that period",
                                backup_file, strategy_name(strategy)));
      }
    }
    key = *parsed;
  }
  key.strategy = strategy;
  return key;
}

void PartitionedDataRepository::restore_partition(const Schema& schema,
                                                  const std::string& backup_file,
                                                  const PartitionBackup* unchanged_since) {
  if (impl_->options.read_only) {
    throw Error(ErrorCode::kInvalidArgument,
                "the partition store is open read-only; restore is refused");
  }
  // Check the backup before touching the store.
  const PartitionKey key = check_backup(schema, backup_file);
  // Not drained first: a restore is how a partition that fails every drain is repaired; buffered
  // rows for it are committed into the restored file afterwards.
  Store& store = impl_->store_for(schema, /*drain=*/false);
  Impl::settle_reaper(store);  // no emptied log may outlive the file it was committed to
  Entry* e = nullptr;
  {
    std::lock_guard lock(impl_->mu);
    auto it = store.entries.find(key);
    if (it == store.entries.end()) {
      if (unchanged_since && !unchanged_since->source_file.empty()) {
        throw Error(ErrorCode::kConflict,
                    fmt::format("partition {} was dropped since the copy its replacement was "
                                "built from: nothing was restored",
                                key.name()));
      }
      auto made = impl_->make_entry(store, key);
      std::error_code fec;
      // (A log alone may be a crashed drop's: deleted below, as for any restore.)
      if (unchanged_since && fs::exists(made->file, fec)) {
        // (Not loaded here: another process created it since this one listed the directory.)
        throw Error(ErrorCode::kConflict,
                    fmt::format("partition {} was created since its replacement was built (its "
                                "file '{}' appeared, written by another process): it was left "
                                "unchanged",
                                key.name(), made->file));
      }
      it = store.entries.emplace(key, std::move(made)).first;
      it->second->problem = "being restored";
    } else if (unchanged_since && unchanged_since->source_file.empty()) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} was created since its replacement was built (it did "
                              "not exist then): it was left unchanged",
                              key.name()));
    }
    e = it->second.get();
  }
  // Stage next to the target (same file system), then swap under the partition's exclusive lock.
  const std::string staged = store.dir + "/." + key.file_name() + ".restore";
  // After a compaction of the partition that runs: its swap would put the old rows back over
  // the restored file.
  std::lock_guard compacting(e->compact_mu);
  const StagingLock staging_lock = StagingLock::shared(store.dir);
  copy_file_atomically(backup_file, staged);
  std::lock_guard wlock(e->write_mu);
  std::lock_guard lock(impl_->mu);
  if (e->dropped) {  // dropped while this restore waited: its entry is no longer the partition's
    std::error_code ec;
    fs::remove(staged, ec);
    throw Error(ErrorCode::kConflict,
                fmt::format("partition {} was dropped while this restore waited for it; run the "
                            "restore again (nothing was changed)",
                            e->name));
  }
  // (Also while it stayed attached since: DuckDB's lock on the file kept other processes out.)
  if (unchanged_since && changed_since(*unchanged_since, *e)) {
    std::error_code ec;
    fs::remove(staged, ec);
    throw Error(ErrorCode::kConflict,
                unchanged_since->source_file.empty()
                    ? fmt::format("partition {} was created since its replacement was built "
                                  "(it did not exist then): it was left unchanged",
                                  e->name)
                    : fmt::format("partition {} changed since {} (commit version {} then, {} now): "
                                  "it was left unchanged",
                                  e->name,
                                  unchanged_since->backup_file.empty()
                                      ? "it was looked at"
                                      : "the copy its replacement was built from",
                                  unchanged_since->commit_version, e->meta().commit_version));
  }
  if (e->locked_elsewhere) {
    // Another process held its file when it was loaded: replacing the file (and its write-ahead
    // log) under that process would corrupt it. Refused while it is held; a file that opens but
    // is damaged is what a restore repairs.
    try {
      impl_->retry_locked_locked(*e);
    } catch (const Error& err) {
      if (err.code() == ErrorCode::kLocked) {
        std::error_code ec;
        fs::remove(staged, ec);
        throw;
      }
    }
  }
  if (e->pins > 0) {
    std::error_code ec;
    fs::remove(staged, ec);
    throw Error(
        ErrorCode::kConflict,
        fmt::format("partition {} is in use by a running query or stream; retry when it ends",
                    e->name));
  }
  impl_->detach_locked(*e);
  std::error_code ec;
  if (e->attached) {  // DuckDB still holds the file: replacing it under DuckDB would corrupt it
    fs::remove(staged, ec);
    throw Error(ErrorCode::kConflict,
                fmt::format("partition {} could not be closed; it was left unchanged", e->name));
  }
  // The id filter goes before the file is replaced: it is checked against the commit version
  // alone, which the restored file may share with the old one, so a kill between the two would
  // otherwise leave a filter that hides the restored file's ids from get_by_id. (Not saved again
  // meanwhile: that needs write_mu, held here.)
  {
    std::lock_guard block(e->bloom_mu);
    set_bloom(store, *e, nullptr, -1);
  }
  // A partition that did not exist (a token of an absent one) must not have been created by
  // another process during the copy: its file, and its log, are not this restore's to replace.
  const bool must_be_new = unchanged_since && unchanged_since->source_file.empty();
  auto created_elsewhere = [&] {
    fs::remove(staged, ec);
    return Error(ErrorCode::kConflict,
                 fmt::format("partition {} was created since its replacement was built (its file "
                             "'{}' appeared, written by another process): it was left unchanged",
                             e->name, e->file));
  };
  if (must_be_new && fs::exists(e->file, ec)) throw created_elsewhere();
  fs::remove(store.dir + "/" + kIdIndexDir + "/" + e->name + ".bloom", ec);
  fs::remove(e->file + ".wal", ec);
  // (RENAME_NOREPLACE closes the window between that check and the rename where the file system
  // has it.)
  int renamed = 0;
  if (must_be_new) {
    renamed = ::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, e->file.c_str(), RENAME_NOREPLACE);
    if (renamed != 0 && errno == EEXIST) throw created_elsewhere();
    if (renamed != 0 && (errno == EINVAL || errno == ENOSYS)) {  // not supported there
      renamed = std::rename(staged.c_str(), e->file.c_str());
    }
  } else {
    renamed = std::rename(staged.c_str(), e->file.c_str());
  }
  if (renamed != 0) {
    fs::remove(staged, ec);
    throw Error(ErrorCode::kIo, fmt::format("cannot replace '{}'", e->file));
  }
  e->file_epoch = next_file_epoch();
  e->problem.clear();
  e->locked_elsewhere = false;
  e->set_meta(PartitionMeta{});
  try {
    impl_->verify_entry_locked(store, *e);
  } catch (const Error& err) {
    // Another process opened the restored file at once: not usable until it is read.
    if (err.code() == ErrorCode::kLocked) {
      e->problem = err.what();
      e->locked_elsewhere = true;
    }
    throw;
  }
  impl_->trim_locked();
}

namespace {

uint64_t file_bytes(const std::string& file) {
  std::error_code ec;
  uint64_t n = 0;
  if (auto sz = fs::file_size(file, ec); !ec) n += sz;
  if (auto sz = fs::file_size(file + ".wal", ec); !ec) n += sz;
  return n;
}

}  // namespace

PartitionedDataRepository::CompactResult PartitionedDataRepository::compact_partition(
    const Schema& schema, const std::string& partition_name, int block_size_kb) {
  if (impl_->options.read_only) {
    throw Error(ErrorCode::kInvalidArgument,
                "the partition store is open read-only; compact is refused");
  }
  check_compact_block_size_kb(block_size_kb);
  Store& store = impl_->store_for(schema);
  Entry* e = impl_->entry_named(store, partition_name);
  // One compaction of a partition at a time: they share its staged files, and an older copy
  // renamed over a newer one would be swapped in as current.
  std::lock_guard compacting(e->compact_mu);
  CompactResult res;
  res.name = e->name;
  res.file = e->file;
  res.bytes_before = file_bytes(e->file);
  const std::string staged = store.dir + "/." + fs::path(e->file).filename().string() + ".compact";
  const StagingLock staging_lock = StagingLock::shared(store.dir);
  const std::string staged_alias = "compact_" + e->alias;
  std::error_code ec;
  const std::string table = duck::quote_ident(schema.name());
  const std::string context = fmt::format("compacting partition {} ('{}')", e->name, e->file);

  // Copies the partition, sorted, into `staged` and verifies the copy; returns the partition's
  // commit version it copied. Holds write_mu (no commit during the copy). `drained`: the caller
  // holds the partition drained (no new request may pin it) and this copy may still pin it.
  // Into `path`, with blocks of `kb` KB.
  // The partition's commit version and file (a restore replaces it) that a copy was made of.
  struct Copied {
    int64_t version = 0;
    uint64_t epoch = 0;
  };
  auto remove_staged = [&](const std::string& path) {
    fs::remove(path, ec);
    fs::remove(path + ".wal", ec);
  };
  auto copy = [&](bool drained, int kb, const std::string& path) -> Copied {
    std::lock_guard wlock(e->write_mu);
    remove_staged(path);
    auto pins = impl_->acquire({e}, nullptr, drained ? e : nullptr);
    if (pins.entries().empty()) {
      throw Error(ErrorCode::kNotFound, fmt::format("partition {} was dropped", partition_name));
    }
    Copied made;
    {
      std::lock_guard lock(impl_->mu);
      made.version = e->meta().commit_version;
      made.epoch = e->file_epoch;
    }
    {
      // A new, empty database file with the block size asked for, made outside mu by an
      // instance of its own (DuckDB writes and syncs its headers), then attached below.
      duck::Database maker = duck::Database::open("", false, {}, duck::Extensions::kOnFirstUse);
      duck::Connection c = maker.connect();
      c.exec(fmt::format("ATTACH {} AS new_file (BLOCK_SIZE {})", duck::quote_literal(path),
                         kb * 1024),
             context, duck::Uses::kBuiltinsOnly);
      c.exec("DETACH new_file", context, duck::Uses::kBuiltinsOnly);
    }
    attach_database(path, staged_alias, /*read_only=*/false);
    struct Detach {
      PartitionedDataRepository* repo;
      std::string alias;
      ~Detach() { repo->detach_database(alias); }
    } detach{this, staged_alias};
    auto conn = impl_->pool().take();
    const std::string from = duck::quote_ident(e->alias);
    const std::string to = duck::quote_ident(staged_alias);
    std::string order = duck::quote_ident(schema.partition_column());
    if (schema.id_index())
      order += ", " + duck::quote_ident(schema.columns()[*schema.id_index()].name);
    conn->exec("BEGIN", context);
    try {
      for (const char* t : {kMetaTable, kBatchesTable}) {
        conn->exec(
            fmt::format("CREATE TABLE {}.main.{} AS SELECT * FROM {}.main.{}", to, t, from, t),
            context);
      }
      conn->exec(create_table_sql(staged_alias, schema, false), context);
      conn->exec(fmt::format("INSERT INTO {}.main.{} SELECT * FROM {}.main.{} ORDER BY {}", to,
                             table, from, table, order),
                 context);
      conn->exec("COMMIT", context);
    } catch (...) {
      try {
        conn->exec("ROLLBACK");
      } catch (...) {
      }
      throw;
    }
    const std::string check =
        fmt::format("SELECT count(*)::VARCHAR || '/' || {} FROM ", checksum_sql(schema));
    auto one = [&](const std::string& alias) {
      auto rows = run_rows(*conn, check + alias + ".main." + table, {});
      return rows.at(0).values.at(0).to_string();
    };
    const std::string before = one(from);
    const std::string after = one(to);
    if (before != after) {
      throw Error(
          ErrorCode::kCorruption,
          fmt::format("{}: the rewritten copy does not verify (rows/checksum {} vs {}); the "
                      "partition was left unchanged",
                      context, before, after));
    }
    res.rows = std::stoll(before.substr(0, before.find('/')));
    return made;
  };  // the staged file is checkpointed and closed when `detach` goes

  // 1. Copy while readers and writers go on. Automatic block size: a small partition is copied
  //    with 256 KB and with 16 KB blocks and the smaller file kept.
  int kb = block_size_kb != 0 ? block_size_kb : 256;
  Copied copied;
  const std::string small = staged + "16";
  try {
    copied = copy(false, kb, staged);
    if (block_size_kb == 0 && file_bytes(staged) <= 4 * 1024 * 1024) {
      const Copied small_copy = copy(false, 16, small);
      if (file_bytes(small) < file_bytes(staged)) {
        if (std::rename(small.c_str(), staged.c_str()) != 0) {
          throw Error(ErrorCode::kIo, fmt::format("cannot rename '{}' to '{}': {}", small, staged,
                                                  std::strerror(errno)));
        }
        kb = 16;
        copied = small_copy;
      }
      remove_staged(small);
    }
  } catch (...) {
    remove_staged(small);
    remove_staged(staged);
    throw;
  }
  res.block_size_kb = kb;
  // 2. Drain: new requests for this partition wait; running ones (writers included — they pin
  //    before they take write_mu) finish. Then nothing can change the partition.
  auto undrain = [&] {
    std::lock_guard lock(impl_->mu);
    e->draining = false;
    impl_->pins_cv.notify_all();
  };
  {
    std::unique_lock lock(impl_->mu);
    e->draining = true;
    if (!impl_->pins_cv.wait_for(lock, std::chrono::seconds(60), [&] { return e->pins == 0; })) {
      e->draining = false;
      impl_->pins_cv.notify_all();
      lock.unlock();
      remove_staged(staged);
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} stayed in use by a query for a minute; compact it "
                              "again later (it was left unchanged)",
                              e->name));
    }
  }
  try {
    // 3. A commit landed between the copy and the drain: copy again (nothing can commit now).
    int64_t version_now = 0;
    {
      std::lock_guard lock(impl_->mu);
      version_now = e->meta().commit_version;
    }
    if (version_now != copied.version) copied = copy(true, kb, staged);
    fsync_path(staged, false);
    // 4. Swap.
    std::lock_guard wlock(e->write_mu);
    std::lock_guard lock(impl_->mu);
    // Dropped or restored since the copy (drop and restore wait for compact_mu; this guards any
    // other path): the copy is of a file that is no longer the partition.
    if (e->dropped) {
      throw Error(ErrorCode::kNotFound,
                  fmt::format("partition {} was dropped while it was being compacted; the "
                              "compacted copy was discarded",
                              e->name));
    }
    if (e->file_epoch != copied.epoch) {
      throw Error(ErrorCode::kConflict,
                  fmt::format("partition {} was replaced (restored) while it was being "
                              "compacted; it was left as it is now: compact it again",
                              e->name));
    }
    impl_->detach_locked(*e);
    if (e->attached || fs::exists(e->file + ".wal")) {
      throw Error(
          ErrorCode::kConflict,
          fmt::format("partition {} could not be closed cleanly; it was left unchanged", e->name));
    }
    if (std::rename(staged.c_str(), e->file.c_str()) != 0) {
      throw Error(ErrorCode::kIo, fmt::format("cannot replace '{}'", e->file));
    }
    e->file_epoch =
        next_file_epoch();  // same rows, same commit version, another order: id maps are rebuilt
    fsync_path(store.dir, true);
  } catch (...) {
    remove_staged(staged);
    undrain();
    throw;
  }
  undrain();
  res.bytes_after = file_bytes(e->file);
  return res;
}

int64_t PartitionedDataRepository::unsorted_pairs(const Schema& schema,
                                                  const std::string& partition_name) {
  Store& store = impl_->store_for(schema);
  Entry* e = impl_->entry_named(store, partition_name);
  auto pins = impl_->acquire({e}, nullptr);
  if (pins.entries().empty()) return 0;
  auto conn = impl_->pool().take();
  const std::string col = duck::quote_ident(schema.partition_column());
  return conn->query_int(
      fmt::format("SELECT count(*) FILTER (WHERE v < pv) FROM (SELECT {} AS v, lag({}) OVER "
                  "(ORDER BY rowid) AS pv FROM {}.main.{})",
                  col, col, duck::quote_ident(e->alias), duck::quote_ident(schema.name())),
      fmt::format("partition {} ('{}')", e->name, e->file));
}

int64_t PartitionedDataRepository::export_partition_parquet(const Schema& schema,
                                                            const std::string& partition_name,
                                                            const std::string& dir) {
  Store& store = impl_->store_for(schema);
  Entry* e = impl_->entry_named(store, partition_name);
  auto pins = impl_->acquire({e}, nullptr);
  if (pins.entries().empty()) return 0;
  auto conn = impl_->pool().take();
  const std::string col = duck::quote_ident(schema.partition_column());
  std::string parts = fmt::format("strftime({}, '%Y') AS year", col);
  std::string by = "year";
  if (e->key.strategy != PartitionStrategy::kYearly) {
    parts += fmt::format(", strftime({}, '%m') AS month", col);
    by += ", month";
  }
  if (e->key.strategy == PartitionStrategy::kDaily) {
    parts += fmt::format(", strftime({}, '%d') AS day", col);
    by += ", day";
  }
  const std::string context =
      fmt::format("exporting partition {} ('{}') to '{}'", e->name, e->file, dir);
  return conn->query_int(
      fmt::format("COPY (SELECT *, {} FROM {}.main.{}) TO {} (FORMAT parquet, PARTITION_BY ({}), "
                  "OVERWRITE_OR_IGNORE true, FILENAME_PATTERN {})",
                  parts, duck::quote_ident(e->alias), duck::quote_ident(schema.name()),
                  duck::quote_literal(dir), by, duck::quote_literal(e->name + "_{i}")),
      context);
}

bool PartitionedDataRepository::read_only() const noexcept { return impl_->options.read_only; }

RepositoryCounters PartitionedDataRepository::counters() const {
  std::lock_guard lock(impl_->mu);
  RepositoryCounters c = impl_->counters;
  c.id_map_bytes = static_cast<int64_t>(impl_->idmap_total.load());
  c.duckdb_started = impl_->duck_started.load(std::memory_order_acquire);
  c.duckdb_extensions_loaded = c.duckdb_started && impl_->hub_.extensions_loaded();
  return c;
}

namespace {

// A loaded table's statistics from its entries (under Impl::mu).
SchemaStatistics statistics_of_locked(const std::string& name, const Store& store) {
  SchemaStatistics ss;
  ss.schema = name;
  ss.directory = store.dir;
  ss.problems = store.problems;
  for (const auto& [key, e] : store.entries) {
    PartitionStatistics p;
    p.name = e->name;
    p.file = e->file;
    if (!key.is_null) {
      p.period_start = key.start();
      p.period_end = key.end();
    }
    p.rows = e->meta().row_count;
    const FileStamp st = stamp_of(e->file);
    p.bytes =
        static_cast<uint64_t>(std::max<int64_t>(st.size, 0) + std::max<int64_t>(st.wal_size, 0));
    p.modified_unix = st.mtime_ns / 1'000'000'000;
    if (e->meta().min_value) p.min_value = Timestamp{*e->meta().min_value};
    if (e->meta().max_value) p.max_value = Timestamp{*e->meta().max_value};
    p.attached = e->attached;
    p.problem = e->problem;
    p.locked = e->locked_elsewhere;
    ss.total_rows += p.rows;
    ss.total_bytes += p.bytes;
    ss.partitions.push_back(std::move(p));
  }
  return ss;
}

}  // namespace

PartitionStrategy PartitionedDataRepository::strategy_of(const Schema& schema) {
  return impl_->store_for(schema, /*drain=*/false).strategy;
}

SchemaStatistics PartitionedDataRepository::table_statistics(const Schema& schema) {
  // This table alone: another table's state (locked or damaged files, pending logs) is not this
  // command's concern.
  Store& store = impl_->store_for(schema, /*drain=*/false);
  if (!impl_->options.read_only) {
    if (store.ingest.replay_pending.load()) impl_->replay_ingest(store);
    if (store.ingest.rows.load() > 0) impl_->drain_ingest(store);
    Impl::settle_reaper(store);
  }
  std::lock_guard lock(impl_->mu);
  return statistics_of_locked(schema.name(), store);
}

StorageStatistics PartitionedDataRepository::get_partition_statistics() {
  StorageStatistics s;
  s.kind = "partitioned";
  // A table that cannot be opened as configured (another strategy or layout) is listed with why.
  std::vector<SchemaStatistics> refused;
  for (const auto& name : list_schemas()) {
    bool loaded = false;
    {
      std::lock_guard lock(impl_->mu);
      loaded = impl_->stores.count(name) > 0;
    }
    if (loaded) continue;
    try {
      impl_->store_for(load_schema(name));
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kConflict) throw;
      SchemaStatistics ss;
      ss.schema = name;
      ss.directory = impl_->base_dir + "/" + name;
      ss.problems.push_back(e.what());
      refused.push_back(std::move(ss));
    }
  }
  if (!impl_->options.read_only) impl_->drain_all_ingest();
  std::lock_guard lock(impl_->mu);
  for (auto& [name, store] : impl_->stores) s.schemas.push_back(statistics_of_locked(name, *store));
  for (SchemaStatistics& ss : refused) s.schemas.push_back(std::move(ss));
  std::sort(
      s.schemas.begin(), s.schemas.end(),
      [](const SchemaStatistics& a, const SchemaStatistics& b) { return a.schema < b.schema; });
  s.counters = impl_->counters;
  s.counters.id_map_bytes = static_cast<int64_t>(impl_->idmap_total.load());
  return s;
}

void PartitionedDataRepository::flush() {
  if (!impl_->options.read_only) impl_->drain_all_ingest();
  // Checkpoint the attached partitions first, on the write threads (best effort: a reader's open
  // transaction can make one fail, and DETACH below checkpoints it then): DETACH, which runs one
  // partition at a time under the repository lock, then has nothing left to compress and write.
  if (!impl_->options.read_only) {
    std::vector<Entry*> attached;
    {
      std::lock_guard lock(impl_->mu);
      for (auto& [name, s] : impl_->stores) {
        for (auto& [k, e] : s->entries) {
          if (e->attached && e->problem.empty() && !e->dropped) attached.push_back(e.get());
        }
      }
    }
    try {
      auto pins = impl_->acquire(attached, nullptr);
      const std::vector<Entry*>& pinned = pins.entries();
      const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
      const std::size_t nthreads = std::min<std::size_t>(
          pinned.size(), impl_->config.write_threads > 0
                             ? static_cast<std::size_t>(impl_->config.write_threads)
                             : hw);
      const Impl::SingleThreadScope single_thread(*impl_, static_cast<unsigned>(nthreads));
      std::atomic<std::size_t> next{0};
      auto work = [&] {
        auto conn = impl_->pool().take();
        for (std::size_t i = next++; i < pinned.size(); i = next++) {
          Entry* e = pinned[i];
          std::lock_guard wlock(e->write_mu);  // pinned first, then the write lock
          try {
            conn->exec(fmt::format("CHECKPOINT {}", duck::quote_ident(e->alias)), e->file);
          } catch (const Error&) {
          }
        }
      };
      std::vector<std::thread> threads;
      for (std::size_t t = 1; t < nthreads; ++t) threads.emplace_back(work);
      work();
      for (auto& t : threads) t.join();
    } catch (const Error&) {
      // A partition became unusable meanwhile: the detach loop below reports nothing either.
    }
  }
  std::vector<Store*> stores;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [name, s] : impl_->stores) {
      stores.push_back(s.get());
      for (auto& [k, e] : s->entries) impl_->detach_locked(*e);
    }
  }
  if (impl_->options.read_only) return;
  std::lock_guard clock(impl_->catalog_mu);
  for (Store* s : stores) {
    std::vector<Entry*> entries;
    {
      std::lock_guard lock(impl_->mu);
      for (auto& [k, e] : s->entries) entries.push_back(e.get());
    }
    Catalog cat;
    cat.strategy = std::string(strategy_name(s->strategy));
    for (Entry* e : entries) {
      std::lock_guard wlock(e->write_mu);
      {
        std::lock_guard lock(impl_->mu);
        // A copy of the template not yet committed to stays out: the next open verifies it and
        // writes its period.
        // (Nor one dropped since it was listed: its filter would outlive its file.)
        if (!e->problem.empty() || e->placeholder_meta || e->dropped) continue;
        cat.entries.push_back(CatalogEntry{e->key.file_name(), e->meta(), stamp_of(e->file)});
      }
      std::lock_guard block(e->bloom_mu);
      if (e->bloom && e->bloom_dirty && e->probe.filter_version == e->meta().commit_version) {
        std::error_code ec;
        fs::create_directories(s->dir + "/" + kIdIndexDir, ec);
        if (e->bloom->save(s->dir + "/" + kIdIndexDir + "/" + e->name + ".bloom",
                           e->probe.filter_version)) {
          e->bloom_dirty = false;
        }
      }
    }
    std::error_code ec;
    if (fs::exists(s->dir, ec)) write_catalog(s->dir, cat, s->schema);
  }
}

}  // namespace duckpart
