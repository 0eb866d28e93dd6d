#pragma once
// PostgreSQL -> etcd: the claim loop. Woken by NOTIFY etcd_changes (and a sweep every
// sync_interval), it claims the oldest due pending etcd_wal row of each key, in id order
// (claimer.hpp; claim_schedule.hpp says when and how many, outbox_sql.hpp how), has each batch
// decided in etcd (batch_applier.hpp: rows in doubt from etcd's receipts, the others in as few
// fenced Txns as etcd's limits allow), and hands the outcomes to the OutcomeWriter. Claims, Txns
// and outcome writes overlap; in_flight.hpp keeps the rows between claim and written outcome.

#include "adapters/etcd_client.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/backoff.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/outbox/batch_applier.hpp"
#include "reactor/outbox/claimer.hpp"
#include "reactor/outbox/in_flight.hpp"
#include "reactor/outbox/outbox_state.hpp"
#include "reactor/outbox/outcome_writer.hpp"

#include <vector>

namespace etcd_sync {

class Outbox final : public Engine {
 public:
  /// Every write is fenced with `fencing`: its PostgreSQL transactions, and its etcd Txns by the
  /// term's election key (none without a term).
  Outbox(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats, bool dry_run,
         Fencing fencing = {});

  const char* name() const override { return "outbox"; }
  /// Runs until stop(). An etcd role that may not write under election_prefix is fatal (throws
  /// SyncError(permission_denied): the service exits with code 3).
  asio::awaitable<void> run() override;
  /// No new claims; Txns in flight finish (or are cancelled by the service after its grace period,
  /// leaving their rows pending and in doubt) and decided outcomes are written (one attempt).
  void stop() override;
  void abort() override;
  /// Batch size, retry and interval settings and conflict resolution; a claim takes the snapshot
  /// in force when it starts, and keeps it until its rows are decided.
  void reconfigure(std::shared_ptr<const Config> config) override;
  std::string describe() const override;
  OutboxState state() const { return status_.state(); }

  /// New pending rows may exist: from etcd_wal id `lowest_id` on (a NOTIFY named it), or anywhere
  /// (nullopt: a reconnect or reload, a NOTIFY without an id).
  void wake(std::optional<std::int64_t> lowest_id = std::nullopt);

 private:
  asio::awaitable<void> claim_loop();
  asio::awaitable<void> dry_run_loop();
  /// Has every row of `batch` decided (BatchApplier::decide), then queues the outcomes.
  asio::awaitable<void> apply_batch(ClaimedBatch batch);
  /// Another instance leads (a fenced write, a deposed Txn): report it once and stop all work.
  void on_fenced(const SyncError& error);
  void on_written(OutcomesWritten written);
  /// Counts and logs each outcome and draws each retry's backoff; returns the decided rows.
  std::vector<DecidedRow> account(ClaimedBatch& batch);
  void set_activity(OutboxState state);

  asio::io_context& io_;
  ConfigView config_;
  SyncStats& stats_;
  bool dry_run_;
  Fencing fencing_;
  EngineStatus<OutboxState> status_;
  OutcomeWriter writer_;
  InFlight in_flight_;     ///< claimed rows until their outcomes are written
  Claimer claimer_;        ///< the claim connection and schedule
  BatchApplier applier_;   ///< decides each batch's rows in etcd
  Backoff row_backoff_;    ///< a retried row's wait before it is due again
  Wakeup wakeup_;          ///< the claim loop: NOTIFY, a batch ended, outcomes written, stop
  Gate batches_;           ///< every batch in flight
  bool stopping_ = false;
};

}  // namespace etcd_sync
