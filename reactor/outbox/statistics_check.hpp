#pragma once
// The outbox's check of PostgreSQL's statistics of etcd_wal. Taken while few rows were pending,
// they make the planner walk the pending indexes whole for each key a claim looks up: O(pending)
// per claim (ClaimSchedule::statistics_stale). While claims are backed up, the outbox compares the
// planner's estimate with a count every ClaimSchedule::kStatisticsCheckInterval and runs ANALYZE
// etcd_wal when it is stale, at most every ClaimSchedule::kAnalyzeInterval, or says once that this
// role may not.
//
// StatisticsCheck decides (pure: times and readings in, decisions out; unit-tested without
// servers); check_statistics() reads, analyzes and logs.

#include "adapters/pg_connection.hpp"
#include "reactor/outbox/claim_schedule.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace etcd_sync {

class StatisticsCheck {
 public:
  using clock = std::chrono::steady_clock;

  /// What a check's readings call for.
  enum class Verdict {
    current,  ///< the estimate is close enough (or unknown): nothing to do
    refused,  ///< stale, and this role may not ANALYZE etcd_wal: say so once; no more checks
    analyze,  ///< stale: run ANALYZE etcd_wal
  };

  /// Whether the claim loop checks at `now`: claims are `backed_up` (the last one was full), the
  /// interval since the last check (or ANALYZE) has passed, and the role was not found unable to
  /// ANALYZE (a check could only say so again).
  bool due(clock::time_point now, bool backed_up) const { return backed_up && !refused_ && now >= next_check_; }
  /// A check begins at `now`: the next is due kStatisticsCheckInterval later.
  void began(clock::time_point now) { next_check_ = now + ClaimSchedule::kStatisticsCheckInterval; }
  /// The check read the planner's estimate of the pending rows (`planner_estimate`; nullopt: the
  /// plan named none), their number `counted` (up to ClaimSchedule::kPendingSample) and whether
  /// this role `may_analyze` etcd_wal. A refusal is remembered: due() is false from then on.
  Verdict judge(std::optional<std::int64_t> planner_estimate, std::int64_t counted, bool may_analyze) {
    if (!planner_estimate || !ClaimSchedule::statistics_stale(*planner_estimate, counted)) return Verdict::current;
    if (may_analyze) return Verdict::analyze;
    refused_ = true;
    return Verdict::refused;
  }
  /// ANALYZE etcd_wal ended at `now`: the next check is due kAnalyzeInterval later. (An ANALYZE
  /// that could not get its lock waits for the next check, as began() set it.)
  void analyzed(clock::time_point now) { next_check_ = now + ClaimSchedule::kAnalyzeInterval; }
  /// Whether this role was found unable to ANALYZE etcd_wal.
  bool refused() const { return refused_; }

 private:
  clock::time_point next_check_{};
  bool refused_ = false;  ///< this role may not ANALYZE etcd_wal (said once; no more checks)
};

/// One check on `pg` (the outbox's claim connection), decided by `check`: reads the estimate, the
/// count and the permission in one pipeline, then runs ANALYZE etcd_wal or logs the refusal (warn,
/// once). An ANALYZE that cannot get its lock within 200 ms (a VACUUM holds it) waits for the next
/// check. Throws SyncError for other PostgreSQL errors, as a claim does.
asio::awaitable<void> check_statistics(PgConnection& pg, StatisticsCheck& check);

}  // namespace etcd_sync
