#pragma once
// Counters and flags the engines keep on the reactor thread; the heartbeat writes them to
// etcd_sync_service for `etcd-sync status`, and /metrics reads them.

#include <array>
#include <chrono>
#include <optional>
#include <cstdint>
#include <string>

namespace etcd_sync {

/// A Prometheus histogram of durations in seconds with fixed buckets.
struct LatencyHistogram {
  static constexpr std::array<double, 12> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1.0,  5.0};
  std::array<std::int64_t, bounds.size()> counts{};  ///< per bucket, not cumulative
  std::int64_t count = 0;
  double sum = 0;

  /// Records one duration (seconds).
  void observe(double seconds) {
    ++count;
    sum += seconds;
    for (std::size_t i = 0; i < bounds.size(); ++i)
      if (seconds <= bounds[i]) {
        ++counts[i];
        break;
      }
  }
};

/// How the engines find one peer: up once some engine has worked with it and no engine is failing
/// on it now. EngineStatus keeps the counts.
struct PeerHealth {
  int failing = 0;    ///< engines whose last attempt failed on this peer
  bool seen = false;  ///< some engine has worked with it since the start
  /// Since when some engine has been failing on it (steady clock, for the leader's resign rule);
  /// nullopt while none is.
  std::optional<std::chrono::steady_clock::time_point> failing_since;
  /// The same moment on the wall clock, for status (milliseconds since the Unix epoch; 0 = none).
  std::int64_t failing_since_unix_ms = 0;
  std::string endpoint;      ///< "host:port" of the failure that began the outage, when known
  bool unreachable = false;  ///< that failure was an outage (transient), not a refusal
  /// When an engine last reported work done with it (steady clock; nullopt: never). The outage
  /// really began at the last success, up to a request deadline before it was noticed.
  std::optional<std::chrono::steady_clock::time_point> last_worked;
  bool up() const { return seen && failing == 0; }
  /// How long engines have been failing on it at `now` (zero while none is).
  std::chrono::milliseconds failing_for(std::chrono::steady_clock::time_point now) const {
    if (!failing_since) return std::chrono::milliseconds(0);
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - *failing_since);
  }
};

struct SyncStats {
  std::int64_t events_applied = 0;    ///< watch events written to `etcd` (puts + deletes)
  std::int64_t puts_applied = 0;
  std::int64_t deletes_applied = 0;
  std::int64_t resyncs = 0;           ///< snapshots taken after a compaction or a lost checkpoint
  std::int64_t etcd_rollbacks = 0;    ///< times etcd was found gone back in time (restored)
  std::int64_t postgresql_rollbacks = 0;  ///< times PostgreSQL was found gone back in time
  std::int64_t wal_success = 0;       ///< etcd_wal outcomes since start
  std::int64_t wal_conflict = 0;
  std::int64_t wal_failed = 0;
  std::int64_t wal_retries = 0;
  std::int64_t conflicts_resolved = 0;
  std::int64_t mirrored_revision = 0;  ///< the checkpoint: every revision <= this is in `etcd`
  std::int64_t etcd_revision = 0;      ///< etcd's revision as last seen in any response header
  bool snapshot_done = false;
  bool is_leader = false;           ///< this instance leads now (etcd_sync_leader)
  std::int64_t leader_changes = 0;  ///< times this instance became or stopped being the leader
  std::int64_t fenced = 0;          ///< times a write of this instance was fenced (another led)
  std::int64_t history_pruned = 0;  ///< rows of `etcd` deleted by [history] pruning
  PeerHealth etcd;        ///< etcd_sync_connection_up{peer="etcd"}
  PeerHealth postgresql;  ///< etcd_sync_connection_up{peer="postgresql"}
  LatencyHistogram mirror_apply_seconds;  ///< one watch batch: PostgreSQL transaction time
  LatencyHistogram wal_apply_seconds;     ///< one etcd Txn carrying etcd_wal rows: round trip
  bool wal_rows_known = false;        ///< the two counts below have been read at least once
  std::int64_t wal_pending_rows = 0;  ///< etcd_wal rows pending, as counted by the heartbeat
  std::int64_t wal_failed_rows = 0;   ///< etcd_wal rows failed, as counted by the heartbeat
  std::string last_error;
  // Unflushed deltas for the heartbeat (added to the persistent counters, then zeroed).
  std::int64_t pending_events = 0;
  std::int64_t pending_resyncs = 0;
};

}  // namespace etcd_sync
