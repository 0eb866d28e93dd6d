#pragma once
// Bounded history: the leader's engine that prunes `etcd` to [history] keep_versions and keep_for
// (prune_sql.hpp says which rows). It runs on the event loop in small batches (a window of rows
// in revision order per transaction, fenced like every write of the leader) on a session of its
// own ("etcd-sync history"), resting after each batch as long as the batch took, so it never
// takes more than about half of a PostgreSQL core from the mirror. A pass walks the whole prefix;
// the next starts after pass_interval() (or at once after a reload that changes the settings).

#include "adapters/pg_connection.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/history/prune_sql.hpp"
#include "reactor/loop/wakeup.hpp"

namespace etcd_sync {

/// Where the pruner is; each change is logged once.
enum class PrunerState {
  off,          ///< [history] keeps everything
  pruning,      ///< a pass is walking the table
  resting,      ///< between passes
  backing_off,  ///< PostgreSQL unreachable
  stopped,
};
const char* to_string(PrunerState state);

class Pruner final : public Engine {
 public:
  /// Rows examined per batch (one window, one transaction).
  static constexpr int kWindowRows = 2000;
  /// The rest between two passes: a minute, or half of keep_for when that is shorter (at least a
  /// second), so rows leave about when they reach keep_for.
  static std::chrono::milliseconds pass_interval(const HistoryConfig& history);

  Pruner(asio::io_context& io, std::shared_ptr<const Config> config, SyncStats& stats, Fencing fencing);

  const char* name() const override { return "history"; }
  asio::awaitable<void> run() override;
  void stop() override;
  void abort() override { pg_.close(); }
  /// keep_versions and keep_for: a change starts a new pass at once.
  void reconfigure(std::shared_ptr<const Config> config) override;
  std::string describe() const override { return status_.describe(); }

 private:
  /// One batch: returns false when the pass is over.
  asio::awaitable<bool> prune_window(const KeepRules& rules);

  asio::io_context& io_;
  ConfigView config_;
  SyncStats& stats_;
  Fencing fencing_;
  PgConnection pg_;
  EngineStatus<PrunerState> status_;
  Wakeup wakeup_;
  std::int64_t cursor_ = 0;
  bool stopping_ = false;
  bool restart_pass_ = false;
};

}  // namespace etcd_sync
