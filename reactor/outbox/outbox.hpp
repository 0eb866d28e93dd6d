#pragma once
// PostgreSQL -> etcd: the claim loop. Woken by NOTIFY etcd_changes (and a sweep every
// sync_interval), it claims the oldest due pending etcd_wal row of each key, in id order
// (claim_schedule.hpp says when and how many; outbox_sql.hpp how), applies them in as few fenced
// etcd Txns as etcd's limits allow (wal_txn.hpp: where a row becomes a Txn), decides rows in doubt
// from etcd's receipts (barrier.hpp, in_doubt.hpp), and hands the outcomes to the OutcomeWriter.
// Claims, Txns and outcome writes overlap.

#include "adapters/etcd_client.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/backoff.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/outbox/barrier.hpp"
#include "reactor/outbox/claim_schedule.hpp"
#include "reactor/outbox/etcd_outage.hpp"
#include "reactor/outbox/in_flight.hpp"
#include "reactor/outbox/outbox_state.hpp"
#include "reactor/outbox/outcome_writer.hpp"
#include "reactor/outbox/statistics_check.hpp"
#include "reactor/outbox/txn_group.hpp"
#include "reactor/outbox/wal_txn.hpp"

#include <random>
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
  /// The rows of one claim and the configuration snapshot they were claimed under.
  struct Batch {
    std::shared_ptr<const Config> config;
    std::vector<Attempt> attempts;
  };

  asio::awaitable<void> claim_loop();
  asio::awaitable<std::vector<Attempt>> claim(std::int64_t limit);
  asio::awaitable<void> dry_run_loop();
  /// Milliseconds until the earliest backed-off pending row falls due (nullopt: none).
  asio::awaitable<std::optional<std::int64_t>> next_retry_ms();
  /// Decides every row of `batch` (in doubt first, then Txns), waiting out etcd outages, until
  /// each has an outcome or the outbox stops; then queues the outcomes.
  asio::awaitable<void> apply_batch(Batch batch);
  asio::awaitable<void> resolve_in_doubt(const Batch& batch, std::vector<Attempt*> rows);
  /// Sends rows with distinct keys in one Txn (again without conflicting or refused rows) until
  /// each has an outcome, is in doubt (an outage), or the outbox stops.
  asio::awaitable<void> send_group(const Batch& batch, std::vector<Attempt*> group);
  /// Another instance leads (a fenced write, a deposed Txn): report it once and stop all work.
  void on_fenced(const SyncError& error);
  void on_written(OutcomesWritten written);
  /// Counts and logs each outcome and draws each retry's backoff; returns the decided rows.
  std::vector<DecidedRow> account(Batch& batch);
  void set_activity(OutboxState state);

  asio::io_context& io_;
  ConfigView config_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  bool dry_run_;
  Fencing fencing_;
  bool deposed_ = false;  ///< fenced: nothing more is sent or written
  PgConnection pg_;  ///< claims
  EngineStatus<OutboxState> status_;
  OutcomeWriter writer_;
  Barrier barrier_;
  ClaimSchedule schedule_;
  Backoff row_backoff_;
  Wakeup wakeup_;  ///< the claim loop: NOTIFY, a batch ended, outcomes written, stop
  EtcdOutageGate etcd_outage_;  ///< batches wait out etcd outages here
  Gate batches_;                ///< every batch in flight
  InFlight in_flight_;          ///< claimed rows until their outcomes are written
  TxnFence fence_;
  /// The last claim took all it might: due rows may be left behind (ClaimSchedule::claim_limit).
  bool backed_up_ = false;
  StatisticsCheck statistics_;  ///< when to check PostgreSQL's statistics of etcd_wal
  std::mt19937_64 tokens_;
  bool stopping_ = false;
};

}  // namespace etcd_sync
