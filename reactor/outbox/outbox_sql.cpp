#include "reactor/outbox/outbox_sql.hpp"

#include <charconv>
#include <string>

namespace etcd_sync {

namespace {

// The head of each key's queue: the oldest pending row of every key, if it is due, in id order,
// from id $3 on. One row per key is in flight at a time, so rows of one key never overtake each
// other, and each row's attempt_revision is exact (it is recorded after the previous row of its key
// ended). Rows claimed earlier whose outcome is not yet written ($2) are still pending: they, and
// so their keys, are skipped. The head test looks at every pending row of the key, below $3 too.
const std::string head_of_queue =
    "FROM etcd_wal w "
    "WHERE w.status = 'pending' AND w.id >= $3 "
    "  AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= clock_timestamp()) "
    "  AND w.id <> ALL($2::bigint[]) "
    "  AND w.id = (SELECT min(p.id) FROM etcd_wal p WHERE p.status = 'pending' AND p.key = w.key) "
    "ORDER BY w.id LIMIT $1";
// "Still pending" for an UPDATE that finds its rows by id: true for exactly the pending rows (the
// CHECK constraint etcd_wal_status allows no fifth status), but not in the form of the partial
// indexes' predicate (status = 'pending'), so the planner reaches the rows through etcd_wal_pkey
// whatever it believes of those indexes. Its belief dates from the last ANALYZE or VACUUM of
// etcd_wal: taken while nothing was pending, it says etcd_wal_pending_idx is empty however large it
// has grown, and the UPDATE would then scan that index whole for every claim and every outcome
// write (105 ms each at 200,000 pending rows, against 1.2 ms; perf/README.md).
std::string still_pending(const std::string& alias) {
  return alias + ".status NOT IN ('success', 'conflict', 'failed')";
}

// Whether the row's base revision is a tombstone in the mirror: one probe of etcd's primary key
// (key, revision) per row. A scalar subquery, not EXISTS: the planner may run an EXISTS as one hash
// of every tombstone in etcd, which it believes few until etcd is analyzed after a snapshot or a
// catch-up (28 ms per claim at 200,000 rows).
const std::string base_is_tombstone =
    "coalesce((SELECT e.tombstone FROM etcd e WHERE e.key = m.key AND e.revision = m.revision), false)";

std::string id_array(const std::unordered_set<std::int64_t>& ids) {
  std::vector<std::optional<std::string>> elements;
  elements.reserve(ids.size());
  for (auto id : ids) elements.push_back(std::to_string(id));
  return pg_array(elements);
}

}  // namespace

PgStatement claim_statement(std::int64_t limit, const std::unordered_set<std::int64_t>& unsettled, std::int64_t floor,
                            std::int64_t etcd_revision, std::int64_t token) {
  // Taking the rows also records that they may reach etcd, with etcd's revision before the attempt
  // (rows already in doubt keep theirs), and this claim's token. The row as fetched says whether
  // it was in doubt. The statement also returns the lowest pending id from the floor on (the next
  // floor), on every row, or on a row of its own when nothing was claimed. A row another session
  // settled while this claim waited for its lock is left out (the UPDATE re-checks its status).
  return {"WITH lowest AS (SELECT min(id) AS id FROM etcd_wal WHERE status = 'pending' AND id >= $3), "
          "due AS (SELECT w.id, w.attempt_revision AS in_doubt_since " + head_of_queue + "), "
          "marked AS (UPDATE etcd_wal t SET attempt_revision = coalesce(t.attempt_revision, $4::bigint), "
          "    attempt_token = $5::bigint FROM due "
          "  WHERE t.id = due.id AND " + still_pending("t") + " "
          "  RETURNING t.id, t.key, t.value, t.value_bytes, t.revision, t.retry_count, due.in_doubt_since) "
          "SELECT m.*, " + base_is_tombstone + ", l.id FROM lowest l LEFT JOIN marked m ON true ORDER BY m.id",
          {PgParam::int64(limit), PgParam::text(id_array(unsettled)), PgParam::int64(floor),
           PgParam::int64(etcd_revision), PgParam::int64(token)},
          true};
}

PgStatement dry_run_claim_statement(std::int64_t limit) {
  return {"SELECT m.id, m.key, m.value, m.value_bytes, m.revision, m.retry_count, m.attempt_revision, " +
              base_is_tombstone + " FROM (SELECT w.* " + head_of_queue + ") m",
          {PgParam::int64(limit), PgParam::text("{}"), PgParam::int64(0)}};
}

Claimed parse_claimed(const PgResult& result, bool with_lowest, std::int64_t token, std::int64_t etcd_revision) {
  Claimed claimed;
  if (with_lowest && result.rows() > 0 && !result.is_null(0, 8)) claimed.lowest = result.int64(0, 8);
  claimed.rows.reserve(result.rows());
  for (int r = 0; r < result.rows(); ++r) {
    if (result.is_null(r, 0)) continue;  // the floor's own row: nothing was claimed
    WalRow row;
    row.id = result.int64(r, 0);
    row.key = std::string(result.text(r, 1));
    if (!result.is_null(r, 2))
      row.value = std::string(result.text(r, 2));
    else if (!result.is_null(r, 3))
      row.value = result.bytea(r, 3);
    if (!result.is_null(r, 4)) row.revision = result.int64(r, 4);
    row.retry_count = static_cast<int>(result.int64(r, 5));
    if (!result.is_null(r, 6)) row.attempt_revision = result.int64(r, 6);
    row.base_is_tombstone = result.boolean(r, 7);
    row.attempt_token = token;
    row.claim_revision = etcd_revision;
    claimed.rows.push_back(std::move(row));
  }
  return claimed;
}

PgStatement outcome_update_statement(const std::vector<DecidedRow>& decided) {
  std::vector<std::optional<std::string>> ids, keys, tokens, statuses, revisions, errors, retry_increments, delays;
  for (const auto& d : decided) {
    const bool success = d.outcome.status == WalStatus::success;
    ids.push_back(std::to_string(d.row.id));
    keys.push_back(d.row.key);
    tokens.push_back(std::to_string(d.row.attempt_token));
    statuses.push_back(to_string(d.outcome.status));  // "pending" for a retry
    revisions.push_back(success && !d.outcome.nothing_deleted ? std::optional(std::to_string(d.outcome.revision))
                                                               : std::nullopt);
    errors.push_back(d.outcome.error_message.empty() ? std::nullopt : std::optional(d.outcome.error_message));
    retry_increments.push_back(d.outcome.transient ? "1" : "0");
    delays.push_back(std::to_string(d.retry_delay.count()));
  }
  return {"UPDATE etcd_wal w SET status = o.status, "
          "  revision = CASE WHEN o.status = 'success' THEN o.revision ELSE w.revision END, "
          "  error_message = o.error, retry_count = w.retry_count + o.retry_increment, "
          "  applied_at = CASE WHEN o.status = 'pending' THEN w.applied_at ELSE now() END, "
          "  attempt_revision = CASE WHEN o.status = 'pending' THEN w.attempt_revision END, "
          "  next_attempt_at = CASE WHEN o.status = 'pending' "
          "    THEN clock_timestamp() + o.delay_ms * interval '1 millisecond' END "
          "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::int[], "
          "            $8::bigint[]) AS o(id, key, token, status, revision, error, retry_increment, delay_ms) "
          "WHERE w.id = o.id AND w.key = o.key AND " + still_pending("w") + " AND w.attempt_token = o.token "
          "RETURNING w.id",
          {PgParam::text(pg_array(ids)), PgParam::text(pg_array(keys)), PgParam::text(pg_array(tokens)),
           PgParam::text(pg_array(statuses)), PgParam::text(pg_array(revisions)), PgParam::text(pg_array(errors)),
           PgParam::text(pg_array(retry_increments)), PgParam::text(pg_array(delays))},
          true};
}

PgStatement conflicts_resolved_statement(std::int64_t count, const std::string& instance_id) {
  return {"INSERT INTO etcd_sync_service AS s (instance_id, state, conflicts_resolved) VALUES ($2, 'starting', $1::bigint) "
          "ON CONFLICT (instance_id) DO UPDATE SET conflicts_resolved = s.conflicts_resolved + EXCLUDED.conflicts_resolved",
          {PgParam::int64(count), PgParam::text(instance_id)}};
}

PgStatement keys_pending_statement(const std::vector<DecidedRow>& decided) {
  std::vector<std::optional<std::string>> keys;
  keys.reserve(decided.size());
  for (const auto& d : decided) keys.push_back(d.row.key);
  return {"SELECT EXISTS (SELECT 1 FROM etcd_wal WHERE status = 'pending' AND key = ANY($1::text[]))",
          {PgParam::text(pg_array(keys))},
          true};
}

std::unordered_set<std::int64_t> updated_ids(const PgResult& result) {
  std::unordered_set<std::int64_t> ids;
  for (int r = 0; r < result.rows(); ++r) ids.insert(result.int64(r, 0));
  return ids;
}

PgStatement planner_pending_estimate_statement() {
  return {"EXPLAIN SELECT 1 FROM etcd_wal WHERE status = 'pending'", {}};
}

PgStatement pending_sample_statement(std::int64_t cap) {
  return {"SELECT count(*) FROM (SELECT 1 FROM etcd_wal WHERE status = 'pending' LIMIT $1::bigint) p",
          {PgParam::int64(cap)}};
}

PgStatement may_analyze_statement() {
  return {"SELECT coalesce((SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass('etcd_wal')), false)",
          {}};
}

std::optional<std::int64_t> explained_rows(std::string_view line) {
  const auto at = line.find(" rows=");
  if (at == std::string_view::npos) return std::nullopt;
  std::int64_t rows = 0;
  const auto* first = line.data() + at + 6;
  const auto [end, error] = std::from_chars(first, line.data() + line.size(), rows);
  if (error != std::errc() || end == first) return std::nullopt;
  return rows;
}

PgStatement next_retry_statement(std::int64_t floor) {
  // A backed-off row is pending, so its id is at least the floor: the scan skips what lies below.
  return {"SELECT ceil(extract(epoch FROM min(next_attempt_at) - clock_timestamp()) * 1000)::bigint "
          "FROM etcd_wal WHERE status = 'pending' AND id >= $1 AND next_attempt_at > clock_timestamp()",
          {PgParam::int64(floor)},
          true};
}

}  // namespace etcd_sync
