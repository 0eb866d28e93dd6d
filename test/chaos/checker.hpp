// The fault suite's checker: what etcd's own history and the two tables must say after a run of
// concurrent writers under faults (README "Tests", and the contract's "Every settled etcd_wal row
// tells the truth"). Pure functions: data in, violations out; no servers (test/unit covers them).
//
// What the suite's writers guarantee, and the checker relies on:
// - every value is unique: "w-..." for etcd_wal rows, "e-..." for etcd-side puts;
// - every etcd-side delete is a Txn that also puts a marker key under `marker_prefix` whose value
//   is the deleted key, so the delete's revision is known even when the call's answer was lost;
// - nothing is compacted, so the history is complete from revision 1;
// - each etcd_wal row's base revision (its `revision` at INSERT, overwritten on success) is kept
//   by the writer beside the row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace etcd_sync::chaos {

enum class ConflictMode { etcd_wins, postgres_wins };

/// One event of etcd's history: a put (value set) or a delete (value nullopt) of one key at one
/// revision. One Txn may hold several events at the same revision (different keys).
struct EtcdEvent {
  std::string key;
  std::optional<std::string> value;
  std::int64_t revision = 0;
};

/// One row of the `etcd` table (value nullopt on a tombstone).
struct MirrorRow {
  std::string key;
  std::optional<std::string> value;
  std::int64_t revision = 0;
  bool tombstone = false;
};

/// One row of `etcd_wal` as it stands after the run, with the base it was inserted with.
struct WalRow {
  std::int64_t id = 0;
  std::string key;
  std::optional<std::string> value;      ///< nullopt: a delete
  std::optional<std::int64_t> revision;  ///< on success: the revision the write created
  std::string status;
  int retry_count = 0;
  std::optional<std::string> error_message;
  std::optional<std::int64_t> attempt_revision;
  std::optional<std::int64_t> base;  ///< the `revision` the row was inserted with (NULL: absent)
  bool base_known = true;            ///< false when the writer's record of the base is missing
};

/// Everything the checker looks at.
struct CheckInput {
  std::string prefix;         ///< the synchronized prefix, e.g. "/chaos/"
  std::string marker_prefix;  ///< where etcd-side deletes put their markers, e.g. "/chaos-meta/del/"
  ConflictMode mode = ConflictMode::etcd_wins;
  std::vector<EtcdEvent> history;  ///< etcd's events from revision 1, in revision order (any keys)
  std::vector<MirrorRow> mirror;   ///< the `etcd` table
  std::vector<WalRow> wal;         ///< the `etcd_wal` table, any order
};

/// The checks, by the letters of issue 10 (A-F), the suite's own (G) and the status check (S).
enum class Check : char {
  mirror_is_history = 'A',        ///< `etcd` equals etcd's history under the prefix, event by event
  nothing_pending = 'B',          ///< no row is left pending
  success_applied_once = 'C',     ///< a success row's write is in etcd exactly once, at its revision
                                  ///< (and under etcd_wins on top of its base)
  settled_never_applied = 'D',    ///< no conflict or failed row's value reached etcd
  no_write_without_success = 'E', ///< every outbox write in etcd belongs to a success row
  success_in_id_order = 'F',      ///< success rows of one key reached etcd in id order
  nothing_failed = 'G',           ///< no row failed; under postgres_wins none is a conflict
  known_status = 'S',             ///< every status is pending, success, conflict or failed
};

/// All checks in report order.
const std::vector<Check>& all_checks();
/// One line saying what `check` demands.
const char* describe(Check check);

/// One broken rule, with what is needed to debug it: the row, the key, the revisions and the
/// key's events around them.
struct Violation {
  Check check;
  std::string kind;     ///< what went wrong, in a few words ("no delete at its revision"), for counts
  std::string message;  ///< the details
};

struct CheckReport {
  std::vector<Violation> violations;
  /// Number of rows, events and so on looked at, for the summary ("rows 1234 ...").
  std::map<std::string, std::size_t> totals;

  bool ok() const { return violations.empty(); }
  std::size_t count(Check check) const;
  /// One line per check: letter, count, what it demands; below it the count of each kind; then
  /// the totals.
  std::string summary() const;
};

/// Runs every check. An unattributed delete event (no etcd-side marker at its revision and no
/// success delete row claiming it) counts under E, naming the conflict and failed delete rows of
/// that key as suspects: a delete carries no value that could tie it to one row.
CheckReport check_run(const CheckInput& input);

/// A row's status is one of the contract's four.
bool is_known_status(const std::string& status);

}  // namespace etcd_sync::chaos
