#pragma once
// PostgreSQL -> etcd. Woken by NOTIFY etcd_changes (and a sweep every sync_interval), it reads the
// oldest due pending etcd_wal row of each key, in id order (at most batch_size; one row per key at a
// time), applies them in as few etcd Txns as etcd's limits allow (conflict_rules: one compare per
// row) and writes the outcomes back in one round trip.

#include "adapters/etcd_client.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/backoff.hpp"
#include "reactor/config.hpp"
#include "reactor/logging.hpp"
#include "reactor/conflict.hpp"
#include "reactor/sync_stats.hpp"
#include "reactor/wakeup.hpp"

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
  /// The batch in flight finishes and its outcomes are written; then run() returns.
  void stop();
  /// New pending rows may exist (a NOTIFY arrived, or a reconnect happened).
  void wake() { wakeup_.notify(); }
  OutboxState state() const { return state_; }

 private:
  struct Attempt {
    WalRow row;
    std::optional<WalOutcome> outcome;
  };

  void set_state(OutboxState state, const LogFields& fields = {});
  /// Logs a failure once per state change; returns the backoff before reconnecting.
  std::chrono::milliseconds on_failure(const SyncError& error);
  asio::awaitable<std::vector<Attempt>> fetch_due();
  asio::awaitable<void> process(std::vector<Attempt>& batch);
  /// Checks etcd for the effect of a row's earlier attempt, then applies the row if it had none.
  asio::awaitable<void> apply_in_doubt(Attempt& attempt);
  /// Applies rows with distinct keys in one Txn, sending again those held back by another row's
  /// conflict; sets every row's outcome.
  asio::awaitable<void> apply_group(std::vector<Attempt*> group);
  asio::awaitable<void> apply_one_by_one(std::vector<Attempt*> group);
  asio::awaitable<void> write_outcomes(const std::vector<Attempt>& batch);
  /// The statements that record a batch's outcomes (one UPDATE, plus the conflict counter), and
  /// the log line and counter of each row. A plain function: see pg_params() on g++ 12.
  std::vector<PgStatement> outcome_statements(const std::vector<Attempt>& batch);
  asio::awaitable<std::chrono::milliseconds> idle_wait();

  asio::io_context& io_;
  const Config& config_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  bool dry_run_;
  PgConnection pg_;
  Backoff backoff_;
  Backoff row_backoff_;
  Wakeup wakeup_;
  OutboxState state_ = OutboxState::starting;
  bool stopping_ = false;
  std::string last_error_;
};

}  // namespace etcd_sync
