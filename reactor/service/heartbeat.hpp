#pragma once
// The heartbeat: this instance's row of etcd_sync_service, which `etcd-sync status` reads (state,
// host, pid, role, the engines' states, counters, last error), written every second on the
// listener's connection. The leader's heartbeat is fenced like its other writes.

#include "adapters/pg_connection.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"

#include <functional>
#include <optional>
#include <string>

namespace etcd_sync {

/// What the heartbeat records besides the counters.
struct InstanceFacts {
  std::string instance_id;
  std::string mirror_state = "off";  ///< e.g. "watching"; "off" on a standby or without the mirror
  std::string outbox_state = "off";
  std::string role = "standby";      ///< leader | standby
  std::string ha_state;              ///< campaigning | standby | leader | demoting | backing_off
  std::optional<LeaderTerm> term;    ///< while leading: the epoch, and the fence of the heartbeat
};
using DescribeInstance = std::function<InstanceFacts()>;

/// The upsert of this instance's row that records `state` ("starting", "running", "stopped") with
/// `facts` and the counters accumulated since the last beat (stats.pending_*). A plain function
/// (g++ 12 and temporaries in co_await expressions: see pg_params()).
PgStatement heartbeat_statement(const char* state, const SyncStats& stats, const InstanceFacts& facts);

/// Writes one heartbeat on `pg` (fenced while leading) and zeroes the counters it carried. Throws
/// SyncError (fenced when another instance has taken over).
asio::awaitable<void> write_heartbeat(PgConnection& pg, const char* state, SyncStats& stats,
                                      const DescribeInstance& describe);

/// Counts etcd_wal's pending and failed rows into stats (the etcd_sync_wal_rows gauge), along the
/// partial indexes on status. Throws SyncError.
asio::awaitable<void> count_wal_rows(PgConnection& pg, SyncStats& stats);

}  // namespace etcd_sync
