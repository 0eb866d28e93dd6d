#pragma once
// The outbox's statements and the parser of what they return: the claim (which rows, in which
// order, marked as possibly reaching etcd) and the outcome UPDATE (which lands only on the row it
// was computed for). Pure: unit-tested without servers (the counterpart of mirror_rows.hpp).

#include "adapters/pg_connection.hpp"
#include "reactor/outbox/wal_txn.hpp"

#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace etcd_sync {

/// The claim: up to `limit` due pending rows from id `floor` on, the oldest pending row of each key
/// only (so rows of one key apply strictly in id order, and a row in doubt holds its key's later
/// rows back), skipping `unsettled` (rows claimed before whose outcome is not yet written). Each
/// claimed row gets `token` and, unless it is in doubt already, attempt_revision = `etcd_revision`
/// (etcd's revision as last seen: every write of the attempt will be above it). The result also
/// carries the lowest pending id from `floor` on (the next floor).
PgStatement claim_statement(std::int64_t limit, const std::unordered_set<std::int64_t>& unsettled, std::int64_t floor,
                            std::int64_t etcd_revision, std::int64_t token);
/// The dry run's claim: the same rows, marking nothing.
PgStatement dry_run_claim_statement(std::int64_t limit);

/// What a claim returned.
struct Claimed {
  std::vector<WalRow> rows;             ///< in id order
  std::optional<std::int64_t> lowest;   ///< the lowest pending id from the floor on (nullopt: none)
};
/// Parses the result of claim_statement (`with_lowest`) or dry_run_claim_statement. `token` and
/// `etcd_revision` are the claim's, recorded in every row (attempt_token, claim_revision).
Claimed parse_claimed(const PgResult& result, bool with_lowest, std::int64_t token, std::int64_t etcd_revision);

/// A decided row and the outcome to write.
struct DecidedRow {
  WalRow row;
  WalOutcome outcome;
  std::chrono::milliseconds retry_delay{0};  ///< a retry's backoff
};

/// The outcome UPDATE for `decided` (one statement over parallel arrays), matching each row by id,
/// key, status 'pending' and attempt_token: it RETURNS the ids it updated. A success that deleted
/// nothing gets revision NULL and its note in error_message. A retry stays pending with its
/// attempt_revision (in doubt) and a next_attempt_at after its delay.
PgStatement outcome_update_statement(const std::vector<DecidedRow>& decided);
/// Adds `count` to this instance's conflicts_resolved (an upsert: the first batch may come before
/// the first heartbeat created the row).
PgStatement conflicts_resolved_statement(std::int64_t count, const std::string& instance_id);
/// Whether any of `keys` still has a pending row (the next row of a key, or a retry).
PgStatement keys_pending_statement(const std::vector<DecidedRow>& decided);

/// The ids an outcome_update_statement result says it updated.
std::unordered_set<std::int64_t> updated_ids(const PgResult& result);

/// What the planner believes: its estimate of the pending rows (EXPLAIN of a scan of them); and
/// whether this session's role may ANALYZE etcd_wal (a member of its owner role; superusers are).
PgStatement planner_pending_estimate_statement();
/// The pending rows, counted up to `cap` (a walk of etcd_wal_pending_idx).
PgStatement pending_sample_statement(std::int64_t cap);
PgStatement may_analyze_statement();
/// The row estimate in the first line of an EXPLAIN, the top plan node's ("Index Only Scan using
/// ... (cost=0.29..4.30 rows=1 width=4)" gives 1); nullopt when it names none.
std::optional<std::int64_t> explained_rows(std::string_view plan_line);
/// ANALYZE etcd_wal, waiting at most 200 ms for its lock (a running VACUUM holds it; autovacuum
/// yields after deadlock_timeout, so the next check gets it).
inline constexpr const char* kAnalyzeWal = "SET lock_timeout = '200ms'; ANALYZE etcd_wal; RESET lock_timeout";

/// The wait until the earliest backed-off pending row from `floor` on falls due, in milliseconds
/// (NULL when none).
PgStatement next_retry_statement(std::int64_t floor);

}  // namespace etcd_sync
