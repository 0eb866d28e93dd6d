#include "reactor/service/heartbeat.hpp"

#include "reactor/engine/host.hpp"

#include <unistd.h>

namespace etcd_sync {

namespace {
std::vector<PgStatement> heartbeat_statements(const char* state, const SyncStats& stats, const InstanceFacts& facts) {
  std::vector<PgStatement> statements;
  statements.push_back(heartbeat_statement(state, stats, facts));
  if (facts.term) statements.push_back(fence_statement(*facts.term));
  return statements;
}
}  // namespace

PgStatement heartbeat_statement(const char* state, const SyncStats& stats, const InstanceFacts& facts) {
  return {
      "INSERT INTO etcd_sync_service AS s (instance_id, state, host, pid, version, started_at, heartbeat_at, "
      "  etcd_revision, mirror_state, outbox_state, events_applied, resyncs, last_error, last_error_at, stopped_at, "
      "  role, ha_state, epoch, leader_since, etcd_unreachable_since, etcd_unreachable_endpoint, "
      "  postgresql_unreachable_since, postgresql_unreachable_endpoint) "
      "VALUES ($11, $1, $2, $3::int, $4, CASE WHEN $1 = 'starting' THEN now() END, now(), nullif($5::bigint, 0), "
      "  $6, $7, $8::bigint, $9::bigint, nullif($10, ''), CASE WHEN $10 <> '' THEN now() END, "
      "  CASE WHEN $1 = 'stopped' THEN now() END, $12, $13, nullif($14::bigint, 0), "
      "  CASE WHEN $12 = 'leader' THEN now() END, "
      "  CASE WHEN $15::bigint > 0 THEN to_timestamp($15::bigint / 1000.0) END, nullif($16, ''), "
      "  CASE WHEN $17::bigint > 0 THEN to_timestamp($17::bigint / 1000.0) END, nullif($18, '')) "
      "ON CONFLICT (instance_id) DO UPDATE SET state = EXCLUDED.state, host = EXCLUDED.host, pid = EXCLUDED.pid, "
      "  version = EXCLUDED.version, heartbeat_at = now(), "
      "  started_at = coalesce(EXCLUDED.started_at, s.started_at), "
      "  stopped_at = EXCLUDED.stopped_at, "
      "  etcd_revision = coalesce(EXCLUDED.etcd_revision, s.etcd_revision), "
      "  mirror_state = EXCLUDED.mirror_state, outbox_state = EXCLUDED.outbox_state, "
      "  events_applied = s.events_applied + EXCLUDED.events_applied, resyncs = s.resyncs + EXCLUDED.resyncs, "
      "  last_error = coalesce(EXCLUDED.last_error, s.last_error), "
      "  last_error_at = CASE WHEN EXCLUDED.last_error IS NOT NULL AND EXCLUDED.last_error IS DISTINCT FROM s.last_error "
      "                  THEN now() ELSE s.last_error_at END, "
      "  role = EXCLUDED.role, ha_state = EXCLUDED.ha_state, epoch = EXCLUDED.epoch, "
      "  leader_since = CASE WHEN EXCLUDED.role <> 'leader' THEN NULL "
      "                      WHEN s.role = 'leader' AND s.epoch IS NOT DISTINCT FROM EXCLUDED.epoch THEN s.leader_since "
      "                      ELSE now() END, "
      "  etcd_unreachable_since = EXCLUDED.etcd_unreachable_since, etcd_unreachable_endpoint = EXCLUDED.etcd_unreachable_endpoint, "
      "  postgresql_unreachable_since = EXCLUDED.postgresql_unreachable_since, "
      "  postgresql_unreachable_endpoint = EXCLUDED.postgresql_unreachable_endpoint",
      {PgParam::text(state), PgParam::text(host_name()), PgParam::int64(getpid()), PgParam::text(ETCD_SYNC_VERSION),
       PgParam::int64(stats.etcd_revision), PgParam::text(facts.mirror_state), PgParam::text(facts.outbox_state),
       PgParam::int64(stats.pending_events), PgParam::int64(stats.pending_resyncs), PgParam::text(stats.last_error),
       PgParam::text(facts.instance_id), PgParam::text(facts.role), PgParam::text(facts.ha_state),
       PgParam::int64(facts.term ? facts.term->epoch : 0), PgParam::int64(stats.etcd.failing_since_unix_ms),
       PgParam::text(stats.etcd.failing > 0 ? stats.etcd.endpoint : std::string()),
       PgParam::int64(stats.postgresql.failing_since_unix_ms),
       PgParam::text(stats.postgresql.failing > 0 ? stats.postgresql.endpoint : std::string())},
      true};
}

asio::awaitable<void> write_heartbeat(PgConnection& pg, const char* state, SyncStats& stats,
                                      const DescribeInstance& describe) {
  auto statements = heartbeat_statements(state, stats, describe());
  co_await pg.pipeline(std::move(statements));
  stats.pending_events = 0;
  stats.pending_resyncs = 0;
}

asio::awaitable<void> count_wal_rows(PgConnection& pg, SyncStats& stats) {
  auto result = co_await pg.query(
      "SELECT (SELECT count(*) FROM etcd_wal WHERE status = 'pending'), "
      "       (SELECT count(*) FROM etcd_wal WHERE status = 'failed')");
  stats.wal_pending_rows = result.int64(0, 0);
  stats.wal_failed_rows = result.int64(0, 1);
  stats.wal_rows_known = true;
}

}  // namespace etcd_sync
