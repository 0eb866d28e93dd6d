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
#include "reactor/mirror/timeline.hpp"

#include <deque>
#include <optional>

namespace etcd_sync {

/// Where the mirror is; each change is logged once.
enum class MirrorState {
  starting,      ///< not yet connected
  snapshotting,  ///< first snapshot: paginated Range at one revision, COPY into PostgreSQL
  resyncing,     ///< snapshot after etcd compacted history that was never mirrored
  rewinding,     ///< etcd went back in time: finding the rows its history still holds, setting the rest apart
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
  /// value differs from etcd's at the same revision). For `validate --fix`. When the snapshot
  /// shows etcd went back in time, the rows are set apart first (rewind) and the snapshot is taken
  /// again. Returns the snapshot revision; throws SyncError.
  asio::awaitable<std::int64_t> resync_once();

 private:
  struct WatchSession;

  /// What a failure means: a compaction schedules a resync (no wait); anything else backs off.
  std::chrono::milliseconds on_failure(const SyncError& error);
  asio::awaitable<void> connect_postgres();
  /// The checkpoint's revision (nullopt: none), and its cluster id into recorded_cluster_.
  asio::awaitable<std::optional<std::int64_t>> load_checkpoint();

  // When etcd goes back in time (mirror_rewind.cpp; README "When a server goes back in time").
  /// Compares etcd's cluster id and current revision (a linearizable read) with the checkpoint's,
  /// and asks etcd's history for the last mirrored rows; records the cluster id when none is.
  /// Returns the checkpoint to watch from: `checkpoint`, or the lower one rewind() set. Throws
  /// SyncError.
  asio::awaitable<std::int64_t> check_timeline(std::int64_t checkpoint);
  /// etcd went back: logs it at error, finds the highest revision etcd's history still holds
  /// (KeptThroughSearch), and in one fenced transaction moves every row above it to
  /// etcd_abandoned, records the rollback in etcd_sync_rollbacks and sets the checkpoint there.
  /// Returns that revision. `revision` and `cluster_id`: etcd's now.
  asio::awaitable<std::int64_t> rewind(std::int64_t checkpoint, std::int64_t revision, std::uint64_t cluster_id,
                                       const std::string& reason);
  /// The puts at the highest revision at or below `revision` that has mirrored puts (at most a
  /// few keys). Tombstones prove nothing: a resync writes them at its snapshot's revision, not at
  /// the delete's.
  asio::awaitable<std::vector<MirroredRow>> mirrored_rows_at_or_below(std::int64_t revision);
  /// What etcd's history says about `rows` (puts, all at one revision): one Range per row.
  asio::awaitable<RowsInHistory> held_by_etcd(const std::vector<MirroredRow>& rows);
  /// The ids of `etcd_wal` rows settled success at a revision above `kept` whose write etcd's
  /// history no longer holds (a Range per row; a revision etcd has not reached holds nothing).
  /// Rows whose history etcd compacted are left as they are.
  asio::awaitable<std::vector<std::optional<std::string>>> wal_writes_taken_away(std::int64_t kept);
  /// Whether PostgreSQL went back in time under the mirror: `checkpoint` (just loaded) below the
  /// one this process committed, or a system identifier or timeline other than the checkpoint
  /// row's (a restore, a point-in-time recovery, a promoted replica). Logs it at error with both
  /// and counts it; then records the current identity. Nothing else is needed: the mirror resumes
  /// from the checkpoint PostgreSQL has, so every revision above it lands again, once. A role
  /// that may not read pg_control_system() and pg_control_checkpoint() skips the identity (said
  /// once). Throws SyncError when PostgreSQL fails.
  asio::awaitable<void> check_postgres_timeline(std::int64_t checkpoint);
  /// For a resync: a key whose latest row in `etcd` is newer than its mod_revision in the snapshot
  /// (the temporary table etcd_sync_snapshot), which one timeline cannot give, described for the
  /// log; nullopt when there is none.
  asio::awaitable<std::optional<std::string>> rows_newer_than_etcd();
  /// After a rewind: once the checkpoint reaches etcd's revision at the rollback, records when
  /// (etcd_sync_rollbacks.caught_up_at) and logs it.
  asio::awaitable<void> note_caught_up();
  /// A watch response header from another cluster, or below the checkpoint: the error that ends
  /// the watch so that check_timeline looks (nullopt: nothing wrong).
  std::optional<SyncError> timeline_suspect(const etcdserverpb::ResponseHeader& header);
  /// A snapshot at one revision (returned): the first of a prefix with no rows is copied straight
  /// into `etcd`; a resync, or a snapshot where rows exist, goes through a temporary table and
  /// append_reconcile; the checkpoint records etcd's cluster id. Throws SyncError.
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
  std::optional<std::string> recorded_cluster_;  ///< etcd's cluster id stored with the checkpoint
  bool timeline_suspect_ = false;  ///< a watch ended on a suspect header: look again at once
  bool rewound_ = false;  ///< a resync found etcd gone back and rewound: take the snapshot again
  std::int64_t stored_checkpoint_ = 0;  ///< the checkpoint load_checkpoint() read (0: none)
  bool pg_identity_refused_ = false;    ///< the role may not read PostgreSQL's control data
  /// After etcd went back: the rollback's id, etcd's revision then, and when, until the mirror
  /// has mirrored that revision again.
  struct Rewind {
    std::int64_t id = 0;
    std::int64_t etcd_revision = 0;
    std::chrono::steady_clock::time_point detected;
  };
  std::optional<Rewind> rewind_;
  Fencing fencing_;
  /// The fence check as a statement, for the pure builders (nullopt without a term).
  std::optional<PgStatement> fence_statement() const;
};

}  // namespace etcd_sync
