#include "reactor/commands.hpp"

#include "adapters/etcd_client.hpp"
#include "adapters/grpc_bridge.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/keys.hpp"
#include "reactor/logging.hpp"
#include "reactor/migrations.hpp"
#include "reactor/mirror.hpp"
#include "reactor/service.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <iostream>

namespace etcd_sync {

namespace {

/// Runs `body` (a coroutine returning an exit code) on a fresh io_context; SyncErrors map to exit codes.
template <class Body>
int run_command(asio::io_context& io, Body body) {
  int code = exit_runtime;
  asio::co_spawn(io, body(), [&](std::exception_ptr failure, int result) {
    code = result;
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const SyncError& e) {
      std::cerr << "etcd-sync: " << e.what() << "\n";
      code = exit_code_for(e);
    } catch (const std::exception& e) {
      std::cerr << "etcd-sync: " << e.what() << "\n";
      code = exit_runtime;
    }
  });
  io.run();
  return code;
}

asio::awaitable<void> open(PgConnection& pg, const Config& config) {
  co_await pg.connect(config.etcd.dial_timeout);
  co_await use_schema(pg, config.postgresql.schema, false);
}

}  // namespace

int command_config_validate(const ConfigLoad& load) {
  if (!load.ok()) {
    for (const auto& e : load.errors) std::cerr << e.to_string() << "\n";
    std::cerr << load.errors.size() << (load.errors.size() == 1 ? " error" : " errors") << "\n";
    return exit_config;
  }
  std::cout << "ok: " << (load.config.source_file.empty() ? std::string("defaults") : load.config.source_file)
            << " is valid\n";
  return exit_ok;
}

int command_migrate(const Config& config) {
  asio::io_context io;
  return run_command(io, [&]() -> asio::awaitable<int> {
    PgConnection pg(io, config.postgresql.conninfo, "migrate");
    co_await pg.connect(config.etcd.dial_timeout);
    int applied = co_await migrate(pg, config.postgresql.schema);
    std::cout << (applied == 0 ? std::string("schema is up to date")
                               : "applied " + std::to_string(applied) + " migration(s)")
              << " in schema " << config.postgresql.schema << "\n";
    co_return exit_ok;
  });
}

int command_sync_force(const Config& config) {
  asio::io_context io;
  return run_command(io, [&]() -> asio::awaitable<int> {
    PgConnection pg(io, config.postgresql.conninfo, "sync");
    co_await open(pg, config);
    auto result = co_await pg.query(
        "UPDATE etcd_wal SET status = 'pending', retry_count = 0, next_attempt_at = NULL, applied_at = NULL "
        "WHERE status = 'failed'");
    std::cout << "requeued " << result.affected() << " failed row(s)\n";
    co_return exit_ok;
  });
}

namespace {

/// A bigint cell as JSON, null when NULL. Not inline in the coroutine below: g++ 12 mishandles a
/// ?: of class temporaries inside coroutine bodies.
nlohmann::json nullable_int(const PgResult& r, int column) {
  return r.is_null(0, column) ? nlohmann::json() : nlohmann::json(r.int64(0, column));
}

asio::awaitable<nlohmann::ordered_json> collect_status(asio::io_context& io, GrpcBridge& bridge, const Config& config) {
  PgConnection pg(io, config.postgresql.conninfo, "status");
  co_await open(pg, config);
  auto r = co_await pg.query(
      "SELECT s.state, s.host, s.pid, s.version, s.started_at, s.heartbeat_at, s.stopped_at, "
      "  extract(epoch FROM now() - s.heartbeat_at), s.mirror_state, s.outbox_state, s.events_applied, "
      "  s.conflicts_resolved, s.resyncs, s.last_error, s.last_error_at, "
      "  (SELECT revision FROM etcd_sync_checkpoint WHERE prefix = $1), "
      "  (SELECT extract(epoch FROM now() - updated_at) FROM etcd_sync_checkpoint WHERE prefix = $1), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'pending'), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'success'), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'conflict'), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'failed'), "
      "  (SELECT count(*) FROM etcd_sync_rejected) "
      "FROM (SELECT 1) one LEFT JOIN etcd_sync_service s ON s.id = 1",
      pg_params(PgParam::text(effective_prefix(config.etcd.prefix))));
  nlohmann::ordered_json out;
  auto text_or_null = [&](int c) { return r.is_null(0, c) ? nlohmann::json() : nlohmann::json(std::string(r.text(0, c))); };
  std::string state = r.optional_text(0, 0).value_or("never started");
  double heartbeat_age = r.is_null(0, 7) ? 1e9 : std::stod(std::string(r.text(0, 7)));
  bool running = (state == "running" || state == "starting") && heartbeat_age < 10.0;
  if (!running && (state == "running" || state == "starting")) state = "stopped (no heartbeat)";
  auto& service = out["service"];
  service["running"] = running;
  service["state"] = state;
  service["host"] = text_or_null(1);
  service["pid"] = nullable_int(r, 2);
  service["version"] = text_or_null(3);
  service["started_at"] = text_or_null(4);
  service["heartbeat_at"] = text_or_null(5);
  service["stopped_at"] = text_or_null(6);
  service["mirror_state"] = text_or_null(8);
  service["outbox_state"] = text_or_null(9);
  std::int64_t mirrored = r.int64(0, 15, 0);
  nlohmann::json etcd_revision;
  nlohmann::json etcd_error;
  try {
    EtcdClient etcd(bridge, etcd_options(config.etcd));
    co_await etcd.connect();
    etcd_revision = (co_await etcd.status()).header().revision();
  } catch (const SyncError& e) {
    etcd_error = e.what();
  }
  nlohmann::ordered_json sync;
  sync["mirrored_revision"] = nullable_int(r, 15);
  sync["etcd_revision"] = etcd_revision;
  if (etcd_revision.is_number() && !r.is_null(0, 15)) {
    std::int64_t lag = std::max<std::int64_t>(0, etcd_revision.get<std::int64_t>() - mirrored);
    sync["lag_revisions"] = lag;
    sync["lag_seconds"] = lag == 0 ? 0.0 : std::stod(std::string(r.text(0, 16)));
  } else {
    sync["lag_revisions"] = nullptr;
    sync["lag_seconds"] = nullptr;
  }
  sync["events_applied"] = r.int64(0, 10, 0);
  sync["conflicts_resolved"] = r.int64(0, 11, 0);
  sync["resyncs"] = r.int64(0, 12, 0);
  sync["rejected_keys"] = r.int64(0, 21, 0);
  sync["last_error"] = text_or_null(13);
  sync["last_error_at"] = text_or_null(14);
  out["synchronization"] = sync;
  out["wal"]["pending"] = r.int64(0, 17);
  out["wal"]["success"] = r.int64(0, 18);
  out["wal"]["conflict"] = r.int64(0, 19);
  out["wal"]["failed"] = r.int64(0, 20);
  out["etcd"]["endpoints"] = config.etcd.endpoints;
  out["etcd"]["prefix"] = config.etcd.prefix;
  out["etcd"]["error"] = etcd_error;
  out["postgresql"]["endpoint"] = pg.endpoint();
  out["postgresql"]["schema"] = config.postgresql.schema;
  co_return out;
}

std::string text_report(const nlohmann::ordered_json& s) {
  auto v = [](const nlohmann::json& j) { return j.is_null() ? std::string("-") : j.is_string() ? j.get<std::string>() : j.dump(); };
  const auto& svc = s["service"];
  const auto& sync = s["synchronization"];
  const auto& wal = s["wal"];
  std::string out;
  out += "service      " + std::string(svc["running"].get<bool>() ? "running" : "stopped") + " (" + v(svc["state"]) +
         ") on " + v(svc["host"]) + " pid " + v(svc["pid"]) + ", started " + v(svc["started_at"]) + "\n";
  out += "engines      mirror " + v(svc["mirror_state"]) + ", outbox " + v(svc["outbox_state"]) + "\n";
  out += "revisions    mirrored " + v(sync["mirrored_revision"]) + ", etcd " + v(sync["etcd_revision"]) + ", lag " +
         v(sync["lag_revisions"]) + " revisions / " + v(sync["lag_seconds"]) + " s\n";
  out += "applied      " + v(sync["events_applied"]) + " events, " + v(sync["resyncs"]) + " resyncs, " +
         v(sync["rejected_keys"]) + " rejected keys\n";
  out += "etcd_wal     pending " + v(wal["pending"]) + ", success " + v(wal["success"]) + ", conflict " +
         v(wal["conflict"]) + ", failed " + v(wal["failed"]) + "; conflicts resolved " + v(sync["conflicts_resolved"]) + "\n";
  out += "last error   " + v(sync["last_error"]) + (sync["last_error_at"].is_null() ? "" : " at " + v(sync["last_error_at"])) + "\n";
  if (!s["etcd"]["error"].is_null()) out += "etcd         unreachable: " + v(s["etcd"]["error"]) + "\n";
  return out;
}

}  // namespace

int command_status(const Config& config, bool json, bool watch, double interval_seconds) {
  asio::io_context io;
  GrpcBridge bridge(io);
  return run_command(io, [&]() -> asio::awaitable<int> {
    asio::steady_timer pause(io);
    for (;;) {
      auto report = co_await collect_status(io, bridge, config);
      if (json)
        std::cout << report.dump() << std::endl;
      else
        std::cout << text_report(report) << std::flush;
      if (!watch) co_return exit_ok;
      if (!json) std::cout << "\n";
      pause.expires_after(std::chrono::milliseconds(static_cast<long long>(interval_seconds * 1000)));
      co_await pause.async_wait(asio::use_awaitable);
    }
  });
}

namespace {

struct Entry {
  std::string key;
  std::string value;
  std::int64_t revision = 0;
};

/// Walks etcd under the prefix at `revision`, page by page, sorted by key.
class EtcdPages {
 public:
  EtcdPages(EtcdClient& etcd, const std::string& prefix, std::int64_t revision) : etcd_(etcd) {
    auto range = prefix_range(prefix);
    request_.set_key(range.key);
    request_.set_range_end(range.range_end);
    request_.set_revision(revision);
    request_.set_limit(1000);
  }
  asio::awaitable<std::optional<Entry>> next() {
    if (index_ >= page_.size()) {
      if (done_) co_return std::nullopt;
      auto response = co_await etcd_.range(request_);
      page_.clear();
      index_ = 0;
      for (const auto& kv : response.kvs()) page_.push_back({kv.key(), kv.value(), kv.mod_revision()});
      if (!response.more() || response.kvs().empty()) done_ = true;
      else request_.set_key(response.kvs(response.kvs_size() - 1).key() + '\0');
      if (page_.empty()) co_return std::nullopt;
    }
    std::optional<Entry> entry = std::move(page_[index_++]);
    co_return entry;
  }

 private:
  EtcdClient& etcd_;
  etcdserverpb::RangeRequest request_;
  std::vector<Entry> page_;
  std::size_t index_ = 0;
  bool done_ = false;
};

/// Walks the mirror's latest live row per key with revision <= `revision`, sorted by key bytes.
class MirrorPages {
 public:
  MirrorPages(PgConnection& pg, std::string prefix, std::int64_t revision)
      : pg_(pg), prefix_(std::move(prefix)), revision_(revision) {}
  asio::awaitable<std::optional<Entry>> next() {
    if (index_ >= page_.size()) {
      if (done_) co_return std::nullopt;
      auto r = co_await pg_.query(
          "SELECT k, value, value_bytes, revision FROM ("
          "  SELECT DISTINCT ON (key COLLATE \"C\") key COLLATE \"C\" AS k, value, value_bytes, revision, tombstone"
          "    FROM etcd WHERE ($1 = '' OR starts_with(key, $1)) AND revision <= $2::bigint"
          "     AND ($3::text IS NULL OR key COLLATE \"C\" > $3::text COLLATE \"C\")"
          "   ORDER BY key COLLATE \"C\", revision DESC) latest "
          "WHERE NOT tombstone ORDER BY k LIMIT 1000",
          query_params());
      page_.clear();
      index_ = 0;
      for (int i = 0; i < r.rows(); ++i) page_.push_back(entry(r, i));
      if (r.rows() < 1000) done_ = true;
      if (!page_.empty()) last_ = page_.back().key;
      if (page_.empty()) co_return std::nullopt;
    }
    std::optional<Entry> entry = std::move(page_[index_++]);
    co_return entry;
  }

 private:
  // Plain functions, not coroutine code: g++ 12 miscompiles a ?: that yields class temporaries
  // inside a coroutine body (we read uninitialized strings).
  std::vector<PgParam> query_params() const {
    return pg_params(PgParam::text(prefix_), PgParam::int64(revision_), last_ ? PgParam::text(*last_) : PgParam::null());
  }
  static Entry entry(const PgResult& r, int i) {
    return {std::string(r.text(i, 0)), r.is_null(i, 1) ? r.bytea(i, 2) : std::string(r.text(i, 1)), r.int64(i, 3)};
  }

  PgConnection& pg_;
  std::string prefix_;
  std::int64_t revision_;
  std::optional<std::string> last_;
  std::vector<Entry> page_;
  std::size_t index_ = 0;
  bool done_ = false;
};

/// One walk of both sides in key order. Owned on the heap and driven by member coroutines: the
/// cursors must not live in a coroutine frame (g++ 12 mishandles such locals created after a
/// co_await: we saw them read as uninitialized memory).
class Comparison {
 public:
  Comparison(PgConnection& pg, EtcdClient& etcd, const Config& config, std::int64_t revision)
      : left_(etcd, config.etcd.prefix, revision), right_(pg, effective_prefix(config.etcd.prefix), revision) {}

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
                     std::to_string(b_->revision) + (a_->value != b_->value ? ", values differ" : ", values equal"));
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
    PgConnection pg(io, config.postgresql.conninfo, "validate");
    co_await open(pg, config);
    EtcdClient etcd(bridge, etcd_options(config.etcd));
    co_await etcd.connect();
    std::int64_t at = 0;
    auto differences = co_await compare(pg, etcd, config, at);
    std::cout << differences << " difference(s) under prefix " << config.etcd.prefix << " at revision " << at << "\n";
    if (differences == 0) co_return exit_ok;
    if (!fix) co_return 1;
    SyncStats stats;
    Mirror mirror(io, config, etcd, stats);
    auto revision = co_await mirror.resync_once();
    differences = co_await compare(pg, etcd, config, at);
    std::cout << "resynchronized at revision " << revision << "; " << differences << " difference(s) remain\n";
    co_return differences == 0 ? exit_ok : 1;
  });
}

}  // namespace etcd_sync
