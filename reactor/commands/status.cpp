// `etcd-sync status`: the instances' rows (the leader and every standby), the checkpoint, etcd's
// revision and the etcd_wal counts.

#include "reactor/commands/command_support.hpp"
#include "reactor/commands/commands.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/commands/status_report.hpp"
#include "reactor/config/durations.hpp"
#include "reactor/keys/keys.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

namespace etcd_sync {

namespace {

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

/// Cell `column` of row `row` as JSON text, or null.
nlohmann::json text_cell(const PgResult& r, int row, int column) {
  return r.is_null(row, column) ? nlohmann::json() : nlohmann::json(std::string(r.text(row, column)));
}
nlohmann::json int_cell(const PgResult& r, int row, int column) {
  return r.is_null(row, column) ? nlohmann::json() : nlohmann::json(r.int64(row, column));
}

/// The peers instance row `row` could not reach at its last heartbeat: {"etcd": {"since": ...,
/// "endpoint": ...}, ...}, an empty object when it reached both.
nlohmann::ordered_json unreachable_peers(const PgResult& r, int row) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (auto [name, column] : {std::pair<const char*, int>{"etcd", 20}, std::pair<const char*, int>{"postgresql", 22}}) {
    if (r.is_null(row, column)) continue;
    out[name]["since"] = text_cell(r, row, column);
    out[name]["endpoint"] = text_cell(r, row, column + 1);
  }
  return out;
}

// The instances' rows: 0 instance_id, 1 state, 2 host, 3 pid, 4 version, 5 started_at,
// 6 heartbeat_at, 7 stopped_at, 8 heartbeat age (s), 9 mirror_state, 10 outbox_state,
// 11 events_applied, 12 conflicts_resolved, 13 resyncs, 14 last_error, 15 last_error_at, 16 role,
// 17 ha_state, 18 epoch, 19 leader_since, 20 etcd_unreachable_since, 21 etcd_unreachable_endpoint,
// 22 postgresql_unreachable_since, 23 postgresql_unreachable_endpoint.
const char* const kInstancesQuery =
    "SELECT instance_id, state, host, pid, version, started_at, heartbeat_at, stopped_at, "
    "  extract(epoch FROM now() - heartbeat_at), mirror_state, outbox_state, events_applied, conflicts_resolved, "
    "  resyncs, last_error, last_error_at, role, ha_state, epoch, leader_since, etcd_unreachable_since, "
    "  etcd_unreachable_endpoint, postgresql_unreachable_since, postgresql_unreachable_endpoint "
    "FROM etcd_sync_service ORDER BY heartbeat_at DESC NULLS LAST, instance_id";

/// The report from what was read: `instances` (kInstancesQuery), `totals` (checkpoint and counts),
/// `leader` (the epoch row), etcd's revision or the error reaching it. A plain function.
nlohmann::ordered_json build_report(const Config& config, const PgResult& instances, const PgResult& totals,
                                    const PgResult& leader, const nlohmann::json& etcd_revision,
                                    const nlohmann::json& etcd_error, const std::string& pg_endpoint,
                                    const PgResult& rollbacks) {
  nlohmann::ordered_json out;
  // The row `service` shows: the live leader's; else the freshest.
  int shown = instances.rows() > 0 ? 0 : -1;
  const std::string leader_id = leader.rows() > 0 ? std::string(leader.text(0, 1)) : std::string();
  nlohmann::ordered_json live = nlohmann::ordered_json::array();
  std::int64_t events = 0, conflicts = 0, resyncs = 0;
  for (int i = 0; i < instances.rows(); ++i) {
    events += instances.int64(i, 11, 0);
    conflicts += instances.int64(i, 12, 0);
    resyncs += instances.int64(i, 13, 0);
    auto age = instances.is_null(i, 8) ? std::optional<double>() : std::stod(std::string(instances.text(i, 8)));
    auto alive = liveness(instances.optional_text(i, 1), age);
    if (!alive.running) continue;
    const std::string id(instances.text(i, 0));
    const bool leads = id == leader_id && instances.optional_text(i, 16).value_or("") == "leader";
    if (leads) shown = i;
    nlohmann::ordered_json entry;
    entry["instance_id"] = id;
    entry["host"] = text_cell(instances, i, 2);
    entry["pid"] = int_cell(instances, i, 3);
    entry["role"] = leads ? "leader" : "standby";
    entry["heartbeat_at"] = text_cell(instances, i, 6);
    entry["ha_state"] = text_cell(instances, i, 17);
    entry["unreachable"] = unreachable_peers(instances, i);
    live.push_back(entry);
  }
  auto& service = out["service"];
  if (shown >= 0) {
    auto age = instances.is_null(shown, 8) ? std::optional<double>() : std::stod(std::string(instances.text(shown, 8)));
    auto alive = liveness(instances.optional_text(shown, 1), age);
    service["running"] = alive.running;
    service["state"] = alive.state;
    service["instance_id"] = text_cell(instances, shown, 0);
    service["host"] = text_cell(instances, shown, 2);
    service["pid"] = int_cell(instances, shown, 3);
    service["version"] = text_cell(instances, shown, 4);
    service["started_at"] = text_cell(instances, shown, 5);
    service["heartbeat_at"] = text_cell(instances, shown, 6);
    service["stopped_at"] = text_cell(instances, shown, 7);
    service["mirror_state"] = text_cell(instances, shown, 9);
    service["outbox_state"] = text_cell(instances, shown, 10);
    // Cut from PostgreSQL, an instance cannot write its heartbeat: a late one says so.
    service["heartbeat_age_s"] = optional_json(age);
    service["unreachable"] = unreachable_peers(instances, shown);
  } else {
    service["running"] = false;
    service["state"] = "never started";
    for (const char* field : {"instance_id", "host", "pid", "version", "started_at", "heartbeat_at", "stopped_at",
                              "mirror_state", "outbox_state", "heartbeat_age_s"})
      service[field] = nullptr;
    service["unreachable"] = nlohmann::ordered_json::object();
  }
  nlohmann::ordered_json sync;
  sync["mirrored_revision"] = int_cell(totals, 0, 0);
  sync["etcd_revision"] = etcd_revision;
  const auto lag = mirror_lag(optional_int(etcd_revision), optional_int(totals, 0), optional_seconds(totals, 1));
  sync["lag_revisions"] = optional_json(lag.revisions);
  sync["lag_seconds"] = optional_json(lag.seconds);
  sync["events_applied"] = events;
  sync["conflicts_resolved"] = conflicts;
  sync["resyncs"] = resyncs;
  sync["rejected_keys"] = totals.int64(0, 6, 0);
  sync["last_error"] = shown >= 0 ? text_cell(instances, shown, 14) : nlohmann::json();
  sync["last_error_at"] = shown >= 0 ? text_cell(instances, shown, 15) : nlohmann::json();
  out["synchronization"] = sync;
  out["wal"]["pending"] = totals.int64(0, 2);
  out["wal"]["success"] = totals.int64(0, 3);
  out["wal"]["conflict"] = totals.int64(0, 4);
  out["wal"]["failed"] = totals.int64(0, 5);
  // etcd going back in time (kRollbacksQuery): shown until the mirror caught up, then as the last.
  auto& rollbacks_out = out["etcd_rollbacks"];
  rollbacks_out["count"] = rollbacks.rows() > 0 ? rollbacks.int64(0, 0) : 0;
  rollbacks_out["catching_up"] = rollbacks.rows() > 0 && rollbacks.is_null(0, 10);
  rollbacks_out["last"] = nullptr;
  if (rollbacks.rows() > 0) {
    nlohmann::ordered_json last;
    last["id"] = int_cell(rollbacks, 0, 1);
    last["detected_at"] = text_cell(rollbacks, 0, 2);
    last["reason"] = text_cell(rollbacks, 0, 3);
    last["old_cluster_id"] = text_cell(rollbacks, 0, 4);
    last["new_cluster_id"] = text_cell(rollbacks, 0, 5);
    last["checkpoint"] = int_cell(rollbacks, 0, 6);
    last["etcd_revision"] = int_cell(rollbacks, 0, 7);
    last["kept_through"] = int_cell(rollbacks, 0, 8);
    last["rows_abandoned"] = int_cell(rollbacks, 0, 9);
    last["caught_up_at"] = text_cell(rollbacks, 0, 10);
    rollbacks_out["last"] = last;
  }
  auto& ha = out["ha"];
  ha["leader"] = nullptr;
  for (const auto& entry : live) {
    if (entry["role"] != "leader") continue;
    nlohmann::ordered_json l;
    l["instance_id"] = entry["instance_id"];
    l["host"] = entry["host"];
    l["pid"] = entry["pid"];
    l["since"] = text_cell(leader, 0, 2);
    l["epoch"] = int_cell(leader, 0, 0);
    ha["leader"] = l;
  }
  ha["instances"] = live;
  ha["election_prefix"] = config.ha.election_prefix;
  auto& history = out["history"];
  history["keep_versions"] = config.history.keep_versions;
  history["keep_for"] = format_duration(config.history.keep_for);
  out["etcd"]["endpoints"] = config.etcd.endpoints;
  out["etcd"]["prefix"] = config.etcd.prefix;
  out["etcd"]["error"] = etcd_error;
  out["postgresql"]["endpoint"] = pg_endpoint;
  out["postgresql"]["schema"] = config.postgresql.schema;
  return out;
}

// The prefix's etcd rollbacks: 0 count, 1 id, 2 detected_at, 3 reason, 4 old_cluster_id,
// 5 new_cluster_id, 6 checkpoint, 7 etcd_revision, 8 kept_through, 9 rows_abandoned, 10 caught_up_at
// (of the last one).
const char* const kRollbacksQuery =
    "SELECT count(*) OVER (), id, detected_at, reason, old_cluster_id, new_cluster_id, checkpoint, etcd_revision, "
    "  kept_through, rows_abandoned, caught_up_at FROM etcd_sync_rollbacks WHERE prefix = $1 ORDER BY id DESC LIMIT 1";

asio::awaitable<nlohmann::ordered_json> collect_status(asio::io_context& io, GrpcBridge& bridge, const Config& config) {
  PgConnection pg(io, config.postgresql.conninfo, "status", config.postgresql.request_timeout);
  co_await open_database(pg, config);
  const auto prefix = effective_prefix(config.etcd.prefix);
  auto instances = co_await pg.query(kInstancesQuery);
  auto totals = co_await pg.query(
      "SELECT (SELECT revision FROM etcd_sync_checkpoint WHERE prefix = $1), "
      "  (SELECT extract(epoch FROM now() - updated_at) FROM etcd_sync_checkpoint WHERE prefix = $1), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'pending'), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'success'), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'conflict'), "
      "  (SELECT count(*) FROM etcd_wal WHERE status = 'failed'), "
      "  (SELECT count(*) FROM etcd_sync_rejected)",
      pg_params(PgParam::text(prefix)));
  auto leader = co_await pg.query("SELECT epoch, instance_id, since FROM etcd_sync_leader WHERE prefix = $1",
                                  pg_params(PgParam::text(prefix)));
  auto rollbacks = co_await pg.query(kRollbacksQuery, pg_params(PgParam::text(prefix)));
  nlohmann::json etcd_revision;
  nlohmann::json etcd_error;
  try {
    EtcdClient etcd(bridge, etcd_options(config.etcd));
    co_await etcd.connect();
    etcd_revision = (co_await etcd.status()).header().revision();
  } catch (const SyncError& e) {
    etcd_error = e.what();
  }
  co_return build_report(config, instances, totals, leader, etcd_revision, etcd_error, pg.endpoint(), rollbacks);
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
  for (const auto& [peer, down] : svc["unreachable"].items())
    out += "unreachable  " + peer + " at " + v(down["endpoint"]) + " since " + v(down["since"]) + "\n";
  out += "revisions    mirrored " + v(sync["mirrored_revision"]) + ", etcd " + v(sync["etcd_revision"]) + ", lag " +
         v(sync["lag_revisions"]) + " revisions / " + v(sync["lag_seconds"]) + " s\n";
  out += "applied      " + v(sync["events_applied"]) + " events, " + v(sync["resyncs"]) + " resyncs, " +
         v(sync["rejected_keys"]) + " rejected keys\n";
  out += "etcd_wal     pending " + v(wal["pending"]) + ", success " + v(wal["success"]) + ", conflict " +
         v(wal["conflict"]) + ", failed " + v(wal["failed"]) + "; conflicts resolved " + v(sync["conflicts_resolved"]) + "\n";
  out += "last error   " + v(sync["last_error"]) + (sync["last_error_at"].is_null() ? "" : " at " + v(sync["last_error_at"])) + "\n";
  if (const auto& last = s["etcd_rollbacks"]["last"]; !last.is_null()) {
    out += std::string(s["etcd_rollbacks"]["catching_up"].get<bool>() ? "ETCD WENT BACK " : "etcd went back ") +
           v(last["detected_at"]) + ": " + v(last["reason"]) + "; cluster " + v(last["old_cluster_id"]) + " -> " +
           v(last["new_cluster_id"]) + ", checkpoint " + v(last["checkpoint"]) + ", etcd revision " +
           v(last["etcd_revision"]) + "; " + v(last["rows_abandoned"]) + " rows above revision " +
           v(last["kept_through"]) + " in etcd_abandoned; caught up " +
           (last["caught_up_at"].is_null() ? std::string("not yet") : v(last["caught_up_at"])) + " (" +
           v(s["etcd_rollbacks"]["count"]) + " in all)\n";
  }
  const auto& ha = s["ha"];
  if (ha["leader"].is_null()) {
    out += "leader       none\n";
  } else {
    const auto& l = ha["leader"];
    out += "leader       " + v(l["instance_id"]) + " on " + v(l["host"]) + " pid " + v(l["pid"]) + ", epoch " + v(l["epoch"]) +
           ", since " + v(l["since"]) + "\n";
  }
  for (const auto& i : ha["instances"]) {
    out += "instance     " + v(i["instance_id"]) + " " + v(i["role"]) + " on " + v(i["host"]) + " pid " + v(i["pid"]) +
           ", heartbeat " + v(i["heartbeat_at"]);
    for (const auto& [peer, down] : i["unreachable"].items()) out += ", " + peer + " unreachable since " + v(down["since"]);
    out += "\n";
  }
  out += "history      keep_versions " + v(s["history"]["keep_versions"]) + ", keep_for " + v(s["history"]["keep_for"]) +
         " (0: no limit)\n";
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
