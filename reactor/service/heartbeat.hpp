#pragma once
// The heartbeat: the row of etcd_sync_service that `etcd-sync status` reads (state, host, pid,
// engines' states, counters, last error), written every second on the listener's connection.

#include "adapters/pg_connection.hpp"
#include "reactor/engine/sync_stats.hpp"

#include <functional>
#include <string>
#include <utility>

namespace etcd_sync {

/// The engines' states as the heartbeat records them: (mirror, outbox), e.g. ("watching", "idle").
using DescribeEngines = std::function<std::pair<std::string, std::string>()>;

/// The upsert that records `state` ("starting", "running", "stopped") with the engines' states and
/// the counters accumulated since the last beat (stats.pending_*). A plain function (g++ 12 and
/// temporaries in co_await expressions: see pg_params()).
PgStatement heartbeat_statement(const char* state, const SyncStats& stats, const std::pair<std::string, std::string>& engines);

/// Writes one heartbeat on `pg` and zeroes the counters it carried. Throws SyncError.
asio::awaitable<void> write_heartbeat(PgConnection& pg, const char* state, SyncStats& stats,
                                      const DescribeEngines& describe);

/// Counts etcd_wal's pending and failed rows into stats (the etcd_sync_wal_rows gauge), along the
/// partial indexes on status. Throws SyncError.
asio::awaitable<void> count_wal_rows(PgConnection& pg, SyncStats& stats);

}  // namespace etcd_sync
