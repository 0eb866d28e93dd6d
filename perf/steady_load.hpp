// The steady load of the fault scenarios (h) failover and (i) takeover: etcd_wal rows inserted at a
// fixed rate, each in its own transaction, and etcd puts at a fixed rate, both open-loop, on a
// thread of their own, so that the scenario's thread can kill, stop and restart processes (which
// blocks) while the load goes on. Every row and put is recorded with wall-clock times; after stop()
// the records are matched against the database (outcomes, applied_at, the mirror's rows) to tell
// how long each fault held the flow up.
#pragma once

#include "perf/bench_env.hpp"

#include <atomic>
#include <map>
#include <thread>

namespace etcd_sync::bench {

/// One etcd_wal row the load inserted: key `<wal_prefix><index>`, a fresh key each time.
struct LoadRow {
  std::int64_t sent_us = 0;       ///< the INSERT was sent: the row cannot exist before
  std::int64_t committed_us = 0;  ///< the INSERT's autocommit returned (0: not inserted)
};

/// One etcd put the load sent: key `<put_prefix><index % 100>`.
struct LoadPut {
  std::int64_t sent_us = 0;
  std::int64_t answered_us = 0;  ///< the answer (or the error) arrived
  std::int64_t revision = 0;     ///< 0 when the put failed
};

class SteadyLoad {
 public:
  /// `rate` rows/s into `conninfo`'s etcd_wal over `inserters` connections, and `rate` puts/s to
  /// the etcd cluster at `endpoints` through the project's EtcdClient (which fails over between
  /// them; each put is tried once, with a 5 s deadline).
  SteadyLoad(std::vector<std::string> endpoints, std::string conninfo, double rate, int inserters = 4);
  /// Stops the load if it still runs.
  ~SteadyLoad();
  SteadyLoad(const SteadyLoad&) = delete;
  SteadyLoad& operator=(const SteadyLoad&) = delete;

  static inline const std::string wal_prefix = "/bench/ha-wal/";
  static inline const std::string put_prefix = "/bench/ha-put/";

  void start();
  /// Stops scheduling, waits for the puts in flight, joins the thread; rethrows the load's failure
  /// (a failed INSERT: PostgreSQL is not the faulted side here).
  void stop();

  /// While running: rows committed and puts answered successfully so far (for "the load flows").
  std::int64_t rows_committed() const { return rows_committed_; }
  std::int64_t puts_succeeded() const { return puts_succeeded_; }

  /// After stop(): every row (by index) and put, in schedule order.
  const std::vector<LoadRow>& rows() const { return rows_; }
  const std::vector<LoadPut>& puts() const { return puts_; }

 private:
  void thread_main();
  asio::awaitable<void> drive(testing::EtcdLoop& loop, std::vector<std::unique_ptr<PgConnection>>& pool);
  asio::awaitable<void> insert_rows(PgConnection& pg, std::size_t first, std::size_t step, Clock::time_point start);
  asio::awaitable<void> put_one(EtcdClient& etcd, std::size_t index);

  std::vector<std::string> endpoints_;
  std::string conninfo_;
  double rate_;
  int inserters_;
  std::string value_;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> rows_committed_{0};
  std::atomic<std::int64_t> puts_succeeded_{0};
  int puts_in_flight_ = 0;
  std::vector<LoadRow> rows_;
  std::vector<LoadPut> puts_;
  std::exception_ptr failure_;
  std::thread thread_;
};

/// What the database says about the load's rows and the mirror, read once after the load stopped.
struct LoadOutcomes {
  /// Per row index: status, etcd revision (0 unless success), applied_at in wall micros (0: NULL).
  struct Row {
    std::string status;
    std::int64_t revision = 0;
    std::int64_t applied_us = 0;
  };
  std::vector<Row> rows;
  /// Per mirrored revision (any key under the prefix): when the mirror wrote it (min `etcd.ts`,
  /// now() of the mirror's transaction), wall micros.
  std::map<std::int64_t, std::int64_t> mirrored_us;
  std::int64_t wal_keys_in_mirror = 0;     ///< rows of `etcd` for the load's etcd_wal keys
  std::int64_t distinct_wal_keys_in_mirror = 0;
  std::map<std::string, std::int64_t> status_counts;

  static LoadOutcomes read(testing::PgClient& db, std::size_t row_count);

  /// Whether every one of `row_count` rows is `success` and has exactly one `etcd` row of its key;
  /// prints a detail line with the statuses, `drained` (nothing pending at the end) and that verdict.
  bool applied_once(std::int64_t row_count, bool drained) const;
};

/// How one fault (at `fault_us`) held up the load's rows and puts, measured up to `until_us` (the
/// next fault or the end of the run).
struct FaultFigures {
  // Outbox: rows inserted after the fault (INSERT sent after it, so committed after it; a row whose
  // INSERT was sent before may have committed and even been applied before the fault, although the
  // generator learnt of its COMMIT after).
  std::int64_t rows_after = 0;            ///< sent in [fault, until)
  std::int64_t first_applied_us = 0;      ///< the first of them to be applied (min applied_at); 0: none
  std::int64_t outage_rows = 0;           ///< sent after the fault, committed before first_applied_us
  Distribution outage_wait_ms;            ///< their commit -> applied_at
  Distribution after_wait_ms;             ///< every row sent in [fault, until): commit -> applied_at
  // Rows sent before the fault that were still unapplied at the fault (in flight or in doubt).
  std::int64_t in_flight = 0;
  std::int64_t in_flight_settled_us = 0;  ///< the last of their applied_at
  std::map<std::string, std::int64_t> in_flight_statuses;
  // Mirror.
  std::int64_t puts_failed = 0;           ///< puts sent in [fault, until) that failed
  std::int64_t first_put_answered_us = 0; ///< the first put sent after the fault that succeeded
  std::int64_t first_post_fault_revision = 0;  ///< no revision before it was committed before the fault
  std::int64_t first_mirrored_us = 0;     ///< when the mirror wrote the first revision >= that one
  Distribution put_mirror_ms;             ///< puts answered in [fault, until): answered -> mirrored
};

/// The figures of a fault at `fault_us`, from the load's records and the database's outcomes.
FaultFigures fault_figures(const SteadyLoad& load, const LoadOutcomes& outcomes, std::int64_t fault_us,
                           std::int64_t until_us);

/// Seconds between two wall-clock microsecond stamps, or -1 when `to_us` is 0 (never happened).
double seconds_between(std::int64_t from_us, std::int64_t to_us);

/// The wall-clock time (micros) of the first JSON log line in `log` that contains every one of
/// `needles`, from its "ts" field (milliseconds, UTC); nullopt when there is none.
std::optional<std::int64_t> log_line_time(const std::string& log, const std::vector<std::string>& needles);

}  // namespace etcd_sync::bench
