#pragma once
// PostgreSQL -> etcd. Woken by NOTIFY etcd_changes (and a sweep every sync_interval), it claims the
// oldest due pending etcd_wal row of each key, in id order (at most batch_size per claim; one row
// per key at a time), applies them in as few etcd Txns as etcd's limits allow (wal_txn.hpp: one
// compare per row) and writes the outcomes back on a second connection. Claims, Txns and outcome
// writes overlap: a row committed while a batch is in etcd is claimed at once, not after that
// batch's outcomes are written; outcomes that are ready together are written in one UPDATE.

#include "adapters/etcd_client.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/loop/backoff.hpp"
#include "reactor/config/config.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/outbox/wal_txn.hpp"
#include "reactor/service/sync_stats.hpp"
#include "reactor/loop/wakeup.hpp"

#include <unordered_set>
#include <vector>

namespace etcd_sync {

/// Where the outbox is; each change is logged once.
enum class OutboxState {
  starting,     ///< not yet connected
  idle,         ///< no due rows: waiting for NOTIFY, the sweep, or a retry to fall due
  applying,     ///< sending a batch of rows to etcd
  backing_off,  ///< PostgreSQL unreachable: waiting before reconnecting
  stopped,      ///< run() has returned
};
const char* to_string(OutboxState state);

class Outbox {
 public:
  /// `config` is read on every batch, so a reload takes effect at the next one.
  Outbox(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats, bool dry_run);

  /// Runs until stop(); never throws.
  asio::awaitable<void> run();
  /// Batches in flight finish and their outcomes are written (one attempt); then run() returns.
  void stop();
  /// New pending rows may exist: from etcd_wal id `lowest_id` on (a NOTIFY named it), or anywhere
  /// (nullopt: a reconnect or reload, a NOTIFY without an id).
  void wake(std::optional<std::int64_t> lowest_id = std::nullopt);
  OutboxState state() const { return state_; }

 private:
  struct Attempt {
    WalRow row;
    std::optional<WalOutcome> outcome;
    std::chrono::milliseconds retry_delay{0};  ///< a retry's backoff, drawn once in account()
  };

  void set_state(OutboxState state, const LogFields& fields = {});
  /// Logs a failure once per state change; returns the backoff before reconnecting.
  std::chrono::milliseconds on_failure(const SyncError& error);
  /// Claims the due rows not already unsettled, at most batch_size, and moves scan_floor_.
  asio::awaitable<std::vector<Attempt>> fetch_due();
  /// The claim (and, unless dry_run, the lowest-pending-id query before it) for fetch_due. A plain
  /// function: see pg_params() on g++ 12.
  std::vector<PgStatement> claim_statements(std::int64_t limit, std::int64_t floor);
  /// Applies a claimed batch to etcd, then hands its outcomes to write_loop().
  asio::awaitable<void> apply_batch(std::vector<Attempt> batch);
  /// Checks etcd for the effect of a row's earlier attempt, then applies the row if it had none.
  asio::awaitable<void> apply_in_doubt(Attempt& attempt);
  /// Applies rows with distinct keys in one Txn, sending again those held back by another row's
  /// conflict; sets every row's outcome.
  asio::awaitable<void> apply_group(std::vector<Attempt*> group);
  asio::awaitable<void> apply_one_by_one(std::vector<Attempt*> group);
  /// Writes decided outcomes on outcome_pg_ as they come, several batches per UPDATE when they are
  /// ready together; a failed write is retried after a backoff (the rows stay unsettled, so they
  /// are not claimed again meanwhile). Returns once stopping and nothing is left to write.
  asio::awaitable<void> write_loop();
  /// Counts and logs each row's outcome (once, when decided) and draws each retry's backoff.
  void account(std::vector<Attempt>& batch);
  /// Claimed rows allowed before their outcomes are written (kBatchesInFlight batches).
  std::size_t unsettled_capacity() const;
  /// How long the claim loop may sleep: sync_interval, or less when a retried row falls due sooner.
  std::chrono::milliseconds sleep_limit() const;
  /// The statements that record outcomes (one UPDATE, plus the conflict counter), then a query:
  /// do these keys still have pending rows? A plain function: see pg_params() on g++ 12.
  std::vector<PgStatement> outcome_statements(const std::vector<Attempt>& decided);
  asio::awaitable<std::chrono::milliseconds> idle_wait();
  /// Claimed rows allowed before their outcomes are written: this many batches.
  static constexpr int kBatchesInFlight = 4;
  /// Batches in etcd at once. Rows that arrive meanwhile wait for the next claim, so under load
  /// each claim and Txn carries more rows: at 1000 rows/s, p99 COMMIT -> etcd fell from 22-37 ms
  /// (no limit: a claim and a Txn for nearly every row) to 10-12.5 ms (perf/README.md).
  static constexpr int kBatchesApplying = 2;

  asio::io_context& io_;
  const Config& config_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  bool dry_run_;
  PgConnection pg_;          ///< claims
  PgConnection outcome_pg_;  ///< outcome writes
  Backoff backoff_;
  Backoff outcome_backoff_;
  Backoff row_backoff_;
  Wakeup wakeup_;          ///< the claim loop: NOTIFY, outcomes settled, stop
  Wakeup writer_wakeup_;   ///< write_loop: outcomes decided, stop
  std::unordered_set<std::int64_t> unsettled_ids_;  ///< claimed rows whose outcome is not yet committed
  std::vector<Attempt> decided_;                    ///< outcomes waiting for write_loop
  int batches_applying_ = 0;
  bool waiting_for_room_ = false;  ///< the claim loop waits for a batch to end or outcomes to be written
  // Claims scan the pending rows from scan_floor_ on, not from the oldest id: rows that left
  // 'pending' leave dead entries in the pending indexes until VACUUM, and a scan from the start
  // would step over all of them (O(rows processed since the last VACUUM) per claim). Every pending
  // row has an id >= scan_floor_, except rows whose NOTIFY has not arrived yet (wake() lowers it).
  // A claim also reads the lowest pending id and raises the floor to it (or to the lowest id
  // notified meanwhile). Each (re)connect, and one claim every sync_interval, scan from 0.
  std::int64_t scan_floor_ = 0;
  std::optional<std::chrono::steady_clock::time_point> earliest_retry_;  ///< of the retries decided since the last claim
  std::int64_t notified_during_claim_ = 0;
  std::chrono::steady_clock::time_point next_full_scan_{};
  bool writer_running_ = false;
  OutboxState state_ = OutboxState::starting;
  bool stopping_ = false;
  std::string last_error_;
};

}  // namespace etcd_sync
