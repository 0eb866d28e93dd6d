#pragma once
// etcd -> PostgreSQL. Takes a paginated snapshot when there is no checkpoint (or after a
// compaction), then watches from checkpoint + 1 and applies each group of watch responses in one
// transaction that also moves the checkpoint, so a crash neither loses nor repeats a revision.

#include "adapters/etcd_client.hpp"
#include "adapters/etcd_watch.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/loop/backoff.hpp"
#include "reactor/config/config.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/mirror/mirror_rows.hpp"
#include "reactor/service/sync_stats.hpp"
#include "reactor/loop/wakeup.hpp"

#include <deque>
#include <optional>

namespace etcd_sync {

/// Where the mirror is; each change is logged once.
enum class MirrorState {
  starting,      ///< not yet connected
  snapshotting,  ///< first snapshot: paginated Range at one revision, COPY into PostgreSQL
  resyncing,     ///< snapshot after etcd compacted history that was never mirrored
  watching,      ///< streaming watch events into `etcd`
  backing_off,   ///< etcd or PostgreSQL unreachable: waiting before the next attempt
  stopped,       ///< run() has returned
};
const char* to_string(MirrorState state);

class Mirror {
 public:
  /// `config` is read on every use, so a reload takes effect at the next step.
  /// With `dry_run`, events are logged instead of written and the checkpoint only moves in memory.
  Mirror(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats, bool dry_run = false);

  /// Runs until stop(). Transient failures back off and resume from the checkpoint; never throws.
  asio::awaitable<void> run();
  /// Asks run() to return: the transaction in flight commits, queued responses are dropped (they
  /// are above the checkpoint and come again on the next start).
  void stop();
  MirrorState state() const { return state_; }

  /// Connects and runs the resync path once (snapshot + reconcile, which also rewrites rows whose
  /// value differs from etcd's at the same revision). For `validate --fix`. Returns the snapshot
  /// revision; throws SyncError.
  asio::awaitable<std::int64_t> resync_once();

 private:
  struct WatchSession;

  void set_state(MirrorState state, const LogFields& fields = {});
  /// Logs a failure once per state change and returns how long to wait (0: go on at once).
  std::chrono::milliseconds on_failure(const SyncError& error);
  asio::awaitable<void> connect_postgres();
  asio::awaitable<std::optional<std::int64_t>> load_checkpoint();
  asio::awaitable<std::int64_t> snapshot(bool resync);
  asio::awaitable<void> watch(std::int64_t start_revision);
  asio::awaitable<void> read_responses(WatchSession& session);
  asio::awaitable<void> apply(const MirrorBatch& batch);
  std::string prefix() const;

  asio::io_context& io_;
  const Config& config_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  PgConnection pg_;
  Backoff backoff_;
  Wakeup stop_wakeup_;
  MirrorState state_ = MirrorState::starting;
  WatchSession* session_ = nullptr;
  std::int64_t checkpoint_ = 0;
  bool dry_run_;
  bool stopping_ = false;
  bool resync_needed_ = false;
  std::optional<std::int64_t> lost_from_;  ///< first revision whose history a compaction removed
  std::string last_error_;
};

}  // namespace etcd_sync
