#pragma once
// The PostgreSQL side of the outbox's claim loop: its connection, when and from which id it claims
// (claim_schedule.hpp), how (outbox_sql.hpp), the token of each claim, and the check of
// PostgreSQL's statistics of etcd_wal (statistics_check.hpp).

#include "adapters/etcd_client.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/outbox/claim_schedule.hpp"
#include "reactor/outbox/in_flight.hpp"
#include "reactor/outbox/statistics_check.hpp"
#include "reactor/outbox/txn_group.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

namespace etcd_sync {

class Claimer {
 public:
  /// `config` gives the PostgreSQL settings of the claim connection. Claims are fenced with
  /// `fencing` and skip `in_flight`'s unsettled rows; a claim records etcd's revision as known in
  /// `stats` (asked of `etcd` before the first).
  Claimer(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats, const Fencing& fencing,
          const InFlight& in_flight);

  /// Whether the claim connection is open (connect(), or peek() in a dry run).
  bool connected() const { return pg_.connected(); }
  /// Opens the claim connection (open_database with `config`) with the planner settings claims
  /// need. Notifications sent while it was closed were lost: the next claim scans from id 0.
  /// Throws SyncError.
  asio::awaitable<void> connect(const Config& config);
  /// Closes the claim connection: a statement in flight ends at once.
  void close() { pg_.close(); }

  /// Claims up to `limit` (> 0) due pending rows, the oldest of each key, in id order, from the
  /// schedule's floor (a full scan at least every `sync_interval`). Throws SyncError (fenced: this
  /// term's epoch is no longer PostgreSQL's).
  asio::awaitable<std::vector<Attempt>> claim(std::int64_t limit, std::chrono::milliseconds sync_interval);
  /// Whether the last claim took all it might: due rows may be left behind (ClaimSchedule::end_claim).
  bool backed_up() const { return backed_up_; }
  /// Milliseconds until the earliest backed-off pending row from the floor on falls due (nullopt:
  /// none). Throws SyncError.
  asio::awaitable<std::optional<std::int64_t>> next_retry_ms();
  /// Checks PostgreSQL's statistics of etcd_wal when due (StatisticsCheck::due, check_statistics).
  /// Throws SyncError, as a claim does.
  asio::awaitable<void> check_statistics_if_due();
  /// The dry run's look: opens the connection if needed (open_database with `config`, without the
  /// claim settings) and returns the rows a claim of `config`'s batch_size would take, claiming
  /// none. Throws SyncError.
  asio::awaitable<std::vector<WalRow>> peek(const Config& config);

  /// When and from which id claims scan, and how long the claim loop sleeps.
  ClaimSchedule& schedule() { return schedule_; }

 private:
  EtcdClient& etcd_;
  SyncStats& stats_;
  const Fencing& fencing_;
  const InFlight& in_flight_;
  PgConnection pg_;
  ClaimSchedule schedule_;
  StatisticsCheck statistics_;
  std::mt19937_64 tokens_;  ///< each claim's attempt_token: its outcome UPDATE matches it
  bool backed_up_ = false;
};

}  // namespace etcd_sync
