#pragma once
// When the outbox claims, how many rows, from which id, and how long it sleeps in between. Pure:
// events in (a NOTIFY, a claim's result, a retry decided), decisions out; unit-tested without
// servers.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

namespace etcd_sync {

class ClaimSchedule {
 public:
  using clock = std::chrono::steady_clock;

  /// Claimed rows allowed before their outcomes are written: this many batches.
  static constexpr int kBatchesInFlight = 4;
  /// Batches in etcd at once while rows are backed up (the last claim was full). Rows that arrive
  /// meanwhile wait for the next claim, so under load each claim and Txn carries more rows: at 1000
  /// rows/s, p99 COMMIT -> etcd fell from 22-37 ms (no limit: a claim and a Txn for nearly every
  /// row) to 10-12.5 ms (perf/README.md).
  static constexpr int kBatchesApplying = 2;

  /// How many rows the next claim may take: up to `batch_size`, within kBatchesInFlight batches of
  /// claimed-but-unwritten rows (`unsettled`) and kBatchesApplying batches in etcd. While a batch
  /// is in etcd and the last claim took every due row (`backed_up` false: it was short), the next
  /// waits for that batch to end: the rows that arrive meanwhile then share one claim and one Txn
  /// instead of overlapping two small ones (at 1000 rows/s, p99 COMMIT -> etcd event over seven
  /// alternating runs: mean 18.5 ms against 20.6 ms, perf/README.md). A full claim may have left
  /// rows behind; then claims overlap.
  /// 0: no room; wait until a batch ends or outcomes are written.
  static std::int64_t claim_limit(int batch_size, std::size_t unsettled, int batches_applying, bool backed_up) {
    if (batches_applying >= (backed_up ? kBatchesApplying : 1)) return 0;
    const auto capacity = static_cast<std::int64_t>(kBatchesInFlight) * batch_size;
    const auto room = capacity - static_cast<std::int64_t>(unsettled);
    return std::clamp<std::int64_t>(room, 0, batch_size);
  }

  /// While claims are backed up, how often the outbox compares the planner's estimate of the
  /// pending rows with a count of them (statistics_stale), and how long it waits after an ANALYZE
  /// before it may run another.
  static constexpr std::chrono::seconds kStatisticsCheckInterval{5};
  static constexpr std::chrono::seconds kAnalyzeInterval{60};
  /// The count stops at this many pending rows (a walk of etcd_wal_pending_idx: about a millisecond).
  static constexpr std::int64_t kPendingSample = 10000;

  /// Whether PostgreSQL's statistics of etcd_wal are too old for the claims: its planner estimates
  /// `planner_estimate` pending rows where `counted` are (counted up to kPendingSample). Taken while
  /// few rows were pending, they make it walk the partial indexes whole for each key it looks up
  /// (it believes them nearly empty): O(pending) per claim, until autovacuum analyzes etcd_wal,
  /// which on a table of long history may not happen before the backlog has drained. Stale when at
  /// least 2,000 are pending and the estimate is under a quarter of them.
  static bool statistics_stale(std::int64_t planner_estimate, std::int64_t counted) {
    return counted >= 2000 && planner_estimate * 4 < counted;
  }

  /// A NOTIFY (lowest_id: the first new row it names) or a reconnect (nullopt: anywhere) says rows
  /// may be new. Claims then scan from there.
  void notified(std::optional<std::int64_t> lowest_id) {
    const std::int64_t from = lowest_id.value_or(0);
    floor_ = std::min(floor_, from);
    notified_during_claim_ = std::min(notified_during_claim_, from);
  }

  /// Starts a claim at `now`; returns the id to scan from. Claims scan the pending rows from a
  /// floor, not from the oldest id: rows that left 'pending' leave dead entries in the pending
  /// indexes until VACUUM, and a scan from the start would step over all of them. Every pending row
  /// has an id >= the floor, except rows whose NOTIFY has not arrived yet (notified() lowers it);
  /// one claim every `sync_interval` scans from 0 all the same.
  std::int64_t begin_claim(clock::time_point now, std::chrono::milliseconds sync_interval) {
    if (earliest_retry_ && now >= *earliest_retry_) earliest_retry_.reset();  // this claim takes it
    if (now >= next_full_scan_) {
      floor_ = 0;
      next_full_scan_ = now + sync_interval;
    }
    notified_during_claim_ = std::numeric_limits<std::int64_t>::max();
    return floor_;
  }

  /// The claim took `claimed` rows of `limit` and saw `lowest` as the lowest pending id from its
  /// floor (nullopt: none). Raises the floor to it (or to the lowest id notified meanwhile).
  /// Returns whether to claim again at once: a full claim may have left due rows behind; a short
  /// one took them all, so the next waits for news (a NOTIFY during the claim already counts).
  bool end_claim(std::size_t claimed, std::int64_t limit, std::optional<std::int64_t> lowest) {
    floor_ = std::min(lowest.value_or(std::numeric_limits<std::int64_t>::max()), notified_during_claim_);
    notified_during_claim_ = std::numeric_limits<std::int64_t>::max();
    return limit > 0 && static_cast<std::int64_t>(claimed) >= limit;
  }

  /// Reconnected: notifications sent meanwhile were lost; scan from 0.
  void reconnected() { floor_ = 0; }

  /// A retry was decided that falls due at `due`.
  void retry_at(clock::time_point due) {
    if (!earliest_retry_ || due < *earliest_retry_) earliest_retry_ = due;
  }

  /// How long the claim loop may sleep: `sync_interval`, or less when a retried row falls due
  /// sooner (at least 1 ms).
  std::chrono::milliseconds sleep_limit(clock::time_point now, std::chrono::milliseconds sync_interval) const {
    auto limit = sync_interval;
    if (earliest_retry_) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*earliest_retry_ - now);
      limit = std::clamp(left, std::chrono::milliseconds(1), limit);
    }
    return limit;
  }

  /// The idle wait: sleep_limit, shortened to `next_retry` (the earliest backed-off row in
  /// etcd_wal, from next_retry_statement) when that is sooner.
  std::chrono::milliseconds idle_wait(clock::time_point now, std::chrono::milliseconds sync_interval,
                                      std::optional<std::int64_t> next_retry_ms) const {
    auto wait = sleep_limit(now, sync_interval);
    if (next_retry_ms) wait = std::min(wait, std::chrono::milliseconds(std::max<std::int64_t>(1, *next_retry_ms)));
    return wait;
  }

  std::int64_t floor() const { return floor_; }

 private:
  std::int64_t floor_ = 0;
  std::int64_t notified_during_claim_ = std::numeric_limits<std::int64_t>::max();
  clock::time_point next_full_scan_{};
  std::optional<clock::time_point> earliest_retry_;  ///< of the retries decided since the last claim
};

}  // namespace etcd_sync
