#pragma once
// Writes decided etcd_wal outcomes on a connection of its own, as they come: outcomes that are
// ready together share one UPDATE, which lands only on the rows they were computed for
// (outbox_sql.hpp). A failed write is retried after a backoff; the rows stay unsettled meanwhile,
// so the claim loop does not take them again.

#include "adapters/pg_connection.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/outbox/outbox_sql.hpp"

#include <functional>
#include <unordered_set>
#include <vector>

namespace etcd_sync {

/// Where the outcome writer is; each change is logged once.
enum class OutcomeWriterState {
  idle,         ///< nothing to write
  writing,      ///< an UPDATE is in flight
  backing_off,  ///< PostgreSQL unreachable: waiting before writing again
  stopped,      ///< run() has returned
};
const char* to_string(OutcomeWriterState state);

/// What one write did, for the claim loop.
struct OutcomesWritten {
  std::vector<DecidedRow> rows;                ///< the rows whose outcomes were to be written
  std::unordered_set<std::int64_t> updated;    ///< the ids the UPDATE matched (the others: dropped)
  bool more_pending = true;                    ///< some of these keys still have pending rows
  bool abandoned = false;                      ///< stopping, and the write failed: rows stay pending
};

class OutcomeWriter {
 public:
  /// `config` is the outbox's view (its PostgreSQL settings and retry limits). `on_written` runs on
  /// the reactor after each write (or abandoned write).
  OutcomeWriter(asio::io_context& io, const ConfigView& config, SyncStats& stats, const Fencing& fencing,
                std::function<void(OutcomesWritten)> on_written);

  /// Queues outcomes; the next write takes them.
  void add(std::vector<DecidedRow> decided);
  /// Writes until stop() was called and nothing is queued (once stopping, one attempt per write).
  asio::awaitable<void> run();
  /// Asks run() to return once the queue is written, or on the first failed write.
  void stop();
  /// Closes the writer's connection: a write in flight ends at once (its rows stay pending).
  void abort() { pg_.close(); }
  /// Outcomes will still be queued (batches in etcd): run() waits for them before it returns.
  void expect_more(bool more) { expect_more_ = more; }
  const EngineStatus<OutcomeWriterState>& status() const { return status_; }

 private:
  std::vector<PgStatement> statements(const std::vector<DecidedRow>& decided) const;

  asio::io_context& io_;
  const ConfigView& config_;
  const Fencing& fencing_;  ///< every UPDATE is fenced; once fenced, nothing more is written
  PgConnection pg_;
  EngineStatus<OutcomeWriterState> status_;
  std::function<void(OutcomesWritten)> on_written_;
  std::vector<DecidedRow> queued_;
  Wakeup wakeup_;
  bool stopping_ = false;
  bool expect_more_ = false;
  bool fenced_ = false;
};

}  // namespace etcd_sync
