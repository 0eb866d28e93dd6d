#include "reactor/service/heartbeat.hpp"

#include <unistd.h>

namespace etcd_sync {

namespace {
std::string host_name() {
  char buffer[256] = {};
  gethostname(buffer, sizeof buffer - 1);
  return buffer;
}
}  // namespace

PgStatement heartbeat_statement(const char* state, const SyncStats& stats,
                                const std::pair<std::string, std::string>& engines) {
  return {
      "INSERT INTO etcd_sync_service AS s (id, state, host, pid, version, started_at, heartbeat_at, etcd_revision, "
      "  mirror_state, outbox_state, events_applied, resyncs, last_error, last_error_at, stopped_at) "
      "VALUES (1, $1, $2, $3::int, $4, CASE WHEN $1 = 'starting' THEN now() END, now(), nullif($5::bigint, 0), "
      "  $6, $7, $8::bigint, $9::bigint, nullif($10, ''), CASE WHEN $10 <> '' THEN now() END, "
      "  CASE WHEN $1 = 'stopped' THEN now() END) "
      "ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, host = EXCLUDED.host, pid = EXCLUDED.pid, "
      "  version = EXCLUDED.version, heartbeat_at = now(), "
      "  started_at = coalesce(EXCLUDED.started_at, s.started_at), "
      "  stopped_at = EXCLUDED.stopped_at, "
      "  etcd_revision = coalesce(EXCLUDED.etcd_revision, s.etcd_revision), "
      "  mirror_state = EXCLUDED.mirror_state, outbox_state = EXCLUDED.outbox_state, "
      "  events_applied = s.events_applied + EXCLUDED.events_applied, resyncs = s.resyncs + EXCLUDED.resyncs, "
      "  last_error = coalesce(EXCLUDED.last_error, s.last_error), "
      "  last_error_at = CASE WHEN EXCLUDED.last_error IS NOT NULL AND EXCLUDED.last_error IS DISTINCT FROM s.last_error "
      "                  THEN now() ELSE s.last_error_at END",
      {PgParam::text(state), PgParam::text(host_name()), PgParam::int64(getpid()), PgParam::text(ETCD_SYNC_VERSION),
       PgParam::int64(stats.etcd_revision), PgParam::text(engines.first), PgParam::text(engines.second),
       PgParam::int64(stats.pending_events), PgParam::int64(stats.pending_resyncs), PgParam::text(stats.last_error)},
      true};
}

asio::awaitable<void> write_heartbeat(PgConnection& pg, const char* state, SyncStats& stats,
                                      const DescribeEngines& describe) {
  std::vector<PgStatement> statements;
  statements.push_back(heartbeat_statement(state, stats, describe()));
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
