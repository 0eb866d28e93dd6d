#pragma once
// etcd -> PostgreSQL. Takes a paginated snapshot when there is no checkpoint (or after a
// compaction), then watches from checkpoint + 1 and applies the watch events in transactions of at
// most batch_size events, each of which also moves the checkpoint, so a crash neither loses nor
// repeats a revision. Where a watch event becomes a row: mirror_rows.hpp; what a WatchResponse
// means: watch_response.hpp.

#include "adapters/etcd_client.hpp"
#include "adapters/etcd_watch.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/mirror/mirror_rows.hpp"

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

class Mirror final : public Engine {
 public:
  /// With `dry_run`, events are logged instead of written and the checkpoint only moves in memory.
  /// Every transaction is fenced with `fencing` (none without a term).
  Mirror(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats,
         bool dry_run = false, Fencing fencing = {});

  const char* name() const override { return "mirror"; }
  /// Runs until stop(). Transient failures back off and resume from the checkpoint.
  asio::awaitable<void> run() override;
  /// Asks run() to return: a snapshot in progress is abandoned (rolled back), the transaction in
  /// flight commits, queued responses are dropped (they are above the checkpoint and come again).
  void stop() override;
  void abort() override {
    pg_.close();
    copy_pg_.close();
  }
  /// Batch size, sync interval and retry settings; taken before the next transaction.
  void reconfigure(std::shared_ptr<const Config> config) override { config_.offer(std::move(config)); }
  std::string describe() const override { return status_.describe(); }
  MirrorState state() const { return status_.state(); }
  bool watching() const { return status_.state() == MirrorState::watching; }

  /// Connects and runs the resync path once (snapshot + reconcile, which also rewrites rows whose
  /// value differs from etcd's at the same revision). For `validate --fix`. Returns the snapshot
  /// revision; throws SyncError.
  asio::awaitable<std::int64_t> resync_once();

 private:
  struct WatchSession;

  /// What a failure means: a compaction schedules a resync (no wait); anything else backs off.
  std::chrono::milliseconds on_failure(const SyncError& error);
  asio::awaitable<void> connect_postgres();
  asio::awaitable<std::optional<std::int64_t>> load_checkpoint();
  /// A snapshot at one revision (returned): the first of a prefix with no rows is copied straight
  /// into `etcd`; a resync, or a snapshot where rows exist, goes through a temporary table and
  /// append_reconcile. Throws SyncError.
  asio::awaitable<std::int64_t> snapshot(bool resync);
  /// The reconcile of the temporary table etcd_sync_snapshot (taken at `revision`) into `etcd`.
  void append_reconcile(std::int64_t revision, std::vector<PgStatement>& statements) const;
  asio::awaitable<void> watch(std::int64_t start_revision);
  asio::awaitable<void> read_responses(WatchSession& session);
  /// Moves the queued responses into transactions (batch_size) and applies them; false when the
  /// watch must end (session.error is set).
  asio::awaitable<bool> apply_queued(WatchSession& session, std::int64_t start_revision);
  asio::awaitable<void> apply(const MirrorBatches& batches);
  /// A backlog (1,000 or more events read at once: CopyLimits in mirror.cpp): each run of transactions
  /// (MirrorBatches::copy_runs) is one COPY into `etcd` with its checkpoint. Runs alternate between
  /// two connections, so PostgreSQL works on one run's rows while the other's commit; a run
  /// commits only after the run before it did, so the checkpoint never passes a revision that is
  /// not committed (when the second connection cannot be opened, all runs go on the first). If
  /// PostgreSQL refuses a row as a duplicate, that run and any after it are rolled
  /// back and their events inserted with ON CONFLICT DO NOTHING, as is every backlog after it.
  /// Throws the first run's SyncError otherwise (both connections are then closed).
  asio::awaitable<void> copy_backlog(const MirrorBatches& batches);
  struct CopyPipe;
  /// Copies the runs first_run, first_run + stride, ... on `pg`, each committed in its turn;
  /// records a failure in `pipe` instead of throwing.
  asio::awaitable<void> copy_runs(const MirrorBatches& batches, std::size_t first_run, std::size_t stride,
                                  PgConnection& pg, CopyPipe& pipe);
  /// BEGIN, then the COPY of the rows of transactions [first, end) on `pg`, left open for its commit.
  asio::awaitable<void> copy_rows(PgConnection& pg, const MirrorBatches& batches, std::size_t first, std::size_t end);
  void throw_if_stopping() const;
  std::string prefix() const;
  /// A key under [ha] election_prefix: etcd-sync's own (election, barrier, receipts), never mirrored.
  bool own_key(const std::string& key) const;

  asio::io_context& io_;
  ConfigView config_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  PgConnection pg_;
  PgConnection copy_pg_;  ///< the second connection of copy_backlog, opened at its first backlog
  EngineStatus<MirrorState> status_;
  Wakeup stop_wakeup_;
  WatchSession* session_ = nullptr;
  std::int64_t checkpoint_ = 0;
  bool dry_run_;
  bool stopping_ = false;
  bool resync_needed_ = false;
  bool copy_backlogs_ = true;  ///< false once a COPY met a row already there: backlogs are inserted
  std::optional<std::int64_t> lost_from_;  ///< first revision whose history a compaction removed
  Fencing fencing_;
  /// The fence check as a statement, for the pure builders (nullopt without a term).
  std::optional<PgStatement> fence_statement() const;
};

}  // namespace etcd_sync
