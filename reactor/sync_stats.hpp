#pragma once
// Counters and flags the engines keep on the reactor thread; the heartbeat writes them to
// etcd_sync_service for `etcd-sync status`, and /metrics reads them.

#include <cstdint>
#include <string>

namespace etcd_sync {

struct SyncStats {
  std::int64_t events_applied = 0;    ///< watch events written to `etcd` (puts + deletes)
  std::int64_t puts_applied = 0;
  std::int64_t deletes_applied = 0;
  std::int64_t resyncs = 0;           ///< snapshots taken after a compaction or a lost checkpoint
  std::int64_t wal_success = 0;       ///< etcd_wal outcomes since start
  std::int64_t wal_conflict = 0;
  std::int64_t wal_failed = 0;
  std::int64_t wal_retries = 0;
  std::int64_t conflicts_resolved = 0;
  std::int64_t mirrored_revision = 0;  ///< the checkpoint: every revision <= this is in `etcd`
  std::int64_t etcd_revision = 0;      ///< etcd's revision as last seen in any response header
  bool snapshot_done = false;
  std::string last_error;
  // Unflushed deltas for the heartbeat (added to the persistent counters, then zeroed).
  std::int64_t pending_events = 0;
  std::int64_t pending_resyncs = 0;
  std::int64_t pending_conflicts = 0;
};

}  // namespace etcd_sync
