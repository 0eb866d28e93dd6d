// `etcd-sync validate [--fix]`: etcd under the prefix against the mirror's latest rows, at one
// revision, walking both sides page by page in key order.

#include "reactor/commands/command_support.hpp"
#include "reactor/commands/commands.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/keys/keys.hpp"
#include "reactor/mirror/mirror.hpp"

#include <nlohmann/json.hpp>

namespace etcd_sync {

namespace {

struct Entry {
  std::string key;
  std::string value;
  std::int64_t revision = 0;
};

/// Walks etcd under the prefix at `revision`, page by page (sized by bytes), sorted by key,
/// leaving out etcd-sync's own keys under `own_prefix` ([ha] election_prefix), which are never
/// mirrored.
class EtcdPages {
 public:
  EtcdPages(EtcdClient& etcd, const std::string& prefix, std::string own_prefix, std::int64_t revision)
      : etcd_(etcd), own_prefix_(std::move(own_prefix)) {
    auto range = prefix_range(prefix);
    request_.set_key(range.key);
    request_.set_range_end(range.range_end);
    request_.set_revision(revision);
    request_.set_limit(kRangeFirstPageKeys);
  }
  asio::awaitable<std::optional<Entry>> next() {
    if (index_ >= page_.size()) {
      if (done_) co_return std::nullopt;
      auto response = co_await etcd_.range(request_);
      page_.clear();
      index_ = 0;
      for (const auto& kv : response.kvs())
        if (own_prefix_.empty() || !kv.key().starts_with(own_prefix_)) page_.push_back({kv.key(), kv.value(), kv.mod_revision()});
      if (!response.more() || response.kvs().empty()) {
        done_ = true;
      } else {
        request_.set_key(response.kvs(response.kvs_size() - 1).key() + '\0');
        request_.set_limit(next_range_page_limit(response.ByteSizeLong(), response.kvs_size()));
      }
      if (page_.empty()) {
        if (done_) co_return std::nullopt;
        co_return co_await next();  // a page of own keys only
      }
    }
    std::optional<Entry> entry = std::move(page_[index_++]);
    co_return entry;
  }

 private:
  EtcdClient& etcd_;
  std::string own_prefix_;
  etcdserverpb::RangeRequest request_;
  std::vector<Entry> page_;
  std::size_t index_ = 0;
  bool done_ = false;
};

/// Walks the mirror's latest live row per key with revision <= `revision`, sorted by key bytes,
/// through one cursor: the rows are sorted once for the whole walk. (A query per page would sort
/// again for every page unless the database's collation is C, and take minutes on a million keys.)
class MirrorPages {
 public:
  MirrorPages(PgConnection& pg, std::string prefix, std::int64_t revision)
      : pg_(pg), prefix_(std::move(prefix)), revision_(revision) {}
  asio::awaitable<std::optional<Entry>> next() {
    if (index_ >= page_.size()) {
      if (done_) co_return std::nullopt;
      if (!open_) {
        co_await pg_.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        co_await pg_.query(
            "DECLARE etcd_sync_validate NO SCROLL CURSOR FOR "
            "SELECT k, value, value_bytes, revision FROM ("
            "  SELECT DISTINCT ON (key COLLATE \"C\") key COLLATE \"C\" AS k, value, value_bytes, revision, tombstone"
            "    FROM etcd WHERE ($1 = '' OR starts_with(key, $1)) AND revision <= $2::bigint"
            "   ORDER BY key COLLATE \"C\", revision DESC) latest "
            "WHERE NOT tombstone ORDER BY k",
            pg_params(PgParam::text(prefix_), PgParam::int64(revision_)));
        open_ = true;
      }
      auto r = co_await pg_.query("FETCH FORWARD " + std::to_string(kFetchRows) + " FROM etcd_sync_validate");
      page_.clear();
      index_ = 0;
      for (int i = 0; i < r.rows(); ++i) page_.push_back(entry(r, i));
      if (r.rows() < kFetchRows) {
        done_ = true;
        co_await pg_.query("COMMIT");  // closes the cursor
      }
      if (page_.empty()) co_return std::nullopt;
    }
    std::optional<Entry> entry = std::move(page_[index_++]);
    co_return entry;
  }

 private:
  // A plain function, not coroutine code: g++ 12 miscompiles a ?: that yields class temporaries
  // inside a coroutine body (we read uninitialized strings).
  static Entry entry(const PgResult& r, int i) {
    return {std::string(r.text(i, 0)), r.is_null(i, 1) ? r.bytea(i, 2) : std::string(r.text(i, 1)), r.int64(i, 3)};
  }

  static constexpr int kFetchRows = 1000;  ///< rows per FETCH: memory bounded by one page
  PgConnection& pg_;
  std::string prefix_;
  std::int64_t revision_;
  std::vector<Entry> page_;
  std::size_t index_ = 0;
  bool open_ = false;
  bool done_ = false;
};

/// One walk of both sides in key order. Owned on the heap and driven by member coroutines: the
/// cursors must not live in a coroutine frame (g++ 12 mishandles such locals created after a
/// co_await: we saw them read as uninitialized memory).
class Comparison {
 public:
  Comparison(PgConnection& pg, EtcdClient& etcd, const Config& config, std::int64_t revision)
      : left_(etcd, config.etcd.prefix, config.ha.election_prefix, revision), right_(pg, effective_prefix(config.etcd.prefix), revision) {}

  /// Prints each difference; returns how many there were.
  asio::awaitable<std::int64_t> run() {
    a_ = co_await left_.next();
    b_ = co_await right_.next();
    while (a_ || b_) {
      if (a_ && (!b_ || a_->key < b_->key)) {
        report("missing", a_->key, "in etcd at mod_revision " + std::to_string(a_->revision) + ", not in the mirror");
        a_ = co_await left_.next();
      } else if (b_ && (!a_ || b_->key < a_->key)) {
        report("extra", b_->key, "in the mirror at revision " + std::to_string(b_->revision) + ", not in etcd");
        b_ = co_await right_.next();
      } else {
        if (a_->value != b_->value || a_->revision != b_->revision)
          report("different", a_->key,
                 "etcd mod_revision " + std::to_string(a_->revision) + ", mirror revision " +
                     std::to_string(b_->revision) + (a_->value != b_->value ? ", values differ" : ", values equal"));  // coroutine-safe: const char* arms
        a_ = co_await left_.next();
        b_ = co_await right_.next();
      }
    }
    co_return differences_;
  }

 private:
  void report(const char* what, const std::string& key, const std::string& detail) {
    ++differences_;
    std::cout << what << "\t" << nlohmann::json(key).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\t" << detail << "\n";
  }

  EtcdPages left_;
  MirrorPages right_;
  std::optional<Entry> a_, b_;
  std::int64_t differences_ = 0;
};

/// Compares at the mirror's checkpoint revision (stored in `at`); returns the number of differences.
asio::awaitable<std::int64_t> compare(PgConnection& pg, EtcdClient& etcd, const Config& config, std::int64_t& at) {
  auto checkpoint = co_await pg.query("SELECT revision FROM etcd_sync_checkpoint WHERE prefix = $1",
                                      pg_params(PgParam::text(effective_prefix(config.etcd.prefix))));
  if (checkpoint.rows() == 0)
    throw SyncError(ErrorKind::permanent, "the mirror has no checkpoint yet: run etcd-sync start first");
  at = checkpoint.int64(0, 0);
  auto comparison = std::make_unique<Comparison>(pg, etcd, config, at);
  co_return co_await comparison->run();
}

}  // namespace

int command_validate(const Config& config, bool fix) {
  asio::io_context io;
  GrpcBridge bridge(io);
  return run_command(io, [&]() -> asio::awaitable<int> {
    PgConnection pg(io, config.postgresql.conninfo, "validate", config.postgresql.request_timeout);
    co_await open_database(pg, config);
    EtcdClient etcd(bridge, etcd_options(config.etcd));
    co_await etcd.connect();
    std::int64_t at = 0;
    auto differences = co_await compare(pg, etcd, config, at);
    std::cout << differences << " difference(s) under prefix " << config.etcd.prefix << " at revision " << at << "\n";
    if (differences == 0) co_return exit_ok;
    if (!fix) co_return 1;
    SyncStats stats;
    Mirror mirror(io, std::make_shared<const Config>(config), etcd, stats);
    auto revision = co_await mirror.resync_once();
    differences = co_await compare(pg, etcd, config, at);
    std::cout << "resynchronized at revision " << revision << "; " << differences << " difference(s) remain\n";
    co_return differences == 0 ? exit_ok : 1;  // coroutine-safe: int arms
  });
}

}  // namespace etcd_sync
