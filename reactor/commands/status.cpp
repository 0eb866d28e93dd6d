// `etcd-sync status`: the service row, the checkpoint, etcd's revision and the etcd_wal counts.

#include "reactor/commands/command_support.hpp"
#include "reactor/commands/commands.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/commands/status_report.hpp"
#include "reactor/keys/keys.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

namespace etcd_sync {

namespace {

/// A bigint cell as JSON, null when NULL. Not inline in the coroutine below: g++ 12 mishandles a
/// ?: of class temporaries inside coroutine bodies.
nlohmann::json nullable_int(const PgResult& r, int column) {
  return r.is_null(0, column) ? nlohmann::json() : nlohmann::json(r.int64(0, column));
}

/// A seconds cell (an extract(epoch ...)), nullopt when NULL.
std::optional<double> optional_seconds(const PgResult& r, int column) {
  if (r.is_null(0, column)) return std::nullopt;
  return std::stod(std::string(r.text(0, column)));
}

/// A bigint cell, nullopt when NULL; and a JSON number, nullopt when not one.
std::optional<std::int64_t> optional_int(const PgResult& r, int column) {
  if (r.is_null(0, column)) return std::nullopt;
  return r.int64(0, column);
}
std::optional<std::int64_t> optional_int(const nlohmann::json& value) {
  if (!value.is_number()) return std::nullopt;
  return value.get<std::int64_t>();
}

template <class T>
nlohmann::json optional_json(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json();
}

asio::awaitable<nlohmann::ordered_json> collect_status(asio::io_context& io, GrpcBridge& bridge, const Config& config) {
  PgConnection pg(io, config.postgresql.conninfo, "status");
  co_await open_database(pg, config);
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
  const auto live = liveness(r.optional_text(0, 0), optional_seconds(r, 7));
  auto& service = out["service"];
  service["running"] = live.running;
  service["state"] = live.state;
  service["host"] = text_or_null(1);
  service["pid"] = nullable_int(r, 2);
  service["version"] = text_or_null(3);
  service["started_at"] = text_or_null(4);
  service["heartbeat_at"] = text_or_null(5);
  service["stopped_at"] = text_or_null(6);
  service["mirror_state"] = text_or_null(8);
  service["outbox_state"] = text_or_null(9);
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
  const auto lag = mirror_lag(optional_int(etcd_revision), optional_int(r, 15), optional_seconds(r, 16));
  sync["lag_revisions"] = optional_json(lag.revisions);
  sync["lag_seconds"] = optional_json(lag.seconds);
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

}  // namespace etcd_sync
